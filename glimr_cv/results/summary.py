"""What a search returns: :class:`SearchResults`, assembled from the folder and the fold scheduler."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any, Callable

import pandas as pd

from ..engine.store import local_folder
from ..schema import fold_columns
from .analysis import read_folds
from .tables import format_leaderboard, scheduler_table

__all__ = ["SearchResults", "collect_results"]


@dataclass
class SearchResults:
    """What :meth:`glimr_cv.Search.experiment` returns.

    Attributes
    ----------
    path : str
        The experiment directory; for a URI (``s3://...``), its local copy.
    metric, mode : str
        Metric that ranks configurations and its direction.
    table : DataFrame
        One row per configuration (see :func:`cv_table`), best first.
    folds : DataFrame
        One row per (configuration, fold): ``config_id, fold, status, <metrics>,
        best_epoch, epochs, fit_seconds, model_reused, checkpoint_path, trial_id, error``.
    best_config_id : int or None
        The complete configuration with the best mean.
    best_config : dict or None
        Its sampled configuration.
    best_checkpoints : list of str
        Checkpoint directories of its folds, in fold order.
    result_grid : ray.tune.ResultGrid
        Ray Tune's own results, one per fold training.
    fold_trainings : int
        Fold trainings started.
    fold_trainings_saved : int
        Fold trainings racing skipped.
    epoch_trainings : int
        Epochs trained over all folds (a fold stopped early counts its epochs so far).
    folds_stopped_early : int
        Folds that ended before their last epoch (``folds.stopped_early``).
    """

    path: str
    metric: str
    mode: str
    cv_folds: int
    table: pd.DataFrame
    folds: pd.DataFrame
    configs: dict
    result_grid: Any = None
    fold_trainings: int = 0
    fold_trainings_saved: int = 0
    epoch_trainings: int = 0
    folds_stopped_early: int = 0
    reporter: dict = field(default_factory=dict)
    builder: Callable | None = field(default=None, repr=False)

    @property
    def best_config_id(self) -> int | None:
        ranked = self.table[self.table["status"] == "complete"]
        return None if ranked.empty else int(ranked.iloc[0]["config_id"])

    @property
    def best_config(self) -> dict | None:
        cid = self.best_config_id
        return None if cid is None else self.configs[cid]

    @property
    def best_checkpoints(self) -> list[str]:
        cid = self.best_config_id
        if cid is None:
            return []
        rows = self.folds[(self.folds["config_id"] == cid) & (self.folds["status"] == "complete")]
        return list(rows.sort_values("fold")["checkpoint_path"])

    def leaderboard(self, max_rows: int = 20) -> str:
        """The table as text: rank, status, folds done, mean ± std and sampled parameters."""
        table = self.table if self.reporter.get("sort_by_metric", True) else self.table.sort_values("config_id")
        return format_leaderboard(table, self.metric, self.cv_folds, self.reporter.get("parameters", ()), max_rows,
                                  self.reporter.get("metrics", ()))

    def load_model(self, config_id: int | None = None, fold: int = 0):
        """Rebuild a fold's model with the builder and load its best-epoch weights.

        Parameters
        ----------
        config_id : int, optional
            Defaults to the best configuration.
        fold : int
            Which fold's checkpoint to load.
        """
        cid = self.best_config_id if config_id is None else config_id
        if cid is None:
            raise ValueError("no configuration is complete, so there is no best model; pass config_id")
        rows = self.folds[(self.folds["config_id"] == cid) & (self.folds["fold"] == fold)]
        rows = rows[rows["status"] == "complete"]
        if rows.empty:
            raise ValueError(f"no finished checkpoint for config_id={cid}, fold={fold}; finished folds are "
                             f"{sorted(self.folds[(self.folds['config_id'] == cid) & (self.folds['status'] == 'complete')]['fold'])}")
        if self.builder is None:
            raise ValueError("these results have no builder; load the weights from checkpoint_path yourself")
        model = self.builder(self.configs[cid])[0]
        model.load_weights(os.path.join(rows.iloc[0]["checkpoint_path"], "model.weights.h5"))
        return model

    def best_models(self) -> list:
        """The best configuration's model for each of its folds (a ready CV ensemble)."""
        cid = self.best_config_id
        return [self.load_model(cid, f) for f in sorted(self.folds[(self.folds["config_id"] == cid) & (self.folds["status"] == "complete")]["fold"])]

    def ensemble(self, config_id: int | None = None):
        """ONE Keras model averaging the fold models of the best configuration, output by output.

        Built-in Keras layers only (see :func:`glimr_cv.deploy.fold_ensemble`); its
        predictions are the mean of the fold models' predictions.
        """
        from ..deploy.ensemble import best_ensemble

        return best_ensemble(self, config_id)

    def export(self, path: str | None = None, config_id: int | None = None) -> str:
        """Save :meth:`ensemble` as a ``.keras`` file (default ``ensemble.keras`` in the experiment folder).

        Plain ``keras.saving.load_model(path)`` loads it without glimr_cv installed;
        custom layers of the builder must be registered and importable where it
        is loaded. Returns the absolute path written.
        """
        from ..deploy.ensemble import export_ensemble

        return export_ensemble(self, path, config_id)

    def refit(self, data=None, epochs: int | None = None, path: str | None = None, **kwargs):
        """Train the best configuration on all the data, save it (default ``refit.keras``) and return it.

        ``data=None`` uses a ``kfold_loader``'s full-data mode; ``epochs`` defaults to
        the median best epoch of its folds. See :func:`glimr_cv.deploy.refit_config`
        for the other arguments (``config_id``, ``verbose``, ``fit_kwargs``, ``save``).
        """
        from ..deploy.refit import refit_config

        return refit_config(self, data=data, epochs=epochs, path=path, **kwargs)

    def __repr__(self) -> str:
        counts = self.table["status"].value_counts().to_dict() if len(self.table) else {}
        return (f"SearchResults(path={self.path!r}, configurations={len(self.table)}, statuses={counts}, "
                f"fold_trainings={self.fold_trainings}, best_config_id={self.best_config_id})")


def _config_states(scheduler, folds: pd.DataFrame) -> dict:
    """The scheduler's configurations, plus those only the folder knows (it was saved before they started)."""
    states = dict(scheduler.configs) if scheduler is not None else {}
    if len(folds):
        for cid, rows in folds.groupby("config_id"):
            if cid not in states:
                failed = rows["status"].eq("failed").any()
                states[cid] = SimpleNamespace(
                    config_id=int(cid), params=rows["config"].iloc[0], status="failed" if failed else "running",
                    error=rows["error"].dropna().iloc[0] if failed and rows["error"].notna().any() else None)
    return dict(sorted(states.items()))


def collect_results(path: str, scheduler, *, metric: str, mode: str, cv_folds: int, metrics: list,
                    reporter: dict, builder: Callable | None = None, result_grid: Any = None) -> SearchResults:
    """:class:`SearchResults` of experiment folder ``path``, whose fold ``scheduler`` is given.

    The scheduler knows each configuration's status and why it stopped; the
    folder holds every fold's details. ``scheduler`` may be None, or lag behind
    the folder (a running or interrupted experiment read from disk): the
    configurations it does not know are "running", or "failed" with a failed fold.
    """
    path = local_folder(path)  # a URI's experiment, downloaded: its readers here and downstream use os paths
    folds = read_folds(path)
    states = _config_states(scheduler, folds)
    table = scheduler_table(states.values(), metric, mode, cv_folds, folds, metrics)
    return SearchResults(
        path=path,
        metric=metric,
        mode=mode,
        cv_folds=cv_folds,
        table=table,
        folds=folds.reindex(columns=fold_columns([m for m in metrics if m in folds.columns])),
        configs={cid: c.params for cid, c in states.items()},
        result_grid=result_grid,
        fold_trainings=scheduler.n_started if scheduler is not None else len(folds),
        fold_trainings_saved=scheduler.fold_trainings_saved if scheduler is not None else 0,
        epoch_trainings=int(pd.to_numeric(folds.get("epochs"), errors="coerce").fillna(0).sum()) if len(folds) else 0,
        folds_stopped_early=int(folds["stopped_early"].eq(True).sum()) if "stopped_early" in folds else 0,
        reporter=reporter,
        builder=builder,
    )
