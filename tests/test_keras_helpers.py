"""Keras builder helpers (glimr_cv.keras.helpers): losses, metrics, optimizers from a config."""

import re

import pytest

keras = pytest.importorskip("keras")

from glimr_cv.keras.helpers import keras_losses, keras_metrics, keras_optimizer  # noqa: E402
from glimr_cv.space.sections import OPTIMIZERS, metric_names  # noqa: E402


def mean_prediction(y_true, y_pred):
    return keras.ops.mean(y_pred)


def scaled_mse(y_true, y_pred, scale=1.0):
    return scale * keras.ops.mean(keras.ops.square(y_true - y_pred))


def two_task_config():
    return {
        "tasks": {
            "cls": {
                "loss": {
                    "name": "ce",
                    "loss": keras.losses.SparseCategoricalCrossentropy,
                    "kwargs": {"from_logits": True},
                },
                "loss_weight": 1,
                "metrics": [
                    {"name": "acc", "metric": "SparseCategoricalAccuracy"},
                    {"name": "top2", "metric": keras.metrics.SparseTopKCategoricalAccuracy, "kwargs": {"k": 2}},
                ],
            },
            "reg": {
                "loss": {"name": "mse", "loss": "mse"},
                "loss_weight": 0.5,
                "metrics": {"name": "mean_pred", "metric": mean_prediction},
            },
        }
    }


# --------------------------------------------------------------------------- losses


def test_losses_and_weights_are_keyed_by_task():
    losses, weights = keras_losses(two_task_config())
    assert set(losses) == {"cls", "reg"}
    assert weights == {"cls": 1.0, "reg": 0.5}
    assert all(type(w) is float for w in weights.values())


def test_loss_class_is_built_with_name_and_kwargs():
    losses, _ = keras_losses(two_task_config())
    assert isinstance(losses["cls"], keras.losses.SparseCategoricalCrossentropy)
    assert losses["cls"].name == "ce"
    assert losses["cls"].get_config()["from_logits"] is True


def test_loss_string_naming_a_function_resolves_to_it():
    losses, _ = keras_losses(two_task_config())
    assert losses["reg"] is keras.losses.mean_squared_error


def test_loss_string_naming_a_class_is_rebuilt_with_config_name_and_kwargs():
    config = {"tasks": {"t": {"loss": {"name": "bce", "loss": "BinaryCrossentropy", "kwargs": {"from_logits": True}}, "loss_weight": 2}}}
    losses, weights = keras_losses(config)
    assert isinstance(losses["t"], keras.losses.BinaryCrossentropy)
    assert losses["t"].name == "bce"
    assert losses["t"].get_config()["from_logits"] is True
    assert weights == {"t": 2.0}


def test_loss_function_with_kwargs_is_bound():
    config = {"tasks": {"t": {"loss": {"name": "s", "loss": scaled_mse, "kwargs": {"scale": 3.0}}, "loss_weight": 1}}}
    loss = keras_losses(config)[0]["t"]
    y_true, y_pred = keras.ops.zeros((2, 1)), keras.ops.ones((2, 1))
    assert float(loss(y_true, y_pred)) == pytest.approx(3.0)


def test_loss_function_without_kwargs_is_used_as_is():
    config = {"tasks": {"t": {"loss": {"name": "s", "loss": scaled_mse}, "loss_weight": 1}}}
    assert keras_losses(config)[0]["t"] is scaled_mse


def test_bad_loss_spec_raises_type_error_naming_the_path():
    config = {"tasks": {"t": {"loss": {"name": "s", "loss": 3}, "loss_weight": 1}}}
    with pytest.raises(TypeError, match=re.escape("tasks/t/loss: expected a Keras loss class, function or name, but got 3")):
        keras_losses(config)


# --------------------------------------------------------------------------- metrics


def test_metrics_are_keyed_by_task_and_named_by_config():
    metrics = keras_metrics(two_task_config())
    assert {task: [m.name for m in ms] for task, ms in metrics.items()} == {
        "cls": ["acc", "top2"],
        "reg": ["mean_pred"],
    }


