"""The Ray Tune callback that drives trackers from the driver, where the fold scheduler decides.

Ray Tune calls a callback in the driver when a trial (a fold) starts, reports an
epoch, ends or fails, and when the experiment ends. :class:`TrackingCallback`
turns these calls, and the fold scheduler's configuration table (statuses,
racing, CV means and ranks), into the operations of
:mod:`glimr_cv.tracking.plan`, and hands them to its trackers, which write them
in batches. No tracking code or credential goes to the workers.
"""

from __future__ import annotations

import threading
import time
import uuid
import warnings
from typing import Any

from ray.tune import Callback

from ..checks import expected
from ..direction import scored_folds
from ..schema import META, STATUS
from .base import Tracker, class_path, tracker_class
from .plan import Planner, SearchInfo, StateFile, fold_key, state_path

__all__ = ["TrackingCallback", "as_trackers", "check_callbacks"]


def check_callbacks(callbacks: Any) -> list:
    """``callbacks`` of ``experiment()`` as a list of ``ray.tune.Callback`` objects, or a TypeError naming the bad one."""
    if callbacks is None:
        return []
    if not isinstance(callbacks, (list, tuple)):
        raise TypeError(expected("callbacks", "a list of ray.tune.Callback objects", got=type(callbacks).__name__))
    what = ("a ray.tune.Callback, such as ray.tune.logger.CSVLoggerCallback() or "
            "ray.air.integrations.mlflow.MLflowLoggerCallback(...)")
    for i, callback in enumerate(callbacks):
        if isinstance(callback, Tracker):
            raise TypeError(expected(f"callbacks[{i}]", what, got=f"{type(callback).__name__}, a glimr_cv tracker",
                                     hint="pass it as experiment(..., tracking=...)"))
        if isinstance(callback, type):
            raise TypeError(expected(f"callbacks[{i}]", f"{what} (an instance)", got=f"the class {callback.__name__}"))
        if not isinstance(callback, Callback):
            raise TypeError(expected(f"callbacks[{i}]", what, got=type(callback).__name__))
    return list(callbacks)


def as_trackers(tracking: Any, name: str, path: str) -> list:
    """``tracking`` of ``experiment()`` as a list of trackers, each checked (quickly) before Ray starts."""
    what = ("a glimr_cv.tracking tracker, such as MLflowTracker('http://127.0.0.1:5000') or TensorBoardTracker(), "
            "or a list of them")
    trackers = list(tracking) if isinstance(tracking, (list, tuple)) else [tracking]
    if not trackers:
        raise ValueError(expected("tracking", what, tracking))
    for i, tracker in enumerate(trackers):
        if not isinstance(tracker, Tracker):
            where = "tracking" if not isinstance(tracking, (list, tuple)) else f"tracking[{i}]"
            hint = "; Ray Tune callbacks go in callbacks=" if isinstance(tracker, Callback) else ""
            raise TypeError(expected(where, what, got=f"{type(tracker).__name__}{hint}"))
    for tracker in trackers:
        tracker.check(name, path)
    return trackers


