#!/usr/bin/env python
"""MIL at scale: worker memory, folder size and epoch time of the slide-file loader against the in-memory bag loader.

Workload
    A synthetic cohort of whole-slide feature files written once, in the temporary
    folder: HDF5 per slide as the field's pipelines write them, ``features``
    float32 ``(n_tiles, 1024)`` (contiguous) and ``coords`` int32 ``(n_tiles, 2)``,
    ``n_tiles`` uniform in 2,000-8,000 (mean 5,000, ~20 MB per slide). Features are
    seeded standard normals per slide; half of the slides (label 1) have 20% of
    their tiles shifted by +1 on 16 of the features. The full run writes 560 slides
    (~11.5 GB of features, the *large* size); the *small* size is the first 280 rows
    of the same manifest (same per-slide size distribution). ``--quick``: 56 and 28
    slides (~1.1 and ~0.6 GB).

    Model: a gated-attention MIL model (``tests/e2e_helpers.slide_builder`` at width
    1024): ``Dense(32, relu)`` on every tile, ``bag_pooling("gated", units=16)``, a
    sigmoid output ``label``; BCE, Adam, validation AUC. Two configurations (a
    ``tune.grid_search`` over the learning rate) x 2 folds x 2 epochs, batches of 4
    bags, ``max_instances=512`` tiles drawn per training bag and epoch; validation
    bags are read whole. ``Search(racing=None, cv_folds=2)``,
    ``max_concurrent_trials=2``, Ray with 2 one-CPU slots.

Loaders
    * ``file``: :func:`glimr_cv.mil.kfold_slide_loader` over the manifest (paths
      only; files are read in the folds' ``tf.data`` pipelines), at both sizes.
    * ``memory``: :func:`glimr_cv.mil.kfold_bag_loader` over the same slides read
      into one array in the driver (shipped through Ray's object store, pickled
      with the search). Its footprint is the data several times over (the driver's
      array, the object store's copy, the pages each worker maps, the pickled
      search on disk), so it runs at smaller sizes (full: 20 and 40 slides, ~0.4 and
      ~0.8 GB; ``--quick``: 14 and 28, ~0.3 and ~0.6 GB); a size whose estimated need
      (:func:`memory_need_gb`) exceeds the free memory is skipped and reported so.

Method (each loader and size in a fresh Ray session, so no worker carries a peak over)
    * All of a size's files are read once, untimed, so that the page cache is in the
      same state for the search and for the loop (both are read from memory as long
      as the files fit in the cache).
    * ``worker_peak_rss_mb``: each worker's peak resident memory, the largest over
      the two workers. A Keras callback passed with ``Search(fit_kwargs={"callbacks":
      [...]})`` records the process's ``VmHWM`` from ``/proc/self/status`` (its
      high-water mark since it started: loader unpickling, TensorFlow and every fold
      included) at every epoch's end and at the end of ``fit``, into a file per pid;
      the workers' ``VmHWM`` is also read after the search where the process still
      lives. Not ``ru_maxrss``: Linux keeps it across ``exec``, so a subprocess starts
      with its parent's. The fold rows' ``worker_rss_mb`` (RSS at the end of a fold)
      is reported beside it.
    * ``folder_mb``: every file of the experiment folder except ``checkpoint_*``
      folders (``pickle_mb``: the pickled search, ``glimr_cv_search.pkl``).
    * ``epoch_seconds``: the wall time of one epoch of ``model.fit`` in a worker, from
      ``on_epoch_begin`` to ``on_epoch_end`` of the same callback: training steps,
      the whole validation pass (``val_seconds``, from ``on_test_begin`` to
      ``on_test_end``) and glimr_cv's per-epoch ``tune.report``; the mean over every
      epoch of every fold (first epochs with their tracing included, as in the loop).
      ``fit_epoch_seconds`` is the fold rows' ``fit_seconds / epochs``.
    * The hand-written loop (the limit): plain ``tf.data`` over the same files, in a
      subprocess per fold, both folds at once (as the search's two workers), each
      with TensorFlow's intra- and inter-op pools at 1 thread and
      ``OMP_NUM_THREADS=1`` (the 1 CPU a fold gets in the search), at the Ray
      workers' niceness (asked of a Ray task). Ray starts its workers at ``nice 15``;
      on a shared machine every process at ``nice 0`` then starves them, for tens of
      seconds at a time, so the script sets ``RAY_worker_niceness`` (a Ray config
      variable raylet reads; ``--worker-niceness``, default 0) and both run at 0. Per bag an
      ``h5py.File(path)["features"][rows]`` read in a ``tf.numpy_function`` (the same
      ``max_instances`` draw, ``np.random.default_rng(draw).choice`` sorted; whole
      bags for validation), ``num_parallel_calls=4`` (the loader's ``reads``),
      ``deterministic=True``, ``padded_batch(4)``, the same mask and dict layout,
      ``prefetch(2)``; the training bags reshuffled every epoch. The same builder
      and compile (``keras_optimizer``, losses, metrics, ``jit_compile="auto"``),
      the same two configurations as the search's grid, the same fold's training
      and validation bags (``loader.folds(2)``), the same epochs, timed by the same
      callback. It brackets the search in the same Ray session: the first
      configuration (both folds at once) right before the search, the second right
      after, so load drift on a shared machine falls on both sides.
      ``epoch_time_ratio`` = the search's ``epoch_seconds`` / the loop's (also
      apart: training, validation, and epochs after the first, free of tracing).
    * Because the machine is shared, each epoch also records the CPU seconds its process
      spent (``time.process_time``, all threads: TensorFlow, tf.data, h5py, Ray's own)
      and the bytes it read from storage (``/proc/self/io`` ``read_bytes``: page-cache
      misses), and the load average. ``epoch_cpu_ratio`` (search / loop CPU seconds
      per epoch) does not move with other jobs' load; wall-time ratios do, and an epoch
      that reads from disk while the other side read from the cache is slower for it.

Targets (file loader; printed as PASS/FAIL)
    * worker peak RSS at the large size (>= 10 GB of features) <= 2 GB (2,048 MB),
      and within 10% between the two sizes;
    * experiment folder without checkpoints <= 50 MB at both sizes;
    * epoch time per fold <= 1.25 x the hand-written loop's, at both sizes.

Output: a text table, or with ``--json`` one object keyed by loader (``file``,
``memory``), then by size (``small``, ``large``), with ``worker_peak_rss_mb``,
``folder_mb``, ``epoch_seconds`` and ``epoch_time_ratio`` (and more); ``--details
FILE`` adds every fold row and callback record. Everything is written under one
``tempfile.mkdtemp()`` folder (and each Ray session's own), removed at the end
unless ``--keep``; ``--cohort DIR`` writes (or reuses) the cohort there instead and
leaves it.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import math
import multiprocessing
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

from harness import (
    claim_stdout, emit, folder_size_mb, log, new_parser, ray_session, run_search, target_lines, versions,
)

WIDTH = 1024
TILES = (2000, 8000)
SIGNAL_FEATURES = 16  # positive slides: 20% of tiles shifted by +1 on these
BATCH = 4
MAX_INSTANCES = 512
READS = 4  # kfold_slide_loader's default: files read at once by a fold's pipeline
FOLDS = 2
EPOCHS = 2
LEARNING_RATES = (1e-3, 3e-4)  # the two configurations
UNITS, ATTENTION = 32, 16
METRIC = "label_auc"
FULL = {"slides": 560, "memory_slides": (20, 40)}
QUICK = {"slides": 56, "memory_slides": (14, 28)}
RSS_TARGET_MB = 2048.0
RSS_SPREAD = 0.10
FOLDER_TARGET_MB = 50.0
RATIO_TARGET = 1.25


# -- the cohort ------------------------------------------------------------------------------------------
def cohort_plan(slides: int, seed: int = 0, tiles=TILES):
    """Tiles and label of every slide, fixed by ``seed``: the manifest before any file exists."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    n = rng.integers(tiles[0], tiles[1] + 1, size=slides)
    labels = rng.permutation(np.arange(slides) % 2)
    return pd.DataFrame({"slide": [f"slide{i:05d}" for i in range(slides)], "tiles": n.astype(np.int64),
                         "label": labels.astype(np.int64)})


