"""Racing rules: when a configuration's cross-validation is stopped early; fold-stopping
rules: when one fold's training is.

Scores are dicts ``fold -> score`` with higher is better, as the scheduler
hands them to the rules; curves are lists of per-epoch values, higher is better.
"""

import dataclasses
import math
import random
import statistics
import subprocess
import sys
from fractions import Fraction

import pytest
from scipy import stats

from glimr_cv.engine.racing import (
    EPOCH_RULES,
    RULES,
    Aggressive,
    EpochRule,
    Forgiving,
    Paired,
    PairedCurve,
    RacingRule,
    TTest,
    get_epoch_rule,
    get_rule,
    orient,
)
from glimr_cv.engine.replay import Replay
from glimr_cv.engine.scheduler import FoldScheduler

# The incumbent: mean 0.8, worst fold 0.625. Fold scores are dyadic fractions so the
# boundary cases below (equal means) are exact in floating point.
INCUMBENT = {0: 0.75, 1: 0.875, 2: 0.625, 3: 0.9375, 4: 0.8125}
INC_MEAN = sum(INCUMBENT.values()) / 5  # 0.8
INC_WORST = min(INCUMBENT.values())  # 0.625


def test_importing_pure_modules_loads_no_ray_keras_or_tensorflow():
    code = (
        "import sys\n"
        "import glimr_cv.engine.scheduler, glimr_cv.engine.racing, glimr_cv.results\n"
        "heavy = [m for m in ('ray', 'keras', 'tensorflow') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


# -- Forgiving --------------------------------------------------------------


class TestForgiving:
    def test_stops_when_mean_below_incumbents_worst_fold(self):
        assert Forgiving().should_stop({0: 0.5, 1: 0.7}, INCUMBENT)  # mean 0.6 < 0.625

    def test_mean_equal_to_worst_fold_does_not_stop(self):
        assert Forgiving().should_stop({0: 0.5, 1: 0.75}, INCUMBENT) is False  # mean 0.625 == worst

    def test_mean_just_below_worst_fold_stops(self):
        assert Forgiving().should_stop({0: 0.5, 1: 0.749}, INCUMBENT)

    def test_below_incumbent_mean_but_above_worst_fold_continues(self):
        # Aggressive would stop this one; Forgiving forgives it
        scores = {0: 0.7, 1: 0.7}
        assert Forgiving().should_stop(scores, INCUMBENT) is False
        assert Aggressive().should_stop(scores, INCUMBENT) is True

    def test_one_bad_fold_stops_with_default_min_folds(self):
        assert Forgiving().should_stop({3: 0.1}, INCUMBENT)


# -- Aggressive -------------------------------------------------------------


class TestAggressive:
    def test_stops_when_mean_below_incumbent_mean(self):
        assert Aggressive().should_stop({0: 0.75, 1: 0.8125}, INCUMBENT)  # mean 0.78125 < 0.8

    def test_tie_with_incumbent_mean_does_not_stop(self):
        assert Aggressive().should_stop({0: 0.75, 1: 0.875, 2: 0.75, 3: 0.8125, 4: 0.8125}, INCUMBENT) is False
        assert Aggressive().should_stop({0: 0.8}, {0: 0.8, 1: 0.8}) is False

    def test_above_incumbent_mean_does_not_stop(self):
        assert Aggressive().should_stop({0: 0.9}, INCUMBENT) is False


# -- Paired -----------------------------------------------------------------


def fold_table(seed, n_configs=30, n_folds=5, fold_sd=0.04, hard=0.15, hard_fold=None, spread=0.05, noise=0.002):
    """Fold scores: base + a per-fold difficulty shared by every configuration (one fold
    ``hard`` harder still) + a per-configuration effect + per-(configuration, fold) noise."""
    rng = random.Random(seed)
    folds = [rng.gauss(0, fold_sd) for _ in range(n_folds)]
    folds[rng.randrange(n_folds) if hard_fold is None else hard_fold] -= hard
    effects = [rng.uniform(0, spread) for _ in range(n_configs)]
    return [[0.8 + e + f + rng.gauss(0, noise) for f in folds] for e in effects]


def exact_mean_difference(scores, incumbent):
    """The mean of the float differences over shared folds, computed without rounding."""
    diffs = [Fraction(scores[f] - incumbent[f]) for f in scores if f in incumbent]
    return sum(diffs) / len(diffs)


class TestPaired:
    def test_defaults(self):
        rule = Paired()
        assert rule.min_folds == 1
        assert rule.tolerance == 0.001

    def test_stops_when_the_mean_difference_is_below_minus_tolerance(self):
        rule = Paired(tolerance=0.125)
        assert rule.should_stop({0: INCUMBENT[0] - 0.25, 1: INCUMBENT[1]}, INCUMBENT) is False  # mean d = -0.125
        assert rule.should_stop({0: INCUMBENT[0] - 0.25, 1: INCUMBENT[1] - 0.0625}, INCUMBENT) is True  # -0.15625

    def test_trailing_by_exactly_the_tolerance_on_every_fold_does_not_stop(self):
        # the rounded mean of three -0.1 is below -0.1: the rule must not stop on rounding
        assert statistics.fmean([-0.1] * 3) < -0.1
        assert Paired(tolerance=0.1).should_stop({0: -0.1, 1: -0.1, 2: -0.1}, {0: 0.0, 1: 0.0, 2: 0.0}) is False

    def test_zero_tolerance_stops_on_any_deficit_but_not_a_tie(self):
        rule = Paired(tolerance=0)
        assert rule.should_stop({f: INCUMBENT[f] for f in range(3)}, INCUMBENT) is False
        assert rule.should_stop({0: INCUMBENT[0] - 2 ** -20}, INCUMBENT) is True

    def test_a_hard_fold_cancels_out(self):
        # fold 2 is the incumbent's worst; a configuration a little better on each fold is kept,
        # one a little worse on each fold is stopped, though its mean is far above that worst fold
        assert Paired().should_stop({2: INCUMBENT[2] + 0.0005}, INCUMBENT) is False
        worse = {f: INCUMBENT[f] - 0.01 for f in (0, 1)}
        assert Paired().should_stop(worse, INCUMBENT) is True
        assert Forgiving().should_stop(worse, INCUMBENT) is False

    def test_better_configuration_does_not_stop(self):
        assert Paired().should_stop({f: INCUMBENT[f] + 0.05 for f in range(4)}, INCUMBENT) is False

    def test_only_shared_folds_count_and_min_folds_counts_shared_folds(self):
        scores = {0: INCUMBENT[0], 1: INCUMBENT[1], 9: -100.0}  # fold 9 is not the incumbent's
        assert Paired().should_stop(scores, INCUMBENT) is False
        assert Paired(min_folds=2).should_stop({0: 0.0, 9: 0.0}, INCUMBENT) is False  # one shared fold
        assert Paired(min_folds=2).should_stop({0: 0.0, 1: 0.0}, INCUMBENT) is True

    @pytest.mark.parametrize("seed", range(300))
    def test_within_tolerance_on_every_shared_fold_is_never_stopped(self, seed):
        """The guarantee, on random fold effects: fold difficulty shared by both, configuration
        effects and noise, the configuration within ``tolerance`` of the incumbent fold by fold."""
        rng = random.Random(seed)
        n_folds = rng.randint(1, 10)
        tolerance = rng.choice([0, 0.001, 0.01, 0.1, rng.uniform(0, 0.05)])
        difficulty = [rng.gauss(0, 0.1) for _ in range(n_folds)]
        incumbent = {f: 0.8 + difficulty[f] + rng.gauss(0, 0.01) for f in range(n_folds)}
        shared = rng.sample(range(n_folds), rng.randint(1, n_folds))
        # within tolerance fold by fold: anywhere from exactly -tolerance (often, to probe the
        # boundary and the rounding of the mean) to well ahead
        scores = {f: incumbent[f] + rng.choice([-tolerance, rng.uniform(-tolerance, 0.02)]) for f in shared}
        scores = {f: s for f, s in scores.items() if s - incumbent[f] >= -tolerance}
        if not scores:
            return
        assert Paired(tolerance=tolerance).should_stop(scores, incumbent) is False

    @pytest.mark.parametrize("seed", range(300))
    def test_stops_exactly_when_the_exact_mean_difference_is_below_minus_tolerance(self, seed):
        rng = random.Random(seed)
        n_folds = rng.randint(1, 10)
        tolerance = rng.choice([0, 0.001, 0.01, rng.uniform(0, 0.05)])
        min_folds = rng.randint(1, 3)
        difficulty = [rng.gauss(0, 0.1) for _ in range(n_folds)]
        effect = rng.gauss(0, 0.01)
        incumbent = {f: 0.8 + difficulty[f] + rng.gauss(0, 0.005) for f in range(n_folds)}
        scores = {f: 0.8 + difficulty[f] + effect + rng.gauss(0, 0.005)
                  for f in rng.sample(range(n_folds), rng.randint(1, n_folds))}
        stops = Paired(min_folds=min_folds, tolerance=tolerance).should_stop(scores, incumbent)
        assert stops is (len(scores) >= min_folds and exact_mean_difference(scores, incumbent) < -Fraction(tolerance))


def _replays(table, *rules, slots=2):
    return [Replay(FoldScheduler(len(table[0]), racing=rule, max_configs=len(table)), table, slots=slots).run()
            for rule in rules]


def test_paired_never_prunes_a_configuration_within_tolerance_of_every_other_on_every_fold():
    """Through the scheduler: the incumbent is always one of the configurations, so one within
    ``tolerance`` of every other on every fold is never stopped, and when it is the exhaustive
    winner, Paired selects it. Folds here differ more (sd 0.04, one 0.15 harder) than
    configurations (0.05 in all), with noise sd 0.002."""
    tolerance, covered = 0.001, 0
    for seed in range(100):
        table = fold_table(seed)
        n_configs, n_folds = len(table), len(table[0])
        safe = [c for c in range(n_configs)
                if all(table[c][f] - table[x][f] >= -tolerance for x in range(n_configs) for f in range(n_folds))]
        covered += bool(safe)
        paired, forgiving = _replays(table, Paired(tolerance=tolerance), Forgiving())
        pruned = {c for c, st in paired.scheduler.configs.items() if st.status == "pruned"}
        assert not pruned & set(safe), seed
        assert len(pruned & set(safe)) <= sum(forgiving.scheduler.configs[c].status == "pruned" for c in safe)
        winner = max(range(n_configs), key=lambda c: statistics.fmean(table[c]))
        if winner in safe:
            assert paired.scheduler.best() == winner, seed
    assert covered >= 25  # the property was put to the test often enough


@pytest.mark.parametrize("seed", range(60))
def test_paired_keeps_the_winner_when_folds_differ_more_than_configurations(seed):
    """Folds differ by sd 0.04 and one is 0.15 harder, configurations by up to 0.05, noise is
    sd 0.0005: Paired selects a configuration within ``tolerance`` of the exhaustive winner's CV mean
    (in fact the winner on these seeds). Not a guarantee: a configuration within ``tolerance`` of
    the winner's CV mean, or with more noise the winner itself, can trail the incumbent by more than
    ``tolerance`` on its first fold and be stopped; the test above checks what is guaranteed."""
    table = fold_table(seed, noise=0.0005)
    means = [statistics.fmean(row) for row in table]
    exhaustive, paired = _replays(table, None, Paired())
    winner = exhaustive.scheduler.best()
    assert winner == max(range(len(table)), key=lambda c: means[c])
    assert means[winner] - means[paired.scheduler.best()] <= Paired().tolerance
    assert paired.scheduler.best() == winner


@pytest.mark.parametrize("seed", range(10))
@pytest.mark.parametrize("hard_fold", [1, 2, 4])
def test_paired_needs_fewer_fold_trainings_than_forgiving_with_one_hard_fold(seed, hard_fold):
    """One fold is 0.15 harder for every configuration: the incumbent's worst fold is so low that
    Forgiving stops hardly anything once the first fold (not the hard one) is behind it, while Paired
    compares fold with fold."""
    table = fold_table(seed, fold_sd=0.01, hard_fold=hard_fold, noise=0.0005)
    exhaustive, paired, forgiving = _replays(table, None, Paired(), Forgiving())
    assert paired.n_started < 0.6 * forgiving.n_started
    assert paired.scheduler.best() == forgiving.scheduler.best() == exhaustive.scheduler.best()

# -- TTest ------------------------------------------------------------------


def _one_sided_p(scores, incumbent):
    shared = [f for f in scores if f in incumbent]
    return float(stats.ttest_rel([scores[f] for f in shared], [incumbent[f] for f in shared], alternative="less").pvalue)


class TestTTest:
    def test_defaults(self):
        rule = TTest()
        assert rule.min_folds == 2
        assert rule.alpha == 0.05

    def test_clearly_worse_on_every_fold_stops(self):
        scores = {f: INCUMBENT[f] - d for f, d in zip(range(4), (0.10, 0.12, 0.09, 0.11))}
        assert _one_sided_p(scores, INCUMBENT) < 0.001
        assert TTest().should_stop(scores, INCUMBENT)

    def test_worse_mean_but_not_significant_does_not_stop(self):
        scores = {0: INCUMBENT[0] - 0.10, 1: INCUMBENT[1] + 0.08, 2: INCUMBENT[2] - 0.05}
        assert sum(scores.values()) < sum(INCUMBENT[f] for f in scores)  # worse on average
        assert _one_sided_p(scores, INCUMBENT) > 0.05
        assert TTest().should_stop(scores, INCUMBENT) is False

    def test_better_config_does_not_stop(self):
        scores = {f: INCUMBENT[f] + 0.05 + 0.01 * f for f in range(4)}
        assert TTest().should_stop(scores, INCUMBENT) is False

    def test_alpha_is_the_threshold_on_the_one_sided_p_value(self):
        scores = {0: INCUMBENT[0] - 0.06, 1: INCUMBENT[1] - 0.01, 2: INCUMBENT[2] - 0.04, 3: INCUMBENT[3] + 0.01}
        p = _one_sided_p(scores, INCUMBENT)
        assert 0.01 < p < 0.5
        assert TTest(alpha=p * 1.01).should_stop(scores, INCUMBENT) is True
        assert TTest(alpha=p * 0.99).should_stop(scores, INCUMBENT) is False

    def test_zero_variance_all_negative_differences_stop(self):
        scores = {f: INCUMBENT[f] - 0.0625 for f in range(3)}  # exact: every d_i == -0.0625
        assert len({scores[f] - INCUMBENT[f] for f in scores}) == 1
        assert TTest().should_stop(scores, INCUMBENT) is True

    def test_zero_variance_all_zero_differences_do_not_stop(self):
        scores = {f: INCUMBENT[f] for f in range(4)}
        assert TTest().should_stop(scores, INCUMBENT) is False

    def test_zero_variance_all_positive_differences_do_not_stop(self):
        scores = {f: INCUMBENT[f] + 0.0625 for f in range(3)}
        assert TTest().should_stop(scores, INCUMBENT) is False

    def test_fewer_than_two_shared_folds_do_not_stop(self):
        rule = TTest(min_folds=1)
        assert rule.should_stop({0: 0.0}, INCUMBENT) is False
        # two finished folds but only one of them is a fold the incumbent has
        assert TTest().should_stop({0: 0.0, 7: 0.0}, INCUMBENT) is False

    def test_only_shared_folds_enter_the_test(self):
        # fold 9 (not in the incumbent) is terrible but must be ignored: folds 0-2 tie exactly
        scores = {0: INCUMBENT[0], 1: INCUMBENT[1], 2: INCUMBENT[2], 9: -100.0}
        assert TTest().should_stop(scores, INCUMBENT) is False


# -- common behaviour -------------------------------------------------------

HOPELESS = {0: 0.0, 1: 0.0, 2: 0.0, 3: 0.0}


@pytest.mark.parametrize("cls", [Forgiving, Aggressive, Paired, TTest])
@pytest.mark.parametrize("min_folds", [1, 2, 3, 4])
def test_min_folds_is_respected(cls, min_folds):
    rule = cls(min_folds=min_folds)
    for n in range(1, 5):
        scores = {f: HOPELESS[f] + 0.0001 * f for f in range(n)}  # a little variance for TTest
        stops = rule.should_stop(scores, INCUMBENT)
        if n < min_folds:
            assert stops is False, f"stopped with {n} folds < min_folds={min_folds}"
        elif cls is not TTest or n >= 2:
            assert stops is True, f"did not stop a hopeless configuration with {n} folds"
        else:
            assert stops is False  # TTest needs two shared folds


@pytest.mark.parametrize("rule", [Forgiving(), Aggressive(), Paired(), TTest(), Forgiving(min_folds=3), TTest(alpha=0.5),
                                  Paired(tolerance=0)])
def test_no_incumbent_never_stops(rule):
    assert rule.should_stop(HOPELESS, {}) is False


@pytest.mark.parametrize("rule", [Forgiving(), Aggressive(), Paired(), TTest()])
def test_no_finished_folds_never_stop(rule):
    assert rule.should_stop({}, INCUMBENT) is False


def test_base_rule_is_abstract():
    with pytest.raises(NotImplementedError):
        RacingRule().should_stop({0: 0.0}, {0: 1.0})


def test_rules_are_frozen_and_hashable():
    rule = Forgiving(min_folds=2)
    with pytest.raises(dataclasses.FrozenInstanceError):
        rule.min_folds = 3
    assert Forgiving(min_folds=2) == rule and hash(Forgiving(min_folds=2)) == hash(rule)


# -- get_rule ---------------------------------------------------------------


NAMES = [("forgiving", Forgiving), ("aggressive", Aggressive), ("paired", Paired), ("ttest", TTest)]


@pytest.mark.parametrize("name, cls", NAMES)
def test_get_rule_by_name(name, cls):
    rule = get_rule(name)
    assert type(rule) is cls
    assert rule == cls()


@pytest.mark.parametrize("name, cls", NAMES)
def test_get_rule_by_name_with_min_folds(name, cls):
    rule = get_rule(name, min_folds=3)
    assert type(rule) is cls and rule.min_folds == 3


def test_get_rule_none_means_no_racing():
    assert get_rule(None) is None
    assert get_rule(None, min_folds=3) is None


@pytest.mark.parametrize("rule", [Forgiving(min_folds=2), Aggressive(), Paired(tolerance=0.01), TTest(alpha=0.1)])
def test_get_rule_passes_rule_objects_through(rule):
    assert get_rule(rule) is rule


def test_get_rule_accepts_custom_rule_subclass():
    class Never(RacingRule):
        def _worse(self, scores, incumbent):
            return False

    rule = Never()
    assert get_rule(rule) is rule


def test_rules_registry_names():
    assert sorted(RULES) == ["aggressive", "forgiving", "paired", "ttest"]


@pytest.mark.parametrize("bad", ["fast", "Paired", ["paired"], 3])
def test_get_rule_unknown_name_message(bad):
    with pytest.raises(ValueError) as err:
        get_rule(bad)
    assert str(err.value) == (
        f"racing: expected one of ['aggressive', 'forgiving', 'paired', 'ttest'], a RacingRule or None, but got {bad!r}"
    )


# -- argument validation ----------------------------------------------------


@pytest.mark.parametrize("cls", [Forgiving, Aggressive, Paired, TTest])
@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "2"])
def test_bad_min_folds_is_rejected(cls, bad):
    with pytest.raises(ValueError) as err:
        cls(min_folds=bad)
    assert str(err.value) == f"min_folds: expected an int >= 1, but got {bad!r}"


