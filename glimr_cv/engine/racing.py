"""Racing rules: when to stop a configuration's cross-validation early; fold-stopping
rules: when to stop one fold's training early.

A racing rule compares a configuration's finished fold scores with those of the
*incumbent*, the best fully evaluated configuration so far. Scores reach a rule
oriented so that higher is better (the scheduler negates them for ``mode="min"``).
"Worse" is strict, so ties never stop a configuration. No rule stops anything
before the configuration has ``min_folds`` finished folds or while there is no
incumbent.

A fold-stopping rule (:class:`EpochRule`) compares the learning curve of a running
fold with the incumbent's curve on the same fold, epoch by epoch; :func:`orient`
turns raw values into the higher-is-better values it expects.

Pure Python; :func:`get_rule` turns the ``racing=`` argument of
:class:`glimr_cv.Search` into a racing rule, :func:`get_epoch_rule` its
``fold_stopping=`` argument into a fold-stopping rule.
"""

from __future__ import annotations

import math
import numbers
import statistics
from dataclasses import dataclass
from fractions import Fraction
from typing import ClassVar, Iterable, Mapping, Sequence

from ..checks import check_choice, check_int, expected

__all__ = [
    "RacingRule", "Forgiving", "Aggressive", "Paired", "TTest", "get_rule", "RULES",
    "EpochRule", "PairedCurve", "get_epoch_rule", "EPOCH_RULES", "orient",
]


def _check_tolerance(value) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not (math.isfinite(value) and value >= 0):
        raise ValueError(expected("tolerance", "a finite number >= 0", value))


@dataclass(frozen=True)
class RacingRule:
    """Interface of a racing rule.

    Parameters
    ----------
    min_folds : int
        Finished folds a configuration needs before the rule may stop it.

    Attributes
    ----------
    pairs_folds : bool
        Class attribute: True when the rule compares the configuration with the
        incumbent fold by fold, on the folds both finished. Only then does the
        scheduler run a new configuration's most telling fold first
        (:meth:`glimr_cv.FoldScheduler.fold_order`); a rule that compares with
        the incumbent's folds as a whole, as :class:`Forgiving` does with its
        worst fold, would judge a configuration by its hardest fold alone.
    """

    pairs_folds: ClassVar[bool] = False
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
    """Stop when the configuration trails the incumbent by more than ``tolerance`` on the folds both finished.

    With the floating-point differences ``d_i = score_i - incumbent_i`` over the
    ``n`` folds both have finished, stop when ``n >= min_folds`` and
    ``mean(d) < -tolerance``, the mean taken exactly (a rounded mean of three
    differences of -0.1 is below -0.1). Folds, not configurations, are paired, so
    a fold that is hard for every configuration cancels out.

    Guarantees, exactly:

    * a configuration with ``d_i >= -tolerance`` on every shared fold (within
      ``tolerance`` of the incumbent, or better, fold by fold) is never stopped;
      more generally, none with ``mean(d) >= -tolerance`` is, nor any with fewer
      than ``min_folds`` shared folds;
    * a stopped configuration has ``mean(d) < -tolerance``: on the folds it
      finished, it trails the incumbent by more than ``tolerance`` on average (up
      to the rounding of each ``d_i``).

    Nothing is guaranteed about the folds not yet trained: a configuration that
    trails on its first folds and would catch up on the others can be stopped.

    Parameters
    ----------
    min_folds : int
        Shared folds needed before the rule may stop a configuration.
    tolerance : float
        The CV-mean difference that does not matter, in the metric's units (0.001
        is 0.1 percentage points for an accuracy); ``>= 0`` and finite.
    """

    pairs_folds: ClassVar[bool] = True
    min_folds: int = 1
    tolerance: float = 0.001

    def __post_init__(self):
        super().__post_init__()
        _check_tolerance(self.tolerance)

    def _worse(self, scores, incumbent):
        diffs = [scores[f] - incumbent[f] for f in scores if f in incumbent]
        if len(diffs) < self.min_folds:
            return False
        # exact: a rounded mean of n differences equal to -tolerance can come out below it
        return sum(map(Fraction, diffs)) < -len(diffs) * Fraction(self.tolerance)


@dataclass(frozen=True)
class TTest(RacingRule):
    """Stop when a one-sided paired t-test over shared folds says "worse" at level ``alpha``.

    With differences ``d_i = score_i - incumbent_i`` over the ``n`` folds both have
    finished (``n >= max(min_folds, 2)``), stop when ``P(T_{n-1} <= t) < alpha`` for
    ``t = mean(d) / (sd(d) / sqrt(n))``. If every ``d_i`` is equal, stop when
    they are negative.
    """

    pairs_folds: ClassVar[bool] = True
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


RULES = {"forgiving": Forgiving, "aggressive": Aggressive, "paired": Paired, "ttest": TTest}


def get_rule(racing: str | RacingRule | None, min_folds: int | None = None) -> RacingRule | None:
    """Resolve ``racing=`` (a name of :data:`RULES`, None or a rule object)."""
    if racing is None or isinstance(racing, RacingRule):
        return racing
    if not isinstance(racing, str) or racing not in RULES:
        raise ValueError(expected("racing", f"one of {sorted(RULES)}, a RacingRule or None", racing))
    return RULES[racing]() if min_folds is None else RULES[racing](min_folds=min_folds)


# -- fold stopping: one fold's learning curve against the incumbent's ---------------


