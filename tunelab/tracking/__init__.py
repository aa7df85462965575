"""MLflow tracking: study run > cell runs > trial runs, written by one writer thread in batches."""

from tunelab.tracking.writer import (DATASET, LINGER_S, MODEL, PARENT, ROLE, RUN_NAME, SPLIT, STATUS, STUDY, TRIAL_ID,
                                     USER, Tracker, import_flavors_early, registered_name)

__all__ = ["DATASET", "LINGER_S", "MODEL", "PARENT", "ROLE", "RUN_NAME", "SPLIT", "STATUS", "STUDY", "TRIAL_ID", "USER",
           "Tracker", "import_flavors_early", "registered_name"]
