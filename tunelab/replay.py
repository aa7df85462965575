"""Replay one trial from its MLflow run: same configuration, same seed, the same data (checked by hash).

Everything comes from the store: the study file as the study run logged it, the dataset's
recorded sha256, the cell's budget and threads, the trial's parameters and its metric per step.
The trial is retrained in this process, without Ray, and its validation metrics are compared
with the recorded ones step by step.
"""

from __future__ import annotations

import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from mlflow.entities import Run
from mlflow.tracking import MlflowClient

from trainables import FAMILIES
from trainables.base import TASK_METRICS, Context, Data, validated_steps
from tunelab.datasets import load_dataset
from tunelab.errors import StudyError
from tunelab.spaces import Space, load_space
from tunelab.study import Study, load_study
from tunelab.tracking import DATASET, MODEL, PARENT, ROLE, ROLE_TRIAL, SPLIT, STEPS, STUDY_FILE, dataset_hash

#: relative tolerance of the comparison: deterministic families must agree exactly; the others
#: (the MLP: thread scheduling changes float summation order) within this
TOLERANCE = {True: 0.0, False: 1e-3}
_INTEGER_KINDS = {"randint", "qrandint", "lograndint"}


@dataclass
class Replay:
    """A replayed trial: per step and metric, the recorded and the replayed value."""

    run: Run
    family: str
    dataset: str
    tolerance: float
    rows: list[tuple[int, str, float, float]]  # (step, metric, recorded, replayed)

    @property
    def agrees(self) -> bool:
        return bool(self.rows) and all(_close(r, p, self.tolerance) for _, _, r, p in self.rows)

    def text(self) -> str:
        lines = [
            f"trial {self.run.info.run_name} ({self.run.info.run_id})",
            f"  {'step':>5}  {'metric':<14}{'recorded':>20}{'replayed':>20}{'difference':>13}",
        ]
        for step, metric, rec, rep in self.rows:
            lines.append(f"  {step:>5}  {metric:<14}{rec:>20.12g}{rep:>20.12g}{abs(rec - rep):>13.3g}")
        how = "exactly" if self.tolerance == 0 else f"within a relative tolerance of {self.tolerance:g}"
        verdict = (
            f"replay agrees with the recorded trial {how}"
            if self.agrees
            else f"replay DIFFERS from the recorded trial (expected agreement {how})"
        )
        return "\n".join([*lines, verdict])


def _close(recorded: float, replayed: float, tolerance: float) -> bool:
    if math.isnan(recorded) or math.isnan(replayed):
        return math.isnan(recorded) and math.isnan(replayed)
    return recorded == replayed or abs(recorded - replayed) <= tolerance * max(abs(recorded), abs(replayed))


def parse_params(params: dict[str, str], space: Space) -> dict[str, Any]:
    """MLflow params are strings: typed back by the family's search space (YAML for the rest)."""
    out: dict[str, Any] = {}
    for name, text in params.items():
        p = space.params.get(name)
        if p is not None and p.kind == "choice":
            out[name] = next((o for o in p.args if str(o) == text), yaml.safe_load(text))
        elif p is not None and p.kind in _INTEGER_KINDS:
            out[name] = int(text)
        elif p is not None and p.kind != "constant":
            out[name] = float(text)
        else:
            out[name] = yaml.safe_load(text)
    return out


def _get(client: MlflowClient, run_id: str, what: str) -> Run:
    try:
        return client.get_run(run_id)
    except Exception as e:
        raise StudyError(run_id, f"no {what} run with this id in {client.tracking_uri} ({type(e).__name__})") from None


def _study_of(client: MlflowClient, study_run: Run) -> tuple[Study, Path]:
    """The study as its run logged it (artifact study.yaml), and the directory its data paths are relative to."""
    source = Path(study_run.data.tags.get(STUDY_FILE, "study.yaml"))
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    with tempfile.TemporaryDirectory(prefix="tunelab-replay-") as tmp:
        try:
            path = Path(client.download_artifacts(study_run.info.run_id, "study.yaml", tmp))
        except Exception:
            path = source
        return load_study(path), source.parent


def load_trial_data(client: MlflowClient, study_run: Run, dataset: str, split: int = 0) -> tuple[Study, Data]:
    """The trial's dataset, loaded and split (its ``split``-th repeat) as the study did, refused when its
    content hash changed."""
    study, base_dir = _study_of(client, study_run)
    spec = next((d for d in study.datasets if d.name == dataset), None)
    if spec is None:
        raise StudyError(dataset, f"the study file of run {study_run.info.run_id} has no dataset '{dataset}'")
    data = load_dataset(spec, study.split, study.seed + split, f"dataset '{dataset}'", base_dir)
    recorded = study_run.data.tags.get(dataset_hash(dataset))
    if recorded and recorded != data.content_hash:
        where = f"dataset '{dataset}'" + (f" ({(base_dir / spec.path)})" if spec.path else "")
        raise StudyError(
            where,
            f"the data changed since the trial ran: sha256 {data.content_hash[:16]} now, "
            f"{recorded[:16]} recorded by the study run; a replay on other data would prove "
            "nothing (restore the recorded data)",
        )
    return study, data


def replay(client: MlflowClient, run_id: str) -> Replay:
    """Retrain trial ``run_id`` and compare its validation metrics, step by step, with the recorded ones."""
    trial = _get(client, run_id, "trial")
    if trial.data.tags.get(ROLE) != ROLE_TRIAL:
        raise StudyError(
            run_id,
            f"is a {trial.data.tags.get(ROLE, 'non-tunelab')} run, not a trial run "
            "(replay takes the run id of one trial)",
        )
    cell = _get(client, trial.data.tags[PARENT], "cell")
    study_run = _get(client, cell.data.tags[PARENT], "study")
    family_name, dataset = trial.data.tags[MODEL], trial.data.tags[DATASET]
    study, data = load_trial_data(client, study_run, dataset, int(trial.data.tags.get(SPLIT, 0)))
    space = load_space(family_name, data.task, study.spaces.get(family_name))
    config = parse_params(trial.data.params, space)
    p = cell.data.params
    ctx = Context(
        task=data.task,
        n_classes=data.n_classes,
        threads=max(1, int(float(p["cpus_per_trial"]))),
        seed=study.seed,
        steps=int(p["budget_steps"]),
        per_step=int(p["budget_per_step"]),
    )
    steps = int(trial.data.tags.get(STEPS, ctx.steps))
    family_cls = FAMILIES[family_name]
    family = family_cls(ctx)
    metrics = [m for m in TASK_METRICS[data.task] if m in trial.data.metrics]
    recorded = {m: {h.step: h.value for h in client.get_metric_history(run_id, m)} for m in metrics}
    rows = []
    for step, (_, scores, _) in enumerate(validated_steps(family, data, config), start=1):
        rows += [(step, m, recorded[m][step], scores[m]) for m in metrics if step in recorded[m]]
        if step >= steps:
            break
    return Replay(trial, family_name, dataset, TOLERANCE[family_cls.deterministic], rows)
