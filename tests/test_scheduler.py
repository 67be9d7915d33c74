"""FoldScheduler driven by synthetic fold scores (no Ray, no Keras)."""

import collections
import math
import pickle
import random

import pytest

from glimr_cv.engine.racing import Aggressive, Forgiving, Paired, RacingRule, TTest
from glimr_cv.engine.replay import Replay
from glimr_cv.engine.scheduler import DONE, NEW, STATUSES, WAIT, FoldScheduler, Run

FINAL_STATUSES = {"complete", "pruned", "failed", "incomplete"}


class NeverStops(RacingRule):
    """Racing on, but nothing is ever stopped: the next-fold rule without pruning."""

    def _worse(self, scores, incumbent):
        return False


def depth_first(*args, **kwargs):
    """A scheduler with ``explore=1``: the first configuration completes before a second starts.

    Most mechanics below are easiest to follow step by step that way; the default
    ``explore`` has its own tests. Unless a test says otherwise, racing is on but
    never stops anything (without racing, started configurations always go first).
    """
    return FoldScheduler(*args, **{"explore": 1, "racing": NeverStops(), **kwargs})


class Sim(Replay):
    """A :class:`Replay` (``slots`` workers, folds end oldest first) that also records
    the fold budget left whenever a configuration is added, in ``budget_at_new``."""

    def __init__(self, sched, score, slots=1):
        super().__init__(sched, score, slots=slots)
        self.budget_at_new = []

    @property
    def s(self):
        return self.scheduler

    def new_params(self, config_id):
        s = self.scheduler
        self.budget_at_new.append(math.inf if s.max_fold_trainings is None else s.max_fold_trainings - s.n_started)
        return {"name": f"config-{config_id}"}


def const_table(means, n_folds):
    """Every fold of configuration i scores ``means[i]``."""
    return [[m] * n_folds for m in means]


def noisy_table(seed, n_configs, n_folds, sd=0.01, spacing=0.01):
    """Well separated true means (shuffled) plus gaussian fold noise."""
    rng = random.Random(seed)
    means = [0.5 + spacing * i for i in range(n_configs)]
    rng.shuffle(means)
    return [[m + rng.gauss(0, sd) for _ in range(n_folds)] for m in means]


def cv_mean(row):
    return sum(row) / len(row)


def complete_incumbent(s, scores):
    """Run configuration 0 to completion with one slot; it becomes the incumbent."""
    assert s.next() == NEW
    run = s.add_config({"name": "incumbent"})
    for f, score in enumerate(scores):
        assert run == Run(0, f)
        s.finish(0, f, score)
        if f < len(scores) - 1:
            run = s.next()
    assert s.configs[0].status == "complete"
    assert s.best() == 0


# -- construction -------------------------------------------------------------


def test_bad_mode_is_rejected():
    with pytest.raises(ValueError, match=r"mode: expected one of 'max', 'min', but got 'maximize'"):
        depth_first(3, mode="maximize")


def test_statuses_constant():
    assert set(STATUSES) == {"complete", "running", "pruned", "failed", "incomplete"}


def test_first_decision_asks_for_a_configuration():
    s = depth_first(3)
    assert s.next() == NEW
    assert s.add_config({"a": 1}) == Run(0, 0)
    assert s.configs[0].params == {"a": 1}
    assert s.configs[0].status == "running"
    assert s.n_started == 1


def test_add_config_when_not_allowed_raises():
    s = depth_first(3, max_configs=1)
    s.add_config({})
    with pytest.raises(RuntimeError, match="no new configuration may start"):
        s.add_config({})


# -- the next-fold rule ---------------------------------------------------------


@pytest.mark.parametrize("slots", [1, 2, 3, 5])
@pytest.mark.parametrize("racing", [None, Forgiving(), Aggressive()])
def test_first_configuration_is_dispatched_depth_first(slots, racing):
    n_folds = 4
    table = noisy_table(0, 6, n_folds)
    # without racing, depth first is the default: configurations finish one after another
    s = FoldScheduler(n_folds, racing=None, max_configs=6) if racing is None else depth_first(n_folds, racing=racing, max_configs=6)
    sim = Sim(s, table, slots).run()
    first_other = next(i for i, r in enumerate(sim.dispatched) if r.config_id != 0)
    assert sim.dispatched[:first_other] == [Run(0, f) for f in range(n_folds)]


def test_without_incumbent_started_configs_continue_before_new_ones():
    # two slots, n_folds=3: config 1 starts while config 0's last fold is in flight;
    # with no incumbent yet, config 1 keeps its folds ahead of a third configuration
    s = depth_first(3)
    assert s.next() == NEW and s.add_config({}) == Run(0, 0)
    assert s.next() == Run(0, 1)
    s.finish(0, 0, 0.5)
    assert s.next() == Run(0, 2)
    s.finish(0, 1, 0.5)
    assert s.next() == NEW and s.add_config({}) == Run(1, 0)
    s.finish(1, 0, 0.1)  # config 0 still running, so no incumbent
    assert s.incumbent is None
    assert s.next() == Run(1, 1)


@pytest.mark.parametrize("score, expected", [(0.9, Run(1, 1)), (0.75, Run(1, 1)), (0.74, NEW), (0.1, NEW)])
def test_after_incumbent_only_configs_matching_its_mean_continue(score, expected):
    s = depth_first(3)  # no racing, so nothing is pruned
    complete_incumbent(s, [0.75, 0.5, 1.0])  # mean exactly 0.75
    assert s.next() == NEW
    assert s.add_config({}) == Run(1, 0)
    s.finish(1, 0, score)
    assert s.next() == expected


def test_unscored_config_waits_behind_a_new_one_after_incumbent():
    s = depth_first(3)
    complete_incumbent(s, [0.5, 0.5, 0.5])
    assert s.next() == NEW and s.add_config({}) == Run(1, 0)
    # config 1 has no finished fold yet: not competitive, so a new configuration starts
    assert s.next() == NEW and s.add_config({}) == Run(2, 0)


def test_heap_serves_best_mean_first():
    s = depth_first(3, max_configs=5)
    complete_incumbent(s, [0.6, 0.6, 0.6])
    for cid in (1, 2, 3, 4):
        assert s.next() == NEW
        assert s.add_config({}) == Run(cid, 0)
    for cid, score in zip((1, 2, 3, 4), (0.9, 0.7, 0.8, 0.2)):
        s.finish(cid, 0, score)
    order = [s.next() for _ in range(8)]
    # config 4 is behind the incumbent: no configuration may start, so it gets its next
    # fold, but not the one after while that fold's score, which may stop it, is unknown
    assert order == [Run(1, 1), Run(1, 2), Run(3, 1), Run(3, 2), Run(2, 1), Run(2, 2), Run(4, 1), WAIT]
    assert s.next() == WAIT


def test_heap_order_follows_updated_means():
    s = depth_first(3, max_configs=3)
    complete_incumbent(s, [0.5, 0.5, 0.5])
    for cid in (1, 2):
        assert s.next() == NEW and s.add_config({}) == Run(cid, 0)
    s.finish(1, 0, 0.9)
    s.finish(2, 0, 0.8)
    assert s.next() == Run(1, 1)
    s.finish(1, 1, 0.5)  # config 1 mean drops to 0.7, below config 2's 0.8
    assert s.next() == Run(2, 1)
    assert s.next() == Run(2, 2)
    assert s.next() == Run(1, 2)


