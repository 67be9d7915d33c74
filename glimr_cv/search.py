"""The three-step entry point: ``Search(space, builder, loader).experiment(...)``."""

from __future__ import annotations

import datetime
import glob
import json
import os
import pickle
import shutil
import tempfile
from typing import Any, Callable

import pandas as pd

from .analysis import read_folds
from .folds import check_loader
from .notation import Choice, FloatRange, IntRange, TuneDomain, iter_leaves
from .racing import RacingRule, get_rule
from .results import FOLD_COLUMNS, FOLD_DETAILS, SearchResults, cv_table, format_leaderboard
from .scheduler import FoldScheduler
from .space import default_metric, metric_names, validate_space

__all__ = ["Search"]

_SEARCH_FILE = "glimr_cv_search.pkl"
_FIT_RESERVED = ("x", "y", "epochs", "validation_data", "verbose", "validation_split")


def _check_int(name: str, value: Any, low: int, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        expected = f"an int >= {low}" + (" or None" if allow_none else "")
        raise ValueError(f"{name}: expected {expected}, but got {value!r}")


# search_gen_state files are pickles despite their .json suffix
_STATE_FILES = ("experiment_state-*.json", "search_gen_state-*.json", "searcher-state-*.pkl")


def _intact(file: str) -> bool:
    try:
        with open(file, "rb") as f:
            json.load(f) if os.path.basename(file).startswith("experiment_state") else pickle.load(f)
        return True
    except Exception:  # truncated JSON or pickle: any error means unusable
        return False


def _repair_state(path: str) -> None:
    """Replace Tune state files that a kill cut short with the driver's intact copies.

    Ray Tune writes its state atomically in a staging folder under the Ray temp
    directory and then copies it into the experiment folder; a SIGKILL during that
    copy leaves a truncated file, and Tune would then silently restart the whole
    experiment. The staging copies are complete and consistent with each other.
    """
    newest = [max(found) for pattern in _STATE_FILES if (found := glob.glob(os.path.join(path, pattern)))]
    broken = [f for f in newest if not _intact(f)]  # Tune reads only the newest of each
    if not broken:
        return
    names = {os.path.basename(f) for f in broken}
    temp = os.environ.get("RAY_TMPDIR", tempfile.gettempdir())
    stagings = glob.glob(os.path.join(temp, "ray", "session_*", "artifacts", "*", os.path.basename(path), "driver_artifacts"))
    for staging in sorted(stagings, key=os.path.getmtime, reverse=True):
        files = [f for pattern in _STATE_FILES for f in glob.glob(os.path.join(staging, pattern))]
        if names <= {os.path.basename(f) for f in files} and all(_intact(f) for f in files):
            for f in files:
                tmp = os.path.join(path, f".{os.path.basename(f)}.restoring")
                shutil.copy2(f, tmp)
                os.replace(tmp, os.path.join(path, os.path.basename(f)))
            return
    raise RuntimeError(
        f"restore: {sorted(names)} in {path!r} were cut short when the run was killed, and no intact copy "
        "was found in Ray's temp folder; resuming would restart the experiment and train finished folds again"
    )


def _check_picklable(space: dict, builder: Callable, loader: Callable) -> None:
    """Ray ships the space, builder and loader to workers: fail now, naming the culprit."""
    from ray import cloudpickle

    def leaves():
        for path, value in iter_leaves(space):
            where = "/".join(map(str, path))
            if isinstance(value, list):
                yield from ((f"{where}[{i}]", v) for i, v in enumerate(value))
            else:
                yield where, value
        yield "builder", builder
        yield "loader", loader

    for where, value in leaves():
        try:  # out-of-band buffers: arrays are checked, not copied
            cloudpickle.dumps(value, protocol=5, buffer_callback=lambda buffer: None)
        except Exception as err:  # pickling raises TypeError, PicklingError, AttributeError, ...
            raise TypeError(
                f"{where}: {value!r} cannot be pickled ({type(err).__name__}: {err}); Ray sends the space, "
                "builder and loader to its workers, so they must be picklable"
            ) from None


class Search:
    """Cross-validated hyperparameter search of a Keras model on Ray Tune.

    Parameters
    ----------
    space : dict
        Nested search space with sections ``tasks``, ``optimization`` and ``data``
        (see :mod:`glimr_cv.notation` and :func:`glimr_cv.space.validate_space`).
    builder : callable
        ``builder(config) -> (model, losses, loss_weights, metrics)``; the model's
        outputs are named by task.
    loader : callable
        ``loader(**config["data"], **loader_kwargs, cv_index=i, cv_folds=k) ->
        (train_ds, val_ds)``, two ``tf.data.Dataset`` with labels keyed by task.
        Fold ``i`` must be the same partition on every call.
    metric : str, optional
        ``"{task}_{metric name}"``, ``"{task}_loss"`` or ``"loss"``; defaults to the
        first metric of the first task.
    mode : {"max", "min"}
        Direction of ``metric``, used by the scheduler, checkpoints and ranking.
    cv_folds : int or None
        Folds per configuration; ``None`` for one train/validation split from a
        loader without the CV arguments.
    stopper : ray.tune.Stopper or callable, optional
        Called as ``stopper(trial_id, result)`` after each epoch inside the trial;
        returning True ends that fold early (its best epoch is still checkpointed).
    loader_kwargs, fit_kwargs : dict, optional
        Extra keyword arguments of the loader and of ``model.fit``.
    seed : int
        Seed of configuration sampling and of each fold's Keras initialisation.
    racing : {"forgiving", "aggressive", "paired"}, RacingRule or None
        Rule that stops a configuration's CV early (see :mod:`glimr_cv.racing`);
        ``None`` trains every fold. Default "forgiving".
    min_folds : int, optional
        Finished folds before racing may stop a configuration; defaults to the
        rule's own (1, or 2 for "paired").
    max_failures : int
        Retries of a fold whose worker dies or raises before it counts as failed.
    reuse_models : bool
        When a worker trains another fold of the configuration it trained last, train
        its previous Keras model with every variable reset to the builder's fresh
        model for the new fold, so that Keras does not trace the train step again
        (identical results; see :func:`glimr_cv.trainable.fold_model`). While a fold
        starts, the worker briefly holds the weights twice. Turn off for models that
        keep state outside Keras variables, or whose weights fit in memory only once.
    """

    def __init__(
        self,
        space: dict,
        builder: Callable,
        loader: Callable,
        metric: str | None = None,
        mode: str = "max",
        cv_folds: int | None = 5,
        stopper: Any = None,
        loader_kwargs: dict | None = None,
        fit_kwargs: dict | None = None,
        seed: int = 0,
        racing: str | RacingRule | None = "forgiving",
        min_folds: int | None = None,
        max_failures: int = 2,
        reuse_models: bool = True,
    ):
        self._parsed = validate_space(space)
        self.space = space
        if not callable(builder):
            raise TypeError(f"builder: expected a callable builder(config) -> (model, losses, loss_weights, metrics), but got {builder!r}")
        _check_int("cv_folds", cv_folds, 2, allow_none=True)
        check_loader(loader, cv_folds)
        self.builder, self.loader, self.cv_folds = builder, loader, cv_folds
        if mode not in ("min", "max"):
            raise ValueError(f"mode: expected 'min' or 'max', but got {mode!r}")
        self.mode = mode
        names = metric_names(space)
        self.metric = default_metric(space) if metric is None else metric
        if self.metric not in names:
            raise ValueError(f"metric: {self.metric!r} will not be reported; expected one of {names}")
        self.metric_names = names
        for name, value in (("loader_kwargs", loader_kwargs), ("fit_kwargs", fit_kwargs)):
            if value is not None and not isinstance(value, dict):
                raise TypeError(f"{name}: expected a dict or None, but got {type(value).__name__}")
        self.loader_kwargs = dict(loader_kwargs or {})
        self.fit_kwargs = dict(fit_kwargs or {})
        clash = sorted(set(self.fit_kwargs) & set(_FIT_RESERVED))
        if clash:
            raise ValueError(f"fit_kwargs: {clash} are set by the search (epochs come from optimization/epochs); remove them")
        if stopper is not None and not callable(stopper):
            raise TypeError(f"stopper: expected a ray.tune.Stopper or callable(trial_id, result) -> bool, but got {stopper!r}")
        self.stopper = stopper
        _check_int("seed", seed, 0)
        self.seed = seed
        self.racing = get_rule(racing, min_folds)
        if min_folds is not None and isinstance(racing, RacingRule):
            raise ValueError("min_folds: set it on the RacingRule object itself, not both")
        _check_int("max_failures", max_failures, 0)
        self.max_failures = max_failures
        if not isinstance(reuse_models, bool):
            raise TypeError(f"reuse_models: expected True or False, but got {reuse_models!r}")
        self.reuse_models = reuse_models
        _check_picklable(space, builder, loader)
        self.set_checkpoints()
        self.set_reporter()
        self.set_resources()

    # -- glimr's configuration methods ------------------------------------------
    def set_checkpoints(self, metric: str | None = None, mode: str | None = None, num_to_keep: int | None = None, **kwargs) -> None:
        """Checkpoint settings (``ray.tune.CheckpointConfig`` keyword arguments).

        Each fold writes one checkpoint, its best epoch by ``metric`` and ``mode``
        of the search, so ``metric`` and ``mode`` here must match the search's and
        ``num_to_keep`` (per fold) rarely matters.
        """
        if metric not in (None, self.metric) or mode not in (None, self.mode):
            raise ValueError(f"set_checkpoints: checkpoints follow the search's metric={self.metric!r}, mode={self.mode!r}; "
                             f"got metric={metric!r}, mode={mode!r}")
        _check_int("num_to_keep", num_to_keep, 1, allow_none=True)
        self.checkpoint_kwargs = {"num_to_keep": num_to_keep, **kwargs}

    def set_reporter(self, parameters: list | None = None, jupyter: bool = False, max_report_frequency: float = 10.0) -> None:
        """Live leaderboard settings.

        Parameters
        ----------
        parameters : list of str, optional
            Config paths (``"optimization/learning_rate"``) to show; default: the sampled ones.
        jupyter : bool
            Redraw in place in a notebook.
        max_report_frequency : float
            Seconds between updates; ``0`` or less turns the display off.
        """
        sampled = ["/".join(map(str, p)) for p, v in iter_leaves(self._parsed)
                   if isinstance(v, (Choice, IntRange, FloatRange, TuneDomain))]
        self.report_parameters = list(parameters) if parameters is not None else sampled[:6]
        self.jupyter = jupyter
        self.report_every = max_report_frequency

    def set_resources(self, resources: dict | None = None) -> None:
        """Resources of one fold training, e.g. ``{"CPU": 1, "GPU": 0}``."""
        resources = {"CPU": 1, "GPU": 0} if resources is None else dict(resources)
        for key, value in resources.items():
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
                raise ValueError(f"resources[{key!r}]: expected a number >= 0, but got {value!r}")
        self.resources = resources

    # -- running -----------------------------------------------------------------
    def _spec(self):
        from .trainable import TrialSpec

        return TrialSpec(
            builder=self.builder,
            loader=self.loader,
            metric=self.metric,
            mode=self.mode,
            cv_folds=self.cv_folds,
            task_names=list(self.space["tasks"]),
            metric_names=self.metric_names,
            loader_kwargs=self.loader_kwargs,
            fit_kwargs=self.fit_kwargs,
            stopper=self.stopper,
            seed=self.seed,
            reuse_models=self.reuse_models,
        )

    def _trainable(self):
        from ray import tune

        from .trainable import train_fold

        resources = {k.lower(): v for k, v in self.resources.items()}
        return tune.with_resources(tune.with_parameters(train_fold, spec=self._spec()), resources)

    # -- preflight ----------------------------------------------------------------
    def check(self) -> dict:
        """Try one configuration in this process before any Ray worker starts.

        Samples a configuration, calls the builder, calls the loader for fold 0,
        and trains on one batch and validates on one batch. Turns the usual
        mistakes (wrong builder tuple, output names or label keys that are not the
        task names, non-dataset loader results, shape mismatches, a metric that
        will not be reported) into errors that say what was expected.

        Returns
        -------
        dict
            The validation metrics of that one batch, by reported name.

        Raises
        ------
        TypeError, ValueError
            Naming the builder, the loader or the config path at fault.
        """
        import keras
        import tensorflow as tf

        from .keras_helpers import keras_optimizer
        from .notation import sample_space
        from .trainable import validation_report

        tasks = list(self.space["tasks"])
        config = sample_space(self._parsed, self.seed)
        keras.backend.clear_session()
        built = self.builder(config)
        if not isinstance(built, tuple) or len(built) != 4:
            got = f"a tuple of length {len(built)}" if isinstance(built, tuple) else type(built).__name__
            raise TypeError(f"builder: expected it to return (model, losses, loss_weights, metrics), but it returned {got}")
        model, losses, loss_weights, metrics = built
        if not isinstance(model, keras.Model):
            raise TypeError(f"builder: the first element must be a keras.Model, but got {type(model).__name__}")
        if sorted(model.output_names) != sorted(tasks):
            raise ValueError(
                f"builder: the model's outputs are named {sorted(model.output_names)}, but the tasks are {sorted(tasks)}; "
                f"name each output layer after its task, e.g. keras.layers.Dense(..., name={tasks[0]!r})"
            )
        for what, value in (("losses", losses), ("loss_weights", loss_weights), ("metrics", metrics)):
            if isinstance(value, dict) and not set(value) <= set(tasks):
                raise ValueError(f"builder: {what} are keyed {sorted(value)}, but the tasks are {sorted(tasks)}")
        data_kwargs = {**config["data"], **self.loader_kwargs}
        if self.cv_folds:
            data_kwargs.update(cv_index=0, cv_folds=self.cv_folds)
        loaded = self.loader(**data_kwargs)
        if (not isinstance(loaded, tuple) or len(loaded) != 2
                or not all(isinstance(d, tf.data.Dataset) for d in loaded)):
            got = (f"({', '.join(type(d).__name__ for d in loaded)})" if isinstance(loaded, tuple)
                   else type(loaded).__name__)
            raise TypeError(f"loader: expected it to return (train_ds, val_ds), two tf.data.Dataset, but it returned {got}")
        for split, ds in zip(("train", "validation"), loaded):
            spec = ds.element_spec
            if not isinstance(spec, tuple) or len(spec) < 2:
                raise ValueError(f"loader: {split} elements must be (features, labels) pairs, but got {spec}")
            labels = spec[1]
            if not isinstance(labels, dict):
                raise ValueError(
                    f"loader: {split} labels must be a dict keyed by task name, e.g. {{{tasks[0]!r}: y}}, "
                    f"but got {type(labels).__name__}"
                )
            if sorted(labels) != sorted(tasks):
                raise ValueError(f"loader: {split} labels are keyed {sorted(labels)}, but the tasks are {sorted(tasks)}")
        model.compile(optimizer=keras_optimizer(config["optimization"]), loss=losses,
                      loss_weights=loss_weights, metrics=metrics)
        train_ds, val_ds = loaded
        try:
            history = model.fit(train_ds.take(1), validation_data=val_ds.take(1), epochs=1, verbose=0, shuffle=False)
        except Exception as err:  # Keras raises many types for shape and dtype mismatches
            raise ValueError(
                f"preflight: training on one batch of fold 0 failed: {type(err).__name__}: {str(err).strip()[:800]}\n"
                f"loader gives features {train_ds.element_spec[0]} and labels {train_ds.element_spec[1]}; "
                f"the model takes {[tuple(t.shape) for t in model.inputs]} and outputs "
                f"{dict(zip(model.output_names, [tuple(t.shape) for t in model.outputs]))}"
            ) from err
        logs = {k: v[-1] for k, v in history.history.items()}
        try:
            report = validation_report(logs, self._spec())
        except KeyError as err:
            raise ValueError(f"preflight: {err.args[0]}") from None
        keras.backend.clear_session()
        return report

    @staticmethod
    def _init_ray() -> None:
        import ray

        if not ray.is_initialized():
            ray.init(
                include_dashboard=False,
                configure_logging=False,
                runtime_env={"env_vars": {"TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONWARNINGS": "ignore"}},
            )

    def experiment(
        self,
        local_dir: str,
        name: str | None = None,
        num_samples: int | None = 10,
        max_concurrent_trials: int | None = None,
        scheduler: Any = None,
        search_alg: Any = None,
        max_fold_trainings: int | None = None,
        check: bool = True,
    ) -> SearchResults:
        """Run the search.

        Parameters
        ----------
        local_dir : str
            Folder for experiments; the run writes to ``local_dir/name``.
        name : str, optional
            Experiment name; defaults to a timestamp.
        num_samples : int or None
            Most configurations to start (``None``: no limit, needs ``max_fold_trainings``).
        max_concurrent_trials : int, optional
            Most fold trainings at once; defaults to what the resources allow.
        scheduler : ray.tune scheduler, optional
            A Tune trial scheduler applied within folds (e.g. ASHA).
        search_alg : ray.tune.search.Searcher, optional
            Proposes configurations (e.g. ``OptunaSearch()``); it is told each
            configuration's CV mean. Defaults to seeded random sampling.
        max_fold_trainings : int, optional
            Budget in fold trainings; racing spends what it saves on more configurations.
        check : bool
            Run :meth:`check` first, in this process, before Ray starts.

        Returns
        -------
        SearchResults
        """
        from ray import tune
        from ray.tune.search import Searcher

        from .progress import ProgressDisplay
        from .searcher import CVSearcher
        from .trainable import trial_dirname

        _check_int("num_samples", num_samples, 1, allow_none=True)
        _check_int("max_fold_trainings", max_fold_trainings, 1, allow_none=True)
        _check_int("max_concurrent_trials", max_concurrent_trials, 1, allow_none=True)
        if num_samples is None and max_fold_trainings is None:
            raise ValueError("num_samples: None needs a max_fold_trainings budget, or the search never ends")
        if search_alg is not None and not isinstance(search_alg, Searcher):
            raise TypeError(f"search_alg: expected a ray.tune.search.Searcher such as OptunaSearch(), but got {search_alg!r}")
        if not isinstance(local_dir, (str, os.PathLike)):
            raise TypeError(f"local_dir: expected a path, but got {local_dir!r}")
        name = name or datetime.datetime.now().strftime("search_%Y-%m-%d_%H-%M-%S")
        local_dir = os.path.abspath(os.path.expanduser(os.fspath(local_dir)))
        path = os.path.join(local_dir, name)
        if os.path.exists(os.path.join(path, _SEARCH_FILE)):
            raise FileExistsError(f"name: experiment {path!r} exists; use Search.restore({local_dir!r}, {name!r}) or a new name")
        if check:
            self.check()
        os.makedirs(path, exist_ok=True)
        self._save(path)

        n_folds = self.cv_folds or 1
        fold_scheduler = FoldScheduler(n_folds, self.mode, self.racing, num_samples, max_fold_trainings)
        searcher = CVSearcher(self._parsed, fold_scheduler, self.metric, self.mode, self.seed, inner=search_alg)
        self._init_ray()
        tuner = tune.Tuner(
            self._trainable(),
            param_space={},
            tune_config=tune.TuneConfig(
                search_alg=searcher,
                scheduler=scheduler,
                num_samples=-1,  # the searcher says when it has finished
                max_concurrent_trials=max_concurrent_trials,
                reuse_actors=True,  # a new actor per fold spent ~75% of worker time importing TensorFlow
                trial_dirname_creator=trial_dirname,
            ),
            run_config=tune.RunConfig(
                name=name,
                storage_path=local_dir,
                checkpoint_config=tune.CheckpointConfig(**self.checkpoint_kwargs),
                failure_config=tune.FailureConfig(max_failures=self.max_failures),
                callbacks=[ProgressDisplay(None, self.report_every, self.jupyter)] if self.report_every > 0 else [],
                verbose=0,
            ),
        )
        return self._run(tuner, searcher, path)

    def _run(self, tuner, searcher, path: str) -> SearchResults:
        display = next((cb for cb in tuner._local_tuner.get_run_config().callbacks or [] if hasattr(cb, "show")), None)
        if display is not None:
            display.render = lambda: self._render(searcher, path)
        result_grid = tuner.fit()
        if display is not None:
            display.show(force=True)
        return self.results(path, searcher, result_grid)

    def _render(self, searcher, path: str):
        # the scheduler's scores are current; files on disk lag behind the last trials
        rows = [{"config_id": c.config_id, "fold": f, "status": "complete", self.metric: s}
                for c in searcher.scheduler.configs.values() for f, s in c.scores.items()]
        folds = pd.DataFrame(rows, columns=["config_id", "fold", "status", self.metric])
        configs = [{"config_id": c.config_id, "status": c.status, "params": c.params, "error": c.error}
                   for c in searcher.scheduler.configs.values()]
        table = cv_table(folds, configs, self.metric, self.mode, self.cv_folds or 1)
        if self.jupyter:
            return table
        return format_leaderboard(table, self.metric, self.cv_folds or 1, self.report_parameters)

    def _table(self, searcher, folds: pd.DataFrame) -> pd.DataFrame:
        # a failed fold's own error text (e.g. from error.txt) says more than the scheduler's summary
        fold_errors = {}
        if len(folds) and "error" in folds:
            for cid, err in folds.loc[folds["error"].notna() & (folds["status"] == "failed"), ["config_id", "error"]].values:
                fold_errors.setdefault(cid, err)
        configs = [
            {"config_id": c.config_id, "status": c.status, "params": c.params,
             "error": fold_errors.get(c.config_id, c.error) if c.status == "failed" else c.error}
            for c in searcher.scheduler.configs.values()
        ]
        if len(folds):
            folds = folds.rename(columns={"fold_score": self.metric}) if self.metric not in folds else folds
        return cv_table(folds, configs, self.metric, self.mode, self.cv_folds or 1, self.metric_names)

    def results(self, path: str, searcher, result_grid=None) -> SearchResults:
        """Build :class:`SearchResults` from an experiment directory and its searcher."""
        folds = read_folds(path)
        states = {c.config_id: c for c in searcher.scheduler.configs.values()}
        # the scheduler knows why a fold stopped; disk knows the details
        folds = folds[folds["config_id"].isin(list(states))].reset_index(drop=True) if len(folds) else folds
        table = self._table(searcher, folds)
        keep = [*FOLD_COLUMNS, *[m for m in self.metric_names if m in folds.columns], *FOLD_DETAILS]
        return SearchResults(
            path=path,
            metric=self.metric,
            mode=self.mode,
            n_splits=self.cv_folds or 1,
            table=table,
            folds=folds.reindex(columns=keep),
            configs={cid: c.params for cid, c in states.items()},
            result_grid=result_grid,
            fold_trainings=searcher.scheduler.n_started,
            fold_trainings_saved=searcher.scheduler.fold_trainings_saved,
            sampled_params=self.report_parameters,
            builder=self.builder,
        )

    # -- persistence -----------------------------------------------------------------
    def _save(self, path: str) -> None:
        from ray import cloudpickle

        with open(os.path.join(path, _SEARCH_FILE), "wb") as f:
            cloudpickle.dump(self, f)

    @classmethod
    def load(cls, local_dir: str, name: str | None = None) -> "Search":
        """The ``Search`` saved in an experiment directory (``local_dir/name``, or ``local_dir`` alone)."""
        path = os.path.join(os.path.expanduser(os.fspath(local_dir)), name) if name else os.fspath(local_dir)
        file = os.path.join(path, _SEARCH_FILE)
        if not os.path.exists(file):
            raise FileNotFoundError(f"restore: {os.path.abspath(path)!r} is not a glimr_cv experiment (no {_SEARCH_FILE})")
        with open(file, "rb") as f:
            return pickle.load(f)

    @classmethod
    def restore(cls, local_dir: str, name: str | None = None) -> SearchResults:
        """Resume an interrupted experiment and return its results when it finishes.

        Finished folds are kept; folds that were running are trained again; the
        fold scheduler, racing state and inner searcher continue where they were.
        """
        from ray import tune

        search = cls.load(local_dir, name)
        path = os.path.abspath(os.path.join(os.path.expanduser(os.fspath(local_dir)), name) if name else os.fspath(local_dir))
        if not tune.Tuner.can_restore(path):
            raise FileNotFoundError(f"restore: {path!r} holds no Ray Tune experiment state to resume")
        _repair_state(path)
        search._init_ray()
        tuner = tune.Tuner.restore(path, trainable=search._trainable(), resume_unfinished=True, resume_errored=True)
        searcher = tuner._local_tuner._tune_config.search_alg
        return search._run(tuner, searcher, path)


