"""Nested cross-validation: subsets and outer splits, bad input, no leakage, and one small nested run."""

import glob
import json
import os
import uuid

import numpy as np
import pandas as pd
import pytest

import e2e_helpers as h
from glimr_cv import KFoldLoader, NestedResults, kfold_loader, nested_cv

# ---------------------------------------------------------------------------
# subset and outer folds, without Ray
# ---------------------------------------------------------------------------


def _patients(n=60, n_groups=12, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3)).astype("float32")
    groups = rng.permutation(np.arange(n) % n_groups)  # 5 rows per patient, scattered
    y = (groups % 2).astype("int64")  # one class per patient, as a diagnosis is
    return x, y, groups


def test_subset_keeps_settings_and_holds_only_its_rows():
    from sklearn.preprocessing import StandardScaler

    x, y, groups = _patients()
    strat = np.arange(60) % 3
    loader = kfold_loader({"a": x, "b": x[:, :1]}, {"t": y, "u": x[:, 0]}, groups=groups, splitter="stratified_group",
                          preprocess={"a": StandardScaler()}, shuffle=False, seed=7, val_batch_size=5, stratify=strat)
    loader.folds(3)  # a cache of the full loader's folds must not reach the subset
    rows = np.flatnonzero(groups < 8)
    sub = loader.subset(rows)
    assert type(sub) is KFoldLoader and sub.n == len(rows) == 40
    assert (sub.splitter, sub.seed, sub.shuffle, sub.val_batch_size) == ("stratified_group", 7, False, 5)
    assert sub.preprocess is loader.preprocess  # the unfitted template, cloned per fold
    np.testing.assert_array_equal(sub.features["a"], x[rows])
    np.testing.assert_array_equal(sub.features["b"], x[rows, :1])
    np.testing.assert_array_equal(sub.labels["t"], y[rows])
    np.testing.assert_array_equal(sub.labels["u"], x[rows, 0])
    np.testing.assert_array_equal(sub.groups, groups[rows])
    np.testing.assert_array_equal(sub.stratify, strat[rows])
    # its folds split only its rows, and the loader it came from is unchanged
    folds = sub.folds(3)
    assert sorted(np.concatenate([v for _, v in folds]).tolist()) == list(range(40))
    assert loader.n == 60 and list(loader._folds) == [3] and len(loader.features["a"]) == 60
    # a boolean mask is the same subset; a task name for stratify stays a name
    np.testing.assert_array_equal(loader.subset(groups < 8).features["a"], sub.features["a"])
    assert kfold_loader(x, {"t": y}, splitter="stratified").subset(rows).stratify == "t"


def test_subset_keeps_the_class_of_a_survival_loader_and_a_splitter_object():
    from sklearn.model_selection import KFold

    from glimr_cv.survival import kfold_survival_loader

    rng = np.random.default_rng(1)
    x = rng.normal(size=(40, 2)).astype("float32")
    survival = kfold_survival_loader(x, rng.uniform(1, 10, 40), np.arange(40) % 2, task="risk")
    sub = survival.subset(np.arange(10, 40))
    assert type(sub) is type(survival) and sub.task == "risk" and sub.n == 30
    np.testing.assert_array_equal(sub.labels["risk"], survival.labels["risk"][10:])
    splitter = KFold(3, shuffle=True, random_state=0)
    loader = kfold_loader(x, {"t": np.arange(40) % 2}, splitter=splitter)
    sub = loader.subset(np.arange(0, 40, 2))
    assert sub.splitter is splitter and [len(v) for _, v in sub.folds(3)] == [7, 7, 6]
    with pytest.raises(ValueError, match=r"outer_folds: expected 3, the folds splitter .* makes"):
        loader.outer_folds(5)


@pytest.mark.parametrize("splitter", ["group", "stratified_group"])
def test_outer_and_inner_folds_keep_patients_apart_and_test_every_row_once(splitter):
    x, y, groups = _patients()
    loader = kfold_loader(x, {"t": y}, groups=groups, splitter=splitter, seed=3)
    outer = loader.outer_folds(3)
    assert len(outer) == 3
    tested = np.concatenate([test for _, test in outer])
    np.testing.assert_array_equal(np.sort(tested), np.arange(60))  # each row tested exactly once
    for train, test in outer:
        assert not set(groups[train]) & set(groups[test])
        assert sorted(np.concatenate([train, test]).tolist()) == list(range(60))
        inner = loader.subset(train)
        for inner_train, inner_val in inner.folds(2):  # inner folds index the subset: map back to the loader's rows
            assert not set(groups[train[inner_train]]) & set(groups[train[inner_val]])
            assert not set(train[np.concatenate([inner_train, inner_val])]) & set(test)


