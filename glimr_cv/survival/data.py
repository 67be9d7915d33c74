"""Survival labels, event-spread batch orders, and a k-fold loader that stratifies on events.

NumPy only at import; TensorFlow loads when a loader builds its datasets.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..checks import check_int, expected
from ..data.folds import KFoldLoader

__all__ = ["survival_labels", "survival_strata", "event_stratified_order", "kfold_survival_loader",
           "SurvivalKFoldLoader"]


def _describe(array: np.ndarray) -> str:
    return f"an array of dtype {array.dtype} and shape {array.shape}"


def _column(name: str, value: Any) -> np.ndarray:
    """``value`` as a 1-D float64 array; ``(n, 1)`` is accepted."""
    if value is None:
        raise TypeError(expected(name, "an array of shape (n,)", value))
    if hasattr(value, "numpy") and not isinstance(value, np.ndarray):
        value = value.numpy()  # an eager tensor
    array = np.asarray(value)
    if array.ndim == 2 and array.shape[1] == 1:
        array = array[:, 0]
    if array.ndim != 1:
        raise ValueError(expected(name, "an array of shape (n,)", got=_describe(array)))
    if array.dtype == object or not (np.issubdtype(array.dtype, np.number) or array.dtype == bool):
        raise TypeError(expected(name, "numbers", got=_describe(array)))
    return array.astype(np.float64)


def _time_event(time: Any, event: Any, where: str = "") -> tuple[np.ndarray, np.ndarray]:
    """Checked ``(time, event)`` float64 columns; NaN marks a missing label."""
    t, e = _column(f"{where}time", time), _column(f"{where}event", event)
    if len(t) != len(e):
        raise ValueError(expected(f"{where}event", f"{len(t)} rows like time", len(e)))
    if np.isinf(t).any():
        raise ValueError(expected(f"{where}time", "finite times (NaN for a missing label)", t[np.isinf(t)][0].item()))
    if (t < 0).any():
        raise ValueError(expected(f"{where}time", "times >= 0", t[t < 0][0].item()))
    bad = ~(np.isnan(e) | (e == 0) | (e == 1))
    if bad.any():
        raise ValueError(expected(f"{where}event", "0 (censored), 1 (event) or NaN (missing)", e[bad][0].item()))
    return t, e


def _structured(y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(time, event)`` from a scikit-survival structured array: one bool field and one number field."""
    names = y.dtype.names
    flags = [n for n in names if y.dtype[n].kind == "b"]
    times = [n for n in names if y.dtype[n].kind != "b" and np.issubdtype(y.dtype[n], np.number)]
    if len(names) != 2 or len(flags) != 1 or len(times) != 1:
        raise ValueError(expected("time", "a structured array with one bool event field and one numeric time field, "
                                  "like sksurv.util.Surv.from_arrays makes", y.dtype))
    return y[times[0]], y[flags[0]]


def survival_labels(time: Any, event: Any = None) -> np.ndarray:
    """Survival labels as the losses and metrics of :mod:`glimr_cv.survival` take them.

    Parameters
    ----------
    time : array-like of shape (n,), or structured array
        Follow-up times, ``>= 0``. Or a scikit-survival structured array (one
        bool field, the event, and one numeric field, the time) and no ``event``.
    event : array-like of shape (n,), optional
        1 (or True) for an observed event, 0 for a censored row.

    Returns
    -------
    numpy.ndarray
        float32, shape ``(n, 2)``: column 0 the time, column 1 the event. NaN in
        either column marks a missing label: losses and metrics skip that row.

    Raises
    ------
    TypeError, ValueError
        Naming ``time`` or ``event``, on shapes, lengths, negative or infinite
        times, or events other than 0, 1 and NaN.
    """
    if isinstance(time, np.ndarray) and time.dtype.names is not None:
        if event is not None:
            raise TypeError(expected("event", "None when time is a structured array (it holds the events)",
                                     type(event).__name__))
        time, event = _structured(time)
    elif event is None:
        raise TypeError(expected("event", "an array of shape (n,) (or pass a structured array as time)", event))
    t, e = _time_event(time, event)
    return np.stack([t, e], axis=1).astype(np.float32)


