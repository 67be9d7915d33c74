"""Discrete-time survival: a loss over hazards in time intervals, and the survival functions the hazards imply.

The model outputs ``K`` logits per row, one per interval of the edges
``0 = e_0 < e_1 < ... < e_K = inf``, and ``h_k = sigmoid(logit_k)`` is the
hazard of interval ``k``: the probability of the event in ``[e_k, e_{k+1})``
given survival to ``e_k``. A row whose time falls in interval ``j`` has
likelihood ``h_j prod_{k<j} (1 - h_k)`` for an event and
``prod_{k<=j} (1 - h_k)`` when censored (it survived interval ``j``), as in
Zadeh & Schmid 2021 ("Bias in cross-entropy-based training of deep survival
networks"), the whole-slide survival models built on it (PORPOISE and MCAT's
``NLLSurvLoss`` with ``alpha=0``) and pycox's ``LogisticHazard``. It is a
logistic regression on person-period data: one row per subject and interval at
risk, outcome 1 only in the event's interval.

Fold-fitted state
-----------------
The interval edges are quantiles of the training rows' event times, so they
depend on the fold. An object (loss or metric) with a method
``fit_fold(train_labels: numpy.ndarray) -> None`` is told, before a fold trains
and before the model is evaluated elsewhere (nested CV, a refit on all data),
the labels of that task's training rows: ``(n, 2)`` float, columns time and
event, NaN marking missing labels. It keeps what it needs from them in
``tf.Variable`` objects of dynamic shape, so that Keras steps traced for an
earlier fold (glimr_cv reuses compiled models between folds) read the new
fold's state without tracing again. :class:`DiscreteTimeNLL` computes its edges
there (:func:`discrete_time_edges`); :class:`glimr_cv.survival.UnoConcordance`
and :class:`glimr_cv.survival.IntegratedBrierScore` keep the training labels for
their censoring weights.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
import tensorflow as tf

from ..checks import check_int, expected
from .data import _column, _time_event
from .losses import _columns, _mean_over_valid

__all__ = [
    "discrete_time_edges",
    "discrete_time_nll",
    "DiscreteTimeNLL",
    "hazards_to_survival",
    "discrete_risk",
    "survival_at",
]


def _fold_labels(train_labels: Any, name: str = "train_labels") -> tuple[np.ndarray, np.ndarray]:
    """Checked ``(time, event)`` float64 columns of ``fit_fold``'s labels, NaN kept."""
    if hasattr(train_labels, "numpy") and not isinstance(train_labels, np.ndarray):
        train_labels = train_labels.numpy()
    labels = np.asarray(train_labels)
    if labels.ndim != 2 or labels.shape[1] != 2:
        raise ValueError(expected(name,
                                  "labels of shape (n, 2), columns time and event (glimr_cv.survival.survival_labels)",
                                  got=f"shape {labels.shape}"))
    return _time_event(labels[:, 0], labels[:, 1], f"{name} ")


def discrete_time_edges(time: Any, event: Any, intervals: int) -> np.ndarray:
    """Interval edges at quantiles of the event times, as whole-slide survival models cut time.

    The inner edges are the ``k / intervals`` quantiles (``k = 1 ... intervals - 1``,
    linear interpolation, as ``pandas.qcut``) of the times of the rows with an
    event; the first edge is 0 and the last ``inf``, so every time ``>= 0`` falls
    in an interval ``[e_j, e_{j+1})``. Equal quantiles (tied event times) merge.

    Parameters
    ----------
    time, event : array-like of shape (n,)
        Training rows' labels; rows with NaN in either are left out.
    intervals : int
        Number of intervals wanted, >= 2.

    Returns
    -------
    numpy.ndarray
        float64, increasing: ``[0, e_1, ..., inf]``, at most ``intervals + 1`` edges.

    Raises
    ------
    TypeError, ValueError
        Naming the argument: on labels as :func:`glimr_cv.survival.survival_labels`
        does, on no event, and when fewer than 2 distinct intervals remain.
    """
    check_int("intervals", intervals, 2)
    t, e = _time_event(time, event)
    times = t[(e == 1) & ~np.isnan(t)]
    if len(times) == 0:
        raise ValueError(expected("event", "at least one event (the edges are quantiles of the event times)",
                                  got="none"))
    inner = np.quantile(times, np.arange(1, intervals) / intervals)
    edges = np.unique(np.concatenate([[0.0], inner, [np.inf]]))
    if len(edges) < 3:
        raise ValueError(expected("intervals", "a number of intervals that the event times' quantiles can separate",
                                  intervals, f"the {len(times)} event times give 1 distinct interval "
                                  f"(inner quantiles {inner.tolist()})"))
    return edges


