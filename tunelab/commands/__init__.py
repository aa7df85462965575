"""What the ``tunelab`` subcommands do (``tunelab.cli`` parses their arguments): ``study`` runs studies,
``results`` reads them from the store."""

from __future__ import annotations

import os

#: exit statuses besides 0, 1 and 2 (a StudyError): stopped by Ctrl-C / SIGTERM; the store did not take every write
EXIT_INTERRUPTED, EXIT_STORE_INCOMPLETE = 130, 3


def store_uri(uri: str | None) -> str:
    """The MLflow store a command reads: ``--uri``, else MLFLOW_TRACKING_URI, else the default sqlite file."""
    from tunelab.study import DEFAULT_TRACKING_URI

    return uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI
