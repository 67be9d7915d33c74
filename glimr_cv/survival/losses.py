"""Survival losses for Keras 3 on TensorFlow: Cox partial likelihood, exponential and Weibull.

Every loss takes ``y_true`` of shape ``(n, 2)``, columns time and event (see
:func:`glimr_cv.survival.survival_labels`), skips rows whose time or event is NaN
(missing labels), and returns one number per batch: 0, with a zero gradient,
when no row counts. They are plain TensorFlow ops, differentiable and usable
inside ``model.fit``'s traced steps.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from ..checks import check_choice

__all__ = ["cox_loss", "CoxLoss", "exponential_nll", "weibull_nll"]

_TIES = ("efron", "breslow")


def _columns(y_true, y_pred, width: int, what: str):
    """``(time, event, valid, prediction)``: labels split into columns and predictions checked for ``width`` columns."""
    y_pred = tf.convert_to_tensor(y_pred)
    if not y_pred.dtype.is_floating:
        raise TypeError(f"y_pred: expected floating-point {what}, but got dtype {y_pred.dtype.name}")
    if y_pred.dtype in (tf.float16, tf.bfloat16):
        y_pred = tf.cast(y_pred, tf.float32)  # exp and sums of exp overflow in half precision
    y_true = tf.convert_to_tensor(y_true)
    if not y_true.dtype.is_floating:
        y_true = tf.cast(y_true, tf.float64)  # NaN must be representable
    if y_true.shape.rank != 2 or y_true.shape[-1] not in (2, None):
        raise ValueError(f"y_true: expected labels of shape (n, 2), columns time and event "
                         f"(glimr_cv.survival.survival_labels), but got shape {tuple(y_true.shape)}")
    if width == 1 and y_pred.shape.rank == 2 and y_pred.shape[-1] in (1, None):
        y_pred = y_pred[:, 0]
    fits = y_pred.shape.rank == 1 if width == 1 else y_pred.shape.rank == 2 and y_pred.shape[-1] in (width, None)
    if not fits:
        shape = "(n, 1) or (n,)" if width == 1 else f"(n, {width})"
        raise ValueError(f"y_pred: expected {what} of shape {shape}, but got shape {tuple(y_pred.shape)}")
    time, event = y_true[:, 0], y_true[:, 1]
    valid = ~(tf.math.is_nan(time) | tf.math.is_nan(event))
    return time, event, valid, y_pred


def _cox_terms(time, is_event, risk, ties: str):
    """Per row, in time order: log(Cox denominator at the row's time) - risk for an event, 0 otherwise.

    ``time`` of rows to skip must be -inf and ``risk`` finite, so that they sort
    last and sit in no other row's risk set.
    """
    dtype = risk.dtype
    n = tf.shape(risk)[0]
    order = tf.argsort(time, direction="DESCENDING", stable=True)
    t, e, x = tf.gather(time, order), tf.gather(is_event, order), tf.gather(risk, order)
    # log sum of exp(risk) over the rows at or before each position: the rows with later or equal times
    cumulative = tf.math.cumulative_logsumexp(x)
    starts = tf.concat([[True], t[1:] != t[:-1]], axis=0)
    group = tf.cumsum(tf.cast(starts, tf.int32)) - 1  # tie group of each position
    last = tf.gather(tf.math.unsorted_segment_max(tf.range(n), group, n), group)
    log_risk_set = tf.gather(cumulative, last)  # a tied group's risk set holds all of the group
    if ties == "efron":
        ev = tf.cast(e, dtype)
        tied_events = tf.gather(tf.math.unsorted_segment_sum(ev, group, n), group)
        before = tf.cumsum(ev, exclusive=True)
        rank = before - tf.gather(tf.math.unsorted_segment_min(before, group, n), group)  # l = 0, 1, ... d - 1
        # exp(x - log_risk_set) <= 1, so the shares cannot overflow however large the risks
        share = tf.where(e, tf.exp(x - log_risk_set), tf.zeros_like(x))
        tied_share = tf.gather(tf.math.unsorted_segment_sum(share, group, n), group)
        fraction = tf.where(e, rank / tf.maximum(tied_events, 1) * tied_share, tf.zeros_like(x))
        log_denominator = log_risk_set + tf.math.log1p(-fraction)  # log(S_R - l/d S_D); fraction <= (d-1)/d
    else:
        log_denominator = log_risk_set
    return tf.where(e, log_denominator - x, tf.zeros_like(x))


@keras.saving.register_keras_serializable(package="glimr_cv")
def cox_loss(y_true, y_pred, ties: str = "efron"):
    """Negative Cox partial log-likelihood of a batch, per event.

    Parameters
    ----------
    y_true : tensor of shape (n, 2)
        Columns time and event (1 event, 0 censored); a row with NaN in either is skipped.
    y_pred : tensor of shape (n, 1) or (n,)
        Risk score (log hazard ratio) per row: a linear output, higher means earlier events.
    ties : {"efron", "breslow"}
        Handling of events at equal times. Efron's is what lifelines and
        R's ``coxph`` use; Breslow's is simpler and coarser with many ties.

    Returns
    -------
    tensor
        Scalar: the negative partial log-likelihood of the batch's rows divided
        by their number of events, so that its scale does not grow with the
        batch size. A batch without events gives 0 with a zero gradient (its
        likelihood is 1). Risk sets are the batch's rows only, so the value
        depends on the batch size (``val_loss`` on the validation batch size):
        compare models by :class:`~glimr_cv.survival.ConcordanceIndex`.

    Raises
    ------
    ValueError
        On label or prediction shapes, or an unknown ``ties``.

    Notes
    -----
    O(n log n): one sort by time and cumulative log-sum-exp sums. The
    likelihood is invariant to adding a constant to every risk, so a bias on the
    risk output learns nothing. The loss does not decompose over rows, so
    Keras sample weights do not weigh rows: they multiply the batch's loss by
    their mean.
    """
    check_choice("ties", ties, _TIES)
    time, event, valid, risk = _columns(y_true, y_pred, 1, "risk scores")
    is_event = valid & (event != 0)
    # skipped rows: the lowest time sorts them last, so no kept row has them in its risk set
    time = tf.where(valid, time, tf.constant(-float("inf"), time.dtype))
    terms = _cox_terms(time, is_event, tf.where(valid, risk, tf.zeros_like(risk)), ties)
    events = tf.reduce_sum(tf.cast(is_event, risk.dtype))
    return tf.reduce_sum(terms) / tf.maximum(events, 1)


@keras.saving.register_keras_serializable(package="glimr_cv")
class CoxLoss(keras.losses.Loss):
    """:func:`cox_loss` as a Keras loss object, saved and reloaded with its ``ties``.

    Parameters
    ----------
    ties : {"efron", "breslow"}
        See :func:`cox_loss`.
    name : str
        Keras name of the loss.
    reduction, dtype
        As for any ``keras.losses.Loss``; the loss is already one number per batch.
    """

    def __init__(self, ties: str = "efron", name: str = "cox_loss", reduction="sum_over_batch_size", dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.ties = check_choice("ties", ties, _TIES)

    def call(self, y_true, y_pred):
        return cox_loss(y_true, y_pred, ties=self.ties)

    def get_config(self):
        return {**super().get_config(), "ties": self.ties}


def _mean_over_valid(values, valid):
    kept = tf.reduce_sum(tf.cast(valid, values.dtype))
    return tf.reduce_sum(tf.where(valid, values, tf.zeros_like(values))) / tf.maximum(kept, 1)


@keras.saving.register_keras_serializable(package="glimr_cv")
def exponential_nll(y_true, y_pred):
    """Negative log-likelihood of an exponential survival time, with right censoring, per row.

    Parameters
    ----------
    y_true : tensor of shape (n, 2)
        Columns time (>= 0) and event (1 event, 0 censored); a row with NaN in either is skipped.
    y_pred : tensor of shape (n, 1) or (n,)
        ``log(scale)`` per row, a linear output: the scale is the mean survival
        time, the survival function ``exp(-t / scale)`` (lifelines'
        ``ExponentialFitter`` ``lambda_``). Higher means longer survival.

    Returns
    -------
    tensor
        Scalar: ``event * log(scale) + time / scale`` averaged over the kept
        rows; 0, with a zero gradient, when no row is kept.
    """
    time, event, valid, log_scale = _columns(y_true, y_pred, 1, "log scales")
    dtype = log_scale.dtype
    time = tf.where(valid, tf.cast(time, dtype), tf.zeros_like(log_scale))
    event = tf.where(valid, tf.cast(event != 0, dtype), tf.zeros_like(log_scale))
    return _mean_over_valid(event * log_scale + time * tf.exp(-log_scale), valid)


@keras.saving.register_keras_serializable(package="glimr_cv")
def weibull_nll(y_true, y_pred):
    """Negative log-likelihood of a Weibull survival time, with right censoring, per row.

    Parameters
    ----------
    y_true : tensor of shape (n, 2)
        Columns time and event (1 event, 0 censored); a row with NaN in either is skipped.
    y_pred : tensor of shape (n, 2)
        Per row ``[log(scale), log(shape)]``, linear outputs: the survival function
        is ``exp(-(t / scale) ** shape)`` (lifelines' ``WeibullFitter``
        ``lambda_`` and ``rho_``). Higher ``log(scale)`` means longer survival.

    Returns
    -------
    tensor
        Scalar: ``(t / scale) ** shape - event * log(hazard(t))`` averaged over the
        kept rows; 0, with a zero gradient, when no row is kept. An event at
        time 0 has no finite likelihood and gives NaN (the search then fails the
        fold); a censored row at time 0 adds 0.
    """
    time, event, valid, pred = _columns(y_true, y_pred, 2, "[log scale, log shape] pairs")
    dtype = pred.dtype
    log_scale, log_shape = pred[:, 0], pred[:, 1]
    time = tf.cast(time, dtype)
    positive = valid & (time > 0)
    is_event = valid & (event != 0)
    # log t only where t > 0, so that no -inf enters a product or a gradient
    z = tf.where(positive, tf.math.log(tf.where(positive, time, tf.ones_like(time))) - log_scale, tf.zeros_like(time))
    shape = tf.exp(log_shape)
    cumulative_hazard = tf.where(positive, tf.exp(shape * z), tf.zeros_like(z))
    log_hazard = log_shape - log_scale + (shape - 1) * z
    nan = tf.fill(tf.shape(z), tf.constant(float("nan"), dtype))
    log_hazard = tf.where(is_event & ~positive, nan, log_hazard)
    return _mean_over_valid(cumulative_hazard - tf.where(is_event, log_hazard, tf.zeros_like(z)), valid)

