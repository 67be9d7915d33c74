"""Experiment folders you can trust: read as plain data without running code, damage repaired or named.

The folders are written by hand as a real run leaves them (``test_plots.write_experiment``);
the CLI runs in a subprocess, as a user runs it.
"""

import json
import os
import pathlib
import pickle
import re
import shutil
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("matplotlib")

from glimr_cv.engine.store import FolderError, load_search, migrate, read_meta  # noqa: E402
from glimr_cv.results.summary import load_results  # noqa: E402
from test_plots import write_experiment  # noqa: E402

CLI = os.path.join(os.path.dirname(sys.executable), "glimr-cv")


def cli(*args, cwd=None, env=None):
    return subprocess.run([CLI, *map(str, args)], capture_output=True, text=True, timeout=300, cwd=cwd, env=env)


def one_error(stderr: str) -> bool:
    """One ``glimr-cv: error:`` line, and no traceback."""
    return [line.startswith("glimr-cv: error: ") for line in stderr.splitlines()].count(True) == 1 and \
        "Traceback" not in stderr


class Payload:
    """Unpickling this creates ``marker``: a stand-in for any code a crafted pickle runs."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.fixture
def finished(tmp_path):
    return pathlib.Path(write_experiment(tmp_path, "finished"))


def test_reading_a_folder_runs_no_code_from_its_pickles(finished, tmp_path):
    marker = tmp_path / "code_ran"
    payload = pickle.dumps(Payload(str(marker)))
    for name in ["glimr_cv_search.pkl", *[f for f in os.listdir(finished) if f.startswith("searcher-state")]]:
        (finished / name).write_bytes(payload)
    for c in os.listdir(finished):
        if c.startswith("c0"):
            (finished / c / "params.pkl").write_bytes(payload)
    results = load_results(str(finished))
    assert results.best_config_id == 0 and list(results.table["status"]).count("complete") == 2
    done = cli("report", finished)
    assert done.returncode == 0, done.stderr
    assert not marker.exists()  # nothing was unpickled
    # the paths that need the user's code check the pickle against the hash recorded when the search started
    with pytest.raises(FolderError, match=r"glimr_cv_search.pkl in .* is not the search this folder's glimr_cv.json "
                                          r"recorded \(its SHA-256 differs"):
        load_search(str(finished))
    assert not marker.exists()
    done = cli("export", finished)
    assert done.returncode == 1 and "is not the search this folder's glimr_cv.json recorded" in done.stderr
    assert one_error(done.stderr) and not marker.exists()


def test_a_report_needs_none_of_the_users_code(tmp_path):
    """The builder lives in a module this shell cannot import: the report does not need it."""
    lab = tmp_path / "lab_code"
    lab.mkdir()
    (lab / "lab_builder.py").write_text(textwrap.dedent("""
        from glimr_cv.demo import builder as demo_builder, loader as demo_loader

        def builder(config):
            return demo_builder(config)

        def loader(batch_size, cv_index, cv_folds):
            return demo_loader(batch_size, cv_index=cv_index, cv_folds=cv_folds)
    """))
    script = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(lab)!r})
        sys.path.insert(0, {os.path.dirname(__file__)!r})
        import lab_builder, test_plots
        from e2e_helpers import space
        from glimr_cv.engine.store import save_search
        from glimr_cv.search import Search
        test_plots.Search = lambda *a, **k: Search(space(epochs=3), lab_builder.builder, lab_builder.loader,
                                                  **{{k: v for k, v in k.items() if k != "space"}})
        import pathlib
        test_plots.write_experiment(pathlib.Path({str(tmp_path)!r}), "finished")
    """)
    subprocess.run([sys.executable, "-c", script], check=True, timeout=300)
    shutil.rmtree(lab)
    done = cli("report", tmp_path / "finished", cwd=str(tmp_path))
    assert done.returncode == 0, done.stderr
    assert "complete" in done.stdout and os.path.exists(tmp_path / "finished" / "report.html")


