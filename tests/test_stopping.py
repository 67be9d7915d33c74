"""Folds that stop early (Tune schedulers, stoppers, the fold-stopping rule), fail-fast, and resuming a fold."""

import os
import subprocess
import sys
import textwrap
from types import SimpleNamespace

import pandas as pd
import pytest

import e2e_helpers as h
from glimr_cv.engine import stopping
from glimr_cv.engine.scheduler import FoldScheduler, Run
from glimr_cv.engine.searcher import CVSearcher
from glimr_cv.engine.stopping import FoldStops, as_stopper, check_scheduler
from glimr_cv.schema import STATUS, TRIAL_DIR


# -- pure: which schedulers, what stoppers ---------------------------------------------------------------
def test_schedulers_that_pause_or_mutate_trials_are_refused_with_the_reason():
    from ray.tune.schedulers import ASHAScheduler, HyperBandScheduler, MedianStoppingRule, PopulationBasedTraining

    assert check_scheduler(None) is None
    asha = ASHAScheduler()
    assert check_scheduler(asha) is asha and check_scheduler(MedianStoppingRule()) is not None
    with pytest.raises(ValueError, match=r"scheduler: expected a scheduler that only stops trials .* but got "
                                         r"PopulationBasedTraining: it changes a trial's configuration mid-training"):
        check_scheduler(PopulationBasedTraining(hyperparam_mutations={"lr": [0.1, 0.01]}))
    with pytest.raises(ValueError, match="but got HyperBandScheduler: it pauses and resumes trials"):
        check_scheduler(HyperBandScheduler())
    with pytest.raises(TypeError, match="scheduler: expected a ray.tune TrialScheduler .* but got 'asha'"):
        check_scheduler("asha")


def test_dict_criteria_stop_when_any_reported_value_reaches_its_bound():
    stop = as_stopper({"epoch": 3, "acc": 0.9}, ["epoch", "acc"])
    assert not stop("t", {"epoch": 2, "acc": 0.5})
    assert stop("t", {"epoch": 3, "acc": 0.5}) and stop("t", {"epoch": 1, "acc": 0.95})
    assert stop.stop_all() is False
    with pytest.raises(ValueError, match=r"stopper\['val_acc'\]: expected a reported name, one of \['acc', 'epoch'\], "
                                         r"but got 'val_acc'"):
        as_stopper({"val_acc": 0.9}, ["epoch", "acc"])
    with pytest.raises(TypeError, match=r"stopper\['epoch'\]: expected a number, but got '3'"):
        as_stopper({"epoch": "3"}, ["epoch"])
    with pytest.raises(TypeError, match="stopper: expected a ray.tune.Stopper, a callable"):
        as_stopper(5)


class _Controller:
    """Tune's controller as a scheduler sees it: the live trials, and ending one."""

    def __init__(self, trials):
        self.trials = trials
        self.stopped = []

    def get_live_trials(self):
        return self.trials  # Tune's own set, which stop_trial changes

    def stop_trial(self, trial):
        self.stopped.append(trial.trial_id)
        self.trials.remove(trial)


def _trial(trial_id, status="RUNNING"):
    return SimpleNamespace(trial_id=trial_id, status=status)


def _posted(monkeypatch):
    posted = {}
    monkeypatch.setattr(stopping, "request_stop", lambda trial_id, reason: posted.__setitem__(trial_id, reason))
    return posted


def test_a_stop_becomes_a_request_to_the_fold_and_tune_is_told_to_continue(monkeypatch):
    from ray.tune.schedulers import TrialScheduler

    posted = _posted(monkeypatch)
    wrapper = FoldStops(stopper=lambda trial_id, result: result["epoch"] >= 2, mode="max")
    wrapper.set_search_properties(None, None)
    t1, t2 = _trial("a"), _trial("b")
    controller = _Controller([t1, t2])
    assert wrapper.on_trial_result(controller, t1, {"epoch": 1, "fold_score": 0.5}) == TrialScheduler.CONTINUE
    assert posted == {}
    assert wrapper.on_trial_result(controller, t1, {"epoch": 2, "fold_score": 0.5}) == TrialScheduler.CONTINUE
    assert posted == {"a": "stopper"}
    # a fold's final report is never judged: it is ending anyway
    assert wrapper.on_trial_result(controller, t2, {"epoch": 9, "fold_status": "complete"}) == TrialScheduler.CONTINUE
    assert "b" not in posted


