"""Replay: the fold scheduler driven by simulated workers (no Ray, no Keras)."""

import math
import random

import pytest

from glimr_cv import FoldScheduler, Forgiving, Paired, PairedCurve
from glimr_cv.engine.racing import EpochRule
from glimr_cv.engine.replay import Replay
from glimr_cv.engine.scheduler import DONE, NEW, WAIT, Run


def exhaustive(n_folds, n_configs, **kwargs):
    return FoldScheduler(n_folds, racing=None, max_configs=n_configs, **kwargs)


def test_every_fold_of_every_config_runs_once_and_the_result_is_summarised():
    table = [[0.5, 0.6], [0.9, 0.8], [0.7, 0.7]]
    replay = Replay(exhaustive(2, 3), table, slots=2).run()
    assert sorted(replay.dispatched) == [Run(c, f) for c in range(3) for f in range(2)]
    assert replay.decisions[-1] == DONE
    assert replay.n_started == 6 and replay.fold_trainings_saved == 0
    assert replay.summary() == {"fold_trainings": 6, "fold_trainings_saved": 0, "epoch_trainings": None,
                                "best_config_id": 1, "statuses": {"complete": 3}, "seconds": 3.0}


def test_decisions_record_new_then_the_run_add_config_gave():
    replay = Replay(exhaustive(2, 1), [[0.5, 0.5]], slots=1).run()
    assert replay.decisions == [NEW, Run(0, 0), Run(0, 1), DONE]
    assert replay.finished == [(0, 0, 0.5), (0, 1, 0.5)]


@pytest.mark.parametrize("slots", [1, 2, 3])
def test_slots_bound_the_folds_running_at_once(slots):
    replay = Replay(exhaustive(3, 4), [[0.5] * 3] * 4, slots=slots)
    while replay.fill() != DONE:
        assert len(replay.running) <= slots and not replay.pending
        assert replay.scheduler.n_running == len(replay.running)
        replay.finish_one()
    assert replay.now == math.ceil(12 / slots)  # equal folds: full slots all the way


def test_pending_folds_are_handed_out_before_the_running_ones_end():
    replay = Replay(exhaustive(3, 2), [[0.5] * 3] * 2, slots=2, pending=1)
    replay.fill()
    assert list(replay.running) == [Run(0, 0), Run(0, 1)]
    assert list(replay.pending) == [Run(0, 2)]
    assert replay.scheduler.n_running == 3  # the scheduler counts a pending fold as started
    replay.finish_one()
    assert replay.finished == [(0, 0, 0.5)]
    replay.fill()  # the pending fold takes the free slot, a new one is handed out
    assert list(replay.running) == [Run(0, 1), Run(0, 2)]
    assert list(replay.pending) == [Run(1, 0)]


def test_a_pending_fold_is_chosen_before_the_running_scores_are_known():
    # config 1 matches the incumbent (0.9) on its first fold, so it is completed next;
    # with one fold pending, config 2 was already handed out before that score came
    table = [[0.9] * 3, [0.9] * 3, [0.5] * 3]

    def racing():
        return FoldScheduler(3, racing=Forgiving(), max_configs=3, explore=1)

    no_pending = Replay(racing(), table, slots=1).run()
    with_pending = Replay(racing(), table, slots=1, pending=1).run()
    assert no_pending.dispatched[3:6] == [Run(1, 0), Run(1, 1), Run(1, 2)]
    assert with_pending.dispatched[3:5] == [Run(1, 0), Run(2, 0)]
    assert no_pending.scheduler.configs[2].status == with_pending.scheduler.configs[2].status == "pruned"


def test_folds_end_in_the_order_of_their_durations():
    seconds = {(0, 0): 5.0, (0, 1): 1.0, (0, 2): 2.0}
    replay = Replay(exhaustive(3, 1), {(0, f): 0.5 for f in range(3)}, slots=3, seconds=seconds).run()
    assert [(c, f) for c, f, _ in replay.finished] == [(0, 1), (0, 2), (0, 0)]
    assert replay.now == 5.0


def test_a_freed_slot_starts_its_next_fold_at_the_end_time_of_the_last():
    seconds = lambda c, f: {0: 3.0, 1: 1.0}.get(f, 1.0)  # noqa: E731
    replay = Replay(exhaustive(3, 1), [[0.5] * 3], slots=2, seconds=seconds).run()
    # fold 1 ends at 1, fold 2 starts then and ends at 2, before fold 0 (3)
    assert [f for _, f, _ in replay.finished] == [1, 2, 0]
    assert replay.now == 3.0


def test_equal_durations_end_oldest_first():
    replay = Replay(exhaustive(4, 3), lambda c, f: 0.5, slots=3).run()
    assert [(c, f) for c, f, _ in replay.finished] == list(replay.dispatched)


