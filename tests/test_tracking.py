"""Experiment tracking without Ray, Keras or a tracking server: the planner, the queue, the trackers' writers."""

import json
import math
import os
import subprocess
import sys
import time
import types
import warnings

import pandas as pd
import pytest

from glimr_cv.engine.racing import Paired
from glimr_cv.engine.scheduler import NEW, FoldScheduler, Run
from glimr_cv.results.tables import scheduler_table
from glimr_cv.schema import META
from glimr_cv.tracking.base import Tracker
from glimr_cv.tracking.plan import (
    SEARCH,
    Close,
    Log,
    Open,
    Planner,
    SearchInfo,
    StateFile,
    param_name,
    param_value,
    state_path,
)

METRICS = ["digit_accuracy", "digit_loss", "loss"]


def info(**kw):
    return SearchInfo(**{"name": "exp", "path": "/runs/exp", "metric": "digit_accuracy", "mode": "max",
                         "cv_folds": 2, "metrics": METRICS, "params": {"metric": "digit_accuracy", "cv_folds": 2},
                         "hparams": ["units"], "search_id": "s1", **kw})


def final(score, **kw):
    return {"fold_status": "complete", "digit_accuracy": score, "digit_loss": 1 - score, "loss": 1 - score,
            "score": score, "best_epoch": 2, "epochs": 2, "stopped_early": False, "stopped_by": None,
            "fit_seconds": 1.5, "worker": "1@host", "node": "n", "error": None, **kw}


def logs(ops, key):
    return [op for op in ops if isinstance(op, Log) and op.key == key]


def metric_values(ops, key):
    return {name: value for op in logs(ops, key) for name, value, _ in op.metrics}


def tag_values(ops, key):
    out = {}
    for op in logs(ops, key):
        out.update(op.tags)
    return out


# -- the planner -----------------------------------------------------------------------------
def test_a_fold_opens_its_search_and_configuration_runs_first():
    planner = Planner(info())
    ops = planner.fold_started(3, 1, {"units": 16, "optimization": {"learning_rate": 0.01}}, "t1")
    opens = [op for op in ops if isinstance(op, Open)]
    assert [(o.key, o.parent, o.name) for o in opens] == [
        (SEARCH, None, "exp"), ("c3", SEARCH, "config_0003"), ("c3/f1", "c3", "config_0003/fold_1")]
    assert opens[1].params == {"units": 16, "optimization/learning_rate": 0.01}  # config paths
    assert opens[2].params == {"config_id": 3, "fold": 1}
    assert tag_values(ops, "c3/f1") == {"glimr_cv.status": "running", "glimr_cv.trial_id": "t1"}
    assert all(o.tags["glimr_cv.search_id"] == "s1" and o.tags["glimr_cv.key"] == o.key for o in opens)
    # the next fold of the same configuration opens only its own run
    assert [op.key for op in planner.fold_started(3, 0, {}, "t2") if isinstance(op, Open)] == ["c3/f0"]


def test_epochs_are_logged_once_even_when_a_fold_trains_again():
    planner = Planner(info())
    planner.fold_started(0, 0, {}, "t1")
    first = [planner.epoch(0, 0, {"epoch": e, "digit_accuracy": 0.5 + e / 10, "digit_loss": 1.0, "loss": 1.0,
                                  "fold_score": 0.5 + e / 10}) for e in (1, 2)]
    assert [op.metrics for ops in first for op in ops][0] == (
        ("digit_accuracy", 0.6, 1), ("digit_loss", 1.0, 1), ("loss", 1.0, 1), ("fold_score", 0.6, 1))
    # the worker died and the fold trains again from its first epoch: same values, not logged twice
    planner.fold_started(0, 0, {}, "t1")
    assert planner.epoch(0, 0, {"epoch": 1, "digit_accuracy": 0.6}) == []
    assert planner.epoch(0, 0, {"epoch": 3, "digit_accuracy": 0.8})[0].metrics == (("digit_accuracy", 0.8, 3),)
    # a resumed driver knows it too
    resumed = Planner(info(), state=json.loads(json.dumps(planner.state())))
    resumed.fold_started(0, 0, {}, "t3")
    assert resumed.epoch(0, 0, {"epoch": 3, "digit_accuracy": 0.8}) == []
    assert resumed.step == planner.step


