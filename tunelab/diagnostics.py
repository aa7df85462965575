"""Diagnostics of each cell's best model, logged to its cell run under ``diagnostics/``.

``compute``: test-split predictions, permutation importance of the raw features (a raw column
one-hot encoded into several is permuted as one) and the validation metric per budget step.
It runs in a Ray task where the cell's resources are (``tunelab.run.cell_work``), for the model the best trial
kept or a retrained one. ``figures`` draws them there too (matplotlib's object API: several may draw at once).
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from sklearn import metrics as skm

from trainables.base import (
    CLASSIFICATION,
    METRIC_MODES,
    Context,
    Data,
    ModelFamily,
    evaluate,
    on_test_split,
    predictions,
    score,
)
from trainables.trial import refit

PERMUTATION_REPEATS = 5
MAX_ROWS_PER_CALL = 50_000  # shuffled test rows predicted at once
TOP_FEATURES = 15
FIG_DPI = 100
FIG_SIZE = (5.0, 3.8)


def importance(family: ModelFamily, model: Any, data: Data, metric: str, seed: int) -> dict:
    """Mean and std of the drop in the test ``metric`` (higher = more important) per raw feature.

    Permutation importance as scikit-learn's ``permutation_importance`` computes it, except that a raw
    column one-hot encoded into several is shuffled as one, and that the repeats of a feature are
    predicted in one call: on test sets of this size a forest's cost is per call, not per row.
    """
    raw = np.array(data.raw_features or data.feature_names)
    names = list(dict.fromkeys(raw.tolist()))
    X, y, n = data.X_test, data.y_test, len(data.y_test)
    test, sign = on_test_split(metric), (1 if METRIC_MODES[metric] == "max" else -1)
    baseline = sign * score(family.ctx, y, predictions(family, model, X), "test")[test]
    per_call = max(1, min(PERMUTATION_REPEATS, MAX_ROWS_PER_CALL // max(n, 1)))
    rng = np.random.default_rng(seed)
    means, stds = [], []
    for name in names:
        cols, drops = np.flatnonzero(raw == name), []
        for first in range(0, PERMUTATION_REPEATS, per_call):
            k = min(per_call, PERMUTATION_REPEATS - first)
            shuffled = np.tile(X, (k, 1))
            for r in range(k):
                shuffled[r * n : (r + 1) * n, cols] = X[np.ix_(rng.permutation(n), cols)]
            pred = predictions(family, model, shuffled)
            drops += [baseline - sign * score(family.ctx, y, pred[r * n : (r + 1) * n], "test")[test] for r in range(k)]
        means.append(float(np.mean(drops)))
        stds.append(float(np.std(drops)))
    return {"features": names, "mean": means, "std": stds}


def compute(family: ModelFamily, model: Any, data: Data, metric: str, curve: list[float], seed: int) -> dict:
    """Everything the figures need, small enough to travel back from the Ray task."""
    out: dict[str, Any] = {
        "task": family.ctx.task,
        "metric": metric,
        "y": data.y_test.tolist(),
        "curve": curve,
        "classes": data.classes,
        "importance": importance(family, model, data, metric, seed),
    }
    if family.ctx.task == CLASSIFICATION:
        out["proba"] = family.predict_proba(model, data.X_test).tolist()
    else:
        out["pred"] = np.asarray(family.predict(model, data.X_test)).tolist()
    return out


def diagnose(
    family_cls: type[ModelFamily], data: Data, model: Any, ctx: Context, metric: str, curve: list[float]
) -> dict:
    """A trained model's test scores and diagnostics: ``{"model", "test", "diagnostics"}``."""
    family = family_cls(ctx)
    return {
        "model": model,
        "test": evaluate(family, model, data.X_test, data.y_test, "test"),
        "diagnostics": compute(family, model, data, metric, curve, ctx.seed),
    }


def refit_with_diagnostics(
    family_cls: type[ModelFamily],
    data: Data,
    config: dict,
    ctx: Context,
    steps: int,
    metric: str,
    in_ray_worker: bool = True,
) -> dict:
    """``refit`` plus ``diagnose`` of the refitted model (run as a Ray task, or in the driver on one machine)."""
    out = refit(family_cls, data, config, ctx, steps, in_ray_worker=in_ray_worker, curve_metric=metric)
    return diagnose(family_cls, data, out["model"], ctx, metric, out["curve"])


# --- figures (driver) -------------------------------------------------------------------
def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=FIG_DPI, bbox_inches="tight")
    return buf.getvalue()


def _confusion(d: dict, title: str) -> bytes:
    y, pred = np.array(d["y"]), np.array(d["proba"]).argmax(axis=1)
    labels = d["classes"] or [str(i) for i in range(np.array(d["proba"]).shape[1])]
    cm = skm.confusion_matrix(y, pred, labels=list(range(len(labels))))
    fig = Figure(figsize=FIG_SIZE)
    ax = fig.subplots()
    ax.imshow(cm, cmap="Blues")
    for (i, j), v in np.ndenumerate(cm):
        ax.text(j, i, str(v), ha="center", va="center", color="white" if v > cm.max() / 2 else "black")
    ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("actual")
    ax.set_title(f"{title}: confusion matrix (test)", fontsize=9)
    return _png(fig)


