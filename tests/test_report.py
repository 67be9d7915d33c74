"""The HTML report (glimr_cv.results.report): self-contained, escaped, on finished, running and interrupted folders.

The folders are those of tests/test_plots.py, written by hand; one tiny real search
(marked slow) checks the report and the plots on what Ray and Keras really leave.
"""

import base64
import html
import io
import os
import re
from html.parser import HTMLParser

import pytest

pytest.importorskip("matplotlib")

from glimr_cv.results import report_html, run_state, write_report  # noqa: E402
from glimr_cv.results.report import REPORT_FILE, _run_state  # noqa: E402
from glimr_cv.search import load_results  # noqa: E402
from test_plots import ERROR, KINDS, write_experiment  # noqa: E402

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def experiments(tmp_path_factory):
    root = tmp_path_factory.mktemp("report_experiments")
    return {kind: write_experiment(root, kind) for kind in KINDS}


@pytest.fixture(scope="module")
def pages(experiments):
    """kind -> (path written, its HTML)."""
    out = {}
    for kind, exp in experiments.items():
        path = write_report(exp)
        with open(path, encoding="utf-8") as f:
            out[kind] = (path, f.read())
    return out


class Page(HTMLParser):
    """Every tag with its attributes, the tables' rows and cells, and the text."""

    def __init__(self, text):
        super().__init__(convert_charrefs=True)
        self.tags, self.tables, self.text = [], {}, []
        self._table, self._row = None, None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append((tag, attrs))
        if tag == "table":
            self._table = self.tables.setdefault(attrs.get("id"), [])
        elif tag == "tr" and self._table is not None:
            self._row = {"attrs": attrs, "cells": []}
            self._table.append(self._row)
        elif tag in ("td", "th") and self._row is not None:
            self._row["cells"].append("")

    def handle_endtag(self, tag):
        if tag == "table":
            self._table = None
        elif tag == "tr":
            self._row = None

    def handle_data(self, data):
        self.text.append(data)
        if self._row is not None and self._row["cells"]:
            self._row["cells"][-1] += data

    def rows(self, table_id):
        return [r for r in self.tables[table_id] if r["attrs"].get("data-config") is not None]

    def header(self, table_id):
        return self.tables[table_id][0]["cells"]


# ---------------------------------------------------------------------------
# the file
# ---------------------------------------------------------------------------


def test_default_path_is_report_html_in_the_experiment(experiments, pages):
    for kind in KINDS:
        path, text = pages[kind]
        assert path == os.path.join(experiments[kind], REPORT_FILE) and os.path.isabs(path)
        assert text.startswith("<!DOCTYPE html>") and text.rstrip().endswith("</html>")
        assert oct(os.stat(path).st_mode & 0o777) == "0o644"
    assert not [f for f in os.listdir(experiments["finished"]) if f.startswith(".report-")]  # no temp file left


def test_path_argument_file_or_folder(experiments, tmp_path):
    results = load_results(experiments["finished"])
    assert write_report(results, str(tmp_path / "sub" / "r.html")) == str(tmp_path / "sub" / "r.html")
    assert write_report(experiments["finished"], str(tmp_path)) == str(tmp_path / REPORT_FILE)
    assert os.path.getsize(tmp_path / REPORT_FILE) > 10_000


# ---------------------------------------------------------------------------
# self-contained: no network, images are PNG data URIs
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_self_contained(pages, kind):
    text = pages[kind][1]
    page = Page(text)
    for tag, attrs in page.tags:
        for key in ("src", "href", "srcset", "data", "action", "poster"):
            value = (attrs.get(key) or "").strip().lower()
            assert not value.startswith(("http:", "https:", "//", "ftp:")), (tag, key, value[:80])
        assert tag not in ("script", "link", "iframe", "object", "embed"), tag
    assert not re.search(r"(src|href)\s*=\s*[\"']?\s*(https?:)?//", text, re.I)
    assert "@import" not in text and "url(" not in text  # no stylesheet or font from elsewhere


@pytest.mark.parametrize("kind", KINDS)
def test_every_image_is_a_png_data_uri(pages, kind):
    import matplotlib.image

    images = [attrs for tag, attrs in Page(pages[kind][1]).tags if tag == "img"]
    assert len(images) == 4
    for attrs in images:
        prefix = "data:image/png;base64,"
        assert attrs["src"].startswith(prefix)
        data = base64.b64decode(attrs["src"][len(prefix):], validate=True)
        assert data[:8] == PNG
        pixels = matplotlib.image.imread(io.BytesIO(data), format="png")
        assert pixels.shape[0] > 200 and pixels.shape[1] > 400
        assert attrs["alt"]


# ---------------------------------------------------------------------------
# content
# ---------------------------------------------------------------------------


