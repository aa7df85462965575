"""Search efficiency: the compute each search method needs to reach the validation score that random
search with FIFO reaches with its full budget, on one machine, several seeds.

One XGBoost cell (tunelab's family and search space, metric val_logloss) on a synthetic
classification set, per seed (the seed sets the data split, the searchers and the models):

- tunelab random + FIFO: the reference. Its best val_logloss is the seed's target, its total
  compute the unit (1.00);
- tunelab's default searcher + scheduler (``Search()`` in tunelab/study.py: optuna TPE + ASHA),
  random + ASHA, BOHB;
- scikit-learn ``HalvingRandomSearchCV`` over ``xgboost.XGBClassifier`` (``resource="n_estimators"``,
  factor 3, its first rung one budget step like ASHA's grace period: its default, one tree, and a given
  ``n_candidates`` stop at 3 trees), scored with neg_log_loss on tunelab's own validation rows
  (``PredefinedSplit``), the same space as scipy distributions;
- Optuna in-process: ``TPESampler`` + ``HyperbandPruner`` (reduction factor 3), tunelab's XGBoost
  family trained step by step with ``trial.report``/``should_prune``.

Every method runs ``--concurrency`` trials at once, one thread each. The reference runs ``--trials``
trials; every other method ``--factor`` times as many, since what early stopping saves is meant to
buy more configurations; compute is counted only up to the point where a method reaches the target.
tunelab's default configuration first (``default_first``, what users get) is kept for the tunelab
methods and enqueued first in Optuna (``enqueue_trial``); HalvingRandomSearchCV cannot try a given
point first. ``--no-default-first`` turns it off for all of them.

Each method's results are taken in the order they arrived: (budget steps, CPU-seconds, val_logloss).
Every score at any budget step counts, since the model at that step is one the method could select.
Budget steps are units of ``per_step`` boosting rounds (HalvingRandomSearchCV refits from scratch at
every rung: n_estimators / per_step per fit). CPU-seconds are CPU time, not wall time (other jobs on
the machine inflate the latter): for tunelab, what the trial's worker process spent since its
previous result (``/proc``, read in the driver as each result arrives through
``TrialRuns.result``, while the trial waits; a new worker's first step by Tune's
``time_this_iter_s``); for Optuna, each step's thread CPU time; for scikit-learn, each fit's and
scoring's thread CPU time (joblib's threading backend, so that a scorer can record them in order).
Tune's own result timestamps are whole seconds, too coarse to order results.

Prints, per method, how many seeds reached the target and the compute to reach it as a fraction of
the reference's full compute (median and min-max over seeds; a seed not reached counts as infinite),
then the verdict: tunelab's default needs <= 1/3 of the reference's compute and less than each
alternative.

    python benchmarks/search_efficiency.py            # 5 seeds: about 14 minutes on a 2-CPU machine
    python benchmarks/search_efficiency.py --quick    # 1 seed, fewer trials: about 3 minutes
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")

import numpy as np  # noqa: E402
import ray  # noqa: E402
from xgboost import XGBClassifier  # noqa: E402

from trainables import FAMILIES  # noqa: E402
from trainables.base import evaluate  # noqa: E402
from tunelab.run import Plan, plan_study, run_study  # noqa: E402
from tunelab.run.book import CELL  # noqa: E402
from tunelab.run.trial_runs import TrialRuns  # noqa: E402
from tunelab.study import Search, load_study  # noqa: E402
from tunelab.tracking import ROLE_TRIAL, STEPS, run_filter  # noqa: E402

FAMILY, METRIC = "xgboost", "val_logloss"
STUDY = """
name: {name}
seed: {seed}
datasets: [{{name: synthetic_classification, rows: {rows}, features: {features}}}]
models: [{family}]
search: {{searcher: {searcher}, scheduler: {scheduler}, num_samples: {n}, max_concurrent_trials: {c},
          metric: {metric}, default_first: {default_first}, reduction_factor: {rf}}}
