"""Plots of a search (glimr_cv.results.plots) and read_epochs, on experiment folders written by hand.

The folders hold what a real run leaves (see glimr_cv/engine/trainable.py): a pickled
Search, trial folders with params.json, result.json lines as Ray Tune writes them and
checkpoint_* folders with fold.json, and the searcher's saved fold scheduler. Kinds:

* finished: 5 configurations on 3 folds, 2 workers: c0 and c1 complete, c2 pruned after
  one fold, c3 after two, c4 failed (its error holds ``<`` and ``&``);
* running: no fold has finished (no checkpoint, no saved searcher state yet): two folds
  report epochs (one ends in a line cut short), one has started without a report;
* interrupted: killed mid-run, nothing changed for hours: c0 complete, c1 has a finished
  fold and one cut short, c2 pruned, c3's worker died (error.txt), which the saved
  searcher state does not know yet;
* min: mode "min" on "loss", 2 folds; single: cv_folds=None, one fold per configuration;
  empty: the saved Search alone.

The real-run check of the same plots is in tests/test_report.py.
"""

import json
import os
import pickle
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("matplotlib")

from glimr_cv.engine.scheduler import ConfigState, FoldScheduler  # noqa: E402
from glimr_cv.engine.store import save_search  # noqa: E402
from glimr_cv.results import plots  # noqa: E402
from glimr_cv.results.analysis import read_epochs  # noqa: E402
from glimr_cv.search import Search, load_results  # noqa: E402
from fake_experiment import write_trial  # noqa: E402

T0 = 1_700_000_000.0
ERROR = "ValueError: shapes <None, 10> & <None, 3> are incompatible"
LEARNING_RATES = (1e-4, 1e-3, 1e-2, 1e-1, 3e-3)


def params_of(cid):
    return {
        "units": (16, 32, 64)[cid % 3],
        "layers": 1,
        "activation": ("relu", "gelu")[cid % 2],
        "optimization": {"method": ("adam", "adam", "rms", "rms", "adam")[cid % 5],
                         "learning_rate": LEARNING_RATES[cid % 5], "epochs": 3},
        "data": {"batch_size": 64},
    }


def _metrics(value, metric):
    other = round(1.0 - value, 6)
    acc, loss = (other, value) if metric == "loss" else (value, other)
    return {"digit_accuracy": acc, "digit_loss": loss, "loss": loss}


def _ray(trial_id, iteration, elapsed, pid, host, start, base=T0):
    return {"timestamp": int(base + start + elapsed), "checkpoint_dir_name": None, "done": False,
            "training_iteration": iteration, "trial_id": trial_id, "date": "2023-11-14_22-13-20",
            "time_this_iter_s": 0.5, "time_total_s": elapsed, "pid": pid, "hostname": host, "node_ip": "127.0.0.1",
            "time_since_restore": elapsed, "iterations_since_restore": iteration}


