"""The driver: plan a study's cells, run one Tuner per cell side by side, track everything in MLflow."""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import signal
import sys
import threading
import traceback
import uuid
import zlib
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # keep Tune's own console tables out of ours

import pandas as pd
import ray
from ray import tune
from ray.tune.logger import JsonLoggerCallback
from ray.util.placement_group import placement_group, remove_placement_group
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from trainables import FAMILIES
from trainables.base import (DEFAULT_METRIC, METRIC_MODES, TASK_METRICS, BestModels, Context, Data, on_test_split,
                              run_trial)
from tunelab import diagnostics, provenance
from tunelab.datasets import load_dataset
from tunelab.diagnostics import diagnose, refit_with_diagnostics
from tunelab.errors import StudyError
from tunelab.search import CONTINUOUS_ONLY, PAUSING, SCHEDULERS, SEARCHERS
from tunelab.spaces import Space, load_space
from tunelab.study import Resources, Study, data_key
from tunelab.tracking import DATASET, MODEL, ROLE, SPLIT, STATUS, STUDY, TRIAL_ID, Tracker, import_flavors_early

log = logging.getLogger("tunelab")
STUDY_KEY = "study"
#: Tune's own settings while a study runs (a user's environment wins). Experiment state is saved on Tune's
#: "auto" period (every 10 s or more, at most ~5% of the time): a driver killed without warning re-runs at
#: most the trials that finished since, into their same MLflow runs. Tune's CSV and TensorBoard files are
#: not written (MLflow holds the metrics); its result.json stays, for `tunelab sync`.
TUNE_ENV = {"TUNE_GLOBAL_CHECKPOINT_S": "auto", "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1"}
CPU_HOLD_WAIT_S = 600  # the longest the driver waits for Ray to grant it CPUs to retrain a best configuration on
#: how long the end of a study waits for an unreachable MLflow store before leaving the rest to `tunelab sync`
FINAL_FLUSH_TIMEOUT_S = float(os.environ.get("TUNELAB_FINAL_FLUSH_TIMEOUT_S", "120"))
FINISHED, FAILED, INTERRUPTED = "FINISHED", "FAILED", "INTERRUPTED"
TUNE_DONE = ("TERMINATED", "ERROR")
LAST_KEYS = ("step", "device", "cuda_visible_devices", "time_total_s", "node_id")  # what a trial's end needs


@dataclass
class Cell:
    """One (model family, dataset) pair: one Tune experiment, one MLflow cell run."""

    family: str
    dataset: str
    task: str
    space: Space
    resources: Resources
    metric: str
    seed: int
    split: int = 0  # which repeat of the dataset's split (``dataset`` is then ``<name>-split<k>``)
    source: str = ""  # the dataset's own name; ``dataset`` when empty

    @property
    def dataset_name(self) -> str:
        return self.source or self.dataset

    @property
    def key(self) -> str:
        return f"{self.family}.{self.dataset}"

    @property
    def label(self) -> str:
        return f"{self.family} · {self.dataset}"

    @property
    def mode(self) -> str:
        return METRIC_MODES[self.metric]


@dataclass
class Plan:
    """A validated study: its datasets loaded and its cells laid out. Nothing has run yet."""

    study: Study
    source: Path
    datasets: dict[str, Data]
    cells: list[Cell]
    skipped: list[str] = field(default_factory=list)


@dataclass
class CellResult:
    cell: Cell
    status: str = "FINISHED"
    trials: int = 0
    early_stopped: int = 0
    failed: int = 0
    compute_s: float = 0.0
    best_val: Optional[float] = None
    test: dict = field(default_factory=dict)
    best_config: dict = field(default_factory=dict)
    model_version: Optional[str] = None
    error: str = ""


def plan_study(study: Study, source: Path) -> Plan:
    """Load every dataset and every search space; any problem is a StudyError. Starts nothing."""
    base_dir = source.parent
    datasets: dict[str, Data] = {}
    split_of: dict[str, int] = {}  # data key -> which repeat of its dataset's split
    for i, spec in enumerate(study.datasets):
        for k in range(study.splits):
            split_of[data_key(spec.name, k)] = k
            datasets[data_key(spec.name, k)] = load_dataset(spec, study.split, study.seed + k,
                                                            f"{source}: datasets[{i}] ({spec.name})", base_dir)
    cells, skipped = [], []
    for m in study.models:
        family = FAMILIES[m.name]
        supported = [d for d in datasets.values() if d.task in family.tasks]
        if not supported:
            tasks = sorted({d.task for d in datasets.values()})
            raise StudyError(f"{source}: models", f"{m.name} supports {'/'.join(sorted(family.tasks))} only, "
                                                  f"but every dataset is {'/'.join(tasks)}")
        for key, d in datasets.items():
            if d.task not in family.tasks:
                if split_of[key] == 0:
                    skipped.append(f"{m.name} · {d.name} (no {d.task})")
                continue
            metric = study.search.metric or DEFAULT_METRIC[d.task]
            if metric not in TASK_METRICS[d.task]:
                raise StudyError(f"{source}: search.metric", f"{metric} does not fit {d.task} dataset '{d.name}' "
                                                             f"(expected one of {', '.join(TASK_METRICS[d.task])})")
            space = load_space(m.name, d.task, study.spaces.get(m.name), f"{source}: spaces.{m.name}",
                               with_defaults=study.search.default_first)
            if not family.iterative:
                space.steps = space.per_step = 1
            elif study.search.scheduler == "asha" and study.search.grace_period > space.steps:
                raise StudyError(f"{source}: search.grace_period",
                                 f"{study.search.grace_period} is more than the {space.steps} budget steps of "
                                 f"{m.name} (ASHA could never stop a trial early; lower it or raise the budget)")
            seed = zlib.crc32(f"{study.seed}/{m.name}/{key}".encode()) % (2**31)
            cells.append(Cell(m.name, key, d.task, space, m.resources(study.resources), metric, seed,
                              split=split_of[key], source=d.name))
    return Plan(study, source, datasets, cells, skipped)