@pytest.mark.parametrize(
    "metric, kwargs, cls",
    [
        (keras.metrics.AUC, {"num_thresholds": 50}, keras.metrics.AUC),
        ("SparseCategoricalAccuracy", {}, keras.metrics.SparseCategoricalAccuracy),
        ("binary_accuracy", {}, keras.metrics.MeanMetricWrapper),
        (mean_prediction, {}, keras.metrics.MeanMetricWrapper),
    ],
    ids=["class", "class-name", "function-name", "function"],
)
def test_metric_kinds_get_the_config_name(metric, kwargs, cls):
    config = {"tasks": {"t": {"metrics": [{"name": "my_metric", "metric": metric, "kwargs": kwargs}]}}}
    (built,) = keras_metrics(config)["t"]
    assert isinstance(built, cls)
    assert built.name == "my_metric"


def test_metric_class_kwargs_are_passed():
    config = {"tasks": {"t": {"metrics": {"name": "auc", "metric": keras.metrics.AUC, "kwargs": {"num_thresholds": 50}}}}}
    (auc,) = keras_metrics(config)["t"]
    assert auc.num_thresholds == 50


def test_function_metric_computes_the_function():
    config = {"tasks": {"t": {"metrics": [{"name": "mp", "metric": mean_prediction}]}}}
    (metric,) = keras_metrics(config)["t"]
    metric.update_state(keras.ops.zeros((4, 1)), keras.ops.full((4, 1), 2.0))
    assert float(metric.result()) == pytest.approx(2.0)


# --------------------------------------------------------------------------- optimizers

EXPECTED_CLASSES = {
    "sgd": keras.optimizers.SGD,
    "rms": keras.optimizers.RMSprop,
    "adam": keras.optimizers.Adam,
    "adamw": keras.optimizers.AdamW,
    "nadam": keras.optimizers.Nadam,
    "adagrad": keras.optimizers.Adagrad,
    "adadelta": keras.optimizers.Adadelta,
}

FULL_OPTIMIZATION = {
    "epochs": 7,
    "learning_rate": 0.003,
    "rho": 0.8,
    "momentum": 0.05,
    "beta_1": 0.7,
    "beta_2": 0.95,
    "use_ema": False,
    "ema_momentum": 0.95,
    "ema_overwrite_frequency": None,
}


def test_every_method_is_covered():
    assert set(EXPECTED_CLASSES) == set(OPTIMIZERS)


@pytest.mark.parametrize("method", sorted(OPTIMIZERS))
def test_optimizer_class_and_learning_rate(method):
    opt = keras_optimizer({"method": method, **FULL_OPTIMIZATION})
    assert type(opt) is EXPECTED_CLASSES[method]
    assert float(opt.learning_rate) == pytest.approx(0.003)


@pytest.mark.parametrize(
    "method, attribute, value",
    [
        ("sgd", "momentum", 0.05),
        ("rms", "rho", 0.8),
        ("rms", "momentum", 0.05),
        ("adadelta", "rho", 0.8),
        ("adam", "beta_1", 0.7),
        ("adamw", "beta_2", 0.95),
        ("nadam", "beta_1", 0.7),
    ],
)
def test_optimizer_gets_its_own_parameters(method, attribute, value):
    opt = keras_optimizer({"method": method, **FULL_OPTIMIZATION})
    assert getattr(opt, attribute) == pytest.approx(value)


def test_optimizer_ignores_keys_it_does_not_take():
    # Adam takes neither rho nor momentum nor epochs; none of them may reach its constructor.
    opt = keras_optimizer({"method": "adam", "learning_rate": 0.01, "epochs": 3, "rho": 0.9, "momentum": 0.5, "other": 1})
    assert type(opt) is keras.optimizers.Adam
    assert not hasattr(opt, "rho") and not hasattr(opt, "momentum")


def test_optimizer_ema_settings_are_passed():
    opt = keras_optimizer({**FULL_OPTIMIZATION, "method": "sgd", "use_ema": True, "ema_momentum": 0.95})
    assert opt.use_ema is True
    assert opt.ema_momentum == pytest.approx(0.95)


