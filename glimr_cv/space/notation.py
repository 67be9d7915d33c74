"""Search-space notation: glimr's shorthand, Ray Tune domains and constants, at any depth.

A search space is a nested dict. Each leaf is one of

* a ``set``: a choice among its elements, e.g. ``{"relu", "gelu"}``;
* ``[min, max]``: a uniform interval, inclusive of both ends;
* ``[min, max, step]``: a quantized interval ``min, min + step, ... <= max``;
* a Ray Tune domain (``tune.choice``, ``tune.loguniform``, ``tune.sample_from``, ...),
  or ``tune.grid_search([...])``;
* a :func:`loguniform` domain;
* anything else: a constant. Use a tuple for a constant sequence.

Interval bounds that are all ``int`` give integer domains; all ``float`` give
float domains. A list that holds a dict, a set, a list or a domain is a list of
sub-spaces (a task's ``metrics`` list, say), not an interval.

Spaces are *conditional*: the options of a ``tune.choice`` (or of a grid) may be
dicts or lists holding domains of their own, at any depth, and only the chosen
option is sampled, as in glimr's ``tune.choice([{"name": "xent", "kwargs":
{"label_smoothing": tune.uniform(0, 0.2)}}, {...}])``. A sampled configuration
holds the chosen option at the choice's config path, so its values have paths
such as ``tasks/label/loss/kwargs/label_smoothing``; messages name the option
too, ``tasks/label/loss[1]/kwargs/label_smoothing``. ``tune.sample_from``
functions are called last, in passes, as Ray Tune resolves them: a function
sees the configuration as ``spec.config`` (or as its argument) and may read the
values of other functions.

This module imports neither Ray nor Keras: it parses, validates and samples
spaces in pure Python and converts them to Ray Tune domains only on request
(:func:`to_tune`).
"""

from __future__ import annotations

import itertools
import math
import numbers
import random
import sys
from dataclasses import dataclass
from typing import Any, Callable, Iterator

from ..checks import expected

__all__ = [
    "sampled_paths",
    "Choice",
    "Grid",
    "IntRange",
    "FloatRange",
    "TuneDomain",
    "TuneFunction",
    "Branch",
    "Index",
    "SpaceError",
    "loguniform",
    "parse_space",
    "sample_space",
    "resolve",
    "prune_search",
    "to_tune",
    "iter_leaves",
    "iter_nodes",
    "flatten",
    "format_path",
    "is_tune_domain",
    "grid_variants",
    "covering_configs",
    "is_conditional",
    "describe_space",
]


class SpaceError(ValueError):
    """A search space breaks a notation or structure rule."""


@dataclass(frozen=True)
class Branch:
    """A path element: option ``index`` of a choice or grid (``loss[1]`` in a message)."""

    index: int


@dataclass(frozen=True)
class Index:
    """A path element: position ``index`` of a list (``metrics[0]``)."""

    index: int


def format_path(path: tuple) -> str:
    """``"a/b[1]/c"``: keys joined by ``/``, options and list positions in brackets."""
    out = ""
    for part in path:
        if isinstance(part, (Branch, Index)):
            out += f"[{part.index}]"
        else:
            out += ("/" if out else "") + str(part)
    return out or "<root>"


_fmt = format_path


def _config_path(path: tuple) -> tuple:
    """A path without its option markers: where the value sits in a sampled configuration."""
    return tuple(p for p in path if not isinstance(p, Branch))


def is_tune_domain(value: Any) -> bool:
    """Whether ``value`` is a Ray Tune search domain (checked without importing Ray)."""
    sample = sys.modules.get("ray.tune.search.sample")
    return sample is not None and isinstance(value, sample.Domain)


def _is_tune_function(value: Any) -> bool:
    sample = sys.modules.get("ray.tune.search.sample")
    return sample is not None and isinstance(value, sample.Function)


def _is_tune_categorical(value: Any) -> bool:
    sample = sys.modules.get("ray.tune.search.sample")
    if sample is None or not isinstance(value, sample.Categorical):
        return False
    # a uniform choice; Tune has no other categorical sampler, but a future one would be kept as given
    return type(value.get_sampler()).__name__ in ("Uniform", "_Uniform")


def _plain(value: Any) -> Any:
    return value.item() if hasattr(value, "item") and not isinstance(value, (dict, list, tuple)) else value


