"""The one interface the writer writes runs through, and the entities it writes.

A sink takes (run id, entity) pairs: MLflow's ``Metric``, ``Param`` and ``RunTag``, and this module's
``NewRun`` and ``RunEnd``. Two sinks: MLflow's client (``client.ClientSink``) and the SQL fast path into
the store's tables (``sql.SqlSink``), where the store allows it.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

from mlflow.entities import RunTag

from tunelab.tracking.retry import Retrying

MAX_TAG_VALUE = 5000


@dataclass(frozen=True)
class NewRun:
    """A run to create: MLflow's ``create_run`` as a row."""

    name: str
    user: str
    start_ms: int


@dataclass(frozen=True)
class RunEnd:
    """A run's final status: MLflow's ``set_terminated``."""

    status: str
    end_ms: int


class Refused(Exception):
    """The store refused some writes of a batch (``n`` entities; ``error``: the first refusal); the rest landed."""

    def __init__(self, n: int, error: BaseException):
        super().__init__(str(error))
        self.n, self.error = n, error


def now_ms() -> int:
    return int(time.time() * 1000)


def tag_entities(tags: dict) -> list[RunTag]:
    return [RunTag(k, str(v)[:MAX_TAG_VALUE]) for k, v in tags.items()]


class Sink(ABC):
    """Where the writer's batches go; used by the writer thread only.

    Args:
        call: calls the store through it, to be retried while the store is unreachable; once ``call.abandoned``,
            a sink drops what it is given and counts it.
    """

    def __init__(self, call: Retrying):
        self.call = call

    @abstractmethod
    def use_experiment(self, experiment_id: str) -> None:
        """Create runs in this experiment from now on."""

    @abstractmethod
    def create_run(self, name: str, tags: dict[str, str], start_ms: int) -> tuple[str, list]:
        """A new run's id, and the entities to write for it ahead of anything else (its creation, when deferred)."""

    @abstractmethod
    def write(self, items: list[tuple[str, Any]]) -> int:
        """Write (run id, entity) pairs, in order within each run; returns how many were dropped (abandoned).

        Raises ``Refused`` when the store refused the writes of some runs (the others' landed)."""
