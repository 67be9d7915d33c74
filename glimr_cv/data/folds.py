""":func:`kfold_loader`, a ready loader over in-memory arrays (a :class:`~glimr_cv.data.contract.RowLoader`)."""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

import numpy as np

from ..checks import check_int, expected
from .contract import DEFAULT_FOLDS, check_loader

if TYPE_CHECKING:
    import tensorflow as tf

__all__ = ["check_loader", "kfold_loader", "KFoldLoader", "as_rows"]

_SPLITTERS = ("kfold", "stratified", "group", "stratified_group")


def kfold_loader(
    features: Any,
    labels: dict,
    groups: Any = None,
    splitter: Any = "kfold",
    preprocess: Any = None,
    shuffle: bool = True,
    seed: int = 0,
    val_batch_size: int | None = None,
    stratify: Any = None,
) -> "KFoldLoader":
    """A loader for :class:`glimr_cv.Search` over in-memory arrays, split into k folds.

    Parameters
    ----------
    features : numpy.ndarray or dict of str to numpy.ndarray
        ``(n, ...)`` rows; a dict of named arrays for a multi-input model. Arrays
        are kept, not copied: Ray ships them to workers once, zero-copy.
    labels : dict of str to numpy.ndarray
        Task name -> ``(n, ...)`` labels, keyed like the model's outputs.
    groups : array-like of shape (n,), optional
        Group of each row; required by the group splitters, and checked so that
        no group is in both the training and validation rows of a fold.
    splitter : {"kfold", "stratified", "group", "stratified_group"} or sklearn splitter
        ``"kfold"``, ``"stratified"`` and ``"stratified_group"`` shuffle with
        ``random_state=seed``; ``"group"`` is ``GroupKFold`` (no shuffle). An
        sklearn splitter object is used as given: its ``get_n_splits`` must equal
        the search's ``cv_folds`` (it is not changed to fit), and it must give the
        same folds on every call (checked here, by splitting twice).
    preprocess : sklearn transformer, or dict of str to transformer, optional
        Cloned and fit on each fold's training rows only, as ``fit(X_train, y_train)``
        with ``y`` the ``stratify`` labels, then applied to all rows. Dict
        features take a dict feature name -> transformer (unnamed features pass
        through).
    shuffle : bool
        Shuffle the training rows every epoch.
    seed : int
        Seed of the fold partition and of the training order (with ``cv_index``).
    val_batch_size : int, optional
        Validation batch size; defaults to ``batch_size``.
    stratify : str or array-like of shape (n,), optional
        Task whose labels stratify the folds (default: the first task), or the
        class of each row; for ``"stratified"``, ``"stratified_group"`` and
        splitter objects.

    Returns
    -------
    KFoldLoader
        ``loader(batch_size, cv_index=0, cv_folds=5) -> (train_ds, val_ds)``.

    Raises
    ------
    TypeError, ValueError
        On arguments that cannot make folds, naming the argument; on a splitter
        that gives different folds on each call.
    """
    return KFoldLoader(features, labels, groups=groups, splitter=splitter, preprocess=preprocess,
                       shuffle=shuffle, seed=seed, val_batch_size=val_batch_size, stratify=stratify)


