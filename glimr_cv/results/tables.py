"""Result tables, pure pandas: one row per configuration, scikit-learn ``cv_results_`` style."""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import pandas as pd

from ..engine.store import Opaque
from ..space.notation import flatten
from ..direction import Direction

__all__ = ["cv_table", "format_leaderboard", "scheduler_table"]

_SCALARS = (str, int, float, bool, type(None), np.integer, np.floating, np.bool_)


def _sort_key(status: pd.Series, score: pd.Series, mode: str) -> pd.DataFrame:
    oriented = -Direction(mode).sign * score  # ascending puts the best first
    return pd.DataFrame({"c": status.ne("complete").astype(int), "s": oriented.fillna(np.inf)})


def cv_table(
    folds: pd.DataFrame,
    configs: Sequence[dict],
    metric: str,
    mode: str,
    cv_folds: int,
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
    cv_folds : int
        Folds per configuration.
    metrics : sequence of str, optional
        Metrics to tabulate; ``metric`` first. Defaults to ``[metric]``.

    Returns
    -------
    DataFrame
        Columns ``config_id, status, folds_done, split{i}_<m>..., mean_<m>, std_<m>,
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
        row = {"config_id": cid, "status": cfg["status"], "folds_done": int(len(mine))}
        for m in metrics:
            values = dict(zip(mine["fold"], mine[m])) if len(mine) and m in mine else {}
            for i in range(cv_folds):
                row[f"split{i}_{m}"] = float(values.get(i, np.nan))
            finite = [v for v in values.values() if v is not None and math.isfinite(v)]
            row[f"mean_{m}"] = float(np.mean(finite)) if finite else np.nan
            row[f"std_{m}"] = float(np.std(finite)) if finite else np.nan
        row["error"] = cfg.get("error")
        params = flatten(cfg.get("params") or {}, prefix="config/")
        # a class or function (an Opaque from a folder's JSON) is no column, in a folder's table as in the search's
        row.update({k: v for k, v in params.items() if isinstance(v, _SCALARS) and not isinstance(v, Opaque)})
        rows.append(row)
    table = pd.DataFrame(rows)
    if table.empty:
        return pd.DataFrame(columns=["config_id", "status", "folds_done", f"mean_{metric}", f"std_{metric}", "rank"])
    score = table[f"mean_{metric}"]
    complete = table["status"].eq("complete") & score.notna()
    ranks = (-Direction(mode).sign * score)[complete].rank(method="min")
    table.insert(3 + len(metrics) * (cv_folds + 2), "rank", pd.array([pd.NA] * len(table), dtype="Int64"))
    table.loc[complete, "rank"] = ranks.astype("Int64").to_numpy()
    order = _sort_key(table["status"], score, mode)
    order["id"] = table["config_id"]
    table = table.loc[order.sort_values(["c", "s", "id"]).index].reset_index(drop=True)
    return table


def format_leaderboard(table: pd.DataFrame, metric: str, cv_folds: int, params: Sequence[str] | dict = (),
                       max_rows: int = 20, metrics: Sequence[str] = ()) -> str:
    """A plain-text leaderboard: mean ± std, folds done and status per configuration.

    Parameters
    ----------
    table : DataFrame
        A :func:`cv_table`, in the order to show.
    metric : str
        The metric shown as mean ± std.
    cv_folds : int
        Folds per configuration.
    params : sequence of str, or dict of str to str
        Config paths to show, or config path -> column label (glimr's form);
        a path's last part labels it by default.
    max_rows : int
        Rows shown at most.
    metrics : sequence of str
        Further metrics whose means are shown, where the table has them.
    """
    if table.empty:
        return "(no configuration has started)"
    labels = dict(params) if isinstance(params, dict) else {p: p.split("/")[-1] for p in params}
    extra = [m for m in metrics if m != metric and f"mean_{m}" in table]
    header = f"{'rank':>4}  {'config':>6}  {'status':<10}  {'folds':>5}  {metric + ' (mean ± std)':<26}"
    header += "".join(f"  {m[:14]:>14}" for m in extra) + "".join(f"  {s[:14]:>14}" for s in labels.values())
    lines = [header]
    for _, row in table.head(max_rows).iterrows():
        rank = "" if pd.isna(row.get("rank")) else str(int(row["rank"]))
        mean, std = row[f"mean_{metric}"], row[f"std_{metric}"]
        score = "-" if pd.isna(mean) else f"{mean:.4f} ± {std:.4f}"
        line = f"{rank:>4}  {int(row['config_id']):>6}  {row['status']:<10}  {int(row['folds_done']):>2}/{cv_folds:<2}  {score:<26}"
        for m in extra:
            value = row[f"mean_{m}"]
            line += f"  {'-' if pd.isna(value) else f'{value:.4f}':>14}"
        for p in labels:
            value = row.get(f"config/{p}")
            text = f"{value:.4g}" if isinstance(value, float) else str(value)
            line += f"  {text[:14]:>14}"
        lines.append(line)
        if row["status"] == "failed" and isinstance(row.get("error"), str):
            lines.append(f"{'':>14}error: {row['error']}")
    if len(table) > max_rows:
        lines.append(f"... {len(table) - max_rows} more configurations")
    return "\n".join(lines)


def scheduler_table(configs, metric: str, mode: str, cv_folds: int, folds: pd.DataFrame | None = None,
                    metrics: Sequence[str] | None = None) -> pd.DataFrame:
    """The :func:`cv_table` of a running or finished search.

    Parameters
    ----------
    configs : iterable of ConfigState
        The fold scheduler's configurations: status, parameters, error and the
        scores of their finished folds.
    metric, mode, cv_folds, metrics
        As in :func:`cv_table`.
    folds : DataFrame, optional
        Fold rows read from the experiment folder; without them, the table is
        built from the scheduler's scores alone (the live leaderboard, whose files
        lag behind the last folds).
    """
    configs = list(configs)
    if folds is None:
        rows = [{"config_id": c.config_id, "fold": f, "status": "complete", metric: s}
                for c in configs for f, s in c.scores.items()]
        folds = pd.DataFrame(rows, columns=["config_id", "fold", "status", metric])
    # a failed fold's own error text (e.g. from error.txt) says more than the scheduler's summary
    fold_errors: dict = {}
    if len(folds) and "error" in folds:
        failed = folds["error"].notna() & (folds["status"] == "failed")
        for cid, err in folds.loc[failed, ["config_id", "error"]].values:
            fold_errors.setdefault(cid, err)
    entries = [{"config_id": c.config_id, "status": c.status, "params": c.params,
                "error": fold_errors.get(c.config_id, c.error) if c.status == "failed" else c.error}
               for c in configs]
    if len(folds) and metric not in folds and "score" in folds:
        folds = folds.rename(columns={"score": metric})
    return cv_table(folds, entries, metric, mode, cv_folds, metrics)
