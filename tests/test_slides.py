"""Bags from whole-slide feature files: manifest checks, folds by patient, reads inside tf.data, no features held.

TensorFlow runs here (the datasets), Ray does not; searches on slide files are in ``test_slides_e2e.py``.
"""

import glob
import os
import pickle
import re

import numpy as np
import pandas as pd
import pytest

import e2e_helpers as h
from glimr_cv.data import is_row_loader
from glimr_cv.mil import kfold_slide_loader, read_slide, synthetic_slides


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    folder = tmp_path_factory.mktemp("slides")
    return synthetic_slides(folder, patients=30, slides_per_patient=(1, 2), tiles=(60, 120), width=8, seed=1)


@pytest.fixture(scope="module")
def npy_cohort(tmp_path_factory):
    folder = tmp_path_factory.mktemp("npy")
    return synthetic_slides(folder, patients=12, tiles=(40, 80), width=8, seed=2, format="npy")


def _batches(ds):
    return [(x["instances"].numpy(), x["mask"].numpy(), {k: v.numpy() for k, v in y.items()}) for x, y in ds]


def _bag_of_batch(loader, instances, mask):
    """Which bag each padded row of a batch is, told by its tiles' content."""
    found = []
    for rows, m in zip(instances, mask):
        tiles = rows[m]
        hits = [i for i in range(loader.n) if len(tiles) == loader.sizes[i] and np.array_equal(tiles, loader.bag(i))]
        found.append(hits[0] if len(hits) == 1 else None)
    return found


def test_a_slide_loader_is_a_row_loader_and_pickles_without_features(cohort):
    loader = kfold_slide_loader(cohort, labels="high_risk")
    assert is_row_loader(loader)
    data = pickle.dumps(loader)
    assert len(data) < 60_000, len(data)  # paths and labels, whatever the features weigh
    first = read_slide(cohort["path"][0])
    assert first[:4].tobytes() not in data
    assert loader.n == len(cohort) and loader.width == 8 and loader.splitter == "group"


def test_a_patients_slides_never_fall_on_both_sides_of_a_fold(cohort):
    loader = kfold_slide_loader(cohort, labels="high_risk")
    assert cohort["patient"].value_counts().max() > 1  # some patient has two slides
    for train, val in loader.folds(4):
        assert not set(loader.patients[train]) & set(loader.patients[val])
        assert sorted(np.concatenate([train, val]).tolist()) == list(range(loader.n))
    survival = kfold_slide_loader(cohort, time="time", event="event", task="risk", time_bins=2)
    for train, val in survival.folds(3):
        assert not set(survival.patients[train]) & set(survival.patients[val])
        assert survival.labels["risk"][val, 1].sum() >= 1  # stratified on the event


def test_patient_bags_hold_all_of_a_patients_tiles(cohort):
    loader = kfold_slide_loader(cohort, labels="high_risk", bag="patient")
    assert loader.n == cohort["patient"].nunique() and loader.groups is None
    i = next(i for i, files in enumerate(loader.files) if len(files) == 2)
    expected = np.concatenate([read_slide(cohort["path"][f]) for f in loader.files[i]])
    np.testing.assert_array_equal(loader.bag(i), expected)
    coords = loader.coords(i)
    assert coords.shape == (len(expected), 2)


def test_validation_batches_are_whole_bags_with_their_labels_and_the_same_each_time(cohort):
    loader = kfold_slide_loader(cohort, labels={"label": "high_risk"}, seed=3)
    train_ds, val_ds = loader(4, cv_index=1, cv_folds=3)
    _, val = loader.folds(3)[1]
    seen = []
    for instances, mask, labels in _batches(val_ds):
        assert instances.shape[0] == len(mask) <= 4 and instances.shape[2] == 8
        bags = _bag_of_batch(loader, instances, mask)
        assert None not in bags
        np.testing.assert_array_equal(labels["label"], loader.labels["label"][bags])
        seen += bags
    assert seen == list(val)  # validation bags in order, whole
    again = [b for i, m, _ in _batches(loader(4, cv_index=1, cv_folds=3)[1]) for b in _bag_of_batch(loader, i, m)]
    assert again == seen
    train_bags = sorted(b for i, m, _ in _batches(train_ds) for b in _bag_of_batch(loader, i, m))
    assert train_bags == sorted(loader.folds(3)[1][0].tolist())  # every training bag once per epoch