def test_subset_and_outer_folds_name_bad_input():
    x, y, groups = _patients()
    loader = kfold_loader(x, {"t": y}, groups=groups, splitter="group")
    for rows, error, match in [
        ([0, 1, 1], ValueError, r"rows: expected distinct indices, but got 1 repeated"),
        ([0, 60], ValueError, r"rows: expected indices in \[0, 60\), but got 60"),
        ([-1, 2], ValueError, r"rows: expected indices in \[0, 60\), but got -1"),
        ([3], ValueError, r"rows: expected at least 2 rows"),
        (np.ones(59, bool), ValueError, r"rows: expected a boolean mask of shape \(60,\)"),
        ([0.0, 1.0], TypeError, r"rows: expected a 1-D array of row indices"),
        ([[0, 1]], TypeError, r"rows: expected a 1-D array of row indices"),
    ]:
        with pytest.raises(error, match=match):
            loader.subset(rows)
    with pytest.raises(ValueError, match=r"outer_folds: expected at most 12 \(the number of distinct groups\)"):
        loader.outer_folds(13)
    with pytest.raises(ValueError, match=r"outer_folds: expected an int in \[2, 60\]"):
        loader.outer_folds(1)


def _search(loader, **kwargs):
    from glimr_cv import Search

    search = Search(h.space(epochs=1), h.digits_builder, loader, cv_folds=kwargs.pop("cv_folds", 2), **kwargs)
    search.set_reporter(max_report_frequency=0)
    return search


def test_nested_cv_names_bad_input_before_anything_runs(tmp_path):
    x, y = h.digits_arrays()
    with pytest.raises(TypeError, match=r"loader: nested cross-validation, which splits its rows into outer folds, "
                                        r"needs a loader that holds its rows .* but the search's loader loader lacks n, "
                                        r"labels, groups, preprocess"):
        nested_cv(_search(h.digits_loader), str(tmp_path))
    with pytest.raises(TypeError, match=r"search: expected a glimr_cv.Search, but got dict"):
        nested_cv({}, str(tmp_path))
    search = _search(kfold_loader(x, {"digit": y}, splitter="stratified"))
    with pytest.raises(ValueError, match=r"final: expected one of 'ensemble', 'refit', but got 'best'"):
        nested_cv(search, str(tmp_path), final="best")
    with pytest.raises(ValueError, match=r"outer_folds: expected an int in \[2, 1797\]"):
        nested_cv(search, str(tmp_path), outer_folds=1)
    with pytest.raises(TypeError, match=r"name: expected a folder name or None, but got 3"):
        nested_cv(search, str(tmp_path), name=3)
    # patients: 4 of them, so an outer training side holds 2, too few for 3 inner folds
    few = kfold_loader(x[:40], {"digit": y[:40]}, groups=np.arange(40) % 4, splitter="group")
    with pytest.raises(ValueError, match=r"outer fold 0: its 20 training rows cannot make the search's folds; "
                                         r"cv_folds: expected at most 2 \(the number of distinct groups\)"):
        nested_cv(_search(few, cv_folds=3), str(tmp_path), outer_folds=2)
    # a name that holds another nested run is not mixed into it
    nested_cv_dir = tmp_path / "run"
    nested_cv_dir.mkdir()
    (nested_cv_dir / "nested.json").write_text(json.dumps({"outer_folds": 3}))
    with pytest.raises(ValueError, match=r"name: expected a new name or the same nested run, .* other outer_folds, "
                                         r"rows, metric, mode, test_rows"):
        nested_cv(search, str(tmp_path), outer_folds=2, name="run")
    assert not glob.glob(str(tmp_path / "**" / "outer_*"), recursive=True)  # nothing ran


def test_nested_results_summarise_the_outer_scores():
    table = pd.DataFrame({"outer_fold": [0, 1, 2], "outer_digit_accuracy": [0.8, 0.9, 1.0]})
    results = NestedResults(path="/x", metric="digit_accuracy", mode="max", final="ensemble", table=table,
                            inner=[], splits=[])
    assert results.score_mean == pytest.approx(0.9) and results.score_std == pytest.approx(np.std([0.8, 0.9, 1.0]))
    assert str(results) == "outer digit_accuracy: 0.9000 ± 0.0816 over 3 folds"
    assert repr(results) == ("NestedResults(outer digit_accuracy: 0.9000 ± 0.0816 over 3 folds, final='ensemble', "
                             "path='/x')")


# ---------------------------------------------------------------------------
# a small nested run: 2 outer x 2 inner folds, 2 configurations, 2 epochs
# ---------------------------------------------------------------------------

