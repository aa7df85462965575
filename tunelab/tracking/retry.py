"""Store calls retried with backoff while the store is unreachable (trials keep running through an outage), up to a
deadline; what the store refuses or what outlasts the deadline is counted in ``Lost``, never dropped unseen."""

from __future__ import annotations

import os
import re
import sys
import threading
import time
from typing import Any, Callable

import requests
import sqlalchemy.exc
from mlflow.exceptions import MlflowException

RETRY_FIRST_S, RETRY_MAX_S = 1.0, 30.0  # our backoff between attempts at an unreachable store
#: a call that has failed for this long fails for good (counted in ``Lost``; ``tunelab sync`` completes the store)
STORE_DEADLINE_S = float(os.environ.get("TUNELAB_STORE_DEADLINE_S", "600"))
#: MLflow's own per-request retries, shortened so that our backoff (which keeps the study going) takes over
HTTP_RETRY_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
}
TRANSIENT_MARKERS = (
    "Max retries exceeded",
    "Connection refused",
    "database is locked",
    "Connection aborted",
    "Read timed out",
    "TEMPORARILY_UNAVAILABLE",
)
#: an HTTP status of an overloaded or restarting server, as a number of its own: never inside a run id (the refusal
#: of a write to deleted run ``eaa50397…`` was once retried for the whole deadline)
TRANSIENT_STATUS = re.compile(r"\b50[234]\b")


#: sqlalchemy OperationalErrors that waiting may cure (not, say, "no such table")
DATABASE_MARKERS = ("locked", "busy", "connection", "timeout", "timed out", "reset", "terminat", "shutting down")


def transient(e: BaseException) -> bool:
    """An error that waiting may cure: the store unreachable, overloaded or locked."""
    if isinstance(e, (requests.exceptions.ConnectionError, requests.exceptions.Timeout, ConnectionError)):
        return True
    if isinstance(e, sqlalchemy.exc.OperationalError):  # the SQL path's own: a locked sqlite, a dropped connection
        return e.connection_invalidated or any(m in str(e).lower() for m in DATABASE_MARKERS)
    if not isinstance(e, MlflowException):
        return False
    return any(m in str(e) for m in TRANSIENT_MARKERS) or TRANSIENT_STATUS.search(str(e)) is not None


class Lost:
    """Writes the store refused, or that outlasted the deadline or the study's end: counted, the first one named.

    A study with any ends with exit 3, naming ``tunelab sync``, which completes the store from Tune's storage.
    """

    def __init__(self, uri: str):
        self.uri = uri
        self.count = 0
        self.first: str | None = None
        self._lock = threading.Lock()

    def add(self, n: int, error: BaseException | None = None) -> None:
        if n <= 0:
            return
        with self._lock:
            self.count += n
            named = error is not None and self.first is None
            if named:
                self.first = f"{type(error).__name__}: {str(error).strip()[:300]}"
        if named:
            print(
                f"tunelab: the MLflow store {self.uri} did not take a write ({self.first}); what it does not take "
                "is counted, the study goes on and ends with exit 3 (then `tunelab sync` completes the store)",
                file=sys.stderr,
                flush=True,
            )


class Retrying:
    """``retrying(fn, *args)`` is ``fn(*args)``, retried with backoff while the store at ``uri`` is unreachable; once it
    has been unreachable for ``deadline_s`` (counted across calls, so that a long outage does not hold every queued
    call for as long), a failing call raises at once, as one that waiting cannot cure does.

    Once ``abandoned`` (the study's end stopped waiting for the store), a failing call raises at once.
    """

    def __init__(self, uri: str, deadline_s: float = STORE_DEADLINE_S):
        self.uri, self.deadline_s = uri, deadline_s
        self.abandoned = False
        self._down_since: float | None = None

    def __call__(self, fn: Callable, *args: Any) -> Any:
        delay = RETRY_FIRST_S
        while True:
            try:
                result = fn(*args)
            except Exception as e:
                if self.abandoned or not transient(e):
                    raise
                now = time.monotonic()
                if self._down_since is None:
                    self._down_since = now
                    print(
                        f"tunelab: MLflow store {self.uri} unreachable ({type(e).__name__}); retrying with backoff "
                        f"for up to {self.deadline_s:.0f} s, trials keep running",
                        file=sys.stderr,
                        flush=True,
                    )
                left = self.deadline_s - (now - self._down_since)
                if left <= 0:
                    raise
                time.sleep(min(delay, left + 0.01))
                delay = min(2 * delay, RETRY_MAX_S)
                continue
            if self._down_since is not None:
                self._down_since = None
                print(f"tunelab: MLflow store {self.uri} reachable again", file=sys.stderr, flush=True)
            return result
