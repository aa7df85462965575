"""Data path: how long a trial waits for its data, and how much memory the node holds, as the dataset
grows from 10 MiB to 1000 MiB of features: tunelab (the data put once into Ray's object store, every
trial mapping it) against trials that each read the dataset from .npy files on disk, which is what a
user writes without the object store. Target (issue): flat, because the data lives once in the store.

Per size, a synthetic dataset (float32 features, as tunelab's ``Data`` holds them; 1000 columns, split
60/20/20) and three sides of N trials of the cheap ``dummy`` family, 2 at once, actors reused:

- tunelab: ``run_study`` on a study whose dataset is swapped, after ``plan_study``, for the synthetic
  ``Data`` (building it with tunelab's loader would hold several float64 copies on the way). The
  diagnostics' permutation importance is stubbed out: it is not the data path, and it makes 5 predictions
  per column, each on a copy of the test set (59 s at 1000 columns x 512 test rows; far more at 1000 MiB).
- object store: the same trial as a plain Tune function, timing ``ray.get(data_ref[0])``, the first
  line of ``run_trial``; the driver drops its copy after ``ray.put`` (timed: once per study).
- disk: the same plain trial reading the six arrays with ``np.load``. The files were just written, so
  they come from the page cache: the best case for disk. (``tune.with_parameters`` is not a disk
  path: it too puts the data into the object store.)
Plain trials hold their data 0.5 s after reporting, as a trial that trains would, so that two overlap.
tunelab runs on a Ray of its own: an object whose reference a driver pickled into a registered
trainable (tunelab and the plain object store side both do) stays pinned until that Ray goes.

Trial start = the first result's ``time_this_iter_s`` (Tune's clock in the worker: the data, the
dummy fit and one evaluation), median over the trials; data ms = the ``ray.get`` / ``np.load`` alone.
Memory = the peak, over the side's run, of the summed PSS of the driver and every process of its Ray
(raylet, GCS, agents, trial workers; not the idle pool workers, ~100 MiB each, that come and go),
sampled every 0.2 s: pages shared between processes (the object store) count once. The page cache
holding the disk side's files is not in it. Below ~100 MiB of data the differences are within noise.

    python benchmarks/datapath.py            # 10, 100, 300, 1000 MiB, 10 trials a side: 4-8 min on 2 CPUs, < 5 GiB
    python benchmarks/datapath.py --quick    # 10, 100 MiB, 4 trials a side: about 1.5-3 min
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import logging
import os
import platform
import re
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")

import psutil  # noqa: E402
import ray  # noqa: E402  (ray first: it brings psutil, in ray/thirdparty_files)
from ray import tune  # noqa: E402

import tunelab.diagnostics  # noqa: E402
from trainables.base import CLASSIFICATION, Context, Data, evaluate  # noqa: E402
from trainables.dummy import Dummy  # noqa: E402
from tunelab.run import plan_study, run_study  # noqa: E402
from tunelab.study import load_study  # noqa: E402

SIZES_MIB = {"full": (10, 100, 300, 1000), "quick": (10, 100)}
WARMUP_MIB = 1
FEATURES = 1000  # wide: the dummy trial's own work grows with rows, not columns
VAL = TEST = 0.2
TRIALS = 10  # per side and size
QUICK_TRIALS = 4
HOLD_S = 0.5  # plain trials hold their data this long after reporting, so that 2 at once overlap
CONCURRENCY = 2
SAMPLE_S = 0.2
STORE_SAMPLE_S = 1.0  # the object store's use: a round trip to the GCS
OBJECT_STORE_BYTES = 2 * 2**30  # room for the largest dataset (pages are only taken when written)
ARRAYS = ("X_train", "y_train", "X_val", "y_val", "X_test", "y_test")
MIB = 2**20
IDLE_WORKER = "ray::IDLE"
STUDY = """
name: datapath-{mib}
datasets: [{{name: synthetic_classification, rows: 100, features: 4}}]  # a stand-in, swapped after planning
models: [dummy]
search: {{searcher: random, scheduler: fifo, num_samples: {n}, max_concurrent_trials: {c}, default_first: false}}
tracking: {{uri: "sqlite:///{tmp}/mlflow.db", register_models: false}}
storage_path: {tmp}/tune
"""


def make_data(mib: int, seed: int = 0) -> Data:
    """``mib`` MiB of float32 features in train/validation/test, a binary target tied to the first column."""
    rows = mib * MIB // (4 * FEATURES)
    n_val, n_test = int(rows * VAL), int(rows * TEST)
    rng = np.random.default_rng(seed)
    parts = {}
    for split, n in (("train", rows - n_val - n_test), ("val", n_val), ("test", n_test)):
        X = rng.standard_normal((n, FEATURES), dtype=np.float32)
        parts[f"X_{split}"], parts[f"y_{split}"] = X, (X[:, 0] > 0).astype(np.int64)
    return Data(
        name="synthetic_classification",
        task=CLASSIFICATION,
        feature_names=[f"x{i}" for i in range(FEATURES)],
        classes=["0", "1"],
        content_hash=f"synthetic-{mib}MiB-{seed}",
        **parts,
    )


def read_npy(folder: str) -> Data:
    """What a trial without the object store does: read the dataset from disk."""
    arrays = {name: np.load(f"{folder}/{name}.npy") for name in ARRAYS}
    return Data(
        name="synthetic_classification",
        task=CLASSIFICATION,
        feature_names=[f"x{i}" for i in range(arrays["X_train"].shape[1])],
        classes=["0", "1"],
        **arrays,
    )


class Memory(threading.Thread):
    """Peaks of the summed PSS of this process and every process under it (its Ray), and of the object store."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.peak = self.store_peak = 0
        self.done = threading.Event()

    def run(self) -> None:
        last_store = 0.0
        while not self.done.is_set():
            self.peak = max(self.peak, node_pss())
            if time.time() - last_store >= STORE_SAMPLE_S:
                self.store_peak, last_store = max(self.store_peak, object_store_used()), time.time()
            self.done.wait(SAMPLE_S)

    def __enter__(self) -> "Memory":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.done.set()
        self.join()


