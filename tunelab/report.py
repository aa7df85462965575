"""The study report: how the model families compare, per dataset and across datasets.

Reads the MLflow store only (study run > cell runs > trial runs) and writes one
self-contained HTML page (figures embedded as PNG), the same figures as PNG files and the
tables as CSV; ``log`` adds them to the study run as artifacts under ``report/``.

Scores compared across families are test scores of each family's selected configuration
(selected on validation). Normalised score: 0 = worst family, 1 = best family on that
dataset (and split). Ranks: 1 = best, ties averaged.
"""

from __future__ import annotations

import base64
import html
import math
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd
import yaml
from mlflow.entities import Run
from mlflow.tracking import MlflowClient
from scipy import stats

from trainables.base import METRIC_MODES, on_test_split
from tunelab.errors import StudyError
from tunelab.study import data_key
from tunelab.tracking import (
    BEST_PREFIX,
    BEST_STEPS,
    BEST_TRIAL,
    COMPUTE_S,
    DATASET,
    DATASET_PREFIX,
    GIT_COMMIT,
    GIT_DIRTY,
    HARDWARE_PREFIX,
    MODEL,
    PARENT,
    ROLE_CELL,
    ROLE_TRIAL,
    SPLIT,
    STATUS,
    STEPS,
    STUDY,
    TRIAL_ID,
    TRIAL_NUMBER,
    VERSION_PREFIX,
    find_study_run,
    registered_name,
    run_filter,
    search_runs,
)

#: anytime curves are averaged over this many seeded shuffles of each cell's trial order
ANYTIME_SHUFFLES = 50
ANYTIME_POINTS = 100
#: with fewer (dataset, split) estimates per family, the rank tests are a summary rather than a test
FEW_BLOCKS = 5
CD_ALPHA = 0.05
ARTIFACT_DIR = "report"


@dataclass
class StudyRecord:
    """What the store holds of one study run: the run, its cell runs and their trial runs."""

    client: MlflowClient
    study: Run
    cells: list[Run]
    trials: dict[str, list[Run]]  # cell run id -> its trial runs, in trial order

    @classmethod
    def load(cls, client: MlflowClient, name: str) -> "StudyRecord":
        study = find_study_run(client, name)
        exp = study.info.experiment_id
        cells = [c for c in search_runs(client, [exp], run_filter(ROLE_CELL, parent=study.info.run_id))
                 if c.info.status == "FINISHED"]
        ids = {c.info.run_id for c in cells}
        trials: dict[str, list[Run]] = {i: [] for i in ids}
        for t in search_runs(client, [exp], run_filter(ROLE_TRIAL, study=name)):
            parent = t.data.tags.get(PARENT)
            if parent in trials:
                trials[parent].append(t)
        for runs in trials.values():
            runs.sort(key=lambda t: int(t.data.tags.get(TRIAL_NUMBER, 0)))
        cells.sort(key=lambda c: (c.data.tags[DATASET], c.data.tags[MODEL], int(c.data.tags.get(SPLIT, 0))))
        return cls(client, study, cells, trials)


def _metric(cell: Run) -> str:
    return cell.data.params["metric"]


def _sign(metric: str) -> int:
    """+1 when higher is better."""
    return 1 if METRIC_MODES[metric] == "max" else -1


def trial_compute_s(trial: Run) -> float:
    """Seconds a trial trained (Tune's ``time_total_s``); the run's duration for runs without the tag."""
    if COMPUTE_S in trial.data.tags:
        return float(trial.data.tags[COMPUTE_S])
    end = trial.info.end_time or trial.info.start_time
    return max(0.0, (end - trial.info.start_time) / 1000)


# --- tables -----------------------------------------------------------------------------
def cell_table(record: StudyRecord) -> pd.DataFrame:
    """One row per cell (and split): what the cell run records, plus ASHA's budget steps."""
    rows = []
    for c in record.cells:
        m, metric = c.data.metrics, _metric(c)
        trials = record.trials[c.info.run_id]
        steps_run = sum(int(t.data.tags.get(STEPS, 0)) for t in trials)
        rows.append({
            "dataset": c.data.tags[DATASET], "family": c.data.tags[MODEL], "split": int(c.data.tags.get(SPLIT, 0)),
            "metric": metric, "best_val": m.get(f"best_{metric}", np.nan),
            "test": m.get(on_test_split(metric), np.nan),
            "trials": int(m.get("trials", len(trials))), "early_stopped": int(m.get("trials_early_stopped", 0)),
            "failed": int(m.get("trials_failed", 0)), "compute_s": float(m.get("compute_seconds", 0.0)),
            "steps_run": steps_run, "steps_full": len(trials) * int(c.data.params.get("budget_steps", 1)),
            "run_id": c.info.run_id,
        })
    return pd.DataFrame(rows)


