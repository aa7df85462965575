"""tunelab: hyperparameter studies across model families and datasets on Ray Tune, tracked in MLflow."""

__version__ = "0.1.0"
