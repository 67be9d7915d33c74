"""TensorBoard event files for a search: one HParams session per configuration, scored by its CV mean.

Written with TensorBoard's own protocol buffers, without TensorFlow. See
:class:`TensorBoardTracker`.
"""

from __future__ import annotations

import numbers
import os
import socket
import time

from ..checks import check_type, expected
from .base import Tracker, require
from .plan import SEARCH, Log, Open, param_name, param_value

__all__ = ["TensorBoardTracker"]


def _folder(key: str) -> str:
    """The run folder of a key, relative to the log folder: ``""``, ``config_0003``, ``config_0003/fold_1``."""
    if key == SEARCH:
        return ""
    parts = key.split("/")
    folder = f"config_{int(parts[0][1:]):04d}"
    return folder if len(parts) == 1 else f"{folder}/fold_{int(parts[1][1:])}"


class TensorBoardTracker(Tracker):
    """Track a search in TensorBoard event files, for its HParams dashboard.

    Pass it as ``Search.experiment(..., tracking=TensorBoardTracker())`` (alone or
    in a list with an :class:`~glimr_cv.tracking.MLflowTracker`), then run
    ``tensorboard --logdir <experiment>/tensorboard``.

    The log folder holds the HParams experiment (the sampled config paths as
    hyperparameters; ``mean_<m>``, ``std_<m>``, ``rank`` and ``folds_done`` as its
    metrics), and per configuration one folder ``config_0003``: its HParams
    session (its sampled values; when the search is complete, it ends with
    status success when complete, failure when failed, unknown when pruned or
    incomplete, since TensorBoard reads a session's first end only), the scalars
    ``mean_<m>``, ``std_<m>``, ``rank``, ``folds_done`` and ``pruned`` (0 or 1) at a step
    counting the folds that ended, and per fold a folder ``config_0003/fold_1``
    with the per-epoch validation curves (step = epoch) and the fold's
    ``best/<m>``, ``best_epoch``, ``epochs`` and ``fit_seconds``. So the HParams
    dashboard compares configurations by their CV scores, and the scalars
    dashboard shows every fold's curve.

    Parameters
    ----------
    logdir : str, optional
        The log folder; default ``tensorboard`` in the experiment folder (which
        must then be a local folder).
    """

    kind = "tensorboard"

    def __init__(self, logdir: str | None = None):
        require("tensorboard", "TensorBoardTracker")
        check_type("logdir", logdir, (str, os.PathLike), "a folder for TensorBoard's event files", allow_none=True)
        self.logdir = None if logdir is None else os.path.abspath(os.path.expanduser(os.fspath(logdir)))

    def settings(self) -> dict:
        return {"logdir": self.logdir}

    def describe(self) -> str:
        return f"TensorBoard event files in {self.logdir!r}"

    def check(self, name: str, path: str) -> None:
        from ..engine.store import is_uri

        if self.logdir is None and is_uri(path):
            raise ValueError(expected("logdir", "a local folder for the event files when the experiment is a URI",
                                      None))
        import tensorboard.compat.proto.event_pb2  # noqa: F401  (a broken install fails here, before Ray)

    # -- while the search runs --------------------------------------------------------------
    def open(self, info, state: dict | None) -> None:
        self._runtime()
        self._info = info
        if self.logdir is None:
            self.logdir = os.path.join(info.path, "tensorboard")
        state = dict(state or {})
        self._sessions: set[str] = set(state.get("sessions", []))  # keys whose session started
        self._ended: dict[str, str] = dict(state.get("ended", {}))  # key -> the status its session ended with
        self._experiment_written = bool(state.get("experiment", False))
        self._files: dict[str, str] = {}  # folder -> this driver's event file in it

    def state(self) -> dict:
        return {"sessions": sorted(self.__dict__.get("_sessions", ())),
                "ended": dict(self.__dict__.get("_ended", {})),
                "experiment": self.__dict__.get("_experiment_written", False)}

    def _write(self, pending: list) -> None:
        from tensorboard.compat.proto import summary_pb2

        events: dict[str, list] = {}  # folder -> events, written together below
        marks: list = []  # state changes that hold once the events are written

        def add(folder: str, summary, step: int = 0) -> None:
            events.setdefault(folder, []).append(self._event(summary, step))

        for op in pending:
            folder = _folder(op.key)
            if isinstance(op, Open):
                if op.key == SEARCH and not self._experiment_written:
                    add(folder, self._experiment_pb())
                    marks.append(("experiment", op.key))
                elif op.key.count("/") == 0 and op.key != SEARCH and op.key not in self._sessions:
                    add(folder, self._session_start_pb(op))
                    marks.append(("session", op.key))
            elif isinstance(op, Log):
                by_step: dict[int, list] = {}
                for name, value, step in op.metrics:
                    by_step.setdefault(step, []).append(summary_pb2.Summary.Value(tag=name, simple_value=value))
                for step, values in sorted(by_step.items()):
                    add(folder, summary_pb2.Summary(value=values), step)
        for folder, batch in events.items():
            self._append(folder, batch)
        for what, value in marks:
            if what == "experiment":
                self._experiment_written = True
            else:
                self._sessions.add(value)
        pending.clear()

    def artifacts(self, results, outcome: str) -> None:
        """End every configuration's HParams session with its status, once the search is complete.

        TensorBoard reads a session's first end only, and a halted or interrupted
        search may still be resumed, so only a complete search ends its sessions.
        """
        if outcome != "complete":
            return
        for row in results.table[["config_id", "status"]].to_dict("records"):
            key = f"c{int(row['config_id'])}"
            if key in self._sessions and key not in self._ended:
                self._append(_folder(key), [self._event(self._session_end_pb(str(row["status"])))])
                self._ended[key] = str(row["status"])

    @staticmethod
    def _event(summary, step: int = 0):
        from tensorboard.compat.proto import event_pb2

        return event_pb2.Event(wall_time=time.time(), step=int(step), summary=summary)

    def _append(self, folder: str, events: list) -> None:
        """Append ``events`` to this driver's event file in ``folder`` (made, with its version record, if new)."""
        from tensorboard.compat.proto import event_pb2
        from tensorboard.summary.writer.record_writer import RecordWriter

        path = self._files.get(folder)
        new = path is None
        if new:
            os.makedirs(os.path.join(self.logdir, folder), exist_ok=True)
            name = f"events.out.tfevents.{time.time():.6f}.{socket.gethostname()}.{os.getpid()}.glimr_cv"
            path = self._files[folder] = os.path.join(self.logdir, folder, name)
        with open(path, "ab") as f:
            writer = RecordWriter(f)
            if new:
                writer.write(event_pb2.Event(wall_time=time.time(), file_version="brain.Event:2").SerializeToString())
            for event in events:
                writer.write(event.SerializeToString())

    # -- HParams summaries ---------------------------------------------------------------
    @staticmethod
    def _hparams_pb(tag: str, data):
        from tensorboard.compat.proto import summary_pb2
        from tensorboard.plugins.hparams import metadata

        summary = summary_pb2.Summary()
        summary.value.add(tag=tag, metadata=metadata.create_summary_metadata(data), tensor=metadata.NULL_TENSOR)
        return summary

    def _experiment_pb(self):
        from tensorboard.plugins.hparams import api_pb2, metadata, plugin_data_pb2

        names = [f"{s}_{m}" for m in self._info.metrics for s in ("mean", "std")] + ["rank", "folds_done", "pruned"]
        experiment = api_pb2.Experiment(
            hparam_infos=[api_pb2.HParamInfo(name=param_name(p)) for p in self._info.hparams],
            metric_infos=[api_pb2.MetricInfo(name=api_pb2.MetricName(tag=n)) for n in names],
            time_created_secs=time.time(),
        )
        return self._hparams_pb(metadata.EXPERIMENT_TAG, plugin_data_pb2.HParamsPluginData(experiment=experiment))

    def _session_start_pb(self, op: Open):
        from tensorboard.plugins.hparams import metadata, plugin_data_pb2

        start = plugin_data_pb2.SessionStartInfo(group_name=_folder(op.key), start_time_secs=time.time())
        for name, value in sorted(op.params.items()):
            if isinstance(value, bool):
                start.hparams[name].bool_value = value
            elif isinstance(value, numbers.Real):
                start.hparams[name].number_value = float(value)
            else:
                start.hparams[name].string_value = param_value(value)
        return self._hparams_pb(metadata.SESSION_START_INFO_TAG,
                                plugin_data_pb2.HParamsPluginData(session_start_info=start))

    def _session_end_pb(self, status: str):
        from tensorboard.plugins.hparams import api_pb2, metadata, plugin_data_pb2

        code = {"complete": api_pb2.STATUS_SUCCESS, "failed": api_pb2.STATUS_FAILURE,
                "halted": api_pb2.STATUS_FAILURE}.get(status, api_pb2.STATUS_UNKNOWN)
        end = plugin_data_pb2.SessionEndInfo(status=code, end_time_secs=time.time())
        return self._hparams_pb(metadata.SESSION_END_INFO_TAG, plugin_data_pb2.HParamsPluginData(session_end_info=end))
