"""Small models, spaces and loaders for end-to-end tests (importable by Ray workers)."""

import copy
import hashlib
import os

import numpy as np

from glimr_cv.demo import builder as digits_builder  # noqa: F401  (re-exported for tests)
from glimr_cv.demo import SPACE, digits_arrays, loader as digits_loader


def space(epochs=2):
    """The demo's digits task with a smaller, faster model space."""
    return {
        "units": {16, 32},
        "layers": 1,
        "dropout": 0.0,
        "activation": {"relu", "gelu"},
        "tasks": copy.deepcopy(SPACE["tasks"]),
        "optimization": {"method": {"adam", "rms"}, "learning_rate": [0.001, 0.01], "epochs": epochs},
        "data": {"batch_size": 64},
    }


def recording_loader(batch_size, cv_index, cv_folds, record_dir):
    """The digits loader, also writing the hash of each fold's validation rows to ``record_dir``."""
    import tensorflow as tf  # noqa: F401

    train_ds, val_ds = digits_loader(batch_size, cv_index=cv_index, cv_folds=cv_folds)
    labels = np.concatenate([y["digit"].numpy() for _, y in val_ds])
    feats = np.concatenate([x.numpy() for x, _ in val_ds])
    digest = hashlib.sha1(feats.tobytes() + labels.tobytes()).hexdigest()
    with open(os.path.join(record_dir, f"{cv_index}_{digest}_{os.getpid()}_{np.random.randint(1 << 30)}"), "w"):
        pass
    return train_ds, val_ds


def multitask_space(epochs=2):
    s = space(epochs)
    s["tasks"] = {
        "digit": s["tasks"]["digit"],
        "parity": {
            "loss": {"name": "bce", "loss": "BinaryCrossentropy"},
            "loss_weight": [0.2, 1.0],
            "metrics": [
                {"name": "auc", "metric": "AUC"},
                {"name": "acc", "metric": "BinaryAccuracy"},
            ],
        },
    }
    return s


def multitask_builder(config):
    import keras

    from glimr_cv import keras_losses, keras_metrics

    inputs = keras.Input((64,))
    h = keras.layers.Dense(config["units"], activation=config["activation"])(inputs)
    outputs = {
        "digit": keras.layers.Dense(10, activation="softmax", name="digit")(h),
        "parity": keras.layers.Dense(1, activation="sigmoid", name="parity")(h),
    }
    losses, weights = keras_losses(config)
    return keras.Model(inputs, outputs), losses, weights, keras_metrics(config)


def multitask_loader(batch_size, cv_index, cv_folds):
    import tensorflow as tf
    from sklearn.model_selection import KFold

    x, y = digits_arrays()
    train, val = list(KFold(cv_folds, shuffle=True, random_state=0).split(x))[cv_index]

    def ds(idx):
        labels = {"digit": y[idx], "parity": (y[idx] % 2).astype("float32")[:, None]}
        return tf.data.Dataset.from_tensor_slices((x[idx], labels)).batch(batch_size)

    return ds(train), ds(val)


def poisoned_builder(config):
    """The digits MLP, whose loss is NaN when config["poison"] is 1."""
    import keras

    model, losses, weights, metrics = digits_builder(config)
    if config["poison"]:
        losses = {"digit": lambda y_true, y_pred: keras.ops.mean(y_pred) * float("nan")}
    return model, losses, weights, metrics


def crash_once_loader(batch_size, cv_index, cv_folds, marker_dir):
    """Kills its own worker process the first time fold 1 is loaded."""
    import signal

    marker = os.path.join(marker_dir, f"crashed_fold{cv_index}")
    if cv_index == 1 and not os.path.exists(marker):
        open(marker, "w").close()
        os.kill(os.getpid(), signal.SIGKILL)
    return digits_loader(batch_size, cv_index=cv_index, cv_folds=cv_folds)


def failing_loader(batch_size, cv_index, cv_folds, bad_batch_size):
    """Raises for one batch size, always: its configurations must end failed."""
    if batch_size == bad_batch_size:
        raise ValueError(f"no data for batch_size={batch_size}")
    return digits_loader(batch_size, cv_index=cv_index, cv_folds=cv_folds)


def broken_until_builder(config):
    """The digits MLP, but raises while ``config["data"]["fixed_marker"]`` does not exist."""
    marker = config["data"]["fixed_marker"]
    if not os.path.exists(marker):
        raise ValueError("the builder is broken until the marker exists")
    return digits_builder(config)


def marker_loader(batch_size, cv_index, cv_folds, fixed_marker):
    return digits_loader(batch_size, cv_index=cv_index, cv_folds=cv_folds)


