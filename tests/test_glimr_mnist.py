"""glimr's main tutorial (examples/mnist_example.ipynb), ported to digits.

Its code is kept as glimr wrote it, with ``glimr`` changed to ``glimr_cv`` in the
imports. Other changes, each marked ``# ported:``: scikit-learn's digits instead
of MNIST (no download here), so 64 features instead of 784; smaller budgets;
and where glimr_cv differs on purpose (README, "Coming from glimr"), the test
checks the message glimr's line now gets and then runs glimr_cv's counterpart.
"""

import contextlib
import os
import re
import tempfile

import numpy as np
import pytest

pytestmark = pytest.mark.slow


def test_glimr_mnist_example_runs_with_the_imports_changed(ray_local, tmp_path):
    # -- "Creating the search space" ---------------------------------------------------
    from pprint import pprint

    from ray import tune

    activations = tune.choice(["elu", "gelu", "linear", "relu", "selu", "sigmoid", "softplus"])
    layer1 = {"activation": activations, "dropout": tune.quniform(0.0, 0.2, 0.05), "units": tune.choice([64, 48, 32, 16])}

    import tensorflow as tf

    loss = tune.choice(
        [
            {"name": "categorical_hinge", "loss": tf.keras.losses.CategoricalHinge},
            {
                "name": "categorical_crossentropy",
                "loss": tf.keras.losses.CategoricalCrossentropy,
                "kwargs": {"label_smoothing": tune.quniform(0.0, 0.2, 0.01)},
            },
        ]
    )
    loss_weight = (1.0,)
    metrics = {"name": "auc", "metric": tf.keras.metrics.AUC, "kwargs": {"from_logits": True}}
    task = {"activation": activations, "dropout": tune.quniform(0.0, 0.2, 0.05), "units": 10, "loss": loss,
            "loss_weight": loss_weight, "metrics": metrics}

    from glimr_cv.optimization import optimization_space

    optimization = optimization_space(epochs=2)  # ported: 2 epochs, not 100
    data = {"batch_size": tune.choice([32, 64, 128]), "random_brightness": tune.choice([True, False]),
            "max_delta": tune.quniform(0.01, 0.15, 0.01)}
    space = {"layer1": layer1, "optimization": optimization, "tasks": {"mnist": task}, "data": data}
    pprint(space, indent=4)

    # -- "Sample a config from the search space and display" ---------------------------
    from glimr_cv.utils import sample_space

    config = sample_space(space)
    pprint(config, indent=4)
    # what glimr's sample_space did and glimr_cv's did not: the domain inside the chosen loss is sampled
    samples = [sample_space(space, seed) for seed in range(30)]
    smoothing = [s["tasks"]["mnist"]["loss"]["kwargs"]["label_smoothing"] for s in samples
                 if s["tasks"]["mnist"]["loss"]["name"] == "categorical_crossentropy"]
    assert smoothing and all(isinstance(v, float) and 0.0 <= v <= 0.2 for v in smoothing)

    # -- "Implement the model-building function" ---------------------------------------
    from glimr_cv.keras import keras_losses, keras_metrics

    def builder(config):
        def _build_layer(x, units, activation, dropout, name):
            x = tf.keras.layers.Dense(units, activation=activation, name=name)(x)
            if dropout > 0.0:
                x = tf.keras.layers.Dropout(dropout)(x)
            return x

        input_layer = tf.keras.Input([64], name="input")  # ported: 8 x 8 digits
        x = _build_layer(input_layer, config["layer1"]["units"], config["layer1"]["activation"],  # noqa: F841 (glimr's)
                         config["layer1"]["dropout"], "layer1")
        task_name = list(config["tasks"].keys())[0]
        output = _build_layer(input_layer, config["tasks"][task_name]["units"],
                              config["tasks"][task_name]["activation"], config["tasks"][task_name]["dropout"],
                              task_name)
        named = {f"{task_name}": output}
        model = tf.keras.Model(inputs=input_layer, outputs=named)
        losses, loss_weights = keras_losses(config)
        metrics = keras_metrics(config)
        return model, losses, loss_weights, metrics

    # -- "Create a data loading function" ----------------------------------------------
    def dataloader(batch_size, random_brightness, max_delta):
        from sklearn.datasets import load_digits  # ported: digits ship with scikit-learn

        digits = load_digits()
        images, labels = digits.images * 16.0, digits.target  # ported: 0..255 like MNIST's pixels
        train, validation = (images[:1400], labels[:1400]), (images[1400:], labels[1400:])  # ported: a fixed split

        def mnist_flat(features):
            return features.reshape(features.shape[0], features.shape[1] * features.shape[2])

        train_features = tf.cast(mnist_flat(train[0]), tf.float32) / 255.0
        train_labels = train[1]
        validation_features = tf.cast(mnist_flat(validation[0]), tf.float32) / 255.0
        validation_labels = validation[1]
        train_ds = tf.data.Dataset.from_tensor_slices((train_features, {"mnist": tf.one_hot(train_labels, 10)}))
        validation_ds = tf.data.Dataset.from_tensor_slices(
            (validation_features, {"mnist": tf.one_hot(validation_labels, 10)}))
        train_ds = train_ds.shuffle(len(train_labels), reshuffle_each_iteration=True)
        train_ds = train_ds.batch(batch_size)
        validation_ds = validation_ds.batch(batch_size)
        if random_brightness:
            train_ds = train_ds.map(lambda x, y: (tf.image.random_brightness(x, max_delta), y))
        return train_ds, validation_ds

    # -- "Test the search space, model builder, and dataloader" ------------------------
    from glimr_cv.keras import keras_optimizer

    config = sample_space(space)
    pprint(config, indent=4)
    model, losses, loss_weights, metrics = builder(config)
    optimizer = keras_optimizer(config["optimization"])
    model.compile(optimizer=optimizer, loss=losses, metrics=metrics, loss_weights=loss_weights)
    train_ds, val_ds = dataloader(**config["data"])
    model.fit(x=train_ds, validation_data=val_ds, epochs=1, verbose=0)  # ported: 1 epoch, quiet

    # -- "Using Search for hyperparameter tuning" --------------------------------------
    from glimr_cv.search import Search

    # glimr's loader has no cv_index/cv_folds; glimr_cv cross-validates by default and says so
    with pytest.raises(TypeError, match=re.escape("pass cv_folds=None for a single train/validation split")):
        Search(space, builder, dataloader, "mnist_auc")
    tuner = Search(space, builder, dataloader, "mnist_auc", cv_folds=None)  # ported: cv_folds=None
    tuner.set_reporter(max_report_frequency=0)  # ported: quiet in a test
    temp_dir = tempfile.TemporaryDirectory(dir=tmp_path)
    with contextlib.redirect_stderr(open(os.devnull, "w")):
        results = tuner.experiment(local_dir=temp_dir.name, name="default", num_samples=3)  # ported: 3, not 20
    assert set(results.table["status"]) == {"complete"}

    # -- "Display information about the best trial" ------------------------------------
    with pytest.raises(AttributeError, match=re.escape("use results.best_config")):
        results.get_best_result()
    best_auc = results.table["mean_mnist_auc"].iloc[0]  # ported: the CV table's best row
    best_config = results.best_config
    best_checkpoint = results.best_checkpoints[0]
    print(f"best result auc: {best_auc}")
    pprint(best_config, indent=4)
    assert "model.weights.h5" in os.listdir(best_checkpoint)
    assert best_auc == max(results.table["mean_mnist_auc"])

    # -- "Experiment performance statistics for default settings" ----------------------
    with pytest.raises(AttributeError, match=re.escape("results.folds")):
        results.get_dataframe()
    default_table = results.folds  # ported: one row per fold training, Tune's trial
    default_auc = np.array(default_table["mnist_auc"])
    assert len(default_auc) == 3

    # -- "Using a population-based training scheduler" ---------------------------------
    from ray.tune.schedulers import PopulationBasedTraining

    tuner = Search(space, builder, dataloader, "mnist_auc", cv_folds=None)  # ported: cv_folds=None
    scheduler = PopulationBasedTraining(time_attr="training_iteration", hyperparam_mutations=space)
    with pytest.raises(ValueError, match="got PopulationBasedTraining: it changes a trial's configuration"):
        tuner.experiment(local_dir=temp_dir.name, name="pbt", num_samples=20, scheduler=scheduler)
    assert not os.path.exists(os.path.join(temp_dir.name, "pbt"))  # refused before anything was made

    # -- "Change trial resources" --------------------------------------------------------
    tuner.set_scaling(num_workers=1, use_gpu=False, resources_per_worker={"CPU": 2, "GPU": 0})
    assert tuner.resources == {"CPU": 2, "GPU": 0}
    with pytest.raises(ValueError, match=re.escape("num_workers: expected an int in [1, 1]")):
        tuner.set_scaling(num_workers=2)

    # -- "Reporting" -----------------------------------------------------------------------
    from ray.tune import CLIReporter

    metrics = [f"{t}_{m}" for t in space["tasks"] for m in space["tasks"][t]["metrics"]]
    parameters = {"optimization/method": "method", "optimization/learning_rate": "learning rate",
                  "layer1/units": "layer1_units"}
    reporter_kwargs = {"metric_columns": metrics, "parameter_columns": parameters, "max_report_frequency": 30}
    tuner = Search(space, builder, dataloader, "mnist_auc", cv_folds=None)  # ported: cv_folds=None
    with pytest.raises(TypeError, match=re.escape("reporter: expected search.set_reporter(")):
        tuner.reporter = CLIReporter(**reporter_kwargs)
    tuner.set_reporter(metrics=["mnist_auc"], parameters=parameters, jupyter=False,  # ported: glimr's arguments
                       max_report_frequency=0)
    with contextlib.redirect_stderr(open(os.devnull, "w")):
        results = tuner.experiment(local_dir=temp_dir.name, name="try", num_samples=2)  # ported: 2, not 10
    assert "learning rate" in results.leaderboard()

    # -- "Restarting an interrupted experiment" ------------------------------------------
    with contextlib.redirect_stderr(open(os.devnull, "w")):
        restored = tuner.restore(local_dir=temp_dir.name + "/try")
    assert restored.table[["config_id", "mean_mnist_auc"]].equals(results.table[["config_id", "mean_mnist_auc"]])

    temp_dir.cleanup()