def test_min_folds_zero_message():
    with pytest.raises(ValueError, match=r"^min_folds: expected an int >= 1, but got 0$"):
        Forgiving(min_folds=0)


@pytest.mark.parametrize("alpha", [0, 0.0, 1, 1.0, -0.05, 1.5])
def test_alpha_out_of_range_is_rejected(alpha):
    with pytest.raises(ValueError) as err:
        TTest(alpha=alpha)
    assert str(err.value) == f"alpha: expected a number in (0, 1), but got {alpha!r}"


@pytest.mark.parametrize("alpha", [1e-9, 0.05, 0.999])
def test_alpha_in_range_is_accepted(alpha):
    assert TTest(alpha=alpha).alpha == alpha


@pytest.mark.parametrize("tolerance", [-1, -1e-9, math.nan, math.inf, -math.inf, True, "0.1", None])
def test_bad_tolerance_is_rejected(tolerance):
    with pytest.raises(ValueError) as err:
        Paired(tolerance=tolerance)
    assert str(err.value) == f"tolerance: expected a finite number >= 0, but got {tolerance!r}"


@pytest.mark.parametrize("tolerance", [0, 0.0, 0.001, 1, 2.5])
def test_tolerance_in_range_is_accepted(tolerance):
    assert Paired(tolerance=tolerance).tolerance == tolerance


