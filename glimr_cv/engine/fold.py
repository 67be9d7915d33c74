"""One fold, prepared the same way for the preflight and for a Ray Tune trial.

:func:`build_model` runs the builder and compiles its model, :func:`load_fold`
runs the loader; both check what the user's function returned, with one wording.
:func:`preflight` is :meth:`glimr_cv.Search.check`: both of them for fold 0, then
one batch of training in this process.
"""

from __future__ import annotations

import uuid
import weakref
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from ..checks import expected

__all__ = ["TrialSpec", "fold_seed", "build_model", "load_fold", "validation_report", "preflight", "fold_objects",
           "fit_fold_objects", "fold_tasks", "fit_to_labels", "fit_to_fold"]

_BUILDER_RESULT = "(model, losses, loss_weights, metrics)"


@dataclass
class TrialSpec:
    """Everything a fold needs besides its configuration; shipped to workers once."""

    builder: Callable
    loader: Callable
    metric: str
    mode: str
    cv_folds: int | None
    task_names: list
    metric_names: list
    loader_kwargs: dict = field(default_factory=dict)
    fit_kwargs: dict = field(default_factory=dict)
    seed: int = 0
    reuse_models: bool = True
    fold_stopping: Any = None  # an EpochRule (glimr_cv.engine.racing) that stops hopeless folds
    driver_stops: bool = False  # poll for stops posted by glimr_cv.engine.stopping.FoldStops
    epoch_checkpoints: bool = False  # keep each epoch's latest state, so a restored fold continues
    deterministic: bool = False  # TensorFlow op determinism in every worker
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex)  # tells this search's configurations apart


def fold_seed(spec: TrialSpec, config_id: int, fold: int) -> int:
    """The Keras seed of one fold: distinct for every (search seed, configuration, fold)."""
    # seed s+1 must not reuse seed s's initialisations
    return (spec.seed * 1_000_003 + 1009 * config_id + fold) % 2**31


def _check_built(built: Any, tasks: list) -> tuple:
    import keras

    if not isinstance(built, tuple) or len(built) != 4:
        got = f"a tuple of length {len(built)}" if isinstance(built, tuple) else type(built).__name__
        raise TypeError(expected("builder", f"a function that returns {_BUILDER_RESULT}",
                                 got=f"one that returned {got}"))
    model, losses, loss_weights, metrics = built
    if not isinstance(model, keras.Model):
        raise TypeError(expected("builder", "a keras.Model as the first element", got=type(model).__name__))
    names = None
    if model.built:  # a subclassed model makes its outputs in fit
        output = getattr(model, "output", None)
        # dict outputs are keyed by task, whatever layer made them (a nested model, say)
        names = list(output) if isinstance(output, dict) else getattr(model, "output_names", None)
    if names is not None and sorted(names) != sorted(tasks):
        raise ValueError(expected("builder", f"a model whose outputs are named after the tasks {sorted(tasks)}",
                                  got=f"outputs named {sorted(names)}",
                                  hint=f"name each output layer after its task, e.g. keras.layers.Dense(..., "
                                       f"name={tasks[0]!r})"))
    for what, value in (("losses", losses), ("loss_weights", loss_weights), ("metrics", metrics)):
        if isinstance(value, dict) and not set(value) <= set(tasks):
            raise ValueError(expected("builder", f"{what} keyed by the tasks {sorted(tasks)}",
                                      got=f"{what} keyed {sorted(value)}"))
    return built


_LAST_MODEL: tuple[Any, Any] | None = None  # (configuration key, model) of this process's last fold
#: The losses and metrics a model was compiled with that are fit to a fold (``fit_fold``), by task.
_FOLD_OBJECTS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def fold_objects(losses: Any, metrics: Any, tasks: list) -> dict[str, list]:
    """The losses and metrics of each task that must be told a fold's training labels.

    An object with a ``fit_fold(train_labels)`` method (a discrete-time loss's
    interval edges, an IPCW metric's censoring distribution; see
    :mod:`glimr_cv.survival`) is fit to the training rows of each fold before it
    trains or is evaluated.
    """
    import keras

    out: dict[str, list] = {}
    for task in tasks:
        found = []
        for group in (losses, metrics):
            items = group.get(task) if isinstance(group, dict) else (group if len(tasks) == 1 else None)
            for obj in keras.tree.flatten(items) if items is not None else []:
                if callable(getattr(obj, "fit_fold", None)) and not isinstance(obj, type):
                    found.append(obj)
        if found:
            out[task] = found
    return out


def fit_fold_objects(losses: Any, metrics: Any, tasks: list, train_labels: dict) -> None:
    """Tell every fold-fitted loss and metric the training labels of its task (``fit_fold``)."""
    import numpy as np

    for task, objects in fold_objects(losses, metrics, tasks).items():
        for obj in objects:
            obj.fit_fold(np.asarray(train_labels[task]))


