"""glimr_cv.mil: bag folds, what reaches the model, attention pooling, saving, and bad input (no Ray runtime)."""

import pickle
import re

import numpy as np
import pytest
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.decomposition import PCA
from sklearn.model_selection import GroupKFold
from sklearn.preprocessing import StandardScaler

keras = pytest.importorskip("keras")

from glimr_cv import Search, kfold_loader  # noqa: E402
from glimr_cv.mil import (  # noqa: E402
    AttentionPooling,
    BagKFoldLoader,
    GatedAttentionPooling,
    MaxPooling,
    MeanPooling,
    attention_weights,
    bag_pooling,
    digit_bags,
    kfold_bag_loader,
    pack_bags,
)
from glimr_cv.mil import demo  # noqa: E402

SPLITTERS = ["kfold", "stratified", "group", "stratified_group"]


def _bags(n=60, seed=0, max_size=7):
    """Bags whose instances are ``[bag id, instance id, value, value]``; labels, and patients of 1 to 3 bags."""
    rng = np.random.default_rng(seed)
    sizes = rng.integers(1, max_size + 1, n)
    ids = np.arange(sizes.sum())
    bag_of = np.repeat(np.arange(n), sizes)
    rows = np.column_stack([bag_of, ids, rng.normal(3.0, 2.0, (len(ids), 2))]).astype("float32")
    bags = np.split(rows, np.cumsum(sizes)[:-1])
    labels = rng.integers(0, 2, n).astype("float32")
    patients = np.repeat(np.arange(n), rng.integers(1, 4, n))[:n]
    return bags, labels, patients


def _loader(splitter="stratified_group", **kwargs):
    bags, labels, patients = _bags(**{k: kwargs.pop(k) for k in ("n", "seed", "max_size") if k in kwargs})
    return kfold_bag_loader(bags, {"y": labels}, groups=patients if "group" in splitter else None,
                            splitter=splitter, **kwargs)


def _batches(ds):
    """``(instances, mask, labels)`` NumPy arrays of each batch."""
    return [(x["instances"].numpy(), x["mask"].numpy(), next(iter(y.values())).numpy()) for x, y in ds]


def _bag_ids(ds):
    return np.concatenate([inst[:, 0, 0].astype(int) for inst, _, _ in _batches(ds)])


def _same(a, b):
    return len(a) == len(b) and all(np.array_equal(t1, t2) and np.array_equal(v1, v2) for (t1, v1), (t2, v2) in zip(a, b))


# --------------------------------------------------------------------------- storage


def test_bags_are_stored_as_one_instance_array_and_offsets():
    bags, _, _ = _bags(10)
    instances, offsets = pack_bags(bags)
    assert instances.flags.c_contiguous and offsets.dtype == np.int64 and len(offsets) == 11
    for i, bag in enumerate(bags):
        assert np.array_equal(instances[offsets[i]:offsets[i + 1]], bag)
    # all instances and the size of each bag: kept as given, not copied
    again, offsets2 = pack_bags(instances, bag_sizes=np.diff(offsets))
    assert again is instances and np.array_equal(offsets, offsets2)
    as_objects = np.empty(len(bags), dtype=object)
    as_objects[:] = bags
    assert np.array_equal(pack_bags(as_objects)[0], instances)


@pytest.mark.parametrize("dumps", ["pickle", "cloudpickle"])
def test_a_pickled_loader_holds_one_buffer_of_instances_whatever_the_number_of_bags(dumps):
    from ray import cloudpickle

    module = pickle if dumps == "pickle" else cloudpickle
    counts = []
    for n in (20, 400):
        loader = _loader(n=n)
        loader.folds(3)
        buffers = []
        inband = module.dumps(loader, protocol=5, buffer_callback=buffers.append)
        counts.append(len(buffers))
        assert len(inband) < 2000  # settings only: the arrays travel out of band
        assert max(b.raw().nbytes for b in buffers) == loader.instances.nbytes
        # read-only, as Ray's object store hands them out, and shared: the copy is zero-copy
        copy = pickle.loads(inband, buffers=[b.raw().toreadonly() for b in buffers])
        assert np.shares_memory(copy.instances, loader.instances) and not copy.instances.flags.writeable
        assert _same(copy.folds(3), loader.folds(3))
        assert np.array_equal(_bag_ids(copy(8, cv_index=1, cv_folds=3)[1]), loader.folds(3)[1][1])
    assert counts[0] == counts[1]  # a buffer per array, none per bag