def test_missing_duration_counts_as_one_second():
    replay = Replay(exhaustive(2, 1), [[0.5, 0.5]], slots=2, seconds={(0, 0): 3.0}).run()
    assert [f for _, f, _ in replay.finished] == [1, 0]


@pytest.mark.parametrize("score", [
    {(0, 0): 0.5},  # mapping without (0, 1)
    [[0.5]],  # table row too short
    lambda c, f: 0.5 if f == 0 else None,  # callable saying None
])
def test_a_missing_or_none_score_fails_the_fold(score):
    replay = Replay(exhaustive(2, 1), score, slots=1).run()
    st = replay.scheduler.configs[0]
    assert st.status == "failed" and "no score" in st.error
    assert replay.finished == [(0, 0, 0.5), (0, 1, None)]
    assert replay.scheduler.best() is None


def test_a_non_finite_score_goes_to_the_scheduler_which_fails_the_config():
    replay = Replay(exhaustive(2, 1), [[0.5, math.nan]], slots=1).run()
    assert replay.scheduler.configs[0].status == "failed"
    assert "non-finite" in replay.scheduler.configs[0].error
    assert replay.finished[-1][2] != replay.finished[-1][2]  # NaN recorded as given


def test_new_params_registers_the_configurations_parameters():
    class Named(Replay):
        def new_params(self, config_id):
            return {"name": f"c{config_id}"}

    replay = Named(exhaustive(1, 3), [[0.5]] * 3, slots=2).run()
    assert [c.params for c in replay.scheduler.configs.values()] == [{"name": "c0"}, {"name": "c1"}, {"name": "c2"}]
    assert Replay(exhaustive(1, 1), [[0.5]]).run().scheduler.configs[0].params is None


def test_done_stops_the_replay():
    replay = Replay(exhaustive(2, 2), [[0.5, 0.5]] * 2, slots=2)
    steps = 0
    while replay.step():
        steps += 1
    assert steps == 4
    assert replay.decisions[-1] == DONE and not replay.running and not replay.pending
    assert replay.step() is False  # still DONE


def test_done_while_a_fold_is_running_raises():
    replay = Replay(exhaustive(2, 0), [[0.5, 0.5]], slots=2)  # max_configs=0: DONE at once
    replay.running.append(Run(7, 0))  # a fold this scheduler never handed out
    with pytest.raises(RuntimeError, match="DONE while 1 fold"):
        replay.run()


def test_wait_with_nothing_running_raises():
    s = FoldScheduler(2, racing=None, max_configs=1)
    assert s.next() == NEW and s.add_config(None) == Run(0, 0)  # handed out outside the replay
    replay = Replay(s, [[0.5, 0.5]], slots=1)
    replay.fill()  # fold 1 runs; fold 0 is still out there
    replay.finish_one()
    assert replay.fill() == WAIT
    with pytest.raises(RuntimeError, match="WAIT with nothing running"):
        replay.step()


def test_folds_handed_out_before_the_replay_can_be_put_in_by_hand():
    s = FoldScheduler(3, racing=None, max_configs=1)
    assert s.next() == NEW and s.add_config(None) == Run(0, 0)
    replay = Replay(s, [[0.5] * 3], slots=2)
    replay.running.append(Run(0, 0))
    replay.run()
    assert replay.dispatched == [Run(0, 1), Run(0, 2)]
    assert [f for _, f, _ in replay.finished] == [0, 1, 2]
    assert s.configs[0].status == "complete"


def test_never_done_raises_after_max_steps():
    replay = Replay(exhaustive(5, 10), [[0.5] * 5] * 10, slots=1)
    with pytest.raises(RuntimeError, match="never said DONE in 3 steps"):
        replay.run(max_steps=3)


@pytest.mark.parametrize("kwargs, message", [
    ({"slots": 0}, "slots: expected an int >= 1"),
    ({"pending": -1}, "pending: expected an int >= 0"),
    ({"seconds": 3.0}, "seconds: expected a callable"),
])
def test_bad_arguments_are_rejected(kwargs, message):
    with pytest.raises((ValueError, TypeError), match=message):
        Replay(exhaustive(2, 1), [[0.5, 0.5]], **kwargs)


def test_bad_score_source_is_rejected():
    with pytest.raises(TypeError, match="score: expected a callable"):
        Replay(exhaustive(2, 1), 0.5)


# -- learning curves and fold stopping ---------------------------------------------------


class StopAfter(EpochRule):
    """Stops every fold with a reference after ``epochs_run`` epochs; records what it saw."""

    def __init__(self, epochs_run):
        self.epochs_run = epochs_run
        self.seen = []

    def should_stop(self, curve, reference, epochs):
        self.seen.append((list(curve), list(reference), epochs))
        return len(curve) >= self.epochs_run


