"""Many cells: a study of hundreds of (family, dataset) cells through tunelab, against one plain Ray Tune
experiment over the same grid, in one run on one Ray instance.

(a) 20 and 100 synthetic datasets x (dummy, logistic_regression, knn) = 60 and 300 cells of 2 short
    trials: tunelab (random searcher, FIFO, no model registered) against ONE plain Ray Tune experiment
    whose trainable takes dataset and family as ``tune.grid_search`` dimensions and trains the same
    scikit-learn pipeline on the same split (datasets put into the object store once, actors reused,
    1 CPU per trial, scored with the same NumPy metrics). Wall time ratio tunelab / plain.
(b) tunelab alone at 60 -> 300 -> 1,002 cells: wall and driver CPU-seconds (getrusage of this process,
    around ``run_study``) per cell, their ratio largest / smallest size, and the driver's peak thread count
    and RSS (sampled every 0.2 s). The 60- and 300-cell runs of (a) are reused.
(c) a 16-CPU cluster simulated on this machine (``ray.init(num_cpus=16)``): N cells x 4 trials of the
    benchmark family ``cells_sleep`` (benchmarks/_cells_family.py: 1 s of sleep, no CPU), wall time
    against the ideal ``N x 4 x 1 s / 16``, tunelab and plain Ray Tune (one experiment, grid over the cells).

Datasets are ``synthetic_classification`` data (seeds 0, 1, ...) written to Parquet files, since a study
lists each dataset name once. Studies are planned (data loaded and split) before the clock starts; each
side runs once small first (worker processes started, modules imported, the MLflow store created).

    python benchmarks/cells.py --part all          # 60 / 300 / 1,002 cells, 500 sleep cells
    python benchmarks/cells.py --quick             # 6 / 12 / 24 cells, 20 sleep cells
"""

from __future__ import annotations

import argparse
import importlib
import logging
import math
import os
import platform
import resource
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")

import psutil  # noqa: E402,I001  (Ray's own copy in ray/thirdparty_files: importable once ray is)
import ray  # noqa: E402
import yaml  # noqa: E402
from ray import tune  # noqa: E402
from ray.tune.logger import JsonLoggerCallback  # noqa: E402
from sklearn.dummy import DummyClassifier  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.neighbors import KNeighborsClassifier  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402

from benchmarks import _cells_family as sleep_family  # noqa: E402
from benchmarks.common import wait_for_idle_cpus  # noqa: E402
from trainables.base import CLASSIFICATION, Context, Data, evaluate, score  # noqa: E402
from tunelab.datasets import BUILTIN  # noqa: E402
from tunelab.spaces import load_space  # noqa: E402
from tunelab.study import DatasetSpec, load_study  # noqa: E402

try:  # the run core is moving from tunelab.driver to tunelab.run
    from tunelab.run import plan_study, run_study  # noqa: E402
except ImportError:
    from tunelab.driver import plan_study, run_study  # noqa: E402

FAMILIES = ("dummy", "logistic_regression", "knn")
#: what a user writes: the pipelines of trainables/dummy.py, logistic_regression.py, knn.py (seed 0, 1 thread)
MAKE: dict[str, Callable[[dict], Any]] = {
    "dummy": lambda c: DummyClassifier(strategy=c["strategy"], random_state=0),
    "logistic_regression": lambda c: make_pipeline(
        StandardScaler(), LogisticRegression(C=c["C"], max_iter=2000, random_state=0)
    ),
    "knn": lambda c: make_pipeline(
        StandardScaler(), KNeighborsClassifier(n_neighbors=c["n_neighbors"], weights=c["weights"], p=c["p"], n_jobs=1)
    ),
}
ROWS, FEATURES = 600, 10  # a short trial: 360 training rows
SLEEP_ROWS, SLEEP_FEATURES, SLEEP_TRIALS, SLEEP_S, CLUSTER_CPUS = 100, 4, 4, 1.0, 16
A_TARGET, B_TARGET, C_TARGET = 2.0, 1.1, 1.25