# --------------------------------------------------------------------------- folds


@pytest.mark.parametrize("splitter", SPLITTERS)
def test_no_bag_is_split_across_folds_and_each_is_validated_once(splitter):
    loader = _loader(splitter)
    validated = []
    for i, (train, val) in enumerate(loader.folds(4)):
        train_ds, val_ds = loader(8, cv_index=i, cv_folds=4)
        seen = {}
        for part, ds in (("train", train_ds), ("val", val_ds)):
            for inst, mask, _ in _batches(ds):
                for bag, real in zip(inst, mask):
                    seen.setdefault(part, []).append(bag[real])
        for part, bags in seen.items():
            ids = [int(b[0, 0]) for b in bags]
            assert len(set(ids)) == len(ids)  # each bag once per epoch
            for b in bags:  # the whole bag, on one side
                assert np.array_equal(b, loader.bag(int(b[0, 0])))
        assert np.array_equal(np.sort([int(b[0, 0]) for b in seen["train"]]), train)
        assert np.array_equal([int(b[0, 0]) for b in seen["val"]], val)  # validation keeps bag order
        validated.append(val)
    assert np.array_equal(np.sort(np.concatenate(validated)), np.arange(loader.n))


@pytest.mark.parametrize("splitter", ["group", "stratified_group", GroupKFold(3)])
def test_no_patient_has_bags_in_both_training_and_validation(splitter):
    bags, labels, patients = _bags()
    loader = kfold_bag_loader(bags, {"y": labels}, groups=patients, splitter=splitter)
    assert len(set(patients)) < len(bags)  # some patients have several bags
    for train, val in loader.folds(3):
        assert not set(patients[train]) & set(patients[val])


@pytest.mark.filterwarnings("ignore:The groups parameter is ignored")  # sklearn's own hint, also seen by users
def test_a_splitter_that_splits_a_patient_is_refused():
    from sklearn.model_selection import KFold

    bags, labels, patients = _bags()
    with pytest.raises(ValueError, match=r"groups: expected .*, but got fold 0 of KFold\(.*\) with group .* in both training and validation rows"):
        kfold_bag_loader(bags, {"y": labels}, groups=patients, splitter=KFold(3, shuffle=True, random_state=0))


def test_folds_are_fixed_by_the_seed_across_calls_loaders_and_pickles():
    from ray import cloudpickle

    bags, labels, patients = _bags()
    a, b, other = (kfold_bag_loader(bags, {"y": labels}, groups=patients, splitter="stratified_group", seed=seed)
                   for seed in (0, 0, 1))
    assert _same(a.folds(3), b.folds(3)) and not _same(a.folds(3), other.folds(3))
    train_ds, val_ds = a(8, cv_index=1, cv_folds=3)
    order, val = _bag_ids(train_ds), _bag_ids(val_ds)
    assert np.array_equal(val, a.folds(3)[1][1])
    for copy in (a, b, pickle.loads(pickle.dumps(a)), pickle.loads(cloudpickle.dumps(b))):
        assert _same(copy.folds(3), a.folds(3))
        train_ds, val_ds = copy(8, cv_index=1, cv_folds=3)
        # the training order of each epoch is the seed's too
        assert np.array_equal(_bag_ids(val_ds), val) and np.array_equal(_bag_ids(train_ds), order)