def _check_edges(edges: Any, name: str = "edges") -> np.ndarray:
    """``edges`` as a float64 array ``[0, ..., inf]``, increasing, with at least 2 intervals."""
    e = _column(name, edges)
    what = "increasing interval edges [0, e_1, ..., inf], at least 3 (2 intervals)"
    if len(e) < 3 or e[0] != 0 or e[-1] != np.inf or np.isnan(e).any() or (np.diff(e) <= 0).any():
        raise ValueError(expected(name, what, e.tolist()))
    return e


def _log_survival(logits):
    """``log S_k = sum_{i<=k} log(1 - h_i) = -sum softplus(logit_i)`` (NumPy or TensorFlow, by the input)."""
    if isinstance(logits, (tf.Tensor, tf.Variable)):
        return -tf.cumsum(tf.nn.softplus(logits), axis=-1)
    return -np.cumsum(np.logaddexp(0.0, logits), axis=-1)


def _logits(logits: Any, name: str = "logits") -> np.ndarray:
    if hasattr(logits, "numpy") and not isinstance(logits, np.ndarray):
        logits = logits.numpy()
    x = np.asarray(logits)
    if x.dtype == object or not np.issubdtype(x.dtype, np.number) or x.ndim != 2:
        raise ValueError(expected(name, "hazard logits of shape (n, K)",
                                  got=f"an array of dtype {x.dtype} and shape {x.shape}"))
    return x.astype(np.float64)


def _symbolic(value: Any) -> bool:
    return isinstance(value, (tf.Tensor, tf.Variable)) and not tf.executing_eagerly()


def hazards_to_survival(logits: Any):
    """Survival at the end of each interval, ``S_k = prod_{i<=k} (1 - h_i)``, from hazard logits.

    Parameters
    ----------
    logits : array-like or tensor of shape (n, K)
        The model's outputs: ``h_k = sigmoid(logits[:, k])``.

    Returns
    -------
    numpy.ndarray or tensor
        Shape ``(n, K)``, non-increasing along each row; float64 NumPy for a NumPy
        array or an eager tensor, a tensor of the input's dtype inside a traced
        function (differentiable), computed as ``exp(-cumsum(softplus(logits)))``.
    """
    if _symbolic(logits):
        return tf.exp(_log_survival(logits))
    return np.exp(_log_survival(_logits(logits)))


def discrete_risk(logits: Any):
    """A risk score for ranking from hazard logits: ``-sum_k S_k``, higher meaning earlier events.

    Minus the expected number of intervals survived (PORPOISE's risk), for
    Harrell's or Uno's C (:class:`glimr_cv.survival.ConcordanceIndex` with
    ``prediction="hazard_logits"``).

    Parameters
    ----------
    logits : array-like or tensor of shape (n, K)

    Returns
    -------
    numpy.ndarray or tensor
        Shape ``(n,)``; NumPy or a tensor as :func:`hazards_to_survival`.
    """
    if _symbolic(logits):
        return -tf.reduce_sum(tf.exp(_log_survival(logits)), axis=-1)
    return -hazards_to_survival(logits).sum(axis=-1)


