"""A worker's next fold of the same configuration reuses its model (glimr_cv.engine.fold.build_model).

Keras only, no Ray: the reused model must train exactly as a fresh build would.
"""

import json

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from glimr_cv import demo  # noqa: E402
from glimr_cv.engine import fold as fold_module, trainable  # noqa: E402
from glimr_cv.space.sections import OPTIMIZERS  # noqa: E402
from glimr_cv.engine.fold import TrialSpec, build_model as fold_model  # noqa: E402


def params(method="adam", units=16):
    return {
        "units": units, "layers": 2, "dropout": 0.3, "activation": "relu",  # dropout: seed state matters
        "tasks": demo.SPACE["tasks"],
        "optimization": {"method": method, "learning_rate": 0.01, "epochs": 2},
        "data": {"batch_size": 64},
    }


SPECS = {}


def spec(reuse):
    """One spec (one search) per setting, as every trial of a search shares its spec."""
    if reuse not in SPECS:
        SPECS[reuse] = TrialSpec(builder=demo.builder, loader=demo.loader, metric="digit_accuracy", mode="max", cv_folds=5,
                                 task_names=["digit"], metric_names=["digit_accuracy"], reuse_models=reuse)
    return SPECS[reuse]


def train(p, sp, fold):
    """Train like a trial: fresh or reused model, then fit two epochs on ``fold``."""
    trainable._drop_fold_gradients() if trainable._WORKER_GRADIENTS is not None else None
    previous = fold_module._LAST_MODEL[1] if fold_module._LAST_MODEL is not None else None
    key = (sp.run_id, json.dumps(p, sort_keys=True)) if sp.reuse_models else None
    model, reused = fold_model(p, sp, seed=1000 + fold, key=key)
    assert reused == (model is previous)
    train_ds, val_ds = demo.loader(64, cv_index=fold)
    history = model.fit(train_ds.take(6), validation_data=val_ds, epochs=2, verbose=0).history
    return model, history, [w.copy() for w in model.get_weights()]


@pytest.fixture(autouse=True)
def no_cached_model():
    fold_module._LAST_MODEL = None
    yield
    fold_module._LAST_MODEL = None


@pytest.mark.parametrize("method", ["adam", "nadam", "adagrad"])  # nadam: an extra variable; adagrad: non-zero slots
def test_reused_model_trains_exactly_like_a_fresh_one(method):
    p = params(method)
    fresh = [train(p, spec(False), fold) for fold in range(3)]
    reused = [train(p, spec(True), fold) for fold in range(3)]
    assert reused[1][0] is reused[0][0] and reused[2][0] is reused[0][0]  # one model, traced once
    assert fresh[1][0] is not fresh[0][0]
    for (_, h_fresh, w_fresh), (_, h_reused, w_reused) in zip(fresh, reused):
        assert h_reused == h_fresh  # every epoch's loss and metrics, bit for bit
        assert all(np.array_equal(a, b) for a, b in zip(w_fresh, w_reused))


def test_reused_model_keeps_its_traced_steps():
    p = params()
    model, _, _ = train(p, spec(True), 0)
    train_function, test_function = model.train_function, model.test_function
    train(p, spec(True), 1)
    assert model.train_function is train_function and model.test_function is test_function


def test_every_optimizer_can_be_reset():
    for method in sorted(OPTIMIZERS):
        p = params(method)
        first, _ = fold_model(p, spec(True), seed=1, key=method)
        assert fold_model(p, spec(True), seed=2, key=method) == (first, True), method


def test_another_search_gets_a_new_model():
    p = params()
    first, _, _ = train(p, spec(True), 0)
    other_search = TrialSpec(**{**vars(spec(True)), "run_id": "another"})
    second, _, _ = train(p, other_search, 1)
    assert second is not first


def test_another_configuration_gets_a_new_model():
    first, _, _ = train(params(units=16), spec(True), 0)
    other, _, _ = train(params(units=32), spec(True), 1)
    again, _, _ = train(params(units=32), spec(True), 2)
    assert other is not first
    assert again is other  # only the worker's last configuration is kept


def test_a_builder_whose_variables_change_gets_a_new_model():
    calls = []

    def builder(config):  # not a function of the config alone: every call is wider
        calls.append(1)
        return demo.builder({**config, "units": 8 * len(calls)})

    sp = TrialSpec(**{**vars(spec(True)), "builder": builder})
    first, _, _ = train(params(), sp, 0)
    second, _, _ = train(params(), sp, 1)
    assert second is not first
    assert second.layers[1].units == 16


def test_reuse_off_keeps_no_model():
    train(params(), spec(False), 0)
    assert fold_module._LAST_MODEL is None


def test_batch_norm_statistics_are_reset_too():
    def builder(config):  # moving mean and variance are non-trainable variables
        model, losses, weights, metrics = demo.builder(config)
        inputs = keras.Input((64,))
        outputs = model(keras.layers.BatchNormalization()(inputs))
        return keras.Model(inputs, outputs), losses, weights, metrics

    p = params()
    fresh_spec = TrialSpec(**{**vars(spec(False)), "builder": builder})
    reuse_spec = TrialSpec(**{**vars(spec(True)), "builder": builder})
    fresh = [train(p, fresh_spec, fold) for fold in range(2)]
    reused = [train(p, reuse_spec, fold) for fold in range(2)]
    assert reused[1][0] is reused[0][0]
    for (_, h_fresh, w_fresh), (_, h_reused, w_reused) in zip(fresh, reused):
        assert h_reused == h_fresh
        assert all(np.array_equal(a, b) for a, b in zip(w_fresh, w_reused))
