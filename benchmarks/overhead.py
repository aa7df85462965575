"""Overhead: N trivial trials (the dummy family) through tunelab, with MLflow logging, against what a
user would run instead, doing the same work in one run on one Ray instance:

- plain Ray Tune with no logging: same searcher (random), scheduler (FIFO), concurrency, data,
  actors reused;
- Optuna in-process (its own random sampler, ``n_jobs`` = concurrency) with a nested MLflow run
  per trial (params, metrics, status), as its docs show, into a sqlite store of its own.

Each side runs once small before the rounds (worker processes started, modules imported), so
that the figures are per-trial costs, not a process's first imports.

Prints the wall times, ms per trial and the ratios.

    python benchmarks/overhead.py --trials 200
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")

import ray  # noqa: E402
from ray import tune  # noqa: E402

from benchmarks.common import wait_for_idle_cpus  # noqa: E402
from trainables.base import evaluate  # noqa: E402
from trainables.dummy import Dummy  # noqa: E402
from tunelab.run import plan_study, run_study  # noqa: E402
from tunelab.study import load_study  # noqa: E402

STUDY = """
name: overhead
datasets: [iris]
models: [dummy]
search: {{searcher: random, scheduler: fifo, num_samples: {n}, max_concurrent_trials: {c}, default_first: false}}
tracking: {{uri: "sqlite:///{tmp}/mlflow.db"}}
storage_path: {tmp}/tune
"""


def plain_tune(data_ref, ctx, n: int, concurrency: int, tmp: str, callbacks: list | None = None) -> float:
    """What a skilled user writes without tunelab: the same trial, no tracking."""

    def trainable(config):
        data = ray.get(data_ref[0])
        family = Dummy(ctx)
        model = next(iter(family.fit(data.X_train, data.y_train, config)))
        tune.report({**evaluate(family, model, data.X_val, data.y_val), "step": 1})

    tuner = tune.Tuner(
        tune.with_resources(trainable, {"cpu": 1}),
        param_space={"strategy": tune.choice(["prior", "stratified", "uniform"])},
        tune_config=tune.TuneConfig(
            metric="val_logloss",
            mode="min",
            num_samples=n,
            reuse_actors=True,
            search_alg=tune.search.BasicVariantGenerator(random_state=0, max_concurrent=concurrency),
        ),
        run_config=tune.RunConfig(name="plain", storage_path=f"{tmp}/plain", verbose=0, callbacks=callbacks),
    )
    t0 = time.perf_counter()
    grid = tuner.fit()
    elapsed = time.perf_counter() - t0
    assert len(grid) == n and not grid.errors
    return elapsed


def optuna_mlflow(data, ctx, n: int, concurrency: int, tmp: str) -> float:
    """Optuna in one process, each trial logged as a nested MLflow run."""
    import mlflow
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    os.makedirs(tmp, exist_ok=True)
    mlflow.set_tracking_uri(f"sqlite:///{tmp}/optuna-mlflow.db")
    mlflow.set_experiment("optuna")

    def objective(trial):
        config = {"strategy": trial.suggest_categorical("strategy", ["prior", "stratified", "uniform"])}
        family = Dummy(ctx)
        model = next(iter(family.fit(data.X_train, data.y_train, config)))
        scores = evaluate(family, model, data.X_val, data.y_val)
        with mlflow.start_run(run_name=f"trial {trial.number}", nested=True, parent_run_id=parent):
            mlflow.log_params(config)
            mlflow.log_metrics({**scores, "step": 1})
        return scores["val_logloss"]

    t0 = time.perf_counter()
    with mlflow.start_run(run_name="study") as run:
        parent = run.info.run_id
        study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
        study.optimize(objective, n_trials=n, n_jobs=concurrency)
    elapsed = time.perf_counter() - t0
    assert len(study.trials) == n
    return elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=200)
    ap.add_argument("--concurrency", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=2, help="alternating rounds; the median of each side is compared")
    args = ap.parse_args()
    ray.init(include_dashboard=False, log_to_driver=False)
    plain_s, ours_s, optuna_s = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "overhead.yaml"
        path.write_text(STUDY.format(n=args.trials, c=args.concurrency, tmp=tmp))
        plan = plan_study(load_study(path), path)
        ctx = plan.context(plan.cells[0])
        data_ref = [ray.put(plan.datasets["iris"])]
        plain_tune(data_ref, ctx, 4 * args.concurrency, args.concurrency, f"{tmp}/warmup")  # start worker processes
        warm = Path(tmp) / "warm"
        warm.mkdir()
        (warm / "overhead.yaml").write_text(STUDY.format(n=4 * args.concurrency, c=args.concurrency, tmp=warm))
        run_study(plan_study(load_study(warm / "overhead.yaml"), warm / "overhead.yaml"), progress=False)  # imports
        for i in range(args.rounds):
            wait_for_idle_cpus()
            plain_s.append(plain_tune(data_ref, ctx, args.trials, args.concurrency, f"{tmp}/plain{i}"))
            wait_for_idle_cpus()
            t0 = time.perf_counter()
            (result,) = run_study(plan, progress=False)
            ours_s.append(time.perf_counter() - t0)
            assert result.trials == args.trials and result.failed == 0
            optuna_s.append(
                optuna_mlflow(plan.datasets["iris"], ctx, args.trials, args.concurrency, f"{tmp}/optuna{i}")
            )
            print(
                f"round {i + 1}: plain {plain_s[-1]:.1f}s, tunelab {ours_s[-1]:.1f}s, optuna+mlflow "
                f"{optuna_s[-1]:.1f}s",
                flush=True,
            )
    plain, ours, opt = statistics.median(plain_s), statistics.median(ours_s), statistics.median(optuna_s)
    print(
        f"\nmachine: {platform.machine()}, {os.cpu_count()} CPUs, Ray {ray.__version__}; "
        f"{args.trials} dummy trials, concurrency {args.concurrency}, median of {args.rounds} alternating rounds"
    )
    print(f"{'':<34}{'wall s':>10}{'ms/trial':>12}")
    print(f"{'plain Ray Tune, no logging':<34}{plain:>10.1f}{1000 * plain / args.trials:>12.1f}")
    print(f"{'tunelab, MLflow logging + model':<34}{ours:>10.1f}{1000 * ours / args.trials:>12.1f}")
    print(f"{'Optuna in-process + MLflow':<34}{opt:>10.1f}{1000 * opt / args.trials:>12.1f}")
    print(
        f"ratio tunelab / plain Ray Tune at {args.trials} trials: {ours / plain:.3f}  "
        f"(target <= 1.15 at 200 trials, <= 1.10 at 1,000)"
    )
    print(f"ratio tunelab / Optuna + MLflow at {args.trials} trials: {ours / opt:.3f}")


if __name__ == "__main__":
    main()
