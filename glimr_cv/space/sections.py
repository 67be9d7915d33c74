"""The structure of a glimr_cv search space: required sections and their rules.

Pure Python (no Ray, no Keras), so a malformed space fails before anything starts.
"""

from __future__ import annotations

from typing import Any

from ..checks import expected
from .notation import Choice, FloatRange, IntRange, SpaceError, TuneDomain, loguniform, parse_space

__all__ = ["OPTIMIZERS", "optimization_space", "validate_space", "metric_names", "task_metrics"]

#: Optimizer method names and the Keras 3 class each one builds.
OPTIMIZERS = {
    "sgd": "SGD",
    "rms": "RMSprop",
    "adam": "Adam",
    "adamw": "AdamW",
    "nadam": "Nadam",
    "adagrad": "Adagrad",
    "adadelta": "Adadelta",
}


def optimization_space(
    epochs: int = 100,
    method: Any = frozenset({"rms", "sgd", "adadelta", "adagrad", "adam"}),
    learning_rate: Any = loguniform(1e-5, 1e-2),
    rho: Any = (0.5, 1.0, 0.01),
    momentum: Any = (0.0, 0.1, 0.01),
    beta_1: Any = (0.5, 1.0, 0.01),
    beta_2: Any = (0.5, 1.0, 0.01),
    use_ema: Any = frozenset({True, False}),
    ema_momentum: Any = (0.9, 0.99, 0.01),
    ema_overwrite_frequency: Any = frozenset({None, 1, 2, 3, 4, 5}),
) -> dict:
    """A default ``optimization`` section over Keras 3 optimizers, as in glimr.

    Every argument is a constant, glimr notation or a Ray Tune domain. Parameters
    that a sampled ``method`` does not take are ignored when the optimizer is
    built (:func:`glimr_cv.keras_optimizer`). The defaults are written as tuples
    and frozensets only to keep them immutable; they are returned as
    ``[min, max, step]`` intervals and sets.

    Returns
    -------
    dict
        ``{"epochs", "method", "learning_rate", "rho", "momentum", "beta_1",
        "beta_2", "use_ema", "ema_momentum", "ema_overwrite_frequency"}``.
    """
    defaults = optimization_space.__defaults__

    def fresh(value):  # defaults become a new interval or set on every call; user values stay as given
        if any(value is d for d in defaults):
            return set(value) if isinstance(value, frozenset) else list(value) if isinstance(value, tuple) else value
        return value

    return {
        "epochs": epochs,
        "method": fresh(method),
        "learning_rate": learning_rate,
        "rho": fresh(rho),
        "momentum": fresh(momentum),
        "beta_1": fresh(beta_1),
        "beta_2": fresh(beta_2),
        "use_ema": fresh(use_ema),
        "ema_momentum": fresh(ema_momentum),
        "ema_overwrite_frequency": fresh(ema_overwrite_frequency),
    }


def _possible_values(value: Any) -> list | None:
    """Values a leaf can take that bound checks must test (for ranges, both ends); None if unknown."""
    if isinstance(value, Choice):
        return list(value.values)
    if isinstance(value, (IntRange, FloatRange)):
        return [value.low, value.high]  # the extremes are enough for the range checks here
    if isinstance(value, TuneDomain):
        categories = getattr(value.domain, "categories", None)
        return list(categories) if categories is not None else None
    return [value]


def loss_weight(value: Any) -> Any:
    """A task's loss weight; glimr's tutorials write it as a one-element tuple, ``(1.0,)``."""
    return value[0] if isinstance(value, (tuple, list)) and len(value) == 1 else value


def task_metrics(task: dict, path: str) -> list[dict]:
    """The metric entries of one task as a list of ``{"name", "metric", "kwargs"?}``."""
    metrics = task.get("metrics", [])
    if isinstance(metrics, dict):
        metrics = [metrics]
    if not isinstance(metrics, (list, tuple)):
        raise SpaceError(
            expected(f"{path}/metrics", "a dict or a list of dicts with 'name' and 'metric'",
                     got=type(metrics).__name__)
        )
    for i, entry in enumerate(metrics):
        where = f"{path}/metrics[{i}]" if isinstance(task.get("metrics"), list) else f"{path}/metrics"
        if not isinstance(entry, dict) or "name" not in entry or "metric" not in entry:
            raise SpaceError(expected(where, "a dict with keys 'name' and 'metric'", entry))
        if not isinstance(entry["name"], str) or not entry["name"]:
            raise SpaceError(expected(f"{where}/name", "a non-empty string", entry["name"]))
        if "kwargs" in entry and not isinstance(entry["kwargs"], dict):
            raise SpaceError(expected(f"{where}/kwargs", "a dict", entry["kwargs"]))
    return list(metrics)


