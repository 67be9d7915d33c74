"""Search-space notation (glimr_cv.space.notation).

Everything here runs without Ray or Keras, except the tests in ``TestTuneConversion``,
which import ``ray.tune`` on purpose.
"""

import math
import os
import random
import re
import subprocess
import sys

import pytest

from glimr_cv.space.notation import (
    Choice,
    FloatRange,
    IntRange,
    SpaceError,
    flatten,
    loguniform,
    parse_space,
    prune_search,
    sample_space,
    to_tune,
)


def leaf(value, key="x"):
    """Parse a one-leaf space and return the parsed leaf."""
    return parse_space({key: value})[key]


def draws(value, n=400, seed=0):
    """``n`` samples of one leaf from a seeded generator."""
    rng = random.Random(seed)
    return [sample_space({"x": value}, rng)["x"] for _ in range(n)]


def on_grid(value, low, step):
    k = (value - low) / step
    return math.isclose(k, round(k), abs_tol=1e-9)


# --------------------------------------------------------------------------- imports


def test_notation_and_space_import_neither_ray_nor_keras():
    code = (
        "import sys, glimr_cv.space.notation, glimr_cv.space.sections\n"
        "print(sorted(m for m in ('ray', 'keras', 'tensorflow') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# --------------------------------------------------------------------------- sets


def test_set_becomes_sorted_choice():
    assert leaf({"tanh", "relu", "gelu"}) == Choice(("gelu", "relu", "tanh"))


def test_set_with_mixed_types_becomes_choice_ordered_by_repr():
    assert leaf({None, 2, 1}) == Choice((1, 2, None))


def test_set_samples_only_its_elements_and_all_of_them():
    assert set(draws({"a", "b", "c"})) == {"a", "b", "c"}


def test_set_sampling_does_not_depend_on_hash_seed():
    code = (
        "from glimr_cv.space.notation import sample_space\n"
        "print([sample_space({'x': {'relu', 'gelu', 'tanh', 'elu', 'selu'}}, s)['x'] for s in range(20)])"
    )
    outputs = {
        subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "PYTHONHASHSEED": str(hash_seed)},
        ).stdout
        for hash_seed in (1, 2, 3)
    }
    assert len(outputs) == 1


def test_empty_set_is_an_error():
    msg = "a/b: expected a set with at least one element (a set is a choice), but got an empty set"
    with pytest.raises(SpaceError, match=re.escape(msg)):
        parse_space({"a": {"b": set()}})


# --------------------------------------------------------------------------- intervals


def test_int_interval_becomes_int_range():
    assert leaf([1, 5]) == IntRange(1, 5, 1)


def test_int_interval_samples_include_both_ends_and_nothing_outside():
    values = draws([1, 5])
    assert all(isinstance(v, int) for v in values)
    assert set(values) == {1, 2, 3, 4, 5}


def test_float_interval_becomes_float_range():
    assert leaf([0.5, 2.0]) == FloatRange(0.5, 2.0)


def test_float_interval_samples_within_bounds():
    values = draws([0.5, 2.0])
    assert all(isinstance(v, float) and 0.5 <= v <= 2.0 for v in values)
    assert len(set(values)) > 100  # continuous, not quantized


def test_int_interval_with_step_samples_the_grid_up_to_max():
    assert leaf([0, 10, 3]) == IntRange(0, 10, 3)
    assert set(draws([0, 10, 3])) == {0, 3, 6, 9}
    assert set(draws([1, 10, 3])) == {1, 4, 7, 10}


@pytest.mark.parametrize(
    "low, high, step, grid",
    [
        (0.0, 1.0, 0.25, {0.0, 0.25, 0.5, 0.75, 1.0}),
        (0.0, 1.0, 0.3, {0.0, 0.3, 0.6, 0.9}),
        (0.1, 0.5, 0.15, {0.1, 0.25, 0.4}),
    ],
)
def test_float_interval_with_step_samples_the_grid_up_to_max(low, high, step, grid):
    assert leaf([low, high, step]) == FloatRange(low, high, step)
    values = draws([low, high, step])
    assert all(low <= v <= high and on_grid(v, low, step) for v in values)
    assert set(values) == grid


