"""The benchmark-only model family of ``benchmarks/cells.py`` part (c): a trial that sleeps, using no CPU.

A module of its own (not ``cells.py``, which runs as ``__main__``) so that the class is pickled by
reference and Ray's worker processes import it from here: they need the repository root on their
``PYTHONPATH`` (``cells.py`` passes it in ``ray.init(runtime_env=...)``). Importing the module registers
the family in ``trainables.FAMILIES`` of the importing process, driver or worker.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np
from sklearn.dummy import DummyClassifier

import tunelab.spaces
from trainables import FAMILIES
from trainables.base import CLASSIFICATION, ModelFamily

NAME = "cells_sleep"
SPACE = """budget: {{steps: {steps}, per_step: 1}}
params:
  seconds: {seconds}
  tag: {{uniform: [0.0, 1.0]}}
"""


class CellsSleep(ModelFamily):
    """``seconds`` of sleep per budget step; the model predicts the training class priors."""

    name = NAME
    tasks = frozenset({CLASSIFICATION})

    def fit(self, X: np.ndarray, y: np.ndarray, config: dict, model: Any = None) -> Iterator[Any]:
        model = model or DummyClassifier(strategy="prior").fit(X, y)
        for _ in range(self.ctx.steps):
            time.sleep(config["seconds"])
            yield model


def register() -> None:
    """Make ``cells_sleep`` a family this process knows (the registry has no public way to add one)."""
    if NAME not in FAMILIES._names:  # type: ignore[attr-defined]
        FAMILIES._names.append(NAME)  # type: ignore[attr-defined]
        FAMILIES._classes[NAME] = CellsSleep  # type: ignore[attr-defined]


def use_spaces(spaces_dir: Path, steps: int, seconds: float) -> None:
    """Point the search space loader at ``spaces_dir``: every shipped space, and ``cells_sleep.yaml``."""
    spaces_dir.mkdir(parents=True, exist_ok=True)
    for shipped in tunelab.spaces.SPACES_DIR.glob("*.yaml"):
        (spaces_dir / shipped.name).write_text(shipped.read_text())
    (spaces_dir / f"{NAME}.yaml").write_text(SPACE.format(steps=steps, seconds=seconds))
    tunelab.spaces.SPACES_DIR = spaces_dir


register()