def test_max_instances_reads_only_the_sampled_tiles(cohort, tmp_path):
    log = tmp_path / "log"
    loader = kfold_slide_loader(cohort, labels="high_risk", max_instances=16, read_log=str(log))
    train_ds, _ = loader(4, cv_index=0, cv_folds=3)
    batches = _batches(train_ds)
    lines = [line.split("\t") for path in glob.glob(str(log / "*.log")) for line in open(path).read().splitlines()]
    for instances, mask, _ in batches:
        assert mask.sum(axis=1).max() <= 16
        # drawn tiles are real tiles of the bag, in the bag's order
        for rows, m in zip(instances, mask):
            tiles = rows[m]
            owners = [i for i in range(loader.n)
                      if all((loader.bag(i) == t).all(axis=1).any() for t in tiles[:3])]
            assert owners
    train = set(loader.folds(3)[0][0].tolist())
    train_slides = {s for b in train for s in loader.slides(b)}
    assert {line[1] for line in lines} == train_slides  # only the training slides were opened
    per_bag = {}
    for line in lines:
        per_bag.setdefault(line[1], 0)
        per_bag[line[1]] += int(line[3])
    for b in train:  # the rows read were the draw: at most 16 tiles per bag, from its files
        assert sum(per_bag[s] for s in loader.slides(b)) == min(16, loader.sizes[b])


def test_survival_batches_hold_events(cohort):
    loader = kfold_slide_loader(cohort, time="time", event="event", task="risk")
    train_ds, _ = loader(4, cv_index=0, cv_folds=3)
    events = [labels["risk"][:, 1] for _, _, labels in _batches(train_ds)]
    n_events = int(sum(e.sum() for e in events))
    assert n_events >= len(events)
    assert all(e.sum() >= 1 for e in events)


def test_streaming_preprocess_equals_a_fit_on_the_training_tiles(cohort):
    from sklearn.preprocessing import StandardScaler

    loader = kfold_slide_loader(cohort, labels="high_risk", preprocess=StandardScaler())
    train, _ = loader.folds(3)[0]
    tiles = np.concatenate([loader.bag(int(b)) for b in train])
    reference = StandardScaler().fit(tiles)
    fitted = loader.fitted_preprocess(0, 3)
    np.testing.assert_allclose(fitted.mean_, reference.mean_, rtol=1e-6)
    np.testing.assert_allclose(fitted.scale_, reference.scale_, rtol=1e-5)
    assert loader.fitted_preprocess(0, 3) is fitted  # cached per process
    _, val_ds = loader(64, cv_index=0, cv_folds=3)
    instances, mask, _ = _batches(val_ds)[0]
    _, val = loader.folds(3)[0]
    np.testing.assert_allclose(instances[0][mask[0]], reference.transform(loader.bag(int(val[0]))), rtol=1e-4,
                               atol=1e-5)
    assert "_fitted" not in pickle.loads(pickle.dumps(loader)).__dict__ or not pickle.loads(pickle.dumps(loader))._fitted


def test_npy_files_and_uris_are_read_too(npy_cohort):
    loader = kfold_slide_loader(npy_cohort, labels="high_risk")
    assert loader.width == 8 and loader.has_coords.all()
    np.testing.assert_array_equal(loader.bag(0), np.load(npy_cohort["path"][0]))
    uris = npy_cohort.assign(path=["file://" + p for p in npy_cohort["path"]])
    by_uri = kfold_slide_loader(uris, labels="high_risk")
    np.testing.assert_array_equal(by_uri.bag(3), loader.bag(3))


def test_a_feature_file_is_read_from_a_pathlib_path_and_a_path_that_is_not_one_is_named(npy_cohort, tmp_path):
    import pathlib

    from glimr_cv.mil import slide_info

    path = npy_cohort["path"][0]
    np.testing.assert_array_equal(read_slide(pathlib.Path(path)), read_slide(path))
    assert slide_info(pathlib.Path(path)) == slide_info(path)
    for read in (read_slide, slide_info):
        with pytest.raises(TypeError, match=re.escape("path: expected a feature file's path or URI, but got 3")):
            read(3)
    with pytest.raises(ValueError, match=re.escape("path: expected an HDF5 (.h5, .hdf5) or NumPy (.npy) feature "
                                                   f"file, but got {str(tmp_path / 'tiles.csv')!r}")):
        read_slide(tmp_path / "tiles.csv")


