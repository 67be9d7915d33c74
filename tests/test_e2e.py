"""End to end: real searches of tiny Keras models on digits, on a local Ray."""

import collections
import json
import os

import numpy as np
import pytest

import e2e_helpers as h
from glimr_cv import Search, experiment_table, top_k_configs

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", autouse=True)
def _ray(ray_local):
    from ray import cloudpickle

    cloudpickle.register_pickle_by_value(h)  # workers cannot import the tests folder
    yield


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("digits")
    record = root / "record"
    record.mkdir()
    search = Search(h.space(epochs=3), h.digits_builder, h.recording_loader, cv_folds=3, racing=None,
                    loader_kwargs={"record_dir": str(record)}, seed=1)
    results = search.experiment(str(root / "runs"), name="exp", num_samples=3)
    return search, results, record


def test_table_has_one_complete_row_per_configuration(digits_run):
    _, results, _ = digits_run
    table = results.table
    assert len(table) == 3
    assert list(table["status"]) == ["complete"] * 3
    assert list(table["folds_done"]) == [3, 3, 3]
    for col in ["config_id", "split0_digit_accuracy", "split2_digit_accuracy", "mean_digit_accuracy",
                "std_digit_accuracy", "rank", "config/units", "config/optimization/learning_rate"]:
        assert col in table.columns
    assert list(table["rank"]) == [1, 2, 3]
    splits = table[[f"split{i}_digit_accuracy" for i in range(3)]].to_numpy()
    np.testing.assert_allclose(splits.mean(axis=1), table["mean_digit_accuracy"])
    assert (table["mean_digit_accuracy"].diff().dropna() <= 0).all()


def test_folds_have_one_row_per_configuration_and_fold(digits_run):
    _, results, _ = digits_run
    folds = results.folds
    assert len(folds) == 9
    assert not folds.duplicated(["config_id", "fold"]).any()
    assert set(folds["status"]) == {"complete"}
    assert (folds["fit_seconds"] > 0).all()
    assert (folds["best_epoch"] <= folds["epochs"]).all()
    assert all(os.path.isdir(p) for p in folds["checkpoint_path"])
    assert results.fold_trainings == 9


def test_every_configuration_sees_the_same_fold_partition(digits_run):
    _, _, record = digits_run
    digests = collections.defaultdict(set)
    worker_calls, driver_calls = collections.Counter(), collections.Counter()
    for name in os.listdir(record):
        fold, digest, pid = name.split("_")[:3]
        digests[fold].add(digest)
        (driver_calls if int(pid) == os.getpid() else worker_calls)[fold] += 1
    assert sorted(digests) == ["0", "1", "2"]
    assert all(len(d) == 1 for d in digests.values()), digests
    assert worker_calls == {"0": 3, "1": 3, "2": 3}  # one training per configuration and fold
    assert driver_calls == {"0": 1}  # the preflight check loads fold 0 once, before Ray


def test_best_configuration_is_the_best_mean(digits_run):
    _, results, _ = digits_run
    means = results.table.set_index("config_id")["mean_digit_accuracy"]
    assert results.best_config_id == means.idxmax()
    assert results.best_config == results.configs[results.best_config_id]
    assert "__glimr_cv__" not in results.best_config
    assert len(results.best_checkpoints) == 3


def test_best_checkpoint_reproduces_its_fold_score(digits_run):
    _, results, _ = digits_run
    fold = 1
    model = results.load_model(fold=fold)
    _, val_ds = h.digits_loader(64, cv_index=fold, cv_folds=3)
    x = np.concatenate([x.numpy() for x, _ in val_ds])
    y = np.concatenate([y["digit"].numpy() for _, y in val_ds])
    pred = model.predict(x, verbose=0)
    pred = pred["digit"] if isinstance(pred, dict) else pred
    accuracy = float((pred.argmax(axis=1) == y).mean())
    row = results.folds[(results.folds["config_id"] == results.best_config_id) & (results.folds["fold"] == fold)]
    assert accuracy == pytest.approx(float(row["digit_accuracy"].iloc[0]), abs=1e-6)


def test_glimr_analysis_functions_read_the_experiment_directory(digits_run):
    _, results, _ = digits_run
    df = experiment_table(results.path)
    assert len(df) == 9 and {"config_enum", "cv_index", "digit_accuracy"} <= set(df.columns)
    top = top_k_configs(df, "digit_accuracy", "max", k=1)
    assert int(top["config_enum"].iloc[0]) == results.best_config_id


