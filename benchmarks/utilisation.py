"""Utilisation: how busy the CPUs allotted to trials are over a study of real model families (xgboost,
random_forest, mlp on a mid-size synthetic classification set, one CPU per trial, as many trials at once
as Ray has CPUs, the families side by side), tunelab against the same trials in a plain Ray Tune script
(no tracking; the same trainable loop, configurations, concurrency, and Tuners side by side in threads).

While each side runs, a sampler thread reads every 0.2 s the CPU times of the driver and of every
process of its Ray (trial workers ``ray::...``; Ray's own: raylet, GCS, agents) and the machine's.
Printed per side, over the tuning window (first trial start to last trial end, as Tune's
on_trial_start / on_trial_complete saw them in the driver: tunelab's MLflow trial runs, a Tune
callback on the plain side):

- busy fraction = CPU-s of the worker processes / slot-s (CPUs allotted to trials x window), and the
  part of it inside trials (each trial's worker between its start and end);
- slot occupancy = trial-s / slot-s, and the idle gaps between trials on a slot;
- per family, the most CPU one trial process used over 1 s (cores; above its 1 CPU = oversubscribed)
  and the most threads busy in it at once (>= 0.25 core each over 1 s); the same for the driver;
- where the rest went: driver, Ray's own processes, other processes on the machine (a shared machine
  slows everything: the busy fraction of what other processes left is printed too).

Target (issue): busy fraction >= 0.90, no oversubscription, no idle gaps between trials.

    python benchmarks/utilisation.py            # 3 families x 16 trials a side: about 5-8 min on 2 CPUs
    python benchmarks/utilisation.py --quick    # 3 families x 3 short trials: about 1-2 min
"""

from __future__ import annotations

import argparse
import heapq
import json
import logging
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")

import psutil  # noqa: E402
import ray  # noqa: E402  (ray first: it brings psutil, in ray/thirdparty_files)
from mlflow.tracking import MlflowClient  # noqa: E402
from ray import tune  # noqa: E402

from benchmarks.common import wait_for_idle_cpus  # noqa: E402
from trainables import FAMILIES  # noqa: E402
from trainables.trial import run_trial  # noqa: E402
from tunelab.run import plan_study, run_study  # noqa: E402
from tunelab.study import load_study  # noqa: E402
from tunelab.tracking import MODEL, ROLE_TRIAL, TRIAL_ID, run_filter  # noqa: E402

FAMILY_NAMES = ("xgboost", "random_forest", "mlp")
CPUS_PER_TRIAL = 1
SAMPLE_S = 0.2  # CPU times of every process
MAX_READ_S = 0.01  # a read that took longer is dropped
REFRESH_S = 1.0  # new processes looked for; per-thread CPU times of the workers read
PEAK_WINDOW_S = 1.0  # peak CPU of a process: over windows this long
BUSY_THREAD_CORES = 0.25  # a thread using at least this much of a core over REFRESH_S is busy
TARGET = 0.90
RAY_AGENTS = ("ray::DashboardAgent", "ray::RuntimeEnvAgent")  # named ray::, but Ray's own, not workers
SIZES = {  # rows of the synthetic set, its features, trials per family
    "full": {"rows": 10000, "features": 20, "trials": 16},
    "quick": {"rows": 3000, "features": 10, "trials": 3},
}
STUDY = """
name: utilisation
seed: 0
datasets: [{{name: synthetic_classification, rows: {rows}, features: {features}, seed: 1}}]
models: [{models}]
search: {{searcher: random, scheduler: fifo, num_samples: {trials}, max_concurrent_trials: {concurrency}}}
resources: {{cpus_per_trial: {cpus_per_trial}}}
spaces:  # trials of seconds each: forests of 50 trees, MLPs of 10 epochs (xgboost: its 200 rounds)
  random_forest: {{budget: {{steps: 5, per_step: 10}}}}
  mlp: {{budget: {{steps: 5, per_step: 2}}}}
tracking: {{uri: "sqlite:///{tmp}/mlflow.db"}}
storage_path: {tmp}/tune
"""


