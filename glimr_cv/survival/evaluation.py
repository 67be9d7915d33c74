"""Survival model evaluation in NumPy: Uno's IPCW C-index, Brier scores and Breslow survival functions.

Each function takes the training rows' ``(time, event)``, from which it
estimates the censoring distribution (inverse probability of censoring weights,
IPCW) or a Cox model's baseline hazard, and the test rows'. Values equal
scikit-survival's (``concordance_index_ipcw``, ``brier_score``,
``integrated_brier_score``, ``BreslowEstimator``) wherever scikit-survival gives
one; the differences are listed per function. Rows whose time or event is NaN
(missing labels) are left out, in the training and the test rows alike.
NumPy only: the Keras metrics that wrap these are
:class:`glimr_cv.survival.UnoConcordance` and
:class:`glimr_cv.survival.IntegratedBrierScore`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..checks import check_number, expected
from .data import _column, _time_event

__all__ = [
    "CensoringSurvival",
    "censoring_survival",
    "uno_concordance",
    "brier_score",
    "integrated_brier_score",
    "breslow_survival",
]

_CHUNK = 1 << 22  # pairs compared at once, as in concordance.py


def _labelled(time: Any, event: Any, where: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(time, event as bool, kept)``: checked columns of the labelled rows and the mask that kept them."""
    t, e = _column(f"{where}time", time), _column(f"{where}event", event)
    if len(t) != len(e):
        raise ValueError(expected(f"{where}event", f"{len(t)} rows like {where}time", len(e)))
    t, e = _time_event(t, e, where)
    kept = ~(np.isnan(t) | np.isnan(e))
    return t[kept], e[kept] != 0, kept


def _same_rows(name: str, value: np.ndarray, rows: int, like: str) -> None:
    if len(value) != rows:
        raise ValueError(expected(name, f"{rows} rows like {like}", len(value)))


