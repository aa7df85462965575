import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


@pytest.fixture
def write_study(tmp_path):
    """Write a study YAML into a temporary directory and return its path."""

    def write(text: str, name: str = "study.yaml") -> Path:
        path = tmp_path / name
        path.write_text(text)
        return path

    return write


#: the tracking URI the suite started with
_SESSION_TRACKING_URI = os.environ.get("MLFLOW_TRACKING_URI")


def _restore_tracking_uri(value: str | None) -> None:
    if value is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = value


@pytest.fixture(autouse=True)
def _no_tracking_uri_leaks():
    """``mlflow.set_tracking_uri`` also sets MLFLOW_TRACKING_URI for subprocesses: one test's store must not
    become the default store of a study that a later test runs."""
    before = os.environ.get("MLFLOW_TRACKING_URI")
    yield
    _restore_tracking_uri(before)


@pytest.fixture(autouse=True, scope="module")
def _no_tracking_uri_leaks_between_modules():
    """The same for a module's fixtures (a study run in-process sets it before any test's own fixture runs): torn
    down after them, this puts back the URI the suite started with."""
    yield
    _restore_tracking_uri(_SESSION_TRACKING_URI)


def pytest_sessionfinish(session, exitstatus):
    """Shut down the Ray that integration tests started in this process while everything it uses is alive,
    rather than from an ``atexit`` hook in the middle of interpreter teardown."""
    session.config._tunelab_exitstatus = int(exitstatus)
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        ray.shutdown()


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config):
    """Exit with pytest's own status once it has reported. Interpreter teardown with Ray, torch, XGBoost and
    gRPC loaded can crash in native destructors after every test has passed (CI saw a segfault after
    '153 passed'), which would turn a green run red for nothing the tests check."""
    status = getattr(config, "_tunelab_exitstatus", None)
    if status is None:
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)