def as_rows(name: str, value: Any) -> np.ndarray:
    """``value`` as a NumPy array of rows; a clear error, naming ``name``, for ragged rows (bags) or a scalar."""
    def ragged(value) -> str | None:
        # rows of different shapes: most often bags of instances, which kfold_bag_loader takes
        if not isinstance(value, (list, tuple, np.ndarray)):
            return None
        items = [v for v in (value.ravel() if isinstance(value, np.ndarray) else value)
                 if isinstance(v, (list, tuple, np.ndarray))]
        if not items:
            return None  # strings or numbers: an ordinary object column, such as group ids from pandas
        kind = "an object array" if isinstance(value, np.ndarray) else f"a {type(value).__name__}"
        lengths = sorted({len(v) if not isinstance(v, np.ndarray) else (v.shape[0] if v.ndim else 0) for v in items})
        if len(lengths) == 1 and not isinstance(value, np.ndarray):
            return expected(name, "an array of rows of one shape",
                            got=f"{kind} of {len(items)} arrays whose rows differ in shape")
        sizes = f"{lengths[0]} to {lengths[-1]} rows" if len(lengths) > 1 else f"{lengths[0]} rows each"
        return expected(name, "an array of rows of one shape", got=f"{kind} of {len(items)} arrays of {sizes}",
                        hint="for bags of instances (multiple-instance learning) use glimr_cv.mil.kfold_bag_loader")

    try:
        array = np.asarray(value)
    except ValueError:  # numpy's "inhomogeneous shape" names neither the argument nor the fix
        message = ragged(value)
        if message:
            raise ValueError(message) from None
        raise
    message = ragged(array) if array.dtype == object else None
    if message:  # arrays inside an object array would fail later, in TensorFlow, without a name
        raise ValueError(message)
    if array.ndim == 0:
        raise ValueError(expected(name, "an array of rows", got=f"a scalar {value!r}"))
    if not (array.flags.c_contiguous or array.flags.f_contiguous):
        array = np.ascontiguousarray(array)  # Ray ships only contiguous arrays zero-copy
    return array


def _short(array: np.ndarray) -> str:
    return f"{array.dtype}{list(array.shape[1:])}"


