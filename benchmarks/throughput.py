#!/usr/bin/env python
"""Throughput of glimr_cv: worker efficiency, KerasTuner comparison, scheduler cost, worker memory.

Workload
    scikit-learn's bundled ``digits`` (1797 rows, 64 features, 10 classes; no network),
    split by :func:`glimr_cv.demo.loader` (``StratifiedKFold(5, shuffle, random_state=0)``,
    ~1437 training / ~360 validation rows per fold, ``tf.data`` pipelines). The model is
    the small MLP of :func:`glimr_cv.demo.builder` (1-2 dense layers of 32/64/128 units
    + dropout + softmax) and the space is :data:`glimr_cv.demo.SPACE` except that the
    batch size is fixed at 32: the systems compared below each sample their own 20
    configurations, and a fixed batch size makes every fold the same number of
    optimizer steps (45 per epoch), so they do the same work whatever they sample.
    Reference run: 20 configurations x 5 folds x 8 epochs, ``racing=None`` (every fold
    trains), 2 worker slots: ``ray.init(address="local", num_cpus=2)`` in this process,
    1 CPU per fold training (the ``Search`` default).

Method
    Every glimr_cv run is ``Search(...).experiment(..., check=False)`` (the in-process
    preflight is left out of the wall time) with the live table off
    (``set_reporter(max_report_frequency=0)``); the wall time is that of
    ``experiment()`` alone (Ray is started once, before, and its start-up is reported
    separately). A first, untimed ``python -c "import tensorflow"`` warms the file
    cache so no run pays a cold TensorFlow import that the others do not.

    * ``efficiency`` = sum of ``results.folds["fit_seconds"]`` (time inside
      ``model.fit``, per-epoch ``tune.report`` calls included) / (wall x 2 slots), for
      glimr_cv's defaults (actors reused between trials).
    * ``efficiency_new_actor``: the same search with a new Ray actor per trial
      (``reuse_actors=False``, glimr's old behaviour). ``Search.experiment``
      hard-codes ``reuse_actors=True``; this benchmark wraps ``ray.tune.TuneConfig``
      for that one run to force it off (see :func:`new_actor_per_trial`).
    * Model reuse: the same search with ``Search(reuse_models=False)`` (every fold
      builds and traces a new model); ``detail["model_reuse_wall_gain"]`` is its wall /
      the default's wall, and each run's ``model_reuse_rate`` is the share of folds
      that trained the worker's previous model (reset) instead of a new one.
    * ``kerastuner_wall_ratio`` = KerasTuner wall / glimr_cv wall (higher: glimr_cv
      faster). KerasTuner runs the same 20 x 5 CV in one subprocess: a ``kt.Tuner``
      subclass whose ``run_trial`` loops over the 5 folds (``clear_session``, build,
      compile, ``fit`` with per-epoch validation on the same ``tf.data`` folds, fold
      score = best validation accuracy), as KerasTuner's docs suggest for CV, with a
      ``RandomSearch`` oracle (``max_trials=20``) over the same space; TensorFlow may
      use both cores there. The KerasTuner wall is that of ``tuner.search()``,
      without the TensorFlow import (glimr_cv's wall does include its workers'
      imports), so the ratio is conservative; the import-inclusive ratio is in
      ``detail``.
    * ``suggest_ms_median_10k``: median time of one ``CVSearcher.suggest`` +
      ``on_trial_complete`` cycle (``FoldScheduler.next`` / ``add_config`` /
      ``finish`` underneath; pure Python, no Ray running) with 10,000 configurations
      registered, each with a finished fold and a synthetic score (a heap of 10,000),
      and an incumbent. ``detail`` has the bare ``FoldScheduler`` cycle and the
      ``WAIT`` path (10,000 configurations, none with folds left, one running).
    * ``worker_rss_growth_mb``: one worker slot (``max_concurrent_trials=1``), 40
      configurations x 5 folds x 1 epoch = 200 fold trainings on one reused actor;
      the RSS of the worker (``/proc/self/status``) is recorded at the end of every
      fold; growth = RSS after the last fold - RSS after the 5th; the least-squares
      slope over folds 5..200 is in ``detail`` (MB per 100 folds).

Profile
    The glimr_cv runs are instrumented from inside the benchmark only: the trainable
    is wrapped (:func:`make_timed_trainable`) so that each fold records, in the worker,
    timestamps of the trial start, the Keras/TensorFlow import (first fold of a
    process), the builder, ``compile`` (builder end to loader start), the loader,
    ``model.fit`` (a Keras callback), every ``tune.report`` (wrapped in the worker),
    the checkpoint write and the end of the trial, plus the process id and RSS.
    :func:`breakdown` turns them into seconds and shares of (wall x slots): the parts
    sum to the wall time of each slot; "turnover" is the time between the end of one
    trial and the start of the next on the same actor (Tune's bookkeeping on the
    driver, searcher, actor reset), "start-up" the time from ``experiment()`` to the
    first trial of each actor and "tail" from the last trial of each actor to the end
    of ``experiment()``.

Quote the ratios, not absolute times: the machine may be shared and noisy.

Targets (printed as PASS/FAIL lines)
    efficiency >= 0.92; KerasTuner wall ratio >= 1.8; suggest <= 1 ms at 10,000
    configurations; worker RSS growth <= 150 MB over 200 fold trainings.

How to run (from the repository root; keras-tuner is needed for the comparison, 1.4.8
was used; without it that comparison is skipped)::

    .venv/bin/pip install keras-tuner
    .venv/bin/python benchmarks/throughput.py [--quick] [--json]

The full run takes about 16 minutes on 2 cores (the new-actor baseline and the memory run
are half of it); ``--quick`` (6 configurations for the glimr_cv and KerasTuner
runs, 2 for the new-actor baseline, 30 folds for memory, whose target is then checked
on the growth its slope projects to fold 200) about 3.5. ``--configs``, ``--epochs``,
``--new-actor-configs`` and ``--rss-folds`` override the workload, ``--skip`` leaves
parts out (``kerastuner,no_model_reuse,new_actor,rss,scheduler``), ``--details FILE`` writes every
fold's timings, ``--keep`` keeps the experiment directories.
With ``--json`` exactly one JSON object is printed to stdout and everything else goes
to stderr. The exit status is 0 whatever the targets say.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("PYTHONWARNINGS", "ignore")

SLOTS = 2
FOLDS = 5
BATCH_SIZE = 32
METRIC = "digit_accuracy"
RAY_ENV = {"TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONWARNINGS": "ignore"}  # what Search._init_ray sets

TARGET_EFFICIENCY = 0.92
TARGET_KT_RATIO = 1.8
TARGET_SUGGEST_MS = 1.0
TARGET_RSS_MB = 150.0
RSS_BASE_FOLD = 5  # growth is measured from the end of this fold
RSS_FOLDS_TARGET = 200


def log(*args) -> None:
    print(*args, file=sys.stderr, flush=True)


def make_space(epochs: int) -> dict:
    """glimr_cv.demo.SPACE with ``epochs`` epochs and batch size fixed at 32."""
    from glimr_cv.demo import SPACE

    return {**SPACE, "optimization": {**SPACE["optimization"], "epochs": epochs}, "data": {"batch_size": BATCH_SIZE}}


def rss_mb() -> tuple[float, float]:
    """(current RSS, peak RSS) of this process in MB, from /proc/self/status."""
    values = {}
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(("VmRSS:", "VmHWM:")):
                key, kb = line.split()[:2]
                values[key] = int(kb) / 1024
    return values.get("VmRSS:", math.nan), values.get("VmHWM:", math.nan)


# -- instrumentation (lives only in this benchmark) -------------------------------------------------------
def make_timed_trainable(events_dir: str):
    """``train_fold`` wrapped to record, in the worker, when each part of a fold happens.

    One JSON line per fold is appended to ``events_dir/<pid>.jsonl``. Nothing of
    glimr_cv is changed: the wrapper hands ``train_fold`` a copy of the spec whose
    builder and loader are timed, adds a Keras callback that times ``fit`` and its
    epochs, and wraps ``ray.tune.report`` in this worker process.
    """

    def timed_train_fold(config, spec):
        import dataclasses
        import sys as _sys
        import time as _time

        t_start = _time.time()
        first = "keras" not in _sys.modules
        ev = {"pid": os.getpid(), "t_start": t_start, "first_in_process": first, "reports": [], "epochs": []}
        ev["t_import0"] = _time.time()
        import keras  # train_fold imports it first thing too; here its cost is timed
        import ray.tune as rt

        ev["t_import1"] = _time.time()
        meta = config.get("__glimr_cv__", {})
        ev.update(config_id=meta.get("config_id"), fold=meta.get("fold"))
        ev["trial_id"] = rt.get_context().get_trial_id()
        rt._bench_event = ev
        if not getattr(rt.report, "_bench_timed", False):
            original_report = rt.report

            def report(metrics, *args, **kwargs):
                start = _time.time()
                try:
                    return original_report(metrics, *args, **kwargs)
                finally:
                    rt._bench_event["reports"].append([start, _time.time(), kwargs.get("checkpoint") is not None])

            report._bench_timed = True
            rt.report = report

        def timed(fn, key):
            def wrapper(*args, **kwargs):
                ev[f"t_{key}0"] = _time.time()
                try:
                    return fn(*args, **kwargs)
                finally:
                    ev[f"t_{key}1"] = _time.time()

            return wrapper

        class FitTimer(keras.callbacks.Callback):
            def on_train_begin(self, logs=None):
                ev["t_train_begin"] = _time.time()

            def on_epoch_begin(self, epoch, logs=None):
                ev["epochs"].append([_time.time(), None])

            def on_epoch_end(self, epoch, logs=None):
                ev["epochs"][-1][1] = _time.time()

            def on_train_end(self, logs=None):
                ev["t_train_end"] = _time.time()

        fit_kwargs = dict(spec.fit_kwargs)
        fit_kwargs["callbacks"] = [*fit_kwargs.get("callbacks", []), FitTimer()]
        spec = dataclasses.replace(spec, builder=timed(spec.builder, "build"), loader=timed(spec.loader, "load"),
                                   fit_kwargs=fit_kwargs)
        from glimr_cv.trainable import train_fold

        try:
            train_fold(config, spec)
        finally:
            ev["t_end"] = _time.time()
            ev["rss_mb"], ev["hwm_mb"] = rss_mb()
            with open(os.path.join(events_dir, f"{os.getpid()}.jsonl"), "a") as f:
                f.write(json.dumps(ev) + "\n")

    return timed_train_fold


def read_events(events_dir: str) -> list[dict]:
    events = []
    for name in sorted(os.listdir(events_dir)):
        with open(os.path.join(events_dir, name)) as f:
            events += [json.loads(line) for line in f if line.strip()]
    return sorted(events, key=lambda e: e["t_start"])


@contextlib.contextmanager
def new_actor_per_trial():
    """BENCHMARK-ONLY HACK: make ``Search.experiment`` start a new Ray actor for every trial.

    ``glimr_cv/search.py`` calls ``tune.TuneConfig(..., reuse_actors=True, ...)``;
    inside this block ``ray.tune.TuneConfig`` is a wrapper that forces
    ``reuse_actors=False``, i.e. glimr's old behaviour. Restored on exit.
    """
    import ray.tune

    original = ray.tune.TuneConfig

    def forced(*args, **kwargs):
        kwargs["reuse_actors"] = False
        return original(*args, **kwargs)

    ray.tune.TuneConfig = forced
    try:
        yield
    finally:
        ray.tune.TuneConfig = original


def instrumented_search_class():
    from ray import tune

    from glimr_cv import Search

    class InstrumentedSearch(Search):
        """A Search whose trainable is :func:`make_timed_trainable`'s wrapper of train_fold."""

        events_dir: str = ""

        def _trainable(self):
            resources = {k.lower(): v for k, v in self.resources.items()}
            fn = make_timed_trainable(self.events_dir)
            return tune.with_resources(tune.with_parameters(fn, spec=self._spec()), resources)

    return InstrumentedSearch