def write_fold(exp, cid, fold, values, kind="complete", *, metric="digit_accuracy", mode="max", worker=(101, "host"),
               start=0.0, seconds=10.0, error=None, params=None, base=T0):
    """One trial folder. ``values``: the metric per epoch; ``kind``: complete, failed (a final report with
    ``error``), running (epochs only), cut (a last line cut short), died (error.txt) or started (no report)."""
    trial_id = f"t{cid}{fold}"
    name = f"c{cid:04d}_f{fold}_{trial_id}"
    params = params_of(cid) if params is None else params
    if kind == "started":
        return write_trial(exp, name, params, cid, fold, result=False)
    pid, host = worker
    lines, best, best_epoch, checkpoint = [], None, None, None
    for e, v in enumerate(values):
        if best is None or (v > best if mode == "max" else v < best):
            best, best_epoch = v, e + 1
        elapsed = seconds * (e + 1) / (len(values) + 1)
        lines.append({**_metrics(v, metric), "epoch": e + 1, "fold_score": best,
                      **_ray(trial_id, e + 1, elapsed, pid, host, start, base)})
    if kind in ("complete", "failed"):
        final = {**_metrics(best if best is not None else 0.0, metric), "epoch": best_epoch, "fold_score": best,
                 "score": best, "best_epoch": best_epoch, "epochs": len(values), "fit_seconds": seconds * 0.8,
                 "model_reused": False, "worker": f"{pid}@{host}", "started_at": base + start, "build_seconds": 0.1,
                 "load_seconds": 0.1, "worker_rss_mb": 800.0, "config_id": cid, "fold": fold, "save_seconds": 0.05,
                 "ended_at": base + start + seconds, "fold_status": kind}
        if kind == "failed":
            final["error"] = error
        lines.append({**final, **_ray(trial_id, len(values) + 1, seconds, pid, host, start, base),
                      "should_checkpoint": kind == "complete"})
        if kind == "complete":
            checkpoint = {"model.weights.h5": b"", "fold.json": json.dumps(
                {"config_id": cid, "fold": fold, "metric": metric, "mode": mode, "final": final})}
    return write_trial(exp, name, params, cid, fold, lines, checkpoint=checkpoint,
                       raw_tail='{"digit_accuracy": 0.5, "digit_lo' if kind == "cut" else None,
                       error_txt=f"Failure # 1\nTraceback (most recent call last):\n{error}\n" if kind == "died" else None)


def write_scheduler(exp, cv_folds, mode, states, max_configs):
    """The searcher's saved state: ``states`` is config_id -> (status, scores, running folds, skipped, error)."""
    s = FoldScheduler(cv_folds, mode, None, max_configs)
    for cid, (status, scores, running, skipped, error) in states.items():
        todo = [f for f in range(cv_folds) if f not in scores and f not in running] if status == "running" else []
        s.configs[cid] = ConfigState(cid, params_of(cid), todo, set(running), dict(scores), status, error, skipped)
    s.n_running = sum(len(v[2]) for v in states.values())
    s.n_started = sum(len(v[1]) + len(v[2]) for v in states.values()) + sum(
        1 for v in states.values() if v[0] == "failed")
    with open(exp / "searcher-state-2023-11-14_22-13-20.pkl", "wb") as f:
        pickle.dump({"scheduler": s, "trials": {}, "inner_ids": {}, "rng": None, "inner": None}, f)
    from glimr_cv.engine.store import read_meta, write_state

    write_state(str(exp), s, read_meta(str(exp))["run"])  # the plain-data copy that readers read


def age(exp, seconds):
    """Make every file of ``exp`` look ``seconds`` old."""
    when = pd.Timestamp.now().timestamp() - seconds
    for root, dirs, files in os.walk(exp):
        for name in files + dirs:
            os.utime(os.path.join(root, name), (when, when))


