"""kfold_loader: fold partitions, leakage-free preprocessing, datasets and errors (no Ray runtime)."""

import collections
import pickle
import re

import numpy as np
import pytest
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.model_selection import GroupKFold, KFold, StratifiedKFold
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from glimr_cv.data.folds import KFoldLoader, check_loader, kfold_loader

N = 240


def _data(n=N, seed=0):
    """Features whose column 0 is the row id, imbalanced classes and 30 groups."""
    rng = np.random.default_rng(seed)
    x = np.column_stack([np.arange(n), rng.normal(5.0, 2.0, (n, 3))]).astype("float32")
    y = rng.choice(3, size=n, p=[0.6, 0.3, 0.1]).astype("int32")
    groups = rng.integers(0, 30, n)
    return x, y, groups


def _ids(ds):
    """Row ids of a dataset over ``_data`` features (column 0), in order."""
    return np.concatenate([x.numpy()[:, 0] for x, _ in ds]).astype(int)


def _same(a, b):
    return len(a) == len(b) and all(np.array_equal(t1, t2) and np.array_equal(v1, v2) for (t1, v1), (t2, v2) in zip(a, b))


@pytest.mark.parametrize("splitter", ["kfold", "stratified", "group", "stratified_group"])
def test_every_row_is_in_exactly_one_validation_fold(splitter):
    x, y, groups = _data()
    loader = kfold_loader(x, {"y": y}, groups=groups if "group" in splitter else None, splitter=splitter)
    folds = loader.folds(4)
    assert len(folds) == 4
    counts = np.bincount(np.concatenate([val for _, val in folds]), minlength=N)
    assert (counts == 1).all()
    for train, val in folds:
        assert np.array_equal(np.sort(np.concatenate([train, val])), np.arange(N))


@pytest.mark.parametrize("splitter", ["group", "stratified_group"])
def test_groups_never_straddle_folds(splitter):
    x, y, groups = _data()
    for train, val in kfold_loader(x, {"y": y}, groups=groups, splitter=splitter).folds(5):
        assert not set(groups[train]) & set(groups[val])


@pytest.mark.filterwarnings("ignore:The groups parameter is ignored")  # sklearn's own hint, also seen by users
def test_a_splitter_that_ignores_groups_is_caught_by_the_group_check():
    x, y, groups = _data()
    with pytest.raises(ValueError, match=r"groups: expected .*, but got fold 0 of KFold\(.*\) with group .* in both training and validation rows"):
        kfold_loader(x, {"y": y}, groups=groups, splitter=KFold(4, shuffle=True, random_state=0))


@pytest.mark.parametrize("stratify", [None, "cls", "array"])
def test_stratified_validation_folds_keep_class_proportions(stratify):
    x, y, _ = _data()
    labels = {"y": y[:, None]} if stratify is None else {"other": np.zeros(N, "float32"), "cls": y}
    k = 5
    loader = kfold_loader(x, labels, splitter="stratified", stratify=y if stratify == "array" else stratify)
    for _, val in loader.folds(k):
        for c, total in collections.Counter(y.tolist()).items():
            assert abs(np.sum(y[val] == c) - total / k) <= 1


def test_folds_are_the_same_on_every_call_and_across_loaders_with_one_seed():
    x, y, groups = _data()
    for splitter in ["kfold", "stratified", "stratified_group"]:
        g = groups if "group" in splitter else None
        a = kfold_loader(x, {"y": y}, groups=g, splitter=splitter, seed=3)
        b = kfold_loader(x, {"y": y}, groups=g, splitter=splitter, seed=3)
        assert _same(a.folds(4), b.folds(4))
        assert not _same(a.folds(4), kfold_loader(x, {"y": y}, groups=g, splitter=splitter, seed=4).folds(4))
    a = kfold_loader(x, {"y": y}, seed=3)
    b = kfold_loader(x, {"y": y}, seed=3)
    for i in range(3):
        first = np.sort(_ids(a(16, cv_index=i, cv_folds=3)[1]))
        assert np.array_equal(first, np.sort(_ids(a(16, cv_index=i, cv_folds=3)[1])))
        assert np.array_equal(first, np.sort(_ids(b(16, cv_index=i, cv_folds=3)[1])))
        assert np.array_equal(first, a.folds(3)[i][1])


