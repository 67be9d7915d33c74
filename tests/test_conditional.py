"""Conditional search spaces: domains inside a choice's options, sample_from, grids, every branch covered.

Pure Python here (``ray.tune`` is imported for its domain classes, no Ray is
started); the end-to-end runs with Optuna and HyperOpt are in ``test_conditional_e2e.py``.
"""

import math
import random
import re

import pandas as pd
import pytest

tune = pytest.importorskip("ray.tune")

from glimr_cv.results.tables import cv_table  # noqa: E402
from glimr_cv.space.notation import (  # noqa: E402
    Choice,
    FloatRange,
    Grid,
    IntRange,
    SpaceError,
    TuneDomain,
    TuneFunction,
    covering_configs,
    flatten,
    grid_variants,
    parse_space,
    resolve,
    sample_space,
    sampled_paths,
)
from glimr_cv.space.searchers import check_searcher, optuna_define_by_run, to_inner  # noqa: E402


def leaves(value):
    """Every value in a sampled configuration, at any depth."""
    if isinstance(value, dict):
        for v in value.values():
            yield from leaves(v)
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from leaves(v)
    else:
        yield value


def is_domain(value) -> bool:
    return isinstance(value, (tune.search.sample.Domain, Choice, Grid, IntRange, FloatRange, TuneDomain,
                              TuneFunction, set, frozenset)) or type(value).__name__ == "_Pending"


GLIMR_LOSS = tune.choice([
    {"name": "categorical_hinge", "loss": "CategoricalHinge"},
    {"name": "categorical_crossentropy", "loss": "CategoricalCrossentropy",
     "kwargs": {"label_smoothing": tune.quniform(0.0, 0.2, 0.01)}},
])


# --------------------------------------------------------------------------- the issue's cases


def test_a_domain_inside_a_choice_is_sampled():
    config = sample_space({"l": tune.choice([{"k": tune.uniform(0, 1)}])}, 0)
    assert isinstance(config["l"]["k"], float) and 0 <= config["l"]["k"] <= 1


def test_only_the_chosen_option_is_sampled_and_its_values_have_stable_paths():
    space = {"tasks": {"label": {"loss": GLIMR_LOSS, "loss_weight": 1.0, "metrics": []}}}
    seen = {}
    for seed in range(40):
        config = sample_space(space, seed)
        loss = config["tasks"]["label"]["loss"]
        seen[loss["name"]] = flatten(config)
        if loss["name"] == "categorical_hinge":
            assert "kwargs" not in loss
        else:
            assert 0.0 <= loss["kwargs"]["label_smoothing"] <= 0.2
    assert set(seen) == {"categorical_hinge", "categorical_crossentropy"}
    assert "tasks/label/loss/kwargs/label_smoothing" in seen["categorical_crossentropy"]
    assert "tasks/label/loss/kwargs/label_smoothing" not in seen["categorical_hinge"]


def test_our_notation_inside_a_tune_choice_option_and_in_loss_kwargs_and_metric_entries():
    space = {
        "model": tune.choice([{"kind": "mlp", "units": {16, 32}, "dropout": [0.0, 0.5]}, {"kind": "linear"}]),
        "tasks": {"t": {"loss": {"name": "x", "loss": "L", "kwargs": {"alpha": [0.1, 0.9]}},
                        "metrics": [{"name": "auc", "metric": "AUC", "kwargs": {"num_thresholds": {50, 100}}}]}},
    }
    for seed in range(20):
        config = sample_space(space, seed)
        assert not any(is_domain(v) for v in leaves(config))
        if config["model"]["kind"] == "mlp":
            assert config["model"]["units"] in (16, 32) and 0.0 <= config["model"]["dropout"] <= 0.5
        assert 0.1 <= config["tasks"]["t"]["loss"]["kwargs"]["alpha"] <= 0.9
        assert config["tasks"]["t"]["metrics"][0]["kwargs"]["num_thresholds"] in (50, 100)


