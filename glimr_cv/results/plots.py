"""Plots of a search, each a matplotlib ``Figure``: fold scores, the racing timeline,
learning curves and the score against each searched hyperparameter.

Every function takes a :class:`~glimr_cv.results.SearchResults` or an experiment
folder (read with :func:`glimr_cv.load_results`), and draws what exists in a
finished, running or interrupted experiment; where nothing has finished yet, the
axes say so. matplotlib (``pip install 'glimr_cv[plots]'``) is imported when a plot
is drawn, not with ``glimr_cv``. Figures are drawn on matplotlib's Agg canvas,
without pyplot: no display or global figure list is needed (Jupyter shows a
returned figure; ``fig.savefig(path)`` writes it).

Artists carry a ``gid`` naming what they show (``"fold-scores"``, ``"fold-bar"``,
``"curve"``, ...), so a figure's content can be inspected.
"""

from __future__ import annotations

import math
import os
from typing import Any, Callable

import numpy as np
import pandas as pd

from ..checks import check_id, check_int, check_type, expected
from ..direction import Direction

__all__ = ["plot_fold_scores", "plot_timeline", "plot_learning_curves", "plot_hyperparameters", "save_plots",
           "PLOTS", "NO_FOLDS", "STATUS_COLORS"]

#: What an axes says when there is nothing to draw yet.
NO_FOLDS = "no finished folds yet"

#: Colour of each configuration status.
STATUS_COLORS = {
    "complete": "#1b9e77",
    "pruned": "#e6892e",
    "failed": "#d62728",
    "running": "#1f77b4",
    "incomplete": "#8c8c8c",
}
_OTHER = "#6a3d9a"


def _color(status: str) -> str:
    return STATUS_COLORS.get(status, _OTHER)


def _as_results(results: Any):
    """A :class:`SearchResults`, loading an experiment folder when given a path."""
    if isinstance(results, (str, os.PathLike)):
        from .summary import load_results

        return load_results(os.fspath(results))
    if not hasattr(results, "table") or not hasattr(results, "folds"):
        raise TypeError(expected("results", "a SearchResults or an experiment folder", got=type(results).__name__))
    return results