def test_a_splitter_with_different_folds_on_each_call_is_rejected_at_construction():
    x, y, _ = _data()
    message = ("splitter: expected a splitter that gives the same folds on each call, but got "
               "KFold(n_splits=5, random_state=None, shuffle=True), which gives different folds on each call; "
               "set random_state to an int (or shuffle=False) so that fold i is the same partition for every configuration")
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        kfold_loader(x, {"y": y}, splitter=KFold(shuffle=True))


def test_a_splitter_object_is_used_as_given_and_its_n_splits_must_match():
    x, y, _ = _data()
    splitter = StratifiedKFold(4, shuffle=True, random_state=7)
    loader = kfold_loader(x, {"y": y}, splitter=splitter)
    expected = [(t, v) for t, v in splitter.split(x, y)]
    assert _same(loader.folds(4), expected)
    with pytest.raises(ValueError, match=re.escape(
            "cv_folds: expected 4, the folds splitter StratifiedKFold(n_splits=4, random_state=7, shuffle=True) makes "
            "(it is used as given), but got 5; pass Search(cv_folds=4) or a splitter with n_splits=5")):
        loader(16, cv_index=0, cv_folds=5)
    with pytest.raises(ValueError, match=(
            rf"splitter: GroupKFold\(n_splits=4.*\) cannot split these {N} rows: The 'groups' parameter should not be None")):
        kfold_loader(x, {"y": y}, splitter=GroupKFold(4))


class Recorder(BaseEstimator, TransformerMixin):
    """Centers columns 1: on the rows it was fit on; records their ids (column 0) in a class list."""

    fits = []

    def fit(self, X, y=None):
        Recorder.fits.append(np.asarray(X)[:, 0].astype(int))
        self.mean_ = np.asarray(X)[:, 1:].mean(axis=0)
        return self

    def transform(self, X):
        X = np.asarray(X)
        return np.column_stack([X[:, 0], X[:, 1:] - self.mean_]).astype("float32")


@pytest.mark.parametrize("pipeline", [False, True])
def test_the_transformer_is_fit_on_the_folds_training_rows_only(pipeline):
    x, y, _ = _data()
    recorder = Recorder()
    preprocess = Pipeline([("rec", recorder)]) if pipeline else recorder
    loader = kfold_loader(x, {"y": y}, splitter="stratified", preprocess=preprocess)
    for i in range(3):
        Recorder.fits.clear()
        train_ds, val_ds = loader(32, cv_index=i, cv_folds=3)
        train, val = loader.folds(3)[i]
        assert len(Recorder.fits) == 1  # one fit per fold, on a clone
        assert np.array_equal(np.sort(Recorder.fits[0]), train)
        assert not set(Recorder.fits[0]) & set(val)
        # validation rows are transformed with training statistics only
        val_x = np.concatenate([b.numpy() for b, _ in val_ds])
        np.testing.assert_allclose(val_x[:, 1:], x[val, 1:] - x[train, 1:].mean(axis=0), rtol=1e-5, atol=1e-5)
        assert np.array_equal(np.sort(_ids(train_ds)), train)
    assert not hasattr(recorder, "mean_")  # the user's object itself is never fit
    fitted = loader.fitted_preprocess(1, cv_folds=3)  # the fold's own transformer, for new data
    recorded = fitted[0] if pipeline else fitted
    np.testing.assert_allclose(recorded.mean_, x[loader.folds(3)[1][0], 1:].mean(axis=0), rtol=1e-5)


def test_multi_task_labels_come_out_keyed_by_task_with_their_shapes():
    x, y, _ = _data()
    labels = {"digit": y, "parity": (y % 2).astype("float32")[:, None], "vec": np.ones((N, 3), "float32")}
    train_ds, val_ds = kfold_loader(x, labels, val_batch_size=100)(batch_size=32, cv_index=2, cv_folds=4)
    xb, yb = next(iter(train_ds))
    assert xb.shape == (32, 4)
    assert set(yb) == {"digit", "parity", "vec"}
    assert yb["digit"].shape == (32,) and yb["digit"].dtype.name == "int32"
    assert yb["parity"].shape == (32, 1) and yb["vec"].shape == (32, 3)
    assert [b[0].shape[0] for b in train_ds] == [32] * 5 + [20]  # 180 training rows
    assert [b[0].shape[0] for b in val_ds] == [60]  # one validation batch of val_batch_size=100
    ids, digits = [], []
    for xb, yb in val_ds:  # labels stay aligned with their rows
        ids.append(xb.numpy()[:, 0].astype(int))
        digits.append(yb["digit"].numpy())
    assert np.array_equal(y[np.concatenate(ids)], np.concatenate(digits))


