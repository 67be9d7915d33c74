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