@dataclass(frozen=True)
class Choice:
    """A choice among ``values``: a set's elements, or a ``tune.choice``'s options.

    An option may be a sub-space (a dict or list holding domains), of which only
    the chosen one is sampled. ``draw`` is how the option is drawn from the
    search's generator: ``"python"`` for a set, ``"numpy"`` for a ``tune.choice``
    (as Ray Tune's own sampler draws it). ``domain`` is the user's
    ``tune.choice``, given back by :meth:`to_tune` when no option holds a domain.
    """

    values: tuple
    draw: str = "python"
    domain: Any = None

    @property
    def branching(self) -> bool:
        """Whether an option is structured (a dict, list or domain) rather than a plain value."""
        return any(_structured(v) for v in self.values)

    def index(self, rng: random.Random) -> int:
        """The option drawn from ``rng``."""
        if self.draw == "numpy":
            import numpy as np

            state = np.random.RandomState(rng.randrange(2**32))
            return int(state.choice(np.arange(len(self.values))))
        return rng.randrange(len(self.values))

    def sample(self, rng: random.Random) -> Any:
        return resolve(self, rng)

    def to_tune(self):
        from ray import tune

        if self.domain is not None and not self.branching:
            return self.domain
        return tune.choice([_to_tune(v) for v in self.values])


@dataclass(frozen=True)
class Grid:
    """``tune.grid_search(values)``: every option is tried (with the default searcher)."""

    values: tuple

    def to_tune(self):
        from ray import tune

        return tune.grid_search([_to_tune(v) for v in self.values])


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

    @property
    def top(self) -> float:
        """The largest value on the quantized grid (``high`` without a step)."""
        if self.step is None:
            return self.high
        return round(self.low + self.step * int(math.floor((self.high - self.low) / self.step + 1e-9)), 12)

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
        return _plain(self.domain.sample(random_state=state))

    def to_tune(self):
        return self.domain


@dataclass(frozen=True)
class TuneFunction:
    """``tune.sample_from(func)``: called once the rest of the configuration is sampled."""

    domain: Any

    def to_tune(self):
        return self.domain


Param = Choice | IntRange | FloatRange | TuneDomain | TuneFunction | Grid
_PARAMS = (Choice, IntRange, FloatRange, TuneDomain, TuneFunction, Grid)


def _is_param(value: Any) -> bool:
    return isinstance(value, _PARAMS)


def _structured(value: Any) -> bool:
    """Whether a parsed option is more than a plain value: a sub-space or a domain."""
    return isinstance(value, (dict, list)) or _is_param(value)


def loguniform(low: float, high: float) -> FloatRange:
    """A log-uniform float domain on ``[low, high]``, usable without Ray.

    Raises
    ------
    SpaceError
        Unless ``0 < low <= high``.
    """
    if not (_is_number(low) and _is_number(high)) or not 0 < low <= high:
        raise SpaceError(expected("loguniform", "0 < low <= high", got=f"(low={low!r}, high={high!r})"))
    return FloatRange(float(low), float(high), log=True)


def _is_number(x: Any) -> bool:
    return isinstance(x, numbers.Real) and not isinstance(x, bool)


# -- parsing -------------------------------------------------------------------------


def _parse_set(values: set | frozenset, path: tuple) -> Choice:
    if not values:
        raise SpaceError(expected(_fmt(path), "a set with at least one element (a set is a choice)",
                                  got="an empty set"))
    try:
        ordered = tuple(sorted(values))
    except TypeError:  # mixed types: order by repr so a seed gives the same sample on every run
        ordered = tuple(sorted(values, key=repr))
    return Choice(ordered)


def _is_sublist(values: list) -> bool:
    """A list of sub-spaces (an element is a dict, set, list or domain), not an interval."""
    return any(isinstance(v, (dict, set, frozenset, list)) or is_tune_domain(v) or _is_param(v) for v in values)