def test_stop_all_asks_every_running_fold_and_the_searcher_once_and_ends_waiting_folds_unstarted(monkeypatch):
    from ray.tune import Stopper

    posted = _posted(monkeypatch)
    calls = []

    class AfterTwo(Stopper):
        def __init__(self):
            self.seen = 0

        def __call__(self, trial_id, result):
            self.seen += 1
            return False

        def stop_all(self):
            return self.seen >= 2

    wrapper = FoldStops(stopper=AfterTwo(), mode="max", on_stop_all=lambda: calls.append("stop_all"),
                        on_cancel=lambda trial_id: calls.append(f"cancel {trial_id}"))
    trials = [_trial("a"), _trial("b"), _trial("c"), _trial("waiting", "PENDING")]
    controller = _Controller(list(trials))
    wrapper.on_trial_result(controller, trials[0], {"epoch": 1, "fold_score": 0.1})
    assert posted == {} and calls == [] and controller.stopped == []
    wrapper.on_trial_result(controller, trials[1], {"epoch": 1, "fold_score": 0.1})
    wrapper.on_trial_result(controller, trials[2], {"epoch": 1, "fold_score": 0.1})
    # the searcher first starts nothing more, then learns of the waiting fold before Tune ends it
    assert posted == {"a": "stopper", "b": "stopper", "c": "stopper"}
    assert calls == ["stop_all", "cancel waiting"] and controller.stopped == ["waiting"]


def test_before_tune_starts_a_waiting_fold_the_waiting_folds_that_need_not_train_end_unstarted(monkeypatch):
    def fifo(controller):  # Tune's FIFO choice: the first trial still waiting
        return next((t for t in controller.get_live_trials() if t.status == "PENDING"), None)

    posted = _posted(monkeypatch)
    calls, moot = [], set()
    wrapper = FoldStops(mode="max", on_cancel=calls.append, moot=lambda trial_id: trial_id in moot)
    wrapper.scheduler.choose_trial_to_run = fifo
    trials = [_trial("a"), _trial("of_failed", "PENDING"), _trial("b", "PENDING")]
    controller = _Controller(list(trials))
    assert wrapper.choose_trial_to_run(controller) is trials[1] and calls == [] == controller.stopped
    moot.update({"of_failed", "a"})  # the running "a" is past saving: only waiting folds are ended
    assert wrapper.choose_trial_to_run(controller) is trials[2]
    assert calls == ["of_failed"] == controller.stopped and controller.trials == [trials[0], trials[2]]
    assert posted == {}  # nothing was asked of a running fold
    old = FoldStops(mode="max")  # as Tune unpickles one made before moot existed: it ends nothing
    del old.moot
    old.scheduler.choose_trial_to_run = fifo
    controller = _Controller([trials[2]])
    assert old.choose_trial_to_run(controller) is trials[2] and controller.stopped == []


FAILED = {STATUS: "failed", "error": "ValueError: boom", "error_type": "ValueError"}  # a fold's final report


def _searcher(scheduler, fail_fast):
    """A searcher of the digits space over ``scheduler``, without Ray."""
    from glimr_cv import validate_space

    return CVSearcher(validate_space(h.space()), scheduler, "digit_accuracy", "max", fail_fast=fail_fast)


def test_a_waiting_fold_is_moot_once_its_configuration_failed_or_the_search_halted_and_the_budget_stays_right():
    scheduler = FoldScheduler(2, racing=None, max_fold_trainings=10, slots=1)
    searcher = _searcher(scheduler, fail_fast=2)
    searcher.suggest("a"), searcher.suggest("b")  # configuration 0's folds: "b" waits for the one slot
    assert not searcher.moot("b") and not searcher.moot("unknown")
    searcher.on_trial_complete("a", FAILED)
    assert scheduler.configs[0].status == "failed" and searcher.moot("b")
    searcher.cancel("b")  # Tune ends it unstarted: the budget gets the fold training back
    assert scheduler.n_started == 1 and scheduler.max_fold_trainings == 10 and scheduler.configs[0].todo == []
    searcher.suggest("c"), searcher.suggest("d")
    searcher.on_trial_complete("c", FAILED)  # the second first fold with that error: the search halts
    assert searcher.halted and searcher.moot("d")
    searcher.cancel("d")  # a halted search's budget is the folds started, and stays so
    assert scheduler.n_started == scheduler.max_fold_trainings == 2 and searcher.suggest("e") == "FINISHED"
    assert searcher.cancelled == [TRIAL_DIR.format(config_id=0, fold=1, trial_id="b"),
                                  TRIAL_DIR.format(config_id=1, fold=1, trial_id="d")]
    assert searcher.reopen() == [0, 1] and scheduler.max_fold_trainings == 10 and not scheduler.frozen