def write_experiment(root, kind):
    """An experiment folder ``root/kind`` of one of the kinds in the module docstring; returns its path."""
    from e2e_helpers import digits_builder, digits_loader, space

    exp = root / kind
    exp.mkdir()
    metric, mode, cv_folds = ("loss", "min", 2) if kind == "min" else ("digit_accuracy", "max", 3)
    if kind == "single":
        cv_folds = None
    save_search(Search(space(epochs=3), digits_builder, digits_loader, metric=metric, mode=mode, cv_folds=cv_folds),
                str(exp))
    a, b = (101, "host"), (102, "host")
    if kind == "finished":
        write_fold(exp, 0, 0, [0.7, 0.9, 0.85], worker=a, start=0, seconds=12)
        write_fold(exp, 1, 0, [0.8, 0.85, 0.84], worker=b, start=0.5, seconds=12)
        write_fold(exp, 2, 0, [0.5, 0.6, 0.55], worker=a, start=12.5, seconds=3)
        write_fold(exp, 3, 0, [0.7, 0.8, 0.8], worker=b, start=13, seconds=3)
        write_fold(exp, 4, 0, [0.3], "failed", worker=a, start=15.5, seconds=2, error=ERROR)
        write_fold(exp, 0, 1, [0.8, 0.92, 0.9], worker=b, start=16.5, seconds=3)
        write_fold(exp, 0, 2, [0.85, 0.88, 0.91], worker=a, start=17.5, seconds=3)
        write_fold(exp, 1, 1, [0.86, 0.88, 0.87], worker=b, start=20, seconds=3)
        write_fold(exp, 3, 1, [0.7, 0.78, 0.75], worker=a, start=21, seconds=3)
        write_fold(exp, 1, 2, [0.8, 0.86, 0.86], worker=b, start=23.5, seconds=3)
        write_scheduler(exp, 3, mode, {
            0: ("complete", {0: 0.9, 1: 0.92, 2: 0.91}, (), 0, None),
            1: ("complete", {0: 0.85, 1: 0.88, 2: 0.86}, (), 0, None),
            2: ("pruned", {0: 0.6}, (), 2, None),
            3: ("pruned", {0: 0.8, 1: 0.78}, (), 1, None),
            4: ("failed", {}, (), 2, f"fold 0 failed: {ERROR}"),
        }, max_configs=5)
        age(exp, 86400)  # finished yesterday: still finished
    elif kind == "running":
        write_fold(exp, 0, 0, [0.6, 0.7], "running", worker=a, start=0, seconds=12)
        write_fold(exp, 1, 0, [0.5], "cut", worker=b, start=1, seconds=12)
        write_fold(exp, 2, 0, [], "started")
    elif kind == "interrupted":
        write_fold(exp, 0, 0, [0.7, 0.9, 0.85], worker=a, start=0, seconds=12)
        write_fold(exp, 1, 0, [0.8, 0.85, 0.84], worker=b, start=0.5, seconds=12)
        write_fold(exp, 2, 0, [0.5, 0.6, 0.55], worker=a, start=12.5, seconds=3)
        write_fold(exp, 0, 1, [0.8, 0.92, 0.9], worker=b, start=13, seconds=3)
        write_fold(exp, 0, 2, [0.85, 0.88, 0.91], worker=a, start=16, seconds=3)
        write_fold(exp, 1, 1, [0.8, 0.83], "cut", worker=b, start=16.5, seconds=6)
        write_fold(exp, 3, 0, [0.4], "died", worker=a, start=19.5, seconds=4, error=ERROR)
        write_scheduler(exp, 3, mode, {
            0: ("complete", {0: 0.9, 1: 0.92, 2: 0.91}, (), 0, None),
            1: ("running", {0: 0.85}, (1,), 0, None),
            2: ("pruned", {0: 0.6}, (), 2, None),
        }, max_configs=6)
        age(exp, 7200)
    elif kind == "min":
        write_fold(exp, 0, 0, [0.5, 0.3, 0.4], metric=metric, mode=mode, worker=a, start=0, seconds=5)
        write_fold(exp, 1, 0, [0.7, 0.5, 0.6], metric=metric, mode=mode, worker=b, start=0, seconds=5)
        write_fold(exp, 2, 0, [1.2, 0.9, 1.0], metric=metric, mode=mode, worker=a, start=5, seconds=5)
        write_fold(exp, 0, 1, [0.6, 0.35, 0.45], metric=metric, mode=mode, worker=b, start=5, seconds=5)
        write_fold(exp, 1, 1, [0.6, 0.45, 0.5], metric=metric, mode=mode, worker=a, start=10, seconds=5)
        write_scheduler(exp, 2, mode, {
            0: ("complete", {0: 0.3, 1: 0.35}, (), 0, None),
            1: ("complete", {0: 0.5, 1: 0.45}, (), 0, None),
            2: ("pruned", {0: 0.9}, (), 1, None),
        }, max_configs=3)
        age(exp, 3600)
    elif kind == "single":
        write_fold(exp, 0, 0, [0.8], worker=a, start=0, seconds=4)
        write_fold(exp, 1, 0, [0.9], worker=b, start=0, seconds=4)
        write_scheduler(exp, 1, mode, {0: ("complete", {0: 0.8}, (), 0, None), 1: ("complete", {0: 0.9}, (), 0, None)},
                        max_configs=2)
        age(exp, 3600)
    elif kind == "empty":
        age(exp, 3600)  # saved an hour ago, and nothing since
    else:
        raise ValueError(kind)
    return str(exp)