class DriverOnly:
    """Loads only in the process that made it: stands in for an object a worker cannot unpickle."""

    def __init__(self):
        self.pid = os.getpid()

    def __setstate__(self, state):
        if state["pid"] != os.getpid():
            raise ModuleNotFoundError("No module named 'lab_only_module'")
        self.__dict__.update(state)


def driver_only_loader(batch_size, cv_index, cv_folds, token):
    return digits_loader(batch_size, cv_index=cv_index, cv_folds=cv_folds)


def kill_once_at_epoch(marker_dir, epoch):
    """A Keras callback killing its worker after ``epoch`` epochs, once per marker folder."""
    import signal

    import keras

    class KillOnce(keras.callbacks.Callback):
        def on_epoch_end(self, e, logs=None):
            marker = os.path.join(marker_dir, "killed")
            if e + 1 == epoch and not os.path.exists(marker):
                open(marker, "w").close()
                os.kill(os.getpid(), signal.SIGKILL)

    return KillOnce()


def conditional_space(epochs=1):
    """The digits task with a conditional model: only the "deep" option has a dropout and a second width."""
    from ray import tune

    s = space(epochs)
    del s["units"], s["layers"], s["dropout"]
    s["model"] = tune.choice([
        {"kind": "shallow", "units": {16, 32}},
        {"kind": "deep", "units": {16, 32}, "second": tune.choice([8, 16]), "dropout": tune.uniform(0.0, 0.3)},
    ])
    return s


def conditional_builder(config):
    """An MLP whose depth and dropout come from the chosen ``model`` option."""
    import keras

    from glimr_cv import keras_losses, keras_metrics

    model = config["model"]
    inputs = keras.Input((64,))
    h = keras.layers.Dense(model["units"], activation=config["activation"])(inputs)
    if model["kind"] == "deep":
        h = keras.layers.Dropout(model["dropout"])(h)
        h = keras.layers.Dense(model["second"], activation=config["activation"])(h)
    outputs = {"digit": keras.layers.Dense(10, activation="softmax", name="digit")(h)}
    losses, weights = keras_losses(config)
    return keras.Model(inputs, outputs), losses, weights, keras_metrics(config)


def slide_space(width, epochs=1):
    """A small attention MIL model's space over slide features of ``width`` per tile, a binary slide label."""
    return {
        "width": width,
        "pooling": "gated",
        "tasks": {"label": {"loss": {"name": "bce", "loss": "BinaryCrossentropy"}, "loss_weight": 1.0,
                            "metrics": [{"name": "auc", "metric": "AUC"}]}},
        "optimization": {"method": "adam", "learning_rate": 0.01, "epochs": epochs},
        "data": {"batch_size": 4},
    }


def slide_builder(config):
    """Tiles -> Dense -> attention pooling -> one sigmoid output named "label"."""
    import keras

    from glimr_cv import keras_losses, keras_metrics
    from glimr_cv.mil import bag_pooling

    instances = keras.Input((None, config["width"]), name="instances")
    mask = keras.Input((None,), dtype="bool", name="mask")
    h = keras.layers.Dense(8, activation="relu")(instances)
    z = bag_pooling(config["pooling"], units=8)(h, mask=mask)
    outputs = {"label": keras.layers.Dense(1, activation="sigmoid", name="label")(z)}
    losses, weights = keras_losses(config)
    return keras.Model({"instances": instances, "mask": mask}, outputs), losses, weights, keras_metrics(config)


def bag_model_file(folder, width):
    """An untrained attention-MIL model for instances of ``width`` features, saved in ``folder``: its path."""
    import keras

    from glimr_cv.mil import bag_pooling

    keras.utils.set_random_seed(0)
    instances = keras.Input((None, width), name="instances")
    mask = keras.Input((None,), dtype="bool", name="mask")
    pooled = bag_pooling("attention", units=4)(keras.layers.Dense(4)(instances), mask=mask)
    path = str(folder / "bag.keras")
    keras.Model({"instances": instances, "mask": mask}, keras.layers.Dense(2)(pooled)).save(path)
    return path


def damaged_cohort(cohort, folder):
    """``cohort`` with a missing file (row 1), a file that is not HDF5 (row 2) and features of another width (row 3)."""
    import h5py

    bad = cohort.copy()
    (folder / "corrupt.h5").write_bytes(b"junk")
    with h5py.File(folder / "wide.h5", "w") as f:
        f["features"] = np.zeros((6, 3), "float32")
    bad.loc[1, "path"], bad.loc[2, "path"], bad.loc[3, "path"] = [str(folder / n) for n in
                                                                  ("missing.h5", "corrupt.h5", "wide.h5")]
    return bad

