"""Deployment: the fold ensemble, export, refit, full-data loading and batch prediction."""

import json
import os
import re
import subprocess
import sys
import textwrap
import uuid

import numpy as np
import pandas as pd
import pytest

import e2e_helpers as h
from glimr_cv import kfold_loader
from glimr_cv.deploy import BatchPredictor, fold_ensemble, predict, predict_ray
from glimr_cv.deploy.batch import _check_columns, check_no_nan, load_keras_model, nan_rows, same_rows
from glimr_cv.deploy.refit import full_data, refit_epochs

keras = pytest.importorskip("keras")
tf = pytest.importorskip("tensorflow")


def _multitask_models(n=3):
    config = {"units": 8, "activation": "relu", "tasks": h.multitask_space()["tasks"]}
    config["tasks"]["parity"]["loss_weight"] = 0.5
    return [h.multitask_builder(config)[0] for _ in range(n)]


def _x(n=20, seed=0):
    return np.random.default_rng(seed).random((n, 64), dtype=np.float32)


# ---------------------------------------------------------------------------
# the ensemble, without a search
# ---------------------------------------------------------------------------


def test_fold_ensemble_averages_each_output_of_a_multi_output_model():
    models = _multitask_models(3)
    ensemble = fold_ensemble(models)
    x = _x()
    got = ensemble.predict(x, verbose=0)
    assert sorted(got) == ["digit", "parity"]
    for task in got:
        mean = np.mean([m.predict(x, verbose=0)[task] for m in models], axis=0)
        np.testing.assert_allclose(got[task], mean, rtol=1e-5, atol=1e-6)
    # fold models wrapped under distinct names, averaged by built-in layers named by task
    names = [layer.name for layer in ensemble.layers]
    assert {"fold_0", "fold_1", "fold_2", "digit", "parity"} <= set(names)
    assert all(type(layer).__module__.startswith("keras.") for layer in ensemble.layers
               if layer.name in ("digit", "parity"))


def test_fold_ensemble_keeps_named_inputs_and_rejects_mismatches():
    a, b = keras.Input((3,), name="a"), keras.Input((1,), name="b")
    joined = keras.layers.Concatenate()([a, b])
    m1 = keras.Model({"a": a, "b": b}, keras.layers.Dense(2, name="out")(joined))
    m2 = keras.models.clone_model(m1)
    x = {"a": _x(5)[:, :3], "b": _x(5)[:, :1]}
    got = fold_ensemble([m1, m2]).predict(x, verbose=0)
    np.testing.assert_allclose(got, (m1.predict(x, verbose=0) + m2.predict(x, verbose=0)) / 2, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="at least one model"):
        fold_ensemble([])
    with pytest.raises(ValueError, match="outputs"):
        fold_ensemble(_multitask_models(1) + [h.digits_builder({**h.space(), "units": 4, "activation": "relu"})[0]])


# ---------------------------------------------------------------------------
# predict, without Ray
# ---------------------------------------------------------------------------


def test_predict_takes_numpy_pandas_tf_data_and_paths(tmp_path):
    models = _multitask_models(1)
    model, x = models[0], _x(30)
    expected = model.predict(x, verbose=0)
    path = str(tmp_path / "m.keras")
    model.save(path)
    labels = {"digit": np.zeros(30), "parity": np.zeros((30, 1))}
    for data in (x, pd.DataFrame(x), tf.data.Dataset.from_tensor_slices(x).batch(7),
                 tf.data.Dataset.from_tensor_slices((x, labels)).batch(7)):
        for source in (model, path):
            got = predict(source, data, batch_size=8)
            assert isinstance(got, dict) and sorted(got) == ["digit", "parity"]
            for task in got:
                np.testing.assert_allclose(got[task], expected[task], rtol=1e-5, atol=1e-6)
    # one output: an array
    single = h.digits_builder({**h.space(), "units": 4, "activation": "relu"})[0]
    out = predict(single, x)
    assert isinstance(out, np.ndarray) and out.shape == (30, 10)
    np.testing.assert_allclose(out, single.predict(x, verbose=0)["digit"], rtol=1e-5, atol=1e-6)


