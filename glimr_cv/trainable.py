"""The Ray Tune trainable: one trial trains one (configuration, fold)."""

from __future__ import annotations

import gc
import json
import logging
import math
import os
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable

__all__ = ["TrialSpec", "train_fold", "META", "trial_dirname"]

#: Key of the scheduler's bookkeeping inside a trial's config.
META = "__glimr_cv__"


@dataclass
class TrialSpec:
    """Everything a trial needs besides its config; shipped to workers once."""

    builder: Callable
    loader: Callable
    metric: str
    mode: str
    cv_folds: int | None
    task_names: list
    metric_names: list
    loader_kwargs: dict = field(default_factory=dict)
    fit_kwargs: dict = field(default_factory=dict)
    stopper: Any = None
    seed: int = 0
    reuse_models: bool = True
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex)  # tells this search's configurations apart


def trial_dirname(trial) -> str:
    """Trial folders named by configuration and fold, e.g. ``c0003_f1_ab12c_00004``."""
    meta = trial.config.get(META, {})
    return f"c{meta.get('config_id', 0):04d}_f{meta.get('fold', 0)}_{trial.trial_id}"


def split_config(config: dict) -> tuple[dict, dict]:
    """``(sampled configuration, scheduler bookkeeping)`` of a trial config."""
    params = {k: v for k, v in config.items() if k != META}
    return params, config[META]


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


def _better(a: float, b: float | None, mode: str) -> bool:
    if not math.isfinite(a):
        return False
    return b is None or (a > b if mode == "max" else a < b)


def _report_finished_fold(checkpoint) -> bool:
    """Re-report the final result stored in a finished fold's checkpoint, if any."""
    if checkpoint is None:
        return False
    from ray import tune

    with checkpoint.as_directory() as folder:
        path = os.path.join(folder, "fold.json")
        final = json.load(open(path)).get("final") if os.path.exists(path) else None
    if not final:
        return False
    tune.report(final)
    return True


_WORKER_GRADIENTS: set | None = None  # gradient-registry keys before this process's first fold


def _prepare_worker(cpus: float | None = None) -> None:
    """Once per worker process, before its first fold.

    Sizes TensorFlow's thread pools to the ``cpus`` a fold reserved (TensorFlow's
    default is every core of the machine, so two 1-CPU folds on 2 cores fought over 4
    threads and fit 1.15x slower). Freezes the objects alive after the
    Keras/TensorFlow import (~400,000, alive as long as the process) so that the
    collection in every fold's ``clear_session()`` stops walking them, and remembers the
    entries of TensorFlow's gradient registry so that :func:`_drop_fold_gradients` can
    tell the folds' own entries apart.
    """
    global _WORKER_GRADIENTS
    if _WORKER_GRADIENTS is not None:
        return
    if cpus and "tensorflow" in sys.modules:
        import tensorflow as tf

        threads = max(1, int(cpus))
        try:
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(threads)
        except RuntimeError:  # TensorFlow already ran an op in this process: keep its pools
            pass
    gc.collect()
    gc.freeze()
    _WORKER_GRADIENTS = set(_gradient_registry())


def _gradient_registry() -> dict:
    if "tensorflow" not in sys.modules:  # another Keras backend: nothing to drop
        return {}
    try:
        from tensorflow.python.framework import ops

        return ops._gradient_registry._registry
    except (ImportError, AttributeError):  # a TensorFlow without this private registry
        return {}


def _drop_fold_gradients() -> None:
    """Forget the ``CustomGradient-*`` entries that earlier folds' traces registered.

    Each trace of a Keras train step (the optimizer's ``all_reduce``) registers a
    custom gradient in TensorFlow's process-wide gradient registry and never removes
    it; the entry pins that fold's whole traced graph (tensorflow/tensorflow#97697):
    ~6 MB per fold of the digits MLP, so a reused worker grows without bound and each
    ``gc.collect()`` gets slower. Earlier folds' traces are complete, so even a model
    that :func:`fold_model` reuses no longer needs them.
    """
    registry = _gradient_registry()
    for key in [k for k in registry if k.startswith("CustomGradient-") and k not in _WORKER_GRADIENTS]:
        del registry[key]


_LAST_MODEL: tuple[Any, Any] | None = None  # (configuration key, model) of this worker's last fold


def _signature(variables) -> list:
    return [(tuple(v.shape), str(v.dtype)) for v in variables]