def test_a_final_report_logs_the_best_epoch_timings_and_worker_and_closes_the_fold():
    planner = Planner(info())
    planner.fold_started(0, 1, {}, "t1")
    ops = planner.fold_ended(0, 1, final(0.9, stopped_early=True, stopped_by="fold_stopping", best_epoch=1))
    assert metric_values(ops, "c0/f1") == {"best/digit_accuracy": 0.9, "best/digit_loss": pytest.approx(0.1),
                                           "best/loss": pytest.approx(0.1), "score": 0.9, "best_epoch": 1.0,
                                           "epochs": 2.0, "fit_seconds": 1.5}
    assert tag_values(ops, "c0/f1") == {"glimr_cv.status": "complete", "glimr_cv.stopped_early": "True",
                                        "glimr_cv.stopped_by": "fold_stopping", "glimr_cv.worker": "1@host",
                                        "glimr_cv.node": "n", "glimr_cv.error": None}  # None: no stale error
    assert ops[-1] == Close("c0/f1", "complete")
    assert planner.step == 1 and planner.rows() == [
        {"config_id": 0, "fold": 1, "status": "complete", "digit_accuracy": 0.9, "digit_loss": pytest.approx(0.1),
         "loss": pytest.approx(0.1)}]
    assert planner.fold_ended(0, 1, final(0.9)) == []  # Tune's on_trial_complete after the report: nothing new


def _replay():
    """Three configurations, two folds, paired racing: 0 completes, 1 trails it by far and is pruned, 2 runs."""
    sched = FoldScheduler(2, "max", Paired(), max_configs=3, explore=1)
    scores = {(0, 0): 0.90, (0, 1): 0.80, (1, 0): 0.10, (1, 1): 0.12, (2, 0): 0.91, (2, 1): 0.85}
    params = {0: {"units": 16}, 1: {"units": 32}, 2: {"units": 64}}
    planner = Planner(info(), racing=repr(sched.racing))
    seen = []

    def table():
        rows = [dict(r, status="complete") for r in planner.rows()]
        folds = pd.DataFrame(rows, columns=None if rows else ["config_id", "fold", "status", *METRICS])
        return scheduler_table(sched.configs.values(), "digit_accuracy", "max", 2, folds, METRICS)

    def run(cid, fold):
        seen.extend(planner.fold_started(cid, fold, params[cid], f"t{cid}{fold}"))
        s = scores[(cid, fold)]
        seen.extend(planner.fold_ended(cid, fold, final(s)))
        sched.finish(cid, fold, s)
        ops = planner.table(table(), {c.config_id: c.params for c in sched.configs.values()})
        seen.extend(ops)
        return ops

    return sched, planner, params, run, table, seen


def test_configuration_values_are_those_of_the_table_and_only_changes_are_sent():
    sched, planner, params, run, table, seen = _replay()
    for _ in range(10):
        action = sched.next()
        if isinstance(action, Run):
            run(*action)
        elif action == "new":
            run(*sched.add_config(params[len(sched.configs)]))
        else:
            break
    final_table = table()
    assert dict(zip(final_table["config_id"], final_table["status"])) == {0: "complete", 1: "pruned", 2: "complete"}
    for row in final_table.to_dict("records"):
        key = f"c{row['config_id']}"
        values = metric_values(seen, key)  # the last value sent of each
        for m in METRICS:
            assert values[f"mean_{m}"] == row[f"mean_{m}"] and values[f"std_{m}"] == row[f"std_{m}"]
        assert values["folds_done"] == row["folds_done"]
        assert values.get("rank") == (None if pd.isna(row["rank"]) else row["rank"])
        assert tag_values(seen, key)["glimr_cv.status"] == row["status"]
    assert tag_values(seen, "c1")["glimr_cv.pruned_by"] == "Paired(min_folds=1, tolerance=0.001)"
    assert Close("c1", "pruned") in seen and Close("c0", "complete") in seen and Close("c2", "complete") in seen
    assert metric_values(seen, SEARCH)["best_mean_digit_accuracy"] == final_table.iloc[0]["mean_digit_accuracy"]
    # rank 1 moved from configuration 0 to 2: both got their new rank, at the step of that fold's end
    ranks = [(op.key, v, s) for op in logs(seen, "c0") + logs(seen, "c2") for n, v, s in op.metrics if n == "rank"]
    assert ("c0", 1.0, 2) in ranks and ("c0", 2.0, planner.step) in ranks and ("c2", 1.0, planner.step) in ranks
    assert planner.table(final_table) == []  # nothing changed since