class KFoldLoader:
    """In-memory arrays split into k folds; build one with :func:`kfold_loader`.

    Calling it returns one fold's ``(train_ds, val_ds)``. Folds are computed once
    per ``cv_folds`` and cached, so fold ``i`` is the same partition on every
    call and in every copy (pickles carry the arrays, settings and cache).
    The arguments are those of :func:`kfold_loader`.

    Attributes
    ----------
    features, labels, groups : numpy.ndarray or dict
        The data, as given (non-contiguous arrays made contiguous).
    n : int
        Number of rows.
    stratify : str or numpy.ndarray
        Task name (or classes) of :attr:`target`.
    """

    def __init__(self, features, labels, groups=None, splitter="kfold", preprocess=None,
                 shuffle=True, seed=0, val_batch_size=None, stratify=None):
        if isinstance(features, dict):
            if not features:
                raise ValueError("features: expected a non-empty dict of named arrays")
            self.features = {str(k): as_rows(f"features[{k!r}]", v) for k, v in features.items()}
            named = list(self.features.items())
        else:
            self.features = as_rows("features", features)
            named = [("features", self.features)]
        self.n = len(named[0][1])
        if not isinstance(labels, dict):
            raise TypeError(
                expected("labels", "a dict task name -> array, keyed like the model's outputs (e.g. {'digit': y})",
                         got=type(labels).__name__)
            )
        if not labels:
            raise ValueError(expected("labels", "at least one task", got="an empty dict"))
        self.labels = {}
        for task, value in labels.items():
            if not isinstance(task, str):
                raise TypeError(expected("labels", "task names that are str", task))
            self.labels[task] = as_rows(f"labels[{task!r}]", value)
        arrays = [*[(f"features[{k!r}]" if isinstance(features, dict) else k, a) for k, a in named],
                  *[(f"labels[{k!r}]", a) for k, a in self.labels.items()]]
        self.groups = None if groups is None else as_rows("groups", groups)
        if self.groups is not None:
            arrays.append(("groups", self.groups))
        for name, array in arrays:
            if len(array) != self.n:
                raise ValueError(expected(name, f"{self.n} rows like {arrays[0][0]}", len(array)))
        if self.n < 2:
            raise ValueError(expected("features", "at least 2 rows to make folds", self.n))

        if isinstance(splitter, str):
            if splitter not in _SPLITTERS:
                raise ValueError(expected("splitter", f"one of {list(_SPLITTERS)} or an sklearn splitter object",
                                          splitter))
            if "group" in splitter and self.groups is None:
                raise ValueError(expected("groups", f"one group id per row, as splitter={splitter!r} needs groups",
                                          None))
            if "group" not in splitter and self.groups is not None:
                # silently ignoring groups would let a group straddle folds, the leak groups exist to stop
                raise ValueError(expected("groups", f"None, as splitter={splitter!r} ignores groups",
                                          got=f"{len(self.groups)} group ids",
                                          hint="use 'group' or 'stratified_group'"))
            if stratify is not None and "stratified" not in splitter:
                raise ValueError(expected("stratify", f"None, as splitter={splitter!r} does not stratify (only "
                                                      "'stratified', 'stratified_group' or a splitter object do)",
                                          got=repr(stratify) if isinstance(stratify, str) else "an array"))
        elif not (callable(getattr(splitter, "split", None)) and callable(getattr(splitter, "get_n_splits", None))):
            raise TypeError(expected("splitter", f"one of {list(_SPLITTERS)} or an sklearn splitter object "
                                                 "with split(X, y, groups) and get_n_splits", splitter))
        self.splitter = splitter

        if stratify is None or isinstance(stratify, str):
            # a task name, not its array: a second reference would be pickled as a second copy
            self.stratify = next(iter(self.labels)) if stratify is None else stratify
            if self.stratify not in self.labels:
                raise ValueError(expected("stratify",
                                          f"a task name in {list(self.labels)} or an array of {self.n} classes",
                                          stratify))
        else:
            self.stratify = as_rows("stratify", stratify)
            if len(self.stratify) != self.n:
                raise ValueError(expected("stratify", f"{self.n} rows like {arrays[0][0]}", len(self.stratify)))
        if isinstance(splitter, str) and "stratified" in splitter and self.target.ndim != 1:
            shape = (self.labels[self.stratify] if isinstance(self.stratify, str) else self.stratify).shape
            raise ValueError(expected("stratify",
                                      "one class per row for stratified folds, labels of shape (n,) or (n, 1)",
                                      got=f"{self._target_name} with labels of shape {shape}",
                                      hint="pass stratify= another task or an array of classes"))

        self.preprocess = self._check_preprocess(preprocess)
        self.shuffle = bool(shuffle)
        check_int("seed", seed, 0, 2**32 - 1)
        self.seed = int(seed)
        check_int("val_batch_size", val_batch_size, 1, allow_none=True)
        self.val_batch_size = val_batch_size

        self._folds: dict[int, list[tuple[np.ndarray, np.ndarray]]] = {}
        if not isinstance(splitter, str):
            self._check_deterministic()

    @property
    def target(self) -> np.ndarray:
        """The labels that stratify the folds and are ``y`` of ``preprocess.fit``."""
        target = self.labels[self.stratify] if isinstance(self.stratify, str) else self.stratify
        return target.ravel() if target.ndim == 2 and target.shape[1] == 1 else target

    @property
    def _target_name(self) -> str:
        return f"task {self.stratify!r}" if isinstance(self.stratify, str) else "stratify"

    def _check_preprocess(self, preprocess):
        if preprocess is None:
            return None
        from sklearn.base import clone

        if isinstance(self.features, dict):
            if not isinstance(preprocess, dict):
                raise TypeError(expected("preprocess", "a dict feature name -> transformer, as features is a dict "
                                                       f"(e.g. {{{next(iter(self.features))!r}: StandardScaler()}})",
                                         preprocess))
            unknown = sorted(set(map(str, preprocess)) - set(self.features))
            if unknown:
                raise ValueError(expected("preprocess", f"feature names in {list(self.features)}",
                                          got=f"{unknown}, which are not features"))
            items = {str(k): v for k, v in preprocess.items() if v is not None}
        elif isinstance(preprocess, dict):
            raise TypeError(expected("preprocess",
                                     "one transformer for array features (a dict of transformers needs dict features)",
                                     got="a dict"))
        else:
            items = {None: preprocess}
        for key, transformer in items.items():
            name = "preprocess" if key is None else f"preprocess[{key!r}]"
            if not (callable(getattr(transformer, "fit", None)) and callable(getattr(transformer, "transform", None))):
                raise TypeError(expected(name, "an sklearn transformer or Pipeline with fit and transform",
                                         transformer))
            clone(transformer)  # fails now, in the driver, if it cannot be cloned per fold
        return items if isinstance(self.features, dict) else preprocess

    # -- folds ---------------------------------------------------------------------
    def _split_x(self) -> np.ndarray:
        # splitters read only the row count from X; any array of n rows serves
        return self.features if not isinstance(self.features, dict) else next(iter(self.features.values()))

    def _split(self, splitter) -> list[tuple[np.ndarray, np.ndarray]]:
        folds = []
        for train, val in splitter.split(self._split_x(), self.target, self.groups):
            train, val = np.asarray(train, dtype=np.int64), np.asarray(val, dtype=np.int64)
            train.setflags(write=False)
            val.setflags(write=False)
            folds.append((train, val))
        return folds

    def _check_deterministic(self) -> None:
        splitter = self.splitter
        try:
            n_splits = splitter.get_n_splits(self._split_x(), self.target, self.groups)
            first, second = self._split(splitter), self._split(splitter)
        except ValueError as e:
            raise ValueError(f"splitter: {splitter!r} cannot split these {self.n} rows: {e}") from e
        same = len(first) == len(second) and all(
            np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1]) for a, b in zip(first, second))
        if not same:
            raise ValueError(expected("splitter", "a splitter that gives the same folds on each call",
                                      got=f"{splitter!r}, which gives different folds on each call",
                                      hint="set random_state to an int (or shuffle=False) so that fold i is the same "
                                           "partition for every configuration"))
        self._check_folds(first)
        self._folds[int(n_splits)] = first

    def _check_folds(self, folds) -> None:
        for i, (train, val) in enumerate(folds):
            if not len(train) or not len(val):
                raise ValueError(expected("splitter", "folds with training and validation rows",
                                          got=f"fold {i} of {self.splitter!r} with {len(train)} training and "
                                              f"{len(val)} validation rows"))
            if np.intersect1d(train, val).size:
                raise ValueError(expected("splitter", "folds that keep training and validation rows apart",
                                          got=f"fold {i} of {self.splitter!r}, which puts some rows in both"))
            if self.groups is not None:
                shared = np.intersect1d(self.groups[train], self.groups[val])
                if shared.size:
                    raise ValueError(expected("groups", "each group on one side of every fold",
                                              got=f"fold {i} of {self.splitter!r} with group {shared[0].item()!r} in "
                                                  "both training and validation rows",
                                              hint="use a group splitter such as 'group' or GroupKFold"))

    def _check_cv_folds(self, cv_folds: int) -> None:
        # the limits of the group and stratified splitters, worded for glimr_cv (sklearn only warns about some)
        if isinstance(self.splitter, str) and "group" in self.splitter:
            n_groups = len(np.unique(self.groups))
            if cv_folds > n_groups:
                raise ValueError(expected("cv_folds", f"at most {n_groups} (the number of distinct groups) "
                                                      f"for splitter={self.splitter!r}", got=str(cv_folds)))
        if isinstance(self.splitter, str) and "stratified" in self.splitter:
            classes, counts = np.unique(self.target, return_counts=True)
            smallest = int(np.argmin(counts))
            if cv_folds > counts[smallest]:
                raise ValueError(
                    expected("cv_folds",
                             f"at most {counts[smallest]} (the rows of class {classes[smallest].item()!r} of "
                             f"{self._target_name}, its smallest) for splitter={self.splitter!r}", got=str(cv_folds)))

    def folds(self, cv_folds: int = DEFAULT_FOLDS) -> list[tuple[np.ndarray, np.ndarray]]:
        """The ``(train_rows, val_rows)`` index arrays of each of ``cv_folds`` folds.

        Computed on first use and cached; the arrays are read-only.

        Raises
        ------
        ValueError
            If the data cannot make ``cv_folds`` folds (too few rows, groups or
            members of a class), or a splitter object makes a different number.
        """
        check_int("cv_folds", cv_folds, 2, self.n)  # at most one row per fold
        cv_folds = int(cv_folds)
        if cv_folds in self._folds:
            return self._folds[cv_folds]
        self._check_cv_folds(cv_folds)
        splitter = self.splitter
        if isinstance(splitter, str):
            from sklearn import model_selection as ms

            splitter = {
                "kfold": lambda: ms.KFold(cv_folds, shuffle=True, random_state=self.seed),
                "stratified": lambda: ms.StratifiedKFold(cv_folds, shuffle=True, random_state=self.seed),
                "group": lambda: ms.GroupKFold(cv_folds),
                "stratified_group": lambda: ms.StratifiedGroupKFold(cv_folds, shuffle=True, random_state=self.seed),
            }[splitter]()
        else:
            # used as given: silently changing n_splits would change the validation size the user chose
            n_splits = splitter.get_n_splits(self._split_x(), self.target, self.groups)
            if n_splits != cv_folds:
                raise ValueError(expected("cv_folds", f"{n_splits}, the folds splitter {splitter!r} makes (it is used "
                                                      "as given)", got=str(cv_folds),
                                          hint=f"pass Search(cv_folds={n_splits}) or a splitter with "
                                               f"n_splits={cv_folds}"))
        try:
            folds = self._split(splitter)
        except ValueError as e:
            raise ValueError(f"splitter: {splitter!r} cannot split these {self.n} rows into {cv_folds} folds: {e}") from e
        self._check_folds(folds)
        self._folds[cv_folds] = folds
        return folds

    # -- nested cross-validation ---------------------------------------------------------
    def outer_folds(self, outer_folds: int = DEFAULT_FOLDS) -> list[tuple[np.ndarray, np.ndarray]]:
        """The ``(train_rows, test_rows)`` of the outer loop of nested CV: :meth:`folds` with ``outer_folds``.

        The same splitter, groups, stratification and seed as the folds of a
        search, so that no group is on both sides of an outer split either.

        Raises
        ------
        ValueError
            As :meth:`folds`, naming ``outer_folds``.
        """
        check_int("outer_folds", outer_folds, 2, self.n)
        if not isinstance(self.splitter, str):
            n_splits = self.splitter.get_n_splits(self._split_x(), self.target, self.groups)
            if n_splits != outer_folds:
                raise ValueError(expected("outer_folds", f"{n_splits}, the folds splitter {self.splitter!r} makes "
                                                         "(it is used as given)", got=str(outer_folds)))
        try:
            return self.folds(outer_folds)
        except ValueError as e:
            if not str(e).startswith("cv_folds:"):
                raise
            # the limits of the splitter, worded for the argument the user gave
            raise ValueError("outer_folds:" + str(e)[len("cv_folds:"):]) from None

    def subset(self, rows: Any) -> "KFoldLoader":
        """A loader over ``rows`` only, with the same settings (the inner loop of nested CV).

        Row ``i`` of the new loader is row ``rows[i]`` of this one: features,
        labels, groups and a stratify array are copied for those rows, and its
        folds split only them, with this loader's splitter, seed, ``preprocess``
        (fit on each of its folds' training rows), shuffling and batch sizes.
        The class is kept (a subclass's attributes are copied as they are, so
        row-aligned ones of its own are not sliced). This loader is unchanged.

        Parameters
        ----------
        rows : array-like of int, or of bool of shape (n,)
            Distinct row indices in ``[0, n)``, or a mask of the rows to keep.

        Returns
        -------
        KFoldLoader

        Raises
        ------
        ValueError
            On repeated or out-of-range indices, a mask of the wrong length, or
            fewer than 2 rows.
        TypeError
            On indices that are not integers.
        """
        index = np.asarray(rows)
        if index.dtype == bool:
            if index.shape != (self.n,):
                raise ValueError(expected("rows", f"a boolean mask of shape ({self.n},)", got=f"shape {index.shape}"))
            index = np.flatnonzero(index)
        if index.ndim != 1 or (index.size and not np.issubdtype(index.dtype, np.integer)):
            raise TypeError(expected("rows", "a 1-D array of row indices (ints) or a boolean mask",
                                     got=f"{index.dtype} of shape {index.shape}"))
        index = index.astype(np.int64)
        if index.size < 2:
            raise ValueError(expected("rows", "at least 2 rows to make folds", index.size))
        if index.min() < 0 or index.max() >= self.n:
            bad = index[(index < 0) | (index >= self.n)][0]
            raise ValueError(expected("rows", f"indices in [0, {self.n})", got=str(bad)))
        if np.unique(index).size != index.size:
            # a repeated row could land in training and validation of the same fold
            raise ValueError(expected("rows", "distinct indices", got=f"{index.size - np.unique(index).size} repeated"))

        new = copy.copy(self)
        new.features = ({k: v[index] for k, v in self.features.items()} if isinstance(self.features, dict)
                        else self.features[index])
        new.labels = {k: v[index] for k, v in self.labels.items()}
        new.groups = None if self.groups is None else self.groups[index]
        new.stratify = self.stratify if isinstance(self.stratify, str) else self.stratify[index]
        new.n = int(index.size)
        new._folds = {}  # the folds of these rows, not this loader's
        if not isinstance(self.splitter, str):
            new._check_deterministic()
        return new

    # -- preprocessing ---------------------------------------------------------------
    def fitted_preprocess(self, cv_index: int, cv_folds: int = DEFAULT_FOLDS):
        """``preprocess`` cloned and fit on fold ``cv_index``'s training rows (None without it).

        Use it to transform new data for that fold's model.
        """
        train, _ = self._fold(cv_index, cv_folds)
        return self.fit_preprocess(train)

    def fit_preprocess(self, train: np.ndarray):
        """``preprocess`` cloned and fit on ``train`` rows (None without it)."""
        if self.preprocess is None:
            return None
        from sklearn.base import clone

        y = self.target[train]
        if isinstance(self.features, dict):
            return {k: clone(t).fit(self.features[k][train], y) for k, t in self.preprocess.items()}
        return clone(self.preprocess).fit(self.features[train], y)

    def _transform(self, name: str, fitted, rows: np.ndarray) -> np.ndarray:
        out = fitted.transform(rows)
        if hasattr(out, "toarray"):
            out = out.toarray()  # tf.data slices dense arrays only
        out = np.asarray(out)
        if out.ndim == 0 or len(out) != self.n:
            raise ValueError(expected(name, f"a transform that keeps the {self.n} rows",
                                      got=f"one that returned shape {out.shape}"))
        return out

    def _fold_features(self, train: np.ndarray):
        fitted = self.fit_preprocess(train)
        if fitted is None:
            return self.features
        # transform is row-wise, so transforming all rows once equals transforming train and validation apart
        if isinstance(self.features, dict):
            return {k: self._transform(f"preprocess[{k!r}]", fitted[k], v) if k in fitted else v
                    for k, v in self.features.items()}
        return self._transform("preprocess", fitted, self.features)

    # -- datasets ----------------------------------------------------------------------
    def _fold(self, cv_index, cv_folds):
        folds = self.folds(cv_folds)
        check_int("cv_index", cv_index, 0, cv_folds - 1)
        return folds[int(cv_index)]

    def __call__(self, batch_size: int, cv_index: int = 0, cv_folds: int = DEFAULT_FOLDS):
        """Fold ``cv_index`` of ``cv_folds`` as ``(train_ds, val_ds)``.

        Elements are ``(features, {task: labels})``. Training batches are shuffled
        every epoch (if ``shuffle``) with a seed from ``(seed, cv_index)``;
        TensorFlow's global seed, which the search sets per trial, also enters
        the order. Validation batches (``val_batch_size``) keep row order.

        Raises
        ------
        ValueError
            On an out-of-range ``batch_size``, ``cv_index`` or ``cv_folds``.
        """
        check_int("batch_size", batch_size, 1)
        train, val = self._fold(cv_index, cv_folds)
        import tensorflow as tf

        # one tensor copy of all rows, shared by both datasets; batches gather rows by
        # index, so the shuffle buffer holds indices rather than a second copy of the rows
        data = tf.nest.map_structure(tf.convert_to_tensor, (self._fold_features(train), self.labels))
        seed = int(np.random.SeedSequence([self.seed, int(cv_index)]).generate_state(1)[0]) if self.shuffle else None
        return (_batches(self._train_order(train, batch_size, seed), data, batch_size),
                _batches(tf.data.Dataset.from_tensor_slices(val), data, self.val_batch_size or batch_size))

    def _train_order(self, rows: np.ndarray, batch_size: int, seed: int | None):
        """One epoch's training row indices, a ``tf.data.Dataset``; shuffled every epoch unless ``seed`` is None.

        A hook: a subclass may order rows by ``batch_size`` (see ``glimr_cv.survival``).
        """
        import tensorflow as tf

        ds = tf.data.Dataset.from_tensor_slices(rows)
        return ds if seed is None else ds.shuffle(len(rows), seed=seed, reshuffle_each_iteration=True)

    def __repr__(self) -> str:
        def named(arrays):
            return "{" + ", ".join(f"{k!r}: {_short(v)}" for k, v in arrays.items()) + "}"

        feats = named(self.features) if isinstance(self.features, dict) else _short(self.features)
        labels = named(self.labels)
        return (f"KFoldLoader(n={self.n}, features={feats}, labels={labels}, splitter={self.splitter!r}, "
                f"preprocess={self.preprocess!r}, seed={self.seed})")

    def train_labels(self, cv_index: int, cv_folds: int = DEFAULT_FOLDS) -> dict:
        """Task -> labels of fold ``cv_index``'s training rows (what fold-fitted losses and metrics are told)."""
        train, _ = self._fold(cv_index, cv_folds)
        return {task: values[train] for task, values in self.labels.items()}

    def features_of(self, rows: np.ndarray, fitted: Any = None) -> Any:
        """The features of ``rows`` (an array, or a dict of named arrays), through ``fitted`` when given."""
        def dense(out):
            return np.asarray(out.toarray() if hasattr(out, "toarray") else out)

        rows = np.asarray(rows, dtype=np.int64)
        if isinstance(self.features, dict):
            fitted = fitted or {}
            return {k: dense(fitted[k].transform(v[rows])) if k in fitted else v[rows] for k, v in self.features.items()}
        return self.features[rows] if fitted is None else dense(fitted.transform(self.features[rows]))

    def rows_dataset(self, rows: np.ndarray, batch_size: int, fitted: Any = None) -> "tf.data.Dataset":
        """``(features, {task: labels})`` batches of ``rows``, in order, features through ``fitted``.

        What a fold model trained behind ``fitted`` is scored or predicts on
        (nested CV's outer test rows, say).
        """
        check_int("batch_size", batch_size, 1)
        import tensorflow as tf

        rows = np.asarray(rows, dtype=np.int64)
        labels = {task: values[rows] for task, values in self.labels.items()}
        return tf.data.Dataset.from_tensor_slices((self.features_of(rows, fitted), labels)).batch(int(batch_size))

    def full(self, batch_size: int) -> "tf.data.Dataset":
        """All rows as one training dataset: the full-data mode of :meth:`SearchResults.refit`.

        Elements are ``(features, {task: labels})`` like a fold's training set, over
        all :attr:`n` rows; ``preprocess`` is cloned and fit on all rows (no
        validation rows are held out). Rows are ordered as a fold's training rows
        are (shuffled every epoch if ``shuffle``, or a subclass's order), with a
        seed from ``seed`` distinct from every fold's.

        Raises
        ------
        ValueError
            On a ``batch_size`` below 1.
        """
        check_int("batch_size", batch_size, 1)
        import tensorflow as tf

        rows = np.arange(self.n, dtype=np.int64)
        data = tf.nest.map_structure(tf.convert_to_tensor, (self._fold_features(rows), self.labels))
        # folds seed with (seed, cv_index), cv_index < n; (seed, n) is no fold's
        seed = int(np.random.SeedSequence([self.seed, self.n]).generate_state(1)[0]) if self.shuffle else None
        return _batches(self._train_order(rows, batch_size, seed), data, batch_size)


def _batches(order, data, size: int):
    """Batches of ``data`` rows, gathered by the row indices ``order`` yields."""
    import tensorflow as tf

    ds = order.batch(int(size)).map(lambda idx: tf.nest.map_structure(lambda a: tf.gather(a, idx), data),
                                    num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)
