"""glimr's analysis functions, reading an experiment directory from disk."""

from __future__ import annotations

import glob
import json
import os
import re
import warnings
from typing import Callable

import pandas as pd

from ..checks import check_bool, check_callable, check_choice, check_int, check_type, expected
from ..schema import DETAILS, GLIMR_NAMES, KEYS, LOCATION, META, PROFILE, REPORT_KEYS, SCORE, STATUS, trial_error
from ..direction import Direction

__all__ = ["read_folds", "read_epochs", "experiment_table", "default_checkpoints", "top_k_trials", "top_k_configs"]


_TRIAL_NAME = re.compile(r"c(\d+)_f(\d+)_(.+)")


def _warn(message: str) -> None:
    warnings.warn(message, UserWarning, stacklevel=3)


def _trials(exp_dir: str, run: str | None = None):
    """``(trial folder, sampled configuration or None, bookkeeping)`` of each glimr_cv trial in ``exp_dir``.

    A trial folder whose ``params.json`` is damaged is read from its name
    (``c0003_f1_<trial id>``) and its checkpoint, with a warning.

    Raises
    ------
    FolderError
        When a trial belongs to another search than ``run`` (the run's id).
    """
    from ..engine.store import FolderError

    check_type("exp_dir", exp_dir, (str, os.PathLike), "an experiment folder")
    if not os.path.isdir(exp_dir):
        raise FileNotFoundError(f"exp_dir: {exp_dir!r} is not a directory")
    for folder in sorted(glob.glob(os.path.join(exp_dir, "c*_f*_*"))):
        named = _TRIAL_NAME.fullmatch(os.path.basename(folder))
        if not named or not os.path.isdir(folder):
            continue
        params_file = os.path.join(folder, "params.json")
        params, meta = None, None
        try:
            with open(params_file) as f:
                params = json.load(f)
            meta = params.pop(META, None) if isinstance(params, dict) else None
        except FileNotFoundError:
            pass  # Tune writes it with the trial's first files: a fold that never started
        except (OSError, ValueError) as err:
            _warn(f"{params_file} is damaged ({err}); its fold is read from its folder's name and checkpoint")
        if not isinstance(meta, dict):
            if params is None and not glob.glob(os.path.join(folder, "*.json")):
                continue  # an empty folder: nothing was ever reported
            params = None
            meta = {"config_id": int(named.group(1)), "fold": int(named.group(2))}
        if run is not None and meta.get("run") not in (None, run):
            raise FolderError(f"{folder} belongs to another search (run {meta.get('run')}) than this folder's "
                              f"(run {run}); expected one search per experiment folder")
        yield folder, params, meta


def _results(trial_dir: str) -> list[dict]:
    """The reports in a trial's ``result.json``; lines that are not reports are skipped, and named.

    A last line cut short is what a kill leaves, and is skipped quietly; any
    other line that is not a JSON object is damage, and a warning says so.
    """
    results = []
    path = os.path.join(trial_dir, "result.json")
    if not os.path.exists(path):
        return results
    with open(path, errors="replace") as f:
        lines = f.read().splitlines()
    bad = []
    for i, line in enumerate(lines):
        try:
            value = json.loads(line)
        except ValueError:
            value = None
        if isinstance(value, dict):
            results.append(value)
        elif line.strip():
            bad.append(i + 1)
    if bad and bad != [len(lines)]:
        _warn(f"{path}: lines {bad} are not reports (damaged); they are skipped")
    return results


def _checkpointed_final(checkpoint: str | None) -> dict | None:
    """The final report a finished fold stored in its checkpoint, if any."""
    try:
        with open(os.path.join(checkpoint, "fold.json")) as f:
            saved = json.load(f)
        return saved.get("final") if isinstance(saved, dict) else None
    except (TypeError, OSError, ValueError):  # no checkpoint, no file, or a file cut short
        return None