def test_leaderboard_and_fold_table_of_a_finished_experiment(experiments, pages):
    results = load_results(experiments["finished"])
    page = Page(pages["finished"][1])
    rows = page.rows("leaderboard")
    assert [r["attrs"]["data-config"] for r in rows] == [str(c) for c in results.table["config_id"]]  # best first
    header = page.header("leaderboard")
    assert header[:5] == ["rank", "config", "status", "folds", "digit_accuracy mean ± std"]
    assert header[5:] == ["split0", "split1", "split2", "mean digit_loss", "mean loss", "units", "activation",
                          "method", "learning_rate"]  # varying settings, by the last part of their path
    titles = [attrs.get("title") for tag, attrs in page.tags if tag == "th"]
    assert "optimization/learning_rate" in titles
    best = dict(zip(header, rows[0]["cells"]))
    assert (best["rank"], best["config"], best["status"], best["folds"]) == ("1", "0", "complete", "3/3")
    assert best["digit_accuracy mean ± std"] == "0.9100 ± 0.0082"
    assert (best["split0"], best["split1"], best["split2"]) == ("0.9", "0.92", "0.91")
    pruned = dict(zip(header, rows[3]["cells"]))
    assert (pruned["config"], pruned["status"], pruned["folds"], pruned["split1"]) == ("2", "pruned", "1/3", "–")
    assert "layers" in "".join(page.text)  # the shared settings are listed too
    errors = [r for r in page.tables["leaderboard"] if r["attrs"].get("class") == "error-row"]
    assert [r["cells"] for r in errors] == [[f"error: {ERROR}"]]  # under the failed configuration
    assert page.tables["leaderboard"].index(errors[0]) == page.tables["leaderboard"].index(rows[4]) + 1
    folds = page.rows("folds")
    assert len(folds) == len(results.folds) == 10
    assert page.header("folds") == ["config", "fold", "status", "configuration", "score", "best epoch", "epochs",
                                    "fit s", "started at s", "worker", "error"]
    cells = {(r["attrs"]["data-config"], r["attrs"]["data-fold"]): dict(zip(page.header("folds"), r["cells"]))
             for r in folds}
    assert cells[("0", "0")]["best epoch"] == "2" and cells[("0", "0")]["worker"] == "101@host"
    assert cells[("3", "1")]["started at s"] == "21" and cells[("3", "1")]["configuration"] == "pruned"
    assert cells[("4", "0")]["status"] == "failed" and cells[("4", "0")]["error"] == ERROR


def test_header_of_a_finished_experiment(pages):
    page = Page(pages["finished"][1])
    text = " ".join(page.text)
    assert "glimr_cv report: finished" in text
    assert "digit_accuracy, mode max (higher is better)" in text
    assert "3 per configuration" in text
    assert "5: 2 complete, 2 pruned, 1 failed" in text
    assert "10 started (9 complete, 1 failed); racing saved 3" in text
    assert "configuration 0: digit_accuracy 0.9100 ± 0.0082 over 3 folds" in text
    assert re.search(r"generated \d{4}-\d\d-\d\d \d\d:\d\d:\d\d", text)
    assert 'class="state state-finished">finished<' in pages["finished"][1]


@pytest.mark.parametrize("kind, state", [("finished", "finished"), ("min", "finished"), ("single", "finished"),
                                         ("running", "running"), ("interrupted", "interrupted"),
                                         ("empty", "interrupted")])
def test_run_state(experiments, pages, kind, state):
    assert run_state(experiments[kind]) == state
    assert f'class="state state-{state}">{state}<' in pages[kind][1]


def test_run_state_of_a_fresh_unfinished_folder_is_running_and_of_a_stale_one_interrupted(experiments):
    results = load_results(experiments["interrupted"])
    assert run_state(results) == "interrupted"
    assert run_state(results, recent=10 * 86400) == "running"
    assert run_state(load_results(experiments["running"]), recent=-1) == "interrupted"
    assert run_state(load_results(experiments["finished"]), recent=-1) == "finished"


@pytest.mark.parametrize("worker", ["alive", "dead", "reused"])
def test_run_state_from_the_workers_of_unfinished_folds_on_this_machine(tmp_path, worker):
    """A local fold without a final report: running while its worker lives, however old the files; interrupted when
    that process is gone, or when its pid now belongs to a process started after the fold's reports."""
    import socket
    import subprocess
    import sys
    import time

    from e2e_helpers import digits_builder, digits_loader, space
    from glimr_cv.engine.store import save_search
    from glimr_cv.search import Search
    from test_plots import T0, age, write_fold

    pid, base = os.getpid(), time.time() - 5  # this process reported 5 s ago
    if worker == "dead":
        child = subprocess.Popen([sys.executable, "-c", "pass"])
        child.wait(timeout=60)
        pid = child.pid
    elif worker == "reused":
        base = T0  # reports from 2023: this process, started since, cannot have written them
    save_search(Search(space(), digits_builder, digits_loader, cv_folds=3), str(tmp_path))
    write_fold(tmp_path, 0, 0, [0.5, 0.6], "running", worker=(pid, socket.gethostname()), base=base)
    if worker == "alive":
        age(tmp_path, 86400)  # an epoch may take long: a live worker says more than the clock
    state, why = _run_state(load_results(str(tmp_path)))
    if worker == "alive":
        assert state == "running" and f"worker {pid}@{socket.gethostname()} alive" in why
    else:
        assert state == "interrupted" and "worker processes of its unfinished folds are gone" in why


