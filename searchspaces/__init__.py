"""The search space of each model family: ``searchspaces/<family>.yaml``. A package so that they install with tunelab."""