def orient(values: Iterable[float], mode: str) -> list[float]:
    """``values`` as floats with higher is better: as they are for ``mode="max"``, negated for ``"min"``."""
    sign = 1.0 if check_choice("mode", mode, ("max", "min")) == "max" else -1.0
    return [sign * float(v) for v in values]


@dataclass(frozen=True)
class EpochRule:
    """Interface of a fold-stopping rule."""

    def should_stop(self, curve: Sequence[float], reference: Sequence[float], epochs: int) -> bool:
        """Whether to stop a fold after its last epoch so far.

        Parameters
        ----------
        curve : sequence of float
            The fold's validation values of the search metric, one per epoch so far
            (at least one), higher is better; may hold nan.
        reference : sequence of float
            The incumbent's values on the same fold, higher is better; any length,
            and an empty one never stops the fold.
        epochs : int
            Epochs planned for the fold.
        """
        raise NotImplementedError


def _best_so_far(values: Sequence[float]) -> list[float]:
    """Running maximum, skipping nan; nan until the first non-nan value."""
    best, out = math.nan, []
    for v in values:
        if not math.isnan(v) and (math.isnan(best) or v > best):
            best = v
        out.append(best)
    return out


@dataclass(frozen=True)
class PairedCurve(EpochRule):
    """Stop a fold whose best-so-far stays behind the incumbent's on the same fold.

    At epoch ``e`` (1-based), the fold's best-so-far ``b_e`` is the best of its
    first ``e`` values and the reference's ``r_e`` the best of the reference's first
    ``min(e, len(reference))`` values (nan skipped in both). The fold is *behind* at
    ``e`` when ``r_e - b_e > tolerance`` (false while either is still nan). After
    epoch ``e = len(curve)``, stop when the fold was behind at each of the last
    ``patience`` epochs, ``e`` is at least the grace (``grace`` epochs, or
    ``ceil(grace * epochs)`` for a fraction) and ``e < epochs`` (at the last epoch
    nothing is left to save). Comparing the same fold pairs the two curves, so a
    fold that is hard for every configuration does not stop them.

    Guarantees, exactly:

    * a fold that is never behind (``r_e - b_e <= tolerance`` at every epoch ``e``)
      is never stopped; nor is any fold before its grace, nor against an empty
      reference;
    * a stopped fold's best value so far, which becomes its score, is more than
      ``tolerance`` below the reference's best-so-far at the same epoch, hence
      below the best of the whole reference (the incumbent's score on that fold,
      as glimr_cv scores a fold at its best epoch).

    Nothing is guaranteed about the epochs not trained: a fold that learns more
    slowly than the incumbent's and would overtake it later can be stopped.

    Parameters
    ----------
    tolerance : float
        How far behind (in the metric's units) does not count; ``>= 0`` and finite.
        The default 0.001 is :class:`Paired`'s: differences the user does not care about.
    patience : int
        Consecutive epochs behind before the fold stops. The default 2 lets a fold
        whose gain comes one epoch later than the incumbent's catch up.
    grace : int or float
        Epochs before any stop: an int ``>= 0``, or a float in ``(0, 1)``, a fraction
        of the planned epochs. The default 0.25 leaves unjudged the first quarter of
        training, where curves of different learning rates and warm-ups still cross,
        and still saves up to three quarters of a hopeless fold.
    """

    tolerance: float = 0.001
    patience: int = 2
    grace: int | float = 0.25

    def __post_init__(self):
        _check_tolerance(self.tolerance)
        check_int("patience", self.patience, 1)
        if isinstance(self.grace, bool) or not (
            (isinstance(self.grace, numbers.Integral) and self.grace >= 0)
            or (isinstance(self.grace, float) and 0 < self.grace < 1)
        ):
            raise ValueError(expected("grace", "an int >= 0 or a float in (0, 1)", self.grace))

    def grace_epochs(self, epochs: int) -> int:
        """Epochs a fold of ``epochs`` trains before it may stop."""
        if isinstance(self.grace, numbers.Integral):
            return int(self.grace)
        return math.ceil(round(self.grace * epochs, 9))  # rounded first, so that 0.07 * 100 is 7, not 7.000000000000001

    def should_stop(self, curve, reference, epochs):
        e = len(curve)
        if not reference or e >= epochs or e < max(self.grace_epochs(epochs), self.patience):
            return False
        best = _best_so_far(curve)
        ref = _best_so_far(reference)
        for epoch in range(e - self.patience + 1, e + 1):
            gap = ref[min(epoch, len(ref)) - 1] - best[epoch - 1]
            if not gap > self.tolerance:  # nan (no value yet) is not behind
                return False
        return True


EPOCH_RULES = {"paired_curve": PairedCurve}


def get_epoch_rule(value: str | EpochRule | None, racing: RacingRule | None = None) -> EpochRule | None:
    """Resolve ``fold_stopping=``: a name of :data:`EPOCH_RULES`, ``"auto"``, None or a rule object.

    ``"auto"`` is :class:`PairedCurve` with its defaults when ``racing`` is a
    rule, and None when it is None: a search that runs every fold runs every epoch too.
    """
    if value is None or isinstance(value, EpochRule):
        return value
    if value == "auto":
        return PairedCurve() if racing is not None else None
    if not isinstance(value, str) or value not in EPOCH_RULES:
        raise ValueError(expected("fold_stopping", f"one of {['auto', *sorted(EPOCH_RULES)]}, an EpochRule or None",
                                  value))
    return EPOCH_RULES[value]()
