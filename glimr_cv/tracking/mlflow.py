"""MLflow runs that understand cross-validation: a search run, a nested run per configuration, one per fold.

Written from the Ray Tune driver by the fold scheduler's own events, so workers
need no tracking credentials. See :class:`MLflowTracker`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import time
import warnings
from collections.abc import Iterator

from ..checks import check_bool, check_number, check_type, expected
from .base import Tracker, require
from .plan import SEARCH, Log, Open, param_value

__all__ = ["MLflowTracker"]

#: MLflow run status of each glimr_cv status a run closes with.
RUN_STATUS = {"complete": "FINISHED", "pruned": "KILLED", "incomplete": "KILLED", "interrupted": "KILLED",
              "failed": "FAILED", "halted": "FAILED"}
#: What one ``log_batch`` call takes at most (MLflow's limits).
_METRICS_PER_BATCH, _TAGS_PER_BATCH = 1000, 100
#: MLflow's loggers that talk about creating tables and logging models; quiet while this tracker writes.
_NOISY = ("mlflow.store.db.utils", "mlflow.tracking", "mlflow.models", "mlflow.keras", "mlflow.utils", "alembic")


@contextlib.contextmanager
def _patience(timeout: float, retries: int) -> Iterator[None]:
    """MLflow's HTTP timeout and retries for the calls inside; no run URLs printed, no INFO lines."""
    values = {"MLFLOW_HTTP_REQUEST_TIMEOUT": str(max(1, int(round(timeout)))),
              "MLFLOW_HTTP_REQUEST_MAX_RETRIES": str(int(retries)),
              "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
              "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true"}
    saved = {k: os.environ.get(k) for k in values}
    levels = {name: logging.getLogger(name).level for name in _NOISY}
    os.environ.update(values)
    for name in _NOISY:
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # MLflow's notes on signatures, pydantic, setuptools...
            yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)


