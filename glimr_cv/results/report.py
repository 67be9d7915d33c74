"""An experiment's report: one self-contained HTML page.

:func:`write_report` reads an experiment folder (finished, running or
interrupted) and writes ``report.html`` into it: a header (metric, folds,
statuses, fold trainings, whether the run looks finished, running or
interrupted), the leaderboard, the fold table and the plots of
:mod:`glimr_cv.results.plots` as inline PNG images. The page loads nothing from
the network: the CSS is inline, the images are data URIs, there is no script.
"""

from __future__ import annotations

import base64
import datetime
import glob
import html
import io
import math
import os
import socket
import tempfile
import time
from typing import Any

import numpy as np
import pandas as pd

from ..checks import check_type
from .plots import PLOTS, STATUS_COLORS, _as_results

__all__ = ["write_report", "report_html", "run_state", "REPORT_FILE", "RECENT_SECONDS"]

#: The report's file name in the experiment folder.
REPORT_FILE = "report.html"
#: A run whose folder changed within this many seconds, and that has not ended, looks running.
RECENT_SECONDS = 600.0


# ---------------------------------------------------------------------------
# finished, running or interrupted
# ---------------------------------------------------------------------------


def _last_change(path: str) -> float:
    """The newest modification time of the experiment's files (its own and its trials')."""
    newest = 0.0
    patterns = ("*", os.path.join("*", "result.json"), os.path.join("*", "params.json"), os.path.join("*", "error.txt"))
    for pattern in patterns:
        for file in glob.glob(os.path.join(path, pattern)):
            if os.path.basename(file) == REPORT_FILE:
                continue
            try:
                newest = max(newest, os.path.getmtime(file))
            except OSError:  # removed meanwhile
                pass
    return newest


def _process_start(pid: int) -> float | None:
    """When process ``pid`` started (Unix time), where /proc tells; else None."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            ticks = int(f.read().rsplit(")", 1)[1].split()[19])  # field 22, starttime, in clock ticks after boot
        with open("/proc/stat") as f:
            boot = next(int(line.split()[1]) for line in f if line.startswith("btime"))
        return boot + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return None


def _alive(pid: int, reported_at: float | None = None) -> bool:
    """Whether process ``pid`` lives and, where known, is the one that reported at ``reported_at`` (not a reuse)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):  # another user's process (or a system without signals): assume alive
        pass
    started = _process_start(pid)
    return started is None or reported_at is None or started <= reported_at + 2.0


def _running_workers(results) -> dict[str, bool]:
    """``"pid@host"`` of each fold without a final report, on this machine -> whether that process is alive."""
    from .analysis import read_epochs

    folds = results.folds
    if not len(folds) or not os.path.isdir(results.path):
        return {}
    running = {(int(c), int(f)) for c, f, st in zip(folds["config_id"], folds["fold"], folds["status"])
               if st == "running"}
    if not running:
        return {}
    epochs = read_epochs(results.path)
    host = socket.gethostname()
    out = {}
    for (cid, fold), rows in epochs.groupby(["config_id", "fold"]):
        if (int(cid), int(fold)) in running:
            rows = rows[rows["worker"].notna()]
            if len(rows):
                worker = str(rows["worker"].iloc[-1])
                pid, _, where = worker.partition("@")
                if where == host and pid.isdigit():
                    reported = pd.to_numeric(rows["timestamp"], errors="coerce").iloc[-1]
                    out[worker] = _alive(int(pid), None if pd.isna(reported) else float(reported))
    return out


