"""tunelab's command line as the tests run it: in an interpreter of its own (``tunelab``, ``tunelab_ok``) or in
the test's own process (``tunelab_here``: no second interpreter to start)."""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

from tests.conftest import ROOT


def tunelab(
    *args, cwd: Path | str = ROOT, timeout: float = 600, env: dict | None = None
) -> subprocess.CompletedProcess:
    """``python -m tunelab.cli ARGS`` in ``cwd``, this checkout first on the path: exit status and output."""
    env = {**(os.environ if env is None else env), "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "tunelab.cli", *map(str, args)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def tunelab_ok(*args, **kwargs) -> subprocess.CompletedProcess:
    """``tunelab`` that must exit 0; the assertion shows the end of its output."""
    out = tunelab(*args, **kwargs)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return out


def tunelab_here(*args) -> SimpleNamespace:
    """``tunelab ARGS`` in this process: ``returncode``, ``stdout`` and ``stderr``."""
    from tunelab.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in args])
    return SimpleNamespace(returncode=code, stdout=out.getvalue(), stderr=err.getvalue())
