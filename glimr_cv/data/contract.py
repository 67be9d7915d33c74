"""The loader contract: what a search and everything after it need from a loader, in one place.

Any callable ``loader(**config["data"], cv_index=i, cv_folds=k) -> (train_ds,
val_ds)`` runs a search (:class:`Loader`). A loader that also *holds its rows*
(:class:`RowLoader`) can do more: nested cross-validation splits its rows,
refit trains on all of them, the ensemble and prediction feed rows through the
preprocessing a fold model was trained behind, and fold-fitted losses and
metrics (interval edges, censoring weights) are told a fold's training labels.
Every built-in loader is a ``RowLoader``: :func:`glimr_cv.kfold_loader`,
:func:`glimr_cv.survival.kfold_survival_loader`,
:func:`glimr_cv.mil.kfold_bag_loader` and :func:`glimr_cv.mil.kfold_slide_loader`.

**Shipping.** The loader travels inside the search: Ray puts it in its object
store once per experiment and every worker fetches it from there, and it is
pickled into the experiment folder so that the search resumes from the shell.
So a loader holds what a fold needs and nothing bigger: arrays (shipped once,
zero-copy) for data that fits in memory, file paths for data that does not
(the slide loader reads its feature files inside the ``tf.data`` pipeline).

:func:`check_loader` and :func:`row_loader` are the one place that checks a
loader against the contract.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, Protocol, runtime_checkable

import numpy as np

from ..checks import expected

__all__ = ["Loader", "RowLoader", "DEFAULT_FOLDS", "ROW_LOADER_MEMBERS", "check_loader", "row_loader",
           "is_row_loader", "resolve_folds"]

#: Folds of a loader that knows its rows when the search has ``cv_folds=None`` (one split: fold 0 of these).
DEFAULT_FOLDS = 5


def resolve_folds(cv_folds: int | None) -> int:
    """The folds a loader that knows its rows makes: ``cv_folds``, or :data:`DEFAULT_FOLDS` without CV."""
    return DEFAULT_FOLDS if cv_folds is None else int(cv_folds)


@runtime_checkable
class Loader(Protocol):
    """A search's loader: fold ``cv_index`` of ``cv_folds`` as ``(train_ds, val_ds)``.

    Called as ``loader(**config["data"], **loader_kwargs, cv_index=i,
    cv_folds=k)`` in a Ray worker (``cv_index`` and ``cv_folds`` are left out when
    the search has ``cv_folds=None``). Both datasets are batched ``tf.data``
    datasets of ``(features, {task: labels})``. Fold ``i`` must be the same
    partition on every call, in every process.
    """

    def __call__(self, batch_size: int, **kwargs: Any) -> tuple: ...


@runtime_checkable
class RowLoader(Loader, Protocol):
    """A loader that holds its rows (samples, bags, slides or patients) and splits them itself.

    Attributes
    ----------
    n : int
        Rows.
    labels : dict of str to numpy.ndarray
        Task -> ``(n, ...)`` labels, one per row.
    groups : numpy.ndarray or None
        Group (patient) of each row; no group is on both sides of a fold.
    target : numpy.ndarray
        The class of each row that stratified splitters use.
    preprocess : object or None
        The preprocessing fit on each fold's training rows, as given.
    val_batch_size : int or None
        Batch size of validation and evaluation datasets (None: the config's).
    """

    n: int
    labels: dict
    groups: Any
    preprocess: Any
    val_batch_size: Any

    @property
    def target(self) -> np.ndarray: ...

    def folds(self, cv_folds: int) -> list:
        """``(train_rows, val_rows)`` of each fold; the same on every call."""

    def outer_folds(self, outer_folds: int) -> list:
        """``(train_rows, test_rows)`` of nested CV's outer loop: the same splitter, groups and seed."""

    def subset(self, rows: Any) -> "RowLoader":
        """A loader of the same kind over ``rows`` only: nested CV's inner searches."""

    def full(self, batch_size: int) -> Any:
        """All rows as one training dataset, preprocessing fit on all rows: refit."""

    def fit_preprocess(self, rows: np.ndarray) -> Any:
        """``preprocess`` fit on ``rows`` (None without one)."""

    def fitted_preprocess(self, cv_index: int, cv_folds: int) -> Any:
        """``preprocess`` fit on fold ``cv_index``'s training rows: what that fold's model was trained behind."""

    def rows_dataset(self, rows: np.ndarray, batch_size: int, fitted: Any = None) -> Any:
        """``(features, {task: labels})`` batches of ``rows``, in order, through ``fitted``: scoring and prediction."""

    def train_labels(self, cv_index: int, cv_folds: int) -> dict:
        """Task -> labels of fold ``cv_index``'s training rows: what fold-fitted losses and metrics are told."""


#: What a :class:`RowLoader` has, as :func:`row_loader` checks it.
ROW_LOADER_MEMBERS = ("n", "labels", "groups", "preprocess", "val_batch_size", "target", "folds", "outer_folds",
                      "subset", "full", "fit_preprocess", "fitted_preprocess", "rows_dataset", "train_labels")


def _missing(loader: Any) -> list[str]:
    return [name for name in ROW_LOADER_MEMBERS if not hasattr(loader, name)]


def is_row_loader(loader: Any) -> bool:
    """Whether ``loader`` holds its rows (every member of :class:`RowLoader`)."""
    return callable(loader) and not _missing(loader)


def _name(loader: Any) -> str:
    return getattr(loader, "__name__", type(loader).__name__)


def row_loader(loader: Any, purpose: str) -> RowLoader:
    """``loader`` itself if it holds its rows; otherwise a TypeError saying what ``purpose`` needs.

    Raises
    ------
    TypeError
        Naming the loader, what it lacks and the loaders that have it.
    """
    missing = _missing(loader) if callable(loader) else ["__call__"]
    if missing:
        raise TypeError(
            f"loader: {purpose} needs a loader that holds its rows (glimr_cv.data.contract.RowLoader: "
            "kfold_loader, kfold_survival_loader, kfold_bag_loader or kfold_slide_loader), but the search's loader "
            f"{_name(loader)} lacks {', '.join(missing[:4])}{' ...' if len(missing) > 4 else ''}")
    return loader


def check_loader(loader: Callable, cv_folds: int | None) -> None:
    """Check a search's loader: callable, taking ``cv_index`` and ``cv_folds`` when CV is on.

    A loader that holds its rows also computes its folds for ``cv_folds`` here,
    so a fold count its data cannot support fails before Ray starts.

    Raises
    ------
    TypeError
        If ``loader`` is not callable, or lacks those keyword arguments while
        ``cv_folds`` is set.
    ValueError
        If a loader that holds its rows cannot make ``cv_folds`` folds.
    """
    if not callable(loader):
        raise TypeError(expected("loader", "a callable loader(**data, cv_index, cv_folds) -> (train_ds, val_ds)",
                                 loader))
    if callable(getattr(loader, "folds", None)):
        # without CV the trial calls loader(batch_size) and trains on fold 0 of the default
        loader.folds(resolve_folds(cv_folds))
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
        raise TypeError(
            f"loader: {_name(loader)}() must accept keyword arguments cv_index and cv_folds when cv_folds={cv_folds}, "
            f"but it lacks {', '.join(missing)}; add them, or pass cv_folds=None for a single train/validation split"
        )
