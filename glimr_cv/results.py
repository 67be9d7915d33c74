"""Result tables (pure pandas) and the object a search returns."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd

from .notation import flatten

__all__ = ["cv_table", "format_leaderboard", "SearchResults", "FOLD_COLUMNS", "FOLD_DETAILS"]

#: Leading columns of ``SearchResults.folds``; metric columns follow ``status``.
FOLD_COLUMNS = ["config_id", "fold", "status"]
#: Trailing columns of ``SearchResults.folds``, after the metrics.
FOLD_DETAILS = ["best_epoch", "epochs", "fit_seconds", "model_reused", "checkpoint_path", "trial_id", "error"]
_SCALARS = (str, int, float, bool, type(None), np.integer, np.floating, np.bool_)


def _sort_key(status: pd.Series, score: pd.Series, mode: str) -> pd.DataFrame:
    oriented = -score if mode == "max" else score
    return pd.DataFrame({"c": status.ne("complete").astype(int), "s": oriented.fillna(np.inf)})


def cv_table(
    folds: pd.DataFrame,
    configs: Sequence[dict],
    metric: str,
    mode: str,
    n_splits: int,
    metrics: Sequence[str] | None = None,
) -> pd.DataFrame:
    """One row per configuration, scikit-learn ``cv_results_`` style.

    Parameters
    ----------
    folds : DataFrame
        One row per (configuration, fold) with ``config_id``, ``fold``, ``status``
        and a column per metric; only rows with status "complete" count as splits.
    configs : sequence of dict
        One per configuration: ``config_id``, ``status``, ``params`` (nested) and
        optionally ``error``.
    metric, mode : str
        Metric that ranks configurations, and its direction.
    n_splits : int
        Folds per configuration.
    metrics : sequence of str, optional
        Metrics to tabulate; ``metric`` first. Defaults to ``[metric]``.

    Returns
    -------
    DataFrame
        Columns ``config_id, status, n_folds, split{i}_<m>..., mean_<m>, std_<m>,
        rank, error, config/<path>...``, best first: complete configurations by
        ``rank`` (1 is best, ties share the lower rank), then the others by mean.
        ``std`` is the population standard deviation over finished folds, as in
        scikit-learn. Only complete configurations get a rank.
    """
    metrics = list(dict.fromkeys([metric, *(metrics or [])]))
    done = folds[folds["status"] == "complete"] if len(folds) else folds
    rows = []
    for cfg in configs:
        cid = cfg["config_id"]
        mine = done[done["config_id"] == cid] if len(done) else done
        row = {"config_id": cid, "status": cfg["status"], "n_folds": int(len(mine))}
        for m in metrics:
            values = dict(zip(mine["fold"], mine[m])) if len(mine) and m in mine else {}
            for i in range(n_splits):
                row[f"split{i}_{m}"] = float(values.get(i, np.nan))
            finite = [v for v in values.values() if v is not None and math.isfinite(v)]
            row[f"mean_{m}"] = float(np.mean(finite)) if finite else np.nan
            row[f"std_{m}"] = float(np.std(finite)) if finite else np.nan
        row["error"] = cfg.get("error")
        params = flatten(cfg.get("params") or {}, prefix="config/")
        row.update({k: v for k, v in params.items() if isinstance(v, _SCALARS)})
        rows.append(row)
    table = pd.DataFrame(rows)
    if table.empty:
        return pd.DataFrame(columns=["config_id", "status", "n_folds", f"mean_{metric}", f"std_{metric}", "rank"])
    score = table[f"mean_{metric}"]
    complete = table["status"].eq("complete") & score.notna()
    ranks = (-score if mode == "max" else score)[complete].rank(method="min")
    table.insert(3 + len(metrics) * (n_splits + 2), "rank", pd.array([pd.NA] * len(table), dtype="Int64"))
    table.loc[complete, "rank"] = ranks.astype("Int64").to_numpy()
    order = _sort_key(table["status"], score, mode)
    order["id"] = table["config_id"]
    table = table.loc[order.sort_values(["c", "s", "id"]).index].reset_index(drop=True)
    return table


def format_leaderboard(table: pd.DataFrame, metric: str, n_splits: int, params: Sequence[str] = (), max_rows: int = 20) -> str:
    """A plain-text leaderboard: mean ± std, folds done and status per configuration."""
    if table.empty:
        return "(no configuration has started)"
    lines = []
    header = f"{'rank':>4}  {'config':>6}  {'status':<10}  {'folds':>5}  {metric + ' (mean ± std)':<26}"
    short = [p.split("/")[-1] for p in params]
    header += "".join(f"  {s[:14]:>14}" for s in short)
    lines.append(header)
    for _, row in table.head(max_rows).iterrows():
        rank = "" if pd.isna(row.get("rank")) else str(int(row["rank"]))
        mean, std = row[f"mean_{metric}"], row[f"std_{metric}"]
        score = "-" if pd.isna(mean) else f"{mean:.4f} ± {std:.4f}"
        line = f"{rank:>4}  {int(row['config_id']):>6}  {row['status']:<10}  {int(row['n_folds']):>2}/{n_splits:<2}  {score:<26}"
        for p in params:
            value = row.get(f"config/{p}")
            text = f"{value:.4g}" if isinstance(value, float) else str(value)
            line += f"  {text[:14]:>14}"
        lines.append(line)
    if len(table) > max_rows:
        lines.append(f"... {len(table) - max_rows} more configurations")
    return "\n".join(lines)


@dataclass
class SearchResults:
    """What :meth:`glimr_cv.Search.experiment` returns.

    Attributes
    ----------
    path : str
        The experiment directory.
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
    """

    path: str
    metric: str
    mode: str
    n_splits: int
    table: pd.DataFrame
    folds: pd.DataFrame
    configs: dict
    result_grid: Any = None
    fold_trainings: int = 0
    fold_trainings_saved: int = 0
    sampled_params: list = field(default_factory=list)
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
        return format_leaderboard(self.table, self.metric, self.n_splits, self.sampled_params, max_rows)

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

    def __repr__(self) -> str:
        counts = self.table["status"].value_counts().to_dict() if len(self.table) else {}
        return (f"SearchResults(path={self.path!r}, configurations={len(self.table)}, statuses={counts}, "
                f"fold_trainings={self.fold_trainings}, best_config_id={self.best_config_id})")