def leaderboard(cells: pd.DataFrame) -> pd.DataFrame:
    """Per dataset, families best first: mean (± std over splits) of validation and test scores, counts, compute."""
    g = cells.groupby(["dataset", "family"], sort=False)
    out = g.agg(metric=("metric", "first"), best_val=("best_val", "mean"), best_val_std=("best_val", "std"),
                test=("test", "mean"), test_std=("test", "std"), splits=("split", "nunique"), trials=("trials", "sum"),
                early_stopped=("early_stopped", "sum"), failed=("failed", "sum"),
                compute_s=("compute_s", "sum")).reset_index()
    out[["best_val_std", "test_std"]] = out[["best_val_std", "test_std"]].fillna(0.0)
    out["_key"] = [-_sign(m) * v for m, v in zip(out["metric"], out["best_val"])]
    out = out.sort_values(["dataset", "_key"], na_position="last").drop(columns="_key")
    return out.reset_index(drop=True)


def block_scores(cells: pd.DataFrame) -> pd.DataFrame:
    """Per (dataset, split) block and family: test score, normalised score and rank within the block."""
    rows = []
    for (dataset, split), block in cells.groupby(["dataset", "split"], sort=False):
        block = block.dropna(subset=["test"])
        if block.empty:
            continue
        sign = _sign(block["metric"].iloc[0])
        score = sign * block["test"].to_numpy()  # higher is better
        lo, hi = score.min(), score.max()
        norm = (score - lo) / (hi - lo) if hi > lo else np.ones_like(score)
        ranks = stats.rankdata(-score)
        for fam, test, n, r in zip(block["family"], block["test"], norm, ranks):
            rows.append({"dataset": dataset, "split": split, "family": fam, "test": test,
                         "normalised": float(n), "rank": float(r)})
    return pd.DataFrame(rows, columns=["dataset", "split", "family", "test", "normalised", "rank"])