def test_ties_in_means_go_to_the_older_configuration():
    s = depth_first(3, max_configs=4)
    complete_incumbent(s, [0.5, 0.5, 0.5])
    for cid in (1, 2, 3):
        assert s.next() == NEW and s.add_config({}) == Run(cid, 0)
    s.finish(3, 0, 0.75)
    s.finish(2, 0, 0.75)
    s.finish(1, 0, 0.75)
    assert [s.next() for _ in range(6)] == [Run(1, 1), Run(1, 2), Run(2, 1), Run(2, 2), Run(3, 1), Run(3, 2)]


def test_unscored_configs_come_after_scored_ones_oldest_first():
    s = depth_first(3, max_configs=3, explore=3)  # no incumbent: every configuration is competitive
    for cid in (0, 1, 2):
        assert s.next() == NEW and s.add_config({}) == Run(cid, 0)
    s.finish(2, 0, 0.1)  # scored but poor; configs 0 and 1 have no finished fold
    assert [s.next() for _ in range(6)] == [Run(2, 1), Run(2, 2), Run(0, 1), Run(0, 2), Run(1, 1), Run(1, 2)]


def test_incumbent_ties_go_to_the_older_configuration():
    s = depth_first(2, max_configs=3)
    table = [[0.5, 1.0], [1.0, 0.5], [0.75, 0.75]]
    Sim(s, table, slots=1).run()
    assert [s.configs[c].status for c in range(3)] == ["complete"] * 3
    assert s.best() == 0


def test_incumbent_is_the_best_complete_mean():
    table = noisy_table(3, 12, 3, sd=0.05)
    s = depth_first(3, max_configs=12)
    sim = Sim(s, table, slots=3)
    while sim.step():
        complete = {c: st.mean for c, st in s.configs.items() if st.status == "complete"}
        if complete:
            best = max(complete.values())
            assert s.best() == min(c for c, m in complete.items() if m == best)
        else:
            assert s.best() is None
    assert s.best() == max(range(12), key=lambda c: cv_mean(table[c]))


def test_partial_mean_does_not_make_an_incumbent():
    s = depth_first(3)
    complete_incumbent(s, [0.5, 0.5, 0.5])
    assert s.next() == NEW and s.add_config({}) == Run(1, 0)
    s.finish(1, 0, 0.99)
    assert s.best() == 0


# -- mode="min" ---------------------------------------------------------------


@pytest.mark.parametrize("racing", [None, Forgiving(), Aggressive(), Paired(), TTest()])
@pytest.mark.parametrize("seed, slots", [(0, 1), (1, 2), (2, 3)])
def test_mode_min_mirrors_mode_max(racing, seed, slots):
    table = noisy_table(seed, 15, 4, sd=0.05)
    neg = [[-v for v in row] for row in table]
    hi = Sim(depth_first(4, mode="max", racing=racing, max_configs=15), table, slots).run()
    lo = Sim(depth_first(4, mode="min", racing=racing, max_configs=15), neg, slots).run()
    assert lo.decisions == hi.decisions
    assert {c: st.status for c, st in lo.s.configs.items()} == {c: st.status for c, st in hi.s.configs.items()}
    assert lo.s.best() == hi.s.best()
    assert lo.s.fold_trainings_saved == hi.s.fold_trainings_saved


def test_mode_min_prefers_lower_scores():
    s = depth_first(3, mode="min", max_configs=3)
    complete_incumbent(s, [0.5, 0.5, 0.5])
    for cid in (1, 2):
        assert s.next() == NEW and s.add_config({}) == Run(cid, 0)
    s.finish(1, 0, 0.4)
    s.finish(2, 0, 0.3)
    assert s.next() == Run(2, 1)


# -- exhaustive search -----------------------------------------------------------


@pytest.mark.parametrize("explore", [1, None])
@pytest.mark.parametrize("n_configs, n_folds, slots", [(1, 1, 1), (5, 3, 1), (7, 5, 2), (10, 4, 3), (4, 10, 8)])
def test_exhaustive_runs_every_fold_exactly_once(n_configs, n_folds, slots, explore):
    table = noisy_table(n_configs, n_configs, n_folds, sd=0.2)
    s = FoldScheduler(n_folds, racing=None, max_configs=n_configs, explore=explore)
    sim = Sim(s, table, slots).run()
    assert len(sim.dispatched) == len(set(sim.dispatched)) == n_configs * n_folds
    assert set(sim.dispatched) == {Run(c, f) for c in range(n_configs) for f in range(n_folds)}
    assert sim.decisions[-1] == DONE
    assert s.next() == DONE  # and stays done
    assert s.n_started == n_configs * n_folds
    assert all(st.status == "complete" for st in s.configs.values())
    assert s.fold_trainings_saved == 0
    assert s.best() == max(range(n_configs), key=lambda c: cv_mean(table[c]))


def test_done_once_nothing_runs_and_nothing_may_start():
    s = depth_first(2, max_configs=1)
    assert s.next() == NEW and s.add_config({}) == Run(0, 0)
    assert s.next() == Run(0, 1)
    assert s.next() == WAIT
    s.finish(0, 0, 0.5)
    assert s.next() == WAIT
    s.finish(0, 1, 0.5)
    assert s.next() == DONE


# -- racing -------------------------------------------------------------------


def test_forgiving_prunes_a_clearly_bad_config_after_one_fold():
    n_folds = 5
    table = const_table([0.8, 0.1, 0.8], n_folds)
    s = depth_first(n_folds, racing=Forgiving(), max_configs=3)
    sim = Sim(s, table, slots=1).run()
    assert s.configs[1].status == "pruned"
    assert s.configs[1].scores == {0: 0.1}
    assert [r for r in sim.dispatched if r.config_id == 1] == [Run(1, 0)]
    assert s.configs[1].skipped == n_folds - 1
    assert s.fold_trainings_saved == n_folds - 1
    assert s.configs[2].status == "complete"
    assert s.best() == 0


def test_pruned_config_in_flight_folds_are_kept_but_status_stays_pruned():
    s = depth_first(4, racing=Forgiving(), max_configs=2)
    complete_incumbent(s, [0.8, 0.7, 0.9, 0.8])  # mean 0.8, worst fold 0.7
    s.pop_events()
    assert s.next() == NEW and s.add_config({}) == Run(1, 0)
    s.finish(1, 0, 0.85)
    assert s.next() == Run(1, 1)
    assert s.next() == Run(1, 2)  # two folds of config 1 in flight
    s.finish(1, 1, 0.3)  # mean 0.575 < worst fold 0.7
    assert s.configs[1].status == "running"  # the rule applies when next() looks at it
    assert s.next() == WAIT  # config 1 pruned; no new config may start; fold 2 still runs
    assert s.configs[1].status == "pruned"
    assert s.pop_events() == [("pruned", 1, pytest.approx(0.575))]
    assert s.fold_trainings_saved == 1  # fold 3 never trained
    s.finish(1, 2, 0.99)  # the in-flight fold lands
    assert s.configs[1].scores == {0: 0.85, 1: 0.3, 2: 0.99}
    assert s.configs[1].status == "pruned"
    assert s.pop_events() == []
    assert s.next() == DONE
    assert s.configs[1].status == "pruned"
    assert s.best() == 0
    assert s.fold_trainings_saved == 1
    assert s.configs[1].todo == [] and 3 not in s.configs[1].scores


