"""Search-space structure (glimr_cv.space): validate_space, metric names, optimization_space."""

import re

import pytest
from spaces import DELETE, edited

from glimr_cv.space.notation import SpaceError, flatten, loguniform, parse_space, sample_space
from glimr_cv.space.sections import (
    OPTIMIZERS,
    default_metric,
    metric_names,
    optimization_space,
    validate_space,
)

KNOWN = "['adadelta', 'adagrad', 'adam', 'adamw', 'nadam', 'rms', 'sgd']"


def accuracy(y_true, y_pred):
    return 0.0


def crossentropy(y_true, y_pred):
    return 0.0


def make_space():
    """A fresh minimal valid space with one task ``cls``."""
    return {
        "tasks": {
            "cls": {
                "loss": {"name": "ce", "loss": crossentropy},
                "loss_weight": 1.0,
                "metrics": [{"name": "acc", "metric": accuracy}],
            }
        },
        "optimization": {"method": "adam", "learning_rate": 1e-3, "epochs": 5},
        "data": {"batch_size": 32},
    }


def edit(**changes):
    """A minimal space with edits ``a__b=value`` (path ``a/b``); ``DELETE`` removes the key."""
    return edited(make_space(), **changes)


# --------------------------------------------------------------------------- valid spaces


def test_minimal_space_is_valid_and_returned_parsed():
    space = make_space()
    space["model"] = {"units": [8, 64], "activation": {"relu", "gelu"}}
    parsed = validate_space(space)
    assert parsed == parse_space(space)
    assert parsed["tasks"]["cls"]["metrics"] == space["tasks"]["cls"]["metrics"]


@pytest.mark.parametrize(
    "changes",
    [
        {"tasks__cls__metrics": {"name": "acc", "metric": accuracy}},
        {"tasks__cls__metrics": []},
        {"tasks__cls__loss": {"name": "ce", "loss": "sparse_categorical_crossentropy", "kwargs": {"from_logits": True}}},
        {"tasks__cls__loss_weight": 0},
        {"tasks__cls__loss_weight": {0.5, 1.0}},
        {"optimization__method": set(OPTIMIZERS)},
        {"optimization__epochs": {1, 10}},
        {"optimization__learning_rate": loguniform(1e-5, 1e-2)},
        {"data__batch_size": {16, 32}},
    ],
    ids=lambda c: ",".join(c),
)
def test_valid_variations_pass(changes):
    validate_space(edit(**changes))


@pytest.mark.parametrize(
    "changes",
    [
        {"tasks__cls__loss_weight": [0.0, 1.0]},
        {"optimization__epochs": [1, 10]},
        {"data__batch_size": [16, 64, 16]},
    ],
    ids=lambda c: ",".join(c),
)
def test_interval_notation_is_accepted_for_checked_numbers(changes):
    # [min, max] and [min, max, step] are valid notation for any number leaf.
    validate_space(edit(**changes))


# --------------------------------------------------------------------------- invalid spaces