def test_get_rule_validates_min_folds():
    with pytest.raises(ValueError, match="min_folds: expected an int >= 1, but got 0"):
        get_rule("forgiving", min_folds=0)


# -- fold stopping: orient ------------------------------------------------------


def test_orient_makes_higher_better():
    assert orient([0.5, 0.25], "max") == [0.5, 0.25]
    assert orient([0.5, 0.25], "min") == [-0.5, -0.25]
    assert orient((1, 2), "max") == [1.0, 2.0] and all(type(v) is float for v in orient((1, 2), "max"))
    assert math.isnan(orient([math.nan], "min")[0])
    assert orient([], "min") == []


def test_orient_rejects_a_bad_mode():
    with pytest.raises(ValueError, match=r"^mode: expected one of 'max', 'min', but got 'maximize'$"):
        orient([1.0], "maximize")


# -- fold stopping: PairedCurve ------------------------------------------------------


def best_so_far(values):
    """The docstring's best-so-far, written out: None until a non-nan value."""
    out = []
    for e in range(1, len(values) + 1):
        seen = [v for v in values[:e] if not math.isnan(v)]
        out.append(max(seen) if seen else None)
    return out


def behind_at(curve, reference, tolerance):
    """Whether the fold is behind at each epoch 1..len(curve), as the docstring defines it."""
    b, r = best_so_far(curve), best_so_far(reference)
    return [bool(reference) and r[min(e, len(r)) - 1] is not None and b[e - 1] is not None
            and r[min(e, len(r)) - 1] - b[e - 1] > tolerance for e in range(1, len(curve) + 1)]