KINDS = ("finished", "running", "interrupted", "min", "single", "empty")


@pytest.fixture(scope="module")
def experiments(tmp_path_factory):
    root = tmp_path_factory.mktemp("experiments")
    return {kind: write_experiment(root, kind) for kind in KINDS}


@pytest.fixture(scope="module")
def loaded(experiments):
    return {kind: load_results(path) for kind, path in experiments.items()}


def gid(ax, name):
    """The artists of ``ax`` whose gid is ``name``."""
    return [a for a in ax.get_children() if a.get_gid() == name]


def points(ax, name):
    return sum(len(c.get_offsets()) for c in gid(ax, name))


def said(fig):
    return [t.get_text() for ax in fig.axes for t in ax.texts if t.get_gid() == "empty"]


# ---------------------------------------------------------------------------
# the folders read back as intended
# ---------------------------------------------------------------------------


def test_the_folders_read_back_as_intended(loaded):
    finished = loaded["finished"]
    assert dict(zip(finished.table["config_id"], finished.table["status"])) == {
        0: "complete", 1: "complete", 3: "pruned", 2: "pruned", 4: "failed"}
    assert (finished.fold_trainings, finished.fold_trainings_saved) == (10, 3)
    assert set(loaded["running"].folds["status"]) == {"running"}
    assert loaded["running"].best_config_id is None
    interrupted = loaded["interrupted"]
    assert dict(zip(interrupted.folds["config_id"].astype(str) + "/" + interrupted.folds["fold"].astype(str),
                    interrupted.folds["status"]))["3/0"] == "failed"
    assert dict(zip(interrupted.table["config_id"], interrupted.table["status"])) == {
        0: "complete", 2: "pruned", 1: "running", 3: "failed"}
    assert loaded["empty"].table.empty and loaded["empty"].folds.empty


# ---------------------------------------------------------------------------
# read_epochs
# ---------------------------------------------------------------------------


def test_read_epochs_one_row_per_reported_epoch(experiments):
    df = read_epochs(experiments["finished"])
    assert list(df.columns[:3]) == ["config_id", "fold", "epoch"]
    assert {"digit_accuracy", "digit_loss", "loss", "score", "timestamp", "time_total_s", "worker"} <= set(df.columns)
    assert len(df) == 9 * 3 + 1  # nine complete folds of 3 epochs, the failed one of 1; no final reports
    curve = df[(df["config_id"] == 0) & (df["fold"] == 0)]
    assert list(curve["epoch"]) == [1, 2, 3]
    assert list(curve["digit_accuracy"]) == [0.7, 0.9, 0.85]
    assert list(curve["score"]) == [0.7, 0.9, 0.9]  # the best so far
    assert set(curve["worker"]) == {"101@host"}
    for col in ("fold_status", "fold_score", "training_iteration", "pid", "done", "best_epoch", "fit_seconds"):
        assert col not in df.columns


def test_read_epochs_skips_a_line_cut_short_and_lists_running_folds(experiments):
    df = read_epochs(experiments["running"])
    assert list(zip(df["config_id"], df["fold"], df["epoch"])) == [(0, 0, 1), (0, 0, 2), (1, 0, 1)]
    assert df["digit_accuracy"].notna().all()