def test_predict_named_inputs_from_dataframe_columns_and_dicts():
    a, b = keras.Input((3,), name="a"), keras.Input((1,), name="b")
    model = keras.Model({"a": a, "b": b}, keras.layers.Dense(2)(keras.layers.Concatenate()([a, b])))
    rng = np.random.default_rng(1)
    xa, xb = rng.random((6, 3), dtype=np.float32), rng.random(6, dtype=np.float32)
    expected = model.predict({"a": xa, "b": xb[:, None]}, verbose=0)
    frame = pd.DataFrame({"b": xb, "a": list(xa), "unused": 0})
    np.testing.assert_allclose(predict(model, frame), expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(predict(model, {"a": xa, "b": xb[:, None]}), expected, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match=r"inputs named \['a', 'b'\].*\['b'\] are missing"):
        predict(model, pd.DataFrame({"a": list(xa)}))
    with pytest.raises(TypeError, match="expected a NumPy array"):
        predict(model, object())
    with pytest.raises(FileNotFoundError, match="no such file"):
        predict("/nonexistent/model.keras", xa)


def _named_model():
    a, b = keras.Input((3,), name="a"), keras.Input((1,), name="b")
    joined = keras.layers.Concatenate()([a, b])
    return keras.Model({"a": a, "b": b}, {"y": keras.layers.Dense(2, name="y")(joined),
                                          "z": keras.layers.Dense(1, name="z")(a)})


def test_predict_on_zero_rows_gives_zero_rows_of_each_output():
    single = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    for data in (np.zeros((0, 4)), np.zeros((0, 4), "float32"), pd.DataFrame(np.zeros((0, 4))),
                 tf.data.Dataset.from_tensor_slices(np.zeros((0, 4), "float32")).batch(8),
                 tf.data.Dataset.from_tensor_slices(np.zeros((0, 4), "float32")).batch(8).filter(lambda x: True)):
        out = predict(single, data)
        assert isinstance(out, np.ndarray) and out.shape == (0, 2) and out.dtype == np.float32, (data, out)
    named = _named_model()
    for data in ({"a": np.zeros((0, 3)), "b": np.zeros((0, 1))},
                 pd.DataFrame({"a": pd.Series([], dtype=object), "b": pd.Series([], dtype="float32")})):
        out = predict(named, data)
        assert sorted(out) == ["y", "z"] and out["y"].shape == (0, 2) and out["z"].shape == (0, 1)
        assert out["y"].dtype == np.float32


def test_a_single_value_is_not_rows_of_features():
    single = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    with pytest.raises(ValueError, match=re.escape("data: expected rows of features (an array whose first axis is the "
                                                   "rows), but got a single value 3.0")):
        predict(single, 3.0)


def test_rows_of_another_shape_are_refused_naming_the_input_and_both_shapes():
    single = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    name = single.inputs[0].name
    for data, got in [([1.0], "1 row of shape ()"), (np.zeros((3, 3)), "3 rows of shape (3,)"),
                      (np.zeros((2, 4, 2)), "2 rows of shape (4, 2)")]:
        with pytest.raises(ValueError, match=re.escape(f"data: expected rows of shape (4,), as the model's input "
                                                       f"{name!r} takes them (a trailing axis of size 1 may be added "
                                                       f"or left out), but got {got}")):
            predict(single, data)
    with pytest.raises(ValueError, match=re.escape("data['a']: expected rows of shape (3,)")):
        predict(_named_model(), {"a": np.zeros((2, 2)), "b": np.zeros((2, 1))})
    a, b = keras.Input((3,), name="a"), keras.Input((1,), name="b")
    listed = keras.Model([a, b], keras.layers.Dense(1)(keras.layers.Concatenate()([a, b])))
    with pytest.raises(ValueError, match=re.escape("data[1]: expected rows of shape (1,), as the model's input 'b'")):
        predict(listed, [np.zeros((2, 3)), np.zeros((2, 2))])


def test_a_trailing_axis_of_size_one_is_taken_either_way_and_in_any_order():
    # plain Keras fails on the second call: its predict function, traced for one rank, cannot retrace for the other
    single = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    x = np.arange(12, dtype="float32").reshape(3, 4)
    expected = single.predict(x, verbose=0)
    np.testing.assert_allclose(predict(single, x[..., None]), expected, rtol=1e-6)
    np.testing.assert_allclose(predict(single, x), expected, rtol=1e-6)
    one = keras.Sequential([keras.Input((1,)), keras.layers.Dense(2)])
    assert predict(one, np.zeros(5)).shape == predict(one, np.zeros((5, 1))).shape == (5, 2)
    a, b = keras.Input((3,), name="a"), keras.Input((1,), name="b")
    listed = keras.Model([a, b], keras.layers.Concatenate()([a, b]))
    assert predict(listed, [np.zeros((2, 3)), np.zeros(2)]).shape == (2, 4)


def test_a_ray_data_batch_of_another_shape_is_refused_before_keras_sees_it(tmp_path):
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    model.save(tmp_path / "m.keras")
    predictor = BatchPredictor(str(tmp_path / "m.keras"), feature_columns=["a", "b", "c"], keep_columns=["id"])
    batch = {"a": np.zeros(2), "b": np.zeros(2), "c": np.zeros(2), "id": np.arange(2)}
    with pytest.raises(ValueError, match=re.escape("predict_ray: features: expected rows of shape (4,)")
                       + ".*" + re.escape("but got 2 rows of shape (3,)")):
        predictor(batch)
    batch["d"] = np.ones(2)
    predictor.feature_columns = ["a", "b", "c", "d"]
    assert predictor(batch)["prediction"].shape == (2, 2)


def test_inputs_with_different_numbers_of_rows_are_refused_naming_each():
    with pytest.raises(ValueError, match=r"data: expected the same number of rows for every input, but got "
                                         r"'a': 2 rows, 'b': 3 rows"):
        predict(_named_model(), {"a": np.zeros((2, 3)), "b": np.zeros((3, 1))})
    a, b = keras.Input((3,), name="a"), keras.Input((1,), name="b")
    listed = keras.Model([a, b], keras.layers.Dense(1)(keras.layers.Concatenate()([a, b])))
    with pytest.raises(ValueError, match=r"'a': 4 rows, 'b': 1 row$"):
        predict(listed, [np.zeros((4, 3)), np.zeros((1, 1))])
    assert same_rows("data", {"a": np.zeros((2, 3)), "b": [[1], [2]]}) == 2
    with pytest.raises(ValueError, match="'b': a scalar"):
        same_rows("data", {"a": np.zeros(2), "b": 1.0})


def test_a_corrupt_model_file_is_not_reported_as_a_missing_one(tmp_path):
    import zipfile

    junk = tmp_path / "junk.keras"
    junk.write_bytes(b"\x00" * 100)
    with pytest.raises(ValueError, match=r"^model: cannot read .*junk\.keras as a Keras model \(not a zip archive"):
        predict(str(junk), np.zeros((1, 4)))
    truncated = tmp_path / "truncated.keras"
    keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)]).save(str(tmp_path / "whole.keras"))
    truncated.write_bytes((tmp_path / "whole.keras").read_bytes()[:300])
    with pytest.raises(ValueError, match=r"cannot read .*truncated\.keras as a Keras model"):
        load_keras_model(str(truncated))
    odd = tmp_path / "odd.keras"
    with zipfile.ZipFile(odd, "w") as archive:
        archive.writestr("config.json", '{"class_name": "NoSuchLayer", "config": {}}')
    with pytest.raises(ValueError, match=r"cannot read .*odd\.keras as a Keras model \(TypeError: .*NoSuchLayer"):
        load_keras_model(str(odd))
    with pytest.raises(FileNotFoundError, match=r"model: no such file .*missing\.keras"):
        load_keras_model(str(tmp_path / "missing.keras"))


