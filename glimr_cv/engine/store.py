"""An experiment folder: what it holds, how it is read, and repair of Tune's state after a kill.

Results are plain data. Everything needed to read them is JSON, written
atomically: ``glimr_cv.json`` (:data:`META_FILE`: the format, the run's id, metric,
mode, folds, racing, the reporter and a description of the space, and the hash
of the pickled search) and ``glimr_cv_state.json`` (:data:`STATE_FILE`: each
configuration's status, sampled values and fold scores, kept up to date while the
search runs), next to Ray Tune's own JSON of each fold. Reading results
(:func:`glimr_cv.load_results`, tables, plots, the report) needs only these and
never unpickles.

``glimr_cv_search.pkl`` (:data:`SEARCH_FILE`, the ``Search`` with its builder and
loader) is read only where the user's code is needed anyway (restore, refit, the
ensemble), after its SHA-256 is checked against the one recorded in
``glimr_cv.json``: a folder is then trusted like code.

The folder is a local path (a shared filesystem on a cluster) or a URI that
``pyarrow.fs.FileSystem.from_uri`` opens (``s3://``, ``gs://``, ``file://``...), as
Ray Tune's ``storage_path`` is. glimr_cv's own files go through ``pyarrow.fs`` as
Tune's do; the trial folders are read from :func:`local_folder`, a local copy of a
URI's experiment.
"""

from __future__ import annotations

import contextlib
import fnmatch
import glob
import hashlib
import json
import os
import pickle
import posixpath
import re
from typing import Any, Callable

from ..checks import check_type, expected
from ..space.notation import iter_leaves
from .quiet import redirected_stderr

__all__ = ["SEARCH_FILE", "META_FILE", "STATE_FILE", "FORMAT", "FolderError", "experiment_path", "split_experiment",
           "is_uri", "file_exists", "read_file", "write_file", "drop_empty_folders", "local_folder", "save_search",
           "load_search", "read_meta", "write_state", "read_state", "SavedState", "encode", "decode", "migrate",
           "saved_scheduler", "repair_state", "reopen_search", "check_picklable"]

#: The pickled ``Search`` in an experiment folder, so that it resumes from the shell.
SEARCH_FILE = "glimr_cv_search.pkl"
#: The search's settings, as plain JSON (see the module docstring).
META_FILE = "glimr_cv.json"
#: The configurations' statuses and scores, as plain JSON, kept up to date while the search runs.
STATE_FILE = "glimr_cv_state.json"
#: The format of the folder's own files; a folder without ``META_FILE`` predates it (:func:`migrate`).
FORMAT = 1


class FolderError(ValueError):
    """An experiment folder that cannot be read as it is: damaged, another search's, or of another format."""

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
    check_type("local_dir", local_dir, (str, os.PathLike), "a path")
    check_type("name", name, str, "a folder name", allow_none=True)
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
            raise ValueError(expected("local_dir",
                                      "a local path or a URI that pyarrow.fs can open (s3://, gs://, file://, ...)",
                                      got=f"{path!r} ({type(err).__name__}: {err})")) from None
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


def file_exists(file: str) -> bool:
    """Whether ``file``, a local path or a URI, exists."""
    fs, where = _fs(file)
    return _exists(fs, where)


def read_file(file: str) -> bytes:
    """The bytes of ``file``, a local path or a URI."""
    fs, where = _fs(file)
    return _read(fs, where)


def write_file(file: str, data: bytes) -> None:
    """Write ``file``, a local path or a URI, whole: a kill leaves the old file or the new one."""
    fs, where = _fs(file)
    _write(fs, where, data)


def drop_empty_folders(path: str, names: list[str]) -> None:
    """Remove the folders ``names`` of experiment folder ``path`` that are empty (and only those).

    Ray Tune makes a trial's folder when it schedules the trial; a fold ended
    before it started leaves it empty. Object stores keep no empty folders.
    """
    if is_uri(path):
        return
    for name in names:
        with contextlib.suppress(OSError):  # not empty, or gone: kept as it is
            os.rmdir(os.path.join(path, name))


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


# -- plain data -------------------------------------------------------------------------------


class Opaque(str):
    """A value of a configuration that JSON cannot hold (a class, a function), kept as its ``repr``.

    Tables leave it out, as they leave out the object it stands for; a model is
    built from the trusted configuration instead (the trial's ``params.pkl``).
    """

    def __repr__(self) -> str:
        return str(self)


