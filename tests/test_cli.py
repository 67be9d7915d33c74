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
    assert "is not a glimr_cv experiment folder: it has no glimr_cv.json" in _one_error_line(done.stderr)


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


# ---------------------------------------------------------------------------
# serving and prediction edges: flags, corrupt models, NaN, zero rows, where Ray listens
# ---------------------------------------------------------------------------


def _last_error_line(stderr: str) -> str:
    """The error line after progress lines: the last line, the only one starting with glimr-cv: error:."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert "Traceback" not in stderr, stderr
    assert lines and lines[-1].startswith("glimr-cv: error: "), stderr
    assert sum(line.startswith("glimr-cv: error: ") for line in lines) == 1, stderr
    return lines[-1]


def test_serve_passes_allow_nan_and_ray_bind_to_serve(monkeypatch, tmp_path, capsys):
    from glimr_cv.deploy import serving

    calls = []

    def fake_serve(model, **kwargs):
        calls.append(kwargs)
        raise ValueError("stop here")

    monkeypatch.setattr(serving, "serve", fake_serve)
    import zipfile

    with zipfile.ZipFile(tmp_path / "m.keras", "w") as archive:  # passes the cheap check; never loaded
        archive.writestr("config.json", "{}")
    assert main(["serve", str(tmp_path / "m.keras")]) == 1
    assert _last_error_line(capsys.readouterr().err) == "glimr-cv: error: stop here"
    assert main(["serve", str(tmp_path / "m.keras"), "--allow-nan", "--ray-bind", "all"]) == 1
    assert [(c["allow_nan"], c["ray_bind"]) for c in calls] == [(False, "loopback"), (True, "all")]
    with pytest.raises(SystemExit) as info:
        main(["serve", str(tmp_path / "m.keras"), "--ray-bind", "everywhere"])
    assert info.value.code == 2


@pytest.mark.parametrize("command", ["predict", "serve"])
def test_a_corrupt_model_is_one_error_line_distinct_from_a_missing_one(command, tmp_path, capsys):
    np.save(tmp_path / "x.npy", np.zeros((2, 4)))
    (tmp_path / "m.keras").write_bytes(b"not a zip archive")
    argv = [command, str(tmp_path / "m.keras")] + ([str(tmp_path / "x.npy")] if command == "predict" else [])
    assert main(argv) == 1
    line = _one_error_line(capsys.readouterr().err)
    assert f"cannot read {tmp_path / 'm.keras'} as a Keras model (not a zip archive" in line
    assert "no such file" not in line and "not found" not in line.lower()


@pytest.fixture(scope="module")
def small_model(tmp_path_factory):
    keras = pytest.importorskip("keras")
    path = tmp_path_factory.mktemp("cli_model") / "small.keras"
    keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)]).save(str(path))
    return path


def test_predict_refuses_nan_unless_allow_nan_and_predicts_zero_rows(small_model, tmp_path, capsys):
    # in this process: a fresh process's exit code and output are the slide-manifest and round-trip tests'
    x = np.ones((6, 4), "float32")
    x[2, 0] = np.nan
    np.save(tmp_path / "nan.npy", x)
    assert main(["predict", str(small_model), str(tmp_path / "nan.npy")]) == 1
    line = _last_error_line(capsys.readouterr().err)
    assert "expected features without NaN, but data has NaN in 1 row [2]" in line and "--allow-nan" in line

    assert main(["predict", str(small_model), str(tmp_path / "nan.npy"), "--allow-nan", "--out",
                 str(tmp_path / "p.csv")]) == 0
    table = pd.read_csv(tmp_path / "p.csv")
    assert table.shape == (6, 3) and table.iloc[2].isna().all() and table.drop(index=2).notna().all().all()

    np.save(tmp_path / "empty.npy", np.zeros((0, 4), "float32"))
    capsys.readouterr()
    assert main(["predict", str(small_model), str(tmp_path / "empty.npy")]) == 0
    done = capsys.readouterr()
    assert "predicting 0 rows" in done.err and "wrote 0 predictions" in done.err
    assert done.out.strip() == "prediction_0,prediction_1,prediction_2"
    assert main(["predict", str(small_model), str(tmp_path / "empty.npy"), "--out",
                 str(tmp_path / "empty_out.npy")]) == 0
    out = np.load(tmp_path / "empty_out.npy")
    assert out.shape == (0, 3) and out.dtype == np.float32


@pytest.mark.slow
def test_predict_reads_a_slide_manifest_with_paths_relative_to_it_in_a_fresh_process(tmp_path):
    # a fresh process has not imported glimr_cv.mil: the MIL pooling layer the file names must load all the same
    import e2e_helpers as h
    from glimr_cv.mil import predict_slides, synthetic_slides

    cohort_dir = tmp_path / "cohort"
    cohort = synthetic_slides(cohort_dir, patients=3, tiles=(5, 9), width=6, seed=1)
    model = h.bag_model_file(tmp_path, 6)
    manifest = cohort[["slide", "path"]].assign(path=[os.path.basename(p) for p in cohort["path"]])
    manifest.to_csv(cohort_dir / "manifest.csv", index=False)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    done = run_cli("predict", model, cohort_dir / "manifest.csv", "--out", tmp_path / "p.csv", cwd=elsewhere)
    assert done.returncode == 0, done.stderr
    table = pd.read_csv(tmp_path / "p.csv")
    expected = predict_slides(model, cohort_dir / "manifest.csv")
    assert list(table.columns) == ["slide", "prediction_0", "prediction_1"]
    assert list(table["slide"]) == list(cohort["slide"])
    np.testing.assert_allclose(table[["prediction_0", "prediction_1"]].to_numpy(), np.stack(expected["prediction"]),
                               rtol=1e-5)


def test_slide_predictions_are_written_one_row_per_slide_with_its_id(tmp_path):
    from glimr_cv.cli import _write_predictions

    table = pd.DataFrame({"slide": ["a", "b"], "prediction_risk": [np.array([0.5]), np.array([1.5])],
                          "prediction_grade": [np.array([0.1, 0.9]), np.array([0.7, 0.3])]})
    _write_predictions(table, str(tmp_path / "p.csv"))
    written = pd.read_csv(tmp_path / "p.csv")
    assert list(written.columns) == ["slide", "risk", "grade_0", "grade_1"] and list(written["slide"]) == ["a", "b"]
    np.testing.assert_allclose(written[["risk", "grade_0", "grade_1"]], [[0.5, 0.1, 0.9], [1.5, 0.7, 0.3]])
    _write_predictions(table, str(tmp_path / "p.npz"))
    with np.load(tmp_path / "p.npz") as saved:  # no pickle needed for the ids
        assert list(saved["slide"]) == ["a", "b"] and saved["grade"].shape == (2, 2) and saved["risk"].shape == (2, 1)
    one = table[["slide", "prediction_risk"]].rename(columns={"prediction_risk": "prediction"})
    _write_predictions(one, str(tmp_path / "p.npy"))
    np.testing.assert_allclose(np.load(tmp_path / "p.npy"), [[0.5], [1.5]])


def _listening(pids: set) -> list:
    import psutil

    return [(c.pid, c.laddr.ip, c.laddr.port) for c in psutil.net_connections("inet")
            if c.status == psutil.CONN_LISTEN and c.pid in pids]


def _loopback(ip: str) -> bool:
    import ipaddress

    address = ipaddress.ip_address(ip)
    mapped = getattr(address, "ipv4_mapped", None)  # ::ffff:127.0.0.1 on a dual-stack socket
    return (mapped or address).is_loopback


@pytest.mark.slow
def test_serve_starts_a_ray_that_listens_on_the_loopback_only(small_model, tmp_path):
    """`glimr-cv serve` starts Ray itself (a fresh process): its GCS, raylet, agents, workers, Serve's proxy and
    replica all listen on 127.0.0.1, not on every interface."""
    import json
    import signal
    import socket
    import time
    import urllib.request

    psutil = pytest.importorskip("psutil")
    pytest.importorskip("ray.serve")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    proc = subprocess.Popen([*_command(), "serve", str(small_model), "--port", str(port)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.time() + 240
        while True:
            assert proc.poll() is None, proc.communicate()[1][-3000:]
            try:
                with urllib.request.urlopen(url, timeout=5) as response:
                    assert json.loads(response.read())["model"] == "small.keras"
                break
            except OSError:
                assert time.time() < deadline, "the endpoint did not come up"
                time.sleep(1)
        tree = {proc.pid} | {p.pid for p in psutil.Process(proc.pid).children(recursive=True)}
        names = {p.pid: p.name() for p in map(psutil.Process, tree) if p.is_running()}
        assert any("gcs_server" in n for n in names.values()) and any("raylet" in n for n in names.values()), names
        sockets = _listening(tree)
        assert len(sockets) >= 4, sockets
        exposed = [(names.get(pid), ip, p) for pid, ip, p in sockets if not _loopback(ip)]
        assert not exposed, f"listening beyond the loopback: {exposed}"
        request = urllib.request.Request(url, data=b'{"instances": [[1, 2, 3, 4]]}', method="POST")
        with urllib.request.urlopen(request, timeout=60) as response:
            assert len(json.loads(response.read())["predictions"][0]) == 3
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)  # the command shuts Serve and Ray down
            try:
                proc.communicate(timeout=120)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.communicate()