def test_an_error_tag_goes_when_the_configuration_is_tried_again_and_a_resumed_planner_sends_all_again():
    planner = Planner(info())
    planner.fold_started(0, 0, {"units": 16}, "t1")
    failed = pd.DataFrame([{"config_id": 0, "status": "failed", "folds_done": 0, "error": "boom", "rank": pd.NA}])
    ops = planner.table(failed)
    assert tag_values(ops, "c0")["glimr_cv.error"] == "boom" and Close("c0", "failed") in ops
    ops = planner.fold_started(0, 0, {"units": 16}, "t2")  # tried again after a halt: the run runs again
    assert [op for op in ops if isinstance(op, Open) and op.key == "c0"][0].running
    running = failed.assign(status="running", error=None)
    assert tag_values(planner.table(running), "c0") == {"glimr_cv.error": None}  # "running" went with the fold
    # a planner of a resumed driver cannot know what reached the tracker: it sends every value again, once
    resumed = Planner(info(), state=planner.state())
    ops = resumed.table(running.assign(folds_done=0), {0: {"units": 16}})
    assert [op.key for op in ops if isinstance(op, Open)] == [SEARCH, "c0"]
    assert tag_values(ops, "c0")["glimr_cv.error"] is None  # removes a tag an earlier driver may have set
    assert resumed.table(running.assign(folds_done=0)) == []


def test_finish_closes_what_is_still_open_as_interrupted():
    planner = Planner(info())
    planner.fold_started(0, 0, {}, "t1")
    planner.fold_started(0, 1, {}, "t2")
    planner.fold_ended(0, 0, final(0.5))
    ops = planner.finish("interrupted")
    assert [op for op in ops if isinstance(op, Close)] == [
        Close("c0/f1", "interrupted"), Close("c0", "interrupted"), Close(SEARCH, "interrupted")]


def test_parameter_names_and_values_are_what_mlflow_takes():
    assert param_name("tasks/digit/metrics[0]/name") == "tasks/digit/metrics.0/name"
    assert param_name("a b/c:d") == "a b/c_d"
    assert param_value(0.001) == "0.001" and param_value(True) == "True" and param_value("adam") == "adam"
    assert param_value(int) == "<class 'int'>"
    assert len(param_value(list(range(1000)))) == 500


def test_state_file_is_written_whole_and_only_when_it_changes(tmp_path):
    file = StateFile(state_path(str(tmp_path)))
    assert not file.exists()
    assert file.write({"a": 1}) is True
    assert file.write({"a": 1}) is False
    assert file.write({"a": 2}) is True
    assert json.loads(open(tmp_path / "glimr_cv_tracking.json").read()) == {"a": 2}
    assert sorted(os.listdir(tmp_path)) == ["glimr_cv_tracking.json"]  # no temporary file left
    assert StateFile(file.path).read() == {"a": 2}


# -- the queue of a tracker --------------------------------------------------------------------
class Flaky(Tracker):
    """Fails while ``down``; records what it wrote."""

    def __init__(self):
        self.down = False
        self.written = []

    def _write(self, pending):
        while pending:
            if self.down:
                raise ConnectionError("connection refused")
            self.written.append(pending.pop(0))


