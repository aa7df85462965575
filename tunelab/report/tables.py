"""The report's tables, each computed from what the store holds of the study (``record.StudyRecord``)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from mlflow.entities import Run

from trainables.base import metric_sign, on_test_split
from tunelab.report.record import StudyRecord, metric_of, trial_compute_s
from tunelab.tracking import (
    BEST_TRIAL,
    DATASET,
    DATASET_PREFIX,
    GIT_COMMIT,
    GIT_DIRTY,
    HARDWARE_PREFIX,
    MODEL,
    SPLIT,
    STATUS,
    STEPS,
    TRIAL_ID,
    VERSION_PREFIX,
)

#: anytime curves are averaged over this many seeded shuffles of each cell's trial order
ANYTIME_SHUFFLES = 50
ANYTIME_POINTS = 100


def cell_table(record: StudyRecord) -> pd.DataFrame:
    """One row per cell (and split): what the cell run records, plus ASHA's budget steps."""
    rows = []
    for c in record.cells:
        m, metric = c.data.metrics, metric_of(c)
        trials = record.trials[c.info.run_id]
        steps_run = sum(int(t.data.tags.get(STEPS, 0)) for t in trials)
        rows.append(
            {
                "dataset": c.data.tags[DATASET],
                "family": c.data.tags[MODEL],
                "split": int(c.data.tags.get(SPLIT, 0)),
                "metric": metric,
                "best_val": m.get(f"best_{metric}", np.nan),
                "test": m.get(on_test_split(metric), np.nan),
                "default_test": m.get("default_" + on_test_split(metric), np.nan),
                "trials": int(m.get("trials", len(trials))),
                "early_stopped": int(m.get("trials_early_stopped", 0)),
                "failed": int(m.get("trials_failed", 0)),
                "compute_s": float(m.get("compute_seconds", 0.0)),
                "cpu_s": float(m.get("cpu_seconds", np.nan)),
                "gpu_s": float(m.get("gpu_seconds", np.nan)),
                "steps_run": steps_run,
                "steps_full": len(trials) * int(c.data.params.get("budget_steps", 1)),
                "run_id": c.info.run_id,
            }
        )
    return pd.DataFrame(rows)


def leaderboard(cells: pd.DataFrame) -> pd.DataFrame:
    """Per dataset, families best first: mean (± std over splits) of validation and test scores, counts, compute."""
    g = cells.groupby(["dataset", "family"], sort=False)
    out = g.agg(
        metric=("metric", "first"),
        best_val=("best_val", "mean"),
        best_val_std=("best_val", "std"),
        test=("test", "mean"),
        test_std=("test", "std"),
        splits=("split", "nunique"),
        trials=("trials", "sum"),
        early_stopped=("early_stopped", "sum"),
        failed=("failed", "sum"),
        compute_s=("compute_s", "sum"),
        cpu_s=("cpu_s", "sum"),
        gpu_s=("gpu_s", "sum"),
    ).reset_index()
    out[["best_val_std", "test_std"]] = out[["best_val_std", "test_std"]].fillna(0.0)
    out["_key"] = [metric_sign(m) * v for m, v in zip(out["metric"], out["best_val"])]
    out = out.sort_values(["dataset", "_key"], na_position="last").drop(columns="_key")
    return out.reset_index(drop=True)


def asha_savings(cells: pd.DataFrame) -> pd.DataFrame:
    """Budget steps run against the steps every trial would have run to the full budget, per cell and in all."""
    out = cells.groupby(["dataset", "family"], sort=False)[["steps_run", "steps_full"]].sum().reset_index()
    total = pd.DataFrame(
        [
            {
                "dataset": "all",
                "family": "all",
                "steps_run": out["steps_run"].sum(),
                "steps_full": out["steps_full"].sum(),
            }
        ]
    )
    out = pd.concat([out, total], ignore_index=True)
    out["saved_fraction"] = 1 - out["steps_run"] / out["steps_full"].where(out["steps_full"] > 0)
    return out


def anytime_curve(
    compute: np.ndarray,
    values: np.ndarray,
    sign: int,
    grid: np.ndarray,
    shuffles: int = ANYTIME_SHUFFLES,
    seed: int = 0,
) -> np.ndarray:
    """Best validation score so far at each cumulative compute in ``grid``, averaged over shuffled trial orders.

    ``values`` holds NaN for failed trials (their compute still counts). The curve starts where every
    shuffle has a score, so that each point is the mean of the same shuffles and the curve never rises.
    """
    rng = np.random.default_rng(seed)
    curves = np.full((shuffles, len(grid)), np.nan)
    for s in range(shuffles):
        order = rng.permutation(len(values)) if s else np.arange(len(values))  # the first: the order that ran
        ends = np.cumsum(compute[order])
        v = sign * values[order]
        best = np.fmax.accumulate(np.where(np.isnan(v), -np.inf, v))
        best = np.where(np.isinf(best), np.nan, best)
        idx = np.searchsorted(ends, grid, side="right") - 1
        curves[s] = np.where(idx >= 0, best[np.clip(idx, 0, None)], np.nan)
    return sign * curves.mean(axis=0)  # NaN until every shuffle has a score: a mean of the same shuffles throughout


