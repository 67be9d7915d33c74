"""Keras 3 pooling layers that make a bag's instances one embedding, and reading attention back.

Every layer takes ``instances`` of shape ``(B, n, d)`` and an optional
``mask`` of shape ``(B, n)`` (True for a real instance, False for padding, as
:class:`~glimr_cv.mil.BagKFoldLoader` makes them) and returns ``(B, d)``;
padding never contributes. They are registered with Keras (package
``glimr_cv``), so a model using them saves and loads as ``.keras`` once this
module is imported.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
from keras import ops

from ..checks import check_type, expected

__all__ = ["AttentionPooling", "GatedAttentionPooling", "MeanPooling", "MaxPooling", "POOLINGS", "bag_pooling",
           "attention_weights"]

# A finite stand-in for -inf: its softmax weight underflows to exactly 0 in float32, and a bag of padding
# alone gets finite (then zeroed) weights rather than NaN
_MASKED_LOGIT = -1e30


def _bool_mask(mask, instances):
    return ops.ones(ops.shape(instances)[:2], dtype="bool") if mask is None else ops.cast(mask, "bool")


class _BagPooling(keras.layers.Layer):
    """Shared mask handling: the mask is consumed here, the bag embedding carries none."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.supports_masking = True  # takes a Keras mask too, instead of warning that it drops it

    def compute_mask(self, inputs, mask=None):
        return None

    def _check_rank(self, instances):
        if len(instances.shape) != 3:
            raise ValueError(expected(self.name, "instances of shape (batch, instances, features)",
                                      got=f"shape {tuple(instances.shape)}",
                                      hint="embed image instances first (e.g. keras.layers.TimeDistributed)"))