def survival_at(logits: Any, edges: Any, times: Any) -> np.ndarray:
    """The piecewise-constant survival function of hazard logits at given times.

    ``S(t)`` is the survival at the end of the last interval that ended at or
    before ``t`` (``S_{m-1}`` when ``e_m <= t < e_{m+1}``), and 1 before ``e_1``.

    Parameters
    ----------
    logits : array-like of shape (n, K)
        Hazard logits.
    edges : array-like of shape (K + 1,)
        Their interval edges ``[0, ..., inf]`` (:func:`discrete_time_edges`).
    times : array-like of shape (n_times,)
        Finite times >= 0.

    Returns
    -------
    numpy.ndarray
        float64, shape ``(n, n_times)``, for :func:`glimr_cv.survival.brier_score`.

    Raises
    ------
    ValueError
        Naming the argument: shapes, edges that are not ``[0, ..., inf]``
        increasing, logits whose columns are not one per interval, negative times.
    """
    x, e = _logits(logits), _check_edges(edges)
    if x.shape[1] != len(e) - 1:
        raise ValueError(expected("logits", f"{len(e) - 1} columns, one per interval of edges", got=f"shape {x.shape}"))
    t = _column("times", np.atleast_1d(times))
    bad = ~np.isfinite(t) | (t < 0)
    if bad.any():
        raise ValueError(expected("times", "finite times >= 0", t[bad][0].item()))
    ended = np.searchsorted(e[1:], t, side="right")  # intervals over by t
    survival = np.concatenate([np.ones((len(x), 1)), hazards_to_survival(x)], axis=1)
    return survival[:, ended]


def _nll(y_true, y_pred, edges, intervals: int | None):
    """Mean negative log-likelihood over the labelled rows; ``edges`` a float64 tensor, ``intervals`` its static K."""
    time, event, valid, logits = _columns(y_true, y_pred, intervals, "hazard logits (one per interval)")
    if intervals is None:
        check = tf.debugging.assert_equal(tf.shape(logits)[1], tf.size(edges) - 1,
                                          message="y_pred: expected one hazard logit per interval of edges")
        with tf.control_dependencies([check] if check is not None else []):
            logits = tf.identity(logits)
    time = tf.where(valid, tf.cast(time, tf.float64), tf.zeros_like(time, tf.float64))
    interval = tf.searchsorted(edges, time, side="right") - 1  # e_j <= t < e_{j+1}
    logits = tf.where(valid[:, None], logits, tf.zeros_like(logits))  # no NaN of a skipped row reaches a gradient
    k = tf.range(tf.shape(logits)[1])[None, :]
    j = interval[:, None]
    survived, failed = tf.nn.softplus(logits), tf.nn.softplus(-logits)  # -log(1 - h), -log h
    last = tf.where((event == 1)[:, None], failed, survived)  # the event's interval, or one survived
    zero = tf.zeros_like(logits)
    per_row = tf.reduce_sum(tf.where(k < j, survived, zero) + tf.where(k == j, last, zero), axis=1)
    return _mean_over_valid(per_row, valid)


@keras.saving.register_keras_serializable(package="glimr_cv")
def discrete_time_nll(y_true, y_pred, edges):
    """Negative log-likelihood of discrete-time hazards, per labelled row.

    Parameters
    ----------
    y_true : tensor of shape (n, 2)
        Columns time (>= 0) and event (1 event, 0 censored); a row with NaN in either is skipped.
    y_pred : tensor of shape (n, K)
        Hazard logits, one per interval: ``h_k = sigmoid(y_pred[:, k])``.
    edges : array-like or tensor of shape (K + 1,)
        Interval edges ``[0, e_1, ..., inf]`` (:func:`discrete_time_edges`); a
        row's interval ``j`` is the one with ``e_j <= time < e_{j+1}``.

    Returns
    -------
    tensor
        Scalar: ``-log h_j - sum_{k<j} log(1 - h_k)`` for an event and
        ``-sum_{k<=j} log(1 - h_k)`` for a censored row, averaged over the kept
        rows (log-sigmoid forms, stable for any logit); 0, with a zero gradient,
        when no row is kept. It decomposes over rows, so it is the same at any
        batch size, 1 included.

    Raises
    ------
    ValueError
        On shapes, edges, events other than 0/1 or negative times (an
        assertion inside a traced function).
    """
    if isinstance(edges, (tf.Tensor, tf.Variable)) and not _symbolic(edges):
        edges = edges.numpy()
    if isinstance(edges, (tf.Tensor, tf.Variable)):
        edges = tf.cast(edges, tf.float64)
        intervals = edges.shape[0] - 1 if edges.shape.rank == 1 and edges.shape[0] is not None else None
    else:
        edges = _check_edges(edges)
        intervals = len(edges) - 1
    return _nll(y_true, y_pred, tf.convert_to_tensor(edges, tf.float64), intervals)


