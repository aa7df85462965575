"""Study against study (``tunelab compare A B``): the cells two studies share, side by side — test scores, compute
— what each family gained from A to B pooled over the shared datasets with a 95 % interval, and what changed
between the runs (search settings, code, versions, data, hardware). Text for the terminal, an HTML page in the
report's style."""

from __future__ import annotations

import html
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from mlflow.tracking import MlflowClient

from tunelab.errors import StudyError
from tunelab.report.html import CSS, table
from tunelab.report.record import StudyRecord
from tunelab.report.stats import pooled
from tunelab.report.tables import cell_table
from tunelab.report.tunability import error
from tunelab.tracking import CODE_SHA256, DATASET_PREFIX, GIT_COMMIT, GIT_DIRTY, HARDWARE_PREFIX, VERSION_PREFIX

#: the study run's tags worth comparing (besides its params: the search settings)
CHANGE_TAGS = (GIT_COMMIT, GIT_DIRTY, CODE_SHA256)
CHANGE_PREFIXES = (VERSION_PREFIX, DATASET_PREFIX, HARDWARE_PREFIX)


@dataclass
class Comparison:
    a: str
    b: str
    cells: pd.DataFrame  # per shared (dataset, family): test and compute in A and B, B's error against A's
    families: pd.DataFrame  # per family: mean change of error over the shared datasets, 95 % interval
    changed: pd.DataFrame  # what differs between the two study runs: setting, A, B


def compare(client: MlflowClient, a: str, b: str) -> Comparison:
    records = {name: StudyRecord.load(client, name) for name in (a, b)}
    tables = {name: _per_cell(cell_table(r)) for name, r in records.items()}
    cells = tables[a].merge(tables[b], on=["dataset", "family", "metric"], suffixes=("_a", "_b"))
    if cells.empty:
        raise StudyError(b, f"shares no (dataset, family, metric) cell with study '{a}'")
    before = np.array([error(m, v) for m, v in zip(cells["metric"], cells["test_a"])], dtype=float)
    after = np.array([error(m, v) for m, v in zip(cells["metric"], cells["test_b"])], dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        cells["error_change"] = np.where(before > 0, (after - before) / before, np.nan)
    families = pooled(cells.pivot(index="family", columns="dataset", values="error_change"), "error_change")
    return Comparison(a, b, cells, families, _changed(records[a], records[b]))


def _per_cell(cells: pd.DataFrame) -> pd.DataFrame:
    """Per (dataset, family): test score (mean and std over splits) and compute, as the comparison shows them."""
    g = cells.groupby(["dataset", "family", "metric"], sort=False)
    out = g.agg(test=("test", "mean"), test_std=("test", "std"), splits=("split", "nunique"), cpu_s=("cpu_s", "sum"))
    return out.reset_index().fillna({"test_std": 0.0})


def _changed(a: StudyRecord, b: StudyRecord) -> pd.DataFrame:
    def settings(r: StudyRecord) -> dict[str, str]:
        tags = r.study.data.tags
        kept = {k: v for k, v in tags.items() if k in CHANGE_TAGS or k.startswith(CHANGE_PREFIXES)}
        return {**{f"search: {k}": v for k, v in r.study.data.params.items()}, **kept}

    sa, sb = settings(a), settings(b)
    rows = [(k, sa.get(k, "—"), sb.get(k, "—")) for k in sorted(sa.keys() | sb.keys()) if sa.get(k) != sb.get(k)]
    return pd.DataFrame(rows, columns=["setting", a.study.data.tags.get("tunelab.study", "A"), "B"]).rename(
        columns={"B": b.study.data.tags.get("tunelab.study", "B")}
    )


def _score(mean: float, std: float, splits: int) -> str:
    return f"{mean:.4g}" if splits <= 1 else f"{mean:.4g} ± {std:.2g}"


def _side_by_side(c: Comparison) -> pd.DataFrame:
    cells = c.cells
    return pd.DataFrame(
        {
            "dataset": cells["dataset"],
            "family": cells["family"],
            "metric": [m.replace("val_", "test_") for m in cells["metric"]],
            c.a: [_score(m, s, n) for m, s, n in zip(cells["test_a"], cells["test_std_a"], cells["splits_a"])],
            c.b: [_score(m, s, n) for m, s, n in zip(cells["test_b"], cells["test_std_b"], cells["splits_b"])],
            "error change": [f"{v:+.1%}" for v in cells["error_change"]],
            f"CPU·s {c.a}": cells["cpu_s_a"].round(1),
            f"CPU·s {c.b}": cells["cpu_s_b"].round(1),
        }
    )


def _pooled(c: Comparison) -> pd.DataFrame:
    f = c.families
    return pd.DataFrame(
        {
            "family": f["family"],
            "error change (mean)": [f"{v:+.1%}" for v in f["error_change"]],
            "95 % interval": [f"{lo:+.1%} – {hi:+.1%}" for lo, hi in zip(f["ci_low"], f["ci_high"])],
            "datasets": f["datasets"],
        }
    )


def to_text(c: Comparison) -> str:
    lines = [
        f"study '{c.b}' against '{c.a}': {len(c.cells)} shared cells (test score of each cell's selected "
        "configuration; error change: B's test error against A's, negative = B better)",
        _pooled(c).to_string(index=False),
        "",
        _side_by_side(c).to_string(index=False),
        "",
        "what changed:" if not c.changed.empty else "what changed: nothing recorded differs",
    ]
    if not c.changed.empty:
        lines.append(c.changed.to_string(index=False))
    return "\n".join(lines)


def to_html(c: Comparison) -> str:
    title = f"tunelab: {html.escape(c.b)} against {html.escape(c.a)}"
    return "\n".join(
        [
            f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title><style>{CSS}</style></head>"
            f"<body><h1>Study {html.escape(c.b)} against {html.escape(c.a)}</h1>",
            "<p class='note'>The cells both studies ran: test score of each cell's selected configuration. Error "
            "change: B's test error against A's (the metric where lower is better, 1 − score where higher is); "
            "negative: B did better. Per family, its mean over the shared datasets with a 95 % interval from "
            "resampling them.</p>",
            table(_pooled(c)),
            "<h2>Cells</h2>",
            table(_side_by_side(c)),
            "<h2>What changed</h2>",
            table(c.changed) if not c.changed.empty else "<p>Nothing recorded differs.</p>",
            "</body></html>",
        ]
    )


def write(c: Comparison, out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    c.cells.to_csv(out / "cells.csv", index=False)
    c.families.to_csv(out / "families.csv", index=False)
    c.changed.to_csv(out / "changed.csv", index=False)
    page = out / "compare.html"
    page.write_text(to_html(c))
    return page