# -- one glimr_cv run -------------------------------------------------------------------------------------
def run_glimr(label: str, root: str, configs: int, epochs: int, seed: int = 0, reuse: bool = True,
              max_concurrent_trials: int | None = None, keep: bool = False, reuse_models: bool = True) -> dict:
    from ray import cloudpickle

    from glimr_cv.demo import builder, loader

    if __name__ != "__main__":  # imported (not run): workers cannot import this file, ship its functions by value
        cloudpickle.register_pickle_by_value(sys.modules[__name__])
    events_dir = os.path.join(root, f"{label}_events")
    os.makedirs(events_dir, exist_ok=True)
    search = instrumented_search_class()(make_space(epochs), builder, loader, metric=METRIC, mode="max",
                                         cv_folds=FOLDS, racing=None, seed=seed, reuse_models=reuse_models)
    search.events_dir = events_dir
    search.set_reporter(max_report_frequency=0)
    with contextlib.nullcontext() if reuse else new_actor_per_trial():
        t0 = time.time()
        start = time.perf_counter()
        results = search.experiment(root, name=label, num_samples=configs,
                                    max_concurrent_trials=max_concurrent_trials, check=False)
        wall = time.perf_counter() - start
        t1 = time.time()
    folds = results.folds
    done = folds[folds["status"] == "complete"]
    if not len(done):
        raise RuntimeError(f"{label}: no fold completed; see the trial errors above")
    events = read_events(events_dir)
    record = {
        "label": label,
        "configs": configs,
        "epochs": epochs,
        "reuse_actors": reuse,
        "reuse_models": reuse_models,
        "wall_seconds": wall,
        "t_experiment_start": t0,
        "t_experiment_end": t1,
        "fold_trainings": int(results.fold_trainings),
        "complete_folds": int(len(done)),
        "failed_folds": int(len(folds) - len(done)),
        "fit_seconds": float(done["fit_seconds"].sum()),
        "worker_pids": sorted({e["pid"] for e in events}),
        "events": events,
    }
    slots = max_concurrent_trials or SLOTS
    record["slots"] = slots
    record["efficiency"] = record["fit_seconds"] / (wall * slots)
    record["model_reuse_rate"] = float(done["model_reused"].astype(bool).mean())
    log(f"  {label}: {record['complete_folds']} folds ({record['failed_folds']} failed) in {wall:.1f} s, "
        f"fit {record['fit_seconds']:.1f} s, efficiency {record['efficiency']:.3f}, "
        f"{len(record['worker_pids'])} worker process(es), model reused in {record['model_reuse_rate']:.0%} of folds")
    if not keep:
        shutil.rmtree(os.path.join(root, label), ignore_errors=True)
    return record