def _checkpoint_meta(checkpoint: str | None) -> dict:
    try:
        with open(os.path.join(checkpoint, "fold.json")) as f:
            saved = json.load(f)
        return {k: saved[k] for k in ("config_id", "fold", "run") if k in saved} if isinstance(saved, dict) else {}
    except (TypeError, OSError, ValueError):
        return {}


def read_folds(exp_dir: str, run: str | None = None) -> pd.DataFrame:
    """One row per (configuration, fold) trial found in an experiment directory.

    Columns: :func:`glimr_cv.schema.fold_columns` of the reported metrics (the
    metrics at the best epoch, ``score``, details and profile, ``checkpoint_path``,
    ``trial_id``, ``error``), then ``config``. ``status`` is "complete", "failed",
    "running" (no final report yet) or "lost" (a fold reported finished whose
    checkpoint is gone: its score stays, its model does not).

    A fold's final record lives in two places, its ``result.json`` and its
    checkpoint's ``fold.json``: either one, damaged or cut short by a kill, loses
    nothing. Damage is named in a warning, never skipped silently.

    Raises
    ------
    FolderError
        When a trial folder belongs to another search than ``run``.
    """
    rows = []
    for trial_dir, params, meta in _trials(exp_dir, run):
        results = _results(trial_dir)
        checkpoints = sorted(c for c in glob.glob(os.path.join(trial_dir, "checkpoint_*")) if os.path.isdir(c))
        finals = [r for r in results if STATUS in r]
        stored = _checkpointed_final(checkpoints[-1] if checkpoints else None)
        final = finals[-1] if finals else stored
        error = trial_error(trial_dir)
        lost = None
        if final is not None:
            status, last = final[STATUS], final
            error = final.get("error") if status == "failed" else None
            if error and os.path.exists(os.path.join(trial_dir, "error.txt")):  # written by the searcher
                error = f"{error} (traceback: {os.path.join(trial_dir, 'error.txt')})"
            if status == "complete" and not (checkpoints and os.path.isfile(
                    os.path.join(checkpoints[-1], "model.weights.h5"))):
                where = checkpoints[-1] if checkpoints else os.path.join(trial_dir, "checkpoint_*")
                lost = f"its checkpoint {where} is missing or damaged"
        else:
            epochs = [r for r in results if r.get(SCORE) is not None]
            last = epochs[-1] if epochs else {}
            status = "failed" if error else "running"
        if lost:
            _warn(f"fold {meta['fold']} of configuration {meta['config_id']}: {lost}; its score is kept, but it "
                  "counts as lost (no model), so its configuration is not complete")
            status, error = "lost", f"fold lost: {lost}"
        if params is None:
            params = {}
        rows.append({
            "config_id": meta["config_id"],
            "fold": meta["fold"],
            "status": status,
            **{k: v for k, v in last.items() if k not in REPORT_KEYS and isinstance(v, (int, float))},
            **{k: last.get(k) for k in (*DETAILS, *PROFILE)},
            "score": last.get(SCORE),
            "epochs": last.get("epochs", last.get("epoch")),
            "checkpoint_path": checkpoints[-1] if checkpoints and status == "complete" else None,
            "trial_id": os.path.basename(trial_dir).split("_", 2)[-1],
            "error": error,
            "traceback": last.get("traceback") if status == "failed" else None,
            "config": params,
        })
    if not rows:
        return pd.DataFrame(columns=[*KEYS, *DETAILS, *PROFILE, *LOCATION])
    df = pd.DataFrame(rows).sort_values(["config_id", "fold"]).reset_index(drop=True)
    # a fold trained twice (its first worker died) has two folders: its last attempt that ended counts
    order = df["status"].map({"complete": 0, "lost": 1, "failed": 2, "running": 3})
    df = df.assign(_order=order).sort_values(["config_id", "fold", "_order"], kind="stable")
    return df.drop_duplicates(["config_id", "fold"]).drop(columns="_order").reset_index(drop=True)