def test_read_epochs_keeps_the_last_attempt_of_a_retried_fold(tmp_path):
    d = write_fold(tmp_path, 0, 0, [0.5, 0.6, 0.7], "running")
    retry = [{**_metrics(v, "digit_accuracy"), "epoch": e + 1, "fold_score": v, **_ray("t00", e + 4, 1.0, 7, "h", 0)}
             for e, v in enumerate([0.55, 0.65])]
    with open(d / "result.json", "a") as f:
        f.write("".join(json.dumps(line) + "\n" for line in retry))
    df = read_epochs(str(tmp_path))
    assert list(df["epoch"]) == [1, 2] and list(df["digit_accuracy"]) == [0.55, 0.65]
    assert set(df["worker"]) == {"7@h"}


def test_read_epochs_empty_and_missing_folders(tmp_path):
    df = read_epochs(str(tmp_path))
    assert df.empty and list(df.columns[:3]) == ["config_id", "fold", "epoch"]
    with pytest.raises(FileNotFoundError, match="is not a directory"):
        read_epochs(str(tmp_path / "nope"))


# ---------------------------------------------------------------------------
# fold scores
# ---------------------------------------------------------------------------


def test_fold_scores_finished(loaded):
    ax = plots.plot_fold_scores(loaded["finished"]).axes[0]
    assert points(ax, "fold-scores") == 9  # every complete fold, pruned configurations' too
    assert points(ax, "means") == 4  # configurations with a finished fold; the failed one has none
    assert points(ax, "failed-folds") == 1
    ticks = [t.get_text() for t in ax.get_xticklabels()]
    assert ticks == ["c0\n#1", "c1\n#2", "c3\npruned", "c2\npruned", "c4\nfailed"]  # by rank, then by mean
    colors = {t.get_text(): t.get_color() for t in ax.get_xticklabels()}
    assert colors["c2\npruned"] == plots.STATUS_COLORS["pruned"]
    assert colors["c4\nfailed"] == plots.STATUS_COLORS["failed"]
    assert len(gid(ax, "pruned-band")) == 2
    means = {round(x): y for x, y in np.concatenate([c.get_offsets() for c in gid(ax, "means")])}
    assert means[0] == pytest.approx(0.91) and means[2] == pytest.approx(0.79) and means[3] == pytest.approx(0.6)
    labels = {c.get_label() for c in gid(ax, "fold-scores")}
    assert labels == {"fold of a complete configuration", "fold of a pruned configuration"}
    assert "higher is better" in ax.get_title()
    assert not said(ax.figure)


def test_fold_scores_running_has_no_finished_fold(loaded):
    fig = plots.plot_fold_scores(loaded["running"])
    ax = fig.axes[0]
    assert said(fig) == [plots.NO_FOLDS]
    assert points(ax, "fold-scores") == 0 and points(ax, "means") == 0
    assert points(ax, "running-folds") == 2  # the best score so far of the two folds that reported an epoch
    assert [t.get_text() for t in ax.get_xticklabels()] == ["c0\nrunning", "c1\nrunning", "c2\nrunning"]


def test_fold_scores_interrupted(loaded):
    ax = plots.plot_fold_scores(loaded["interrupted"]).axes[0]
    assert points(ax, "fold-scores") == 5
    assert points(ax, "running-folds") == 1  # c1's fold cut short by the kill
    assert points(ax, "failed-folds") == 1  # c3's worker died
    assert [t.get_text() for t in ax.get_xticklabels()] == ["c0\n#1", "c1\nrunning", "c2\npruned", "c3\nfailed"]


def test_fold_scores_mode_min_and_one_fold(loaded):
    ax = plots.plot_fold_scores(loaded["min"]).axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["c0\n#1", "c1\n#2", "c2\npruned"]
    assert "lower is better" in ax.get_title() and ax.get_ylabel() == "loss"
    ax = plots.plot_fold_scores(loaded["single"]).axes[0]
    assert points(ax, "fold-scores") == 2 and points(ax, "means") == 2
    assert [t.get_text() for t in ax.get_xticklabels()] == ["c1\n#1", "c0\n#2"]


