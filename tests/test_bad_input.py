"""Every mistake a user can make in arguments gets one clear message, raised early.

Each case checks the whole message: it names the argument or config path, the rule,
and the value it got. None of these start Ray or import Keras.
"""

import re
import threading

import pytest

import glimr_cv
from glimr_cv import Paired, Search, TTest, loguniform, sample_space, top_k_configs, top_k_trials
from glimr_cv.demo import SPACE, builder, loader
from spaces import DELETE, edited


def space(**changes):
    return edited(SPACE, **changes)


def search(**kwargs):
    args = {"space": SPACE, "builder": builder, "loader": loader, **kwargs}
    return Search(**args)


def loader_without_cv(batch_size):
    return None


def _existing(tmp_path):
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "glimr_cv_search.pkl").write_bytes(b"")
    return search().experiment(str(tmp_path), name="taken", num_samples=1, check=False)


def _results():
    """Results of two configurations whose folds were never read: enough to refuse arguments."""
    import pandas as pd

    from glimr_cv.results.summary import SearchResults

    return SearchResults(path="unread", metric="acc", mode="max", cv_folds=2, table=pd.DataFrame(),
                         folds=pd.DataFrame(), configs={0: {}, 1: {}})


def _plots():
    from glimr_cv.results import plots

    return plots


def _report():
    from glimr_cv.results import report

    return report


def _table():
    import pandas as pd

    return pd.DataFrame({"config_enum": [0, 0, 1], "cv_index": [0, 1, 0], "status": ["complete"] * 3, "acc": [0.5, 0.6, 0.7]})