def test_curves_reach_the_scheduler_and_count_epochs():
    curves = [[[0.25, 0.5], [0.5, 0.75, 0.625]], [[0.5, 0.875], [0.25, 0.75, 0.75]]]
    replay = Replay(exhaustive(2, 2), [[0.5, 0.75], [0.875, 0.75]], slots=1, curves=curves).run()
    s = replay.scheduler
    assert s.best() == 1 and s.reference(0) == [0.5, 0.875] and s.reference(1) == [0.25, 0.75, 0.75]
    assert replay.epoch_trainings == 10 and replay.summary()["epoch_trainings"] == 10
    assert replay.now == 4.0  # without a rule, durations are unchanged
    assert all(not st.stopped_early for st in s.configs.values())


def test_a_stopped_fold_reports_its_best_so_far_truncated_curve_and_a_shorter_duration():
    # config 0 is the incumbent; config 1's folds are stopped after 2 of 4 epochs
    curves = {(0, 0): [0.5, 0.75, 0.875, 0.875], (1, 0): [0.25, 0.5, 0.75, 0.25]}
    rule = StopAfter(2)
    replay = Replay(exhaustive(1, 2), None, slots=1, seconds=lambda c, f: 8.0, curves=curves, epoch_rule=rule).run()
    s = replay.scheduler
    assert replay.finished == [(0, 0, 0.875), (1, 0, 0.5)]
    assert s.configs[1].stopped_early == {0} and not s.configs[0].stopped_early
    assert replay.now == 8.0 + 4.0  # 8 seconds * 2 / 4 epochs
    assert replay.epoch_trainings == 4 + 2
    assert rule.seen == [([0.25], [0.5, 0.75, 0.875, 0.875], 4), ([0.25, 0.5], [0.5, 0.75, 0.875, 0.875], 4)]
    assert s.best() == 0


def test_the_rule_sees_oriented_values_and_the_score_is_the_best_by_mode():
    curves = {(0, 0): [0.5, 0.25, 0.125], (1, 0): [0.75, 0.5, 0.625]}  # losses: lower is better
    rule = StopAfter(2)
    s = FoldScheduler(1, mode="min", racing=None, max_configs=2)
    replay = Replay(s, None, slots=1, curves=curves, epoch_rule=rule).run()
    assert rule.seen == [([-0.75], [-0.5, -0.25, -0.125], 3), ([-0.75, -0.5], [-0.5, -0.25, -0.125], 3)]
    assert replay.finished == [(0, 0, 0.125), (1, 0, 0.5)]  # min of [0.75, 0.5]
    assert s.configs[1].curves == {} and s.reference(0) == [0.5, 0.25, 0.125]


def test_the_reference_is_taken_when_a_fold_is_handed_out():
    # with a pending place, config 1's fold is handed out before config 0 is complete: no
    # reference, so it runs every epoch even though the rule would stop it
    curves = {(c, 0): [0.5, 0.5, 0.5] for c in range(3)}
    rule = StopAfter(1)
    replay = Replay(exhaustive(1, 3), None, slots=1, pending=1, curves=curves, epoch_rule=rule).run()
    stopped = {c for c, st in replay.scheduler.configs.items() if st.stopped_early}
    assert stopped == {2}
    assert replay.epoch_trainings == 3 + 3 + 1


def test_without_a_reference_or_a_curve_a_fold_runs_as_without_a_rule():
    rule = StopAfter(1)
    curves = {(0, 0): [0.5, 0.5]}  # config 1 has no curve
    replay = Replay(exhaustive(1, 2), [[0.5], [0.25]], slots=1, curves=curves, epoch_rule=rule).run()
    assert replay.finished == [(0, 0, 0.5), (1, 0, 0.25)]
    assert rule.seen == [] and replay.epoch_trainings == 2  # a fold without a curve adds no epochs
    assert replay.now == 2.0


def test_with_curves_and_no_score_a_fold_without_a_curve_fails():
    replay = Replay(exhaustive(1, 2), None, slots=1, curves={(0, 0): [0.25, 0.5]}).run()
    assert replay.finished == [(0, 0, 0.5), (1, 0, None)]
    assert replay.scheduler.configs[1].status == "failed"


def test_a_fold_without_a_score_fails_even_when_the_rule_would_stop_it():
    curves = {(0, 0): [0.5, 0.5], (1, 0): [0.25, 0.25]}
    replay = Replay(exhaustive(1, 2), {(0, 0): 0.5}, slots=1, curves=curves, epoch_rule=StopAfter(1)).run()
    assert replay.finished == [(0, 0, 0.5), (1, 0, None)]
    assert replay.scheduler.configs[1].status == "failed" and replay.epoch_trainings == 4