def node_pss() -> int:
    """Summed PSS of this process and its Ray, less the idle pool workers (they hold no data, and come and go)."""
    total = 0
    me = psutil.Process()
    for p in [me, *me.children(recursive=True)]:
        try:
            if p.name() != IDLE_WORKER:
                total += p.memory_full_info().pss
        except psutil.Error:  # gone meanwhile
            pass
    return total


def object_store_used() -> int:
    """Bytes in this Ray's object store (Ray's memory summary: private API, hence the guard)."""
    from ray._private.internal_api import memory_summary

    try:
        text = memory_summary(address=ray.get_runtime_context().gcs_address, stats_only=True)
    except Exception:
        return 0
    found = re.search(r"Plasma memory usage (\d+) MiB", text)
    return int(found.group(1)) * MIB if found else 0


def plain_trial(config: dict, *, load, ctx: Context) -> None:
    """``run_trial``'s first lines for the dummy family, timing how the trial gets its data."""
    t0 = time.perf_counter()
    data = load()
    data_s = time.perf_counter() - t0
    family = Dummy(ctx)
    model = next(iter(family.fit(data.X_train, data.y_train, config)))
    tune.report({**evaluate(family, model, data.X_val, data.y_val), "step": 1, "data_s": data_s})
    time.sleep(HOLD_S)  # the data held a while, as a trial that trains does


def run_plain(load, ctx: Context, n: int, tmp: str, name: str) -> tuple[list[float], list[float], Memory]:
    """N plain trials; (first-result seconds, data seconds, memory peaks)."""

    def trainable(config):
        plain_trial(config, load=load, ctx=ctx)

    tuner = tune.Tuner(
        tune.with_resources(trainable, {"cpu": 1}),
        param_space={"strategy": tune.choice(["prior", "stratified", "uniform"])},
        tune_config=tune.TuneConfig(
            num_samples=n,
            reuse_actors=True,
            search_alg=tune.search.BasicVariantGenerator(random_state=0, max_concurrent=CONCURRENCY),
        ),
        run_config=tune.RunConfig(name=name, storage_path=f"{tmp}/plain", verbose=0),
    )
    with Memory() as mem:
        grid = tuner.fit()
    assert len(grid) == n and not grid.errors, grid.errors
    return [r.metrics["time_this_iter_s"] for r in grid], [r.metrics["data_s"] for r in grid], mem


