"""What tunelab's MLflow runs are called and tagged, and how they are found again.

Every tag name tunelab writes or reads, the names of its runs and registered models, the filter
strings of its searches and the study-run lookup live here, and nowhere else.
"""

from __future__ import annotations

from typing import Optional

from mlflow.entities import Run
from mlflow.tracking import MlflowClient

from tunelab.errors import StudyError

# --- the experiment ----------------------------------------------------------------------
#: MLflow's experiment tag for an experiment of training runs, not GenAI traces (its UI's workflow switch, on in
#: MLflow 3.17, outranks it there: ``ui_runs_path`` is the link that opens the runs)
EXPERIMENT_KIND, TRAINING_RUNS = "mlflow.experimentKind", "custom_model_development"
#: MLflow's input tag saying what a run used a dataset for
DATASET_CONTEXT = "mlflow.data.context"

# --- tags on every run: what it is (ROLE) and where it belongs ------------------------------
ROLE, STUDY, MODEL, DATASET = "tunelab.role", "tunelab.study", "tunelab.model", "tunelab.dataset"
SPLIT = "tunelab.split"  # which repeat of the dataset's split
#: values of ROLE
ROLE_STUDY, ROLE_CELL, ROLE_TRIAL, ROLE_RETIRED_TRIAL = "study", "cell", "trial", "retired_trial"
ROLE_ENSEMBLE = "ensemble"  # a dataset's ensemble across families (its run, and its registered model's alias)
STATUS, ERROR = "tunelab.status", "tunelab.error"
#: MLflow's own
PARENT, RUN_NAME, USER = "mlflow.parentRunId", "mlflow.runName", "mlflow.user"

# --- the study run ------------------------------------------------------------------------
STUDY_FILE = "tunelab.study_file"
GIT_COMMIT, GIT_DIRTY = "git.commit", "git.dirty"
CODE_SHA256 = "code.sha256"  # the code that ran: tunelab, its families, its search spaces (provenance.code_digest)
VERSION_PREFIX, HARDWARE_PREFIX, DATASET_PREFIX = "version.", "hardware.", "dataset."

# --- a cell run ---------------------------------------------------------------------------
BEST_TRIAL, BEST_STEPS, BEST_MODEL = "tunelab.best_trial", "tunelab.best_steps", "tunelab.best_model"
BEST_PREFIX = "best."  # + a parameter of the best configuration
META_PREFIX = "tunelab.data."  # + rows, columns, classes, categorical: the dataset's meta-features (warm starts)
#: a cell run: the earlier studies' cells its first trials came from; a trial run: the one its configuration came from
WARM_START = "tunelab.warm_start"
SYNCED = "tunelab.synced"

# --- a trial run --------------------------------------------------------------------------
TRIAL_ID, TRIAL_NUMBER, DEFAULT_CONFIG = "tunelab.trial_id", "tunelab.trial_number", "tunelab.default_config"
STEPS, ATTEMPTS, COMPUTE_S = "tunelab.steps", "tunelab.attempts", "tunelab.compute_s"
DEVICE, CUDA_VISIBLE_DEVICES, NODE_ID = "tunelab.device", "tunelab.cuda_visible_devices", "tunelab.node_id"
NODE_HARDWARE_PREFIX = "hardware.node."  # + host, cpus, gpus, memory_gb: the Ray node that ran the trial

#: the registered-model alias of each dataset's best family (the other versions: the family's name)
CHAMPION = "champion"


def dataset_hash(dataset: str) -> str:
    """The study run's tag holding a dataset's content hash."""
    return f"{DATASET_PREFIX}{dataset}.sha256"


def ui_runs_path(experiment_id: str) -> str:
    """The path in MLflow's UI of an experiment's runs table, in its "Model training" view (not its GenAI one)."""
    return f"/#/experiments/{experiment_id}/runs?workflowType=machine_learning"


# --- names --------------------------------------------------------------------------------
def registered_name(study: str, dataset: str) -> str:
    """The registered model of a study's dataset: one version per family, alias ``champion`` on the best."""
    return f"{study}-{dataset}"


def cell_run_name(family: str, dataset: str) -> str:
    return f"{family} · {dataset}"


def trial_run_name(cell_run: str, number: int) -> str:
    """A trial's run: its cell's name and its number in the cell (what the UI test waits for: 'knn · iris · 3')."""
    return f"{cell_run} · {number}"


# --- searches -----------------------------------------------------------------------------
def run_filter(role: str, study: Optional[str] = None, parent: Optional[str] = None) -> str:
    """MLflow's filter string for the runs of ``role``, of study ``study`` and under run ``parent`` when given."""
    clauses = [f"tags.`{ROLE}` = '{role}'"]
    if study is not None:
        clauses.append(f"tags.`{STUDY}` = '{study}'")
    if parent is not None:
        clauses.append(f"tags.`{PARENT}` = '{parent}'")
    return " and ".join(clauses)


def search_runs(
    client: MlflowClient,
    experiment_ids: list[str],
    filter_string: str,
    order_by: Optional[list[str]] = None,
    max_results: Optional[int] = None,
) -> list[Run]:
    """The runs matching ``filter_string`` (MLflow search syntax), every page (up to ``max_results``)."""
    runs, token = [], None
    while True:
        page = client.search_runs(
            experiment_ids,
            filter_string,
            max_results=min(max_results or 1000, 1000),
            order_by=order_by,
            page_token=token,
        )
        runs.extend(page)
        token = page.token
        if not token or (max_results is not None and len(runs) >= max_results):
            return runs


def latest_study_run(client: MlflowClient, study: str, experiment_ids: Optional[list[str]] = None) -> Optional[Run]:
    """The latest run of study ``study`` in ``experiment_ids`` (default: every experiment of the store)."""
    if experiment_ids is None:
        experiment_ids = [e.experiment_id for e in client.search_experiments()]
    if not experiment_ids:
        return None
    runs = client.search_runs(
        experiment_ids, run_filter(ROLE_STUDY, study=study), order_by=["attributes.start_time DESC"], max_results=1
    )
    return runs[0] if runs else None


def find_study_run(client: MlflowClient, study: str, hint: str = "") -> Run:
    """The latest run of study ``study`` in any experiment; a StudyError (ending in ``hint``) when there is none."""
    try:
        run = latest_study_run(client, study)
    except Exception as e:
        raise StudyError(
            "--uri", f"cannot read the MLflow store at {client.tracking_uri}: {type(e).__name__}: {e}"
        ) from None
    if run is None:
        raise StudyError(study, f"no run of a study named '{study}' in {client.tracking_uri}{hint}")
    return run
