"""Loader contract checks (data helpers live here too)."""

from __future__ import annotations

import inspect
from typing import Callable

__all__ = ["check_loader"]


def check_loader(loader: Callable, cv_folds: int | None) -> None:
    """Check that ``loader`` accepts ``cv_index`` and ``cv_folds`` when CV is on.

    Raises
    ------
    TypeError
        If ``loader`` is not callable, or lacks those keyword arguments while
        ``cv_folds`` is set.
    """
    if not callable(loader):
        raise TypeError(f"loader: expected a callable loader(**data, cv_index, cv_folds) -> (train_ds, val_ds), but got {loader!r}")
    if cv_folds is None:
        return
    try:
        params = inspect.signature(loader).parameters
    except (TypeError, ValueError):
        return  # a builtin or C callable: nothing to inspect
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    missing = [name for name in ("cv_index", "cv_folds") if name not in params]
    if missing:
        name = getattr(loader, "__name__", repr(loader))
        raise TypeError(
            f"loader: {name}() must accept keyword arguments cv_index and cv_folds when cv_folds={cv_folds}, "
            f"but it lacks {', '.join(missing)}; add them, or pass cv_folds=None for a single train/validation split"
        )