def test_equal_bounds_are_allowed():
    assert set(draws([3, 3])) == {3}
    assert set(draws([0.5, 0.5])) == {0.5}


def test_tuple_is_a_constant():
    assert leaf((1, 2)) == (1, 2)
    assert sample_space({"x": (1, 2, 3, 4)}, 0) == {"x": (1, 2, 3, 4)}


@pytest.mark.parametrize(
    "value, msg",
    [
        (
            [1],
            "a/b: expected an interval [min, max] or [min, max, step], but got a list of "
            "length 1: [1] (use a tuple for a constant sequence)",
        ),
        (
            [1, 2, 3, 4],
            "a/b: expected an interval [min, max] or [min, max, step], but got a list of "
            "length 4: [1, 2, 3, 4] (use a tuple for a constant sequence)",
        ),
        (
            [],
            "a/b: expected an interval [min, max] or [min, max, step], but got a list of "
            "length 0: [] (use a tuple for a constant sequence)",
        ),
        (
            [1, 2.0],
            "a/b: expected interval elements that are all int or all float, but got mixed types in [1, 2.0]",
        ),
        (
            [0.0, 1.0, 1],
            "a/b: expected interval elements that are all int or all float, but got mixed types in [0.0, 1.0, 1]",
        ),
        ([3, 1], "a/b: expected min <= max, but got (min=3, max=1)"),
        ([2.5, 0.5], "a/b: expected min <= max, but got (min=2.5, max=0.5)"),
        (
            ["a", 1],
            "a/b: expected interval elements that are numbers (int or float), but got 'a' in ['a', 1]",
        ),
        (
            [0, None],
            "a/b: expected interval elements that are numbers (int or float), but got None in [0, None]",
        ),
        (
            [True, 2],
            "a/b: expected interval elements that are numbers (int or float), but got True in [True, 2]",
        ),
        (
            [False, True],
            "a/b: expected interval elements that are numbers (int or float), but got False in [False, True]",
        ),
        ([1, 5, 0], "a/b: expected step > 0, but got step=0"),
        ([1, 5, -2], "a/b: expected step > 0, but got step=-2"),
        ([0.0, 1.0, -0.1], "a/b: expected step > 0, but got step=-0.1"),
    ],
)
def test_bad_interval_is_an_error_naming_the_path(value, msg):
    with pytest.raises(SpaceError, match=re.escape(msg)):
        parse_space({"a": {"b": value}})


def test_error_path_names_every_level():
    with pytest.raises(SpaceError, match=re.escape("outer/mid/inner: expected min <= max")):
        parse_space({"ok": 1, "outer": {"mid": {"inner": [5, 1]}}})


def test_sample_space_reports_notation_errors():
    with pytest.raises(SpaceError, match=re.escape("model/units: expected min <= max")):
        sample_space({"model": {"units": [64, 8]}}, 0)


def test_space_must_be_a_dict():
    with pytest.raises(SpaceError, match=re.escape("<root>: expected a dict (a search space), but got list")):
        parse_space([1, 2])


# --------------------------------------------------------------------------- loguniform


def test_loguniform_samples_within_bounds():
    domain = loguniform(1e-5, 1e-2)
    assert domain == FloatRange(1e-5, 1e-2, log=True)
    values = draws(domain, n=1000)
    assert all(1e-5 <= v <= 1e-2 for v in values)
    # log-uniform: about a third of samples in each decade
    assert 200 < sum(v < 1e-4 for v in values) < 466


@pytest.mark.parametrize(
    "low, high",
    [(0, 1.0), (-1e-3, 1.0), (1e-2, 1e-5), ("a", 1.0), (1e-5, None), (True, 2)],
)
def test_loguniform_rejects_bad_bounds(low, high):
    msg = f"loguniform: expected 0 < low <= high, but got (low={low!r}, high={high!r})"
    with pytest.raises(SpaceError, match=re.escape(msg)):
        loguniform(low, high)