# -- where the time goes --------------------------------------------------------------------------------------
PARTS = [
    ("startup", "start-up: experiment() to each actor's first trial (Tune set-up, actor spawn)"),
    ("tf_import", "Keras/TensorFlow import in the worker (first fold of a process)"),
    ("pre_build", "train_fold before the builder: clear_session (it runs gc.collect), seed"),
    ("build", "builder (Keras model construction)"),
    ("compile", "model.compile (+ keras_optimizer)"),
    ("load", "loader (StratifiedKFold split + tf.data pipelines)"),
    ("fit_setup", "loader end to model.fit start"),
    ("fit_train", "model.fit: training + validation, without the reports"),
    ("fit_report", "model.fit: per-epoch tune.report (synchronous round trip to the driver)"),
    ("checkpoint", "after fit: best weights restored, model.weights.h5 + fold.json written"),
    ("final_report", "final tune.report with the checkpoint (persist + round trip)"),
    ("cleanup", "after the final report until train_fold returns"),
    ("turnover", "Tune turnover: trial end to next trial start on the same actor"),
    ("tail", "tail: each actor's last trial end to the end of experiment()"),
]


def fold_parts(e: dict) -> dict:
    """Seconds of each part of one fold, from its worker events."""
    fit_end = e.get("t_train_end", e["t_end"])
    epoch_reports = [r for r in e["reports"] if not r[2]]
    final = [r for r in e["reports"] if r[2]]
    fit_report = sum(r[1] - r[0] for r in epoch_reports if r[1] <= fit_end)
    # model.fit starts a little before on_train_begin; fit_seconds (reported) would need the result files,
    # the callback window is within a few ms of it
    fit_start = e.get("t_train_begin", e["t_load1"])
    after_fit = final[0][0] if final else e["t_end"]
    after_report = final[0][1] if final else e["t_end"]
    import_s = e["t_import1"] - e["t_import0"] if e["first_in_process"] else 0.0
    parts = {
        "tf_import": import_s,
        "pre_build": e["t_build0"] - e["t_start"] - import_s,
        "build": e["t_build1"] - e["t_build0"],
        "compile": e["t_load0"] - e["t_build1"],
        "load": e["t_load1"] - e["t_load0"],
        "fit_setup": fit_start - e["t_load1"],
        "fit_train": fit_end - fit_start - fit_report,
        "fit_report": fit_report,
        "checkpoint": after_fit - fit_end,
        "final_report": after_report - after_fit,
        "cleanup": e["t_end"] - after_report,
    }
    epochs = [b - a for a, b in e["epochs"] if b is not None]
    parts["first_epoch_extra"] = epochs[0] - statistics.median(epochs[1:]) if len(epochs) > 2 else 0.0
    return parts


