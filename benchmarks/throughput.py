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
    Only glimr_cv's public API is used and nothing is patched: every glimr_cv run is
    ``Search(...).experiment(..., check=False)`` (the in-process preflight is left out
    of the wall time) with the live table off; the wall time is that of
    ``experiment()`` alone (Ray is started once, before, and its start-up is reported
    separately). A first, untimed ``python -c "import tensorflow"`` warms the file
    cache so no run pays a cold TensorFlow import that the others do not.

    * ``efficiency`` = sum of ``results.folds["fit_seconds"]`` (time inside
      ``model.fit``, per-epoch ``tune.report`` calls included) / (wall x 2 slots), for
      glimr_cv's defaults (actors reused between folds).
    * ``efficiency_new_actor``: the same search with a new Ray actor, so a new worker
      process with its TensorFlow import, per fold: ``experiment(reuse_actors=False)``.
    * Model reuse: the same search with ``Search(reuse_models=False)`` (every fold
      builds and traces a new model); ``detail["model_reuse_wall_gain"]`` is its wall /
      the default's wall, and each run's ``model_reuse_rate`` is the share of folds
      that trained the worker's previous model (reset) instead of a new one
      (``results.folds["model_reused"]``).
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
    * ``suggest_ms_median_10k``, ``suggest_ms_median_100k``: median time of one
      ``CVSearcher.suggest`` + ``on_trial_complete`` cycle (``FoldScheduler.next`` /
      ``add_config`` / ``finish`` underneath; pure Python, no Ray running) with 10,000
      or 100,000 configurations registered, each with a finished fold and a
      synthetic score (a heap of that size), and an incumbent; the larger median of
      the racing rules ``paired`` (the default, whose new configurations run their
      folds in ``FoldScheduler.fold_order``) and ``forgiving`` (folds in index
      order), with new configurations allowed or ``max_configs`` reached.
      ``detail["scheduler"]`` has each, the bare ``FoldScheduler`` cycle and the
      ``WAIT`` path (no configuration with folds left, the newest one running).
    * ``worker_rss_growth_mb``: one worker slot (``max_concurrent_trials=1``), 40
      configurations x 5 folds x 1 epoch = 200 fold trainings on one reused actor;
      the worker's RSS at the end of every fold is the fold row's ``worker_rss_mb``;
      growth = RSS after the last fold - RSS after the 5th; the least-squares slope
      over folds 5..200 is in ``detail`` (MB per 100 folds). The peak RSS (VmHWM) the
      benchmark used to read in the worker is not in the fold rows and is dropped.