def test_running_and_interrupted_reports(pages):
    running = Page(pages["running"][1])
    text = " ".join(running.text)
    assert "none: no configuration is complete yet" in text
    assert "3 started (3 running)" in text
    assert [r["attrs"]["data-config"] for r in running.rows("leaderboard")] == ["0", "1", "2"]
    assert len(running.rows("folds")) == 3
    interrupted = Page(pages["interrupted"][1])
    statuses = {r["attrs"]["data-config"]: dict(zip(interrupted.header("leaderboard"), r["cells"]))["status"]
                for r in interrupted.rows("leaderboard")}
    assert statuses == {"0": "complete", "1": "running", "2": "pruned", "3": "failed"}
    assert "traceback:" in " ".join(interrupted.text)  # the died fold's error names its error.txt


def test_mode_min_and_empty_reports(pages):
    text = " ".join(Page(pages["min"][1]).text)
    assert "loss, mode min (lower is better)" in text and "2 per configuration" in text
    empty = Page(pages["empty"][1])
    assert empty.rows("leaderboard") == [] and empty.rows("folds") == []
    assert "none yet" in " ".join(empty.text)


# ---------------------------------------------------------------------------
# escaping
# ---------------------------------------------------------------------------


def test_error_text_is_escaped(pages):
    text = pages["finished"][1]
    assert html.escape(ERROR) in text
    assert "<None, 10>" not in text


def test_everything_is_escaped(tmp_path):
    """A folder name, an error and a configuration value holding markup come out as text."""
    from test_plots import write_fold

    exp = tmp_path / 'exp<b id="x">&'
    exp.mkdir()
    exp = write_experiment(exp, "finished")
    evil = "<script>alert(1)</script>"
    write_fold(tmp_path / 'exp<b id="x">&' / "finished", 5, 0, [0.5], "failed", error=f"boom {evil} & more",
               params={"units": evil, "optimization": {"learning_rate": 0.1}})
    path = write_report(exp)
    text = open(path, encoding="utf-8").read()
    assert "<script" not in text and "<b id" not in text
    assert html.escape(f"boom {evil} & more") in text
    assert "<title>glimr_cv report: finished</title>" in text
    assert html.escape(os.path.dirname(exp)) in text  # the experiment's path in the header
    page = Page(text)
    assert evil in "".join(page.text)  # shown as text, once parsed
    assert not [tag for tag, _ in page.tags if tag in ("script", "b")]


def test_report_html_takes_results_or_a_folder(experiments):
    a = report_html(experiments["min"])
    b = report_html(load_results(experiments["min"]))
    strip = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d|data:image/png;base64,[^\"]*")
    assert strip.sub("", a) == strip.sub("", b)


# ---------------------------------------------------------------------------
# one tiny real search
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def real_search(ray_local, tmp_path_factory):
    """2 configurations x 2 folds x 1 epoch, every fold trained (racing off)."""
    from e2e_helpers import digits_builder, digits_loader, space

    from glimr_cv import Search

    root = tmp_path_factory.mktemp("real_report")
    search = Search(space(epochs=1), digits_builder, digits_loader, metric="digit_accuracy", mode="max", cv_folds=2,
                    racing=None, seed=3)
    search.set_reporter(max_report_frequency=0)
    return search.experiment(str(root), "tiny", num_samples=2, max_concurrent_trials=2)


@pytest.mark.slow
def test_report_and_plots_of_a_real_search(real_search):
    from glimr_cv.results import plots

    results = real_search
    assert len(results.folds) == 4 and set(results.folds["status"]) == {"complete"}
    assert run_state(results.path) == "finished"
    path = write_report(results.path)
    page = Page(open(path, encoding="utf-8").read())
    assert [r["attrs"]["data-config"] for r in page.rows("leaderboard")] == [str(c) for c in results.table["config_id"]]
    assert len(page.rows("folds")) == 4
    images = [a["src"] for t, a in page.tags if t == "img"]
    assert len(images) == 4 and all(base64.b64decode(s.split(",", 1)[1])[:8] == PNG for s in images)

    ax = plots.plot_fold_scores(results).axes[0]
    assert sum(len(c.get_offsets()) for c in ax.collections if c.get_gid() == "fold-scores") == 4
    ax = plots.plot_timeline(results).axes[0]
    assert len([p for p in ax.patches if p.get_gid() == "fold-bar"]) == 4
    workers = set(results.folds["worker"])
    assert len(ax.get_yticklabels()) == len(workers) and all(isinstance(w, str) and "@" in w for w in workers)
    ax = plots.plot_learning_curves(results).axes[0]
    assert sorted(line.get_label() for line in ax.get_lines() if line.get_gid() == "curve") == ["fold 0", "fold 1"]
    assert sum(len(c.get_offsets()) for c in ax.collections if c.get_gid() == "best-epoch") == 2
    fig = plots.plot_hyperparameters(results)
    assert [ax.get_title() for ax in fig.axes if ax.get_visible()]  # the two configurations differ somewhere
