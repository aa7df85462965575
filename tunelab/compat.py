"""Every reach into Ray's or MLflow's private internals, in one place.

Each one is worth its speed (the figures are in benchmarks/RESULTS.md) and each has a public
fallback. A reach is used only when

- the package it reaches into is at the version it was written for (``WRITTEN_FOR``): on any
  other version tunelab warns once, in one line, and takes the public path;
- ``TUNELAB_COMPAT`` is not ``off`` (CI runs the integration tests that go through these paths
  once more with it off, so the public paths are tested too).
"""

from __future__ import annotations

import contextlib
import logging
import os
from importlib import metadata
from typing import Any, Iterator

log = logging.getLogger("tunelab")

#: the versions each reach was written against
WRITTEN_FOR = {"ray": "2.60.0", "mlflow": "3.17.2"}
_warned: set[str] = set()


def switched_off() -> bool:
    return os.environ.get("TUNELAB_COMPAT", "on").strip().lower() in ("off", "0", "false", "no")


def enabled(package: str, reach: str) -> bool:
    """Whether the private ``reach`` into ``package`` may be used here (else: the public path)."""
    if switched_off():
        return False
    installed = metadata.version(package)
    if installed == WRITTEN_FOR[package]:
        return True
    if package not in _warned:
        _warned.add(package)
        log.warning(
            "tunelab: %s %s is not the %s that %s was written for; using the public path (slower)",
            package,
            installed,
            WRITTEN_FOR[package],
            reach,
        )
    return False


@contextlib.contextmanager
def trainables_cached() -> Iterator[None]:
    """Answer Tune's lookups of the study's trainable from this process while the experiment runs.

    Tune fetches a trial's trainable from the GCS key-value store three times as it creates the
    trial (a round trip each, about 7 ms a trial on a local Ray; more across a network), and
    unpickles a fresh copy each time. Ours is registered once and stays the same.
    Public path: Tune's own lookups.
    """
    if not enabled("ray", "the trainable lookup cache"):
        yield
        return
    from ray.tune import registry

    reg, cache = registry._global_registry, {}
    get, contains = reg.get, reg.contains
    before = {k: reg.__dict__[k] for k in ("get", "contains") if k in reg.__dict__}  # a study run inside another

    def cached_get(category: str, key: str) -> Any:
        if category != registry.TRAINABLE_CLASS:
            return get(category, key)
        if key not in cache:
            cache[key] = get(category, key)
        return cache[key]

    reg.get = cached_get
    reg.contains = lambda category, key: (
        (category == registry.TRAINABLE_CLASS and key in cache) or contains(category, key)
    )
    try:
        yield
    finally:
        for k in ("get", "contains"):
            reg.__dict__.pop(k, None)
        reg.__dict__.update(before)


@contextlib.contextmanager
def actors_not_stolen() -> Iterator[None]:
    """Keep Tune from giving a cached actor to a trial whose own actor already holds its CPUs and is starting.

    Tune does, and removes the starting actor. Where an actor takes longer to start than a trial
    takes to run (short trials, a loaded machine), that repeats for every trial: the first actor to
    start runs them all one after another while a second slot's actors are started and removed
    (100 trials of 0.5 s on 2 CPUs: 59 s instead of 33-34 s). The cached actor goes to the next
    trial instead, which has no actor yet. As before: a trial still waiting for resources takes a
    cached actor, and so does any trial once the searcher has no more to suggest.
    Public path: Tune's own actor reuse.
    """
    if not enabled("ray", "the actor reuse fix"):
        yield
        return
    from ray.tune.execution.tune_controller import TuneController

    reuse = TuneController.__dict__["_maybe_reuse_cached_actor"]

    def maybe_reuse(controller: Any, trial: Any) -> bool:
        own = controller._trial_to_actor.get(trial)
        if (
            own is not None
            and trial not in controller._resetting_trials
            and not controller._search_alg.is_finished()
            and controller._actor_manager.is_actor_started(own)
        ):
            return False
        return reuse(controller, trial)

    TuneController._maybe_reuse_cached_actor = maybe_reuse
    try:
        yield
    finally:
        TuneController._maybe_reuse_cached_actor = reuse


def mlflow_sql_store(client: Any) -> Any:
    """The SQLAlchemy store behind an MLflow client (``client._tracking_client.store``), for the SQL batch writer;
    None where compat is off, MLflow is another version, or the store is not SQL (an HTTP server)."""
    if not enabled("mlflow", "the SQL batch writer"):
        return None
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    store = getattr(getattr(client, "_tracking_client", None), "store", None)
    return store if isinstance(store, SqlAlchemyStore) else None
