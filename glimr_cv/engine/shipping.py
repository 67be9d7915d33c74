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

__all__ = ["user_modules", "unimportable", "pickled_modules", "ship_by_value"]

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


_STRINGS = {"SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE", "SHORT_BINSTRING", "BINSTRING", "STRING"}


def pickled_modules(payload: bytes) -> list[str]:
    """Top-level modules that loading the pickle ``payload`` imports, found without loading it.

    Those of its globals (``GLOBAL`` and ``STACK_GLOBAL`` opcodes, memoized strings
    followed), plus every string that names a module loaded in this process, which
    covers cloudpickle's ``subimport("module")`` of code pickled by value. An
    over-estimate at worst: a string that happens to name a module.
    """
    import pickletools

    memo: dict[int, Any] = {}
    pushed: list[Any] = []  # the strings pushed so far (None for other values), for STACK_GLOBAL
    names = set()
    for op, arg, _ in pickletools.genops(payload):
        if op.name in _STRINGS:
            pushed.append(arg)
        elif op.name == "MEMOIZE":
            memo[len(memo)] = pushed[-1] if pushed else None
        elif op.name in ("BINGET", "LONG_BINGET", "GET"):
            pushed.append(memo.get(int(arg)))
        elif op.name in ("BINPUT", "LONG_BINPUT", "PUT"):
            memo[int(arg)] = pushed[-1] if pushed else None
        elif op.name == "GLOBAL":
            names.add(arg.split(" ")[0])
        elif op.name == "STACK_GLOBAL" and len(pushed) >= 2 and isinstance(pushed[-2], str):
            names.add(pushed[-2])
        elif op.stack_after:
            pushed.append(None)
    names |= {text for text in memo.values() if isinstance(text, str) and text in sys.modules}
    names |= {text for text in pushed if isinstance(text, str) and text in sys.modules}
    return sorted({name.split(".")[0] for name in names} - _STDLIB)


def _dumps(objects) -> bytes:
    """The pickle stream of ``objects`` with arrays left out of band: scanned, not copied."""
    from ray import cloudpickle

    return cloudpickle.dumps(objects, protocol=5, buffer_callback=lambda buffer: None)


def _shippable(name: str) -> bool:
    """Whether module ``name`` can travel by value: loaded here, from Python source."""
    module = sys.modules.get(name)
    return module is not None and str(getattr(module, "__file__", "") or "").endswith(".py")


def ship_by_value(objects: Iterable[Any]) -> list[str]:
    """Register the modules of ``objects`` that workers cannot import to be pickled by value; their names.

    Repeats on what the pickled ``objects`` still import, so that a module that a
    shipped module imports travels too.

    Raises
    ------
    ImportError
        Naming a module the workers need but cannot import, which cannot travel by
        value either (not loaded in this process, or compiled), and what to do.
    """
    from ray import cloudpickle

    objects = list(objects)
    shipped: list[str] = []
    wanted = sorted(set(user_modules(objects)) | set(pickled_modules(_dumps(objects))))
    for _ in range(5):  # each round pickles again with the newly registered modules by value
        missing = [name for name in unimportable(wanted) if name not in shipped]
        if not missing:
            return shipped
        stuck = [name for name in missing if not _shippable(name)]
        if stuck:
            raise ImportError(
                f"builder, loader: expected every module they use to be importable by Ray workers, but "
                f"{stuck} cannot be (not on the workers' Python path) and cannot travel by value (not a Python "
                "source module loaded here); install it where the workers run, or add its folder to PYTHONPATH "
                "before Ray starts", name=stuck[0])
        for name in missing:
            cloudpickle.register_pickle_by_value(sys.modules[name])
        shipped += missing
        wanted = pickled_modules(_dumps(objects))
    return shipped