class Progress:
    """One line per finished trial (trials done / planned, best so far), not a wall of Ray logs."""

    def __init__(self, plan: Plan, enabled: bool = True, stream: Any = None):
        self.enabled, self.stream = enabled, stream or sys.stdout
        self.planned = plan.study.search.num_samples
        self.done: dict[str, int] = {c.key: 0 for c in plan.cells}
        self.best: dict[str, Optional[float]] = {c.key: None for c in plan.cells}
        self._lock = threading.Lock()

    def trial_done(self, cell: Cell, value: Optional[float], outcome: str, quiet: bool = False) -> None:
        with self._lock:
            self.done[cell.key] += 1
            best = self.best[cell.key]
            if value is not None and (best is None or (value < best if cell.mode == "min" else value > best)):
                self.best[cell.key] = best = value
            cells_done = sum(1 for k, n in self.done.items() if n >= self.planned)
            if self.enabled and not quiet:
                shown = "—" if best is None else f"{best:.4f}"
                print(f"  [{self.done[cell.key]:>3}/{self.planned}] {cell.label:<40} best {cell.metric} {shown:<8}"
                      f" ({outcome}; cells done {cells_done}/{len(self.done)})", file=self.stream, flush=True)


class TrialLogger(tune.Callback):
    """Mirrors one cell's trials into MLflow runs nested under the cell run."""

    def __init__(self, tracker: Tracker, cell: Cell, study: str, encoded: bool, progress: Progress,
                 interrupted: Optional[threading.Event] = None):
        self.tracker, self.cell, self.study, self.encoded, self.progress = tracker, cell, study, encoded, progress
        self.interrupted = interrupted or threading.Event()
        self.killed: set[str] = set()
        self.numbers: dict[str, int] = {}
        self.last: dict[str, dict] = {}
        self.ended: set[str] = set()
        self.earlier: dict[str, str] = {}  # trial id -> run id, from a run of this study that was cut off

    def adopt(self, trial_runs: list) -> None:
        """Take over the trial runs an interrupted run of this cell left in the store."""
        for run in trial_runs:
            tid = run.data.tags[TRIAL_ID]
            self.earlier[tid] = run.info.run_id
            self.numbers[tid] = int(run.data.tags.get("tunelab.trial_number", len(self.numbers) + 1))
            if run.info.status in ("FINISHED", "FAILED"):
                self.ended.add(tid)
                self.progress.trial_done(self.cell, run.data.metrics.get(self.cell.metric),
                                         run.data.tags.get(STATUS, "completed"), quiet=True)

    def kill_open(self) -> None:
        """End the runs of trials cut off by an interrupt as KILLED (``resume`` reopens them)."""
        for tid in self.numbers:
            if tid not in self.ended and tid not in self.killed and self.tracker.has(self._key_of(tid)):
                self.killed.add(tid)
                self.tracker.end_run(self._key_of(tid), "KILLED", {STATUS: "interrupted"})

    def __getstate__(self) -> dict:
        # Tune pickles its callbacks with the experiment state; the tracker and its thread stay behind.
        return {k: v for k, v in self.__dict__.items() if k not in ("tracker", "progress", "interrupted")}

    def _key(self, trial) -> str:
        return self._key_of(trial.trial_id)

    def _key_of(self, trial_id: str) -> str:
        return f"{self.cell.key}/{trial_id}"

    def on_trial_start(self, iteration, trials, trial, **info):
        if trial.trial_id in self.earlier:  # cut off earlier: its run goes on
            self.tracker.adopt(self._key(trial), self.earlier.pop(trial.trial_id), reopen=True)
            self.ended.discard(trial.trial_id)
            return
        if trial.trial_id in self.numbers:  # resumed after a pause (hyperband)
            return
        n = self.numbers[trial.trial_id] = _creation_number(trial.trial_id, fallback=len(self.numbers) + 1)
        params = self.cell.space.decode(trial.config, self.encoded)
        tags = {ROLE: "trial", MODEL: self.cell.family, DATASET: self.cell.dataset_name, SPLIT: self.cell.split,
                STUDY: self.study, TRIAL_ID: trial.trial_id, "tunelab.trial_number": n}
        if self.cell.space.defaults and all(params.get(k) == v for k, v in self.cell.space.defaults.items()):
            tags["tunelab.default_config"] = "true"
        self.tracker.start_run(self._key(trial), f"{self.cell.label} · {n}", tags, parent=self.cell.key,
                               params=params)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        metrics = {k: result[k] for k in TASK_METRICS[self.cell.task] if k in result}
        self.tracker.log_metrics(self._key(trial), metrics, step=int(result.get("step", result["training_iteration"])),
                                 timestamp_ms=int(1000 * result.get("timestamp", 0)) or None)
        kept = {k: result[k] for k in (*LAST_KEYS, self.cell.metric) if k in result}
        self.last[trial.trial_id] = kept  # not the whole result: thousands of trials would pile up

    def on_trial_complete(self, iteration, trials, trial, **info):
        if trial.trial_id in self.ended or trial.trial_id in self.killed:
            return
        if self.interrupted.is_set():  # Tune stopping running trials after Ctrl-C: they resume later
            self.killed.add(trial.trial_id)
            self.tracker.end_run(self._key(trial), "KILLED", {STATUS: "interrupted"})
            return
        self.ended.add(trial.trial_id)
        last = self.last.pop(trial.trial_id, {})
        steps = int(last.get("step", 0))
        outcome = "early_stopped" if steps < self.cell.space.steps else "completed"
        self.tracker.end_run(self._key(trial), "FINISHED", {
            STATUS: outcome, "tunelab.steps": steps, "tunelab.attempts": trial.num_failures + 1,
            "tunelab.compute_s": round(float(last.get("time_total_s", 0.0)), 4),
            "tunelab.device": last.get("device", ""),
            "tunelab.cuda_visible_devices": last.get("cuda_visible_devices", ""),
            "tunelab.node_id": last.get("node_id", "")})
        self.progress.trial_done(self.cell, last.get(self.cell.metric), outcome)

    def on_trial_error(self, iteration, trials, trial, **info):
        if trial.trial_id in self.ended:
            return
        self.ended.add(trial.trial_id)
        text = _trial_error_text(trial)
        message = next((line for line in reversed(text.strip().splitlines()) if "Error" in line), text.strip()[-500:])
        self.tracker.log_text(self._key(trial), text, "error.txt")
        self.tracker.end_run(self._key(trial), "FAILED", {STATUS: "failed", "tunelab.error": message,
                                                          "tunelab.attempts": trial.num_failures})
        self.progress.trial_done(self.cell, None, "failed")


