"""Seeds: the same seed gives the same configurations and splits, and with one slot the same fold scores."""

import numpy as np
import pandas as pd
import pytest

import e2e_helpers as h


def test_the_same_seed_gives_the_same_configurations_and_splits():
    from glimr_cv import kfold_loader, sample_space
    from glimr_cv.space import validate_space

    space = validate_space(h.space())
    import random

    def configs(seed):
        rng = random.Random(seed)
        return [sample_space(space, rng) for _ in range(4)]

    assert configs(7) == configs(7) and configs(7) != configs(8)
    x, y = h.digits_arrays()
    a = kfold_loader(x, {"digit": y}, splitter="stratified", seed=3).folds(4)
    b = kfold_loader(x, {"digit": y}, splitter="stratified", seed=3).folds(4)
    c = kfold_loader(x, {"digit": y}, splitter="stratified", seed=4).folds(4)
    assert all(np.array_equal(p[1], q[1]) for p, q in zip(a, b))
    assert not all(np.array_equal(p[1], q[1]) for p, q in zip(a, c))


@pytest.mark.slow
def test_one_slot_and_op_determinism_give_the_same_fold_scores(ray_local, tmp_path):
    from ray import cloudpickle

    from glimr_cv import Search

    cloudpickle.register_pickle_by_value(h)

    def run(name, seed):
        search = Search(h.space(epochs=2), h.digits_builder, h.digits_loader, cv_folds=2, seed=seed,
                        deterministic=True)
        return search.experiment(str(tmp_path), name=name, num_samples=2, check=False, max_concurrent_trials=1)

    first, second = run("a", 5), run("b", 5)
    config_columns = [c for c in first.table if c.startswith("config/")]
    cols = ["config_id", "fold", "status", "digit_accuracy", "best_epoch"]
    pd.testing.assert_frame_equal(first.folds[cols], second.folds[cols])  # exactly: no tolerance
    pd.testing.assert_frame_equal(first.table[["config_id", *config_columns]],
                                  second.table[["config_id", *config_columns]])
