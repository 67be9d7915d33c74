"""What a tracker must write, and what changed since it last wrote: pure Python, no Ray, MLflow or TensorBoard.

A search is a tree of runs: one *search* run, one run per *configuration* nested
in it, and one run per *fold* nested in its configuration. Runs are named by
keys: ``"search"``, ``"c3"`` (configuration 3) and ``"c3/f1"`` (its fold 1).

The :class:`Planner` turns the driver's events (a fold starts, reports an epoch,
ends; the configuration table changes) into *operations* on those runs:
:class:`Open`, :class:`Log` and :class:`Close`. It keeps the last values it sent
for each run, so that a change of the table sends only what changed, and the last
epoch sent for each fold, so that a fold trained again after a crash does not log
its epochs twice. A tracker (:mod:`glimr_cv.tracking.base`) queues the operations
and writes them in order; :class:`StateFile` keeps what a resumed search needs.
"""

from __future__ import annotations

import json
import math
import numbers
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

__all__ = [
    "RUN_STATUSES",
    "SEARCH",
    "STATE_FILE",
    "Close",
    "Log",
    "Open",
    "Planner",
    "SearchInfo",
    "StateFile",
    "config_key",
    "fold_key",
    "param_name",
    "param_value",
    "parent_key",
]

SEARCH = "search"
#: The tracking state of an experiment, next to its saved ``Search``.
STATE_FILE = "glimr_cv_tracking.json"
#: A run's glimr_cv status when it closes: a configuration's table status, a fold's status,
#: or how the search ended ("complete", "halted", "interrupted").
RUN_STATUSES = ("complete", "pruned", "failed", "incomplete", "halted", "interrupted")

#: Longest text a tag or a parameter gets (MLflow takes 6000 characters for a parameter).
MAX_TEXT = 5000
#: Longest text for a value that is not a plain number, string or bool (a class, a function).
MAX_REPR = 500


def config_key(config_id: int) -> str:
    return f"c{int(config_id)}"


def fold_key(config_id: int, fold: int) -> str:
    return f"c{int(config_id)}/f{int(fold)}"


def parent_key(key: str) -> str | None:
    """The key of the run ``key`` is nested in: a fold's configuration, a configuration's search."""
    if key == SEARCH:
        return None
    return key.rsplit("/", 1)[0] if "/" in key else SEARCH


def run_name(key: str) -> str:
    """``config_0003`` and ``config_0003/fold_1``; a search run is named by its experiment."""
    parts = key.split("/")
    name = f"config_{int(parts[0][1:]):04d}"
    return name if len(parts) == 1 else f"{name}/fold_{int(parts[1][1:])}"


class Open(NamedTuple):
    """Make sure run ``key`` exists (nested in ``parent``), with ``params`` and ``tags`` when it is new.

    ``params`` keep their Python values (a tracker writes them as it can:
    :func:`param_value` for MLflow, numbers for TensorBoard's HParams).
    ``running``: the run is running now (a fold started, a search resumed), so a
    run that exists but was closed (a configuration tried again) runs again.
    """

    key: str
    name: str
    parent: str | None
    params: dict
    tags: dict
    running: bool = True


class Log(NamedTuple):
    """Add ``metrics``, ``(name, value, step)`` triples, and set ``tags`` of run ``key`` (None: remove the tag)."""

    key: str
    metrics: tuple
    tags: dict


class Close(NamedTuple):
    """Run ``key`` ended with glimr_cv status ``status`` (see :data:`RUN_STATUSES`)."""

    key: str
    status: str


_PARAM_BAD = re.compile(r"[^\w./\- ]")


def param_name(path: str) -> str:
    """A config path as a parameter name MLflow takes: ``metrics[0]`` becomes ``metrics.0``."""
    return _PARAM_BAD.sub("_", re.sub(r"\[(\d+)\]", r".\1", path))


def param_value(value: Any) -> str:
    """A parameter's text: numbers, strings and bools as ``str`` writes them, anything else as its repr, shortened."""
    if isinstance(value, (str, bool, numbers.Number)) or value is None:
        return str(value)[:MAX_TEXT]
    text = repr(value)
    return text if len(text) <= MAX_REPR else text[: MAX_REPR - 3] + "..."


def _number(value: Any) -> float | None:
    """``value`` as a finite float, else None (missing, NaN, pandas' NA, text)."""
    if isinstance(value, bool):
        return float(value)
    if not isinstance(value, numbers.Real):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _text(value: Any) -> str | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return str(value)[:MAX_TEXT]


