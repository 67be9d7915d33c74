"""Tracking a real search: a local `mlflow server` on SQLite over HTTP, TensorBoard's HParams plugin, Tune's loggers.

One server and one search serve every test here. The search (the digits demo,
2 folds, 2 epochs, learning rates 1e-6, 0.01 and 0.003, paired racing, one fold
at a time so that the order is fixed) first halts: its builder fails until a
marker file exists, so configuration 0 fails. It is resumed with
``Search.restore`` once the marker is there, and configuration 0, tried again,
is pruned. The runs are read back with
``MlflowClient`` and compared with ``results.table`` and ``results.folds``.
"""

import json
import os
import socket
import subprocess
import sys
import time
import types
import urllib.request
import warnings

import e2e_helpers as h
import numpy as np
import pandas as pd
import pytest

from glimr_cv import Search, SearchHalted

pytestmark = pytest.mark.slow

pytest.importorskip("mlflow")
pytest.importorskip("tensorboard")

EXPERIMENT = "digits"
TUNE_EXPERIMENT = "tune_loggers"


class Server:
    """A `mlflow server` process on the loopback, with a SQLite backend, started the way a lab starts one."""

    def __init__(self, root):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        self.log = root / "server.log"
        env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}  # no job runner: one process less
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
                 "--backend-store-uri", f"sqlite:///{root / 'm.db'}", "--default-artifact-root", str(root / "art")],
                stdout=log, stderr=subprocess.STDOUT, env=env)
        self._up = False

    def wait(self, timeout=120.0):
        """Poll /health until it answers, or fail with the end of the server's log."""
        deadline = time.monotonic() + timeout
        while not self._up:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"mlflow server did not answer at {self.url}:\n{self.log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=1) as response:
                    self._up = response.status == 200
            except OSError:
                time.sleep(0.25)
        return self

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    server = Server(tmp_path_factory.mktemp("mlflow"))  # started first: it comes up while Ray starts
    yield server
    server.stop()


def _runs(client, experiment_name):
    from mlflow.entities import ViewType

    experiment = client.get_experiment_by_name(experiment_name)
    runs = client.search_runs([experiment.experiment_id], run_view_type=ViewType.ALL, max_results=1000)
    return {run.info.run_name: run for run in runs}


@pytest.fixture(scope="module")
def tracked(server, ray_local, tmp_path_factory):
    from mlflow import MlflowClient
    from ray import cloudpickle, tune
    from ray.air.integrations.mlflow import MLflowLoggerCallback

    from glimr_cv.demo import SPACE
    from glimr_cv.tracking import MLflowTracker, TensorBoardTracker

    cloudpickle.register_pickle_by_value(h)  # workers cannot import the tests folder
    root = tmp_path_factory.mktemp("tracked")
    marker = root / "fixed"
    space = {"units": {16, 32}, "layers": 1, "dropout": 0.0, "activation": "relu", "tasks": SPACE["tasks"],
             "optimization": {"method": "adam", "learning_rate": tune.grid_search([1e-6, 0.01, 0.003]), "epochs": 2},
             "data": {"batch_size": 128, "fixed_marker": str(marker)}}
    search = Search(space, h.broken_until_builder, h.marker_loader, cv_folds=2, seed=0, fail_fast=1)
    search.set_reporter(max_report_frequency=0)
    server.wait()
    client = MlflowClient(server.url)
    started = time.monotonic()
    with pytest.raises(SearchHalted):  # the builder fails until the marker exists: the first fold halts it
        search.experiment(
            str(root), name="exp", num_samples=1, max_concurrent_trials=1, check=False,
            tracking=[MLflowTracker(server.url, experiment_name=EXPERIMENT, log_model=True), TensorBoardTracker()],
            callbacks=[MLflowLoggerCallback(tracking_uri=server.url, experiment_name=TUNE_EXPERIMENT)])
    halted = _runs(client, EXPERIMENT)
    state = json.loads((root / "exp" / "glimr_cv_tracking.json").read_text())
    marker.touch()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        results = Search.restore(str(root), "exp")
    problems = [str(w.message) for w in caught if str(w.message).startswith("tracking:")]
    return types.SimpleNamespace(results=results, client=client, halted=halted, state_at_halt=state, root=root,
                                 seconds=time.monotonic() - started, url=server.url, problems=problems)


def test_the_search_halted_then_finished_with_a_pruned_configuration(tracked):
    assert tracked.problems == []  # the trackers wrote everything, and warned of nothing
    statuses = dict(zip(tracked.results.table["config_id"], tracked.results.table["status"]))
    # configuration 0 (learning rate 1e-6) failed and halted the search; resumed, the first folds of 1 and 2
    # (0.01, 0.003) run, 1 completes, and 0, tried again, trails it at once
    assert statuses[0] == "pruned" and statuses[1] == "complete" and statuses[2] in ("complete", "pruned")


