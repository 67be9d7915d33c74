"""glimr_cv.checks: the one message template of user errors, and the rule that the package keeps to it.

Pure: no Ray, no Keras.
"""

import ast
import math
import pathlib
import re

import numpy as np
import pytest

from glimr_cv.checks import (Bool, Function, Instance, Int, OneOf, Real, check_bool, check_callable, check_choice,
                             check_id, check_int, check_number, check_type, expected, listed, validate)

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "glimr_cv"


# --------------------------------------------------------------------------- expected
def test_expected_shows_the_value_as_its_repr():
    assert expected("seed", "an int >= 0", -1) == "seed: expected an int >= 0, but got -1"
    assert expected("mode", "one of 'max', 'min'", "maximize") == "mode: expected one of 'max', 'min', but got 'maximize'"
    assert expected("layer", "a name", None) == "layer: expected a name, but got None"
    assert expected("x", "a list", [1, "a"]) == "x: expected a list, but got [1, 'a']"


def test_expected_says_in_words_what_was_got():
    assert expected("rows", "distinct indices", got="3 repeated") == "rows: expected distinct indices, but got 3 repeated"
    # got= wins over a value, and is not quoted
    assert expected("rows", "a mask", "ignored", got="shape (2, 3)") == "rows: expected a mask, but got shape (2, 3)"
    assert expected("a", "b", got="") == "a: expected b, but got "


def test_expected_appends_a_hint_after_a_semicolon():
    assert (expected("n_bags", "at most 10", 12, hint="pass fewer") ==
            "n_bags: expected at most 10, but got 12; pass fewer")
    assert (expected("x", "y", got="z", hint="do w") == "x: expected y, but got z; do w")
    assert expected("x", "y", 1, hint="") == "x: expected y, but got 1"


def test_expected_needs_a_value_or_words():
    with pytest.raises(TypeError, match="give the value found, or got= in words"):
        expected("x", "y")


def test_check_id_takes_an_id_the_results_have_and_returns_a_python_int():
    configs = {0: {}, 3: {}}
    got = check_id("config_id", np.int64(3), configs)
    assert got == 3 and type(got) is int
    # True == 1 and 1.0 == 1 in a dict lookup, and a list cannot be looked up at all
    for bad in (True, 3.0, "3", [3], 1, None):
        with pytest.raises(ValueError) as info:
            check_id("config_id", bad, configs)
        assert str(info.value) == f"config_id: expected one of [0, 3], but got {bad!r}"


# --------------------------------------------------------------------------- check_*
def test_check_int_bounds_and_none():
    assert check_int("k", 3, 1, 5) == 3
    assert check_int("k", np.int64(2), 1) == 2
    assert check_int("k", None, 1, allow_none=True) is None
    cases = [
        (dict(value=0, low=1, high=5), "k: expected an int in [1, 5], but got 0"),
        (dict(value=6, low=1, high=5), "k: expected an int in [1, 5], but got 6"),
        (dict(value=0, low=1), "k: expected an int >= 1, but got 0"),
        (dict(value=9, high=5), "k: expected an int <= 5, but got 9"),
        (dict(value=2.0), "k: expected an int, but got 2.0"),
        (dict(value=True, low=0), "k: expected an int >= 0, but got True"),
        (dict(value="3", low=1, allow_none=True), "k: expected an int >= 1 or None, but got '3'"),
        (dict(value=None, low=1), "k: expected an int >= 1, but got None"),
    ]
    for kwargs, message in cases:
        with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
            check_int("k", **kwargs)


def test_check_number():
    assert check_number("lr", 0.5, 0) == 0.5
    assert check_number("lr", 3) == 3
    assert check_number("lr", None, allow_none=True) is None
    for value, low, none, message in [
        (-1, 0, False, "lr: expected a number >= 0, but got -1"),
        (math.nan, 0, False, "lr: expected a number >= 0, but got nan"),
        ("1", None, False, "lr: expected a number, but got '1'"),
        (True, None, True, "lr: expected a number or None, but got True"),
    ]:
        with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
            check_number("lr", value, low, none)