def test_damaged_state_pickles_hide_nothing_a_truncated_params_json_loses_nothing(finished):
    for name in os.listdir(finished):
        if name.startswith("searcher-state"):
            (finished / name).write_bytes((finished / name).read_bytes()[:20])  # cut short
    before = load_results(str(finished))
    trial = next(finished.glob("c0000_f1_*"))
    (trial / "params.json").write_text((trial / "params.json").read_text()[:25])
    with pytest.warns(UserWarning, match=re.escape(f"{trial / 'params.json'} is damaged")):
        after = load_results(str(finished))
    assert list(after.table["status"]) == list(before.table["status"])
    row = after.table[after.table["config_id"] == 0].iloc[0]
    assert row["status"] == "complete" and row["folds_done"] == 3
    assert row["mean_digit_accuracy"] == before.table[before.table["config_id"] == 0].iloc[0]["mean_digit_accuracy"]


def test_a_report_line_that_is_not_an_object_is_skipped_and_named(finished):
    trial = next(finished.glob("c0000_f0_*"))
    lines = (trial / "result.json").read_text().splitlines()
    (trial / "result.json").write_text("\n".join([lines[0], "123", *lines[1:]]) + "\n")
    with pytest.warns(UserWarning, match=r"lines \[2\] are not reports \(damaged\)"):
        results = load_results(str(finished))
    assert results.best_config_id == 0
    done = cli("report", finished)
    assert done.returncode == 0 and "glimr-cv: warning: " in done.stderr


def test_a_deleted_checkpoint_is_a_lost_fold_and_its_configuration_is_not_exported(finished):
    trial = next(finished.glob("c0000_f2_*"))
    shutil.rmtree(next(trial.glob("checkpoint_*")))
    with pytest.warns(UserWarning, match=r"fold 2 of configuration 0: its checkpoint .* is missing or damaged"):
        results = load_results(str(finished))
    folds = results.folds.set_index(["config_id", "fold"])
    assert folds.loc[(0, 2), "status"] == "lost"
    row = results.table[results.table["config_id"] == 0].iloc[0]
    assert row["status"] == "incomplete" and "fold 2: fold lost" in row["error"]
    assert results.best_config_id == 1  # the next complete configuration
    with pytest.raises(ValueError, match=r"config_id=0: fold 2 is lost .* so it is refused"):
        results.export(config_id=0)
    done = cli("export", finished, "--config", 0)
    assert done.returncode == 1 and "fold 2 is lost" in done.stderr


def test_a_fold_whose_records_are_both_gone_is_lost_not_hidden(finished):
    shutil.rmtree(next(finished.glob("c0001_f1_*")))  # the trial folder, with its result.json and checkpoint
    with pytest.warns(UserWarning, match=r"fold 1 of configuration 1 finished with score 0.88, but its trial folder "
                                         r"is gone"):
        results = load_results(str(finished))
    assert results.folds.set_index(["config_id", "fold"]).loc[(1, 1), "status"] == "lost"
    assert results.table.set_index("config_id").loc[1, "status"] == "incomplete"


def test_another_searchs_files_are_refused_or_ignored(finished, tmp_path):
    (tmp_path / "elsewhere").mkdir()
    other = pathlib.Path(write_experiment(tmp_path / "elsewhere", "min"))
    # another search's pickle: reading ignores it (plain data), restore and the ensemble refuse it
    shutil.copy(other / "glimr_cv_search.pkl", finished / "glimr_cv_search.pkl")
    results = load_results(str(finished))
    assert results.metric == "digit_accuracy" and results.table["folds_done"].max() == 3
    with pytest.raises(FolderError, match="SHA-256 differs"):
        load_search(str(finished))
    # another search's trial folder: refused, saying so
    meta = read_meta(str(finished))
    trial = next(finished.glob("c0000_f0_*"))
    params = json.loads((trial / "params.json").read_text())
    params["__glimr_cv__"]["run"] = "someone-else"
    (trial / "params.json").write_text(json.dumps(params))
    with pytest.raises(FolderError, match=r"belongs to another search \(run someone-else\) than this folder's "
                                          rf"\(run {meta['run']}\)"):
        load_results(str(finished))
    done = cli("report", finished)
    assert done.returncode == 1 and "belongs to another search" in done.stderr and one_error(done.stderr)


