"""Result tables: cv_table, format_leaderboard, and the analysis functions on synthetic data."""

import json
import os

import numpy as np
import pandas as pd
import pytest

from glimr_cv.results.analysis import experiment_table, read_folds, top_k_configs, top_k_trials
from glimr_cv.results.tables import cv_table, format_leaderboard
from glimr_cv.schema import KEYS
from glimr_cv.schema import META

import fake_experiment

# ---------------------------------------------------------------------------
# cv_table
# ---------------------------------------------------------------------------


def make_folds(rows, metrics=("acc",)):
    """rows: (config_id, fold, status, value or tuple of values per metric)."""
    records = []
    for cid, fold, status, values in rows:
        values = values if isinstance(values, tuple) else (values,)
        records.append({"config_id": cid, "fold": fold, "status": status, **dict(zip(metrics, values))})
    return pd.DataFrame(records, columns=[*KEYS, *metrics])


def make_configs(statuses, errors=None):
    errors = errors or {}
    return [
        {"config_id": cid, "status": st, "params": {"optimization": {"learning_rate": 0.001 * (cid + 1), "method": "adam"}},
         **({"error": errors[cid]} if cid in errors else {})}
        for cid, st in enumerate(statuses)
    ]


@pytest.fixture
def three_folds():
    """Four configurations on 3 folds; config 2 is the best complete, 3 is pruned after one great fold."""
    folds = make_folds([
        (0, 0, "complete", 0.5), (0, 1, "complete", 0.75), (0, 2, "complete", 1.0),
        (1, 0, "complete", 0.25), (1, 1, "complete", 0.5), (1, 2, "complete", 0.75),
        (2, 0, "complete", 0.875), (2, 1, "complete", 0.875), (2, 2, "complete", 0.875),
        (3, 0, "complete", 0.99),
    ])
    configs = make_configs(["complete", "complete", "complete", "pruned"])
    return folds, configs


def test_cv_table_columns_in_order(three_folds):
    folds, configs = three_folds
    table = cv_table(folds, configs, "acc", "max", 3)
    assert list(table.columns) == [
        "config_id", "status", "folds_done", "split0_acc", "split1_acc", "split2_acc", "mean_acc", "std_acc",
        "rank", "error", "config/optimization/learning_rate", "config/optimization/method",
    ]


def test_cv_table_values(three_folds):
    folds, configs = three_folds
    table = cv_table(folds, configs, "acc", "max", 3).set_index("config_id")
    row = table.loc[0]
    assert (row["split0_acc"], row["split1_acc"], row["split2_acc"]) == (0.5, 0.75, 1.0)
    assert row["mean_acc"] == pytest.approx(0.75)
    assert row["std_acc"] == pytest.approx(np.std([0.5, 0.75, 1.0], ddof=0))  # population std
    assert row["std_acc"] != pytest.approx(np.std([0.5, 0.75, 1.0], ddof=1))
    assert row["folds_done"] == 3
    assert table.loc[2, "std_acc"] == 0.0
    assert table.loc[0, "config/optimization/learning_rate"] == pytest.approx(0.001)
    assert table.loc[0, "config/optimization/method"] == "adam"
    # the pruned configuration: one split, the others missing
    assert table.loc[3, "folds_done"] == 1
    assert table.loc[3, "split0_acc"] == 0.99
    assert np.isnan(table.loc[3, "split1_acc"]) and np.isnan(table.loc[3, "split2_acc"])
    assert table.loc[3, "mean_acc"] == 0.99 and table.loc[3, "std_acc"] == 0.0


def test_cv_table_sorted_best_first_mode_max(three_folds):
    folds, configs = three_folds
    table = cv_table(folds, configs, "acc", "max", 3)
    # config 3 has the highest mean but is pruned: it comes after every complete one, unranked
    assert list(table["config_id"]) == [2, 0, 1, 3]
    assert list(table["rank"][:3]) == [1, 2, 3]
    assert pd.isna(table["rank"][3])
    assert str(table["rank"].dtype) == "Int64"