def test_nan_features_are_refused_naming_rows_unless_allowed():
    x = np.ones((10, 4), "float32")
    x[3, 1], x[7] = np.nan, np.nan
    assert {k: v.tolist() for k, v in nan_rows(x).items()} == {None: [3, 7]}
    single = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    for data in (x, pd.DataFrame(x)):
        with pytest.raises(ValueError, match=r"data: expected features without NaN, but data has NaN in 2 rows "
                                             r"\[3, 7\]; pass allow_nan=True"):
            predict(single, data)
    with pytest.raises(ValueError, match=r"batch 1 \(from 0\) of the tf.data.Dataset has NaN; pass allow_nan"):
        predict(single, tf.data.Dataset.from_tensor_slices((x, np.zeros(10))).batch(3))
    named = _named_model()
    with pytest.raises(ValueError, match=r"data\['b'\] has NaN in 1 row \[1\]"):
        predict(named, {"a": np.ones((3, 3)), "b": np.array([[0.0], [np.nan], [1.0]])})
    with pytest.raises(ValueError, match=r"in input 'a'"):
        predict(named, tf.data.Dataset.from_tensor_slices({"a": x[:, :3], "b": x[:, :1] * 0}).batch(5))
    allowed = predict(single, x, allow_nan=True)
    assert allowed.shape == (10, 2) and np.isnan(allowed[3]).all() and np.isfinite(allowed[0]).all()
    assert predict(single, tf.data.Dataset.from_tensor_slices(x).batch(4), allow_nan=True).shape == (10, 2)
    with pytest.raises(TypeError, match="allow_nan: expected True or False"):
        predict(single, x, allow_nan="yes")
    check_no_nan("data", np.array([[1, 2]]))  # integers hold no NaN