resources: {{cpus_per_trial: 1}}
tracking: {{uri: "sqlite:///{tmp}/mlflow.db", register_models: false}}
storage_path: {tmp}/tune
"""
FULL = {"seeds": 5, "trials": 15}
QUICK = {"seeds": 1, "trials": 8}
REDUCTION_FACTOR = 3  # ASHA, BOHB, Optuna's Hyperband and HalvingRandomSearchCV alike
TARGET_FRACTION = 1 / 3  # the target: tunelab's default needs at most this share of the reference's compute
DEFAULT = Search()
REFERENCE = ("random", "fifo")
TUNELAB = [REFERENCE, (DEFAULT.searcher, DEFAULT.scheduler), ("random", "asha"), ("bohb", "bohb")]
DEFAULT_LABEL = f"tunelab default ({DEFAULT.searcher} + {DEFAULT.scheduler})"
HALVING, OPTUNA = "sklearn HalvingRandomSearchCV", "Optuna TPE + Hyperband pruner"
ARRIVALS: dict[str, list] = {}  # study name -> (budget steps, CPU-s, metric) per result, as the driver got them


@dataclass
class Trace:
    """One method's results in arrival order, each (budget steps, CPU-seconds, validation score)."""

    results: list[tuple[float, float, float]]
    wall_s: float

    def total(self) -> tuple[float, float]:
        return sum(r[0] for r in self.results), sum(r[1] for r in self.results)

    def best(self) -> float:
        return min(r[2] for r in self.results)

    def to_reach(self, target: float) -> tuple[float, float]:
        """(budget steps, CPU-s) spent when the best score so far first got to ``target``; inf if never."""
        steps = cpu = 0.0
        for s, c, value in self.results:
            steps, cpu = steps + s, cpu + c
            if value <= target:
                return steps, cpu
        return math.inf, math.inf