Profile
    Rebuilt from the public fold rows (``results.folds``, the profile columns of
    :data:`glimr_cv.schema.PROFILE`: ``worker``, ``started_at``, ``ended_at``,
    ``build_seconds``, ``load_seconds``, ``save_seconds``, with ``fit_seconds``) and
    the experiment's start and end; :func:`breakdown` gives seconds and shares of
    (wall x slots). Measured, and summing to wall x slots per worker:

    * start-up: ``experiment()`` to each worker's first ``started_at``;
    * build (clear_session, builder, compile, model reset), load, fit, save: the
      fold's own timings;
    * untimed in-fold time: ``ended_at - started_at`` minus those four. On the first
      fold of a worker it holds the TensorFlow/Keras import; the import is estimated
      as that fold's untimed time minus the median untimed time of the run's other
      folds (for a new actor per fold, where every fold is a first one, minus the
      default run's median). The rest is before the builder (checkpoint check,
      gradient-registry clean-up) and between the parts;
    * between folds: ``ended_at`` to the next ``started_at`` on the same worker. It
      holds ``fold.json``, the final ``tune.report`` with its checkpoint and Tune's
      turnover together: ``ended_at`` is taken before the final report, so they can
      no longer be told apart;
    * tail: each worker's last ``ended_at`` to the end of ``experiment()``.

    With a new actor per fold, all slot time outside the folds counts as start-up.
    Two parts of ``fit`` are estimated from Ray Tune's own per-report
    ``time_this_iter_s`` (``results.result_grid``; for reports 2..n it is the epoch
    without the wait for the driver, report 1 also covers the fold's start): the
    per-epoch ``tune.report`` waits (fit seconds minus the epochs) and the
    first-epoch extra (first epoch minus the median epoch: tracing a new model).
    No longer measured, since the fold rows do not time them apart: ``compile`` apart
    from the builder (both in build), ``clear_session`` apart from the builder, and
    the final report apart from Tune's turnover.

Quote the ratios, not absolute times: the machine may be shared and noisy.

Targets (printed as PASS/FAIL lines)
    efficiency >= 0.92; KerasTuner wall ratio >= 1.8; suggest <= 0.1 ms at 10,000
    configurations and <= 0.2 ms at 100,000; worker RSS growth <= 150 MB over 200
    fold trainings.

How to run (from the repository root; keras-tuner is needed for the comparison, 1.4.8
was used; without it that comparison is skipped)::

    .venv/bin/pip install keras-tuner
    .venv/bin/python benchmarks/throughput.py [--quick] [--json]

The full run takes about 16 minutes on 2 cores (the new-actor baseline and the memory run
are half of it); ``--quick`` (6 configurations for the glimr_cv and KerasTuner
runs, 2 for the new-actor baseline, 30 folds for memory, whose target is then checked
on the growth its slope projects to fold 200) about 3.5. ``--configs``, ``--epochs``,
``--new-actor-configs`` and ``--rss-folds`` override the workload, ``--skip`` leaves
parts out (``kerastuner,no_model_reuse,new_actor,rss,scheduler,startup``), ``--details FILE`` writes every
fold's profile, ``--keep`` keeps the experiment directories. The scheduler part takes
about 1.5 minutes (1,000 cycles instead of 3,000 with ``--quick``); ``--only suggest``
runs it alone: no Ray, no TensorFlow. The start-up part runs a fresh Python (cold: Ray
starts and TensorFlow is imported; then warm) and times ``experiment()`` to the first
fold's start; ``--only startup`` runs it alone (about a minute).
With ``--json`` exactly one JSON object is printed to stdout and everything else goes
to stderr. The exit status is 0 whatever the targets say.
"""

from __future__ import annotations

import argparse
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

from harness import (FOLDS, METRIC, SLOTS, claim_stdout, emit, log, make_space, new_parser, ray_session,
                     remove_experiment, run_search, target_lines, versions)

BATCH_SIZE = 32

TARGET_EFFICIENCY = 0.92
TARGET_KT_RATIO = 1.8
SUGGEST_CONFIGS = (10_000, 100_000)
TARGET_SUGGEST_MS = {10_000: 0.1, 100_000: 0.2}  # median, by configurations registered
SUGGEST_RULES = ("paired", "forgiving")
TARGET_RSS_MB = 150.0
TARGET_STARTUP_COLD_S = 5.0  # from experiment() to the first fold's start, in a fresh process
RSS_BASE_FOLD = 5  # growth is measured from the end of this fold
RSS_FOLDS_TARGET = 200
PROFILE_COLUMNS = ("config_id", "fold", "status", "trial_id", "worker", "started_at", "ended_at", "build_seconds",
                   "load_seconds", "fit_seconds", "save_seconds", "worker_rss_mb", "model_reused")


# -- one glimr_cv run -------------------------------------------------------------------------------------
def epoch_seconds(results) -> dict[str, list[float]]:
    """Ray Tune's ``time_this_iter_s`` of each trial's per-epoch reports, by trial id (from the public ResultGrid)."""
    from glimr_cv.schema import STATUS

    out = {}
    for result in results.result_grid or []:
        df = result.metrics_dataframe
        if df is None or "time_this_iter_s" not in df or "epoch" not in df:
            continue
        epochs = df[df["epoch"].notna() & (df[STATUS].isna() if STATUS in df else True)]  # not the final report
        trial_id = (result.metrics or {}).get("trial_id")
        if trial_id is not None:
            out[trial_id] = [float(s) for s in epochs["time_this_iter_s"]]
    return out


def run_glimr(label: str, root: str, configs: int, epochs: int, seed: int = 0, reuse_actors: bool = True,
              max_concurrent_trials: int | None = None, keep: bool = False, reuse_models: bool = True) -> dict:
    from glimr_cv import Search
    from glimr_cv.demo import builder, loader

    search = Search(make_space(epochs, batch_size=BATCH_SIZE), builder, loader, metric=METRIC, mode="max",
                    cv_folds=FOLDS, racing=None, seed=seed, reuse_models=reuse_models)
    run = run_search(search, root, label, num_samples=configs, max_concurrent_trials=max_concurrent_trials,
                     reuse_actors=reuse_actors, check=False)
    results, wall = run.results, run.wall_seconds
    folds = results.folds
    done = folds[folds["status"] == "complete"]
    if not len(done):
        raise RuntimeError(f"{label}: no fold completed; see the trial errors above")
    iters = epoch_seconds(results)
    rows = [{**{k: row[k] for k in PROFILE_COLUMNS}, "epoch_seconds": iters.get(row["trial_id"], [])}
            for row in folds.to_dict("records")]
    slots = max_concurrent_trials or SLOTS
    record = {
        "label": label,
        "configs": configs,
        "epochs": epochs,
        "reuse_actors": reuse_actors,
        "reuse_models": reuse_models,
        "slots": slots,
        "wall_seconds": wall,
        "t_experiment_start": run.started,
        "t_experiment_end": run.ended,
        "fold_trainings": int(results.fold_trainings),
        "complete_folds": int(len(done)),
        "failed_folds": int(len(folds) - len(done)),
        "fit_seconds": float(done["fit_seconds"].sum()),
        "workers": sorted({r["worker"] for r in rows if isinstance(r["worker"], str)}),
        "model_reuse_rate": float(done["model_reused"].astype(bool).mean()),
        "folds": rows,
    }
    record["efficiency"] = record["fit_seconds"] / (wall * slots)
    log(f"  {label}: {record['complete_folds']} folds ({record['failed_folds']} failed) in {wall:.1f} s, "
        f"fit {record['fit_seconds']:.1f} s, efficiency {record['efficiency']:.3f}, "
        f"{len(record['workers'])} worker process(es), model reused in {record['model_reuse_rate']:.0%} of folds")
    remove_experiment(root, label, keep)
    return record


def summary_of(run: dict) -> dict:
    """A run's record without its per-fold rows."""
    return {k: v for k, v in run.items() if k != "folds"}


# -- where the time goes --------------------------------------------------------------------------------------
PARTS = [
    ("startup", "start-up: experiment() to each worker's first fold (Tune set-up, actor spawn)"),
    ("tf_import", "TensorFlow/Keras import, first fold of each worker (estimate: its untimed time over the median)"),
    ("fold_other", "untimed rest of the fold: before the builder (checkpoint check, gradient registry), gaps"),
    ("build", "build_seconds: clear_session, builder, compile, model reset or reuse"),
    ("load", "load_seconds: the loader (StratifiedKFold split + tf.data pipelines)"),
    ("fit", "fit_seconds: model.fit, training + validation + per-epoch tune.report"),
    ("save", "save_seconds: best weights restored, model.weights.h5 written"),
    ("between", "ended_at to the next fold's started_at on a worker: fold.json, final report, Tune turnover"),
    ("tail", "tail: each worker's last ended_at to the end of experiment() (its final report included)"),
]
FIT_ESTIMATES = [
    ("fit_report", "of fit: per-epoch tune.report waits (fit minus the epochs' time_this_iter_s)"),
    ("first_epoch_extra", "of fit: first epoch minus the median epoch (tracing), from time_this_iter_s"),
]


def profiled(run: dict) -> list[dict]:
    """The run's fold rows that have a whole profile, each with its untimed in-fold seconds."""
    keys = ("started_at", "ended_at", "build_seconds", "load_seconds", "fit_seconds", "save_seconds")
    rows = []
    for row in run["folds"]:
        if not isinstance(row["worker"], str) or any(not finite(row[k]) for k in keys):
            continue
        timed = row["build_seconds"] + row["load_seconds"] + row["fit_seconds"] + row["save_seconds"]
        rows.append({**row, "untimed": row["ended_at"] - row["started_at"] - timed})
    return sorted(rows, key=lambda r: r["started_at"])


def finite(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


def untimed_median(run: dict) -> float | None:
    """Median untimed in-fold seconds of the folds that are not the first of their worker."""
    seen, rest = set(), []
    for row in profiled(run):
        if row["worker"] in seen:
            rest.append(row["untimed"])
        seen.add(row["worker"])
    return statistics.median(rest) if rest else None


def fit_estimates(row: dict) -> dict | None:
    """Per-epoch report waits and first-epoch extra of one fold, from Tune's ``time_this_iter_s``.

    Report 1's iteration runs from the trial's start to the first report: the
    untimed start, build, load and epoch 1; reports 2..n each time one epoch,
    without the wait for the driver, which ``fit_seconds`` includes.
    """
    iters = row["epoch_seconds"]
    if row["status"] != "complete" or len(iters) < 2:
        return None
    first = iters[0] - row["build_seconds"] - row["load_seconds"] - row["untimed"]
    return {
        "fit_report": row["fit_seconds"] - first - sum(iters[1:]),
        "first_epoch_extra": first - statistics.median(iters[1:]) if len(iters) > 2 else 0.0,
    }


def breakdown(run: dict, untimed_baseline: float | None = None) -> dict:
    """Seconds and share of (wall x slots) of each part, summed over the run's folds and workers.

    ``untimed_baseline`` is the median untimed in-fold time of a fold that is not
    its worker's first, for runs without such folds (a new actor per fold).
    """
    rows = profiled(run)
    baseline = untimed_median(run)
    baseline = untimed_baseline if baseline is None else baseline
    total = {key: 0.0 for key, _ in PARTS + FIT_ESTIMATES}
    by_worker: dict[str, list[dict]] = {}
    estimated = 0
    for row in rows:
        first = row["worker"] not in by_worker
        by_worker.setdefault(row["worker"], []).append(row)
        for key in ("build", "load", "fit", "save"):
            total[key] += row[f"{key}_seconds"]
        tf_import = max(0.0, row["untimed"] - (baseline or 0.0)) if first else 0.0
        total["tf_import"] += tf_import
        total["fold_other"] += row["untimed"] - tf_import
        est = fit_estimates(row)
        if est is not None:
            estimated += 1
            for key, value in est.items():
                total[key] += value
    t0, t1 = run["t_experiment_start"], run["t_experiment_end"]
    capacity = run["wall_seconds"] * run["slots"]
    if run["reuse_actors"]:
        for worker_rows in by_worker.values():
            total["startup"] += worker_rows[0]["started_at"] - t0
            total["between"] += sum(b["started_at"] - a["ended_at"] for a, b in zip(worker_rows, worker_rows[1:]))
            total["tail"] += t1 - worker_rows[-1]["ended_at"]
    else:  # a new actor per fold: slot time outside the folds is start-up, final reports and turnover together
        total["startup"] = capacity - sum(r["ended_at"] - r["started_at"] for r in rows)
    accounted = sum(total[k] for k, _ in PARTS)
    out = {k: {"seconds": total[k], "share": total[k] / capacity} for k, _ in PARTS + FIT_ESTIMATES}
    out["unaccounted"] = {"seconds": capacity - accounted, "share": (capacity - accounted) / capacity}
    n = max(len(rows), 1)
    out["per_fold_ms"] = {k: 1000 * total[k] / n for k, _ in PARTS if k not in ("startup", "tail")}
    out["per_fold_ms"].update({k: 1000 * total[k] / max(estimated, 1) for k, _ in FIT_ESTIMATES})
    out["capacity_seconds"] = capacity
    out["workers"] = len(by_worker)
    out["folds"] = len(rows)
    out["folds_without_profile"] = len(run["folds"]) - len(rows)
    out["folds_with_fit_estimates"] = estimated
    out["untimed_baseline_ms"] = None if baseline is None else 1000 * baseline
    return out


def format_breakdown(b: dict, title: str) -> str:
    lines = [title, f"{'part':<18}{'seconds':>9}{'share':>8}{'ms/fold':>9}  what"]
    for key, what in PARTS + [("unaccounted", "wall x slots minus the parts above")] + FIT_ESTIMATES:
        ms = b["per_fold_ms"].get(key)
        lines.append(f"{key:<18}{b[key]['seconds']:>9.1f}{b[key]['share']:>8.1%}"
                     f"{'' if ms is None else f'{ms:.0f}':>9}  {what}")
    lines.append(f"wall x slots = {b['capacity_seconds']:.1f} s, {b['folds']} folds on {b['workers']} worker(s); "
                 f"the parts down to 'unaccounted' add up to it, the last two are estimated parts of fit")
    return "\n".join(lines)


# -- KerasTuner, in a subprocess ----------------------------------------------------------------------------
def startup_worker(out: str) -> None:
    """In a fresh process (no Ray, no TensorFlow yet): seconds from ``experiment()`` to the first fold's start.

    The search is the demo's (1 configuration x 2 folds x 1 epoch, the preflight on),
    run twice: cold (Ray starts, TensorFlow is imported in the driver and the workers)
    and warm (Ray running and TensorFlow imported here; new workers all the same).
    """
    from glimr_cv import Search
    from glimr_cv.demo import SPACE, builder, loader

    space = dict(SPACE, optimization={**SPACE["optimization"], "epochs": 1})
    root = tempfile.mkdtemp(prefix="glimr_startup_")
    record = {}
    try:
        for kind in ("cold", "warm"):
            search = Search(space, builder, loader, metric=METRIC, cv_folds=2, racing=None)
            search.set_reporter(max_report_frequency=0)
            started = time.time()
            results = search.experiment(root, name=kind, num_samples=1)
            record[kind] = float(results.folds["started_at"].min() - started)
            record[f"{kind}_wall"] = time.time() - started
    finally:
        shutil.rmtree(root, ignore_errors=True)
        import ray

        ray.shutdown()
    with open(out, "w") as f:
        json.dump(record, f)


def run_startup() -> dict:
    """:func:`startup_worker` in a fresh Python, with Ray's own CPUs for 2 slots."""
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "startup.json")
        env = {**os.environ, "RAY_DEDUP_LOGS": "0"}
        env.pop("RAY_ADDRESS", None)
        subprocess.run([sys.executable, __file__, "--startup-worker", out], stdout=sys.stderr, stderr=sys.stderr,
                       env=env, check=True)
        with open(out) as f:
            return json.load(f)


def kerastuner_worker(configs: int, epochs: int, seed: int, out: str) -> None:
    """The same CV search with KerasTuner in this one process; writes timings to ``out``."""
    t0 = time.perf_counter()
    import keras
    import keras_tuner as kt

    from glimr_cv import keras_metrics, keras_optimizer
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
    cmd = [sys.executable, os.path.abspath(__file__), "--kerastuner-worker", out, "--configs", str(configs),
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
def filled_scheduler(n_configs: int, rule: str | None, max_configs: int | None, rng: random.Random):
    """A ``FoldScheduler`` with ``n_configs`` configurations: 10 complete ones, among them an incumbent with
    mean ~0.95, and the others with one finished fold each, scores close to the incumbent's.

    Close means 0.90-0.96, and for a rule with a tolerance (``paired``) within it of the
    incumbent's score on the same fold: the rule would stop the others at once.
    """
    from glimr_cv import FoldScheduler
    from glimr_cv.engine.racing import get_rule
    from glimr_cv.engine.scheduler import NEW

    sched = FoldScheduler(FOLDS, "max", get_rule(rule), max_configs=max_configs)
    for i in range(10):
        for _ in range(FOLDS):
            run = sched.next()
            run = sched.add_config({"i": i}) if run == NEW else run
            sched.finish(run.config_id, run.fold, 0.93 + 0.04 * rng.random())
    best = sched.configs[sched.best()]
    tolerance = getattr(sched.racing, "tolerance", None)
    while len(sched.configs) < n_configs:
        run = sched.add_config({"i": len(sched.configs)})
        if tolerance is None:
            score = 0.90 + 0.06 * rng.random()
        else:
            score = best.scores[run.fold] + tolerance * (2 * rng.random() - 1)
        sched.finish(run.config_id, run.fold, score)
    return sched


def bench_scheduler(n_configs: int = 10_000, cycles: int = 3000, seed: int = 0, rules=SUGGEST_RULES) -> dict:
    """Per-call cost of the suggest path with ``n_configs`` configurations in the heap, for each racing rule."""
    from glimr_cv import FoldScheduler, validate_space
    from glimr_cv.demo import SPACE
    from glimr_cv.engine.scheduler import NEW, WAIT, Run
    from glimr_cv.engine.searcher import CVSearcher  # imports ray.tune.search only; Ray is not started
    from glimr_cv.schema import SCORE, STATUS

    parsed = validate_space(SPACE)

    def cycle_times(step) -> list[float]:
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
                "configs_after": len(sched.configs),
                "configs_with_folds_left": sum(1 for c in sched.configs.values() if c.todo and c.status == "running")}

    out: dict = {"configs": n_configs}
    for rule in rules:
        out[rule] = by_rule = {}
        for label, max_configs in (("new_allowed", None), ("max_configs_reached", n_configs)):
            # 1. bare FoldScheduler: next() (+ add_config on NEW) then finish()
            rng = random.Random(f"{seed} {rule} scheduler {label}")  # each measurement alone is reproducible
            sched = filled_scheduler(n_configs, rule, max_configs, rng)

            def step(i, sched=sched, rng=rng):
                run = sched.next()
                if run == NEW:
                    run = sched.add_config({"i": len(sched.configs)})
                if isinstance(run, Run):
                    sched.finish(run.config_id, run.fold, 0.90 + 0.06 * rng.random())

            by_rule[f"scheduler_{label}"] = summary(cycle_times(step), sched)
            # 2. the CVSearcher path Tune calls: suggest() (sampling the demo space on NEW) + on_trial_complete()
            rng = random.Random(f"{seed} {rule} searcher {label}")
            sched = filled_scheduler(n_configs, rule, max_configs, rng)
            searcher = CVSearcher(parsed, sched, METRIC, "max", seed=seed)

            def step(i, searcher=searcher, rng=rng):
                trial_id = f"t{i}"
                config = searcher.suggest(trial_id)
                if isinstance(config, dict):
                    searcher.on_trial_complete(trial_id, {SCORE: 0.90 + 0.06 * rng.random(), STATUS: "complete"})

            by_rule[f"searcher_{label}"] = summary(cycle_times(step), sched)
            del sched, searcher
    # 3. the WAIT path (what Tune hits while the last folds run and a slot is free): every configuration
    #    has started all its folds and the newest one still runs, the worst case of a scan for running folds
    rng = random.Random(f"{seed} wait")
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
    out["scheduler_wait_path"] = summary(cycle_times(lambda i: sched.next()), sched)
    out["suggest_ms_median"] = max(out[rule][f"searcher_{label}"]["median_ms"] for rule in rules
                                   for label in ("new_allowed", "max_configs_reached"))
    log(f"  {n_configs:,} configurations: " + "; ".join(
        f"{rule} " + ", ".join(f"{k} {v['median_ms']:.4f} ms (p99 {v['p99_ms']:.4f})" for k, v in out[rule].items())
        for rule in rules) + f"; WAIT path {out['scheduler_wait_path']['median_ms']:.4f} ms")
    return out


def suggest_key(n_configs: int) -> str:
    """The report's key of the median suggest at ``n_configs`` configurations."""
    return f"suggest_ms_median_{n_configs // 1000}k"


# -- worker memory -------------------------------------------------------------------------------------------
def rss_summary(run: dict) -> dict:
    """RSS growth of the worker that trained the most folds, from the fold rows' ``worker_rss_mb``."""
    by_worker: dict[str, list[dict]] = {}
    for row in run["folds"]:
        if isinstance(row["worker"], str) and finite(row["worker_rss_mb"]) and finite(row["started_at"]):
            by_worker.setdefault(row["worker"], []).append(row)
    worker, rows = max(by_worker.items(), key=lambda kv: len(kv[1]))
    rows.sort(key=lambda r: r["started_at"])
    rss = [r["worker_rss_mb"] for r in rows]
    base = RSS_BASE_FOLD - 1 if len(rss) >= RSS_BASE_FOLD else 0
    xs = list(range(base, len(rss)))
    ys = rss[base:]
    slope = 0.0
    if len(xs) > 1:
        mx, my = statistics.fmean(xs), statistics.fmean(ys)
        slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)
    return {
        "worker": worker,
        "folds_on_worker": len(rss),
        "workers": len(by_worker),
        "rss_after_first_fold_mb": rss[0],
        f"rss_after_fold_{base + 1}_mb": rss[base],
        "rss_after_last_fold_mb": rss[-1],
        "rss_max_mb": max(rss),
        "growth_mb": rss[-1] - rss[base],
        "slope_mb_per_100_folds": 100 * slope,
        # with fewer than 200 folds (--quick), the target is checked on the growth the slope projects to fold 200
        "projected_growth_200_mb": (rss[-1] - rss[base] if len(rss) >= RSS_FOLDS_TARGET
                                    else slope * (RSS_FOLDS_TARGET - base - 1)),
        "rss_every_10th_fold_mb": [round(r, 1) for r in rss[::10]],
    }