def survival_strata(time: Any, event: Any, time_bins: int = 1) -> np.ndarray:
    """The class of each row for stratified folds: its event, and with ``time_bins`` its time quantile.

    Rows of each event status are cut into ``time_bins`` quantiles of their
    times (fewer when ties leave fewer distinct cuts); a missing label counts as
    censored, with the censored rows' first bin.

    Returns
    -------
    numpy.ndarray
        int64 ``(n,)``: ``event * time_bins + bin``.
    """
    check_int("time_bins", time_bins, 1)
    t, e = _time_event(time, event)
    events = np.nan_to_num(e).astype(np.int64)
    classes = events * time_bins
    if time_bins > 1:
        for status in (0, 1):
            rows = (events == status) & ~np.isnan(t)
            if rows.sum() >= time_bins:
                cuts = np.unique(np.quantile(t[rows], np.linspace(0, 1, time_bins + 1)[1:-1]))
                classes[rows] += np.searchsorted(cuts, t[rows], side="right")
    return classes


def _counts_per_batch(n_events: int, sizes: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Events per batch: one in each batch while they last, the rest in proportion to the room left."""
    counts = np.zeros(len(sizes), dtype=np.int64)
    if n_events >= len(sizes):
        counts[:] = 1
    else:
        counts[rng.choice(len(sizes), size=n_events, replace=False)] = 1
    left, room = n_events - counts.sum(), sizes - counts
    if left:
        # quotas left * room / total in integers: exact, so no batch can get more events than rows
        extra, remainder = np.divmod(left * room, room.sum())
        # largest remainders take the leftover events; random keys break ties, so no batch is favoured
        rank = np.lexsort((rng.random(len(sizes)), -remainder))
        extra[rank[: left - extra.sum()]] += 1
        counts += extra
    return counts


def event_stratified_order(event: Any, batch_size: int, seed: int = 0) -> np.ndarray:
    """A row order whose consecutive batches share the events as evenly as possible.

    A Cox loss learns nothing from a batch without events; a shuffled order of
    rare events leaves many such batches.

    Parameters
    ----------
    event : array-like of shape (n,)
        Nonzero for an event; 0 or NaN (missing) for none.
    batch_size : int
        Batches are rows ``[k * batch_size, (k + 1) * batch_size)`` of the order.
    seed : int
        Seed of the order.

    Returns
    -------
    numpy.ndarray
        int64 permutation of ``range(n)``. Every batch holds at least one event
        when there are at least as many events as batches; the remaining events
        go to batches in proportion to their other rows (largest remainder), so
        the event counts of equal batches differ by at most one.

    Raises
    ------
    ValueError
        Naming ``event`` or ``batch_size``.
    """
    e = _column("event", event)
    check_int("batch_size", batch_size, 1)
    check_int("seed", seed, 0)
    n = len(e)
    rng = np.random.default_rng(seed)
    is_event = np.nan_to_num(e) != 0
    events, others = rng.permutation(np.flatnonzero(is_event)), rng.permutation(np.flatnonzero(~is_event))
    n_batches = -(-n // batch_size)
    sizes = np.full(n_batches, batch_size, dtype=np.int64)
    if n_batches:
        sizes[-1] = n - batch_size * (n_batches - 1)
    counts = _counts_per_batch(len(events), sizes, rng)
    order, used_e, used_o = [], 0, 0
    for size, k in zip(sizes, counts):
        batch = np.concatenate([events[used_e : used_e + k], others[used_o : used_o + size - k]])
        used_e, used_o = used_e + k, used_o + size - k
        order.append(rng.permutation(batch))  # events are not always first in a batch
    return np.concatenate(order).astype(np.int64) if order else np.zeros(0, dtype=np.int64)


def kfold_survival_loader(
    features: Any,
    time: Any,
    event: Any = None,
    task: str = "survival",
    labels: dict | None = None,
    groups: Any = None,
    preprocess: Any = None,
    shuffle: bool = True,
    seed: int = 0,
    val_batch_size: int | None = None,
    time_bins: int = 1,
) -> "SurvivalKFoldLoader":
    """A :func:`glimr_cv.kfold_loader` for survival data: folds stratified on the event, batches hold events.

    Folds are fixed by ``seed``, the arrays go to Ray workers once and
    ``preprocess`` is fit on each fold's training rows only, as with
    :func:`glimr_cv.kfold_loader`. Folds are ``StratifiedKFold`` on the event
    indicator (``StratifiedGroupKFold`` with ``groups``), so each fold's
    validation rows have the data's event rate; rows with a missing label count
    as censored. Each epoch's training order is :func:`event_stratified_order`
    with a new seed, so every training batch holds an event when the fold has at
    least as many events as batches.

    Parameters
    ----------
    features : numpy.ndarray or dict of str to numpy.ndarray
        ``(n, ...)`` rows, or named arrays for a multi-input model.
    time, event : array-like of shape (n,)
        As :func:`survival_labels` takes them (``time`` may be a scikit-survival
        structured array, with ``event`` None).
    task : str
        Task (model output) whose labels are the :func:`survival_labels`.
    labels : dict of str to numpy.ndarray, optional
        Labels of other tasks, for a multi-task model.
    groups : array-like of shape (n,), optional
        Group of each row; no group is in both the training and validation rows of a fold.
    preprocess, shuffle, seed, val_batch_size
        As in :func:`glimr_cv.kfold_loader`; ``shuffle=False`` keeps one
        event-spread order (from ``seed``) for every epoch.
    time_bins : int
        Also stratify on the time: the rows of each event status are cut into
        this many quantiles of their times (1: the event alone), so that every
        fold's follow-up resembles the others'.

    Returns
    -------
    SurvivalKFoldLoader
        ``loader(batch_size, cv_index=0, cv_folds=5) -> (train_ds, val_ds)``.

    Raises
    ------
    TypeError, ValueError
        Naming the argument at fault.
    """
    return SurvivalKFoldLoader(features, time, event, task=task, labels=labels, groups=groups, preprocess=preprocess,
                               shuffle=shuffle, seed=seed, val_batch_size=val_batch_size, time_bins=time_bins)


class SurvivalKFoldLoader(KFoldLoader):
    """A :class:`glimr_cv.KFoldLoader` over survival labels; build one with :func:`kfold_survival_loader`.

    Attributes
    ----------
    task : str
        The task whose labels are ``(time, event)``.
    """

    def __init__(self, features, time, event=None, task="survival", labels=None, groups=None, preprocess=None,
                 shuffle=True, seed=0, val_batch_size=None, time_bins=1):
        if not isinstance(task, str):
            raise TypeError(expected("task", "a task name (str)", task))
        if labels is not None and not isinstance(labels, dict):
            raise TypeError(expected("labels", "a dict task name -> array for other tasks", got=type(labels).__name__))
        if labels and task in labels:
            raise ValueError(expected("labels", f"tasks other than task={task!r}, whose labels are time and event",
                                      sorted(labels)))
        y = survival_labels(time, event)
        if not np.nansum(y[:, 1]):
            raise ValueError(f"event: expected at least one event (1) to learn from, but all {len(y)} rows are "
                             "censored or missing; a Cox loss and the C-index need events")
        check_int("time_bins", time_bins, 1)
        super().__init__(features, {task: y, **(labels or {})}, groups=groups,
                         splitter="stratified" if groups is None else "stratified_group",
                         preprocess=preprocess, shuffle=shuffle, seed=seed, val_batch_size=val_batch_size,
                         stratify=survival_strata(y[:, 0], y[:, 1], time_bins))
        self.task = task
        self.time_bins = int(time_bins)

    def _check_folds(self, folds) -> None:
        super()._check_folds(folds)
        events = np.nan_to_num(self.labels[self.task][:, 1]) != 0
        for i, (train, val) in enumerate(folds):
            for side, rows in (("training", train), ("validation", val)):
                if not events[rows].any():
                    raise ValueError(f"cv_folds: fold {i} has no event among its {len(rows)} {side} rows "
                                     f"({int(events.sum())} events in all), so its {'loss' if side == 'training' else 'C-index'} "
                                     "is undefined; expected fewer folds, or more events")

    def _train_order(self, rows, batch_size, seed):
        import tensorflow as tf

        events = self.labels[self.task][rows, 1]
        rows = np.asarray(rows)

        def order(epoch_seed):
            return rows[event_stratified_order(events, int(batch_size), int(epoch_seed) % 2**32)]

        if seed is None:
            return tf.data.Dataset.from_tensor_slices(order(self.seed))
        # one seed per epoch, drawn by tf.data so that each pass over the dataset (epoch) gets a new order
        # and the sequence of orders is fixed by seed (and TensorFlow's global seed, like kfold_loader's shuffle)
        epochs = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).take(1)
        n = len(rows)
        ds = epochs.map(lambda s: tf.ensure_shape(tf.numpy_function(order, [s], tf.int64, stateful=False), [n])).unbatch()
        return ds.apply(tf.data.experimental.assert_cardinality(n))

    def __repr__(self) -> str:
        return "Survival" + super().__repr__().replace("(", f"(task={self.task!r}, ", 1)