def test_fold_scores_empty_and_max_configs(loaded):
    fig = plots.plot_fold_scores(loaded["empty"])
    assert said(fig) == [plots.NO_FOLDS] and fig.axes[0].get_xticklabels() == []
    ax = plots.plot_fold_scores(loaded["finished"], max_configs=2).axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["c0\n#1", "c1\n#2"]
    assert "top 2 of 5" in ax.get_title()


# ---------------------------------------------------------------------------
# racing timeline
# ---------------------------------------------------------------------------


def bars(ax):
    return gid(ax, "fold-bar")


def labels(ax):
    return sorted(t.get_text() for t in ax.texts if t.get_gid() == "fold-label")


def test_timeline_finished(loaded):
    from matplotlib.colors import to_hex

    results = loaded["finished"]
    ax = plots.plot_timeline(results).axes[0]
    assert len(bars(ax)) == 10
    assert labels(ax) == sorted(f"c{c}/f{f}" for c, f in zip(results.folds["config_id"], results.folds["fold"]))
    assert [t.get_text() for t in ax.get_yticklabels()] == ["worker 1\n101@host", "worker 2\n102@host"]
    assert "10 fold trainings on 2 workers" in ax.get_title()
    # a bar spans its fold's started_at..ended_at, relative to the first start, on its worker's lane
    by_label = {t.get_text(): t for t in ax.texts if t.get_gid() == "fold-label"}
    bar = min(bars(ax), key=lambda p: abs(p.get_x() + p.get_width() / 2 - by_label["c3/f1"].get_position()[0]))
    assert (bar.get_x(), bar.get_width()) == pytest.approx((21.0, 3.0))
    assert bar.get_y() + bar.get_height() / 2 == pytest.approx(0)  # worker 101, the first lane
    # coloured by the configuration's final status
    assert to_hex(bar.get_facecolor()) == plots.STATUS_COLORS["pruned"]
    colors = {to_hex(p.get_facecolor()) for p in bars(ax)}
    assert colors == {plots.STATUS_COLORS[s] for s in ("complete", "pruned", "failed")}
    # each pruned configuration stopped at the end of its last fold: c2 at 15.5 s, c3 at 24 s
    stops = np.concatenate([c.get_offsets() for c in gid(ax, "pruned-stop")])
    assert sorted(stops[:, 0]) == pytest.approx([15.5, 24.0])
    assert sorted(t.get_text() for t in ax.texts if t.get_gid() == "pruned-label") == ["c2 pruned", "c3 pruned"]
    assert all(p.get_hatch() is None for p in bars(ax) if to_hex(p.get_facecolor()) != plots.STATUS_COLORS["failed"])


def test_timeline_running_draws_folds_from_their_epochs(loaded):
    ax = plots.plot_timeline(loaded["running"]).axes[0]
    assert labels(ax) == ["c0/f0", "c1/f0"]
    assert len(bars(ax)) == 2 and all(p.get_hatch() == "//" for p in bars(ax))  # no final report yet
    assert "(1 started without a report yet)" in ax.get_title()
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "no final report (running)" in legend
    assert not gid(ax, "pruned-stop")


def test_timeline_interrupted(loaded):
    ax = plots.plot_timeline(loaded["interrupted"]).axes[0]
    assert labels(ax) == ["c0/f0", "c0/f1", "c0/f2", "c1/f0", "c1/f1", "c2/f0", "c3/f0"]
    hatches = sorted(str(p.get_hatch()) for p in bars(ax))
    assert hatches == ["//", "None", "None", "None", "None", "None", "xx"]  # cut short; the dead worker's fold
    assert len(gid(ax, "pruned-stop")) == 1