@pytest.mark.parametrize("method", ["lion", None, "Adam"])
def test_unknown_optimizer_lists_known_methods(method):
    msg = (
        f"optimization/method: unknown optimizer {method!r}; expected one of "
        "['adadelta', 'adagrad', 'adam', 'adamw', 'nadam', 'rms', 'sgd']"
    )
    config = {"learning_rate": 0.01} if method is None else {"method": method, "learning_rate": 0.01}
    with pytest.raises(ValueError, match=re.escape(msg)):
        keras_optimizer(config)


# --------------------------------------------------------------------------- compile and fit


def fit_one_epoch(model, config, y):
    """Compile as glimr_cv's trainable does (dicts keyed by task) and fit one epoch."""
    losses, weights = keras_losses(config)
    model.compile(
        optimizer=keras_optimizer({"method": "adam", "learning_rate": 1e-3, "epochs": 1}),
        loss=losses,
        loss_weights=weights,
        metrics=keras_metrics(config),
    )
    x = keras.random.normal((32, 4), seed=0)
    return model.fit(x, y, epochs=1, batch_size=16, validation_data=(x, y), verbose=0).history


def test_two_output_model_logs_val_task_metric_names():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((4,))
    hidden = keras.layers.Dense(8, activation="relu")(inputs)
    outputs = {"cls": keras.layers.Dense(3, name="cls")(hidden), "reg": keras.layers.Dense(1, name="reg")(hidden)}
    config = two_task_config()
    y = {"cls": keras.random.randint((32,), 0, 3, seed=1), "reg": keras.random.normal((32, 1), seed=2)}
    history = fit_one_epoch(keras.Model(inputs, outputs), config, y)
    for name in ("cls_acc", "cls_top2", "reg_mean_pred", "cls_loss", "reg_loss", "loss"):
        assert f"val_{name}" in history, sorted(history)
    # the names a search reports are exactly Keras' validation logs without the prefix
    assert {f"val_{n}" for n in metric_names(config)} <= set(history)


def test_single_output_model_logs_val_metric_name():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((4,))
    hidden = keras.layers.Dense(8, activation="relu")(inputs)
    outputs = {"out": keras.layers.Dense(1, activation="sigmoid", name="out")(hidden)}
    config = {
        "tasks": {
            "out": {
                "loss": {"name": "bce", "loss": keras.losses.BinaryCrossentropy},
                "loss_weight": 1.0,
                "metrics": [{"name": "acc", "metric": "binary_accuracy"}, {"name": "auc", "metric": keras.metrics.AUC}],
            }
        }
    }
    y = {"out": keras.ops.cast(keras.random.uniform((32, 1), seed=1) > 0.5, "float32")}
    history = fit_one_epoch(keras.Model(inputs, outputs), config, y)
    assert {"val_acc", "val_auc", "val_loss"} <= set(history)


def test_a_loss_function_with_kwargs_saves_with_the_model(tmp_path):
    # a functools.partial cannot be serialised by model.save; the search's refit and export save whole models
    import numpy as np

    from glimr_cv.keras.helpers import FunctionLoss

    @keras.saving.register_keras_serializable(package="glimr_cv_tests")
    def scaled_mse(y_true, y_pred, scale=1.0):
        return scale * keras.ops.mean((y_true - y_pred) ** 2)

    losses, _ = keras_losses({"tasks": {"y": {"loss": {"name": "smse", "loss": scaled_mse, "kwargs": {"scale": 3.0}},
                                              "loss_weight": 1.0, "metrics": []}}})
    assert isinstance(losses["y"], FunctionLoss) and losses["y"].name == "smse"
    inputs = keras.Input((2,))
    model = keras.Model(inputs, {"y": keras.layers.Dense(1, name="y")(inputs)})
    model.compile("sgd", loss=losses)
    x, y = np.ones((4, 2), "float32"), np.zeros((4, 1), "float32")
    before = model.evaluate(x, {"y": y}, verbose=0)
    model.save(tmp_path / "m.keras")
    reloaded = keras.saving.load_model(tmp_path / "m.keras")
    assert reloaded.loss["y"].fn_kwargs == {"scale": 3.0}
    assert reloaded.evaluate(x, {"y": y}, verbose=0) == pytest.approx(before)