def breakdown(run: dict) -> dict:
    """Seconds and share of (wall x slots) of each part, summed over the run's folds and actors."""
    events = run["events"]
    total = {key: 0.0 for key, _ in PARTS}
    total["first_epoch_extra"] = 0.0
    by_pid: dict[int, list[dict]] = {}
    incomplete = 0
    for e in events:
        by_pid.setdefault(e["pid"], []).append(e)
        if not all(k in e for k in ("t_build0", "t_build1", "t_load0", "t_load1")):
            incomplete += 1  # a fold that raised before fit: its whole time counts as pre_build
            total["pre_build"] += e["t_end"] - e["t_start"]
            continue
        for key, value in fold_parts(e).items():
            total[key] += value
    t0, t1 = run["t_experiment_start"], run["t_experiment_end"]
    if run["reuse_actors"]:
        for evs in by_pid.values():
            evs.sort(key=lambda e: e["t_start"])
            total["startup"] += evs[0]["t_start"] - t0
            total["turnover"] += sum(b["t_start"] - a["t_end"] for a, b in zip(evs, evs[1:]))
            total["tail"] += t1 - evs[-1]["t_end"]
    else:  # a new actor per fold: slot time outside folds is start-up, turnover and tail together
        total["startup"] = run["wall_seconds"] * run["slots"] - sum(e["t_end"] - e["t_start"] for e in events)
    capacity = run["wall_seconds"] * run["slots"]
    accounted = sum(total[k] for k, _ in PARTS)
    out = {k: {"seconds": total[k], "share": total[k] / capacity} for k, _ in PARTS}
    out["unaccounted"] = {"seconds": capacity - accounted, "share": (capacity - accounted) / capacity}
    out["first_epoch_extra"] = {"seconds": total["first_epoch_extra"], "share": total["first_epoch_extra"] / capacity,
                                "note": "part of fit_train: first epoch minus the median epoch (tf.function tracing)"}
    n = max(len(events), 1)
    out["per_fold_ms"] = {k: 1000 * total[k] / n for k, _ in PARTS if k not in ("startup", "tail")}
    out["capacity_seconds"] = capacity
    out["actors"] = len(by_pid)
    out["folds"] = len(events)
    out["folds_without_timings"] = incomplete
    return out


def format_breakdown(b: dict, title: str) -> str:
    lines = [title, f"{'part':<14}{'seconds':>9}{'share':>8}{'ms/fold':>9}  what"]
    for key, what in PARTS:
        ms = b["per_fold_ms"].get(key)
        lines.append(f"{key:<14}{b[key]['seconds']:>9.1f}{b[key]['share']:>8.1%}"
                     f"{'' if ms is None else f'{ms:.0f}':>9}  {what}")
    lines.append(f"{'unaccounted':<14}{b['unaccounted']['seconds']:>9.1f}{b['unaccounted']['share']:>8.1%}")
    lines.append(f"{'(of fit_train: first-epoch extra':<34}{b['first_epoch_extra']['seconds']:>7.1f} s, "
                 f"{b['first_epoch_extra']['share']:.1%})")
    lines.append(f"wall x slots = {b['capacity_seconds']:.1f} s, {b['folds']} folds on {b['actors']} actor(s)")
    return "\n".join(lines)