def test_cv_table_sorted_best_first_mode_min():
    folds = make_folds([
        (0, 0, "complete", 0.5), (0, 1, "complete", 0.25),
        (1, 0, "complete", 0.125), (1, 1, "complete", 0.125),
        (2, 0, "complete", 0.75), (2, 1, "complete", 1.0),
        (3, 0, "complete", 0.0625),
    ], metrics=("loss",))
    configs = make_configs(["complete", "complete", "complete", "running"])
    table = cv_table(folds, configs, "loss", "min", 2)
    assert list(table["config_id"]) == [1, 0, 2, 3]
    assert list(table["rank"][:3]) == [1, 2, 3]
    assert pd.isna(table["rank"][3])


def test_cv_table_only_complete_configs_are_ranked_and_come_first():
    folds = make_folds([
        (0, 0, "complete", 0.25), (0, 1, "complete", 0.25),  # complete, worst
        (1, 0, "complete", 0.9),  # running with a great partial mean
        (2, 0, "complete", 0.95), (2, 1, "failed", np.nan),  # failed
        (3, 0, "complete", 0.5), (3, 1, "complete", 0.5),  # complete, best
        (4, 0, "complete", 0.1),  # pruned
        # config 5: incomplete, never finished a fold
    ])
    configs = make_configs(["complete", "running", "failed", "complete", "pruned", "incomplete"],
                           errors={2: "loss became nan at epoch 2"})
    table = cv_table(folds, configs, "acc", "max", 2)
    assert list(table["config_id"]) == [3, 0, 2, 1, 4, 5]  # complete by rank, then the rest by mean
    assert list(table["status"][:2]) == ["complete", "complete"]
    assert list(table["rank"][:2]) == [1, 2]
    assert table["rank"][2:].isna().all()
    assert table.set_index("config_id").loc[2, "error"] == "loss became nan at epoch 2"
    assert pd.isna(table.set_index("config_id").loc[5, "mean_acc"])
    assert table.set_index("config_id").loc[5, "folds_done"] == 0


def test_cv_table_non_complete_rows_sorted_by_mean_for_mode_min():
    folds = make_folds([(0, 0, "complete", 0.5), (1, 0, "complete", 0.25), (2, 0, "complete", 0.75)],
                       metrics=("loss",))
    configs = make_configs(["pruned", "running", "failed"]) + [{"config_id": 3, "status": "incomplete", "params": {}}]
    table = cv_table(folds, configs, "loss", "min", 2)
    assert list(table["config_id"]) == [1, 0, 2, 3]  # NaN mean last
    assert table["rank"].isna().all()


def test_cv_table_ties_share_the_lower_rank():
    folds = make_folds([
        (0, 0, "complete", 0.5), (0, 1, "complete", 1.0),
        (1, 0, "complete", 0.875), (1, 1, "complete", 0.875),
        (2, 0, "complete", 1.0), (2, 1, "complete", 0.5),
        (3, 0, "complete", 0.25), (3, 1, "complete", 0.25),
    ])
    table = cv_table(folds, make_configs(["complete"] * 4), "acc", "max", 2)
    assert list(table["config_id"]) == [1, 0, 2, 3]  # equal means keep config_id order
    assert list(table["rank"]) == [1, 2, 2, 4]


def test_cv_table_failed_fold_rows_do_not_count_as_splits():
    folds = make_folds([
        (0, 0, "complete", 0.5), (0, 1, "failed", 0.0), (0, 2, "running", 0.1),
    ])
    table = cv_table(folds, make_configs(["failed"]), "acc", "max", 3)
    row = table.iloc[0]
    assert row["folds_done"] == 1
    assert row["split0_acc"] == 0.5
    assert np.isnan(row["split1_acc"]) and np.isnan(row["split2_acc"])
    assert row["mean_acc"] == 0.5


def test_cv_table_single_split():
    folds = make_folds([(0, 0, "complete", 0.25), (1, 0, "complete", 0.75)])
    table = cv_table(folds, make_configs(["complete", "complete"]), "acc", "max", 1)
    assert [c for c in table.columns if c.startswith("split")] == ["split0_acc"]
    assert list(table["config_id"]) == [1, 0]
    assert list(table["mean_acc"]) == [0.75, 0.25]
    assert list(table["std_acc"]) == [0.0, 0.0]
    assert list(table["rank"]) == [1, 2]


