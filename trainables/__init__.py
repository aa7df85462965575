"""Model families: one module each, named after the family, imported only when used.

Adding a family is one module ``trainables/<name>.py`` holding a ``ModelFamily`` subclass with
that ``name``, and one YAML file ``searchspaces/<name>.yaml``. Nothing else names it, nor its
MLflow flavour (``trainables.flavors``).
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from collections.abc import Mapping
from typing import Iterator

from trainables.base import ModelFamily
from trainables.flavors import Flavor

NOT_FAMILIES = {"base", "flavors", "trial"}  # modules of trainables/ beside the families


class _Registry(Mapping):
    """Family name -> class. Listing reads module names; a family's module (and torch or xgboost
    with it) is imported on first lookup, so a trial's worker imports only its own family."""

    def __init__(self) -> None:
        self._names = sorted(
            m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_") and m.name not in NOT_FAMILIES
        )
        self._classes: dict[str, type[ModelFamily]] = {}

    def __getitem__(self, name: str) -> type[ModelFamily]:
        if name not in self._names:
            raise KeyError(name)
        if name not in self._classes:
            module = importlib.import_module(f"{__name__}.{name}")
            found = [
                c
                for _, c in inspect.getmembers(module, inspect.isclass)
                if issubclass(c, ModelFamily) and c.__module__ == module.__name__ and getattr(c, "name", None) == name
            ]
            if len(found) != 1:
                raise ImportError(f"trainables/{name}.py must define one ModelFamily subclass with name = '{name}'")
            if not isinstance(found[0].flavor, Flavor):
                raise ImportError(
                    f"trainables/{name}.py: flavor must be a trainables.flavors.Flavor "
                    f"(SKLEARN, XGBOOST or PYTORCH: how its models are stored), not {found[0].flavor!r}"
                )
            self._classes[name] = found[0]
        return self._classes[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)


FAMILIES: Mapping[str, type[ModelFamily]] = _Registry()