def _parse_interval(values: list, path: tuple) -> IntRange | FloatRange:
    where = _fmt(path)
    if len(values) not in (2, 3):
        raise SpaceError(
            expected(where, "an interval [min, max] or [min, max, step]",
                     got=f"a list of length {len(values)}: {values!r} (use a tuple for a constant sequence)")
        )
    bad = [v for v in values if not _is_number(v)]
    if bad:
        raise SpaceError(
            expected(where, "interval elements that are numbers (int or float)", got=f"{bad[0]!r} in {values!r}")
        )
    kinds = {isinstance(v, numbers.Integral) for v in values}
    if len(kinds) > 1:
        raise SpaceError(
            expected(where, "interval elements that are all int or all float", got=f"mixed types in {values!r}")
        )
    low, high = values[0], values[1]
    if low > high:
        raise SpaceError(expected(where, "min <= max", got=f"(min={low!r}, max={high!r})"))
    step = values[2] if len(values) == 3 else None
    if step is not None and step <= 0:
        raise SpaceError(expected(where, "step > 0", got=f"step={step!r}"))
    if kinds == {True}:
        return IntRange(int(low), int(high), int(step) if step is not None else 1)
    return FloatRange(float(low), float(high), float(step) if step is not None else None)


def _is_metric_list(path: tuple) -> bool:
    # tasks/<task>/metrics is a list of metric specs, whatever it holds, never an interval
    return len(path) == 3 and path[0] == "tasks" and path[2] == "metrics"


def _is_grid(value: Any) -> bool:
    return isinstance(value, dict) and len(value) == 1 and "grid_search" in value


def _parse(value: Any, path: tuple, in_choice: bool = False) -> Any:
    """One node of a space, parsed; ``in_choice``: inside an option of a random choice."""
    if _is_grid(value):
        options = value["grid_search"]
        if in_choice:
            raise SpaceError(expected(_fmt(path), "no grid_search inside an option of a random choice (a grid cannot "
                                                  "be expanded inside a value drawn at random)", got="one",
                                      hint="make that choice a tune.grid_search of its options too"))
        if not isinstance(options, (list, tuple)) or not options:
            raise SpaceError(expected(_fmt(path), "grid_search of a non-empty list of values", options))
        return Grid(tuple(_parse_option(v, path + (Branch(i),), False) for i, v in enumerate(options)))
    if isinstance(value, dict):
        return {k: _parse(v, path + (k,), in_choice) for k, v in value.items()}
    if isinstance(value, (set, frozenset)):
        return _parse_set(value, path)
    if isinstance(value, list):
        if _is_sublist(value) or _is_metric_list(path):
            return [_parse(v, path + (Index(i),), in_choice) for i, v in enumerate(value)]
        return _parse_interval(value, path)
    if isinstance(value, tuple):
        # a constant sequence; a domain or sub-space in it is still sampled
        if any(isinstance(v, dict) or is_tune_domain(v) for v in value):
            return tuple(_parse(v, path + (Index(i),), in_choice) if isinstance(v, dict) or is_tune_domain(v) else v
                         for i, v in enumerate(value))
        return value
    if _is_tune_function(value):
        return TuneFunction(value)
    if _is_tune_categorical(value):
        options = tuple(_parse_option(v, path + (Branch(i),), True) for i, v in enumerate(value.categories))
        if not options:
            raise SpaceError(expected(_fmt(path), "a tune.choice with at least one option", got="none"))
        return Choice(options, draw="numpy", domain=value)
    if is_tune_domain(value):
        return TuneDomain(value)
    return value  # a constant, or already a parsed Param


def _parse_option(value: Any, path: tuple, in_choice: bool) -> Any:
    """An option of a ``tune.choice`` or a grid, read as Ray Tune reads it.

    A dict is a sub-space (glimr's notation applies in it) and a domain is
    sampled; a list or tuple is a constant unless it holds such values.
    """
    if isinstance(value, dict) or is_tune_domain(value) or _is_param(value):
        return _parse(value, path, in_choice)
    if isinstance(value, (list, tuple)) and any(isinstance(v, dict) or is_tune_domain(v) for v in value):
        return type(value)(_parse_option(v, path + (Index(i),), in_choice) for i, v in enumerate(value))
    return value


def parse_space(space: dict, path: tuple = ()) -> dict:
    """Replace notation leaves, at any depth, by :class:`Choice`, :class:`IntRange`, :class:`FloatRange`, ...

    Raises
    ------
    SpaceError
        For malformed notation, naming the path of the leaf (``loss[1]`` for
        option 1 of a choice) and the rule.
    """
    if not isinstance(space, dict):
        raise SpaceError(expected(_fmt(path), "a dict (a search space)", got=type(space).__name__))
    return {key: _parse(value, path + (key,)) for key, value in space.items()}


