"""A study's cells and its plan: datasets loaded, spaces read, every cell laid out. No Ray here."""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from pathlib import Path

from trainables import FAMILIES
from trainables.base import DEFAULT_METRIC, METRIC_MODES, TASK_METRICS, Context, Data, metric_sign
from tunelab.datasets import load_dataset
from tunelab.errors import StudyError
from tunelab.spaces import Space, load_space
from tunelab.study import Resources, Study, data_key
from tunelab.tracking.schema import cell_run_name


@dataclass
class Cell:
    """One (model family, dataset) pair: its own searcher, scheduler and budget; one MLflow cell run."""

    family: str
    dataset: str
    task: str
    space: Space
    resources: Resources
    metric: str
    seed: int
    split: int = 0  # which repeat of the dataset's split (``dataset`` is then ``<name>-split<k>``)
    source: str = ""  # the dataset's own name; ``dataset`` when empty

    @property
    def dataset_name(self) -> str:
        return self.source or self.dataset

    @property
    def key(self) -> str:
        return f"{self.family}.{self.dataset}"

    @property
    def label(self) -> str:
        """The cell run's name, which the console shows too."""
        return cell_run_name(self.family, self.dataset)

    @property
    def mode(self) -> str:
        return METRIC_MODES[self.metric]

    @property
    def sign(self) -> int:
        return metric_sign(self.metric)


#: below this many validation rows (one split, no folds) a trial's validation score is mostly noise
FEW_VALIDATION_ROWS = 50


@dataclass
class Plan:
    """A validated study: its datasets loaded and its cells laid out. Nothing has run yet."""

    study: Study
    source: Path
    datasets: dict[str, Data]
    cells: list[Cell]
    skipped: list[str] = field(default_factory=list)
    #: per cell key, the earlier studies' configurations its searcher tries first (``run.warm_start``, read from
    #: the store by ``preflight``)
    warm: dict[str, list] = field(default_factory=dict)

    def notes(self) -> list[str]:
        """What the study file allows but a user should hear before the work: validation splits too small to
        select on (benchmarks/ensemble.py: on 30 validation rows the selected family and the ensemble alike
        followed trials that were perfect there and poor on test)."""
        return [
            f"dataset {name}: {len(d.y_val)} validation rows; selecting among trials on so few is mostly noise "
            f"(split.folds, e.g. 5, selects on every non-test row)"
            for name, d in self.datasets.items()
            if not d.folds and len(d.y_val) < FEW_VALIDATION_ROWS
        ]

    def context(self, cell: Cell) -> Context:
        """What the cell's family needs to know besides its hyperparameters."""
        data = self.datasets[cell.dataset]
        return Context(
            task=cell.task,
            n_classes=data.n_classes,
            threads=max(1, int(cell.resources.cpus_per_trial)),
            seed=self.study.seed,
            steps=cell.space.steps,
            per_step=cell.space.per_step,
        )


def plan_study(study: Study, source: Path) -> Plan:
    """Load every dataset and every search space; any problem is a StudyError. Starts nothing."""
    base_dir = source.parent
    datasets: dict[str, Data] = {}
    split_of: dict[str, int] = {}  # data key -> which repeat of its dataset's split
    for i, spec in enumerate(study.datasets):
        for k in range(study.splits):
            split_of[data_key(spec.name, k)] = k
            datasets[data_key(spec.name, k)] = load_dataset(
                spec, study.split, study.seed + k, f"{source}: datasets[{i}] ({spec.name})", base_dir
            )
    cells, skipped = [], []
    for m in study.models:
        family = FAMILIES[m.name]
        supported = [d for d in datasets.values() if d.task in family.tasks]
        if not supported:
            tasks = sorted({d.task for d in datasets.values()})
            raise StudyError(
                f"{source}: models",
                f"{m.name} supports {'/'.join(sorted(family.tasks))} only, but every dataset is {'/'.join(tasks)}",
            )
        for key, d in datasets.items():
            if d.task not in family.tasks:
                if split_of[key] == 0:
                    skipped.append(f"{m.name} · {d.name} (no {d.task})")
                continue
            metric = study.search.metric or DEFAULT_METRIC[d.task]
            if metric not in TASK_METRICS[d.task]:
                raise StudyError(
                    f"{source}: search.metric",
                    f"{metric} does not fit {d.task} dataset '{d.name}' "
                    f"(expected one of {', '.join(TASK_METRICS[d.task])})",
                )
            space = load_space(
                m.name,
                d.task,
                study.spaces.get(m.name),
                f"{source}: spaces.{m.name}",
                with_defaults=study.search.default_first,
            )
            if not family.iterative:
                space.steps = space.per_step = 1
            elif study.search.scheduler == "asha" and study.search.grace_period > space.steps:
                raise StudyError(
                    f"{source}: search.grace_period",
                    f"{study.search.grace_period} is more than the {space.steps} budget steps of "
                    f"{m.name} (ASHA could never stop a trial early; lower it or raise the budget)",
                )
            seed = zlib.crc32(f"{study.seed}/{m.name}/{key}".encode()) % (2**31)
            cells.append(
                Cell(
                    m.name,
                    key,
                    d.task,
                    space,
                    m.resources(study.resources),
                    metric,
                    seed,
                    split=split_of[key],
                    source=d.name,
                )
            )
    order = {key: i for i, key in enumerate(datasets)}  # dataset by dataset: each dataset's cells finish together
    cells.sort(key=lambda c: order[c.dataset])
    return Plan(study, source, datasets, cells, skipped)