def expected_stop(rule, curve, reference, epochs):
    e = len(curve)
    grace = rule.grace if isinstance(rule.grace, int) else math.ceil(Fraction(rule.grace).limit_denominator(1000) * epochs)
    behind = behind_at(curve, reference, rule.tolerance)
    return bool(reference) and grace <= e < epochs and e >= rule.patience and all(behind[e - rule.patience:])


def saturating(rng, epochs, plateau, rate, start=0.1, noise=0.005, nan=0.0):
    """A learning curve rising from ``start`` to ``plateau`` at ``rate``, with noise and nan epochs."""
    return [math.nan if rng.random() < nan else plateau - (plateau - start) * math.exp(-rate * e) + rng.gauss(0, noise)
            for e in range(1, epochs + 1)]


def stop_epoch(rule, curve, reference, epochs=None):
    """The epoch after which ``rule`` stops the fold, or None (it runs all of ``curve``)."""
    epochs = len(curve) if epochs is None else epochs
    return next((e for e in range(1, len(curve) + 1) if rule.should_stop(curve[:e], reference, epochs)), None)


REF = [0.5, 0.75, 0.875, 0.875, 0.875, 0.875, 0.875, 0.875]  # dyadic, so gaps are exact


class TestPairedCurve:
    def test_defaults(self):
        rule = PairedCurve()
        assert (rule.tolerance, rule.patience, rule.grace) == (0.001, 2, 0.25)
        assert [rule.grace_epochs(n) for n in (1, 4, 5, 8, 10, 100)] == [1, 1, 2, 2, 3, 25]
        assert PairedCurve(grace=3).grace_epochs(100) == 3
        assert PairedCurve(grace=0.07).grace_epochs(100) == 7  # 0.07 * 100 == 7.000000000000001
        assert PairedCurve(grace=0.9).grace_epochs(10) == 9

    def test_a_hopeless_fold_stops_after_patience_epochs_behind(self):
        rule = PairedCurve(grace=0, patience=2)
        curve = [0.25] * 8
        assert stop_epoch(rule, curve, REF) == 2  # behind from epoch 1

    def test_patience_counts_consecutive_epochs_behind(self):
        rule = PairedCurve(grace=0, patience=3)
        reference = [0.5, 0.5, 0.75, 0.875, 0.875, 0.875, 0.875, 0.875]
        # behind at 1, 2; level at 3 (0.75 vs 0.75); behind again from 4 (0.875)
        curve = [0.25, 0.25, 0.75, 0.75, 0.75, 0.75, 0.75, 0.75]
        assert behind_at(curve, reference, 0.001) == [True, True, False, True, True, True, True, True]
        assert stop_epoch(rule, curve, reference) == 6

    def test_grace_as_epochs_and_as_a_fraction(self):
        curve = [0.25] * 8
        assert stop_epoch(PairedCurve(grace=5, patience=1), curve, REF) == 5
        assert stop_epoch(PairedCurve(grace=0.5, patience=1), curve, REF) == 4  # ceil(0.5 * 8)
        assert stop_epoch(PairedCurve(grace=0.5, patience=1), [0.25] * 20, REF) == 10  # ceil(0.5 * 20)
        assert stop_epoch(PairedCurve(grace=0.3, patience=1), [0.25] * 10, REF) == 3  # ceil(0.3 * 10)
        assert stop_epoch(PairedCurve(grace=8, patience=1), curve, REF) is None

    def test_a_gap_of_exactly_the_tolerance_is_not_behind(self):
        curve = [v - 0.125 for v in REF]
        assert stop_epoch(PairedCurve(tolerance=0.125, grace=0, patience=1), curve, REF) is None
        assert stop_epoch(PairedCurve(tolerance=0.0625, grace=0, patience=1), curve, REF) == 1

    def test_it_compares_best_so_far_not_the_last_epoch(self):
        # the fold dips at epoch 4 but its best so far (0.875) still matches the reference
        curve = [0.5, 0.75, 0.875, 0.25, 0.25, 0.25, 0.25, 0.25]
        assert stop_epoch(PairedCurve(grace=0, patience=1), curve, REF) is None

    def test_the_last_epoch_never_stops(self):
        rule = PairedCurve(grace=0, patience=1)
        assert rule.should_stop([0.0] * 7, REF, 8) is True
        assert rule.should_stop([0.0] * 8, REF, 8) is False  # nothing left to save
        assert rule.should_stop([0.0] * 9, REF, 8) is False

    def test_an_empty_reference_never_stops(self):
        assert stop_epoch(PairedCurve(grace=0, patience=1), [0.0] * 8, []) is None

    def test_a_short_reference_holds_its_last_best(self):
        rule = PairedCurve(grace=0, patience=1)
        short = [0.5, 0.875]  # the incumbent's fold was stopped after two epochs
        assert rule.should_stop([0.875, 0.875, 0.875], short, 8) is False
        assert rule.should_stop([0.875, 0.875, 0.5], short, 8) is False  # best so far is 0.875
        assert rule.should_stop([0.25, 0.5, 0.75], short, 8) is True  # 0.875 - 0.75 > 0.001 at epoch 3
        assert behind_at([0.25, 0.5, 0.75, 0.875], short, 0.001) == [True, True, True, False]

    def test_a_long_reference_is_read_at_the_same_epoch(self):
        rule = PairedCurve(grace=0, patience=1)
        # the reference reaches 0.875 only at epoch 3: a fold at 0.75 at epoch 2 is level
        assert rule.should_stop([0.5, 0.75], REF, 8) is False
        assert rule.should_stop([0.5, 0.75, 0.75], REF, 8) is True

    def test_nan_epochs_are_skipped(self):
        rule = PairedCurve(grace=0, patience=2)
        nan = math.nan
        assert stop_epoch(rule, [nan] * 8, REF) is None  # no value yet: never behind
        assert stop_epoch(rule, [nan, nan, 0.25, 0.25, 0.25, 0.25, 0.25, 0.25], REF) == 4
        assert stop_epoch(rule, [0.5, nan, 0.875, nan, nan, nan, nan, nan], REF) is None  # best so far stays 0.875
        assert stop_epoch(rule, [0.0] * 8, [nan] * 8) is None  # the reference never had a value
        assert stop_epoch(rule, [0.0] * 8, [nan, nan, 0.5, nan]) == 4  # behind from epoch 3

    def test_the_rule_is_frozen_and_an_epoch_rule(self):
        rule = PairedCurve()
        assert isinstance(rule, EpochRule)
        with pytest.raises(dataclasses.FrozenInstanceError):
            rule.patience = 3
        assert PairedCurve(patience=3) == PairedCurve(patience=3)

    def test_base_rule_is_abstract(self):
        with pytest.raises(NotImplementedError):
            EpochRule().should_stop([0.0], [1.0], 2)


