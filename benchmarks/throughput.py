"""Bookkeeping and result throughput: tunelab (every trial and every step logged to MLflow) against
plain Ray Tune with no logging, on trials whose own work is known, in one run on one Ray instance.

(a) many short real-time trials: N trials of S seconds each (``time.sleep``) at one CPU per trial;
    the wall time against the ideal ``N x S / CPUs`` (Ray's release test ``bookkeeping_overhead``
    reaches 1.14x).
(b) trials that report many steps quickly: T trials of K steps with no work per step but the
    evaluation every tunelab trial does; results per second, tunelab against plain Ray Tune.

Both sides run the same trial (``trainables.base.run_trial``'s loop: data from the object store,
``evaluate`` on validation, one ``tune.report`` per step), random searcher, FIFO, actors reused.
Each side runs once small first (worker processes started, modules imported, the MLflow store
created). The benchmark family ``sleep`` lives in this file: a DummyClassifier that takes ``seconds`` per step.

    python benchmarks/throughput.py                 # 400 x 0.5 s trials; 8 trials x 250 steps
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")

import ray  # noqa: E402
from ray import tune  # noqa: E402
from sklearn.dummy import DummyClassifier  # noqa: E402

import tunelab.spaces  # noqa: E402
from benchmarks.common import wait_for_idle_cpus  # noqa: E402
from trainables import FAMILIES  # noqa: E402
from trainables.base import CLASSIFICATION, Context, ModelFamily, evaluate  # noqa: E402
from tunelab.run import plan_study, run_study  # noqa: E402
from tunelab.study import load_study  # noqa: E402

RAY_RELEASE_TEST_RATIO = 715 / 625  # bookkeeping_overhead: 10,000 1-s trials on 16 CPUs, ideal 625 s
SHORT_TARGET, STEPS_TARGET = 1.10, 0.8

STUDY = """
name: throughput-{part}
datasets: [iris]
models: [sleep]
search: {{searcher: random, scheduler: fifo, num_samples: {n}, max_concurrent_trials: {c}, default_first: false}}
resources: {{cpus_per_trial: 1}}
tracking: {{uri: "sqlite:///{tmp}/mlflow.db"}}
storage_path: {tmp}/tune
"""
SPACE = """
budget: {{steps: {steps}, per_step: 1}}
params:
  seconds: {seconds}
  tag: {{uniform: [0.0, 1.0]}}
"""


class Sleep(ModelFamily):
    """A trial of known length: ``seconds`` per budget step; the model is a fitted DummyClassifier."""

    name = "sleep"
    tasks = frozenset({CLASSIFICATION})

    def fit(self, X, y, config: dict, model=None):
        model = model or DummyClassifier(strategy="prior").fit(X, y)
        for _ in range(self.ctx.steps):
            if config["seconds"]:  # sleep(0) still hands the interpreter lock to the actor's other thread
                time.sleep(config["seconds"])
            yield model


def register_sleep(spaces_dir: Path, steps: int, seconds: float) -> None:
    """Make ``sleep`` a family this process's studies can name, with its own search space."""
    if "sleep" not in FAMILIES:
        FAMILIES._names.append("sleep")
        FAMILIES._classes["sleep"] = Sleep
    spaces_dir.mkdir(parents=True, exist_ok=True)
    (spaces_dir / "sleep.yaml").write_text(SPACE.format(steps=steps, seconds=seconds))
    tunelab.spaces.SPACES_DIR = spaces_dir


def plain_tune(data_ref, n: int, steps: int, seconds: float, concurrency: int, tmp: str) -> float:
    """What a skilled user writes without tunelab: the same trial loop, no tracking, no result files."""
    data = ray.get(data_ref[0])
    ctx = Context(task=CLASSIFICATION, n_classes=data.n_classes, steps=steps)

    def trainable(config):
        d = ray.get(data_ref[0])
        family = Sleep(ctx)
        for step, model in enumerate(family.fit(d.X_train, d.y_train, config), start=1):
            tune.report({**evaluate(family, model, d.X_val, d.y_val), "step": step})

    os.environ["TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"] = "1"
    try:
        tuner = tune.Tuner(
            tune.with_resources(trainable, {"cpu": 1}),
            param_space={"seconds": seconds, "tag": tune.uniform(0.0, 1.0)},
            tune_config=tune.TuneConfig(
                metric="val_logloss",
                mode="min",
                num_samples=n,
                reuse_actors=True,
                search_alg=tune.search.BasicVariantGenerator(random_state=0, max_concurrent=concurrency),
            ),
            run_config=tune.RunConfig(name="plain", storage_path=tmp, verbose=0),
        )
        wait_for_idle_cpus()
        t0 = time.perf_counter()
        grid = tuner.fit()
        elapsed = time.perf_counter() - t0
    finally:
        os.environ.pop("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", None)
    assert len(grid) == n and not grid.errors
    return elapsed