def test_pruned_config_never_becomes_incumbent_even_if_its_late_folds_are_great():
    s = depth_first(2, racing=Aggressive(), max_configs=2)
    complete_incumbent(s, [0.5, 0.5])
    assert s.next() == NEW and s.add_config({}) == Run(1, 0)
    s.finish(1, 0, 0.6)
    assert s.next() == Run(1, 1)
    s.finish(1, 1, 0.9)
    assert s.configs[1].status == "complete"
    assert s.best() == 1  # control: a complete better config takes over

    s = depth_first(4, racing=Aggressive(), max_configs=2)
    complete_incumbent(s, [0.5, 0.5, 0.5, 0.5])
    assert s.next() == NEW and s.add_config({}) == Run(1, 0)
    s.finish(1, 0, 0.6)
    assert s.next() == Run(1, 1)
    assert s.next() == Run(1, 2)
    s.finish(1, 1, 0.1)  # mean 0.35 < 0.5
    assert s.next() == WAIT
    assert s.configs[1].status == "pruned"
    s.finish(1, 2, 1.0)  # its finished folds now average 0.567, above the incumbent
    assert s.configs[1].status == "pruned"
    assert s.best() == 0
    assert s.next() == DONE
    assert s.best() == 0


@pytest.mark.parametrize("explore", [1, None])
@pytest.mark.parametrize("racing", [Forgiving(), Aggressive(), Paired(), TTest()])
@pytest.mark.parametrize("slots", [1, 2, 4])
def test_racing_never_dispatches_folds_of_pruned_configs(racing, slots, explore):
    table = noisy_table(11, 20, 5, sd=0.03, spacing=0.03)
    s = FoldScheduler(5, racing=racing, max_configs=20, explore=explore)
    sim = Sim(s, table, slots).run()
    assert len(sim.dispatched) == len(set(sim.dispatched))
    pruned = [c for c, st in s.configs.items() if st.status == "pruned"]
    assert pruned, "this benchmark should prune something"
    for c in pruned:
        st = s.configs[c]
        started = [r.fold for r in sim.dispatched if r.config_id == c]
        assert sorted(started) == sorted(st.scores)  # every started fold finished and was kept
        assert st.skipped == 5 - len(started)
        assert c != s.best()
    saved = sum(5 - len([r for r in sim.dispatched if r.config_id == c]) for c in pruned)
    assert s.fold_trainings_saved == saved
    assert s.n_started + saved == 5 * 20
    assert {st.status for st in s.configs.values()} <= {"complete", "pruned"}


def test_events_report_complete_and_pruned_with_the_cv_mean():
    n_folds = 3
    table = [[0.8, 0.7, 0.9], [0.1, 0.2, 0.3], [0.9, 0.8, 1.0]]
    s = depth_first(n_folds, racing=Forgiving(), max_configs=3)
    sim = Sim(s, table, slots=1)
    events = []
    while sim.step():
        events += s.pop_events()
    events += s.pop_events()
    assert [(e[0], e[1]) for e in events] == [("complete", 0), ("pruned", 1), ("complete", 2)]
    assert events[0][2] == pytest.approx(0.8)
    assert events[1][2] == pytest.approx(0.1)  # mean of its finished folds
    assert events[2][2] == pytest.approx(0.9)
    assert s.pop_events() == []
    assert s.best() == 2


# -- budgets --------------------------------------------------------------------


@pytest.mark.parametrize("racing", [None, Forgiving(), Aggressive(), Paired(), TTest()])
@pytest.mark.parametrize("budget", [0, 1, 3, 4, 7, 10, 13, 25, 60])
@pytest.mark.parametrize("slots", [1, 3])
@pytest.mark.parametrize("explore", [1, None])
def test_fold_budget_is_never_exceeded(racing, budget, slots, explore):
    n_folds = 4
    table = noisy_table(budget, 30, n_folds, sd=0.05)
    s = FoldScheduler(n_folds, racing=racing, max_fold_trainings=budget, max_configs=30, explore=explore)
    sim = Sim(s, table, slots)
    while sim.step():
        assert s.n_started <= budget
    assert len(sim.dispatched) == s.n_started <= budget
    assert len(sim.dispatched) == len(set(sim.dispatched))
    assert sim.decisions[-1] == DONE
    # a configuration starts only with n_folds of budget left
    assert all(left >= n_folds for left in sim.budget_at_new)
    for c, st in s.configs.items():
        assert st.status in FINAL_STATUSES
        started = {r.fold for r in sim.dispatched if r.config_id == c}
        if st.status == "incomplete":
            assert len(started) < n_folds and not st.running
        if st.status == "complete":
            assert started == set(range(n_folds))


def test_budget_smaller_than_n_folds_starts_nothing():
    s = depth_first(5, max_fold_trainings=4)
    assert s.can_start_config() is False
    assert s.next() == DONE
    assert s.configs == {}


def test_budget_exhausted_leaves_unfinished_configs_incomplete():
    # 1 slot, budget 7: config 0 runs its 3 folds (the incumbent, 0.8); config 1 gets one
    # fold (0.5, not competitive); config 2 starts with the last 3 folds of budget and,
    # as no configuration may start any more, runs to completion; config 1 is left unfinished
    s = depth_first(3, max_fold_trainings=7)
    table = const_table([0.8, 0.5, 0.6, 0.7], 3)
    sim = Sim(s, table, slots=1).run()
    assert s.n_started == 7
    assert sim.dispatched == [Run(0, 0), Run(0, 1), Run(0, 2), Run(1, 0), Run(2, 0), Run(2, 1), Run(2, 2)]
    assert [s.configs[c].status for c in (0, 1, 2)] == ["complete", "incomplete", "complete"]
    assert s.configs[1].skipped == 2 and s.configs[1].scores == {0: 0.5}
    assert s.fold_trainings_saved == 0  # incomplete folds were not saved by racing
    assert s.pop_events()[-1] == ("incomplete", 1, 0.5)
    assert s.best() == 0


@pytest.mark.parametrize("max_configs", [1, 2, 5])
@pytest.mark.parametrize("racing", [None, Forgiving()])
def test_max_configs_is_respected(max_configs, racing):
    table = noisy_table(5, 10, 3, sd=0.05)
    s = depth_first(3, racing=racing, max_configs=max_configs)
    sim = Sim(s, table, slots=2).run()
    assert len(s.configs) == max_configs
    assert sim.decisions.count(NEW) == max_configs
    assert s.can_start_config() is False


def test_close_stops_new_configs_and_finishes_started_ones():
    s = depth_first(3)
    assert s.next() == NEW and s.add_config({}) == Run(0, 0)
    assert s.next() == Run(0, 1)
    s.close()
    assert s.can_start_config() is False
    sim = Sim(s, const_table([0.5], 3), slots=2)
    sim.running.extend([Run(0, 0), Run(0, 1)])
    sim.run()
    assert NEW not in sim.decisions
    assert sim.dispatched == [Run(0, 2)]
    assert len(s.configs) == 1 and s.configs[0].status == "complete"


