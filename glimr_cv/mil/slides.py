"""Bags from feature files: one file of tile features per whole-slide image, read inside ``tf.data``.

The slide-feature pipelines of computational pathology write one file per
slide: HDF5 with a ``features`` dataset ``(n_tiles, d)`` and a ``coords``
dataset ``(n_tiles, 2)`` of tile positions, or NumPy ``.npy``. A cohort is tens
of gigabytes, so :class:`SlideKFoldLoader` holds paths, never features: a
worker reads the files of the bags it trains or validates on, and with
``max_instances`` only the rows it draws.

NumPy only at import; h5py and TensorFlow load when files are read.
"""

from __future__ import annotations

import collections
import ctypes
import functools
import os
import re
import sys
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..checks import check_choice, check_int, check_type, expected, listed
from ..data.contract import DEFAULT_FOLDS
from .bags import BagFolds, bag_rows, check_finite_tiles

__all__ = ["kfold_slide_loader", "SlideKFoldLoader", "read_slide", "slide_info", "SlideInfo"]

_URI = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")
_HDF5 = (".h5", ".hdf5", ".hdf")


@dataclass(frozen=True)
class SlideInfo:
    """What a feature file holds, read from its header: tiles, features per tile, dtype, coordinates."""

    tiles: int
    width: int
    dtype: str
    coords: bool


def _path(path: Any) -> str:
    """A feature file's path (str or ``os.PathLike``) or URI, as a string."""
    check_type("path", path, (str, os.PathLike), "a feature file's path or URI")
    return os.fspath(path)


def _open(path: str):
    """A readable, seekable file: a local path, or a URI through ``pyarrow.fs`` (``s3://``, ``gs://``, ``file://``)."""
    if _URI.match(path):
        import pyarrow.fs

        fs, inner = pyarrow.fs.FileSystem.from_uri(path)
        return fs.open_input_file(inner)
    return open(path, "rb")


def _exists(path: str) -> bool:
    if _URI.match(path):
        import pyarrow.fs

        fs, inner = pyarrow.fs.FileSystem.from_uri(path)
        return fs.get_file_info(inner).type != pyarrow.fs.FileType.NotFound
    return os.path.isfile(path)


def _kind(path: str) -> str:
    lower = path.lower().split("?", 1)[0]
    if lower.endswith(_HDF5):
        return "hdf5"
    if lower.endswith(".npy"):
        return "npy"
    raise ValueError(expected("path", "an HDF5 (.h5, .hdf5) or NumPy (.npy) feature file", path))


def _coords_path(path: str) -> str:
    """Where an ``.npy`` file's tile coordinates are: ``<stem>.coords.npy`` beside it."""
    return path[: -len(".npy")] + ".coords.npy"


def _npy_header(handle) -> tuple[tuple, np.dtype]:
    """Shape and dtype from a ``.npy`` file's header, without reading its data."""
    version = np.lib.format.read_magic(handle)
    if version == (1, 0):
        shape, _, dtype = np.lib.format.read_array_header_1_0(handle)
    else:
        shape, _, dtype = np.lib.format.read_array_header_2_0(handle)
    return shape, dtype


def manifest_path(path: Any, base: str | None = None) -> str:
    """A manifest's file path as read: a URI or an absolute path as it is, a relative one under ``base``.

    ``base`` is the folder of the manifest's CSV (None: the working directory), so
    that a cohort folder that holds its CSV and its files can move as a whole.
    """
    path = os.fspath(path)
    if _URI.match(path) or os.path.isabs(path):
        return path
    return os.path.abspath(os.path.join(base, path) if base else path)