def _creation_number(trial_id: str, fallback: int) -> int:
    """1 for the first trial created, ...: the random searcher's trial ids end in their creation index
    (``ab12c_00003``); a model-based searcher's are 8 random hex digits (``9d4042f5``, or ``97424841``), which
    number their trials by ``fallback``."""
    _, underscore, suffix = trial_id.rpartition("_")
    return int(suffix) + 1 if underscore and suffix.isdigit() else fallback


def _trial_error_text(trial) -> str:
    """The trial's traceback: Tune writes it to the trial's local directory before storage sees it."""
    path = trial.error_file
    if path and Path(path).exists():
        return Path(path).read_text()
    return str(trial.get_error() or "unknown error")


@contextlib.contextmanager
def _interruptible_tune(event: threading.Event):
    """Let Ctrl-C stop Tuners that run in our cell threads the way Tune stops one in the main thread.

    Tune installs its SIGINT handler only when ``fit`` runs in the main thread; from a thread it
    never sees the interrupt. Handing Tune our event instead gives each cell Tune's graceful stop:
    the loop ends, the experiment state is saved with unfinished trials still unfinished, so that
    ``Tuner.restore`` picks them up again.
    """
    import ray.tune.tune as tune_module

    original = tune_module._setup_signal_catching
    tune_module._setup_signal_catching = lambda: event
    try:
        yield
    finally:
        tune_module._setup_signal_catching = original


@contextlib.contextmanager
def _trainables_cached():
    """Answer Tune's lookups of our trainables from this process while the cells run.

    Tune fetches a trial's trainable from the GCS key-value store three times as it creates the
    trial (a round trip each, about 7 ms a trial on a local Ray; more across a network), and
    unpickles a fresh copy each time. Ours are registered before the cells start and stay the same.
    """
    from ray.tune import registry

    reg, cache = registry._global_registry, {}
    get, contains = reg.get, reg.contains
    before = {k: reg.__dict__[k] for k in ("get", "contains") if k in reg.__dict__}  # a study run inside another

    def cached_get(category: str, key: str) -> Any:
        if category != registry.TRAINABLE_CLASS:
            return get(category, key)
        if key not in cache:
            cache[key] = get(category, key)
        return cache[key]

    reg.get = cached_get
    reg.contains = lambda category, key: (category == registry.TRAINABLE_CLASS and key in cache) or contains(category, key)
    try:
        yield
    finally:
        for k in ("get", "contains"):
            reg.__dict__.pop(k, None)
        reg.__dict__.update(before)


@contextlib.contextmanager
def _actors_not_stolen():
    """Keep Tune from giving a cached actor to a trial whose own actor already holds its CPUs and is starting.

    Tune does, and removes the starting actor. Where an actor takes longer to start than a trial
    takes to run (short trials, a loaded machine), that repeats for every trial: the first actor to
    start runs them all one after another while a second slot's actors are started and removed
    (100 trials of 0.5 s on 2 CPUs: 59 s instead of 33-34 s). The cached actor goes to the next
    trial instead, which has no actor yet. As before: a trial still waiting for resources takes a
    cached actor, and so does any trial once the searcher has no more to suggest.
    """
    from ray.tune.execution.tune_controller import TuneController

    reuse = TuneController.__dict__["_maybe_reuse_cached_actor"]

    def maybe_reuse(controller, trial) -> bool:
        own = controller._trial_to_actor.get(trial)
        if own is not None and trial not in controller._resetting_trials and not controller._search_alg.is_finished() \
                and controller._actor_manager.is_actor_started(own):
            return False
        return reuse(controller, trial)

    TuneController._maybe_reuse_cached_actor = maybe_reuse
    try:
        yield
    finally:
        TuneController._maybe_reuse_cached_actor = reuse