def fold_tasks(model: Any) -> list[str]:
    """The tasks whose losses or metrics ``model`` was compiled with must be fit to training labels."""
    return sorted(_FOLD_OBJECTS.get(model) or {})


def fit_to_labels(model: Any, train_labels: dict) -> None:
    """Fit ``model``'s fold-fitted losses and metrics to ``train_labels`` (task -> labels of the rows it trains on)."""
    import numpy as np

    for task, objects in (_FOLD_OBJECTS.get(model) or {}).items():
        for obj in objects:
            obj.fit_fold(np.asarray(train_labels[task]))


def fit_to_fold(model: Any, spec: "TrialSpec", fold: int) -> None:
    """Fit ``model``'s fold-fitted losses and metrics to fold ``fold``'s training labels, from the loader.

    Raises
    ------
    TypeError
        When they need labels that the loader cannot give (it does not hold its rows).
    """
    objects = _FOLD_OBJECTS.get(model)
    if not objects:
        return
    from ..data.contract import resolve_folds, row_loader

    names = ", ".join(sorted({f"{task}: {type(o).__name__}" for task, objs in objects.items() for o in objs}))
    loader = row_loader(spec.loader, f"{names}, fit to each fold's training labels (fit_fold),")
    fit_to_labels(model, loader.train_labels(fold, resolve_folds(spec.cv_folds)))


def _signature(variables) -> list:
    return [(tuple(v.shape), str(v.dtype)) for v in variables]


def build_model(params: dict, spec: TrialSpec, seed: int, key: Any = None) -> tuple[Any, bool]:
    """``(model, reused)``: the compiled model a new fold trains, in the builder's initial state for ``seed``.

    The builder always runs (after ``clear_session`` and ``set_random_seed(seed)``) and
    its model is compiled with a fresh optimizer. When ``key`` (the configuration's
    identity; ``None`` turns reuse off) equals that of this process's previous fold and
    the previous model has the same variables, the previous model is returned instead
    (``reused`` is True), with every variable (weights, random-seed state, optimizer
    slots and step) set to the fresh model's values: the fold trains exactly as the
    fresh model would, without tracing Keras's train and test steps again (~1 s per
    fold for the demo MLP on one core).

    Raises
    ------
    TypeError, ValueError
        When the builder does not return ``(model, losses, loss_weights, metrics)``
        with outputs named by task.
    """
    global _LAST_MODEL
    import keras

    from ..keras.helpers import keras_optimizer

    last = _LAST_MODEL[1] if _LAST_MODEL is not None and _LAST_MODEL[0] == key else None
    _LAST_MODEL = None  # another configuration's model goes with the session
    # A reused actor keeps no graph or layer names from earlier folds. clear_session
    # also runs the garbage collector, which gc.freeze() in the worker keeps cheap.
    keras.backend.clear_session()
    keras.utils.set_random_seed(seed)
    model, losses, loss_weights, metrics = _check_built(spec.builder(params), spec.task_names)
    # a metric that keeps a growing state (glimr_cv.survival.ConcordanceIndex) cannot run under XLA,
    # which Keras's jit_compile="auto" turns on where a GPU is
    no_xla = any(getattr(m, "supports_jit", True) is False for m in keras.tree.flatten(metrics or []))
    model.compile(optimizer=keras_optimizer(params["optimization"]), loss=losses,
                  loss_weights=loss_weights, metrics=metrics, jit_compile=False if no_xla else "auto")
    _FOLD_OBJECTS[model] = fold_objects(losses, metrics, spec.task_names)
    if key is None or not model.built:  # a subclassed model makes its variables in fit
        return model, False
    model.optimizer.build(model.trainable_variables)
    reused = (
        last is not None
        and [v.path for v in last.variables] == [v.path for v in model.variables]
        and _signature(last.variables) == _signature(model.variables)
        and _signature(last.optimizer.variables) == _signature(model.optimizer.variables)
    )
    if reused:
        for old, new in zip(last.variables + last.optimizer.variables, model.variables + model.optimizer.variables):
            old.assign(new)
        model = last
    _LAST_MODEL = (key, model)
    return model, reused