# -- walking -------------------------------------------------------------------------


def iter_leaves(space: dict, path: tuple = ()) -> Iterator[tuple[tuple, Any]]:
    """Yield ``(path, value)`` for every leaf of a nested dict (lists and options are leaves)."""
    for key, value in space.items():
        if isinstance(value, dict) and value:
            yield from iter_leaves(value, path + (key,))
        else:
            yield path + (key,), value


def iter_nodes(node: Any, path: tuple = ()) -> Iterator[tuple[tuple, Any]]:
    """Yield ``(path, param)`` for every domain of a parsed space, inside options and lists too.

    Paths carry :class:`Branch` and :class:`Index` markers; a choice comes
    before the domains of its options.
    """
    if isinstance(node, dict):
        for key, value in node.items():
            yield from iter_nodes(value, path + (key,))
    elif isinstance(node, (list, tuple)):
        for i, value in enumerate(node):
            yield from iter_nodes(value, path + (Index(i),))
    elif _is_param(node):
        yield path, node
        if isinstance(node, (Choice, Grid)):
            for i, value in enumerate(node.values):
                yield from iter_nodes(value, path + (Branch(i),))


def is_conditional(parsed: dict) -> bool:
    """Whether a choice of the parsed space has a structured option (a sub-space or a domain)."""
    return any(isinstance(p, Choice) and p.branching for _, p in iter_nodes(parsed))


def sampled_paths(space: dict) -> list[str]:
    """Config paths (``"optimization/learning_rate"``) of the values a parsed space samples.

    The domains inside a choice's options add their own paths; a choice of dicts
    has no path of its own (its value is a dict), so the plain values that tell
    its options apart (a loss's ``name``, say) stand for it.
    """
    paths: list[str] = []

    def add(path: tuple) -> None:
        text = _fmt(path)
        if text not in paths:
            paths.append(text)

    for path, param in iter_nodes(space):
        options = param.values if isinstance(param, (Choice, Grid)) else ()
        if any(isinstance(v, dict) for v in options):
            leaves = [dict(iter_leaves(_constants(v))) for v in options if isinstance(v, dict)]
            for key in dict.fromkeys(k for leaf in leaves for k in leaf):
                seen = [leaf.get(key, _MISSING) for leaf in leaves]
                if any(not _same(s, seen[0]) for s in seen) and all(_scalar(s) for s in seen if s is not _MISSING):
                    add(_config_path(path) + key)
            continue
        add(_config_path(path))
    return paths


_MISSING = object()


def _same(a: Any, b: Any) -> bool:
    try:
        return bool(a == b)
    except Exception:  # arrays and other values without a truth value of ==
        return a is b


def _scalar(value: Any) -> bool:
    return isinstance(value, (str, numbers.Number, bool, type(None)))


def _constants(node: dict) -> dict:
    """The constant leaves of a parsed dict, without its domains."""
    out = {}
    for key, value in node.items():
        if isinstance(value, dict):
            sub = _constants(value)
            if sub:
                out[key] = sub
        elif not _is_param(value) and not isinstance(value, list):
            out[key] = value
    return out


def flatten(config: dict, prefix: str = "") -> dict:
    """Flatten a nested dict to ``{"a/b/c": value}``; lists of dicts become ``"a/metrics[0]/name"``."""
    out = {}

    def walk(node, path):
        for key, value in node.items():
            sub = path + (key,)
            if isinstance(value, dict) and value:
                walk(value, sub)
            elif isinstance(value, list) and value and any(isinstance(v, dict) for v in value):
                for i, item in enumerate(value):
                    if isinstance(item, dict) and item:
                        walk(item, sub + (Index(i),))
                    else:
                        out[prefix + _fmt(sub + (Index(i),))] = item
            else:
                out[prefix + _fmt(sub)] = value

    walk(config, ())
    return out


# -- sampling ------------------------------------------------------------------------


class _Pending:
    """A ``tune.sample_from`` value not yet called."""

    def __init__(self, path: tuple, domain: Any):
        self.path, self.domain = path, domain

    def __repr__(self) -> str:
        return f"<tune.sample_from at {_fmt(self.path)}, not yet resolved>"


class _Unresolved(Exception):
    """A function read a value that another function has not produced yet."""


