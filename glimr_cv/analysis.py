"""glimr's analysis functions, reading an experiment directory from disk."""

from __future__ import annotations

import glob
import json
import os
from typing import Callable

import pandas as pd

from .trainable import META

__all__ = ["read_folds", "experiment_table", "top_k_trials", "top_k_configs"]

_BOOKKEEPING = {"fold_score", "fold_status", "best_epoch", "epochs", "fit_seconds", "model_reused", "error", "epoch",
                "config_id", "fold", "final", "timestamp", "done", "training_iteration", "trial_id", "date",
                "time_this_iter_s", "time_total_s", "pid", "hostname", "node_ip", "time_since_restore",
                "iterations_since_restore", "checkpoint_dir_name", "should_checkpoint", "config"}


def _error_text(trial_dir: str) -> str | None:
    path = os.path.join(trial_dir, "error.txt")
    if not os.path.exists(path):
        return None
    lines = [line.strip() for line in open(path, errors="replace") if line.strip()]
    return lines[-1] if lines else "error"


def read_folds(exp_dir: str) -> pd.DataFrame:
    """One row per (configuration, fold) trial found in an experiment directory.

    Columns: ``config_id, fold, status, <metrics at the best epoch>, best_epoch,
    epochs, fit_seconds, model_reused, checkpoint_path, trial_id, error, config``.
    ``status`` is "complete", "failed" or "running" (no final report yet);
    ``model_reused`` says whether the worker trained its previous fold's model, reset.
    """
    if not os.path.isdir(exp_dir):
        raise FileNotFoundError(f"exp_dir: {exp_dir!r} is not a directory")
    rows = []
    for trial_dir in sorted(glob.glob(os.path.join(exp_dir, "*", "params.json"))):
        trial_dir = os.path.dirname(trial_dir)
        try:
            params = json.load(open(os.path.join(trial_dir, "params.json")))
        except (OSError, ValueError):
            continue
        meta = params.pop(META, None)
        if meta is None:
            continue
        results = []
        result_path = os.path.join(trial_dir, "result.json")
        if os.path.exists(result_path):
            for line in open(result_path):
                try:
                    results.append(json.loads(line))
                except ValueError:
                    pass  # a line cut short by a kill
        finals = [r for r in results if "fold_status" in r]
        final = finals[-1] if finals else None
        error = _error_text(trial_dir)
        if final is not None:
            status, last = final["fold_status"], final
            error = final.get("error") if status == "failed" else None
        else:
            epochs = [r for r in results if r.get("fold_score") is not None]
            last = epochs[-1] if epochs else {}
            status = "failed" if error else "running"
        checkpoints = sorted(glob.glob(os.path.join(trial_dir, "checkpoint_*")))
        row = {
            "config_id": meta["config_id"],
            "fold": meta["fold"],
            "status": status,
            **{k: v for k, v in last.items() if k not in _BOOKKEEPING and isinstance(v, (int, float))},
            "fold_score": last.get("fold_score"),
            "best_epoch": last.get("best_epoch"),
            "epochs": last.get("epochs", last.get("epoch")),
            "fit_seconds": last.get("fit_seconds"),
            "model_reused": last.get("model_reused"),
            "checkpoint_path": checkpoints[-1] if checkpoints and status == "complete" else None,
            "trial_id": os.path.basename(trial_dir).split("_", 2)[-1],
            "error": error,
            "config": params,
        }
        rows.append(row)
    df = pd.DataFrame(rows)
    if df.empty:
        return pd.DataFrame(columns=["config_id", "fold", "status", "fold_score", "best_epoch", "epochs",
                                     "fit_seconds", "model_reused", "checkpoint_path", "trial_id", "error",
                                     "config"])
    return df.sort_values(["config_id", "fold"]).reset_index(drop=True)


def experiment_table(exp_dir: str) -> pd.DataFrame:
    """glimr's trial table: one row per (configuration, fold).

    Same columns as :func:`read_folds`, with ``config_enum`` (the configuration)
    and ``cv_index`` (the fold) in front.
    """
    df = read_folds(exp_dir)
    df.insert(0, "config_enum", df.pop("config_id"))
    df.insert(1, "cv_index", df.pop("fold"))
    return df


def _check(df: pd.DataFrame, metric: str, mode: str, k: int | None) -> None:
    if metric not in df.columns:
        raise ValueError(f"metric: {metric!r} is not a column; expected one of {sorted(map(str, df.columns))}")
    if mode not in ("min", "max"):
        raise ValueError(f"mode: expected 'min' or 'max', but got {mode!r}")
    if k is not None and (isinstance(k, bool) or not isinstance(k, int) or k < 1):
        raise ValueError(f"k: expected an int >= 1 or None, but got {k!r}")


def top_k_trials(df: pd.DataFrame, metric: str, mode: str = "max", k: int | None = 10, fold: int | None = None) -> pd.DataFrame:
    """The ``k`` best complete trials (fold trainings) by ``metric``, optionally of one ``fold``."""
    _check(df, metric, mode, k)
    rows = df[df["status"] == "complete"]
    if fold is not None:
        rows = rows[rows["cv_index"] == fold]
    rows = rows.sort_values(metric, ascending=mode == "min", kind="stable")
    return rows.head(k).reset_index(drop=True) if k else rows.reset_index(drop=True)


def top_k_configs(
    df: pd.DataFrame, metric: str, mode: str = "max", k: int | None = 10, statistic: str | Callable = "mean"
) -> pd.DataFrame:
    """The ``k`` best configurations by a ``statistic`` of ``metric`` over their complete folds.

    ``statistic`` is "mean", "median", "min", "max" or a function of a Series.
    Returns ``config_enum``, ``n_folds``, the statistic (column ``metric``) and ``std``.
    """
    _check(df, metric, mode, k)
    if not callable(statistic) and statistic not in ("mean", "median", "min", "max"):
        raise ValueError(f"statistic: expected 'mean', 'median', 'min', 'max' or a function, but got {statistic!r}")
    rows = df[df["status"] == "complete"]
    grouped = rows.groupby("config_enum")[metric]
    out = pd.DataFrame({"n_folds": grouped.size(), metric: grouped.agg(statistic), "std": grouped.std(ddof=0)})
    out = out.reset_index().sort_values([metric, "config_enum"], ascending=[mode == "min", True], kind="stable")
    return out.head(k).reset_index(drop=True) if k else out.reset_index(drop=True)