class Sampler(threading.Thread):
    """CPU seconds and threads of the driver and of every process under it, and the machine's CPU times."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.driver = psutil.Process()
        self.procs: dict[int, psutil.Process] = {}
        self.kind: dict[int, str] = {}  # pid -> driver | worker | ray
        self.born: dict[int, float] = {}
        self.series: dict[int, list[tuple[float, float]]] = defaultdict(list)  # (time, CPU s since start)
        self.busy_threads: dict[int, int] = defaultdict(int)  # most threads busy at once
        self.machine: list[tuple[float, float, float]] = []  # (time, busy CPU s, steal CPU s) of the machine
        self.own: list[tuple[float, float]] = []  # (time, CPU s of this sampling thread)
        self.done = threading.Event()

    def run(self) -> None:
        last_refresh, thread_cpu = 0.0, {}
        while not self.done.is_set():
            refresh = time.time() - last_refresh >= REFRESH_S
            if refresh:
                self._refresh()
                last_refresh = time.time()
            for pid, p in list(self.procs.items()):
                try:
                    with p.oneshot():
                        t_read = time.time()
                        c = p.cpu_times()
                        now = time.time()
                        if now - t_read <= MAX_READ_S:  # else the read waited for the GIL: its time is unsure
                            self.series[pid].append(((t_read + now) / 2, c.user + c.system))
                        if self.kind[pid] == "ray" and _is_worker(p.name()):  # a new worker names itself ray::
                            self.kind[pid] = "worker"
                        if refresh and self.kind[pid] in ("worker", "driver"):
                            threads = {t.id: t.user_time + t.system_time for t in p.threads()}
                            last_t, last = thread_cpu.get(pid, (now, {}))
                            if now > last_t:
                                busy = sum(
                                    (cpu - last.get(tid, cpu)) / (now - last_t) >= BUSY_THREAD_CORES
                                    for tid, cpu in threads.items()
                                )
                                self.busy_threads[pid] = max(self.busy_threads[pid], busy)
                            thread_cpu[pid] = (now, threads)
                except psutil.Error:  # gone
                    self.procs.pop(pid)
            now, m = time.time(), psutil.cpu_times()
            self.machine.append((now, m.user + m.nice + m.system + m.irq + m.softirq, getattr(m, "steal", 0.0)))
            self.own.append((now, time.thread_time()))
            self.done.wait(SAMPLE_S)

    def _refresh(self) -> None:
        for p in [self.driver, *self.driver.children(recursive=True)]:
            if p.pid not in self.procs:
                try:
                    name = p.name()
                    self.born[p.pid] = p.create_time()
                except psutil.Error:
                    continue
                self.procs[p.pid] = p
                self.kind[p.pid] = "driver" if p is self.driver else "worker" if _is_worker(name) else "ray"

    def stop(self) -> None:
        self.done.set()
        self.join()

    def pids(self, kind: str) -> list[int]:
        return [pid for pid, k in self.kind.items() if k == kind and self.series[pid]]

    def cpu_s(self, pid: int, t0: float, t1: float) -> float:
        """CPU seconds process ``pid`` used between t0 and t1 (interpolated between samples)."""
        ts, cs = np.array(self.series[pid]).T

        def at(t: float) -> float:
            return 0.0 if self.born[pid] >= t else float(np.interp(t, ts, cs))

        return at(t1) - at(t0)

    def peak_cores(self, pid: int) -> float:
        """The most CPU (cores) process ``pid`` used over any PEAK_WINDOW_S."""
        ts, cs = np.array(self.series[pid]).T
        j = np.searchsorted(ts, ts + PEAK_WINDOW_S)
        ok = j < len(ts)
        if not ok.any():
            return float("nan")
        return float(np.max((cs[j[ok]] - cs[ok]) / (ts[j[ok]] - ts[ok])))

    def machine_s(self, t0: float, t1: float) -> tuple[float, float, float]:
        """The machine's busy and stolen CPU-s, and this sampling thread's own, between t0 and t1."""
        ts, busy, steal = np.array(self.machine).T
        own_ts, own = np.array(self.own).T
        return (
            float(np.interp(t1, ts, busy) - np.interp(t0, ts, busy)),
            float(np.interp(t1, ts, steal) - np.interp(t0, ts, steal)),
            float(np.interp(t1, own_ts, own) - np.interp(t0, own_ts, own)),
        )


def _is_worker(name: str) -> bool:
    return name.startswith("ray::") and name not in RAY_AGENTS


@dataclass
class Side:
    """One side's run: its trials (start, end, family, worker pid) and its samples."""

    name: str
    trials: list[tuple[float, float, str, int]]
    sampler: Sampler
    wall_s: float
    stats: dict = field(default_factory=dict)