def test_cv_table_multiple_metrics():
    folds = make_folds([
        (0, 0, "complete", (0.5, 2.0)), (0, 1, "complete", (1.0, 1.0)),
        (1, 0, "complete", (0.875, 0.5)), (1, 1, "complete", (0.875, 0.25)),
    ], metrics=("acc", "loss"))
    table = cv_table(folds, make_configs(["complete", "complete"]), "acc", "max", 2, metrics=["loss", "acc"])
    cols = list(table.columns)
    assert cols[:11] == [
        "config_id", "status", "folds_done",
        "split0_acc", "split1_acc", "mean_acc", "std_acc",  # the ranking metric first
        "split0_loss", "split1_loss", "mean_loss", "std_loss",
    ]
    assert cols[11:13] == ["rank", "error"]
    row = table.set_index("config_id").loc[0]
    assert (row["split0_loss"], row["split1_loss"], row["mean_loss"], row["std_loss"]) == (2.0, 1.0, 1.5, 0.5)
    assert list(table["config_id"]) == [1, 0]  # ranked by acc, not loss


def test_cv_table_ranks_by_the_primary_metric_only():
    folds = make_folds([
        (0, 0, "complete", (0.9, 5.0)), (1, 0, "complete", (0.1, 0.1)),
    ], metrics=("acc", "loss"))
    table = cv_table(folds, make_configs(["complete", "complete"]), "loss", "min", 1, metrics=["acc"])
    assert list(table["config_id"]) == [1, 0]
    assert [c for c in table.columns if c.startswith("mean_")] == ["mean_loss", "mean_acc"]


def test_cv_table_params_only_scalar_leaves_flattened():
    folds = make_folds([(0, 0, "complete", 0.5)])
    configs = [{
        "config_id": 0, "status": "complete",
        "params": {
            "optimization": {"learning_rate": 0.01, "method": "sgd", "nesterov": True},
            "layers": {"units": [64, 32], "dropout": None, "n": np.int64(3)},
            "tasks": {"y": {"metrics": ["auc"], "loss_weight": 1.0}},
            "shape": (28, 28),
        },
    }]
    table = cv_table(folds, configs, "acc", "max", 1)
    config_cols = sorted(c for c in table.columns if c.startswith("config/"))
    assert config_cols == sorted([
        "config/optimization/learning_rate", "config/optimization/method", "config/optimization/nesterov",
        "config/layers/dropout", "config/layers/n", "config/tasks/y/loss_weight",
    ])
    row = table.iloc[0]
    assert row["config/optimization/nesterov"] == True  # noqa: E712
    assert row["config/layers/n"] == 3
    assert row["config/tasks/y/loss_weight"] == 1.0


@pytest.mark.parametrize("folds", [
    pd.DataFrame(columns=["config_id", "fold", "status", "acc"]),
    pd.DataFrame(),
])
def test_cv_table_empty_input(folds):
    table = cv_table(folds, [], "acc", "max", 3)
    assert table.empty
    for col in ["config_id", "status", "folds_done", "mean_acc", "std_acc", "rank"]:
        assert col in table.columns


def test_cv_table_configs_without_any_fold_rows():
    table = cv_table(pd.DataFrame(columns=["config_id", "fold", "status", "acc"]),
                     make_configs(["running", "running"]), "acc", "max", 2)
    assert list(table["config_id"]) == [0, 1]
    assert list(table["folds_done"]) == [0, 0]
    assert table["mean_acc"].isna().all() and table["rank"].isna().all()


# ---------------------------------------------------------------------------
# format_leaderboard
# ---------------------------------------------------------------------------


def test_format_leaderboard_lines(three_folds):
    folds, configs = three_folds
    table = cv_table(folds, configs, "acc", "max", 3)
    text = format_leaderboard(table, "acc", 3, params=["optimization/learning_rate", "optimization/method"])
    lines = text.splitlines()
    assert len(lines) == 5  # header + one line per configuration
    assert "acc (mean ± std)" in lines[0]
    assert "learning_rate" in lines[0] and "method" in lines[0]
    best = lines[1]
    assert best.split()[:3] == ["1", "2", "complete"]
    assert "3/3" in best
    assert "0.8750 ± 0.0000" in best
    assert "0.003" in best and "adam" in best
    second = lines[2]
    assert f"0.7500 ± {np.std([0.5, 0.75, 1.0]):.4f}" in second
    pruned = lines[4]
    assert pruned.split()[:2] == ["3", "pruned"]  # no rank
    assert "1/3" in pruned and "0.9900 ± 0.0000" in pruned


