"""Bags of scikit-learn's digits for multiple-instance learning, and a model to search on them.

A bag holds 3 to 10 digit images; it is positive when it holds the target digit
(9 by default), as in Ilse et al.'s MNIST-bags. Bags belong to synthetic
patients with 1 to 3 bags each, which a group splitter keeps on one side of each
fold. No network is used: digits ships with scikit-learn.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ..checks import check_int, expected

__all__ = ["DigitBags", "digit_bags", "SPACE", "builder"]


class DigitBags(NamedTuple):
    """Bags of digits; index ``i`` of each field is bag ``i``.

    Attributes
    ----------
    bags : list of numpy.ndarray
        float32 ``(n_i, 64)`` pixel rows in [0, 1], or ``(n_i, 8, 8, 1)`` images.
    labels : numpy.ndarray
        float32 ``(n_bags,)``: 1 when the bag holds the target digit, else 0.
    patients : numpy.ndarray
        int64 ``(n_bags,)``: the synthetic patient of each bag (``groups`` of a group splitter).
    digits : list of numpy.ndarray
        int64 ``(n_i,)``: the digit of each instance.
    """

    bags: list
    labels: np.ndarray
    patients: np.ndarray
    digits: list


def digit_bags(n_bags: int = 100, target: int = 9, min_size: int = 3, max_size: int = 10, positives: float = 0.5,
               max_bags_per_patient: int = 3, images: bool = False, seed: int = 0) -> DigitBags:
    """Bags of scikit-learn's digit images, positive when they hold ``target``.

    Each bag gets a size uniform in ``[min_size, max_size]``; a positive bag
    (probability ``positives``) holds 1 or 2 images of ``target`` (never more
    than its size) and other digits; a negative bag holds other digits only.
    Images are drawn without replacement, so no image is in two bags (nor in a
    fold's training and validation bags). Consecutive bags make a patient, with
    1 to ``max_bags_per_patient`` bags each.

    Parameters
    ----------
    n_bags : int
        Number of bags; the 1797 images bound it (about 180 per digit).
    target : int
        The digit that makes a bag positive, 0 to 9.
    min_size, max_size : int
        Bounds of the bag sizes, ``1 <= min_size <= max_size``.
    positives : float
        Probability that a bag is positive, in [0, 1].
    max_bags_per_patient : int
        Most bags of a patient, ``>= 1``.
    images : bool
        Instances as ``(8, 8, 1)`` images instead of 64-vectors.
    seed : int
        Seed of every draw.

    Returns
    -------
    DigitBags
        ``bags``, ``labels``, ``patients`` and the ``digits`` of each instance.

    Raises
    ------
    ValueError
        Naming the argument out of range, or ``n_bags`` when the digits run out.
    """
    from sklearn.datasets import load_digits

    check_int("n_bags", n_bags, 2)
    check_int("target", target, 0, 9)
    check_int("min_size", min_size, 1)
    check_int("max_size", max_size, min_size)
    check_int("max_bags_per_patient", max_bags_per_patient, 1)
    check_int("seed", seed, 0)
    if isinstance(positives, bool) or not isinstance(positives, (int, float)) or not 0 <= positives <= 1:
        raise ValueError(expected("positives", "a probability in [0, 1]", positives))

    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32)
    rng = np.random.default_rng(seed)
    sizes = rng.integers(min_size, max_size + 1, n_bags)
    labels = (rng.random(n_bags) < positives).astype(np.float32)
    n_targets = np.where(labels == 1, np.minimum(rng.integers(1, 3, n_bags), sizes), 0)
    pools = {True: list(rng.permutation(np.flatnonzero(y == target))),
             False: list(rng.permutation(np.flatnonzero(y != target)))}
    need = {True: int(n_targets.sum()), False: int((sizes - n_targets).sum())}
    for is_target, pool in pools.items():
        if need[is_target] > len(pool):
            kind = f"images of {target}" if is_target else f"images of digits other than {target}"
            raise ValueError(expected("n_bags", f"at most as many bags as the {len(pool)} {kind} can fill",
                                      got=f"{n_bags} (they need {need[is_target]})"))
    bags, digits = [], []
    for size, k in zip(sizes, n_targets):
        rows = np.array([pools[True].pop() for _ in range(k)] + [pools[False].pop() for _ in range(size - k)])
        rows = rows[rng.permutation(len(rows))]  # the target is anywhere in the bag
        bags.append(x[rows].reshape(-1, 8, 8, 1) if images else x[rows])
        digits.append(y[rows].astype(np.int64))
    per_patient = rng.integers(1, max_bags_per_patient + 1, n_bags)  # more than enough patients
    patients = np.repeat(np.arange(n_bags), per_patient)[:n_bags].astype(np.int64)
    return DigitBags(bags, labels, patients, digits)


SPACE = {
    "units": {16, 32},
    "pooling": {"attention", "gated", "mean"},
    "attention_units": {8, 16},
    "tasks": {
        "bag": {
            "loss": {"name": "bce", "loss": "BinaryCrossentropy"},
            "loss_weight": 1.0,
            "metrics": [{"name": "auc", "metric": "AUC"}, {"name": "accuracy", "metric": "BinaryAccuracy"}],
        }
    },
    "optimization": {"method": "adam", "learning_rate": [0.001, 0.01], "epochs": 10},
    "data": {"batch_size": {8, 16}},
}
"""A search space over :func:`builder`'s pooling, widths and learning rate, for task ``"bag"``."""


def builder(config: dict):
    """Each 64-pixel instance embedded by a Dense layer, the bag pooled (``config["pooling"]``), one sigmoid output.

    Takes ``{"instances": (B, n, 64), "mask": (B, n)}`` as
    :func:`~glimr_cv.mil.kfold_bag_loader` feeds them; the output is named ``"bag"``.
    """
    import keras

    from ..keras.helpers import keras_losses, keras_metrics
    from .layers import bag_pooling

    instances = keras.Input((None, 64), name="instances")
    mask = keras.Input((None,), dtype="bool", name="mask")
    h = keras.layers.Dense(config["units"], activation="relu")(instances)  # applied to each instance
    z = bag_pooling(config["pooling"], units=config["attention_units"], name="pooling")(h, mask=mask)
    outputs = {"bag": keras.layers.Dense(1, activation="sigmoid", name="bag")(z)}
    losses, loss_weights = keras_losses(config)
    return keras.Model({"instances": instances, "mask": mask}, outputs), losses, loss_weights, keras_metrics(config)