def _run_state(results, recent: float = RECENT_SECONDS, now: float | None = None) -> tuple[str, str]:
    from ..engine.store import FolderError, read_state

    path = results.path
    try:
        scheduler = read_state(path) if os.path.isdir(path) else None
    except FolderError:  # a damaged state: the trial folders tell the rest
        scheduler = None
    folds, table = results.folds, results.table
    running_folds = int((folds["status"] == "running").sum()) if len(folds) else 0
    running_configs = int((table["status"] == "running").sum()) if len(table) else 0
    more = False
    if scheduler is not None:
        try:
            more = scheduler.n_running > 0 or scheduler.can_start_config()
        except AttributeError:  # a scheduler saved by another version
            more = False
    if scheduler is not None and len(table) and not running_folds and not running_configs and not more:
        return "finished", "every configuration has ended and no fold is running"
    if running_folds or running_configs:
        what = (f"{_n(running_folds, 'fold')} without a final report, "
                f"{_n(running_configs, 'configuration')} not ended")
    elif not len(table):
        what = "no fold has started"
    else:
        what = "the searcher may still start configurations"
    workers = _running_workers(results)
    if workers and any(workers.values()):
        alive = sorted(w for w, up in workers.items() if up)
        return "running", f"{what}; {'worker' if len(alive) == 1 else 'workers'} {', '.join(alive[:3])} alive"
    if workers:  # the processes training the unfinished folds, on this machine, are gone
        return "interrupted", f"{what}, and the worker processes of its unfinished folds are gone"
    changed = _last_change(path) if os.path.isdir(path) else 0.0
    age = (time.time() if now is None else now) - changed
    if changed and age <= recent:
        return "running", f"{what}; the folder changed {age:.0f} s ago"
    since = f"for {age / 60:.0f} min" if changed else "ever"
    return "interrupted", f"{what}, and nothing in the folder changed {since}"


def run_state(results, recent: float = RECENT_SECONDS) -> str:
    """Whether an experiment looks ``"finished"``, ``"running"`` or ``"interrupted"``.

    Finished: the searcher's saved state says no fold runs and no configuration
    may start, and every configuration has ended. Otherwise, when folds without a
    final report were trained on this machine: running while one of their worker
    processes is alive, interrupted when they are all gone. Otherwise (between
    folds, or workers on other nodes): running when a file of the folder changed
    in the last ``recent`` seconds, else interrupted.

    Parameters
    ----------
    results : SearchResults or str
        The results, or an experiment folder.
    recent : float
        Seconds since the folder's last change within which an unfinished run is
        still taken as running (a fold reports after each epoch).
    """
    return _run_state(_as_results(results), recent)[0]


# ---------------------------------------------------------------------------
# HTML pieces
# ---------------------------------------------------------------------------

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 24px auto; max-width: 1320px;
       padding: 0 16px; color: #222; background: #fff; }