def test_at_the_halt_the_failed_configuration_and_its_fold_were_failed_runs(tracked):
    runs = tracked.halted
    assert runs["exp"].info.status == "FAILED" and runs["exp"].data.tags["glimr_cv.status"] == "halted"
    for name in ("config_0000", "config_0000/fold_0"):
        assert runs[name].info.status == "FAILED"
        assert runs[name].data.tags["glimr_cv.status"] == "failed"
        assert "the builder is broken until the marker exists" in runs[name].data.tags["glimr_cv.error"]


def test_one_run_per_search_configuration_and_fold_nested_and_none_twice_after_the_restore(tracked):
    runs = _runs(tracked.client, EXPERIMENT)
    results = tracked.results
    folds = results.folds
    expected = {"exp"} | {f"config_{c:04d}" for c in results.table["config_id"]} | {
        f"config_{c:04d}/fold_{f}" for c, f in zip(folds["config_id"], folds["fold"])}
    assert set(runs) == expected  # names are unique: nothing was created twice
    assert len(runs) == len(tracked.client.search_runs([runs["exp"].info.experiment_id], max_results=1000))
    parent = runs["exp"].info.run_id
    for name, run in runs.items():
        if name == "exp":
            assert "mlflow.parentRunId" not in run.data.tags
        elif "/" in name:
            assert run.data.tags["mlflow.parentRunId"] == runs[name.split("/")[0]].info.run_id
        else:
            assert run.data.tags["mlflow.parentRunId"] == parent
    # the runs of the halted driver continued: same ids, and the state file kept them
    for name in tracked.halted:
        assert runs[name].info.run_id == tracked.halted[name].info.run_id
    state = json.loads((tracked.root / "exp" / "glimr_cv_tracking.json").read_text())
    assert state["trackers"][0]["state"]["runs"]["search"] == parent
    assert set(state["trackers"][0]["state"]["runs"].items()) >= set(
        tracked.state_at_halt["trackers"][0]["state"]["runs"].items())


def test_configuration_runs_hold_what_results_table_holds(tracked):
    runs = _runs(tracked.client, EXPERIMENT)
    for row in tracked.results.table.to_dict("records"):
        run = runs[f"config_{row['config_id']:04d}"]
        metrics, tags, params = run.data.metrics, run.data.tags, run.data.params
        for m in ("digit_accuracy", "digit_loss", "loss"):
            assert metrics[f"mean_{m}"] == row[f"mean_{m}"] and metrics[f"std_{m}"] == row[f"std_{m}"]
        assert metrics["folds_done"] == row["folds_done"]
        assert metrics.get("rank") == (None if pd.isna(row["rank"]) else row["rank"])
        assert tags["glimr_cv.status"] == row["status"]
        for column in [c for c in row if c.startswith("config/")]:
            assert params[column[len("config/"):].replace("[0]", ".0")] == str(row[column])
        assert "glimr_cv.error" not in tags  # the halt's error went when the configuration was tried again
        if row["status"] == "pruned":
            assert run.info.status == "KILLED" and tags["glimr_cv.pruned_by"].startswith("Paired(")
            assert metrics["pruned"] == 1.0
        else:
            assert run.info.status == "FINISHED" and "glimr_cv.pruned_by" not in tags
    best = tracked.results.table.iloc[0]
    search = runs["exp"]
    assert search.info.status == "FINISHED" and search.data.tags["glimr_cv.status"] == "complete"
    assert search.data.metrics["best_mean_digit_accuracy"] == best["mean_digit_accuracy"]
    assert search.data.tags["glimr_cv.best_config_id"] == str(best["config_id"])
    assert search.data.metrics["fold_trainings"] == tracked.results.fold_trainings
    assert search.data.metrics["fold_trainings_saved"] == tracked.results.fold_trainings_saved
    assert search.data.params["racing"].startswith("Paired(") and search.data.params["cv_folds"] == "2"


def test_fold_runs_hold_their_curves_and_what_results_folds_holds(tracked):
    client = tracked.client
    runs = _runs(client, EXPERIMENT)
    folds = tracked.results.folds
    for row in folds[folds["status"] == "complete"].to_dict("records"):  # the halted attempt shares its fold's run
        run = runs[f"config_{row['config_id']:04d}/fold_{row['fold']}"]
        metrics, tags = run.data.metrics, run.data.tags
        assert run.info.status == "FINISHED" and tags["glimr_cv.status"] == row["status"] == "complete"
        for m in ("digit_accuracy", "digit_loss", "loss"):
            assert metrics[f"best/{m}"] == row[m]
        assert metrics["best_epoch"] == row["best_epoch"] and metrics["epochs"] == row["epochs"]
        assert metrics["fit_seconds"] == row["fit_seconds"]
        assert tags["glimr_cv.stopped_early"] == str(row["stopped_early"])
        assert tags["glimr_cv.worker"] == row["worker"] and tags["glimr_cv.trial_id"] == row["trial_id"]
        curve = client.get_metric_history(run.info.run_id, "digit_accuracy")
        assert [p.step for p in sorted(curve, key=lambda p: p.step)] == list(range(1, int(row["epochs"]) + 1))
        best = [p.value for p in curve if p.step == row["best_epoch"]]
        assert best == [row["digit_accuracy"]]
        assert run.info.end_time >= run.info.start_time