def test_bag_folds_and_training_order_are_kfold_loaders_over_one_row_per_bag():
    bags, labels, patients = _bags()
    loader = kfold_bag_loader(bags, {"y": labels}, groups=patients, splitter="stratified_group", seed=4)
    rows = kfold_loader(np.arange(len(bags))[:, None], {"y": labels}, groups=patients, splitter="stratified_group", seed=4)
    assert _same(loader.folds(5), rows.folds(5))
    order = np.concatenate([x.numpy()[:, 0] for x, _ in rows(8, cv_index=2, cv_folds=5)[0]])
    assert np.array_equal(_bag_ids(loader(8, cv_index=2, cv_folds=5)[0]), order)


def test_impossible_fold_counts_fail_naming_cv_folds():
    loader = _loader("stratified_group", n=30)
    n_groups = len(np.unique(loader.groups))
    with pytest.raises(ValueError, match=re.escape(f"cv_folds: expected at most {n_groups} (the number of distinct groups)")):
        loader.folds(n_groups + 1)
    with pytest.raises(ValueError, match=re.escape("cv_folds: expected an int in [2, 30], but got 31")):
        loader(8, cv_index=0, cv_folds=31)
    with pytest.raises(ValueError, match=re.escape("cv_index: expected an int in [0, 2], but got 3")):
        loader(8, cv_index=3, cv_folds=3)
    with pytest.raises(ValueError, match=re.escape("batch_size: expected an int >= 1, but got 0")):
        loader(0, cv_index=0, cv_folds=3)


def test_a_search_takes_the_bag_loader():
    bags = digit_bags(40, seed=0)
    loader = kfold_bag_loader(bags.bags, {"bag": bags.labels}, groups=bags.patients, splitter="stratified_group")
    search = Search(demo.SPACE, demo.builder, loader, metric="bag_auc", mode="max", cv_folds=3)
    assert search.loader is loader


def test_a_search_computes_the_bag_folds_before_ray_starts():
    loader = _loader("stratified_group", n=30)
    Search(demo.SPACE, demo.builder, loader, metric="bag_auc", cv_folds=3)
    assert 3 in loader.rows._folds
    with pytest.raises(ValueError, match=r"cv_folds: expected at most \d+ \(the number of distinct groups\)"):
        Search(demo.SPACE, demo.builder, loader, metric="bag_auc", cv_folds=29)


# --------------------------------------------------------------------------- preprocessing


class Recorder(BaseEstimator, TransformerMixin):
    """Centers columns 2: on the instances it was fit on; records their ids (column 1) and y."""

    fits = []

    def fit(self, X, y=None):
        Recorder.fits.append((np.asarray(X)[:, 1].astype(int), np.asarray(y)))
        self.mean_ = np.asarray(X)[:, 2:].mean(axis=0)
        return self

    def transform(self, X):
        X = np.asarray(X)
        return np.column_stack([X[:, :2], X[:, 2:] - self.mean_]).astype("float32")