# -- KerasTuner, in a subprocess ----------------------------------------------------------------------------
def kerastuner_worker(configs: int, epochs: int, seed: int, out: str) -> None:
    """The same CV search with KerasTuner in this one process; writes timings to ``out``."""
    t0 = time.perf_counter()
    import keras
    import keras_tuner as kt

    from glimr_cv import keras_losses, keras_metrics, keras_optimizer
    from glimr_cv.demo import SPACE, builder, loader

    t_imported = time.perf_counter()
    fit_seconds, fold_scores = [], []

    def config_of(hp) -> dict:
        """A glimr_cv-style configuration drawn from KerasTuner hyperparameters (same space)."""
        return {
            "units": hp.Choice("units", [32, 64, 128]),
            "layers": hp.Int("layers", 1, 2),
            "dropout": hp.Float("dropout", 0.0, 0.5, step=0.05),
            "activation": hp.Choice("activation", ["relu", "gelu"]),
            "tasks": SPACE["tasks"],
            "optimization": {"method": hp.Choice("method", ["adam", "rms", "nadam"]),
                             "learning_rate": hp.Float("learning_rate", 0.0005, 0.01), "epochs": epochs},
            "data": {"batch_size": BATCH_SIZE},
        }

    def build(hp):
        config = config_of(hp)
        model, losses, loss_weights, _ = builder(config)
        model.compile(optimizer=keras_optimizer(config["optimization"]), loss=losses, loss_weights=loss_weights,
                      metrics=keras_metrics(config))
        return model

    class CVTuner(kt.Tuner):
        """KerasTuner's recipe for cross-validation: run_trial loops over the folds."""

        def run_trial(self, trial, folds=FOLDS):
            scores = []
            for i in range(folds):
                keras.backend.clear_session()
                model = self.hypermodel.build(trial.hyperparameters)
                train_ds, val_ds = loader(batch_size=BATCH_SIZE, cv_index=i, cv_folds=folds)
                start = time.perf_counter()
                history = model.fit(train_ds, validation_data=val_ds, epochs=epochs, verbose=0, shuffle=False)
                fit_seconds.append(time.perf_counter() - start)
                scores.append(max(history.history["val_accuracy"]))
            fold_scores.append(scores)
            return {"val_accuracy": statistics.fmean(scores)}

    directory = tempfile.mkdtemp(prefix="glimr_kt_bench_")
    try:
        tuner = CVTuner(hypermodel=build, directory=directory, project_name="digits", overwrite=True,
                        oracle=kt.oracles.RandomSearchOracle(objective=kt.Objective("val_accuracy", "max"),
                                                             max_trials=configs, seed=seed))
        t_search = time.perf_counter()
        tuner.search()
        t_end = time.perf_counter()
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    with open(out, "w") as f:
        json.dump({"search_seconds": t_end - t_search, "with_import_seconds": t_end - t0,
                   "import_seconds": t_imported - t0, "fit_seconds": sum(fit_seconds), "folds": len(fit_seconds),
                   "trials": len(fold_scores), "keras_tuner_version": kt.__version__,
                   "best_cv_mean": max(statistics.fmean(s) for s in fold_scores)}, f)


def run_kerastuner(configs: int, epochs: int, root: str) -> dict:
    out = os.path.join(root, "kerastuner.json")
    cmd = [sys.executable, os.path.abspath(__file__), "--_kerastuner-worker", out, "--configs", str(configs),
           "--epochs", str(epochs)]
    start = time.perf_counter()
    proc = subprocess.run(cmd, stdout=sys.stderr, stderr=sys.stderr)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0 or not os.path.exists(out):
        raise RuntimeError(f"KerasTuner run failed (exit {proc.returncode})")
    with open(out) as f:
        record = json.load(f)
    record["process_seconds"] = elapsed
    log(f"  kerastuner: {record['folds']} folds in {record['search_seconds']:.1f} s (search), "
        f"{record['with_import_seconds']:.1f} s with imports, fit {record['fit_seconds']:.1f} s")
    return record


