"""An experiment folder: the saved ``Search``, and repair of Tune's state after a kill.

The folder is a local path (a shared filesystem on a cluster) or a URI that
``pyarrow.fs.FileSystem.from_uri`` opens (``s3://``, ``gs://``, ``file://``...), as
Ray Tune's ``storage_path`` is. glimr_cv's own files go through ``pyarrow.fs`` as
Tune's do; the trial folders are read from :func:`local_folder`, a local copy of a
URI's experiment.
"""

from __future__ import annotations

import fnmatch
import glob
import hashlib
import json
import os
import pickle
import posixpath
import re
import tempfile
from typing import Any, Callable

from ..space.notation import iter_leaves
from .quiet import redirected_stderr

__all__ = ["SEARCH_FILE", "experiment_path", "split_experiment", "is_uri", "local_folder", "save_search",
           "load_search", "saved_scheduler", "repair_state", "reopen_search", "check_picklable"]

#: The pickled ``Search`` in an experiment folder, so that it resumes from the shell.
SEARCH_FILE = "glimr_cv_search.pkl"

# search_gen_state files are pickles despite their .json suffix
_STATE_FILES = ("experiment_state-*.json", "search_gen_state-*.json", "searcher-state-*.pkl")

_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")


def is_uri(path: Any) -> bool:
    """Whether ``path`` is a URI (``scheme://...``) rather than a local path."""
    return isinstance(path, str) and _SCHEME.match(path) is not None


def experiment_path(local_dir: str | os.PathLike, name: str | None = None) -> str:
    """``local_dir/name`` (or ``local_dir`` alone): a path made absolute with ``~`` expanded, or a URI.

    A URI is joined as it is (its query, ``?region=...``, stays at the end) and
    is not opened here, so that no cloud storage is contacted.
    """
    path = os.fspath(local_dir)
    if is_uri(path):
        base, query = path.split("?", 1) if "?" in path else (path, "")
        base = base.rstrip("/") + "/" + name if name else base.rstrip("/")
        return base + ("?" + query if query else "")
    path = os.path.expanduser(path)
    return os.path.abspath(os.path.join(path, name) if name else path)


def split_experiment(path: str) -> tuple[str, str]:
    """``(local_dir, name)`` of an experiment path or URI: Ray Tune's ``storage_path`` and ``name``."""
    base, query = path.split("?", 1) if is_uri(path) and "?" in path else (path, "")
    base = base.rstrip("/")
    return posixpath.dirname(base) + ("?" + query if query else ""), posixpath.basename(base)


def _fs(path: str):
    """``(pyarrow filesystem, path on it)`` of a local path or a URI."""
    import pyarrow.fs

    if is_uri(path):
        try:
            return pyarrow.fs.FileSystem.from_uri(path)
        except Exception as err:  # ArrowInvalid: a scheme pyarrow cannot open; OSError: storage it cannot reach
            raise ValueError(f"local_dir: expected a local path or a URI that pyarrow.fs can open (s3://, gs://, "
                             f"file://, ...), but got {path!r} ({type(err).__name__}: {err})") from None
    return pyarrow.fs.LocalFileSystem(), os.path.abspath(path)


def _files(fs, folder: str, pattern: str) -> list[str]:
    """The files in ``folder`` on ``fs`` whose names match ``pattern``, sorted by name."""
    import pyarrow.fs

    infos = fs.get_file_info(pyarrow.fs.FileSelector(folder, allow_not_found=True))
    files = [i.path for i in infos if i.type == pyarrow.fs.FileType.File and fnmatch.fnmatch(i.base_name, pattern)]
    return sorted(files, key=posixpath.basename)


def _exists(fs, file: str) -> bool:
    import pyarrow.fs

    return fs.get_file_info(file).type != pyarrow.fs.FileType.NotFound


def _read(fs, file: str) -> bytes:
    with fs.open_input_stream(file, compression=None) as f:
        return f.read()


def _write(fs, file: str, data: bytes) -> None:
    """Write ``file`` whole: a kill leaves the old file or the new one, never a part."""
    tmp = posixpath.join(posixpath.dirname(file), f".{posixpath.basename(file)}.writing")
    with fs.open_output_stream(tmp, compression=None) as f:
        f.write(data)
    fs.move(tmp, file)  # a rename on a filesystem; object stores have no partial objects anyway


