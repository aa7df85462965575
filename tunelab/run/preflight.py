"""Checks before any work that look outside the study file: the MLflow store answers, Tune's storage can be
written, every trial fits a node, the studies a warm start names are in the store (their configurations read).
``tunelab validate`` and ``tunelab run`` make the same ones, each waiting on the network for at most
STORE_PROBE_S."""

from __future__ import annotations

import tempfile
from pathlib import Path

import requests
from mlflow.tracking import MlflowClient

from tunelab.errors import StudyError
from tunelab.run import resources, warm_start
from tunelab.run.plan import Plan

STORE_PROBE_S = 5.0


def check_store(uri: str, where: str = "") -> None:
    """An HTTP store's /health answers within STORE_PROBE_S as MLflow's does (200; 401 or 403 behind a proxy that
    asks for credentials: theirs to settle); a sqlite file can be created where it is to be."""
    if uri.startswith(("http://", "https://")):
        try:
            status = str(requests.get(f"{uri.rstrip('/')}/health", timeout=STORE_PROBE_S).status_code)
        except requests.RequestException as e:
            status = f"no answer within {STORE_PROBE_S:g} s ({type(e).__name__})"
        if status not in ("200", "401", "403"):
            raise StudyError(f"{where}tracking.uri", f"no MLflow server at {uri}: GET /health: {status}")
    elif uri.startswith("sqlite:///"):
        _check_writable(Path(uri[len("sqlite:///") :]).parent, f"{where}tracking.uri", f"the sqlite file of {uri}")


def check_storage(path: str, where: str = "") -> None:
    """Tune's storage, where it is a local directory: writable (or creatable) by this user."""
    if "://" not in path:
        _check_writable(Path(path), f"{where}storage_path", f"Tune's storage {path}")


def _check_writable(path: Path, field: str, what: str) -> None:
    """By writing a file there (and removing it): permissions alone do not say it for root or a read-only mount."""
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    try:
        if not existing.is_dir():
            raise NotADirectoryError(f"{existing} is not a directory")
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as e:
        raise StudyError(field, f"{what} cannot be written ({e.strerror or e})") from None


def preflight(plan: Plan, local: bool) -> None:
    """Every check; ``local``: the study runs on a Ray started here, so its trials must fit this machine."""
    where = f"{plan.source}: "
    check_store(plan.study.tracking.resolved_uri(), where)
    check_storage(plan.study.storage(), where)
    if local:
        resources.check_fits(plan, resources.this_machine(), "(this machine)")
    if plan.study.search.warm_start is not None:
        plan.warm = warm_start.starts(plan, MlflowClient(plan.study.tracking.resolved_uri()))