@dataclass
class SearchInfo:
    """What trackers know of a search: its names and settings, saved with the tracking state.

    ``params`` are the search's settings (metric, mode, folds, racing, ...);
    ``hparams`` the config paths that the search samples; ``search_id`` tags
    every run of this search.
    """

    name: str
    path: str
    metric: str
    mode: str
    cv_folds: int
    metrics: list
    params: dict = field(default_factory=dict)
    hparams: list = field(default_factory=list)
    search_id: str = ""

    def to_json(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "path"}

    @classmethod
    def from_json(cls, data: Mapping, path: str) -> SearchInfo:
        return cls(path=path, **dict(data))


#: Final-report keys that a fold run gets as metrics (the metrics at the best epoch come as ``best/<m>``).
FOLD_NUMBERS = ("score", "best_epoch", "epochs", "fit_seconds", "build_seconds", "load_seconds", "save_seconds",
                "worker_rss_mb", "resumed_from_epoch")
#: Final-report keys that a fold run gets as tags.
FOLD_TAGS = ("stopped_early", "stopped_by", "worker", "node", "error")
#: Tags that a run may lose: a configuration tried again after an error, a fold trained again.
#: A :class:`Log` holds them with the value None to say so, once per driver and on each change.
VOLATILE = frozenset({"glimr_cv.error", "glimr_cv.pruned_by", "glimr_cv.stopped_by"})