def test_predict_ray_columns_are_checked_against_the_schema_without_reading_data():
    columns = ["id", "features"]
    _check_columns(columns, "features", ["id"], None)
    with pytest.raises(ValueError, match=r"^feature_columns: expected columns of the dataset \['id', 'features'\], "
                                         r"but 'nope' is not among them"):
        _check_columns(columns, "nope", [], None)
    with pytest.raises(ValueError, match=r"^keep_columns: .* but \['x', 'y'\] are not among them"):
        _check_columns(columns, None, ["x", "y"], None)
    with pytest.raises(ValueError, match=r"the model's named inputs \['a', 'b'\] \(or feature_columns\)"):
        _check_columns(columns, None, [], ["a", "b"])
    _check_columns(columns, "features", [], ["a", "b"])  # explicit feature columns replace the named inputs


# ---------------------------------------------------------------------------
# refit pieces: the loader's full-data mode and the epoch count
# ---------------------------------------------------------------------------


def test_kfold_loader_full_mode_gives_every_row_preprocessed_on_all_rows():
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(0)
    x = rng.normal(3.0, 2.0, (50, 4)).astype("float32")
    y = np.arange(50) % 2
    loader = kfold_loader(x, {"t": y}, preprocess=StandardScaler(), seed=3)
    ds = loader.full(batch_size=16)
    batches = list(ds)
    assert [len(b[0]) for b in batches] == [16, 16, 16, 2]
    feats = np.concatenate([b[0].numpy() for b in batches])
    labels = np.concatenate([b[1]["t"].numpy() for b in batches])
    expected = StandardScaler().fit(x).transform(x)
    order = np.argsort(feats[:, 0])
    np.testing.assert_allclose(np.sort(feats[:, 0]), np.sort(expected[:, 0]), rtol=1e-5, atol=1e-5)
    assert sorted(labels.tolist()) == sorted(y.tolist())
    assert abs(feats.mean()) < 1e-5 and not np.array_equal(order, np.arange(50))  # scaled on all rows, shuffled
    second = np.concatenate([b[0].numpy() for b in ds])
    assert not np.array_equal(second, feats)  # reshuffled every epoch
    with pytest.raises(ValueError, match="batch_size"):
        loader.full(0)


def test_refit_without_data_needs_a_kfold_loader():
    with pytest.raises(TypeError, match=r"pass data=, a tf.data.Dataset"):
        full_data(h.digits_loader, {"data": {"batch_size": 32}})


def test_refit_epochs_is_the_median_best_epoch_rounded_half_up():
    folds = pd.DataFrame({"config_id": [0, 0, 0, 0, 1], "status": ["complete"] * 3 + ["failed", "complete"],
                          "best_epoch": [2, 3, 7, np.nan, 5]})
    assert refit_epochs(folds, 0) == 3
    folds.loc[2, "best_epoch"] = 4  # median of 2, 3, 4
    folds.loc[3, "status"], folds.loc[3, "best_epoch"] = "complete", 5  # median of 2, 3, 4, 5 = 3.5
    assert refit_epochs(folds, 0) == 4
    with pytest.raises(ValueError, match="epochs="):
        refit_epochs(folds, 2)


# ---------------------------------------------------------------------------
# on a tiny real search
# ---------------------------------------------------------------------------

