"""An experiment folder: the saved ``Search``, and repair of Tune's state after a kill."""

from __future__ import annotations

import glob
import json
import os
import pickle
import shutil
import tempfile
from typing import Any, Callable

from ..space.notation import iter_leaves
from .quiet import redirected_stderr

__all__ = ["SEARCH_FILE", "experiment_path", "save_search", "load_search", "saved_scheduler", "repair_state",
           "check_picklable"]

#: The pickled ``Search`` in an experiment folder, so that it resumes from the shell.
SEARCH_FILE = "glimr_cv_search.pkl"

# search_gen_state files are pickles despite their .json suffix
_STATE_FILES = ("experiment_state-*.json", "search_gen_state-*.json", "searcher-state-*.pkl")


def experiment_path(local_dir: str | os.PathLike, name: str | None = None) -> str:
    """``local_dir/name`` (or ``local_dir`` alone), absolute, ``~`` expanded."""
    path = os.path.expanduser(os.fspath(local_dir))
    return os.path.abspath(os.path.join(path, name) if name else path)


def save_search(search: Any, path: str) -> None:
    """Pickle ``search`` (space, builder, loader and settings) into ``path``."""
    from ray import cloudpickle

    with open(os.path.join(path, SEARCH_FILE), "wb") as f:
        cloudpickle.dump(search, f)


def load_search(path: str) -> Any:
    """The ``Search`` saved in experiment folder ``path``."""
    file = os.path.join(path, SEARCH_FILE)
    if not os.path.exists(file):
        raise FileNotFoundError(f"restore: {path!r} is not a glimr_cv experiment (no {SEARCH_FILE})")
    with open(file, "rb") as f, redirected_stderr():  # a builder's module may import TensorFlow, loudly
        return pickle.load(f)


def saved_scheduler(path: str):
    """The fold scheduler as the searcher last saved it in folder ``path``, or None.

    Ray Tune saves the searcher's state (:meth:`CVSearcher.get_state`) into
    ``searcher-state-*.pkl`` as the run goes; the newest intact one is read.
    """
    for file in sorted(glob.glob(os.path.join(path, "searcher-state-*.pkl")), reverse=True):
        try:
            with open(file, "rb") as f:
                return pickle.load(f)["scheduler"]
        except Exception:  # cut short by a kill: an older state still tells most
            continue
    return None


def _intact(file: str) -> bool:
    try:
        with open(file, "rb") as f:
            json.load(f) if os.path.basename(file).startswith("experiment_state") else pickle.load(f)
        return True
    except Exception:  # truncated JSON or pickle: any error means unusable
        return False


def repair_state(path: str) -> None:
    """Replace Tune state files that a kill cut short with the driver's intact copies.

    Ray Tune writes its state atomically in a staging folder under the Ray temp
    directory and then copies it into the experiment folder; a SIGKILL during that
    copy leaves a truncated file, and Tune would then silently restart the whole
    experiment. The staging copies are complete and consistent with each other.

    Raises
    ------
    RuntimeError
        When a state file is cut short and no intact copy exists.
    """
    newest = [max(found) for pattern in _STATE_FILES if (found := glob.glob(os.path.join(path, pattern)))]
    broken = [f for f in newest if not _intact(f)]  # Tune reads only the newest of each
    if not broken:
        return
    names = {os.path.basename(f) for f in broken}
    temp = os.environ.get("RAY_TMPDIR", tempfile.gettempdir())
    stagings = glob.glob(os.path.join(temp, "ray", "session_*", "artifacts", "*", os.path.basename(path), "driver_artifacts"))
    for staging in sorted(stagings, key=os.path.getmtime, reverse=True):
        files = [f for pattern in _STATE_FILES for f in glob.glob(os.path.join(staging, pattern))]
        if names <= {os.path.basename(f) for f in files} and all(_intact(f) for f in files):
            for f in files:
                tmp = os.path.join(path, f".{os.path.basename(f)}.restoring")
                shutil.copy2(f, tmp)
                os.replace(tmp, os.path.join(path, os.path.basename(f)))
            return
    raise RuntimeError(
        f"restore: {sorted(names)} in {path!r} were cut short when the run was killed, and no intact copy "
        "was found in Ray's temp folder; resuming would restart the experiment and train finished folds again"
    )


def check_picklable(space: dict, builder: Callable, loader: Callable) -> None:
    """Ray ships the space, builder and loader to workers: fail now, naming the culprit.

    Raises
    ------
    TypeError
        Naming the config path, ``builder`` or ``loader`` that cannot be pickled.
    """
    from ray import cloudpickle

    def leaves():
        for path, value in iter_leaves(space):
            where = "/".join(map(str, path))
            if isinstance(value, list):
                yield from ((f"{where}[{i}]", v) for i, v in enumerate(value))
            else:
                yield where, value
        yield "builder", builder
        yield "loader", loader

    for where, value in leaves():
        try:  # out-of-band buffers: arrays are checked, not copied
            cloudpickle.dumps(value, protocol=5, buffer_callback=lambda buffer: None)
        except Exception as err:  # pickling raises TypeError, PicklingError, AttributeError, ...
            raise TypeError(
                f"{where}: {value!r} cannot be pickled ({type(err).__name__}: {err}); Ray sends the space, "
                "builder and loader to its workers, so they must be picklable"
            ) from None