@dataclass
class Stats:
    cells: int
    trials: int  # per cell
    wall_s: float
    cpu_s: float = 0.0  # the driver process's user + system CPU
    threads: int = 0  # peak threading.active_count()
    os_threads: int = 0  # peak psutil num_threads (Ray's C++ threads too)
    rss_mib: float = 0.0


class Sampler(threading.Thread):
    """This process's peak thread counts and RSS, sampled every 0.2 s (its own thread not counted)."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.done, self.threads, self.os_threads, self.rss = threading.Event(), 0, 0, 0

    def run(self) -> None:
        proc = psutil.Process()
        while True:
            self.threads = max(self.threads, threading.active_count() - 1)
            self.os_threads = max(self.os_threads, proc.num_threads() - 1)
            self.rss = max(self.rss, proc.memory_info().rss)
            if self.done.wait(0.2):
                return


def cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def start_ray(cpus: int | None) -> None:
    """A fresh local Ray; its workers import benchmarks/ modules from the repository root."""
    if ray.is_initialized():
        ray.shutdown()
    logging.getLogger("ray.tune").setLevel(logging.ERROR)  # as tunelab's own start_ray
    # 16 simulated CPUs on 2 cores: 16 worker processes starting at once take longer than Ray's 60 s to register,
    # and Ray kills and restarts them, again and again (seen here: 173 worker starts, nothing ran for 10 minutes)
    os.environ.setdefault("RAY_worker_register_timeout_seconds", "900")
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    ray.init(
        address="local",
        num_cpus=cpus,
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={"env_vars": {"PYTHONPATH": path}},
    )


def datasets(tmp: Path, n: int, rows: int, features: int) -> list[dict]:
    """``n`` synthetic_classification datasets (seeds 0..n-1) as Parquet files, each written once."""
    out = []
    for seed in range(n):
        path = tmp / f"data-{rows}x{features}" / f"syn{seed:04d}.parquet"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            spec = DatasetSpec(name="synthetic_classification", rows=rows, features=features, seed=seed)
            X, y, _ = BUILTIN["synthetic_classification"](spec)
            X.assign(target=y).to_parquet(path)
        out.append({"name": path.stem, "path": str(path), "target": "target", "task": CLASSIFICATION})
    return out


def write_study(
    tmp: Path, tag: str, data: list[dict], models: list[str], trials: int, diagnostics: str = "champions"
) -> Path:
    study = {
        "name": f"cells-{tag}",
        "datasets": data,
        "models": models,
        "diagnostics": diagnostics,
        "search": {"searcher": "random", "scheduler": "fifo", "num_samples": trials, "default_first": False},
        "resources": {"cpus_per_trial": 1},
        "tracking": {"uri": f"sqlite:///{tmp}/mlflow.db", "register_models": False},
        "storage_path": f"{tmp}/tune",
    }
    path = tmp / f"{tag}.yaml"
    path.write_text(yaml.safe_dump(study, sort_keys=False))
    return path


def tunelab(plan: Any, trials: int) -> Stats:
    """``run_study`` on a planned study, timed, its driver process sampled."""
    wait_for_idle_cpus()
    sampler = Sampler()
    sampler.start()
    cpu0, t0 = cpu_s(), time.perf_counter()
    results = run_study(plan, progress=False)
    wall, cpu = time.perf_counter() - t0, cpu_s() - cpu0
    sampler.done.set()
    sampler.join()
    bad = [r for r in results if r.status != "FINISHED" or r.trials != trials]
    if len(results) != len(plan.cells) or bad:
        r = bad[0] if bad else None
        raise RuntimeError(
            f"tunelab: {len(results)} results for {len(plan.cells)} cells, {len(bad)} not FINISHED "
            f"with {trials} trials"
            + (f", e.g. {r.cell.key}: {r.status}, {r.trials} trials {getattr(r, 'error', '')}" if r else "")
        )
    return Stats(len(results), trials, wall, cpu, sampler.threads, sampler.os_threads, sampler.rss / 2**20)


def plain_tune(
    trainable: Callable[[dict], None], space: dict, trials: int, expected: int, tmp: Path, name: str
) -> float:
    """ONE Ray Tune experiment, as a skilled user writes it: random search, FIFO, actors reused; of Tune's
    result files only result.json, as in tunelab."""
    os.environ["TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"] = "1"
    try:
        tuner = tune.Tuner(
            tune.with_resources(trainable, {"cpu": 1}),
            param_space=space,
            tune_config=tune.TuneConfig(
                metric="val_logloss",
                mode="min",
                num_samples=trials,
                reuse_actors=True,
                search_alg=tune.search.BasicVariantGenerator(random_state=0),
            ),
            run_config=tune.RunConfig(
                name=name, storage_path=f"{tmp}/plain", verbose=0, callbacks=[JsonLoggerCallback()]
            ),
        )
        wait_for_idle_cpus()
        t0 = time.perf_counter()
        grid = tuner.fit()
        elapsed = time.perf_counter() - t0
    finally:
        os.environ.pop("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", None)
    if len(grid) != expected or grid.errors:
        raise RuntimeError(
            f"plain Ray Tune: {len(grid)} of {expected} trials, {len(grid.errors)} errors: {grid.errors[:1]}"
        )
    return elapsed


def plain_sklearn(data: dict[str, Data], trials: int, tmp: Path, name: str) -> float:
    """Part (a)'s alternative: dataset and family are grid dimensions; each family's own space beside them."""
    refs = {n: ray.put(d) for n, d in data.items()}  # once: trials fetch them from the object store
    space: dict[str, Any] = {"dataset": tune.grid_search(sorted(refs)), "family": tune.grid_search(list(FAMILIES))}
    for family in FAMILIES:  # the same distributions as tunelab's searchspaces/<family>.yaml
        space.update(load_space(family, CLASSIFICATION, with_defaults=False).to_tune())

    def trainable(config: dict) -> None:
        d = ray.get(refs[config["dataset"]])
        model = MAKE[config["family"]](config).fit(d.X_train, d.y_train)
        tune.report({**score(Context(CLASSIFICATION, d.n_classes), d.y_val, model.predict_proba(d.X_val)), "step": 1})

    return plain_tune(trainable, space, trials, len(refs) * len(FAMILIES) * trials, tmp, name)


def plain_sleep(data: dict[str, Data], trials: int, tmp: Path, name: str) -> float:
    """Part (c)'s alternative: the same ``cells_sleep`` trials, a grid over the cells x ``trials`` samples."""
    refs = {n: ray.put(d) for n, d in data.items()}
    space = {"dataset": tune.grid_search(sorted(refs)), "seconds": SLEEP_S, "tag": tune.uniform(0.0, 1.0)}

    def trainable(config: dict) -> None:
        d = ray.get(refs[config["dataset"]])
        family = sleep_family.CellsSleep(Context(CLASSIFICATION, d.n_classes))
        for step, model in enumerate(family.fit(d.X_train, d.y_train, config), start=1):
            tune.report({**evaluate(family, model, d.X_val, d.y_val), "step": step})

    return plain_tune(trainable, space, trials, len(refs) * trials, tmp, name)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--part", choices=("a", "b", "c", "all"), default="all")
    ap.add_argument("--quick", action="store_true", help="smoke sizes: 6, 12 cells (a); 6, 12, 24 (b); 20 (c)")
    ap.add_argument(
        "--cells",
        type=int,
        nargs="+",
        help="cell counts of (a) and (b), each rounded up to a multiple "
        "of 3 (default: 60 300 for a, 60 300 1000 for b)",
    )
    ap.add_argument("--trials", type=int, default=2, help="trials per cell in (a) and (b); 1 keeps 1,000 cells shorter")
    ap.add_argument("--sleep-cells", type=int, help="cells of (c) (default 500)")
    args = ap.parse_args()
    a_sizes = args.cells or ([6, 12] if args.quick else [60, 300])
    b_sizes = args.cells or ([6, 12, 24] if args.quick else [60, 300, 1000])
    sleep_cells = args.sleep_cells or (20 if args.quick else 500)
    parts = "abc" if args.part == "all" else args.part
    figures: list[tuple[str, ...]] = []  # part, figure, tunelab, alternative, ratio, target
    runs: dict[int, Stats] = {}  # cells -> tunelab's run, shared by (a) and (b)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)

        def planned(n_cells: int, trials: int, tag: str = "", diagnostics: str = "champions") -> Any:
            n_data = math.ceil(n_cells / len(FAMILIES))
            path = write_study(
                tmp,
                tag or f"{n_data * len(FAMILIES)}x{trials}-{diagnostics}",
                datasets(tmp, n_data, ROWS, FEATURES),
                list(FAMILIES),
                trials,
                diagnostics,
            )
            return plan_study(load_study(path), path)

        if "a" in parts or "b" in parts:
            start_ray(None)
            cpus = int(ray.cluster_resources()["CPU"])
            warm = planned(6, 1, "warm")
            plain_sklearn(warm.datasets, 1, tmp, "warm")  # worker processes started, scikit-learn imported
            tunelab(warm, 1)  # the MLflow store created, tunelab's modules imported
        if "a" in parts:
            print(
                f"\n(a) cells of {args.trials} short trials ({', '.join(FAMILIES)} on synthetic {ROWS}x{FEATURES}), "
                f"{cpus} CPUs; tunelab draws each dataset's champion's figures (default), or none\n"
                f"{'cells':>6}{'trials':>8}{'plain Tune s':>14}{'tunelab s':>12}{'tunelab/plain':>15}"
                f"{'no figures s':>14}{'no figures/plain':>18}"
            )
            for n in a_sizes:
                plan = planned(n, args.trials)
                plain = plain_sklearn(plan.datasets, args.trials, tmp, f"plain-{n}")
                runs[n] = ours = tunelab(plan, args.trials)
                bare = tunelab(planned(n, args.trials, diagnostics="none"), args.trials)
                ratio, bare_ratio = ours.wall_s / plain, bare.wall_s / plain
                print(
                    f"{ours.cells:>6}{ours.cells * args.trials:>8}{plain:>14.1f}{ours.wall_s:>12.1f}{ratio:>15.2f}"
                    f"{bare.wall_s:>14.1f}{bare_ratio:>18.2f}",
                    flush=True,
                )
                figures.append(
                    (
                        "a",
                        f"{ours.cells} cells x {args.trials} trials, wall s",
                        f"{ours.wall_s:.1f}",
                        f"plain Ray Tune, one experiment {plain:.1f}",
                        f"{ratio:.2f}x",
                        f"<= {A_TARGET}x",
                    )
                )
                figures.append(
                    (
                        "a",
                        "same, diagnostics: none (no figures), wall s",
                        f"{bare.wall_s:.1f}",
                        f"plain Ray Tune {plain:.1f}",
                        f"{bare_ratio:.2f}x",
                        f"<= {A_TARGET}x",
                    )
                )
            print(f"target: tunelab / plain Ray Tune <= {A_TARGET}")
        if "b" in parts:
            print(
                f"\n(b) tunelab at {' -> '.join(map(str, b_sizes))} cells of {args.trials} trials, {cpus} CPUs\n"
                f"{'cells':>6}{'wall s':>9}{'s/cell':>9}{'CPU s':>9}{'CPU s/cell':>11}{'threads py/OS':>15}"
                f"{'RSS MiB':>9}"
            )
            for n in b_sizes:
                if n not in runs:
                    runs[n] = tunelab(planned(n, args.trials), args.trials)
                s = runs[n]
                print(
                    f"{s.cells:>6}{s.wall_s:>9.1f}{s.wall_s / s.cells:>9.3f}{s.cpu_s:>9.1f}{s.cpu_s / s.cells:>11.3f}"
                    f"{f'{s.threads}/{s.os_threads}':>15}{s.rss_mib:>9.0f}",
                    flush=True,
                )
            lo, hi = runs[b_sizes[0]], runs[b_sizes[-1]]
            wall_r = (hi.wall_s / hi.cells) / (lo.wall_s / lo.cells)
            cpu_r = (hi.cpu_s / hi.cells) / (lo.cpu_s / lo.cells)
            print(
                f"ratio {hi.cells} / {lo.cells} cells: wall per cell {wall_r:.2f}x, driver CPU per cell {cpu_r:.2f}x "
                f"(target <= {B_TARGET})"
            )
            for what, r, a, b in (
                ("wall s per cell", wall_r, hi.wall_s / hi.cells, lo.wall_s / lo.cells),
                ("driver CPU s per cell", cpu_r, hi.cpu_s / hi.cells, lo.cpu_s / lo.cells),
            ):
                figures.append(
                    (
                        "b",
                        f"{what}, {hi.cells} vs {lo.cells} cells",
                        f"{a:.3f}",
                        f"{lo.cells} cells {b:.3f}",
                        f"{r:.2f}x",
                        f"<= {B_TARGET}x",
                    )
                )
            figures.append(
                (
                    "b",
                    f"driver peak threads (Python/OS), RSS at {hi.cells} cells",
                    f"{hi.threads}/{hi.os_threads}, {hi.rss_mib:.0f} MiB",
                    f"{lo.cells} cells {lo.threads}/{lo.os_threads}, {lo.rss_mib:.0f} MiB",
                    "",
                    "flat",
                )
            )
        if "c" in parts:
            start_ray(CLUSTER_CPUS)
            ray.get(ray.remote(num_cpus=0)(lambda: importlib.import_module("benchmarks._cells_family").NAME).remote())
            sleep_family.use_spaces(tmp / "spaces", steps=1, seconds=SLEEP_S)

            def sleep_plan(n: int, tag: str) -> Any:
                path = write_study(
                    tmp, tag, datasets(tmp, n, SLEEP_ROWS, SLEEP_FEATURES), [sleep_family.NAME], SLEEP_TRIALS
                )
                return plan_study(load_study(path), path)

            warm = sleep_plan(4, "sleep-warm")  # 16 trials: the 16 worker processes started
            plain_sleep(warm.datasets, SLEEP_TRIALS, tmp, "sleep-warm")
            tunelab(warm, SLEEP_TRIALS)
            plan = sleep_plan(sleep_cells, f"sleep-{sleep_cells}")
            ideal = sleep_cells * SLEEP_TRIALS * SLEEP_S / CLUSTER_CPUS
            plain = plain_sleep(plan.datasets, SLEEP_TRIALS, tmp, f"sleep-{sleep_cells}") / ideal
            ours = tunelab(plan, SLEEP_TRIALS).wall_s / ideal
            print(
                f"\n(c) {sleep_cells} cells x {SLEEP_TRIALS} trials of {SLEEP_S:g} s sleep, ray.init(num_cpus="
                f"{CLUSTER_CPUS}) on {os.cpu_count()} cores: ideal {ideal:.1f} s\n{'':<32}{'wall s':>9}{'x ideal':>9}"
            )
            print(f"{'plain Ray Tune, one experiment':<32}{plain * ideal:>9.1f}{plain:>9.3f}")
            print(f"{'tunelab':<32}{ours * ideal:>9.1f}{ours:>9.3f}\ntarget: tunelab <= {C_TARGET}x ideal")
            figures.append(
                (
                    "c",
                    f"{sleep_cells} cells x {SLEEP_TRIALS} trials of {SLEEP_S:g} s on {CLUSTER_CPUS} "
                    f"simulated CPUs, wall / ideal ({ideal:.0f} s)",
                    f"{ours:.3f}",
                    f"plain Ray Tune, one experiment {plain:.3f}",
                    f"{ours / plain:.2f}x plain",
                    f"<= {C_TARGET}x ideal",
                )
            )
    ray.shutdown()
    print(
        f"\nmachine: {platform.machine()}, {os.cpu_count()} CPUs, {psutil.virtual_memory().total / 2**30:.0f} GiB, "
        f"Ray {ray.__version__}, run core {run_study.__module__}\n"
    )
    print("| part | figure | tunelab | alternative | ratio | target |\n|---|---|---:|---:|---:|---|")
    for row in figures:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