def test_the_transformer_is_fit_on_the_training_bags_instances_only():
    bags, labels, patients = _bags()
    loader = kfold_bag_loader(bags, {"y": labels}, groups=patients, splitter="stratified_group",
                              preprocess=Recorder())
    all_rows = np.concatenate(bags)
    for i, (train, val) in enumerate(loader.folds(3)):
        Recorder.fits.clear()
        _, val_ds = loader(8, cv_index=i, cv_folds=3)
        assert len(Recorder.fits) == 1
        ids, y = Recorder.fits[0]
        train_ids = np.concatenate([bags[b][:, 1] for b in train]).astype(int)
        assert np.array_equal(np.sort(ids), np.sort(train_ids))
        assert not set(ids) & set(np.concatenate([bags[b][:, 1] for b in val]).astype(int))
        assert np.array_equal(y, labels[all_rows[ids, 0].astype(int)])  # each instance's bag label
        mean = all_rows[train_ids, 2:].mean(axis=0)
        for inst, mask, _ in _batches(val_ds):  # validation instances, shifted by the training mean
            real = inst[mask]
            np.testing.assert_allclose(real[:, 2:], all_rows[real[:, 1].astype(int), 2:] - mean, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(loader.bag(int(val[0]), cv_index=i, cv_folds=3)[:, 2:],
                                   bags[val[0]][:, 2:] - mean, rtol=1e-5, atol=1e-5)


def test_a_scaler_fit_per_fold_has_the_mean_of_the_training_instances_of_image_bags():
    data = digit_bags(40, images=True, seed=1)
    loader = kfold_bag_loader(data.bags, {"bag": data.labels}, groups=data.patients, splitter="stratified_group",
                              preprocess=StandardScaler())
    train, val = loader.folds(2)[1]
    scaler = loader.fitted_preprocess(1, cv_folds=2)
    pixels = np.concatenate([data.bags[b] for b in train]).reshape(-1, 64)
    np.testing.assert_allclose(scaler.mean_, pixels.mean(axis=0), rtol=1e-5, atol=1e-6)
    _, val_ds = loader(16, cv_index=1, cv_folds=2)
    inst, mask, _ = _batches(val_ds)[0]
    assert inst.shape[2:] == (8, 8, 1)  # a transformer that keeps the size keeps the image shape
    expected = scaler.transform(data.bags[val[0]].reshape(-1, 64)).reshape(-1, 8, 8, 1)
    np.testing.assert_allclose(inst[0][mask[0]], expected, rtol=1e-5, atol=1e-5)
    # one of another size gives vectors; the full-data mode fits on every instance
    pca = kfold_bag_loader(data.bags, {"bag": data.labels}, preprocess=PCA(3, random_state=0))
    assert next(iter(pca(8, cv_index=0, cv_folds=2)[0]))[0]["instances"].shape[2:] == (3,)
    full = pca.full(8)
    assert sum(int(x["mask"].numpy().sum()) for x, _ in full) == len(pca.instances)


# --------------------------------------------------------------------------- what reaches the model


class RecordInputs(keras.layers.Layer):
    """Keeps every batch of instances and masks it gets when run eagerly, and pools them by a masked mean."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.seen = []
        self.pool = MeanPooling()

    def call(self, instances, mask):
        import tensorflow as tf

        if tf.executing_eagerly():
            self.seen.append((keras.ops.convert_to_numpy(instances), keras.ops.convert_to_numpy(mask)))
        return self.pool(instances, mask=mask)


def _recording_model(width):
    instances = keras.Input((None, width), name="instances")
    mask = keras.Input((None,), dtype="bool", name="mask")
    record = RecordInputs()
    out = keras.layers.Dense(1, activation="sigmoid", name="y")(record(instances, mask))
    model = keras.Model({"instances": instances, "mask": mask}, {"y": out})
    model.compile("sgd", loss={"y": "binary_crossentropy"}, run_eagerly=True)
    record.seen.clear()  # the functional call above recorded symbolic inputs
    return model, record


def _seen_bags(record):
    bags = []
    for inst, mask in record.seen:
        assert inst.shape[:2] == mask.shape and mask.dtype == bool
        assert inst.shape[1] == mask.sum(axis=1).max()  # padded to the batch's largest bag only
        for bag, real in zip(inst, mask):
            n = int(real.sum())
            assert real[:n].all() and not real[n:].any()  # real instances first, then padding
            assert not bag[n:].any()  # zero padding
            bags.append(bag[:n])
    return bags


def test_bags_of_different_sizes_reach_the_model_intact_and_in_order():
    loader = _loader("stratified_group")
    model, record = _recording_model(4)
    train_ds, val_ds = loader(8, cv_index=0, cv_folds=3)
    train, val = loader.folds(3)[0]
    model.fit(train_ds, validation_data=val_ds, epochs=2, verbose=0, shuffle=False)
    seen = _seen_bags(record)
    assert len(seen) == 2 * (len(train) + len(val))
    for bag in seen:
        assert np.array_equal(bag, loader.bag(int(bag[0, 0])))  # every instance, in its order
    ids = [int(b[0, 0]) for b in seen]
    epoch = len(train) + len(val)
    assert sorted(ids[:len(train)]) == sorted(train) and ids[len(train):epoch] == list(val)
    assert ids[:len(train)] != ids[epoch:epoch + len(train)]  # training bags reshuffled each epoch


def test_max_instances_draws_a_new_ordered_subset_of_each_training_bag_every_epoch():
    loader = _loader("stratified_group", max_size=12, max_instances=3)
    model, record = _recording_model(4)
    train_ds, val_ds = loader(8, cv_index=1, cv_folds=3)
    train, val = loader.folds(3)[1]
    model.fit(train_ds, epochs=2, verbose=0, shuffle=False)
    seen = _seen_bags(record)
    drawn = {}
    for bag in seen:
        whole = loader.bag(int(bag[0, 0]))
        assert len(bag) == min(3, len(whole))
        positions = np.searchsorted(whole[:, 1], bag[:, 1])
        assert np.array_equal(whole[positions], bag) and (np.diff(positions) > 0).all()  # a subset, in order
        drawn.setdefault(int(bag[0, 0]), []).append(tuple(positions))
    assert sorted(drawn) == sorted(train)
    assert any(len(set(d)) > 1 for d in drawn.values())  # other instances in the next epoch
    record.seen.clear()
    model.predict(val_ds, verbose=0)
    assert [len(b) for b in _seen_bags(record)] == list(loader.sizes[val])  # validation bags are whole


# --------------------------------------------------------------------------- pooling layers


def _padded_batch(seed=0):
    """Three bags of 5, 2 and 3 instances, padded to 5 with large values that must not count."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(3, 5, 4)).astype("float32")
    mask = np.array([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0], [1, 1, 1, 0, 0]], dtype=bool)
    x[~mask] = 1e4
    return x, mask


