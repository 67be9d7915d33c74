"""Search.check(): one configuration tried in this process, before Ray starts.

One test per common mistake; each message says what was expected. Keras runs here,
Ray does not.
"""

import copy
import re

import numpy as np
import pytest

from glimr_cv import Search
from glimr_cv.demo import SPACE, builder, loader

keras = pytest.importorskip("keras")
tf = pytest.importorskip("tensorflow")

SMALL = copy.deepcopy(SPACE)
SMALL["data"]["batch_size"] = 32


def arrays_loader(features=64, label_key="digit", labels_as_dict=True):
    def load(batch_size, cv_index, cv_folds):
        x = np.zeros((16, features), "float32")
        y = np.zeros(16, "int32")
        labels = {label_key: y} if labels_as_dict else y
        ds = tf.data.Dataset.from_tensor_slices((x, labels)).batch(batch_size)
        return ds, ds
    return load


def test_a_correct_setup_passes_and_reports_every_metric():
    report = Search(SMALL, builder, loader).check()
    assert set(report) == {"digit_accuracy", "digit_loss", "loss"}


def test_builder_returning_the_wrong_tuple():
    search = Search(SMALL, lambda c: builder(c)[:3], loader)
    with pytest.raises(TypeError, match=re.escape(
            "builder: expected a function that returns (model, losses, loss_weights, metrics), but got one that returned "
            "a tuple of length 3")):
        search.check()


def test_builder_returning_a_model_alone():
    search = Search(SMALL, lambda c: builder(c)[0], loader)
    with pytest.raises(TypeError, match=re.escape(
            "builder: expected a function that returns (model, losses, loss_weights, metrics), but got one that returned "
            "Functional")):
        search.check()


def test_output_names_that_are_not_the_task_names():
    def misnamed(config):
        model, losses, weights, metrics = builder(config)
        inputs = keras.Input((64,))
        out = keras.layers.Dense(10, activation="softmax", name="dense_out")(inputs)
        return keras.Model(inputs, out), losses, weights, metrics

    with pytest.raises(ValueError, match=re.escape(
            "builder: expected a model whose outputs are named after the tasks ['digit'], but got outputs named "
            "['dense_out']; name each output layer after its task, e.g. keras.layers.Dense(..., name='digit')")):
        Search(SMALL, misnamed, loader).check()


def test_label_keys_that_are_not_the_task_names():
    with pytest.raises(ValueError, match=re.escape(
            "loader: expected train labels keyed by the tasks ['digit'], but got keys ['label']")):
        Search(SMALL, builder, arrays_loader(label_key="label")).check()


def test_labels_not_keyed_by_task():
    with pytest.raises(ValueError, match=re.escape(
            "loader: expected train labels in a dict keyed by task name, e.g. {'digit': y}, but got TensorSpec")):
        Search(SMALL, builder, arrays_loader(labels_as_dict=False)).check()


def test_loader_returning_non_datasets():
    def numpy_loader(batch_size, cv_index, cv_folds):
        return np.zeros((4, 64)), np.zeros(4)

    with pytest.raises(TypeError, match=re.escape(
            "loader: expected a function that returns (train_ds, val_ds), two tf.data.Dataset, but got one that "
            "returned (ndarray, ndarray)")):
        Search(SMALL, builder, numpy_loader).check()


def test_feature_shapes_that_do_not_fit_the_model():
    with pytest.raises(ValueError) as info:
        Search(SMALL, builder, arrays_loader(features=32)).check()
    text = str(info.value)
    assert text.startswith("preflight: training on one batch of fold 0 failed: ValueError:")
    assert "expected shape=(None, 64), found shape=(None, 32)" in text
    assert "loader gives features TensorSpec(shape=(None, 32)" in text
    assert "the model takes [(None, 64)] and outputs {'digit': (None, 10)}" in text


def test_a_metric_keras_will_not_report():
    def unnamed_metrics(config):
        model, losses, weights, _ = builder(config)
        return model, losses, weights, {"digit": [keras.metrics.SparseCategoricalAccuracy()]}

    with pytest.raises(ValueError, match=re.escape(
            "preflight: metric digit_accuracy: Keras logged no 'val_digit_accuracy' or 'val_accuracy'; logged keys are "
            "['loss', 'sparse_categorical_accuracy', 'val_loss', 'val_sparse_categorical_accuracy']")):
        Search(SMALL, unnamed_metrics, loader).check()


def test_preflight_can_be_switched_off(tmp_path, monkeypatch):
    search = Search(SMALL, builder, arrays_loader(label_key="label"))
    from glimr_cv.engine import runner

    monkeypatch.setattr(runner, "init_ray", lambda verbose=0, address=None: (_ for _ in ()).throw(RuntimeError("ray started")))
    with pytest.raises(RuntimeError, match="ray started"):  # got past the (skipped) preflight
        search.experiment(str(tmp_path), name="x", num_samples=1, check=False)
    with pytest.raises(ValueError, match="loader: expected train labels keyed by the tasks"):
        search.experiment(str(tmp_path), name="y", num_samples=1)