# -- report ---------------------------------------------------------------------------------------------------
def targets(report: dict) -> list[tuple[str, bool | None, str]]:
    out = []
    eff = report.get("efficiency")
    if eff is not None:
        base = report.get("efficiency_new_actor")
        out.append((f"efficiency >= {TARGET_EFFICIENCY}", eff >= TARGET_EFFICIENCY,
                    f"{eff:.3f} (new actor per fold: {'n/a' if base is None else f'{base:.3f}'})"))
    ratio = report.get("kerastuner_wall_ratio")
    if ratio is not None:
        out.append((f"KerasTuner wall / glimr_cv wall >= {TARGET_KT_RATIO}", ratio >= TARGET_KT_RATIO, f"{ratio:.2f}"))
    for n_configs, target in TARGET_SUGGEST_MS.items():
        ms = report.get(suggest_key(n_configs))
        if ms is not None:
            out.append((f"suggest <= {target} ms at {n_configs:,} configurations", ms <= target, f"{ms:.4f} ms median"))
    cold = report.get("startup_cold_seconds")
    if cold is not None:
        out.append((f"start-up (experiment() to the first fold) <= {TARGET_STARTUP_COLD_S:.0f} s cold",
                    cold <= TARGET_STARTUP_COLD_S, f"{cold:.1f} s cold, {report['startup_warm_seconds']:.1f} s warm"))
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


