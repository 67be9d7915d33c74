"""The fold row: what one trial, a (configuration, fold), reports and leaves on disk.

The trainable writes these names; the searcher, the tables and the analysis
functions read them. They import this module, never each other.
"""

from __future__ import annotations

__all__ = [
    "META", "KEYS", "DETAILS", "PROFILE", "LOCATION", "STATUS", "SCORE",
    "FOLD_STATUSES", "GLIMR_NAMES", "REPORT_KEYS", "fold_columns",
]

#: Key of the scheduler's bookkeeping, ``{"config_id": int, "fold": int}``, in a trial's config.
META = "__glimr_cv__"

#: Leading columns of a fold row; the metric columns follow.
KEYS = ("config_id", "fold", "status")
#: Report key of a fold's status in its final report: "complete" or "failed".
STATUS = "fold_status"
#: Report key of the best value of the search's metric so far (every report).
SCORE = "fold_score"
#: Fold statuses; "running" means no final report was found.
FOLD_STATUSES = ("complete", "failed", "running")

#: How the fold trained, after the metrics: ``score`` is the search metric at ``best_epoch``.
DETAILS = ("score", "best_epoch", "epochs", "fit_seconds", "model_reused")
#: Where the fold ran and where its time went: ``worker`` is ``"pid@host"``;
#: ``started_at`` and ``ended_at`` (before the final report) are Unix times;
#: building (clear_session, builder, compile, model reuse), loading and saving the
#: checkpoint are timed apart from ``fit_seconds``; ``worker_rss_mb`` is the
#: worker's memory at the end of the fold.
PROFILE = ("worker", "started_at", "ended_at", "build_seconds", "load_seconds", "save_seconds", "worker_rss_mb")
#: Where a fold's files are, why it failed, and its sampled configuration (a nested dict).
LOCATION = ("checkpoint_path", "trial_id", "error", "config")

#: glimr's names of the two keys, used by its analysis functions.
GLIMR_NAMES = {"config_id": "config_enum", "fold": "cv_index"}

#: Non-metric keys of a fold's reports (ours, then Ray Tune's own).
REPORT_KEYS = frozenset({
    STATUS, SCORE, "epoch", "config_id", "fold", "error", *DETAILS, *PROFILE,
    "timestamp", "done", "training_iteration", "trial_id", "date", "time_this_iter_s", "time_total_s", "pid",
    "hostname", "node_ip", "time_since_restore", "iterations_since_restore", "checkpoint_dir_name",
    "should_checkpoint", "config",
})


def fold_columns(metrics) -> list[str]:
    """The columns of a fold row, in order, for the reported ``metrics``."""
    return [*KEYS, *metrics, *DETAILS, *PROFILE, *LOCATION]