def test_subset_and_rows_dataset(cohort):
    loader = kfold_slide_loader(cohort, time="time", event="event", task="risk")
    rows = np.arange(0, loader.n, 2)
    sub = loader.subset(rows)
    assert sub.n == len(rows) and sub.slides(1) == loader.slides(2)
    np.testing.assert_array_equal(sub.labels["risk"], loader.labels["risk"][rows])
    order = [b for i, m, _ in _batches(loader.rows_dataset(np.array([5, 2, 7]), 2)) for b in _bag_of_batch(loader, i, m)]
    assert order == [5, 2, 7]


def test_a_csv_manifest_resolves_paths_next_to_it(cohort, tmp_path):
    folder = os.path.dirname(cohort["path"][0])
    frame = cohort.assign(path=[os.path.basename(p) for p in cohort["path"]])
    csv = os.path.join(folder, "manifest.csv")
    frame.to_csv(csv, index=False)
    loader = kfold_slide_loader(csv, labels="high_risk")
    assert loader.manifest["path"][0] == cohort["path"][0]


# --------------------------------------------------------------------------- bad input, named by slide


def _write_h5(path, **datasets):
    import h5py

    with h5py.File(path, "w") as h5:
        for name, value in datasets.items():
            h5[name] = value


def test_bad_files_are_named_by_slide_before_anything_trains(cohort, tmp_path):
    base = cohort.iloc[:6].copy().reset_index(drop=True)

    def with_file(row, path):
        frame = base.copy()
        frame.loc[row, "path"] = str(path)
        return frame

    with pytest.raises(FileNotFoundError, match=re.escape(f"manifest: slide {base['slide'][2]!r} (row 2): no such "
                                                          "feature file")):
        kfold_slide_loader(with_file(2, tmp_path / "gone.h5"), labels="high_risk")
    garbage = tmp_path / "garbage.h5"
    garbage.write_bytes(b"not an hdf5 file at all")
    with pytest.raises(ValueError, match=re.escape(f"manifest: slide {base['slide'][1]!r} (row 1): cannot read "
                                                   f"{str(garbage)!r} as HDF5")):
        kfold_slide_loader(with_file(1, garbage), labels="high_risk")
    nofeat = tmp_path / "nofeat.h5"
    _write_h5(nofeat, coords=np.zeros((3, 2)), other=np.zeros((3, 8)))
    with pytest.raises(ValueError, match=re.escape("expected a 'features' dataset of shape (n_tiles, d), but the file "
                                                   "holds ['coords', 'other']")):
        kfold_slide_loader(with_file(0, nofeat), labels="high_risk")
    wide = tmp_path / "wide.h5"
    _write_h5(wide, features=np.zeros((5, 12), dtype="float32"))
    with pytest.raises(ValueError, match=re.escape(f"manifest: slide 'wide' has 12 features per tile, but slide "
                                                   f"{base['slide'][0]!r} has 8")):
        kfold_slide_loader(with_file(3, wide).assign(slide=lambda f: [*f["slide"][:3], "wide", *f["slide"][4:]]),
                           labels="high_risk")
    empty = tmp_path / "empty.h5"
    _write_h5(empty, features=np.zeros((0, 8), dtype="float32"))
    with pytest.raises(ValueError, match=r"n_tiles >= 1, but got shape \(0, 8\)"):
        kfold_slide_loader(with_file(0, empty), labels="high_risk")
    suffix = tmp_path / "features.csv"
    suffix.write_text("1,2")
    with pytest.raises(ValueError, match=r"expected an HDF5 \(.h5, .hdf5\) or NumPy \(.npy\) feature file"):
        kfold_slide_loader(with_file(0, suffix), labels="high_risk")


