"""Racing rules: when a configuration's cross-validation is stopped early.

Scores are dicts ``fold -> score`` with higher is better, as the scheduler
hands them to the rules.
"""

import dataclasses
import subprocess
import sys

import pytest
from scipy import stats

from glimr_cv.engine.racing import RULES, Aggressive, Forgiving, Paired, RacingRule, get_rule

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


def _one_sided_p(scores, incumbent):
    shared = [f for f in scores if f in incumbent]
    return float(stats.ttest_rel([scores[f] for f in shared], [incumbent[f] for f in shared], alternative="less").pvalue)


class TestPaired:
    def test_defaults(self):
        rule = Paired()
        assert rule.min_folds == 2
        assert rule.alpha == 0.05

    def test_clearly_worse_on_every_fold_stops(self):
        scores = {f: INCUMBENT[f] - d for f, d in zip(range(4), (0.10, 0.12, 0.09, 0.11))}
        assert _one_sided_p(scores, INCUMBENT) < 0.001
        assert Paired().should_stop(scores, INCUMBENT)

    def test_worse_mean_but_not_significant_does_not_stop(self):
        scores = {0: INCUMBENT[0] - 0.10, 1: INCUMBENT[1] + 0.08, 2: INCUMBENT[2] - 0.05}
        assert sum(scores.values()) < sum(INCUMBENT[f] for f in scores)  # worse on average
        assert _one_sided_p(scores, INCUMBENT) > 0.05
        assert Paired().should_stop(scores, INCUMBENT) is False

    def test_better_config_does_not_stop(self):
        scores = {f: INCUMBENT[f] + 0.05 + 0.01 * f for f in range(4)}
        assert Paired().should_stop(scores, INCUMBENT) is False

    def test_alpha_is_the_threshold_on_the_one_sided_p_value(self):
        scores = {0: INCUMBENT[0] - 0.06, 1: INCUMBENT[1] - 0.01, 2: INCUMBENT[2] - 0.04, 3: INCUMBENT[3] + 0.01}
        p = _one_sided_p(scores, INCUMBENT)
        assert 0.01 < p < 0.5
        assert Paired(alpha=p * 1.01).should_stop(scores, INCUMBENT) is True
        assert Paired(alpha=p * 0.99).should_stop(scores, INCUMBENT) is False

    def test_zero_variance_all_negative_differences_stop(self):
        scores = {f: INCUMBENT[f] - 0.0625 for f in range(3)}  # exact: every d_i == -0.0625
        assert len({scores[f] - INCUMBENT[f] for f in scores}) == 1
        assert Paired().should_stop(scores, INCUMBENT) is True

    def test_zero_variance_all_zero_differences_do_not_stop(self):
        scores = {f: INCUMBENT[f] for f in range(4)}
        assert Paired().should_stop(scores, INCUMBENT) is False

    def test_zero_variance_all_positive_differences_do_not_stop(self):
        scores = {f: INCUMBENT[f] + 0.0625 for f in range(3)}
        assert Paired().should_stop(scores, INCUMBENT) is False

    def test_fewer_than_two_shared_folds_do_not_stop(self):
        rule = Paired(min_folds=1)
        assert rule.should_stop({0: 0.0}, INCUMBENT) is False
        # two finished folds but only one of them is a fold the incumbent has
        assert Paired().should_stop({0: 0.0, 7: 0.0}, INCUMBENT) is False

    def test_only_shared_folds_enter_the_test(self):
        # fold 9 (not in the incumbent) is terrible but must be ignored: folds 0-2 tie exactly
        scores = {0: INCUMBENT[0], 1: INCUMBENT[1], 2: INCUMBENT[2], 9: -100.0}
        assert Paired().should_stop(scores, INCUMBENT) is False


# -- common behaviour -------------------------------------------------------

HOPELESS = {0: 0.0, 1: 0.0, 2: 0.0, 3: 0.0}


@pytest.mark.parametrize("cls", [Forgiving, Aggressive, Paired])
@pytest.mark.parametrize("min_folds", [1, 2, 3, 4])
def test_min_folds_is_respected(cls, min_folds):
    rule = cls(min_folds=min_folds)
    for n in range(1, 5):
        scores = {f: HOPELESS[f] + 0.0001 * f for f in range(n)}  # a little variance for Paired
        stops = rule.should_stop(scores, INCUMBENT)
        if n < min_folds:
            assert stops is False, f"stopped with {n} folds < min_folds={min_folds}"
        elif cls is not Paired or n >= 2:
            assert stops is True, f"did not stop a hopeless configuration with {n} folds"
        else:
            assert stops is False  # Paired needs two shared folds


@pytest.mark.parametrize("rule", [Forgiving(), Aggressive(), Paired(), Forgiving(min_folds=3), Paired(alpha=0.5)])
def test_no_incumbent_never_stops(rule):
    assert rule.should_stop(HOPELESS, {}) is False


@pytest.mark.parametrize("rule", [Forgiving(), Aggressive(), Paired()])
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


@pytest.mark.parametrize("name, cls", [("forgiving", Forgiving), ("aggressive", Aggressive), ("paired", Paired)])
def test_get_rule_by_name(name, cls):
    rule = get_rule(name)
    assert type(rule) is cls
    assert rule == cls()


@pytest.mark.parametrize("name, cls", [("forgiving", Forgiving), ("aggressive", Aggressive), ("paired", Paired)])
def test_get_rule_by_name_with_min_folds(name, cls):
    rule = get_rule(name, min_folds=3)
    assert type(rule) is cls and rule.min_folds == 3


def test_get_rule_none_means_no_racing():
    assert get_rule(None) is None
    assert get_rule(None, min_folds=3) is None


@pytest.mark.parametrize("rule", [Forgiving(min_folds=2), Aggressive(), Paired(alpha=0.1)])
def test_get_rule_passes_rule_objects_through(rule):
    assert get_rule(rule) is rule


def test_get_rule_accepts_custom_rule_subclass():
    class Never(RacingRule):
        def _worse(self, scores, incumbent):
            return False

    rule = Never()
    assert get_rule(rule) is rule


def test_rules_registry_names():
    assert sorted(RULES) == ["aggressive", "forgiving", "paired"]


def test_get_rule_unknown_name_message():
    with pytest.raises(ValueError) as err:
        get_rule("fast")
    assert str(err.value) == (
        "racing: expected one of ['aggressive', 'forgiving', 'paired'], a RacingRule or None, but got 'fast'"
    )


# -- argument validation ----------------------------------------------------


@pytest.mark.parametrize("cls", [Forgiving, Aggressive, Paired])
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
        Paired(alpha=alpha)
    assert str(err.value) == f"alpha: expected a number in (0, 1), but got {alpha!r}"


@pytest.mark.parametrize("alpha", [1e-9, 0.05, 0.999])
def test_alpha_in_range_is_accepted(alpha):
    assert Paired(alpha=alpha).alpha == alpha


def test_get_rule_validates_min_folds():
    with pytest.raises(ValueError, match="min_folds: expected an int >= 1, but got 0"):
        get_rule("forgiving", min_folds=0)
