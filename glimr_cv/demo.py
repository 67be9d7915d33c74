"""The demo: a 5-fold CV search of a small Keras MLP on scikit-learn's digits.

The three steps a user writes are :data:`SPACE`, :func:`builder` and :func:`loader`.
"""

from __future__ import annotations

import functools
import os

import numpy as np

__all__ = ["SPACE", "builder", "loader", "digits_arrays", "run"]

SPACE = {
    "units": {32, 64, 128},
    "layers": [1, 2],
    "dropout": [0.0, 0.5, 0.05],
    "activation": {"relu", "gelu"},
    "tasks": {
        "digit": {
            "loss": {"name": "xent", "loss": "SparseCategoricalCrossentropy"},
            "loss_weight": 1.0,
            "metrics": [{"name": "accuracy", "metric": "SparseCategoricalAccuracy"}],
        }
    },
    "optimization": {
        "method": {"adam", "rms", "nadam"},
        "learning_rate": [0.0005, 0.01],
        "epochs": 8,
    },
    "data": {"batch_size": {32, 64}},
}


@functools.lru_cache(maxsize=1)
def digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """Digits features scaled to [0, 1] and labels; bundled with scikit-learn, no network."""
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    return (x / 16.0).astype("float32"), y.astype("int32")


def loader(batch_size: int, cv_index: int = 0, cv_folds: int = 5, seed: int = 0):
    """Train and validation ``tf.data`` datasets of fold ``cv_index`` (stratified, fixed seed)."""
    import tensorflow as tf
    from sklearn.model_selection import StratifiedKFold

    x, y = digits_arrays()
    splits = StratifiedKFold(cv_folds, shuffle=True, random_state=seed).split(x, y)
    train, val = next(s for i, s in enumerate(splits) if i == cv_index)
    train_ds = tf.data.Dataset.from_tensor_slices((x[train], {"digit": y[train]}))
    val_ds = tf.data.Dataset.from_tensor_slices((x[val], {"digit": y[val]}))
    return (
        train_ds.shuffle(len(train), seed=seed).batch(batch_size).prefetch(2),
        val_ds.batch(256).prefetch(2),
    )


def builder(config: dict):
    """An MLP with one softmax output named after the task."""
    import keras

    from glimr_cv import keras_losses, keras_metrics

    inputs = keras.Input((64,))
    h = inputs
    for _ in range(config["layers"]):
        h = keras.layers.Dense(config["units"], activation=config["activation"])(h)
        h = keras.layers.Dropout(config["dropout"])(h)
    outputs = {"digit": keras.layers.Dense(10, activation="softmax", name="digit")(h)}
    model = keras.Model(inputs, outputs)
    losses, loss_weights = keras_losses(config)
    return model, losses, loss_weights, keras_metrics(config)


def run(local_dir: str = "glimr_cv_results", name: str | None = None, num_samples: int = 12,
        cv_folds: int = 5, racing: str | None = "paired", epochs: int | None = None):
    """Run the demo search and print where its results are."""
    from glimr_cv import Search

    space = dict(SPACE)
    if epochs is not None:
        space["optimization"] = {**SPACE["optimization"], "epochs": epochs}
    search = Search(space, builder, loader, metric="digit_accuracy", mode="max", cv_folds=cv_folds, racing=racing)
    results = search.experiment(local_dir, name=name, num_samples=num_samples)
    print()  # the live leaderboard above ends with the final one
    print(f"fold trainings run: {results.fold_trainings}, skipped by racing: {results.fold_trainings_saved}; "
          f"epochs trained: {results.epoch_trainings}, folds stopped early: {results.folds_stopped_early}")
    print(f"best configuration: {results.best_config_id}")
    print(f"results: {os.path.abspath(results.path)}")
    print("  per-fold rows: results.folds; checkpoints: results.best_checkpoints;")
    print(f"  reload with glimr_cv.experiment_table({results.path!r})")
    return results