class _Spec(dict):
    """A configuration as a ``tune.sample_from`` function reads it: ``spec.config.a`` or ``config["a"]``."""

    def _wrap(self, key, value):
        if isinstance(value, _Pending):
            raise _Unresolved(key)
        return _Spec(value) if isinstance(value, dict) and not isinstance(value, _Spec) else value

    def __getitem__(self, key):
        return self._wrap(key, dict.__getitem__(self, key))

    def __getattr__(self, key):
        try:
            return self[key]
        except KeyError:
            raise AttributeError(key) from None

    def get(self, key, default=None):
        return self[key] if key in self else default


def _call(domain: Any, config: dict) -> Any:
    """A sample_from function's value, called as Ray Tune calls it (the config, then ``{"config": ...}``)."""
    func = domain.func
    if not getattr(domain, "pass_config", True):
        return func()
    try:
        return func(_Spec(config))
    except (AttributeError, KeyError):  # written against Tune's spec, spec.config.x
        return func(_Spec({"config": config}))


def _sub(suggestion: Any, key: Any) -> Any:
    """The part of an inner searcher's suggestion under ``key`` (a dict key or a list position)."""
    if isinstance(key, Index):
        key = key.index
    if isinstance(suggestion, dict):
        if key in suggestion:
            return suggestion[key]
        return suggestion.get(str(key)) if not isinstance(key, str) else None
    if isinstance(suggestion, (list, tuple)) and isinstance(key, int) and key < len(suggestion):
        return suggestion[key]
    return None


_NONE = object()


class _Resolver:
    """Samples a parsed space: the chosen options only, functions last."""

    def __init__(self, rng: random.Random, suggestion: Any = None, pick: Callable | None = None):
        self.rng = rng
        self.suggestion = suggestion
        self.pick = pick  # (path, choice) -> option index, for covering configurations
        self.pending: list[_Pending] = []
        self.taken: dict[tuple, int] = {}  # choice path -> option taken

    def __call__(self, node: Any) -> Any:
        value = self.node(node, (), self.suggestion)
        if self.pending:
            self.functions(value)
        return value

    def choose(self, param: Choice | Grid, path: tuple, sug: Any) -> tuple[int, Any]:
        """``(option, the suggestion for that option)``."""
        n = len(param.values)
        if isinstance(sug, dict) and isinstance(param, Choice) and param.branching:
            # an inner searcher's form (see glimr_cv.space.searchers): {"branch": i} and/or {"<i>": {...}}
            keys = [k for k in sug if str(k).isdigit() and int(k) < n]
            i = sug.get("branch", int(keys[0]) if len(keys) == 1 else None)
            if isinstance(i, int) and 0 <= i < n:
                return i, _sub(sug, i)
        if self.pick is not None:
            i = self.pick(path, param)
            if i is not None:
                return i, None
        return (param.index(self.rng) if isinstance(param, Choice) else self.rng.randrange(n)), None

    def node(self, node: Any, path: tuple, sug: Any) -> Any:
        if isinstance(node, dict):
            return {k: self.node(v, path + (k,), _sub(sug, k)) for k, v in node.items()}
        if isinstance(node, list):
            return [self.node(v, path + (Index(i),), _sub(sug, i)) for i, v in enumerate(node)]
        if isinstance(node, tuple):
            return tuple(self.node(v, path + (Index(i),), _sub(sug, i)) for i, v in enumerate(node))
        if isinstance(node, Choice) and not node.branching and sug is not None and not isinstance(sug, dict):
            return _plain(sug)  # an inner searcher's value
        if isinstance(node, (Choice, Grid)):
            i, option_sug = self.choose(node, path, sug)
            self.taken[path] = i
            option = node.values[i]
            if not _structured(option):
                return _plain(option)
            return self.node(option, path + (Branch(i),), option_sug)
        if isinstance(node, TuneFunction):
            pending = _Pending(path, node.domain)
            self.pending.append(pending)
            return pending
        if _is_param(node):
            if sug is not None and not isinstance(sug, dict):
                return _plain(sug)
            return node.sample(self.rng)
        return node

    def functions(self, config: dict) -> None:
        """Call the ``tune.sample_from`` functions in passes, as Ray Tune does, until all have values."""
        pending = self.pending
        while pending:
            waiting = []
            for item in pending:
                try:
                    value = _call(item.domain, config)
                except _Unresolved:
                    waiting.append(item)
                    continue
                except Exception as err:
                    raise SpaceError(f"{_fmt(item.path)}: tune.sample_from raised {type(err).__name__}: {err} "
                                     "(it reads the configuration as spec.config.<key> or config['<key>'], and "
                                     "only the keys of the options chosen in this configuration exist)") from err
                _assign(config, _config_path(item.path), value)
            if len(waiting) == len(pending):
                raise SpaceError(f"{_fmt(waiting[0].path)}: tune.sample_from functions "
                                 f"{[_fmt(w.path) for w in waiting]} read each other's values, so none can be "
                                 "called first; expected functions without a cycle")
            pending = waiting
        self.pending = []