def anytime_table(record: StudyRecord) -> pd.DataFrame:
    """Per dataset and family: the anytime curve (best validation score so far vs. cumulative compute s),
    averaged over splits and over ANYTIME_SHUFFLES shuffles of the trial order."""
    rows = []
    by_cell: dict[tuple[str, str], list[Run]] = {}
    for c in record.cells:
        by_cell.setdefault((c.data.tags[DATASET], c.data.tags[MODEL]), []).append(c)
    for (dataset, family), cells in by_cell.items():
        metric = metric_of(cells[0])
        series = []
        for c in cells:
            trials = record.trials[c.info.run_id]
            compute = np.array([trial_compute_s(t) for t in trials])
            values = np.array(
                [t.data.metrics.get(metric, np.nan) if t.data.tags.get(STATUS) != "failed" else np.nan for t in trials]
            )
            series.append((compute, values))
        total = max((s[0].sum() for s in series), default=0.0)
        if total <= 0:
            continue
        grid = np.linspace(0, total, ANYTIME_POINTS + 1)[1:]
        curve = np.vstack([anytime_curve(cmp, val, -metric_sign(metric), grid) for cmp, val in series]).mean(axis=0)
        rows += [
            {"dataset": dataset, "family": family, "metric": metric, "compute_s": x, "best_val_so_far": y}
            for x, y in zip(grid, curve)
        ]
    return pd.DataFrame(rows, columns=["dataset", "family", "metric", "compute_s", "best_val_so_far"])


def learning_curves(record: StudyRecord) -> pd.DataFrame:
    """The validation metric per budget step of each cell's best trial."""
    rows = []
    for c in record.cells:
        best = c.data.tags.get(BEST_TRIAL)
        metric = metric_of(c)
        run = next((t for t in record.trials[c.info.run_id] if t.data.tags.get(TRIAL_ID) == best), None)
        if run is None:
            continue
        for m in sorted(record.client.get_metric_history(run.info.run_id, metric), key=lambda m: m.step):
            rows.append(
                {
                    "dataset": c.data.tags[DATASET],
                    "family": c.data.tags[MODEL],
                    "split": int(c.data.tags.get(SPLIT, 0)),
                    "metric": metric,
                    "step": m.step,
                    "value": m.value,
                }
            )
    return pd.DataFrame(rows, columns=["dataset", "family", "split", "metric", "step", "value"])


def protocol(record: StudyRecord) -> dict[str, str]:
    """How the comparison was run, as the study run records it."""
    p, t = record.study.data.params, record.study.data.tags
    budget = p.get("time_budget_s", "None")
    out = {
        "budget": (
            f"equal time: {budget} s of wall-clock per cell (at most {p.get('num_samples')} trials)"
            if budget not in ("None", "", None)
            else f"equal trials: {p.get('num_samples')} per cell"
        ),
        "searcher / scheduler": f"{p.get('searcher')} / {p.get('scheduler')}",
        "default configuration first": p.get("default_first", "no (not recorded)"),
        "splits": f"{p.get('splits', '1')} (train/validation/test, seeded from seed {p.get('seed')})",
        "selection": "validation score; compared: test score of the selected configuration",
        "anytime curves": f"averaged over {ANYTIME_SHUFFLES} shuffles of trial order",
        "git commit": t.get(GIT_COMMIT, "?")
        + (" (dirty: diff in artifact git.diff)" if t.get(GIT_DIRTY) == "true" else ""),
        "study run": record.study.info.run_id,
    }
    out.update({k.removeprefix(VERSION_PREFIX): v for k, v in sorted(t.items()) if k.startswith(VERSION_PREFIX)})
    out.update({k: v for k, v in sorted(t.items()) if k.startswith((HARDWARE_PREFIX, DATASET_PREFIX))})
    return out


@dataclass
class Report:
    """Every table of the report, computed from the store; figures are drawn from these."""

    name: str
    record: StudyRecord
    cells: pd.DataFrame
    leaderboard: pd.DataFrame
    blocks: pd.DataFrame
    normalised: pd.DataFrame
    summary: pd.DataFrame
    asha: pd.DataFrame
    anytime: pd.DataFrame
    learning: pd.DataFrame
    protocol: dict[str, str]
    pairwise: pd.DataFrame = field(default_factory=pd.DataFrame)  # P(row family beats column family)
    importance: pd.DataFrame = field(default_factory=pd.DataFrame)  # family, param, importance, std, cells
    gains: pd.DataFrame = field(default_factory=pd.DataFrame)  # per dataset and family: tuned against defaults
    tunability: pd.DataFrame = field(default_factory=pd.DataFrame)  # per family: gain pooled over datasets
    ensembles: pd.DataFrame = field(default_factory=pd.DataFrame)  # per (dataset, split): the ensemble across families
    figures: dict[str, bytes] = field(default_factory=dict)  # file name -> PNG
    notes: list[str] = field(default_factory=list)

    def short_text(self) -> str:
        """The few lines printed at the end of ``tunelab run``."""
        n = self.blocks["dataset"].nunique()
        lines = [
            f"\nacross {n} dataset{'s' if n != 1 else ''} (test score of the selected configuration; "
            f"normalised: 1 = best family on a dataset, 0 = worst)",
            f"  {'family':<24}{'normalised':>12}{'95 % interval':>16}{'mean rank':>11}{'datasets':>10}",
        ]
        for r in self.summary.itertuples():
            interval = f"{r.ci_low:.2f} – {r.ci_high:.2f}"
            lines.append(
                f"  {r.family:<24}{r.mean_normalised:>12.3f}{interval:>16}{r.mean_rank:>11.2f}{r.datasets:>10}"
            )
        total = self.asha[self.asha["dataset"] == "all"].iloc[0]
        if total["steps_full"] > 0:
            lines.append(
                f"budget steps run: {int(total['steps_run'])} of {int(total['steps_full'])} "
                f"({total['saved_fraction']:.0%} saved by early stopping)"
            )
        return "\n".join(lines)
