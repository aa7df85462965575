"""Search spaces: a small declarative YAML syntax turned into Ray Tune domains.

A file ``searchspaces/<family>.yaml`` reads::

    budget: {steps: 10, per_step: 20}        # budget steps of a full trial, units per step
    params:
      max_depth: {randint: [2, 10]}          # integers, both bounds included
      learning_rate: {loguniform: [0.01, 0.3]}
      subsample: {uniform: [0.5, 1.0]}
      grow_policy: {choice: [depthwise, lossguide]}
      min_child_weight: 1                    # a constant
    by_task:                                 # extra params for one task only
      classification: {...}
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from ray import tune

from tunelab.errors import StudyError, did_you_mean

SPACES_DIR = Path(__file__).resolve().parent.parent / "searchspaces"  # beside tunelab: in the tree, and installed

#: distribution name -> number of arguments it takes
DISTRIBUTIONS: dict[str, tuple[int, ...]] = {
    "uniform": (2,),
    "quniform": (3,),
    "loguniform": (2,),
    "qloguniform": (3,),
    "randint": (2,),
    "qrandint": (3,),
    "lograndint": (2,),
    "choice": (),
}
_INTEGER = {"randint", "qrandint", "lograndint"}
_LOG = {"loguniform", "qloguniform", "lograndint"}


@dataclass(frozen=True)
class Param:
    name: str
    kind: str  # a DISTRIBUTIONS key, or "constant"
    args: tuple = ()

    def domain(self, continuous_only: bool = False) -> Any:
        """The Ray Tune domain; ``continuous_only`` encodes ints and choices as floats (BayesOpt)."""
        k, a = self.kind, self.args
        if k == "constant":
            return a[0]
        if continuous_only:
            if k == "choice":
                return tune.uniform(0, len(a))
            if k in _INTEGER:
                return (tune.loguniform if k in _LOG else tune.uniform)(a[0], a[1] + 1)
            return (tune.loguniform if k in _LOG else tune.uniform)(a[0], a[1])
        return {
            "uniform": lambda: tune.uniform(*a),
            "quniform": lambda: tune.quniform(*a),
            "loguniform": lambda: tune.loguniform(*a),
            "qloguniform": lambda: tune.qloguniform(*a),
            "randint": lambda: tune.randint(a[0], a[1] + 1),
            "qrandint": lambda: tune.qrandint(*a),
            "lograndint": lambda: tune.lograndint(a[0], a[1] + 1),
            "choice": lambda: tune.choice(list(a)),
        }[k]()

    def decode(self, value: Any, encoded: bool = False) -> Any:
        """A value as the family receives it: plain Python types; ``encoded`` floats mapped back."""
        if self.kind == "choice":
            if encoded:
                return self.args[min(int(value), len(self.args) - 1)]
            return _plain(value)
        if self.kind in _INTEGER:
            return int(min(max(math.floor(float(value)), self.args[0]), self.args[1]))
        return _plain(value)

    def contains(self, value: Any) -> bool:
        """Whether ``value`` can be drawn from this parameter's domain."""
        k, a = self.kind, self.args
        if k == "constant":
            return value == a[0]
        if k == "choice":
            return value in a
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        if k in _INTEGER and not float(value).is_integer():
            return False
        return a[0] <= value <= a[1]

    def encode(self, value: Any) -> Any:
        """The inverse of ``decode(..., encoded=True)``: a value as the continuous-only searchers see it."""
        if self.kind == "choice":  # the middle of the value's bucket: ``decode`` floors
            return self.args.index(value) + 0.5
        if self.kind in _INTEGER:
            return value + 0.5
        return float(value) if self.kind != "constant" else value


def _plain(v: Any) -> Any:
    return v.item() if hasattr(v, "item") else v


@dataclass
class Space:
    family: str
    params: dict[str, Param]
    steps: int = 1
    per_step: int = 1
    source: str = ""
    #: the family's default configuration, within the space: the first trial of every cell
    defaults: dict[str, Any] = field(default_factory=dict)

    def default_point(self, continuous_only: bool = False) -> dict:
        """The default configuration as the searcher takes it (``points_to_evaluate``)."""
        return self.point(self.defaults, continuous_only)

    def default_config(self) -> dict:
        """The default configuration as a trial receives it: the defaults of the searched parameters, and the
        space's constants (a study may fix a parameter the family's defaults name); empty without defaults."""
        if not self.defaults:
            return {}
        constants = {n: p.args[0] for n, p in self.params.items() if p.kind == "constant"}
        return self.decode({**constants, **self.defaults})

    def point(self, config: dict, continuous_only: bool = False) -> dict:
        """A configuration's searched parameters as the searcher takes them (``points_to_evaluate``)."""
        searched = {n: v for n, v in config.items() if n in self.params and self.params[n].kind != "constant"}
        return {n: self.params[n].encode(v) if continuous_only else v for n, v in searched.items()}

    def to_tune(self, continuous_only: bool = False) -> dict:
        return {n: p.domain(continuous_only) for n, p in self.params.items()}

    def decode(self, config: dict, encoded: bool = False) -> dict:
        return {n: self.params[n].decode(v, encoded) if n in self.params else _plain(v) for n, v in config.items()}

    def to_yaml(self) -> str:
        """This space in the search space syntax: what a cell really searched (its task, the study's overrides)."""
        params = {n: p.args[0] if p.kind == "constant" else {p.kind: list(p.args)} for n, p in self.params.items()}
        space = {"budget": {"steps": self.steps, "per_step": self.per_step}, "params": params}
        if self.defaults:
            space["defaults"] = self.defaults
        return yaml.safe_dump(space, sort_keys=False, default_flow_style=None)