def test_timeline_crowded_labels_only_where_they_fit(tmp_path):
    """40 short folds: no label is cut or overlaps another; the markers still show every pruned configuration."""
    from e2e_helpers import digits_builder, digits_loader, space

    save_search(Search(space(), digits_builder, digits_loader, cv_folds=3), str(tmp_path))
    states = {}
    for cid in range(40):
        long = cid % 8 == 0
        write_fold(tmp_path, cid, 0, [0.5 + cid / 100], worker=(100 + cid % 2, "h"), start=(cid // 2) * 2,
                   seconds=2 if long else 0.5)
        states[cid] = ("complete" if long else "pruned", {0: 0.5 + cid / 100}, (), 0 if long else 2, None)
    write_scheduler(tmp_path, 3, "max", states, max_configs=40)
    fig = plots.plot_timeline(str(tmp_path))
    ax = fig.axes[0]
    assert len(bars(ax)) == 40
    assert 0 < len(labels(ax)) < 40  # the 2 s bars have room for a label, the 0.5 s ones not
    assert points(ax, "pruned-stop") == 35
    fig.canvas.draw()
    boxes = [t.get_window_extent() for t in ax.texts if t.get_gid() == "pruned-label"]
    assert 0 < len(boxes) < 35
    assert not any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1:])


def test_timeline_empty(loaded):
    fig = plots.plot_timeline(loaded["empty"])
    assert said(fig) == [plots.NO_FOLDS] and not bars(fig.axes[0])


# ---------------------------------------------------------------------------
# learning curves
# ---------------------------------------------------------------------------


def curves(ax):
    return {line.get_label(): line for line in ax.get_lines() if line.get_gid() == "curve"}


def stars(ax):
    """The best-epoch marks, (epoch, value) rows in order."""
    found = sorted(map(tuple, np.concatenate([c.get_offsets() for c in gid(ax, "best-epoch")]).tolist()))
    return np.array(found)


def test_learning_curves_of_the_best_configuration(loaded):
    ax = plots.plot_learning_curves(loaded["finished"]).axes[0]
    lines = curves(ax)
    assert sorted(lines) == ["fold 0", "fold 1", "fold 2"]
    assert list(lines["fold 0"].get_xdata()) == [1, 2, 3]
    assert list(lines["fold 0"].get_ydata()) == [0.7, 0.9, 0.85]
    assert stars(ax) == pytest.approx(np.array([(2, 0.9), (2, 0.92), (3, 0.91)]))  # each fold's best epoch
    assert "configuration c0 (best" in ax.get_title() and ax.get_ylabel() == "digit_accuracy"


def test_learning_curves_running_show_the_leading_configuration(loaded):
    ax = plots.plot_learning_curves(loaded["running"]).axes[0]
    assert list(curves(ax)) == ["fold 0 (running)"]
    assert "c0 (leading; none is complete yet" in ax.get_title()
    assert stars(ax) == pytest.approx(np.array([(2, 0.7)]))
    ax = plots.plot_learning_curves(loaded["running"], config_id=1).axes[0]
    assert list(curves(ax)) == ["fold 0 (running)"] and list(curves(ax)["fold 0 (running)"].get_ydata()) == [0.5]


def test_learning_curves_interrupted_mode_min_and_single_fold(loaded):
    ax = plots.plot_learning_curves(loaded["interrupted"]).axes[0]
    assert sorted(curves(ax)) == ["fold 0", "fold 1", "fold 2"]
    ax = plots.plot_learning_curves(loaded["min"]).axes[0]
    assert stars(ax) == pytest.approx(np.array([(2, 0.3), (2, 0.35)]))  # the lowest loss
    assert "lower is better" in ax.get_title()
    ax = plots.plot_learning_curves(loaded["single"]).axes[0]
    assert list(curves(ax)) == ["fold 0"] and stars(ax) == pytest.approx(np.array([(1, 0.9)]))