def test_close_lets_non_competitive_configs_run_their_folds():
    s = depth_first(2, racing=None)
    complete_incumbent(s, [0.9, 0.9])
    assert s.next() == NEW and s.add_config({}) == Run(1, 0)
    s.finish(1, 0, 0.1)
    s.close()
    assert s.next() == Run(1, 1)  # below the incumbent, but nothing new may start
    s.finish(1, 1, 0.1)
    assert s.next() == DONE
    assert s.configs[1].status == "complete"


# -- failures -------------------------------------------------------------------


def test_fail_marks_config_failed_and_stops_its_folds():
    s = depth_first(4, max_configs=2)
    assert s.next() == NEW and s.add_config({}) == Run(0, 0)
    assert s.next() == Run(0, 1)
    s.fail(0, 0, "out of memory")
    st = s.configs[0]
    assert st.status == "failed" and st.error == "out of memory"
    assert s.pop_events() == [("failed", 0, pytest.approx(math.nan, nan_ok=True))]
    assert s.next() == NEW and s.add_config({}) == Run(1, 0)  # config 0's folds 2, 3 never start
    s.finish(0, 1, 0.9)  # in-flight fold of the failed config lands
    assert st.status == "failed" and st.scores == {1: 0.9}
    assert s.fold_trainings_saved == 0  # failures are not racing savings
    sim = Sim(s, const_table([0.9, 0.5], 4), slots=1)
    sim.running.append(Run(1, 0))
    sim.run()
    assert all(r.config_id == 1 for r in sim.dispatched)
    assert s.configs[1].status == "complete"
    assert s.best() == 1


def test_second_failure_keeps_the_first_error():
    s = depth_first(3)
    s.add_config({})
    assert s.next() == Run(0, 1)
    s.fail(0, 0, "first")
    s.fail(0, 1, "second")
    assert s.configs[0].error == "first"
    assert not s.configs[0].running


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf, None])
def test_non_finite_score_fails_the_config(bad):
    s = depth_first(3, max_configs=1)
    s.add_config({})
    s.finish(0, 0, bad)
    st = s.configs[0]
    assert st.status == "failed"
    assert "non-finite" in st.error and "fold 0" in st.error
    assert st.scores == {}
    assert s.next() == DONE
    assert s.best() is None


def test_failed_config_never_becomes_incumbent():
    s = depth_first(2, max_configs=2)
    table = [[0.9, math.nan], [0.5, 0.5]]
    Sim(s, table, slots=1).run()
    assert s.configs[0].status == "failed"
    assert s.best() == 1


# -- n_folds=1 --------------------------------------------------------------------


@pytest.mark.parametrize("racing", [None, Forgiving(), Aggressive(), Paired(), TTest()])
def test_single_split_completes_each_config_after_one_fold(racing):
    s = depth_first(1, racing=racing, max_configs=6)
    table = [[v] for v in (0.3, 0.9, 0.1, 0.5, 0.95, 0.2)]
    sim = Sim(s, table, slots=2)
    while sim.step():
        for c, st in s.configs.items():
            if st.scores:
                assert st.status == "complete"
    assert sim.dispatched == [Run(c, 0) for c in range(6)]
    assert s.best() == 4
    assert s.fold_trainings_saved == 0


# -- pickling -------------------------------------------------------------------


@pytest.mark.parametrize("racing", [None, Forgiving(), Paired(), TTest()])
@pytest.mark.parametrize("cut", [3, 12, 25])
@pytest.mark.parametrize("explore", [1, None])
def test_pickled_scheduler_continues_identically(racing, cut, explore):
    table = noisy_table(7, 20, 4, sd=0.03)

    def sim():
        return Sim(FoldScheduler(4, racing=racing, max_configs=20, max_fold_trainings=60, explore=explore), table, slots=2)

    steps = len(sim().run().finished)
    original = sim()
    for _ in range(min(cut, steps - 2)):  # Paired prunes most configurations after one fold: a short run
        assert original.step()
    copy = Sim(pickle.loads(pickle.dumps(original.s)), table, slots=2)
    copy.running = collections.deque(original.running)
    before = len(original.decisions)
    original.run()
    copy.run()
    assert copy.decisions == original.decisions[before:]
    assert len(copy.decisions) > 0
    assert {c: st.status for c, st in copy.s.configs.items()} == {c: st.status for c, st in original.s.configs.items()}
    assert copy.s.best() == original.s.best()
    assert copy.s.fold_trainings_saved == original.s.fold_trainings_saved


# -- a larger synthetic benchmark ------------------------------------------------------


@pytest.mark.parametrize("explore", [1, None])
@pytest.mark.parametrize("seed", range(6))
def test_forgiving_saves_half_the_folds_and_picks_the_exhaustive_winner(seed, explore):
    n_configs, n_folds = 40, 5
    table = noisy_table(seed, n_configs, n_folds, sd=0.01, spacing=0.01)
    exhaustive = Sim(FoldScheduler(n_folds, racing=None, max_configs=n_configs, explore=explore), table, slots=2).run()
    racing = Sim(FoldScheduler(n_folds, racing=Forgiving(), max_configs=n_configs, explore=explore), table, slots=2).run()
    assert exhaustive.s.n_started == n_configs * n_folds
    assert racing.s.n_started <= 0.5 * exhaustive.s.n_started
    assert racing.s.n_started + racing.s.fold_trainings_saved == n_configs * n_folds
    winner = max(range(n_configs), key=lambda c: cv_mean(table[c]))
    assert exhaustive.s.best() == winner
    assert racing.s.best() == winner
    assert racing.s.configs[winner].status == "complete"


# -- invariants under random workloads --------------------------------------------------


@pytest.mark.parametrize("seed", range(0, 300, 3))
def test_invariants_hold_under_random_scores_failures_and_close(seed):
    """Random rule, mode, budgets, slots, NaN scores, failures and an early close()."""
    rng = random.Random(seed)
    n_folds = rng.randint(1, 5)
    racing = rng.choice([None, Forgiving(), Aggressive(), Paired(), TTest(), Forgiving(min_folds=2)])
    mode = rng.choice(["max", "min"])
    budget = rng.choice([None, rng.randint(0, 40)])
    explore = rng.choice([None, rng.randint(1, 12)])
    s = FoldScheduler(n_folds, mode=mode, racing=racing, max_configs=rng.randint(1, 12), max_fold_trainings=budget,
                      explore=explore)
    table = {}

    def score(c, f):
        if (c, f) not in table:
            table[c, f] = math.nan if rng.random() < 0.05 else round(rng.random(), 2)
        return table[c, f]

    sim = Sim(s, score, slots=rng.randint(1, 4))
    pruned_after = {}  # config_id -> number of folds dispatched when it was pruned
    while sim.fill() != DONE:
        assert s.n_running == len(sim.running)
        for c, st in s.configs.items():
            if st.status == "pruned":
                pruned_after.setdefault(c, len(sim.dispatched))
        if rng.random() < 0.05:
            s.close()
        if rng.random() < 0.05:
            run = sim.running.popleft()
            s.fail(run.config_id, run.fold, "worker died")
        else:
            sim.finish_one()

    assert len(sim.dispatched) == len(set(sim.dispatched))
    assert budget is None or s.n_started <= budget
    assert s.n_running == 0
    for c, st in s.configs.items():
        assert st.status in FINAL_STATUSES
        assert not st.running and not st.todo
        if c in pruned_after:
            assert all(r.config_id != c for r in sim.dispatched[pruned_after[c]:])
        if st.status == "complete":
            assert set(st.scores) == set(range(n_folds))
    sign = 1 if mode == "max" else -1
    complete = {c: sign * st.mean for c, st in s.configs.items() if st.status == "complete"}
    if complete:
        top = max(complete.values())
        assert s.best() == min(c for c, m in complete.items() if m == top)
    else:
        assert s.best() is None
    assert s.fold_trainings_saved == sum(st.skipped for st in s.configs.values() if st.status == "pruned")