def _assign(config: Any, path: tuple, value: Any) -> None:
    node = config
    for key in path[:-1]:
        node = node[key.index if isinstance(key, Index) else key]
    last = path[-1]
    if isinstance(last, Index):
        if isinstance(node, tuple):
            raise SpaceError(expected(_fmt(path), "tune.sample_from in a list or dict", got="one in a tuple"))
        node[last.index] = value
    else:
        node[last] = value


def resolve(node: Any, rng: random.Random, suggestion: Any = None) -> Any:
    """Sample a parsed space (or one node of it): the chosen options only, ``tune.sample_from`` last.

    Parameters
    ----------
    node : dict or Param
        A parsed space (:func:`parse_space`), or a node of one.
    rng : random.Random
        Draws every value the suggestion does not give.
    suggestion : dict, optional
        Values an inner searcher proposed, nested like the configuration; the
        option of a structured choice is ``{"branch": i}`` or ``{"<i>": {...}}``
        (see :mod:`glimr_cv.space.searchers`).

    Raises
    ------
    SpaceError
        When a ``tune.sample_from`` function fails or its functions form a cycle.
    """
    return _Resolver(rng, suggestion)(node)


def sample_space(space: dict, seed: int | random.Random | None = None) -> dict:
    """Sample one configuration from a search space.

    Parameters
    ----------
    space : dict
        A nested search space in any notation this module accepts (parsed or not).
    seed : int, random.Random or None
        Seed or generator; the same seed gives the same configuration.

    Returns
    -------
    dict
        The space with every domain replaced by a sampled value, at any depth:
        the options of a choice are sampled only when chosen, a grid takes one of
        its values at random, and ``tune.sample_from`` functions are called last.
    """
    if not (seed is None or isinstance(seed, random.Random)
            or (isinstance(seed, numbers.Integral) and not isinstance(seed, bool))):
        raise TypeError(expected("seed", "an int, a random.Random or None", seed))
    rng = seed if isinstance(seed, random.Random) else random.Random(None if seed is None else int(seed))
    return resolve(parse_space(space), rng)


# -- grids and covering configurations --------------------------------------------------


def _expand(node: Any) -> Iterator[Any]:
    """Every grid point of a parsed node: the node with each grid replaced by one of its values."""
    if isinstance(node, Grid):
        for value in node.values:
            yield from _expand(value)
    elif isinstance(node, dict):
        keys = list(node)
        for combo in itertools.product(*(list(_expand(node[k])) for k in keys)):
            yield dict(zip(keys, combo))
    elif isinstance(node, (list, tuple)):
        for combo in itertools.product(*(list(_expand(v)) for v in node)):
            yield type(node)(combo)
    else:
        yield node


def grid_variants(parsed: dict) -> list[dict]:
    """The grid points of a parsed space, in Ray Tune's order: one parsed space per point, without grids.

    A space without ``grid_search`` has one variant, itself. A grid whose
    values hold grids of their own expands each value's grid.
    """
    if not any(isinstance(p, Grid) for _, p in iter_nodes(parsed)):
        return [parsed]
    return list(_expand(parsed))


