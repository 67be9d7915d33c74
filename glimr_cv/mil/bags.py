"""Bags of instances split into k folds, fed to Keras as padded and masked batches.

NumPy only at import; TensorFlow loads when a loader builds its datasets.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np

from ..checks import check_int, expected, listed
from ..data.contract import DEFAULT_FOLDS
from ..data.folds import KFoldLoader, as_rows

__all__ = ["pack_bags", "kfold_bag_loader", "BagKFoldLoader", "BagFolds", "bag_rows"]


def _describe(value: Any) -> str:
    if isinstance(value, np.ndarray):
        return f"an array of dtype {value.dtype} and shape {value.shape}"
    return type(value).__name__


def pack_bags(bags: Any, bag_sizes: Any = None) -> tuple[np.ndarray, np.ndarray]:
    """Bags as one array of all their instances, bag after bag, and the offsets of each bag.

    Parameters
    ----------
    bags : sequence of numpy.ndarray, or numpy.ndarray
        One ``(n_i, ...)`` array of instances per bag (a list, tuple or object
        array), ``n_i >= 1`` and the same instance shape ``...`` in every bag.
        With ``bag_sizes``: one ``(sum(n_i), ...)`` array of all instances, bag
        after bag, which is kept as given (not copied) when contiguous.
    bag_sizes : array-like of int, optional
        ``n_i``, the number of instances of each bag, when ``bags`` is one array.

    Returns
    -------
    instances : numpy.ndarray
        ``(sum(n_i), ...)``, C-contiguous.
    offsets : numpy.ndarray
        int64, ``(n_bags + 1,)``: bag ``i`` is ``instances[offsets[i]:offsets[i + 1]]``.

    Raises
    ------
    TypeError, ValueError
        Naming ``bags``, ``bags[i]`` or ``bag_sizes``: an empty bag, instance
        shapes that differ between bags, non-numeric instances, sizes that do not
        add up to the instances.
    """
    if bag_sizes is not None:
        sizes = np.asarray(bag_sizes)
        if sizes.ndim != 1 or not (np.issubdtype(sizes.dtype, np.integer) or sizes.size == 0):
            raise TypeError(expected("bag_sizes", "a 1-D array of ints, one per bag", got=_describe(sizes)))
        if (sizes < 1).any():
            i = int(np.flatnonzero(sizes < 1)[0])
            raise ValueError(expected(f"bag_sizes[{i}]", "an int >= 1 (a bag holds at least one instance)",
                                      sizes[i].item()))
        if isinstance(bags, (list, tuple)) or not hasattr(bags, "shape"):
            raise TypeError(expected("bags", "one array of all instances, bag after bag, when bag_sizes is given",
                                     got=_describe(bags)))
        instances = _instances("bags", np.asarray(bags))
        if sizes.sum() != len(instances):
            raise ValueError(expected("bag_sizes", f"sizes that add up to the {len(instances)} instances of bags",
                                      got=f"{len(sizes)} sizes that add up to {int(sizes.sum())}"))
        offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        return instances, offsets

    if isinstance(bags, np.ndarray) and bags.dtype != object:
        # (n, n_i, ...) could as well be all instances with bag_sizes forgotten: refuse to guess
        raise TypeError(expected("bags", "a list of arrays, one (n_i, ...) array of instances per bag, or one array "
                                         "of all instances with bag_sizes=",
                                 got=f"{_describe(bags)} and bag_sizes=None",
                                 hint="for bags of equal size pass list(bags)"))
    if not isinstance(bags, (list, tuple, np.ndarray)):
        raise TypeError(expected("bags", "a list of arrays, one (n_i, ...) array of instances per bag",
                                 got=_describe(bags)))
    items = list(bags.ravel()) if isinstance(bags, np.ndarray) else list(bags)
    arrays = []
    for i, bag in enumerate(items):
        array = _instances(f"bags[{i}]", bag)
        if arrays and array.shape[1:] != arrays[0].shape[1:]:
            raise ValueError(expected(f"bags[{i}]", f"instances of shape {arrays[0].shape[1:]} like bags[0]",
                                      array.shape[1:]))
        arrays.append(array)
    if not arrays:
        raise ValueError(expected("bags", "at least 2 bags to make folds", 0))
    sizes = np.array([len(a) for a in arrays], dtype=np.int64)
    # one array, not a list of them: Ray then ships one buffer, zero-copy, however many bags there are
    instances = np.ascontiguousarray(np.concatenate(arrays))
    return instances, np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)


def _non_finite(values: np.ndarray) -> np.ndarray:
    """Indices of the rows of ``values`` holding NaN or infinity (one pass without a mask when there are none)."""
    if np.isfinite(np.sum(values, dtype=np.float64)):
        return np.empty(0, dtype=np.int64)
    return np.flatnonzero(~np.isfinite(values.reshape(len(values), -1)).all(axis=1))


def check_finite_tiles(values: np.ndarray, what: str = "", rows: np.ndarray | None = None) -> None:
    """Refuse tiles whose features hold NaN or infinity, naming them.

    One such tile makes its bag's attention, prediction and loss NaN: the fold
    would fail on a NaN loss that names no slide. ``what`` prefixes the message;
    ``rows`` are the tiles read (their indices in the file), when not all of them.

    Raises
    ------
    ValueError
        ``"slide 'p7' (/data/p7.h5): expected finite features, but 2 of 2000 tiles hold NaN or infinity (tiles [5, 17]) ..."``.
    """
    bad = _non_finite(values)
    if not len(bad):
        return
    shown = listed((bad if rows is None else np.asarray(rows)[bad]).tolist(), 10, ", ")
    raise ValueError(f"{what + ': ' if what else ''}expected finite features, but {len(bad)} of {len(values)} tiles "
                     f"{'read ' if rows is not None else ''}hold NaN or infinity (tiles [{shown}]); drop those tiles "
                     "from the file (a feature extractor's blank or failed tiles, say)")


def check_finite_bags(instances: np.ndarray, offsets: np.ndarray) -> None:
    """Refuse packed bags (:func:`pack_bags`) whose instances hold NaN or infinity, naming each bag and instance.

    Raises
    ------
    ValueError
        ``"bags: expected finite instances, but 2 bags hold NaN or infinity: bags[3] (instances [0, 5]); ..."``.
    """
    bad = _non_finite(instances)
    if not len(bad):
        return
    owner = np.searchsorted(offsets, bad, side="right") - 1
    found = {}
    for row, bag in zip(bad.tolist(), owner.tolist()):
        found.setdefault(bag, []).append(row - int(offsets[bag]))
    named = listed(f"bags[{bag}] (instances [{listed(rows, 10, ', ')}])" for bag, rows in found.items())
    raise ValueError(f"bags: expected finite instances, but {len(found)} bag{'s' if len(found) > 1 else ''} "
                     f"hold{'' if len(found) > 1 else 's'} NaN or infinity: {named}; drop those "
                     "instances (one NaN instance makes its bag's prediction and loss NaN)")


def _instances(name: str, value: Any) -> np.ndarray:
    """``value`` as an array of at least one instance, of numbers."""
    try:
        array = np.asarray(value)
    except ValueError:
        raise ValueError(expected(name, "an (n_i, ...) array of instances of one shape",
                                  got=f"{_describe(value)} whose instances differ in shape")) from None
    if array.ndim == 0:
        raise ValueError(expected(name, "an (n_i, ...) array of instances", got=f"a scalar {value!r}"))
    if not np.issubdtype(array.dtype, np.number):
        raise TypeError(expected(name, "instances of numbers", got=_describe(array)))
    if len(array) == 0:
        raise ValueError(expected(name, "a bag of at least 1 instance", got=_describe(array)))
    return np.ascontiguousarray(array)


def kfold_bag_loader(
    bags: Any,
    labels: dict,
    groups: Any = None,
    splitter: Any = None,
    preprocess: Any = None,
    shuffle: bool = True,
    seed: int = 0,
    val_batch_size: int | None = None,
    stratify: Any = None,
    max_instances: int | None = None,
    bag_sizes: Any = None,
    survival: str | None = None,
    time_bins: int = 1,
) -> "BagKFoldLoader":
    """A loader for :class:`glimr_cv.Search` over bags of instances (multiple-instance learning).

    The bags are the rows that are split into folds, with the guarantees of
    :func:`glimr_cv.kfold_loader`: folds fixed by ``seed``, no group (patient) in
    both the training and validation bags of a fold, the instances shipped to Ray
    workers once (one array, zero-copy), and ``preprocess`` fit on each fold's
    training instances only.

    Parameters
    ----------
    bags : sequence of numpy.ndarray, or numpy.ndarray
        One ``(n_i, ...)`` array of instances per bag (tiles, cells: feature
        vectors or small images), ``n_i >= 1``; or, with ``bag_sizes``, one array
        of all instances, bag after bag (see :func:`pack_bags`).
    labels : dict of str to numpy.ndarray
        Task name -> ``(n_bags, ...)`` labels, one per bag, keyed like the model's outputs.
    groups : array-like of shape (n_bags,), optional
        Group (patient) of each bag; required by the group splitters.
    splitter : {"kfold", "stratified", "group", "stratified_group"} or sklearn splitter, optional
        As in :func:`glimr_cv.kfold_loader`, over bags; default ``"kfold"``
        (with ``survival``, the folds are stratified on the event instead).
    preprocess : sklearn transformer, optional
        Cloned and fit on the instances of each fold's training bags, as
        ``fit(X, y)`` with ``X`` of shape ``(instances, features)`` (an
        instance's values flattened) and ``y`` its bag's ``stratify`` label, then
        applied to every instance. Output of the instance size keeps the instance
        shape; another size makes instances ``(k,)`` vectors (PCA, say).
    shuffle : bool
        Shuffle the training bags every epoch (and draw new instances with
        ``max_instances``).
    seed : int
        Seed of the folds, of the training order and of the instances drawn.
    val_batch_size : int, optional
        Validation batch size, in bags; defaults to ``batch_size``.
    stratify : str or array-like of shape (n_bags,), optional
        As in :func:`glimr_cv.kfold_loader`, per bag.
    max_instances : int, optional
        At most this many instances of a training bag per epoch, drawn at random
        (kept in bag order); validation bags are always whole.
    bag_sizes : array-like of int, optional
        Instances per bag, when ``bags`` is one array of all instances.
    survival : str, optional
        The task whose labels are survival labels ``(n_bags, 2)``, time and event
        (:func:`glimr_cv.survival.survival_labels`): the folds are then stratified
        on its event (``StratifiedGroupKFold`` with ``groups``) and each training
        batch holds events, as :func:`glimr_cv.survival.kfold_survival_loader`
        does for rows; a fold without events is refused.
    time_bins : int
        With ``survival``, also stratify on this many quantiles of the time.

    Returns
    -------
    BagKFoldLoader
        ``loader(batch_size, cv_index=0, cv_folds=5) -> (train_ds, val_ds)``, batches of
        ``batch_size`` bags as ``({"instances": (B, n, ...), "mask": (B, n) bool}, {task: labels})``,
        padded to the largest bag of the batch (see :class:`BagKFoldLoader`).

    Raises
    ------
    TypeError, ValueError
        Naming the argument at fault (``bags[i]`` for one bag).
    """
    return BagKFoldLoader(bags, labels, groups=groups, splitter=splitter, preprocess=preprocess, shuffle=shuffle,
                          seed=seed, val_batch_size=val_batch_size, stratify=stratify, max_instances=max_instances,
                          bag_sizes=bag_sizes, survival=survival, time_bins=time_bins)


def bag_rows(n: int, labels: Any, groups: Any = None, splitter: Any = None, shuffle: bool = True, seed: int = 0,
             val_batch_size: int | None = None, stratify: Any = None, survival: str | None = None,
             time_bins: int = 1) -> KFoldLoader:
    """The folds over ``n`` bags: a :class:`glimr_cv.KFoldLoader` whose rows are the bag indices ``0..n-1``.

    With ``survival`` (a task of ``labels`` holding ``(n, 2)`` time and event),
    a :class:`glimr_cv.survival.SurvivalKFoldLoader`: folds stratified on the
    event (and ``time_bins`` quantiles of the time), batches that hold events.
    Lengths are checked per bag, so that messages count bags.
    """
    named = []
    if isinstance(labels, dict):  # anything else: KFoldLoader says what labels must be
        labels = {k: as_rows(f"labels[{k!r}]", v) if isinstance(k, str) else v for k, v in labels.items()}
        named = [(f"labels[{k!r}]", v) for k, v in labels.items() if isinstance(k, str)]
    if groups is not None:
        groups = as_rows("groups", groups)
        named.append(("groups", groups))
    if stratify is not None and not isinstance(stratify, str):
        stratify = as_rows("stratify", stratify)
        named.append(("stratify", stratify))
    for name, array in named:
        if len(array) != n:
            raise ValueError(expected(name, f"{n} rows, one per bag", len(array)))
    index = np.arange(n, dtype=np.int64)
    if survival is None:
        return KFoldLoader(index, labels, groups=groups, splitter="kfold" if splitter is None else splitter,
                           shuffle=shuffle, seed=seed, val_batch_size=val_batch_size, stratify=stratify)
    from ..survival.data import SurvivalKFoldLoader

    if not isinstance(labels, dict) or survival not in labels:
        raise ValueError(expected("survival", f"a task of labels, one of {sorted(labels) if isinstance(labels, dict) else []}",
                                  survival))
    if splitter is not None or stratify is not None:
        raise ValueError(f"splitter: survival={survival!r} stratifies the folds on the event (and time_bins), so "
                         f"expected splitter=None and stratify=None, but got splitter={splitter!r}, "
                         f"stratify={'an array' if stratify is not None else None}")
    y = np.asarray(labels[survival])
    if y.ndim != 2 or y.shape[1] != 2:
        raise ValueError(expected(f"labels[{survival!r}]",
                                  f"survival labels of shape ({n}, 2), time and event "
                                  "(glimr_cv.survival.survival_labels)", got=f"shape {y.shape}"))
    others = {k: v for k, v in labels.items() if k != survival}
    return SurvivalKFoldLoader(index, y[:, 0], y[:, 1], task=survival, labels=others, groups=groups, shuffle=shuffle,
                               seed=seed, val_batch_size=val_batch_size, time_bins=time_bins)


class BagFolds:
    """What a loader over bags shares: its folds are those of :attr:`rows`, a ``KFoldLoader`` of bag indices.

    A subclass sets ``rows`` (see :func:`bag_rows`); the labels, groups,
    stratification, seeds and folds below are that loader's, by bag.
    """

    labels = property(lambda self: self.rows.labels, doc="Task name -> ``(n, ...)`` labels, one row per bag.")
    groups = property(lambda self: self.rows.groups, doc="Group (patient) of each bag, or None.")
    splitter = property(lambda self: self.rows.splitter, doc="The splitter, as given or chosen.")
    seed = property(lambda self: self.rows.seed, doc="Seed of the folds, orders and draws.")
    shuffle = property(lambda self: self.rows.shuffle, doc="Whether training bags are shuffled every epoch.")
    val_batch_size = property(lambda self: self.rows.val_batch_size, doc="Validation batch size in bags, or None.")
    target = property(lambda self: self.rows.target, doc="The labels that stratify the folds, one per bag.")

    def folds(self, cv_folds: int = DEFAULT_FOLDS) -> list[tuple[np.ndarray, np.ndarray]]:
        """The ``(train_bags, val_bags)`` index arrays of each of ``cv_folds`` folds.

        Computed on first use and cached (read-only), as :meth:`KFoldLoader.folds`.

        Raises
        ------
        ValueError
            If the bags cannot make ``cv_folds`` folds (too few bags, groups or
            members of a class), or a splitter object makes a different number.
        """
        return self.rows.folds(cv_folds)

    def outer_folds(self, outer_folds: int = DEFAULT_FOLDS) -> list[tuple[np.ndarray, np.ndarray]]:
        """``(train_bags, test_bags)`` of nested CV's outer loop, as :meth:`KFoldLoader.outer_folds` over bags."""
        return self.rows.outer_folds(outer_folds)

    def train_labels(self, cv_index: int, cv_folds: int = DEFAULT_FOLDS) -> dict:
        """Task -> labels of fold ``cv_index``'s training bags."""
        return self.rows.train_labels(cv_index, cv_folds)

    def _subset_rows(self, rows: Any) -> tuple[Any, np.ndarray]:
        """``(a copy of this loader, the chosen bag indices)`` for :meth:`subset`, its rows re-indexed from 0."""
        new_rows = self.rows.subset(rows)
        index = np.asarray(new_rows.features, dtype=np.int64)  # the chosen bags, checked by KFoldLoader.subset
        new_rows.features = np.arange(len(index), dtype=np.int64)  # rows are bag indices into the new loader
        new = copy.copy(self)
        new.rows, new.n = new_rows, len(index)
        return new, index


class BagKFoldLoader(BagFolds):
    """Bags of instances split into k folds; build one with :func:`kfold_bag_loader`.

    Calling it returns one fold's ``(train_ds, val_ds)``, ``tf.data`` datasets
    whose elements are ``(features, {task: labels})`` with::

        features = {"instances": (B, n, ...) float, "mask": (B, n) bool}

    ``B`` bags per batch, ``n`` the size of the largest bag in the batch (at most
    ``max_instances`` in training); bag ``b``'s instances are
    ``instances[b, :n_b]``, in their order, ``mask[b, :n_b]`` is True, and the
    rest is zero padding with a False mask. A model takes them with
    ``keras.Input((None, ...), name="instances")`` and
    ``keras.Input((None,), dtype="bool", name="mask")``. Under XLA (Keras's
    ``jit_compile="auto"`` on a GPU) each new ``n`` compiles the step once more;
    ``max_instances`` bounds how many shapes training batches have.

    The folds are those of :attr:`rows`, a :class:`glimr_cv.KFoldLoader` with one
    row per bag, whose datasets of bag indices are turned into batches of bags:
    fold ``i``, the training order and their seeds are exactly a
    ``kfold_loader``'s over the bags.

    Attributes
    ----------
    instances : numpy.ndarray
        ``(n_instances, ...)``, every bag's instances, bag after bag.
    offsets : numpy.ndarray
        int64, ``(n + 1,)``: bag ``i`` is ``instances[offsets[i]:offsets[i + 1]]``.
    n : int
        Number of bags.
    rows : KFoldLoader
        The folds over bags: its features are the bag indices ``0..n-1``.
    """

    def __init__(self, bags, labels, groups=None, splitter=None, preprocess=None, shuffle=True, seed=0,
                 val_batch_size=None, stratify=None, max_instances=None, bag_sizes=None, survival=None, time_bins=1):
        self.instances, self.offsets = pack_bags(bags, bag_sizes)
        check_finite_bags(self.instances, self.offsets)
        self.offsets.setflags(write=False)
        self.n = len(self.offsets) - 1
        if self.n < 2:
            raise ValueError(expected("bags", "at least 2 bags to make folds", self.n))
        self.rows = bag_rows(self.n, labels, groups=groups, splitter=splitter, shuffle=shuffle, seed=seed,
                             val_batch_size=val_batch_size, stratify=stratify, survival=survival, time_bins=time_bins)
        self.preprocess = self._check_preprocess(preprocess)
        check_int("max_instances", max_instances, 1, allow_none=True)
        self.max_instances = None if max_instances is None else int(max_instances)

    @staticmethod
    def _check_preprocess(preprocess):
        if preprocess is None:
            return None
        from sklearn.base import clone

        if isinstance(preprocess, dict):
            raise TypeError(expected("preprocess", "one sklearn transformer for the instances", got="a dict"))
        if not (callable(getattr(preprocess, "fit", None)) and callable(getattr(preprocess, "transform", None))):
            raise TypeError(expected("preprocess", "an sklearn transformer or Pipeline with fit and transform",
                                     preprocess))
        clone(preprocess)  # fails now, in the driver, if it cannot be cloned per fold
        return preprocess

    @property
    def sizes(self) -> np.ndarray:
        """Instances per bag, int64 ``(n,)``."""
        return np.diff(self.offsets)

    def bag(self, i: int, cv_index: int | None = None, cv_folds: int = DEFAULT_FOLDS) -> np.ndarray:
        """The instances of bag ``i``; with ``cv_index``, as fold ``cv_index``'s model sees them.

        That is, transformed by the fold's ``preprocess``, which is fit anew on each call.

        Raises
        ------
        ValueError
            On an out-of-range ``i``, ``cv_index`` or ``cv_folds``.
        """
        check_int("i", i, 0, self.n - 1)
        instances = self.instances[self.offsets[i] : self.offsets[i + 1]]
        if cv_index is None or self.preprocess is None:
            return instances
        return self._transform(self.fitted_preprocess(cv_index, cv_folds), instances)

    # -- preprocessing -------------------------------------------------------------------
    def fitted_preprocess(self, cv_index: int, cv_folds: int = DEFAULT_FOLDS):
        """``preprocess`` cloned and fit on fold ``cv_index``'s training instances (None without it).

        It takes instances flattened to ``(instances, features)``; :meth:`bag`
        applies it to one bag.
        """
        folds = self.folds(cv_folds)
        check_int("cv_index", cv_index, 0, cv_folds - 1)
        return self.fit_preprocess(folds[int(cv_index)][0])

    def fit_preprocess(self, bags: np.ndarray):
        """``preprocess`` fit on the instances of ``bags`` (None without it)."""
        if self.preprocess is None:
            return None
        from sklearn.base import clone

        member = np.zeros(self.n, dtype=bool)
        member[bags] = True
        chosen = np.repeat(member, self.sizes)  # the instances of those bags
        y = np.repeat(self.target[member], self.sizes[member], axis=0)
        return clone(self.preprocess).fit(self._flat(self.instances)[chosen], y)

    def _flat(self, instances: np.ndarray) -> np.ndarray:
        return instances.reshape(len(instances), -1)  # sklearn takes 2-D; a view of contiguous instances

    def _transform(self, fitted, instances: np.ndarray) -> np.ndarray:
        out = fitted.transform(self._flat(instances))
        if hasattr(out, "toarray"):
            out = out.toarray()  # tf.data slices dense arrays only
        out = np.asarray(out)
        if out.ndim != 2 or len(out) != len(instances):
            raise ValueError(expected("preprocess", f"a transform that keeps the {len(instances)} instances as rows",
                                      got=f"one that returned shape {out.shape}"))
        shape = self.instances.shape[1:]
        return out.reshape(len(out), *shape) if out.shape[1] == int(np.prod(shape)) else out

    def _fold_instances(self, train: np.ndarray) -> np.ndarray:
        fitted = self.fit_preprocess(train)
        # transform is per instance, so transforming all at once equals transforming train and validation apart
        return self.instances if fitted is None else self._transform(fitted, self.instances)

    # -- datasets ------------------------------------------------------------------------
    def __call__(self, batch_size: int, cv_index: int = 0, cv_folds: int = DEFAULT_FOLDS):
        """Fold ``cv_index`` of ``cv_folds`` as ``(train_ds, val_ds)``, batches of ``batch_size`` bags.

        Elements are ``({"instances", "mask"}, {task: labels})`` (see the class).
        Training bags are shuffled every epoch (if ``shuffle``) as
        :func:`glimr_cv.kfold_loader` shuffles rows; validation bags keep their order.

        Raises
        ------
        ValueError
            On an out-of-range ``batch_size``, ``cv_index`` or ``cv_folds``.
        """
        train_ds, val_ds = self.rows(batch_size, cv_index=cv_index, cv_folds=cv_folds)
        import tensorflow as tf

        train = self.folds(cv_folds)[int(cv_index)][0]
        # one tensor for both datasets: each conversion copies all the features
        instances = tf.convert_to_tensor(self._fold_instances(train))
        return (self._bags(train_ds, instances, self._draw_seed(int(cv_index))),
                self._bags(val_ds, instances, None))

    def full(self, batch_size: int):
        """All bags as one training dataset: the full-data mode of :meth:`SearchResults.refit`.

        As :meth:`KFoldLoader.full`, over bags; ``preprocess`` is fit on all instances.

        Raises
        ------
        ValueError
            On a ``batch_size`` below 1.
        """
        ds = self.rows.full(batch_size)
        return self._bags(ds, self._fold_instances(np.arange(self.n)), self._draw_seed(self.n))

    # -- nested cross-validation and scoring ---------------------------------------------
    def subset(self, rows: Any) -> "BagKFoldLoader":
        """A loader over bags ``rows`` only (their instances copied), with the same settings.

        Bag ``i`` of the new loader is bag ``rows[i]`` of this one. Raises as
        :meth:`KFoldLoader.subset`.
        """
        new, index = self._subset_rows(rows)
        new.instances, new.offsets = pack_bags([self.instances[self.offsets[i]: self.offsets[i + 1]] for i in index])
        new.offsets.setflags(write=False)
        return new

    def rows_dataset(self, rows: np.ndarray, batch_size: int, fitted: Any = None):
        """Batches of whole bags ``rows``, in order, instances through ``fitted``: scoring and prediction."""
        import tensorflow as tf

        check_int("batch_size", batch_size, 1)
        rows = np.asarray(rows, dtype=np.int64)
        labels = {task: values[rows] for task, values in self.labels.items()}
        index = tf.data.Dataset.from_tensor_slices((rows, labels)).batch(int(batch_size))
        return self._bags(index, self.instances if fitted is None else self._transform(fitted, self.instances), None)

    def _draw_seed(self, key: int) -> int:
        # folds draw with (seed, cv_index, 1) and the full data with (seed, n, 1): no stream is another's,
        # nor the shuffle's (seed, key)
        return int(np.random.SeedSequence([self.seed, key, 1]).generate_state(1)[0])

    def _bags(self, index_ds, instances, draw_seed: int | None):
        """Batches of bag indices (and labels) made batches of padded, masked bags, gathered from ``instances``."""
        import tensorflow as tf

        values = tf.convert_to_tensor(instances)  # a no-op on a tensor
        starts = tf.constant(self.offsets[:-1])
        sizes = tf.constant(self.sizes)
        cap = self.max_instances if draw_seed is not None else None

        def padded(idx, labels, seed=None):
            first = tf.gather(starts, idx)
            rows = tf.ragged.range(first, first + tf.gather(sizes, idx))  # instance rows of each bag
            if cap is not None:
                rows = _draw(rows, cap, seed)
            bags = tf.RaggedTensor.from_row_lengths(tf.gather(values, rows.flat_values), rows.row_lengths())
            x = bags.to_tensor()  # zero padding up to the batch's largest bag
            mask = tf.sequence_mask(bags.row_lengths(), maxlen=tf.shape(x, out_type=tf.int64)[1])
            return {"instances": x, "mask": mask}, labels

        if cap is None:
            ds = index_ds.map(padded, num_parallel_calls=tf.data.AUTOTUNE)
        else:
            # one random draw per batch, from a stream tf.data renews every epoch (when shuffling), like the order
            draws = tf.data.Dataset.random(seed=draw_seed, rerandomize_each_iteration=self.shuffle)
            ds = tf.data.Dataset.zip(index_ds, draws).map(
                lambda element, r: padded(*element, seed=tf.stack([r, tf.constant(0, tf.int64)])),
                num_parallel_calls=tf.data.AUTOTUNE)
        return ds.prefetch(tf.data.AUTOTUNE)

    def __repr__(self) -> str:
        labels = "{" + ", ".join(f"{k!r}: {v.dtype}{list(v.shape[1:])}" for k, v in self.labels.items()) + "}"
        sizes = self.sizes
        return (f"BagKFoldLoader(n={self.n}, instances={self.instances.dtype}{list(self.instances.shape[1:])} "
                f"x {len(self.instances)}, bag sizes {sizes.min()}..{sizes.max()}, labels={labels}, "
                f"splitter={self.splitter!r}, preprocess={self.preprocess!r}, seed={self.seed})")


def _draw(rows, cap: int, seed):
    """At most ``cap`` of each bag's instance rows (a ragged ``(B, None)`` tensor), at random, in their order."""
    import tensorflow as tf

    bag = rows.value_rowids()
    keys = tf.random.stateless_uniform(tf.shape(bag), seed=seed, dtype=tf.float64)
    order = tf.argsort(tf.cast(bag, tf.float64) + keys)  # bag by bag, random within a bag
    rank = tf.range(tf.size(bag, out_type=tf.int64)) - tf.gather(rows.row_starts(), tf.gather(bag, order))
    kept = tf.sort(tf.boolean_mask(order, rank < cap))  # back to bag by bag, in instance order
    return tf.RaggedTensor.from_value_rowids(tf.gather(rows.flat_values, kept), tf.gather(bag, kept),
                                             nrows=rows.nrows())