INVALID = [
    ({"tasks": DELETE}, "space: the required section 'tasks' is missing; got sections ['data', 'optimization']"),
    ({"optimization": DELETE}, "space: the required section 'optimization' is missing; got sections ['data', 'tasks']"),
    ({"data": DELETE}, "space: the required section 'data' is missing; got sections ['optimization', 'tasks']"),
    ({"data": 32}, "data: expected a dict, but got int"),
    ({"tasks": {}}, "tasks: expected at least one task (one per model output), but got an empty dict"),
    (
        {"tasks__cls": "ce"},
        "tasks/cls: expected a dict with 'loss', 'loss_weight' and 'metrics', but got 'ce'",
    ),
    (
        {"tasks__cls__loss": DELETE},
        "tasks/cls: the required key 'loss' is missing; a task needs 'loss', 'loss_weight' and 'metrics'",
    ),
    (
        {"tasks__cls__loss_weight": DELETE},
        "tasks/cls: the required key 'loss_weight' is missing; a task needs 'loss', 'loss_weight' and 'metrics'",
    ),
    (
        {"tasks__cls__metrics": DELETE},
        "tasks/cls: the required key 'metrics' is missing; a task needs 'loss', 'loss_weight' and 'metrics'",
    ),
    (
        {"tasks__cls__loss": "mse"},
        "tasks/cls/loss: expected a dict {'name': str, 'loss': class or function, 'kwargs'?: dict} (or a choice of them), "
        "but got 'mse'",
    ),
    (
        {"tasks__cls__loss": {"name": "ce"}},
        "tasks/cls/loss: expected a dict {'name': str, 'loss': class or function, 'kwargs'?: dict} (or a choice of them), "
        "but got {'name': 'ce'}",
    ),
    (
        {"tasks__cls__loss": {"name": "ce", "loss": "mse", "kwargs": (1,)}},
        "tasks/cls/loss/kwargs: expected a dict, but got (1,)",
    ),
    ({"tasks__cls__loss_weight": -1}, "tasks/cls/loss_weight: expected a number >= 0, but got -1"),
    ({"tasks__cls__loss_weight": {0.5, -0.5}}, "tasks/cls/loss_weight: expected a number >= 0, but got -0.5"),
    ({"tasks__cls__loss_weight": "1"}, "tasks/cls/loss_weight: expected a number >= 0, but got '1'"),
    ({"tasks__cls__loss_weight": True}, "tasks/cls/loss_weight: expected a number >= 0, but got True"),
    (
        {"tasks__cls__metrics": "acc"},
        "tasks/cls/metrics: expected a dict or a list of dicts with 'name' and 'metric', but got str",
    ),
    (
        {"tasks__cls__metrics": 3},
        "tasks/cls/metrics: expected a dict or a list of dicts with 'name' and 'metric', but got int",
    ),
    (
        {"tasks__cls__metrics": [{"name": "acc", "metric": accuracy}, {"metric": accuracy}]},
        f"tasks/cls/metrics[1]: expected a dict with keys 'name' and 'metric', but got {{'metric': {accuracy!r}}}",
    ),
    (
        {"tasks__cls__metrics": [{"name": "acc"}]},
        "tasks/cls/metrics[0]: expected a dict with keys 'name' and 'metric', but got {'name': 'acc'}",
    ),
    (
        {"tasks__cls__metrics": {"name": "acc"}},
        "tasks/cls/metrics: expected a dict with keys 'name' and 'metric', but got {'name': 'acc'}",
    ),
    (
        {"tasks__cls__metrics": ["acc"]},
        "tasks/cls/metrics[0]: expected a dict with keys 'name' and 'metric', but got 'acc'",
    ),
    (
        {"tasks__cls__metrics": [{"name": "", "metric": accuracy}]},
        "tasks/cls/metrics[0]/name: expected a non-empty string, but got ''",
    ),
    (
        {"tasks__cls__metrics": [{"name": "acc", "metric": accuracy, "kwargs": 1}]},
        "tasks/cls/metrics[0]/kwargs: expected a dict, but got 1",
    ),
    (
        {"optimization__method": "lion"},
        f"optimization/method: unknown optimizer 'lion'; expected one of {KNOWN}",
    ),
    (
        {"optimization__method": {"adam", "lion"}},
        f"optimization/method: unknown optimizer 'lion'; expected one of {KNOWN}",
    ),
    (
        {"optimization__method": DELETE},
        "optimization: the required key 'method' is missing; expected 'method', 'learning_rate' and 'epochs'",
    ),
    (
        {"optimization__learning_rate": DELETE},
        "optimization: the required key 'learning_rate' is missing; expected 'method', 'learning_rate' and 'epochs'",
    ),
    (
        {"optimization__epochs": DELETE},
        "optimization: the required key 'epochs' is missing; expected 'method', 'learning_rate' and 'epochs'",
    ),
    ({"optimization__epochs": 0}, "optimization/epochs: expected an int >= 1, but got 0"),
    ({"optimization__epochs": {0, 5}}, "optimization/epochs: expected an int >= 1, but got 0"),
    ({"optimization__epochs": 2.5}, "optimization/epochs: expected an int >= 1, but got 2.5"),
    (
        {"data__batch_size": DELETE},
        "data: the required key 'batch_size' is missing; `data` holds the loader's keyword arguments",
    ),
    ({"data__batch_size": 0}, "data/batch_size: expected an int >= 1, but got 0"),
    ({"data__batch_size": -8}, "data/batch_size: expected an int >= 1, but got -8"),
    ({"data__batch_size": True}, "data/batch_size: expected an int >= 1, but got True"),
    ({"data__batch_size": [64, 16]}, "data/batch_size: expected min <= max, but got (min=64, max=16)"),
    ({"tasks__cls__loss_weight": [-1.0, 1.0]}, "tasks/cls/loss_weight: expected a number >= 0, but got -1.0"),
    ({"optimization__epochs": [0, 10]}, "optimization/epochs: expected an int >= 1, but got 0"),
    ({"data__batch_size": [0, 64, 16]}, "data/batch_size: expected an int >= 1, but got 0"),
]


