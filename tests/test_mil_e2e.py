"""End to end: a search over the pooling of an attention MIL model, on bags of scikit-learn's digits, on a local Ray.

Bags of 3 to 10 digits are positive when they hold a 9; patients have 1 to 3
bags, which a stratified group splitter keeps on one side of each fold.
"""

import time

import numpy as np
import pytest

from glimr_cv import Search
from glimr_cv.mil import attention_weights, digit_bags, kfold_bag_loader
from glimr_cv.mil import demo

pytestmark = pytest.mark.slow


def test_a_search_tunes_the_attention_pooling_of_a_bag_model(ray_local, tmp_path):
    started = time.monotonic()
    data = digit_bags(80, target=9, seed=0)
    loader = kfold_bag_loader(data.bags, {"bag": data.labels}, groups=data.patients, splitter="stratified_group",
                              seed=0, val_batch_size=32)
    space = {
        **demo.SPACE,
        "units": 16,
        "pooling": {"attention", "gated"},
        "attention_units": {8, 16},
        "optimization": {"method": "adam", "learning_rate": 0.01, "epochs": 3},
        "data": {"batch_size": 16},
    }
    search = Search(space, demo.builder, loader, metric="bag_auc", mode="max", cv_folds=2, racing=None, seed=0)
    search.set_reporter(max_report_frequency=0)
    results = search.experiment(str(tmp_path), name="digit_bags", num_samples=2)

    table, folds = results.table, results.folds
    assert len(table) == 2 and list(table["status"]) == ["complete"] * 2, table.get("error")
    assert len(folds) == 4 and set(folds["status"]) == {"complete"}
    assert set(folds["fold"]) == {0, 1}

    # the best configuration's fold-1 model weighs the instances of a bag it validated on
    val = loader.folds(2)[1][1]
    patients_seen = set(data.patients[loader.folds(2)[1][0]])
    assert not patients_seen & set(data.patients[val])
    model = results.load_model(results.best_config_id, 1)
    assert model.get_layer("pooling").__class__.__name__ in {"AttentionPooling", "GatedAttentionPooling"}
    bag = int(val[0])
    weights = attention_weights(model, loader.bag(bag))
    assert weights.shape == (len(data.bags[bag]),) and np.all(weights > 0)
    np.testing.assert_allclose(weights.sum(), 1.0, rtol=1e-5)
    print(f"bag {bag} (digits {data.digits[bag].tolist()}): attention {[round(float(w), 3) for w in weights]}; "
          f"search and read-back took {time.monotonic() - started:.1f} s")