def test_format_leaderboard_dash_when_no_fold_finished():
    table = cv_table(pd.DataFrame(columns=["config_id", "fold", "status", "acc"]),
                     make_configs(["running"]), "acc", "max", 5)
    line = format_leaderboard(table, "acc", 5).splitlines()[1]
    assert "0/5" in line
    assert " - " in line and "±" not in line


def test_format_leaderboard_truncates_rows():
    folds = make_folds([(c, 0, "complete", c / 100) for c in range(30)])
    table = cv_table(folds, make_configs(["complete"] * 30), "acc", "max", 1)
    text = format_leaderboard(table, "acc", 1, max_rows=5)
    lines = text.splitlines()
    assert len(lines) == 1 + 5 + 1
    assert lines[-1] == "... 25 more configurations"
    assert lines[1].split()[:2] == ["1", "29"]


def test_format_leaderboard_empty():
    assert format_leaderboard(cv_table(pd.DataFrame(), [], "acc", "max", 3), "acc", 3) == "(no configuration has started)"


# ---------------------------------------------------------------------------
# analysis: top_k_trials, top_k_configs
# ---------------------------------------------------------------------------


@pytest.fixture
def trials():
    """An experiment_table-like frame: 4 configurations x 3 folds, with failures and a running trial."""
    acc = {
        0: [0.6, 0.7, 0.8],
        1: [0.9, 0.5, 0.4],
        2: [0.85, 0.8, 0.75],
        3: [0.99, None, None],
    }
    rows = []
    for cid, values in acc.items():
        for fold, v in enumerate(values):
            status = "complete" if v is not None else "failed"
            rows.append({"config_enum": cid, "cv_index": fold, "status": status, "acc": v, "loss": None if v is None else 1 - v})
    rows.append({"config_enum": 4, "cv_index": 0, "status": "running", "acc": 1.0, "loss": 0.0})
    return pd.DataFrame(rows)


def test_top_k_trials_max(trials):
    top = top_k_trials(trials, "acc", "max", k=3)
    assert list(zip(top["config_enum"], top["cv_index"])) == [(3, 0), (1, 0), (2, 0)]
    assert list(top.index) == [0, 1, 2]
    assert (top["status"] == "complete").all()  # the running trial (1.0) is left out


def test_top_k_trials_min(trials):
    top = top_k_trials(trials, "acc", "min", k=2)
    assert list(zip(top["config_enum"], top["cv_index"])) == [(1, 2), (1, 1)]


def test_top_k_trials_k_none_returns_all_complete(trials):
    top = top_k_trials(trials, "acc", "max", k=None)
    assert len(top) == 10
    assert top["acc"].is_monotonic_decreasing


def test_top_k_trials_k_larger_than_rows(trials):
    assert len(top_k_trials(trials, "acc", k=100)) == 10


def test_top_k_trials_fold_filter(trials):
    top = top_k_trials(trials, "acc", "max", k=10, fold=1)
    assert list(top["config_enum"]) == [2, 0, 1]
    assert (top["cv_index"] == 1).all()


def test_top_k_trials_ties_keep_table_order():
    df = pd.DataFrame({"config_enum": [0, 1, 2], "cv_index": [0, 0, 0], "status": ["complete"] * 3, "acc": [0.5, 0.5, 0.5]})
    assert list(top_k_trials(df, "acc")["config_enum"]) == [0, 1, 2]


@pytest.mark.parametrize("statistic, expected_order, expected_values", [
    ("mean", [2, 0, 3, 1], [0.8, 0.7, 0.99, 0.6]),
    ("median", [2, 0, 1], [0.8, 0.7, 0.5]),
    ("min", [2, 0, 1], [0.75, 0.6, 0.4]),
    ("max", [3, 1, 2, 0], [0.99, 0.9, 0.85, 0.8]),
])
def test_top_k_configs_statistics(trials, statistic, expected_order, expected_values):
    top = top_k_configs(trials, "acc", "max", k=None, statistic=statistic)
    scores = dict(zip(top["config_enum"], top["config_score"]))
    for cid, v in zip(expected_order, expected_values):
        assert scores[cid] == pytest.approx(v)
    ranked = top.drop_duplicates("config_enum")
    assert list(ranked["config_score"]) == sorted(ranked["config_score"], reverse=True)
    assert list(ranked["config_rank"]) == list(range(1, len(ranked) + 1))
    assert 4 not in scores  # running trials do not count


