"""``tunelab validate --preview``: draw from each cell's search space (no training) and show what comes out.

Values are drawn from the Tune domains the searcher is given and decoded the way trials receive
them, so that bounds, integer rounding, log scales and BayesOpt's encoding show as they really act.
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from tunelab.spaces import Space

PREVIEW_DRAWS = 300
QUANTILES = (0.0, 0.1, 0.5, 0.9, 1.0)


def draws(space: Space, n: int, seed: int, continuous_only: bool = False) -> dict[str, list]:
    """``n`` decoded values per tuned parameter."""
    rng = np.random.default_rng(seed)
    out = {}
    for name, domain in space.to_tune(continuous_only).items():
        if not hasattr(domain, "sample"):  # a constant
            continue
        raw = domain.sample(size=n, random_state=rng)
        out[name] = [space.params[name].decode(v, continuous_only) for v in raw]
    return out


def describe(values: list, categorical: bool = False) -> str:
    """Quantiles of numbers, or how often each option came up."""
    if not categorical and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        q = np.quantile(np.asarray(values, dtype=float), QUANTILES)
        ints = all(isinstance(v, int) for v in values)
        fmt = (lambda x: f"{x:.0f}") if ints else (lambda x: f"{x:.4g}")
        return (
            f"min {fmt(q[0])}  p10 {fmt(q[1])}  median {fmt(q[2])}  p90 {fmt(q[3])}  max {fmt(q[4])}"
            f"  ({len(set(values))} distinct)"
        )
    counts = Counter(map(str, values))
    return "  ".join(f"{k}: {v / len(values):.0%}" for k, v in sorted(counts.items()))


def preview_lines(space: Space, n: int, seed: int, continuous_only: bool = False) -> list[str]:
    lines = []
    for name, values in draws(space, n, seed, continuous_only).items():
        p = space.params[name]
        spec = f"{p.kind} {list(p.args)}"
        default = f"  default {space.defaults[name]!r}" if name in space.defaults else ""
        lines.append(f"      {name:<20} {spec:<32} {describe(values, p.kind == 'choice')}{default}")
    return lines