def test_a_configuration_whose_first_fold_waited_at_the_halt_is_trained_when_the_search_resumes():
    scheduler = FoldScheduler(1, racing=None, slots=1)
    searcher = _searcher(scheduler, fail_fast=1)
    searcher.suggest("a"), searcher.suggest("b")  # the first folds of configurations 0 and 1; "b" waits
    searcher.on_trial_complete("a", FAILED)  # halts: fail_fast=1
    assert searcher.moot("b")
    searcher.cancel("b")
    assert searcher.suggest("c") == "FINISHED"  # the halted run ends, and configuration 1 with it
    assert [c.status for c in scheduler.configs.values()] == ["failed", "incomplete"]
    assert searcher.reopen() == [0, 1]  # resumed: both are tried again, not only the one that failed
    assert [c.status for c in scheduler.configs.values()] == ["running", "running"]
    assert {scheduler.next(), scheduler.next()} == {Run(0, 0), Run(1, 0)}


def test_a_tune_scheduler_without_a_metric_follows_the_fold_score_and_its_stop_is_posted(monkeypatch):
    from ray.tune.schedulers import MedianStoppingRule, TrialScheduler

    posted = _posted(monkeypatch)
    inner = MedianStoppingRule()
    inner.on_trial_result = lambda controller, trial, result: TrialScheduler.STOP
    wrapper = FoldStops(inner, mode="min")
    wrapper.set_search_properties(None, None)
    assert inner.metric == "fold_score" and inner._mode == "min"
    assert wrapper.metric == "fold_score"  # Tune checks every result for it, failed folds' too
    trial = _trial("x")
    assert wrapper.on_trial_result(_Controller([trial]), trial, {"fold_score": 1.0}) == TrialScheduler.CONTINUE
    assert posted == {"x": "scheduler"}


# -- end to end ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ray_session(ray_local):
    from ray import cloudpickle

    cloudpickle.register_pickle_by_value(h)
    yield ray_local


def _check_stopped_folds(results, reason):
    folds = results.folds
    stopped = folds[folds["stopped_early"].eq(True)]
    assert len(stopped), "no fold stopped early"
    assert set(stopped["stopped_by"]) == {reason}
    assert set(stopped["status"]) == {"complete"}
    for row in stopped.itertuples():
        assert row.epochs < 5
        assert os.path.exists(os.path.join(row.checkpoint_path, "model.weights.h5"))
        assert row.score == pytest.approx(row.digit_accuracy) and 1 <= row.best_epoch <= row.epochs
    # every split is in the table: a stopped fold is a finished fold
    assert (results.table["folds_done"] == results.cv_folds).all()
    assert results.folds_stopped_early == len(stopped)
    assert results.epoch_trainings == int(folds["epochs"].sum()) < 5 * len(folds)
    return stopped