# -- explore: first folds of several configurations before any second fold -------------


@pytest.mark.parametrize("n_folds", [2, 3, 5])
def test_default_explore_runs_first_folds_of_two_n_folds_configs_first(n_folds):
    table = noisy_table(3, 30, n_folds, sd=0.01)
    s = FoldScheduler(n_folds, racing=Forgiving(), max_configs=30)
    assert s.explore == 2 * n_folds
    sim = Sim(s, table, slots=1).run()
    explored = 2 * n_folds
    assert sim.dispatched[:explored] == [Run(c, 0) for c in range(explored)]
    # then the best first fold is completed first and becomes the first incumbent
    best_first = max(range(explored), key=lambda c: table[c][0])
    assert sim.dispatched[explored:explored + n_folds - 1] == [Run(best_first, f) for f in range(1, n_folds)]
    first_complete = next(e for e in sim.finished if e[1] == n_folds - 1)
    assert first_complete[0] == best_first


def test_explore_stops_at_max_configs():
    s = FoldScheduler(5, racing=Forgiving(), max_configs=3)  # explore would be 10
    sim = Sim(s, const_table([0.5, 0.7, 0.6], 5), slots=1).run()
    assert sim.dispatched[:3] == [Run(0, 0), Run(1, 0), Run(2, 0)]
    assert sim.dispatched[3:7] == [Run(1, f) for f in range(1, 5)]


@pytest.mark.parametrize("explore", [0, 1, 4, 100])
def test_any_explore_keeps_every_fold_once_and_the_exhaustive_winner(explore):
    table = noisy_table(4, 12, 4, sd=0.01, spacing=0.02)
    sim = Sim(FoldScheduler(4, racing=Forgiving(), max_configs=12, explore=explore), table, slots=2).run()
    assert len(sim.dispatched) == len(set(sim.dispatched))
    assert sim.s.best() == max(range(12), key=lambda c: cv_mean(table[c]))


# -- once no configuration may start, a configuration that is behind waits for its folds --


def _behind_with_fold_in_flight(racing):
    """Incumbent 0 (mean 0.8, worst fold 0.7), then config 1 scores 0.75 on fold 0 (kept,
    but behind), no further configuration may start, and fold 1 of config 1 is handed out."""
    s = depth_first(3, racing=racing, max_configs=2)
    complete_incumbent(s, [0.9, 0.7, 0.8])
    assert s.next() == NEW and s.add_config({}) == Run(1, 0)
    s.finish(1, 0, 0.75)
    assert s.next() == Run(1, 1)  # nothing else to run: the slot is not left idle
    return s


def test_behind_config_with_a_fold_in_flight_is_passed_over():
    s = _behind_with_fold_in_flight(Aggressive(min_folds=2))
    assert s.next() == WAIT  # fold 1's score may still stop config 1
    assert s.n_running == 1
    s.finish(1, 1, 0.5)  # mean 0.625 < incumbent's 0.8: stopped before fold 2 ever starts
    assert s.next() == DONE
    assert s.configs[1].status == "pruned" and s.configs[1].skipped == 1


def test_passed_over_config_gets_its_fold_when_its_scores_keep_it():
    s = _behind_with_fold_in_flight(Forgiving())
    assert s.next() == WAIT
    s.finish(1, 1, 0.76)  # mean 0.755 >= incumbent's worst fold 0.7: not stopped
    assert s.next() == Run(1, 2)


def test_exhaustive_never_passes_over_a_config():
    s = _behind_with_fold_in_flight(None)
    assert s.next() == Run(1, 2)  # every fold runs anyway: keep the slot busy


def test_a_config_without_folds_in_flight_runs_while_another_is_passed_over():
    s = depth_first(3, racing=Forgiving(), max_configs=3)
    complete_incumbent(s, [0.9, 0.7, 0.8])
    assert s.next() == NEW and s.add_config({}) == Run(1, 0)
    assert s.next() == NEW and s.add_config({}) == Run(2, 0)
    s.finish(1, 0, 0.75)
    s.finish(2, 0, 0.74)
    assert s.next() == Run(1, 1)  # best mean first
    assert s.next() == Run(2, 1)  # config 1 is behind with fold 1 in flight: config 2 goes instead
    assert s.next() == WAIT
    assert s.n_running == 2


@pytest.mark.parametrize("slots", [1, 2, 3])
def test_without_racing_started_configurations_always_finish_first(slots):
    # every fold runs anyway: a configuration starts only when no started one has folds left
    table = noisy_table(2, 8, 4, sd=0.2)
    sim = Sim(FoldScheduler(4, racing=None, max_configs=8), table, slots).run()
    for i, run in enumerate(sim.dispatched):
        if run.fold == 0 and run.config_id > 0:
            earlier = {r for r in sim.dispatched[:i]}
            assert all(Run(c, f) in earlier for c in range(run.config_id) for f in range(4))


# -- learning curves: the references of fold stopping ------------------------------------


def test_finish_keeps_curves_and_stopped_early_folds():
    s = depth_first(3, max_configs=2)
    assert s.next() == NEW and s.add_config({}) == Run(0, 0)
    s.finish(0, 0, 0.75, curve=[0.5, 0.75, 0.625])
    assert s.configs[0].curves == {0: [0.5, 0.75, 0.625]}
    assert s.next() == Run(0, 1)
    s.finish(0, 1, 0.5, curve=[0.25, 0.5], stopped_early=True)
    assert s.configs[0].stopped_early == {1}
    assert s.next() == Run(0, 2)
    s.finish(0, 2, 0.5)  # a caller without curves
    st = s.configs[0]
    assert st.status == "complete" and st.curves == {0: [0.5, 0.75, 0.625], 1: [0.25, 0.5]}
    assert st.stopped_early == {1}


def test_reference_is_the_incumbents_raw_curve_on_that_fold():
    s = depth_first(2, mode="min", max_configs=3)
    assert s.reference(0) is None  # no incumbent yet
    assert s.next() == NEW and s.add_config({}) == Run(0, 0)
    s.finish(0, 0, 0.25, curve=[0.5, 0.25])
    assert s.reference(0) is None  # configuration 0 is not complete
    assert s.next() == Run(0, 1)
    s.finish(0, 1, 0.5)  # no curve for fold 1
    assert s.best() == 0
    assert s.reference(0) == [0.5, 0.25]  # raw, not oriented, in mode="min"
    assert s.reference(1) is None and s.reference(7) is None
    ref = s.reference(0)
    ref.append(0.0)
    assert s.reference(0) == [0.5, 0.25]  # a copy