def test_check_choice():
    assert check_choice("mode", "min", ("max", "min")) == "min"
    with pytest.raises(ValueError, match=r"^mode: expected one of 'max', 'min', but got 'maximize'$"):
        check_choice("mode", "maximize", iter(["max", "min"]))  # any iterable of choices


def test_check_bool():
    assert check_bool("save", False) is False
    with pytest.raises(TypeError, match=r"^save: expected True or False, but got 1$"):
        check_bool("save", 1)


def test_check_type_shows_the_type_of_a_container_and_the_repr_of_a_scalar():
    assert check_type("d", {}, dict, "a dict") == {}
    assert check_type("d", None, dict, "a dict", allow_none=True) is None
    with pytest.raises(TypeError, match=r"^d: expected a dict or None, but got list$"):
        check_type("d", [1, 2], dict, "a dict", allow_none=True)
    with pytest.raises(TypeError, match=r"^d: expected a dict, but got ndarray$"):
        check_type("d", np.zeros(3), dict, "a dict")
    with pytest.raises(TypeError, match=r"^d: expected a dict, but got 'x'$"):
        check_type("d", "x", dict, "a dict")
    with pytest.raises(TypeError, match=r"^d: expected a dict, but got 5$"):
        check_type("d", 5, (dict, list), "a dict")


def test_check_callable():
    assert check_callable("f", len, "a function") is len
    assert check_callable("f", None, "a function", allow_none=True) is None
    with pytest.raises(TypeError, match=r"^f: expected a function, but got 'len'$"):
        check_callable("f", "len", "a function")
    with pytest.raises(TypeError, match=r"^f: expected a function, but got None$"):
        check_callable("f", None, "a function")


# --------------------------------------------------------------------------- constraints as data
def test_each_constraint_checks_like_its_function():
    assert Int(1, 5)("k", 5) == 5
    assert Int(none=True)("k", None) is None
    assert Real(0)("lr", 0.0) == 0.0
    assert OneOf("a", "b")("c", "b") == "b"
    assert Bool()("flag", True) is True
    assert Instance(dict, "a dict", none=True)("d", None) is None
    assert Function("a function")("f", print) is print
    for constraint, value, error, message in [
        (Int(1, 5), 0, ValueError, "k: expected an int in [1, 5], but got 0"),
        (Int(0, none=True), -1, ValueError, "k: expected an int >= 0 or None, but got -1"),
        (Real(0), -0.5, ValueError, "k: expected a number >= 0, but got -0.5"),
        (Real(none=True), "x", ValueError, "k: expected a number or None, but got 'x'"),
        (OneOf("a", "b"), "c", ValueError, "k: expected one of 'a', 'b', but got 'c'"),
        (Bool(), "yes", TypeError, "k: expected True or False, but got 'yes'"),
        (Instance(dict, "a dict"), [1], TypeError, "k: expected a dict, but got list"),
        (Function("a callable loader"), 3, TypeError, "k: expected a callable loader, but got 3"),
    ]:
        with pytest.raises(error, match=f"^{re.escape(message)}$"):
            constraint("k", value)


TABLE = {"units": Int(1), "rate": Real(0), "mode": OneOf("max", "min"), "save": Bool()}


def test_validate_returns_the_checked_values_in_the_table_order():
    values = {"save": True, "mode": "min", "rate": 0.1, "units": 8, "other": object()}
    checked = validate(TABLE, values)
    assert checked == {"units": 8, "rate": 0.1, "mode": "min", "save": True}
    assert list(checked) == list(TABLE)  # names the table lacks are not checked or returned