class TrackingCallback(Callback):
    """Drives glimr_cv trackers from Ray Tune's driver; made by ``Search.experiment(tracking=...)``.

    Parameters
    ----------
    trackers : list of Tracker
        Where the runs go.
    info : SearchInfo
        The search.
    token : str
        The token of the search's :class:`~glimr_cv.engine.searcher.CVSearcher`,
        which this callback reads the configurations' state from.
    flush_every : float
        Seconds between writes while the search runs. The driver only plans and
        queues; a writer thread writes the queue (MLflow: one ``log_batch`` per
        run per write), so a slow or absent tracking server never holds up Ray Tune.
    state : dict, optional
        The experiment's tracking state, for a resumed search.

    Attributes
    ----------
    stats : dict
        ``results`` (reports handled) and ``seconds`` (driver time in this
        callback's hooks); ``flushes`` and ``flush_seconds`` (writes, mostly in
        the writer thread); ``finish_seconds`` (the end: final writes, artifacts).
    """

    def __init__(self, trackers: list, info: SearchInfo, token: str, flush_every: float = 2.0,
                 state: dict | None = None):
        self.trackers = list(trackers)
        self.info = info
        self.token = token
        self.flush_every = flush_every
        self._saved = state
        self._reset()

    def _reset(self) -> None:
        self._planner: Planner | None = None
        self._searcher = None
        self._file = StateFile(state_path(self.info.path))
        self._where: dict[str, tuple[int, int]] = {}
        self._warned = False
        self._finished = False
        self._plan_lock = threading.Lock()  # the planner, between the driver and the writer thread
        self._signature: tuple | None = None  # the scheduler's state when the table was last computed
        self._table_at = -float("inf")
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._writer: threading.Thread | None = None
        self.stats = {"results": 0, "seconds": 0.0, "flushes": 0, "flush_seconds": 0.0}

    def __getstate__(self) -> dict:
        # Ray Tune pickles its callbacks with the tuner; a restored search re-creates this one from its state file
        return {"trackers": self.trackers, "info": self.info, "token": self.token, "flush_every": self.flush_every}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._saved = None
        self._reset()

    # -- made by Search -----------------------------------------------------------------------
    @classmethod
    def attach(cls, trackers: list, search, searcher, path: str, **settings) -> TrackingCallback:
        """A callback for a new experiment in folder ``path``; writes the experiment's tracking state file.

        ``settings`` are further search settings for the search run's parameters
        (``num_samples``, ``max_fold_trainings``, ``search_alg``).
        """
        from ..engine.store import split_experiment
        from ..space.notation import sampled_paths

        params = {"metric": search.metric, "mode": search.mode, "cv_folds": search.cv_folds,
                  "racing": repr(search.racing), "fold_stopping": repr(getattr(search, "fold_stopping", None)),
                  "seed": search.seed}
        for key, value in settings.items():
            params[key] = type(value).__name__ if key == "search_alg" and value is not None else value
        info = SearchInfo(name=split_experiment(path)[1], path=path, metric=search.metric, mode=search.mode,
                          cv_folds=scored_folds(search.cv_folds), metrics=list(search.metric_names), params=params,
                          hparams=sampled_paths(search._parsed), search_id=uuid.uuid4().hex)
        callback = cls(trackers, info, searcher.token)
        callback._save(new=True)
        return callback

    @classmethod
    def reattach(cls, path: str, token: str) -> TrackingCallback | None:
        """The callback of resumed experiment ``path``, its trackers re-created from the saved settings; None without."""
        file = StateFile(state_path(path))
        if not file.exists():
            return None
        state = file.read()
        info = SearchInfo.from_json(state["search"], path)
        trackers = []
        for entry in state.get("trackers", []):
            tracker = tracker_class(entry["class"])(**entry.get("settings", {}))
            try:
                tracker.check(info.name, path)
            except Exception as err:  # a resumed search runs on, and the tracker catches up when it can
                warnings.warn(f"tracking: {tracker.describe()} failed its check on restore ({err}); the search "
                              "resumes, and the tracker's updates are kept and sent when it answers", RuntimeWarning,
                              stacklevel=2)
            trackers.append(tracker)
        return cls(trackers, info, token, state=state)

    # -- the driver's events ----------------------------------------------------------------------
    def _guard(self, fn, *args) -> None:
        """Run ``fn`` on the planner in the driver; an error is a warning, never the search's end."""
        clock = time.perf_counter()
        try:
            if self._planner is None:
                self._start()
            with self._plan_lock:
                fn(*args)
        except Exception as err:  # tracking never fails a search
            self._warn(err)
        finally:
            self.stats["seconds"] += time.perf_counter() - clock

    def _warn(self, err: Exception) -> None:
        if not self._warned:
            self._warned = True
            warnings.warn(f"tracking: {type(err).__name__}: {err}; the search goes on", RuntimeWarning, stacklevel=3)

    def _start(self) -> None:
        from ..engine.searcher import CVSearcher

        self._searcher = CVSearcher.live(self.token)
        saved = self._saved or {}
        scheduler = self._scheduler()
        racing = repr(scheduler.racing) if scheduler is not None and scheduler.racing is not None else None
        self._planner = Planner(self.info, racing, saved.get("planner"))
        states = [entry.get("state") for entry in saved.get("trackers", [])]
        for i, tracker in enumerate(self.trackers):
            tracker.open(self.info, states[i] if i < len(states) and states[i] else None)
        if saved.get("planner"):  # resumed: the folds that finished before are on disk
            self._read_folds()
        self._send(self._planner.start() + self._table_ops())
        self._writer = threading.Thread(target=self._write_every, name="glimr_cv-tracking", daemon=True)
        self._writer.start()
        self._wake.set()  # the search run, at once

    def _write_every(self) -> None:
        """The writer thread: writes what is queued every ``flush_every`` seconds, so the driver never waits on I/O."""
        while not self._stop.is_set():
            self._wake.wait(self.flush_every)
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                self._write()
            except Exception as err:
                self._warn(err)

    def _read_folds(self) -> None:
        from ..engine.store import local_folder
        from ..results.analysis import read_folds

        try:
            folds = read_folds(local_folder(self.info.path))
        except Exception:  # the table falls back on the scheduler's scores
            return
        keep = {"config_id", "fold", "status", "error", *self.info.metrics}
        rows = self._planner.fold_rows
        for row in folds.to_dict("records"):
            key = (int(row["config_id"]), int(row["fold"]))
            # a fold that failed and was trained again (a halted search, resumed) counts as its last training did
            if row.get("status") == "complete" or (row.get("status") == "failed" and key not in rows):
                rows[key] = {k: v for k, v in row.items() if k in keep}

    def _scheduler(self):
        return getattr(self._searcher, "fold_scheduler", None)

    def _fold(self, trial) -> tuple[int, int] | None:
        where = self._where.get(trial.trial_id)
        if where is None:
            meta = (getattr(trial, "config", None) or {}).get(META)
            if not meta:
                return None
            where = self._where[trial.trial_id] = (int(meta["config_id"]), int(meta["fold"]))
        return where

    def _params(self) -> dict:
        scheduler = self._scheduler()
        return {} if scheduler is None else {cid: c.params for cid, c in scheduler.configs.items()}

    def _table_ops(self, force: bool = True) -> list:
        """The changes of the configurations' table, computed as ``results.table`` computes it.

        The table is computed again only when the scheduler changed (a fold
        started or ended, a configuration was pruned) and, unless ``force``, at
        most once every ``flush_every`` seconds: it costs milliseconds per
        hundred configurations, an epoch report microseconds.
        """
        import pandas as pd

        from ..results.tables import scheduler_table

        scheduler = self._scheduler()
        if scheduler is None:
            return []
        signature = (len(scheduler.configs), scheduler.n_started, scheduler.n_running, scheduler.incumbent,
                     sum(c.status != "running" for c in scheduler.configs.values()), self._planner.step)
        now = time.monotonic()
        if signature == self._signature or (not force and now - self._table_at < self.flush_every):
            return []
        self._signature, self._table_at = signature, now
        metric = self.info.metric
        rows = {(cid, f): {"config_id": cid, "fold": f, "status": "complete", metric: s}
                for cid, c in scheduler.configs.items() for f, s in c.scores.items()}
        rows.update(self._planner.fold_rows)
        folds = pd.DataFrame(list(rows.values()), columns=None if rows else ["config_id", "fold", "status", metric])
        table = scheduler_table(scheduler.configs.values(), metric, self.info.mode, self.info.cv_folds, folds,
                                self.info.metrics)
        ops = self._planner.table(table, self._params())
        ops += self._planner.search_values({"fold_trainings": scheduler.n_started,
                                            "fold_trainings_saved": scheduler.fold_trainings_saved,
                                            "folds_running": scheduler.n_running})
        return ops

    def _send(self, ops: list) -> None:
        if ops:
            for tracker in self.trackers:
                tracker.send(ops)

    def _write(self, final: bool = False) -> None:
        """Write every tracker's queue (``final``: the end, with a tracker's full patience), then save the state."""
        if not final and not any(t.pending for t in self.trackers):
            return
        clock = time.perf_counter()
        for tracker in self.trackers:
            tracker.flush(final=final)
        self._save()
        self.stats["flushes"] += 1
        self.stats["flush_seconds"] += time.perf_counter() - clock

    def _save(self, new: bool = False) -> None:
        with self._plan_lock:
            planner = self._planner.state() if self._planner is not None else None
        data = {
            "version": 1,
            "search": self.info.to_json(),
            "planner": planner,
            "trackers": [{"class": class_path(t), "settings": t.settings(), "state": None if new else t.state()}
                         for t in self.trackers],
        }
        try:
            self._file.write(data)
        except OSError as err:
            if not self._warned:
                self._warned = True
                warnings.warn(f"tracking: could not save the tracking state ({err}); a resumed search may start "
                              "new runs", RuntimeWarning, stacklevel=3)

    # Ray Tune's hooks, all in the driver
    def setup(self, **info) -> None:
        self._guard(lambda: None)

    def on_trial_start(self, iteration: int, trials: list, trial, **info) -> None:
        self._guard(self._trial_start, trial)

    def _trial_start(self, trial) -> None:
        where = self._fold(trial)
        if where is None:
            return
        cid, fold = where
        params = self._params().get(cid)
        if params is None:
            params = {k: v for k, v in (trial.config or {}).items() if k != META}
        self._send(self._planner.fold_started(cid, fold, params, trial.trial_id) + self._table_ops(force=False))

    def on_trial_result(self, iteration: int, trials: list, trial, result: dict, **info) -> None:
        self.stats["results"] += 1
        self._guard(self._trial_result, trial, result)

    def _trial_result(self, trial, result: dict) -> None:
        where = self._fold(trial)
        if where is None:
            return
        if STATUS in result:  # the fold's final report
            self._send(self._planner.fold_ended(*where, result))
        else:
            self._send(self._planner.epoch(*where, result) + self._table_ops(force=False))

    def on_trial_complete(self, iteration: int, trials: list, trial, **info) -> None:
        self._guard(self._trial_end, trial, False)

    def on_trial_error(self, iteration: int, trials: list, trial, **info) -> None:
        self._guard(self._trial_end, trial, True)

    def _trial_end(self, trial, error: bool) -> None:
        where = self._fold(trial)
        if where is None:
            return
        cid, fold = where
        key = fold_key(cid, fold)
        if not error and key not in self._planner.opened:
            return  # never started: Tune ended it while it waited for a slot (a stopper's stop_all)
        ops = []
        if key not in self._planner.closed:  # no final report came
            scheduler = self._scheduler()
            config = scheduler.configs.get(cid) if scheduler is not None else None
            if not error and config is not None and fold in config.scores:
                ops += self._planner.fold_ended(cid, fold, {STATUS: "complete", self.info.metric: config.scores[fold]})
            else:
                ops += self._planner.fold_failed(cid, fold, config.error if config is not None else None)
        self._send(ops + self._table_ops(force=False))

    def on_experiment_end(self, trials: list, **info) -> None:
        self._guard(lambda: self._send(self._table_ops()))
        self._wake.set()

    # -- the end ---------------------------------------------------------------------------------
    def finish(self, results) -> None:
        """After the run: the final table (from the folder), the artifacts, every run closed, the state saved."""
        if self._finished:
            return
        self._finished = True
        clock = time.perf_counter()
        try:
            if self._planner is None:
                self._start()
            self._stop.set()
            self._wake.set()
            # a write under way finishes first; one stuck on a server that stopped answering is left behind
            self._writer.join(max(t.final_wait for t in self.trackers))
            self._finish(results)
        except Exception as err:  # tracking never fails a search
            self._warn(err)
        self.stats["finish_seconds"] = time.perf_counter() - clock

    def _finish(self, results) -> None:
        searcher = self._searcher
        scheduler = self._scheduler()
        if getattr(searcher, "halted", None):
            outcome = "halted"
        elif scheduler is not None and (scheduler.n_running or any(c.status == "running"
                                                                   for c in scheduler.configs.values())):
            outcome = "interrupted"
        else:
            outcome = "complete"
        ops = self._planner.table(results.table, dict(results.configs))
        ops += self._planner.search_values({
            "fold_trainings": results.fold_trainings, "fold_trainings_saved": results.fold_trainings_saved,
            "epoch_trainings": results.epoch_trainings, "folds_stopped_early": results.folds_stopped_early,
            "folds_running": scheduler.n_running if scheduler is not None else 0})
        self._send(ops)
        self._write(final=True)
        for tracker in self.trackers:
            try:
                tracker.artifacts(results, outcome)
            except Exception as err:  # the runs are written; an artifact that fails is only a warning
                warnings.warn(f"tracking: {tracker.describe()} could not log the search's artifacts "
                              f"({type(err).__name__}: {err})", RuntimeWarning, stacklevel=3)
        self._send(self._planner.finish(outcome))
        self._write(final=True)
