"""Checks of user values, with one message template: ``"<name>: expected <what>, but got <value>"``.

``name`` is the argument or config path the user wrote, so the message points
at the mistake. Every ``check_*`` function returns the value it checked.

A public callable with several plain arguments keeps them as data, in
scikit-learn's spirit: a table of constraints (:class:`Int`, :class:`Real`,
:class:`OneOf`, :class:`Bool`, :class:`Instance`, :class:`Function`) that
:func:`validate` applies, in the table's order, so the first bad argument is
the one named.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

__all__ = ["expected", "check_int", "check_number", "check_choice", "check_bool", "check_type", "check_callable",
           "listed", "Int", "Real", "OneOf", "Bool", "Instance", "Function", "validate"]

_UNSET = object()


def expected(name: str, what: str, value: Any = _UNSET, hint: str = "", got: str | None = None) -> str:
    """The message: ``"name: expected what, but got value[; hint]"``.

    ``value`` is shown as its ``repr``; ``got`` instead says what was found in
    words (``"3 repeated"``, ``"shape (2, 3)"``) where a repr would say less.
    """
    if got is None:
        if value is _UNSET:
            raise TypeError("expected: give the value found, or got= in words")
        got = repr(value)
    return f"{name}: expected {what}, but got {got}" + (f"; {hint}" if hint else "")


def listed(items: Iterable, most: int = 5, sep: str = "; ") -> str:
    """The first ``most`` of ``items`` joined by ``sep``, and how many more: what a message shows of a long list."""
    items = [str(item) for item in items]
    more = f"{sep}and {len(items) - most} more" if len(items) > most else ""
    return sep.join(items[:most]) + more


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def check_int(name: str, value: Any, low: int | None = None, high: int | None = None, allow_none: bool = False) -> Any:
    """An int in ``[low, high]`` (either bound optional), or None when allowed."""
    if value is None and allow_none:
        return value
    if not _is_int(value) or (low is not None and value < low) or (high is not None and value > high):
        bounds = (f" in [{low}, {high}]" if low is not None and high is not None
                  else f" >= {low}" if low is not None else f" <= {high}" if high is not None else "")
        raise ValueError(expected(name, f"an int{bounds}" + (" or None" if allow_none else ""), value))
    return value


def check_id(name: str, value: Any, ids: Iterable[int]) -> int:
    """One of the int ``ids``, such as a configuration's id (1.0 and True are not ids)."""
    ids = sorted(ids)
    if not _is_int(value) or value not in ids:
        raise ValueError(expected(name, f"one of {ids}", value))
    return int(value)


def check_number(name: str, value: Any, low: float | None = None, allow_none: bool = False) -> Any:
    """A real number ``>= low``, or None when allowed."""
    if value is None and allow_none:
        return value
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or (low is not None and not value >= low):
        raise ValueError(expected(name, "a number" + (f" >= {low}" if low is not None else "")
                                  + (" or None" if allow_none else ""), value))
    return value


def check_choice(name: str, value: Any, choices: Iterable) -> Any:
    """One of ``choices``."""
    choices = list(choices)
    if value not in choices:
        raise ValueError(expected(name, "one of " + ", ".join(map(repr, choices)), value))
    return value


def check_bool(name: str, value: Any) -> bool:
    """True or False."""
    if not isinstance(value, bool):
        raise TypeError(expected(name, "True or False", value))
    return value


def check_type(name: str, value: Any, types: type | tuple, what: str, allow_none: bool = False) -> Any:
    """An instance of ``types`` (described to the user as ``what``), or None when allowed."""
    if (value is None and allow_none) or isinstance(value, types):
        return value
    # for a container or an object, its type says more than its repr (say, a whole array)
    got = repr(value) if isinstance(value, (str, bytes, numbers.Number)) else type(value).__name__
    raise TypeError(expected(name, what + (" or None" if allow_none else ""), got=got))


def check_callable(name: str, value: Any, what: str, allow_none: bool = False) -> Any:
    """A callable (described as ``what``), or None when allowed."""
    if (value is None and allow_none) or callable(value):
        return value
    raise TypeError(expected(name, what, value))


# -- constraints as data -----------------------------------------------------------
@dataclass(frozen=True)
class Int:
    """An int in ``[low, high]``; ``none``: or None."""

    low: int | None = None
    high: int | None = None
    none: bool = False

    def __call__(self, name: str, value: Any) -> Any:
        return check_int(name, value, self.low, self.high, self.none)


@dataclass(frozen=True)
class Real:
    """A real number ``>= low``; ``none``: or None."""

    low: float | None = None
    none: bool = False

    def __call__(self, name: str, value: Any) -> Any:
        return check_number(name, value, self.low, self.none)


class OneOf:
    """One of the given values."""

    def __init__(self, *choices: Any):
        self.choices = choices

    def __call__(self, name: str, value: Any) -> Any:
        return check_choice(name, value, self.choices)


@dataclass(frozen=True)
class Bool:
    """True or False."""

    def __call__(self, name: str, value: Any) -> Any:
        return check_bool(name, value)


@dataclass(frozen=True)
class Instance:
    """An instance of ``types``, described to the user as ``what``; ``none``: or None."""

    types: type | tuple
    what: str
    none: bool = False

    def __call__(self, name: str, value: Any) -> Any:
        return check_type(name, value, self.types, self.what, self.none)


@dataclass(frozen=True)
class Function:
    """A callable, described to the user as ``what``; ``none``: or None."""

    what: str
    none: bool = False

    def __call__(self, name: str, value: Any) -> Any:
        return check_callable(name, value, self.what, self.none)


def validate(constraints: Mapping[str, Any], values: Mapping[str, Any], prefix: str = "") -> dict:
    """Check ``values[name]`` against each ``constraints[name]``, in the table's order.

    Parameters
    ----------
    constraints : mapping of str to constraint
        Argument name -> a constraint object above (or any ``f(name, value)`` that
        raises the template's message and returns the value).
    values : mapping of str to object
        The arguments, often ``locals()``; names the table lacks are not checked.
    prefix : str
        Put before each name in a message (``"set_reporter: "``).

    Returns
    -------
    dict
        The checked values by name, in the table's order.
    """
    return {name: check(prefix + name, values[name]) for name, check in constraints.items()}
