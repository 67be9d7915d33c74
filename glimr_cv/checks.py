"""Checks of user values, with one message template: ``"<name>: expected <what>, but got <value>"``.

``name`` is the argument or config path the user wrote, so the message points
at the mistake. Every function returns the value it checked.
"""

from __future__ import annotations

import numbers
from typing import Any, Iterable

__all__ = ["expected", "check_int", "check_number", "check_choice", "check_bool", "check_type", "check_callable"]


def expected(name: str, what: str, value: Any, hint: str = "") -> str:
    """The message: ``"name: expected what, but got value[; hint]"``."""
    return f"{name}: expected {what}, but got {value!r}" + (f"; {hint}" if hint else "")


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
    raise TypeError(f"{name}: expected {what}{' or None' if allow_none else ''}, but got {got}")


def check_callable(name: str, value: Any, what: str, allow_none: bool = False) -> Any:
    """A callable (described as ``what``), or None when allowed."""
    if (value is None and allow_none) or callable(value):
        return value
    raise TypeError(expected(name, what, value))
