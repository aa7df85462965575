"""One driver per study: a second ``tunelab run``, ``resume`` or ``sync`` of a study that a driver is running exits
2 instead of racing it (two drivers would write one experiment's state and one study's runs).

The lock is an advisory ``flock`` on a file in the study's Tune storage, which the operating system releases when
the process ends, however it ends: a driver killed with SIGKILL can be resumed at once. Storage behind a URI
(``s3://``) is not locked.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
from pathlib import Path
from typing import Iterator

from tunelab.errors import StudyError

LOCK_FILE = ".tunelab-driver.lock"


@contextlib.contextmanager
def driver_lock(experiment_path: str, study: str) -> Iterator[None]:
    """Hold the study's lock while the block runs; a StudyError when another process holds it."""
    if "://" in experiment_path:
        yield
        return
    path = Path(experiment_path) / LOCK_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "another process"
            raise StudyError(
                "name",
                f"study '{study}' is being run by another driver ({holder}; lock {path}): wait for it to end, "
                "or stop it (Ctrl-C, or `ray job stop`) and then `tunelab resume`",
            ) from None
        f.seek(0)
        f.truncate()
        f.write(f"pid {os.getpid()} on {socket.gethostname()}")
        f.flush()
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