@contextlib.contextmanager
def _env(defaults: dict[str, str]):
    """Environment variables set to ``defaults`` (those the user did not set) while the block runs."""
    added = [k for k in defaults if k not in os.environ]
    os.environ.update({k: defaults[k] for k in added})
    try:
        yield
    finally:
        for k in added:
            os.environ.pop(k, None)


def reconcile(logger: "TrialLogger", trials: list, history: Optional[dict] = None) -> int:
    """Bring into the store every trial Tune finished while nobody logged it; returns how many.

    ``history`` (trial id -> Tune's progress table) replays every reported step; without it the
    trial's last result is logged. Metrics carry Tune's own timestamps, so a step already in the
    store is not stored twice.
    """
    n = 0
    for trial in trials:
        if trial.status not in TUNE_DONE or trial.trial_id in logger.ended:
            continue
        logger.on_trial_start(0, [], trial)
        rows = history.get(trial.trial_id) if history else None
        results = rows.to_dict("records") if rows is not None and len(rows) else [trial.last_result]
        for result in results:
            if result and "training_iteration" in result:
                logger.on_trial_result(0, [], trial, result)
        if trial.status == "ERROR":
            logger.on_trial_error(0, [], trial)
        else:
            logger.on_trial_complete(0, [], trial)
        n += 1
    return n


def start_ray() -> None:
    """Join the cluster in RAY_ADDRESS, else start an embedded local Ray.

    ``"local"``, not ``None``: a bare ``ray.init()`` would join any ``ray start`` cluster it finds on
    this machine, which must happen only when the user asks for it.
    """
    if ray.is_initialized():
        return
    address = os.environ.get("RAY_ADDRESS")
    logging.getLogger("ray.tune").setLevel(logging.ERROR)
    ray.init(address=address or "local", log_to_driver=False, logging_level=logging.WARNING,
             include_dashboard=None if address else False, configure_logging=True)


@contextlib.contextmanager
def _cpus_held(cpus: float):
    """Reserve ``cpus`` in Ray (a placement group nothing runs in) while the driver computes with them."""
    pg = placement_group([{"CPU": cpus}])
    try:
        pg.wait(timeout_seconds=CPU_HOLD_WAIT_S)  # not granted in time: compute anyway rather than stall
        yield
    finally:
        remove_placement_group(pg)


def single_node_here() -> bool:
    """Whether the Ray cluster is this one machine (the driver's node is its only node)."""
    here = ray.get_runtime_context().get_node_id()
    return [n["NodeID"] for n in ray.nodes() if n["Alive"]] == [here]


def _check_gpus(plan: Plan) -> None:
    wanted = [c for c in plan.cells if c.resources.gpus_per_trial > 0]
    if wanted and ray.cluster_resources().get("GPU", 0) <= 0:
        raise StudyError(f"{plan.source}: resources.gpus_per_trial",
                         f"{wanted[0].family} asks for {wanted[0].resources.gpus_per_trial} GPU per trial, "
                         "but the Ray cluster has no GPUs (set gpus_per_trial: 0 to run on CPUs)")