def write_slide(job) -> int:
    """Write one slide's HDF5 file (``features``, ``coords``); its bytes of features."""
    import h5py

    path, index, tiles, label, seed = job
    rng = np.random.default_rng([seed, index])
    x = rng.standard_normal((tiles, WIDTH), dtype=np.float32)
    if label:
        picked = rng.choice(tiles, tiles // 5, replace=False)
        x[picked, :SIGNAL_FEATURES] += 1.0
    side = int(math.ceil(math.sqrt(tiles)))
    grid = np.stack(np.divmod(np.arange(tiles), side), axis=1)[:, ::-1]
    tmp = path + ".part"
    with h5py.File(tmp, "w") as h5:
        h5.create_dataset("features", data=x)
        h5.create_dataset("coords", data=(grid * 256).astype(np.int32))
    os.replace(tmp, path)
    return x.nbytes


def write_cohort(folder: str, slides: int, seed: int = 0, procs: int = 2):
    """The cohort's manifest (``path, slide, tiles, label``), its files written (or reused) in ``folder``."""
    plan = cohort_plan(slides, seed)
    os.makedirs(folder, exist_ok=True)
    plan.insert(0, "path", [os.path.join(folder, f"{s}.h5") for s in plan["slide"]])
    meta = {"slides": slides, "seed": seed, "tiles": list(TILES), "width": WIDTH}
    meta_path = os.path.join(folder, "cohort.json")
    if os.path.exists(meta_path):
        with open(meta_path) as f:
            if json.load(f) != meta:
                raise SystemExit(f"--cohort {folder}: holds another cohort ({meta_path}); use an empty folder")
    todo = [(p, i, int(t), int(y), seed) for i, (p, t, y) in enumerate(zip(plan["path"], plan["tiles"], plan["label"]))
            if not os.path.exists(p)]
    started = time.perf_counter()
    if todo:
        log(f"writing {len(todo)} slide files ({plan['tiles'].sum() * WIDTH * 4 / 1e9:.1f} GB in all) to {folder}")
        ctx = multiprocessing.get_context("fork")  # nothing heavy is imported yet
        with concurrent.futures.ProcessPoolExecutor(procs, mp_context=ctx) as pool:
            written = 0
            for i, nbytes in enumerate(pool.map(write_slide, todo, chunksize=4)):
                written += nbytes
                if (i + 1) % 50 == 0:
                    log(f"  {i + 1}/{len(todo)} slides, {written / 1e9:.1f} GB, "
                        f"{written / 1e9 / (time.perf_counter() - started):.2f} GB/s")
    with open(meta_path, "w") as f:
        json.dump(meta, f)
    plan.to_csv(os.path.join(folder, "manifest.csv"), index=False)
    return plan, time.perf_counter() - started


def memory_need_gb(kind: str, gb: float) -> float:
    """Memory a search needs, roughly: the workers' TensorFlow and pipelines, and the in-memory loader's copies.

    Each worker ~1.5 GB of TensorFlow and pipeline, and with the in-memory loader ~5.5x the
    features more (measured: its pages of the object store and a ``tf.convert_to_tensor`` copy
    of ~2x per dataset, two datasets per fold); the driver 3x the features while it packs them,
    the object store 1x; 2 workers.
    """
    workers = 2 * (1.5 + (5.5 * gb if kind == "memory" else 0.0))
    return workers + (4.0 * gb if kind == "memory" else 0.0) + 1.0


def features_gb(frame) -> float:
    return float(frame["tiles"].sum()) * WIDTH * 4 / 1e9


def warm_cache(frame) -> float:
    """Read every file of ``frame`` once (untimed runs then find them in the page cache); seconds."""
    started = time.perf_counter()
    for path in frame["path"]:
        with open(path, "rb", buffering=0) as f:
            while f.read(64 << 20):
                pass
    return time.perf_counter() - started


def meminfo() -> dict:
    """``MemAvailable`` and ``Cached`` (page cache) from ``/proc/meminfo``, in GB."""
    out = {}
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                key, value = line.split(":", 1)
                if key in ("MemAvailable", "Cached", "MemTotal"):
                    out[key] = round(int(value.split()[0]) / 1024**2, 2)
    except OSError:
        pass
    return out


# -- model and space ---------------------------------------------------------------------------------------
def mil_space(epochs: int) -> dict:
    from ray import tune

    return {
        "width": WIDTH,
        "units": UNITS,
        "attention": ATTENTION,
        "tasks": {"label": {"loss": {"name": "bce", "loss": "BinaryCrossentropy"}, "loss_weight": 1.0,
                            "metrics": [{"name": "auc", "metric": "AUC"}]}},
        "optimization": {"method": "adam", "learning_rate": tune.grid_search(list(LEARNING_RATES)), "epochs": epochs},
        "data": {"batch_size": BATCH},
    }


def loop_config(epochs: int, learning_rate: float) -> dict:
    """A configuration of :func:`mil_space` as the search samples it: the grid's learning rate filled in."""
    import copy

    config = copy.deepcopy({k: v for k, v in mil_space(epochs).items() if k != "optimization"})
    config["optimization"] = {"method": "adam", "learning_rate": learning_rate, "epochs": epochs}
    return config


def mil_builder(config):
    """Tiles -> Dense -> gated attention pooling -> one sigmoid output named "label" (``slide_builder``)."""
    import keras

    from glimr_cv import keras_losses, keras_metrics
    from glimr_cv.mil import bag_pooling

    instances = keras.Input((None, config["width"]), name="instances")
    mask = keras.Input((None,), dtype="bool", name="mask")
    h = keras.layers.Dense(config["units"], activation="relu")(instances)
    z = bag_pooling("gated", units=config["attention"])(h, mask=mask)
    outputs = {"label": keras.layers.Dense(1, activation="sigmoid", name="label")(z)}
    losses, weights = keras_losses(config)
    return keras.Model({"instances": instances, "mask": mask}, outputs), losses, weights, keras_metrics(config)


def recorder(folder: str):
    """A Keras callback that appends a JSON line per epoch (and per ``fit``) to ``folder/<pid>.jsonl``.

    Each epoch: its begin and end (Unix times), the validation pass's begin and end,
    the same in CPU seconds of the process (all its threads, ``time.process_time``),
    the bytes it read from storage (``/proc/self/io``), the training batches, the
    process's peak RSS so far (``VmHWM``) and RSS now, in MB, its niceness and the
    1-minute load average.
    Defined in a function so that cloudpickle ships the class by value to the workers.
    """
    import resource

    import keras

    def status_mb() -> dict:
        """``VmHWM`` (peak RSS of this process image) and ``VmRSS`` in MB; ``ru_maxrss`` survives exec, so not it."""
        out = {}
        try:
            with open("/proc/self/status") as f:
                for line in f:
                    if line.startswith(("VmHWM:", "VmRSS:")):
                        out[line[:5]] = int(line.split()[1]) / 1024
        except OSError:
            pass
        return {"peak_mb": out.get("VmHWM", math.nan), "rss_mb": out.get("VmRSS", math.nan),
                "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "nice": os.nice(0),
                "load1": os.getloadavg()[0]}

    def disk_read_bytes() -> int:
        """Bytes this process has had read from storage (``/proc/self/io``): page-cache misses."""
        try:
            with open("/proc/self/io") as f:
                return next(int(line.split()[1]) for line in f if line.startswith("read_bytes:"))
        except (OSError, StopIteration, ValueError):
            return 0

    class Recorder(keras.callbacks.Callback):
        def __init__(self, folder):
            super().__init__()
            self.folder = folder
            self.epoch = {}

        def _write(self, record):
            os.makedirs(self.folder, exist_ok=True)
            with open(os.path.join(self.folder, f"{os.getpid()}.jsonl"), "a") as f:
                f.write(json.dumps({"pid": os.getpid(), **record}) + "\n")

        def on_train_begin(self, logs=None):
            self.fit_begin = time.time()
            self._write({"event": "begin", "begin": self.fit_begin, "end": self.fit_begin, **status_mb()})

        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = {"epoch": epoch + 1, "begin": time.time(), "batches": 0, "cpu_begin": time.process_time(),
                          "disk_begin": disk_read_bytes()}

        def on_train_batch_end(self, batch, logs=None):
            self.epoch["batches"] = batch + 1

        def on_test_begin(self, logs=None):
            self.epoch.update(val_begin=time.time(), cpu_val_begin=time.process_time())

        def on_test_end(self, logs=None):
            self.epoch.update(val_end=time.time(), cpu_val_end=time.process_time())

        def on_epoch_end(self, epoch, logs=None):
            self._write({"event": "epoch", **self.epoch, "end": time.time(), "cpu_end": time.process_time(),
                         "disk_end": disk_read_bytes(), **status_mb()})

        def on_train_end(self, logs=None):
            self._write({"event": "fit", "begin": self.fit_begin, "end": time.time(), **status_mb()})

    return Recorder(folder)


def read_records(folder: str) -> list[dict]:
    out = []
    if not os.path.isdir(folder):
        return out
    for name in sorted(os.listdir(folder)):
        if name.endswith(".jsonl"):
            with open(os.path.join(folder, name)) as f:
                out += [json.loads(line) for line in f if line.strip()]
    return out


def epoch_figures(records: list[dict]) -> dict:
    """Mean epoch, training and validation seconds over the records' epochs; peak RSS per pid."""
    epochs = [r for r in records if r["event"] == "epoch"]
    if not epochs:
        return {}
    total = np.array([r["end"] - r["begin"] for r in epochs])
    val = np.array([r.get("val_end", r["end"]) - r.get("val_begin", r["end"]) for r in epochs])
    train = np.array([r.get("val_begin", r["end"]) - r["begin"] for r in epochs])
    later = np.array([r["end"] - r["begin"] for r in epochs if r["epoch"] > 1])
    cpu = np.array([r["cpu_end"] - r["cpu_begin"] for r in epochs])
    cpu_val = np.array([r.get("cpu_val_end", 0.0) - r.get("cpu_val_begin", 0.0) for r in epochs])
    disk = np.array([r["disk_end"] - r["disk_begin"] for r in epochs])
    peaks: dict[str, float] = {}
    for r in records:
        key = str(r["pid"])
        peaks[key] = max(peaks.get(key, 0.0), float(r["peak_mb"]))
    return {
        "epoch_seconds": float(total.mean()),
        "train_seconds": float(train.mean()),
        "val_seconds": float(val.mean()),
        # on_test_end to on_epoch_end: the other callbacks' on_epoch_end (glimr_cv's tune.report in a worker)
        "end_of_epoch_seconds": float((total - train - val).mean()),
        "rss_mb_at_first_fit_begin": first_fit_rss(records),
        "epoch_seconds_after_first": float(later.mean()) if len(later) else None,
        "epoch_cpu_seconds": float(cpu.mean()),
        "train_cpu_seconds": float((cpu - cpu_val).mean()),
        "val_cpu_seconds": float(cpu_val.mean()),
        "disk_read_gb_per_epoch": float(disk.mean() / 1e9),
        "epochs_timed": len(epochs),
        "peak_rss_mb_by_pid": peaks,
    }


def first_fit_rss(records: list[dict]) -> dict:
    """Each process's RSS when its first ``fit`` began (TensorFlow, model and loader, no batch yet), in MB."""
    first: dict[str, dict] = {}
    for r in records:
        if r["event"] == "begin" and (str(r["pid"]) not in first or r["begin"] < first[str(r["pid"])]["begin"]):
            first[str(r["pid"])] = r
    return {pid: r["rss_mb"] for pid, r in first.items()}


def vm_hwm_mb(pid: int) -> float | None:
    """A live process's ``VmHWM`` (peak RSS) in MB, or None."""
    try:
        with open(f"/proc/{pid}/status") as f:
            return next(int(line.split()[1]) / 1024 for line in f if line.startswith("VmHWM:"))
    except (OSError, StopIteration, ValueError):
        return None


# -- loaders ---------------------------------------------------------------------------------------------
def file_loader(frame, seed: int = 0):
    from glimr_cv.mil import kfold_slide_loader

    return kfold_slide_loader(frame[["path", "slide", "label"]], labels={"label": "label"}, patient=None,
                              splitter="stratified", max_instances=MAX_INSTANCES, seed=seed, reads=READS)


def memory_loader(frame, seed: int = 0):
    from glimr_cv.mil import kfold_bag_loader, read_slide

    bags = [read_slide(p) for p in frame["path"]]
    loader = kfold_bag_loader(bags, {"label": frame["label"].to_numpy()}, splitter="stratified",
                              max_instances=MAX_INSTANCES, seed=seed)
    del bags
    return loader


# -- the hand-written loop -------------------------------------------------------------------------------
def loop_main(spec_path: str) -> int:
    """One fold of the hand-written ``tf.data`` loop, in this process with 1 thread (see the module's docstring)."""
    with open(spec_path) as f:
        spec = json.load(f)
    if spec.get("nice") is not None and spec["nice"] > os.nice(0):
        os.nice(spec["nice"] - os.nice(0))  # as low a priority as the Ray workers (raylet's worker_niceness)
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    import h5py
    import keras

    from glimr_cv import keras_optimizer

    paths = spec["paths"]
    tiles = np.asarray(spec["tiles"], dtype=np.int64)
    labels = np.asarray(spec["labels"], dtype=np.int64)
    cap = int(spec["max_instances"])

    def read(bag, draw):
        bag, draw = int(bag), int(draw)
        rows = None
        if draw >= 0 and tiles[bag] > cap:
            rows = np.sort(np.random.default_rng(draw).choice(int(tiles[bag]), cap, replace=False))
        with h5py.File(paths[bag], "r") as h5:
            data = h5["features"]
            x = data[()] if rows is None else data[rows]
        return np.asarray(x, dtype=np.float32)

    def element(bag, y, draw):
        x = tf.numpy_function(read, [bag, draw], tf.float32, stateful=False)
        x = tf.ensure_shape(x, [None, WIDTH])
        return x, tf.ones(tf.shape(x)[:1], dtype=tf.bool), y

    def batches(ds):
        ds = ds.padded_batch(int(spec["batch_size"]))
        return ds.map(lambda x, mask, y: ({"instances": x, "mask": mask}, {"label": y})).prefetch(2)

    train = np.asarray(spec["train"], dtype=np.int64)
    val = np.asarray(spec["val"], dtype=np.int64)
    seed = int(spec["seed"])
    train_ds = tf.data.Dataset.from_tensor_slices((train, labels[train])).shuffle(
        len(train), seed=seed, reshuffle_each_iteration=True)
    draws = tf.data.Dataset.random(seed=seed + 1, rerandomize_each_iteration=True)
    train_ds = batches(tf.data.Dataset.zip(train_ds, draws).map(
        lambda e, r: element(e[0], e[1], tf.math.abs(r) % (2**62)), num_parallel_calls=READS, deterministic=True))
    val_ds = batches(tf.data.Dataset.from_tensor_slices((val, labels[val])).map(
        lambda b, y: element(b, y, tf.constant(-1, tf.int64)), num_parallel_calls=READS, deterministic=True))

    callback = recorder(spec["records"])
    scores = []
    for i, config in enumerate(spec["configs"]):
        keras.backend.clear_session()
        keras.utils.set_random_seed(seed + i)
        model, losses, weights, metrics = mil_builder(config)
        model.compile(optimizer=keras_optimizer(config["optimization"]), loss=losses, loss_weights=weights,
                      metrics=metrics, jit_compile="auto")
        history = model.fit(train_ds, validation_data=val_ds, epochs=int(spec["epochs"]), callbacks=[callback],
                            verbose=0, shuffle=False)
        aucs = [v for k, v in history.history.items() if k.startswith("val_") and k.endswith("auc")]
        scores.append(max(aucs[0]) if aucs else None)
    with open(spec["out"], "w") as f:
        json.dump({"scores": scores}, f)
    return 0


def run_loop(frame, folds, configs: list, epochs: int, folder: str, nice: int | None = None, seed: int = 0) -> dict:
    """The hand-written loop on every fold at once, a subprocess per fold (1 thread each); its figures.

    Each subprocess trains ``configs`` one after the other on its fold, at niceness ``nice``.
    """
    os.makedirs(folder, exist_ok=True)
    load = os.getloadavg()[0]
    records = os.path.join(folder, "records")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": "1",
           "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONWARNINGS": "ignore"}
    procs = []
    started = time.perf_counter()
    for fold, (train, val) in enumerate(folds):
        spec = {"paths": list(frame["path"]), "tiles": [int(t) for t in frame["tiles"]],
                "labels": [int(v) for v in frame["label"]], "train": [int(i) for i in train],
                "val": [int(i) for i in val], "configs": configs, "epochs": epochs, "batch_size": BATCH,
                "max_instances": MAX_INSTANCES, "seed": seed + 100 * fold, "records": records, "nice": nice,
                "out": os.path.join(folder, f"fold{fold}.json")}
        path = os.path.join(folder, f"fold{fold}.spec.json")
        with open(path, "w") as f:
            json.dump(spec, f)
        procs.append(subprocess.Popen([sys.executable, os.path.abspath(__file__), "--_loop", path], env=env,
                                      stdout=sys.stderr, stderr=sys.stderr))
    codes = [p.wait() for p in procs]
    wall = time.perf_counter() - started
    if any(codes):
        raise RuntimeError(f"the hand-written loop failed (exit codes {codes}); see its output above")
    scores = []
    for fold in range(len(folds)):
        with open(os.path.join(folder, f"fold{fold}.json")) as f:
            scores.append(json.load(f)["scores"])
    rec = read_records(records)
    figures = epoch_figures(rec)
    peaks = figures.pop("peak_rss_mb_by_pid", {})
    return {**figures, "peak_rss_mb": max(peaks.values()) if peaks else None, "peak_rss_mb_by_process": peaks,
            "wall_seconds": wall, "scores": scores, "load1_before": load, "load1_after": os.getloadavg()[0],
            "records": rec}


