"""Model families: one module each, discovered here by name.

Adding a family is one module in this package (a ``ModelFamily`` subclass) and one YAML
file in ``searchspaces/`` with the same name.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil

from trainables.base import ModelFamily


def _discover() -> dict[str, type[ModelFamily]]:
    found: dict[str, type[ModelFamily]] = {}
    for info in pkgutil.iter_modules(__path__):
        if info.name.startswith("_") or info.name == "base":
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        for _, obj in inspect.getmembers(module, inspect.isclass):
            if issubclass(obj, ModelFamily) and obj is not ModelFamily and obj.__module__ == module.__name__:
                found[obj.name] = obj
    return dict(sorted(found.items()))


FAMILIES: dict[str, type[ModelFamily]] = _discover()
