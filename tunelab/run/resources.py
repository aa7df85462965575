"""Every cell's trial fits on one node, checked before any work: a trial no node can hold would wait forever.

Run locally, the node is this machine (its CPUs, before Ray starts); on a cluster, every alive node as Ray reports
it. On an autoscaling cluster the nodes that could hold a trial may not be up yet: set TUNELAB_AUTOSCALING=1.
"""

from __future__ import annotations

import os
from typing import Iterable

from tunelab.errors import StudyError
from tunelab.run.plan import Plan

AUTOSCALING_ENV = "TUNELAB_AUTOSCALING"


def this_machine() -> list[dict[str, float]]:
    """The local node as far as it is known before Ray starts: its CPUs (GPUs: Ray finds them as it starts)."""
    return [{"CPU": float(os.cpu_count() or 1), "GPU": float("inf")}]


def cluster_nodes() -> list[dict[str, float]]:
    import ray

    return [node["Resources"] for node in ray.nodes() if node.get("Alive")]


def check_fits(plan: Plan, nodes: Iterable[dict[str, float]], where: str) -> None:
    """A StudyError naming the first cell whose trial asks for more CPUs or GPUs than any one of ``nodes`` has."""
    if os.environ.get(AUTOSCALING_ENV):
        return
    nodes = list(nodes)
    for cell in plan.cells:
        need = {"CPU": cell.resources.cpus_per_trial, "GPU": cell.resources.gpus_per_trial}
        if any(all(node.get(k, 0.0) >= v for k, v in need.items() if v > 0) for node in nodes):
            continue
        largest = ", ".join(f"{n.get('CPU', 0):g} CPU / {n.get('GPU', 0):g} GPU" for n in nodes[:8])
        raise StudyError(
            f"{plan.source}: resources (model {cell.family})",
            f"a trial asks for {need['CPU']:g} CPU and {need['GPU']:g} GPU, but no node {where} has that much "
            f"(nodes: {largest.replace('inf GPU', 'GPUs unknown')}); lower cpus_per_trial / gpus_per_trial, or on an "
            f"autoscaling cluster whose nodes can hold it set {AUTOSCALING_ENV}=1",
        )