def across_datasets(blocks: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(dataset × family normalised score, averaged over splits) and the per-family summary:
    mean normalised score, its spread over datasets, mean rank, datasets counted."""
    per_ds = blocks.groupby(["dataset", "family"], sort=False)[["normalised", "rank"]].mean().reset_index()
    norm = per_ds.pivot(index="family", columns="dataset", values="normalised")
    summary = per_ds.groupby("family").agg(mean_normalised=("normalised", "mean"),
                                           std_normalised=("normalised", "std"),
                                           mean_rank=("rank", "mean"), datasets=("dataset", "nunique"))
    summary["std_normalised"] = summary["std_normalised"].fillna(0.0)
    summary = summary.sort_values(["mean_rank", "mean_normalised"], ascending=[True, False])
    return norm.loc[summary.index], summary.reset_index()


def asha_savings(cells: pd.DataFrame) -> pd.DataFrame:
    """Budget steps run against the steps every trial would have run to the full budget, per cell and in all."""
    out = cells.groupby(["dataset", "family"], sort=False)[["steps_run", "steps_full"]].sum().reset_index()
    total = pd.DataFrame([{"dataset": "all", "family": "all", "steps_run": out["steps_run"].sum(),
                           "steps_full": out["steps_full"].sum()}])
    out = pd.concat([out, total], ignore_index=True)
    out["saved_fraction"] = 1 - out["steps_run"] / out["steps_full"].where(out["steps_full"] > 0)
    return out


def anytime_curve(compute: np.ndarray, values: np.ndarray, sign: int, grid: np.ndarray,
                  shuffles: int = ANYTIME_SHUFFLES, seed: int = 0) -> np.ndarray:
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
        metric = _metric(cells[0])
        series = []
        for c in cells:
            trials = record.trials[c.info.run_id]
            compute = np.array([trial_compute_s(t) for t in trials])
            values = np.array([t.data.metrics.get(metric, np.nan) if t.data.tags.get(STATUS) != "failed" else np.nan
                               for t in trials])
            series.append((compute, values))
        total = max((s[0].sum() for s in series), default=0.0)
        if total <= 0:
            continue
        grid = np.linspace(0, total, ANYTIME_POINTS + 1)[1:]
        curve = np.vstack([anytime_curve(cmp, val, _sign(metric), grid) for cmp, val in series]).mean(axis=0)
        rows += [{"dataset": dataset, "family": family, "metric": metric, "compute_s": x, "best_val_so_far": y}
                 for x, y in zip(grid, curve)]
    return pd.DataFrame(rows, columns=["dataset", "family", "metric", "compute_s", "best_val_so_far"])


def learning_curves(record: StudyRecord) -> pd.DataFrame:
    """The validation metric per budget step of each cell's best trial."""
    rows = []
    for c in record.cells:
        best = c.data.tags.get(BEST_TRIAL)
        metric = _metric(c)
        run = next((t for t in record.trials[c.info.run_id] if t.data.tags.get(TRIAL_ID) == best), None)
        if run is None:
            continue
        for m in sorted(record.client.get_metric_history(run.info.run_id, metric), key=lambda m: m.step):
            rows.append({"dataset": c.data.tags[DATASET], "family": c.data.tags[MODEL],
                         "split": int(c.data.tags.get(SPLIT, 0)), "metric": metric, "step": m.step, "value": m.value})
    return pd.DataFrame(rows, columns=["dataset", "family", "split", "metric", "step", "value"])


def protocol(record: StudyRecord) -> dict[str, str]:
    """How the comparison was run, as the study run records it."""
    p, t = record.study.data.params, record.study.data.tags
    budget = p.get("time_budget_s", "None")
    out = {
        "budget": (f"equal time: {budget} s of wall-clock per cell (at most {p.get('num_samples')} trials)"
                   if budget not in ("None", "", None) else f"equal trials: {p.get('num_samples')} per cell"),
        "searcher / scheduler": f"{p.get('searcher')} / {p.get('scheduler')}",
        "default configuration first": p.get("default_first", "no (not recorded)"),
        "splits": f"{p.get('splits', '1')} (train/validation/test, seeded from seed {p.get('seed')})",
        "selection": "validation score; compared: test score of the selected configuration",
        "anytime curves": f"averaged over {ANYTIME_SHUFFLES} shuffles of trial order",
        "git commit": t.get(GIT_COMMIT, "?") + (" (dirty: diff in artifact git.diff)" if t.get(GIT_DIRTY) == "true"
                                                 else ""),
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
    figures: dict[str, bytes] = field(default_factory=dict)  # file name -> PNG
    notes: list[str] = field(default_factory=list)

    def short_text(self) -> str:
        """The few lines printed at the end of ``tunelab run``."""
        n = self.blocks["dataset"].nunique()
        lines = [f"\nacross {n} dataset{'s' if n != 1 else ''} (test score of the selected configuration; "
                 f"normalised: 1 = best family on a dataset, 0 = worst)",
                 f"  {'family':<24}{'normalised':>12}{'mean rank':>11}{'datasets':>10}"]
        for r in self.summary.itertuples():
            lines.append(f"  {r.family:<24}{r.mean_normalised:>12.3f}{r.mean_rank:>11.2f}{r.datasets:>10}")
        total = self.asha[self.asha["dataset"] == "all"].iloc[0]
        if total["steps_full"] > 0:
            lines.append(f"budget steps run: {int(total['steps_run'])} of {int(total['steps_full'])} "
                         f"({total['saved_fraction']:.0%} saved by early stopping)")
        return "\n".join(lines)


def build(record: StudyRecord) -> Report:
    """All tables of the report and its figures."""
    cells = cell_table(record)
    if cells.empty:
        raise StudyError(record.study.data.tags.get(STUDY, "?"), "the study has no finished cell to report on")
    blocks = block_scores(cells)
    norm, summary = across_datasets(blocks)
    rep = Report(record.study.data.tags[STUDY], record, cells, leaderboard(cells), blocks, norm, summary,
                 asha_savings(cells), anytime_table(record), learning_curves(record), protocol(record))
    from tunelab import report_figures

    rep.figures = report_figures.draw(rep)
    rep.figures.update(cell_diagnostics(record))
    return rep


DIAGNOSTICS_DIR = "diagnostics"


def cell_diagnostics(record: StudyRecord) -> dict[str, bytes]:
    """The PNGs each cell run holds under ``diagnostics/``, named ``diagnostics_<dataset>__<family>__<file>``."""
    out = {}
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # one bar per file otherwise
    with tempfile.TemporaryDirectory(prefix="tunelab-report-") as tmp:
        for c in record.cells:
            run_id = c.info.run_id
            pngs = [f.path for f in record.client.list_artifacts(run_id, DIAGNOSTICS_DIR) if f.path.endswith(".png")]
            for path in pngs:
                local = record.client.download_artifacts(run_id, path, tmp)
                key = f"diagnostics_{c.data.tags[DATASET]}__{c.data.tags[MODEL]}__{Path(path).name}"
                out[key] = Path(local).read_bytes()
    return out


# --- output -----------------------------------------------------------------------------
TABLES = {"leaderboard.csv": "leaderboard", "scores_by_split.csv": "blocks", "families.csv": "summary",
          "asha.csv": "asha", "anytime.csv": "anytime", "learning_curves.csv": "learning"}


def write(rep: Report, out: Path) -> Path:
    """The HTML page, PNGs and CSVs into ``out``; returns the HTML page's path."""
    out.mkdir(parents=True, exist_ok=True)
    for name, attr in TABLES.items():
        getattr(rep, attr).to_csv(out / name, index=False)
    rep.normalised.to_csv(out / "normalised.csv")
    for name, png in rep.figures.items():
        (out / name).write_bytes(png)
    page = out / "report.html"
    page.write_text(to_html(rep))
    return page


def log(rep: Report, out: Path) -> None:
    """Add the written report to the study run's artifacts under ``report/``."""
    rep.record.client.log_artifacts(rep.record.study.info.run_id, str(out), ARTIFACT_DIR)


def _fmt(v) -> str:
    if isinstance(v, float):
        return "—" if math.isnan(v) else f"{v:.4g}"
    return html.escape(str(v))


def _table(df: pd.DataFrame) -> str:
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in df.columns)
    body = "".join("<tr>" + "".join(f"<td>{_fmt(v)}</td>" for v in row) + "</tr>" for row in df.itertuples(index=False))
    return f"<table><tr>{head}</tr>{body}</table>"


def _img(rep: Report, name: str, alt: str) -> str:
    if name not in rep.figures:
        return ""
    data = base64.b64encode(rep.figures[name]).decode()
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _pm(mean: float, std: float, splits: int) -> str:
    return _fmt(mean) if splits <= 1 else f"{_fmt(mean)} ± {_fmt(std)}"


CSS = ("body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;color:#222}"
       "table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border:1px solid #ccc;padding:3px 8px;"
       "text-align:right}th{background:#f3f3f3}td:first-child{text-align:left}img{max-width:100%}"
       "h2{border-bottom:1px solid #ddd}.note{color:#555;font-size:.9em}.diag img{width:32%;margin:2px}")


def to_html(rep: Report) -> str:
    """One page, no external resources: tables inline, figures as data: URIs."""
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>tunelab report: {html.escape(rep.name)}</title>"
             f"<style>{CSS}</style></head><body><h1>Study report: {html.escape(rep.name)}</h1>"]
    parts.append("<h2>Across datasets</h2><p class='note'>Test score of each family's selected configuration "
                 "(selected on validation). Normalised: 1 = best family on the dataset, 0 = worst; rank 1 = best.</p>")
    summary = rep.summary.rename(columns={"mean_normalised": "normalised (mean)", "std_normalised": "± (std over datasets)",
                                          "mean_rank": "mean rank"})
    parts.append(_table(summary))
    parts.append(_img(rep, "normalised.png", "normalised score per family and dataset"))
    parts.append(_img(rep, "critical_difference.png", "critical-difference diagram"))
    parts += [f"<p class='note'>{html.escape(n)}</p>" for n in rep.notes]
    parts.append("<h2>Per dataset</h2>")
    for dataset, lb in rep.leaderboard.groupby("dataset", sort=False):
        metric = lb["metric"].iloc[0]
        rows = pd.DataFrame({
            "family": lb["family"],
            f"best {metric}": [_pm(m, s, n) for m, s, n in zip(lb["best_val"], lb["best_val_std"], lb["splits"])],
            f"{on_test_split(metric)} (selected)": [_pm(m, s, n) for m, s, n in zip(lb["test"], lb["test_std"], lb["splits"])],
            "trials": lb["trials"], "early-stopped": lb["early_stopped"], "failed": lb["failed"],
            "compute s": lb["compute_s"].round(1)})
        parts.append(f"<h3>{html.escape(dataset)}</h3>{_table(rows)}")
        parts.append(_img(rep, f"anytime_{dataset}.png", f"anytime curves on {dataset}"))
        parts.append(_img(rep, f"learning_{dataset}.png", f"learning curves on {dataset}"))
        diag = sorted(n for n in rep.figures if n.startswith(f"diagnostics_{dataset}__"))
        if diag:
            parts.append("<h4>Diagnostics of each family's best model</h4>")
        for family in lb["family"]:
            names = [n for n in diag if n.startswith(f"diagnostics_{dataset}__{family}__")]
            if names:
                parts.append(f"<div class='diag'><b>{html.escape(family)}</b><br>"
                             + "".join(_img(rep, n, n) for n in names) + "</div>")
    parts.append("<h2>Compute saved by early stopping</h2><p class='note'>Budget steps the trials ran against the "
                 "steps they would have run had every trial gone to the full budget.</p>")
    parts.append(_table(rep.asha))
    parts.append("<h2>Protocol and provenance</h2>")
    parts.append(_table(pd.DataFrame(list(rep.protocol.items()), columns=["", "value"])))
    parts.append("</body></html>")
    return "\n".join(parts)