def test_a_tracker_that_goes_away_warns_once_keeps_its_updates_and_sends_them_later(monkeypatch):
    clock = [100.0]
    monkeypatch.setattr(time, "monotonic", lambda: clock[0])
    tracker = Flaky()
    tracker.send([Log("search", (("a", 1.0, 0),), {})])
    assert tracker.flush() and len(tracker.written) == 1
    tracker.down = True
    with pytest.warns(RuntimeWarning, match="could not be written to .*ConnectionError.*the search goes on"):
        tracker.send([Log("search", (("a", 2.0, 1),), {})])
        assert tracker.flush() is False
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # warned once: the next failures are quiet
        for step in (3, 4, 5):
            tracker.send([Log("search", (("a", float(step), step),), {})])
            clock[0] += 1.0
            assert tracker.flush() is False  # not even tried before retry_every
        clock[0] += tracker.retry_every
        assert tracker.flush() is False  # tried, failed again, still quiet
    assert tracker.pending == 4
    tracker.down = False
    assert tracker.flush(final=True)  # the end of the search: every update, in order
    assert [op.metrics[0][1] for op in tracker.written] == [1.0, 2.0, 3.0, 4.0, 5.0]


def test_a_tracker_still_away_at_the_end_says_what_was_lost():
    tracker = Flaky()
    tracker.down = True
    tracker.send([Log("search", (("a", 1.0, 0),), {})])
    with pytest.warns(RuntimeWarning):
        tracker.flush()
    with pytest.warns(RuntimeWarning, match="at the end of the search .* 1 updates are lost"):
        tracker.flush(final=True)


class Recorder(Flaky):
    """A tracker that keeps what it was sent, in memory, and can be re-created from its settings."""

    kind = "recorder"

    def __init__(self, name="recorder"):
        super().__init__()
        self.name = name

    def settings(self):
        return {"name": self.name}

    def open(self, info, state):
        self._runtime()
        self.opened_with = state

    def state(self):
        return {"written": len(self.written)}


def _drive(callback, sched, scores):
    """Ray Tune's calls for a search whose fold scores are ``scores``: two epochs a fold, one fold at a time."""
    trials = 0
    while True:
        action = sched.next()
        if action == "new":
            action = sched.add_config({"units": 16 * (len(sched.configs) + 1)})
        if not isinstance(action, Run):
            break
        trials += 1
        trial = types.SimpleNamespace(trial_id=f"t{trials}", config={META: {"config_id": action[0], "fold": action[1]}})
        callback.on_trial_start(0, [], trial)
        score = scores[tuple(action)]
        for epoch in (1, 2):
            callback.on_trial_result(0, [], trial, {"epoch": epoch, "digit_accuracy": score, "fold_score": score})
        callback.on_trial_result(0, [], trial, final(score))
        sched.finish(*action, score)
        callback.on_trial_complete(0, [], trial)
    callback.on_experiment_end([])
    return trials


