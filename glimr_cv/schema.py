"""The fold row: what one trial, a (configuration, fold), reports and leaves on disk.

The trainable writes these names; the searcher, the tables and the analysis
functions read them. They import this module, never each other.
"""

from __future__ import annotations

import os

__all__ = [
    "META", "KEYS", "DETAILS", "PROFILE", "LOCATION", "STATUS", "SCORE",
    "FOLD_STATUSES", "GLIMR_NAMES", "UNPICKLE", "REPORT_KEYS", "TRIAL_DIR", "fold_columns", "trial_error", "final_row",
]

#: Key of the scheduler's bookkeeping, ``{"config_id": int, "fold": int}``, in a trial's config.
META = "__glimr_cv__"

#: Leading columns of a fold row; the metric columns follow.
KEYS = ("config_id", "fold", "status")
#: Report key of a fold's status in its final report: "complete" or "failed".
STATUS = "fold_status"
#: Report key of the best value of the search's metric so far (every report).
SCORE = "fold_score"
#: Fold statuses; "running" means no final report was found, "lost" a finished fold whose model is gone.
FOLD_STATUSES = ("complete", "failed", "running", "lost")

#: How the fold trained, after the metrics: ``score`` is the search metric at ``best_epoch``.
#: ``stopped_early`` folds ended before their last epoch, ``stopped_by`` "fold_stopping" (the
#: search's rule), "scheduler" or "stopper" (Ray Tune's); ``epochs`` counts the epochs trained.
DETAILS = ("score", "best_epoch", "epochs", "stopped_early", "stopped_by", "fit_seconds", "model_reused")
#: Where the fold ran and where its time went: ``worker`` is ``"pid@host"``;
#: ``started_at`` and ``ended_at`` (before the final report) are Unix times;
#: building (clear_session, builder, compile, model reuse), loading and saving the
#: checkpoint are timed apart from ``fit_seconds``; ``worker_rss_mb`` is the
#: worker's memory at the end of the fold.
PROFILE = ("worker", "node", "started_at", "ended_at", "build_seconds", "load_seconds", "save_seconds", "worker_rss_mb")
#: Where a fold's files are, why it failed (``traceback``: that of an exception in the user's code,
#: which travels in the fold's report, so it can be read from any node), and its sampled
#: configuration (a nested dict).
LOCATION = ("checkpoint_path", "trial_id", "error", "traceback", "config")

#: A trial's folder name inside the experiment folder.
TRIAL_DIR = "c{config_id:04d}_f{fold}_{trial_id}"

#: ``phase`` of a fold that failed before it ran: its worker could not load the user's code.
UNPICKLE = "load the builder and loader on this worker"

#: glimr's names of the two keys, used by its analysis functions.
GLIMR_NAMES = {"config_id": "config_enum", "fold": "cv_index"}

#: Non-metric keys of a fold's reports (ours, then Ray Tune's own).
REPORT_KEYS = frozenset({
    STATUS, SCORE, "epoch", "config_id", "fold", "error", "error_type", "phase", "traceback", "curve",
    "resumed_from_epoch", *DETAILS, *PROFILE,
    "timestamp", "done", "training_iteration", "trial_id", "date", "time_this_iter_s", "time_total_s", "pid",
    "hostname", "node_ip", "time_since_restore", "iterations_since_restore", "checkpoint_dir_name",
    "should_checkpoint", "config",
})


def trial_error(trial_dir: str) -> str | None:
    """The last line of a failed trial's traceback (Tune's ``error.txt``), and where the whole of it is."""
    path = os.path.join(trial_dir, "error.txt")
    try:
        with open(path, errors="replace") as f:
            lines = [line.strip() for line in f if line.strip()]
    except OSError:
        return None
    return f"{lines[-1] if lines else 'error'} (traceback: {path})"


def final_row(outcome: dict, details: dict, profile: dict, config_id: int, fold: int, status: str,
              **extra) -> dict:
    """A fold's last report: the best epoch's metrics and ``fold_score``, :data:`DETAILS`, :data:`PROFILE`, status.

    Raises
    ------
    KeyError
        On a detail or profile name this schema does not define: the trainable
        and the readers must not drift apart.
    """
    unknown = sorted(set(details) - set(DETAILS)) + sorted(set(profile) - set(PROFILE))
    if unknown:
        raise KeyError(f"final_row: {unknown} are not fold row names of glimr_cv.schema")
    return {**outcome, **details, **profile, "config_id": config_id, "fold": fold, STATUS: status, **extra}


def fold_columns(metrics) -> list[str]:
    """The columns of a fold row, in order, for the reported ``metrics``."""
    return [*KEYS, *metrics, *DETAILS, *PROFILE, *LOCATION]