class StudyRunner:
    """Runs a planned study: ``run()`` returns one CellResult per cell."""

    def __init__(self, plan: Plan, progress: bool = True, resume: bool = False):
        self.plan, self.study, self.resume = plan, plan.study, resume
        self.progress = Progress(plan, enabled=progress)
        self.tracker: Optional[Tracker] = None
        self.refs: dict[str, ray.ObjectRef] = {}
        self.interrupted = threading.Event()  # Ctrl-C: every cell checkpoints and stops
        self.earlier_cells: dict[str, Any] = {}  # cell key -> its run from the run being resumed
        self.store_complete = True
        self.local_ray = False  # Ray is this machine only: a best model that must be retrained is, in this process
        self.keeper = None  # the BestModels actor: each cell's best model as its trials trained it
        self.token = uuid.uuid4().hex[:8]  # this run's cells, as the keeper and its workers know them

    def run(self) -> list[CellResult]:
        study = self.study
        # an unreachable store fails before Ray starts; every run carries the commit (cluster jobs: the submitter's)
        self.tracker = Tracker(study.tracking.resolved_uri(), {"git.commit": provenance.git_state()["git.commit"]})
        if self.resume:
            self._find_earlier_run()  # nothing to resume, or changed data: an error before Ray starts
        import_flavors_early({FAMILIES[c.family].flavor for c in self.plan.cells})
        start_ray()
        self.local_ray = single_node_here()
        _check_gpus(self.plan)
        # on the driver's node: a worker node that dies takes only its trials, not the cells' kept models
        here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
        self.keeper = ray.remote(BestModels).options(num_cpus=0, scheduling_strategy=here).remote()
        self.tracker.open(study.experiment)  # the first write
        self.refs = {name: ray.put(data) for name, data in self.plan.datasets.items()}
        # one copy of each dataset on this node: the driver reads the object store's (arrays not copied)
        self.plan.datasets = {name: ray.get(ref) for name, ref in self.refs.items()}
        if self.resume:
            self.tracker.adopt(STUDY_KEY, self.earlier_study.info.run_id, reopen=True)
        else:
            self._start_study_run()
        for cell in self.plan.cells:  # Tune's trainable registry is not thread-safe: register up front
            tune.register_trainable(self._trainable_name(cell), self._trainable(cell))
        with _interruptible_tune(self.interrupted), _env(TUNE_ENV), _trainables_cached(), _actors_not_stolen():
            results = self._run_cells()
        ray.kill(self.keeper)
        if self.interrupted.is_set():
            self.tracker.end_run(STUDY_KEY, "KILLED")
        else:
            self._set_champions(results)
            self.tracker.end_run(STUDY_KEY, FINISHED if all(r.status == FINISHED for r in results) else FAILED)
        self.store_complete = self.tracker.close(timeout_s=FINAL_FLUSH_TIMEOUT_S)
        return results

    def _run_cells(self) -> list[CellResult]:
        """All cells side by side. The first Ctrl-C stops them at a checkpoint; a second aborts."""
        pool = ThreadPoolExecutor(self.study.max_concurrent_cells or len(self.plan.cells),
                                  thread_name_prefix="tunelab-cell")
        futures = [pool.submit(self._run_cell_safely, cell) for cell in self.plan.cells]
        with self._ctrl_c_stops_cells():
            wait(futures)
        pool.shutdown()
        return [f.result() for f in futures]

    @contextlib.contextmanager
    def _ctrl_c_stops_cells(self):
        """Our own SIGINT handler while cells run: whatever a library made of the default one, the first
        Ctrl-C sets ``interrupted`` (every cell checkpoints and stops), the second raises KeyboardInterrupt."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def on_sigint(signum, frame) -> None:
            if self.interrupted.is_set():
                raise KeyboardInterrupt
            self.interrupted.set()
            print(f"\nstopping: saving every cell's state (Ctrl-C again aborts). Resume with: tunelab resume "
                  f"{self.study.name}", file=sys.stderr, flush=True)

        previous = signal.signal(signal.SIGINT, on_sigint)
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, previous)

    # --- resume --------------------------------------------------------------------------
    def _find_earlier_run(self) -> None:
        study, where = self.study, str(self.plan.source)
        self.tracker.open(study.experiment)
        run = self.tracker.latest_study_run(study.name)
        if run is None:
            raise StudyError(where, f"nothing to resume: no run of study '{study.name}' in {self.tracker.uri} "
                                    "(start it without --resume)")
        for name, data in self.plan.datasets.items():
            recorded = run.data.tags.get(f"dataset.{name}.sha256")
            if recorded and recorded != data.content_hash:
                raise StudyError(f"{where}: datasets ({name})",
                                 f"the data changed since the study started (sha256 {data.content_hash[:12]}, "
                                 f"recorded {recorded[:12]}); resuming would mix results of two datasets")
        self.earlier_study = run
        for cell_run in self.tracker.children(run.info.run_id, "cell"):
            tags = cell_run.data.tags
            self.earlier_cells[f"{tags[MODEL]}.{data_key(tags[DATASET], int(tags.get(SPLIT, 0)))}"] = cell_run

    # --- study -------------------------------------------------------------------------
    def _start_study_run(self) -> None:
        study, source = self.study, self.plan.source
        tags = {ROLE: "study", STUDY: study.name, "tunelab.study_file": str(source.resolve()), **provenance.git_state()}
        tags.update({f"dataset.{n}.sha256": d.content_hash for n, d in self.plan.datasets.items()})
        tags.update({f"version.{k}": v for k, v in provenance.versions().items()})
        tags.update({f"hardware.{k}": v for k, v in provenance.hardware().items()})
        params = {"seed": study.seed, "searcher": study.search.searcher, "scheduler": study.search.scheduler,
                  "num_samples": study.search.num_samples, "models": ",".join(m.name for m in study.models),
                  "datasets": ",".join(self.plan.datasets), "cpus_per_trial": study.resources.cpus_per_trial,
                  "gpus_per_trial": study.resources.gpus_per_trial, "time_budget_s": study.search.time_budget_s,
                  "default_first": study.search.default_first, "splits": study.splits}
        self.tracker.start_run(STUDY_KEY, study.name, tags, params=params)
        if source.exists():
            self.tracker.log_text(STUDY_KEY, source.read_text(), "study.yaml")
        if tags.get("git.dirty") == "true":
            self.tracker.log_text(STUDY_KEY, provenance.git_diff(), "git.diff")

    def _set_champions(self, results: list[CellResult]) -> None:
        if not self.study.tracking.register_models:
            return
        by_dataset: dict[str, list[CellResult]] = {}
        for r in results:
            if r.model_version is not None and r.best_val is not None:
                by_dataset.setdefault(r.cell.dataset, []).append(r)
        for dataset, rs in by_dataset.items():
            sign = 1 if rs[0].cell.mode == "min" else -1
            best = min(rs, key=lambda r: sign * r.best_val)
            name = self._registered_name(dataset)
            self.tracker.call(self.tracker.client.set_registered_model_alias, name, "champion", best.model_version)
            self.tracker.call(self.tracker.client.update_registered_model, name,
                              f"Study '{self.study.name}' on {dataset}: each model family's best configuration, as a "
                              f"version with the family's name as alias. Alias champion: {best.cell.family}, the best "
                              f"{best.cell.metric} on validation.")

    # --- cells -------------------------------------------------------------------------
    def _trainable_name(self, cell: Cell) -> str:
        return f"tunelab-{self.study.name}-{cell.key}"

    def _registered_name(self, dataset: str) -> str:
        return f"{self.study.name}-{dataset}"

    def _context(self, cell: Cell) -> Context:
        data = self.plan.datasets[cell.dataset]
        return Context(task=cell.task, n_classes=data.n_classes, threads=max(1, int(cell.resources.cpus_per_trial)),
                       seed=self.study.seed, steps=cell.space.steps, per_step=cell.space.per_step)

    def _trainable(self, cell: Cell):
        family_cls, ctx, metric = FAMILIES[cell.family], self._context(cell), cell.metric
        keeper, kept_as = self.keeper, self._kept_as(cell)
        data_ref = [self.refs[cell.dataset]]  # a list, so Tune hands trials the reference, not a copy
        space, encoded = cell.space, self.study.search.searcher in CONTINUOUS_ONLY
        checkpoint = self.study.search.scheduler in PAUSING

        def trainable(config: dict) -> None:
            run_trial(space.decode(config, encoded), family_cls=family_cls, data_ref=data_ref, ctx=ctx,
                      metric=metric, checkpoint_every_step=checkpoint, keeper=keeper, cell=kept_as)

        res = {"cpu": cell.resources.cpus_per_trial, "gpu": cell.resources.gpus_per_trial}
        return tune.with_resources(trainable, res)

    def _kept_as(self, cell: Cell) -> str:
        return f"{self.token}/{cell.key}"

    def _run_cell_safely(self, cell: Cell) -> CellResult:
        if self.interrupted.is_set():
            return CellResult(cell, status=INTERRUPTED)
        try:
            return self._run_cell(cell)
        except Exception as e:  # one broken cell must not take the others down
            print(f"  cell {cell.label} failed: {type(e).__name__}: {e} (traceback in its run's error.txt)",
                  file=sys.stderr, flush=True)
            if self.tracker.has(cell.key):
                self.tracker.log_text(cell.key, traceback.format_exc(), "error.txt")
                self.tracker.end_run(cell.key, FAILED, {"tunelab.error": f"{type(e).__name__}: {e}"})
            return CellResult(cell, status=FAILED, error=f"{type(e).__name__}: {e}")

    def _experiment_path(self, cell: Cell) -> str:
        return f"{self.study.storage().rstrip('/')}/{self.study.name}/{cell.key}"

    def _tuner(self, cell: Cell, logger: TrialLogger, earlier) -> tune.Tuner:
        """A new Tuner for the cell, or, resuming, the cell's Tuner restored from Tune's storage."""
        study, s = self.study, self.study.search
        encoded = s.searcher in CONTINUOUS_ONLY
        param_space = cell.space.to_tune(continuous_only=encoded)
        path = self._experiment_path(cell)
        if earlier is not None:
            trial_runs = self.tracker.children(earlier.info.run_id, "trial")
            if tune.Tuner.can_restore(path):
                logger.adopt(trial_runs)
                tuner = tune.Tuner.restore(path, trainable=self._trainable_name(cell), resume_unfinished=True,
                                           resume_errored=False, param_space=param_space)
                # the restored RunConfig holds an unpickled copy of the logger, without its tracker
                tuner._local_tuner.get_run_config().callbacks = [logger, JsonLoggerCallback()]
                return tuner
            for run in trial_runs:  # cut off before Tune saved any state: those trials start again
                self.tracker.call(self.tracker.client.delete_run, run.info.run_id)
        return tune.Tuner(
            self._trainable_name(cell),
            param_space=param_space,
            tune_config=tune.TuneConfig(
                metric=cell.metric, mode=cell.mode, num_samples=s.num_samples,
                max_concurrent_trials=None if s.searcher == "random" else s.max_concurrent_trials,
                search_alg=SEARCHERS[s.searcher](cell.seed, s.max_concurrent_trials,
                                                 [cell.space.default_point(encoded)] if cell.space.defaults else [],
                                                 s.startup_trials),
                scheduler=SCHEDULERS[s.scheduler](cell.space.steps, s.grace_period, s.reduction_factor),
                time_budget_s=s.time_budget_s, reuse_actors=True),  # no new worker process per trial
            run_config=tune.RunConfig(
                name=f"{study.name}/{cell.key}", storage_path=study.storage(), verbose=0,
                callbacks=[logger, JsonLoggerCallback()],
                failure_config=tune.FailureConfig(max_failures=s.max_failures),
                checkpoint_config=tune.CheckpointConfig(num_to_keep=1)),
        )

    def _run_cell(self, cell: Cell) -> CellResult:
        study, s = self.study, self.study.search
        earlier = self.earlier_cells.get(cell.key)
        if earlier is not None and earlier.info.status == FINISHED:
            return self._result_from_store(cell, earlier)
        if earlier is not None:
            self.tracker.adopt(cell.key, earlier.info.run_id, reopen=True)
        else:
            self._start_cell_run(cell)
        logger = TrialLogger(self.tracker, cell, study.name, s.searcher in CONTINUOUS_ONLY, self.progress,
                             self.interrupted)
        grid = self._tuner(cell, logger, earlier).fit()
        trials = grid._experiment_analysis.trials  # Tune's own record of every trial and its state
        if self.interrupted.is_set() and (logger.killed or len(logger.ended) < s.num_samples):
            logger.kill_open()
            self.tracker.end_run(cell.key, "KILLED", {STATUS: "interrupted"})
            return CellResult(cell, status=INTERRUPTED)
        reconcile(logger, trials)  # trials that ended while no driver was watching
        result = self._summarise(cell, grid, logger)
        if result.best_val is None:
            self.tracker.end_run(cell.key, FAILED, {"tunelab.error": "every trial failed"})
            result.status = FAILED
            return result
        out = self._best_model(cell, grid, result)
        best = result.best_config
        logged = self._log_best_model(cell, out["model"])  # the writer logs it while the figures render
        figures = diagnostics.figures(out["diagnostics"], cell.label)
        result.test = out["test"]
        self.tracker.log_files(cell.key, figures, "diagnostics")
        summary = {f"best_{cell.metric}": result.best_val, **out["test"], "trials": result.trials,
                   "trials_early_stopped": result.early_stopped, "trials_failed": result.failed,
                   "compute_seconds": result.compute_s}
        self.tracker.log_metrics(cell.key, summary, step=0)
        self.tracker.set_tags(cell.key, {"tunelab.best_trial": best["trial_id"], "tunelab.best_steps": best["steps"],
                                         "tunelab.best_model": out["source"],
                                         **{f"best.{k}": v for k, v in best["config"].items()}})
        if logged is not None:
            result.model_version = str(logged.result().registered_model_version)
            self.tracker.call(self.tracker.client.set_registered_model_alias, self._registered_name(cell.dataset),
                              cell.family, result.model_version)
            test_metric = on_test_split(cell.metric)
            self.tracker.call(self.tracker.client.update_model_version, self._registered_name(cell.dataset),
                              result.model_version, f"{cell.label}: {cell.metric} {result.best_val:.4g}, "
                                                    f"{test_metric} {result.test[test_metric]:.4g}")
        self.tracker.end_run(cell.key, FINISHED)
        return result

    def _best_model(self, cell: Cell, grid, result: CellResult) -> dict:
        """The cell's best model with its test scores and diagnostics; ``result`` names the best trial and step.

        The model the best trial reported, as it kept it (``source`` "trial"): the best score of any
        trial at any step. A trial that failed later, a best that finished before an interrupted run
        was resumed, or a keeper that died, is retrained from its configuration instead (``source`` "retrained").
        """
        try:
            kept = ray.get(self.keeper.take.remote(self._kept_as(cell)))
        except ray.exceptions.RayError as e:  # the keeper's process died: retrain, as for any lost model
            log.warning("cell %s: the kept best model is lost (%s); retraining it", cell.label, type(e).__name__)
            kept = None
        sign = 1 if cell.mode == "min" else -1
        configs = {(r.metrics or {}).get("trial_id"): r.config for r in grid if r.error is None}
        family, ctx, data = FAMILIES[cell.family], self._context(cell), self.plan.datasets[cell.dataset]
        if kept is not None and kept[1] in configs and sign * kept[0] <= sign * result.best_val:
            value, trial_id, steps, curve, blob = kept
            result.best_val = value
            result.best_config = {"config": cell.space.decode(configs[trial_id], self.study.search.searcher in
                                                              CONTINUOUS_ONLY), "steps": steps, "trial_id": trial_id}
            return {**diagnose(family, data, pickle.loads(blob), ctx, cell.metric, curve), "source": "trial"}
        best = result.best_config
        args = (family, best["config"], ctx, best["steps"], cell.metric)
        # on this machine without a GPU: retrain in the driver (data in memory, family imported, no fresh worker),
        # the cell's CPUs borrowed from Ray meanwhile so that other cells' trials do not share them
        if self.local_ray and not cell.resources.gpus_per_trial:
            with _cpus_held(cell.resources.cpus_per_trial):
                out = refit_with_diagnostics(family, data, *args[1:], in_ray_worker=False)
        else:  # where Ray finds the cell's resources (a GPU, a cluster node)
            out = ray.get(ray.remote(refit_with_diagnostics).options(
                num_cpus=cell.resources.cpus_per_trial, num_gpus=cell.resources.gpus_per_trial).remote(
                family, self.refs[cell.dataset], *args[1:]))
        return {**out, "source": "retrained"}

    def _log_best_model(self, cell: Cell, model) -> Optional[Future]:
        """Queue the cell's retrained model for logging and registration (None: the study registers none)."""
        if not self.study.tracking.register_models:
            return None
        data = self.plan.datasets[cell.dataset]
        example = pd.DataFrame(data.X_test[:5], columns=data.feature_names)
        return self.tracker.log_model(cell.key, FAMILIES[cell.family].flavor, model, example,
                                      self._registered_name(cell.dataset))

    def _start_cell_run(self, cell: Cell) -> None:
        s = self.study.search
        tags = {ROLE: "cell", MODEL: cell.family, DATASET: cell.dataset_name, SPLIT: cell.split, STUDY: self.study.name}
        params = {"searcher": s.searcher, "scheduler": s.scheduler, "num_samples": s.num_samples,
                  "metric": cell.metric, "budget_steps": cell.space.steps, "budget_per_step": cell.space.per_step,
                  "cpus_per_trial": cell.resources.cpus_per_trial, "gpus_per_trial": cell.resources.gpus_per_trial,
                  "seed": cell.seed}
        self.tracker.start_run(cell.key, cell.label, tags, parent=STUDY_KEY, params=params)
        self.tracker.log_text(cell.key, f"# {cell.family} for {cell.task}: {Path(cell.space.source).name} with the "
                                        f"study's overrides\n{cell.space.to_yaml()}", "searchspace.yaml")

    def _result_from_store(self, cell: Cell, run) -> CellResult:
        """A cell that finished before the run being resumed was cut off: its result as the store holds it."""
        m = run.data.metrics
        r = CellResult(cell, trials=int(m.get("trials", 0)), early_stopped=int(m.get("trials_early_stopped", 0)),
                       failed=int(m.get("trials_failed", 0)), compute_s=m.get("compute_seconds", 0.0),
                       best_val=m.get(f"best_{cell.metric}"), test={k: v for k, v in m.items() if k.startswith("test_")})
        if self.study.tracking.register_models:
            with contextlib.suppress(Exception):  # no alias: the model was never registered
                mv = self.tracker.client.get_model_version_by_alias(self._registered_name(cell.dataset), cell.family)
                r.model_version = mv.version if mv.run_id == run.info.run_id else None
        self.progress.done[cell.key] = r.trials
        return r

    def _summarise(self, cell: Cell, grid, logger: TrialLogger) -> CellResult:
        return self._count(cell, [(res.metrics or {}, res.error is not None, res.config) for res in grid])

    def _count(self, cell: Cell, trials: list[tuple[dict, bool, dict]]) -> CellResult:
        """Trial counts, compute and the best trial from (last result, errored, config) per trial."""
        r = CellResult(cell)
        sign = 1 if cell.mode == "min" else -1
        encoded = self.study.search.searcher in CONTINUOUS_ONLY
        best_key = None
        for metrics, errored, config in trials:
            r.trials += 1
            r.compute_s += float(metrics.get("time_total_s", 0.0))
            if errored:
                r.failed += 1
                continue
            value, steps = metrics.get(cell.metric), int(metrics.get("step", 0))
            if steps < cell.space.steps:
                r.early_stopped += 1
            if value is None:
                continue
            if best_key is None or sign * value < best_key:
                best_key, r.best_val = sign * value, value
                r.best_config = {"config": cell.space.decode(config, encoded), "steps": steps,
                                 "trial_id": metrics.get("trial_id", "")}
        return r


