"""The Ray Tune trainable: one trial trains one (configuration, fold)."""

from __future__ import annotations

import gc
import json
import logging
import math
import os
import shutil
import socket
import tempfile
import time
import traceback

import numpy as np

from ..schema import META, SCORE, STATUS, TRIAL_DIR, UNPICKLE, final_row
from .fold import build_model, fit_to_fold, fold_seed, load_fold, validation_report
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


_WORKER_GRADIENTS: set | None = None  # gradient-registry keys before this process's first fold


def _prepare_worker(cpus: float | None = None, deterministic: bool = False) -> None:
    """Once per worker process, before its first fold.

    Imports TensorFlow with its start-up lines kept off the terminal (see
    :mod:`glimr_cv.engine.quiet`). Turns on memory growth on every visible GPU, so
    that folds sharing a GPU take memory as they need it, and op determinism if
    ``deterministic`` (a worker's first search decides it for the process). Sizes TensorFlow's thread pools to the ``cpus``
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
    import tensorflow as tf

    # folds that share a GPU (set_resources({"GPU": 0.25})) must not each take all of its memory
    for gpu in tf.config.list_physical_devices("GPU"):
        try:
            tf.config.experimental.set_memory_growth(gpu, True)
        except RuntimeError:  # TensorFlow already ran an op in this process
            pass
    if cpus:
        threads = max(1, int(cpus))
        try:
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(threads)
        except RuntimeError:  # TensorFlow already ran an op in this process: keep its pools
            pass
    if deterministic:
        tf.config.experimental.enable_op_determinism()
    start_tensorflow_quietly()
    gc.collect()
    gc.freeze()
    _WORKER_GRADIENTS = set(_gradient_registry())


def _gradient_registry() -> dict:
    from .compat import gradient_registry

    return gradient_registry()


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


def _node_id() -> str | None:
    import ray

    try:
        return ray.get_runtime_context().get_node_id()
    except Exception:  # no Ray runtime (a direct call in a test)
        return None


def _rss_mb() -> float:
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) / 1024 for line in f if line.startswith("VmRSS:"))
    except (OSError, StopIteration):  # not Linux
        return math.nan


def train_fold(config: dict, spec) -> None:
    """Train one fold, report every epoch and checkpoint the best epoch once.

    Each epoch reports the validation metrics plus ``fold_score`` (the best value of
    ``spec.metric`` so far) and ``epoch``. A last report carries the best epoch's
    metrics and the fold row's details and profile (:mod:`glimr_cv.schema`),
    ``fold_status`` ("complete" or "failed", with ``error``) and, when complete, a
    checkpoint holding ``model.weights.h5`` and ``fold.json``.

    ``spec`` is a :class:`TrialSpec` or ``(object reference to one,)``, fetched here
    so that a builder or loader that cannot be unpickled on this worker fails the
    fold with its error (not retried) instead of crashing the trial. An exception
    raised by the user's code (builder, loader, fit) likewise ends the fold as
    "failed": retrying the same code on the same data cannot help. A worker that
    dies is retried by Ray Tune (``max_failures``).

    A fold stops before its last epoch (``stopped_early``, ``stopped_by``) when
    ``spec.fold_stopping`` finds its learning curve hopeless against the
    incumbent's on the same fold (``reference`` in the trial's bookkeeping), or when
    the driver asks it to (:mod:`glimr_cv.engine.stopping`: a Ray Tune scheduler
    or stopper). Either way it ends like a finished fold, scored at its best epoch.
    With ``spec.epoch_checkpoints`` every epoch also leaves the latest state (one
    checkpoint slot), and a fold restored after a crash continues from there.
    """
    from ray import tune

    started = time.time()
    for name in ("ray.train", "ray.tune"):  # one "checkpoint created" line per fold is noise
        logging.getLogger(name).setLevel(logging.WARNING)
    params, meta = split_config(config)
    saved = _saved_state(tune.get_checkpoint())
    if saved is not None and saved.get("final"):
        tune.report(saved["final"])
        return  # finished before the driver stopped: never train a fold twice
    phase = _Phase()
    try:
        spec = _resolve(spec)
        _train(params, meta, spec, started, saved, phase)
    except Exception as err:  # the user's code, or their objects on this worker: retrying cannot help
        import ray

        if isinstance(err, ray.exceptions.RayError) and phase.name != UNPICKLE:
            raise  # Ray itself failed (a lost node, say): Tune retries the fold
        tune.report({
            "config_id": meta["config_id"], "fold": meta["fold"], SCORE: None, STATUS: "failed",
            "error": f"{type(err).__name__} in {phase.name}: {_message(err)}",
            "error_type": type(err).__name__, "phase": phase.name,
            "traceback": traceback.format_exc()[-20000:],
            "worker": f"{os.getpid()}@{socket.gethostname()}", "node": _node_id(),
            "started_at": started, "ended_at": time.time(),
        })


def _message(err: Exception) -> str:
    """An exception's message in a line or two: a long one (Ray's carry a traceback) keeps its first and last lines."""
    lines = [line for line in str(err).strip().splitlines() if line.strip()]
    text = " ... ".join([lines[0], lines[-1]]) if len(lines) > 2 else " ".join(lines)
    return text[:2000]


def _resolve(spec):
    """The :class:`TrialSpec` itself, fetched if it came as ``(object reference,)``."""
    import ray

    return ray.get(spec[0]) if isinstance(spec, tuple) else spec


def _saved_state(checkpoint) -> dict | None:
    """``fold.json`` of the checkpoint a restored trial starts from, and its ``arrays`` if it holds a latest state."""
    if checkpoint is None:
        return None
    with checkpoint.as_directory() as folder:
        path = os.path.join(folder, "fold.json")
        if not os.path.exists(path):
            return None
        saved = json.load(open(path))
        if saved.get("latest") and not saved.get("final"):
            with np.load(os.path.join(folder, "state.npz")) as arrays:
                saved["arrays"] = {k: arrays[k] for k in arrays.files}
        return saved


_ITERATORS_PER_EPOCH: int | None = None


def _iterators_per_epoch() -> int:
    """How many iterators ``model.fit`` makes of a ``tf.data`` training set per epoch (2 in Keras 3.15).

    A dataset shuffled with a seed draws its next order at each new iterator, so a
    fold resumed at epoch ``e`` makes ``e`` times this many first and then trains on
    exactly the orders the uninterrupted fold would have. Measured once per worker
    on a 16-row dataset rather than assumed, since it is Keras's internal affair.
    """
    global _ITERATORS_PER_EPOCH
    if _ITERATORS_PER_EPOCH is None:
        import keras
        import tensorflow as tf

        def rows():
            return tf.data.Dataset.range(16).shuffle(16, seed=7, reshuffle_each_iteration=True)

        reference, probe = rows(), rows()
        orders = [list(reference.as_numpy_iterator()) for _ in range(8)]
        data = probe.map(lambda i: (tf.cast(i, "float32")[None], tf.cast(i, "float32")[None])).batch(16)
        model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
        model.compile("sgd", "mse")
        model.fit(data, epochs=1, verbose=0, shuffle=False)
        after = list(probe.as_numpy_iterator())
        _ITERATORS_PER_EPOCH = orders.index(after) if after in orders else 1
        keras.backend.clear_session()
    return _ITERATORS_PER_EPOCH


def _epoch_checkpoint(model, latest: dict, weights: list | None, meta: dict, spec, folder: str):
    """The latest state of a running fold: every variable, the optimizer's and the best epoch's weights."""
    from ray import tune

    arrays = {f"v{i}": v.numpy() for i, v in enumerate(model.variables)}
    arrays.update({f"o{i}": v.numpy() for i, v in enumerate(model.optimizer.variables)})
    arrays.update({f"b{i}": w for i, w in enumerate(weights or [])})
    np.savez(os.path.join(folder, "state.npz"), **arrays)
    with open(os.path.join(folder, "fold.json"), "w") as f:
        json.dump({**_plain(meta), "metric": spec.metric, "mode": spec.mode, "latest": latest}, f)
    return tune.Checkpoint.from_directory(folder)


def _save_whole(model, folder: str) -> dict:
    """Save the fold's model whole (``model.keras``) beside its weights, where Keras can serialize it.

    A whole model loads without the builder, so a folder's ensemble and export
    need none of the user's code (~10-20 ms a fold, the size of the weights
    again). A model Keras cannot serialize (a subclassed model without
    ``get_config``) keeps only its weights, and the reason goes in ``fold.json``.
    """
    try:
        model.save(os.path.join(folder, "model.keras"))
        return {"model_file": "model.keras"}
    except Exception as err:  # any serialization failure: the weights, with the builder, still rebuild it
        path = os.path.join(folder, "model.keras")
        if os.path.exists(path):
            os.remove(path)
        return {"model_file": None, "model_file_error": f"{type(err).__name__}: {err}"[:500]}


def _plain(meta: dict) -> dict:
    return {k: v for k, v in meta.items() if k != "reference"}


def _restore(model, saved: dict) -> list | None:
    """Put a fold's latest saved state back (variables, optimizer); the best epoch's weights so far."""
    arrays = saved["arrays"]
    if not model.optimizer.built:
        model.optimizer.build(model.trainable_variables)
    for prefix, variables in (("v", model.variables), ("o", model.optimizer.variables)):
        for i, v in enumerate(variables):
            v.assign(arrays[f"{prefix}{i}"])
    n_best = sum(1 for k in arrays if k.startswith("b"))
    return [arrays[f"b{i}"] for i in range(n_best)] or None


class _Phase:
    """What a fold is doing, so that an error names it (``error`` of a failed fold: "ValueError in loader: ...")."""

    name = UNPICKLE


def _train(params: dict, meta: dict, spec, started: float, saved: dict | None, phase: _Phase) -> None:
    from ray import tune

    from .foldrun import FoldRun
    from .stopping import stop_requested

    phase.name = "prepare the worker"
    _prepare_worker(tune.get_context().get_trial_resources().required_resources.get("CPU"), spec.deterministic)
    import keras

    _drop_fold_gradients()
    clock = time.perf_counter()
    phase.name = "builder"
    key = (spec.run_id, meta["config_id"]) if spec.reuse_models else None
    model, reused = build_model(params, spec, fold_seed(spec, meta["config_id"], meta["fold"]), key=key)
    build_seconds, clock = time.perf_counter() - clock, time.perf_counter()
    phase.name = "loader"
    train_ds, val_ds = load_fold(params, spec, meta["fold"])
    phase.name = "fit the losses and metrics to the fold's training labels"
    fit_to_fold(model, spec, meta["fold"])
    load_seconds = time.perf_counter() - clock

    trial_id = tune.get_context().get_trial_id()
    epochs = int(params["optimization"]["epochs"])
    run = FoldRun.from_meta(spec, meta, epochs, (lambda: stop_requested(trial_id)) if spec.driver_stops else None)
    weights = None  # of the best epoch so far
    if saved is not None and saved.get("latest") and model.built:
        phase.name = "restore the fold's latest epoch"
        weights = _restore(model, saved)
        run.restore(saved["latest"])
        for _ in range(run.done * _iterators_per_epoch()):
            iter(train_ds)  # each new iterator draws the next shuffle order
    resumed_from = run.done

    class _Report(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            nonlocal weights
            logs = logs or {}
            losses = {k: logs.get(k, 0.0) for k in ("loss", "val_loss")}
            report = validation_report(logs, spec) if all(math.isfinite(float(v)) for v in losses.values()) else {}
            decision = run.on_epoch(epoch + 1, losses, report)
            if decision.improved:
                weights = self.model.get_weights()
            if decision.report is not None:
                checkpoint = folder = None
                if spec.epoch_checkpoints and run.keeps_latest(decision):
                    folder = tempfile.mkdtemp()
                    checkpoint = _epoch_checkpoint(self.model, run.latest(), weights, meta, spec, folder)
                tune.report(decision.report, checkpoint=checkpoint)
                if folder is not None:
                    shutil.rmtree(folder, ignore_errors=True)  # Tune copied it into the trial folder
            if decision.stop is not None:
                self.model.stop_training = True

    fit_kwargs = {"shuffle": False, **spec.fit_kwargs}  # tf.data pipelines shuffle themselves
    callbacks = [_Report(), *fit_kwargs.pop("callbacks", [])]
    clock = time.perf_counter()
    phase.name = "fit"
    if resumed_from < epochs:
        model.fit(train_ds, validation_data=val_ds, epochs=epochs, initial_epoch=resumed_from,
                  callbacks=callbacks, verbose=0, **fit_kwargs)
    fit_seconds = time.perf_counter() - clock

    phase.name = "save the fold"
    details = {**run.details(), "fit_seconds": fit_seconds, "model_reused": reused}
    profile = {"worker": f"{os.getpid()}@{socket.gethostname()}", "node": _node_id(), "started_at": started,
               "build_seconds": build_seconds, "load_seconds": load_seconds, "worker_rss_mb": _rss_mb()}
    extra = {"resumed_from_epoch": resumed_from} if resumed_from else {}
    failure = run.failure()
    if failure is not None:
        profile.update(ended_at=time.time(), save_seconds=0.0)
        tune.report(final_row(run.outcome(), details, profile, meta["config_id"], meta["fold"], "failed",
                              error=failure, **extra))
    else:
        clock = time.perf_counter()
        model.set_weights(weights)
        with tempfile.TemporaryDirectory() as tmp:
            model.save_weights(os.path.join(tmp, "model.weights.h5"))
            whole = _save_whole(model, tmp)
            profile.update(save_seconds=time.perf_counter() - clock, ended_at=time.time())
            final = final_row(run.outcome(), details, profile, meta["config_id"], meta["fold"], "complete", **extra)
            with open(os.path.join(tmp, "fold.json"), "w") as f:
                json.dump({**_plain(meta), "metric": spec.metric, "mode": spec.mode, "final": final, **whole}, f)
            tune.report(final, checkpoint=tune.Checkpoint.from_directory(tmp))
    del model, train_ds, val_ds  # freed by the next fold's clear_session (or reused)