def _curves(d: dict, title: str, kind: str) -> bytes:
    """ROC or precision-recall curves on the test split, one per class (one-vs-rest) or one for two classes."""
    y, proba = np.array(d["y"]), np.array(d["proba"])
    labels = d["classes"] or [str(i) for i in range(proba.shape[1])]
    classes = [1] if proba.shape[1] == 2 else range(proba.shape[1])
    fig = Figure(figsize=FIG_SIZE)
    ax = fig.subplots()
    for c in classes:
        truth = (y == c).astype(int)
        if truth.min() == truth.max():
            continue
        if kind == "roc":
            x, yy, _ = skm.roc_curve(truth, proba[:, c])
            ax.plot(x, yy, label=f"{labels[c]} (AUC {skm.auc(x, yy):.3f})")
        else:
            p, r, _ = skm.precision_recall_curve(truth, proba[:, c])
            ax.plot(r, p, label=f"{labels[c]} (AP {skm.average_precision_score(truth, proba[:, c]):.3f})")
    if kind == "roc":
        ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=0.8)
    ax.set_xlabel("false positive rate" if kind == "roc" else "recall")
    ax.set_ylabel("true positive rate" if kind == "roc" else "precision")
    ax.set_title(f"{title}: {'ROC' if kind == 'roc' else 'precision-recall'} (test)", fontsize=9)
    ax.legend(fontsize=7)
    return _png(fig)


def _regression(d: dict, title: str, kind: str) -> bytes:
    y, pred = np.array(d["y"]), np.array(d["pred"])
    fig = Figure(figsize=FIG_SIZE)
    ax = fig.subplots()
    if kind == "actual":
        ax.scatter(y, pred, s=8, alpha=0.6)
        lo, hi = min(y.min(), pred.min()), max(y.max(), pred.max())
        ax.plot([lo, hi], [lo, hi], ls="--", color="grey", lw=0.8)
        ax.set_xlabel("actual")
        ax.set_ylabel("predicted")
    else:
        ax.scatter(pred, y - pred, s=8, alpha=0.6)
        ax.axhline(0, ls="--", color="grey", lw=0.8)
        ax.set_xlabel("predicted")
        ax.set_ylabel("residual (actual − predicted)")
    ax.set_title(f"{title}: {'predicted vs actual' if kind == 'actual' else 'residuals'} (test)", fontsize=9)
    return _png(fig)


def _learning(d: dict, title: str) -> bytes:
    fig = Figure(figsize=FIG_SIZE)
    ax = fig.subplots()
    ax.plot(range(1, len(d["curve"]) + 1), d["curve"], marker="o", ms=3)
    ax.set_xlabel("budget step")
    ax.set_ylabel(d["metric"])
    ax.set_title(f"{title}: learning curve of the best configuration", fontsize=9)
    ax.grid(alpha=0.3)
    return _png(fig)


def _importance(d: dict, title: str) -> bytes:
    imp = d["importance"]
    order = np.argsort(imp["mean"])[::-1][:TOP_FEATURES][::-1]
    fig = Figure(figsize=(FIG_SIZE[0], 1.0 + 0.22 * len(order)))
    ax = fig.subplots()
    ax.barh(
        [imp["features"][i] for i in order],
        [imp["mean"][i] for i in order],
        xerr=[imp["std"][i] for i in order],
        color="tab:blue",
    )
    ax.set_xlabel(f"drop in test {d['metric'].removeprefix('val_')} when permuted")
    ax.set_title(f"{title}: permutation importance (test)", fontsize=9)
    ax.tick_params(axis="y", labelsize=7)
    return _png(fig)


def figures(d: dict, title: str) -> dict[str, bytes]:
    """PNG per diagnostic, by file name."""
    out = {"permutation_importance.png": _importance(d, title)}
    if d["task"] == CLASSIFICATION:
        out.update(
            {
                "confusion_matrix.png": _confusion(d, title),
                "roc.png": _curves(d, title, "roc"),
                "precision_recall.png": _curves(d, title, "pr"),
            }
        )
    else:
        out.update(
            {
                "predicted_vs_actual.png": _regression(d, title, "actual"),
                "residuals.png": _regression(d, title, "residual"),
            }
        )
    if len(d["curve"]) > 1:
        out["learning_curve.png"] = _learning(d, title)
    out["importance.json"] = importance_json(d)
    return out


def importance_json(d: dict) -> bytes:
    """The permutation importance of ``d`` as the cell run's ``diagnostics/importance.json``."""
    return _json(d["importance"])


def _json(obj: Any) -> bytes:
    import json

    return json.dumps(obj, indent=1).encode()