def test_top_k_configs_returns_the_trials_of_the_best_configurations_as_glimr_does(trials):
    top = top_k_configs(trials, "acc", "max", k=None)  # glimr's default statistic: the median
    assert list(zip(top["config_enum"], top["cv_index"])) == [
        (3, 0), (2, 0), (2, 1), (2, 2), (0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 2)]  # 3: one fold of 0.99
    assert list(top["config_rank"]) == [1, 2, 2, 2, 3, 3, 3, 4, 4, 4]
    assert list(top["acc"][1:4]) == [0.85, 0.8, 0.75]  # the trials themselves, not an aggregate
    assert (top["status"] == "complete").all()


def test_top_k_configs_min_and_k(trials):
    top = top_k_configs(trials, "loss", "min", k=2)
    assert list(top["config_enum"]) == [3, 2, 2, 2]
    assert set(top["config_rank"]) == {1, 2}


def test_top_k_configs_callable_statistic(trials):
    top = top_k_configs(trials, "acc", "max", k=None, statistic=lambda s: s.max() - s.min())
    assert list(top.drop_duplicates("config_enum")["config_enum"]) == [1, 0, 2, 3]  # spread 0.5, 0.2, 0.1, 0
    assert top["config_score"].iloc[0] == pytest.approx(0.5)


def test_top_k_configs_takes_numpy_statistics_as_glimr_users_pass_them_without_a_warning(trials):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # pandas warned that it would stop swapping np.median for its own
        top = top_k_configs(trials, "acc", "max", k=None, statistic=np.median)
    pd.testing.assert_frame_equal(top, top_k_configs(trials, "acc", "max", k=None, statistic="median"))


def test_top_k_configs_ties_by_config_enum():
    df = pd.DataFrame({"config_enum": [2, 1, 0], "cv_index": [0, 0, 0], "status": ["complete"] * 3, "acc": [0.5] * 3})
    assert list(top_k_configs(df, "acc", "max")["config_enum"]) == [0, 1, 2]
    assert list(top_k_configs(df, "acc", "min")["config_enum"]) == [0, 1, 2]


@pytest.mark.parametrize("func", [top_k_trials, top_k_configs])
def test_unknown_metric_lists_columns(trials, func):
    with pytest.raises(ValueError) as err:
        func(trials, "auc")
    assert str(err.value) == (
        "metric: expected a column of df, one of ['acc', 'config_enum', 'cv_index', 'loss', 'status'], but got 'auc'"
    )


@pytest.mark.parametrize("func", [top_k_trials, top_k_configs])
def test_bad_mode(trials, func):
    with pytest.raises(ValueError, match=r"^mode: expected one of 'max', 'min', but got 'maximize'$"):
        func(trials, "acc", mode="maximize")


@pytest.mark.parametrize("func", [top_k_trials, top_k_configs])
@pytest.mark.parametrize("k", [0, -1, 2.0, True, "3"])
def test_bad_k(trials, func, k):
    with pytest.raises(ValueError) as err:
        func(trials, "acc", k=k)
    assert str(err.value) == f"k: expected an int >= 1 or None, but got {k!r}"


def test_bad_statistic(trials):
    with pytest.raises(ValueError, match="statistic: expected 'mean', 'median', 'min', 'max' or a function, but got 'std'"):
        top_k_configs(trials, "acc", statistic="std")


# ---------------------------------------------------------------------------
# read_folds / experiment_table on a synthetic Ray Tune experiment directory
# ---------------------------------------------------------------------------


