"""Names that a package exports but imports only on first use (Keras, TensorFlow and Ray are slow to import)."""

from __future__ import annotations

import importlib
from typing import Callable

__all__ = ["lazy_getattr"]


def lazy_getattr(package: str, names: dict[str, str], namespace: dict) -> Callable[[str], object]:
    """A module ``__getattr__`` that imports ``names[name]``, a module relative to ``package``, on first use.

    ``name`` is taken from that module, or is the module itself when the module's
    last part is ``name`` (a subpackage, ``"tracking": ".tracking"``).

    The value is then kept in ``namespace`` (the package's ``globals()``), so the
    import happens once.
    """

    def __getattr__(name: str):
        if name in names:
            module = importlib.import_module(names[name], package)
            # a name that is its module's own last part is the (sub)module itself
            value = module if names[name].rsplit(".", 1)[-1] == name else getattr(module, name)
            namespace[name] = value
            return value
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__