class Planner:
    """The operations for each driver event, and only what changed.

    Parameters
    ----------
    info : SearchInfo
        The search.
    racing : str, optional
        The racing rule, as a pruned configuration's ``pruned_by`` tag says it.
    state : dict, optional
        What :meth:`state` returned in an earlier driver of the same search (a
        resumed search): the step and the last epoch logged per fold go on.

    Each configuration run's values (``mean_<m>``, ``std_<m>``, ``rank``,
    ``folds_done``) are logged at step :attr:`step`, the number of folds that
    ended so far, so their history shows how they moved. A resumed planner
    sends every value once more (it cannot know which of the last updates
    reached the tracker before the crash), at the step where it left off.
    """

    def __init__(self, info: SearchInfo, racing: str | None = None, state: Mapping | None = None):
        state = dict(state or {})
        self.info = info
        self.racing = racing
        self.step = int(state.get("step", 0))
        self.last_epoch: dict[str, int] = {k: int(v) for k, v in dict(state.get("last_epoch", {})).items()}
        self.sent: dict[str, dict] = {}  # key -> {("m"|"t", name): value} last sent
        self.opened: set[str] = set()  # opened by this driver
        self.closed: set[str] = set()  # closed by this driver (and not opened since)
        self.fold_rows: dict[tuple[int, int], dict] = {}  # (config_id, fold) -> a row of results.folds, live

    def state(self) -> dict:
        return {"step": self.step, "last_epoch": dict(sorted(self.last_epoch.items()))}

    # -- runs -------------------------------------------------------------------------
    def _open(self, key: str, params: Mapping | None = None, tags: Mapping | None = None,
              running: bool = True) -> list:
        if key in self.opened and not (running and key in self.closed):
            return []
        self.opened.add(key)
        if running:
            self.closed.discard(key)
        base = {"glimr_cv.search_id": self.info.search_id, "glimr_cv.key": key}
        name = self.info.name if key == SEARCH else run_name(key)
        return [Open(key, name, parent_key(key), dict(params or {}), {**base, **(tags or {})}, running)]

    def _close(self, key: str, status: str) -> list:
        if key not in self.opened or key in self.closed:
            return []
        self.closed.add(key)
        return [Close(key, status)]

    def _changes(self, key: str, metrics: Mapping, tags: Mapping, step: int) -> list:
        """A :class:`Log` of the values of run ``key`` that differ from those last sent (None: nothing to send)."""
        sent = self.sent.setdefault(key, {})
        new_metrics, new_tags = [], {}
        for name, value in metrics.items():
            value = _number(value)
            if value is not None and sent.get(("m", name)) != value:
                sent[("m", name)] = value
                new_metrics.append((name, value, step))
        for name, value in tags.items():
            value = _text(value)
            if value is None and name not in VOLATILE:
                continue
            if ("t", name) not in sent or sent[("t", name)] != value:
                sent[("t", name)] = value
                if value is not None or name in VOLATILE:
                    new_tags[name] = value  # None: remove the tag (an error fixed, a fold run again)
        return [Log(key, tuple(new_metrics), new_tags)] if new_metrics or new_tags else []

    def start(self) -> list:
        """The search run, running (a new or a resumed search)."""
        if SEARCH in self.opened and SEARCH not in self.closed:
            return []
        ops = self._open(SEARCH, dict(self.info.params), {"glimr_cv.path": self.info.path})
        return ops + self._changes(SEARCH, {}, {"glimr_cv.status": "running", "glimr_cv.path": self.info.path},
                                   self.step)

    def open_config(self, config_id: int, params: Mapping | None, running: bool = True) -> list:
        """The run of configuration ``config_id``, with its sampled values as parameters (config paths)."""
        from ..space.notation import flatten

        key = config_key(config_id)
        if key in self.opened and not (running and key in self.closed):
            return []
        flat = flatten(params or {}) if isinstance(params, Mapping) else {}
        values = {param_name(p): v for p, v in flat.items()}
        ops = [*self.start(), *self._open(key, values, {"glimr_cv.config_id": str(config_id)}, running)]
        if running:
            ops += self._changes(key, {}, {"glimr_cv.status": "running"}, self.step)
        return ops

    # -- folds ------------------------------------------------------------------------
    def fold_started(self, config_id: int, fold: int, params: Mapping | None, trial_id: str | None = None) -> list:
        """Fold ``fold`` of configuration ``config_id`` starts (again, after a crash or a halt)."""
        key = fold_key(config_id, fold)
        tags = {"glimr_cv.config_id": str(config_id), "glimr_cv.fold": str(fold)}
        ops = self.open_config(config_id, params)
        ops += self._open(key, {"config_id": int(config_id), "fold": int(fold)}, tags)
        return ops + self._changes(key, {}, {"glimr_cv.status": "running", "glimr_cv.trial_id": trial_id}, 0)

    def epoch(self, config_id: int, fold: int, result: Mapping) -> list:
        """One epoch report of a fold: its metrics and ``fold_score`` at step ``epoch``."""
        key = fold_key(config_id, fold)
        epoch = result.get("epoch")
        if key not in self.opened or not isinstance(epoch, numbers.Integral) or epoch <= self.last_epoch.get(key, 0):
            return []  # an epoch logged before a crash or a retry: trained again to the same values
        self.last_epoch[key] = int(epoch)
        names = [*self.info.metrics, "fold_score"]
        metrics = tuple((m, v, int(epoch)) for m in names if (v := _number(result.get(m))) is not None)
        return [Log(key, metrics, {})] if metrics else []

    def fold_ended(self, config_id: int, fold: int, result: Mapping) -> list:
        """A fold's final report (``fold_status`` "complete" or "failed")."""
        key = fold_key(config_id, fold)
        status = "complete" if result.get("fold_status") == "complete" else "failed"
        if key in self.closed:
            return []
        ops = self._open(key, {"config_id": int(config_id), "fold": int(fold)},
                         {"glimr_cv.config_id": str(config_id), "glimr_cv.fold": str(fold)}, running=False)
        metrics = {f"best/{m}": result.get(m) for m in self.info.metrics}
        metrics.update({k: result.get(k) for k in FOLD_NUMBERS})
        tags = {f"glimr_cv.{k}": result.get(k) for k in FOLD_TAGS}
        tags["glimr_cv.status"] = status
        ops += self._changes(key, metrics, tags, 0)
        ops += self._close(key, status)
        row = {"config_id": int(config_id), "fold": int(fold), "status": status}
        row.update({m: result.get(m) for m in self.info.metrics})
        if status == "failed":
            row["error"] = result.get("error")
        self.fold_rows[(int(config_id), int(fold))] = row
        self.step += 1
        return ops

    def fold_failed(self, config_id: int, fold: int, error: str | None) -> list:
        """A fold that ended without a final report (its worker died for good, or Ray Tune stopped it)."""
        key = fold_key(config_id, fold)
        if key in self.closed:
            return []
        ops = self._changes(key, {}, {"glimr_cv.status": "failed", "glimr_cv.error": error}, 0)
        self.fold_rows.setdefault((int(config_id), int(fold)),
                                  {"config_id": int(config_id), "fold": int(fold), "status": "failed", "error": error})
        self.step += 1
        return ops + self._close(key, "failed")

    # -- configurations and the search ---------------------------------------------------
    def table(self, table, params: Mapping[int, Any] | None = None) -> list:
        """The changes of a configuration table (:func:`glimr_cv.results.tables.cv_table`, live or final).

        ``params``: each configuration's sampled values, for the run of one that
        has none yet (it starts, or a resumed search meets it again).
        """
        params = params or {}
        ops = []
        statuses: dict[str, int] = {}
        for row in table.to_dict("records"):
            cid = int(row["config_id"])
            key, status = config_key(cid), str(row["status"])
            statuses[status] = statuses.get(status, 0) + 1
            if key not in self.opened:
                ops += self.open_config(cid, params.get(cid), running=status == "running")
            metrics = {k: row.get(k) for m in self.info.metrics for k in (f"mean_{m}", f"std_{m}")}
            metrics["rank"] = row.get("rank")
            metrics["folds_done"] = row.get("folds_done")
            metrics["pruned"] = float(status == "pruned")
            tags = {"glimr_cv.status": status,
                    "glimr_cv.error": row.get("error") if status == "failed" else None,
                    "glimr_cv.pruned_by": self.racing if status == "pruned" else None}
            ops += self._changes(key, metrics, tags, self.step)
            if status != "running":
                ops += self._close(key, status)
        complete = table[table["status"] == "complete"] if len(table) else table
        summary = {f"configs_{s}": statuses.get(s, 0) for s in ("complete", "running", "pruned", "failed")}
        summary["folds_ended"] = self.step
        tags = {}
        if len(complete):
            best = complete.iloc[0]  # cv_table puts the best complete configuration first
            summary[f"best_mean_{self.info.metric}"] = best[f"mean_{self.info.metric}"]
            summary["best_config_id"] = best["config_id"]
            tags["glimr_cv.best_config_id"] = str(int(best["config_id"]))
        if SEARCH in self.opened:
            ops += self._changes(SEARCH, summary, tags, self.step)
        return ops

    def search_values(self, metrics: Mapping, tags: Mapping | None = None) -> list:
        """Further values of the search run (fold trainings, those racing saved)."""
        return self._changes(SEARCH, metrics, tags or {}, self.step) if SEARCH in self.opened else []

    def finish(self, outcome: str) -> list:
        """The end of this driver's run: open folds and configurations end ``interrupted``, the search ``outcome``."""
        ops = []
        for key in sorted(self.opened - self.closed, key=lambda k: (-k.count("/"), k)):
            if key != SEARCH:
                ops += self._changes(key, {}, {"glimr_cv.status": "interrupted"}, self.step)
                ops += self._close(key, "interrupted")
        ops += self._changes(SEARCH, {}, {"glimr_cv.status": outcome}, self.step)
        return ops + self._close(SEARCH, outcome)

    def rows(self) -> list[dict]:
        """The fold rows seen live, for :func:`~glimr_cv.results.tables.scheduler_table`."""
        return list(self.fold_rows.values())


