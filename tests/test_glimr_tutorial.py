"""glimr's cross-validation tutorial (examples/cross_validation.ipynb), ported to digits.

Its code is kept as glimr wrote it, with ``glimr`` changed to ``glimr_cv`` in the
imports. Other changes, each marked ``# ported:``: scikit-learn's digits instead
of MNIST (no download here), so 64 features instead of 784; a smaller budget
(3 configurations, 3 folds, 2 epochs); the plot is drawn off screen.
"""

import pytest

pytestmark = pytest.mark.slow


def test_glimr_cross_validation_tutorial_runs_with_only_the_import_changed(ray_local, tmp_path):
    import matplotlib

    matplotlib.use("Agg")  # ported: no screen

    # -- "Create a cross validation data loader" --------------------------------------
    import numpy as np
    from sklearn.model_selection import StratifiedKFold
    import tensorflow as tf

    def cv_dataloader(batch_size, random_brightness, max_delta, cv_index, cv_folds):
        from sklearn.datasets import load_digits  # ported: digits ship with scikit-learn

        digits = load_digits()
        merged = (digits.images * 16.0, digits.target)  # ported: 0..255 like MNIST's pixels

        def mnist_flat(features):
            return features.reshape(features.shape[0], features.shape[1] * features.shape[2])

        skf = StratifiedKFold(n_splits=cv_folds, shuffle=True, random_state=0)
        train_index, validation_index = [(i, o) for (i, o) in skf.split(merged[0], merged[1])][cv_index]
        train_features = tf.cast(mnist_flat(merged[0][train_index]), tf.float32) / 255.0
        train_labels = merged[1][train_index]
        validation_features = tf.cast(mnist_flat(merged[0][validation_index]), tf.float32) / 255.0
        validation_labels = merged[1][validation_index]
        train_ds = tf.data.Dataset.from_tensor_slices((train_features, {"mnist": tf.one_hot(train_labels, 10)}))
        validation_ds = tf.data.Dataset.from_tensor_slices(
            (validation_features, {"mnist": tf.one_hot(validation_labels, 10)}))
        train_ds = train_ds.shuffle(len(train_labels), reshuffle_each_iteration=True)
        train_ds = train_ds.batch(batch_size)
        validation_ds = validation_ds.batch(batch_size)
        if random_brightness:
            train_ds = train_ds.map(lambda x, y: (tf.image.random_brightness(x, max_delta), y))
        return train_ds, validation_ds

    # -- "Setting up the search space and model building function" -------------------
    from glimr_cv.keras import keras_losses, keras_metrics
    from glimr_cv.optimization import optimization_space
    from ray import tune

    activations = tune.choice(["elu", "gelu", "linear", "relu", "selu", "sigmoid", "softplus"])
    layer1 = {"activation": activations, "dropout": tune.quniform(0.0, 0.2, 0.05), "units": tune.choice([64, 48, 32, 16])}
    loss = tune.choice([
        {"name": "categorical_hinge", "loss": tf.keras.losses.CategoricalHinge},
        {"name": "categorical_crossentropy", "loss": tf.keras.losses.CategoricalCrossentropy},
    ])
    metrics = {"name": "auc", "metric": tf.keras.metrics.AUC, "kwargs": {"from_logits": True}}
    task = {"activation": activations, "dropout": tune.quniform(0.0, 0.2, 0.05), "units": 10, "loss": loss,
            "loss_weight": (1.0,), "metrics": metrics}
    data = {"batch_size": tune.choice([32, 64, 128]), "random_brightness": tune.choice([True, False]),
            "max_delta": tune.quniform(0.01, 0.15, 0.01)}

    def builder(config):
        def _build_layer(x, units, activation, dropout, name):
            x = tf.keras.layers.Dense(units, activation=activation, name=name)(x)
            if dropout > 0.0:
                x = tf.keras.layers.Dropout(dropout)(x)
            return x

        input_layer = tf.keras.Input([64], name="input")  # ported: 8 x 8 digits
        _build_layer(input_layer, config["layer1"]["units"], config["layer1"]["activation"],
                     config["layer1"]["dropout"], "layer1")
        task_name = list(config["tasks"].keys())[0]
        output = _build_layer(input_layer, config["tasks"][task_name]["units"], config["tasks"][task_name]["activation"],
                              config["tasks"][task_name]["dropout"], task_name)
        named = {f"{task_name}": output}
        model = tf.keras.Model(inputs=input_layer, outputs=named)
        losses, loss_weights = keras_losses(config)
        metrics = keras_metrics(config)
        return model, losses, loss_weights, metrics

    space = {"layer1": layer1, "optimization": optimization_space(epochs=2),  # ported: 2 epochs, not 100
             "tasks": {"mnist": task}, "data": data}

    # -- "Using Search with cv_folds" -----------------------------------------------
    from glimr_cv.search import Search

    tuner = Search(space, builder, cv_dataloader, "mnist_auc", cv_folds=3)  # ported: 3 folds
    tuner.set_reporter(max_report_frequency=0)
    tuner.experiment(local_dir=str(tmp_path), name="cross_validation", num_samples=3)  # ported: 3 configurations

    # -- "Create an experiment DataFrame for analysis" --------------------------------
    from glimr_cv.analysis import default_checkpoints, experiment_table
    import matplotlib.pyplot as plt

    exp_dir = str(tmp_path) + "/cross_validation"
    df = experiment_table(exp_dir, checkpointed=True)
    df = default_checkpoints(df)
    performance = []
    for enum in set(df["config_enum"]):
        config = df.loc[df["config_enum"] == enum, :].sort_values(by="cv_index")
        performance.append(np.array(config["mnist_auc"]))
    fig, ax = plt.subplots(1, 1)
    for config in performance:
        ax.plot(config)
    plt.xlabel("fold")
    plt.xticks(range(max(df["cv_index"] + 1)))
    plt.ylabel("mnist_auc")

    # -- "Experiment DataFrame queries" -----------------------------------------------
    from glimr_cv.analysis import top_k_configs, top_k_trials

    top5 = top_k_trials(df, "mnist_auc", k=5, fold=None)
    best = top_k_configs(df, "mnist_auc", k=1, statistic=np.median)

    # what the tutorial shows, checked
    assert len(df) == df["trial_id"].nunique() and df["checkpoint_path"].notna().all()
    assert len(performance) == df["config_enum"].nunique() >= 1
    assert list(top5["mnist_auc"]) == sorted(df["mnist_auc"], reverse=True)[:5]
    assert best["config_enum"].nunique() == 1 and len(best) == (df["config_enum"] == best["config_enum"][0]).sum()
    medians = df.groupby("config_enum")["mnist_auc"].median()
    assert best["config_score"][0] == pytest.approx(medians.max())
