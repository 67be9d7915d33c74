"""Editing search spaces in tests: ``edited(base, a__b=value)`` sets path ``a/b``."""

import copy

DELETE = object()


def edited(base: dict, **changes) -> dict:
    """A deep copy of ``base`` with ``a__b=value`` edits; ``DELETE`` removes the key."""
    space = copy.deepcopy(base)
    for path, value in changes.items():
        *parents, key = path.split("__")
        node = space
        for p in parents:
            node = node[p]
        if value is DELETE:
            del node[key]
        else:
            node[key] = value
    return space