_NO_GLIMR = textwrap.dedent("""
    import json, sys
    import numpy as np
    sys.modules["glimr_cv"] = None  # importing glimr_cv now fails
    try:
        import glimr_cv  # noqa: F401
        raise SystemExit("glimr_cv was importable")
    except ImportError:
        pass
    import keras
    paths, x_path, out = sys.argv[1:-2], sys.argv[-2], sys.argv[-1]
    x = np.load(x_path)
    result = {}
    for path in paths:
        pred = keras.saving.load_model(path).predict(x, verbose=0)
        result[path] = {k: v.tolist() for k, v in pred.items()} if isinstance(pred, dict) else pred.tolist()
    json.dump(result, open(out, "w"))
""")


@pytest.fixture(scope="module")
def tiny_run(ray_local, tmp_path_factory):
    from glimr_cv import Search

    x, y = h.digits_arrays()
    loader = kfold_loader(x, {"digit": y}, splitter="stratified", seed=0)
    search = Search(h.space(epochs=2), h.digits_builder, loader, cv_folds=2, racing=None, seed=0)
    search.set_reporter(max_report_frequency=0)
    results = search.experiment(str(tmp_path_factory.mktemp("deploy")), name="tiny", num_samples=1)
    assert results.best_config_id is not None
    return results


@pytest.mark.slow
def test_results_ensemble_predicts_the_mean_of_the_best_fold_models(tiny_run):
    x = h.digits_arrays()[0][:100]
    folds = tiny_run.best_models()
    assert len(folds) == 2
    ensemble = tiny_run.ensemble()
    got = ensemble.predict(x, verbose=0)
    mean = np.mean([m.predict(x, verbose=0)["digit"] for m in folds], axis=0)
    np.testing.assert_allclose(got["digit"], mean, rtol=1e-5, atol=1e-6)
    assert ensemble.name == f"glimr_cv_config{tiny_run.best_config_id}"