def test_curves_are_kept_only_by_running_configurations_and_the_incumbent():
    s = depth_first(2, racing=Forgiving(), max_configs=4)
    assert s.next() == NEW and s.add_config({}) == Run(0, 0)
    s.finish(0, 0, 0.5, curve=[0.5])
    assert s.next() == Run(0, 1)
    s.finish(0, 1, 0.5, curve=[0.5])
    assert s.best() == 0 and s.configs[0].curves == {0: [0.5], 1: [0.5]}
    assert s.next() == NEW and s.add_config({}) == Run(1, 0)
    s.finish(1, 0, 0.25, curve=[0.25])
    assert s.configs[1].curves == {0: [0.25]}  # running: it may still become the incumbent
    assert s.next() == NEW  # configuration 1 is pruned first: its curve goes
    assert s.configs[1].status == "pruned" and s.configs[1].curves == {}
    assert s.add_config({}) == Run(2, 0)
    s.finish(2, 0, 0.75, curve=[0.75])
    assert s.next() == Run(2, 1)
    s.finish(2, 1, 0.75, curve=[0.625, 0.75])
    assert s.best() == 2 and s.configs[0].curves == {}  # the old incumbent's curves go
    assert s.reference(1) == [0.625, 0.75]
    assert s.next() == NEW and s.add_config({}) == Run(3, 0)
    s.finish(3, 0, 0.25, curve=[0.25])
    assert s.next() == DONE
    assert s.configs[3].status == "pruned" and s.configs[3].curves == {}
    assert [c for c, st in s.configs.items() if st.curves] == [2]


def test_a_complete_configuration_that_is_not_the_incumbent_drops_its_curves():
    s = depth_first(1, max_configs=2)
    for c, score in enumerate([0.75, 0.5]):
        assert s.next() == NEW and s.add_config({}) == Run(c, 0)
        s.finish(c, 0, score, curve=[score])
    assert s.best() == 0
    assert s.configs[0].curves == {0: [0.75]} and s.configs[1].curves == {}


def test_failed_and_incomplete_configurations_drop_their_curves():
    s = depth_first(3, max_configs=3)
    assert s.next() == NEW and s.add_config({}) == Run(0, 0)
    s.finish(0, 0, 0.5, curve=[0.5])
    assert s.next() == Run(0, 1)
    s.fail(0, 1, "boom")
    assert s.configs[0].status == "failed" and s.configs[0].curves == {}
    assert s.next() == NEW and s.add_config({}) == Run(1, 0)
    s.finish(1, 0, 0.5, curve=[0.5])
    assert s.next() == Run(1, 1)
    s.finish(1, 1, math.nan, curve=[math.nan])  # a non-finite score fails the configuration
    assert s.configs[1].status == "failed" and s.configs[1].curves == {}
    # the budget runs out with configuration 1 unfinished (see the test above)
    s = depth_first(3, max_fold_trainings=7)
    means = [0.8, 0.5, 0.6, 0.7]
    Replay(s, const_table(means, 3), curves=lambda c, f: [0.25, means[c]]).run()
    assert [s.configs[c].status for c in (0, 1, 2)] == ["complete", "incomplete", "complete"]
    assert s.configs[1].curves == {} and s.configs[2].curves == {}
    assert s.configs[0].curves == {f: [0.25, 0.8] for f in range(3)}


def test_a_fold_finishing_after_its_configuration_stopped_keeps_its_score_but_no_curve():
    s = _behind_with_fold_in_flight(Forgiving())  # fold 1 of config 1 in flight
    s.fail(1, 2, "worker died")  # as if fold 2 had run elsewhere and failed
    assert s.configs[1].status == "failed"
    s.finish(1, 1, 0.25, curve=[0.25], stopped_early=True)
    st = s.configs[1]
    assert st.status == "failed" and st.scores == {0: 0.75, 1: 0.25} and st.curves == {}
    assert st.stopped_early == {1}


def test_curve_values_are_stored_as_floats_and_none_as_nan():
    s = depth_first(1, max_configs=1)
    assert s.next() == NEW and s.add_config({}) == Run(0, 0)
    s.finish(0, 0, 0.5, curve=(1, None, 0.5))
    curve = s.reference(0)
    assert curve[0] == 1.0 and type(curve[0]) is float and math.isnan(curve[1]) and curve[2] == 0.5


def test_a_scheduler_pickled_before_curves_existed_loads_and_keeps_curves():
    table = noisy_table(3, 6, 3)
    sim = Sim(FoldScheduler(3, racing=Forgiving(), max_configs=6, explore=1), table, slots=2)
    for _ in range(4):
        assert sim.step()
    for st in sim.s.configs.values():  # what an older glimr_cv pickled
        del st.curves, st.stopped_early
    old = pickle.loads(pickle.dumps(sim.s))
    assert all(st.curves == {} and st.stopped_early == set() for st in old.configs.values())
    assert old.reference(0) is None
    first, *others = sim.running
    old.finish(*first, table[first.config_id][first.fold], curve=[0.0, 0.5], stopped_early=True)
    assert old.configs[first.config_id].stopped_early == {first.fold}
    replay = Replay(old, table, slots=2, curves=lambda c, f: [0.0, table[c][f]])
    replay.running = collections.deque(others)
    replay.run()
    assert {st.status for st in old.configs.values()} <= FINAL_STATUSES
    best = old.best()
    after = {f: [0.0, table[best][f]] for c, f, _ in replay.finished if c == best}
    if first.config_id == best:
        after[first.fold] = [0.0, 0.5]
    assert old.configs[best].curves == after and after  # folds finished after loading
    assert all(old.reference(f) == curve for f, curve in after.items())
    assert all(not st.curves for c, st in old.configs.items() if c != best)


def test_a_retried_configuration_runs_its_unfinished_folds_and_can_complete():
    s = FoldScheduler(3, racing=None)
    assert s.next() == NEW
    s.add_config("a")
    assert s.next() == Run(0, 1)
    s.finish(0, 0, 0.5)
    s.fail(0, 1, "fold 1: ValueError in builder: broken")
    assert s.configs[0].status == "failed" and s.configs[0].todo == []
    s.retry(0)
    c = s.configs[0]
    assert c.status == "running" and c.error is None and c.todo == [1, 2] and c.scores == {0: 0.5}
    with pytest.raises(ValueError, match="config_id: expected a failed or incomplete configuration, but got 0, "
                                         "which is running"):
        s.retry(0)
    runs = [s.next(), s.next()]
    assert Run(0, 1) in runs and Run(0, 2) in runs
    s.finish(0, 1, 0.6)
    s.finish(0, 2, 0.7)
    assert c.status == "complete" and s.best() == 0