@pytest.mark.parametrize("changes, msg", INVALID, ids=[",".join(c) for c, _ in INVALID])
def test_invalid_space_names_path_and_expectation(changes, msg):
    with pytest.raises(SpaceError, match=re.escape(msg)):
        validate_space(edit(**changes))


def test_space_must_be_a_dict():
    with pytest.raises(SpaceError, match=re.escape("space: expected a nested dict, but got list")):
        validate_space([make_space()])


def test_unknown_method_in_tune_choice_is_rejected():
    """Imports ray.tune to build the domain."""
    tune = pytest.importorskip("ray.tune")
    with pytest.raises(SpaceError, match=re.escape(f"unknown optimizer 'lion'; expected one of {KNOWN}")):
        validate_space(edit(optimization__method=tune.choice(["adam", "lion"])))


# --------------------------------------------------------------------------- metric names


def two_task_space():
    space = make_space()
    space["tasks"]["cls"]["metrics"] = [
        {"name": "acc", "metric": accuracy},
        {"name": "auc", "metric": "AUC"},
    ]
    space["tasks"]["reg"] = {
        "loss": {"name": "mse", "loss": "mse"},
        "loss_weight": 0.5,
        "metrics": {"name": "mae", "metric": "mae"},
    }
    return space


def test_metric_names_one_task():
    assert metric_names(make_space()) == ["cls_acc", "cls_loss", "loss"]


def test_metric_names_two_tasks_in_space_order():
    assert metric_names(two_task_space()) == ["cls_acc", "cls_auc", "cls_loss", "reg_mae", "reg_loss", "loss"]


def test_metric_names_for_a_single_metric_dict():
    space = edit(tasks__cls__metrics={"name": "acc", "metric": accuracy})
    assert metric_names(space) == ["cls_acc", "cls_loss", "loss"]


def test_default_metric_is_first_metric_of_first_task():
    assert default_metric(make_space()) == "cls_acc"
    assert default_metric(two_task_space()) == "cls_acc"
    assert default_metric(edit(tasks__cls__metrics={"name": "f1", "metric": accuracy})) == "cls_f1"


def test_default_metric_without_metrics_is_task_loss():
    assert default_metric(edit(tasks__cls__metrics=[])) == "cls_loss"
    assert metric_names(edit(tasks__cls__metrics=[])) == ["cls_loss", "loss"]


def test_metric_names_reports_bad_metric_entries():
    with pytest.raises(SpaceError, match=re.escape("tasks/cls/metrics[0]: expected a dict with keys 'name' and 'metric'")):
        metric_names(edit(tasks__cls__metrics=[{"metric": accuracy}]))


# --------------------------------------------------------------------------- optimization_space

