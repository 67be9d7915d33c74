"""Seeds: the same seed gives the same configurations and splits, and with one slot the same fold scores."""

import numpy as np

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


# End to end: tests/test_stopping.py runs the same seed twice with one slot and op determinism (a fold
# killed mid-way and resumed, and the same search uninterrupted) and compares configurations and fold
# scores exactly.
