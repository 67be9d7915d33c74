"""How a parsed space is told to an inner searcher (Optuna, HyperOpt), and what each can express.

An inner searcher proposes configurations that the search trains on every
fold; it must see the space's structure, so that a parameter exists only in the
option of a choice that holds it.

* HyperOpt takes nested ``hp.choice``: :func:`to_inner` writes each option of a
  structured choice as ``{"<i>": option}`` so that every option's parameters
  get their own names (Ray Tune names them by the choice's path alone) and the
  suggestion says which option it took.
* Optuna takes a define-by-run function: :func:`optuna_define_by_run` suggests
  ``<path>/branch`` (the option) and then only that option's parameters, named
  ``<path>/<i>/...``.
* Both give suggestions that :func:`glimr_cv.space.notation.resolve` reads;
  ``tune.sample_from`` functions are left to it, and a grid is refused.

Pure Python: Ray Tune and Optuna are imported only by the functions that build
their objects.
"""

from __future__ import annotations

from typing import Any

from .notation import Branch, Choice, FloatRange, Grid, Index, IntRange, SpaceError, TuneDomain, TuneFunction, \
    format_path, is_conditional, iter_nodes

__all__ = ["to_inner", "optuna_define_by_run", "OptunaDefineByRun", "check_searcher", "searcher_kind"]

#: Inner searchers that understand the options of a choice, by class name.
_CONDITIONAL = {"OptunaSearch": "optuna", "HyperOptSearch": "hyperopt"}


def searcher_kind(inner: Any) -> str | None:
    """``"optuna"``, ``"hyperopt"`` or None (another searcher), looking through a ``ConcurrencyLimiter``."""
    searcher = getattr(inner, "searcher", inner)  # ConcurrencyLimiter and Repeater wrap one
    for cls in type(searcher).__mro__:
        if cls.__name__ in _CONDITIONAL:
            return _CONDITIONAL[cls.__name__]
    return None


def check_searcher(parsed: dict, inner: Any) -> None:
    """Refuse an inner searcher that cannot express the space, naming the path.

    Raises
    ------
    ValueError
        For a ``tune.grid_search`` with any inner searcher (a grid is expanded by
        the default searcher), or a choice with structured options (sub-spaces
        or domains) with a searcher other than ``OptunaSearch`` and ``HyperOptSearch``.
    """
    name = type(inner).__name__
    for path, param in iter_nodes(parsed):
        if isinstance(param, Grid):
            raise ValueError(f"search_alg: {name} cannot expand the grid_search at {format_path(path)}; expected "
                             "a space without grid_search, or search_alg=None (the default searcher tries every "
                             "grid point, num_samples times)")
    if is_conditional(parsed) and searcher_kind(inner) is None:
        path = next(p for p, c in iter_nodes(parsed) if isinstance(c, Choice) and c.branching)
        raise ValueError(f"search_alg: {name} cannot express the choice at {format_path(path)}, whose options hold "
                         "domains or sub-spaces of their own; expected OptunaSearch, HyperOptSearch or None "
                         "(the default random search), which sample only the chosen option")


def _name(path: tuple) -> str:
    parts = []
    for part in path:
        parts.append(str(part.index) if isinstance(part, (Branch, Index)) else str(part))
    return "/".join(parts)


def to_inner(node: Any) -> Any:
    """The Ray Tune form of a parsed space for an inner searcher's ``set_search_properties``.

    Like :func:`glimr_cv.space.notation.to_tune`, except that a structured
    choice's option ``i`` is written ``{"<i>": option}`` and ``tune.sample_from``
    functions are left out (glimr_cv calls them after the searcher's suggestion).
    """
    from ray import tune

    if isinstance(node, dict):
        return {k: to_inner(v) for k, v in node.items() if not isinstance(v, TuneFunction)}
    if isinstance(node, list):
        return [to_inner(v) for v in node if not isinstance(v, TuneFunction)]
    if isinstance(node, tuple):
        return tuple(to_inner(v) for v in node if not isinstance(v, TuneFunction))
    if isinstance(node, Choice) and node.branching:
        return tune.choice([{str(i): to_inner(v)} for i, v in enumerate(node.values)])
    if isinstance(node, (Choice, IntRange, FloatRange, TuneDomain, Grid)):
        return node.to_tune()
    return node