def test_the_callback_carries_a_search_through_a_tracker_outage_and_catches_up_at_the_end(tmp_path):
    from glimr_cv.engine.searcher import CVSearcher
    from glimr_cv.tracking.callback import TrackingCallback

    sched = FoldScheduler(2, "max", Paired(), max_configs=3, explore=1)
    searcher = types.SimpleNamespace(fold_scheduler=sched, halted=None)
    holder = type("Searcher", (), {})()  # CVSearcher.live keeps weak references
    holder.__dict__.update(vars(searcher))
    CVSearcher._live["test-token"] = holder
    tracker = Recorder()
    callback = TrackingCallback([tracker], info(path=str(tmp_path)), "test-token", flush_every=0.01)
    callback.setup()
    deadline = time.monotonic() + 10
    while not tracker.written and time.monotonic() < deadline:  # the writer thread sends the search run at once
        time.sleep(0.01)
    assert tracker.written and tracker.written[0] == Open(SEARCH, "exp", None, info().params, tracker.written[0].tags)
    tracker.down = True  # the server goes away: the search goes on, the updates wait, one warning
    with pytest.warns(RuntimeWarning, match="could not be written to") as caught:
        trials = _drive(callback, sched, {(0, 0): 0.9, (0, 1): 0.8, (1, 0): 0.1, (1, 1): 0.1, (2, 0): 0.95,
                                          (2, 1): 0.9})
        deadline = time.monotonic() + 60
        while not any("tracking:" in str(w.message) for w in caught) and time.monotonic() < deadline:
            time.sleep(0.01)  # until the writer thread has tried, failed and warned
    assert len([w for w in caught if "tracking:" in str(w.message)]) == 1
    assert trials == 5 and tracker.pending > 0
    tracker.down = False
    table = scheduler_table(sched.configs.values(), "digit_accuracy", "max", 2)
    callback.finish(types.SimpleNamespace(table=table, configs={c: s.params for c, s in sched.configs.items()},
                                          fold_trainings=sched.n_started, fold_trainings_saved=1, epoch_trainings=10,
                                          folds_stopped_early=0))
    assert tracker.pending == 0
    closes = [op for op in tracker.written if isinstance(op, Close)]
    assert Close("c1", "pruned") in closes and closes[-1] == Close(SEARCH, "complete")
    assert {op.key for op in closes} == {SEARCH, "c0", "c1", "c2", "c0/f0", "c0/f1", "c1/f0", "c2/f0", "c2/f1"}
    assert callback.stats["results"] == 15 and callback.stats["seconds"] > 0
    # the experiment's tracking state: enough to re-create the tracker and continue its runs
    state = json.loads((tmp_path / "glimr_cv_tracking.json").read_text())
    assert state["trackers"] == [{"class": "test_tracking:Recorder", "settings": {"name": "recorder"},
                                  "state": {"written": len(tracker.written)}}]
    again = TrackingCallback.reattach(str(tmp_path), "test-token")
    assert type(again.trackers[0]) is Recorder and again.info.search_id == "s1"
    again.setup()
    assert again.trackers[0].opened_with == {"written": len(tracker.written)}
    assert again._planner.step == 5 and again._planner.last_epoch["c2/f1"] == 2
    again.finish(types.SimpleNamespace(table=table, configs={}, fold_trainings=5, fold_trainings_saved=1,
                                       epoch_trainings=10, folds_stopped_early=0))


def test_a_fold_tune_ended_before_it_started_leaves_no_run_and_no_row(tmp_path):
    from glimr_cv.engine.searcher import CVSearcher
    from glimr_cv.tracking.callback import TrackingCallback

    sched = FoldScheduler(2, "max", None, max_configs=1)
    holder = type("Searcher", (), {})()  # CVSearcher.live keeps weak references
    holder.__dict__.update(fold_scheduler=sched, halted=None)
    CVSearcher._live["unstarted-token"] = holder
    callback = TrackingCallback([Recorder()], info(path=str(tmp_path)), "unstarted-token")
    callback.setup()
    assert sched.next() == NEW and sched.add_config({"units": 16}) == Run(0, 0) and sched.next() == Run(0, 1)
    started, waiting = (types.SimpleNamespace(trial_id=f"t{f}", config={META: {"config_id": 0, "fold": f}})
                        for f in (0, 1))
    callback.on_trial_start(0, [], started)
    sched.max_fold_trainings = sched.n_started  # a stopper's stop_all: the waiting fold is cancelled, then ended
    sched.cancel(0, 1)
    callback.on_trial_complete(0, [], waiting)
    planner = callback._planner
    assert "c0/f1" not in planner.opened and (0, 1) not in planner.fold_rows
    # a fold that started and ended without its final report is still a failed fold
    callback.on_trial_complete(0, [], started)
    assert planner.fold_rows[(0, 0)]["status"] == "failed" and "c0/f0" in planner.closed
    table = scheduler_table(sched.configs.values(), "digit_accuracy", "max", 2)
    callback.finish(types.SimpleNamespace(table=table, configs={0: {"units": 16}}, fold_trainings=1,
                                          fold_trainings_saved=0, epoch_trainings=0, folds_stopped_early=0))


