"""Failures during a search: NaN losses, dying workers, folds that always raise."""

import os

import pytest

import e2e_helpers as h
from glimr_cv import Search

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", autouse=True)
def _ray(ray_local):
    from ray import cloudpickle

    cloudpickle.register_pickle_by_value(h)
    yield


def _space(**extra):
    space = h.space(epochs=2)
    space.update(extra)
    return space


def test_a_nan_loss_fails_its_configuration_and_the_run_goes_on(tmp_path):
    search = Search(_space(poison={0, 1}), h.poisoned_builder, h.digits_loader, cv_folds=2, racing=None, seed=0)
    results = search.experiment(str(tmp_path), name="nan", num_samples=4, check=False)
    table, folds = results.table, results.folds
    poisoned = table[table["config/poison"] == 1]
    healthy = table[table["config/poison"] == 0]
    assert len(poisoned) and len(healthy)
    assert set(poisoned["status"]) == {"failed"}
    assert poisoned["error"].str.contains("loss became nan at epoch 1").all()
    assert poisoned["mean_digit_accuracy"].isna().all() and poisoned["rank"].isna().all()
    assert set(healthy["status"]) == {"complete"}
    failed_folds = folds[folds["config_id"].isin(poisoned["config_id"])]
    assert set(failed_folds["status"]) == {"failed"} and failed_folds["checkpoint_path"].isna().all()
    assert results.best_config["poison"] == 0


def test_a_fold_whose_worker_dies_is_retried_and_finishes(tmp_path):
    markers = tmp_path / "markers"
    markers.mkdir()
    search = Search(h.space(epochs=1), h.digits_builder, h.crash_once_loader, cv_folds=2, racing=None,
                    loader_kwargs={"marker_dir": str(markers)}, max_failures=2)
    results = search.experiment(str(tmp_path / "runs"), name="crash", num_samples=1, check=False)
    assert os.path.exists(markers / "crashed_fold1")  # the worker really died once
    assert list(results.table["status"]) == ["complete"]
    assert sorted(results.folds["fold"]) == [0, 1] and set(results.folds["status"]) == {"complete"}


def test_a_fold_that_keeps_failing_marks_its_configuration_failed_with_the_error(tmp_path):
    space = h.space(epochs=1)
    space["data"]["batch_size"] = {32, 64}
    search = Search(space, h.digits_builder, h.failing_loader, cv_folds=2, racing=None,
                    loader_kwargs={"bad_batch_size": 32}, max_failures=1, seed=0)
    results = search.experiment(str(tmp_path), name="fail", num_samples=4, check=False)
    table = results.table
    bad = table[table["config/data/batch_size"] == 32]
    good = table[table["config/data/batch_size"] == 64]
    assert len(bad) and len(good)
    assert set(bad["status"]) == {"failed"}
    assert bad["error"].str.contains("no data for batch_size=32").all()
    assert set(good["status"]) == {"complete"}


def test_preflight_runs_before_ray_and_stops_a_broken_search(tmp_path):
    def loader(batch_size, cv_index, cv_folds):
        train, val = h.digits_loader(batch_size, cv_index=cv_index, cv_folds=cv_folds)
        return train.map(lambda x, y: (x, {"label": y["digit"]})), val

    search = Search(h.space(epochs=1), h.digits_builder, loader, cv_folds=2)
    with pytest.raises(ValueError, match=r"loader: expected train labels keyed by the tasks \['digit'\], but got keys \['label'\]"):
        search.experiment(str(tmp_path), name="broken", num_samples=1)
    assert not os.path.exists(tmp_path / "broken")  # nothing was started or written