class MLflowTracker(Tracker):
    """Track a search in MLflow: one run per search, per configuration (nested) and per fold (nested in it).

    Pass it as ``Search.experiment(..., tracking=MLflowTracker(uri, experiment_name=...))``.

    * The **search run** (named after the experiment) has the search's settings
      as parameters (metric, mode, folds, racing rule, ...), the number of
      configurations of each status, ``fold_trainings``, ``fold_trainings_saved``,
      ``best_mean_<metric>`` and ``best_config_id`` as metrics, and at the end the
      report (``report.html``), the tables (``table.csv``, ``folds.csv``) and the
      exported ensemble (``ensemble.keras``) as artifacts.
    * A **configuration run** (``config_0003``) has its sampled values as
      parameters, named by config path (``optimization/learning_rate``;
      ``metrics[0]`` is written ``metrics.0``), and ``mean_<m>``, ``std_<m>`` for
      every reported metric, ``rank`` and ``folds_done`` as metrics, as
      ``results.table`` has them; their history, at a step counting the folds that
      ended, shows how they moved. Tags: ``glimr_cv.status`` (complete, running,
      pruned, failed, incomplete), ``glimr_cv.pruned_by`` (the racing rule) and
      ``glimr_cv.error``. The MLflow status is FINISHED when complete, KILLED when
      pruned, incomplete or interrupted, FAILED when failed.
    * A **fold run** (``config_0003/fold_1``) has the per-epoch validation curves
      (every metric and ``fold_score``, at step = epoch), the metrics at the best
      epoch (``best/<m>``), ``score``, ``best_epoch``, ``epochs``, ``fit_seconds``
      and the other timings as metrics, and ``glimr_cv.stopped_early``,
      ``glimr_cv.stopped_by``, ``glimr_cv.worker``, ``glimr_cv.node`` and
      ``glimr_cv.error`` as tags.

    Parameters
    ----------
    tracking_uri : str, optional
        The tracking server (``http://host:5000``) or store (``sqlite:///mlflow.db``);
        default: MLflow's (``MLFLOW_TRACKING_URI``). Only the driver writes to it.
    experiment_name : str, optional
        The MLflow experiment; default: the search's experiment name. It must not
        be the name of a deleted MLflow experiment.
    run_name : str, optional
        Name of the search run; default: the search's experiment name.
    tags : dict of str to str, optional
        Further tags of the search run.
    log_model : bool
        Also log the ensemble as an MLflow model of the Keras flavor, named
        ``ensemble`` in the search run, so that ``mlflow models serve -m
        <model URI>`` serves it; the URI (``models:/...``) is the search run's
        ``glimr_cv.model_uri`` tag.
    artifacts : bool
        Log the report, the tables and the exported ensemble at the end (default).
    artifact_location : str, optional
        Where a new MLflow experiment keeps its artifacts; default: the store's
        (a server's ``--default-artifact-root``; ``./mlruns`` for a local SQLite store).
    timeout : float
        Seconds the check before Ray starts, and each request at the end of the
        search, may take. While the search runs, a writer thread sends the
        updates with MLflow's own timeouts and retries, so a server that stops
        answering never holds up the search.
    """

    kind = "mlflow"

    def __init__(self, tracking_uri: str | None = None, experiment_name: str | None = None, *,
                 run_name: str | None = None, tags: dict | None = None, log_model: bool = False,
                 artifacts: bool = True, artifact_location: str | None = None, timeout: float = 5.0):
        require("mlflow", "MLflowTracker")
        check_type("tracking_uri", tracking_uri, str, "an MLflow tracking URI such as 'http://127.0.0.1:5000'",
                   allow_none=True)
        check_type("experiment_name", experiment_name, str, "an MLflow experiment name", allow_none=True)
        if experiment_name is not None and not experiment_name.strip():
            raise ValueError(expected("experiment_name", "a non-empty MLflow experiment name", experiment_name))
        check_type("run_name", run_name, str, "a run name", allow_none=True)
        check_type("tags", tags, dict, "a dict of tag names to values", allow_none=True)
        check_type("artifact_location", artifact_location, str, "a folder or URI for the experiment's artifacts",
                   allow_none=True)
        self.tracking_uri = tracking_uri
        self.experiment_name = experiment_name
        self.run_name = run_name
        self.tags = {str(k): str(v) for k, v in (tags or {}).items()}
        self.log_model = check_bool("log_model", log_model)
        self.artifacts_ = check_bool("artifacts", artifacts)
        self.artifact_location = artifact_location
        self.timeout = check_number("timeout", timeout, 0.1)

    def settings(self) -> dict:
        return {"tracking_uri": self.tracking_uri, "experiment_name": self.experiment_name,
                "run_name": self.run_name, "tags": dict(self.tags), "log_model": self.log_model,
                "artifacts": self.artifacts_, "artifact_location": self.artifact_location, "timeout": self.timeout}

    def describe(self) -> str:
        return f"MLflow at {self.tracking_uri!r}"

    # -- before Ray starts ----------------------------------------------------------------
    def _client(self):
        client = self.__dict__.get("_mlflow_client")
        if client is None:
            import mlflow

            if self.tracking_uri is None:
                self.tracking_uri = mlflow.get_tracking_uri()  # pinned: a resumed search writes to the same store
            client = self.__dict__["_mlflow_client"] = mlflow.MlflowClient(tracking_uri=self.tracking_uri)
        return client

    def check(self, name: str, path: str) -> None:
        """Reach the tracking URI (within ``timeout`` seconds, no retries) and look up the experiment name."""
        with _patience(self.timeout, 0):
            try:
                experiment = self._client().get_experiment_by_name(self.experiment_name or name)
            except Exception as err:
                detail = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
                raise ValueError(expected(
                    "tracking_uri", "an MLflow tracking server or store that answers", self.tracking_uri,
                    f"{type(err).__name__}: {detail[:300]} (start one with `mlflow server --backend-store-uri "
                    "sqlite:///mlflow.db`, or use a local 'sqlite:///<folder>/mlflow.db')")) from None
        if experiment is not None and experiment.lifecycle_stage == "deleted":
            raise ValueError(expected(
                "experiment_name", "a new or an active MLflow experiment name", self.experiment_name or name,
                f"an experiment of that name (id {experiment.experiment_id}) is deleted, and MLflow keeps the name: "
                f"restore it (MlflowClient({self.tracking_uri!r}).restore_experiment({experiment.experiment_id!r})), "
                "purge it (`mlflow gc`), or choose another name"))

    # -- while the search runs --------------------------------------------------------------
    def open(self, info, state: dict | None) -> None:
        self._runtime()
        self._info = info
        state = dict(state or {})
        self._runs: dict[str, str] = dict(state.get("runs", {}))
        self._status: dict[str, str] = dict(state.get("status", {}))
        self._experiment_id: str | None = state.get("experiment_id")
        self._bare: set[str] = set(state.get("bare", []))
        self._fresh: set[str] = set()  # runs this driver created
        self._tagged: dict[str, set] = {}  # tags this driver set, per run
        self._found = not state  # a resumed search looks up its runs by tag once, in case the state file lagged

    def state(self) -> dict:
        return {"experiment_id": self.__dict__.get("_experiment_id"), "runs": dict(self.__dict__.get("_runs", {})),
                "status": dict(self.__dict__.get("_status", {})), "bare": sorted(self.__dict__.get("_bare", ()))}

    def run_id(self, key: str = SEARCH) -> str | None:
        """The MLflow run id of ``key`` (``"search"``, ``"c3"``, ``"c3/f1"``), once it was created."""
        return self.__dict__.get("_runs", {}).get(key)

    def _write_batch(self, batch: list, final: bool) -> None:
        if not final:  # the writer thread: MLflow's own patience, and no process-wide setting changed under the driver
            self._write(batch)
            return
        with _patience(max(self.timeout, 10.0), 1):  # the end: the driver waits, but not for long
            self._write(batch)

    def _experiment(self) -> str:
        if self._experiment_id is None:
            client = self._client()
            name = self.experiment_name or self._info.name
            experiment = client.get_experiment_by_name(name)
            self._experiment_id = (experiment.experiment_id if experiment is not None
                                   else client.create_experiment(name, artifact_location=self.artifact_location))
        if not self._found:
            self._adopt()
        return self._experiment_id

    def _adopt(self) -> None:
        """Take the runs this search created whose ids did not reach the state file (a crash in between)."""
        from mlflow.entities import ViewType

        search_id = self._info.search_id
        runs = self._client().search_runs([self._experiment_id], f"tags.`glimr_cv.search_id` = '{search_id}'",
                                          run_view_type=ViewType.ACTIVE_ONLY, max_results=50000)
        for run in runs:
            key = run.data.tags.get("glimr_cv.key")
            if key and key not in self._runs:
                self._runs[key] = run.info.run_id
                self._status[key] = run.info.status
        self._found = True

    def _write(self, pending: list) -> None:
        """Write ``pending`` in order: one ``log_batch`` per run (new runs' parameters included), then the ends."""
        from mlflow.entities import Metric, Param, RunTag

        client = self._client()
        self._experiment()
        done: set[int] = set()
        batches: dict[str, dict] = {}  # run key -> what one log_batch of it sends, and the operations it holds

        def batch(key: str) -> dict:
            return batches.setdefault(key, {"metrics": [], "params": {}, "tags": {}, "ops": []})

        def send(key: str) -> None:
            b = batches.pop(key, None)
            if not b:
                return
            run_id = self._runs[key]
            self._log(client, run_id, b["metrics"], [RunTag(n, v) for n, v in b["tags"].items() if v is not None],
                      [Param(n, v) for n, v in b["params"].items()])
            if b["params"]:
                self._bare.discard(key)
            self._tagged.setdefault(key, set()).update(n for n, v in b["tags"].items() if v is not None)
            for name in [n for n, v in b["tags"].items() if v is None]:
                self._untag(client, key, run_id, name)
            done.update(b["ops"])

        try:
            for i, op in enumerate(pending):
                if isinstance(op, Open):
                    self._open_run(client, op)
                    if op.key in self._bare:  # parameters go with the run's first batch
                        b = batch(op.key)
                        b["params"].update({k: param_value(v) for k, v in op.params.items()})
                        b["ops"].append(i)
                    else:
                        done.add(i)
                elif isinstance(op, Log):
                    b = batch(op.key)
                    now = int(time.time() * 1000)
                    b["metrics"] += [Metric(n, v, now, step) for n, v, step in op.metrics]
                    b["tags"].update(op.tags)
                    b["ops"].append(i)
                else:  # Close: what the run has pending first
                    send(op.key)
                    status = RUN_STATUS.get(op.status, "FINISHED")
                    if self._status.get(op.key) != status:
                        _set_status(client, self._runs[op.key], status)
                        self._status[op.key] = status
                    done.add(i)
            for key in list(batches):
                send(key)
        finally:
            pending[:] = [op for k, op in enumerate(pending) if k not in done]

    def _open_run(self, client, op: Open) -> None:
        """Create the run of ``op`` (its parameters still to be written), or set it running again."""
        run_id = self._runs.get(op.key)
        if run_id is None:
            tags = dict(op.tags)
            if op.parent is not None:
                tags["mlflow.parentRunId"] = self._runs[op.parent]
            if op.key == SEARCH:
                tags.update(self.tags)
            name = (self.run_name or op.name) if op.key == SEARCH else op.name
            run = client.create_run(self._experiment_id, tags=tags, run_name=name)
            self._runs[op.key] = run_id = run.info.run_id
            self._status[op.key] = "RUNNING"
            self._fresh.add(op.key)
            self._bare.add(op.key)  # until its parameters are written too
        elif op.running and self._status.get(op.key) != "RUNNING":
            _set_status(client, run_id, "RUNNING")  # resumed, or a configuration tried again
            self._status[op.key] = "RUNNING"

    def _untag(self, client, key: str, run_id: str, name: str) -> None:
        """Remove tag ``name`` of a run, if it may have it: set by this driver, or by an earlier one."""
        if key in self._fresh and name not in self._tagged.get(key, ()):
            return  # a run made by this driver has only the tags it was given
        try:
            client.delete_tag(run_id, name)
        except Exception as err:  # MLflow says so when the tag is not there
            if "RESOURCE_DOES_NOT_EXIST" not in str(err) and "No tag" not in str(err):
                raise
        self._tagged.get(key, set()).discard(name)

    @staticmethod
    def _log(client, run_id: str, metrics: list, tags: list, params: list | None = None) -> None:
        params = params or []
        while metrics or tags or params:
            client.log_batch(run_id, metrics=metrics[:_METRICS_PER_BATCH], params=params[:_TAGS_PER_BATCH],
                             tags=tags[:_TAGS_PER_BATCH], synchronous=True)
            metrics, params, tags = metrics[_METRICS_PER_BATCH:], params[_TAGS_PER_BATCH:], tags[_TAGS_PER_BATCH:]

    # -- at the end -------------------------------------------------------------------------
    def artifacts(self, results, outcome: str) -> None:
        """The report, the tables and the exported ensemble as artifacts of the search run; the model if asked."""
        run_id = self.run_id(SEARCH)
        if run_id is None or not (self.artifacts_ or self.log_model):
            return
        client = self._client()
        with _patience(max(self.timeout, 60.0), 2), tempfile.TemporaryDirectory() as tmp:
            if self.artifacts_:
                results.table.to_csv(os.path.join(tmp, "table.csv"), index=False)
                results.folds.to_csv(os.path.join(tmp, "folds.csv"), index=False)
                with open(os.path.join(tmp, "leaderboard.txt"), "w") as f:
                    f.write(results.leaderboard() + "\n")
                for name in ("table.csv", "folds.csv", "leaderboard.txt"):
                    client.log_artifact(run_id, os.path.join(tmp, name))
                client.log_artifact(run_id, _report(results, tmp))
            if results.best_config_id is None:
                return
            path = results.export()
            if self.artifacts_:
                client.log_artifact(run_id, path)
            if self.log_model:
                uri = self._log_model(run_id, path)
                client.set_tag(run_id, "glimr_cv.model_uri", uri)

    def _log_model(self, run_id: str, path: str) -> str:
        """Log the exported ensemble as an MLflow model of the Keras flavor in run ``run_id``; its URI."""
        import keras
        import mlflow
        from mlflow.tracking._tracking_service import utils as service

        from ..keras_io import load_keras_model

        model = load_keras_model(path)  # glimr_cv's own layers found, whatever this process imported
        requirements = [f"keras=={keras.__version__}"]
        try:
            import tensorflow as tf

            requirements.append(f"tensorflow=={tf.__version__}")
        except ImportError:
            pass
        saved_uri, saved_env = service._tracking_uri, os.environ.get("MLFLOW_TRACKING_URI")
        mlflow.set_tracking_uri(self.tracking_uri)  # the fluent API logs models; put its globals back after
        try:
            with mlflow.start_run(run_id=run_id, nested=True):
                info = mlflow.keras.log_model(model, name="ensemble", pip_requirements=requirements)
        finally:
            service._tracking_uri = saved_uri
            if saved_env is None:
                os.environ.pop("MLFLOW_TRACKING_URI", None)
            else:
                os.environ["MLFLOW_TRACKING_URI"] = saved_env
        self._status[SEARCH] = "FINISHED"  # start_run's end; the search run's own status is set after this
        return f"runs:/{run_id}/ensemble" if info is None else getattr(info, "model_uri", f"runs:/{run_id}/ensemble")


def _set_status(client, run_id: str, status: str) -> None:
    """Set a run's status (and end time, when it ends) in one request, without MLflow printing the run's URL."""
    from mlflow.entities import RunStatus

    ended = RunStatus.is_terminated(RunStatus.from_string(status))
    store = getattr(getattr(client, "_tracking_client", None), "store", None)
    if store is None:  # pragma: no cover (an MLflow without the store behind its client)
        client.set_terminated(run_id, status) if ended else client.update_run(run_id, status)
        return
    store.update_run_info(run_id, RunStatus.from_string(status), int(time.time() * 1000) if ended else None, None)


def _report(results, folder: str) -> str:
    """``report.html`` of the experiment, written into ``folder`` (a copy of the folder's own, fresh)."""
    from ..results.report import write_report

    return write_report(results, os.path.join(folder, "report.html"))
