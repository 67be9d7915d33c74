"""Keras 3 helpers for builders: losses, metrics and optimizers from a config."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Mapping
from typing import Any

import keras

from ..checks import expected
from ..space.sections import OPTIMIZERS, loss_weight, task_metrics

__all__ = ["keras_losses", "keras_metrics", "keras_optimizer", "FunctionLoss"]


def _instantiate(obj: Any, kwargs: dict, name: str | None, path: str, kind: str):
    """Build a loss or metric from a class, an instance, a function or a Keras name."""
    if inspect.isclass(obj):
        if name is not None and "name" in inspect.signature(obj).parameters:
            kwargs = {"name": name, **kwargs}
        return obj(**kwargs)
    if isinstance(obj, str):
        resolved = (keras.losses.get if kind == "loss" else keras.metrics.get)(obj)
        if isinstance(resolved, (keras.losses.Loss, keras.metrics.Metric)):
            resolved = type(resolved)  # rebuild it under the config's name and kwargs
        return _instantiate(resolved, kwargs, name, path, kind)
    if callable(obj):
        if inspect.isfunction(obj) or isinstance(obj, functools.partial):
            # wrapped, not partial-ed: a functools.partial cannot be saved with the model (model.save)
            if kind == "metric":
                return keras.metrics.MeanMetricWrapper(obj, name=name, **kwargs)
            return FunctionLoss(obj, name=name, **kwargs) if kwargs else obj
        return obj  # an already built Loss or Metric instance
    raise TypeError(expected(path, f"a Keras {kind} class, function or name", obj))


@keras.saving.register_keras_serializable(package="glimr_cv")
class FunctionLoss(keras.losses.Loss):
    """A loss function called with fixed keyword arguments, as ``fn(y_true, y_pred, **kwargs)``.

    What a task's ``{"loss": function, "kwargs": {...}}`` becomes; unlike a
    ``functools.partial``, it saves with the model when ``fn`` is a registered
    Keras object (as :func:`glimr_cv.survival.cox_loss` is).
    """

    def __init__(self, fn, name: str | None = None, reduction: str = "sum_over_batch_size", **kwargs):
        super().__init__(name=name or getattr(fn, "__name__", "loss"), reduction=reduction)
        self.fn, self.fn_kwargs = fn, kwargs

    def call(self, y_true, y_pred):
        return self.fn(y_true, y_pred, **self.fn_kwargs)

    def get_config(self) -> dict:
        return {**super().get_config(), "fn": keras.saving.serialize_keras_object(self.fn), "fn_kwargs": self.fn_kwargs}

    @classmethod
    def from_config(cls, config: dict) -> "FunctionLoss":
        config = dict(config)
        fn = keras.saving.deserialize_keras_object(config.pop("fn"))
        config.pop("dtype", None)
        return cls(fn, **config.pop("fn_kwargs"), **config)


def _what(config: Any) -> str:
    """What a builder helper got instead of the section it needs, in words."""
    if isinstance(config, Mapping):
        return f"a dict with keys {sorted(map(str, config))[:8]}"
    return repr(config) if isinstance(config, (str, int, float)) else type(config).__name__


def _tasks(config: Any) -> Mapping:
    """The ``tasks`` section of a sampled configuration, or a message that says what was passed instead."""
    if not isinstance(config, Mapping) or not isinstance(config.get("tasks"), Mapping):
        raise TypeError(expected("config", "a sampled configuration (the builder's argument) with a tasks section",
                                 got=_what(config)))
    return config["tasks"]


def keras_losses(config: dict) -> tuple[dict, dict]:
    """Per-task losses and loss weights for ``model.compile``.

    Parameters
    ----------
    config : dict
        A sampled configuration with a ``tasks`` section; each task has
        ``loss = {"name", "loss": class or function, "kwargs"?}`` and ``loss_weight``.

    Returns
    -------
    losses, loss_weights : dict, dict
        Both keyed by task name, the names of the model's outputs.
    """
    losses, weights = {}, {}
    for task_name, task in _tasks(config).items():
        spec = task["loss"]
        losses[task_name] = _instantiate(
            spec["loss"], dict(spec.get("kwargs") or {}), spec.get("name"), f"tasks/{task_name}/loss", "loss"
        )
        weights[task_name] = float(loss_weight(task["loss_weight"]))
    return losses, weights


def keras_metrics(config: dict) -> dict:
    """Per-task lists of Keras metrics, each named by its ``name`` in the config.

    Keras then logs them as ``val_{name}`` (one output) or ``val_{task}_{name}``,
    and the search reports them as ``{task}_{name}``.
    """
    out = {}
    for task_name, task in _tasks(config).items():
        path = f"tasks/{task_name}"
        out[task_name] = [
            _instantiate(m["metric"], dict(m.get("kwargs") or {}), m["name"], f"{path}/metrics", "metric")
            for m in task_metrics(task, path)
        ]
    return out


def keras_optimizer(config: dict) -> keras.optimizers.Optimizer:
    """A Keras 3 optimizer from an ``optimization`` section.

    ``method`` is one of ``sgd, rms, adam, adamw, nadam, adagrad, adadelta``.
    Every other key the optimizer's constructor accepts (``learning_rate``,
    ``momentum``, ``rho``, ``beta_1``, ``use_ema``, ...) is passed; keys it does
    not accept (``epochs``, parameters of other methods) are ignored.

    Raises
    ------
    ValueError
        For an unknown method, listing the known ones.
    """
    if not isinstance(config, Mapping) or "optimization" in config:
        raise TypeError(expected("config", "an optimization section, config['optimization'], with a method",
                                 got=_what(config)))
    method = config.get("method")
    if method not in OPTIMIZERS:
        raise ValueError(f"optimization/method: unknown optimizer {method!r}; expected one of {sorted(OPTIMIZERS)}")
    cls = getattr(keras.optimizers, OPTIMIZERS[method])
    accepted = set(inspect.signature(cls.__init__).parameters) - {"self", "name", "kwargs"}
    kwargs = {k: v for k, v in config.items() if k in accepted}
    return cls(**kwargs)