# --------------------------------------------------------------------------- sample_space

SPACE = {
    "model": {
        "activation": {"relu", "gelu", "tanh", "elu"},
        "units": [8, 512],
        "dropout": [0.0, 0.5],
        "layers": [1, 10, 1],
        "name": "mlp",
        "shape": (3, 4),
    },
    "optimization": {"learning_rate": loguniform(1e-5, 1e-1), "epochs": 10},
}


def test_same_seed_gives_same_config():
    assert sample_space(SPACE, 7) == sample_space(SPACE, 7)


def test_same_random_generator_state_gives_same_config():
    assert sample_space(SPACE, random.Random(7)) == sample_space(SPACE, random.Random(7))


def test_different_seeds_give_different_configs():
    configs = [flatten(sample_space(SPACE, seed)) for seed in range(10)]
    assert len({tuple(sorted(c.items())) for c in configs}) == 10
    for key in ("model/activation", "model/units", "model/dropout", "model/layers", "optimization/learning_rate"):
        assert len({c[key] for c in configs}) > 1, key


def test_sampled_config_keeps_structure_and_constants():
    config = sample_space(SPACE, 0)
    assert config["model"]["name"] == "mlp"
    assert config["model"]["shape"] == (3, 4)
    assert config["optimization"]["epochs"] == 10
    assert config["model"]["activation"] in {"relu", "gelu", "tanh", "elu"}
    assert 8 <= config["model"]["units"] <= 512
    assert set(flatten(config)) == set(flatten(SPACE))


def test_sample_space_does_not_change_the_space():
    space = {"a": {"b": [1, 5]}, "c": {"x", "y"}}
    sample_space(space, 0)
    assert space == {"a": {"b": [1, 5]}, "c": {"x", "y"}}


@pytest.mark.parametrize("n_metrics", [1, 2, 4])
def test_task_metric_lists_are_not_intervals(n_metrics):
    metrics = [{"name": f"m{i}", "metric": "accuracy"} for i in range(n_metrics)]
    space = {"tasks": {"cls": {"metrics": metrics, "loss_weight": 1.0}}}
    assert sample_space(space, 0)["tasks"]["cls"]["metrics"] == metrics


def test_a_list_of_plain_values_is_an_interval_and_a_list_holding_a_dict_a_list_of_sub_spaces():
    with pytest.raises(SpaceError, match=re.escape("tasks/cls/other: expected an interval")):
        parse_space({"tasks": {"cls": {"other": ["m", "n", "o", "p"]}}})
    config = sample_space({"tasks": {"cls": {"other": [{"name": "m", "k": [1, 3]}, {"u": {4, 5}}]}}}, 0)
    other = config["tasks"]["cls"]["other"]
    assert other[0]["name"] == "m" and other[0]["k"] in (1, 2, 3) and other[1]["u"] in (4, 5)


def test_notation_inside_a_metric_entry_is_sampled():
    space = {"tasks": {"cls": {"metrics": [{"name": "auc", "metric": "AUC", "kwargs": {"num_thresholds": {50, 100}}}]}}}
    entry = sample_space(space, 0)["tasks"]["cls"]["metrics"][0]
    assert entry["kwargs"]["num_thresholds"] in {50, 100}


# --------------------------------------------------------------------------- flatten


def test_flatten_joins_paths_with_slashes():
    config = {"a": {"b": 1, "c": {"d": "x"}}, "e": (1, 2), "f": {}}
    assert flatten(config) == {"a/b": 1, "a/c/d": "x", "e": (1, 2), "f": {}}


def test_flatten_with_prefix():
    assert flatten({"a": {"b": 1}}, prefix="config/") == {"config/a/b": 1}


# --------------------------------------------------------------------------- Ray Tune


