"""Racing rules: when to stop a configuration's cross-validation early.

A rule compares a configuration's finished fold scores with those of the
*incumbent*, the best fully evaluated configuration so far. Scores reach a rule
oriented so that higher is better (the scheduler negates them for ``mode="min"``).
"Worse" is strict, so ties never stop a configuration. No rule stops anything
before the configuration has ``min_folds`` finished folds or while there is no
incumbent.

Pure Python; :func:`get_rule` turns the ``racing=`` argument of
:class:`glimr_cv.Search` into a rule.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Mapping

from ..checks import check_int, expected

__all__ = ["RacingRule", "Forgiving", "Aggressive", "Paired", "get_rule", "RULES"]


@dataclass(frozen=True)
class RacingRule:
    """Interface of a racing rule.

    Parameters
    ----------
    min_folds : int
        Finished folds a configuration needs before the rule may stop it.
    """

    min_folds: int = 1

    def __post_init__(self):
        check_int("min_folds", self.min_folds, 1)

    def should_stop(self, scores: Mapping[int, float], incumbent: Mapping[int, float]) -> bool:
        """Whether to stop a configuration with fold ``scores`` given the incumbent's.

        Both map fold index to score, higher is better; ``incumbent`` has all folds.
        """
        if len(scores) < self.min_folds or not incumbent:
            return False
        return self._worse(scores, incumbent)

    def _worse(self, scores: Mapping[int, float], incumbent: Mapping[int, float]) -> bool:
        raise NotImplementedError


@dataclass(frozen=True)
class Forgiving(RacingRule):
    """Stop when the mean of finished folds is below the incumbent's *worst* fold.

    Bergman, Purucker and Hutter (AutoML 2024) found this rule about 3x faster
    than full CV on average without selecting worse models.
    """

    def _worse(self, scores, incumbent):
        return statistics.fmean(scores.values()) < min(incumbent.values())


@dataclass(frozen=True)
class Aggressive(RacingRule):
    """Stop when the mean of finished folds is below the incumbent's mean.

    Spends the fewest folds but often drops the eventual winner after an unlucky fold.
    """

    def _worse(self, scores, incumbent):
        return statistics.fmean(scores.values()) < statistics.fmean(incumbent.values())


@dataclass(frozen=True)
class Paired(RacingRule):
    """Stop when a one-sided paired t-test over shared folds says "worse" at level ``alpha``.

    With differences ``d_i = score_i - incumbent_i`` over the ``n`` folds both have
    finished (``n >= max(min_folds, 2)``), stop when ``P(T_{n-1} <= t) < alpha`` for
    ``t = mean(d) / (sd(d) / sqrt(n))``. If every ``d_i`` is equal, stop when
    they are negative.
    """

    min_folds: int = 2
    alpha: float = 0.05

    def __post_init__(self):
        super().__post_init__()
        if isinstance(self.alpha, bool) or not isinstance(self.alpha, (int, float)) or not 0 < self.alpha < 1:
            raise ValueError(expected("alpha", "a number in (0, 1)", self.alpha))

    def _worse(self, scores, incumbent):
        shared = [f for f in scores if f in incumbent]
        if len(shared) < 2:
            return False
        diffs = [scores[f] - incumbent[f] for f in shared]
        mean = statistics.fmean(diffs)
        sd = statistics.stdev(diffs)
        if sd == 0:
            return mean < 0
        t = mean / (sd / math.sqrt(len(diffs)))
        return _t_cdf(t, len(diffs) - 1) < self.alpha


def _t_cdf(t: float, df: int) -> float:
    """CDF of Student's t with ``df`` degrees of freedom."""
    from scipy.stats import t as student_t  # scipy ships with scikit-learn

    return float(student_t.cdf(t, df))


RULES = {"forgiving": Forgiving, "aggressive": Aggressive, "paired": Paired}


def get_rule(racing: str | RacingRule | None, min_folds: int | None = None) -> RacingRule | None:
    """Resolve ``racing=`` ("forgiving", "aggressive", "paired", None or a rule object)."""
    if racing is None or isinstance(racing, RacingRule):
        return racing
    if racing not in RULES:
        raise ValueError(expected("racing", f"one of {sorted(RULES)}, a RacingRule or None", racing))
    return RULES[racing]() if min_folds is None else RULES[racing](min_folds=min_folds)