def run_study(plan: Plan, progress: bool = True, resume: bool = False) -> list[CellResult]:
    """Run (or, with ``resume``, continue) a planned study."""
    return StudyRunner(plan, progress, resume).run()


def sync_study(plan: Plan) -> dict[str, int]:
    """Make the MLflow store hold what Tune's storage holds: every trial run, every step, every status.

    For a store that was unreachable during part of a study (or a driver killed and never resumed).
    Returns, per cell, how many trial runs were written. Cells Tune finished get their summary
    (best validation score, trial counts) but no retrained model: ``tunelab resume`` does that.
    """
    runner = StudyRunner(plan, progress=False, resume=True)
    tracker = runner.tracker = Tracker(plan.study.tracking.resolved_uri())
    runner._find_earlier_run()
    tracker.adopt(STUDY_KEY, runner.earlier_study.info.run_id)
    written: dict[str, int] = {}
    finished_cells = len(plan.cells)
    for cell in plan.cells:
        path = runner._experiment_path(cell)
        if not tune.Tuner.can_restore(path):
            finished_cells -= 1
            continue
        analysis = tune.ExperimentAnalysis(path)
        earlier = runner.earlier_cells.get(cell.key)
        if earlier is None:
            runner._start_cell_run(cell)
        else:
            tracker.adopt(cell.key, earlier.info.run_id)
        logger = TrialLogger(tracker, cell, plan.study.name, plan.study.search.searcher in CONTINUOUS_ONLY,
                             runner.progress)
        if earlier is not None:
            logger.adopt(tracker.children(earlier.info.run_id, "trial"))
        written[cell.key] = reconcile(logger, analysis.trials, analysis.trial_dataframes)
        done = all(t.status in TUNE_DONE for t in analysis.trials)
        if done and (earlier is None or earlier.info.status != FINISHED):
            r = runner._count(cell, [(t.last_result, t.status == "ERROR", t.config) for t in analysis.trials])
            if r.best_val is not None:
                tracker.log_metrics(cell.key, {f"best_{cell.metric}": r.best_val, "trials": r.trials,
                                               "trials_early_stopped": r.early_stopped, "trials_failed": r.failed,
                                               "compute_seconds": r.compute_s}, step=0)
            tracker.end_run(cell.key, FINISHED if r.best_val is not None else FAILED, {"tunelab.synced": "true"})
        finished_cells -= 0 if done else 1  # a cell cut off mid-way waits for `tunelab resume`
    if finished_cells == len(plan.cells) and runner.earlier_study.info.status in ("RUNNING", "KILLED"):
        tracker.end_run(STUDY_KEY, FINISHED)
    tracker.close()
    return written


def leaderboard(results: list[CellResult]) -> str:
    """Per dataset, families ranked by validation score, with the test score of the selected config."""
    lines = []
    for dataset in dict.fromkeys(r.cell.dataset for r in results):
        rows = [r for r in results if r.cell.dataset == dataset]
        metric = rows[0].cell.metric
        test_metric = on_test_split(metric)
        sign = 1 if rows[0].cell.mode == "min" else -1
        rows.sort(key=lambda r: (r.best_val is None, sign * (r.best_val or 0)))
        lines.append(f"\n{dataset} (ranked by {metric}; test = score of the selected configuration)")
        lines.append(f"  {'family':<24}{metric:>14}{test_metric:>16}{'trials':>8}{'early':>7}{'failed':>8}{'compute s':>11}")
        for r in rows:
            val = "—" if r.best_val is None else f"{r.best_val:.4f}"
            test = "—" if test_metric not in r.test else f"{r.test[test_metric]:.4f}"
            lines.append(f"  {r.cell.family:<24}{val:>14}{test:>16}{r.trials:>8}{r.early_stopped:>7}{r.failed:>8}"
                         f"{r.compute_s:>11.1f}")
    return "\n".join(lines)