@pytest.mark.slow
def test_each_driver_on_a_cluster_has_a_stop_board_of_its_own_that_outlives_the_others(ray_session):
    import ray

    from glimr_cv.engine.stopping import request_stop, stop_requested

    request_stop("mine", "scheduler")
    other_driver = textwrap.dedent(f"""
        import ray
        from glimr_cv.engine.stopping import request_stop, stop_requested
        ray.init(address={ray.get_runtime_context().gcs_address!r}, configure_logging=False)
        assert stop_requested("mine") is None, "another driver's stop"
        request_stop("theirs", "stopper")
        print(stop_requested("theirs"))
    """)
    done = subprocess.run([sys.executable, "-c", other_driver], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.splitlines()[-1] == "stopper", done.stderr[-2000:]
    # the other driver's search has ended, and its board with it: this driver's board still works, with its own
    assert stop_requested("theirs") is None and stop_requested("mine") == "scheduler"
    request_stop("mine, later", "stopper")
    assert stop_requested("mine, later") == "stopper"


@pytest.mark.slow
def test_folds_stopped_by_asha_end_scored_checkpointed_and_marked(ray_session, tmp_path):
    from ray.tune.schedulers import ASHAScheduler

    from glimr_cv import Search, load_results

    search = Search(h.space(epochs=5), h.digits_builder, h.digits_loader, cv_folds=2, racing=None, seed=1)
    results = search.experiment(str(tmp_path), name="asha", num_samples=3, check=False,
                                scheduler=ASHAScheduler(max_t=5, grace_period=1, reduction_factor=3))
    _check_stopped_folds(results, "scheduler")
    again = load_results(str(tmp_path), "asha")  # from the folder alone
    pd.testing.assert_frame_equal(again.table, results.table)
    assert again.folds_stopped_early == results.folds_stopped_early


@pytest.mark.slow
def test_a_stoppers_stop_all_ends_running_folds_gracefully_and_starts_nothing(ray_session, tmp_path):
    from ray.tune import Stopper

    from glimr_cv import Search, load_results

    class Enough(Stopper):
        def __init__(self):
            self.results = 0

        def __call__(self, trial_id, result):
            self.results += 1
            return False

        def stop_all(self):
            return self.results >= 3

    search = Search(h.space(epochs=5), h.digits_builder, h.digits_loader, cv_folds=2, racing=None, seed=1,
                    stopper=Enough())
    search.set_resources({"CPU": 0.5})  # two folds at once on the test Ray's one CPU
    results = search.experiment(str(tmp_path), name="all", num_samples=6, check=False)
    folds = results.folds
    assert len(folds) <= 2  # the running folds: nothing new started, not even the one waiting for a slot
    assert results.fold_trainings == len(folds) == results.table["folds_done"].sum()
    pd.testing.assert_frame_equal(load_results(str(tmp_path), "all").table, results.table)
    trial_folders = [d for d in os.listdir(tmp_path / "all") if d.startswith("c0")]
    assert sorted(trial_folders) == sorted(os.path.basename(os.path.dirname(p)) for p in folds["checkpoint_path"])
    assert set(folds["stopped_by"]) == {"stopper"} and set(folds["status"]) == {"complete"}
    assert folds["stopped_early"].all()
    # stop_all on the third result: a fold has trained at most one epoch more than the driver has handled, and
    # trains one more before it reads the stop, so none reaches its fifth epoch
    assert (folds["epochs"] <= 4).all(), folds[["config_id", "fold", "epochs"]]
    assert "incomplete" in set(results.table["status"])


@pytest.mark.slow
def test_the_fold_stopping_rule_stops_hopeless_folds_and_restore_keeps_them(ray_session, tmp_path):
    from glimr_cv import PairedCurve, Search

    space = h.space(epochs=6)
    space["optimization"]["learning_rate"] = {0.0001, 0.01}  # the slow ones are hopeless next to the fast
    search = Search(space, h.digits_builder, h.digits_loader, cv_folds=2, racing="forgiving", seed=3,
                    fold_stopping=PairedCurve(grace=1, patience=1))
    results = search.experiment(str(tmp_path), name="curves", num_samples=6, check=False, max_concurrent_trials=1)
    folds = results.folds
    stopped = folds[folds["stopped_early"].eq(True)]
    assert len(stopped) and set(stopped["stopped_by"]) == {"fold_stopping"}
    assert set(stopped["status"]) == {"complete"} and stopped["checkpoint_path"].notna().all()
    best = results.best_config_id
    assert not folds[folds["config_id"] == best]["stopped_early"].any()
    assert results.epoch_trainings < 6 * len(folds)
    restored = Search.restore(str(tmp_path), "curves")
    pd.testing.assert_frame_equal(restored.table, results.table)
    assert restored.folds_stopped_early == results.folds_stopped_early


@pytest.mark.slow
def test_an_error_every_configuration_meets_stops_the_search_once_and_it_resumes(ray_session, tmp_path):
    from glimr_cv import Search, SearchHalted

    marker = tmp_path / "fixed"
    space = h.space(epochs=1)
    space["data"]["fixed_marker"] = str(marker)
    search = Search(space, h.broken_until_builder, h.marker_loader, cv_folds=2, racing=None, seed=0)
    with pytest.raises(SearchHalted, match=r"(?s)search stopped early: the first fold of configurations \[0, 1, 2\] "
                                           r"failed with the same error.*ValueError in builder: the builder is broken "
                                           r"until the marker exists.*Search.restore\(") as halted:
        search.experiment(str(tmp_path), name="broken", num_samples=5, check=False)
    results = halted.value.results
    # the first folds of configurations 0, 1 and 2, and no more: each second fold, handed out while the first
    # trained, waited for the one slot and never started once its configuration had failed
    assert results.fold_trainings == 3
    failed = results.folds[results.folds["status"] == "failed"]
    assert sorted(failed["config_id"]) == [0, 1, 2] and failed["trial_id"].is_unique
    trial_folders = [d for d in os.listdir(tmp_path / "broken") if d.startswith("c0")]
    assert sorted(trial_folders) == sorted(TRIAL_DIR.format(config_id=c, fold=0, trial_id=t)
                                           for c, t in zip(failed["config_id"], failed["trial_id"]))
    # the traceback came back in the fold's report, readable wherever the fold ran
    assert failed["traceback"].str.contains('raise ValueError\\("the builder is broken', regex=True).all()
    # not retried: one attempt per fold, so each failed trial folder has no error.txt from a crash
    marker.write_text("fixed")
    resumed = Search.restore(str(tmp_path), "broken")
    assert (resumed.table["status"] == "complete").sum() == 5


@pytest.mark.slow
def test_a_worker_that_cannot_load_the_users_objects_fails_fast_without_retries(ray_session, tmp_path):
    from glimr_cv import Search, SearchHalted

    search = Search(h.space(epochs=1), h.digits_builder, h.driver_only_loader, cv_folds=2, racing=None,
                    loader_kwargs={"token": h.DriverOnly()}, max_failures=2)
    with pytest.raises(SearchHalted, match=r"failed loading the user's code on a Ray worker, which every fold "
                                           r"would: .*lab_only_module"):
        search.experiment(str(tmp_path), name="unpicklable", num_samples=4, check=False)
    trials = [d for d in os.listdir(tmp_path / "unpicklable") if d.startswith("c0")]
    assert len(trials) == 1  # the first fold only, tried once; the one waiting for the slot never started
    for d in trials:  # one attempt each: a retried trial would have crashed, with no report of its own
        reports = (tmp_path / "unpicklable" / d / "result.json").read_text().splitlines()
        assert len(reports) == 1 and '"fold_status": "failed"' in reports[0]
        assert "lab_only_module" in (tmp_path / "unpicklable" / d / "error.txt").read_text()


@pytest.mark.slow
def test_a_fold_killed_mid_way_resumes_from_its_last_epoch_with_the_same_result_as_the_same_seed(ray_session,
                                                                                                tmp_path):
    from glimr_cv import Search

    def run(name, kill):
        markers = tmp_path / f"markers_{name}"
        markers.mkdir()
        fit_kwargs = {"callbacks": [h.kill_once_at_epoch(str(markers), 2)]} if kill else {}
        search = Search(h.space(epochs=4), h.digits_builder, h.digits_loader, cv_folds=2, racing=None, seed=4,
                        fit_kwargs=fit_kwargs, max_failures=1, reuse_models=False, deterministic=True)
        search.set_checkpoints(every_epoch=True)
        results = search.experiment(str(tmp_path), name=name, num_samples=1, check=False, max_concurrent_trials=1)
        return results, markers

    killed, markers = run("killed", kill=True)
    assert (markers / "killed").exists()
    plain, _ = run("plain", kill=False)
    assert list(killed.folds["status"]) == ["complete", "complete"]
    # the same seed, one slot, op determinism: the same configuration and, bit for bit, the same fold scores
    config_columns = [c for c in plain.table if c.startswith("config/")]
    pd.testing.assert_frame_equal(killed.table[config_columns], plain.table[config_columns])
    cols = ["fold", "digit_accuracy", "best_epoch", "epochs"]
    pd.testing.assert_frame_equal(killed.folds[cols], plain.folds[cols])
    curves = [pd.read_json(os.path.join(os.path.dirname(p), "result.json"), lines=True)
              for p in killed.folds["checkpoint_path"]]
    resumed = [c["resumed_from_epoch"].dropna().tolist() if "resumed_from_epoch" in c else [] for c in curves]
    # the killed fold went on from its last checkpointed epoch (2, or 1 if Tune had not seen epoch 2's report yet)
    assert sorted(r[0] for r in resumed if r) in ([1.0], [2.0])