def load_fold(params: dict, spec: TrialSpec, fold: int) -> tuple[Any, Any]:
    """``(train_ds, val_ds)`` of ``fold`` from the loader, checked.

    Raises
    ------
    TypeError, ValueError
        When the loader does not return two ``tf.data.Dataset`` of
        ``(features, {task: labels})``.
    """
    import tensorflow as tf

    kwargs = {**params["data"], **spec.loader_kwargs}
    if spec.cv_folds:
        kwargs.update(cv_index=fold, cv_folds=spec.cv_folds)
    loaded = spec.loader(**kwargs)
    if not isinstance(loaded, tuple) or len(loaded) != 2 or not all(isinstance(d, tf.data.Dataset) for d in loaded):
        got = f"({', '.join(type(d).__name__ for d in loaded)})" if isinstance(loaded, tuple) else type(loaded).__name__
        raise TypeError(expected("loader", "a function that returns (train_ds, val_ds), two tf.data.Dataset",
                                 got=f"one that returned {got}"))
    tasks = spec.task_names
    for split, ds in zip(("train", "validation"), loaded):
        element = ds.element_spec
        if not isinstance(element, tuple) or len(element) < 2:
            raise ValueError(expected("loader", f"{split} elements that are (features, labels) pairs",
                                      got=str(element)))
        labels = element[1]
        if not isinstance(labels, dict):
            raise ValueError(expected("loader",
                                      f"{split} labels in a dict keyed by task name, e.g. {{{tasks[0]!r}: y}}",
                                      got=type(labels).__name__))
        if sorted(labels) != sorted(tasks):
            raise ValueError(expected("loader", f"{split} labels keyed by the tasks {sorted(tasks)}",
                                      got=f"keys {sorted(labels)}"))
    return loaded


def _log_key(logs: dict, task: str, name: str, single: bool) -> str:
    # Keras 3 prefixes validation logs by output name only when a model has several outputs
    for key in (f"val_{task}_{name}", f"val_{name}") if single else (f"val_{task}_{name}",):
        if key in logs:
            return key
    raise KeyError(
        f"metric {task}_{name}: Keras logged no 'val_{task}_{name}'"
        + ("" if not single else f" or 'val_{name}'")
        + f"; logged keys are {sorted(logs)}. Are the model's outputs named by task and "
        "is each metric built with its config name (see glimr_cv.keras_metrics)?"
    )


def validation_report(logs: dict, spec: TrialSpec) -> dict:
    """Map Keras epoch logs to ``{task}_{metric}``, ``{task}_loss`` and ``loss``."""
    single = len(spec.task_names) == 1
    report = {}
    for name in spec.metric_names:
        if name == "loss":
            report["loss"] = float(logs["val_loss"])
            continue
        task = next(t for t in spec.task_names if name.startswith(f"{t}_"))
        report[name] = float(logs[_log_key(logs, task, name[len(task) + 1 :], single)])
    return report


def _one_batch(model, spec: TrialSpec, params: dict) -> dict:
    """Train on one batch of fold 0 and validate on one; the validation report."""
    train_ds, val_ds = load_fold(params, spec, 0)
    try:
        history = model.fit(train_ds.take(1), validation_data=val_ds.take(1), epochs=1, verbose=0, shuffle=False)
    except Exception as err:  # Keras raises many types for shape and dtype mismatches
        raise ValueError(
            f"preflight: training on one batch of fold 0 failed: {type(err).__name__}: {str(err).strip()[:800]}\n"
            f"loader gives features {train_ds.element_spec[0]} and labels {train_ds.element_spec[1]}; "
            f"the model takes {[tuple(t.shape) for t in model.inputs]} and outputs "
            f"{dict(zip(model.output_names, [tuple(t.shape) for t in model.outputs]))}"
        ) from err
    try:
        return validation_report({k: v[-1] for k, v in history.history.items()}, spec)
    except KeyError as err:
        raise ValueError(f"preflight: {err.args[0]}") from None


def preflight(spec: TrialSpec, params: dict, others: Sequence[tuple[dict, list, bool]] = ()) -> dict:
    """Build, load fold 0 and train and validate on one batch, in this process.

    Parameters
    ----------
    spec : TrialSpec
        The search's settings.
    params : dict
        The configuration trained on one batch.
    others : sequence of (dict, list of str, bool)
        Further configurations, with the options each is the first to take
        (:func:`glimr_cv.space.notation.covering_configs`) and whether one of them
        is structured: each is built and compiled, and one with a structured
        option (whose loss or layers only then exist) is also trained on one batch.

    Returns
    -------
    dict
        The validation metrics of ``params``'s batch, by reported name.

    Raises
    ------
    TypeError, ValueError
        Naming the builder, the loader or the metric at fault, and for
        ``others`` the options the failing configuration takes
        (``tasks/label/loss[1]``).
    """
    from .quiet import import_tensorflow_quietly

    import_tensorflow_quietly(start_runtime=True)
    import keras

    model, _ = build_model(params, spec, seed=fold_seed(spec, 0, 0))
    fit_to_fold(model, spec, 0)
    report = _one_batch(model, spec, params)
    for config, options, structured in others:
        try:
            model, _ = build_model(config, spec, seed=fold_seed(spec, 0, 0))
            fit_to_fold(model, spec, 0)
            if structured:
                _one_batch(model, spec, config)
        except Exception as err:
            message = str(err).removeprefix("preflight: ")
            kind = TypeError if isinstance(err, TypeError) else ValueError
            raise kind(f"preflight: the configuration that takes {', '.join(options)} failed: {message}") from err
    keras.backend.clear_session()
    return report