@pytest.mark.parametrize("layer", [AttentionPooling(6), GatedAttentionPooling(6), MeanPooling()])
def test_attention_sums_to_one_over_real_instances_and_is_zero_on_padding(layer):
    x, mask = _padded_batch()
    weights = keras.ops.convert_to_numpy(layer.attention(x, mask))
    assert weights.dtype == np.float32
    np.testing.assert_allclose(weights.sum(axis=1), 1.0, rtol=1e-6)
    assert (weights[~mask] == 0).all() and (weights[mask] > 0).all()
    pooled = keras.ops.convert_to_numpy(layer(x, mask=mask))
    for b in range(3):  # a padded bag pools as the bag alone does
        alone = keras.ops.convert_to_numpy(layer(x[b:b + 1, mask[b]]))
        np.testing.assert_allclose(pooled[b], alone[0], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(pooled[b], weights[b] @ np.where(mask[b][:, None], x[b], 0), rtol=1e-5, atol=1e-5)
    if isinstance(layer, MeanPooling):
        np.testing.assert_allclose(weights[mask], np.repeat(1 / mask.sum(1), mask.sum(1)), rtol=1e-6)


def test_max_pooling_ignores_padding_and_a_bag_of_padding_alone_pools_to_zero():
    x, mask = _padded_batch()
    x = -np.abs(x)  # padding at -1e4 must still lose to real instances
    pooled = keras.ops.convert_to_numpy(MaxPooling()(x, mask=mask))
    for b in range(3):
        np.testing.assert_allclose(pooled[b], x[b][mask[b]].max(axis=0))
    empty = np.zeros((1, 3), dtype=bool)
    for layer in (MaxPooling(), MeanPooling(), AttentionPooling(4, gated=True)):
        out = keras.ops.convert_to_numpy(layer(x[:1, :3], mask=empty))
        assert np.array_equal(out, np.zeros_like(out))  # no NaN


def test_return_attention_gives_the_weights_with_the_embedding_and_bag_pooling_makes_layers_by_name():
    x, mask = _padded_batch()
    layer = AttentionPooling(5, return_attention=True)
    pooled, weights = layer(x, mask=mask)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(weights), keras.ops.convert_to_numpy(layer.attention(x, mask)))
    kinds = {"attention": AttentionPooling, "gated": GatedAttentionPooling, "mean": MeanPooling, "max": MaxPooling}
    for name, cls in kinds.items():
        assert type(bag_pooling(name, units=4)) is cls
    assert bag_pooling("gated", 7).gated and bag_pooling("gated", 7).units == 7
    with pytest.raises(ValueError, match=re.escape("pooling: expected one of 'attention', 'gated', 'mean', 'max', but got 'sum'")):
        bag_pooling("sum")
    with pytest.raises(ValueError, match=re.escape("units: expected an int >= 1, but got 0")):
        AttentionPooling(0)
    with pytest.raises(ValueError, match=r"attention_pooling.*: expected instances of shape \(batch, instances, features\), "
                                         r"but got shape \(3, 5, 2, 2\); embed image instances first"):
        AttentionPooling(3)(x.reshape(3, 5, 2, 2))