def profile_run(label: str, runs: dict, detail: dict, root: str, args, title: str, baseline: float | None = None,
                **kwargs) -> dict:
    """Run ``run_glimr(label, ...)``, keep its record in ``runs`` and its summary and breakdown in ``detail``."""
    runs[label] = run = run_glimr(label, root, keep=args.keep, **kwargs)
    detail[label] = summary_of(run)
    detail[f"breakdown_{label}"] = breakdown(run, baseline)
    log(format_breakdown(detail[f"breakdown_{label}"], f"where the time goes, {title}:"))
    return run


def main(argv=None) -> int:
    parser = new_parser(__doc__, "6 configs (2 for the new-actor run), 30 RSS folds")
    parser.add_argument("--configs", type=int, default=None, help="configurations (default 20; 6 with --quick)")
    parser.add_argument("--new-actor-configs", type=int, default=None,
                        help="configurations of the new-actor baseline (default: --configs; 2 with --quick)")
    parser.add_argument("--epochs", type=int, default=8, help="epochs per fold (default 8, as the demo)")
    parser.add_argument("--rss-folds", type=int, default=None, help="fold trainings of the memory run (200; 30 quick)")
    parser.add_argument("--skip", default="",
                        help="comma-separated parts to skip: kerastuner,no_model_reuse,new_actor,rss,scheduler,startup")
    parser.add_argument("--only", choices=["suggest", "startup"], default=None,
                        help="run one part alone: suggest, the scheduler's cost (pure Python, no Ray or TensorFlow); "
                             "startup, seconds from experiment() to the first fold, cold and warm")
    parser.add_argument("--kerastuner-worker", dest="kt_worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--startup-worker", dest="startup_worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.configs = args.configs or (6 if args.quick else 20)
    args.new_actor_configs = args.new_actor_configs or (2 if args.quick else args.configs)
    args.rss_folds = args.rss_folds or (30 if args.quick else 200)
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}

    if args.kt_worker:
        kerastuner_worker(args.configs, args.epochs, 0, args.kt_worker)
        return 0
    if args.startup_worker:
        startup_worker(args.startup_worker)
        return 0

    out = claim_stdout()
    started = time.perf_counter()
    detail: dict = {"workload": {
        "dataset": "sklearn digits via glimr_cv.demo.loader (StratifiedKFold(5, shuffle, random_state=0))",
        "model": f"glimr_cv.demo.builder MLP, glimr_cv.demo.SPACE with batch_size fixed at {BATCH_SIZE}",
        "configs": args.configs, "new_actor_configs": args.new_actor_configs, "folds": FOLDS,
        "epochs": args.epochs, "slots": SLOTS, "racing": None, "preflight": "excluded (check=False)",
        "quick": bool(args.quick)},
        "versions": versions()}
    report: dict = {"efficiency": None, "efficiency_new_actor": None, "kerastuner_wall_ratio": None,
                    **{suggest_key(n): None for n in SUGGEST_CONFIGS}, "worker_rss_growth_mb": None,
                    "startup_cold_seconds": None, "startup_warm_seconds": None, "detail": detail}

    if args.only in (None, "suggest") and ("scheduler" not in skip or args.only == "suggest"):
        cycles = 1000 if args.quick else 3000
        log(f"scheduler overhead (pure Python, {' and '.join(f'{n:,}' for n in SUGGEST_CONFIGS)} configurations, "
            f"{cycles} cycles each) ...")
        detail["scheduler"] = {}
        for n_configs in SUGGEST_CONFIGS:
            detail["scheduler"][suggest_key(n_configs)] = bench = bench_scheduler(n_configs, cycles)
            report[suggest_key(n_configs)] = bench["suggest_ms_median"]
    if args.only == "suggest":
        return finish(out, args, report, detail, started, {})
    if "startup" not in skip or args.only == "startup":
        log("start-up: experiment() to the first fold's start, in a fresh process, cold then warm ...")
        detail["startup"] = run_startup()
        report["startup_cold_seconds"] = detail["startup"]["cold"]
        report["startup_warm_seconds"] = detail["startup"]["warm"]
        log(f"  cold {detail['startup']['cold']:.1f} s, warm {detail['startup']['warm']:.1f} s")
    if args.only == "startup":
        return finish(out, args, report, detail, started, {})

    log("warming the file cache (untimed TensorFlow import) ...")
    subprocess.run([sys.executable, "-c", "import tensorflow, keras"], stdout=sys.stderr, stderr=sys.stderr)

    runs = {}
    with ray_session("glimr_throughput_bench_", keep=args.keep) as session:
        detail["ray_init_seconds"] = session.ray_init_seconds
        root = session.root
        log(f"glimr_cv defaults: {args.configs} configurations x {FOLDS} folds x {args.epochs} epochs ...")
        default = profile_run("default", runs, detail, root, args, "glimr_cv defaults",
                              configs=args.configs, epochs=args.epochs)
        report["efficiency"] = default["efficiency"]
        # per-epoch tune.report calls wait inside model.fit, so fit_seconds counts them as training time
        detail["efficiency_without_report_waits"] = ((default["fit_seconds"]
                                                      - detail["breakdown_default"]["fit_report"]["seconds"])
                                                     / (default["wall_seconds"] * SLOTS))

        if "kerastuner" not in skip:
            log(f"KerasTuner: {args.configs} trials x {FOLDS} folds x {args.epochs} epochs, one process ...")
            try:
                kt = run_kerastuner(args.configs, args.epochs, root)
            except RuntimeError as err:  # e.g. keras-tuner not installed: report the rest
                log(f"  {err}; is keras-tuner installed (pip install keras-tuner)?")
                detail["kerastuner_error"] = str(err)
            else:
                detail["kerastuner"] = kt
                report["kerastuner_wall_ratio"] = kt["search_seconds"] / default["wall_seconds"]
                detail["kerastuner_wall_ratio_with_import"] = kt["with_import_seconds"] / default["wall_seconds"]
                detail["kerastuner_fit_seconds_ratio"] = kt["fit_seconds"] / default["fit_seconds"]

        if "no_model_reuse" not in skip:
            log(f"reuse_models=False: {args.configs} configurations x {FOLDS} folds ...")
            fresh = profile_run("no_model_reuse", runs, detail, root, args, "reuse_models=False",
                                configs=args.configs, epochs=args.epochs, reuse_models=False)
            # what model reuse buys, measured in this run: wall without it / wall with it
            detail["model_reuse_wall_gain"] = fresh["wall_seconds"] / default["wall_seconds"]
            if report["kerastuner_wall_ratio"] is not None:
                detail["kerastuner_wall_ratio_without_model_reuse"] = (detail["kerastuner"]["search_seconds"]
                                                                       / fresh["wall_seconds"])
            log(f"  wall without / with model reuse: {detail['model_reuse_wall_gain']:.2f}")

        if "new_actor" not in skip:
            log(f"new actor per fold: {args.new_actor_configs} configurations x {FOLDS} folds ...")
            new_actor = profile_run("new_actor", runs, detail, root, args, "new actor per fold",
                                    baseline=untimed_median(default), configs=args.new_actor_configs,
                                    epochs=args.epochs, reuse_actors=False)
            report["efficiency_new_actor"] = new_actor["efficiency"]

        if "rss" not in skip:
            configs = math.ceil(args.rss_folds / FOLDS)
            log(f"worker memory: {configs} configurations x {FOLDS} folds x 1 epoch on one slot ...")
            runs["rss"] = run_glimr("rss", root, configs, 1, seed=1, max_concurrent_trials=1, keep=args.keep)
            detail["rss"] = rss_summary(runs["rss"])
            detail["rss_run"] = summary_of(runs["rss"])
            report["worker_rss_growth_mb"] = detail["rss"]["growth_mb"]
    return finish(out, args, report, detail, started, runs)


def finish(out, args, report: dict, detail: dict, started: float, runs: dict) -> int:
    """Print the targets and write the report."""
    detail["total_seconds"] = time.perf_counter() - started
    detail["targets"] = [{"target": n, "pass": ok, "value": v} for n, ok, v in targets(report)]
    text = "\n".join(target_lines(targets(report)) + [f"total {detail['total_seconds']:.0f} s"])
    emit(out, args, report, text, details={"runs": runs})
    return 0


if __name__ == "__main__":
    sys.exit(main())