def tunelab_study(part: str, n: int, steps: int, seconds: float, concurrency: int, tmp: Path) -> float:
    register_sleep(tmp / "spaces", steps, seconds)
    path = _write(tmp, part, n, concurrency)
    plan = plan_study(load_study(path), path)
    wait_for_idle_cpus()
    t0 = time.perf_counter()
    (result,) = run_study(plan, progress=False)
    elapsed = time.perf_counter() - t0
    assert result.trials == n and result.failed == 0, result
    return elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--short-trials", type=int, default=400)
    ap.add_argument("--seconds", type=float, default=0.5, help="length of a short trial")
    ap.add_argument("--step-trials", type=int, default=8)
    ap.add_argument("--steps", type=int, default=250, help="steps each trial of part (b) reports")
    ap.add_argument("--cpus", type=int, default=2, help="CPUs Ray may give trials (= concurrency)")
    args = ap.parse_args()
    ray.init(address="local", num_cpus=args.cpus, include_dashboard=False, log_to_driver=False)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        register_sleep(tmp / "spaces", 1, args.seconds)
        warm = plan_study(load_study(_write(tmp, "warm", 4, args.cpus)), tmp / "warm.yaml")
        data_ref = [ray.put(warm.datasets["iris"])]
        plain_tune(data_ref, 4 * args.cpus, 1, 0.0, args.cpus, f"{tmp}/warmup")  # start worker processes
        tunelab_study("warm", 4 * args.cpus, 1, 0.0, args.cpus, tmp)  # the same for tunelab: the store created

        ideal = args.short_trials * args.seconds / args.cpus
        a_plain = plain_tune(data_ref, args.short_trials, 1, args.seconds, args.cpus, f"{tmp}/a")
        print(f"(a) plain Ray Tune {a_plain:.1f}s", flush=True)
        a_ours = tunelab_study("short", args.short_trials, 1, args.seconds, args.cpus, tmp)
        print(f"(a) tunelab {a_ours:.1f}s", flush=True)

        results = args.step_trials * args.steps
        b_plain = plain_tune(data_ref, args.step_trials, args.steps, 0.0, args.cpus, f"{tmp}/b")
        print(f"(b) plain Ray Tune {b_plain:.1f}s", flush=True)
        b_ours = tunelab_study("steps", args.step_trials, args.steps, 0.0, args.cpus, tmp)
        print(f"(b) tunelab {b_ours:.1f}s", flush=True)

    print(f"\nmachine: {platform.machine()}, {os.cpu_count()} CPUs ({args.cpus} for trials), Ray {ray.__version__}")
    print(f"(a) {args.short_trials} trials of {args.seconds} s, ideal {ideal:.1f} s")
    print(f"{'':<36}{'wall s':>10}{'x ideal':>10}")
    print(f"{'plain Ray Tune, no logging':<36}{a_plain:>10.1f}{a_plain / ideal:>10.3f}")
    print(f"{'tunelab, MLflow logging + model':<36}{a_ours:>10.1f}{a_ours / ideal:>10.3f}")
    print(f"{'Ray release test (16 CPUs)':<36}{'':>10}{RAY_RELEASE_TEST_RATIO:>10.3f}")
    print(f"tunelab x ideal: {a_ours / ideal:.3f}  (target <= {SHORT_TARGET})")
    print(f"\n(b) {args.step_trials} trials x {args.steps} steps = {results} results")
    print(f"{'':<36}{'wall s':>10}{'results/s':>10}")
    print(f"{'plain Ray Tune, no logging':<36}{b_plain:>10.1f}{results / b_plain:>10.1f}")
    print(f"{'tunelab, MLflow logging + model':<36}{b_ours:>10.1f}{results / b_ours:>10.1f}")
    print(f"ratio tunelab / plain Ray Tune results/s: {b_plain / b_ours:.3f}  (target >= {STEPS_TARGET})")


def _write(tmp: Path, part: str, n: int, c: int) -> Path:
    path = tmp / f"{part}.yaml"
    path.write_text(STUDY.format(part=part, n=n, c=c, tmp=tmp))
    return path


if __name__ == "__main__":
    main()
