"""A quiet terminal: TensorFlow's start-up lines and Ray Tune's banners kept out of the user's way.

TensorFlow writes its oneDNN, CUDA and absl lines from C++ straight to file
descriptor 2 before any logging is set up, so no environment variable or Python
logger silences them: they are redirected at the descriptor while TensorFlow
starts, and kept in a file.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
from typing import Iterator

__all__ = ["redirected_stderr", "import_tensorflow_quietly", "start_tensorflow_quietly", "quiet_tune"]

# Ray's loggers that a default run silences: Tune's routine warnings and its per-retry tracebacks (a
# failed fold's error is shown once, in the leaderboard), and the note that token auth is on
_TUNE_LOGGERS = ("ray.tune", "ray.train", "ray._private.authentication")


def _log_path() -> str:
    # one file per process, appended to: the start-up lines of each TensorFlow in it
    return os.path.join(tempfile.gettempdir(), f"glimr_cv_tensorflow_{os.getpid()}.log")


@contextlib.contextmanager
def redirected_stderr(path: str | None = None) -> Iterator[str]:
    """Send file descriptor 2 (C++ and Python alike) to ``path``, by default this process's log in the temp folder."""
    path = path or _log_path()
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(path, "ab") as target:
            os.dup2(target.fileno(), 2)
            try:
                yield path
            finally:
                sys.stderr.flush()
                os.dup2(saved, 2)
    finally:
        os.close(saved)


def import_tensorflow_quietly(start_runtime: bool = False) -> None:
    """Import TensorFlow and Keras with their start-up lines in a temporary file.

    With ``start_runtime``, also run one op, since TensorFlow probes for CUDA and
    logs when its runtime starts, not at import; a worker sizes its thread pools
    first (they are fixed once an op ran). Does nothing when TensorFlow was already
    imported.
    """
    if "tensorflow" not in sys.modules:
        with redirected_stderr(_log_path()):
            import keras  # noqa: F401  (Keras imports TensorFlow)
    if start_runtime:
        start_tensorflow_quietly()


def start_tensorflow_quietly() -> None:
    """Run one TensorFlow op with the runtime's start-up lines in a temporary file."""
    import tensorflow as tf

    with redirected_stderr(_log_path()):
        tf.constant(0) + 1


@contextlib.contextmanager
def quiet_tune(verbose: int = 0) -> Iterator[None]:
    """Ray without Tune's experiment box, TensorBoard hint, warnings and tracebacks, unless ``verbose``.

    Tune's newer console output prints its banner whatever its verbosity; its
    legacy output at verbosity 0 prints nothing, so that one is chosen while the
    run lasts. A failed fold's traceback stays in its trial folder (``error.txt``).
    """
    if verbose:
        yield
        return
    previous = os.environ.get("RAY_AIR_NEW_OUTPUT")
    levels = {name: logging.getLogger(name).level for name in _TUNE_LOGGERS}
    os.environ["RAY_AIR_NEW_OUTPUT"] = "0"
    for name in _TUNE_LOGGERS:
        logging.getLogger(name).setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("RAY_AIR_NEW_OUTPUT", None)
        else:
            os.environ["RAY_AIR_NEW_OUTPUT"] = previous
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)


@contextlib.contextmanager
def quiet_retracing() -> Iterator[None]:
    """TensorFlow's "triggered tf.function retracing" warnings off, while the block runs.

    Scoring or predicting bags pads each batch to its largest bag, so batches
    differ in length and Keras traces its predict step for each new one: expected
    there, and only noise to the user.
    """
    logger = logging.getLogger("tensorflow")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)