def test_training_order_is_shuffled_and_seeded_validation_order_is_not():
    x, y, _ = _data()
    loader = kfold_loader(x, {"y": y}, seed=1)
    train, val = loader.folds(3)[0]
    train_ds, val_ds = loader(16, cv_index=0, cv_folds=3)
    assert np.array_equal(_ids(val_ds), val)
    order = _ids(train_ds)
    assert np.array_equal(np.sort(order), train) and not np.array_equal(order, train)
    assert np.array_equal(_ids(kfold_loader(x, {"y": y}, shuffle=False, seed=1)(16, cv_index=0, cv_folds=3)[0]), train)


def test_dict_features_with_a_transformer_per_name():
    x, y, _ = _data()
    images = np.arange(N * 4, dtype="float32").reshape(N, 2, 2)
    loader = kfold_loader({"table": x, "image": images}, {"y": y}, preprocess={"table": Recorder(), "image": None})
    Recorder.fits.clear()
    train_ds, _ = loader(50, cv_index=1, cv_folds=4)
    xb, yb = next(iter(train_ds))
    assert set(xb) == {"table", "image"}
    assert xb["table"].shape == (50, 4) and xb["image"].shape == (50, 2, 2)
    assert np.array_equal(np.sort(Recorder.fits[0]), loader.folds(4)[1][0])
    ids = xb["table"].numpy()[:, 0].astype(int)
    assert np.array_equal(xb["image"].numpy(), images[ids])  # inputs stay row-aligned
    with pytest.raises(TypeError, match=r"preprocess: expected a dict feature name -> transformer, as features is a dict"):
        kfold_loader({"table": x}, {"y": y}, preprocess=StandardScaler())
    with pytest.raises(ValueError, match=r"preprocess: expected feature names in \['table'\], but got \['tabel'\], which are not features"):
        kfold_loader({"table": x}, {"y": y}, preprocess={"tabel": StandardScaler()})


def test_a_multi_input_multi_task_keras_model_fits_on_the_datasets():
    import keras

    x, y, _ = _data(120)
    loader = kfold_loader({"a": x[:, 1:], "b": x[:, 1:2]}, {"cls": y, "reg": x[:, 1:2]}, splitter="stratified")
    train_ds, val_ds = loader(32, cv_index=0, cv_folds=2)
    a, b = keras.Input((3,), name="a"), keras.Input((1,), name="b")
    h = keras.layers.Dense(4)(keras.layers.Concatenate()([a, b]))
    model = keras.Model({"a": a, "b": b}, {"cls": keras.layers.Dense(3, activation="softmax", name="cls")(h),
                                          "reg": keras.layers.Dense(1, name="reg")(h)})
    model.compile("adam", loss={"cls": "sparse_categorical_crossentropy", "reg": "mse"})
    history = model.fit(train_ds, validation_data=val_ds, epochs=1, verbose=0, shuffle=False)
    assert np.isfinite(history.history["val_loss"][0])