h1 { font-size: 1.5em; margin-bottom: 4px; }
h2 { font-size: 1.2em; margin-top: 32px; border-bottom: 1px solid #ddd; padding-bottom: 4px; }
.sub { color: #666; margin-top: 0; }
dl.facts { display: grid; grid-template-columns: max-content auto; gap: 4px 16px; margin: 16px 0; }
dl.facts dt { font-weight: 600; color: #444; }
dl.facts dd { margin: 0; }
.state { font-weight: 700; padding: 1px 8px; border-radius: 10px; color: #fff; }
.state-finished { background: #1b9e77; } .state-running { background: #1f77b4; }
.state-interrupted { background: #d62728; }
.scroll { overflow-x: auto; max-height: 720px; overflow-y: auto; border: 1px solid #ddd; }
table { border-collapse: collapse; font-size: 13px; width: 100%; }
th, td { padding: 4px 8px; border-bottom: 1px solid #eee; text-align: left; vertical-align: top; }
th { background: #f5f5f5; position: sticky; top: 0; z-index: 1; white-space: nowrap; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td.na { color: #aaa; text-align: center; }
td.error { color: #b00020; min-width: 260px; overflow-wrap: break-word; font-family: ui-monospace, monospace;
           font-size: 12px; }
tr:hover td { background: #fafafa; }
tr.error-row td { border-top: none; padding-left: 24px; }
.badge { display: inline-block; padding: 0 6px; border-radius: 8px; color: #fff; font-size: 12px; }
figure { margin: 16px 0 28px; }
figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { color: #555; font-size: 13px; margin-top: 4px; }
details { margin: 12px 0; } summary { cursor: pointer; color: #444; }
.note { color: #666; font-style: italic; }
"""


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _missing(value: Any) -> bool:
    if value is None or value is pd.NA or value is pd.NaT:
        return True
    try:
        return isinstance(value, (float, np.floating)) and math.isnan(value)
    except TypeError:
        return False


def _text(value: Any) -> str:
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (float, np.floating)):
        return f"{float(value):.4g}"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    return str(value)


def _td(value: Any, kind: str = "") -> str:
    if _missing(value):
        return '<td class="na">–</td>'
    if kind == "status":
        return f"<td>{_badge(str(value))}</td>"
    if kind == "error":
        return f'<td class="error">{_e(value)}</td>'
    numeric = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))
    return f'<td class="num">{_e(_text(value))}</td>' if numeric else f"<td>{_e(_text(value))}</td>"


def _badge(status: str) -> str:
    color = STATUS_COLORS.get(status, "#6a3d9a")
    return f'<span class="badge" style="background:{color}">{_e(status)}</span>'


def _table(header: list, rows: list[str], table_id: str) -> str:
    """A table; a header entry is a label, or (label, tooltip)."""
    head = "".join(f'<th title="{_e(h[1])}">{_e(h[0])}</th>' if isinstance(h, tuple) else f"<th>{_e(h)}</th>"
                   for h in header)
    body = "\n".join(rows) if rows else f'<tr><td class="na" colspan="{len(header)}">none yet</td></tr>'
    return (f'<div class="scroll"><table id="{table_id}">\n<thead><tr>{head}</tr></thead>\n'
            f"<tbody>\n{body}\n</tbody></table></div>")


def _config_columns(table: pd.DataFrame) -> tuple[list[str], list[str]]:
    """(varying, constant) ``config/<path>`` columns of the table."""
    varying, constant = [], []
    for col in table.columns:
        if isinstance(col, str) and col.startswith("config/"):
            (varying if table[col].dropna().map(repr).nunique() > 1 else constant).append(col)
    return varying, constant


def _short_names(columns: list[str]) -> list[tuple[str, str]]:
    """(label, full path) of config columns: the last part of the path, unless two columns share it."""
    paths = [c.removeprefix("config/") for c in columns]
    last = [p.split("/")[-1] for p in paths]
    return [(short if last.count(short) == 1 else path, path) for short, path in zip(last, paths)]


def _leaderboard(results) -> str:
    table, metric, k = results.table, results.metric, int(results.cv_folds)
    if not len(table):
        return _table(["rank", "config", "status"], [], "leaderboard")
    varying, constant = _config_columns(table)
    others = [c.removeprefix("mean_") for c in table.columns
              if isinstance(c, str) and c.startswith("mean_") and c != f"mean_{metric}"]
    splits = [f"split{i}_{metric}" for i in range(k) if f"split{i}_{metric}" in table]
    header = ["rank", "config", "status", "folds", f"{metric} mean ± std", *[s.split("_")[0] for s in splits],
              *[f"mean {m}" for m in others], *_short_names(varying)]
    rows = []
    for row in table.to_dict("records"):
        mean, std = row.get(f"mean_{metric}"), row.get(f"std_{metric}")
        score = ('<td class="na">–</td>' if _missing(mean)
                 else f'<td class="num">{_e(f"{mean:.4f} ± {std:.4f}")}</td>')
        cells = [_td(row.get("rank")), _td(row.get("config_id")), _td(row.get("status"), "status"),
                 f'<td class="num">{_e(row.get("folds_done", 0))}/{k}</td>', score,
                 *[_td(row.get(s)) for s in splits], *[_td(row.get(f"mean_{m}")) for m in others],
                 *[_td(row.get(c)) for c in varying]]
        rows.append(f'<tr data-config="{_e(row.get("config_id"))}">' + "".join(cells) + "</tr>")
        if not _missing(row.get("error")):  # under its configuration, the width of the table
            rows.append(f'<tr class="error-row"><td class="error" colspan="{len(header)}">error: '
                        f'{_e(row["error"])}</td></tr>')
    out = _table(header, rows, "leaderboard")
    if constant:
        first = table.iloc[0]
        items = "".join(f"<tr><td>{_e(c.removeprefix('config/'))}</td>{_td(first[c])}</tr>" for c in constant)
        out += (f"<details><summary>{len(constant)} settings shared by every configuration</summary>"
                f'<table id="shared-settings"><thead><tr><th>setting</th><th>value</th></tr></thead>'
                f"<tbody>{items}</tbody></table></details>")
    return out


def _fold_table(results) -> str:
    folds = results.folds
    statuses = dict(zip(results.table["config_id"], results.table["status"])) if len(results.table) else {}
    header = ["config", "fold", "status", "configuration", "score", "best epoch", "epochs", "fit s", "started at s",
              "worker", "error"]
    rows = []
    if len(folds):
        starts = pd.to_numeric(folds["started_at"], errors="coerce") if "started_at" in folds else None
        t0 = starts.min() if starts is not None and starts.notna().any() else None
        for i, row in enumerate(folds.to_dict("records")):
            started = starts.iloc[i] - t0 if t0 is not None and pd.notna(starts.iloc[i]) else None
            cells = [_td(row.get("config_id")), _td(row.get("fold")), _td(row.get("status"), "status"),
                     _td(statuses.get(row.get("config_id")), "status"), _td(row.get("score")),
                     _td(row.get("best_epoch")), _td(row.get("epochs")), _td(row.get("fit_seconds")),
                     _td(started), _td(row.get("worker")), _td(row.get("error"), "error")]
            rows.append(f'<tr data-config="{_e(row.get("config_id"))}" data-fold="{_e(row.get("fold"))}">'
                        + "".join(cells) + "</tr>")
    return _table(header, rows, "folds")


def _png(fig, dpi: int = 100) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


def _plots(results) -> str:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return '<p class="note">No plots: matplotlib is not installed (pip install "glimr_cv[plots]").</p>'
    parts = []
    for stem, title, plot in PLOTS:
        try:
            data = base64.b64encode(_png(plot(results))).decode("ascii")
        except Exception as err:  # one broken plot must not cost the whole report
            parts.append(f'<p class="note" id="plot-{stem}">{_e(title)}: could not be drawn '
                         f"({_e(type(err).__name__)}: {_e(err)})</p>")
            continue
        parts.append(f'<figure id="plot-{stem}"><img src="data:image/png;base64,{data}" alt="{_e(title)}">'
                     f"<figcaption>{_e(title)}</figcaption></figure>")
    return "\n".join(parts)


def _heatmap(results) -> str:
    """The attention heatmap of a validation slide, when a MIL search saved one (``heatmap.json``)."""
    import json

    file = os.path.join(results.path, "heatmap.json")
    if not os.path.exists(file):
        return ""
    try:
        with open(file) as f:
            record = json.load(f)
        import matplotlib.pyplot as plt

        from ..mil.heatmaps import plot_heatmap

        panels = [("attention", record["attention"])]
        if record.get("contribution") is not None:
            panels.append(("contribution", record["contribution"]))
        fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4.6), squeeze=False)
        for ax, (label, values) in zip(axes[0], panels):
            plot_heatmap(record["coords"], values, ax=ax, label=label, cmap="magma" if label == "attention" else "coolwarm",
                         title=f"{label} of the tiles")
        fig.tight_layout()
        data = base64.b64encode(_png(fig)).decode("ascii")
        plt.close(fig)
    except Exception as err:  # a damaged file or no matplotlib: the rest of the report stands
        return f'<h2>Heatmap</h2><p class="note" id="heatmap">The heatmap could not be drawn ({_e(type(err).__name__)}: {_e(err)})</p>'
    slides = ", ".join(record.get("slides") or [])
    caption = (f"Validation slide {slides} of fold {record['fold']}, seen by configuration {record['config_id']}'s "
               f"model of that fold: each tile's attention weight"
               + (" and its contribution to the output (attention x the head's value of the tile)"
                  if record.get("contribution") is not None else ""))
    return (f'<h2>Heatmap</h2>\n<figure id="heatmap"><img src="data:image/png;base64,{data}" alt="heatmap">'
            f"<figcaption>{_e(caption)}</figcaption></figure>")


def _n(count: int, noun: str) -> str:
    return f"{count} {noun}" + ("" if count == 1 else "s")


def _counts(values: pd.Series) -> str:
    counts = values.value_counts()
    return ", ".join(f"{n} {s}" for s, n in counts.items()) if len(counts) else "none yet"


# ---------------------------------------------------------------------------
# the page
# ---------------------------------------------------------------------------


def report_html(results, recent: float = RECENT_SECONDS) -> str:
    """The report of ``results`` (or of an experiment folder) as one HTML string.

    See :func:`write_report`.
    """
    results = _as_results(results)
    name = os.path.basename(os.path.normpath(results.path)) or results.path
    state, why = _run_state(results, recent)
    table, folds, metric = results.table, results.folds, results.metric
    best = results.best_config_id
    if best is not None:
        row = table[table["config_id"] == best].iloc[0]
        best_text = (f"configuration {best}: {metric} {row[f'mean_{metric}']:.4f} ± {row[f'std_{metric}']:.4f} "
                     f"over {int(row['folds_done'])} folds")
    else:
        best_text = "none: no configuration is complete yet"
    saved = int(results.fold_trainings_saved or 0)
    started = max(int(results.fold_trainings or 0), len(folds))  # the saved scheduler may lag behind the folder
    generated = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M:%S %Z")
    facts = [
        ("experiment", results.path),
        ("run", f'<span class="state state-{state}">{_e(state)}</span> <span class="sub">({_e(why)})</span>'),
        ("metric", f"{metric}, mode {results.mode} ({'higher' if results.mode == 'max' else 'lower'} is better)"),
        ("folds", f"{int(results.cv_folds)} per configuration"),
        ("configurations", f"{len(table)}: {_counts(table['status']) if len(table) else 'none yet'}"),
        ("fold trainings", f"{started} started ({_counts(folds['status']) if len(folds) else 'none reported yet'}); "
                           f"racing saved {saved}"),
        ("best", best_text),
        ("generated", generated),
    ]
    dl = "\n".join(f"<dt>{_e(k)}</dt><dd>{v if k == 'run' else _e(v)}</dd>" for k, v in facts)
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{_e(f"glimr_cv report: {name}")}</title>
<style>{_CSS}</style>
</head>
<body>
<h1>glimr_cv report: {_e(name)}</h1>
<p class="sub">Cross-validated search of {_e(metric)}, generated {_e(generated)}.</p>
<dl class="facts" id="header">
{dl}
</dl>
<h2>Leaderboard</h2>
<p class="sub">One row per configuration, best first: complete configurations by rank, then the others by the mean of
their finished folds. Splits are each fold's {_e(metric)} at its best epoch.</p>
{_leaderboard(results)}
<h2>Plots</h2>
{_plots(results)}
{_heatmap(results)}
<h2>Folds</h2>
<p class="sub">One row per (configuration, fold) training; "started at" is seconds after the first fold started.</p>
{_fold_table(results)}
</body>
</html>
"""


def write_report(exp_dir, path: str | None = None) -> str:
    """Write the report of an experiment folder as one self-contained HTML page.

    The page has a header (experiment, metric and mode, folds, configuration and
    fold statuses, fold trainings and those racing saved, when it was generated,
    and whether the run looks finished, running or interrupted), the leaderboard
    (``results.table``), the four plots of :mod:`glimr_cv.results.plots` and the
    fold table (``results.folds``). It needs no network: inline CSS, images as
    data URIs, no script. It works on a finished, running or interrupted
    experiment; run it again for a fresh view of a running one.

    Parameters
    ----------
    exp_dir : str or SearchResults
        The experiment folder (``local_dir/name``), or its results.
    path : str, optional
        The file to write; default ``report.html`` in the experiment folder. A
        folder puts ``report.html`` into it.

    Returns
    -------
    str
        The absolute path written.
    """
    check_type("path", path, (str, os.PathLike), "an HTML file or a folder", allow_none=True)
    results = _as_results(exp_dir)
    if path is None:
        path = os.path.join(results.path, REPORT_FILE)
    path = os.path.abspath(os.path.expanduser(os.fspath(path)))
    if os.path.isdir(path):
        path = os.path.join(path, REPORT_FILE)
    page = report_html(results)
    folder = os.path.dirname(path)
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".report-", suffix=".html", dir=folder)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(page)
        os.chmod(tmp, 0o644)  # mkstemp's file is private; a report is for reading
        os.replace(tmp, path)  # a reader never sees half a page
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return path