def make_report(client: MlflowClient, name: str, out: Path, log_artifacts: bool = True) -> tuple[Report, Path]:
    """Read study ``name`` from the store, write its report into ``out`` and (by default) log it to the study run."""
    rep = build(StudyRecord.load(client, name))
    page = write(rep, out)
    if log_artifacts:
        log(rep, out)
    return rep, page


def short_report(uri: str, name: str, out: Optional[Path] = None) -> str:
    """For the end of ``tunelab run``: write and log the report, return its short text."""
    out = out or Path("reports") / name
    rep, page = make_report(MlflowClient(uri), name, out)
    return rep.short_text() + f"\nfull report: {page} (also in the study run's artifacts under {ARTIFACT_DIR}/)"


def best_configs(client: MlflowClient, name: str, dataset: Optional[str] = None) -> list[dict]:
    """Per cell of study ``name`` (or of one dataset): the selected configuration, its scores and model URI."""
    study = find_study_run(client, name)
    cells = search_runs(client, [study.info.experiment_id], run_filter(ROLE_CELL, parent=study.info.run_id))
    known = sorted({c.data.tags[DATASET] for c in cells})
    if dataset is not None and dataset not in known:
        raise StudyError("--dataset", f"study '{name}' has no dataset '{dataset}' (expected one of {', '.join(known)})")
    out = []
    for c in cells:
        tags, metric = c.data.tags, _metric(c)
        if (dataset is not None and tags[DATASET] != dataset) or f"best_{metric}" not in c.data.metrics:
            continue
        uri, registered = None, registered_name(name, data_key(tags[DATASET], int(tags.get(SPLIT, 0))))
        try:  # the registered alias, when this cell's model is the one it points to
            mv = client.get_model_version_by_alias(registered, tags[MODEL])
            uri = f"models:/{registered}@{tags[MODEL]}" if mv.run_id == c.info.run_id else None
        except Exception:  # never registered (tracking.register_models: false)
            pass
        out.append({"dataset": tags[DATASET], "split": int(tags.get(SPLIT, 0)), "family": tags[MODEL], "metric": metric,
                    "best_val": c.data.metrics[f"best_{metric}"], "test": c.data.metrics.get(on_test_split(metric)),
                    "config": {k.removeprefix(BEST_PREFIX): yaml.safe_load(v)
                               for k, v in sorted(tags.items()) if k.startswith(BEST_PREFIX)},
                    "steps": tags.get(BEST_STEPS), "model_uri": uri, "run_id": c.info.run_id})
    out.sort(key=lambda r: (r["dataset"], r["split"], -_sign(r["metric"]) * r["best_val"]))
    return out