def run_tunelab(folder: str, n: int, tmp: str, mib: int) -> tuple[list[float], Memory]:
    """N dummy trials through tunelab on the dataset in ``folder``; (first-result seconds, memory peaks)."""
    path = Path(tmp) / f"datapath-{mib}.yaml"
    path.write_text(STUDY.format(mib=mib, n=n, c=CONCURRENCY, tmp=tmp))
    plan = plan_study(load_study(path), path)
    (key,) = plan.datasets
    plan.datasets[key] = read_npy(folder)  # the one copy the driver holds, as after load_dataset
    with Memory() as mem:
        (result,) = run_study(plan, progress=False)
    assert result.trials == n and result.failed == 0, result
    (cell,) = plan.cells
    firsts = [
        json.loads(p.read_text().splitlines()[0])["time_this_iter_s"]
        for p in Path(plan.study.storage(), plan.study.name, cell.key).glob("*/result.json")
    ]
    assert len(firsts) == n
    return firsts, mem


@contextlib.contextmanager
def fresh_ray():
    """A local Ray of its own for one side: an object a driver has pickled into a registered trainable (as
    tunelab and the plain sides do with the data's reference) stays pinned until the driver's Ray goes."""
    ray.init(
        address="local",
        num_cpus=CONCURRENCY,
        object_store_memory=OBJECT_STORE_BYTES,
        include_dashboard=False,
        log_to_driver=False,
        logging_level=logging.WARNING,
    )
    try:
        yield node_pss()
    finally:
        ray.shutdown()
        gc.collect()


def write_data(mib: int, tmp: str) -> tuple[str, int]:
    """The dataset as .npy files in a folder of its own; (folder, bytes of the arrays)."""
    folder = f"{tmp}/data-{mib}"
    os.makedirs(folder, exist_ok=True)
    data = make_data(mib)
    for name in ARRAYS:
        np.save(f"{folder}/{name}.npy", getattr(data, name))
    return folder, sum(getattr(data, name).nbytes for name in ARRAYS)


