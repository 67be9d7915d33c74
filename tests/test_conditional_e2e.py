"""Conditional spaces end to end: Optuna and HyperOpt see the options, grids expand, every option is checked."""

import re

import pytest

import e2e_helpers as h
from glimr_cv import Search

pytestmark = pytest.mark.slow


def _only_in_its_option(configs: dict) -> set:
    kinds = set()
    for config in configs.values():
        model = config["model"]
        kinds.add(model["kind"])
        deep = {"kind", "units", "second", "dropout"}
        assert set(model) == (deep if model["kind"] == "deep" else {"kind", "units"}), model
    return kinds


def test_optuna_samples_a_parameter_only_in_its_option(tmp_path, ray_local):
    pytest.importorskip("optuna")
    from ray.tune.search.optuna import OptunaSearch

    inner = OptunaSearch(seed=0)
    search = Search(h.conditional_space(), h.conditional_builder, h.digits_loader, cv_folds=2, racing=None)
    search.set_reporter(max_report_frequency=0)
    results = search.experiment(str(tmp_path), name="optuna", num_samples=6, search_alg=inner)
    assert set(results.table["status"]) == {"complete"}
    assert _only_in_its_option(results.configs) == {"shallow", "deep"}
    # Optuna's own trials hold a dropout only where it chose the deep option, and were told the CV means
    trials = [t for t in inner._ot_study.trials if t.value is not None]
    assert len(trials) == 6
    for trial in trials:
        assert ("model/1/dropout" in trial.params) == (trial.params["model/branch"] == 1)
    dropouts = sorted(t.params["model/1/dropout"] for t in trials if "model/1/dropout" in t.params)
    assert dropouts == pytest.approx(sorted(c["model"]["dropout"] for c in results.configs.values()
                                            if c["model"]["kind"] == "deep"))
    assert sorted(t.value for t in trials) == pytest.approx(sorted(results.table["mean_digit_accuracy"]))
    column = "config/model/dropout"
    shallow = results.table["config/model/kind"] == "shallow"
    assert results.table.loc[shallow, column].isna().all() and results.table.loc[~shallow, column].notna().all()


def test_hyperopt_samples_a_parameter_only_in_its_option(tmp_path, ray_local):
    pytest.importorskip("hyperopt")
    from ray.tune.search.hyperopt import HyperOptSearch

    inner = HyperOptSearch(random_state_seed=1, n_initial_points=6)
    search = Search(h.conditional_space(), h.conditional_builder, h.digits_loader, cv_folds=2, racing=None)
    search.set_reporter(max_report_frequency=0)
    results = search.experiment(str(tmp_path), name="hyperopt", num_samples=6, search_alg=inner)
    assert set(results.table["status"]) == {"complete"}
    assert _only_in_its_option(results.configs) == {"shallow", "deep"}
    told = sorted(-t["result"]["loss"] for t in inner._hpopt_trials.trials if t["result"].get("loss") is not None)
    assert told == pytest.approx(sorted(results.table["mean_digit_accuracy"]))


def test_the_default_searcher_tries_every_grid_point_num_samples_times(tmp_path, ray_local):
    from ray import tune

    space = h.conditional_space()
    space["model"] = tune.grid_search([{"kind": "shallow", "units": tune.grid_search([16, 32])},
                                       {"kind": "deep", "units": 16, "second": 8, "dropout": [0.0, 0.3]}])
    search = Search(space, h.conditional_builder, h.digits_loader, cv_folds=2, racing=None)
    search.set_reporter(max_report_frequency=0)
    results = search.experiment(str(tmp_path), name="grid", num_samples=2)
    points = sorted((c["model"]["kind"], c["model"]["units"]) for c in results.configs.values())
    assert points == sorted([("shallow", 16), ("shallow", 32), ("deep", 16)] * 2)
    with pytest.raises(ValueError, match=re.escape("search_alg: OptunaSearch cannot expand the grid_search at model;")):
        from ray.tune.search.optuna import OptunaSearch

        search.experiment(str(tmp_path), name="grid_optuna", num_samples=2, search_alg=OptunaSearch())
    assert not (tmp_path / "grid_optuna").exists()  # refused before anything was made


def test_the_preflight_builds_every_option_and_names_the_one_that_fails(tmp_path):
    """Before Ray starts: the broken option fails the check, whichever option the seed would sample."""
    from ray import tune

    space = h.conditional_space()
    space["tasks"]["digit"]["loss"] = tune.choice([
        {"name": "xent", "loss": "SparseCategoricalCrossentropy"},
        {"name": "xent", "loss": "SparseCategoricalCrossentropy", "kwargs": {"label_smoothing": [0.0, 0.2]}},
    ])
    search = Search(space, h.conditional_builder, h.digits_loader, cv_folds=2, racing=None)
    with pytest.raises(TypeError, match=re.escape("preflight: the configuration that takes ") +
                       ".*" + re.escape("tasks/digit/loss[1]") + ".* failed: .*label_smoothing"):
        search.check()
    del space["tasks"]["digit"]["loss"].categories[1]["kwargs"]
    Search(space, h.conditional_builder, h.digits_loader, cv_folds=2, racing=None).check()
