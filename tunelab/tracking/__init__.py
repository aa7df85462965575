"""MLflow tracking: study run > cell runs > trial runs, written by one writer thread in batches.

- ``schema``: tag names, run and model names, searches and the study-run lookup
- ``writer``: the Tracker, the one writer of a study's runs, and its queue
- ``sink``: the one interface it writes runs through; ``client`` (MLflow's client) and ``sql`` (the SQL fast
  path into the store's tables) implement it; ``retry``: store calls retried while the store is unreachable
- ``models``: a cell's best model logged with its flavour
"""

from tunelab.tracking.models import import_flavors_early
from tunelab.tracking.schema import (
    ATTEMPTS,
    BEST_MODEL,
    BEST_PREFIX,
    BEST_STEPS,
    BEST_TRIAL,
    CHAMPION,
    COMPUTE_S,
    CUDA_VISIBLE_DEVICES,
    DATASET,
    DATASET_PREFIX,
    DEFAULT_CONFIG,
    DEVICE,
    ERROR,
    GIT_COMMIT,
    GIT_DIRTY,
    HARDWARE_PREFIX,
    MODEL,
    NODE_ID,
    PARENT,
    ROLE,
    ROLE_CELL,
    ROLE_RETIRED_TRIAL,
    ROLE_STUDY,
    ROLE_TRIAL,
    RUN_NAME,
    SPLIT,
    STATUS,
    STEPS,
    STUDY,
    STUDY_FILE,
    SYNCED,
    TRIAL_ID,
    TRIAL_NUMBER,
    USER,
    VERSION_PREFIX,
    cell_run_name,
    dataset_hash,
    find_study_run,
    latest_study_run,
    registered_name,
    run_filter,
    search_runs,
    trial_run_name,
)
from tunelab.tracking.writer import LINGER_S, Tracker

__all__ = ["ATTEMPTS", "BEST_MODEL", "BEST_PREFIX", "BEST_STEPS", "BEST_TRIAL", "CHAMPION", "COMPUTE_S",
           "CUDA_VISIBLE_DEVICES", "DATASET", "DATASET_PREFIX", "DEFAULT_CONFIG", "DEVICE", "ERROR", "GIT_COMMIT",
           "GIT_DIRTY", "HARDWARE_PREFIX", "LINGER_S", "MODEL", "NODE_ID", "PARENT", "ROLE", "ROLE_CELL",
           "ROLE_RETIRED_TRIAL", "ROLE_STUDY", "ROLE_TRIAL", "RUN_NAME", "SPLIT", "STATUS", "STEPS", "STUDY",
           "STUDY_FILE", "SYNCED", "TRIAL_ID", "TRIAL_NUMBER", "USER", "VERSION_PREFIX", "Tracker", "cell_run_name",
           "dataset_hash", "find_study_run", "import_flavors_early", "latest_study_run", "registered_name",
           "run_filter", "search_runs", "trial_run_name"]