class TestTuneConversion:
    """These tests import ray.tune (to_tune and prune_search build Tune domains)."""

    @pytest.fixture(autouse=True)
    def _tune(self):
        self.tune = pytest.importorskip("ray.tune")
        import numpy as np

        self.np = np

    def tune_draws(self, domain, n=2000):
        values = domain.sample(size=n, random_state=self.np.random.RandomState(0))
        return {round(float(v), 9) for v in values}

    def test_int_interval_upper_bound_is_inclusive(self):
        domain = to_tune({"x": [1, 10]})["x"]
        assert isinstance(domain, self.tune.search.sample.Integer)
        assert self.tune_draws(domain) == set(range(1, 11))

    def test_float_interval_becomes_uniform(self):
        domain = to_tune({"x": [0.5, 2.0]})["x"]
        assert isinstance(domain, self.tune.search.sample.Float)
        assert (domain.lower, domain.upper) == (0.5, 2.0)
        assert all(0.5 <= v <= 2.0 for v in self.tune_draws(domain))

    def test_loguniform_becomes_tune_loguniform(self):
        domain = to_tune({"x": loguniform(1e-5, 1e-2)})["x"]
        assert isinstance(domain.sampler, self.tune.search.sample.LogUniform)
        assert (domain.lower, domain.upper) == (1e-5, 1e-2)

    def test_set_becomes_categorical(self):
        domain = to_tune({"x": {"b", "a"}})["x"]
        assert domain.categories == ["a", "b"]

    @pytest.mark.parametrize(
        "space, grid",
        [
            ([0, 9, 3], {0, 3, 6, 9}),
            ([0, 10, 3], {0, 3, 6, 9}),
            ([0.0, 1.0, 0.25], {0.0, 0.25, 0.5, 0.75, 1.0}),
            ([0.5, 1.0, 0.1], {0.5, 0.6, 0.7, 0.8, 0.9, 1.0}),
        ],
    )
    def test_quantized_interval_samples_the_grid(self, space, grid):
        assert self.tune_draws(to_tune({"x": space})["x"]) == grid

    @pytest.mark.parametrize(
        "space, grid",
        [
            ([1, 10, 3], {1, 4, 7, 10}),  # documented grid: min, min + step, ... <= max
            ([0.2, 1.0, 0.3], {0.2, 0.5, 0.8}),
        ],
    )
    def test_quantized_interval_with_min_off_the_step_multiples_samples_the_same_grid(self, space, grid):
        # Same grid as sample_space uses for this leaf.
        assert set(draws(space)) == grid
        assert self.tune_draws(to_tune({"x": space})["x"]) == grid

    def test_tune_domains_pass_through(self):
        domain = self.tune.uniform(0, 1)
        fn = self.tune.sample_from(lambda spec: 1)
        converted = to_tune({"a": {"u": domain, "f": fn}, "c": 3})
        assert converted["a"]["u"] is domain
        assert converted["a"]["f"] is fn
        assert converted["c"] == 3

    def test_tune_domain_is_sampled_by_sample_space(self):
        space = {"x": self.tune.choice(["a", "b"]), "y": self.tune.randint(0, 5)}
        config = sample_space(space, 3)
        assert config == sample_space(space, 3)
        assert config["x"] in {"a", "b"} and config["y"] in range(5)

    def test_prune_search_keeps_only_domains(self):
        space = {
            "model": {"units": [8, 64], "activation": {"relu", "gelu"}, "name": "mlp", "shape": (3,)},
            "constants": {"a": 1, "b": {"c": "x"}},
            "empty": {},
            "tune": {"u": self.tune.uniform(0, 1), "f": self.tune.sample_from(lambda spec: 1)},
            "lr": loguniform(1e-4, 1e-2),
        }
        pruned = prune_search(space)
        assert set(flatten(pruned)) == {"model/units", "model/activation", "tune/u", "lr"}
        assert all(isinstance(v, self.tune.search.sample.Domain) for v in flatten(pruned).values())
        assert pruned["tune"]["u"] is space["tune"]["u"]

    def test_prune_search_of_constants_only_is_empty(self):
        assert prune_search({"a": 1, "b": {"c": (1, 2)}, "d": {}}) == {}