def experiment_table(exp_dir: str, checkpointed: bool = True) -> pd.DataFrame:
    """glimr's trial table: one row per (configuration, fold) trial.

    Columns of :func:`read_folds`, with glimr's names in front: ``config_enum``
    (the configuration) and ``cv_index`` (the fold), and glimr's
    ``training_iteration`` (the checkpointed epoch, ``best_epoch``). A glimr_cv
    trial keeps one checkpoint, its best epoch, so there is one row per trial
    where glimr had one per checkpointed epoch.

    Parameters
    ----------
    exp_dir : str
        The experiment folder.
    checkpointed : bool
        Keep only trials with a checkpoint (finished folds), as glimr does;
        ``False`` also lists running and failed folds.
    """
    check_bool("checkpointed", checkpointed)
    df = read_folds(exp_dir)
    if checkpointed:
        df = df[df["checkpoint_path"].notna()].reset_index(drop=True)
    df.insert(len(df.columns), "training_iteration", df["best_epoch"])
    return _glimr_names(df)


def default_checkpoints(df: pd.DataFrame) -> pd.DataFrame:
    """The row of each trial's performance checkpoint, as glimr selects it.

    A glimr_cv trial writes only that checkpoint (its best epoch), so this keeps
    the checkpointed rows, one per trial.
    """
    df = _glimr_names(check_type("df", df, pd.DataFrame, "a DataFrame of fold rows (experiment_table(path))"))
    return df[df["checkpoint_path"].notna()].drop_duplicates("trial_id").reset_index(drop=True)