def label(searcher: str, scheduler: str) -> str:
    if (searcher, scheduler) == (DEFAULT.searcher, DEFAULT.scheduler):
        return DEFAULT_LABEL
    return "tunelab bohb" if searcher == "bohb" else f"tunelab {searcher} + {scheduler}"


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far, all its threads (Linux: /proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def time_arrivals() -> None:
    """Record each tunelab result as the driver receives it (then log it as usual): one budget step, the CPU
    its trial's worker process spent since its previous result, the score. The trial waits meanwhile."""
    log_result = TrialRuns.result
    cpu_seen: dict[tuple[str, int], float] = {}  # (study, worker pid) -> its CPU seconds at its latest result

    def result_arrived(self, trial, result):
        pid, now = result["pid"], process_cpu_s(result["pid"])
        before = cpu_seen.get((self.study, pid), now - result["time_this_iter_s"])  # a new worker: its 1st step's clock
        cpu_seen[self.study, pid] = now
        metric = self.cells[trial.config[CELL]].metric
        ARRIVALS.setdefault(self.study, []).append((1.0, now - before, result[metric]))
        return log_result(self, trial, result)

    TrialRuns.result = result_arrived


def study_plan(searcher: str, scheduler: str, n: int, seed: int, args, tmp: str) -> Plan:
    """The one-cell study of a tunelab method, written to ``tmp`` and planned (its data loaded and split)."""
    name = f"eff-{searcher}-{scheduler}-{seed}"
    path = Path(tmp) / f"{name}.yaml"
    path.write_text(
        STUDY.format(
            name=name,
            seed=seed,
            rows=args.rows,
            features=args.features,
            family=FAMILY,
            searcher=searcher,
            scheduler=scheduler,
            n=n,
            c=args.concurrency,
            metric=METRIC,
            default_first=str(args.default_first).lower(),
            rf=REDUCTION_FACTOR,
            tmp=tmp,
        )
    )
    return plan_study(load_study(path), path)


def tunelab_trace(plan: Plan) -> Trace:
    """Run the study; its results as the driver got them, checked against the trial runs in its MLflow store."""
    from mlflow.tracking import MlflowClient

    t0 = time.perf_counter()
    (result,) = run_study(plan, progress=False)
    wall = time.perf_counter() - t0
    n, name = plan.study.search.num_samples, plan.study.name
    assert result.trials == n and result.failed == 0, f"{name}: {result.trials} trials, {result.failed} failed"
    trace = Trace(ARRIVALS.pop(name), wall)
    client = MlflowClient(plan.study.tracking.resolved_uri())
    runs = client.search_runs(
        [client.get_experiment_by_name(plan.study.experiment).experiment_id], run_filter(ROLE_TRIAL), max_results=10 * n
    )
    stored = sum(int(r.data.tags[STEPS]) for r in runs)
    assert (len(runs), stored) == (n, len(trace.results)), f"{name}: store {len(runs)} trials, {stored} steps"
    return trace


def scipy_space(space) -> dict:
    """The space as scipy distributions for scikit-learn (randint bounds both included, as in tunelab)."""
    from scipy import stats

    def dist(p):
        if p.kind == "constant":
            return [p.args[0]]
        lo, hi = p.args[:2]
        return {
            "randint": lambda: stats.randint(lo, hi + 1),
            "uniform": lambda: stats.uniform(lo, hi - lo),
            "loguniform": lambda: stats.loguniform(lo, hi),
            "choice": lambda: list(p.args),
        }[p.kind]()

    return {name: dist(p) for name, p in space.params.items()}


def optuna_suggest(trial, space) -> dict:
    """One configuration of the space, suggested by an Optuna trial."""
    suggest = {
        "randint": lambda n, a: trial.suggest_int(n, a[0], a[1]),
        "uniform": lambda n, a: trial.suggest_float(n, a[0], a[1]),
        "loguniform": lambda n, a: trial.suggest_float(n, a[0], a[1], log=True),
        "choice": lambda n, a: trial.suggest_categorical(n, list(a)),
        "constant": lambda n, a: a[0],
    }
    return {name: suggest[p.kind](name, p.args) for name, p in space.params.items()}


class TimedXGBClassifier(XGBClassifier):
    """XGBClassifier that keeps the CPU time of its last fit (its one thread: the caller's)."""

    def fit(self, X, y, **kwargs):
        start = time.thread_time()
        super().fit(X, y, **kwargs)
        self.fit_cpu_s_ = time.thread_time() - start
        return self


def halving_trace(plan: Plan, n: int, seed: int, args) -> Trace:
    """scikit-learn's successive halving on n_estimators, scored with log loss on tunelab's validation rows."""
    from joblib import parallel_backend
    from sklearn.experimental import enable_halving_search_cv  # noqa: F401
    from sklearn.metrics import log_loss
    from sklearn.model_selection import HalvingRandomSearchCV, PredefinedSplit

    cell, data = plan.cells[0], next(iter(plan.datasets.values()))
    X = np.vstack([data.X_train, data.X_val])
    y = np.concatenate([data.y_train, data.y_val])
    folds = np.concatenate([np.full(len(data.y_train), -1), np.zeros(len(data.y_val))])  # -1: training rows only
    results, lock = [], threading.Lock()

    def neg_log_loss(estimator, X_val, y_val) -> float:
        """scikit-learn's neg_log_loss scorer, recording each fit as it is scored."""
        start = time.thread_time()
        loss = log_loss(y_val, estimator.predict_proba(X_val), labels=estimator.classes_)
        with lock:
            results.append(
                (estimator.n_estimators / cell.space.per_step, estimator.fit_cpu_s_ + time.thread_time() - start, loss)
            )
        return -loss

    search = HalvingRandomSearchCV(
        TimedXGBClassifier(tree_method="hist", n_jobs=1, random_state=seed, verbosity=0),
        scipy_space(cell.space),
        n_candidates=n,
        resource="n_estimators",
        min_resources=DEFAULT.grace_period * cell.space.per_step,
        max_resources=cell.space.steps * cell.space.per_step,
        factor=REDUCTION_FACTOR,
        cv=PredefinedSplit(folds),
        scoring=neg_log_loss,
        return_train_score=False,
        refit=False,
        n_jobs=args.concurrency,
        random_state=seed,
    )
    t0 = time.perf_counter()
    with warnings.catch_warnings(), parallel_backend("threading"):  # threads: each fit's CPU time is readable
        warnings.simplefilter("ignore")
        search.fit(X, y)
    return Trace(results, time.perf_counter() - t0)


def optuna_trace(plan: Plan, n: int, seed: int, args) -> Trace:
    """Optuna in one process: TPE + Hyperband pruning, tunelab's XGBoost family trained step by step."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    cell, data = plan.cells[0], next(iter(plan.datasets.values()))
    ctx = plan.context(cell)
    results, lock = [], threading.Lock()

    def objective(trial):
        family = FAMILIES[FAMILY](ctx)
        config, start = optuna_suggest(trial, cell.space), time.thread_time()
        for step, model in enumerate(family.fit(data.X_train, data.y_train, config), start=1):
            value = evaluate(family, model, data.X_val, data.y_val)[METRIC]
            with lock:
                results.append((1.0, time.thread_time() - start, value))
            trial.report(value, step)
            if trial.should_prune():
                raise optuna.TrialPruned()
            start = time.thread_time()  # the pruner's bookkeeping is not the trial's compute, as in Tune
        return value

    study = optuna.create_study(
        sampler=optuna.samplers.TPESampler(seed=seed),
        pruner=optuna.pruners.HyperbandPruner(
            min_resource=1, max_resource=ctx.steps, reduction_factor=REDUCTION_FACTOR
        ),
    )
    if cell.space.defaults:
        study.enqueue_trial(cell.space.defaults)
    t0 = time.perf_counter()
    study.optimize(objective, n_trials=n, n_jobs=args.concurrency)
    return Trace(results, time.perf_counter() - t0)


def show(v: float, digits: int = 2) -> str:
    return "never" if math.isinf(v) else f"{v:.{digits}f}"


def spread(values: list[float]) -> str:
    """Median [min-max] over seeds; a seed that never reached the target counts as infinite."""
    return f"{show(statistics.median(values))} [{show(min(values))}-{show(max(values))}]"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--quick", action="store_true", help=f"seeds: {QUICK['seeds']}, trials: {QUICK['trials']} (a few minutes)"
    )
    ap.add_argument("--seeds", type=int, help=f"seeds 0..S-1 (default {FULL['seeds']})")
    ap.add_argument("--trials", type=int, help=f"trials of random + FIFO (default {FULL['trials']})")
    ap.add_argument("--factor", type=int, default=3, help="the other methods run this many times as many trials")
    ap.add_argument("--rows", type=int, default=2000, help="rows of the synthetic set (60%% train, 20%% validation)")
    ap.add_argument("--features", type=int, default=20)
    ap.add_argument("--concurrency", type=int, default=2, help="trials at once, one CPU each, for every method")
    ap.add_argument(
        "--default-first",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="the family's default configuration first (tunelab methods and Optuna)",
    )
    args = ap.parse_args()
    size = QUICK if args.quick else FULL
    seeds, trials = args.seeds or size["seeds"], args.trials or size["trials"]
    logging.getLogger("ray.tune").setLevel(logging.ERROR)
    ray.init(address="local", include_dashboard=False, log_to_driver=False)
    time_arrivals()
    methods = [label(*m) for m in TUNELAB] + [HALVING, OPTUNA]
    traces: dict[str, list[Trace]] = {m: [] for m in methods}
    targets, t_start, load = [], time.perf_counter(), os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        for seed in range(seeds):
            runs = {}
            reference = study_plan(*REFERENCE, trials, seed, args, tmp)  # its data and space serve the others too
            n = args.factor * trials
            for i in range(len(methods)):  # a different method first each seed: drifting machine load spreads out
                m = methods[(seed + i) % len(methods)]
                if m == HALVING:
                    runs[m] = halving_trace(reference, n, seed, args)
                elif m == OPTUNA:
                    runs[m] = optuna_trace(reference, n, seed, args)
                elif m == label(*REFERENCE):
                    runs[m] = tunelab_trace(reference)
                else:
                    runs[m] = tunelab_trace(study_plan(*TUNELAB[methods.index(m)], n, seed, args, tmp))
            ref = runs[label(*REFERENCE)]
            targets.append(ref.best())
            steps_all, cpu_all = ref.total()
            line = ", ".join(
                f"{m.split(' (')[0]} {show(runs[m].to_reach(targets[-1])[0] / steps_all)}/"
                f"{show(runs[m].to_reach(targets[-1])[1] / cpu_all)}"
                for m in methods
            )
            print(
                f"seed {seed}: target {METRIC} {targets[-1]:.4f} (random + FIFO: {steps_all:.0f} steps, "
                f"{cpu_all:.1f} CPU-s); to target, steps/CPU-s of those: {line} "
                f"[{time.perf_counter() - t_start:.0f} s]",
                flush=True,
            )
            for m in methods:
                traces[m].append(runs[m])
    report(
        methods,
        traces,
        targets,
        seeds,
        trials,
        args,
        f"{time.perf_counter() - t_start:.0f} s in all, load "
        f"average {load:.1f} at the start, {os.getloadavg()[0]:.1f} at the end",
    )


def report(
    methods: list[str], traces: dict[str, list[Trace]], targets: list[float], seeds: int, trials: int, args, timing: str
) -> None:
    ref = traces[label(*REFERENCE)]
    frac = {
        m: [[t.to_reach(target)[k] / r.total()[k] for t, r, target in zip(traces[m], ref, targets)] for k in (0, 1)]
        for m in methods
    }
    print(
        f"\nmachine: {platform.machine()}, {os.cpu_count()} CPUs, Ray {ray.__version__}; {FAMILY} on "
        f"synthetic_classification ({args.rows} rows, {args.features} features), {METRIC}; {seeds} seeds, "
        f"random + FIFO {trials} trials, others {args.factor * trials}; concurrency {args.concurrency}; "
        f"default first: {args.default_first}; {timing}"
    )
    print("compute to reach random + FIFO's best, as a fraction of random + FIFO's full compute: median [min-max]")
    print(
        f"{'':<34}{'reached':>8}{'budget steps':>22}{'CPU-seconds':>22}{'all steps':>10}{'all CPU-s':>10}"
        f"{'best':>8}{'wall s':>8}"
    )
    for m in methods:
        total = [statistics.median(t.total()[k] / r.total()[k] for t, r in zip(traces[m], ref)) for k in (0, 1)]
        reached = sum(math.isfinite(v) for v in frac[m][1])
        print(
            f"{m:<34}{f'{reached}/{seeds}':>8}{spread(frac[m][0]):>22}{spread(frac[m][1]):>22}{total[0]:>10.2f}"
            f"{total[1]:>10.2f}{statistics.median(t.best() for t in traces[m]):>8.4f}"
            f"{statistics.median(t.wall_s for t in traces[m]):>8.1f}"
        )
    print(
        "(all: everything the method spent, same units; best: its best score, median; wall: one run, median; "
        "tunelab's includes Tune starting its workers and the best model's diagnostics)"
    )
    for k, unit in enumerate(("budget steps", "CPU-seconds")):
        ours = statistics.median(frac[DEFAULT_LABEL][k])
        verdicts = [
            f"{show(ours, 3)} of random + FIFO (target <= {TARGET_FRACTION:.3f}: "
            f"{'met' if ours <= TARGET_FRACTION else 'NOT met'})"
        ]
        for alt in (HALVING, OPTUNA):
            theirs = statistics.median(frac[alt][k])
            verdicts.append(
                f"{'less' if ours < theirs else 'NOT less'} than {alt} ({show(ours, 3)} vs {show(theirs, 3)})"
            )
        print(f"{DEFAULT_LABEL}, {unit}: " + "; ".join(verdicts))


if __name__ == "__main__":
    main()