def test_an_all_nan_stopped_curve_fails_the_fold():
    curves = {(0, 0): [0.5, 0.5], (1, 0): [math.nan, 0.75]}
    replay = Replay(exhaustive(1, 2), None, slots=1, curves=curves, epoch_rule=StopAfter(1)).run()
    assert replay.finished[-1][:2] == (1, 0) and math.isnan(replay.finished[-1][2])
    assert replay.scheduler.configs[1].status == "failed"


def test_a_fold_put_in_by_hand_takes_its_reference_when_first_looked_at():
    s = FoldScheduler(1, racing=None, max_configs=2)
    assert s.next() == NEW and s.add_config(None) == Run(0, 0)
    s.finish(0, 0, 0.5, curve=[0.5, 0.5])
    assert s.next() == NEW and s.add_config(None) == Run(1, 0)
    replay = Replay(s, None, slots=1, curves={(1, 0): [0.25, 0.25]}, epoch_rule=StopAfter(1))
    replay.running.append(Run(1, 0))
    replay.run()
    assert replay.finished == [(1, 0, 0.25)] and s.configs[1].stopped_early == {0}


@pytest.mark.parametrize("kwargs, error, message", [
    ({"epoch_rule": PairedCurve()}, ValueError,
     r"^epoch_rule: expected None without curves \(the rule stops folds by their curves\), but got PairedCurve\("),
    ({"curves": {}, "epoch_rule": "paired_curve"}, TypeError, r"^epoch_rule: expected an EpochRule or None, but got str$"),
    ({"curves": 3}, TypeError, r"^curves: expected a callable"),
])
def test_bad_curve_arguments_are_rejected(kwargs, error, message):
    with pytest.raises(error, match=message):
        Replay(exhaustive(1, 1), [[0.5]], **kwargs)


def learning_curves(seed, n_configs=20, n_folds=5, epochs=20):
    """Saturating learning curves: the plateau is a fold difficulty shared by every
    configuration (one fold 0.15 harder) plus a configuration effect; rates and noise vary."""
    rng = random.Random(seed)
    folds = [rng.gauss(0, 0.03) for _ in range(n_folds)]
    folds[rng.randrange(n_folds)] -= 0.15
    effects = [rng.uniform(0, 0.1) for _ in range(n_configs)]
    rates = [rng.uniform(0.2, 0.6) for _ in range(n_configs)]
    return {(c, f): [0.8 + effects[c] + folds[f] - 0.6 * math.exp(-rates[c] * e) + rng.gauss(0, 0.002)
                     for e in range(1, epochs + 1)]
            for c in range(n_configs) for f in range(n_folds)}


class Recorded(PairedCurve):
    """PairedCurve that records the curve and reference of every fold it stops."""

    def __init__(self):
        super().__init__()
        object.__setattr__(self, "stops", [])

    def should_stop(self, curve, reference, epochs):
        stop = super().should_stop(curve, reference, epochs)
        if stop:
            self.stops.append((list(curve), list(reference)))
        return stop


@pytest.mark.parametrize("seed", range(10))
def test_fold_stopping_saves_epochs_and_every_stopped_fold_trails_its_reference(seed):
    curves = learning_curves(seed)
    plain = Replay(FoldScheduler(5, racing=Paired(), max_configs=20), None, slots=2, curves=curves).run()
    rule = Recorded()
    stopping = Replay(FoldScheduler(5, racing=Paired(), max_configs=20), None, slots=2, curves=curves,
                      epoch_rule=rule).run()
    assert stopping.epoch_trainings < plain.epoch_trainings and stopping.now < plain.now
    stopped = [(c, f) for c, st in stopping.scheduler.configs.items() for f in st.stopped_early]
    assert len(stopped) == len(rule.stops) > 0
    for curve, reference in rule.stops:  # its score is more than tolerance below the incumbent's on that fold
        assert max(reference) - max(curve) > rule.tolerance
    for c, f, score in stopping.finished:  # a stopped fold scores its best epoch before the stop
        if (c, f) in stopped:
            assert any(score == max(curves[c, f][:e]) for e in range(1, len(curves[c, f])))


def test_a_fold_waiting_when_its_configuration_fails_is_cancelled_not_started():
    scheduler = FoldScheduler(2, racing=None, max_configs=2)
    replay = Replay(scheduler, [[None, None], [0.8, 0.9]], slots=1, pending=1).run()  # configuration 0 fails
    assert replay.cancelled == [Run(0, 1)]  # handed out while fold 0 trained, and never started
    assert [(c, f) for c, f, _ in replay.finished] == [(0, 0), (1, 0), (1, 1)]
    assert replay.n_started == 3 and scheduler.configs[0].status == "failed" and scheduler.best() == 1