def test_model_reuse_changes_no_fold_score(digits_run, tmp_path):
    _, results, _ = digits_run
    folds = results.folds.set_index(["config_id", "fold"])
    assert folds["model_reused"].any()  # 3 folds per configuration on 2 workers: some reuse
    record = tmp_path / "record"
    record.mkdir()
    search = Search(h.space(epochs=3), h.digits_builder, h.recording_loader, cv_folds=3, racing=None,
                    loader_kwargs={"record_dir": str(record)}, seed=1, reuse_models=False)
    fresh = search.experiment(str(tmp_path / "runs"), name="fresh", num_samples=3).folds.set_index(["config_id", "fold"])
    assert not fresh["model_reused"].any()
    assert fresh.index.sort_values().equals(folds.index.sort_values())
    for key in folds.index:  # bit for bit: the reused model starts from the fresh model's state
        assert fresh.loc[key, "digit_accuracy"] == folds.loc[key, "digit_accuracy"], key
        assert fresh.loc[key, "best_epoch"] == folds.loc[key, "best_epoch"], key


def test_existing_experiment_name_is_refused(digits_run, tmp_path):
    search, results, _ = digits_run
    with pytest.raises(FileExistsError, match="exists; use Search.restore"):
        search.experiment(os.path.dirname(results.path), name="exp", num_samples=1)


def test_multitask_search_reports_per_task_metrics(tmp_path):
    search = Search(h.multitask_space(epochs=2), h.multitask_builder, h.multitask_loader,
                    metric="parity_auc", cv_folds=2, racing=None)
    results = search.experiment(str(tmp_path), name="mt", num_samples=2)
    table = results.table
    assert list(table["status"]) == ["complete", "complete"]
    for m in ["parity_auc", "parity_acc", "parity_loss", "digit_accuracy", "digit_loss", "loss"]:
        assert f"mean_{m}" in table.columns and f"split1_{m}" in table.columns
        assert table[f"mean_{m}"].notna().all()
    assert (table["mean_parity_auc"] > 0.5).all()
    assert "config/tasks/parity/loss_weight" in table.columns


def test_single_split_without_cv_arguments_and_mode_min(tmp_path):
    def loader(batch_size):
        return h.multitask_loader(batch_size, cv_index=0, cv_folds=4)

    search = Search(h.multitask_space(epochs=3), h.multitask_builder, loader, cv_folds=None,
                    metric="digit_loss", mode="min")
    results = search.experiment(str(tmp_path), name="single", num_samples=3)
    table = results.table
    assert list(table["folds_done"]) == [1, 1, 1]
    assert "split0_digit_loss" in table.columns
    assert (table["mean_digit_loss"].diff().dropna() >= 0).all()  # best (lowest) first
    assert results.best_config_id == table.set_index("config_id")["mean_digit_loss"].idxmin()
    # each fold's score is its lowest validation loss over epochs
    for _, row in results.folds.iterrows():
        trial_dir = os.path.dirname(row["checkpoint_path"])
        epochs = [json.loads(line) for line in open(os.path.join(trial_dir, "result.json"))]
        losses = [r["digit_loss"] for r in epochs if "fold_status" not in r]
        assert row["digit_loss"] == pytest.approx(min(losses))
        assert row["best_epoch"] == 1 + losses.index(min(losses))


def test_racing_prunes_without_training_skipped_folds_and_budget_holds(tmp_path):
    space = h.space(epochs=2)
    space["optimization"]["learning_rate"] = {1e-6, 0.01}  # 1e-6 learns nothing in 2 epochs
    search = Search(space, h.digits_builder, h.digits_loader, cv_folds=3, racing="forgiving", seed=3)
    results = search.experiment(str(tmp_path), name="race", num_samples=6, max_fold_trainings=14,
                                max_concurrent_trials=1)
    table, folds = results.table, results.folds
    pruned = table[table["status"] == "pruned"]
    assert len(pruned) >= 1, table[["config_id", "status", "mean_digit_accuracy"]]
    for cid in pruned["config_id"]:
        assert len(folds[folds["config_id"] == cid]) < 3  # the skipped folds were never trained
    assert results.fold_trainings <= 14 and len(folds) <= 14
    assert results.fold_trainings_saved >= len(pruned)
    assert results.best_config_id not in set(pruned["config_id"])
    assert (results.table[results.table["status"] == "complete"]["config/optimization/learning_rate"] == 0.01).all()