def slide_info(path: str, features: str = "features", coords: str = "coords") -> SlideInfo:
    """Read a feature file's header: its tiles, features per tile, dtype and whether it has coordinates.

    Raises
    ------
    FileNotFoundError
        When the file does not exist.
    ValueError
        When it cannot be read as HDF5 or ``.npy``, or holds no ``(n_tiles, d)``
        ``features`` array of at least one tile.
    """
    path = _path(path)
    if not _exists(path):
        raise FileNotFoundError(f"no such feature file {path!r}")
    kind = _kind(path)
    try:
        with _open(path) as handle:
            if kind == "hdf5":
                import h5py

                with h5py.File(handle, "r") as h5:
                    if features not in h5:
                        raise KeyError(f"expected a {features!r} dataset of shape (n_tiles, d), but the file holds "
                                       f"{sorted(h5.keys())}")
                    shape, dtype = h5[features].shape, h5[features].dtype
                    has_coords = coords in h5 and h5[coords].shape == (shape[0], 2) if len(shape) else False
            else:
                shape, dtype = _npy_header(handle)
                has_coords = _exists(_coords_path(path))
    except KeyError as err:
        raise ValueError(err.args[0]) from None
    except Exception as err:  # h5py raises OSError, npy ValueError, pyarrow its own: all mean unreadable
        raise ValueError(f"cannot read {path!r} as {'HDF5' if kind == 'hdf5' else 'a .npy file'}: "
                         f"{type(err).__name__}: {err}") from None
    if len(shape) != 2 or shape[0] < 1 or not np.issubdtype(np.dtype(dtype), np.number):
        raise ValueError(f"expected {features!r} of numbers of shape (n_tiles, d) with n_tiles >= 1, but got "
                         f"shape {tuple(shape)} and dtype {dtype}")
    return SlideInfo(tiles=int(shape[0]), width=int(shape[1]), dtype=str(np.dtype(dtype)), coords=bool(has_coords))


def read_slide(path: str, rows: np.ndarray | None = None, features: str = "features",
               coords: str | None = None) -> np.ndarray:
    """A slide's tile features ``(n, d)`` as float32, only ``rows`` (sorted) when given; or its coordinates.

    Parameters
    ----------
    path : str or os.PathLike
        An HDF5 or ``.npy`` feature file, a local path or a URI.
    rows : numpy.ndarray, optional
        Increasing tile indices to read; only those are read from the file.
    features : str
        The HDF5 dataset of the features.
    coords : str, optional
        Read this HDF5 dataset of coordinates instead (``.npy``: the
        ``<stem>.coords.npy`` file beside it), as float64.
    """
    path = _path(path)
    kind = _kind(path)
    if not _exists(path):
        raise FileNotFoundError(f"no such feature file {path!r}")
    if kind == "hdf5":
        import h5py

        with _open(path) as handle, h5py.File(handle, "r") as h5:
            data = h5[coords if coords else features]
            values = data[()] if rows is None else data[rows]
    else:
        target = _coords_path(path) if coords else path
        if _URI.match(target):
            with _open(target) as handle:
                values = np.load(handle)
            values = values if rows is None else values[rows]
        else:
            array = np.load(target, mmap_mode="r")
            values = np.asarray(array if rows is None else array[rows])
    return np.asarray(values, dtype=np.float64 if coords else np.float32)