def test_a_cancelled_fold_is_to_do_again_uncounted_and_a_stopped_search_starts_nothing_more():
    s = FoldScheduler(3, racing=None, slots=2)
    assert s.next() == NEW
    s.add_config("a")
    assert s.next() == Run(0, 1) and s.next() == Run(0, 2)  # fold 2 waits for a slot
    s.freeze()  # a stopper's stop_all: nothing more starts
    assert s.max_fold_trainings == 3 and s.frozen
    s.cancel(0, 2)
    c = s.configs[0]
    assert c.todo == [2] and c.running == {0, 1} and s.n_started == 2 and s.n_running == 2
    assert s.max_fold_trainings == 2 and s.next() == WAIT
    with pytest.raises(ValueError, match="fold: expected a running fold of configuration 0, but got 2"):
        s.cancel(0, 2)
    s.finish(0, 0, 0.5)
    s.finish(0, 1, 0.6)
    assert s.next() == DONE and c.status == "incomplete" and c.scores == {0: 0.5, 1: 0.6}
    assert s.n_started == 2  # the fold trainings: the cancelled fold never trained


def test_a_cancelled_fold_of_a_failed_configuration_gives_its_training_back_to_the_budget():
    s = FoldScheduler(2, racing=None, max_fold_trainings=3, slots=1)
    assert s.next() == NEW
    s.add_config("a")
    assert s.next() == Run(0, 1)  # waits for the one slot
    s.fail(0, 0, "fold 0: boom")
    s.cancel(0, 1)  # never trained: not to do again, not counted, and skipped with the configuration's end
    assert s.configs[0].todo == [] and s.configs[0].skipped == 1
    assert s.n_started == 1 and s.n_running == 0 and s.max_fold_trainings == 3
    assert s.next() == NEW  # two fold trainings of the budget left: a whole new configuration fits


def test_a_frozen_budget_is_the_folds_started_until_thawed():
    s = FoldScheduler(2, racing=None, max_fold_trainings=None)
    assert s.next() == NEW
    s.add_config("a")
    s.freeze()  # a halt
    assert s.max_fold_trainings == 1 and s.next() == WAIT
    s.thaw(None)  # the resumed search: no limit again
    assert not s.frozen and s.max_fold_trainings is None and s.next() == Run(0, 1)


def test_the_next_fold_goes_where_its_configurations_model_is_when_it_may_go_first():
    # two slots, Tune's pending trial: the worker that frees next is the one whose fold started first
    s = FoldScheduler(3, racing=None, slots=2)
    assert s.next() == NEW
    s.add_config("a")
    assert s.next() == Run(0, 1)
    s.finish(0, 0, 0.5)  # a slot is free: the worker of config 0 takes the next fold, config 0's
    assert s.next() == Run(0, 2)
    assert s.next() == NEW
    s.add_config("b")  # both slots busy, (0, 1) started first: its worker frees first
    s.finish(0, 1, 0.5)
    s.finish(0, 2, 0.5)
    assert s.configs[0].status == "complete"
    # with racing, a configuration behind the incumbent is not moved ahead of the heap
    r = FoldScheduler(2, racing=Forgiving(), slots=1, explore=1)
    assert r.next() == NEW
    r.add_config("best")
    assert r.next() == Run(0, 1)
    r.finish(0, 0, 0.9)
    r.finish(0, 1, 0.9)
    assert r.next() == NEW
    r.add_config("worse")
    r.finish(1, 0, 0.1)  # config 1 freed the slot but is hopeless: stopped, not continued
    assert r.next() == NEW and r.configs[1].status == "pruned"


# -- fold order: the most telling fold first ---------------------------------------


class UnorderedPaired(Paired):
    """Paired, with folds in index order: the scheduler before fold_order existed."""

    pairs_folds = False


def test_fold_order_is_index_order_without_an_incumbent_or_a_fold_pairing_rule():
    for racing in (None, Paired(), Forgiving(), Aggressive(), UnorderedPaired()):
        s = FoldScheduler(4, racing=racing, explore=1)
        assert s.fold_order() == [0, 1, 2, 3]
        complete_incumbent(s, [0.9, 0.8, 0.9, 0.9])
        assert s.add_config("b") == Run(1, 0)
        s.finish(1, 0, 0.9)  # tied on fold 0
        assert s.next() == Run(1, 1)
        s.finish(1, 1, 0.5)  # trails by 0.3 on fold 1
        expected = [1, 0, 2, 3] if isinstance(racing, Paired) and racing.pairs_folds else [0, 1, 2, 3]
        assert s.fold_order() == expected, racing


def test_fold_order_puts_first_the_fold_where_others_trailed_the_incumbent_most():
    table = [[0.9, 0.8, 0.9, 0.9],  # the incumbent, CV mean 0.875
             [0.9, 0.5, 0.85, 0.95],  # trails by 0.3 on fold 1, 0.05 on fold 2, leads on fold 3
             [0.9, 0.7, 0.88, 0.95]]
    s = Replay(FoldScheduler(4, racing=Paired(tolerance=1.0), max_configs=3), table).run().scheduler  # stops nothing
    assert [c.status for c in s.configs.values()] == ["complete"] * 3 and s.best() == 0
    # mean trail: fold 1 by 0.2, fold 2 by 0.035, fold 0 by 0, fold 3 by -0.05 (the others lead there)
    assert s.fold_order() == [1, 2, 0, 3]
    s.max_configs = 4
    assert s.next() == NEW and s.add_config("d") == Run(3, 1)


def test_fold_order_in_mode_min_puts_first_the_fold_where_others_were_highest():
    s = FoldScheduler(3, mode="min", racing=Paired(tolerance=1.0), explore=1)
    complete_incumbent(s, [0.1, 0.2, 0.1])
    run = s.add_config("b")
    assert run.fold == 0
    s.finish(1, 0, 0.1)  # tied on fold 0
    run = s.next()
    s.finish(1, run.fold, 0.6)  # far worse (higher) on fold 1
    assert s.fold_order()[0] == 1


def test_fold_order_survives_a_pickle_of_a_scheduler_made_before_it():
    """Nothing new is stored: a pickled scheduler orders folds after loading."""
    s = FoldScheduler(3, racing=Paired(), explore=1)
    complete_incumbent(s, [0.9, 0.9, 0.9])
    s2 = pickle.loads(pickle.dumps(s))
    assert s2.fold_order() == s.fold_order() == [0, 1, 2]


@pytest.mark.parametrize("seed", range(30))
def test_telling_fold_first_saves_folds_on_a_saturated_metric_and_keeps_the_winner(seed):
    """An AUC-like table: every configuration scores 1.0 on three easy folds, and the folds that
    separate them are the other two. Running the fold where others trailed first stops hopeless
    configurations after one fold instead of after the ties."""
    rng = random.Random(seed)
    n_configs, n_folds = 20, 5
    hard = rng.sample(range(n_folds), 2)
    effects = [rng.uniform(0, 0.05) for _ in range(n_configs)]
    table = [[0.95 + e if f in hard else 1.0 for f in range(n_folds)] for e in effects]
    winner = max(range(n_configs), key=lambda c: cv_mean(table[c]))
    ordered, unordered = (Replay(FoldScheduler(n_folds, racing=rule, max_configs=n_configs), table, slots=2,
                                 pending=1).run() for rule in (Paired(), UnorderedPaired()))
    assert ordered.scheduler.best() == unordered.scheduler.best() == winner
    assert ordered.n_started <= unordered.n_started
    if 0 not in hard:  # in index order, configurations tie on fold 0 before they show anything
        assert ordered.n_started < unordered.n_started