@keras.saving.register_keras_serializable(package="glimr_cv")
class DiscreteTimeNLL(keras.losses.Loss):
    """:func:`discrete_time_nll` as a Keras loss, with fixed edges or edges fitted to each training fold.

    In a search space: ``{"name": "nll", "loss": DiscreteTimeNLL, "kwargs": {"intervals": 4}}``
    with a model output of 4 linear units.

    Parameters
    ----------
    edges : array-like of shape (K + 1,), optional
        Fixed interval edges ``[0, ..., inf]``.
    intervals : int, optional
        Number of intervals ``K`` (>= 2): the edges are then
        :func:`discrete_time_edges` of each training fold's labels, set by
        :meth:`fit_fold` (which glimr_cv's search calls before a fold trains).
        With ``edges`` too, those are the edges until the next :meth:`fit_fold`
        (how a saved, fitted loss reloads).
    name : str
        Keras name of the loss.
    reduction, dtype
        As for any ``keras.losses.Loss``; the loss is already one number per batch.

    Raises
    ------
    ValueError
        Naming ``edges`` or ``intervals``: neither given, edges not
        ``[0, ..., inf]`` increasing, or ``K`` that differ.

    Notes
    -----
    The edges live in a ``tf.Variable`` of dynamic shape: a train step traced
    for one fold reads the edges :meth:`fit_fold` set for the next. Calling the
    loss before any edges are known raises a ValueError.
    """

    def __init__(self, edges: Any = None, intervals: int | None = None, name: str = "discrete_time_nll",
                 reduction="sum_over_batch_size", dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.intervals = check_int("intervals", intervals, 2, allow_none=True)
        if edges is None and intervals is None:
            raise ValueError(expected("intervals", "an int >= 2 (edges fitted to each training fold), "
                                      "or edges=[0, ..., inf]", None))
        fixed = None if edges is None else _check_edges(edges)
        if fixed is not None and intervals is not None and len(fixed) - 1 != intervals:
            raise ValueError(expected("edges", f"{intervals + 1} edges for intervals={intervals}", fixed.tolist()))
        self._n = intervals if fixed is None else len(fixed) - 1
        self._known = fixed is not None
        # dynamic shape: a traced step reads the current fold's edges, whatever they are
        self._edges = tf.Variable(np.zeros(0) if fixed is None else fixed, dtype=tf.float64,
                                  shape=tf.TensorShape([None]), trainable=False, name=f"{name}_edges")

    @property
    def edges(self) -> np.ndarray | None:
        """The current interval edges (float64), None before any are known."""
        return self._edges.numpy() if self._known else None

    def fit_fold(self, train_labels: Any) -> None:
        """Set the edges from a training fold's labels (``(n, 2)``, NaN marking missing); fixed edges stay.

        Raises
        ------
        ValueError
            Naming ``train_labels`` on bad labels, or ``intervals`` when the
            fold's event times give fewer distinct intervals.
        """
        if self.intervals is None:
            return
        time, event = _fold_labels(train_labels)
        edges = discrete_time_edges(time, event, self.intervals)
        if len(edges) - 1 != self.intervals:
            raise ValueError(expected("intervals", "a number of intervals that the training fold's event times "
                                      "can separate", self.intervals,
                                      f"their quantiles give {len(edges) - 1} distinct intervals {edges.tolist()}; "
                                      "use fewer intervals"))
        self._edges.assign(edges)
        self._known = True

    def call(self, y_true, y_pred):
        if not self._known:
            raise ValueError(expected(self.name, "interval edges",
                                      got="none yet: pass edges=[0, ..., inf], or intervals= with a loader that knows "
                                          "its training labels (glimr_cv loaders do: the search then calls "
                                          "fit_fold(train_labels) before each fold), or call fit_fold yourself"))
        return _nll(y_true, y_pred, self._edges, self._n)

    def get_config(self):
        edges = self.edges
        return {**super().get_config(), "intervals": self.intervals,
                "edges": None if edges is None else edges.tolist()}
