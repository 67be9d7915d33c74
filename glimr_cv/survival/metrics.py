"""Harrell's concordance index as a Keras 3 metric over a whole evaluation (TensorFlow backend)."""

from __future__ import annotations

import keras
import tensorflow as tf

__all__ = ["ConcordanceIndex"]


def _under_xla() -> bool:
    """Whether the graph being traced will be compiled by XLA (``jit_compile=True``)."""
    try:
        from tensorflow.python.framework import ops
        from tensorflow.python.ops import control_flow_util
    except ImportError:  # private modules moved: XLA's own error then names the rows variable
        return False
    return not tf.executing_eagerly() and bool(control_flow_util.GraphOrParentsInXlaContext(ops.get_default_graph()))


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
    (:func:`glimr_cv.survival.survival_labels`); predictions are risk scores of
    shape ``(n, 1)`` or ``(n,)``, higher meaning earlier events. Rows with a NaN
    time or event are skipped. The value after ``model.evaluate`` (or an epoch's
    ``val_`` log) is the index over the whole validation set, not a mean of
    per-batch values; it is NaN while no pair is comparable or when a risk is NaN.

    Parameters
    ----------
    name : str
        Keras name of the metric (logged as ``val_{name}``).
    dtype : str, optional
        dtype of the result.

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

    def __init__(self, name: str = "concordance_index", dtype=None):
        super().__init__(name=name, dtype=dtype)
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
        if _under_xla():
            raise ValueError(f"{self.name}: expected a model compiled with jit_compile=False (this metric keeps "
                             "every row it sees, a shape XLA cannot fix in advance), but got jit_compile=True "
                             "(Keras's jit_compile='auto' turns it on when a GPU is present)")
        y_true = tf.cast(tf.convert_to_tensor(y_true), tf.float64)
        y_pred = tf.cast(tf.convert_to_tensor(y_pred), tf.float64)
        if y_true.shape.rank != 2 or y_true.shape[-1] not in (2, None):
            raise ValueError(f"{self.name}: expected labels of shape (n, 2), columns time and event "
                             f"(glimr_cv.survival.survival_labels), but got shape {tuple(y_true.shape)}")
        if y_pred.shape.rank == 2 and y_pred.shape[-1] in (1, None):
            y_pred = y_pred[:, 0]
        if y_pred.shape.rank != 1:
            raise ValueError(f"{self.name}: expected risk scores of shape (n, 1) or (n,), but got shape {tuple(y_pred.shape)}")
        rows = tf.stack([y_true[:, 0], y_true[:, 1], y_pred], axis=1)
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
        return {"name": self.name, "dtype": self.dtype}