# -- fold order kept incrementally: the same order as the sums in configuration order ------------


def reference_fold_order(s):
    """fold_order as first written: every configuration's trails summed again, in configuration order."""
    order = list(range(s.cv_folds))
    best = s.configs.get(s.incumbent)
    if best is None or not getattr(s.racing, "pairs_folds", False):
        return order
    trail = [0.0] * s.cv_folds
    count = [0] * s.cv_folds
    for c in s.configs.values():
        if c is best:
            continue
        for fold, score in c.scores.items():
            trail[fold] += s._o(best.scores[fold]) - s._o(score)
            count[fold] += 1
    return sorted(order, key=lambda f: -(trail[f] / count[f]) if count[f] else 0.0)


class ReferenceScheduler(FoldScheduler):
    """The scheduler with its decisions computed as first written, scanning every configuration."""

    def fold_order(self):
        return reference_fold_order(self)

    def _near_model(self):
        if self.slots is not None and self.n_running < self.slots:
            config_id = self._freed
        else:
            running = [(seq, c.config_id) for c in self.configs.values() for seq in c.started.values()]
            config_id = min(running)[1] if running else None
        c = self.configs.get(config_id) if config_id is not None else None
        if c is None or c.status != "running" or not c.todo or self._should_stop(c) or not self._competitive(c):
            return None
        if self.racing is not None and self.incumbent is None:
            return None
        return c

    def next(self):
        self._swept = False  # every DONE scans the configurations
        return super().next()


def random_replay(cls, seed, check=None):
    """Drive a ``cls`` scheduler with random scores, finish order, failures, retries, repeated scores,
    pickles and an early close; ``check(s)`` after every event. Returns everything it decided."""
    rng = random.Random(seed)
    n_folds = rng.randint(1, 6)
    racing = rng.choice([Paired(), Paired(tolerance=rng.choice([0.0, 0.02, 0.2, 1.0])), TTest(), Forgiving(),
                         UnorderedPaired(), None])
    s = cls(n_folds, mode=rng.choice(["max", "min"]), racing=racing, max_configs=rng.randint(1, 60),
            max_fold_trainings=rng.choice([None, rng.randint(0, 200)]), explore=rng.choice([None, 1, 3]),
            slots=rng.choice([None, 1, 2, 4]))
    # discrete scores make trails tie exactly, or up to the last bits (0.1 + 0.2 != 0.3)
    values = rng.choice([None, [0.5, 0.75, 1.0], [0.1, 0.2, 0.3, 0.7], [k / 7 for k in range(8)], [1.0, 1 - 1e-16]])
    width, running, log = rng.randint(1, 6), [], []
    for _ in range(600):
        while len(running) < width:
            answer = s.next()
            if answer == NEW:
                answer = s.add_config(len(s.configs))
            log.append(answer)
            if not isinstance(answer, Run):
                break
            running.append(answer)
        event = rng.random()
        if event < 0.02:
            failed = [c for c, st in s.configs.items() if st.status == "failed"]
            if failed:
                s.retry(rng.choice(failed))
        elif event < 0.04:  # a fold's score reported again, the incumbent's too
            scored = [(c, f) for c, st in s.configs.items() for f in st.scores]
            if scored:
                c, f = rng.choice(scored)
                s.finish(c, f, rng.random())
        elif running:
            run = running.pop(rng.randrange(len(running)))
            if event < 0.07:
                s.fail(*run, "worker died")
            else:
                score = math.nan if event < 0.09 else rng.choice(values) if values else rng.random()
                s.finish(*run, score)
        elif log[-1] == DONE:
            break
        if rng.random() < 0.01:
            s.close()
        if rng.random() < 0.03:
            s = pickle.loads(pickle.dumps(s))
        if check is not None:
            check(s)
        log.append(s.fold_order())
    log.append([(c, st.status, st.scores, st.skipped) for c, st in s.configs.items()])
    log.append((s.best(), s.n_started, [(e, c, None if math.isnan(m) else m) for e, c, m in s.pop_events()]))
    return log


@pytest.mark.parametrize("seed", range(120))
def test_incremental_fold_order_is_the_order_of_the_sums_in_configuration_order(seed):
    checked = []

    def check(s):
        assert s.fold_order() == reference_fold_order(s)
        checked.append(s.incumbent is not None)

    random_replay(FoldScheduler, seed, check)
    assert checked


@pytest.mark.parametrize("seed", range(120))
def test_scheduler_decides_as_the_scheduler_that_scans_every_configuration(seed):
    assert random_replay(FoldScheduler, seed) == random_replay(ReferenceScheduler, seed)


def test_fold_order_ties_up_to_the_last_bits_break_as_the_sums_in_configuration_order():
    # trails 0.1, 0.2, 0.3 on fold 0 and 0.3, 0.2, 0.1 on fold 1 (configurations 1, 2, 3), arriving in the
    # other order: summed as they arrive, fold 1's sum is the larger; in configuration order, fold 0's
    assert (0.1 + 0.2) + 0.3 > (0.3 + 0.2) + 0.1
    s = FoldScheduler(2, mode="min", racing=Paired(tolerance=1.0), explore=1, max_configs=4)
    complete_incumbent(s, [0.0, 0.0])
    assert s.fold_order() == [0, 1]
    for c in (1, 2, 3):
        assert s.next() == NEW and s.add_config(c) == Run(c, 0)
    for c, score in ((3, 0.3), (2, 0.2), (1, 0.1)):
        s.finish(c, 0, score)
    assert [s.next() for _ in range(3)] == [Run(1, 1), Run(2, 1), Run(3, 1)]
    for c, score in ((3, 0.1), (2, 0.2), (1, 0.3)):
        s.finish(c, 1, score)
    assert reference_fold_order(s) == s.fold_order() == [0, 1]


@pytest.mark.parametrize("seed", range(6))
def test_a_scheduler_pickled_before_incremental_fold_order_loads_and_orders_folds_the_same(seed):
    table = noisy_table(seed, 30, 4, sd=0.03)

    def sim():
        return Sim(FoldScheduler(4, racing=Paired(tolerance=0.02), max_configs=30, slots=2), table, slots=2)

    original = sim()
    for _ in range(len(sim().run().finished) // 2):
        assert original.step()
    assert original.s.best() is not None and original.s.n_running
    original.s.fold_order()
    old = pickle.loads(pickle.dumps(original.s))
    for name in ("_running", "_trails", "_swept"):  # what an older glimr_cv pickled
        delattr(old, name)
    assert not {"_running", "_trails", "_swept"} & set(original.s.__getstate__())  # derived: never pickled
    loaded = pickle.loads(pickle.dumps(old))
    assert loaded.fold_order() == reference_fold_order(loaded) == original.s.fold_order()
    near = [getattr(s._near_model(), "config_id", None) for s in (loaded, original.s)]
    assert near[0] == near[1]
    resumed = Sim(loaded, table, slots=2)
    resumed.running = collections.deque(original.running)
    before = len(original.decisions)
    original.run()
    resumed.run()
    assert resumed.decisions == original.decisions[before:]
    assert {c: st.status for c, st in loaded.configs.items()} == {c: st.status for c, st in original.s.configs.items()}