def random_curves(seed):
    """``(rule, curve, reference, epochs)``: saturating learning curves with random rates,
    plateaus, noise and nan epochs for a fold and the incumbent's fold, and a random rule.
    Half the folds are at least as good as the reference epoch by epoch, before noise."""
    rng = random.Random(seed)
    epochs = rng.randint(1, 30)
    rule = PairedCurve(tolerance=rng.choice([0, 0.001, 0.01, rng.uniform(0, 0.05)]), patience=rng.randint(1, 4),
                       grace=rng.choice([0, rng.randint(1, 8), rng.choice([0.1, 0.25, 0.5, 0.9])]))
    nan = rng.choice([0, 0, 0.1])
    ref_plateau, ref_rate = rng.uniform(0.6, 0.95), rng.uniform(0.05, 1.0)
    reference = saturating(rng, rng.choice([epochs, rng.randint(0, 40)]), ref_plateau, ref_rate, nan=nan)
    if rng.random() < 0.5:
        curve = saturating(rng, epochs, ref_plateau + rng.uniform(0, 0.05), ref_rate * rng.uniform(1, 2), nan=nan,
                           noise=rng.choice([0, 0.0005]))
    else:
        curve = saturating(rng, epochs, rng.uniform(0.4, 0.95), rng.uniform(0.05, 1.0), nan=nan)
    return rule, curve, reference, epochs


