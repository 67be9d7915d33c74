"""The glimr-cv command: help, exit codes and error lines, and an export/predict round trip."""

import importlib.util
import os
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from glimr_cv.cli import main

SUBCOMMANDS = ("demo", "resume", "report", "export", "predict", "serve")


def _command() -> list:
    script = shutil.which("glimr-cv", path=os.path.dirname(sys.executable))
    return [script] if script else [sys.executable, "-m", "glimr_cv.cli"]


def run_cli(*args, cwd=None, timeout=300):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.run([*_command(), *map(str, args)], capture_output=True, text=True, cwd=cwd, env=env,
                          timeout=timeout)


def _one_error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert "Traceback" not in stderr, stderr
    assert len(lines) == 1 and lines[0].startswith("glimr-cv: error: "), stderr
    return lines[0]


# ---------------------------------------------------------------------------
# help and usage
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("command", [(), *[(c,) for c in SUBCOMMANDS]])
def test_help_of_the_command_and_each_subcommand_exits_0(command):
    done = run_cli(*command, "--help")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"usage: glimr-cv {' '.join(command)}".rstrip())
    if not command:
        for sub in SUBCOMMANDS:
            assert sub in done.stdout


@pytest.mark.parametrize("argv", [[], ["nope"], ["export"], ["predict", "m.keras"], ["serve", "m.keras", "--port", "x"]])
def test_usage_errors_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    assert "usage: glimr-cv" in capsys.readouterr().err


# ---------------------------------------------------------------------------
# user errors: exit 1, one line, no traceback
# ---------------------------------------------------------------------------


def test_missing_folder_is_one_error_line_and_exit_1(tmp_path):
    done = run_cli("export", tmp_path / "missing")
    assert done.returncode == 1
    assert "missing: no such folder; expected an experiment folder" in _one_error_line(done.stderr)


def test_folder_that_is_not_an_experiment_is_one_error_line_and_exit_1(tmp_path):
    done = run_cli("report", tmp_path)
    assert done.returncode == 1
    assert "is not a glimr_cv experiment folder: it has no glimr_cv_search.pkl" in _one_error_line(done.stderr)


@pytest.mark.parametrize("argv, words", [
    (["resume", "{tmp}/missing"], "no such folder"),
    (["export", "{tmp}/file.npy"], "not a folder"),
    (["export", "{tmp}"], "not a glimr_cv experiment folder"),
    (["predict", "{tmp}/missing.keras", "{tmp}/file.npy"], "missing.keras: no such file; expected a Keras model"),
    (["predict", "{tmp}/file.npy", "{tmp}/file.npy"], "a file ending in .keras"),
    (["predict", "{tmp}/m.keras", "{tmp}/data.txt"], "a file ending in .npy, .npz, .csv"),
    (["predict", "{tmp}/m.keras", "{tmp}/file.npy", "--out", "{tmp}/out.json"], "--out: expected a file ending in"),
    (["serve", "{tmp}/missing.keras"], "no such file"),
])
def test_user_errors_exit_1_with_one_line(argv, words, tmp_path, capsys):
    np.save(tmp_path / "file.npy", np.zeros((2, 3)))
    (tmp_path / "m.keras").write_bytes(b"")
    (tmp_path / "data.txt").write_text("1,2\n")
    assert main([a.format(tmp=tmp_path) for a in argv]) == 1
    assert words in _one_error_line(capsys.readouterr().err)


# ---------------------------------------------------------------------------
# a tiny real experiment
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_experiment(ray_local, tmp_path_factory):
    from glimr_cv.demo import run

    root = tmp_path_factory.mktemp("cli")
    results = run(str(root / "runs"), "tiny", num_samples=1, cv_folds=2, racing=None, epochs=1)
    assert results.best_config_id is not None
    return results


@pytest.mark.slow
def test_export_then_predict_round_trip_through_the_cli(tiny_experiment, tmp_path):
    from glimr_cv.demo import digits_arrays

    results = tiny_experiment
    ensemble = tmp_path / "ensemble.keras"
    done = run_cli("export", results.path, "--out", ensemble)
    assert done.returncode == 0, done.stderr
    assert f"exporting the 2 fold models of configuration {results.best_config_id}" in done.stderr
    assert f"wrote {ensemble}" in done.stdout and ensemble.is_file()

    x = digits_arrays()[0][:40]
    expected = np.mean([m.predict(x, verbose=0)["digit"] for m in results.best_models()], axis=0)
    np.save(tmp_path / "x.npy", x)
    done = run_cli("predict", ensemble, tmp_path / "x.npy", "--out", tmp_path / "p.npy")
    assert done.returncode == 0, done.stderr
    assert "predicting 40 rows" in done.stderr
    np.testing.assert_allclose(np.load(tmp_path / "p.npy"), expected, rtol=1e-5, atol=1e-6)

    pd.DataFrame(x, columns=[f"pixel{i}" for i in range(64)]).to_csv(tmp_path / "x.csv", index=False)
    done = run_cli("predict", ensemble, tmp_path / "x.csv", "--out", tmp_path / "p.csv")
    assert done.returncode == 0, done.stderr
    table = pd.read_csv(tmp_path / "p.csv")
    assert list(table.columns) == [f"prediction_{j}" for j in range(10)]
    np.testing.assert_allclose(table.to_numpy(), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_report_prints_the_leaderboard_and_writes_the_report(tiny_experiment):
    if importlib.util.find_spec("glimr_cv.results.report") is None:
        pytest.skip("glimr_cv.results.report is not written yet")
    done = run_cli("report", tiny_experiment.path)
    assert done.returncode == 0, done.stderr
    assert tiny_experiment.leaderboard().splitlines()[0] in done.stdout
    written = done.stdout.strip().splitlines()[-1].removeprefix("report: ")
    assert os.path.isfile(written)