# -- the MLflow writer, against a client that records its calls ---------------------------------
class FakeClient:
    def __init__(self):
        self.calls = []
        self.runs = {}
        self.fail_on = None  # a call number that raises once

    def _call(self, name, *args):
        self.calls.append((name, *args))
        if self.fail_on == len(self.calls):
            self.fail_on = None
            raise ConnectionError("server went away")

    def get_experiment_by_name(self, name):
        return None

    def create_experiment(self, name, artifact_location=None):
        return "7"

    def create_run(self, experiment_id, tags=None, run_name=None):
        self._call("create_run", run_name)
        run_id = f"r{len(self.runs)}"
        self.runs[run_id] = {"tags": dict(tags or {}), "name": run_name, "metrics": [], "params": {}, "status": None}
        return types.SimpleNamespace(info=types.SimpleNamespace(run_id=run_id))

    def log_batch(self, run_id, metrics=(), params=(), tags=(), synchronous=True):
        self._call("log_batch", run_id, len(metrics), len(params), len(tags))
        run = self.runs[run_id]
        run["metrics"] += [(m.key, m.value, m.step) for m in metrics]
        run["params"].update({p.key: p.value for p in params})
        run["tags"].update({t.key: t.value for t in tags})

    def set_terminated(self, run_id, status):
        self._call("set_terminated", run_id, status)
        self.runs[run_id]["status"] = status

    def update_run(self, run_id, status=None):
        self._call("update_run", run_id, status)
        self.runs[run_id]["status"] = status

    def delete_tag(self, run_id, key):
        self._call("delete_tag", run_id, key)
        self.runs[run_id]["tags"].pop(key, None)

    def search_runs(self, experiment_ids, filter_string, run_view_type=None, max_results=None):
        return [types.SimpleNamespace(info=types.SimpleNamespace(run_id=rid, status=run["status"] or "RUNNING"),
                                      data=types.SimpleNamespace(tags=run["tags"]))
                for rid, run in self.runs.items() if run["tags"].get("glimr_cv.search_id") == "s1"]


def mlflow_tracker(client, state=None):
    pytest.importorskip("mlflow")
    from glimr_cv.tracking import MLflowTracker

    tracker = MLflowTracker("http://tracking.invalid:5000", experiment_name="digits")
    tracker.__dict__["_mlflow_client"] = client
    tracker.open(info(), state)
    return tracker


def test_mlflow_writes_one_batch_per_run_per_flush_and_nests_the_runs():
    client = FakeClient()
    tracker = mlflow_tracker(client)
    planner = Planner(info())
    ops = planner.fold_started(0, 0, {"units": 16}, "t1") + planner.fold_started(0, 1, {"units": 16}, "t2")
    for epoch in (1, 2, 3):
        for fold in (0, 1):
            ops += planner.epoch(0, fold, {"epoch": epoch, "digit_accuracy": 0.5, "fold_score": 0.5})
    tracker.send(ops)
    assert tracker.flush()
    runs = {r["name"]: r for r in client.runs.values()}
    assert runs["config_0000"]["tags"]["mlflow.parentRunId"] == tracker.run_id(SEARCH)
    assert runs["config_0000/fold_1"]["tags"]["mlflow.parentRunId"] == tracker.run_id("c0")
    assert runs["config_0000"]["params"] == {"units": "16"}
    batches = [c for c in client.calls if c[0] == "log_batch" and c[2] == 6]
    assert len(batches) == 2  # six epoch values of each fold, in one call per fold run
    assert sorted(runs["config_0000/fold_0"]["metrics"]) == sorted(
        [(m, 0.5, e) for e in (1, 2, 3) for m in ("digit_accuracy", "fold_score")])
    tracker.send(planner.fold_ended(0, 0, final(0.8)) + planner.finish("complete"))
    assert tracker.flush()
    statuses = {r["name"]: r["status"] for r in client.runs.values()}
    assert statuses == {"exp": "FINISHED", "config_0000": "KILLED", "config_0000/fold_0": "FINISHED",
                        "config_0000/fold_1": "KILLED"}


