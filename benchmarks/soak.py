"""Soak: thousands of trivial trials in one study; the driver's memory must stay flat.

Runs N dummy trials (each reports its metrics at its budget step) into a fresh sqlite store,
prints the driver's RSS (now and peak) when 500 and when all N trials are done, and checks that
the store holds exactly N finished trial runs. ``--plain`` runs the same trials through a plain
Ray Tune script without logging instead, for the share of the growth that is Tune's own (Tune
keeps every trial in memory and pickles them all into its experiment state).

    python benchmarks/soak.py --trials 2000
    python benchmarks/soak.py --trials 2000 --plain
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mlflow.tracking import MlflowClient  # noqa: E402

from tunelab.run import StudyRunner, plan_study  # noqa: E402
from tunelab.study import load_study  # noqa: E402
from tunelab.tracking import ROLE_TRIAL, run_filter, search_runs  # noqa: E402

STUDY = """
name: soak
datasets: [iris]
models: [dummy]
search: {{searcher: random, scheduler: fifo, num_samples: {n}, max_concurrent_trials: {c}}}
tracking: {{uri: "sqlite:///{tmp}/mlflow.db", register_models: false}}
storage_path: {tmp}/tune
"""
MARKS = (500,)
POLL_S = 0.5


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def rss_mib() -> float:
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def plain(n: int, concurrency: int, tmp: str, done: list) -> None:
    """The same trials through plain Ray Tune, no logging; ``done`` counts finished trials."""
    import ray
    from ray import tune

    from benchmarks.overhead import plain_tune

    class Count(tune.Callback):
        def on_trial_complete(self, iteration, trials, trial, **info):
            done[0] += 1

    path = Path(tmp) / "soak.yaml"
    plan = plan_study(load_study(path), path)
    ray.init(include_dashboard=False, log_to_driver=False)
    ctx = plan.context(plan.cells[0])
    plain_tune([ray.put(plan.datasets["iris"])], ctx, n, concurrency, tmp, callbacks=[Count()])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=2000)
    ap.add_argument("--concurrency", type=int, default=2)
    ap.add_argument("--plain", action="store_true", help="plain Ray Tune without logging, for comparison")
    args = ap.parse_args()
    marks = sorted({m for m in MARKS if m < args.trials} | {args.trials})
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "soak.yaml"
        path.write_text(STUDY.format(n=args.trials, c=args.concurrency, tmp=tmp))
        runner = StudyRunner(plan_study(load_study(path), path), progress=False)
        seen: dict[int, tuple[float, float, float]] = {}
        plain_done = [0]
        t0 = time.perf_counter()

        def watch() -> None:
            while len(seen) < len(marks):
                done = plain_done[0] if args.plain else sum(runner.progress.done.values())
                for m in marks:
                    if done >= m and m not in seen:
                        seen[m] = (time.perf_counter() - t0, rss_mib(), peak_rss_mib())
                time.sleep(POLL_S)

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        if args.plain:
            plain(args.trials, args.concurrency, tmp, plain_done)
            watcher.join(timeout=5 * POLL_S)
            report(args, marks, seen, "plain Ray Tune, no logging")
            return
        (result,) = runner.run()
        watcher.join(timeout=5 * POLL_S)
        client = MlflowClient(f"sqlite:///{tmp}/mlflow.db")
        exp = client.get_experiment_by_name("soak")
        runs = search_runs(client, [exp.experiment_id], run_filter(ROLE_TRIAL))
    finished = sum(r.info.status == "FINISHED" for r in runs)
    report(args, marks, seen, "tunelab, sqlite store")
    print(
        f"trial runs in the store: {len(runs)} ({finished} FINISHED); cell trials {result.trials}, "
        f"failed {result.failed}"
    )
    if len(runs) != args.trials or finished != args.trials:
        sys.exit("the store does not hold exactly one finished run per trial")


def report(args, marks: list[int], seen: dict, side: str) -> None:
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} CPUs; {args.trials} dummy trials, "
        f"concurrency {args.concurrency}; {side}"
    )
    print(f"{'trials done':>12}{'elapsed s':>12}{'driver RSS MiB':>17}{'peak RSS MiB':>15}")
    for m in marks:
        elapsed, rss, peak = seen.get(m, (float("nan"), rss_mib(), peak_rss_mib()))
        print(f"{m:>12}{elapsed:>12.1f}{rss:>17.0f}{peak:>15.0f}")


if __name__ == "__main__":
    main()