@dataclass
class _Reader:
    where: str  # file (and field) named in every error
    errors: list = field(default_factory=list)

    def param(self, name: str, spec: Any) -> Param:
        at = f"{self.where}: {name}"
        if not isinstance(spec, dict):
            return Param(name, "constant", (spec,))
        if len(spec) != 1:
            raise StudyError(at, f"expected one distribution like {{uniform: [0, 1]}}, got {spec!r}")
        ((kind, args),) = spec.items()
        if kind not in DISTRIBUTIONS:
            raise StudyError(
                at,
                f"unknown distribution '{kind}' (expected one of "
                f"{', '.join(DISTRIBUTIONS)}){did_you_mean(kind, DISTRIBUTIONS)}",
            )
        if not isinstance(args, list):
            raise StudyError(at, f"{kind} expects a list of arguments, got {args!r}")
        if kind == "choice":
            if not args:
                raise StudyError(at, "choice needs at least one option")
            nested = next((a for a in args if not (a is None or isinstance(a, (str, int, float, bool)))), None)
            if nested is not None:
                raise StudyError(
                    at, f"choice options must be single values (a string, number, true/false), got {nested!r}"
                )
            return Param(name, kind, tuple(args))
        if len(args) not in DISTRIBUTIONS[kind]:
            raise StudyError(at, f"{kind} expects {DISTRIBUTIONS[kind][0]} numbers, got {args!r}")
        if not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in args):
            raise StudyError(at, f"{kind} bounds must be numbers, got {args!r}")
        if kind in _INTEGER and not all(float(x).is_integer() for x in args):
            raise StudyError(at, f"{kind} bounds must be integers, got {args!r}")
        low, high = args[0], args[1]
        if not low < high:
            raise StudyError(at, f"{kind} needs low < high, got low={low}, high={high}")
        if kind in _LOG and low <= 0:
            raise StudyError(at, f"{kind} needs bounds > 0, got low={low}")
        if len(args) == 3 and args[2] <= 0:
            raise StudyError(at, f"{kind} needs a positive step, got {args[2]}")
        return Param(name, kind, tuple(int(x) if kind in _INTEGER else float(x) for x in args))


BUDGET_KEYS = ("steps", "per_step")


def load_space(
    family: str, task: str, overrides: dict | None = None, where: str = "", with_defaults: bool = True
) -> Space:
    """The family's space for ``task``, with the study's overrides (``spaces.<family>``) applied;
    ``with_defaults``: with the family's default configuration, checked to lie within the space."""
    path = SPACES_DIR / f"{family}.yaml"
    raw = yaml.safe_load(path.read_text()) or {}
    unknown = set(raw) - {"budget", "params", "by_task", "defaults"}
    if unknown:
        raise StudyError(str(path), f"unknown keys {sorted(unknown)} (expected budget, params, by_task, defaults)")
    specs = dict(raw.get("params") or {})
    specs.update((raw.get("by_task") or {}).get(task) or {})
    budget = dict(raw.get("budget") or {})
    file_reader = _Reader(str(path))
    params = {n: file_reader.param(n, s) for n, s in specs.items()}
    overrides = dict(overrides or {})
    budget_overrides = overrides.pop("budget", None) or {}
    if not isinstance(budget_overrides, dict):
        raise StudyError(
            f"{where or f'spaces.{family}'}.budget", f"expected {{steps: N, per_step: N}}, got {budget_overrides!r}"
        )
    typo = next((k for k in budget_overrides if k not in BUDGET_KEYS), None)
    if typo is not None:
        raise StudyError(
            f"{where or f'spaces.{family}'}.budget.{typo}",
            f"unknown key (expected {', '.join(BUDGET_KEYS)}){did_you_mean(typo, BUDGET_KEYS)}",
        )
    budget.update(budget_overrides)
    study_reader = _Reader(where or f"spaces.{family}")
    for n, s in overrides.items():
        if n not in params:
            raise StudyError(
                f"{study_reader.where}.{n}",
                f"{family} has no parameter '{n}' (expected one of {', '.join(params)}){did_you_mean(n, params)}",
            )
        params[n] = study_reader.param(f"{n}", s)
    steps, per_step = budget.get("steps", 1), budget.get("per_step", 1)
    for key, v in (("steps", steps), ("per_step", per_step)):
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise StudyError(f"{where or path}: budget.{key}", f"expected a positive integer, got {v!r}")
    defaults = (
        _defaults(raw.get("defaults") or {}, params, task, str(path), study_reader.where, set(overrides))
        if with_defaults
        else {}
    )
    return Space(family, params, steps, per_step, str(path), defaults)


def _defaults(raw: dict, params: dict[str, Param], task: str, path: str, where: str, overridden: set) -> dict:
    """The family's defaults for ``task`` (a value, or ``{classification: .., regression: ..}``), each
    checked against the (overridden) space; parameters fixed to a constant need none."""
    out = {}
    for name, value in raw.items():
        if isinstance(value, dict):
            if task not in value:
                continue
            value = value[task]
        if name not in params:
            raise StudyError(
                f"{path}: defaults.{name}",
                f"not a parameter of the space (expected one of {', '.join(params)}){did_you_mean(name, params)}",
            )
        p = params[name]
        if p.kind == "constant":
            continue
        if not p.contains(value):
            at = f"{where}.{name}" if name in overridden else f"{path}: params.{name}"
            raise StudyError(
                at,
                f"{p.kind} {list(p.args)} leaves out the family's default {value!r}, which every "
                "cell tries first (widen the range, or set search.default_first: false)",
            )
        out[name] = value
    missing = [n for n, p in params.items() if p.kind != "constant" and n not in out]
    if out and missing:
        raise StudyError(
            f"{path}: defaults",
            f"no default for {', '.join(missing)} (a default configuration names every tuned parameter)",
        )
    return out