def run_tunelab(plan) -> list[tuple[float, float, str, int]]:
    """The study through tunelab; each trial's start and end from its MLflow run, its worker from Tune's results."""
    results = run_study(plan, progress=False)
    assert all(r.failed == 0 and r.trials == plan.study.search.num_samples for r in results), results
    pid_of = {}
    for path in Path(plan.study.storage(), plan.study.name).glob("*/*/result.json"):
        for line in path.read_text().splitlines():
            result = json.loads(line)
            pid_of[result["trial_id"]] = result["pid"]
    client = MlflowClient(plan.study.tracking.resolved_uri())
    exp = client.get_experiment_by_name(plan.study.experiment)
    runs = client.search_runs([exp.experiment_id], run_filter(ROLE_TRIAL), max_results=10000)
    return [
        (r.info.start_time / 1000, r.info.end_time / 1000, r.data.tags[MODEL], pid_of[r.data.tags[TRIAL_ID]])
        for r in runs
    ]


class Times(tune.Callback):
    """The plain side's trial start/end times, from the hooks tunelab's MLflow logger uses, and worker pids."""

    def __init__(self, family: str, trials: list):
        self.family, self.trials, self.started, self.pid = family, trials, {}, {}

    def on_trial_start(self, iteration, trials, trial, **info):
        self.started[trial.trial_id] = time.time()

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self.pid[trial.trial_id] = result["pid"]

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.trials.append((self.started.pop(trial.trial_id), time.time(), self.family, self.pid[trial.trial_id]))

    on_trial_error = on_trial_complete


def run_plain(plan, concurrency: int, tmp: str, sequential: bool) -> list[tuple[float, float, str, int]]:
    """The same cells through plain Ray Tune: the same trainable loop, configurations and concurrency."""
    refs = {name: ray.put(data) for name, data in plan.datasets.items()}
    trials: list = []
    tuners = []
    for cell in plan.cells:
        family_cls, ctx, metric, space, data_ref = (
            FAMILIES[cell.family],
            plan.context(cell),
            cell.metric,
            cell.space,
            [refs[cell.dataset]],
        )

        def trainable(config, family_cls=family_cls, ctx=ctx, metric=metric, space=space, data_ref=data_ref):
            run_trial(space.decode(config), family_cls=family_cls, data_ref=data_ref, ctx=ctx, metric=metric)

        name = f"plain-{cell.family}"  # registered up front: Tune's registry is not thread-safe
        tune.register_trainable(name, tune.with_resources(trainable, {"cpu": CPUS_PER_TRIAL}))
        tuners.append(
            tune.Tuner(
                name,
                param_space=space.to_tune(),
                tune_config=tune.TuneConfig(
                    metric=metric,
                    mode=cell.mode,
                    num_samples=plan.study.search.num_samples,
                    reuse_actors=True,
                    search_alg=tune.search.BasicVariantGenerator(
                        random_state=cell.seed, max_concurrent=concurrency, points_to_evaluate=[space.default_point()]
                    ),
                ),
                run_config=tune.RunConfig(
                    name=name, storage_path=f"{tmp}/plain", verbose=0, callbacks=[Times(cell.family, trials)]
                ),
            )
        )
    if sequential:
        grids = [t.fit() for t in tuners]
    else:
        with ThreadPoolExecutor(len(tuners)) as pool:
            grids = list(pool.map(lambda t: t.fit(), tuners))
    assert all(len(g) == plan.study.search.num_samples and not g.errors for g in grids)
    return trials


def measure(name: str, fn, *args) -> Side:
    sampler = Sampler()
    sampler.start()
    t0 = time.perf_counter()
    trials = fn(*args)
    wall = time.perf_counter() - t0
    sampler.stop()
    return Side(name, sorted(trials), sampler, wall)


