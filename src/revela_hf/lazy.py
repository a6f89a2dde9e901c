"""PEP 562 lazy exports: a package names its public objects and imports each module on first use."""

from __future__ import annotations

import importlib
import sys
import types
from collections.abc import Callable
from typing import Any


class _LazyPackage(types.ModuleType):
    """A package whose exported names win over its submodules of the same name.

    Importing submodule `pkg.name` sets attribute `name` of `pkg` to that module (e.g. `revela_hf.data.prepare`,
    the module, over `prepare`, the function it defines and `revela_hf.data` exports); here the export is kept.
    """

    _lazy_exports: dict[str, str]  # the package's `exports`: public name -> module

    def __setattr__(self, name: str, value: Any) -> None:
        own_module = f"{self.__name__}.{name}"
        if isinstance(value, types.ModuleType) and value.__name__ == own_module == self._lazy_exports.get(name):
            value = getattr(value, name)
        super().__setattr__(name, value)


def lazy_exports(
    namespace: dict[str, Any], exports: dict[str, str], on_first_use: Callable[[], None] | None = None
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """`__getattr__` and `__dir__` for the package whose globals are `namespace`: `exports` maps each
    public name to its module; `on_first_use` runs before any of them is imported. An exported name
    stays the exported object even after its same-named submodule is imported."""
    package = sys.modules[namespace["__name__"]]
    package._lazy_exports = exports
    package.__class__ = _LazyPackage

    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {namespace['__name__']!r} has no attribute {name!r}")
        if on_first_use is not None:
            on_first_use()
        value = getattr(importlib.import_module(module), name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted([*namespace, *exports])

    return __getattr__, __dir__
