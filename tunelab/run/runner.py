"""Run a planned study: start Ray and the store, run the study's one Tune experiment, name the champions."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import uuid
from typing import Any, Iterator, Optional

os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # keep Tune's own console tables out of ours

import ray
from ray import tune
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from trainables import FAMILIES
from trainables.trial import BestModels
from tunelab import compat, provenance
from tunelab.errors import StudyError
from tunelab.run import experiment, resources, resume
from tunelab.run.cell_end import FAILED, FINISHED, INTERRUPTED, STUDY_KEY, CellResult, CellRuns
from tunelab.run.console import Progress
from tunelab.run.driver_lock import driver_lock
from tunelab.run.ensemble_end import register_ensembles
from tunelab.run.plan import Plan
from tunelab.run.preflight import preflight
from tunelab.run.session import Session
from tunelab.run.trial_runs import TrialRuns
from tunelab.search import CONTINUOUS_ONLY
from tunelab.study import EFFECTIVE_STUDY, effective_study
from tunelab.tracking import (
    CHAMPION,
    CODE_SHA256,
    GIT_COMMIT,
    GIT_DIRTY,
    HARDWARE_PREFIX,
    ROLE,
    ROLE_ENSEMBLE,
    ROLE_STUDY,
    STUDY,
    STUDY_FILE,
    VERSION_PREFIX,
    Tracker,
    dataset_hash,
    import_flavors_early,
    registered_name,
)

log = logging.getLogger("tunelab")
#: Tune's own settings while a study runs (a user's environment wins). Experiment state is saved on Tune's
#: "auto" period (every 10 s or more, at most ~5% of the time): a driver killed without warning re-runs at
#: most the trials that finished since, into their same MLflow runs. Tune's CSV and TensorBoard files are
#: not written (MLflow holds the metrics); its result.json stays, for `tunelab sync`.
TUNE_ENV = {"TUNE_GLOBAL_CHECKPOINT_S": "auto", "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1"}
#: how long the end of a study waits for an unreachable MLflow store before leaving the rest to `tunelab sync`
FINAL_FLUSH_TIMEOUT_S = float(os.environ.get("TUNELAB_FINAL_FLUSH_TIMEOUT_S", "120"))
#: with search.trial_timeout_s: how long a stopped trial's worker has to end before it is killed
TRIAL_STOP_GRACE_S = 5


def ray_address() -> Optional[str]:
    """RAY_ADDRESS, when it is one a driver can join (``ray://HOST:10001``, ``HOST:PORT``, ``auto``)."""
    address = os.environ.get("RAY_ADDRESS")
    if address and address.startswith(("http://", "https://")):
        host = address.split("://", 1)[1].split(":", 1)[0].split("/", 1)[0]
        raise StudyError(
            "RAY_ADDRESS",
            f"{address} is the address of Ray's job API (for `ray job submit`, `make submit`); a driver joins "
            f"a cluster at ray://{host}:10001 or at its GCS, {host}:6379 (set RAY_ADDRESS to one of those, or unset "
            "it for a local Ray)",
        )
    return address


def start_ray() -> None:
    """Join the cluster in RAY_ADDRESS, else start an embedded local Ray.

    ``"local"``, not ``None``: a bare ``ray.init()`` would join any ``ray start`` cluster it finds on
    this machine, which must happen only when the user asks for it.
    """
    if ray.is_initialized():
        return
    address = ray_address()
    logging.getLogger("ray.tune").setLevel(logging.ERROR)
    # but never Tune's word that no node can hold a trial (on an autoscaling cluster that tunelab does not check)
    logging.getLogger("ray.tune.execution.insufficient_resources_manager").setLevel(logging.WARNING)
    ray.init(
        address=address or "local",
        log_to_driver=False,
        logging_level=logging.WARNING,
        include_dashboard=None if address else False,
        configure_logging=True,
    )


def check_gpus(plan: Plan) -> None:
    wanted = [c for c in plan.cells if c.resources.gpus_per_trial > 0]
    if wanted and ray.cluster_resources().get("GPU", 0) <= 0:
        raise StudyError(
            f"{plan.source}: resources.gpus_per_trial",
            f"{wanted[0].family} asks for {wanted[0].resources.gpus_per_trial} GPU per trial, "
            "but the Ray cluster has no GPUs (set gpus_per_trial: 0 to run on CPUs)",
        )


@contextlib.contextmanager
def _env(defaults: dict[str, str]) -> Iterator[None]:
    """Environment variables set to ``defaults`` (those the user did not set) while the block runs."""
    added = [k for k in defaults if k not in os.environ]
    os.environ.update({k: defaults[k] for k in added})
    try:
        yield
    finally:
        for k in added:
            os.environ.pop(k, None)


@contextlib.contextmanager
def _sigterm_as_sigint() -> Iterator[None]:
    """SIGTERM (what ``ray job stop`` and Kubernetes send) stops the study as Ctrl-C does: Tune saves its state,
    the runs are marked, and ``tunelab resume`` goes on."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    before = signal.signal(signal.SIGTERM, lambda *_: signal.raise_signal(signal.SIGINT))
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, before)


class StudyRunner:
    """Runs a planned study: ``run()`` returns one CellResult per cell."""

    def __init__(self, plan: Plan, progress: bool = True, resume: bool = False):
        self.plan, self.study, self.resume = plan, plan.study, resume
        self.progress = Progress(plan, enabled=progress)
        self.tracker: Optional[Tracker] = None
        self.interrupted = threading.Event()  # set when the study stopped before every cell was done
        self.store_complete = True
        self.earlier_study: Any = None
        self.earlier_cells: dict[str, Any] = {}

    def run(self) -> list[CellResult]:
        # a wrong address, a store that does not answer, storage that cannot be written, a trial bigger than this
        # machine: an error before the store is touched
        preflight(self.plan, local=ray_address() is None and not ray.is_initialized())
        # an unreachable store fails before Ray starts; every run carries the commit (cluster jobs: the submitter's)
        self.tracker = Tracker(self.study.tracking.resolved_uri(), {GIT_COMMIT: provenance.git_state()[GIT_COMMIT]})
        if self.resume:  # nothing to resume, or changed data: an error before Ray starts
            self.earlier_study, self.earlier_cells = resume.earlier_run(self.tracker, self.plan)
            resume.check_storage(self.plan, self.earlier_cells)
        with driver_lock(experiment.experiment_path(self.plan), self.study.name):
            return self._run(self.tracker)

    def _run(self, tracker: Tracker) -> list[CellResult]:
        study, plan = self.study, self.plan
        import_flavors_early({FAMILIES[c.family].flavor for c in plan.cells})
        start_ray()
        check_gpus(plan)
        resources.check_fits(plan, resources.cluster_nodes(), "in the Ray cluster")
        # on the driver's node: a worker node that dies takes only its trials, not the cells' kept models
        here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
        keeper = ray.remote(BestModels).options(num_cpus=0, scheduling_strategy=here).remote()
        tracker.open(study.experiment)  # the first write
        refs = {name: ray.put(data) for name, data in plan.datasets.items()}
        # one copy of each dataset on this node: the driver reads the object store's (arrays not copied)
        plan.datasets = {name: ray.get(ref) for name, ref in refs.items()}
        if self.resume:
            tracker.adopt(STUDY_KEY, self.earlier_study.info.run_id, reopen=True)
        else:
            self._start_study_run()
        cells = {c.key: c for c in plan.cells}
        cell_runs = CellRuns(plan, tracker, refs, keeper, uuid.uuid4().hex[:8])
        encoded = study.search.searcher in CONTINUOUS_ONLY
        trial_runs = TrialRuns(tracker, cells, study.name, encoded, self.progress, plan.warm)
        fn = experiment.trainable(plan, cell_runs, refs)
        session_key = experiment.experiment_path(plan)
        env = {**experiment_env(plan), **TUNE_ENV}
        with (
            Session(session_key, cells, tracker, trial_runs, cell_runs, self.earlier_cells) as session,
            _env(env),
            compat.trainables_cached(),
            compat.actors_not_stolen(),
        ):
            tuner = self._tuner(fn, session_key, trial_runs)
            with _sigterm_as_sigint():
                tuner.fit()
            if session.book is None:
                session.nothing_ran(tune.ExperimentAnalysis(session_key).trials)
            results = session.finish()
            cell_runs.champion_figures()
            if not any(r.status == INTERRUPTED for r in results):
                register_ensembles(plan, tracker, cell_runs, refs)
        ray.kill(keeper)
        if any(r.status == INTERRUPTED for r in results):
            self.interrupted.set()
            tracker.end_run(STUDY_KEY, "KILLED")
        else:
            self._set_champions(results)
            tracker.end_run(STUDY_KEY, FINISHED if all(r.status == FINISHED for r in results) else FAILED)
        self.store_complete = tracker.close(timeout_s=FINAL_FLUSH_TIMEOUT_S)
        return results

    def _tuner(self, fn: Any, session_key: str, trial_runs: TrialRuns) -> Any:
        """A new experiment, or, resuming, the one in Tune's storage, with the trial runs it had."""
        if self.resume:
            earlier = resume.earlier_trial_runs(self.tracker, self.earlier_cells)
            if resume.can_restore(self.plan):
                for key, runs in earlier.items():
                    trial_runs.adopt(key, runs)
                return experiment.restored_tuner(self.plan, fn)
            for runs in earlier.values():  # cut off before Tune saved any state: those trials start again
                for run in runs:  # their runs stay, retired: nothing of a store is deleted
                    trial_runs.retire(run.info.run_id)
        return experiment.new_tuner(self.plan, fn, session_key)

    def _start_study_run(self) -> None:
        study, source = self.study, self.plan.source
        tags = {ROLE: ROLE_STUDY, STUDY: study.name, STUDY_FILE: str(source.resolve()), **provenance.git_state()}
        tags.update({dataset_hash(n): d.content_hash for n, d in self.plan.datasets.items()})
        tags.update({VERSION_PREFIX + k: v for k, v in provenance.versions().items()})
        tags[CODE_SHA256] = provenance.code_digest()
        tags.update({HARDWARE_PREFIX + k: v for k, v in provenance.hardware().items()})
        params = {
            "seed": study.seed,
            "searcher": study.search.searcher,
            "scheduler": study.search.scheduler,
            "num_samples": study.search.num_samples,
            "models": ",".join(m.name for m in study.models),
            "datasets": ",".join(self.plan.datasets),
            "cpus_per_trial": study.resources.cpus_per_trial,
            "gpus_per_trial": study.resources.gpus_per_trial,
            "time_budget_s": study.search.time_budget_s,
            "default_first": study.search.default_first,
            "splits": study.splits,
            "folds": study.split.folds or 1,
        }
        if study.search.warm_start is not None:
            ws = study.search.warm_start
            params["warm_start"] = f"from {', '.join(ws.studies)} (top {ws.top})"
        self.tracker.start_run(STUDY_KEY, study.name, tags, params=params)
        if source.exists():
            self.tracker.log_text(STUDY_KEY, source.read_text(), "study.yaml")
        # what resume and sync read, from any directory: the study after --set, its Tune storage resolved
        self.tracker.log_text(STUDY_KEY, effective_study(study), EFFECTIVE_STUDY)
        if tags.get(GIT_DIRTY) == "true":
            self.tracker.log_text(STUDY_KEY, provenance.git_diff(), "git.diff")

    def _set_champions(self, results: list[CellResult]) -> None:
        if not self.study.tracking.register_models:
            return
        by_dataset: dict[str, list[CellResult]] = {}
        for r in results:
            if r.model_version is not None and r.best_val is not None:
                by_dataset.setdefault(r.cell.dataset, []).append(r)
        for dataset, rs in by_dataset.items():
            best = min(rs, key=lambda r: r.cell.sign * r.best_val)
            name = registered_name(self.study.name, dataset)
            self.tracker.call(self.tracker.client.set_registered_model_alias, name, CHAMPION, best.model_version)
            self.tracker.call(
                self.tracker.client.update_registered_model,
                name,
                f"Study '{self.study.name}' on {dataset}: each model family's best configuration, as a "
                f"version with the family's name as alias. Alias {CHAMPION}: {best.cell.family}, the "
                f"best {best.cell.metric} on validation. Alias {ROLE_ENSEMBLE} (where there is one): the "
                "families' best trials averaged, selected on validation (Caruana's greedy selection).",
            )


def experiment_env(plan: Plan) -> dict[str, str]:
    """Tune's pending-trial queue sized to the cluster (see ``experiment.max_pending_trials``); with a trial
    timeout, a stopped trial's worker that does not end within TRIAL_STOP_GRACE_S is killed (Tune: 600 s)."""
    env = {"TUNE_MAX_PENDING_TRIALS_PG": str(experiment.max_pending_trials(plan))}
    if plan.study.search.trial_timeout_s is not None:
        env["TUNE_FORCE_TRIAL_CLEANUP_S"] = str(TRIAL_STOP_GRACE_S)
    return env


def run_study(plan: Plan, progress: bool = True, resume: bool = False) -> list[CellResult]:
    """Run (or, with ``resume``, continue) a planned study."""
    return StudyRunner(plan, progress, resume).run()