def covering_configs(parsed: dict, rng: random.Random) -> list[tuple[dict, list[str], bool]]:
    """Configurations that, between them, take every option of every choice and grid at least once.

    Built greedily: each configuration takes, at every choice it reaches, an
    option not yet taken (or one whose own options are not all taken yet), so
    there are about as many configurations as the largest choice has options,
    nested ones included; other values are drawn from ``rng``.

    Returns
    -------
    list of (dict, list of str, bool)
        Each configuration, the options it is the first to take (``"tasks/t/loss[1]"``,
        ``"units=64"``), and whether one of them is a structured option (a
        sub-space or a domain, whose code only runs when chosen).
    """
    nodes = [(path, p) for path, p in iter_nodes(parsed) if isinstance(p, (Choice, Grid))]
    todo = {(path, i) for path, p in nodes for i in range(len(p.values))}
    inside = {path: [q for q, _ in nodes if q[: len(path)] == path and q != path] for path, _ in nodes}

    def pick(path, param):
        fresh = [i for i in range(len(param.values)) if (path, i) in todo]
        if fresh:
            return fresh[0]
        for i in range(len(param.values)):  # an option whose own choices are not all taken yet
            prefix = path + (Branch(i),)
            if any((q, j) in todo for q in inside[path] if q[: len(prefix)] == prefix
                   for j in range(len(dict(nodes)[q].values))):
                return i
        return None

    out = []
    while todo:
        resolver = _Resolver(rng, pick=pick)
        config = resolver(parsed)
        new = [(path, i) for path, i in resolver.taken.items() if (path, i) in todo]
        if not new:  # unreachable options cannot be covered (never expected)
            break
        todo -= set(new)
        labels, structured = [], False
        for path, i in new:
            param = dict(nodes)[path]
            option = param.values[i]
            if _structured(option):
                labels.append(_fmt(path + (Branch(i),)))
                structured = True
            else:
                labels.append(f"{_fmt(path)}={option!r}")
        out.append((config, labels, structured))
    return out


def describe_space(node: Any) -> Any:
    """A parsed space as plain JSON, for a person to read: domains as small dicts, other values as themselves.

    ``{"choice": [...]}``, ``{"grid": [...]}``, ``{"int": [low, high, step]}``,
    ``{"float": [low, high, step]}``, ``{"loguniform": [low, high]}``,
    ``{"tune": "Float uniform [0, 1)"}``, ``{"sample_from": "<function ...>"}``; a
    value JSON cannot hold is ``{"$opaque": repr}``.
    """
    if isinstance(node, dict):
        return {str(k): describe_space(v) for k, v in node.items()}
    if isinstance(node, (list, tuple)):
        return [describe_space(v) for v in node]
    if isinstance(node, Choice):
        return {"choice": [describe_space(v) for v in node.values]}
    if isinstance(node, Grid):
        return {"grid": [describe_space(v) for v in node.values]}
    if isinstance(node, IntRange):
        return {"int": [node.low, node.high, node.step]}
    if isinstance(node, FloatRange):
        return {"loguniform": [node.low, node.high]} if node.log else {"float": [node.low, node.high, node.step]}
    if isinstance(node, TuneDomain):
        d = node.domain
        sampler = type(d.get_sampler()).__name__.lstrip("_") if hasattr(d, "get_sampler") else ""
        bounds = f" [{d.lower}, {d.upper})" if hasattr(d, "lower") else ""
        return {"tune": f"{type(d).__name__} {sampler}{bounds}".strip()}
    if isinstance(node, TuneFunction):
        return {"sample_from": repr(node.domain.func)}
    if node is None or isinstance(node, (str, bool, int)) or (isinstance(node, float) and math.isfinite(node)):
        return node
    return {"$opaque": repr(node)}


# -- Ray Tune's form -----------------------------------------------------------------------


def _to_tune(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _to_tune(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_to_tune(v) for v in node]
    if isinstance(node, tuple):
        return tuple(_to_tune(v) for v in node)
    return node.to_tune() if _is_param(node) else node


def to_tune(space: dict) -> dict:
    """Convert a space to Ray Tune's form: domains become Tune domains at any depth, constants stay."""
    return _to_tune(parse_space(space))


def prune_search(space: dict) -> dict:
    """Keep only the searchable leaves of a space, as Ray Tune domains.

    As in glimr, constants and conditional ``tune.sample_from`` functions are
    dropped and empty sub-dicts removed. glimr made this for population based
    training's ``hyperparam_mutations``; :class:`glimr_cv.Search` refuses that
    scheduler (a fold trains one configuration from start to end), so here it is
    a view of what a space searches.
    """

    def walk(node):
        out = {}
        for key, value in node.items():
            if isinstance(value, dict):
                sub = walk(value)
                if sub:
                    out[key] = sub
            elif _is_param(value) and not isinstance(value, TuneFunction):
                out[key] = value.to_tune()
        return out

    return walk(parse_space(space))
