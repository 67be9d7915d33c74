"""Tune state files cut short by a kill are replaced by the driver's intact copies."""

import pickle

import pytest

from glimr_cv.engine.store import repair_state as _repair_state


def _experiment(tmp_path, name="exp"):
    path = tmp_path / "results" / name
    path.mkdir(parents=True)
    return path


def _staging(tmp_path, name="exp"):
    staging = tmp_path / "ray" / "session_1" / "artifacts" / "2026-11-27_00-00-00" / name / "driver_artifacts"
    staging.mkdir(parents=True)
    (staging / "experiment_state-1.json").write_text('{"trials": [1, 2]}')
    (staging / "search_gen_state-1.json").write_bytes(pickle.dumps({"counter": 2}))
    (staging / "searcher-state-1.pkl").write_bytes(pickle.dumps({"scheduler": "s"}))
    return staging


def test_intact_state_is_left_alone(tmp_path, monkeypatch):
    monkeypatch.setenv("RAY_TMPDIR", str(tmp_path))
    path = _experiment(tmp_path)
    (path / "experiment_state-1.json").write_text('{"trials": [1]}')
    _staging(tmp_path)
    _repair_state(str(path))
    assert (path / "experiment_state-1.json").read_text() == '{"trials": [1]}'


def test_truncated_state_is_replaced_by_the_whole_staging_set(tmp_path, monkeypatch):
    monkeypatch.setenv("RAY_TMPDIR", str(tmp_path))
    path = _experiment(tmp_path)
    (path / "experiment_state-1.json").write_text('{"trials": [1]}')
    (path / "search_gen_state-1.json").write_bytes(b"")  # killed mid-copy
    _staging(tmp_path)
    _repair_state(str(path))
    assert pickle.loads((path / "search_gen_state-1.json").read_bytes()) == {"counter": 2}
    assert (path / "experiment_state-1.json").read_text() == '{"trials": [1, 2]}'  # consistent with it
    assert pickle.loads((path / "searcher-state-1.pkl").read_bytes()) == {"scheduler": "s"}


def test_truncated_state_without_a_copy_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("RAY_TMPDIR", str(tmp_path))
    path = _experiment(tmp_path)
    (path / "experiment_state-1.json").write_text('{"tri')
    with pytest.raises(RuntimeError, match=r"restore: \['experiment_state-1.json'\] in .* were cut short when the "
                                           r"run was killed, and no intact copy was found"):
        _repair_state(str(path))