def _glimr_names(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` with glimr's key names in front; our names (``results.folds``) are renamed."""
    df = df.rename(columns={k: v for k, v in GLIMR_NAMES.items() if k in df.columns and v not in df.columns})
    front = [c for c in GLIMR_NAMES.values() if c in df.columns]
    return df[[*front, *(c for c in df.columns if c not in front)]]


def _check(df: pd.DataFrame, metric: str, mode: str, k: int | None) -> pd.DataFrame:
    check_type("df", df, pd.DataFrame, "a DataFrame of fold rows (experiment_table(path) or results.folds)")
    if metric not in df.columns:
        raise ValueError(expected("metric", f"a column of df, one of {sorted(map(str, df.columns))}", metric))
    check_choice("mode", mode, ("max", "min"))
    check_int("k", k, 1, allow_none=True)
    return _glimr_names(df)


def top_k_trials(df: pd.DataFrame, metric: str, mode: str = "max", k: int | None = 10, fold: int | None = None,
                 config_filter: Callable[[dict], bool] | None = None) -> pd.DataFrame:
    """The ``k`` best complete trials (fold trainings) by ``metric``.

    Parameters
    ----------
    df : DataFrame
        :func:`experiment_table`'s, or ``results.folds``; rows come back with
        glimr's names, ``config_enum`` and ``cv_index``.
    metric, mode : str
        Column to sort by, and its direction.
    k : int or None
        Rows to return; ``None`` for all.
    fold : int, optional
        Only trials of this fold.
    config_filter : callable, optional
        ``config_filter(config) -> bool`` on each trial's configuration (a nested
        dict); only trials for which it is true.
    """
    rows = _check(df, metric, mode, k)
    rows = rows[rows["status"] == "complete"]
    check_int("fold", fold, 0, allow_none=True)
    if fold is not None:
        rows = rows[rows["cv_index"] == fold]
    if config_filter is not None:
        check_callable("config_filter", config_filter, "a function config -> bool")
        if "config" not in rows:
            raise ValueError(expected("df", "a 'config' column for config_filter", sorted(map(str, rows.columns))))
        rows = rows[[bool(config_filter(c)) for c in rows["config"]]]
    rows = rows.sort_values(metric, ascending=Direction(mode).ascending, kind="stable")
    return rows.head(k).reset_index(drop=True) if k else rows.reset_index(drop=True)


def top_k_configs(
    df: pd.DataFrame, metric: str, mode: str = "max", k: int | None = 10, statistic: str | Callable = "median"
) -> pd.DataFrame:
    """The complete trials of the ``k`` best configurations, as glimr returns them.

    Configurations are ranked by a ``statistic`` of ``metric`` over their
    complete folds (glimr's default, the median). Rows are the configurations'
    trials, best configuration first and by fold within one, with two columns
    added: ``config_rank`` (1 is best) and ``config_score`` (the statistic). For
    one row per configuration with mean, std and every split, use
    ``results.table``.

    Parameters
    ----------
    statistic : {"median", "mean", "min", "max"} or callable
        Aggregates a configuration's fold scores (a Series) to one number.
    """
    rows = _check(df, metric, mode, k)
    if not callable(statistic) and statistic not in ("mean", "median", "min", "max"):
        raise ValueError(expected("statistic", "'mean', 'median', 'min', 'max' or a function", statistic))
    rows = rows[rows["status"] == "complete"]
    # a function is called on each configuration's Series, as documented (pandas would swap np.median for its own
    # and warn that this will change)
    scores = rows.groupby("config_enum")[metric].agg(statistic if isinstance(statistic, str) else
                                                     lambda s: statistic(s))
    order = sorted(scores.index, key=lambda c: (-Direction(mode).orient(scores[c]), c))
    order = order[:k] if k else order
    rank = {c: i + 1 for i, c in enumerate(order)}
    out = rows[rows["config_enum"].isin(order)].assign(
        config_rank=lambda d: d["config_enum"].map(rank), config_score=lambda d: d["config_enum"].map(scores))
    return out.sort_values(["config_rank", "cv_index"], kind="stable").reset_index(drop=True)


def read_epochs(exp_dir: str) -> pd.DataFrame:
    """One row per (configuration, fold, epoch) reported in an experiment directory.

    Read from each trial folder's ``result.json``: the validation metrics of every
    epoch a fold reported, finished or still running. A line cut short by a kill
    is skipped, the final report (which repeats the best epoch) is left out, and
    when a fold was trained again (its worker died and Tune retried it), only its
    last attempt is kept.

    Columns: ``config_id, fold, epoch``, the reported metrics, ``score`` (the best
    value of the search's metric so far), then Ray Tune's ``timestamp`` (Unix
    seconds), ``time_total_s`` (seconds since the fold started) and ``worker``
    (``"pid@host"``, as in :func:`read_folds`). Sorted by configuration, fold, epoch.
    """
    rows = []
    for trial_dir, _, meta in _trials(exp_dir):
        attempt: list[dict] = []
        for line in _results(trial_dir):
            epoch = line.get("epoch", line.get("training_iteration"))
            if STATUS in line or not isinstance(epoch, (int, float)):
                continue  # the final report, or not a report of ours
            if attempt and epoch <= attempt[-1]["epoch"]:
                attempt = []  # the fold started again: its last attempt counts
            pid, host = line.get("pid"), line.get("hostname")
            attempt.append({
                "config_id": meta["config_id"],
                "fold": meta["fold"],
                "epoch": int(epoch),
                **{k: v for k, v in line.items()
                   if k not in REPORT_KEYS and isinstance(v, (int, float)) and not isinstance(v, bool)},
                "score": line.get(SCORE),
                "timestamp": line.get("timestamp"),
                "time_total_s": line.get("time_total_s"),
                "worker": f"{pid}@{host}" if pid is not None and host is not None else None,
            })
        rows.extend(attempt)
    if not rows:
        return pd.DataFrame(columns=["config_id", "fold", "epoch", "score", "timestamp", "time_total_s", "worker"])
    df = pd.DataFrame(rows)
    front = ["config_id", "fold", "epoch"]
    back = ["score", "timestamp", "time_total_s", "worker"]
    df = df[[*front, *(c for c in df.columns if c not in front and c not in back), *back]]
    return df.sort_values(["config_id", "fold", "epoch"], kind="stable").reset_index(drop=True)