class StateFile:
    """The tracking state of an experiment: JSON in ``path``, written whole (a temporary file, then a rename).

    Holds the search's :class:`SearchInfo`, each tracker's class and settings (to
    re-create it on ``Search.restore``) and state (its run ids), and the planner's
    state. A write that would not change the file is skipped.
    """

    def __init__(self, path: str):
        self.path = path
        self._written: str | None = None

    def exists(self) -> bool:
        from ..engine.store import file_exists

        return file_exists(self.path)

    def read(self) -> dict:
        from ..engine.store import read_file

        text = read_file(self.path).decode()
        self._written = text
        return json.loads(text)

    def write(self, data: Mapping) -> bool:
        """Write ``data``; False when the file already holds it."""
        text = json.dumps(data, indent=1, sort_keys=True, default=str)
        if text == self._written:
            return False
        from ..engine.store import write_file

        write_file(self.path, text.encode())
        self._written = text
        return True


def state_path(experiment: str) -> str:
    """The tracking state file of experiment folder (or URI) ``experiment``."""
    from ..engine.store import is_uri

    if is_uri(experiment):
        base, _, query = experiment.partition("?")
        return base.rstrip("/") + "/" + STATE_FILE + ("?" + query if query else "")
    return os.path.join(experiment, STATE_FILE)