def test_the_results_table_has_a_column_per_path_that_ever_occurred_and_nan_where_it_is_missing():
    space = {"tasks": {"label": {"loss": GLIMR_LOSS}}}
    configs = {}
    seed = 0
    while len({c["tasks"]["label"]["loss"]["name"] for c in configs.values()}) < 2:
        configs[seed] = sample_space(space, seed)
        seed += 1
    folds = pd.DataFrame([{"config_id": c, "fold": 0, "status": "complete", "m": 0.5} for c in configs])
    table = cv_table(folds, [{"config_id": c, "status": "complete", "params": p} for c, p in configs.items()],
                     "m", "max", 1)
    column = "config/tasks/label/loss/kwargs/label_smoothing"
    assert column in table
    hinge = table["config/tasks/label/loss/name"] == "categorical_hinge"
    assert table.loc[hinge, column].isna().all() and table.loc[~hinge, column].notna().all()
    assert "tasks/label/loss/name" in sampled_paths(parse_space(space))
    assert "tasks/label/loss/kwargs/label_smoothing" in sampled_paths(parse_space(space))


# --------------------------------------------------------------------------- sample_from


def test_sample_from_reads_other_values_as_ray_tune_resolves_them():
    space = {"a": {2, 3}, "b": tune.sample_from(lambda spec: spec.config.a * 10),
             "c": tune.sample_from(lambda config: config["b"] + 1)}
    for seed in range(10):
        config = sample_space(space, seed)
        assert config["b"] == 10 * config["a"] and config["c"] == config["b"] + 1


def test_sample_from_chains_resolve_in_passes_whatever_their_order():
    space = {"z": tune.sample_from(lambda spec: spec.config.y + 1), "y": tune.sample_from(lambda spec: spec.config.x * 2),
             "x": [1, 5]}
    config = sample_space(space, 0)
    assert config["z"] == 2 * config["x"] + 1


def test_sample_from_inside_an_option_reads_that_option():
    space = {"loss": tune.choice([{"alpha": [0.1, 0.2], "beta": tune.sample_from(lambda s: s.config.loss.alpha / 2)}])}
    config = sample_space(space, 3)
    assert config["loss"]["beta"] == config["loss"]["alpha"] / 2


def test_sample_from_without_arguments_is_called():
    assert sample_space({"f": tune.sample_from(lambda: 7)}, 0) == {"f": 7}


def test_a_cycle_of_sample_from_is_an_error_naming_the_paths():
    space = {"a": tune.sample_from(lambda s: s.config.b), "b": tune.sample_from(lambda s: s.config.a)}
    with pytest.raises(SpaceError, match=re.escape("a: tune.sample_from functions ['a', 'b'] read each other's")):
        sample_space(space, 0)


def test_sample_from_reading_a_key_of_an_option_not_chosen_names_its_path():
    space = {"loss": tune.choice([{"name": "a"}, {"name": "b", "k": 1}]),
             "f": tune.sample_from(lambda s: s.config.loss.k)}
    with pytest.raises(SpaceError, match=r"^f: tune.sample_from raised AttributeError: k"):
        for seed in range(20):
            sample_space(space, seed)


# --------------------------------------------------------------------------- property test


def random_space(rng: random.Random, depth: int = 0):
    """A random nested space: dicts, lists of sub-spaces, choices of sub-spaces, domains at any depth."""
    def leaf():
        return rng.choice([
            lambda: {rng.randint(0, 9) for _ in range(3)},
            lambda: [0.0, 1.0],
            lambda: [1, 9, 2],
            lambda: tune.uniform(0, 1),
            lambda: tune.randint(0, 5),
            lambda: tune.choice(["x", "y"]),
            lambda: tune.loguniform(1e-4, 1e-1),
            lambda: "constant",
        ])()

    def node(d):
        kind = rng.choice(["leaf", "leaf", "dict", "list", "choice"]) if d < 4 else "leaf"
        if kind == "dict":
            return {f"k{i}": node(d + 1) for i in range(rng.randint(1, 3))}
        if kind == "list":
            return [{f"e{i}": node(d + 1)} for i in range(rng.randint(1, 2))]
        if kind == "choice":
            return tune.choice([{f"o{i}": node(d + 1)} for i in range(rng.randint(2, 3))])
        return leaf()

    return {f"top{i}": node(depth) for i in range(rng.randint(1, 3))}


