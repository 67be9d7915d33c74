"""Trainable pieces that need no running Ray: log mapping, restart short-circuit, and a fold's epochs (FoldRun)."""

import json

import pytest

from glimr_cv.engine.fold import TrialSpec, validation_report
from glimr_cv.engine.foldrun import FoldRun
from glimr_cv.engine.racing import PairedCurve
from glimr_cv.engine.trainable import _saved_state


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


def test_a_finished_folds_checkpoint_gives_its_final_report_to_re_report(tmp_path):
    from ray import tune

    final = {"fold_score": 0.9, "fit_seconds": 1.25, "fold_status": "complete", "config_id": 2, "fold": 1}
    (tmp_path / "fold.json").write_text(json.dumps({"config_id": 2, "fold": 1, "final": final}))
    assert _saved_state(tune.Checkpoint.from_directory(str(tmp_path)))["final"] == final
    assert _saved_state(None) is None


def _epoch(run, epoch, value, loss=0.5):
    return run.on_epoch(epoch, {"loss": loss, "val_loss": loss}, {"m": value, "m_loss": loss})


def test_a_fold_run_reports_the_best_so_far_and_keeps_the_best_epoch():
    run = FoldRun("m", "max", epochs=4)
    decisions = [_epoch(run, e + 1, v) for e, v in enumerate([0.5, 0.7, 0.6, 0.65])]
    assert [d.report["fold_score"] for d in decisions] == [0.5, 0.7, 0.7, 0.7]
    assert [d.improved for d in decisions] == [True, True, False, False]
    assert [d.report["epoch"] for d in decisions] == [1, 2, 3, 4] and all(d.stop is None for d in decisions)
    assert run.details() == {"score": 0.7, "best_epoch": 2, "epochs": 4, "stopped_early": False, "stopped_by": None}
    assert run.outcome() == {"m": 0.7, "m_loss": 0.5, "fold_score": 0.7, "curve": [0.5, 0.7, 0.6, 0.65]}
    assert run.failure() is None


def test_a_fold_run_in_mode_min_and_a_non_finite_loss_fails_the_fold():
    run = FoldRun("m", "min", epochs=3)
    assert _epoch(run, 1, 0.4).improved and not _epoch(run, 2, 0.5).improved
    failed = _epoch(run, 3, 0.1, loss=float("nan"))
    assert failed.report is None and failed.stop == "error"
    assert run.failure() == "loss became nan at epoch 3" and run.best == 0.4
    never = FoldRun("m", "max", epochs=2)
    _epoch(never, 1, float("nan"))
    assert never.failure() == "m was never finite in 1 epochs"


def test_a_fold_run_stops_on_the_rule_against_the_reference_and_when_the_driver_asks():
    rule = PairedCurve(tolerance=0.05, patience=1, grace=1)
    run = FoldRun("m", "max", epochs=10, rule=rule, reference=[0.9] * 10)
    stops = [_epoch(run, e + 1, 0.2).stop for e in range(3)]
    assert "fold_stopping" in stops and run.details()["stopped_by"] == "fold_stopping"
    asked = iter([None, "scheduler"])
    polled = FoldRun("m", "max", epochs=5, poll=lambda: next(asked))
    assert [_epoch(polled, e + 1, 0.5).stop for e in range(2)] == [None, "scheduler"]
    assert polled.details()["stopped_early"] is True
    last = FoldRun("m", "max", epochs=1, poll=lambda: "stopper")
    assert _epoch(last, 1, 0.5).stop is None  # the last epoch ends the fold anyway


def test_a_fold_run_continues_from_its_latest_state():
    run = FoldRun("m", "max", epochs=4)
    for e, v in enumerate([0.5, 0.8]):
        _epoch(run, e + 1, v)
    again = FoldRun("m", "max", epochs=4)
    again.restore(json.loads(json.dumps(run.latest())))
    assert again.done == 2 and again.best == 0.8 and not _epoch(again, 3, 0.7).improved
    assert again.details()["best_epoch"] == 2 and again.outcome()["curve"] == [0.5, 0.8, 0.7]
