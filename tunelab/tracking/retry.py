"""Store calls retried with backoff while the store is unreachable: trials keep running through an outage."""

from __future__ import annotations

import sys
import time
from typing import Any, Callable

import requests
import sqlalchemy.exc
from mlflow.exceptions import MlflowException

RETRY_FIRST_S, RETRY_MAX_S = 1.0, 30.0  # our backoff between attempts at an unreachable store
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
    "502",
    "503",
    "504",
)


#: sqlalchemy OperationalErrors that waiting may cure (not, say, "no such table")
DATABASE_MARKERS = ("locked", "busy", "connection", "timeout", "timed out", "reset", "terminat", "shutting down")


def transient(e: BaseException) -> bool:
    """An error that waiting may cure: the store unreachable, overloaded or locked."""
    if isinstance(e, (requests.exceptions.ConnectionError, requests.exceptions.Timeout, ConnectionError)):
        return True
    if isinstance(e, sqlalchemy.exc.OperationalError):  # the SQL path's own: a locked sqlite, a dropped connection
        return e.connection_invalidated or any(m in str(e).lower() for m in DATABASE_MARKERS)
    return isinstance(e, MlflowException) and any(m in str(e) for m in TRANSIENT_MARKERS)


class Retrying:
    """``retrying(fn, *args)`` is ``fn(*args)``, retried with backoff while the store at ``uri`` is unreachable.

    Once ``abandoned`` (the study's end stopped waiting for the store), a failing call raises at once.
    """

    def __init__(self, uri: str):
        self.uri = uri
        self.abandoned = False

    def __call__(self, fn: Callable, *args: Any) -> Any:
        delay, warned = RETRY_FIRST_S, False
        while True:
            try:
                result = fn(*args)
            except Exception as e:
                if self.abandoned or not transient(e):
                    raise
                if not warned:
                    print(
                        f"tunelab: MLflow store {self.uri} unreachable ({type(e).__name__}); retrying with backoff,"
                        " trials keep running",
                        file=sys.stderr,
                        flush=True,
                    )
                    warned = True
                time.sleep(delay)
                delay = min(2 * delay, RETRY_MAX_S)
                continue
            if warned:
                print(f"tunelab: MLflow store {self.uri} reachable again", file=sys.stderr, flush=True)
            return result