def summarise(side: Side, cpus: int) -> dict:
    s, trials = side.sampler, side.trials
    t0, t1 = trials[0][0], max(t[1] for t in trials)
    window, slot_s = t1 - t0, cpus * (t1 - t0)
    cpu = {kind: sum(s.cpu_s(pid, t0, t1) for pid in s.pids(kind)) for kind in ("worker", "driver", "ray")}
    in_trials = sum(s.cpu_s(pid, start, end) for start, end, _, pid in trials)
    busy, steal, sampler = s.machine_s(t0, t1)
    free = [(t0, i) for i in range(cpus)]  # slots, by when each is next free
    gaps = []
    for start, end, _, _ in trials:
        at, i = heapq.heappop(free)
        if at > t0:  # not a slot's first trial
            gaps.append(max(0.0, start - at))
        heapq.heappush(free, (end, i))
    trial_s = sum(end - start for start, end, _, _ in trials)
    families = {}
    for family in FAMILY_NAMES:
        pids = {pid for _, _, f, pid in trials if f == family and s.series.get(pid)}
        families[family] = (
            max((s.peak_cores(p) for p in pids), default=float("nan")),
            max((s.busy_threads[p] for p in pids), default=0),
            len(pids),
        )
    (driver,) = s.pids("driver")
    left = os.cpu_count() * window - (busy - sum(cpu.values())) - steal  # the CPU other processes left us
    run_t0, run_t1 = s.machine[0][0], s.machine[-1][0]
    return {
        "wall": side.wall_s,
        "window": window,
        "trials": len(trials),
        "workers": len(s.pids("worker")),
        "trial_s": trial_s,
        "worker_run": sum(s.cpu_s(pid, run_t0, run_t1) for pid in s.pids("worker")),
        "busy": cpu["worker"] / slot_s,
        "in_trials_frac": in_trials / slot_s,
        "busy_left": cpu["worker"] / min(slot_s, left),
        "occupancy": trial_s / slot_s,
        "gaps": gaps,
        "gap_s": sum(gaps),
        "tail_s": sum(t1 - at for at, _ in free),
        "in_trials": in_trials,
        "outside_trials": cpu["worker"] - in_trials,
        "driver": cpu["driver"] - sampler,
        "sampler": sampler,
        "ray": cpu["ray"],
        "other": busy - sum(cpu.values()),
        "steal": steal,
        "idle": os.cpu_count() * window - busy - steal,
        "families": families,
        "driver_peak": (s.peak_cores(driver), s.busy_threads[driver]),
    }