@pytest.mark.slow
def test_exported_ensembles_load_in_plain_keras_without_glimr_cv(tiny_run, tmp_path):
    path = tiny_run.export()
    assert path == os.path.join(tiny_run.path, "ensemble.keras") and os.path.isfile(path)
    multi = str(tmp_path / "multi.keras")
    models = _multitask_models(3)
    fold_ensemble(models).save(multi)
    x = h.digits_arrays()[0][:50]
    np.save(tmp_path / "x.npy", x)
    out = tmp_path / "out.json"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run([sys.executable, "-c", _NO_GLIMR, path, multi, str(tmp_path / "x.npy"), str(out)],
                          capture_output=True, text=True, env=env, cwd=str(tmp_path), timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    loaded = json.loads(out.read_text())
    mean = np.mean([m.predict(x, verbose=0)["digit"] for m in tiny_run.best_models()], axis=0)
    np.testing.assert_allclose(np.array(loaded[path]["digit"]), mean, rtol=1e-5, atol=1e-6)
    for task in ("digit", "parity"):
        fold_mean = np.mean([m.predict(x, verbose=0)[task] for m in models], axis=0)
        np.testing.assert_allclose(np.array(loaded[multi][task]), fold_mean, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_refit_trains_the_best_configuration_on_all_rows_for_the_median_best_epoch(tiny_run):
    x, _ = h.digits_arrays()
    epochs = refit_epochs(tiny_run.folds, tiny_run.best_config_id)
    model = tiny_run.refit()
    batch = tiny_run.best_config["data"]["batch_size"]
    assert int(model.optimizer.iterations.numpy()) == epochs * int(np.ceil(len(x) / batch))
    path = os.path.join(tiny_run.path, "refit.keras")
    assert os.path.isfile(path)
    np.testing.assert_allclose(predict(path, x[:64]), predict(model, x[:64]), rtol=1e-5, atol=1e-6)
    accuracy = np.mean(predict(model, x).argmax(1) == h.digits_arrays()[1])
    assert accuracy > 0.5  # it learned from the data


@pytest.mark.slow
def test_refit_on_given_data_for_given_epochs(tiny_run, tmp_path):
    x, y = h.digits_arrays()
    data = tf.data.Dataset.from_tensor_slices((x[:200], {"digit": y[:200]})).batch(50)
    model = tiny_run.refit(data=data, epochs=3, path=str(tmp_path / "r.keras"))
    assert int(model.optimizer.iterations.numpy()) == 3 * 4
    assert os.path.isfile(tmp_path / "r.keras")
    with pytest.raises(ValueError, match=r"data: expected labels in a dict keyed by the tasks \['digit'\]"):
        tiny_run.refit(data=tf.data.Dataset.from_tensor_slices((x, y)).batch(50), save=False)
    with pytest.raises(ValueError, match="epochs"):
        tiny_run.refit(data=data, epochs=0, save=False)


@pytest.mark.slow
def test_predict_ray_loads_the_model_once_per_worker(tiny_run, tmp_path):
    import ray.data

    path = tiny_run.export(str(tmp_path / "ensemble.keras"))
    x = h.digits_arrays()[0][:300]
    marks = str(tmp_path / "marks")
    os.makedirs(marks)

    class CountingPredictor(BatchPredictor):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            open(os.path.join(marks, f"load_{os.getpid()}_{uuid.uuid4().hex}"), "w").close()

        def __call__(self, batch):
            open(os.path.join(marks, f"batch_{os.getpid()}_{uuid.uuid4().hex}"), "w").close()
            return super().__call__(batch)

    ds = ray.data.from_items([{"id": i, "features": x[i]} for i in range(len(x))])
    out = predict_ray(path, ds, batch_size=50, feature_columns="features", keep_columns=["id"],
                      predictor=CountingPredictor).to_pandas().sort_values("id")
    assert out["id"].tolist() == list(range(len(x)))
    np.testing.assert_allclose(np.stack(out["prediction"].to_numpy()), predict(path, x), rtol=1e-5, atol=1e-6)
    loads = [f for f in os.listdir(marks) if f.startswith("load_")]
    batches = [f for f in os.listdir(marks) if f.startswith("batch_")]
    assert len(loads) == 1 and len(batches) >= 6, (loads, batches)
    with pytest.raises(TypeError, match="ray.data.Dataset"):
        predict_ray(path, x)


@pytest.mark.slow
def test_predict_ray_reports_user_mistakes_first_and_refuses_nan_unless_allowed(ray_local, tmp_path):
    import ray.data

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    path = str(tmp_path / "m.keras")
    model.save(path)
    x = np.random.default_rng(0).random((12, 4)).astype("float32")
    x[5, 2] = np.nan
    ds = ray.data.from_items([{"id": 100 + i, "features": x[i]} for i in range(len(x))])
    # mistakes found before any data is read: the user's error, not a RayTaskError around it
    with pytest.raises(ValueError, match=r"^feature_columns: expected columns of the dataset \['id', 'features'\], "
                                         r"but 'nope' is not among them"):
        predict_ray(path, ds, feature_columns="nope")
    with pytest.raises(ValueError, match=r"^keep_columns: .*but 'ident' is not among them"):
        predict_ray(path, ds, feature_columns="features", keep_columns=["ident"])
    corrupt = tmp_path / "corrupt.keras"
    corrupt.write_bytes(b"junk")
    with pytest.raises(ValueError, match=r"^model_path: cannot read .*corrupt\.keras as a Keras model"):
        predict_ray(str(corrupt), ds, feature_columns="features")
    with pytest.raises(ValueError, match="batch_size"):
        predict_ray(path, ds, batch_size=0)
    # NaN: found when the rows are read, named by the kept columns. No CPU: the failed run's actor keeps what it
    # holds while its exception is referenced (predict_ray's Notes), which the run below and the next test's
    # search on the test Ray's one CPU would wait for
    refused = predict_ray(path, ds, batch_size=4, feature_columns="features", keep_columns=["id"], num_cpus=0)
    with pytest.raises(Exception, match=r"expected features without NaN, but the features hold NaN in 1 row "
                                        r"\(id=\[105\]\); pass allow_nan=True"):
        refused.to_pandas()
    out = predict_ray(path, ds, batch_size=4, feature_columns="features", keep_columns=["id"],
                      allow_nan=True).to_pandas().sort_values("id")
    got = np.stack(out["prediction"].to_numpy())
    assert np.isnan(got[5]).all() and np.isfinite(np.delete(got, 5, axis=0)).all()
    np.testing.assert_allclose(np.delete(got, 5, axis=0), np.delete(predict(path, x, allow_nan=True), 5, axis=0),
                               rtol=1e-5, atol=1e-6)