def test_argument_errors_name_the_argument_and_value():
    x, y, groups = _data()
    with pytest.raises(TypeError, match=r"labels: expected a dict task name -> array, .*\{'digit': y\}\), but got ndarray"):
        kfold_loader(x, y)
    with pytest.raises(ValueError, match=re.escape(f"labels['b']: expected {N} rows like features, but got {N - 1}")):
        kfold_loader(x, {"a": y, "b": y[1:]})
    with pytest.raises(ValueError, match=re.escape(f"features['m']: expected {N} rows like features['x'], but got 3")):
        kfold_loader({"x": x, "m": x[:3]}, {"a": y})
    with pytest.raises(ValueError, match=re.escape(f"groups: expected {N} rows like features, but got 5")):
        kfold_loader(x, {"a": y}, groups=groups[:5], splitter="group")
    for splitter in ["group", "stratified_group"]:
        with pytest.raises(ValueError, match=re.escape(f"groups: expected one group id per row, as splitter='{splitter}' needs groups, but got None")):
            kfold_loader(x, {"a": y}, splitter=splitter)
    with pytest.raises(ValueError, match=r"groups: expected None, as splitter='kfold' ignores groups, but got 240 group ids"):
        kfold_loader(x, {"a": y}, groups=groups)
    with pytest.raises(ValueError, match=r"splitter: expected one of \['kfold', 'stratified', 'group', 'stratified_group'\]"):
        kfold_loader(x, {"a": y}, splitter="shuffle")
    with pytest.raises(ValueError, match=r"stratify: expected a task name in \['a'\]"):
        kfold_loader(x, {"a": y}, splitter="stratified", stratify="b")
    with pytest.raises(ValueError, match=r"stratify: expected one class per row .* but got task 'v' with labels of shape \(240, 3\)"):
        kfold_loader(x, {"v": np.ones((N, 3))}, splitter="stratified")
    loader = kfold_loader(x, {"a": y})
    with pytest.raises(ValueError, match=re.escape("cv_index: expected an int in [0, 4], but got 7")):
        loader(32, cv_index=7, cv_folds=5)
    with pytest.raises(ValueError, match=re.escape("cv_index: expected an int in [0, 4], but got -1")):
        loader(32, cv_index=-1, cv_folds=5)
    with pytest.raises(ValueError, match=re.escape(f"cv_folds: expected an int in [2, {N}], but got {N + 1}")):
        loader(32, cv_index=0, cv_folds=N + 1)
    with pytest.raises(ValueError, match=re.escape(f"cv_folds: expected an int in [2, {N}], but got 1")):
        loader(32, cv_index=0, cv_folds=1)
    for bad in (0, 2.0, True):
        with pytest.raises(ValueError, match=re.escape(f"batch_size: expected an int >= 1, but got {bad!r}")):
            loader(bad, cv_index=0, cv_folds=5)
    assert loader(np.int64(8), cv_index=np.int64(1), cv_folds=np.int64(5))  # numpy ints from samplers are fine
    smallest = int(np.bincount(y).min())
    with pytest.raises(ValueError, match=re.escape(f"cv_folds: expected at most {smallest} (the rows of class 2 of task 'a', its smallest)")):
        kfold_loader(x, {"a": y}, splitter="stratified").folds(smallest + 1)
    with pytest.raises(ValueError, match=re.escape("cv_folds: expected at most 30 (the number of distinct groups) for splitter='group', but got 31")):
        kfold_loader(x, {"a": y}, groups=groups, splitter="group").folds(31)
    with pytest.raises(ValueError, match=re.escape("val_batch_size: expected an int >= 1 or None, but got 0")):
        kfold_loader(x, {"a": y}, val_batch_size=0)
    with pytest.raises(TypeError, match=r"preprocess: expected an sklearn transformer or Pipeline"):
        kfold_loader(x, {"a": y}, preprocess=len)


def test_check_loader_accepts_a_kfold_loader_and_rejects_impossible_folds_before_ray():
    x, y, _ = _data()
    loader = kfold_loader(x, {"a": y})
    check_loader(loader, 3)
    assert 3 in loader._folds  # computed in the driver, so they ship with the loader
    with pytest.raises(ValueError, match=re.escape(f"cv_folds: expected an int in [2, {N}]")):
        check_loader(loader, N + 1)
    check_loader(loader, None)  # no CV: trials call loader(batch_size), fold 0 of 5
    assert 5 in loader._folds


@pytest.mark.parametrize("dumps", ["pickle", "cloudpickle"])
@pytest.mark.parametrize("computed", [False, True])
def test_a_pickled_loader_gives_the_same_folds_and_data(dumps, computed):
    from ray import cloudpickle

    x, y, groups = _data()
    loader = kfold_loader(x, {"a": y}, groups=groups, splitter="stratified_group", preprocess=Recorder(), seed=5)
    if computed:
        loader.folds(3)
    module = pickle if dumps == "pickle" else cloudpickle
    copy = pickle.loads(module.dumps(loader))
    assert isinstance(copy, KFoldLoader) and (3 in copy._folds) == computed
    assert _same(copy.folds(3), loader.folds(3))
    for a, b in zip(loader(64, cv_index=2, cv_folds=3), copy(64, cv_index=2, cv_folds=3)):
        assert [e[0].numpy().tolist() for e in a] == [e[0].numpy().tolist() for e in b]
