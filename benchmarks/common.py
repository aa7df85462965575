"""What every benchmark side needs before its clock starts."""

import time

import ray

IDLE_WAIT_S = 60.0


def wait_for_idle_cpus(timeout_s: float = IDLE_WAIT_S) -> None:
    """Block until Ray has every CPU free again: a Tuner that just ended releases its actors and placement
    groups asynchronously, and a side started before that gets fewer CPUs than the other (plain Tune, started
    while the warm-up's actors still held both CPUs, once ran 100 trials one at a time on 2 CPUs)."""
    deadline = time.monotonic() + timeout_s
    total = ray.cluster_resources().get("CPU", 0)
    while ray.available_resources().get("CPU", 0) < total:
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"Ray still has {total - ray.available_resources().get('CPU', 0)} CPUs in use "
                f"after {timeout_s:.0f} s; a benchmark side would not get the CPUs it is measured on"
            )
        time.sleep(0.05)
