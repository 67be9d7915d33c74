"""User code reaches Ray workers: modules the workers cannot import travel by value.

A builder or loader pickles by reference, as ``module.name``, so a worker must be
able to import its module. Ray workers get the driver's environment and the
driver script's folder, but not the ``sys.path`` entries the driver added while
running (a notebook's ``sys.path.insert``, say). Such modules are registered with
cloudpickle to be pickled by value: their code travels with the search.
"""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys
from typing import Any, Iterable

__all__ = ["user_modules", "unimportable", "ship_by_value"]

_STDLIB = set(sys.stdlib_module_names) | {"builtins", "__main__"}


def _walk(obj: Any) -> Iterable[Any]:
    if isinstance(obj, dict):
        for value in obj.values():
            yield from _walk(value)
    elif isinstance(obj, (list, tuple, set, frozenset)):
        for value in obj:
            yield from _walk(value)
    else:
        yield obj


def user_modules(objects: Iterable[Any]) -> list[str]:
    """Top-level packages of the functions and classes among ``objects``, nested in dicts and lists too."""
    names = set()
    for obj in _walk(list(objects)):
        for candidate in (obj, type(obj)):
            module = getattr(candidate, "__module__", None) if callable(candidate) or inspect.isclass(candidate) else None
            if isinstance(module, str) and module.split(".")[0] not in _STDLIB:
                names.add(module.split(".")[0])
    return sorted(names)


def unimportable(modules: list[str]) -> list[str]:
    """The modules a fresh Python with this driver's environment and folder could not find.

    That is what a Ray worker on this machine sees: the same environment variables
    and working folder, and none of the ``sys.path`` entries added at run time.
    """
    if not modules:
        return []
    script_dir = os.path.dirname(os.path.abspath(sys.argv[0])) if sys.argv and sys.argv[0] else os.getcwd()
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (script_dir, env.get("PYTHONPATH", "")) if p)
    code = ("import importlib.util, json, sys; "
            "print(json.dumps([m for m in sys.argv[1:] if importlib.util.find_spec(m) is None]))")
    out = subprocess.run([sys.executable, "-c", code, *modules], capture_output=True, text=True, env=env,
                         cwd=os.getcwd(), timeout=60)
    if out.returncode != 0:  # cannot tell: ship them all, which is always safe
        return list(modules)
    return json.loads(out.stdout.strip().splitlines()[-1])


def ship_by_value(objects: Iterable[Any]) -> list[str]:
    """Register the modules of ``objects`` that workers cannot import to be pickled by value; their names."""
    from ray import cloudpickle

    shipped = unimportable(user_modules(objects))
    for name in shipped:
        if name in sys.modules:
            cloudpickle.register_pickle_by_value(sys.modules[name])
    return shipped