def _suggest_domain(trial: Any, name: str, domain: Any, path: tuple) -> None:
    """Suggest a user's Ray Tune domain (a float or int range) as Ray Tune's own Optuna conversion does."""
    sampler = domain.get_sampler()
    quantize = getattr(sampler, "q", None)
    base = getattr(sampler, "sampler", sampler)
    kind_of = type(base).__name__.lstrip("_")  # Tune's samplers are Float._Uniform, Float._LogUniform, ...
    log, uniform = kind_of == "LogUniform", kind_of == "Uniform"
    kind = type(domain).__name__
    if kind == "Float" and (log or uniform):
        trial.suggest_float(name, domain.lower, domain.upper, log=log, step=None if log else quantize)
    elif kind == "Integer" and (log or uniform):
        high = domain.upper - (0 if quantize else 1)  # Tune's upper bound is exclusive unless quantized
        trial.suggest_int(name, domain.lower, high, step=int(quantize or 1), log=log)
    else:
        raise SpaceError(f"{format_path(path)}: OptunaSearch cannot sample a {kind} domain with a "
                         f"{kind_of} sampler; expected uniform or log-uniform ranges and choices")


def _skeleton(node: Any) -> Any:
    """The domains of a parsed node, without constants or sample_from functions: what Optuna must pickle."""
    if isinstance(node, dict):
        return {k: _skeleton(v) for k, v in node.items() if _has_domain(v)}
    if isinstance(node, (list, tuple)):
        return [_skeleton(v) if _has_domain(v) else None for v in node]
    if isinstance(node, Choice) and node.branching:
        return Choice(tuple(_skeleton(v) for v in node.values), draw=node.draw)
    if isinstance(node, Choice):
        return Choice(node.values, draw=node.draw)
    return node


def _has_domain(node: Any) -> bool:
    return any(not isinstance(p, TuneFunction) for _, p in iter_nodes(node))


class OptunaDefineByRun:
    """A define-by-run function for ``OptunaSearch`` that follows the space's options.

    A choice of plain values is one categorical parameter named by its path; a
    structured choice is a categorical ``<path>/branch`` over option indices,
    followed by the parameters of the chosen option only, named
    ``<path>/<i>/...``; ranges are float or int parameters. It holds only the
    space's domains (no constants, no functions), so that Optuna's searcher
    state pickles.

    Raises
    ------
    SpaceError
        When called on a space with a grid or a domain Optuna cannot sample (a
        normal distribution, say), naming its path.
    """

    def __init__(self, parsed: dict):
        self.space = _skeleton(parsed)

    def __call__(self, trial: Any) -> None:
        self._walk(trial, self.space, ())

    def _walk(self, trial, node, path):
        if isinstance(node, dict):
            for key, value in node.items():
                self._walk(trial, value, path + (key,))
        elif isinstance(node, (list, tuple)):
            for i, value in enumerate(node):
                self._walk(trial, value, path + (Index(i),))
        elif isinstance(node, Choice) and node.branching:
            i = trial.suggest_categorical(_name(path + ("branch",)), list(range(len(node.values))))
            self._walk(trial, node.values[i], path + (Branch(i),))
        elif isinstance(node, Choice):
            trial.suggest_categorical(_name(path), list(node.values))
        elif isinstance(node, IntRange):
            trial.suggest_int(_name(path), node.low, node.high, step=node.step)
        elif isinstance(node, FloatRange):
            if node.log:
                trial.suggest_float(_name(path), node.low, node.high, log=True)
            else:
                trial.suggest_float(_name(path), node.low, node.top, step=node.step)
        elif isinstance(node, TuneDomain):
            _suggest_domain(trial, _name(path), node.domain, path)
        elif isinstance(node, Grid):
            raise SpaceError(f"{format_path(path)}: OptunaSearch cannot expand a grid_search")


def optuna_define_by_run(parsed: dict) -> OptunaDefineByRun:
    """:class:`OptunaDefineByRun` of a parsed space."""
    return OptunaDefineByRun(parsed)