OPTIMIZATION_KEYS = {
    "epochs",
    "method",
    "learning_rate",
    "rho",
    "momentum",
    "beta_1",
    "beta_2",
    "use_ema",
    "ema_momentum",
    "ema_overwrite_frequency",
}


def test_optimization_space_has_all_keys():
    assert set(optimization_space()) == OPTIMIZATION_KEYS


def test_optimization_space_arguments_override_defaults():
    opt = optimization_space(epochs=3, method="sgd", learning_rate=0.1)
    assert (opt["epochs"], opt["method"], opt["learning_rate"]) == (3, "sgd", 0.1)


def test_optimization_space_validates_in_a_full_space():
    space = make_space()
    space["optimization"] = optimization_space()
    validate_space(space)


def test_optimization_space_with_unknown_method_fails_validation():
    space = make_space()
    space["optimization"] = optimization_space(method={"adam", "lion"})
    with pytest.raises(SpaceError, match=re.escape(f"unknown optimizer 'lion'; expected one of {KNOWN}")):
        validate_space(space)


def test_sampled_optimization_space_is_in_range():
    methods = set()
    for seed in range(200):
        config = sample_space({"optimization": optimization_space()}, seed)["optimization"]
        methods.add(config["method"])
        assert config["epochs"] == 100
        assert 1e-5 <= config["learning_rate"] <= 1e-2
        assert 0.5 <= config["rho"] <= 1.0
        assert 0.0 <= config["momentum"] <= 0.1
        assert config["use_ema"] in {True, False}
        assert config["ema_overwrite_frequency"] in {None, 1, 2, 3, 4, 5}
    assert methods == {"rms", "sgd", "adadelta", "adagrad", "adam"}


def test_optimization_space_calls_are_independent():
    first = optimization_space()
    first["rho"][1] = 0.9  # edit one space in place
    assert optimization_space()["rho"] == [0.5, 1.0, 0.01]


def test_flattened_optimization_space_keys():
    assert set(flatten({"optimization": optimization_space()})) == {f"optimization/{k}" for k in OPTIMIZATION_KEYS}


# -- glimr's spellings (its cross-validation tutorial) ---------------------------------------
def test_a_choice_of_loss_dicts_is_a_valid_loss():
    from ray import tune

    space = make_space()
    space["tasks"]["cls"]["loss"] = tune.choice([{"name": "a", "loss": crossentropy}, {"name": "b", "loss": "mse"}])
    validate_space(space)
    names = {sample_space(validate_space(space), seed)["tasks"]["cls"]["loss"]["name"] for seed in range(20)}
    assert names == {"a", "b"}


def test_a_choice_of_losses_checks_each_loss():
    from ray import tune

    space = make_space()
    space["tasks"]["cls"]["loss"] = tune.choice([{"name": "a", "loss": crossentropy}, "mse"])
    with pytest.raises(SpaceError, match=re.escape("tasks/cls/loss: expected a dict {'name': str, 'loss': class or "
                                                   "function, 'kwargs'?: dict} (or a choice of them), but got 'mse'")):
        validate_space(space)


def test_a_one_element_tuple_is_a_loss_weight():
    from glimr_cv.space.sections import loss_weight

    space = make_space()
    space["tasks"]["cls"]["loss_weight"] = (1.0,)
    validate_space(space)
    assert loss_weight((0.5,)) == 0.5 and loss_weight(2.0) == 2.0
    space["tasks"]["cls"]["loss_weight"] = (-1.0,)
    with pytest.raises(SpaceError, match=re.escape("tasks/cls/loss_weight: expected a number >= 0, but got (-1.0,)")):
        validate_space(space)


def test_optimization_batch_is_refused_rather_than_silently_dropped():
    space = make_space()
    space["optimization"]["batch"] = 64
    with pytest.raises(SpaceError, match=re.escape(
            "optimization/batch: expected the batch size in data/batch_size, the loader's argument, but got "
            "optimization/batch=64; move it there")):
        validate_space(space)