def _config(pooling):
    return {"units": 8, "pooling": pooling, "attention_units": 4, "tasks": demo.SPACE["tasks"]}


@pytest.mark.parametrize("pooling", ["attention", "gated", "mean", "max"])
def test_a_model_with_a_pooling_layer_saves_and_reloads_with_identical_predictions(pooling, tmp_path):
    keras.utils.set_random_seed(0)
    model, _, _, _ = demo.builder(_config(pooling))
    data = digit_bags(20, seed=2)
    loader = kfold_bag_loader(data.bags, {"bag": data.labels})
    features, _ = next(iter(loader(8, cv_index=0, cv_folds=2)[1]))
    before = model.predict(features, verbose=0)["bag"]
    path = str(tmp_path / f"{pooling}.keras")
    model.save(path)
    reloaded = keras.saving.load_model(path)
    layer = reloaded.get_layer("pooling")
    assert type(layer) is type(model.get_layer("pooling"))
    assert layer.get_config() == model.get_layer("pooling").get_config()
    assert np.array_equal(reloaded.predict(features, verbose=0)["bag"], before)
    if pooling != "max":
        for a, b in zip(attention_weights(model, features), attention_weights(reloaded, features)):
            assert np.array_equal(a, b)


def test_attention_weights_of_one_bag_and_of_a_batch():
    keras.utils.set_random_seed(1)
    model, _, _, _ = demo.builder(_config("gated"))
    data = digit_bags(20, seed=3)
    loader = kfold_bag_loader(data.bags, {"bag": data.labels})
    features, _ = next(iter(loader(8, cv_index=1, cv_folds=2)[1]))
    val = loader.folds(2)[1][1]
    batch = attention_weights(model, features)
    assert [len(w) for w in batch] == list(loader.sizes[val[:8]])
    for i, weights in zip(val, batch):
        alone = attention_weights(model, loader.bag(int(i)))  # the bag alone, unpadded
        assert alone.shape == (loader.sizes[i],) and alone.dtype == np.float32
        np.testing.assert_allclose(alone, weights, rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(alone.sum(), 1.0, rtol=1e-6)
    max_model, _, _, _ = demo.builder(_config("max"))
    with pytest.raises(ValueError, match=re.escape("model: expected a model with an AttentionPooling, "
                                                   "GatedAttentionPooling or MeanPooling layer, but got one with MaxPooling")):
        attention_weights(max_model, loader.bag(0))
    with pytest.raises(ValueError, match=re.escape("layer: expected the name of an AttentionPooling, GatedAttentionPooling or "
                                                   "MeanPooling layer, but got 'bag', a Dense")):
        attention_weights(model, loader.bag(0), layer="bag")
    assert np.array_equal(attention_weights(model, loader.bag(0), layer="pooling"), attention_weights(model, loader.bag(0)))
    with pytest.raises(ValueError, match=re.escape("bag: expected an (n, ...) array of at least one instance, but got shape (0, 64)")):
        attention_weights(model, np.zeros((0, 64), "float32"))
    with pytest.raises(TypeError, match=re.escape("model: expected a Keras model with an AttentionPooling, "
                                                  "GatedAttentionPooling or MeanPooling layer, but got 'model.keras'")):
        attention_weights("model.keras", loader.bag(0))


def test_a_heatmap_names_coords_values_or_a_tile_size_it_cannot_draw():
    from glimr_cv.mil import plot_heatmap

    coords = np.array([[0, 0], [256, 0], [0, 256]])
    with pytest.raises(ValueError, match=re.escape("tile: expected a tile size > 0 in the units of coords, or None, "
                                                   "but got 0")):
        plot_heatmap(coords, [0.2, 0.3, 0.5], tile=0)
    with pytest.raises(ValueError, match=re.escape("values: expected numbers, but got list ['a', 'b', 'c']")):
        plot_heatmap(coords, ["a", "b", "c"])
    assert plot_heatmap(coords, [0.2, 0.3, 0.5], tile=256.0) is not None


# --------------------------------------------------------------------------- example data


def test_digit_bags_are_positive_exactly_when_they_hold_the_target():
    data = digit_bags(80, target=9, min_size=3, max_size=10, max_bags_per_patient=3, seed=5)
    assert len(data.bags) == len(data.labels) == len(data.patients) == len(data.digits) == 80
    for bag, digits, label in zip(data.bags, data.digits, data.labels):
        assert bag.shape == (len(digits), 64) and bag.dtype == np.float32 and 3 <= len(bag) <= 10
        assert label == float(9 in digits) and (digits == 9).sum() <= 2
        assert 0 <= bag.min() and bag.max() <= 1
    counts = np.bincount(data.patients)
    assert set(counts) <= {1, 2, 3} and set(counts) != {1}
    assert (np.diff(data.patients) >= 0).all()  # a patient's bags are consecutive
    assert 0.3 < data.labels.mean() < 0.7
    again = digit_bags(80, target=9, seed=5, images=True)
    assert all(np.array_equal(a.reshape(-1, 64), b) for a, b in zip(again.bags, data.bags))
    with pytest.raises(ValueError, match=r"n_bags: expected at most as many bags as the \d+ images of 9 can fill, but got 400"):
        digit_bags(400)


# --------------------------------------------------------------------------- bad input


def test_ragged_bags_given_to_kfold_loader_point_to_kfold_bag_loader():
    bags, labels, _ = _bags(10)
    sizes = [len(b) for b in bags]
    hint = "; for bags of instances (multiple-instance learning) use glimr_cv.mil.kfold_bag_loader"
    with pytest.raises(ValueError, match="^" + re.escape(
            f"features: expected an array of rows of one shape, but got a list of 10 arrays of {min(sizes)} to {max(sizes)} rows"
            + hint) + "$"):
        kfold_loader(bags, {"y": labels})
    as_objects = np.empty(len(bags), dtype=object)
    as_objects[:] = bags
    with pytest.raises(ValueError, match="^" + re.escape(
            f"features['tiles']: expected an array of rows of one shape, but got an object array of 10 arrays of {min(sizes)} to {max(sizes)} rows"
            + hint) + "$"):
        kfold_loader({"tiles": as_objects}, {"y": labels})
    with pytest.raises(ValueError, match=re.escape("features: expected an array of rows of one shape, but got a tuple of 2 "
                                                   "arrays whose rows differ in shape")):
        kfold_loader((np.zeros((3, 2)), np.zeros((3, 4))), {"y": np.zeros(2)})
    # object columns of strings are no bags: patient ids from pandas still work
    groups = np.array([f"p{i % 4}" for i in range(10)], dtype=object)
    assert kfold_loader(np.zeros((10, 2)), {"y": labels}, groups=groups, splitter="group").folds(2)


def test_bag_loader_errors_name_the_argument_and_value():
    bags, labels, patients = _bags(10)
    n = sum(len(b) for b in bags)
    with pytest.raises(ValueError, match="^" + re.escape("labels['y']: expected 10 rows, one per bag, but got 9") + "$"):
        kfold_bag_loader(bags, {"y": labels[:9]})
    with pytest.raises(ValueError, match="^" + re.escape("groups: expected 10 rows, one per bag, but got 3") + "$"):
        kfold_bag_loader(bags, {"y": labels}, groups=patients[:3], splitter="group")
    with pytest.raises(ValueError, match="^" + re.escape("stratify: expected 10 rows, one per bag, but got 2") + "$"):
        kfold_bag_loader(bags, {"y": labels}, splitter="stratified", stratify=[0, 1])
    empty = [*bags[:3], np.zeros((0, 4), "float32"), *bags[4:]]
    with pytest.raises(ValueError, match="^" + re.escape(
            "bags[3]: expected a bag of at least 1 instance, but got an array of dtype float32 and shape (0, 4)") + "$"):
        kfold_bag_loader(empty, {"y": labels})
    with pytest.raises(ValueError, match="^" + re.escape("bags[2]: expected instances of shape (4,) like bags[0], but got (3,)") + "$"):
        kfold_bag_loader([*bags[:2], bags[2][:, :3], *bags[3:]], {"y": labels})
    with pytest.raises(TypeError, match=re.escape("bags[1]: expected instances of numbers, but got an array of dtype <U1")):
        kfold_bag_loader([bags[0], np.array([["a"]])], {"y": labels[:2]})
    with pytest.raises(TypeError, match=re.escape(
            "bags: expected a list of arrays, one (n_i, ...) array of instances per bag, or one array of all instances with "
            f"bag_sizes=, but got an array of dtype float32 and shape ({n}, 4) and bag_sizes=None; for bags of equal size pass list(bags)")):
        kfold_bag_loader(np.concatenate(bags), {"y": labels})
    with pytest.raises(ValueError, match=re.escape(
            f"bag_sizes: expected sizes that add up to the {n} instances of bags, but got 10 sizes that add up to {n + 1}")):
        kfold_bag_loader(np.concatenate(bags), {"y": labels}, bag_sizes=[len(b) for b in bags[:-1]] + [len(bags[-1]) + 1])
    with pytest.raises(ValueError, match=re.escape("bag_sizes[0]: expected an int >= 1 (a bag holds at least one instance), but got 0")):
        kfold_bag_loader(np.concatenate(bags), {"y": labels}, bag_sizes=[0] + [len(b) for b in bags])
    with pytest.raises(TypeError, match=re.escape("bag_sizes: expected a 1-D array of ints, one per bag, but got an array of dtype float64")):
        kfold_bag_loader(np.concatenate(bags), {"y": labels}, bag_sizes=np.ones(10))
    with pytest.raises(TypeError, match=re.escape("bags: expected one array of all instances, bag after bag, when bag_sizes is given, but got list")):
        kfold_bag_loader(bags, {"y": labels}, bag_sizes=[len(b) for b in bags])
    with pytest.raises(ValueError, match="^" + re.escape("bags: expected at least 2 bags to make folds, but got 1") + "$"):
        kfold_bag_loader(bags[:1], {"y": labels[:1]})
    with pytest.raises(TypeError, match=r"labels: expected a dict task name -> array, .* but got ndarray"):
        kfold_bag_loader(bags, labels)
    with pytest.raises(ValueError, match=re.escape("max_instances: expected an int >= 1 or None, but got 0")):
        kfold_bag_loader(bags, {"y": labels}, max_instances=0)
    with pytest.raises(TypeError, match=re.escape("preprocess: expected one sklearn transformer for the instances, but got a dict")):
        kfold_bag_loader(bags, {"y": labels}, preprocess={"x": StandardScaler()})
    with pytest.raises(ValueError, match=r"groups: expected one group id per row, as splitter='group' needs groups, but got None"):
        kfold_bag_loader(bags, {"y": labels}, splitter="group")
    with pytest.raises(ValueError, match=re.escape("i: expected an int in [0, 9], but got 10")):
        kfold_bag_loader(bags, {"y": labels}).bag(10)
    assert isinstance(kfold_bag_loader(bags, {"y": labels}), BagKFoldLoader)
