"""The report as one HTML page without external resources: tables inline, figures as data: URIs."""

from __future__ import annotations

import base64
import html
import math

import pandas as pd

from trainables.base import on_test_split
from tunelab.report import ensemble
from tunelab.report.tables import Report


def _fmt(v) -> str:
    if isinstance(v, float):
        return "—" if math.isnan(v) else f"{v:.4g}"
    return html.escape(str(v))


def table(df: pd.DataFrame) -> str:
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


CSS = (
    "body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;color:#222}"
    "table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border:1px solid #ccc;padding:3px 8px;"
    "text-align:right}th{background:#f3f3f3}td:first-child{text-align:left}img{max-width:100%}"
    "h2{border-bottom:1px solid #ddd}.note{color:#555;font-size:.9em}.diag img{width:32%;margin:2px}"
)


def to_html(rep: Report) -> str:
    """One page, no external resources: tables inline, figures as data: URIs."""
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>tunelab report: {html.escape(rep.name)}</title>"
        f"<style>{CSS}</style></head><body><h1>Study report: {html.escape(rep.name)}</h1>"
    ]
    parts.append(
        "<h2>Across datasets</h2><p class='note'>Test score of each family's selected configuration "
        "(selected on validation). Normalised: 1 = best family on the dataset, 0 = worst; rank 1 = best.</p>"
    )
    summary = rep.summary.assign(
        interval=[f"{lo:.2f} – {hi:.2f}" for lo, hi in zip(rep.summary["ci_low"], rep.summary["ci_high"])]
    ).drop(columns=["ci_low", "ci_high"])
    summary = summary.rename(
        columns={
            "mean_normalised": "normalised (mean)",
            "std_normalised": "± (std over datasets)",
            "interval": "95 % interval (datasets resampled)",
            "mean_rank": "mean rank",
        }
    )
    parts.append(table(summary))
    if not rep.pairwise.empty:
        parts.append(
            "<p class='note'>P(row family's mean normalised score beats the column's), datasets resampled:</p>"
        )
        parts.append(table(rep.pairwise.reset_index(names="family")))
    parts.append(_img(rep, "normalised.png", "normalised score per family and dataset"))
    parts.append(_img(rep, "critical_difference.png", "critical-difference diagram"))
    parts += [f"<p class='note'>{html.escape(n)}</p>" for n in rep.notes]
    if not rep.tunability.empty:
        parts.append(
            "<h2>What tuning bought</h2><p class='note'>Per family, the share of the defaults' test error that the "
            "selected configuration removed (error: the metric where lower is better, 1 − score where higher is; "
            "both trained on the same rows, scored on the same test rows), averaged over datasets, with a 95 % "
            "interval from resampling the datasets. Negative: the selection did worse on test than the defaults.</p>"
        )
        parts.append(_img(rep, "tuning_gain.png", "gain of tuning over the defaults per family"))
        pooled = rep.tunability.assign(
            interval=[f"{lo:.1%} – {hi:.1%}" for lo, hi in zip(rep.tunability["ci_low"], rep.tunability["ci_high"])],
            gain=[f"{g:.1%}" for g in rep.tunability["gain"]],
        ).drop(columns=["ci_low", "ci_high"])
        parts.append(table(pooled.rename(columns={"gain": "gain (mean)", "interval": "95 % interval"})))
        parts.append(table(rep.gains.rename(columns={"default_test": "test (defaults)", "test": "test (tuned)"})))
    if not rep.ensembles.empty:
        selected, best = (ensemble.at_least(rep.ensembles, bar) for bar in ("selected_family", "best_family"))
        parts.append(
            "<h2>Ensemble across families</h2><p class='note'>Per dataset, greedy ensemble selection with "
            "replacement (Caruana et al. 2004) over the stored validation predictions of every family's best "
            f"trials, scored on test: no training, the trials' predictions averaged. At least as good on test as "
            f"the family the study selects on validation on {selected:.0%} of the datasets, and as the family best "
            f"on test (a bar no selection on validation is sure to reach) on {best:.0%}.</p>"
        )
        parts.append(table(rep.ensembles))
    if not rep.importance.empty:
        parts.append(
            "<h2>Hyperparameter importance</h2><p class='note'>Per family, each hyperparameter's share of what a "
            "random-forest surrogate explains of the validation score over the cell's trials (fANOVA's model), "
            "averaged over the family's cells.</p>"
        )
        parts.append(_img(rep, "importance.png", "hyperparameter importance per family"))
        parts.append(table(rep.importance))
    parts.append("<h2>Per dataset</h2>")
    for dataset, lb in rep.leaderboard.groupby("dataset", sort=False):
        metric = lb["metric"].iloc[0]
        rows = pd.DataFrame(
            {
                "family": lb["family"],
                f"best {metric}": [_pm(m, s, n) for m, s, n in zip(lb["best_val"], lb["best_val_std"], lb["splits"])],
                f"{on_test_split(metric)} (selected)": [
                    _pm(m, s, n) for m, s, n in zip(lb["test"], lb["test_std"], lb["splits"])
                ],
                "trials": lb["trials"],
                "early-stopped": lb["early_stopped"],
                "failed": lb["failed"],
                "compute s": lb["compute_s"].round(1),
                "CPU·s": lb["cpu_s"].round(1),
                "GPU·s": lb["gpu_s"].round(1),
            }
        )
        parts.append(f"<h3>{html.escape(dataset)}</h3>{table(rows)}")
        parts.append(_img(rep, f"anytime_{dataset}.png", f"anytime curves on {dataset}"))
        parts.append(_img(rep, f"learning_{dataset}.png", f"learning curves on {dataset}"))
        diag = sorted(n for n in rep.figures if n.startswith(f"diagnostics_{dataset}__"))
        if diag:
            parts.append("<h4>Diagnostics of each family's best model</h4>")
        for family in lb["family"]:
            names = [n for n in diag if n.startswith(f"diagnostics_{dataset}__{family}__")]
            if names:
                parts.append(
                    f"<div class='diag'><b>{html.escape(family)}</b><br>"
                    + "".join(_img(rep, n, n) for n in names)
                    + "</div>"
                )
    parts.append(
        "<h2>Compute saved by early stopping</h2><p class='note'>Budget steps the trials ran against the "
        "steps they would have run had every trial gone to the full budget.</p>"
    )
    parts.append(table(rep.asha))
    parts.append("<h2>Protocol and provenance</h2>")
    parts.append(table(pd.DataFrame(list(rep.protocol.items()), columns=["", "value"])))
    parts.append("</body></html>")
    return "\n".join(parts)