def test_a_damaged_state_file_is_named_and_the_folders_tell_the_rest(finished):
    (finished / "glimr_cv_state.json").write_text('{"configs": [')
    with pytest.warns(UserWarning, match=r"glimr_cv_state.json in .* is damaged"):
        results = load_results(str(finished))
    assert len(results.folds) == 10 and set(results.table["config_id"]) == {0, 1, 2, 3, 4}


def test_a_folder_from_before_the_format_is_named_and_migrated_once_trusted(finished):
    os.remove(finished / "glimr_cv.json")
    with pytest.raises(FolderError, match=r"was written by a glimr_cv before format 1 .* glimr_cv.engine.store."
                                          r"migrate\(path\)"):
        load_results(str(finished))
    done = cli("report", finished)
    assert done.returncode == 1 and "before format 1" in done.stderr and one_error(done.stderr)
    meta = migrate(str(finished))
    assert meta["format"] == 1 and meta["metric"] == "digit_accuracy"
    assert load_results(str(finished)).best_config_id == 0


def test_only_empty_folders_of_unstarted_folds_are_dropped(tmp_path):
    from glimr_cv.engine.store import drop_empty_folders

    (tmp_path / "c0001_f0_empty").mkdir()
    (tmp_path / "c0001_f1_used").mkdir()
    (tmp_path / "c0001_f1_used" / "params.json").write_text("{}")
    drop_empty_folders(str(tmp_path), ["c0001_f0_empty", "c0001_f1_used", "c0002_f0_gone"])
    assert sorted(os.listdir(tmp_path)) == ["c0001_f1_used"]
    drop_empty_folders("s3://bucket/exp", ["c0001_f0_empty"])  # object stores keep no empty folders


def test_a_corrupt_pickle_is_one_line_and_exit_1_in_every_command(finished):
    (finished / "glimr_cv_search.pkl").write_bytes(b"\x80\x04\x95garbage")
    for command in (["export"], ["resume"]):
        done = cli(*command, finished)
        assert done.returncode == 1, (command, done.stderr)
        assert one_error(done.stderr), done.stderr


@pytest.mark.slow
def test_a_real_folders_ensemble_is_exported_from_plain_files_alone(ray_local, tmp_path):
    """Each fold's whole model is saved: the export needs neither the builder nor any pickle of the folder."""
    import numpy as np

    from glimr_cv import Search
    from glimr_cv.demo import SPACE, builder, digits_arrays, loader

    space = dict(SPACE, optimization={**SPACE["optimization"], "epochs": 1})
    search = Search(space, builder, loader, cv_folds=2, racing=None)
    search.set_reporter(max_report_frequency=0)
    ran = search.experiment(str(tmp_path), name="digits", num_samples=2)
    folder = tmp_path / "digits"
    assert all(os.path.isfile(os.path.join(c, "model.keras")) for c in ran.folds["checkpoint_path"])
    marker = tmp_path / "code_ran"
    payload = pickle.dumps(Payload(str(marker)))
    for pkl in folder.rglob("*.pkl"):
        pkl.write_bytes(payload)
    results = load_results(str(folder))
    path = results.export(str(tmp_path / "ensemble.keras"))
    assert not marker.exists()
    x, _ = digits_arrays()
    import keras

    expected = np.mean([m.predict(x[:50], verbose=0)["digit"] for m in ran.best_models()], axis=0)
    got = keras.saving.load_model(path).predict(x[:50], verbose=0)
    np.testing.assert_allclose(got["digit"] if isinstance(got, dict) else got, expected, rtol=1e-5, atol=1e-6)
