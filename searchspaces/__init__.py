"""The search space of each model family, ``searchspaces/<family>.yaml``; a package, so they install with tunelab."""
