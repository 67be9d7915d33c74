"""Survival losses for Keras 3 on TensorFlow: Cox partial likelihood, exponential and Weibull.

Every loss takes ``y_true`` of shape ``(n, 2)``, columns time and event (see
:func:`glimr_cv.survival.survival_labels`), skips rows whose time or event is NaN
(missing labels), and returns one number per batch: 0, with a zero gradient,
when no row counts. They are plain TensorFlow ops, differentiable and usable
inside ``model.fit``'s traced steps.

Labels are checked where they enter: events must be 0, 1 or NaN, times finite
and >= 0, and the predictions must have the labels' rows. An eager call raises
a ValueError that names ``y_true`` or ``y_pred``; inside a traced step (Keras's
``fit`` and ``evaluate``), shapes known when tracing are checked then, and the
values by a TensorFlow assertion whose message is the same (an
``InvalidArgumentError`` at run time), which leaves out the offending value
(computing it would cost more at every step). The assertions add about 8
microseconds of CPU a call, timed in a traced loss; in the train steps of a
small MLP (1.3 ms of CPU a step at batch 64, 2.7 ms at 1024) the difference was
within the measurement's noise, -3% to +2%. XLA (``jit_compile=True``) drops
them. Labels are ``(n, 2)`` exactly: a third column is refused, not ignored, as
it could be a label in another layout (an interval index and a censoring flag,
say).
"""

from __future__ import annotations

import keras
import tensorflow as tf

from ..checks import check_choice, expected

__all__ = ["cox_loss", "CoxLoss", "exponential_nll", "weibull_nll"]

_TIES = ("efron", "breslow")
_EVENTS = "events (column 1) 0 (censored), 1 (event) or NaN (missing)"
_TIMES = "finite times (column 0) >= 0"


def _fail_if(checks, name: str = "y_true") -> None:
    """No entry of any ``bad`` in ``checks``, ``(bad, values, what)`` triples, may be True.

    A ValueError naming ``name`` and the first offending entry of ``values`` in
    eager calls; in a traced graph, an assertion with the same message but
    without the entry (XLA drops it). The module docstring gives its cost.
    """
    if tf.executing_eagerly():
        for bad, values, what in checks:
            if bool(tf.reduce_any(bad)):
                raise ValueError(expected(name, what, tf.boolean_mask(values, bad)[0].numpy().item()))
        return
    for bad, _, what in checks:
        # string data only: a bare Assert op; showing the entry would cost a guarded computation at every step
        tf.debugging.Assert(~tf.reduce_any(bad), [expected(name, what, got="other values in a batch")])


def _same_rows(y_true, y_pred, out, message: str):
    """``out`` (``y_pred`` or a view of it), once ``y_pred`` is known to have the rows of ``y_true``.

    Checked when tracing where both row counts are known; otherwise asserted,
    and ``out`` waits for the assertion, so that no op that mixes the two runs
    first and fails with a message about itself.
    """
    rows, got = y_true.shape[0], y_pred.shape[0]
    if rows is not None and got is not None:
        if rows != got:
            raise ValueError(message)
        return out
    check = tf.debugging.assert_equal(tf.shape(y_true)[0], tf.shape(y_pred)[0], message=message)
    with tf.control_dependencies([check] if check is not None else []):
        return tf.identity(out)


def _label_values(time, event, valid, name: str = "y_true", events_after_zero: str = "") -> None:
    """Events 0 or 1 and times finite and >= 0 in the labelled rows; events at times > 0 when ``events_after_zero`` says why."""
    checks = [(valid & (event != 0) & (event != 1), event, _EVENTS),
              (valid & ((time < 0) | tf.math.is_inf(time)), time, _TIMES)]
    if events_after_zero:
        checks.append((valid & (event == 1) & (time <= 0), time, f"event times > 0 ({events_after_zero})"))
    _fail_if(checks, name)


def _columns(y_true, y_pred, width: int | None, what: str, events_after_zero: str = ""):
    """``(time, event, valid, prediction)``: labels split into columns and checked, predictions checked for ``width`` columns.

    ``width`` None takes any number of columns (at least one).
    """
    y_pred = tf.convert_to_tensor(y_pred)
    if not y_pred.dtype.is_floating:
        raise TypeError(expected("y_pred", f"floating-point {what}", got=f"dtype {y_pred.dtype.name}"))
    if y_pred.dtype in (tf.float16, tf.bfloat16):
        y_pred = tf.cast(y_pred, tf.float32)  # exp and sums of exp overflow in half precision
    y_true = tf.convert_to_tensor(y_true)
    if not y_true.dtype.is_floating:
        y_true = tf.cast(y_true, tf.float64)  # NaN must be representable
    if y_true.shape.rank != 2 or y_true.shape[-1] not in (2, None):
        raise ValueError(expected("y_true",
                                  "labels of shape (n, 2), columns time and event (glimr_cv.survival.survival_labels)",
                                  got=f"shape {tuple(y_true.shape)}"))
    shaped = y_pred
    if width == 1 and y_pred.shape.rank == 2 and y_pred.shape[-1] in (1, None):
        y_pred = y_pred[:, 0]
    if width == 1:
        fits = y_pred.shape.rank == 1
    else:
        fits = y_pred.shape.rank == 2 and (width is None or y_pred.shape[-1] in (width, None))
    if not fits:
        shape = "(n, 1) or (n,)" if width == 1 else f"(n, {width or 'K'})"
        raise ValueError(expected("y_pred", f"{what} of shape {shape}", got=f"shape {tuple(y_pred.shape)}"))
    y_pred = _same_rows(y_true, shaped, y_pred, expected("y_pred",
                                                         f"as many rows as y_true, of shape {tuple(y_true.shape)}",
                                                         got=f"shape {tuple(shaped.shape)}"))
    time, event = y_true[:, 0], y_true[:, 1]
    valid = ~(tf.math.is_nan(time) | tf.math.is_nan(event))
    _label_values(time, event, valid, events_after_zero=events_after_zero)
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
        On label or prediction shapes, rows that differ, events other than 0,
        1 or NaN, negative times (see the module docstring), or an unknown ``ties``.

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

    Raises
    ------
    ValueError
        On shapes, rows that differ, events other than 0, 1 or NaN, negative times.
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
        kept rows; 0, with a zero gradient, when no row is kept. A censored
        row at time 0 adds 0.

    Raises
    ------
    ValueError
        On shapes, rows that differ, events other than 0, 1 or NaN, negative
        times, and events at time 0, which have no finite likelihood (under
        XLA, which drops the assertion, the loss is NaN there).
    """
    time, event, valid, pred = _columns(y_true, y_pred, 2, "[log scale, log shape] pairs",
                                        events_after_zero="a Weibull log hazard at 0 is infinite")
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

