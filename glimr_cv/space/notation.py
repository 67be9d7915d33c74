"""Search-space notation: glimr's shorthand, Ray Tune domains and constants.

A search space is a nested dict. Each leaf is one of

* a ``set``: a choice among its elements, e.g. ``{"relu", "gelu"}``;
* ``[min, max]``: a uniform interval, inclusive of both ends;
* ``[min, max, step]``: a quantized interval ``min, min + step, ... <= max``;
* a Ray Tune domain (``tune.choice``, ``tune.loguniform``, ...);
* a :func:`loguniform` domain;
* anything else: a constant. Use a tuple for a constant sequence.

Interval bounds that are all ``int`` give integer domains; all ``float`` give
float domains. This module imports neither Ray nor Keras: it parses, validates
and samples spaces in pure Python and converts them to Ray Tune domains only
on request (:func:`to_tune`).
"""

from __future__ import annotations

import math
import numbers
import random
import sys
from dataclasses import dataclass
from typing import Any, Iterator

__all__ = [
    "sampled_paths",
    "Choice",
    "IntRange",
    "FloatRange",
    "SpaceError",
    "loguniform",
    "parse_space",
    "sample_space",
    "prune_search",
    "to_tune",
    "iter_leaves",
    "flatten",
    "is_tune_domain",
]


class SpaceError(ValueError):
    """A search space breaks a notation or structure rule."""


def _fmt(path: tuple) -> str:
    return "/".join(str(p) for p in path) or "<root>"


def is_tune_domain(value: Any) -> bool:
    """Whether ``value`` is a Ray Tune search domain (checked without importing Ray)."""
    sample = sys.modules.get("ray.tune.search.sample")
    return sample is not None and isinstance(value, sample.Domain)


@dataclass(frozen=True)
class Choice:
    """A choice among ``values`` (from a ``set`` or a tuple of options)."""

    values: tuple

    def sample(self, rng: random.Random) -> Any:
        return self.values[rng.randrange(len(self.values))]

    def to_tune(self):
        from ray import tune

        return tune.choice(list(self.values))


