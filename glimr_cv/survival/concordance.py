"""Harrell's concordance index in NumPy (the Keras metric is :class:`glimr_cv.survival.ConcordanceIndex`)."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..checks import expected
from .data import _column, _time_event

__all__ = ["concordance_index"]

_CHUNK = 1 << 22  # pairs compared at once: about 4 MB per boolean matrix


def _pair_counts(ti, ei, ri, tj, ej, rj) -> tuple[int, int, int]:
    """(concordant, tied, comparable) over pairs (i, j): i an event of the first rows, j any of the second."""
    ti, ri = ti[ei, None], ri[ei, None]
    comparable = (tj > ti) | ((tj == ti) & ~ej)
    return (int(np.count_nonzero(comparable & (rj < ri))), int(np.count_nonzero(comparable & (rj == ri))),
            int(np.count_nonzero(comparable)))


def _counts(t: np.ndarray, e: np.ndarray, r: np.ndarray) -> tuple[int, int, int]:
    """(concordant, tied, comparable) over all pairs, comparing each event with every row in chunks."""
    concordant = tied = comparable = 0
    step = max(1, _CHUNK // max(len(t), 1))
    for start in range(0, len(t), step):
        part = slice(start, start + step)
        c, d, m = _pair_counts(t[part], e[part], r[part], t, e, r)
        concordant, tied, comparable = concordant + c, tied + d, comparable + m
    return concordant, tied, comparable


def concordance_index(time: Any, event: Any, risk: Any) -> float:
    """Harrell's concordance index: how often the higher risk has the earlier event.

    A pair is comparable when its earlier time is an event, and also when both
    times are equal and only one of the two rows is an event (the event comes
    first). It is concordant when the event row has the higher risk, and counts
    one half when the risks are equal. The index is (concordant + tied / 2) /
    comparable. This is scikit-survival's ``concordance_index_censored``, except
    that risks tie only when equal (scikit-survival: within ``1e-8``).

    Parameters
    ----------
    time : array-like of shape (n,)
        Follow-up times.
    event : array-like of shape (n,)
        1 (or True) for an event, 0 for censoring.
    risk : array-like of shape (n,) or (n, 1)
        Predicted risk; higher means an earlier event (a Cox model's log hazard,
        not a predicted survival time).

    Returns
    -------
    float
        The index in [0, 1]; 0.5 for random risks. NaN when no pair is
        comparable (no event, say) or a risk is NaN. Rows whose
        time or event is NaN (missing labels) are left out.

    Raises
    ------
    TypeError, ValueError
        Naming the argument, on shapes, lengths or values (see :func:`survival_labels`).

    Notes
    -----
    Compares every event with every row, vectorised in chunks of bounded
    memory: O(n^2) time, a fraction of a second for 10,000 rows.
    """
    if any(type(v).__module__.startswith(("tensorflow", "keras")) and not hasattr(v, "numpy")
           for v in (time, event, risk)):
        raise TypeError(expected("risk", "NumPy arrays", got="a symbolic tensor",
                                 hint="in a task's metrics use glimr_cv.survival.ConcordanceIndex, which accumulates "
                                      "the whole validation set"))
    t, e = _time_event(time, event)
    r = _column("risk", risk)
    if len(r) != len(t):
        raise ValueError(expected("risk", f"{len(t)} rows like time", len(r)))
    keep = ~(np.isnan(t) | np.isnan(e))
    t, e, r = t[keep], e[keep] != 0, r[keep]
    concordant, tied, comparable = _counts(t, e, r)
    if comparable == 0 or np.isnan(r).any():
        return float("nan")
    return (concordant + 0.5 * tied) / comparable