@pytest.mark.parametrize("space_seed", range(25))
def test_sampling_never_leaves_a_domain_and_reaches_every_option(space_seed):
    rng = random.Random(space_seed)
    space = random_space(rng)
    parsed = parse_space(space)
    from glimr_cv.space.notation import iter_nodes

    options = {(path, i) for path, p in iter_nodes(parsed) if isinstance(p, Choice) and p.branching
               for i in range(len(p.values))}
    reached = set()
    draw = random.Random(space_seed)
    for _ in range(300):
        resolver_config = resolve(parsed, draw)
        assert not any(is_domain(v) for v in leaves(resolver_config)), resolver_config
        from glimr_cv.space.notation import _Resolver

        resolver = _Resolver(draw)
        resolver(parsed)
        reached |= {(path, i) for path, i in resolver.taken.items() if (path, i) in options}
    assert reached == options
    # every option is also taken by the preflight's covering configurations, in few of them
    covered = covering_configs(parsed, random.Random(0))
    assert all(not any(is_domain(v) for v in leaves(c)) for c, _, _ in covered)
    labels = {label for _, new, _ in covered for label in new}
    assert all(any(label.startswith(f"{_fmt(path)}[{i}]") for label in labels) for path, i in options)


def _fmt(path):
    from glimr_cv.space.notation import format_path

    return format_path(path)


# --------------------------------------------------------------------------- grids


def test_a_grid_over_a_choice_of_dicts_expands_each_options_own_grid():
    space = {"loss": tune.grid_search([
        {"name": "hinge"},
        {"name": "xent", "smoothing": tune.grid_search([0.0, 0.1, 0.2])},
    ]), "lr": [0.001, 0.01]}
    variants = grid_variants(parse_space(space))
    configs = [resolve(v, random.Random(0)) for v in variants]
    assert [(c["loss"]["name"], c["loss"].get("smoothing")) for c in configs] == [
        ("hinge", None), ("xent", 0.0), ("xent", 0.1), ("xent", 0.2)]
    assert all(0.001 <= c["lr"] <= 0.01 for c in configs)


def test_two_grids_make_their_product_in_ray_tunes_order():
    space = {"a": tune.grid_search([1, 2]), "b": tune.grid_search(["x", "y", "z"])}
    configs = [resolve(v, random.Random(0)) for v in grid_variants(parse_space(space))]
    assert [(c["a"], c["b"]) for c in configs] == [(a, b) for a in (1, 2) for b in "xyz"]


def test_a_grid_inside_a_random_choice_is_refused_naming_the_option():
    space = {"loss": tune.choice([{"name": "a", "k": tune.grid_search([1, 2])}, {"name": "b"}])}
    with pytest.raises(SpaceError, match=re.escape("loss[0]/k: expected no grid_search inside an option of a random")):
        parse_space(space)


# --------------------------------------------------------------------------- covering configurations


def test_covering_configurations_take_every_option_of_nested_choices():
    space = {
        "units": {8, 16, 32, 64},
        "loss": tune.choice([
            {"name": "a"},
            {"name": "b", "inner": tune.choice([{"t": 1}, {"t": 2}, {"t": 3, "x": [0.0, 1.0]}])},
        ]),
    }
    covered = covering_configs(parse_space(space), random.Random(0))
    assert len(covered) == 4  # the largest choice has 4 options
    assert {c["units"] for c, _, _ in covered} == {8, 16, 32, 64}
    inner = {c["loss"]["inner"]["t"] for c, _, _ in covered if c["loss"]["name"] == "b"}
    assert inner == {1, 2, 3}
    labels = [label for _, new, _ in covered for label in new]
    assert "loss[1]" in labels and "loss[1]/inner[2]" in labels and "units=64" in labels
    assert [structured for _, _, structured in covered] == [True, True, True, True]  # each takes a new dict option


# --------------------------------------------------------------------------- inner searchers


