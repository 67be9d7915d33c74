"""Survival metrics as Keras 3 metrics over a whole evaluation (TensorFlow backend).

:class:`ConcordanceIndex` (Harrell's C) counts pairs as batches arrive.
:class:`UnoConcordance` and :class:`IntegratedBrierScore` keep every row and
compute their value with the NumPy functions of
:mod:`glimr_cv.survival.evaluation`, so they equal them exactly; they weigh rows
by the censoring distribution of the training fold, which :meth:`fit_fold`
gives them (the fold-fitted protocol of :mod:`glimr_cv.survival.discrete`).

Keras computes a compiled metric's ``result()`` inside every traced train and
test step, for its per-batch logs, and once more, eagerly, for the logs of an
epoch or an evaluation. The two metrics of the whole set compute their value
only in the eager call (a quadratic cost at every batch would slow an epoch
several times); inside a traced step their ``result()`` is NaN. So the values
of ``model.evaluate`` and of an epoch's ``val_`` logs are exact, while per-batch
logs and callbacks (``on_train_batch_end``, ``test_on_batch``) show NaN.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
import tensorflow as tf

from ..checks import check_choice, check_int, check_number, expected
from .discrete import _check_edges, _fold_labels, discrete_risk, discrete_time_edges, survival_at
from .evaluation import integrated_brier_score, uno_concordance
from .losses import _label_values, _same_rows

__all__ = ["ConcordanceIndex", "UnoConcordance", "IntegratedBrierScore"]

_WIDTH = {"risk": 1, "exponential": 1, "weibull": 2, "hazard_logits": None}
_WHAT = {"risk": "risk scores", "exponential": "log scales", "weibull": "[log scale, log shape] pairs",
         "hazard_logits": "hazard logits (one per interval)"}


def _under_xla() -> bool:
    """Whether the graph being traced will be compiled by XLA (``jit_compile=True``)."""
    from ..engine.compat import under_xla

    return under_xla()


def _refuse_xla(name: str) -> None:
    if _under_xla():
        raise ValueError(expected(name, "a model compiled with jit_compile=False (this metric keeps every row it "
                                        "sees, a shape XLA cannot fix in advance)",
                                  got="jit_compile=True (Keras's jit_compile='auto' turns it on when a GPU is "
                                      "present)"))


def _checked(name: str, y_true, y_pred, prediction: str, width: int | None = None):
    """float64 ``(labels, predictions)`` checked: labels ``(n, 2)`` with valid values, predictions of the rows."""
    y_true = tf.cast(tf.convert_to_tensor(y_true), tf.float64)
    y_pred = tf.cast(tf.convert_to_tensor(y_pred), tf.float64)
    if y_true.shape.rank != 2 or y_true.shape[-1] not in (2, None):
        raise ValueError(expected(name,
                                  "labels of shape (n, 2), columns time and event (glimr_cv.survival.survival_labels)",
                                  got=f"shape {tuple(y_true.shape)}"))
    shaped = y_pred
    width = _WIDTH[prediction] if width is None else width
    if width == 1:
        if y_pred.shape.rank == 2 and y_pred.shape[-1] in (1, None):
            y_pred = y_pred[:, 0]
        fits, shape = y_pred.shape.rank == 1, "(n, 1) or (n,)"
    else:
        fits = y_pred.shape.rank == 2 and (width is None or y_pred.shape[-1] in (width, None))
        shape = f"(n, {width or 'K'})"
    if not fits:
        raise ValueError(expected(name, f"{_WHAT[prediction]} of shape {shape}", got=f"shape {tuple(shaped.shape)}"))
    y_pred = _same_rows(y_true, shaped, y_pred, expected(name, "predictions with as many rows as the labels, of shape "
                                                               f"{tuple(y_true.shape)}",
                                                         got=f"shape {tuple(shaped.shape)}"))
    time, event = y_true[:, 0], y_true[:, 1]
    _label_values(time, event, ~(tf.math.is_nan(time) | tf.math.is_nan(event)), name=name)
    return y_true, y_pred


def _pair_counts(a, b):
    """(concordant, tied, comparable) over pairs (i, j), i an event row of ``a``, j any row of ``b``.

    Rows are ``[time, event, risk]``; the rule is that of :func:`glimr_cv.survival.concordance_index`.
    """
    ti, ei, ri = a[:, 0:1], a[:, 1:2] != 0, a[:, 2:3]
    tj, ej, rj = b[None, :, 0], b[None, :, 1] != 0, b[None, :, 2]
    comparable = ei & ((tj > ti) | ((tj == ti) & ~ej))

    def count(mask):
        return tf.cast(tf.math.count_nonzero(mask), tf.float64)

    return count(comparable & (ri > rj)), count(comparable & (ri == rj)), count(comparable)


@keras.saving.register_keras_serializable(package="glimr_cv")
class ConcordanceIndex(keras.metrics.Metric):
    """Harrell's C of every row an evaluation has seen, as :func:`glimr_cv.survival.concordance_index`.

    Labels are ``(n, 2)``, columns time and event
    (:func:`glimr_cv.survival.survival_labels`). Rows with a NaN time or event
    are skipped. The value after ``model.evaluate`` (or an epoch's ``val_`` log)
    is the index over the whole validation set, not a mean of per-batch values;
    it is NaN while no pair is comparable or when a risk is NaN.

    Parameters
    ----------
    prediction : {"risk", "hazard_logits"}
        What the model outputs: risk scores of shape ``(n, 1)`` or ``(n,)``,
        higher meaning earlier events; or discrete-time hazard logits
        ``(n, K)`` (:func:`glimr_cv.survival.discrete_time_nll`), ranked by
        :func:`glimr_cv.survival.discrete_risk`, so that such a model needs no
        second output for its C-index.
    name : str
        Keras name of the metric (logged as ``val_{name}``).
    dtype : str, optional
        dtype of the result.

    Raises
    ------
    ValueError
        Naming the metric, at update: label or prediction shapes, rows that
        differ, events other than 0/1 or NaN, negative times (an assertion
        inside a traced step).

    Notes
    -----
    The metric keeps every row it sees (time, event and risk, 24 bytes a row)
    and counts each new batch's pairs with the rows before it once, at update:
    O(batch x rows) time and memory per batch, O(rows^2) per evaluation.
    ``reset_state`` (which Keras calls at the start of every ``evaluate`` and
    every training epoch) empties it. The kept rows are not Keras variables, so
    they are neither saved with the weights nor part of ``model.variables``. It
    cannot run under XLA (``jit_compile=True``), whose shapes are fixed, so it
    says ``supports_jit = False`` and the search compiles such models without XLA
    (Keras's ``"auto"`` would turn XLA on on a GPU). It ignores sample weights.
    """

    supports_jit = False

    def __init__(self, prediction: str = "risk", name: str = "concordance_index", dtype=None):
        super().__init__(name=name, dtype=dtype)
        self.prediction = check_choice("prediction", prediction, ("risk", "hazard_logits"))
        self.concordant = self.add_variable((), "zeros", dtype="float64", name="concordant")
        self.tied = self.add_variable((), "zeros", dtype="float64", name="tied")
        self.comparable = self.add_variable((), "zeros", dtype="float64", name="comparable")
        self.nan_risks = self.add_variable((), "zeros", dtype="float64", name="nan_risks")
        # a plain tf.Variable, because its row count changes at every update; float64 holds
        # float32 and float64 labels and risks exactly, so ties are those of the inputs
        self._rows = tf.Variable(tf.zeros((0, 3), tf.float64), shape=tf.TensorShape([None, 3]),
                                 trainable=False, name=f"{name}_rows")

    def update_state(self, y_true, y_pred, sample_weight=None):
        """Add a batch: count its pairs with itself and with every earlier row, then keep its rows."""
        del sample_weight  # Harrell's C weighs every comparable pair alike
        _refuse_xla(self.name)
        y_true, y_pred = _checked(self.name, y_true, y_pred, self.prediction)
        risk = y_pred if self.prediction == "risk" else discrete_risk(y_pred)
        rows = tf.stack([y_true[:, 0], y_true[:, 1], risk], axis=1)
        rows = tf.boolean_mask(rows, ~tf.reduce_any(tf.math.is_nan(rows[:, :2]), axis=1))
        old = tf.convert_to_tensor(self._rows)
        # each unordered pair is comparable in at most one direction, so new x (old + new) plus
        # old x new counts every pair once (a row is never comparable with itself)
        seen = tf.concat([old, rows], axis=0)
        for counts in (_pair_counts(rows, seen), _pair_counts(old, rows)):
            for variable, count in zip((self.concordant, self.tied, self.comparable), counts):
                variable.assign(variable + count)
        self.nan_risks.assign(self.nan_risks + tf.cast(tf.math.count_nonzero(tf.math.is_nan(rows[:, 2])), tf.float64))
        self._rows.assign(seen)

    def result(self):
        index = (self.concordant + 0.5 * self.tied) / tf.maximum(self.comparable, 1.0)
        defined = (self.comparable > 0) & (self.nan_risks == 0)
        return tf.cast(tf.where(defined, index, tf.constant(float("nan"), tf.float64)), self.dtype)

    def reset_state(self):
        for variable in (self.concordant, self.tied, self.comparable, self.nan_risks):
            variable.assign(tf.zeros((), tf.float64))
        self._rows.assign(tf.zeros((0, 3), tf.float64))

    def get_config(self):
        return {"name": self.name, "dtype": self.dtype, "prediction": self.prediction}


class _WholeSet(keras.metrics.Metric):
    """A metric that keeps every labelled row (time, event, predictions) and the training fold's labels.

    Subclasses compute their value from NumPy arrays in :meth:`_value`.
    """

    supports_jit = False

    def __init__(self, prediction: str, name: str, dtype):
        super().__init__(name=name, dtype=dtype)
        self.prediction = prediction
        # columns time, event, then the predictions: their number is known at the first update
        self._rows = tf.Variable(tf.zeros((0, 0), tf.float64), shape=tf.TensorShape([None, None]),
                                 trainable=False, name=f"{name}_rows")
        self._train: tuple[np.ndarray, np.ndarray] | None = None

    def fit_fold(self, train_labels: Any) -> None:
        """Keep the training fold's labelled rows (``(n, 2)``, NaN marking missing), for the censoring weights.

        Raises
        ------
        ValueError
            Naming ``train_labels``: shape, events other than 0/1, negative
            times, or no labelled row.
        """
        time, event = _fold_labels(train_labels)
        kept = ~(np.isnan(time) | np.isnan(event))
        if not kept.any():
            raise ValueError(expected("train_labels", "at least one labelled row (time and event not NaN)", got="none"))
        self._train = (time[kept], event[kept])

    def _width(self) -> int | None:
        return None

    def update_state(self, y_true, y_pred, sample_weight=None):
        """Keep the batch's labelled rows."""
        del sample_weight  # the IPCW weights are the only weights
        _refuse_xla(self.name)
        y_true, y_pred = _checked(self.name, y_true, y_pred, self.prediction, self._width())
        if y_pred.shape.rank == 1:
            y_pred = y_pred[:, None]
        rows = tf.concat([y_true[:, :2], y_pred], axis=1)
        rows = tf.boolean_mask(rows, ~tf.reduce_any(tf.math.is_nan(rows[:, :2]), axis=1))
        old = tf.reshape(self._rows, tf.stack([-1, tf.shape(rows)[1]]))  # (0, 0) before the first batch
        self._rows.assign(tf.concat([old, rows], axis=0))

    def result(self):
        if not tf.executing_eagerly():  # a per-batch log inside a traced step: see the module docstring
            return tf.constant(float("nan"), self.dtype)
        if self._train is None:
            raise ValueError(expected(self.name, "the training fold's labels for the censoring weights",
                                      got="none: glimr_cv's search gives them (fit_fold) when the loader knows its "
                                          "training labels",
                                      hint="else call metric.fit_fold(train_labels) before evaluating"))
        rows = self._rows.numpy()
        if rows.size == 0:
            return tf.constant(float("nan"), self.dtype)
        value = self._value(*self._train, rows[:, 0], rows[:, 1], rows[:, 2:])
        return tf.constant(value, self.dtype)

    def _value(self, train_time, train_event, time, event, pred) -> float:
        raise NotImplementedError

    def reset_state(self):
        self._rows.assign(tf.zeros((0, 0), tf.float64))


@keras.saving.register_keras_serializable(package="glimr_cv")
class UnoConcordance(_WholeSet):
    """Uno's IPCW C-index of every row an evaluation has seen, as :func:`glimr_cv.survival.uno_concordance`.

    Harrell's C depends on the censoring of the data it is computed on; Uno's
    weighs each comparable pair by the inverse squared censoring survival of the
    training fold at the event's time, which :meth:`fit_fold` gives the metric
    (glimr_cv's search calls it before each fold).

    Parameters
    ----------
    prediction : {"risk", "hazard_logits"}
        Risk scores ``(n, 1)`` or ``(n,)``, higher meaning earlier events, or
        discrete-time hazard logits ``(n, K)``, ranked by
        :func:`glimr_cv.survival.discrete_risk`.
    tau : float, optional
        Truncation time: events at or after it get no weight. Events at or after
        the training fold's largest time never do (the censoring distribution is
        unknown past it), so ``None`` truncates there and a larger ``tau`` acts
        as the training fold's largest time; a validation fold may hold later
        times than its training fold.
    name : str
        Keras name of the metric (logged as ``val_{name}``).
    dtype : str, optional
        dtype of the result.

    Raises
    ------
    ValueError
        Naming the argument or the metric: as :class:`ConcordanceIndex`, and at
        ``result()`` when :meth:`fit_fold` was never called.

    Notes
    -----
    The value is computed from every kept row (time, event, prediction) when
    Keras asks for an evaluation's or an epoch's result, in
    O(events x rows); inside traced steps ``result()`` is NaN (see
    :mod:`glimr_cv.survival.metrics`). Risks tie within ``1e-8``, as in
    scikit-survival. Not under XLA (``supports_jit = False``); sample weights
    are ignored; the training labels are not saved with the model.
    """

    def __init__(self, prediction: str = "risk", tau: float | None = None, name: str = "uno_concordance", dtype=None):
        super().__init__(check_choice("prediction", prediction, ("risk", "hazard_logits")), name, dtype)
        self.tau = check_number("tau", tau, 0, allow_none=True)

    def _value(self, train_time, train_event, time, event, pred) -> float:
        risk = pred[:, 0] if self.prediction == "risk" else discrete_risk(pred)
        tau = train_time.max() if self.tau is None else min(self.tau, train_time.max())
        return uno_concordance(train_time, train_event, time, event, risk, tau=tau)

    def get_config(self):
        return {"name": self.name, "dtype": self.dtype, "prediction": self.prediction, "tau": self.tau}


_LEVELS = np.linspace(0.05, 0.95, 20)  # quantile levels of the training event times for the default times


@keras.saving.register_keras_serializable(package="glimr_cv")
class IntegratedBrierScore(_WholeSet):
    """The integrated IPCW Brier score of every row an evaluation has seen (lower is better).

    Each row's survival function comes from the model's output, the censoring
    weights from the training fold's labels (:meth:`fit_fold`), and the value
    is :func:`glimr_cv.survival.integrated_brier_score` over the evaluation
    times that fall within the evaluated rows' follow-up.

    Parameters
    ----------
    prediction : {"hazard_logits", "exponential", "weibull"}
        ``"hazard_logits"``: ``(n, K)`` discrete-time hazard logits
        (:class:`glimr_cv.survival.DiscreteTimeNLL`), survival from
        :func:`glimr_cv.survival.survival_at`; ``"exponential"``: log scales
        ``(n, 1)`` (:func:`glimr_cv.survival.exponential_nll`), ``S(t) =
        exp(-t / scale)``; ``"weibull"``: ``[log scale, log shape]`` ``(n, 2)``
        (:func:`glimr_cv.survival.weibull_nll`), ``S(t) = exp(-(t / scale) ** shape)``.
        A Cox model's risks are refused: their survival needs a Breslow
        baseline from training predictions, which a metric inside ``model.fit``
        does not see; compute its IBS after training with
        :func:`glimr_cv.survival.breslow_survival`.
    intervals : int, optional
        With ``"hazard_logits"``: ``K``, the edges being
        :func:`glimr_cv.survival.discrete_time_edges` of the training fold's
        labels, as :class:`~glimr_cv.survival.DiscreteTimeNLL` with
        ``intervals`` computes them. None: ``K`` is the number of logits.
    edges : array-like of shape (K + 1,), optional
        With ``"hazard_logits"``: fixed edges instead (the loss's ``edges``).
    times : array-like, optional
        Evaluation times. Default: the quantiles at levels 0.05, 0.10, ..., 0.95
        (20) of the training fold's event times. Those within the evaluated
        rows' follow-up ``[first time, last time)`` and at most the training
        fold's largest time are used (scikit-survival's range, so that a fold
        with a shorter follow-up does not fail); NaN when fewer than two remain.
    name : str
        Keras name of the metric (logged as ``val_{name}``).
    dtype : str, optional
        dtype of the result.

    Raises
    ------
    ValueError
        Naming the argument: an unknown or a ``"risk"`` prediction,
        ``intervals`` or ``edges`` with another prediction, bad edges or times;
        at update as :class:`ConcordanceIndex`; at ``result()`` when
        :meth:`fit_fold` was never called, or the training fold's event times
        give fewer than ``K`` intervals.

    Notes
    -----
    Computed when Keras asks for an evaluation's or an epoch's result, in
    O(rows x times); inside traced steps ``result()`` is NaN (see
    :mod:`glimr_cv.survival.metrics`). Not under XLA; sample weights are
    ignored; the training labels are not saved with the model.
    """

    def __init__(self, prediction: str = "hazard_logits", intervals: int | None = None, edges: Any = None,
                 times: Any = None, name: str = "integrated_brier_score", dtype=None):
        if prediction == "risk":
            raise ValueError(expected("prediction", "one of 'hazard_logits', 'exponential', 'weibull' (a survival "
                                      "function per row)", prediction, "a Cox model's risks need a Breslow baseline "
                                      "from the training predictions: after training, compute its integrated Brier "
                                      "score with glimr_cv.survival.breslow_survival and integrated_brier_score"))
        super().__init__(check_choice("prediction", prediction, ("hazard_logits", "exponential", "weibull")),
                         name, dtype)
        if prediction != "hazard_logits" and (intervals is not None or edges is not None):
            raise ValueError(expected("intervals" if intervals is not None else "edges",
                                      f"None with prediction={prediction!r} (it has no intervals)",
                                      intervals if intervals is not None else edges))
        self.intervals = check_int("intervals", intervals, 2, allow_none=True)
        self.edges = None if edges is None else _check_edges(edges)
        if self.edges is not None and intervals is not None and len(self.edges) - 1 != intervals:
            raise ValueError(expected("edges", f"{intervals + 1} edges for intervals={intervals}", self.edges.tolist()))
        if times is not None:
            times = np.atleast_1d(np.asarray(times, dtype=np.float64))
            if times.ndim != 1 or len(times) < 2 or not np.isfinite(times).all() or (np.diff(times) <= 0).any():
                raise ValueError(expected("times", "at least two increasing finite times", times.tolist()))
        self.times = times

    def _width(self) -> int | None:
        if self.prediction != "hazard_logits":
            return None
        return len(self.edges) - 1 if self.edges is not None else self.intervals

    def _value(self, train_time, train_event, time, event, pred) -> float:
        events = train_time[train_event == 1]
        if self.times is not None:
            grid = self.times
        elif len(events):
            grid = np.unique(np.quantile(events, _LEVELS))
        else:
            return float("nan")
        grid = grid[(grid >= time.min()) & (grid < time.max()) & (grid <= train_time.max())]
        if len(grid) < 2:
            return float("nan")
        if self.prediction == "hazard_logits":
            edges = self.edges
            if edges is None:
                edges = discrete_time_edges(train_time, train_event, self.intervals or pred.shape[1])
                if len(edges) - 1 != pred.shape[1]:
                    raise ValueError(expected("intervals", f"{pred.shape[1]} intervals, one per logit, from the "
                                              "training fold's event times", len(edges) - 1,
                                              f"their quantiles give the edges {edges.tolist()}; use fewer intervals"))
            survival = survival_at(pred, edges, grid)
        elif self.prediction == "exponential":
            survival = np.exp(-np.outer(np.exp(-pred[:, 0]), grid))
        else:
            scaled = np.outer(np.exp(-pred[:, 0]), grid)  # t / scale
            survival = np.exp(-np.power(scaled, np.exp(pred[:, 1:2])))
        return integrated_brier_score(train_time, train_event, time, event, survival, grid)

    def get_config(self):
        return {"name": self.name, "dtype": self.dtype, "prediction": self.prediction, "intervals": self.intervals,
                "edges": None if self.edges is None else self.edges.tolist(),
                "times": None if self.times is None else self.times.tolist()}