_ID_SCALE = 2048  # row i carries i / 2048 in its last feature, exact in float32 (digits has 1797 rows)


class RecordingLoader(KFoldLoader):
    """A KFoldLoader that writes, for every fold or full-data dataset it makes, which rows it holds and serves.

    Rows are told by their content (the id feature), not by the loader's own bookkeeping, and written to
    files in ``record_dir``, since the inner searches load their folds in Ray worker processes.
    """

    record_dir = None

    def _record(self, kind, train, val):
        def ids(rows):
            return np.rint(self.features[rows, -1] * _ID_SCALE).astype(np.int64)

        np.savez(os.path.join(self.record_dir, f"{kind}_{os.getpid()}_{uuid.uuid4().hex}.npz"),
                 held=ids(np.arange(self.n)), train=ids(train), val=ids(val))

    def __call__(self, batch_size, cv_index=0, cv_folds=5):
        train, val = self._fold(cv_index, cv_folds)
        self._record("fold", train, val)
        return super().__call__(batch_size, cv_index, cv_folds)

    def full(self, batch_size):
        self._record("full", np.arange(self.n), np.arange(0))
        return super().full(batch_size)


def _builder(config):
    import keras

    from glimr_cv import keras_losses, keras_metrics

    inputs = keras.Input((65,))
    hidden = keras.layers.Dense(config["hidden"]["units"], activation="relu")(inputs)
    hidden = keras.layers.Dropout(config["hidden"].get("dropout", 0.0))(hidden)
    outputs = {"digit": keras.layers.Dense(10, activation="softmax", name="digit")(hidden)}
    losses, weights = keras_losses(config)
    return keras.Model(inputs, outputs), losses, weights, keras_metrics(config)


def _records(folder, kind):
    out = []
    for path in sorted(glob.glob(os.path.join(folder, f"{kind}_*.npz"))):
        with np.load(path) as f:
            out.append({k: f[k] for k in ("held", "train", "val")})
    return out


@pytest.fixture(scope="module")
def nested_run(ray_local, tmp_path_factory):
    from ray import tune

    from glimr_cv import Search

    x, y = h.digits_arrays()
    ids = (np.arange(len(x)) / _ID_SCALE).astype("float32")
    loader = RecordingLoader(np.hstack([x, ids[:, None]]), {"digit": y}, splitter="stratified", seed=0)
    loader.record_dir = str(tmp_path_factory.mktemp("records"))
    # conditional: "dropout" exists only in the second option (its column is NaN where the first was chosen)
    space = {"hidden": tune.choice([{"units": {16, 32}}, {"units": 24, "dropout": [0.0, 0.2]}]),
             "tasks": h.space()["tasks"], "data": {"batch_size": 32},
             "optimization": {"method": "adam", "learning_rate": {0.01, 0.02}, "epochs": 2}}
    search = Search(space, _builder, loader, cv_folds=2, racing=None, seed=0)
    search.set_reporter(max_report_frequency=0)
    root = str(tmp_path_factory.mktemp("nested"))
    # one fold at a time: on 2 shared cores, one worker's TensorFlow import beats two
    run = {"outer_folds": 2, "name": "digits", "num_samples": 2, "check": False, "max_concurrent_trials": 1}
    ensemble = nested_cv(search, root, final="ensemble", **run)
    inner_fold_records = _records(loader.record_dir, "fold")
    # the same run again: another final model from the finished inner searches, then all of it read back
    refit = nested_cv(search, root, final="refit", **run)
    again = nested_cv(search, root, final="ensemble", **run)
    return {"loader": loader, "x": x, "y": y, "root": root, "ensemble": ensemble, "refit": refit, "again": again,
            "fold_records": inner_fold_records, "fold_records_at_end": _records(loader.record_dir, "fold")}


