"""The Ray Tune trainable: one trial trains one (configuration, fold)."""

from __future__ import annotations

import gc
import json
import logging
import math
import os
import socket
import sys
import tempfile
import time

from ..schema import META, SCORE, STATUS, TRIAL_DIR
from .fold import TrialSpec, build_model, fold_seed, load_fold, validation_report
from .quiet import import_tensorflow_quietly, start_tensorflow_quietly

__all__ = ["train_fold", "trial_dirname"]


def trial_dirname(trial) -> str:
    """Trial folders named by configuration and fold, e.g. ``c0003_f1_ab12c_00004``."""
    meta = trial.config.get(META, {})
    return TRIAL_DIR.format(config_id=meta.get("config_id", 0), fold=meta.get("fold", 0), trial_id=trial.trial_id)


def split_config(config: dict) -> tuple[dict, dict]:
    """``(sampled configuration, scheduler bookkeeping)`` of a trial config."""
    params = {k: v for k, v in config.items() if k != META}
    return params, config[META]


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

    Imports TensorFlow with its start-up lines kept off the terminal (see
    :mod:`glimr_cv.engine.quiet`). Sizes TensorFlow's thread pools to the ``cpus``
    a fold reserved (TensorFlow's default is every core of the machine, so two
    1-CPU folds on 2 cores fought over 4 threads and fit 1.15x slower). Freezes the objects alive after the
    Keras/TensorFlow import (~400,000, alive as long as the process) so that the
    collection in every fold's ``clear_session()`` stops walking them, and remembers the
    entries of TensorFlow's gradient registry so that :func:`_drop_fold_gradients` can
    tell the folds' own entries apart.
    """
    global _WORKER_GRADIENTS
    if _WORKER_GRADIENTS is not None:
        return
    import_tensorflow_quietly()
    if cpus:
        import tensorflow as tf

        threads = max(1, int(cpus))
        try:
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(threads)
        except RuntimeError:  # TensorFlow already ran an op in this process: keep its pools
            pass
    start_tensorflow_quietly()
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


def _rss_mb() -> float:
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) / 1024 for line in f if line.startswith("VmRSS:"))
    except (OSError, StopIteration):  # not Linux
        return math.nan


def train_fold(config: dict, spec: TrialSpec) -> None:
    """Train one fold, report every epoch and checkpoint the best epoch once.

    Each epoch reports the validation metrics plus ``fold_score`` (the best value of
    ``spec.metric`` so far) and ``epoch``. A last report carries the best epoch's
    metrics and the fold row's details and profile (:mod:`glimr_cv.schema`),
    ``fold_status`` ("complete" or "failed", with ``error``) and, when complete, a
    checkpoint holding ``model.weights.h5`` and ``fold.json``.
    """
    from ray import tune

    started = time.time()
    for name in ("ray.train", "ray.tune"):  # one "checkpoint created" line per fold is noise
        logging.getLogger(name).setLevel(logging.WARNING)
    params, meta = split_config(config)
    if _report_finished_fold(tune.get_checkpoint()):
        return  # finished before the driver stopped: never train a fold twice
    _prepare_worker(tune.get_context().get_trial_resources().required_resources.get("CPU"))
    import keras

    _drop_fold_gradients()
    clock = time.perf_counter()
    key = (spec.run_id, meta["config_id"]) if spec.reuse_models else None
    model, reused = build_model(params, spec, fold_seed(spec, meta["config_id"], meta["fold"]), key=key)
    build_seconds, clock = time.perf_counter() - clock, time.perf_counter()
    train_ds, val_ds = load_fold(params, spec, meta["fold"])
    load_seconds = time.perf_counter() - clock

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
            report.update(epoch=epoch + 1, **{SCORE: state["best"]})
            tune.report(report)
            if spec.stopper is not None and spec.stopper(trial_id, {**report, "training_iteration": epoch + 1}):
                self.model.stop_training = True

    fit_kwargs = {"shuffle": False, **spec.fit_kwargs}  # tf.data pipelines shuffle themselves
    callbacks = [_Report(), *fit_kwargs.pop("callbacks", [])]
    clock = time.perf_counter()
    model.fit(train_ds, validation_data=val_ds, epochs=int(params["optimization"]["epochs"]),
              callbacks=callbacks, verbose=0, **fit_kwargs)
    fit_seconds = time.perf_counter() - clock

    final = {
        **state["metrics"],
        SCORE: state["best"],
        "score": state["best"],
        "best_epoch": state["best_epoch"],
        "epochs": state["epochs"],
        "fit_seconds": fit_seconds,
        "model_reused": reused,
        "worker": f"{os.getpid()}@{socket.gethostname()}",
        "started_at": started,
        "build_seconds": build_seconds,
        "load_seconds": load_seconds,
        "worker_rss_mb": _rss_mb(),
        "config_id": meta["config_id"],
        "fold": meta["fold"],
    }
    if state["error"] is None and state["best"] is None:
        state["error"] = f"{spec.metric} was never finite in {state['epochs']} epochs"
    if state["error"] is not None:
        tune.report({**final, "ended_at": time.time(), "save_seconds": 0.0, STATUS: "failed", "error": state["error"]})
    else:
        clock = time.perf_counter()
        model.set_weights(state["weights"])
        with tempfile.TemporaryDirectory() as tmp:
            model.save_weights(os.path.join(tmp, "model.weights.h5"))
            final.update(save_seconds=time.perf_counter() - clock, ended_at=time.time(), **{STATUS: "complete"})
            with open(os.path.join(tmp, "fold.json"), "w") as f:
                json.dump({**meta, "metric": spec.metric, "mode": spec.mode, "final": final}, f)
            tune.report(final, checkpoint=tune.Checkpoint.from_directory(tmp))
    del model, train_ds, val_ds, state  # freed by the next fold's clear_session (or reused)