def one_size(mib: int, n: int, tmp: str) -> dict:
    """The three sides on one dataset size; tunelab on a Ray of its own (the plain object store side pins its
    copy until Ray goes, and the disk side, which puts nothing, runs before it)."""
    t0 = time.perf_counter()
    folder, size = write_data(mib, tmp)
    ctx = Context(task=CLASSIFICATION, n_classes=2)
    gc.collect()
    took = {"data": time.perf_counter() - t0}
    with fresh_ray():
        disk_first, disk_data, disk_mem = run_plain(lambda: read_npy(folder), ctx, n, tmp, f"disk-{mib}")
        took["disk"] = time.perf_counter() - t0 - sum(took.values())
        data = read_npy(folder)
        t1 = time.perf_counter()
        data_ref = [ray.put(data)]
        put_s = time.perf_counter() - t1
        del data  # the driver keeps no copy
        gc.collect()
        store_first, store_data, store_mem = run_plain(lambda: ray.get(data_ref[0]), ctx, n, tmp, f"store-{mib}")
    took["obj.store"] = time.perf_counter() - t0 - sum(took.values())
    with fresh_ray() as ours_idle:
        ours_first, ours_mem = run_tunelab(folder, n, tmp, mib)
    shutil.rmtree(folder)
    took["tunelab"] = time.perf_counter() - t0 - sum(took.values())
    med = statistics.median
    mems = (ours_mem, store_mem, disk_mem)
    return {
        "mib": size / MIB,
        "idle": ours_idle / MIB,
        "put_s": put_s,
        "took": took,
        "first": (med(ours_first), med(store_first), med(disk_first)),
        "data_ms": (1000 * med(store_data), 1000 * med(disk_data)),
        "peak": tuple(m.peak / MIB for m in mems),
        "store": tuple(m.store_peak / MIB for m in mems[:2]),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="10 and 100 MiB, 4 trials a side")
    ap.add_argument("--sizes", type=int, nargs="+", help="dataset sizes in MiB (default: 10 100 300 1000)")
    ap.add_argument("--trials", type=int, help=f"trials per side and size (default: {TRIALS}, --quick {QUICK_TRIALS})")
    args = ap.parse_args()
    sizes = args.sizes or SIZES_MIB["quick" if args.quick else "full"]
    n = args.trials or (QUICK_TRIALS if args.quick else TRIALS)
    logging.getLogger("ray.tune").setLevel(logging.ERROR)
    # not the data path, and 5 predictions per column: see the module docstring
    tunelab.diagnostics.importance = lambda family, model, data, metric, seed: {"features": [], "mean": [], "std": []}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        with fresh_ray():  # a tiny study first: the driver's imports (MLflow, plots) are not the data's memory
            run_tunelab(write_data(WARMUP_MIB, tmp)[0], CONCURRENCY, tmp, WARMUP_MIB)
        for mib in sizes:
            rows.append(one_size(mib, n, tmp))
            print(
                f"{mib} MiB in {sum(rows[-1]['took'].values()):.0f} s ("
                + ", ".join(f"{k} {v:.0f} s" for k, v in rows[-1]["took"].items())
                + ")",
                flush=True,
            )
    print(
        f"\nmachine: {platform.machine()}, {os.cpu_count()} CPUs, {psutil.virtual_memory().total / 2**30:.0f} GiB, "
        f"Ray {ray.__version__}; dummy family, {n} trials a side per size, {CONCURRENCY} at once, actors reused; "
        f"float32 features, {FEATURES} columns"
    )
    lo, hi = rows[0], rows[-1]
    growth = f"{hi['mib']:.0f}/{lo['mib']:.0f}"

    def line(cells: list, fmt: str, width: int = 12) -> str:
        return "".join(f"{c:>{width}{fmt}}" if isinstance(c, float) else f"{c:>{width}}" for c in cells)

    print("\ntrial start: first result s (data, dummy fit, one evaluation), and the data alone ms; medians")
    print(line(["data MiB", "tunelab s", "obj.store s", "disk s", "ray.get ms", "np.load ms", "put s"], ""))
    for r in rows:
        print(line([f"{r['mib']:.0f}", *r["first"], *r["data_ms"], r["put_s"]], ".3f"))
    if len(rows) > 1:
        print(
            line(
                [
                    growth,
                    *(h / l for h, l in zip(hi["first"] + hi["data_ms"], lo["first"] + lo["data_ms"])),
                    hi["put_s"] / lo["put_s"],
                ],
                ".2f",
            )
        )
    print(
        "\nnode memory MiB: peak PSS of the driver and its Ray (idle Ray: tunelab's, before its data); object "
        "store: its own peak use"
    )
    print(line(["data MiB", "idle Ray", "tunelab", "obj.store", "disk", "store:tunelab", "store:plain"], "", 14))
    for r in rows:
        print(line([f"{r['mib']:.0f}", r["idle"], *r["peak"], *r["store"]], ".0f", 14))
    if len(rows) > 1:
        print(line([growth, hi["idle"] / lo["idle"], *(h / l for h, l in zip(hi["peak"], lo["peak"]))], ".2f", 14))
        per_mib = [(h - l) / (hi["mib"] - lo["mib"]) for h, l in zip(hi["peak"], lo["peak"])]
        print(
            f"node memory per MiB of data ({growth} MiB, peak less peak): tunelab {per_mib[0]:.2f}, plain object "
            f"store {per_mib[1]:.2f}, disk {per_mib[2]:.2f} (1.00 = the data held once on the node)"
        )


if __name__ == "__main__":
    main()