def _figure(width: float, height: float):
    """A Figure on the Agg canvas, outside pyplot (no display, no global state)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _say(ax, text: str = NO_FOLDS) -> None:
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", fontsize=12, color="#555555",
            gid="empty", bbox={"boxstyle": "round", "facecolor": "#f4f4f4", "edgecolor": "#cccccc"})


def _better(mode: str) -> str:
    return Direction(mode).words


def _number(value) -> float:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return math.nan
    return value


def _fold_scores(results) -> pd.Series:
    """Each fold row's score: ``score``, else the search metric's column."""
    folds = results.folds
    if not len(folds):
        return pd.Series(dtype=float)
    score = pd.to_numeric(folds["score"], errors="coerce") if "score" in folds else pd.Series(np.nan, index=folds.index)
    if results.metric in folds:
        score = score.fillna(pd.to_numeric(folds[results.metric], errors="coerce"))
    return score.astype(float)


def _statuses(results) -> dict:
    table = results.table
    if not len(table):
        return {}
    return {int(c): str(s) for c, s in zip(table["config_id"], table["status"])}


def _legend(ax, **kwargs) -> None:
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        ax.legend(handles, labels, fontsize=8, **kwargs)


# ---------------------------------------------------------------------------
# fold scores per configuration
# ---------------------------------------------------------------------------


def plot_fold_scores(results, max_configs: int = 40):
    """Each configuration's fold scores, one point per fold, its mean marked.

    Configurations run along the x axis in the table's order (complete ones by
    rank, then the others by mean), at most ``max_configs`` of them. Points are
    coloured by the configuration's status (pruned ones are orange, and so is
    their tick label); a running fold shows its best score so far as a hollow
    circle, a failed fold a red cross at the bottom of the axes.

    Parameters
    ----------
    results : SearchResults or str
        The results, or an experiment folder.
    max_configs : int or None
        Most configurations shown; None shows all.

    Returns
    -------
    matplotlib.figure.Figure
    """
    check_int("max_configs", max_configs, 1, allow_none=True)
    results = _as_results(results)
    table, folds, metric = results.table, results.folds, results.metric
    order = [int(c) for c in table["config_id"]][:max_configs] if len(table) else []
    status = _statuses(results)
    ranks = dict(zip(table["config_id"], table["rank"])) if len(table) and "rank" in table else {}
    fig = _figure(max(6.0, min(16.0, 2.0 + 0.45 * len(order))), 4.6)
    ax = fig.add_subplot()
    shown = f"top {len(order)} of {len(table)} configurations" if len(table) > len(order) else "configurations"
    ax.set_title(f"{metric} per fold ({_better(results.mode)}); {shown} by rank", fontsize=11, wrap=True)
    ax.set_ylabel(metric)
    ax.set_xlabel("configuration")
    position = {cid: i for i, cid in enumerate(order)}
    scores = _fold_scores(results)
    k = max(1, int(results.cv_folds))
    step = min(0.12, 0.6 / k)

    def x_of(cid, fold):
        return position[cid] + (float(fold) - (k - 1) / 2) * step

    done = pd.DataFrame(columns=["config_id", "fold", "score"])
    if len(folds):
        rows = folds.assign(score_=scores)
        rows = rows[rows["config_id"].isin(position)]
        done = rows[(rows["status"] == "complete") & rows["score_"].notna()]
        for st in dict.fromkeys(status.get(int(c), "running") for c in done["config_id"]):
            mine = done[[status.get(int(c), "running") == st for c in done["config_id"]]]
            ax.scatter([x_of(int(c), f) for c, f in zip(mine["config_id"], mine["fold"])], mine["score_"],
                       s=36, color=_color(st), edgecolor="white", linewidth=0.5, zorder=3,
                       label=f"fold of a {st} configuration", gid="fold-scores")
        running = rows[(rows["status"] == "running") & rows["score_"].notna()]
        if len(running):
            ax.scatter([x_of(int(c), f) for c, f in zip(running["config_id"], running["fold"])], running["score_"],
                       s=36, facecolor="none", edgecolor=_color("running"), linewidth=1.2, zorder=3,
                       label="running fold (best so far)", gid="running-folds")
        failed = rows[rows["status"] == "failed"]
        if len(failed):
            ax.scatter([x_of(int(c), f) for c, f in zip(failed["config_id"], failed["fold"])], [0.03] * len(failed),
                       transform=ax.get_xaxis_transform(), marker="x", s=40, color=_color("failed"), zorder=3,
                       label="failed fold", gid="failed-folds")
        means = done.groupby("config_id")["score_"].mean()
        if len(means):
            ax.scatter([position[int(c)] for c in means.index], means.to_numpy(), marker="_", s=500, linewidth=2,
                       color="black", zorder=4, label="mean of finished folds", gid="means")
    if done.empty:
        _say(ax)
    ax.set_xlim(-0.6, max(len(order), 1) - 0.4)
    ax.set_xticks(range(len(order)))
    labels = []
    for cid in order:
        rank = ranks.get(cid)
        st = status.get(cid, "running")
        labels.append(f"c{cid}\n#{int(rank)}" if rank is not None and not pd.isna(rank) else f"c{cid}\n{st}")
    ax.set_xticklabels(labels, fontsize=8)
    for tick, cid in zip(ax.get_xticklabels(), order):
        if status.get(cid) != "complete":
            tick.set_color(_color(status.get(cid, "running")))
    for cid in order:
        if status.get(cid) == "pruned":
            ax.axvspan(position[cid] - 0.45, position[cid] + 0.45, color=_color("pruned"), alpha=0.08, zorder=0,
                       gid="pruned-band")
    ax.grid(axis="y", alpha=0.3)
    _legend(ax, loc="best")
    return fig


# ---------------------------------------------------------------------------
# racing timeline
# ---------------------------------------------------------------------------


def _fold_spans(results, epochs: pd.DataFrame | None) -> pd.DataFrame:
    """One row per fold with a known time span: worker, start, end, whether it has a final report."""
    folds = results.folds
    spans = []
    timed = set()
    if len(folds):
        for row in folds.itertuples(index=False):
            start, end = _number(getattr(row, "started_at", None)), _number(getattr(row, "ended_at", None))
            worker = getattr(row, "worker", None)
            if math.isfinite(start) and math.isfinite(end) and isinstance(worker, str):
                spans.append({"config_id": int(row.config_id), "fold": int(row.fold), "status": row.status,
                              "worker": worker, "start": start, "end": end, "final": True})
                timed.add((int(row.config_id), int(row.fold)))
    if epochs is not None and len(epochs):
        fold_status = ({(int(c), int(f)): s for c, f, s in zip(folds["config_id"], folds["fold"], folds["status"])}
                       if len(folds) else {})
        for (cid, fold), rows in epochs.groupby(["config_id", "fold"]):
            key = (int(cid), int(fold))
            if key in timed:
                continue
            stamps = pd.to_numeric(rows["timestamp"], errors="coerce")
            elapsed = pd.to_numeric(rows["time_total_s"], errors="coerce")
            start = (stamps - elapsed).min()
            end = stamps.max()
            worker = rows["worker"].dropna()
            if not (math.isfinite(_number(start)) and math.isfinite(_number(end))) or worker.empty:
                continue
            spans.append({"config_id": key[0], "fold": key[1], "status": fold_status.get(key, "running"),
                          "worker": str(worker.iloc[-1]), "start": float(start), "end": float(max(end, start)),
                          "final": False})
    spans = pd.DataFrame(spans, columns=["config_id", "fold", "status", "worker", "start", "end", "final"])
    # Ray's timestamps are whole seconds: a span read from them must not start before the worker's previous fold ended
    for i in spans.index[~spans["final"].astype(bool)]:
        before = spans[(spans["worker"] == spans.at[i, "worker"]) & spans["final"].astype(bool)
                       & (spans["start"] <= spans.at[i, "start"])]
        if len(before):
            spans.at[i, "start"] = min(max(spans.at[i, "start"], before["end"].max()), spans.at[i, "end"])
    return spans


def plot_timeline(results):
    """The racing timeline: which fold trained when, on which worker.

    One lane per worker process (a fold row's ``worker``), a bar per fold from
    its ``started_at`` to its ``ended_at``, labelled ``c<config>/f<fold>`` and
    coloured by its configuration's final status. A fold still running (or cut
    off by a kill) has no final report: its bar spans its reported epochs and is
    hatched. A black triangle marks when each pruned configuration was stopped: the
    end of its last fold.

    Parameters
    ----------
    results : SearchResults or str
        The results, or an experiment folder.

    Returns
    -------
    matplotlib.figure.Figure
    """
    from matplotlib.patches import Patch

    from .analysis import read_epochs

    results = _as_results(results)
    status = _statuses(results)
    epochs = read_epochs(results.path) if os.path.isdir(results.path) else None
    spans = _fold_spans(results, epochs)
    workers = list(dict.fromkeys(spans.sort_values("start")["worker"])) if len(spans) else []
    fig = _figure(12.0, max(2.8, 1.6 + 0.55 * len(workers)))
    ax = fig.add_subplot()
    n_folds = len(results.folds)
    untimed = n_folds - len(spans)
    title = (f"Racing timeline: {len(spans)} fold training{'s' * (len(spans) != 1)} on {len(workers)} "
             f"worker{'s' * (len(workers) != 1)}")
    if untimed > 0:
        title += f" ({untimed} started without a report yet)"
    ax.set_title(title, fontsize=11, wrap=True)
    ax.set_xlabel("seconds since the first fold started")
    if spans.empty:
        _say(ax)
        ax.set_yticks([])
        return fig
    t0 = spans["start"].min()
    seconds_per_point = max(spans["end"].max() - t0, 1e-3) / (fig.get_figwidth() * 72 * 0.7)  # axes ~70% wide

    def room(text: str) -> float:  # seconds of x axis that ``text`` needs at fontsize 7
        return (len(text) * 7 * 0.62 + 4) * seconds_per_point
    lane = {w: i for i, w in enumerate(workers)}
    seen = {}
    for row in spans.sort_values(["start", "config_id", "fold"]).itertuples(index=False):
        st = status.get(row.config_id, "running")
        y, left, width = lane[row.worker], row.start - t0, max(row.end - row.start, 1e-3)
        hatch = None if row.final else "//"
        if row.status == "failed":
            hatch = "xx"
        bars = ax.barh(y, width, left=left, height=0.62, color=_color(st), edgecolor="white", linewidth=0.8,
                       hatch=hatch, alpha=1.0 if row.final else 0.75)
        for patch in bars.patches:
            patch.set_gid("fold-bar")
        label = f"c{row.config_id}/f{row.fold}"
        if width >= room(label):  # a label only where it fits in its bar
            ax.text(left + width / 2, y, label, ha="center", va="center", fontsize=7,
                    color="white" if row.final else "black", clip_on=True, gid="fold-label")
        seen[st] = True
    ends = spans.groupby("config_id")["end"].max()
    stops = [(cid, t) for cid, t in ends.items() if status.get(int(cid)) == "pruned"]
    if stops:
        last = spans.loc[spans.groupby("config_id")["end"].idxmax()].set_index("config_id")
        ax.scatter([t - t0 for _, t in stops], [lane[last.loc[cid, "worker"]] - 0.4 for cid, _ in stops],
                   marker="v", s=55, color="black", zorder=5, gid="pruned-stop",
                   label="configuration pruned (end of its last fold)")
        free = {}  # per lane, where the last label ended
        for cid, t in sorted(stops, key=lambda stop: stop[1]):
            text, y = f"c{cid} pruned", lane[last.loc[cid, "worker"]]
            if t - t0 - room(text) / 2 < free.get(y, -math.inf):
                continue  # it would overlap the previous label of this lane: the marker alone says it
            free[y] = t - t0 + room(text) / 2
            ax.annotate(text, (t - t0, y - 0.4), xytext=(0, 5),
                        textcoords="offset points", ha="center", fontsize=7, gid="pruned-label")
    ax.set_yticks(range(len(workers)))
    ax.set_yticklabels([f"worker {i + 1}\n{w}" for i, w in enumerate(workers)], fontsize=8)
    ax.set_ylim(len(workers) - 0.45, -0.95)  # first worker on top, room for the pruned marks
    ax.set_xlim(0, (spans["end"].max() - t0) * 1.02 + 1e-3)
    ax.grid(axis="x", alpha=0.3)
    handles = [Patch(color=_color(st), label=f"{st} configuration") for st in STATUS_COLORS if st in seen]
    if (~spans["final"]).any():
        handles.append(Patch(facecolor="white", edgecolor="black", hatch="//", label="no final report (running)"))
    extra, labels = ax.get_legend_handles_labels()
    ax.legend(handles + extra, [h.get_label() for h in handles] + labels, fontsize=8, loc="upper left",
              bbox_to_anchor=(1.005, 1.0))
    return fig


# ---------------------------------------------------------------------------
# learning curves
# ---------------------------------------------------------------------------


def plot_learning_curves(results, config_id: int | None = None):
    """The validation metric per epoch of the best configuration, one line per fold.

    The metric is ``results.metric``; each fold's best epoch (its checkpoint) is
    marked with a star. Without a complete configuration, the leading one (the
    table's first with a reported epoch) is drawn.

    Parameters
    ----------
    results : SearchResults or str
        The results, or an experiment folder.
    config_id : int, optional
        Another configuration to draw.

    Returns
    -------
    matplotlib.figure.Figure
    """
    from matplotlib.ticker import MaxNLocator

    from .analysis import read_epochs

    results = _as_results(results)
    metric, mode = results.metric, results.mode
    epochs = read_epochs(results.path) if os.path.isdir(results.path) else pd.DataFrame()
    if metric not in epochs:
        epochs = epochs.iloc[0:0]
    status = _statuses(results)
    cid, why = (None if config_id is None else check_id("config_id", config_id, results.configs)), "chosen"
    if cid is None:
        cid, why = results.best_config_id, "best"
    if cid is None:
        reported = set(epochs["config_id"]) if len(epochs) else set()
        leading = [int(c) for c in results.table["config_id"] if int(c) in reported] if len(results.table) else []
        cid, why = (leading[0], "leading; none is complete yet") if leading else (None, None)
    fig = _figure(8.0, 4.6)
    ax = fig.add_subplot()
    ax.set_xlabel("epoch")
    ax.set_ylabel(metric)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    mine = epochs[epochs["config_id"] == cid] if cid is not None and len(epochs) else epochs.iloc[0:0]
    if cid is None or mine.empty:
        ax.set_title(f"Learning curves ({metric}, {_better(mode)})", fontsize=11)
        _say(ax)
        return fig
    row = results.table[results.table["config_id"] == cid]
    mean = _number(row[f"mean_{metric}"].iloc[0]) if len(row) and f"mean_{metric}" in row else math.nan
    summary = f", mean {mean:.4f}" if math.isfinite(mean) else ""
    ax.set_title(f"Learning curves of configuration c{cid} ({why}, {status.get(cid, 'running')}{summary})\n"
                 f"validation {metric} per epoch, {_better(mode)}", fontsize=10)
    folds = results.folds
    best_epochs = {}
    if len(folds):
        rows = folds[folds["config_id"] == cid]
        best_epochs = {int(f): _number(b) for f, b in zip(rows["fold"], rows["best_epoch"])}
    fold_status = ({int(f): s for f, s in zip(folds[folds["config_id"] == cid]["fold"],
                                              folds[folds["config_id"] == cid]["status"])} if len(folds) else {})
    stars = ([], [])
    for fold, curve in mine.groupby("fold"):
        curve = curve.sort_values("epoch")
        values = pd.to_numeric(curve[metric], errors="coerce")
        st = fold_status.get(int(fold), "running")
        label = f"fold {int(fold)}" + ("" if st == "complete" else f" ({st})")
        (line,) = ax.plot(curve["epoch"], values, marker="o", markersize=3, linewidth=1.5, label=label,
                          linestyle="-" if st == "complete" else "--", gid="curve")
        best = best_epochs.get(int(fold), math.nan)
        if not math.isfinite(best) and values.notna().any():
            best = float(curve["epoch"].loc[values.idxmin() if Direction(mode).ascending else values.idxmax()])
        at = values[curve["epoch"] == best]
        if math.isfinite(best) and len(at) and pd.notna(at.iloc[0]):
            stars[0].append(best)
            stars[1].append(float(at.iloc[0]))
            ax.scatter([best], [float(at.iloc[0])], marker="*", s=140, color=line.get_color(), edgecolor="black",
                       linewidth=0.6, zorder=4, gid="best-epoch")
    if stars[0]:
        ax.scatter([], [], marker="*", s=140, color="white", edgecolor="black", label="best epoch")
    ax.grid(alpha=0.3)
    _legend(ax, loc="best")
    return fig


# ---------------------------------------------------------------------------
# score against each hyperparameter
# ---------------------------------------------------------------------------


def _searched_columns(table: pd.DataFrame) -> list[str]:
    """The ``config/<path>`` columns whose value differs between configurations."""
    columns = []
    for col in table.columns:
        if isinstance(col, str) and col.startswith("config/"):
            values = table[col].dropna()
            if values.map(repr).nunique() > 1:
                columns.append(col)
    return columns


def _is_numeric(values: pd.Series) -> bool:
    return all(isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_))
               for v in values)


def plot_hyperparameters(results, max_params: int = 12):
    """The score (CV mean of ``results.metric``) against each searched hyperparameter.

    One panel per ``config/<path>`` column of ``results.table`` that varies:
    numeric ones as a scatter (a log axis for positive values spanning more than
    two decades, such as a learning rate), categorical ones by category. Complete
    configurations are filled points, the others (pruned, running, ...) hollow in
    their status colour; the best configuration is a star.

    Parameters
    ----------
    results : SearchResults or str
        The results, or an experiment folder.
    max_params : int or None
        Most panels drawn; None draws all.

    Returns
    -------
    matplotlib.figure.Figure
    """
    check_int("max_params", max_params, 1, allow_none=True)
    results = _as_results(results)
    table, metric = results.table, results.metric
    columns = _searched_columns(table)[:max_params] if len(table) else []
    score_col = f"mean_{metric}"
    scores = (pd.to_numeric(table[score_col], errors="coerce") if score_col in table
              else pd.Series(np.nan, index=table.index))
    n = max(1, len(columns))
    ncols = min(3, n)
    nrows = math.ceil(n / ncols)
    fig = _figure(4.2 * ncols + 0.6, 3.3 * nrows + 0.7)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    fig.suptitle(f"CV mean of {metric} against each searched hyperparameter ({_better(results.mode)})", fontsize=11,
                 wrap=True)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    if not columns:
        ax = axes.flat[0]
        ax.set_ylabel(f"mean {metric}")
        _say(ax, NO_FOLDS if scores.notna().sum() == 0 else "no hyperparameter varies between configurations")
        return fig
    best = results.best_config_id
    status = table["status"].astype(str).to_numpy() if len(table) else np.array([])
    for i, (ax, col) in enumerate(zip(axes.flat, columns)):
        ax.set_title(col.removeprefix("config/"), fontsize=10)
        if i % ncols == 0:
            ax.set_ylabel(f"mean {metric}")
        present = table[col].notna() & scores.notna()
        values = table.loc[present, col]
        numeric = _is_numeric(table[col].dropna())
        if numeric:
            x = values.astype(float).to_numpy()
            all_values = table[col].dropna().astype(float)
            if (all_values > 0).all() and all_values.max() / all_values.min() > 100:
                ax.set_xscale("log")
            else:
                lo, hi = all_values.min(), all_values.max()
                pad = (hi - lo) * 0.08 or 0.5
                ax.set_xlim(lo - pad, hi + pad)
        else:
            categories = sorted(table[col].dropna().map(str).unique())
            where = {c: j for j, c in enumerate(categories)}
            offsets = (table.loc[present].groupby(values.map(str)).cumcount().to_numpy() if len(values) else
                       np.array([], dtype=int))
            x = np.array([where[str(v)] for v in values], dtype=float)
            x = x + (offsets % 7 - 3) * 0.04 if len(x) else x
            ax.set_xticks(range(len(categories)))
            ax.set_xticklabels([c[:14] for c in categories], fontsize=8, rotation=30 if len(categories) > 4 else 0)
            ax.set_xlim(-0.6, len(categories) - 0.4)
        y = scores[present].to_numpy()
        st = status[present.to_numpy()] if len(status) else np.array([])
        for s in dict.fromkeys(st):
            pick = st == s
            filled = s == "complete"
            ax.scatter(x[pick], y[pick], s=34, color=_color(s) if filled else "none", edgecolor=_color(s),
                       linewidth=1.2, zorder=3, gid="points",
                       label=None if i else (s if filled else f"{s} (mean of its finished folds)"))
        if best is not None:
            pick = (table.loc[present, "config_id"] == best).to_numpy()
            if pick.any():
                ax.scatter(x[pick], y[pick], marker="*", s=200, color="gold", edgecolor="black", linewidth=0.7,
                           zorder=4, label="best" if i == 0 else None, gid="best")
        if not len(y):
            _say(ax)
        ax.grid(alpha=0.3)
    _legend(axes.flat[0], loc="best")
    return fig


# ---------------------------------------------------------------------------
# all of them
# ---------------------------------------------------------------------------

#: The plots :func:`save_plots` writes and the report shows: (file stem, title, function).
PLOTS: tuple[tuple[str, str, Callable], ...] = (
    ("fold_scores", "Fold scores per configuration", plot_fold_scores),
    ("timeline", "Racing timeline", plot_timeline),
    ("learning_curves", "Learning curves of the best configuration", plot_learning_curves),
    ("hyperparameters", "Score against each searched hyperparameter", plot_hyperparameters),
)


def save_plots(results, folder: str, dpi: int = 100) -> list[str]:
    """Write every plot as a PNG file into ``folder`` (created if needed).

    Parameters
    ----------
    results : SearchResults or str
        The results, or an experiment folder.
    folder : str
        Where the files go: ``fold_scores.png``, ``timeline.png``,
        ``learning_curves.png`` and ``hyperparameters.png``.

    Returns
    -------
    list of str
        The paths written, in that order.
    """
    check_type("folder", folder, (str, os.PathLike), "a folder")
    check_int("dpi", dpi, 1)
    results = _as_results(results)
    os.makedirs(folder, exist_ok=True)
    paths = []
    for stem, _, plot in PLOTS:
        path = os.path.join(folder, f"{stem}.png")
        plot(results).savefig(path, dpi=dpi, format="png")
        paths.append(path)
    return paths