def kfold_slide_loader(
    manifest: Any,
    path: str = "path",
    labels: Any = None,
    time: str | None = None,
    event: str | None = None,
    task: str = "survival",
    patient: str | None = "patient",
    slide: str | None = "slide",
    bag: str = "slide",
    splitter: Any = None,
    stratify: Any = None,
    time_bins: int = 1,
    preprocess: Any = None,
    shuffle: bool = True,
    seed: int = 0,
    val_batch_size: int | None = None,
    max_instances: int | None = None,
    features: str = "features",
    coords: str = "coords",
    reads: int = 4,
    read_log: str | None = None,
) -> "SlideKFoldLoader":
    """A loader for :class:`glimr_cv.Search` over whole-slide feature files, split into k folds by patient.

    Each row of ``manifest`` is a slide: its feature file, its patient and its
    labels (or survival time and event). A bag is a slide (``bag="slide"``) or
    all of a patient's slides (``bag="patient"``); no patient's bags are on both
    sides of a fold. Files are read inside the ``tf.data`` pipeline of the fold
    that trains or validates on them, ``reads`` at a time, and with
    ``max_instances`` only the tiles drawn are read. Batches are
    ``({"instances": (B, n, d), "mask": (B, n) bool}, {task: labels})``, as
    :func:`glimr_cv.mil.kfold_bag_loader` makes them, so the same models train on both.

    Parameters
    ----------
    manifest : pandas.DataFrame or str
        One row per slide, or the path of a CSV of them (relative file paths are
        then relative to the CSV's folder).
    path : str
        Column of the feature file: HDF5 (a ``features`` dataset ``(n_tiles, d)``
        and optionally ``coords`` ``(n_tiles, 2)``) or ``.npy`` (coordinates in
        ``<stem>.coords.npy`` beside it, if any); a local path (on a cluster, one
        every node sees) or a URI that ``pyarrow.fs`` opens (``s3://``, ``gs://``).
    labels : str, list of str or dict of str to str, optional
        Label columns: a column (its name is the task), several, or task -> column.
    time, event : str, optional
        Columns of a survival task named ``task``: its labels are
        ``survival_labels(time, event)``, the folds are stratified on the event
        (and ``time_bins`` quantiles of the time) and training batches hold events.
    task : str
        The survival task's name.
    patient : str or None
        Column of the patient (``None`` or a missing column: each slide its own).
    slide : str or None
        Column of the slide's id, used in messages and by :meth:`SlideKFoldLoader.slides`
        (default: the file's name without its suffix).
    bag : {"slide", "patient"}
        A bag per slide, or one per patient holding all of its slides' tiles
        (the slides' labels must then agree).
    splitter, stratify
        As in :func:`glimr_cv.kfold_loader`, over bags; default ``"kfold"``, or
        ``"group"`` when several bags share a patient; refused with survival
        labels, which fix the splitter.
    time_bins : int
        With survival labels, the time quantiles the folds are also stratified on.
    preprocess : sklearn transformer with ``partial_fit``, optional
        Fit on each fold's training tiles by streaming them, one file at a time
        (``StandardScaler``, ``MinMaxScaler``, ``IncrementalPCA``), once per fold
        and process, then applied to every tile read. Each fit reads the fold's
        training files once; normalizing inside the model
        (``keras.layers.LayerNormalization`` on the tile features) costs nothing.
    shuffle, seed, val_batch_size
        As in :func:`glimr_cv.mil.kfold_bag_loader`.
    max_instances : int, optional
        At most this many tiles of a training bag per epoch, drawn at random (in
        tile order) and the only ones read; validation bags are read whole.
    features, coords : str
        HDF5 dataset names.
    reads : int
        Files read at once by a fold's pipeline.
    read_log : str, optional
        A folder where each process appends a line per file it reads (``pid``,
        slide, path, tiles read, Unix time; tab-separated): to see which files a
        worker opened.

    Returns
    -------
    SlideKFoldLoader

    Raises
    ------
    TypeError, ValueError, FileNotFoundError
        Before anything trains, naming the slide: a missing file, an unreadable
        one, one without ``features``, slides of different feature widths,
        missing columns or labels that differ within a patient's bag.
    """
    return SlideKFoldLoader(manifest, path=path, labels=labels, time=time, event=event, task=task, patient=patient,
                            slide=slide, bag=bag, splitter=splitter, stratify=stratify, time_bins=time_bins,
                            preprocess=preprocess, shuffle=shuffle, seed=seed, val_batch_size=val_batch_size,
                            max_instances=max_instances, features=features, coords=coords, reads=reads,
                            read_log=read_log)


def _label_columns(labels: Any) -> dict[str, str]:
    if labels is None:
        return {}
    if isinstance(labels, str):
        return {labels: labels}
    if isinstance(labels, (list, tuple)) and all(isinstance(c, str) for c in labels):
        return {c: c for c in labels}
    if isinstance(labels, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in labels.items()):
        return dict(labels)
    raise TypeError(expected("labels", "a column name, a list of them, or a dict task -> column", labels))


@functools.cache
def _return_freed_bags() -> None:
    """Have glibc give freed bags (1-32 MB arrays) back to the system at once.

    By default glibc raises its mmap threshold to the largest block freed, after
    which tf.data's reader threads keep freed bags in their arenas: a worker
    grew by 100-200 MB with each fold it trained, and a fixed 1 MB threshold
    took 317 MB off its peak after six folds (``benchmarks/mil_scale.py``).
    """
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL("libc.so.6").mallopt(-3, 1 << 20)  # M_MMAP_THRESHOLD, 1 MiB
        except (OSError, AttributeError):  # not glibc (musl): its allocator keeps no such arenas
            pass