def test_mlflow_sends_nothing_twice_after_a_failure_in_the_middle_of_a_flush():
    client = FakeClient()
    tracker = mlflow_tracker(client)
    planner = Planner(info())
    ops = planner.fold_started(0, 0, {"units": 16}, "t1") + planner.fold_started(1, 0, {"units": 32}, "t2")
    for cid in (0, 1):
        ops += planner.epoch(cid, 0, {"epoch": 1, "digit_accuracy": 0.5})
    client.fail_on = 9  # a call in the stretch of epoch values
    tracker.send(ops)
    with pytest.warns(RuntimeWarning, match="server went away"):
        assert tracker.flush() is False
    assert 0 < tracker.pending < len(ops)
    assert tracker.flush(final=True)
    assert len(client.runs) == 5  # search, two configurations, two folds: none created twice
    for run in client.runs.values():
        names = [m[0] for m in run["metrics"]]
        assert len(names) == len(set(names)), run


def test_mlflow_continues_the_runs_of_a_resumed_search_and_finds_those_its_state_missed():
    client = FakeClient()
    tracker = mlflow_tracker(client)
    planner = Planner(info())
    tracker.send(planner.fold_started(0, 0, {"units": 16}, "t1") + planner.fold_ended(0, 0, final(0.5, error="x")))
    tracker.flush()
    state = tracker.state()
    del state["runs"]["c0/f0"]  # the driver died between creating this run and saving the state file
    resumed = mlflow_tracker(client, json.loads(json.dumps(state)))
    again = Planner(info(), state=planner.state())
    resumed.send(again.fold_started(0, 0, {"units": 16}, "t2") + again.fold_ended(0, 0, final(0.6)))
    assert resumed.flush()
    assert len(client.runs) == 3
    fold = client.runs[resumed.run_id("c0/f0")]
    assert fold["status"] == "FINISHED" and "glimr_cv.error" not in fold["tags"]  # the old error is gone
    assert ("update_run", resumed.run_id("c0/f0"), "RUNNING") in client.calls


# -- checks before Ray starts -------------------------------------------------------------------
def test_callbacks_and_tracking_must_be_what_they_say():
    from ray.tune.logger import CSVLoggerCallback

    from glimr_cv.tracking.callback import as_trackers, check_callbacks

    assert check_callbacks(None) == [] and len(check_callbacks([CSVLoggerCallback()])) == 1
    with pytest.raises(TypeError, match=r"callbacks\[1\]: expected a ray.tune.Callback.*but got object"):
        check_callbacks([CSVLoggerCallback(), object()])
    with pytest.raises(TypeError, match=r"callbacks\[0\]: .*an instance.*but got the class CSVLoggerCallback"):
        check_callbacks([CSVLoggerCallback])
    with pytest.raises(TypeError, match="callbacks: expected a list"):
        check_callbacks(CSVLoggerCallback())
    with pytest.raises(TypeError, match=r"callbacks\[0\]: .*a glimr_cv tracker; pass it as experiment\(\.\.\., tracking"):
        check_callbacks([Flaky()])
    with pytest.raises(TypeError, match=r"tracking: expected a glimr_cv.tracking tracker.*Ray Tune callbacks go in"):
        as_trackers(CSVLoggerCallback(), "exp", "/runs/exp")
    with pytest.raises(TypeError, match=r"tracking\[1\]: expected .* but got str"):
        as_trackers([Flaky(), "mlflow"], "exp", "/runs/exp")


def test_bad_tracking_settings_name_the_argument():
    pytest.importorskip("mlflow")
    from glimr_cv.tracking import MLflowTracker, TensorBoardTracker

    with pytest.raises(TypeError, match="tracking_uri: expected an MLflow tracking URI"):
        MLflowTracker(5000)
    with pytest.raises(ValueError, match="experiment_name: expected a non-empty"):
        MLflowTracker("http://127.0.0.1:5000", experiment_name=" ")
    with pytest.raises(TypeError, match="log_model: expected True or False"):
        MLflowTracker("http://127.0.0.1:5000", log_model="yes")
    with pytest.raises(ValueError, match="logdir: expected a local folder"):
        TensorBoardTracker().check("exp", "s3://bucket/runs/exp")