def test_bad_arguments_are_named(cohort):
    with pytest.raises(ValueError, match=re.escape("manifest: expected columns ['path', 'nope'], but ['nope'] are "
                                                   "missing")):
        kfold_slide_loader(cohort, labels="nope")
    with pytest.raises(ValueError, match=r"time, event: expected both survival columns or neither"):
        kfold_slide_loader(cohort, time="time")
    with pytest.raises(ValueError, match=r"labels: expected label columns or time and event columns"):
        kfold_slide_loader(cohort)
    with pytest.raises(TypeError, match=r"preprocess: expected a transformer with partial_fit"):
        from sklearn.preprocessing import QuantileTransformer

        kfold_slide_loader(cohort, labels="high_risk", preprocess=QuantileTransformer())
    mixed = cohort.copy()
    twice = mixed["patient"].value_counts().index[0]
    rows = mixed.index[mixed["patient"] == twice]
    mixed.loc[rows[1], "high_risk"] = 1 - mixed.loc[rows[0], "high_risk"]
    with pytest.raises(ValueError, match=re.escape(f"of patient {twice!r} have different high_risk")):
        kfold_slide_loader(mixed, labels="high_risk", bag="patient")
    with pytest.raises(ValueError, match=r"splitter: survival='risk' stratifies the folds on the event"):
        kfold_slide_loader(cohort, time="time", event="event", task="risk", splitter="kfold")
    with pytest.raises(TypeError, match=r"manifest: expected a pandas DataFrame of slides or the path of a CSV"):
        kfold_slide_loader([1, 2], labels="x")


def test_a_file_that_goes_missing_fails_the_read_naming_the_slide(cohort, tmp_path):
    import shutil

    import tensorflow as tf

    frame = cohort.iloc[:8].copy().reset_index(drop=True)
    copies = []
    for p in frame["path"]:
        target = tmp_path / os.path.basename(p)
        shutil.copy(p, target)
        copies.append(str(target))
    frame["path"] = copies
    loader = kfold_slide_loader(frame, labels="high_risk")
    os.remove(copies[5])
    _, val_ds = loader(8, cv_index=0, cv_folds=2)
    fold = 0 if 5 in loader.folds(2)[0][1] else 1
    _, val_ds = loader(8, cv_index=fold, cv_folds=2)
    with pytest.raises(tf.errors.OpError, match=re.escape(f"slide {frame['slide'][5]!r}: cannot read")):
        list(val_ds)


def test_tiles_holding_nan_fail_the_read_naming_the_slide_and_tiles(cohort, tmp_path):
    # one NaN tile makes the bag's attention, prediction and loss NaN: the fold would fail naming no slide
    import shutil

    import h5py
    import tensorflow as tf

    from glimr_cv.mil import predict_slides

    frame = cohort.iloc[:8].copy().reset_index(drop=True)
    poisoned = tmp_path / "poisoned.h5"
    shutil.copy(frame["path"][5], poisoned)
    with h5py.File(poisoned, "r+") as f:
        x = f["features"][...]
        x[[3, 7]], x[9, 1] = np.nan, np.inf
        del f["features"]
        f["features"] = x
    frame.loc[5, "path"] = str(poisoned)
    loader = kfold_slide_loader(frame, labels="high_risk")
    fold = 0 if 5 in loader.folds(2)[0][1] else 1
    _, val_ds = loader(8, cv_index=fold, cv_folds=2)
    with pytest.raises(tf.errors.OpError, match=re.escape(
            f"slide {frame['slide'][5]!r} ({poisoned}): expected finite features, but 3 of {len(x)} tiles hold NaN "
            "or infinity (tiles [3, 7, 9]); drop those tiles from the file")):
        list(val_ds)
    kept = predict_slides(h.bag_model_file(tmp_path, x.shape[1]), frame, errors="keep")
    assert kept["error"][5].startswith("ValueError: expected finite features, but 3 of")
    assert (kept["error"].drop(5) == "").all()


def test_in_memory_bags_holding_nan_are_refused_naming_bags_and_instances():
    from glimr_cv.mil import kfold_bag_loader

    rng = np.random.default_rng(0)
    bags = [rng.random((4 + i, 3)).astype("float32") for i in range(6)]
    bags[1][2, 0] = np.nan
    bags[4][[0, 3], 1] = -np.inf
    with pytest.raises(ValueError, match=re.escape("bags: expected finite instances, but 2 bags hold NaN or infinity: "
                                                   "bags[1] (instances [2]); bags[4] (instances [0, 3]); drop those "
                                                   "instances")):
        kfold_bag_loader(bags, labels={"y": np.arange(6) % 2})


def test_cox_with_batches_of_one_bag_is_refused_when_the_search_is_made():
    from glimr_cv.space import validate_space
    from glimr_cv.space.notation import SpaceError
    from glimr_cv.survival import cox_loss

    space = {"tasks": {"risk": {"loss": {"name": "cox", "loss": cox_loss}, "loss_weight": 1.0, "metrics": []}},
             "optimization": {"method": "adam", "learning_rate": 0.01, "epochs": 1}, "data": {"batch_size": {1, 4}}}
    with pytest.raises(SpaceError, match=re.escape("tasks/risk/loss: cox_loss needs at least two rows per batch")):
        validate_space(space)
    space["data"]["batch_size"] = 4
    validate_space(space)