CASES = [
    # Search(...)
    ("mode", lambda: search(mode="maximize"), ValueError, "mode: expected one of 'max', 'min', but got 'maximize'"),
    ("cv_folds=1", lambda: search(cv_folds=1), ValueError, "cv_folds: expected an int >= 2 or None, but got 1"),
    ("cv_folds float", lambda: search(cv_folds=2.5), ValueError, "cv_folds: expected an int >= 2 or None, but got 2.5"),
    ("unknown metric", lambda: search(metric="digit_auc"), ValueError,
     "metric: expected one of the reported metrics ['digit_accuracy', 'digit_loss', 'loss'], but got 'digit_auc'"),
    ("builder not callable", lambda: search(builder=None), TypeError,
     "builder: expected a callable builder(config) -> (model, losses, loss_weights, metrics), but got None"),
    ("loader not callable", lambda: search(loader="data.csv"), TypeError,
     "loader: expected a callable loader(**data, cv_index, cv_folds) -> (train_ds, val_ds), but got 'data.csv'"),
    ("loader lacks cv args", lambda: search(loader=loader_without_cv), TypeError,
     "loader: loader_without_cv() must accept keyword arguments cv_index and cv_folds when cv_folds=5, but it lacks "
     "cv_index, cv_folds; add them, or pass cv_folds=None for a single train/validation split"),
    ("loader_kwargs", lambda: search(loader_kwargs=[1]), TypeError, "loader_kwargs: expected a dict or None, but got list"),
    ("fit_kwargs reserved", lambda: search(fit_kwargs={"epochs": 3}), ValueError,
     "fit_kwargs: expected none of ['x', 'y', 'epochs', 'validation_data', 'verbose', 'validation_split'] (the search sets them; epochs come from optimization/epochs), but got ['epochs']"),
    ("stopper", lambda: search(stopper=5), TypeError,
     "stopper: expected a ray.tune.Stopper, a callable(trial_id, result) -> bool or a dict of stopping criteria, "
     "but got 5"),
    ("stopper criteria", lambda: search(stopper={"val_acc": 0.9}), ValueError,
     re.compile(r"stopper\['val_acc'\]: expected a reported name, one of \[.*'digit_accuracy'.*\], but got 'val_acc'")),
    ("fold_stopping", lambda: search(fold_stopping="asha"), ValueError,
     re.compile(r"fold_stopping: expected .*'paired_curve'.*, but got 'asha'")),
    ("fail_fast", lambda: search(fail_fast=0), ValueError, "fail_fast: expected an int >= 1 or None, but got 0"),
    ("seed", lambda: search(seed=-1), ValueError, "seed: expected an int >= 0, but got -1"),
    ("racing rule", lambda: search(racing="fast"), ValueError,
     "racing: expected one of ['aggressive', 'forgiving', 'paired', 'ttest'], a RacingRule or None, but got 'fast'"),
    ("min_folds", lambda: search(min_folds=0), ValueError, "min_folds: expected an int >= 1, but got 0"),
    ("max_failures", lambda: search(max_failures=-1), ValueError, "max_failures: expected an int >= 0, but got -1"),
    ("reuse_models", lambda: search(reuse_models="yes"), TypeError, "reuse_models: expected True or False, but got 'yes'"),
    # the space
    ("missing section", lambda: search(space=space(data=DELETE)), glimr_cv.SpaceError,
     "space: the required section 'data' is missing; got sections ['activation', 'dropout', 'layers', 'optimization', "
     "'tasks', 'units']"),
    ("unknown optimizer", lambda: search(space=space(optimization__method={"adam", "lbfgs"})), glimr_cv.SpaceError,
     "optimization/method: unknown optimizer 'lbfgs'; expected one of ['adadelta', 'adagrad', 'adam', 'adamw', "
     "'nadam', 'rms', 'sgd']"),
    ("list of 4", lambda: search(space=space(units=[1, 2, 3, 4])), glimr_cv.SpaceError,
     "units: expected an interval [min, max] or [min, max, step], but got a list of length 4: [1, 2, 3, 4] "
     "(use a tuple for a constant sequence)"),
    ("empty set", lambda: search(space=space(activation=set())), glimr_cv.SpaceError,
     "activation: expected a set with at least one element (a set is a choice), but got an empty set"),
    ("min > max", lambda: search(space=space(optimization__learning_rate=[0.1, 0.01])), glimr_cv.SpaceError,
     "optimization/learning_rate: expected min <= max, but got (min=0.1, max=0.01)"),
    ("mixed int float", lambda: search(space=space(layers=[1, 2.0])), glimr_cv.SpaceError,
     "layers: expected interval elements that are all int or all float, but got mixed types in [1, 2.0]"),
    ("step <= 0", lambda: search(space=space(dropout=[0.0, 0.5, 0.0])), glimr_cv.SpaceError,
     "dropout: expected step > 0, but got step=0.0"),
    ("batch_size 0", lambda: search(space=space(data__batch_size=0)), glimr_cv.SpaceError,
     "data/batch_size: expected an int >= 1, but got 0"),
    ("epochs 0", lambda: search(space=space(optimization__epochs=0)), glimr_cv.SpaceError,
     "optimization/epochs: expected an int >= 1, but got 0"),
    ("unpicklable value", lambda: search(space=space(data__lock=threading.Lock())), TypeError,
     re.compile(r"data/lock: <unlocked _thread\.lock object at 0x[0-9a-f]+> cannot be pickled \(TypeError: cannot "
                r"pickle '_thread\.lock' object\); Ray sends the space, builder and loader to its workers, so they "
                r"must be picklable")),
    ("duplicate metric name", lambda: search(space=space(tasks__digit__metrics=[
        {"name": "acc", "metric": "SparseCategoricalAccuracy"}, {"name": "acc", "metric": "SparseCategoricalAccuracy"}])),
     glimr_cv.SpaceError, "tasks/digit/metrics: metric name 'acc' is used twice; metric names must be unique per task"),
    # Search methods
    ("resources", lambda: search().set_resources({"CPU": -1}), ValueError,
     "resources['CPU']: expected a number >= 0, but got -1"),
    ("checkpoint metric", lambda: search().set_checkpoints(metric="loss"), ValueError,
     "set_checkpoints: expected the search's metric='digit_accuracy' and mode='max' (or None), since checkpoints follow them, but got metric='loss', mode=None"),
    ("num_to_keep", lambda: search().set_checkpoints(num_to_keep=0), ValueError,
     "num_to_keep: expected an int >= 1 or None, but got 0"),
    # experiment(...)
    ("num_samples=0", lambda: search().experiment("/tmp", num_samples=0), ValueError,
     "num_samples: expected an int >= 1 or None, but got 0"),
    ("unbounded", lambda: search().experiment("/tmp", num_samples=None), ValueError,
     "num_samples: expected an int >= 1 when max_fold_trainings is None (or the search never ends), but got None"),
    ("budget", lambda: search().experiment("/tmp", max_fold_trainings=0), ValueError,
     "max_fold_trainings: expected an int >= 1 or None, but got 0"),
    ("concurrency", lambda: search().experiment("/tmp", max_concurrent_trials=0), ValueError,
     "max_concurrent_trials: expected an int >= 1 or None, but got 0"),
    ("search_alg", lambda: search().experiment("/tmp", search_alg="optuna"), TypeError,
     "search_alg: expected a ray.tune.search.Searcher such as OptunaSearch() or None, but got 'optuna'"),
    ("local_dir", lambda: search().experiment(5), TypeError, "local_dir: expected a path, but got 5"),
    ("restore local_dir", lambda: Search.restore(5), TypeError, "local_dir: expected a path, but got 5"),
    # SearchResults: a configuration id it does not have, or a bad argument, is named before anything is read
    ("leaderboard rows", lambda: _results().leaderboard(0), ValueError, "max_rows: expected an int >= 1, but got 0"),
    ("load_model id", lambda: _results().load_model("1"), ValueError,
     "config_id: expected one of [0, 1], but got '1'"),
    ("load_model fold", lambda: _results().load_model(1, fold=-1), ValueError,
     "fold: expected an int >= 0, but got -1"),
    ("model_config id", lambda: _results().model_config(7), ValueError, "config_id: expected one of [0, 1], but got 7"),
    ("complete_folds id", lambda: _results().complete_folds(1.0), ValueError,
     "config_id: expected one of [0, 1], but got 1.0"),
    ("ensemble id", lambda: _results().ensemble([1]), ValueError, "config_id: expected one of [0, 1], but got [1]"),
    ("export path", lambda: _results().export(5), TypeError,
     "path: expected a file name ending in .keras or None, but got 5"),
    # plots, the report and glimr's tables of a folder
    ("plot max_configs", lambda: _plots().plot_fold_scores(_results(), max_configs=0), ValueError,
     "max_configs: expected an int >= 1 or None, but got 0"),
    ("plot max_params", lambda: _plots().plot_hyperparameters(_results(), max_params=-1), ValueError,
     "max_params: expected an int >= 1 or None, but got -1"),
    ("plot config_id", lambda: _plots().plot_learning_curves(_results(), config_id=5), ValueError,
     "config_id: expected one of [0, 1], but got 5"),
    ("save_plots folder", lambda: _plots().save_plots(_results(), None), TypeError,
     "folder: expected a folder, but got NoneType"),
    ("save_plots dpi", lambda: _plots().save_plots(_results(), "plots", dpi=0.5), ValueError,
     "dpi: expected an int >= 1, but got 0.5"),
    ("report path", lambda: _report().write_report(_results(), 5), TypeError,
     "path: expected an HTML file or a folder or None, but got 5"),
    ("experiment_table exp_dir", lambda: glimr_cv.experiment_table(None), TypeError,
     "exp_dir: expected an experiment folder, but got NoneType"),
    ("experiment_table checkpointed", lambda: glimr_cv.experiment_table("/tmp", checkpointed="yes"), TypeError,
     "checkpointed: expected True or False, but got 'yes'"),
    ("load_results name", lambda: glimr_cv.load_results("/tmp", 3), TypeError,
     "name: expected a folder name or None, but got 3"),
    # helpers
    ("keras_optimizer", lambda: glimr_cv.keras_optimizer({"method": "lbfgs"}), ValueError,
     "optimization/method: unknown optimizer 'lbfgs'; expected one of ['adadelta', 'adagrad', 'adam', 'adamw', "
     "'nadam', 'rms', 'sgd']"),
    ("keras_losses of the tasks section", lambda: glimr_cv.keras_losses({"digit": {}}), TypeError,
     "config: expected a sampled configuration (the builder's argument) with a tasks section, but got a dict with "
     "keys ['digit']"),
    ("keras_optimizer of the whole config",
     lambda: glimr_cv.keras_optimizer({"optimization": {"method": "adam"}, "tasks": {}}), TypeError,
     "config: expected an optimization section, config['optimization'], with a method, but got a dict with keys "
     "['optimization', 'tasks']"),
    ("sample_space seed", lambda: sample_space({"a": {1, 2}}, "7"), TypeError,
     "seed: expected an int, a random.Random or None, but got '7'"),
    ("ttest alpha", lambda: TTest(alpha=2), ValueError, "alpha: expected a number in (0, 1), but got 2"),
    ("paired tolerance", lambda: Paired(tolerance=-1), ValueError,
     "tolerance: expected a finite number >= 0, but got -1"),
    ("loguniform", lambda: loguniform(0, 1), glimr_cv.SpaceError,
     "loguniform: expected 0 < low <= high, but got (low=0, high=1)"),
    ("sample_space", lambda: sample_space([1, 2]), glimr_cv.SpaceError,
     "<root>: expected a dict (a search space), but got list"),
    ("top_k metric", lambda: top_k_trials(_table(), "auc"), ValueError,
     "metric: expected a column of df, one of ['acc', 'config_enum', 'cv_index', 'status'], but got 'auc'"),
    ("top_k k", lambda: top_k_configs(_table(), "acc", k=0), ValueError, "k: expected an int >= 1 or None, but got 0"),
    ("top_k statistic", lambda: top_k_configs(_table(), "acc", statistic="mode"), ValueError,
     "statistic: expected 'mean', 'median', 'min', 'max' or a function, but got 'mode'"),
]


@pytest.mark.parametrize("call, error, message", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_gets_a_clear_message(call, error, message):
    with pytest.raises(error) as info:
        call()
    text = str(info.value) if not isinstance(info.value, KeyError) else info.value.args[0]
    if isinstance(message, re.Pattern):
        assert message.fullmatch(text), text
    else:
        assert text == message


def test_an_existing_experiment_name_is_refused_before_anything_runs(tmp_path):
    with pytest.raises(FileExistsError) as info:
        _existing(tmp_path)
    assert str(info.value) == (f"name: expected a new experiment name, but {str(tmp_path / 'taken')!r} exists; "
                               f"use Search.restore({str(tmp_path)!r}, 'taken') to resume it")


def test_restoring_a_folder_that_is_not_an_experiment(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        Search.restore(str(tmp_path), "missing")
    assert str(info.value) == (f"restore: {str(tmp_path / 'missing')!r} is not a glimr_cv experiment "
                               "(no glimr_cv_search.pkl)")


def test_there_are_at_least_thirty_distinct_cases():
    assert len({c[0] for c in CASES}) >= 30