def test_the_report_the_tables_and_the_ensemble_are_artifacts_and_the_model_serves(tracked):
    import mlflow

    client = tracked.client
    search = _runs(client, EXPERIMENT)["exp"]
    names = {a.path for a in client.list_artifacts(search.info.run_id)}
    assert {"report.html", "table.csv", "folds.csv", "leaderboard.txt", "ensemble.keras"} <= names
    uri = search.data.tags["glimr_cv.model_uri"]
    assert "keras" in mlflow.models.get_model_info(uri).flavors
    with mlflow.tracking._tracking_service.utils._use_tracking_uri(tracked.url):
        model = mlflow.pyfunc.load_model(uri)  # what `mlflow models serve -m <uri>` serves
    from glimr_cv.demo import digits_arrays

    x = digits_arrays()[0][:4]
    served = model.predict(x)
    served = served.item() if isinstance(served, np.ndarray) and served.shape == () else served  # a dict, boxed
    expected = tracked.results.ensemble().predict(x, verbose=0)
    np.testing.assert_allclose(served["digit"], expected["digit"], rtol=1e-5, atol=1e-6)


def test_tune_loggers_pass_through_with_the_fold_among_their_parameters(tracked):
    runs = _runs(tracked.client, TUNE_EXPERIMENT)
    folds = tracked.results.folds
    assert {r.data.params.get("__glimr_cv__/fold") for r in runs.values()} == {str(f) for f in set(folds["fold"])}
    by_trial = {name.rsplit("_", 1)[-1]: run for name, run in runs.items()}
    for row in folds.to_dict("records"):
        params = by_trial[row["trial_id"]].data.params
        assert params["__glimr_cv__/config_id"] == str(row["config_id"])
        assert params["__glimr_cv__/fold"] == str(row["fold"])
        assert params["optimization/learning_rate"] == str(row["config"]["optimization"]["learning_rate"])


def test_tensorboard_hparams_has_one_session_per_configuration_scored_by_its_cv_mean(tracked):
    from tensorboard.backend.event_processing import data_provider
    from tensorboard.backend.event_processing import (
        plugin_event_multiplexer as multiplexer,
    )
    from tensorboard.plugins import base_plugin
    from tensorboard.plugins.hparams import hparams_plugin
    from werkzeug import Response
    from werkzeug.test import Client

    logdir = str(tracked.root / "exp" / "tensorboard")
    events = multiplexer.EventMultiplexer()
    events.AddRunsFromDirectory(logdir)
    events.Reload()
    context = base_plugin.TBContext(logdir=logdir, multiplexer=events,
                                    data_provider=data_provider.MultiplexerDataProvider(events, logdir))
    app = hparams_plugin.HParamsPlugin(context).get_plugin_apps()["/session_groups"]
    request = {"experimentName": "", "startIndex": 0, "sliceSize": 100, "colParams": [],
               "allowedStatuses": ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE", "STATUS_RUNNING"]}
    answer = Client(app, Response).post("/session_groups", data=json.dumps(request),
                                        headers={"Content-Type": "application/json"})
    groups = {g["name"]: g for g in json.loads(answer.get_data(as_text=True))["sessionGroups"]}
    table = tracked.results.table
    assert set(groups) == {f"config_{c:04d}" for c in table["config_id"]}
    for row in table.to_dict("records"):
        group = groups[f"config_{row['config_id']:04d}"]
        assert len(group["sessions"]) == 1
        values = {m["name"]["tag"]: m["value"] for m in group["metricValues"]}
        assert values["mean_digit_accuracy"] == pytest.approx(row["mean_digit_accuracy"], rel=1e-6)  # float32
        assert values["std_digit_accuracy"] == pytest.approx(row["std_digit_accuracy"], rel=1e-6, abs=1e-7)
        assert group["hparams"]["optimization/learning_rate"] == pytest.approx(row["config/optimization/learning_rate"])
        assert group["sessions"][0]["status"] == ("STATUS_SUCCESS" if row["status"] == "complete" else "STATUS_UNKNOWN")
    best = tracked.results.best_config_id
    curves = multiplexer.EventMultiplexer()
    curves.AddRunsFromDirectory(os.path.join(logdir, f"config_{best:04d}"))
    curves.Reload()
    assert {"fold_0", "fold_1"} <= set(curves.Runs())  # its folds' curves, in the scalars dashboard
    folds = tracked.results.folds.set_index(["config_id", "fold", "status"])
    epochs = int(folds.loc[(best, 1, "complete"), "epochs"])
    assert [e.step for e in curves.Tensors("fold_1", "digit_accuracy")] == list(range(1, epochs + 1))