def test_manifest_frame_is_not_changed(cohort):
    before = cohort.copy()
    kfold_slide_loader(cohort.assign(path=[os.path.relpath(p) for p in cohort["path"]]), labels="high_risk")
    pd.testing.assert_frame_equal(cohort, before)


def test_every_bad_file_of_a_cohort_is_named_at_once(cohort, tmp_path):
    base = cohort.iloc[:8].copy().reset_index(drop=True)
    garbage = tmp_path / "garbage.h5"
    garbage.write_bytes(b"junk")
    bad = base.copy()
    for row, name in [(1, "gone.h5"), (4, "garbage.h5"), (6, "also_gone.h5")]:
        bad.loc[row, "path"] = str(tmp_path / name)
    with pytest.raises(ValueError) as raised:
        kfold_slide_loader(bad, labels="high_risk")
    message = str(raised.value)
    assert message.startswith("manifest: 3 of 8 slides cannot be read: ")
    for row, what in [(1, "no such feature file"), (4, "cannot read"), (6, "no such feature file")]:
        assert f"slide {base['slide'][row]!r} (row {row}): {what}" in message
    missing = base.copy()
    for row in range(7):
        missing.loc[row, "path"] = str(tmp_path / f"gone{row}.h5")
    with pytest.raises(FileNotFoundError, match=r"^manifest: 7 of 8 slides cannot be read: .*; and 2 more$"):
        kfold_slide_loader(missing, labels="high_risk")
    wide = base.copy()
    for row in (2, 5):
        _write_h5(tmp_path / f"wide{row}.h5", features=np.zeros((5, 12 + row), dtype="float32"))
        wide.loc[row, "path"] = str(tmp_path / f"wide{row}.h5")
    with pytest.raises(ValueError, match=re.escape(
            f"manifest: 2 slides have another number of features per tile: {base['slide'][2]!r} (14), "
            f"{base['slide'][5]!r} (17), but slide {base['slide'][0]!r} has 8, as 5 others do; expected one feature "
            "width (one extractor) for all slides")):
        kfold_slide_loader(wide, labels="high_risk")


def test_predict_slides_names_every_slide_it_could_not_predict_and_keeps_the_others_on_request(cohort, tmp_path):
    from glimr_cv.mil import predict_slides

    width = read_slide(cohort["path"][0]).shape[1]
    model = h.bag_model_file(tmp_path, width)
    bad = h.damaged_cohort(cohort, tmp_path)
    clean = predict_slides(model, cohort, batch_size=3)
    with pytest.raises(ValueError) as raised:
        predict_slides(model, bad, batch_size=3)
    message = str(raised.value)
    assert message.startswith(f"predict_slides: 3 of {len(bad)} slides could not be predicted: ")
    for slide, text in [(1, "FileNotFoundError: no such feature file"), (2, "OSError: "),
                        (3, f"ValueError: bags: expected instances of shape ({width},), as the model's input "
                            "'instances' takes them, but got instances of shape (3,)")]:
        assert f"{bad['slide'][slide]!r} ({bad['path'][slide]}): {text}" in message
    assert message.endswith("pass errors='keep' for the other slides' predictions and an 'error' column")
    kept = predict_slides(model, bad, batch_size=3, errors="keep")
    assert list(kept.columns) == ["slide", "prediction", "error"] and list(kept["slide"]) == list(bad["slide"])
    failed = kept["error"] != ""
    assert list(np.flatnonzero(failed)) == [1, 2, 3]
    assert np.isnan(np.stack(kept["prediction"][failed])).all()
    np.testing.assert_allclose(np.stack(kept["prediction"][~failed]), np.stack(clean["prediction"][~failed]),
                               rtol=1e-5)
    with pytest.raises(ValueError, match="errors: expected one of 'raise', 'keep', but got 'skip'"):
        predict_slides(model, cohort, errors="skip")
    with pytest.raises(ValueError, match=r"num_cpus: expected a number >= 0, but got -1"):  # before Ray starts
        predict_slides(model, cohort, ray=True, num_cpus=-1)