# -- scheduler overhead, pure Python ------------------------------------------------------------------------
def bench_scheduler(n_configs: int = 10_000, cycles: int = 3000, seed: int = 0) -> dict:
    """Per-call cost of the suggest path with ``n_configs`` configurations in the heap."""
    from glimr_cv.demo import SPACE
    from glimr_cv.racing import get_rule
    from glimr_cv.scheduler import NEW, WAIT, FoldScheduler, Run
    from glimr_cv.searcher import CVSearcher  # imports ray.tune.search only; Ray is not started
    from glimr_cv.space import validate_space

    rng = random.Random(seed)
    parsed = validate_space(SPACE)

    def filled(max_configs):
        sched = FoldScheduler(FOLDS, "max", get_rule("forgiving"), max_configs=max_configs)
        for i in range(10):  # complete configurations: an incumbent with mean ~0.95
            for _ in range(FOLDS):
                run = sched.next()
                run = sched.add_config({"i": i}) if run == NEW else run
                sched.finish(run.config_id, run.fold, 0.93 + 0.04 * rng.random())
        while len(sched.configs) < n_configs:  # one finished fold each, scores close to the incumbent's
            run = sched.add_config({"i": len(sched.configs)})
            sched.finish(run.config_id, run.fold, 0.90 + 0.06 * rng.random())
        return sched

    def cycle_times(sched, step) -> list[float]:
        times = []
        for i in range(cycles):
            start = time.perf_counter()
            step(i)
            times.append(1000 * (time.perf_counter() - start))
        return times

    def summary(times, sched) -> dict:
        times = sorted(times)
        return {"median_ms": statistics.median(times), "p90_ms": times[int(0.9 * len(times))],
                "p99_ms": times[int(0.99 * len(times))], "max_ms": times[-1], "cycles": len(times),
                "configs_after": len(sched.configs), "heap_after": len(sched._heap)}

    out = {}
    # 1. bare FoldScheduler: next() (+ add_config on NEW) then finish(), new configurations still allowed
    for label, max_configs in (("scheduler_new_allowed", None), ("scheduler_max_configs_reached", n_configs)):
        sched = filled(max_configs)

        def step(i, sched=sched):
            run = sched.next()
            if run == NEW:
                run = sched.add_config({"i": len(sched.configs)})
            if isinstance(run, Run):
                sched.finish(run.config_id, run.fold, 0.90 + 0.06 * rng.random())

        out[label] = summary(cycle_times(sched, step), sched)
    # 2. the CVSearcher path Tune calls: suggest() (sampling the demo space on NEW) + on_trial_complete()
    for label, max_configs in (("searcher_new_allowed", None), ("searcher_max_configs_reached", n_configs)):
        sched = filled(max_configs)
        searcher = CVSearcher(parsed, sched, METRIC, "max", seed=seed)

        def step(i, searcher=searcher):
            trial_id = f"t{i}"
            config = searcher.suggest(trial_id)
            if isinstance(config, dict):
                searcher.on_trial_complete(trial_id, {"fold_score": 0.90 + 0.06 * rng.random(),
                                                      "fold_status": "complete"})

        out[label] = summary(cycle_times(sched, step), sched)
    # 3. the WAIT path (what Tune hits while the last folds run and a slot is free): every configuration
    #    has started all its folds and the newest one still runs, the worst case of the scan for running folds
    sched = FoldScheduler(FOLDS, "max", None, max_configs=n_configs)
    held = None
    while True:
        run = sched.next()
        run = sched.add_config({"i": len(sched.configs)}) if run == NEW else run
        if not isinstance(run, Run):
            break
        if held is None and run.config_id == n_configs - 1 and not sched.configs[run.config_id].todo:
            held = run  # keep it running
            continue
        sched.finish(run.config_id, run.fold, rng.random())
    assert held is not None and sched.next() == WAIT
    out["scheduler_wait_path"] = summary(cycle_times(sched, lambda i: sched.next()), sched)
    out["suggest_ms_median_10k"] = max(out["searcher_new_allowed"]["median_ms"],
                                       out["searcher_max_configs_reached"]["median_ms"])
    log("  scheduler: " + ", ".join(f"{k} median {v['median_ms']:.4f} ms (p99 {v['p99_ms']:.4f})"
                                    for k, v in out.items() if isinstance(v, dict)))
    return out


# -- worker memory -------------------------------------------------------------------------------------------
def rss_summary(run: dict) -> dict:
    by_pid: dict[int, list[dict]] = {}
    for e in run["events"]:
        by_pid.setdefault(e["pid"], []).append(e)
    pid, evs = max(by_pid.items(), key=lambda kv: len(kv[1]))
    evs.sort(key=lambda e: e["t_start"])
    rss = [e["rss_mb"] for e in evs]
    base = RSS_BASE_FOLD - 1 if len(rss) >= RSS_BASE_FOLD else 0
    xs = list(range(base, len(rss)))
    ys = rss[base:]
    slope = 0.0
    if len(xs) > 1:
        mx, my = statistics.fmean(xs), statistics.fmean(ys)
        slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)
    return {
        "worker_pid": pid,
        "folds_on_worker": len(rss),
        "worker_processes": len(by_pid),
        "rss_after_first_fold_mb": rss[0],
        f"rss_after_fold_{base + 1}_mb": rss[base],
        "rss_after_last_fold_mb": rss[-1],
        "rss_max_mb": max(rss),
        "peak_rss_hwm_mb": evs[-1]["hwm_mb"],
        "growth_mb": rss[-1] - rss[base],
        "slope_mb_per_100_folds": 100 * slope,
        # with fewer than 200 folds (--quick), the target is checked on the growth the slope projects to fold 200
        "projected_growth_200_mb": (rss[-1] - rss[base] if len(rss) >= RSS_FOLDS_TARGET
                                    else slope * (RSS_FOLDS_TARGET - base - 1)),
        "rss_every_10th_fold_mb": [round(r, 1) for r in rss[::10]],
    }