def fold_model(params: dict, spec: TrialSpec, seed: int, key: Any = None) -> tuple[Any, bool]:
    """``(model, reused)``: the compiled model a new fold trains, in the builder's initial state for ``seed``.

    The builder always runs (after ``clear_session`` and ``set_random_seed(seed)``) and
    its model is compiled with a fresh optimizer. When ``key`` (the configuration's
    identity; ``None`` turns reuse off) equals that of this worker's previous fold and
    the previous model has the same variables, the previous model is returned instead
    (``reused`` is True), with every variable (weights, random-seed state, optimizer
    slots and step) set to the fresh model's values: the fold trains exactly as the
    fresh model would, without tracing Keras's train and test steps again (~1 s per
    fold for the demo MLP on one core).
    """
    global _LAST_MODEL
    import keras

    from .keras_helpers import keras_optimizer

    last = _LAST_MODEL[1] if _LAST_MODEL is not None and _LAST_MODEL[0] == key else None
    _LAST_MODEL = None  # another configuration's model goes with the session
    # A reused actor keeps no graph or layer names from earlier folds. clear_session
    # also runs the garbage collector, which gc.freeze() in _prepare_worker keeps cheap.
    keras.backend.clear_session()
    keras.utils.set_random_seed(seed)
    built = spec.builder(params)
    if not isinstance(built, tuple) or len(built) != 4:
        raise TypeError(
            f"builder must return (model, losses, loss_weights, metrics), but returned {type(built).__name__}"
            + (f" of length {len(built)}" if isinstance(built, tuple) else "")
        )
    model, losses, loss_weights, metrics = built
    model.compile(
        optimizer=keras_optimizer(params["optimization"]),
        loss=losses,
        loss_weights=loss_weights,
        metrics=metrics,
    )
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


def train_fold(config: dict, spec: TrialSpec) -> None:
    """Train one fold, report every epoch and checkpoint the best epoch once.

    Each epoch reports the validation metrics plus ``fold_score`` (the best value of
    ``spec.metric`` so far) and ``epoch``. A last report carries the best epoch's
    metrics, ``best_epoch``, ``epochs``, ``fit_seconds`` (time inside ``model.fit``),
    ``model_reused`` (see :func:`fold_model`),
    ``fold_status`` ("complete" or "failed", with ``error``) and, when complete,
    a checkpoint holding ``model.weights.h5`` and ``fold.json``.
    """
    import keras
    from ray import tune

    for name in ("ray.train", "ray.tune"):  # one "checkpoint created" line per fold is noise
        logging.getLogger(name).setLevel(logging.WARNING)
    params, meta = split_config(config)
    if _report_finished_fold(tune.get_checkpoint()):
        return  # finished before the driver stopped: never train a fold twice
    _prepare_worker(tune.get_context().get_trial_resources().required_resources.get("CPU"))
    _drop_fold_gradients()
    # distinct for every (search seed, configuration, fold): seed s+1 must not reuse seed s's inits
    seed = (spec.seed * 1_000_003 + 1009 * meta["config_id"] + meta["fold"]) % 2**31
    model, reused = fold_model(params, spec, seed, key=(spec.run_id, meta["config_id"]) if spec.reuse_models else None)
    data_kwargs = {**params["data"], **spec.loader_kwargs}
    if spec.cv_folds:
        data_kwargs.update(cv_index=meta["fold"], cv_folds=spec.cv_folds)
    train_ds, val_ds = spec.loader(**data_kwargs)

    trial_id = tune.get_context().get_trial_id()
    state = {"best": None, "best_epoch": None, "weights": None, "metrics": {}, "error": None, "epochs": 0}

    class _Report(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            logs = logs or {}
            state["epochs"] = epoch + 1
            for key in ("loss", "val_loss"):
                value = float(logs.get(key, 0.0))
                if not math.isfinite(value):
                    state["error"] = f"{'validation ' if key == 'val_loss' else ''}loss became {value} at epoch {epoch + 1}"
                    self.model.stop_training = True
                    return
            report = validation_report(logs, spec)
            score = report[spec.metric]
            if _better(score, state["best"], spec.mode):
                state.update(best=score, best_epoch=epoch + 1, weights=self.model.get_weights(), metrics=report)
            report.update(epoch=epoch + 1, fold_score=state["best"])
            tune.report(report)
            if spec.stopper is not None and spec.stopper(trial_id, {**report, "training_iteration": epoch + 1}):
                self.model.stop_training = True

    fit_kwargs = {"shuffle": False, **spec.fit_kwargs}  # tf.data pipelines shuffle themselves
    callbacks = [_Report(), *fit_kwargs.pop("callbacks", [])]
    start = time.perf_counter()
    model.fit(
        train_ds,
        validation_data=val_ds,
        epochs=int(params["optimization"]["epochs"]),
        callbacks=callbacks,
        verbose=0,
        **fit_kwargs,
    )
    fit_seconds = time.perf_counter() - start

    final = {
        **state["metrics"],
        "fold_score": state["best"],
        "best_epoch": state["best_epoch"],
        "epochs": state["epochs"],
        "fit_seconds": fit_seconds,
        "model_reused": reused,
        "config_id": meta["config_id"],
        "fold": meta["fold"],
    }
    if state["error"] is None and state["best"] is None:
        state["error"] = f"{spec.metric} was never finite in {state['epochs']} epochs"
    if state["error"] is not None:
        tune.report({**final, "fold_status": "failed", "error": state["error"]})
    else:
        model.set_weights(state["weights"])
        with tempfile.TemporaryDirectory() as tmp:
            model.save_weights(os.path.join(tmp, "model.weights.h5"))
            with open(os.path.join(tmp, "fold.json"), "w") as f:
                json.dump({**meta, "metric": spec.metric, "mode": spec.mode, "final": {**final, "fold_status": "complete"}}, f)
            tune.report({**final, "fold_status": "complete"}, checkpoint=tune.Checkpoint.from_directory(tmp))
    del model, train_ds, val_ds, state  # freed by the next fold's clear_session (or reused)