@pytest.mark.parametrize("seed", range(400))
def test_paired_curve_stops_exactly_as_documented_and_keeps_its_guarantees(seed):
    rule, curve, reference, epochs = random_curves(seed)
    for e in range(1, epochs + 1):
        assert rule.should_stop(curve[:e], reference, epochs) is expected_stop(rule, curve[:e], reference, epochs)
    stopped = stop_epoch(rule, curve, reference)
    if not any(behind_at(curve, reference, rule.tolerance)):
        assert stopped is None  # never more than tolerance behind: never stopped
    if stopped is not None:
        assert rule.grace_epochs(epochs) <= stopped < epochs
        score = max(v for v in curve[:stopped] if not math.isnan(v))
        assert max(v for v in reference if not math.isnan(v)) - score > rule.tolerance  # below the incumbent's score


def test_paired_curve_guarantee_is_put_to_the_test():
    """The seeds above hold enough folds never behind, and enough stopped."""
    cases = [random_curves(seed) for seed in range(400)]
    never_behind = sum(not any(behind_at(curve, ref, rule.tolerance)) for rule, curve, ref, _ in cases)
    stopped = sum(stop_epoch(rule, curve, ref) is not None for rule, curve, ref, _ in cases)
    assert never_behind >= 60 and stopped >= 60, (never_behind, stopped)