def ray_line(trial_id, iteration, **report):
    """One result.json line as Ray Tune writes it: the report plus Ray's bookkeeping."""
    return {
        **report,
        "timestamp": 1700000000 + iteration,
        "checkpoint_dir_name": None,
        "done": False,
        "training_iteration": iteration,
        "trial_id": trial_id,
        "date": "2024-11-27_21-11-00",
        "time_this_iter_s": 0.25,
        "time_total_s": 0.25 * iteration,
        "pid": 4242,
        "hostname": "host",
        "node_ip": "127.0.0.1",
        "time_since_restore": 0.25 * iteration,
        "iterations_since_restore": iteration,
        "experiment_tag": f"{iteration}_x",
    }


def epoch(acc, best, n, loss=None):
    return {"y_acc": acc, "y_loss": 1 - acc if loss is None else loss, "epoch": n, "fold_score": best}


def final(status, acc, best_epoch, epochs, fit_seconds=3.5, **extra):
    return {"y_acc": acc, "y_loss": 1 - acc, "fold_score": acc, "best_epoch": best_epoch, "epochs": epochs,
            "fit_seconds": fit_seconds, "fold_status": status, **extra}


def write_trial(exp, name, config_id, fold, lines=(), raw_tail=None, error_txt=None, checkpoint=True, params=None):
    cfg = params if params is not None else {"optimization": {"learning_rate": 0.001 * (config_id + 1), "epochs": 3}}
    trial_id = name.split("_", 2)[-1]
    return fake_experiment.write_trial(
        exp, name, cfg, config_id, fold, [ray_line(trial_id, i + 1, **line) for i, line in enumerate(lines)],
        raw_tail=raw_tail, error_txt=error_txt, checkpoint={"model.weights.h5": b""} if checkpoint else None)


@pytest.fixture
def exp_dir(tmp_path):
    exp = tmp_path / "my_experiment"
    exp.mkdir()
    # Ray's experiment-level files sit next to the trial folders
    (exp / "experiment_state-2024-11-27_21-11-00.json").write_text("{}")
    (exp / "basic-variant-state-2024-11-27_21-11-00.json").write_text("{}")
    (exp / "tuner.pkl").write_bytes(b"\x80\x04N.")

    # config 0, fold 0: complete, best epoch 2 of 3
    write_trial(exp, "c0000_f0_abc12_00000", 0, 0, [
        epoch(0.5, 0.5, 1), epoch(0.75, 0.75, 2), epoch(0.625, 0.75, 3),
        final("complete", 0.75, 2, 3),
    ])
    # config 0, fold 1: complete
    write_trial(exp, "c0000_f1_abc12_00001", 0, 1, [
        epoch(0.875, 0.875, 1), final("complete", 0.875, 1, 1, fit_seconds=1.25),
    ])
    # config 1, fold 0: failed with a final report
    write_trial(exp, "c0001_f0_abc12_00002", 1, 0, [
        epoch(0.5, 0.5, 1),
        final("failed", 0.5, 1, 2, error="loss became nan at epoch 2"),
    ])
    # config 1, fold 1: still running, its last line cut short by a kill
    write_trial(exp, "c0001_f1_abc12_00003", 1, 1, [
        epoch(0.25, 0.25, 1), epoch(0.5, 0.5, 2),
    ], raw_tail='{"y_acc": 0.9, "y_loss": 0.1, "epo')
    # config 2, fold 0: the worker died (error.txt, no final report)
    write_trial(exp, "c0002_f0_abc12_00004", 2, 0, [epoch(0.5, 0.5, 1)], error_txt=(
        "Failure # 1 (occurred at 2024-11-27_21-12-00)\n"
        "Traceback (most recent call last):\n"
        '  File "trainable.py", line 120, in train_fold\n'
        "ray.exceptions.OutOfMemoryError: Task was killed due to the node running low on memory.\n"
        "\n"
    ))
    # not glimr_cv trials: no bookkeeping key, or unreadable params.json
    (exp / "other_trial").mkdir()
    (exp / "other_trial" / "params.json").write_text(json.dumps({"lr": 0.1}))
    (exp / "broken_trial").mkdir()
    (exp / "broken_trial" / "params.json").write_text('{"lr": 0.')
    return exp


