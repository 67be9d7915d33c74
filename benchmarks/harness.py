"""What the benchmarks share: set-up, output, arguments, Ray, the digits workload and the scheduler replay.

Conventions of every benchmark script:

* the report goes to stdout: a text table, or with ``--json`` exactly one JSON
  object (:func:`jsonable`: NaN as null, numpy scalars as numbers); everything
  else, Ray's, TensorFlow's and the workers' output included, goes to stderr
  (:func:`claim_stdout` points file descriptor 1 at stderr);
* ``--quick`` is a few-minute version, ``--keep`` keeps the experiment folders,
  ``--details FILE`` writes every run's raw figures (:func:`add_common_arguments`);
* Ray runs in this process with :data:`SLOTS` one-CPU worker slots, started before
  any timed run (:func:`ray_session`);
* only glimr_cv's public API is used: ``Search``, ``SearchResults`` and its fold rows
  (``results.folds``, profile columns of :data:`glimr_cv.schema.PROFILE`), the
  public modules of :mod:`glimr_cv.engine`; nothing of glimr_cv or Ray is patched.

The file is imported by the scripts next to it; its functions (the loader among
them) are shipped to Ray workers by value, since workers cannot import it.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import math
import os
import shutil
import sys
import tempfile
import time
from types import SimpleNamespace

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("PYTHONWARNINGS", "ignore")

SLOTS = 2  # Ray worker slots: ray.init(num_cpus=2), 1 CPU per fold training
FOLDS = 5
METRIC = "digit_accuracy"
#: Environment of the Ray workers: no TensorFlow C++ info lines, no Python warnings (as glimr_cv's own).
WORKER_ENV = {"TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONWARNINGS": "ignore"}
TEST_SIZE = 0.25  # held-out share of digits in the racing workload
SPLIT_SEED = 0


# -- output ---------------------------------------------------------------------------------------------
def log(*args) -> None:
    """Print to stderr (stdout is the report's)."""
    print(*args, file=sys.stderr, flush=True)


def jsonable(obj):
    """``obj`` as strict JSON values: NaN and infinities as null, numpy scalars as Python numbers."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if hasattr(obj, "item") and not isinstance(obj, (str, bytes)):  # numpy scalar
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def claim_stdout():
    """Keep stdout for the report: returns a file on the original stdout and points fd 1 at stderr.

    Ray Tune, TensorFlow and the workers' forwarded logs all write to fd 1.
    """
    sys.stdout.flush()
    out = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    return out


def emit(out, args, report: dict, text: str, details: dict | None = None) -> None:
    """Write the report: ``text`` to ``out``, or with ``--json`` the report as one JSON object (text to stderr).

    With ``--details FILE``, ``{"report": report, **details}`` goes to that file.
    """
    if getattr(args, "details", None):
        with open(args.details, "w") as f:
            json.dump(jsonable({"report": report, **(details or {})}), f, indent=1, default=str)
    if args.json:
        log(text)
        out.write(json.dumps(jsonable(report)) + "\n")
    else:
        out.write(text + "\n")
    out.flush()


def target_lines(targets) -> list[str]:
    """``PASS: name: detail`` / ``FAIL: ...`` lines of ``(name, ok, detail)`` targets."""
    return [f"{'PASS' if ok else 'FAIL'}: {name}: {detail}" for name, ok, detail in targets]


# -- arguments -------------------------------------------------------------------------------------------
def add_common_arguments(parser: argparse.ArgumentParser, quick: str) -> argparse.ArgumentParser:
    """``--quick`` (described by ``quick``), ``--json``, ``--keep`` and ``--details FILE``."""
    parser.add_argument("--quick", action="store_true", help=quick)
    parser.add_argument("--json", action="store_true", help="print one JSON object to stdout, the rest to stderr")
    parser.add_argument("--keep", action="store_true", help="keep the experiment directories")
    parser.add_argument("--details", default=None, help="write every run's raw figures to this JSON file")
    return parser


def new_parser(doc: str, quick: str) -> argparse.ArgumentParser:
    """A parser described by the first line of the script's docstring ``doc``, with the common arguments."""
    return add_common_arguments(argparse.ArgumentParser(description=doc.strip().split("\n")[0]), quick)


# -- Ray -------------------------------------------------------------------------------------------------
@contextlib.contextmanager
def ray_session(prefix: str, keep: bool = False, verbose: bool = False):
    """Ray with :data:`SLOTS` worker slots in this process, and a temporary folder for the experiments.

    Yields a namespace with ``root`` (the folder) and ``ray_init_seconds``. On exit
    the folder is removed (unless ``keep``) and Ray shut down. ``verbose`` forwards
    the workers' logs (to stderr, see :func:`claim_stdout`).
    """
    import ray
    from ray import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import this file
    start = time.perf_counter()
    ray.init(address="local", num_cpus=SLOTS, include_dashboard=False, configure_logging=False,
             log_to_driver=verbose, runtime_env={"env_vars": dict(WORKER_ENV)})
    session = SimpleNamespace(root=tempfile.mkdtemp(prefix=prefix), ray_init_seconds=time.perf_counter() - start)
    log(f"experiments under {session.root}")
    try:
        yield session
    finally:
        if not keep:
            shutil.rmtree(session.root, ignore_errors=True)
        ray.shutdown()


def run_search(search, root: str, name: str, **experiment_kwargs) -> SimpleNamespace:
    """``search.experiment(root, name=name, ...)`` with the live table off, timed.

    Returns a namespace: ``results``, ``wall_seconds`` (``experiment()`` alone) and
    ``started``/``ended`` (its Unix times, the time base of the fold profiles).
    """
    search.set_reporter(max_report_frequency=0)
    started, clock = time.time(), time.perf_counter()
    results = search.experiment(root, name=name, **experiment_kwargs)
    wall = time.perf_counter() - clock
    return SimpleNamespace(results=results, wall_seconds=wall, started=started, ended=time.time())


def remove_experiment(root: str, name: str, keep: bool) -> None:
    if not keep:
        shutil.rmtree(os.path.join(root, name), ignore_errors=True)


def versions() -> dict:
    """Package versions, and a hash of the code the workers run (``glimr_cv/engine/trainable.py``)."""
    import hashlib
    from importlib import metadata

    import glimr_cv.engine.trainable

    out = {}
    for name in ("glimr_cv", "ray", "tensorflow", "keras", "keras-tuner"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    with open(glimr_cv.engine.trainable.__file__, "rb") as f:
        out["glimr_cv/engine/trainable.py sha256"] = hashlib.sha256(f.read()).hexdigest()[:16]
    out["python"] = sys.version.split()[0]
    return out


# -- the digits workload ---------------------------------------------------------------------------------
def make_space(epochs: int, batch_size: int | None = None, wide: bool = False) -> dict:
    """:data:`glimr_cv.demo.SPACE` with ``epochs`` epochs.

    ``batch_size`` fixes the batch size (every fold then takes the same optimizer
    steps whatever is sampled). ``wide`` widens the space so that configurations
    differ a lot in quality (the racing workload): ``units {16,32,64,128}``,
    ``dropout [0,0.5,0.1]``, ``activation {relu,tanh}``, ``method {sgd,rms,adam}``,
    ``learning_rate loguniform(1e-4,1e-1)``; ``sgd`` at 1e-4 learns next to
    nothing in a few epochs, ``adam`` at 1e-2 reaches ~97%.
    """
    from glimr_cv import loguniform
    from glimr_cv.demo import SPACE

    space = copy.deepcopy(SPACE)
    space["optimization"]["epochs"] = epochs
    if batch_size is not None:
        space["data"]["batch_size"] = batch_size
    if wide:
        space.update(units={16, 32, 64, 128}, layers=[1, 2], dropout=[0.0, 0.5, 0.1], activation={"relu", "tanh"})
        space["optimization"].update(method={"sgd", "rms", "adam"}, learning_rate=loguniform(1e-4, 1e-1))
    return space


def heldout_arrays():
    """``(x_cv, y_cv, x_test, y_test)``: digits with a stratified 25% test split kept outside CV."""
    from sklearn.model_selection import train_test_split

    from glimr_cv.demo import digits_arrays

    x, y = digits_arrays()
    x_cv, x_test, y_cv, y_test = train_test_split(x, y, test_size=TEST_SIZE, stratify=y, random_state=SPLIT_SEED)
    return x_cv, y_cv, x_test, y_test


def heldout_loader(batch_size: int, cv_index: int = 0, cv_folds: int = FOLDS):
    """Fold ``cv_index`` of the CV rows of :func:`heldout_arrays`: the same partition on every call."""
    import tensorflow as tf
    from sklearn.model_selection import StratifiedKFold

    x, y, _, _ = heldout_arrays()
    splits = list(StratifiedKFold(cv_folds, shuffle=True, random_state=SPLIT_SEED).split(x, y))
    train, val = splits[cv_index]
    train_ds = tf.data.Dataset.from_tensor_slices((x[train], {"digit": y[train]}))
    val_ds = tf.data.Dataset.from_tensor_slices((x[val], {"digit": y[val]}))
    return (
        train_ds.shuffle(len(train), seed=SPLIT_SEED).batch(batch_size).prefetch(2),
        val_ds.batch(512).prefetch(2),
    )


# -- the fold scheduler without Ray ----------------------------------------------------------------------
def replay_fold_trainings(rule, scores: dict, seconds: dict, n_configs: int, n_folds: int = FOLDS,
                          slots: int = SLOTS, pending: int = 1) -> int:
    """Fold trainings the fold scheduler would start with racing ``rule``, given these fold scores.

    A :class:`glimr_cv.engine.replay.Replay` with ``slots`` slots and ``pending``
    folds handed out beyond them (Ray Tune keeps one pending trial for a custom
    searcher). ``scores`` and ``seconds`` are keyed by ``(config_id, fold)``; a fold
    without a score failed, one without seconds takes 1 s.
    """
    from glimr_cv import FoldScheduler
    from glimr_cv.engine.racing import get_rule
    from glimr_cv.engine.replay import Replay

    scheduler = FoldScheduler(n_folds, "max", get_rule(rule), max_configs=n_configs)
    return Replay(scheduler, scores, slots=slots, pending=pending, seconds=seconds).run().n_started


# -- the AUC workload (racing) -----------------------------------------------------------------------------
#: The binary task of the racing benchmark: scikit-learn's breast cancer data, validation AUC.
AUC_TASK = "label"
AUC_METRIC = f"{AUC_TASK}_auc"
AUC_FEATURES = 30


def auc_arrays():
    """``(x_cv, y_cv, x_test, y_test)``: breast cancer (569 rows, 30 features, bundled with scikit-learn).

    A stratified :data:`TEST_SIZE` test split (``random_state=SPLIT_SEED``) is kept
    outside CV; features are standardized with the CV rows' means and standard
    deviations (the test rows do not inform the scaling). Labels: 1 = benign.
    Not cached: workers get this function by value, and loading takes milliseconds.
    """
    from sklearn.datasets import load_breast_cancer
    from sklearn.model_selection import train_test_split

    x, y = load_breast_cancer(return_X_y=True)
    x_cv, x_test, y_cv, y_test = train_test_split(x, y, test_size=TEST_SIZE, stratify=y, random_state=SPLIT_SEED)
    mean, std = x_cv.mean(axis=0), x_cv.std(axis=0)
    std[std == 0] = 1.0

    def scale(a):
        return ((a - mean) / std).astype("float32")

    return scale(x_cv), y_cv.astype("float32"), scale(x_test), y_test.astype("float32")


def auc_space(epochs: int) -> dict:
    """The AUC workload's space: configurations that differ less than the folds do.

    ``units {4,8,16,32}``, ``layers [1,2]``, ``dropout [0,0.5,0.1]``,
    ``activation {relu,tanh}``, ``method {adam,rms}``,
    ``learning_rate loguniform(3e-4,1e-2)``, ``batch_size {16,32}``; a sigmoid
    output ``label`` with binary cross-entropy, metric ``auc`` (Keras ``AUC``),
    reported as ``label_auc``.
    """
    from glimr_cv import loguniform

    return {
        "units": {4, 8, 16, 32},
        "layers": [1, 2],
        "dropout": [0.0, 0.5, 0.1],
        "activation": {"relu", "tanh"},
        "tasks": {
            AUC_TASK: {
                "loss": {"name": "bce", "loss": "BinaryCrossentropy"},
                "loss_weight": 1.0,
                "metrics": [{"name": "auc", "metric": "AUC"}],
            }
        },
        "optimization": {"method": {"adam", "rms"}, "learning_rate": loguniform(3e-4, 1e-2), "epochs": epochs},
        "data": {"batch_size": {16, 32}},
    }


def auc_builder(config: dict):
    """A small MLP with one sigmoid output named after the task (:data:`AUC_TASK`)."""
    import keras

    from glimr_cv import keras_losses, keras_metrics

    inputs = keras.Input((AUC_FEATURES,))
    h = inputs
    for _ in range(config["layers"]):
        h = keras.layers.Dense(config["units"], activation=config["activation"])(h)
        h = keras.layers.Dropout(config["dropout"])(h)
    outputs = {AUC_TASK: keras.layers.Dense(1, activation="sigmoid", name=AUC_TASK)(h)}
    model = keras.Model(inputs, outputs)
    losses, loss_weights = keras_losses(config)
    return model, losses, loss_weights, keras_metrics(config)


def auc_loader(batch_size: int, cv_index: int = 0, cv_folds: int = FOLDS):
    """Fold ``cv_index`` of the CV rows of :func:`auc_arrays`: the same partition on every call."""
    import tensorflow as tf
    from sklearn.model_selection import StratifiedKFold

    x, y, _, _ = auc_arrays()
    splits = list(StratifiedKFold(cv_folds, shuffle=True, random_state=SPLIT_SEED).split(x, y))
    train, val = splits[cv_index]
    train_ds = tf.data.Dataset.from_tensor_slices((x[train], {AUC_TASK: y[train, None]}))
    val_ds = tf.data.Dataset.from_tensor_slices((x[val], {AUC_TASK: y[val, None]}))
    return (
        train_ds.shuffle(len(train), seed=SPLIT_SEED).batch(batch_size).prefetch(2),
        val_ds.batch(512).prefetch(2),
    )


# -- the fold scheduler without Ray, with learning curves ----------------------------------------------------
def replay_search(racing, scores: dict, seconds: dict, n_configs: int, n_folds: int = FOLDS, curves: dict | None = None,
                  fold_stopping=None, slots: int = SLOTS, pending: int = 1) -> dict:
    """What the fold scheduler would do with racing ``racing`` and fold stopping ``fold_stopping``, offline.

    As :func:`replay_fold_trainings`, and with ``curves`` (``{(config_id, fold):
    [value of the metric at each epoch]}``) the replay knows each fold's epochs
    and, with ``fold_stopping``, stops folds mid-training as the workers would.
    Returns :meth:`glimr_cv.engine.replay.Replay.summary` (``fold_trainings``,
    ``epoch_trainings``, ...); without ``fold_stopping``, ``epoch_trainings`` is
    the curves' lengths summed over the folds started, if the replay does not
    count them itself.
    """
    from glimr_cv import FoldScheduler
    from glimr_cv.engine.racing import get_rule
    from glimr_cv.engine.replay import Replay

    kwargs = {}
    if curves is not None:
        kwargs["curves"] = curves
    if fold_stopping is not None:
        from glimr_cv.engine.racing import get_epoch_rule

        kwargs["epoch_rule"] = get_epoch_rule(fold_stopping)
    scheduler = FoldScheduler(n_folds, "max", get_rule(racing), max_configs=n_configs)
    replay = Replay(scheduler, scores, slots=slots, pending=pending, seconds=seconds, **kwargs).run()
    summary = dict(replay.summary())
    if summary.get("epoch_trainings") is None and curves is not None and fold_stopping is None:
        summary["epoch_trainings"] = sum(len(curves.get((c, f), ())) for c, f, _ in replay.finished)
    return summary


# -- disk ----------------------------------------------------------------------------------------------------
def folder_size_mb(path: str, exclude_prefix: str | None = None) -> float:
    """Bytes of every file under ``path``, in MB (1e6), leaving out folders whose name starts with ``exclude_prefix``.

    ``folder_size_mb(experiment, exclude_prefix="checkpoint_")`` is an experiment folder without its checkpoints.
    """
    total = 0
    for folder, dirs, files in os.walk(path):
        if exclude_prefix:
            dirs[:] = [d for d in dirs if not d.startswith(exclude_prefix)]
        for name in files:
            try:
                total += os.lstat(os.path.join(folder, name)).st_size
            except OSError:  # removed while walking
                pass
    return total / 1e6
