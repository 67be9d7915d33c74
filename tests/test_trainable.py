"""Trainable pieces that need no running Ray: log mapping and restart short-circuit."""

import json

import pytest

from glimr_cv.engine.fold import TrialSpec, validation_report
from glimr_cv.engine.trainable import _report_finished_fold


def _spec(tasks, names, metric):
    return TrialSpec(builder=None, loader=None, metric=metric, mode="max", cv_folds=3,
                     task_names=tasks, metric_names=names)


def test_single_output_logs_map_to_task_prefixed_names():
    spec = _spec(["digit"], ["digit_accuracy", "digit_loss", "loss"], "digit_accuracy")
    logs = {"accuracy": 0.5, "loss": 2.0, "val_accuracy": 0.75, "val_loss": 1.0}
    assert validation_report(logs, spec) == {"digit_accuracy": 0.75, "digit_loss": 1.0, "loss": 1.0}


def test_multi_output_logs_map_by_output_name():
    spec = _spec(["a", "b"], ["a_auc", "a_loss", "b_mae", "b_loss", "loss"], "a_auc")
    logs = {"val_a_auc": 0.9, "val_a_loss": 0.3, "val_b_mae": 1.5, "val_b_loss": 2.0, "val_loss": 2.3}
    assert validation_report(logs, spec) == {"a_auc": 0.9, "a_loss": 0.3, "b_mae": 1.5, "b_loss": 2.0, "loss": 2.3}


def test_a_metric_keras_did_not_log_names_what_it_did_log():
    spec = _spec(["a", "b"], ["a_auc", "loss"], "a_auc")
    with pytest.raises(KeyError, match=r"metric a_auc: Keras logged no 'val_a_auc'; logged keys are \['val_a_acc', 'val_loss'\]"):
        validation_report({"val_a_acc": 0.9, "val_loss": 1.0}, spec)


def test_a_finished_fold_is_re_reported_from_its_checkpoint_not_retrained(tmp_path, monkeypatch):
    from ray import tune

    final = {"fold_score": 0.9, "fit_seconds": 1.25, "fold_status": "complete", "config_id": 2, "fold": 1}
    (tmp_path / "fold.json").write_text(json.dumps({"config_id": 2, "fold": 1, "final": final}))
    reported = []
    monkeypatch.setattr(tune, "report", lambda metrics, **kw: reported.append(metrics))
    assert _report_finished_fold(tune.Checkpoint.from_directory(str(tmp_path))) is True
    assert reported == [final]
    assert _report_finished_fold(None) is False
