"""Names that a package exports but imports only on first use (Keras, TensorFlow and Ray are slow to import)."""

from __future__ import annotations

import importlib
from typing import Callable

__all__ = ["lazy_getattr"]


def lazy_getattr(package: str, names: dict[str, str], namespace: dict) -> Callable[[str], object]:
    """A module ``__getattr__`` that imports ``names[name]``, a module relative to ``package``, on first use.

    The value is then kept in ``namespace`` (the package's ``globals()``), so the
    import happens once.
    """

    def __getattr__(name: str):
        if name in names:
            value = getattr(importlib.import_module(names[name], package), name)
            namespace[name] = value
            return value
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__