@pytest.mark.slow
def test_no_outer_test_row_reaches_an_inner_search(nested_run):
    loader, ensemble = nested_run["loader"], nested_run["ensemble"]
    splits = ensemble.splits
    n = loader.n
    # the outer test rows are every row exactly once, and are the loader's own outer folds
    np.testing.assert_array_equal(np.sort(np.concatenate([test for _, test in splits])), np.arange(n))
    for (train, test), (train2, test2) in zip(splits, loader.outer_folds(2)):
        np.testing.assert_array_equal(train, train2)
        np.testing.assert_array_equal(test, test2)

    def outer_fold_of(record):  # the one outer fold whose training rows are exactly what this loader holds
        matches = [k for k, (train, _) in enumerate(splits) if np.array_equal(np.sort(record["held"]), train)]
        assert len(matches) == 1, "an inner loader held rows other than one outer fold's training rows"
        return matches[0]

    records = nested_run["fold_records"]
    assert records
    served = {0: set(), 1: set()}
    for record in records:
        k = outer_fold_of(record)
        train, val = set(record["train"].tolist()), set(record["val"].tolist())
        assert not train & val and train | val == set(record["held"].tolist())
        served[k] |= train | val
    for k, (train, test) in enumerate(splits):
        assert served[k] == set(train.tolist())  # every training row of outer fold k, and nothing else
        assert not served[k] & set(test.tolist())
    # the refits trained on the outer training rows only, one per outer fold
    full = _records(loader.record_dir, "full")
    assert sorted(outer_fold_of(r) for r in full) == [0, 1]
    for record in full:
        assert set(record["train"].tolist()) == set(splits[outer_fold_of(record)][0].tolist())
    # nor does any saved inner experiment hold an outer test row
    from glimr_cv import Search

    for k, (train, _) in enumerate(splits):
        saved = Search.load(ensemble.path, f"outer_{k}").loader
        np.testing.assert_array_equal(np.rint(saved.features[:, -1] * _ID_SCALE).astype(int), train)


@pytest.mark.slow
def test_nested_run_table_scores_and_folders(nested_run):
    ensemble, refit, x, y = nested_run["ensemble"], nested_run["refit"], nested_run["x"], nested_run["y"]
    columns = ["outer_fold", "n_train", "n_test", "config_id", "inner_mean_digit_accuracy", "outer_digit_accuracy",
               "outer_digit_loss", "outer_loss", "config/hidden/units", "config/hidden/dropout",
               "config/optimization/learning_rate"]
    for results in (ensemble, refit):
        table = results.table
        assert list(table.columns) == columns and len(table) == 2, table.to_string()
        assert table["outer_fold"].tolist() == [0, 1]
        assert (table["n_train"] + table["n_test"]).tolist() == [len(x)] * 2 and table["n_test"].sum() == len(x)
        assert results.score_mean == pytest.approx(table["outer_digit_accuracy"].mean())
        assert results.score_std == pytest.approx(np.std(table["outer_digit_accuracy"]))
        assert str(results).startswith("outer digit_accuracy: ") and str(results).endswith(" over 2 folds")
        assert (table["outer_digit_accuracy"] > 0.5).all(), table  # chance is 0.1
        for k, inner in enumerate(results.inner):
            assert inner.path == os.path.join(nested_run["root"], "digits", f"outer_{k}")
            assert table["config_id"][k] == inner.best_config_id and len(inner.table) == 2
            best = inner.table[inner.table["config_id"] == inner.best_config_id].iloc[0]
            assert table["inner_mean_digit_accuracy"][k] == pytest.approx(best["mean_digit_accuracy"])
            chosen = inner.best_config["hidden"]
            assert table["config/hidden/units"][k] == chosen["units"]
            # a parameter of the option not chosen is NaN, not an error nor a made-up value
            assert (table["config/hidden/dropout"][k] == chosen["dropout"] if "dropout" in chosen
                    else np.isnan(table["config/hidden/dropout"][k]))
    # the outer score is the plain accuracy of the final model on the test rows, checked here with NumPy
    features = np.hstack([x, (np.arange(len(x)) / _ID_SCALE).astype("float32")[:, None]])
    for k, (_, test) in enumerate(ensemble.splits):
        fold_models = ensemble.inner[k].best_models()
        mean = np.mean([m.predict(features[test], verbose=0)["digit"] for m in fold_models], axis=0)
        assert ensemble.table["outer_digit_accuracy"][k] == pytest.approx(np.mean(mean.argmax(1) == y[test]), abs=1e-6)
        import keras

        model = keras.saving.load_model(os.path.join(refit.inner[k].path, "refit.keras"))
        predicted = model.predict(features[test], verbose=0)["digit"]
        accuracy = np.mean(predicted.argmax(1) == y[test])
        assert refit.table["outer_digit_accuracy"][k] == pytest.approx(accuracy, abs=1e-6)
    # a rerun read everything back: the same table, and no inner fold trained again
    pd.testing.assert_frame_equal(nested_run["again"].table, ensemble.table)
    assert len(nested_run["fold_records_at_end"]) == len(nested_run["fold_records"])
    assert sorted(os.listdir(os.path.join(nested_run["root"], "digits"))) == [
        "nested.json", "outer_0", "outer_0.choice.json", "outer_0.ensemble.json", "outer_0.refit.json",
        "outer_1", "outer_1.choice.json", "outer_1.ensemble.json", "outer_1.refit.json"]