@pytest.mark.parametrize("seed", range(50))
def test_paired_curve_stops_a_clearly_worse_fold_soon_after_the_grace(seed):
    """A fold whose plateau is 0.1 below the incumbent's, same rate, noise sd 0.005: with the
    defaults (20 epochs: grace 5, patience 2) it stops by epoch 6 and keeps its best so far."""
    rng = random.Random(seed)
    rate = rng.uniform(0.2, 1.0)
    reference = saturating(rng, 20, 0.9, rate)
    curve = saturating(rng, 20, 0.8, rate)
    assert stop_epoch(PairedCurve(), curve, reference) in (5, 6)
    assert stop_epoch(PairedCurve(), [v + 0.2 for v in curve], reference) is None


# -- get_epoch_rule ---------------------------------------------------------------


def test_epoch_rules_registry_names():
    assert EPOCH_RULES == {"paired_curve": PairedCurve}


def test_get_epoch_rule_resolves_none_a_name_and_a_rule():
    assert get_epoch_rule(None) is None
    assert get_epoch_rule("paired_curve") == PairedCurve()
    rule = PairedCurve(patience=5)
    assert get_epoch_rule(rule) is rule

    class Never(EpochRule):
        def should_stop(self, curve, reference, epochs):
            return False

    never = Never()
    assert get_epoch_rule(never) is never


