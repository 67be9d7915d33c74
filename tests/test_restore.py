"""Kill a running search with SIGKILL, restore it, and check no fold is lost or duplicated."""

import glob
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from glimr_cv import Search, experiment_table

pytestmark = pytest.mark.slow

SCRIPT = textwrap.dedent(
    """
    import os, sys, time, uuid
    from glimr_cv import Search
    from glimr_cv.demo import SPACE, builder, loader as digits

    BARRIER = os.path.join(sys.argv[1], "barrier")

    def loader(batch_size, cv_index, cv_folds):
        # The preflight and the first 4 folds load at once; every later fold waits here until the
        # test opens the gate, which it does only after the kill, so the kill always lands mid-run.
        if not os.path.exists(os.path.join(BARRIER, "open")):
            calls = os.path.join(BARRIER, "calls")
            os.makedirs(calls, exist_ok=True)
            open(os.path.join(calls, uuid.uuid4().hex), "w").close()
            if len(os.listdir(calls)) > 5:
                open(os.path.join(BARRIER, f"waiting-{os.getpid()}"), "w").close()
                while not os.path.exists(os.path.join(BARRIER, "open")):
                    time.sleep(0.05)
        return digits(batch_size, cv_index=cv_index, cv_folds=cv_folds)

    space = dict(SPACE, optimization={**SPACE["optimization"], "epochs": 1})
    search = Search(space, builder, loader, cv_folds=3, racing=None, seed=0)
    search.set_reporter(max_report_frequency=0)
    search.experiment(sys.argv[1], name="killed", num_samples=4)
    """
)


def _final_lines(path):
    """(config_id, fold) -> the distinct (score, fit_seconds) of its final reports.

    A fold re-reported from its checkpoint after a restore repeats the same pair;
    a fold trained twice would have a second, different ``fit_seconds``.
    """
    finals = {}
    for result in glob.glob(os.path.join(path, "c*_f*", "result.json")):
        lines = [json.loads(line) for line in open(result) if '"fold_status"' in line]
        if lines:
            key = (lines[-1]["config_id"], lines[-1]["fold"])
            finals[key] = {(r["fold_score"], r["fit_seconds"]) for r in lines}
    return finals


def test_sigkilled_search_restores_without_losing_or_repeating_folds(tmp_path, ray_local):
    path = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT, str(tmp_path)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    barrier = tmp_path / "barrier"
    try:
        # events, not time: at least 3 finished folds in the folder, and a fold held at the loader's barrier
        deadline = time.time() + 600
        while time.time() < deadline and (len(_final_lines(path)) < 3 or not list(barrier.glob("waiting-*"))):
            assert proc.poll() is None, "the search ended before it could be killed"
            time.sleep(0.2)
        assert len(_final_lines(path)) >= 3 and list(barrier.glob("waiting-*")), "no fold reached the barrier"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    (barrier / "open").touch()  # the restored search's folds load without waiting
    before = experiment_table(str(path))
    before = before[before["status"] == "complete"].set_index(["config_enum", "cv_index"])["score"]
    assert 3 <= len(before) < 12, "the kill must land mid-run"

    results = Search.restore(str(tmp_path), "killed")

    folds = results.folds
    assert not folds.duplicated(["config_id", "fold"]).any()
    assert len(folds) == 12 and set(folds["status"]) == {"complete"}
    assert list(results.table["status"]) == ["complete"] * 4
    after = folds.set_index(["config_id", "fold"])["digit_accuracy"]
    for key, score in before.items():
        assert after[key] == score, f"fold {key} changed from {score} to {after[key]}"
    assert all(len(v) == 1 for v in _final_lines(str(path)).values()), "a finished fold was trained again"
    assert Search.load(str(tmp_path), "killed").resources == {"CPU": 1, "GPU": 0}


def test_resume_from_the_shell_on_a_finished_experiment(tmp_path, ray_local, capsys):
    from glimr_cv.cli import main
    from glimr_cv.demo import SPACE, builder, loader

    space = dict(SPACE, optimization={**SPACE["optimization"], "epochs": 1})
    search = Search(space, builder, loader, cv_folds=2, racing=None)
    search.set_reporter(max_report_frequency=0)
    first = search.experiment(str(tmp_path), name="done", num_samples=1, check=False)
    assert main(["resume", str(tmp_path / "done")]) == 0
    out = capsys.readouterr().out
    assert "complete" in out and str(tmp_path / "done") in out
    again = Search.restore(str(tmp_path / "done"))
    assert again.folds[["config_id", "fold", "digit_accuracy"]].equals(first.folds[["config_id", "fold", "digit_accuracy"]])


def test_restore_of_a_folder_that_is_not_an_experiment_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="is not a glimr_cv experiment"):
        Search.restore(str(tmp_path), "nothing_here")


def test_ctrl_c_leaves_a_resumable_folder_and_says_how_to_resume(tmp_path, ray_local):
    path = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT, str(tmp_path)], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    barrier = tmp_path / "barrier"
    try:
        deadline = time.time() + 600
        while time.time() < deadline and (len(_final_lines(path)) < 1 or not list(barrier.glob("waiting-*"))):
            assert proc.poll() is None, "the search ended before it could be interrupted"
            time.sleep(0.2)
        proc.send_signal(signal.SIGINT)  # what Ctrl-C sends
        out, _ = proc.communicate(timeout=300)
    finally:
        proc.kill()
    lines = [line for line in out.splitlines() if line.startswith("interrupted:")]
    assert lines == [f"interrupted: the folds that finished are kept in {str(path)!r}; resume with "
                     f"glimr_cv.Search.restore({str(tmp_path)!r}, 'killed') or `glimr-cv resume {path}`"], out
    (barrier / "open").touch()
    results = Search.restore(str(tmp_path), "killed")
    assert len(results.folds) == 12 and set(results.folds["status"]) == {"complete"}