class _WeightedPooling(_BagPooling):
    """A pooling that is a weighted mean of the instances, whose weights :meth:`attention` gives."""

    def __init__(self, return_attention: bool = False, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(return_attention, bool):
            raise TypeError(expected("return_attention", "True or False", return_attention))
        self.return_attention = return_attention

    def attention(self, instances, mask=None):
        """The weights ``(B, n)`` of each bag's instances: 0 on padding, summing to 1 over the real ones."""
        raise NotImplementedError

    def call(self, instances, mask=None):
        self._check_rank(instances)
        weights = self.attention(instances, mask)
        pooled = ops.einsum("bn,bnd->bd", ops.cast(weights, instances.dtype), instances)
        return (pooled, weights) if self.return_attention else pooled

    def get_config(self):
        return {**super().get_config(), "return_attention": self.return_attention}


@keras.saving.register_keras_serializable(package="glimr_cv")
class AttentionPooling(_WeightedPooling):
    """Attention-based MIL pooling (Ilse, Tomczak and Welling, ICML 2018).

    A bag ``h_1..h_n`` becomes ``z = sum_k a_k h_k`` with
    ``a_k = softmax_k(w^T tanh(V h_k))`` over the bag's real instances, or, with
    ``gated=True``, ``a_k = softmax_k(w^T (tanh(V h_k) * sigmoid(U h_k)))``.
    Padding gets a weight of exactly 0.

    Parameters
    ----------
    units : int
        Width of ``V`` (and ``U``), the paper's ``L``.
    gated : bool
        Gated attention.
    return_attention : bool
        Return ``(z, a)``, with ``a`` of shape ``(B, n)`` (float32), instead of ``z``.

    Notes
    -----
    Called as ``layer(instances, mask=mask)``: ``instances`` of shape
    ``(B, n, d)``, ``mask`` a bool ``(B, n)`` that is False on padding (None:
    every instance is real).
    """

    def __init__(self, units: int = 128, gated: bool = False, return_attention: bool = False, **kwargs):
        super().__init__(return_attention=return_attention, **kwargs)
        if isinstance(units, bool) or not isinstance(units, (int, np.integer)) or units < 1:
            raise ValueError(expected("units", "an int >= 1", units))
        if not isinstance(gated, bool):
            raise TypeError(expected("gated", "True or False", gated))
        self.units = int(units)
        self.gated = gated
        self.attention_v = keras.layers.Dense(self.units, activation="tanh", name="attention_v")
        self.attention_u = keras.layers.Dense(self.units, activation="sigmoid", name="attention_u") if gated else None
        # a bias in w would shift every logit of a bag alike, which the softmax ignores
        self.attention_w = keras.layers.Dense(1, use_bias=False, name="attention_w")

    def build(self, input_shape):
        self.attention_v.build(input_shape)
        if self.attention_u is not None:
            self.attention_u.build(input_shape)
        self.attention_w.build((*input_shape[:-1], self.units))

    def attention(self, instances, mask=None):
        self._check_rank(instances)
        if not self.built:  # called directly, before the layer itself
            self.build(tuple(instances.shape))
        hidden = self.attention_v(instances)
        if self.attention_u is not None:
            hidden = hidden * self.attention_u(instances)
        # softmax in float32, also under mixed precision: float16 would round small weights to 0
        logits = ops.cast(ops.squeeze(self.attention_w(hidden), -1), "float32")
        mask = _bool_mask(mask, instances)
        weights = ops.softmax(ops.where(mask, logits, _MASKED_LOGIT), axis=-1)
        return ops.where(mask, weights, 0.0)  # exact zeros, also in a bag of padding alone

    def get_config(self):
        return {**super().get_config(), "units": self.units, "gated": self.gated}


@keras.saving.register_keras_serializable(package="glimr_cv")
class GatedAttentionPooling(AttentionPooling):
    """:class:`AttentionPooling` with ``gated=True``: Ilse et al.'s gated attention.

    Parameters
    ----------
    units : int
        Width of ``V`` and ``U``.
    return_attention : bool
        Return ``(z, a)`` instead of ``z``.
    """

    def __init__(self, units: int = 128, return_attention: bool = False, **kwargs):
        kwargs.pop("gated", None)  # a saved config holds it; this class is gated by definition
        super().__init__(units=units, gated=True, return_attention=return_attention, **kwargs)


@keras.saving.register_keras_serializable(package="glimr_cv")
class MeanPooling(_WeightedPooling):
    """The mean of a bag's real instances: attention with equal weights ``1 / n_real``.

    Parameters
    ----------
    return_attention : bool
        Return ``(z, a)`` instead of ``z``; ``a`` is ``1 / n_real`` on real instances, 0 on padding.
    """

    def attention(self, instances, mask=None):
        self._check_rank(instances)
        real = ops.cast(_bool_mask(mask, instances), "float32")
        return real / ops.maximum(ops.sum(real, axis=-1, keepdims=True), 1.0)  # a bag of padding alone pools to 0


@keras.saving.register_keras_serializable(package="glimr_cv")
class MaxPooling(_BagPooling):
    """The feature-wise maximum over a bag's real instances (0 for a bag of padding alone)."""

    def call(self, instances, mask=None):
        self._check_rank(instances)
        mask = _bool_mask(mask, instances)
        lowest = ops.full_like(instances, float(np.finfo(keras.backend.standardize_dtype(instances.dtype)).min))
        pooled = ops.max(ops.where(mask[..., None], instances, lowest), axis=1)
        return ops.where(ops.any(mask, axis=1)[:, None], pooled, ops.zeros_like(pooled))


POOLINGS = ("attention", "gated", "mean", "max")


def bag_pooling(pooling: str, units: int = 128, **kwargs) -> keras.layers.Layer:
    """A pooling layer by name, for a builder whose search space tunes the pooling.

    Parameters
    ----------
    pooling : {"attention", "gated", "mean", "max"}
        :class:`AttentionPooling`, :class:`GatedAttentionPooling`,
        :class:`MeanPooling` or :class:`MaxPooling`.
    units : int
        Attention width; ignored by ``"mean"`` and ``"max"``.
    **kwargs
        Other layer arguments (``name``, ``return_attention``, ...).

    Raises
    ------
    ValueError
        On an unknown ``pooling``.
    """
    if pooling == "attention":
        return AttentionPooling(units, **kwargs)
    if pooling == "gated":
        return GatedAttentionPooling(units, **kwargs)
    if pooling == "mean":
        return MeanPooling(**kwargs)
    if pooling == "max":
        return MaxPooling(**kwargs)
    raise ValueError(expected("pooling", f"one of {', '.join(map(repr, POOLINGS))}", pooling))


def _pooling_layer(model, layer):
    """The layer whose attention :func:`attention_weights` reads: ``layer``, or the model's only one."""
    kinds = "an AttentionPooling, GatedAttentionPooling or MeanPooling layer"
    check_type("model", model, keras.Model, f"a Keras model with {kinds}")
    if isinstance(layer, str):
        layer = model.get_layer(layer)
        if not isinstance(layer, _WeightedPooling):
            raise ValueError(expected("layer", f"the name of {kinds}", got=f"{layer.name!r}, a {type(layer).__name__}"))
    if layer is not None:
        if not isinstance(layer, _WeightedPooling):
            raise TypeError(expected("layer", f"a name or {kinds} of the model", layer))
        return layer
    found = [candidate for candidate in model.layers if isinstance(candidate, _WeightedPooling)]
    if len(found) == 1:
        return found[0]
    if not found:
        others = sorted({type(candidate).__name__ for candidate in model.layers if isinstance(candidate, _BagPooling)})
        raise ValueError(expected("model", f"a model with {kinds}", got=f"one with {', '.join(others) or 'none'}"))
    raise ValueError(expected("layer", "the name of one of the model's pooling layers "
                                       f"{[candidate.name for candidate in found]}", None))


def attention_weights(model: keras.Model, bag: Any, layer: Any = None):
    """The attention weights a trained model gives the instances of a bag.

    Parameters
    ----------
    model : keras.Model
        A functional model with one :class:`AttentionPooling`,
        :class:`GatedAttentionPooling` or :class:`MeanPooling` layer (or name it
        with ``layer``), taking ``{"instances", "mask"}`` as
        :class:`~glimr_cv.mil.BagKFoldLoader` feeds them.
    bag : numpy.ndarray or dict
        One bag's ``(n, ...)`` instances, as the model takes them (preprocessed:
        see :meth:`BagKFoldLoader.bag`); or one batch of features,
        ``{"instances", "mask"}``, such as a validation dataset yields.
    layer : str or layer, optional
        The pooling layer, when the model has several.

    Returns
    -------
    numpy.ndarray or list of numpy.ndarray
        float32 ``(n,)`` weights of the bag's instances, in order, summing to 1
        (mean pooling: ``1 / n`` each); for a batch, one such array per bag,
        without its padding.

    Raises
    ------
    ValueError, TypeError
        For a model without such a layer, or a bag that is not one.
    """
    pooling = _pooling_layer(model, layer)
    batch = isinstance(bag, dict)
    if batch:
        features = {k: ops.convert_to_tensor(v) for k, v in bag.items()}
        mask = ops.convert_to_numpy(features["mask"]).astype(bool) if "mask" in features else None
    else:
        instances = np.asarray(bag)
        if instances.ndim < 1 or len(instances) == 0:
            raise ValueError(expected("bag", "an (n, ...) array of at least one instance",
                                      got=f"shape {instances.shape}"))
        features = {"instances": instances[None], "mask": np.ones((1, len(instances)), dtype=bool)}
        mask = features["mask"]
    if not isinstance(model.input, dict):
        features = features["instances"]  # a model of instances alone
    try:
        # the pooling layer's own inputs (instance embeddings, mask) for these features, then its weights
        inputs = keras.Model(model.input, pooling.input)(features, training=False)
    except ValueError as e:
        raise ValueError(f"model: expected a functional model whose layer {pooling.name!r} takes the model's inputs "
                         f"{{'instances', 'mask'}}: {e}") from e
    embedded, pool_mask = (inputs[0], inputs[1]) if isinstance(inputs, (list, tuple)) else (inputs, None)
    weights = ops.convert_to_numpy(pooling.attention(embedded, pool_mask)).astype(np.float32)
    if mask is None:
        mask = np.ones(weights.shape, dtype=bool)
    rows = [w[m] for w, m in zip(weights, mask)]
    return rows if batch else rows[0]