def validate_space(space: Any) -> dict:
    """Check the notation and the required sections of a search space.

    Required: ``tasks`` (each with ``loss``, ``loss_weight`` and ``metrics``),
    ``optimization`` (``method``, ``learning_rate``, ``epochs``) and ``data``
    (``batch_size``).

    Returns
    -------
    dict
        The parsed space (see :func:`glimr_cv.space.notation.parse_space`).

    Raises
    ------
    SpaceError
        Naming the offending path and what was expected.
    """
    if not isinstance(space, dict):
        raise SpaceError(expected("space", "a nested dict", got=type(space).__name__))
    parsed = parse_space(space)
    for section in ("tasks", "optimization", "data"):
        if section not in space:
            raise SpaceError(f"space: the required section {section!r} is missing; got sections {sorted(map(str, space))}")
        if not isinstance(space[section], dict):
            raise SpaceError(expected(section, "a dict", got=type(space[section]).__name__))

    tasks = space["tasks"]
    if not tasks:
        raise SpaceError(expected("tasks", "at least one task (one per model output)", got="an empty dict"))
    for name, task in tasks.items():
        path = f"tasks/{name}"
        if not isinstance(name, str) or not name:
            raise SpaceError(expected("tasks", "task names that are non-empty strings", name))
        if not isinstance(task, dict):
            raise SpaceError(expected(path, "a dict with 'loss', 'loss_weight' and 'metrics'", task))
        for key in ("loss", "loss_weight", "metrics"):
            if key not in task:
                raise SpaceError(f"{path}: the required key {key!r} is missing; a task needs 'loss', 'loss_weight' and 'metrics'")
        # glimr's tutorials choose the loss itself, tune.choice([{...}, {...}])
        for loss in _possible_values(parsed["tasks"][name]["loss"]) or [task["loss"]]:
            if not isinstance(loss, dict) or "loss" not in loss:
                raise SpaceError(expected(f"{path}/loss",
                                          "a dict {'name': str, 'loss': class or function, 'kwargs'?: dict} (or a "
                                          "choice of them)", loss))
            if "kwargs" in loss and not isinstance(loss["kwargs"], dict):
                raise SpaceError(expected(f"{path}/loss/kwargs", "a dict", loss["kwargs"]))
        weight = parsed["tasks"][name]["loss_weight"]
        for w in _possible_values(weight) or []:
            if isinstance(w, bool) or not isinstance(loss_weight(w), (int, float)) or loss_weight(w) < 0:
                raise SpaceError(expected(f"{path}/loss_weight", "a number >= 0", w))
        seen = set()
        for entry in task_metrics(task, path):
            if entry["name"] == "loss" or entry["name"] in seen:
                why = "is reserved for the task's loss" if entry["name"] == "loss" else "is used twice"
                raise SpaceError(f"{path}/metrics: metric name {entry['name']!r} {why}; metric names must be unique per task")
            seen.add(entry["name"])

    opt = space["optimization"]
    for key in ("method", "learning_rate", "epochs"):
        if key not in opt:
            raise SpaceError(f"optimization: the required key {key!r} is missing; expected 'method', 'learning_rate' and 'epochs'")
    for method in _possible_values(parsed["optimization"]["method"]) or []:
        if method not in OPTIMIZERS:
            raise SpaceError(
                f"optimization/method: unknown optimizer {method!r}; expected one of {sorted(OPTIMIZERS)}"
            )
    if "batch" in opt:  # some glimr versions had it; a silently ignored batch size would mislead
        raise SpaceError(expected("optimization/batch", "the batch size in data/batch_size, the loader's argument",
                                  got=f"optimization/batch={opt['batch']!r}", hint="move it there"))
    for epochs in _possible_values(parsed["optimization"]["epochs"]) or []:
        if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
            raise SpaceError(expected("optimization/epochs", "an int >= 1", epochs))

    if "batch_size" not in space["data"]:
        raise SpaceError("data: the required key 'batch_size' is missing; `data` holds the loader's keyword arguments")
    sizes = _possible_values(parsed["data"]["batch_size"]) or []
    for size in sizes:
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise SpaceError(expected("data/batch_size", "an int >= 1", size))
    if 1 in sizes:
        for name in tasks:
            for loss in _possible_values(parsed["tasks"][name]["loss"]) or []:
                if _is_cox(loss.get("loss")):
                    raise SpaceError(
                        f"tasks/{name}/loss: cox_loss needs at least two rows per batch (a risk set), but "
                        f"data/batch_size can be 1, where its loss is 0 and nothing trains; expected batch sizes "
                        f">= 2 with a loader whose batches hold events, or glimr_cv.survival.DiscreteTimeNLL, which "
                        f"trains at any batch size")
    return parsed


def _is_cox(loss: Any) -> bool:
    """Whether a task's loss is glimr_cv's Cox partial likelihood (told apart without importing Keras)."""
    return (getattr(loss, "__module__", "") == "glimr_cv.survival.losses"
            and getattr(loss, "__name__", "") in ("cox_loss", "CoxLoss"))


def metric_names(space: dict) -> list[str]:
    """Names under which a search reports validation metrics, in space order.

    For each task, ``"{task}_{metric name}"`` for each metric then ``"{task}_loss"``;
    finally ``"loss"``, the weighted total.
    """
    names = []
    for task_name, task in space["tasks"].items():
        names += [f"{task_name}_{m['name']}" for m in task_metrics(task, f"tasks/{task_name}")]
        names.append(f"{task_name}_loss")
    names.append("loss")
    return names


def default_metric(space: dict) -> str:
    """The first metric of the first task, or its loss when it has no metric."""
    task_name, task = next(iter(space["tasks"].items()))
    metrics = task_metrics(task, f"tasks/{task_name}")
    return f"{task_name}_{metrics[0]['name']}" if metrics else f"{task_name}_loss"