def test_learning_curves_empty(loaded):
    fig = plots.plot_learning_curves(loaded["empty"])
    assert said(fig) == [plots.NO_FOLDS] and not curves(fig.axes[0])


# ---------------------------------------------------------------------------
# score against each hyperparameter
# ---------------------------------------------------------------------------


def panels(fig):
    return {ax.get_title(): ax for ax in fig.axes if ax.get_visible()}


def test_hyperparameters_finished(loaded):
    fig = plots.plot_hyperparameters(loaded["finished"])
    axes = panels(fig)
    assert sorted(axes) == ["activation", "optimization/learning_rate", "optimization/method", "units"]
    assert axes["optimization/learning_rate"].get_xscale() == "log"  # 1e-4 .. 1e-1
    assert axes["units"].get_xscale() == "linear"
    assert [t.get_text() for t in axes["activation"].get_xticklabels()] == ["gelu", "relu"]
    assert [t.get_text() for t in axes["optimization/method"].get_xticklabels()] == ["adam", "rms"]
    for ax in axes.values():
        assert points(ax, "points") == 4  # configurations with a mean; the failed one has none
        assert points(ax, "best") == 1
    best = gid(axes["optimization/learning_rate"], "best")[0].get_offsets()[0]
    assert tuple(best) == pytest.approx((1e-4, 0.91))
    assert "digit_accuracy" in fig.get_suptitle()
    assert not said(fig)


def test_hyperparameters_running_says_no_finished_folds(loaded):
    fig = plots.plot_hyperparameters(loaded["running"])
    axes = panels(fig)
    assert len(axes) == 4  # the three configurations differ in the same four parameters
    assert said(fig) == [plots.NO_FOLDS] * 4
    assert all(points(ax, "points") == 0 for ax in axes.values())


def test_hyperparameters_interrupted_min_single_and_empty(loaded):
    axes = panels(plots.plot_hyperparameters(loaded["interrupted"]))
    assert points(axes["units"], "points") == 3  # c0, c1 (one finished fold) and c2; c3 failed without one
    axes = panels(plots.plot_hyperparameters(loaded["min"]))
    assert points(axes["units"], "points") == 3
    assert axes["optimization/learning_rate"].get_xscale() == "linear"  # 1e-4 .. 1e-2: two decades, not more
    axes = panels(plots.plot_hyperparameters(loaded["single"]))
    assert points(axes["units"], "points") == 2
    fig = plots.plot_hyperparameters(loaded["empty"])
    assert said(fig) == [plots.NO_FOLDS] and len(panels(fig)) == 1


# ---------------------------------------------------------------------------
# every plot, every kind; save_plots; a light import
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_every_plot_draws_every_kind_from_the_folder_path(experiments, kind):
    from matplotlib.figure import Figure

    for _, _, plot in plots.PLOTS:
        fig = plot(experiments[kind])  # a folder path works as well as SearchResults
        assert isinstance(fig, Figure)
        fig.canvas.draw()  # layout and rendering must not fail either


def test_save_plots_writes_pngs(experiments, tmp_path):
    import matplotlib.image

    paths = plots.save_plots(experiments["interrupted"], str(tmp_path / "plots"))
    assert [os.path.basename(p) for p in paths] == ["fold_scores.png", "timeline.png", "learning_curves.png",
                                                    "hyperparameters.png"]
    for path in paths:
        with open(path, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
        image = matplotlib.image.imread(path)
        assert image.shape[0] > 200 and image.shape[1] > 400


def test_plots_reject_other_objects():
    with pytest.raises(TypeError, match="expected a SearchResults or an experiment folder"):
        plots.plot_fold_scores(42)


def test_importing_glimr_cv_does_not_import_matplotlib():
    code = ("import sys, glimr_cv, glimr_cv.results, glimr_cv.results.plots, glimr_cv.results.report; "
            "print('matplotlib' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"