def _counts(time: np.ndarray, event: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(unique times, events, censored, at risk)`` per unique time, at risk counting the rows at or after it."""
    unique, index = np.unique(time, return_inverse=True)
    events = np.bincount(index, weights=event, minlength=len(unique))
    total = np.bincount(index, minlength=len(unique))
    at_risk = len(time) - np.concatenate([[0], np.cumsum(total)[:-1]])
    return unique, events, total - events, at_risk


class CensoringSurvival:
    """The Kaplan-Meier estimate of the censoring distribution ``G(t) = P(C > t)``, a right-continuous step function.

    Build it with :func:`censoring_survival`; call it on times to evaluate it.

    Attributes
    ----------
    time : numpy.ndarray
        The step times: the unique training times, after ``-inf`` when a row is censored.
    survival : numpy.ndarray
        ``G`` from each step time on.
    """

    def __init__(self, time: np.ndarray, survival: np.ndarray):
        self.time, self.survival = time, survival

    @property
    def last(self) -> float:
        """The largest training time."""
        return float(self.time[-1])

    def __call__(self, times: Any, name: str = "times") -> np.ndarray:
        """``G`` at ``times`` (float64, any shape); 0 past the largest time when ``G`` reached 0 there.

        Raises
        ------
        ValueError
            Naming ``name``, when a time is past the largest training time and ``G``
            is not 0 there: the censoring distribution is unknown beyond it.
        """
        times = np.asarray(times, dtype=np.float64)
        beyond = times > self.time[-1]
        if beyond.any() and self.survival[-1] > 0:
            raise ValueError(expected(name, f"times <= {self.last} (the largest training time, past which the "
                                      "censoring distribution is unknown)", times[beyond].max().item()))
        out = np.zeros(times.shape)
        inside = times[~beyond]
        index = np.searchsorted(self.time, inside)
        # scikit-survival's rule: a time within eps of a step time is at it, else the step before counts
        exact = np.abs(self.time[np.minimum(index, len(self.time) - 1)] - inside) < np.finfo(np.float64).eps
        out[~beyond] = self.survival[np.where(exact, index, index - 1)]
        return out

    def __repr__(self) -> str:
        return f"CensoringSurvival({len(self.time)} steps, last time {self.last})"


def censoring_survival(time: Any, event: Any) -> CensoringSurvival:
    """The Kaplan-Meier estimate of the censoring distribution of training rows, as scikit-survival computes it.

    Censoring is the "event" and events censor it; at a tied time, events come
    before censoring (an event at ``t`` does not count in the censoring risk set at
    ``t``). This is scikit-survival's ``CensoringDistributionEstimator``, tie rules,
    left and right limits and all.

    Parameters
    ----------
    time, event : array-like of shape (n,)
        Training rows' follow-up times (>= 0) and events (1 event, 0 censored);
        rows with NaN in either are left out.

    Returns
    -------
    CensoringSurvival
        ``G``, callable on times: right-continuous (``G(t) = P(C > t)``), 1
        before the first censoring, 0 past the largest time when its rows are all
        censored; past the largest time when ``G`` is not 0 there, it raises
        (the distribution is unknown there).

    Raises
    ------
    TypeError, ValueError
        Naming ``time`` or ``event``, on shapes, lengths or values; also when no row is labelled.
    """
    return _censoring(*_labelled(time, event, "")[:2], "time")


def _censoring(t: np.ndarray, e: np.ndarray, name: str) -> CensoringSurvival:
    """:func:`censoring_survival` of checked labelled rows (``e`` bool)."""
    if len(t) == 0:
        raise ValueError(expected(name, "at least one labelled row (time and event not NaN)", got="none"))
    if e.all():
        unique = np.unique(t)
        return CensoringSurvival(unique, np.ones(len(unique)))
    unique, events, censored, at_risk = _counts(t, e.astype(np.float64))
    # reverse Kaplan-Meier: rows with an event at t leave the censoring risk set before the censoring at t
    left = at_risk - events
    ratio = np.divide(censored, left, out=np.zeros(len(unique)), where=censored != 0)
    return CensoringSurvival(np.r_[-np.inf, unique], np.r_[1.0, np.cumprod(1.0 - ratio)])


def _pair_sums(ti, ri, wi, tj, ej, rj, tied_tol):
    """Weighted and counted comparisons of event rows i (chunk) with all rows j."""
    comparable = (tj > ti[:, None]) | ((tj == ti[:, None]) & ~ej)
    tie = np.abs(rj - ri[:, None]) <= tied_tol
    lower = comparable & ~tie & (rj < ri[:, None])
    ties = comparable & tie
    n_comparable, n_lower, n_ties = comparable.sum(1), lower.sum(1), ties.sum(1)
    return (float(np.dot(wi, n_lower + 0.5 * n_ties)), float(np.dot(wi, n_comparable)),
            int(n_lower.sum()), int((n_comparable - n_lower - n_ties).sum()), int(n_ties.sum()))


def uno_concordance(train_time: Any, train_event: Any, test_time: Any, test_event: Any, risk: Any,
                    tau: float | None = None, tied_tol: float = 1e-8, return_counts: bool = False):
    """Uno's concordance index: Harrell's C with pairs weighted by the inverse squared censoring survival.

    A pair is comparable when its earlier time is an event, or when both times
    are equal and only one row is an event; it is concordant when the event row
    has the higher risk, and counts one half when the risks differ by at most
    ``tied_tol``. Each comparable pair weighs ``1 / G(t_i)^2``, ``t_i`` the
    event's time and ``G`` the censoring survival of the training rows
    (:func:`censoring_survival`), and 0 when ``t_i >= tau``. Unlike Harrell's C,
    the limit does not depend on the censoring distribution (Uno et al. 2011).
    This is scikit-survival's ``concordance_index_ipcw``.

    Parameters
    ----------
    train_time, train_event : array-like of shape (n_train,)
        Training rows, for the censoring distribution.
    test_time, test_event : array-like of shape (n_test,)
        Rows the risks were predicted for.
    risk : array-like of shape (n_test,) or (n_test, 1)
        Predicted risk; higher means an earlier event.
    tau : float, optional
        Truncation time: events at or after ``tau`` get no weight. Needed when a
        test event is past the largest training time (or at it, with ``G`` 0
        there); ``G`` is small, and the weights unstable, near the end of
        follow-up, so a time where enough rows are still followed is a good value.
    tied_tol : float
        Risks within it are tied (scikit-survival's ``1e-8``).
    return_counts : bool
        Also return the pair counts, as scikit-survival does.

    Returns
    -------
    float or tuple
        The index in [0, 1]; NaN when no pair is comparable (or all have weight
        0) or a risk is NaN. With ``return_counts``, ``(index, concordant,
        discordant, tied_risk, tied_time)``: unweighted counts of comparable
        pairs, events at or after ``tau`` included, as scikit-survival's.

    Raises
    ------
    TypeError, ValueError
        Naming the argument: shapes, lengths, events other than 0/1, negative
        times; a test event (before ``tau``) where ``G`` is unknown or 0.

    Notes
    -----
    O(n_events x n_test) comparisons, vectorised in chunks of bounded memory.
    scikit-survival raises instead of returning NaN, and rejects NaN risks.
    """
    check_number("tau", tau, 0, allow_none=True)
    check_number("tied_tol", tied_tol, 0)
    cens = _censoring(*_labelled(train_time, train_event, "train_")[:2], "train_time")
    t, e, kept = _labelled(test_time, test_event, "test_")
    r = _column("risk", risk)
    _same_rows("risk", r, len(kept), "test_time")
    r = r[kept]
    weighted = e & (t < tau) if tau is not None else e
    late = t[weighted] > cens.last
    if late.any() and cens.survival[-1] > 0:
        raise ValueError(expected("test_time", f"event times <= {cens.last} (the largest training time, past which "
                                  "the censoring distribution is unknown)", t[weighted][late].max().item(),
                                  f"pass tau <= {cens.last}"))
    g = cens(t[weighted], "test_time")
    if (g == 0).any():
        raise ValueError(expected("test_time", f"event times where the training rows' censoring survival is > 0, "
                                  f"that is < {cens.last} (the largest training time, whose rows are all censored)",
                                  t[weighted][g == 0].max().item(), f"pass tau <= {cens.last}"))
    w = np.zeros(len(t))
    w[weighted] = 1.0 / np.square(g)
    numerator = denominator = 0.0
    concordant = discordant = tied_risk = 0
    events = np.flatnonzero(e)
    step = max(1, _CHUNK // max(len(t), 1))
    for start in range(0, len(events), step):
        i = events[start:start + step]
        sums = _pair_sums(t[i], r[i], w[i], t, e, r, tied_tol)
        numerator, denominator = numerator + sums[0], denominator + sums[1]
        concordant, discordant, tied_risk = concordant + sums[2], discordant + sums[3], tied_risk + sums[4]
    index = numerator / denominator if denominator > 0 and not np.isnan(r).any() else float("nan")
    if not return_counts:
        return index
    # events tied in time with censored rows, counted per event as scikit-survival does
    unique, inverse = np.unique(t, return_inverse=True)
    censored_at = np.bincount(inverse, weights=~e, minlength=len(unique))
    tied_time = int(censored_at[inverse[e]].sum())
    return index, concordant, discordant, tied_risk, tied_time


def _times(times: Any, test_time: np.ndarray) -> np.ndarray:
    """Evaluation times: increasing, within the test rows' follow-up ``[min, max)``."""
    times = _column("times", np.atleast_1d(times))
    if len(times) == 0 or np.isnan(times).any():
        raise ValueError(expected("times", "at least one time, none NaN", times.tolist()))
    if (np.diff(times) <= 0).any():
        raise ValueError(expected("times", "increasing times (one column of survival each)", times.tolist()))
    if len(test_time) == 0:
        raise ValueError(expected("test_time", "at least one labelled row", got="none"))
    low, high = test_time.min(), test_time.max()
    outside = (times < low) | (times >= high)
    if outside.any():
        raise ValueError(expected("times", f"times within the test rows' follow-up [{low}, {high}) (from the first "
                                  "time to before the last)", times[outside][0].item()))
    return times


def _survival(survival: Any, rows: int, columns: int) -> np.ndarray:
    s = np.asarray(survival.numpy() if hasattr(survival, "numpy") else survival)
    if s.dtype == object or not np.issubdtype(s.dtype, np.number):
        raise TypeError(expected("survival", "numbers", got=f"an array of dtype {s.dtype}"))
    s = s.astype(np.float64)
    if s.ndim == 1 and columns == 1:
        s = s[:, None]
    if s.ndim != 2 or s.shape[1] != columns:
        raise ValueError(expected("survival", f"an array of shape (n_test, {columns}), one column per time",
                                  got=f"shape {s.shape}"))
    _same_rows("survival", s, rows, "test_time")
    bad = (s < 0) | (s > 1)
    if bad.any():
        raise ValueError(expected("survival", "survival probabilities in [0, 1]", s[bad][0].item()))
    return s


def brier_score(train_time: Any, train_event: Any, test_time: Any, test_event: Any, survival: Any,
                times: Any) -> np.ndarray:
    """The IPCW Brier score of predicted survival probabilities at each time (Graf et al. 1999).

    At time ``t``, a test row with an event at or before ``t`` adds
    ``S(t)^2 / G(t_i)``, a row still followed after ``t`` adds
    ``(1 - S(t))^2 / G(t)``, and a row censored at or before ``t`` adds 0; the
    score is their mean over the test rows. ``G`` is the training rows'
    censoring survival (:func:`censoring_survival`). This is scikit-survival's
    ``brier_score``.

    Parameters
    ----------
    train_time, train_event : array-like of shape (n_train,)
        Training rows, for the censoring distribution.
    test_time, test_event : array-like of shape (n_test,)
        Rows the survival was predicted for.
    survival : array-like of shape (n_test, n_times)
        Predicted survival probability ``S(t)`` of each test row at each of
        ``times``; ``(n_test,)`` with one time.
    times : array-like of shape (n_times,)
        Increasing times within the test rows' follow-up: from their first time
        to before their last, and at most the largest training time.

    Returns
    -------
    numpy.ndarray
        float64, shape ``(n_times,)``: the score at each time (0 is perfect,
        0.25 that of ``S = 0.5``). NaN at a time where a survival is NaN.

    Raises
    ------
    TypeError, ValueError
        Naming the argument: shapes, lengths, events other than 0/1, negative
        times, survival outside [0, 1], times not increasing or outside the
        follow-up range (which the message gives).

    Notes
    -----
    scikit-survival also raises when a test row's time, even one that enters no
    score, is past the largest training time; here only the event times at or
    before the last of ``times`` must be within it. scikit-survival sorts
    ``times`` without reordering the columns of ``survival``; here they must be
    increasing.
    """
    cens = _censoring(*_labelled(train_time, train_event, "train_")[:2], "train_time")
    t, e, kept = _labelled(test_time, test_event, "test_")
    times = _times(times, t)
    s = _survival(survival, len(kept), len(times))[kept]
    g_times = cens(times)
    # as scikit-survival: a zero weight denominator makes the row's term 0, not inf
    g_times[g_times == 0] = np.inf
    cases = e & (t <= times[-1])  # only these rows' own censoring survival enters a score
    g_rows = np.full(len(t), np.inf)
    g_rows[cases] = cens(t[cases], "test_time")
    g_rows[g_rows == 0] = np.inf
    is_case = e[:, None] & (t[:, None] <= times)
    is_control = t[:, None] > times
    terms = np.square(s) * is_case / g_rows[:, None] + np.square(1.0 - s) * is_control / g_times
    return terms.mean(axis=0)


def integrated_brier_score(train_time: Any, train_event: Any, test_time: Any, test_event: Any, survival: Any,
                           times: Any) -> float:
    """The Brier score integrated over ``times`` by the trapezoidal rule, divided by their range.

    Parameters
    ----------
    train_time, train_event, test_time, test_event, survival, times
        As :func:`brier_score`; at least two times.

    Returns
    -------
    float
        ``trapezoid(brier_score(...), times) / (times[-1] - times[0])``: 0 is
        perfect, lower is better. This is scikit-survival's ``integrated_brier_score``.

    Raises
    ------
    TypeError, ValueError
        As :func:`brier_score`, and naming ``times`` when fewer than two are given.
    """
    if np.size(times) < 2:
        raise ValueError(expected("times", "at least two times to integrate over", np.asarray(times).tolist()))
    scores = brier_score(train_time, train_event, test_time, test_event, survival, times)
    times = np.asarray(times, dtype=np.float64).ravel()
    trapezoid = getattr(np, "trapezoid", None) or np.trapz  # NumPy < 2 has only trapz
    return float(trapezoid(scores, times) / (times[-1] - times[0]))


def breslow_survival(train_risk: Any, train_time: Any, train_event: Any, test_risk: Any, times: Any) -> np.ndarray:
    """A Cox model's survival functions from the Breslow estimate of the training rows' baseline hazard.

    ``H0(t) = sum over training event times u <= t of d_u / sum_{j: t_j >= u} exp(r_j)``
    (``d_u`` events at ``u``), and a test row of risk ``r`` survives to ``t`` with
    probability ``exp(-H0(t) exp(r))``: scikit-survival's ``BreslowEstimator``,
    which ``CoxPHSurvivalAnalysis.predict_survival_function`` uses.

    Parameters
    ----------
    train_risk : array-like of shape (n_train,) or (n_train, 1)
        The model's risk (log partial hazard, a linear output) of the training rows.
    train_time, train_event : array-like of shape (n_train,)
        The training rows' labels.
    test_risk : array-like of shape (n_test,) or (n_test, 1)
        Risks of the rows to predict for, on the scale of ``train_risk``.
    times : array-like of shape (n_times,)
        Times >= 0, at most the largest training time.

    Returns
    -------
    numpy.ndarray
        float64, shape ``(n_test, n_times)``: survival probabilities, for
        :func:`brier_score` and :func:`integrated_brier_score`.

    Raises
    ------
    TypeError, ValueError
        Naming the argument: shapes, lengths, events other than 0/1, negative
        times, non-finite risks, times past the largest training time.

    Notes
    -----
    Before the first training time the survival is 1; scikit-survival gives
    the value at the first training time there, which differs when that time
    holds an event. Risks are shifted by their maximum before ``exp``, which
    changes nothing but the overflow.
    """
    t, e, kept = _labelled(train_time, train_event, "train_")
    r = _column("train_risk", train_risk)
    _same_rows("train_risk", r, len(kept), "train_time")
    r = r[kept]
    test = _column("test_risk", test_risk)
    for name, value in (("train_risk", r), ("test_risk", test)):
        if not np.isfinite(value).all():
            raise ValueError(expected(name, "finite risks", value[~np.isfinite(value)][0].item()))
    if len(t) == 0:
        raise ValueError(expected("train_time", "at least one labelled row", got="none"))
    times = _column("times", np.atleast_1d(times))
    if np.isnan(times).any() or (times < 0).any() or (times > t.max()).any():
        bad = times[np.isnan(times) | (times < 0) | (times > t.max())][0].item()
        raise ValueError(expected("times", f"times in [0, {t.max()}] (the largest training time)", bad))
    unique, events, _, _ = _counts(t, e.astype(np.float64))
    shift = r.max()
    # risk set sums: every row whose time is at or after each unique time
    index = np.searchsorted(unique, t)
    per_time = np.bincount(index, weights=np.exp(r - shift), minlength=len(unique))
    risk_set = np.cumsum(per_time[::-1])[::-1]
    cumulative = np.cumsum(events / risk_set)  # H0 * exp(shift) from each unique time on
    step = np.searchsorted(unique, times, side="right") - 1
    h = np.where(step >= 0, cumulative[np.maximum(step, 0)], 0.0)
    return np.exp(-np.outer(np.exp(test - shift), h))
