"""A package's public names, imported on first use (PEP 562 module ``__getattr__``).

``snnet`` uses it so that what needs none of torch (``SNNetError``, ``AnchorSpec``, ``SpaceConfig``, and
so a search space, a ``TrainConfig`` and ``python -m orchestrator.catalog``) starts without importing it.
"""

from __future__ import annotations

import importlib
import sys
import types
from collections.abc import Callable, Mapping, Sequence
from typing import Any


def lazy_exports(package: str,
                 modules: Mapping[str, Sequence[str]]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for ``package``: each name in ``modules[m]`` comes from its submodule ``m``."""
    module_of = {name: module for module, names in modules.items() for name in names}
    namespace = sys.modules[package].__dict__

    class Package(types.ModuleType):
        def __setattr__(self, name: str, value: Any) -> None:
            # A name may be its submodule's too (snnet.least_squares, the function): importing the submodule
            # binds it on the package, which must not hide the exported object (__getattr__ supplies that).
            if not (isinstance(value, types.ModuleType) and name in module_of):
                super().__setattr__(name, value)

    sys.modules[package].__class__ = Package  # Python language reference, "Customizing module attribute access"

    def __getattr__(name: str) -> Any:
        if name not in module_of:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f".{module_of[name]}", package), name)
        namespace[name] = value  # later lookups are plain attribute reads
        return value

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(namespace.get("__all__", ())))

    return __getattr__, __dir__