def test_optuna_define_by_run_suggests_a_parameter_only_in_its_option():
    optuna = pytest.importorskip("optuna")
    from ray.tune.utils.util import unflatten_dict

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = {"tasks": {"label": {"loss": GLIMR_LOSS}}, "lr": [0.001, 0.01], "units": {8, 16}}
    parsed = parse_space(space)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    define = optuna_define_by_run(parsed)
    branches = set()
    for i in range(30):
        trial = study.ask()
        define(trial)
        names = set(trial.params)
        branch = trial.params["tasks/label/loss/branch"]
        branches.add(branch)
        assert ("tasks/label/loss/1/kwargs/label_smoothing" in names) == (branch == 1)
        config = resolve(parsed, random.Random(i), unflatten_dict(dict(trial.params)))
        assert config["lr"] == trial.params["lr"] and config["units"] == trial.params["units"]
        loss = config["tasks"]["label"]["loss"]
        assert loss["name"] == ("categorical_crossentropy" if branch else "categorical_hinge")
        if branch:
            assert loss["kwargs"]["label_smoothing"] == trial.params["tasks/label/loss/1/kwargs/label_smoothing"]
        study.tell(trial, 0.5)
    assert branches == {0, 1}


def test_hyperopt_gets_nested_choices_and_each_option_its_own_names():
    pytest.importorskip("hyperopt")
    from ray.tune.search.hyperopt import HyperOptSearch

    space = {"loss": tune.choice([{"name": "a", "k": tune.uniform(0, 1)}, {"name": "b", "k": tune.uniform(5, 6)}]),
             "lr": [0.001, 0.01]}
    parsed = parse_space(space)
    inner = HyperOptSearch(random_state_seed=0, n_initial_points=100)
    inner.set_search_properties("m", "max", to_inner(parsed))  # two "k"s, under loss/0 and loss/1
    names = set()
    for i in range(30):
        suggestion = inner.suggest(f"t{i}")
        config = resolve(parsed, random.Random(i), suggestion)
        option = next(k for k in suggestion["loss"])
        names.add(config["loss"]["name"])
        assert config["loss"] == {"name": "ab"[int(option)], "k": suggestion["loss"][option]["k"]}
        assert (0 <= config["loss"]["k"] <= 1) if option == "0" else (5 <= config["loss"]["k"] <= 6)
        assert config["lr"] == suggestion["lr"]
    assert names == {"a", "b"}


def test_a_searcher_that_cannot_express_the_space_is_refused_naming_the_path():
    from ray.tune.search import Searcher

    class Plain(Searcher):
        def suggest(self, trial_id):
            return {}

        def on_trial_complete(self, trial_id, result=None, error=False):
            pass

    conditional = parse_space({"tasks": {"label": {"loss": GLIMR_LOSS}}})
    with pytest.raises(ValueError, match=re.escape("search_alg: Plain cannot express the choice at tasks/label/loss,")):
        check_searcher(conditional, Plain())
    grid = parse_space({"a": {"b": tune.grid_search([1, 2])}})
    with pytest.raises(ValueError, match=re.escape("search_alg: Plain cannot expand the grid_search at a/b;")):
        check_searcher(grid, Plain())
    check_searcher(parse_space({"a": {1, 2}}), Plain())  # an unconditional space is fine


# --------------------------------------------------------------------------- glimr ports


def test_glimr_module_paths_and_names():
    from glimr_cv import default_checkpoints
    from glimr_cv.utils import prune_search, sample_space as glimr_sample_space

    assert callable(default_checkpoints) and glimr_sample_space is sample_space and callable(prune_search)


def test_results_point_glimr_result_grid_calls_to_the_cv_answers():
    from glimr_cv.results.summary import SearchResults

    results = SearchResults(path="p", metric="m", mode="max", cv_folds=2, table=pd.DataFrame(),
                            folds=pd.DataFrame(), configs={})
    with pytest.raises(AttributeError, match=re.escape("use results.best_config (its sampled configuration)")):
        results.get_best_result()
    with pytest.raises(AttributeError, match="results.folds"):
        results.get_dataframe()
    assert not hasattr(results, "get_best_result")
    with pytest.raises(AttributeError, match="has no attribute 'nope'"):
        results.nope


def test_sampled_configurations_are_plain_python_values():
    config = sample_space({"a": tune.choice([1, 2]), "b": tune.randint(0, 3), "c": tune.uniform(0, 1)}, 0)
    assert type(config["a"]) is int and type(config["b"]) is int and type(config["c"]) is float
    assert not math.isnan(config["c"])