def test_read_folds_rows_and_statuses(exp_dir):
    df = read_folds(str(exp_dir))
    assert list(zip(df["config_id"], df["fold"], df["status"])) == [
        (0, 0, "complete"), (0, 1, "complete"), (1, 0, "failed"), (1, 1, "running"), (2, 0, "failed"),
    ]
    assert list(df.columns[:3]) == ["config_id", "fold", "status"]


def test_read_folds_complete_trial_reports_its_best_epoch(exp_dir):
    row = read_folds(str(exp_dir)).iloc[0]
    assert row["y_acc"] == 0.75 and row["y_loss"] == 0.25
    assert row["score"] == 0.75
    assert row["best_epoch"] == 2 and row["epochs"] == 3
    assert row["fit_seconds"] == 3.5
    assert row["trial_id"] == "abc12_00000"
    assert pd.isna(row["error"])
    assert row["config"] == {"optimization": {"learning_rate": 0.001, "epochs": 3}}  # bookkeeping key removed


def test_read_folds_checkpoint_path_only_for_complete(exp_dir):
    df = read_folds(str(exp_dir))
    complete = df[df["status"] == "complete"]
    assert list(complete["checkpoint_path"]) == [
        os.path.join(str(exp_dir), "c0000_f0_abc12_00000", "checkpoint_000000"),
        os.path.join(str(exp_dir), "c0000_f1_abc12_00001", "checkpoint_000000"),
    ]
    assert df[df["status"] != "complete"]["checkpoint_path"].isna().all()


def test_read_folds_failed_trial_error_from_final_report(exp_dir):
    row = read_folds(str(exp_dir)).set_index(["config_id", "fold"]).loc[(1, 0)]
    assert row["status"] == "failed"
    assert row["error"] == "loss became nan at epoch 2"
    assert row["epochs"] == 2


def test_read_folds_running_trial_skips_the_truncated_line(exp_dir):
    row = read_folds(str(exp_dir)).set_index(["config_id", "fold"]).loc[(1, 1)]
    assert row["status"] == "running"
    assert row["score"] == 0.5  # from the last whole line, not the cut one
    assert row["y_acc"] == 0.5
    assert row["epochs"] == 2
    assert pd.isna(row["error"]) and pd.isna(row["best_epoch"])


def test_read_folds_error_txt_without_final_report_is_failed(exp_dir):
    row = read_folds(str(exp_dir)).set_index(["config_id", "fold"]).loc[(2, 0)]
    assert row["status"] == "failed"
    traceback = exp_dir / "c0002_f0_abc12_00004" / "error.txt"
    assert traceback.exists()  # the leaderboard's error line says where the whole traceback is
    assert row["error"] == ("ray.exceptions.OutOfMemoryError: Task was killed due to the node running low on memory. "
                            f"(traceback: {traceback})")


def test_read_folds_leaves_out_ray_bookkeeping(exp_dir):
    df = read_folds(str(exp_dir))
    for col in ("timestamp", "training_iteration", "time_total_s", "pid", "done", "fold_status", "fold_score", "epoch",
                "time_this_iter_s", "iterations_since_restore", "time_since_restore"):
        assert col not in df.columns
    assert {"y_acc", "y_loss", "score", "best_epoch", "epochs", "fit_seconds", "checkpoint_path",
            "trial_id", "error", "config"} <= set(df.columns)


def test_read_folds_truncated_line_after_final_report(tmp_path):
    write_trial(tmp_path, "c0000_f0_zz_00000", 0, 0, [epoch(0.5, 0.5, 1), final("complete", 0.5, 1, 1)],
                raw_tail='{"y_acc": 0.')
    row = read_folds(str(tmp_path)).iloc[0]
    assert row["status"] == "complete" and row["score"] == 0.5


def test_read_folds_trial_without_result_file_is_running(tmp_path):
    d = tmp_path / "c0003_f2_zz_00000"
    d.mkdir()
    (d / "params.json").write_text(json.dumps({META: {"config_id": 3, "fold": 2}}))
    df = read_folds(str(tmp_path))
    assert list(zip(df["config_id"], df["fold"], df["status"])) == [(3, 2, "running")]


def test_read_folds_missing_directory(tmp_path):
    missing = str(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="is not a directory"):
        read_folds(missing)


def test_read_folds_empty_directory(tmp_path):
    df = read_folds(str(tmp_path))
    assert df.empty
    assert list(df.columns[:3]) == ["config_id", "fold", "status"]