def worker_niceness() -> int | None:
    """The niceness of this Ray's worker processes (raylet's ``worker_niceness``, 15 by default): a task asks."""
    import ray

    try:
        return int(ray.get(ray.remote(num_cpus=1)(_niceness).remote(), timeout=120))
    except Exception as err:  # noqa: BLE001 - the loop then runs at this process's niceness
        log(f"   could not read the Ray workers' niceness ({type(err).__name__}: {err})")
        return None


def _niceness() -> int:
    return os.nice(0)


# -- one search ------------------------------------------------------------------------------------------
def run_size(kind: str, size: str, frame, args, root: str) -> tuple[dict, dict]:
    """Loop, search with the ``kind`` loader on ``frame`` and loop again, in a fresh Ray session; (figures, details).

    The loop runs the first configuration before the search and the second after it, so that
    it brackets the search in time, and does the same work (both folds of both configurations).
    """
    from glimr_cv import Search

    gb = features_gb(frame)
    log(f"== {kind} loader, {size}: {len(frame)} slides, {frame['tiles'].sum():,} tiles, {gb:.2f} GB of features")
    warm = warm_cache(frame)
    cache_before = meminfo()
    log(f"   files read once in {warm:.1f} s (memory {cache_before})")
    out = {"slides": len(frame), "tiles": int(frame["tiles"].sum()), "features_gb": gb,
           "warm_read_seconds": warm, "meminfo_gb_before": cache_before}
    configs = [loop_config(args.epochs, lr) for lr in LEARNING_RATES]
    loop_dir = os.path.join(root, f"loop_{kind}_{size}")
    with ray_session(f"mil_scale_{kind}_{size}_", keep=args.keep, verbose=args.verbose) as session:
        nice = worker_niceness()
        clock = time.perf_counter()
        loader = (file_loader if kind == "file" else memory_loader)(frame)
        out["loader_seconds"] = time.perf_counter() - clock
        folds = loader.folds(FOLDS)
        log(f"   hand-written loop, configuration 0, both folds (niceness {nice})")
        before = run_loop(frame, folds, configs[:1], args.epochs, os.path.join(loop_dir, "before"), nice)
        records = os.path.join(session.root, "records")
        search = Search(mil_space(args.epochs), mil_builder, loader, metric=METRIC, cv_folds=FOLDS, racing=None,
                        seed=0, fit_kwargs={"callbacks": [recorder(records)]})
        name = f"{kind}_{size}"
        load = os.getloadavg()[0]
        run = run_search(search, session.root, name, num_samples=1, max_concurrent_trials=2, check=False)
        out["load1_search"] = [load, os.getloadavg()[0]]
        folds_table = run.results.folds
        pids = sorted({int(str(w).split("@")[0]) for w in folds_table["worker"].dropna()})
        hwm = {str(pid): vm_hwm_mb(pid) for pid in pids}
        path = os.path.join(session.root, name)
        out["folder_mb"] = folder_size_mb(path, exclude_prefix="checkpoint_")
        out["folder_mb_with_checkpoints"] = folder_size_mb(path)
        pkl = os.path.join(path, "glimr_cv_search.pkl")
        out["pickle_mb"] = os.path.getsize(pkl) / 1e6 if os.path.exists(pkl) else None
        out["experiment_seconds"] = run.wall_seconds
        rec = read_records(records)
        sampled = sorted(float(c["optimization"]["learning_rate"]) for c in
                         folds_table.drop_duplicates("config_id")["config"])
        if sampled != sorted(LEARNING_RATES):
            log(f"   warning: the search sampled learning rates {sampled}, the loop runs {list(LEARNING_RATES)}")
        statuses = sorted(set(folds_table["status"]))
        figures = epoch_figures(rec)
        log(f"   search {run.wall_seconds:.0f} s: epoch {figures.get('epoch_seconds', math.nan):.2f} s "
            f"(val {figures.get('val_seconds', math.nan):.2f} s); hand-written loop, configuration 1")
        after = run_loop(frame, folds, configs[1:], args.epochs, os.path.join(loop_dir, "after"), nice)
        del loader, search
    peaks = figures.pop("peak_rss_mb_by_pid", {})
    for pid, value in hwm.items():
        if value is not None:
            peaks[pid] = max(peaks.get(pid, 0.0), value)
    fit_epoch = (folds_table["fit_seconds"] / folds_table["epochs"]).astype(float)
    out.update(
        worker_peak_rss_mb=max(peaks.values()) if peaks else None,
        worker_peak_rss_mb_by_worker=peaks,
        worker_vm_hwm_mb_after=hwm,
        worker_rss_mb_end_of_fold=float(folds_table["worker_rss_mb"].max()),
        folds_by_worker={str(k): int(v) for k, v in folds_table["worker"].value_counts().items()},
        worker_niceness=sorted({r.get("nice") for r in rec}),
        load1_mean=float(np.mean([r["load1"] for r in rec if r["event"] == "epoch"])) if rec else None,
        **figures,
        fit_epoch_seconds=float(fit_epoch.mean()),
        fold_statuses=statuses,
        cv_auc=[float(v) for v in folds_table.groupby("config_id")["score"].mean()],
        folds_run=len(folds_table),
        meminfo_gb_after=meminfo(),
    )
    loop_records = before.pop("records") + after.pop("records")
    loop = epoch_figures(loop_records)
    loop_peaks = loop.pop("peak_rss_mb_by_pid", {})
    loop.update(peak_rss_mb=max(loop_peaks.values()) if loop_peaks else None, peak_rss_mb_by_process=loop_peaks,
                niceness=sorted({r.get("nice") for r in loop_records}),
                load1_mean=float(np.mean([r["load1"] for r in loop_records if r["event"] == "epoch"]))
                if loop_records else None,
                scores=[before["scores"], after["scores"]], before=before, after=after,
                wall_seconds=before["wall_seconds"] + after["wall_seconds"])
    out["loop"] = loop
    out["loop_epoch_seconds"] = loop.get("epoch_seconds")

    def ratio(key):
        a, b = out.get(key), loop.get(key)
        return a / b if a and b else None

    out["epoch_time_ratio"] = ratio("epoch_seconds")
    out["train_time_ratio"] = ratio("train_seconds")
    out["val_time_ratio"] = ratio("val_seconds")
    out["epoch_time_ratio_after_first"] = ratio("epoch_seconds_after_first")
    out["epoch_cpu_ratio"] = ratio("epoch_cpu_seconds")
    log(f"   worker peak {out['worker_peak_rss_mb']:.0f} MB, folder {out['folder_mb']:.2f} MB; loop epoch "
        f"{loop.get('epoch_seconds', math.nan):.2f} s (before {before.get('epoch_seconds', math.nan):.2f}, after "
        f"{after.get('epoch_seconds', math.nan):.2f}), peak {loop['peak_rss_mb']:.0f} MB; "
        f"ratio {out['epoch_time_ratio'] or math.nan:.3f}")
    details = {"folds": folds_table.drop(columns=[c for c in ("traceback",) if c in folds_table]).to_dict("records"),
               "records": rec, "loop_records": loop_records, "configs": configs}
    return out, details