def report(sides: list[Side], cpus: int, args, size: dict) -> None:
    a, b = (side.stats for side in sides)
    print(
        f"\nmachine: {platform.machine()}, {os.cpu_count()} CPUs, Ray {ray.__version__}; Ray CPUs for trials: {cpus}; "
        f"synthetic_classification {size['rows']} rows x {size['features']} features; {', '.join(FAMILY_NAMES)} "
        f"x {size['trials']} trials each (random, FIFO), {CPUS_PER_TRIAL} CPU per trial, up to {args.concurrency} "
        f"trials per family at once; plain side: families {'one after another' if args.sequential else 'side by side'}"
    )
    print(f"{'':<50}{'tunelab':>14}{'plain Tune':>14}{'ratio':>8}")

    def row(label, key, fmt="{:.2f}", ratio=True):
        va, vb = a[key], b[key]
        print(f"{label:<50}{fmt.format(va):>14}{fmt.format(vb):>14}" + (f"{va / vb:>8.2f}" if ratio and vb else ""))

    row("whole run s (setup, trials, best models logged)", "wall", "{:.1f}")
    row("tuning window s (first trial start to last end)", "window", "{:.1f}")
    row("trials", "trials", "{:d}", ratio=False)
    row("worker processes started", "workers", "{:d}", ratio=False)
    row("trial-s (start to end, summed)", "trial_s", "{:.1f}")
    row("CPU-s of the workers over the whole run", "worker_run", "{:.1f}")
    row(f"busy fraction: worker CPU-s / slot-s (>= {TARGET:.2f})", "busy", "{:.3f}")
    row("  of which inside trials", "in_trials_frac", "{:.3f}")
    row("  of the CPU other processes left us", "busy_left", "{:.3f}")
    row("slot occupancy: trial-s / slot-s", "occupancy", "{:.3f}")
    row("idle slot-s between trials on a slot", "gap_s", "{:.1f}", ratio=False)
    row("idle slot-s after a slot's last trial", "tail_s", "{:.1f}", ratio=False)
    for label, fn in (("median gap between trials on a slot s", statistics.median), ("longest gap s", max)):
        va, vb = (fn(x["gaps"]) if x["gaps"] else float("nan") for x in (a, b))
        print(f"{label:<50}{va:>14.2f}{vb:>14.2f}")
    print(f"CPU-s in the window (slot-s = {cpus} x window; the machine has {os.cpu_count()} CPUs)")
    for label, key in (
        ("  workers, inside trials", "in_trials"),
        ("  workers, outside (start-up, imports, idle pool)", "outside_trials"),
        ("  driver (less the sampler thread)", "driver"),
        ("  the sampler thread (this script)", "sampler"),
        ("  Ray's own processes (raylet, GCS, agents)", "ray"),
        ("  other processes on the machine", "other"),
        ("  stolen by the hypervisor", "steal"),
        ("  idle", "idle"),
    ):
        row(label, key, "{:.1f}")
    print(
        f"peak cores of one process over {PEAK_WINDOW_S:g} s / most threads busy at once "
        f"(>= {BUSY_THREAD_CORES} core) / processes"
    )
    for family in FAMILY_NAMES:
        (pa, ta, na), (pb, tb, nb) = a["families"][family], b["families"][family]
        print(
            f"  {family + f' trials ({CPUS_PER_TRIAL} CPU each)':<48}{f'{pa:.2f} / {ta} / {na}':>14}"
            f"{f'{pb:.2f} / {tb} / {nb}':>14}"
        )
    (pa, ta), (pb, tb) = a["driver_peak"], b["driver_peak"]
    print(f"  {'driver':<48}{f'{pa:.2f} / {ta}':>14}{f'{pb:.2f} / {tb}':>14}")
    print(
        f"busy fraction tunelab {a['busy']:.3f}, plain Ray Tune {b['busy']:.3f}: ratio {a['busy'] / b['busy']:.3f}; "
        f"target >= {TARGET:.2f}: {'met' if a['busy'] >= TARGET else 'NOT met'}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="a smaller set, 3 trials per family")
    ap.add_argument("--trials", type=int, help="trials per family (default: 16, --quick 3)")
    ap.add_argument("--cpus", type=int, default=os.cpu_count(), help="CPUs Ray gets for trials (default: all)")
    ap.add_argument("--concurrency", type=int, help="trials per family at once (default: --cpus)")
    ap.add_argument("--sequential", action="store_true", help="plain side: one Tuner after another, not side by side")
    args = ap.parse_args()
    size = dict(SIZES["quick" if args.quick else "full"])
    size["trials"] = args.trials or size["trials"]
    args.concurrency = args.concurrency or args.cpus
    logging.getLogger("ray.tune").setLevel(logging.ERROR)
    ray.init(
        address="local", num_cpus=args.cpus, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING
    )
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "utilisation.yaml"
        path.write_text(
            STUDY.format(
                **size,
                models=", ".join(FAMILY_NAMES),
                concurrency=args.concurrency,
                cpus_per_trial=CPUS_PER_TRIAL,
                tmp=tmp,
            )
        )
        plan = plan_study(load_study(path), path)
        ray.get(ray.remote(lambda: [FAMILIES[f] for f in FAMILY_NAMES]).remote())  # imports from a warm disk
        sides = [measure("tunelab", run_tunelab, plan)]
        print(f"tunelab: {sides[0].wall_s:.1f} s", flush=True)
        wait_for_idle_cpus()
        sides.append(measure("plain", run_plain, plan, args.concurrency, tmp, args.sequential))
        print(f"plain Ray Tune: {sides[1].wall_s:.1f} s", flush=True)
    for side in sides:
        side.stats = summarise(side, args.cpus)
    report(sides, args.cpus, args, size)


if __name__ == "__main__":
    main()