def _closed_port():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_an_unreachable_tracking_uri_fails_experiment_before_ray_and_the_folder(tmp_path, monkeypatch):
    pytest.importorskip("mlflow")
    from glimr_cv import Search
    from glimr_cv.demo import SPACE, builder, loader
    from glimr_cv.engine import runner
    from glimr_cv.tracking import MLflowTracker

    monkeypatch.setattr(runner, "init_ray", lambda verbose=0, address=None: (_ for _ in ()).throw(RuntimeError("ray started")))
    search = Search(SPACE, builder, loader, cv_folds=2)
    uri = f"http://127.0.0.1:{_closed_port()}"
    tracker = MLflowTracker(uri, experiment_name="digits")
    with pytest.raises(ValueError, match=rf"tracking_uri: expected an MLflow tracking server or store that answers, "
                                         rf"but got '{uri}'"):
        search.experiment(str(tmp_path), name="exp", tracking=tracker)  # not "ray started": checked first
    with pytest.raises(TypeError, match=r"callbacks\[0\]: expected a ray.tune.Callback"):
        search.experiment(str(tmp_path), name="exp", callbacks=["csv"])
    assert not os.path.exists(tmp_path / "exp")


def test_importing_the_tracking_package_loads_no_tracker():
    code = ("import sys, glimr_cv, glimr_cv.tracking, glimr_cv.tracking.plan, glimr_cv.tracking.base; "
            "print(sorted(m for m in ('mlflow', 'tensorboard', 'ray', 'keras') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# -- TensorBoard, read back with TensorBoard's own reader ----------------------------------------
@pytest.mark.slow  # TensorBoard's reader imports TensorFlow when it is installed
def test_tensorboard_sessions_and_curves_read_back_with_tensorboards_reader(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing import plugin_event_accumulator as pea
    from tensorboard.plugins.hparams import metadata

    from glimr_cv.tracking import TensorBoardTracker

    tracker = TensorBoardTracker(str(tmp_path / "tb"))
    tracker.open(info(), None)
    planner = Planner(info())
    ops = planner.start()
    for cid, lr in ((0, 0.01), (1, 1e-6)):
        ops += planner.fold_started(cid, 0, {"units": 16, "optimization": {"learning_rate": lr}}, "t")
        ops += planner.epoch(cid, 0, {"epoch": 1, "digit_accuracy": 0.4 + cid})
        ops += planner.fold_ended(cid, 0, final(0.5 + cid / 10))
    table = pd.DataFrame([{"config_id": 0, "status": "complete", "folds_done": 1, "mean_digit_accuracy": 0.5,
                           "std_digit_accuracy": 0.0, "rank": 1},
                          {"config_id": 1, "status": "pruned", "folds_done": 1, "mean_digit_accuracy": 0.6,
                           "std_digit_accuracy": 0.0, "rank": pd.NA}])
    ops += planner.table(table)
    tracker.send(ops)
    assert tracker.flush()
    tracker.artifacts(types.SimpleNamespace(table=table), "complete")
    for cid, lr, mean in ((0, 0.01, 0.5), (1, 1e-6, 0.6)):
        acc = pea.EventAccumulator(str(tmp_path / "tb" / f"config_{cid:04d}"), size_guidance={pea.TENSORS: 0})
        acc.Reload()
        content = acc.PluginTagToContent(metadata.PLUGIN_NAME)
        start = metadata.parse_session_start_info_plugin_data(content[metadata.SESSION_START_INFO_TAG])
        assert start.group_name == f"config_{cid:04d}"
        assert start.hparams["optimization/learning_rate"].number_value == lr
        assert [e.tensor_proto.float_val[0] for e in acc.Tensors("mean_digit_accuracy")] == [pytest.approx(mean)]
        end = metadata.parse_session_end_info_plugin_data(content[metadata.SESSION_END_INFO_TAG])
        assert end.status == (1 if cid == 0 else 0)  # success; unknown for a pruned configuration
        fold = pea.EventAccumulator(str(tmp_path / "tb" / f"config_{cid:04d}" / "fold_0"),
                                    size_guidance={pea.TENSORS: 0})
        fold.Reload()
        assert [e.step for e in fold.Tensors("digit_accuracy")] == [1]
        assert math.isclose(fold.Tensors("best/digit_accuracy")[0].tensor_proto.float_val[0], 0.5 + cid / 10,
                            rel_tol=1e-6)