class SlideKFoldLoader(BagFolds):
    """Whole-slide feature files split into k folds by patient; build one with :func:`kfold_slide_loader`.

    It holds the manifest (paths, patients, labels) and each file's tile count,
    never features: pickled with a search or shipped to Ray workers it weighs
    kilobytes, whatever the cohort's size.

    Memory per worker does not grow with the number of slides: a fold's
    pipeline holds ``reads`` bags being read, the batch being padded and two
    prefetched, each bag ``tiles x d x 4`` bytes with ``tiles`` the training
    draw (``max_instances``) or the largest validation bag. Measured with
    ``benchmarks/mil_scale.py`` (1,024 features, bags of 2,000-8,000 tiles, 512
    drawn, batches of 4, two folds per worker): a worker's peak was 1.64 GB on
    5.9 GB of features and 1.78 GB on 11.8 GB, TensorFlow and the model
    included, as a hand-written ``tf.data`` loop's (1.75 GB).

    Attributes
    ----------
    manifest : pandas.DataFrame
        The slides, one row each, with absolute ``path``.
    n : int
        Bags.
    files : list of list of int
        The manifest rows (slides) of each bag.
    tiles : numpy.ndarray
        int64 tiles per slide.
    width : int
        Features per tile.
    rows : KFoldLoader
        The folds over bags, as :class:`glimr_cv.mil.BagKFoldLoader`'s.
    """

    def __init__(self, manifest, path="path", labels=None, time=None, event=None, task="survival",
                 patient="patient", slide="slide", bag="slide", splitter=None, stratify=None, time_bins=1,
                 preprocess=None, shuffle=True, seed=0, val_batch_size=None, max_instances=None, features="features",
                 coords="coords", reads=4, read_log=None):
        import pandas as pd

        base = None
        if isinstance(manifest, (str, os.PathLike)):
            base = os.path.dirname(os.path.abspath(os.fspath(manifest)))
            try:
                manifest = pd.read_csv(manifest)
            except (OSError, ValueError) as err:
                raise ValueError(f"manifest: cannot read {os.fspath(manifest)!r} as a CSV: {err}") from None
        if not isinstance(manifest, pd.DataFrame):
            raise TypeError(expected("manifest", "a pandas DataFrame of slides or the path of a CSV", manifest))
        self.bag_by = check_choice("bag", bag, ("slide", "patient"))
        columns = _label_columns(labels)
        if (time is None) != (event is None):
            raise ValueError(expected("time, event", "both survival columns or neither",
                                      got=f"time={time!r}, event={event!r}"))
        survival = time is not None
        if survival and task in columns:
            raise ValueError(f"task: the survival task {task!r} is also a task of labels; expected another name")
        needed = [path, *columns.values(), *([time, event] if survival else [])]
        missing = [c for c in needed if c not in manifest.columns]
        if missing:
            raise ValueError(f"manifest: expected columns {needed}, but {missing} are missing "
                             f"(columns: {list(manifest.columns)})")
        if not columns and not survival:
            raise ValueError(expected("labels", "label columns or time and event columns", got="neither"))
        if len(manifest) < 2:
            raise ValueError(expected("manifest", "at least 2 slides to make folds", len(manifest)))
        frame = manifest.reset_index(drop=True).copy()
        frame[path] = [manifest_path(p, base) for p in frame[path]]
        ids = ([str(v) for v in frame[slide]] if slide is not None and slide in frame.columns
               else [os.path.splitext(os.path.basename(p.split("?", 1)[0]))[0] for p in frame[path]])
        self.slide_ids = ids
        self.path_column = path
        self.features_name, self.coords_name = features, coords
        infos, unreadable = [], []
        for i, file in enumerate(frame[path]):  # every header first: a cohort's bad files are named at once
            try:
                infos.append(slide_info(file, features, coords))
            except (FileNotFoundError, ValueError) as err:
                unreadable.append(f"slide {ids[i]!r} (row {i}): {err}")
        if unreadable:
            kind = FileNotFoundError if all("no such feature file" in u for u in unreadable) else ValueError
            many = f"{len(unreadable)} of {len(ids)} slides cannot be read: " if len(unreadable) > 1 else ""
            raise kind(f"manifest: {many}{listed(unreadable)}")
        widths = collections.Counter(info.width for info in infos)
        if len(widths) > 1:
            common = widths.most_common(1)[0][0]  # ties: the first slide's
            first = next(i for i, info in enumerate(infos) if info.width == common)
            odd = [i for i, info in enumerate(infos) if info.width != common]
            if len(odd) == 1:
                found = f"slide {ids[odd[0]]!r} has {infos[odd[0]].width} features per tile"
            else:
                found = (f"{len(odd)} slides have another number of features per tile: "
                         + listed([f"{ids[i]!r} ({infos[i].width})" for i in odd], sep=", "))
            raise ValueError(f"manifest: {found}, but slide {ids[first]!r} has {common}"
                             + (f", as {widths[common] - 1} others do" if widths[common] > 1 else "")
                             + "; expected one feature width (one extractor) for all slides")
        self.width = next(iter(widths))
        self.tiles = np.array([info.tiles for info in infos], dtype=np.int64)
        self.has_coords = np.array([info.coords for info in infos], dtype=bool)

        patients = ([str(v) for v in frame[patient]] if patient is not None and patient in frame.columns
                    else list(ids))
        if self.bag_by == "patient":
            order = list(dict.fromkeys(patients))
            self.files = [[i for i, p in enumerate(patients) if p == key] for key in order]
            self.patients = np.array(order, dtype=object)
        else:
            self.files = [[i] for i in range(len(frame))]
            self.patients = np.array(patients, dtype=object)
        self.n = len(self.files)
        if self.n < 2:
            raise ValueError(expected("manifest", "at least 2 bags to make folds", got=f"{self.n} ({self.bag_by}s)"))

        bag_labels = {}
        for name, column in columns.items():
            bag_labels[name] = self._per_bag(frame[column].to_numpy(), column)
        if survival:
            from ..survival.data import survival_labels

            y = survival_labels(frame[time].to_numpy(dtype=float), frame[event].to_numpy(dtype=float))
            bag_labels[task] = self._per_bag(y, f"{time}, {event}")
        self.manifest = frame
        groups = self.patients if len(set(self.patients)) < self.n else None
        if splitter is None and groups is not None and not survival:
            splitter = "group"
        self.rows = bag_rows(self.n, bag_labels, groups=groups, splitter=splitter, shuffle=shuffle, seed=seed,
                             val_batch_size=val_batch_size, stratify=stratify,
                             survival=task if survival else None, time_bins=time_bins)
        self.survival = task if survival else None
        self.preprocess = self._check_preprocess(preprocess)
        check_int("max_instances", max_instances, 1, allow_none=True)
        self.max_instances = None if max_instances is None else int(max_instances)
        self.reads = check_int("reads", reads, 1)
        self.read_log = None if read_log is None else os.path.abspath(os.fspath(read_log))
        self._fitted: dict = {}

    def _per_bag(self, values: np.ndarray, column: str) -> np.ndarray:
        """One label per bag; a patient's slides must agree."""
        out = []
        for files in self.files:
            first = values[files[0]]
            for i in files[1:]:
                same = np.array_equal(values[i], first, equal_nan=True) if values.dtype.kind == "f" else \
                    np.array_equal(values[i], first)
                if not same:
                    raise ValueError(f"manifest: slides {self.slide_ids[files[0]]!r} and {self.slide_ids[i]!r} of "
                                     f"patient {self.patients_of(files[0])!r} have different {column} "
                                     f"({first!r} and {values[i]!r}); expected one label per patient with bag='patient'")
            out.append(first)
        return np.asarray(out)

    def patients_of(self, slide_row: int) -> str:
        return next(str(p) for p, files in zip(self.patients, self.files) if slide_row in files)

    @staticmethod
    def _check_preprocess(preprocess):
        if preprocess is None:
            return None
        from sklearn.base import clone

        if not (callable(getattr(preprocess, "partial_fit", None)) and callable(getattr(preprocess, "transform", None))):
            raise TypeError(expected("preprocess", "a transformer with partial_fit and transform (StandardScaler, "
                                     "MinMaxScaler, IncrementalPCA), which a slide loader fits by streaming its "
                                     "training files", type(preprocess).__name__,
                                     "or normalize inside the model, e.g. keras.layers.LayerNormalization"))
        clone(preprocess)
        return preprocess

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_fitted"] = {}  # fitted per process; a worker fits its own folds
        return state

    # -- what the folds are made of (the rest from BagFolds) ---------------------------------
    @property
    def sizes(self) -> np.ndarray:
        """Tiles per bag, int64 ``(n,)``."""
        return np.array([self.tiles[files].sum() for files in self.files], dtype=np.int64)

    def slides(self, i: int) -> list[str]:
        """The slide ids of bag ``i``."""
        return [self.slide_ids[f] for f in self.files[i]]

    def subset(self, rows: Any) -> "SlideKFoldLoader":
        """A loader over bags ``rows`` only (paths, not features), with the same settings."""
        new, index = self._subset_rows(rows)
        new.files = [self.files[i] for i in index]
        new.patients = self.patients[index]
        new._fitted = {}
        return new

    # -- reading ---------------------------------------------------------------------------
    def bag(self, i: int, fitted: Any = None) -> np.ndarray:
        """Bag ``i``'s tiles ``(n, d)`` float32, all of them, through ``fitted`` when given."""
        check_int("i", i, 0, self.n - 1)
        return self._read(i, None, fitted)

    def coords(self, i: int) -> np.ndarray | None:
        """Bag ``i``'s tile coordinates ``(n, 2)`` (its slides' stacked), or None if a slide has none."""
        check_int("i", i, 0, self.n - 1)
        files = self.files[i]
        if not all(self.has_coords[f] for f in files):
            return None
        return np.concatenate([read_slide(self.manifest[self.path_column][f], coords=self.coords_name)
                               for f in files])

    def _log(self, file: int, count: int) -> None:
        if self.read_log is None:
            return
        os.makedirs(self.read_log, exist_ok=True)
        with open(os.path.join(self.read_log, f"reads-{os.getpid()}.log"), "a") as f:
            f.write(f"{os.getpid()}\t{self.slide_ids[file]}\t{self.manifest[self.path_column][file]}\t{count}\t"
                    f"{time.time()}\n")

    def _read(self, i: int, draw: int | None, fitted: Any) -> np.ndarray:
        """Bag ``i``'s tiles: all of them, or ``max_instances`` drawn with seed ``draw``, in tile order."""
        files = self.files[i]
        tiles = self.tiles[files]
        chosen = None
        if draw is not None and self.max_instances is not None and tiles.sum() > self.max_instances:
            picked = np.random.default_rng(draw).choice(int(tiles.sum()), self.max_instances, replace=False)
            chosen = np.sort(picked)
        parts, start = [], 0
        for file, count in zip(files, tiles):
            rows = None if chosen is None else chosen[(chosen >= start) & (chosen < start + count)] - start
            start += count
            if rows is not None and not len(rows):
                continue
            path = self.manifest[self.path_column][file]
            try:
                parts.append(read_slide(path, rows, self.features_name))
            except Exception as err:  # a file gone or damaged mid-search: the fold fails, naming the slide
                raise type(err)(f"slide {self.slide_ids[file]!r}: cannot read {path!r}: {err}") from None
            check_finite_tiles(parts[-1], f"slide {self.slide_ids[file]!r} ({path})", rows)
            self._log(file, len(parts[-1]))
        out = np.concatenate(parts) if len(parts) > 1 else parts[0]
        if fitted is not None:
            out = np.asarray(fitted.transform(out), dtype=np.float32)
        return out

    # -- preprocessing ------------------------------------------------------------------------
    def fit_preprocess(self, rows: np.ndarray) -> Any:
        """``preprocess`` fit by streaming the tiles of bags ``rows``, one file at a time (None without it).

        Cached per process for the same bags, so the folds of a worker fit once each.
        """
        if self.preprocess is None:
            return None
        from sklearn.base import clone

        rows = np.asarray(rows, dtype=np.int64)
        key = rows.tobytes()
        if key not in self._fitted:
            fitted = clone(self.preprocess)
            for i in rows:
                for file in self.files[int(i)]:
                    fitted.partial_fit(read_slide(self.manifest[self.path_column][file], None, self.features_name))
            self._fitted[key] = fitted
        return self._fitted[key]

    def fitted_preprocess(self, cv_index: int, cv_folds: int = DEFAULT_FOLDS) -> Any:
        """``preprocess`` fit on fold ``cv_index``'s training tiles (None without it)."""
        folds = self.folds(cv_folds)
        check_int("cv_index", cv_index, 0, cv_folds - 1)
        return self.fit_preprocess(folds[int(cv_index)][0])

    # -- datasets ----------------------------------------------------------------------------
    def _pipeline(self, index_ds, count: int, batch_size: int, fitted: Any, draw_seed: int | None):
        """Per-bag index elements ``(bag, labels)`` made padded, masked batches, files read in the pipeline."""
        import tensorflow as tf

        _return_freed_bags()
        width = self.width

        def read(bag, draw):
            return self._read(int(bag), None if int(draw) < 0 else int(draw), fitted)

        def element(bag, labels, draw):
            tiles = tf.numpy_function(read, [bag, draw], tf.float32, stateful=False)
            tiles = tf.ensure_shape(tiles, [None, width])
            return tiles, tf.ones(tf.shape(tiles)[:1], dtype=tf.bool), labels

        if draw_seed is None or self.max_instances is None:
            ds = index_ds.map(lambda bag, labels: element(bag, labels, tf.constant(-1, tf.int64)),
                              num_parallel_calls=self.reads, deterministic=True)
        else:
            # one draw per bag, from a stream tf.data renews every epoch (when shuffling), like the order
            draws = tf.data.Dataset.random(seed=draw_seed, rerandomize_each_iteration=self.shuffle)
            ds = tf.data.Dataset.zip(index_ds, draws).map(
                lambda e, r: element(e[0], e[1], tf.math.abs(r) % (2**62)),
                num_parallel_calls=self.reads, deterministic=True)
        ds = ds.padded_batch(int(batch_size))
        # unbatching lost the count of batches; Keras reads it to know an epoch's length
        ds = ds.apply(tf.data.experimental.assert_cardinality(-(-int(count) // int(batch_size))))
        ds = ds.map(lambda x, mask, labels: ({"instances": x, "mask": mask}, labels))
        return ds.prefetch(2)  # bounded: memory must not grow with AUTOTUNE's buffer

    def _draw_seed(self, key: int) -> int:
        return int(np.random.SeedSequence([self.seed, key, 1]).generate_state(1)[0])

    def __call__(self, batch_size: int, cv_index: int = 0, cv_folds: int = DEFAULT_FOLDS):
        """Fold ``cv_index`` of ``cv_folds`` as ``(train_ds, val_ds)``, batches of ``batch_size`` bags.

        Elements are ``({"instances": (B, n, d), "mask": (B, n)}, {task: labels})``.
        The order of bags and their batches are the rows loader's (shuffled each
        epoch; with survival labels, batches that hold events).
        """
        check_int("batch_size", batch_size, 1)
        train_ds, val_ds = self.rows(batch_size, cv_index=cv_index, cv_folds=cv_folds)
        train, val = self.folds(cv_folds)[int(cv_index)]
        fitted = self.fitted_preprocess(cv_index, cv_folds)
        val_size = self.val_batch_size or batch_size
        return (self._pipeline(train_ds.unbatch(), len(train), batch_size, fitted, self._draw_seed(int(cv_index))),
                self._pipeline(val_ds.unbatch(), len(val), val_size, fitted, None))

    def full(self, batch_size: int):
        """All bags as one training dataset, ``preprocess`` fit on all of them: refit's full-data mode."""
        check_int("batch_size", batch_size, 1)
        ds = self.rows.full(batch_size)
        return self._pipeline(ds.unbatch(), self.n, batch_size, self.fit_preprocess(np.arange(self.n)),
                              self._draw_seed(self.n))

    def rows_dataset(self, rows: np.ndarray, batch_size: int, fitted: Any = None):
        """Batches of whole bags ``rows``, in order, tiles through ``fitted``: scoring and prediction."""
        import tensorflow as tf

        check_int("batch_size", batch_size, 1)
        rows = np.asarray(rows, dtype=np.int64)
        labels = {task: values[rows] for task, values in self.labels.items()}
        return self._pipeline(tf.data.Dataset.from_tensor_slices((rows, labels)), len(rows), batch_size, fitted, None)

    def __repr__(self) -> str:
        labels = "{" + ", ".join(f"{k!r}: {v.dtype}{list(v.shape[1:])}" for k, v in self.labels.items()) + "}"
        return (f"SlideKFoldLoader(n={self.n} {self.bag_by}s, slides={len(self.manifest)}, width={self.width}, "
                f"tiles {self.tiles.min()}..{self.tiles.max()}, labels={labels}, splitter={self.splitter!r}, "
                f"max_instances={self.max_instances}, seed={self.seed})")