# -- report ----------------------------------------------------------------------------------------------
def targets(report: dict) -> list[tuple[str, bool, str]]:
    """The issue's targets, on the file loader: ``(name, passed, measurement)``."""
    file = {k: v for k, v in report.get("file", {}).items() if "skipped" not in v}
    out = []
    small, large = file.get("small"), file.get("large")
    if large and large.get("worker_peak_rss_mb") is not None and large["features_gb"] >= 10.0:  # not --quick
        out.append((f"file loader: worker peak RSS at {large['features_gb']:.1f} GB of features <= "
                    f"{RSS_TARGET_MB:.0f} MB", large["worker_peak_rss_mb"] <= RSS_TARGET_MB,
                    f"{large['worker_peak_rss_mb']:.0f} MB"))
    if small and large and small.get("worker_peak_rss_mb") and large.get("worker_peak_rss_mb"):
        a, b = small["worker_peak_rss_mb"], large["worker_peak_rss_mb"]
        spread = (b - a) / a
        out.append((f"file loader: worker peak RSS within {RSS_SPREAD:.0%} between the sizes", abs(spread) <= RSS_SPREAD,
                    f"{a:.0f} MB ({small['slides']} slides) vs {b:.0f} MB ({large['slides']} slides): {spread:+.1%}"))
    for size, row in file.items():
        out.append((f"file loader: experiment folder without checkpoints <= {FOLDER_TARGET_MB:.0f} MB ({size})",
                    row["folder_mb"] <= FOLDER_TARGET_MB, f"{row['folder_mb']:.2f} MB"))
    for size, row in file.items():
        r = row.get("epoch_time_ratio")
        out.append((f"file loader: epoch time <= {RATIO_TARGET}x the hand-written loop's ({size})",
                    r is not None and r <= RATIO_TARGET,
                    f"{fmt(row.get('epoch_seconds'))} s vs {fmt(row.get('loop_epoch_seconds'))} s: {fmt(r, '.3f')}x"))
    return out