@dataclass(frozen=True)
class IntRange:
    """Integers ``low, low + step, ...`` up to and including ``high``."""

    low: int
    high: int
    step: int = 1

    def sample(self, rng: random.Random) -> int:
        n = (self.high - self.low) // self.step
        return self.low + self.step * rng.randint(0, n)

    def to_tune(self):
        from ray import tune

        if self.step == 1:
            return tune.randint(self.low, self.high + 1)  # Tune's upper bound is exclusive
        top = self.low + self.step * ((self.high - self.low) // self.step)
        if self.low % self.step == 0:
            return tune.qrandint(self.low, top, self.step)
        # Tune quantizes from 0, not from low: list this grid instead
        return tune.choice(list(range(self.low, top + 1, self.step)))


@dataclass(frozen=True)
class FloatRange:
    """Floats in ``[low, high]``; quantized by ``step`` or log-uniform when ``log``."""

    low: float
    high: float
    step: float | None = None
    log: bool = False

    def sample(self, rng: random.Random) -> float:
        if self.log:
            return math.exp(rng.uniform(math.log(self.low), math.log(self.high)))
        if self.step is None:
            return rng.uniform(self.low, self.high)
        n = int(math.floor((self.high - self.low) / self.step + 1e-9))
        return round(self.low + self.step * rng.randint(0, n), 12)

    def to_tune(self):
        from ray import tune

        if self.log:
            return tune.loguniform(self.low, self.high)
        if self.step is None:
            return tune.uniform(self.low, self.high)
        n = int(math.floor((self.high - self.low) / self.step + 1e-9))
        top = self.low + self.step * n
        ratio = self.low / self.step
        if abs(ratio - round(ratio)) < 1e-9:
            return tune.quniform(self.low, top, self.step)
        # Tune quantizes from 0, not from low: list this grid instead
        return tune.choice([round(self.low + self.step * i, 12) for i in range(n + 1)])


@dataclass(frozen=True)
class TuneDomain:
    """A user-given Ray Tune domain, kept as is."""

    domain: Any

    def sample(self, rng: random.Random) -> Any:
        import numpy as np

        state = np.random.RandomState(rng.randrange(2**32))
        value = self.domain.sample(random_state=state)
        return value.item() if hasattr(value, "item") else value

    def to_tune(self):
        return self.domain


Param = Choice | IntRange | FloatRange | TuneDomain


def loguniform(low: float, high: float) -> FloatRange:
    """A log-uniform float domain on ``[low, high]``, usable without Ray.

    Raises
    ------
    SpaceError
        Unless ``0 < low <= high``.
    """
    if not (_is_number(low) and _is_number(high)) or not 0 < low <= high:
        raise SpaceError(f"loguniform: expected 0 < low <= high, but got (low={low!r}, high={high!r})")
    return FloatRange(float(low), float(high), log=True)


def _is_number(x: Any) -> bool:
    return isinstance(x, numbers.Real) and not isinstance(x, bool)


def _parse_set(values: set | frozenset, path: tuple) -> Choice:
    if not values:
        raise SpaceError(f"{_fmt(path)}: expected a set with at least one element (a set is a choice), but got an empty set")
    try:
        ordered = tuple(sorted(values))
    except TypeError:  # mixed types: order by repr so a seed gives the same sample on every run
        ordered = tuple(sorted(values, key=repr))
    return Choice(ordered)


def _parse_list(values: list, path: tuple) -> IntRange | FloatRange:
    where = _fmt(path)
    if len(values) not in (2, 3):
        raise SpaceError(
            f"{where}: expected an interval [min, max] or [min, max, step], but got a list of "
            f"length {len(values)}: {values!r} (use a tuple for a constant sequence)"
        )
    bad = [v for v in values if not _is_number(v)]
    if bad:
        raise SpaceError(
            f"{where}: expected interval elements that are numbers (int or float), but got {bad[0]!r} in {values!r}"
        )
    kinds = {isinstance(v, numbers.Integral) for v in values}
    if len(kinds) > 1:
        raise SpaceError(
            f"{where}: expected interval elements that are all int or all float, but got mixed types in {values!r}"
        )
    low, high = values[0], values[1]
    if low > high:
        raise SpaceError(f"{where}: expected min <= max, but got (min={low!r}, max={high!r})")
    step = values[2] if len(values) == 3 else None
    if step is not None and step <= 0:
        raise SpaceError(f"{where}: expected step > 0, but got step={step!r}")
    if kinds == {True}:
        return IntRange(int(low), int(high), int(step) if step is not None else 1)
    return FloatRange(float(low), float(high), float(step) if step is not None else None)


def _parse_leaf(value: Any, path: tuple) -> Any:
    if isinstance(value, (set, frozenset)):
        return _parse_set(value, path)
    if isinstance(value, list):
        return _parse_list(value, path)
    if is_tune_domain(value):
        return TuneDomain(value)
    return value  # a constant, or already a parsed Param


def parse_space(space: dict, path: tuple = ()) -> dict:
    """Replace notation leaves by :class:`Choice`, :class:`IntRange`, :class:`FloatRange`.

    Raises
    ------
    SpaceError
        For malformed notation, naming the path of the leaf and the rule.
    """
    if not isinstance(space, dict):
        raise SpaceError(f"{_fmt(path)}: expected a dict (a search space), but got {type(space).__name__}")
    out = {}
    for key, value in space.items():
        sub = path + (key,)
        if isinstance(value, dict):
            out[key] = parse_space(value, sub)
        elif isinstance(value, list) and _is_metric_list(sub):
            out[key] = [parse_space(v, sub + (i,)) if isinstance(v, dict) else v for i, v in enumerate(value)]
        else:
            out[key] = _parse_leaf(value, sub)
    return out


def _is_metric_list(path: tuple) -> bool:
    # tasks/<task>/metrics is a list of metric specs, not an interval
    return len(path) == 3 and path[0] == "tasks" and path[2] == "metrics"


def _is_param(value: Any) -> bool:
    return isinstance(value, (Choice, IntRange, FloatRange, TuneDomain))


def iter_leaves(space: dict, path: tuple = ()) -> Iterator[tuple[tuple, Any]]:
    """Yield ``(path, value)`` for every leaf of a nested dict."""
    for key, value in space.items():
        if isinstance(value, dict) and value:
            yield from iter_leaves(value, path + (key,))
        else:
            yield path + (key,), value


def sampled_paths(space: dict) -> list[str]:
    """Config paths (``"optimization/learning_rate"``) of the leaves a parsed space samples."""
    return [_fmt(p) for p, v in iter_leaves(space) if isinstance(v, (Choice, IntRange, FloatRange, TuneDomain))]


def flatten(config: dict, prefix: str = "") -> dict:
    """Flatten a nested dict to ``{"a/b/c": value}``."""
    return {prefix + _fmt(p): v for p, v in iter_leaves(config)}


def sample_space(space: dict, seed: int | random.Random | None = None) -> dict:
    """Sample one configuration from a search space.

    Parameters
    ----------
    space : dict
        A nested search space in any notation this module accepts.
    seed : int, random.Random or None
        Seed or generator; the same seed gives the same configuration.

    Returns
    -------
    dict
        The space with every domain replaced by a sampled value.
    """
    rng = seed if isinstance(seed, random.Random) else random.Random(seed)

    def walk(node):
        if isinstance(node, dict):
            return {k: walk(v) for k, v in node.items()}
        if isinstance(node, list):  # only metric lists survive parsing as lists
            return [walk(v) for v in node]
        return node.sample(rng) if _is_param(node) else node

    return walk(parse_space(space))


def to_tune(space: dict) -> dict:
    """Convert a space to Ray Tune's form: domains become Tune domains, constants stay."""

    def walk(node):
        if isinstance(node, dict):
            return {k: walk(v) for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v) for v in node]
        return node.to_tune() if _is_param(node) else node

    return walk(parse_space(space))


def prune_search(space: dict) -> dict:
    """Keep only the searchable leaves of a space, as Ray Tune domains.

    As in glimr, constants and conditional ``tune.sample_from`` functions are
    dropped and empty sub-dicts removed, so the result can be passed as
    ``hyperparam_mutations`` to ``ray.tune.schedulers.PopulationBasedTraining``.
    """

    def walk(node):
        out = {}
        for key, value in node.items():
            if isinstance(value, dict):
                sub = walk(value)
                if sub:
                    out[key] = sub
            elif _is_param(value):
                domain = value.to_tune()
                if type(domain).__name__ != "Function":
                    out[key] = domain
        return out

    return walk(parse_space(space))