def local_folder(path: str) -> str:
    """A local folder with the contents of experiment ``path``: ``path`` itself, or a URI's copy.

    A URI's experiment is downloaded to ``$GLIMR_CV_CACHE`` (default
    ``~/.cache/glimr_cv``), in a folder named after the URI, for the readers of
    trial folders, which use os paths. Each call brings the copy up to date,
    downloading only the files whose size or modification time changed; files
    written into the copy (an exported ensemble, say) stay on this machine.
    """
    if not is_uri(path):
        return path
    import pyarrow.fs

    fs, root = _fs(path)
    cache = os.environ.get("GLIMR_CV_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "glimr_cv")
    local = os.path.join(cache, hashlib.sha1(path.encode()).hexdigest()[:12], posixpath.basename(root.rstrip("/")))
    if fs.get_file_info(root).type != pyarrow.fs.FileType.Directory:
        raise FileNotFoundError(f"{path!r} is not a folder")
    for info in fs.get_file_info(pyarrow.fs.FileSelector(root, recursive=True)):
        if info.type != pyarrow.fs.FileType.File:
            continue
        target = os.path.join(local, *posixpath.relpath(info.path, root).split("/"))
        mtime = info.mtime_ns
        try:
            stat = os.stat(target)
            if stat.st_size == info.size and mtime is not None and stat.st_mtime_ns == mtime:
                continue  # unchanged since the last download
        except OSError:
            pass
        os.makedirs(os.path.dirname(target), exist_ok=True)
        tmp = os.path.join(os.path.dirname(target), f".{os.path.basename(target)}.downloading")
        with open(tmp, "wb") as f:
            f.write(_read(fs, info.path))
        if mtime is not None:
            os.utime(tmp, ns=(mtime, mtime))
        os.replace(tmp, target)
    os.makedirs(local, exist_ok=True)
    return local


def save_search(search: Any, path: str) -> None:
    """Pickle ``search`` (space, builder, loader and settings) into a new experiment folder ``path``.

    Raises
    ------
    FileExistsError
        When ``path`` already holds a saved ``Search``.
    """
    from ray import cloudpickle

    fs, root = _fs(path)
    file = posixpath.join(root, SEARCH_FILE)
    if _exists(fs, file):
        local_dir, name = split_experiment(path)
        raise FileExistsError(f"name: expected a new experiment name, but {path!r} exists; "
                              f"use Search.restore({local_dir!r}, {name!r}) to resume it")
    fs.create_dir(root)
    with fs.open_output_stream(file, compression=None) as f:
        cloudpickle.dump(search, f)


def load_search(path: str) -> Any:
    """The ``Search`` saved in experiment folder ``path``."""
    fs, root = _fs(path)
    file = posixpath.join(root, SEARCH_FILE)
    if not _exists(fs, file):
        raise FileNotFoundError(f"restore: {path!r} is not a glimr_cv experiment (no {SEARCH_FILE})")
    data = _read(fs, file)
    with redirected_stderr():  # a builder's module may import TensorFlow, loudly
        return pickle.loads(data)


def saved_scheduler(path: str):
    """The fold scheduler as the searcher last saved it in folder ``path``, or None.

    Ray Tune saves the searcher's state (:meth:`CVSearcher.get_state`) into
    ``searcher-state-*.pkl`` as the run goes; the newest intact one is read.
    """
    fs, root = _fs(path)
    for file in reversed(_files(fs, root, "searcher-state-*.pkl")):
        try:
            return pickle.loads(_read(fs, file))["scheduler"]
        except Exception:  # cut short by a kill: an older state still tells most
            continue
    return None


def _intact(name: str, data: bytes) -> bool:
    try:
        json.loads(data) if name.startswith("experiment_state") else pickle.loads(data)
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
    fs, root = _fs(path)
    newest = [found[-1] for pattern in _STATE_FILES if (found := _files(fs, root, pattern))]
    # Tune reads only the newest of each
    names = {posixpath.basename(f) for f in newest if not _intact(posixpath.basename(f), _read(fs, f))}
    if not names:
        return
    temp = os.environ.get("RAY_TMPDIR", tempfile.gettempdir())
    stagings = glob.glob(os.path.join(temp, "ray", "session_*", "artifacts", "*", split_experiment(path)[1],
                                      "driver_artifacts"))
    for staging in sorted(stagings, key=os.path.getmtime, reverse=True):
        files = {}
        for pattern in _STATE_FILES:
            for f in glob.glob(os.path.join(staging, pattern)):
                with open(f, "rb") as stream:
                    files[os.path.basename(f)] = stream.read()
        if names <= set(files) and all(_intact(n, data) for n, data in files.items()):
            for name, data in files.items():
                _write(fs, posixpath.join(root, name), data)
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


def reopen_search(path: str) -> bool:
    """Let a resumed run ask the searcher for folds again after it said it had finished.

    A halted search (:meth:`CVSearcher.halt`) ends by telling Ray Tune it has
    finished, and Tune saves that in ``search_gen_state-*.json`` (a pickle); on
    restore Tune would then never ask for another fold. Whether the flag was set.
    """
    fs, root = _fs(path)
    files = _files(fs, root, "search_gen_state-*.json")
    if not files:
        return False
    state = pickle.loads(_read(fs, files[-1]))
    if not state.get("finished"):
        return False
    state["finished"] = False
    _write(fs, files[-1], pickle.dumps(state))
    return True
