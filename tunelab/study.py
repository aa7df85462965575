"""The study file: a typed, validated description of what to run.

Every error names the file, the field and what was expected, and is raised before Ray starts.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal, Optional, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, Strict, ValidationError, field_validator, model_validator

from trainables import FAMILIES
from trainables.base import METRIC_MODES
from tunelab.errors import StudyError, did_you_mean

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
SEARCHERS = ("random", "optuna", "hyperopt", "bayesopt", "bohb")
SCHEDULERS = ("fifo", "asha", "hyperband", "bohb")


#: a name that is safe in file paths and MLflow names: the study's, each dataset's
SAFE_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


#: a count or an id: a YAML integer, not a boolean (``num_samples: true`` is a mistake, not 1) nor a float
Count = Annotated[int, Strict()]
#: a yes/no field: a YAML boolean, not a number or a string
Flag = Annotated[bool, Strict()]
#: more trials or cells than this is a typo (``num_samples: 1e15``), not a study
MAX_COUNT = 1_000_000


class Resources(_Strict):
    cpus_per_trial: float = Field(1, gt=0)
    gpus_per_trial: float = Field(0, ge=0)


class ModelSpec(_Strict):
    """A family, optionally with its own resources: ``{name: mlp, gpus_per_trial: 0.25}``."""

    name: str
    cpus_per_trial: Optional[float] = Field(None, gt=0)
    gpus_per_trial: Optional[float] = Field(None, ge=0)

    def resources(self, default: Resources) -> Resources:
        return Resources(
            cpus_per_trial=self.cpus_per_trial if self.cpus_per_trial is not None else default.cpus_per_trial,
            gpus_per_trial=self.gpus_per_trial if self.gpus_per_trial is not None else default.gpus_per_trial,
        )


class DatasetSpec(_Strict):
    """A bundled or synthetic dataset by name, a CSV/Parquet file with ``path`` and ``target``, or an
    OpenML dataset by id (``openml: 61``; ``name`` defaults to ``openml_<id>``, ``target`` to OpenML's)."""

    name: str = ""
    path: Optional[str] = None
    openml: Optional[Count] = Field(None, gt=0)
    openml_suite: Optional[Count] = Field(None, gt=0)  # every dataset of an OpenML suite (e.g. 99, OpenML-CC18)
    target: Optional[str] = None
    task: Optional[Literal["classification", "regression"]] = None
    rows: Optional[Count] = Field(None, gt=0, le=100_000_000)
    features: Optional[Count] = Field(None, gt=0, le=100_000)
    seed: Optional[Count] = Field(None, ge=0, lt=2**31)

    @model_validator(mode="after")
    def _named(self) -> "DatasetSpec":
        sources = [k for k in ("path", "openml", "openml_suite") if getattr(self, k) is not None]
        if len(sources) > 1:
            raise ValueError(f"give one of path, openml, openml_suite, not {' and '.join(sources)}")
        if not self.name:
            if self.openml is None and self.openml_suite is None:
                raise ValueError("a dataset needs a name (or an openml or openml_suite id)")
            self.name = f"openml_{self.openml}" if self.openml is not None else f"openml_suite_{self.openml_suite}"
        if not re.fullmatch(SAFE_NAME, self.name):
            raise ValueError(
                f"dataset name {self.name!r}: letters, digits, '_', '.' and '-' only, starting with a letter or digit "
                "(it names files, runs and registered models)"
            )
        return self


class Split(_Strict):
    val: float = Field(0.2, gt=0, lt=1)
    test: float = Field(0.2, gt=0, lt=1)
    #: k-fold validation: the rows left beside test are cut into this many folds, each validating once; a trial
    #: reports the fold mean, and the selected configuration is refit on all of them (None: one validation split)
    folds: Optional[Count] = Field(None, ge=2, le=20)

    @model_validator(mode="after")
    def _leaves_training_rows(self) -> "Split":
        if self.folds is not None and "val" in self.model_fields_set:
            raise ValueError(
                f"val ({self.val}) and folds ({self.folds}) exclude each other: with folds, each fold validates in turn"
            )
        val = 0.0 if self.folds else self.val
        if val + self.test >= 0.9:
            raise ValueError(f"val + test must leave at least 10% for training, got {val} + {self.test}")
        return self


class WarmStart(_Strict):
    """Each cell first tries the best configurations of its family in earlier studies of the same store."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    #: the earlier studies, by name (``from`` in the study file)
    studies: list[Annotated[str, Field(pattern=SAFE_NAME)]] = Field(alias="from", min_length=1, max_length=100)
    #: configurations per cell: the same dataset's best first, then those of the most alike datasets
    top: Count = Field(3, ge=1, le=100)


class Search(_Strict):
    searcher: str = "optuna"
    scheduler: str = "asha"
    num_samples: Count = Field(8, gt=0, le=MAX_COUNT)
    max_concurrent_trials: Count = Field(2, gt=0, le=MAX_COUNT)
    metric: Optional[str] = None
    max_failures: Count = Field(0, ge=0, le=MAX_COUNT)
    time_budget_s: Optional[float] = Field(None, gt=0)
    #: a trial that reports no result for this long (from its start or its last step) is stopped, its run FAILED
    trial_timeout_s: Optional[float] = Field(None, gt=0, allow_inf_nan=False)
    reduction_factor: Count = Field(3, ge=2, le=100)
    grace_period: Count = Field(1, ge=1, le=MAX_COUNT)
    #: random configurations optuna, hyperopt and bayesopt try before their model proposes (Optuna's own default: 10;
    #: with early stopping most trials are short, so the model starts sooner: benchmarks/search_efficiency.py)
    startup_trials: Count = Field(5, ge=1, le=MAX_COUNT)
    #: the family's default configuration is the first trial of every cell (searchspaces/<family>.yaml: defaults)
    default_first: Flag = True
    #: start each cell from earlier studies' best configurations (``tunelab.warm_start``); None: a cold start
    warm_start: Optional[WarmStart] = None

    @field_validator("searcher", "scheduler", "metric")
    @classmethod
    def _known(cls, v: Optional[str], info) -> Optional[str]:
        options = {"searcher": SEARCHERS, "scheduler": SCHEDULERS, "metric": tuple(METRIC_MODES)}[info.field_name]
        if v is not None and v not in options:
            raise ValueError(
                f"unknown {info.field_name} '{v}' (expected one of {', '.join(options)}){did_you_mean(v, options)}"
            )
        return v

    @model_validator(mode="after")
    def _bohb_pairs(self) -> "Search":
        if (self.searcher == "bohb") != (self.scheduler == "bohb"):
            raise ValueError(
                "the bohb searcher and the bohb scheduler only work together "
                f"(got searcher={self.searcher}, scheduler={self.scheduler}); set both to bohb"
            )
        return self


#: the stores MLflow's client can write to (a URI without a scheme is a local directory: MLflow's file store)
TRACKING_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql", "http", "https", "file", "databricks")


class Tracking(_Strict):
    uri: Optional[str] = None
    experiment: Optional[str] = None
    register_models: Flag = True
    #: per cell, the validation and test predictions of its this many best trials, stored beside the cell run
    #: (``tunelab rescore``); 0: none
    keep_predictions: Count = Field(5, ge=0, le=100)

    @field_validator("uri")
    @classmethod
    def _a_store(cls, v: Optional[str]) -> Optional[str]:
        if v is None or "://" not in v:
            return v
        scheme = v.split("://", 1)[0].split("+", 1)[0]
        if scheme not in TRACKING_SCHEMES:
            raise ValueError(
                f"unknown scheme '{scheme}' (expected sqlite:///FILE, postgresql://…, http(s)://HOST:PORT, "
                f"file:///DIR{did_you_mean(scheme, TRACKING_SCHEMES)})"
            )
        if scheme == "sqlite" and not v.startswith("sqlite:///"):
            raise ValueError("a sqlite URI has three slashes before its file: sqlite:///mlflow.db, sqlite:////abs.db")
        if scheme in ("http", "https") and not v.split("://", 1)[1].split("/", 1)[0]:
            raise ValueError(f"no host in {v!r} (expected {scheme}://HOST:PORT)")
        return v

    def resolved_uri(self) -> str:
        return self.uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI


class Study(_Strict):
    name: str = Field(pattern=SAFE_NAME)
    seed: Count = Field(0, ge=0, lt=2**31)
    datasets: list[Union[str, DatasetSpec]] = Field(min_length=1)
    models: list[Union[str, ModelSpec]] = Field(min_length=1)
    search: Search = Search()
    resources: Resources = Resources()
    tracking: Tracking = Tracking()
    spaces: dict[str, dict[str, Any]] = {}
    split: Split = Split()
    storage_path: Optional[str] = None
    max_concurrent_cells: Optional[Count] = Field(None, gt=0, le=MAX_COUNT)
    #: repeats of every dataset's train/validation/test split, each with its own split seed (seed + k)
    splits: Count = Field(1, ge=1, le=100)
    #: whose best model gets diagnostic figures: each dataset's champion, every cell, or none (importance.json: all)
    diagnostics: Literal["champions", "all", "none"] = "champions"

    @field_validator("datasets")
    @classmethod
    def _as_specs(cls, v: list) -> list:
        specs = []
        for d in v:
            d = DatasetSpec(name=d) if isinstance(d, str) else d
            if d.openml_suite is None:
                specs.append(d)
                continue
            from tunelab import openml

            try:  # a suite stands for its datasets, each with the suite entry's task
                ids = openml.suite(d.openml_suite, f"openml_suite {d.openml_suite}")
            except StudyError as e:
                raise ValueError(e.message) from None
            specs += [DatasetSpec(openml=i, task=d.task) for i in ids]
        return specs

    @field_validator("models")
    @classmethod
    def _known_models(cls, v: list) -> list:
        specs = [ModelSpec(name=m) if isinstance(m, str) else m for m in v]
        for m in specs:
            if m.name not in FAMILIES:
                raise ValueError(
                    f"unknown model family '{m.name}' (expected one of "
                    f"{', '.join(FAMILIES)}){did_you_mean(m.name, FAMILIES)}"
                )
        names = [m.name for m in specs]
        if len(set(names)) != len(names):
            raise ValueError(f"a model family is listed twice: {names}")
        return specs

    @model_validator(mode="after")
    def _spaces_for_listed_models(self) -> "Study":
        for family in self.spaces:
            if family not in [m.name for m in self.models]:
                raise ValueError(
                    f"spaces.{family}: not one of the study's models "
                    f"({', '.join(m.name for m in self.models)}){did_you_mean(family, FAMILIES)}"
                )
        names = [d.name for d in self.datasets]
        if len(set(names)) != len(names):
            raise ValueError(f"a dataset name is listed twice: {names}")
        repeats = {data_key(n, k): n for n in names for k in range(1, self.splits)}
        taken = sorted(set(names) & set(repeats))
        if taken:
            i, name = names.index(taken[0]), taken[0]
            said = f"{name!r} is what splits: {self.splits} names a repeat of {repeats[name]!r}"
            raise ValueError(f"datasets[{i}].name: {said}")
        return self

    @property
    def experiment(self) -> str:
        return self.tracking.experiment or self.name

    def storage(self) -> str:
        return self.storage_path or str(Path("tune_results").resolve())


#: the study run's artifact holding the study as it ran (``effective_study``)
EFFECTIVE_STUDY = "effective_study.yaml"


def effective_study(study: Study) -> str:
    """``study`` as it runs (after ``--set``), with its Tune storage resolved: what ``tunelab resume`` and ``sync``
    read, wherever they are run from."""
    fields = study.model_dump(mode="json", exclude_none=True, by_alias=True)
    fields["storage_path"] = study.storage()
    return "# the study as it ran (after --set), its storage resolved: what resume and sync read\n" + yaml.safe_dump(
        fields, sort_keys=False
    )


def data_key(dataset: str, split: int) -> str:
    """A dataset's name for its ``split``-th repeat: the name itself for the first, ``<name>-split<k>`` after."""
    return dataset if split == 0 else f"{dataset}-split{split}"


def apply_overrides(raw: dict, overrides: list[str], where: str) -> dict:
    """Apply ``--set a.b=value`` (value parsed as YAML) to the raw study mapping."""
    for item in overrides:
        if "=" not in item:
            raise StudyError(f"{where}: --set {item}", "expected KEY=VALUE, e.g. search.num_samples=4")
        key, value = item.split("=", 1)
        node = raw
        parts = key.split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise StudyError(f"{where}: --set {key}", f"'{p}' is not a mapping")
        node[parts[-1]] = yaml.safe_load(value)
    return raw


def _field_path(loc: tuple) -> str:
    """``("search", "scheduler")`` -> ``search.scheduler``; ``("datasets", 0)`` -> ``datasets[0]``."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _is_union_branch(part) -> bool:
    # pydantic puts the tried union member ("str", "DatasetSpec", "function-after[...]") into the location
    return isinstance(part, str) and ("[" in part or part in ("str", "DatasetSpec", "ModelSpec"))


_FIELDS: dict[str, Any] = {
    "": Study,
    "search": Search,
    "resources": Resources,
    "tracking": Tracking,
    "split": Split,
}


def _to_study_error(err: ValidationError, where: str) -> StudyError:
    errors = err.errors()
    # a mapping where a name or a mapping may stand: say what is wrong with the mapping, not that it is no name
    e = next((x for x in errors if x["type"] != "string_type"), errors[0])
    loc = tuple(p for p in e["loc"] if not _is_union_branch(p))
    field = _field_path(loc)
    msg = e["msg"].removeprefix("Value error, ")
    if e["type"] == "extra_forbidden":
        parent = ".".join(str(p) for p in loc[:-1] if isinstance(p, str))
        model = _FIELDS.get(parent)
        options = list(model.model_fields) if model else []
        if parent.startswith("datasets"):
            options = list(DatasetSpec.model_fields)
        elif parent.startswith("models"):
            options = list(ModelSpec.model_fields)
        msg = f"unknown key '{loc[-1]}'" + (f" (expected one of {', '.join(options)})" if options else "")
        msg += did_you_mean(str(loc[-1]), options)
    elif e["type"] == "missing":
        msg = "required field is missing"
    elif "input" in e and e["type"] not in ("value_error",):
        msg = f"{msg} (got {e['input']!r})"
    return StudyError(f"{where}: {field}" if field else where, msg)


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, except that a key given twice in one mapping is an error (YAML keeps the last)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: set = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                said = f"'{key}' is given twice (the second would silently replace the first)"
                raise yaml.constructor.ConstructorError(None, None, said, key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep)


def load_study(path: str | Path, overrides: list[str] | None = None) -> Study:
    """Read and validate a study file; raises StudyError naming file and field."""
    path = Path(path)
    where = str(path)
    if not path.exists():
        raise StudyError(where, "study file not found")
    try:
        raw = yaml.load(path.read_bytes().decode("utf-8"), Loader=_UniqueKeyLoader)
    except UnicodeDecodeError as e:
        raise StudyError(where, f"not UTF-8 text (byte {e.start}: {e.object[e.start : e.start + 1]!r})") from None
    except yaml.YAMLError as e:
        raise StudyError(where, f"not valid YAML: {e}") from None
    if not isinstance(raw, dict):
        raise StudyError(where, "expected a mapping with name, datasets, models, ...")
    raw = apply_overrides(raw, overrides or [], where)
    try:
        return Study.model_validate(raw)
    except ValidationError as err:
        raise _to_study_error(err, where) from None