def fmt(value, spec=".2f") -> str:
    return "-" if value is None or (isinstance(value, float) and not math.isfinite(value)) else format(value, spec)


def text_report(report: dict) -> str:
    lines = [f"MIL at scale: slide-file loader vs in-memory bag loader ({report['configurations']} configurations x "
             f"{FOLDS} folds x {report['epochs']} epochs per size, 2 workers; total {report['total_seconds']:.0f} s)", "",
             "| loader | size | slides | features GB | worker peak RSS MB | RSS end of fold MB | folder MB | pickle MB "
             "| epoch s (val s) | loop epoch s (val s) | epoch ratio | train / val ratio | ratio after 1st epoch "
             "| CPU s per epoch (ratio) | disk GB per epoch | load | loop peak RSS MB | CV AUC |",
             "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|"]
    for kind in ("file", "memory"):
        for size, row in report.get(kind, {}).items():
            if "skipped" in row:
                lines.append(f"| {kind} | {size} | {row['slides']} | {row['features_gb']:.2f} | skipped: "
                             f"{row['skipped']} |")
                continue
            loop = row.get("loop", {})
            auc = " / ".join(fmt(v, ".3f") for v in row.get("cv_auc", []))
            lines.append(
                f"| {kind} | {size} | {row['slides']} | {row['features_gb']:.2f} | {fmt(row['worker_peak_rss_mb'], '.0f')} "
                f"| {fmt(row['worker_rss_mb_end_of_fold'], '.0f')} | {fmt(row['folder_mb'])} | {fmt(row['pickle_mb'])} "
                f"| {fmt(row.get('epoch_seconds'))} ({fmt(row.get('val_seconds'))}) "
                f"| {fmt(loop.get('epoch_seconds'))} ({fmt(loop.get('val_seconds'))}) "
                f"| {fmt(row.get('epoch_time_ratio'), '.3f')} "
                f"| {fmt(row.get('train_time_ratio'), '.2f')} / {fmt(row.get('val_time_ratio'), '.2f')} "
                f"| {fmt(row.get('epoch_time_ratio_after_first'), '.3f')} "
                f"| {fmt(row.get('epoch_cpu_seconds'), '.1f')} / {fmt(loop.get('epoch_cpu_seconds'), '.1f')} "
                f"({fmt(row.get('epoch_cpu_ratio'), '.3f')}) "
                f"| {fmt(row.get('disk_read_gb_per_epoch'))} / {fmt(loop.get('disk_read_gb_per_epoch'))} "
                f"| {fmt(row.get('load1_mean'), '.1f')} / {fmt(loop.get('load1_mean'), '.1f')} "
                f"| {fmt(loop.get('peak_rss_mb'), '.0f')} | {auc} |")
    cohort = report["cohort"]
    lines += ["", f"cohort: {cohort['slides']} slides, {cohort['features_gb']:.2f} GB of features "
              f"({cohort['disk_gb']:.2f} GB on disk), written in {cohort['write_seconds']:.0f} s", ""]
    lines += ["Pairs a / b: the search's, then the hand-written loop's; load: mean 1-minute load average at the "
              "epochs' ends (2 cores).", ""]
    lines += target_lines([(t["target"], t["pass"], t["detail"]) for t in report["targets"]])
    return "\n".join(lines)