def test_validate_names_the_first_bad_argument_in_the_table_order():
    # both rate and save are bad; rate comes first in the table, whatever the order of the values
    values = {"save": "no", "mode": "max", "rate": -1, "units": 3}
    with pytest.raises(ValueError, match=r"^rate: expected a number >= 0, but got -1$"):
        validate(TABLE, values)
    with pytest.raises(TypeError, match=r"^save: expected True or False, but got 'no'$"):
        validate(TABLE, {**values, "rate": 1})


def test_validate_puts_the_prefix_before_each_name():
    with pytest.raises(ValueError, match=r"^set_reporter: units: expected an int >= 1, but got 0$"):
        validate(TABLE, {"units": 0, "rate": 1, "mode": "max", "save": True}, prefix="set_reporter: ")


def test_validate_takes_any_function_of_name_and_value():
    def even(name, value):
        if value % 2:
            raise ValueError(expected(name, "an even int", value))
        return value

    assert validate({"n": even}, {"n": 4}) == {"n": 4}
    with pytest.raises(ValueError, match=r"^n: expected an even int, but got 3$"):
        validate({"n": even}, {"n": 3})


def test_validate_needs_every_name_of_the_table():
    with pytest.raises(KeyError):
        validate(TABLE, {"units": 1})


# --------------------------------------------------------------------------- the rule, package-wide
def _docstrings(tree: ast.AST) -> set:
    """The ids of the docstring constants of a module, its classes and functions (documentation, not messages)."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
                found.add(id(first.value))
    return found


def hand_written_templates(source: str) -> list:
    """Line numbers of the strings and f-strings in ``source`` that write the template by hand.

    That is ``": expected "`` followed, later in the same string or f-string, by
    ``"but got"``: the message :func:`glimr_cv.checks.expected` makes. An
    f-string's literal parts are read together, its ``{...}`` fields as ``{}``;
    adjacent literals are one string to Python, so a message split over lines is
    read whole.
    """
    tree = ast.parse(source)
    skip = _docstrings(tree)
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr):  # its parts are read with it, not alone
            skip.update(id(part) for part in ast.walk(node) if part is not node)
    lines = []
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.JoinedStr):
            text = "".join(v.value if isinstance(v, ast.Constant) else "{}" for v in node.values)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            text = node.value
        else:
            continue
        start = text.find(": expected ")
        if start >= 0 and "but got" in text[start:]:
            lines.append(node.lineno)
    return sorted(lines)


def test_the_scanner_finds_hand_written_templates():
    source = '''
def f(name, value, n):
    """Raises ``"x: expected y, but got z"`` (a docstring documents the message)."""
    if n:
        raise ValueError(f"{name}: expected an array of rows, but got a scalar {value!r}")
    if value:
        raise ValueError("rows: expected distinct indices, "
                         f"but got {n} repeated")
    message = "labels: expected at least one task, but got an empty dict"
    ok = expected(name, "an array", got=f"a scalar {value!r}")
    also_ok = f"{name}: expected {n} rows"  # no "but got"
    not_a_template = "but got: expected nothing"
    return message, ok, also_ok, not_a_template
'''
    assert hand_written_templates(source) == [5, 7, 9]


def test_the_package_words_every_user_error_with_expected():
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name == "checks.py" and path.parent == PACKAGE:
            continue  # the template itself
        for line in hand_written_templates(path.read_text(encoding="utf-8")):
            found.append(f"{path.relative_to(PACKAGE.parent)}:{line}")
    assert not found, ("hand-written 'name: expected ..., but got ...' messages; use glimr_cv.checks.expected:\n"
                       + "\n".join(found))


def test_listed_shows_the_first_items_and_counts_the_rest():
    assert listed(["a", "b"]) == "a; b"
    assert listed(range(7), 5, ", ") == "0, 1, 2, 3, 4, and 2 more"
    assert listed((f"x{i}" for i in range(6)), 5) == "x0; x1; x2; x3; x4; and 1 more"
    assert listed([]) == ""