def versions() -> dict:
    """Package versions, and a hash of glimr_cv/trainable.py (the code the workers run)."""
    import hashlib
    from importlib import metadata

    import glimr_cv.trainable

    out = {}
    for name in ("glimr_cv", "ray", "tensorflow", "keras", "keras-tuner"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    with open(glimr_cv.trainable.__file__, "rb") as f:
        out["glimr_cv/trainable.py sha256"] = hashlib.sha256(f.read()).hexdigest()[:16]
    out["python"] = sys.version.split()[0]
    return out


# -- report ---------------------------------------------------------------------------------------------------
def jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if hasattr(obj, "item") and not isinstance(obj, (str, bytes)):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def targets(report: dict) -> list[tuple[str, bool | None, str]]:
    out = []
    eff = report.get("efficiency")
    if eff is not None:
        base = report.get("efficiency_new_actor")
        out.append((f"efficiency >= {TARGET_EFFICIENCY}", eff >= TARGET_EFFICIENCY,
                    f"{eff:.3f} (new actor per trial: {'n/a' if base is None else f'{base:.3f}'})"))
    ratio = report.get("kerastuner_wall_ratio")
    if ratio is not None:
        out.append((f"KerasTuner wall / glimr_cv wall >= {TARGET_KT_RATIO}", ratio >= TARGET_KT_RATIO, f"{ratio:.2f}"))
    ms = report.get("suggest_ms_median_10k")
    if ms is not None:
        out.append((f"suggest <= {TARGET_SUGGEST_MS} ms at 10,000 configurations", ms <= TARGET_SUGGEST_MS,
                    f"{ms:.4f} ms median"))
    rss = report.get("worker_rss_growth_mb")
    if rss is not None:
        d = report["detail"]["rss"]
        projected = d["projected_growth_200_mb"]
        measured = f"{rss:.1f} MB from fold {RSS_BASE_FOLD} to fold {d['folds_on_worker']}"
        if d["folds_on_worker"] < RSS_FOLDS_TARGET:
            measured += f", {projected:.1f} MB projected to fold {RSS_FOLDS_TARGET} by the slope"
        out.append((f"worker RSS growth <= {TARGET_RSS_MB:.0f} MB over {RSS_FOLDS_TARGET} fold trainings",
                    projected <= TARGET_RSS_MB,
                    f"{measured} (slope {d['slope_mb_per_100_folds']:.1f} MB / 100 folds)"))
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="6 configs (2 for the new-actor run), 30 RSS folds")
    parser.add_argument("--json", action="store_true", help="print one JSON object to stdout, the rest to stderr")
    parser.add_argument("--configs", type=int, default=None, help="configurations (default 20; 6 with --quick)")
    parser.add_argument("--new-actor-configs", type=int, default=None,
                        help="configurations of the new-actor baseline (default: --configs; 2 with --quick)")
    parser.add_argument("--epochs", type=int, default=8, help="epochs per fold (default 8, as the demo)")
    parser.add_argument("--rss-folds", type=int, default=None, help="fold trainings of the memory run (200; 30 quick)")
    parser.add_argument("--skip", default="", help="comma-separated parts to skip: kerastuner,no_model_reuse,new_actor,rss,scheduler")
    parser.add_argument("--details", default=None, help="write every run's per-fold timings to this JSON file")
    parser.add_argument("--keep", action="store_true", help="keep the experiment directories")
    parser.add_argument("--_kerastuner-worker", dest="kt_worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.configs = args.configs or (6 if args.quick else 20)
    args.new_actor_configs = args.new_actor_configs or (2 if args.quick else args.configs)
    args.rss_folds = args.rss_folds or (30 if args.quick else 200)
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}

    if args.kt_worker:
        kerastuner_worker(args.configs, args.epochs, 0, args.kt_worker)
        return 0

    json_out = None
    if args.json:  # Ray, TensorFlow and worker logs write to fd 1: send it to stderr, keep stdout for the JSON
        json_out = os.fdopen(os.dup(1), "w")
        os.dup2(2, 1)

    started = time.perf_counter()
    detail: dict = {"workload": {
        "dataset": "sklearn digits via glimr_cv.demo.loader (StratifiedKFold(5, shuffle, random_state=0))",
        "model": "glimr_cv.demo.builder MLP, glimr_cv.demo.SPACE with batch_size fixed at 32",
        "configs": args.configs, "new_actor_configs": args.new_actor_configs, "folds": FOLDS,
        "epochs": args.epochs, "slots": SLOTS, "racing": None, "preflight": "excluded (check=False)",
        "quick": bool(args.quick)},
        "versions": versions()}
    report: dict = {"efficiency": None, "efficiency_new_actor": None, "kerastuner_wall_ratio": None,
                    "suggest_ms_median_10k": None, "worker_rss_growth_mb": None, "detail": detail}

    if "scheduler" not in skip:
        log("scheduler overhead (pure Python, 10,000 configurations) ...")
        detail["scheduler"] = bench_scheduler()
        report["suggest_ms_median_10k"] = detail["scheduler"]["suggest_ms_median_10k"]

    log("warming the file cache (untimed TensorFlow import) ...")
    subprocess.run([sys.executable, "-c", "import tensorflow, keras"], stdout=sys.stderr, stderr=sys.stderr)

    import ray

    t = time.perf_counter()
    ray.init(address="local", num_cpus=SLOTS, include_dashboard=False, configure_logging=False,
             runtime_env={"env_vars": RAY_ENV})
    detail["ray_init_seconds"] = time.perf_counter() - t
    root = tempfile.mkdtemp(prefix="glimr_throughput_bench_")
    log(f"experiments under {root}")
    runs = {}
    try:
        log(f"glimr_cv defaults: {args.configs} configurations x {FOLDS} folds x {args.epochs} epochs ...")
        runs["default"] = run_glimr("default", root, args.configs, args.epochs, keep=args.keep)
        report["efficiency"] = runs["default"]["efficiency"]
        detail["default"] = {k: v for k, v in runs["default"].items() if k != "events"}
        detail["breakdown_default"] = breakdown(runs["default"])
        # per-epoch tune.report calls wait inside model.fit, so fit_seconds counts them as training time
        detail["efficiency_without_report_waits"] = ((runs["default"]["fit_seconds"]
                                                      - detail["breakdown_default"]["fit_report"]["seconds"])
                                                     / (runs["default"]["wall_seconds"] * SLOTS))
        log(format_breakdown(detail["breakdown_default"], "where the time goes, glimr_cv defaults:"))

        if "kerastuner" not in skip:
            log(f"KerasTuner: {args.configs} trials x {FOLDS} folds x {args.epochs} epochs, one process ...")
            try:
                kt = run_kerastuner(args.configs, args.epochs, root)
            except RuntimeError as err:  # e.g. keras-tuner not installed: report the rest
                log(f"  {err}; is keras-tuner installed (pip install keras-tuner)?")
                detail["kerastuner_error"] = str(err)
            else:
                detail["kerastuner"] = kt
                glimr_wall = runs["default"]["wall_seconds"]
                report["kerastuner_wall_ratio"] = kt["search_seconds"] / glimr_wall
                detail["kerastuner_wall_ratio_with_import"] = kt["with_import_seconds"] / glimr_wall
                detail["kerastuner_fit_seconds_ratio"] = kt["fit_seconds"] / runs["default"]["fit_seconds"]

        if "no_model_reuse" not in skip:
            log(f"reuse_models=False: {args.configs} configurations x {FOLDS} folds ...")
            runs["no_model_reuse"] = run_glimr("no_model_reuse", root, args.configs, args.epochs, keep=args.keep,
                                               reuse_models=False)
            detail["no_model_reuse"] = {k: v for k, v in runs["no_model_reuse"].items() if k != "events"}
            detail["breakdown_no_model_reuse"] = breakdown(runs["no_model_reuse"])
            # what model reuse buys, measured in this run: wall without it / wall with it
            detail["model_reuse_wall_gain"] = runs["no_model_reuse"]["wall_seconds"] / runs["default"]["wall_seconds"]
            if report["kerastuner_wall_ratio"] is not None:
                detail["kerastuner_wall_ratio_without_model_reuse"] = (detail["kerastuner"]["search_seconds"]
                                                                       / runs["no_model_reuse"]["wall_seconds"])
            log(f"  wall without / with model reuse: {detail['model_reuse_wall_gain']:.2f}")
            log(format_breakdown(detail["breakdown_no_model_reuse"], "where the time goes, reuse_models=False:"))

        if "new_actor" not in skip:
            log(f"new actor per trial: {args.new_actor_configs} configurations x {FOLDS} folds ...")
            runs["new_actor"] = run_glimr("new_actor", root, args.new_actor_configs, args.epochs, reuse=False,
                                          keep=args.keep)
            report["efficiency_new_actor"] = runs["new_actor"]["efficiency"]
            detail["new_actor"] = {k: v for k, v in runs["new_actor"].items() if k != "events"}
            detail["breakdown_new_actor"] = breakdown(runs["new_actor"])
            log(format_breakdown(detail["breakdown_new_actor"], "where the time goes, new actor per trial:"))

        if "rss" not in skip:
            configs = math.ceil(args.rss_folds / FOLDS)
            log(f"worker memory: {configs} configurations x {FOLDS} folds x 1 epoch on one slot ...")
            runs["rss"] = run_glimr("rss", root, configs, 1, seed=1, max_concurrent_trials=1, keep=args.keep)
            detail["rss"] = rss_summary(runs["rss"])
            detail["rss_run"] = {k: v for k, v in runs["rss"].items() if k != "events"}
            report["worker_rss_growth_mb"] = detail["rss"]["growth_mb"]
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
        ray.shutdown()
    detail["total_seconds"] = time.perf_counter() - started
    detail["targets"] = [{"target": n, "pass": ok, "value": v} for n, ok, v in targets(report)]

    if args.details:
        with open(args.details, "w") as f:
            json.dump(jsonable({"report": report, "runs": runs}), f, default=str)
    lines = [f"{'PASS' if ok else 'FAIL'}: {name}: {value}" for name, ok, value in targets(report)]
    lines.append(f"total {detail['total_seconds']:.0f} s")
    if json_out is not None:
        log("\n".join(lines))
        json_out.write(json.dumps(jsonable(report)) + "\n")
        json_out.flush()
    else:
        print("\n".join(lines), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