def parse_args(argv=None):
    parser = new_parser(__doc__, "small version: 56 slides (~1.1 GB), 14 and 28 in memory; ~9 minutes on a "
                        "shared 2-core machine")
    parser.add_argument("--slides", type=int, default=None, help="slides of the large size (small: half of them)")
    parser.add_argument("--memory-slides", default=None, help="the memory loader's two sizes in slides, e.g. 20,40")
    parser.add_argument("--epochs", type=int, default=EPOCHS)
    parser.add_argument("--loaders", default="file,memory", help="which loaders: file,memory")
    parser.add_argument("--cohort", default=None, help="write (or reuse) the cohort in this folder, and keep it")
    parser.add_argument("--worker-niceness", type=int, default=0,
                        help="niceness of Ray's workers (RAY_worker_niceness; Ray's default is 15), and of the loop")
    parser.add_argument("--verbose", action="store_true", help="forward the workers' logs to stderr")
    parser.add_argument("--_loop", default=None, help=argparse.SUPPRESS)
    return parser, parser.parse_args(argv)


def main(argv=None) -> int:
    parser, args = parse_args(argv)
    if args._loop:
        return loop_main(args._loop)
    preset = QUICK if args.quick else FULL
    slides = args.slides or preset["slides"]
    memory_sizes = (tuple(int(v) for v in args.memory_slides.split(",")) if args.memory_slides
                    else preset["memory_slides"])
    loaders = [k.strip() for k in args.loaders.split(",") if k.strip()]
    if set(loaders) - {"file", "memory"} or len(memory_sizes) != 2 or max(memory_sizes) > slides:
        parser.error("--loaders: file and/or memory; --memory-slides: two sizes up to --slides")
    # Ray starts its workers at nice 15: on a shared machine any process at nice 0 then starves them (and the
    # loop, which runs at the workers' niceness) for seconds at a time. A Ray config variable, read by raylet.
    os.environ["RAY_worker_niceness"] = str(args.worker_niceness)
    out = claim_stdout()
    started = time.perf_counter()
    root = tempfile.mkdtemp(prefix="mil_scale_")
    log(f"temporary folder {root}")
    report: dict = {"quick": bool(args.quick), "epochs": args.epochs, "worker_niceness": args.worker_niceness, "folds": FOLDS,
                    "configurations": len(LEARNING_RATES), "batch_size": BATCH, "max_instances": MAX_INSTANCES,
                    "width": WIDTH, "tiles_per_slide": list(TILES), "model": {"units": UNITS, "attention": ATTENTION}}
    details: dict = {}
    try:
        cohort_dir = args.cohort or os.path.join(root, "cohort")
        frame, write_seconds = write_cohort(cohort_dir, slides)
        report["cohort"] = {"slides": slides, "features_gb": features_gb(frame), "write_seconds": write_seconds,
                            "disk_gb": sum(os.path.getsize(p) for p in frame["path"]) / 1e9}
        log(f"cohort ready: {slides} slides, {features_gb(frame):.2f} GB of features ({write_seconds:.0f} s)")
        sizes = {"file": {"small": frame.iloc[: slides // 2], "large": frame},
                 "memory": {"small": frame.iloc[: memory_sizes[0]], "large": frame.iloc[: memory_sizes[1]]}}
        for kind in loaders:
            report[kind] = {}
            for size, part in sizes[kind].items():
                part = part.reset_index(drop=True)
                need, available = memory_need_gb(kind, features_gb(part)), meminfo().get("MemAvailable", math.inf)
                if need > available - 2.0:
                    log(f"== {kind} loader, {size}: skipped, it needs ~{need:.1f} GB and {available:.1f} GB are free")
                    report[kind][size] = {"slides": len(part), "features_gb": features_gb(part),
                                          "skipped": f"needs ~{need:.1f} GB of memory, {available:.1f} GB free"}
                    continue
                report[kind][size], details[f"{kind}/{size}"] = run_size(kind, size, part, args, root)
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
        else:
            log(f"kept {root}")
    report["total_seconds"] = time.perf_counter() - started
    report["targets"] = [{"target": n, "pass": ok, "detail": d} for n, ok, d in targets(report)]
    report["versions"] = versions()
    emit(out, args, report, text_report(report), details=details)
    log(f"total {report['total_seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
