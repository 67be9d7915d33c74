"""End to end: a Cox model searched on GBSG2 (shipped with scikit-survival) on a local Ray.

Each fold's reported C-index must be Harrell's C of that fold's checkpointed model
on that fold's validation rows.
"""

import sys

import numpy as np
import pytest

pytest.importorskip("sksurv")

from glimr_cv import Search  # noqa: E402
from glimr_cv.survival import ConcordanceIndex, concordance_index, cox_loss, kfold_survival_loader  # noqa: E402

pytestmark = pytest.mark.slow

SPACE = {
    "units": {4, 8},
    "tasks": {
        "risk": {
            "loss": {"name": "cox", "loss": cox_loss, "kwargs": {"ties": "efron"}},
            "loss_weight": 1.0,
            "metrics": [{"name": "cindex", "metric": ConcordanceIndex}],
        }
    },
    "optimization": {"method": "adam", "learning_rate": [0.002, 0.02], "epochs": 3},
    "data": {"batch_size": 64},
}


def builder(config):
    import keras

    from glimr_cv import keras_losses, keras_metrics

    inputs = keras.Input((GBSG2_FEATURES,))
    h = keras.layers.Dense(config["units"], activation="relu")(inputs)
    outputs = {"risk": keras.layers.Dense(1, name="risk")(h)}  # a linear risk score
    losses, weights = keras_losses(config)
    return keras.Model(inputs, outputs), losses, weights, keras_metrics(config)


def gbsg2():
    import pandas as pd
    from sksurv.datasets import load_gbsg2

    x, y = load_gbsg2()
    return pd.get_dummies(x, drop_first=True, dtype=float).to_numpy(np.float32), y


GBSG2_FEATURES = gbsg2()[0].shape[1]


@pytest.fixture(scope="module", autouse=True)
def _ray(ray_local):
    from ray import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import the tests folder
    yield


def test_fold_scores_are_the_c_index_of_each_checkpointed_model_on_its_validation_rows(tmp_path):
    from sklearn.preprocessing import StandardScaler

    x, y = gbsg2()
    loader = kfold_survival_loader(x, y, task="risk", preprocess=StandardScaler(), seed=0, val_batch_size=128)
    search = Search(SPACE, builder, loader, metric="risk_cindex", mode="max", cv_folds=2, racing=None, seed=0)
    search.set_reporter(max_report_frequency=0)
    results = search.experiment(str(tmp_path), name="gbsg2", num_samples=2)

    folds = results.folds
    assert len(folds) == 4 and set(folds["status"]) == {"complete"}, folds[["config_id", "fold", "status", "error"]]
    labels = loader.labels["risk"]
    differences = []
    for row in folds.itertuples():
        model = results.load_model(row.config_id, row.fold)
        _, val_ds = loader(64, cv_index=row.fold, cv_folds=2)  # the fold's validation batches, preprocessed
        risk = model.predict(val_ds, verbose=0)["risk"]
        val = loader.folds(2)[row.fold][1]
        recomputed = concordance_index(labels[val, 0], labels[val, 1], risk)
        differences.append(abs(row.score - recomputed))
        assert differences[-1] <= 1e-5, (row.config_id, row.fold, row.score, recomputed)
        assert row.score == row.risk_cindex
        assert 0.5 < recomputed < 0.85  # a few epochs of a Cox MLP on GBSG2 rank better than chance
    print(f"fold scores vs recomputed C: max |difference| {max(differences):.2e}; "
          f"folds on a reused model: {int(folds['model_reused'].sum())}")