@pytest.mark.parametrize("bad", ["paired", "PairedCurve", 3, ["paired_curve"], PairedCurve])
def test_get_epoch_rule_rejects_anything_else(bad):
    with pytest.raises(ValueError) as err:
        get_epoch_rule(bad)
    assert str(err.value) == (f"fold_stopping: expected one of ['auto', 'paired_curve'], an EpochRule or None, "
                              f"but got {bad!r}")


@pytest.mark.parametrize("kwargs, message", [
    ({"tolerance": -0.1}, "tolerance: expected a finite number >= 0, but got -0.1"),
    ({"tolerance": math.nan}, "tolerance: expected a finite number >= 0, but got nan"),
    ({"patience": 0}, "patience: expected an int >= 1, but got 0"),
    ({"patience": 1.5}, "patience: expected an int >= 1, but got 1.5"),
    ({"grace": -1}, "grace: expected an int >= 0 or a float in (0, 1), but got -1"),
    ({"grace": 1.0}, "grace: expected an int >= 0 or a float in (0, 1), but got 1.0"),
    ({"grace": 0.0}, "grace: expected an int >= 0 or a float in (0, 1), but got 0.0"),
    ({"grace": 1.5}, "grace: expected an int >= 0 or a float in (0, 1), but got 1.5"),
    ({"grace": True}, "grace: expected an int >= 0 or a float in (0, 1), but got True"),
    ({"grace": "2"}, "grace: expected an int >= 0 or a float in (0, 1), but got '2'"),
])
def test_bad_paired_curve_arguments_are_rejected(kwargs, message):
    with pytest.raises(ValueError) as err:
        PairedCurve(**kwargs)
    assert str(err.value) == message


def test_auto_fold_stopping_is_paired_curve_with_racing_and_none_without():
    """Search's default: a search that runs every fold runs every epoch too."""
    assert get_epoch_rule("auto", Paired()) == PairedCurve()
    assert get_epoch_rule("auto", Forgiving()) == PairedCurve()
    assert get_epoch_rule("auto", None) is None
    assert get_epoch_rule("auto") is None


def test_only_rules_that_compare_fold_with_fold_pair_folds():
    assert Paired.pairs_folds and TTest.pairs_folds and Paired(tolerance=0.01).pairs_folds
    assert not Forgiving.pairs_folds and not Aggressive.pairs_folds and not RacingRule.pairs_folds