def encode(value: Any) -> Any:
    """``value`` as JSON values: containers kept, non-JSON leaves as ``{"$opaque": repr}``, NaN as None."""
    import math

    if isinstance(value, dict):
        return {str(k): encode(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [encode(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)) and getattr(value, "ndim", 0) == 0:
        value = value.item()  # a NumPy scalar
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    return {"$opaque": repr(value)}


def decode(value: Any) -> Any:
    """The inverse of :func:`encode`, with :class:`Opaque` for what JSON could not hold."""
    if isinstance(value, dict):
        if set(value) == {"$opaque"}:
            return Opaque(value["$opaque"])
        return {k: decode(v) for k, v in value.items()}
    if isinstance(value, list):
        return [decode(v) for v in value]
    return value


def _write_json(path: str, name: str, value: Any) -> None:
    fs, root = _fs(path)
    fs.create_dir(root)
    _write(fs, posixpath.join(root, name), json.dumps(value, indent=1, allow_nan=False).encode())


def _read_json(path: str, name: str) -> Any:
    """The JSON file ``name`` of folder ``path``, or None when it is not there."""
    fs, root = _fs(path)
    file = posixpath.join(root, name)
    if not _exists(fs, file):
        return None
    try:
        return json.loads(_read(fs, file))
    except ValueError as err:
        raise FolderError(f"{name} in {path!r} is damaged ({err}); it is written whole, so the disk or a copy "
                          "cut it") from None


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def search_meta(search: Any, run: str) -> dict:
    """The settings of ``search`` that reading its results needs, as plain JSON (:data:`META_FILE`)."""
    from ..space.notation import describe_space

    racing = getattr(search, "racing", None)
    stopping = getattr(search, "fold_stopping", None)
    return {
        "format": FORMAT,
        "run": run,
        "metric": search.metric,
        "mode": search.mode,
        "cv_folds": search.cv_folds,
        "metrics": list(search.metric_names),
        "tasks": list(search.space["tasks"]),
        "racing": None if racing is None else repr(racing),
        "fold_stopping": None if stopping is None else repr(stopping),
        "seed": search.seed,
        "loader": type(search.loader).__name__,
        "preprocess": None if getattr(search.loader, "preprocess", None) is None else repr(search.loader.preprocess),
        "reporter": encode(search.reporter),
        "resources": encode(search.resources),
        "space": describe_space(search._parsed),
    }


def save_search(search: Any, path: str, run: str | None = None) -> None:
    """Save ``search`` into a new experiment folder ``path``: its pickle and :data:`META_FILE` with its hash.

    Raises
    ------
    FileExistsError
        When ``path`` already holds a saved ``Search``.
    """
    import uuid

    from ray import cloudpickle

    fs, root = _fs(path)
    file = posixpath.join(root, SEARCH_FILE)
    if _exists(fs, file):
        local_dir, name = split_experiment(path)
        raise FileExistsError(f"name: expected a new experiment name, but {path!r} exists; "
                              f"use Search.restore({local_dir!r}, {name!r}) to resume it")
    fs.create_dir(root)
    data = cloudpickle.dumps(search)
    _write(fs, file, data)
    meta = search_meta(search, run or uuid.uuid4().hex)
    meta["search_sha256"] = _digest(data)
    _write_json(path, META_FILE, meta)


def load_search(path: str, check: bool = True) -> Any:
    """The ``Search`` saved in experiment folder ``path``: unpickling runs its code, so trust the folder first.

    The pickle must match the SHA-256 that :data:`META_FILE` recorded when the
    search started (``check=False`` skips that, for :func:`migrate`).

    Raises
    ------
    FileNotFoundError
        When ``path`` holds no saved search.
    FolderError
        When the pickle is not the one this folder's search saved.
    """
    fs, root = _fs(path)
    file = posixpath.join(root, SEARCH_FILE)
    if not _exists(fs, file):
        raise FileNotFoundError(f"restore: {path!r} is not a glimr_cv experiment (no {SEARCH_FILE})")
    data = _read(fs, file)
    meta = _read_json(path, META_FILE) if check else None
    if check and meta is None:
        raise FolderError(f"{path!r} has no {META_FILE}: it predates format {FORMAT}; if you trust the folder, "
                          "glimr_cv.engine.store.migrate(path) unpickles its search once and writes it")
    if check and meta.get("search_sha256") != _digest(data):
        raise FolderError(f"{SEARCH_FILE} in {path!r} is not the search this folder's {META_FILE} recorded (its "
                          "SHA-256 differs: another search's file, or a damaged one); refusing to unpickle it")
    with redirected_stderr():  # a builder's module may import TensorFlow, loudly
        search = pickle.loads(data)
    for name, value in _SEARCH_DEFAULTS.items():  # a Search pickled before these settings existed
        search.__dict__.setdefault(name, value)
    return search


#: Settings of a ``Search`` younger than the first pickled ones, and the value an older one had in effect.
_SEARCH_DEFAULTS = {"fold_stopping": None, "every_epoch": False, "deterministic": False, "fail_fast": None,
                    "_driver_stops": False}


def read_meta(path: str) -> dict:
    """The search's settings, :data:`META_FILE`, of experiment folder ``path``.

    Raises
    ------
    FileNotFoundError
        When ``path`` is not an experiment folder.
    FolderError
        When it is damaged, of another format, or predates the format (then it
        says how to :func:`migrate` it).
    """
    meta = _read_json(path, META_FILE)
    if meta is None:
        fs, root = _fs(path)
        if _exists(fs, posixpath.join(root, SEARCH_FILE)):
            raise FolderError(f"{path!r} was written by a glimr_cv before format {FORMAT} (it has no {META_FILE}); "
                              "reading it would unpickle its search. If you trust the folder, "
                              "glimr_cv.engine.store.migrate(path) (or Search.restore) writes it once")
        raise FileNotFoundError(f"{path!r} is not a glimr_cv experiment (no {META_FILE})")
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise FolderError(f"{META_FILE} in {path!r} is of format {meta.get('format') if isinstance(meta, dict) else meta!r}, "
                          f"but this glimr_cv reads format {FORMAT}")
    return meta


def write_state(path: str, scheduler: Any, run: str, halted: str | None = None) -> None:
    """Write the fold scheduler's configurations as plain JSON, :data:`STATE_FILE`, atomically."""
    configs = [{"config_id": c.config_id, "status": c.status, "error": c.error, "params": encode(c.params),
                "scores": {str(f): s for f, s in sorted(c.scores.items())}, "stopped_early": sorted(c.stopped_early),
                "skipped": c.skipped} for c in scheduler.configs.values()]
    more = scheduler.n_running > 0 or scheduler.can_start_config()
    _write_json(path, STATE_FILE, {
        "format": FORMAT, "run": run, "n_started": scheduler.n_started, "n_running": scheduler.n_running,
        "more": bool(more), "fold_trainings_saved": scheduler.fold_trainings_saved, "incumbent": scheduler.incumbent,
        "halted": halted, "configs": configs})


class SavedState:
    """The fold scheduler as :data:`STATE_FILE` saved it: what a reader of results needs of it.

    ``configs`` maps config_id to objects with ``config_id``, ``params``,
    ``status``, ``error``, ``scores`` and ``stopped_early``, as
    :class:`glimr_cv.engine.scheduler.ConfigState` has them.
    """

    def __init__(self, state: dict):
        from types import SimpleNamespace

        self.run = state.get("run")
        self.n_started = int(state.get("n_started", 0))
        self.n_running = int(state.get("n_running", 0))
        self.fold_trainings_saved = int(state.get("fold_trainings_saved", 0))
        self.incumbent = state.get("incumbent")
        self.halted = state.get("halted")
        self._more = bool(state.get("more", False))
        self.configs = {}
        for c in state.get("configs", []):
            self.configs[int(c["config_id"])] = SimpleNamespace(
                config_id=int(c["config_id"]), params=decode(c.get("params")), status=c.get("status", "running"),
                error=c.get("error"), scores={int(f): s for f, s in (c.get("scores") or {}).items()},
                stopped_early=set(c.get("stopped_early") or []), skipped=int(c.get("skipped", 0)))

    def can_start_config(self) -> bool:
        return self._more


def read_state(path: str) -> SavedState | None:
    """:data:`STATE_FILE` of experiment folder ``path``, or None before the search saved one.

    Raises
    ------
    FolderError
        When it is damaged.
    """
    state = _read_json(path, STATE_FILE)
    return None if state is None else SavedState(state)


def migrate(path: str) -> dict:
    """Bring a folder written before format 1 up to it: unpickle its search once and write the JSON files.

    This runs the folder's code (its pickled builder and loader): call it only on
    a folder you trust. :meth:`glimr_cv.Search.restore`, which trusts the folder
    anyway, calls it. Returns the settings written.
    """
    search = load_search(path, check=False)
    fs, root = _fs(path)
    data = _read(fs, posixpath.join(root, SEARCH_FILE))
    meta = search_meta(search, getattr(search, "_searcher_token", None) or "unknown")
    meta["search_sha256"] = _digest(data)
    _write_json(path, META_FILE, meta)
    scheduler = saved_scheduler(path)
    if scheduler is not None:
        write_state(path, scheduler, meta["run"])
    return meta


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
    from .compat import tune_staging_folders

    for staging in tune_staging_folders(split_experiment(path)[1]):
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
    from .compat import unfinish_tune_search

    fs, root = _fs(path)
    files = _files(fs, root, "search_gen_state-*.json")
    if not files:
        return False
    data = unfinish_tune_search(_read(fs, files[-1]))
    if data is None:
        return False
    _write(fs, files[-1], data)
    return True