def test_experiment_table_columns(exp_dir):
    df = experiment_table(str(exp_dir), checkpointed=False)
    assert list(df.columns[:3]) == ["config_enum", "cv_index", "status"]
    assert "config_id" not in df.columns and "fold" not in df.columns
    assert list(zip(df["config_enum"], df["cv_index"])) == [(0, 0), (0, 1), (1, 0), (1, 1), (2, 0)]
    assert df["training_iteration"].equals(df["best_epoch"])  # glimr's name of the checkpointed epoch
    checkpointed = experiment_table(str(exp_dir))  # glimr's default: trials with a checkpoint only
    assert checkpointed["checkpoint_path"].notna().all()
    assert len(checkpointed) == df["checkpoint_path"].notna().sum() < len(df)


def test_experiment_table_empty(tmp_path):
    df = experiment_table(str(tmp_path))
    assert df.empty
    assert list(df.columns[:3]) == ["config_enum", "cv_index", "status"]


def test_experiment_table_feeds_top_k(exp_dir):
    df = experiment_table(str(exp_dir))
    top = top_k_trials(df, "y_acc", "max", k=1)
    assert (top.loc[0, "config_enum"], top.loc[0, "cv_index"]) == (0, 1)
    configs = top_k_configs(df, "y_acc", "max", statistic="mean")
    assert list(configs["config_enum"]) == [0, 0]
    assert configs.loc[0, "config_score"] == pytest.approx(0.8125)


def test_top_k_on_a_table_without_complete_trials():
    df = pd.DataFrame({"config_enum": [0, 1], "cv_index": [0, 0], "status": ["failed", "running"], "acc": [np.nan, 0.5]})
    assert top_k_trials(df, "acc").empty
    configs = top_k_configs(df, "acc")
    assert configs.empty and {"config_rank", "config_score"} <= set(configs.columns)


@pytest.mark.parametrize("params", [{}, {"optimization": {"learning_rate": 0.01, "method": "adam"}}])
def test_cv_table_repeated_metric_names_are_tabulated_once(params):
    # metric_names() repeats a name when a task has two metrics of the same name, or a
    # metric named "loss" (validate_space accepts both), and Search passes that list
    # straight to cv_table(metrics=...)
    folds = make_folds([(0, 0, "complete", (0.5, 0.25)), (1, 0, "complete", (0.75, 0.5))], metrics=("acc", "loss"))
    configs = [{"config_id": c, "status": "complete", "params": params} for c in (0, 1)]
    table = cv_table(folds, configs, "acc", "max", 1, metrics=["acc", "loss", "loss"])
    assert list(table.columns) == [
        "config_id", "status", "folds_done", "split0_acc", "mean_acc", "std_acc", "split0_loss", "mean_loss", "std_loss",
        "rank", "error", *[f"config/optimization/{k}" for k in params.get("optimization", {})],
    ]
    assert list(table["config_id"]) == [1, 0]
    assert list(table["rank"]) == [1, 2]


def test_read_folds_takes_a_killed_folds_final_scores_from_its_checkpoint(tmp_path):
    # the fold finished and checkpointed, but the kill cut result.json before its final line
    d = write_trial(tmp_path, "c0000_f0_kk_00000", 0, 0, [epoch(0.5, 0.5, 1), epoch(0.75, 0.75, 2)],
                    raw_tail='{"y_acc": 0.7')
    (d / "checkpoint_000000" / "fold.json").write_text(json.dumps(
        {"config_id": 0, "fold": 0, "final": final("complete", 0.75, 2, 2, worker="1@host")}))
    row = read_folds(str(tmp_path)).iloc[0]
    assert row["status"] == "complete" and row["score"] == 0.75 and row["best_epoch"] == 2
    assert row["worker"] == "1@host" and row["checkpoint_path"].endswith("checkpoint_000000")


def test_read_folds_without_a_checkpointed_final_report_is_running(tmp_path):
    write_trial(tmp_path, "c0000_f0_kk_00000", 0, 0, [epoch(0.5, 0.5, 1)], checkpoint=False)
    assert read_folds(str(tmp_path)).iloc[0]["status"] == "running"
