"""The three-step entry point: ``Search(space, builder, loader).experiment(...)``.

A facade: :class:`Search` checks the user's values and holds the settings;
:mod:`glimr_cv.session` runs and resumes it (the engine, the experiment folder and
the results).
"""

from __future__ import annotations

from typing import Any, Callable

from .checks import Bool, Function, Instance, Int, OneOf, expected, validate
from .data.contract import check_loader
from .engine.racing import EpochRule, RacingRule, get_epoch_rule, get_rule
from .engine.shipping import ship_by_value
from .engine.store import check_picklable, experiment_path, load_search
from .results.summary import SearchResults, load_results
from .session import SearchHalted
from .settings import RunSettings
from .space.notation import covering_configs
from .space.sections import default_metric, metric_names, validate_space

__all__ = ["Search", "SearchHalted", "load_results"]

_FIT_RESERVED = ("x", "y", "epochs", "validation_data", "verbose", "validation_split")
#: What a stopper's dict criteria may name besides the reported metrics.
_STOPPER_KEYS = ("epoch", "fold_score", "training_iteration", "time_total_s")
#: The plain arguments of :class:`Search`, checked in this order.
_CONSTRAINTS = {
    "builder": Function("a callable builder(config) -> (model, losses, loss_weights, metrics)"),
    "cv_folds": Int(2, none=True),
    "mode": OneOf("max", "min"),
    "loader_kwargs": Instance(dict, "a dict", none=True),
    "fit_kwargs": Instance(dict, "a dict", none=True),
    "seed": Int(0),
    "fail_fast": Int(1, none=True),
    "deterministic": Bool(),
    "max_failures": Int(0),
    "reuse_models": Bool(),
}


class Search(RunSettings):
    """Cross-validated hyperparameter search of a Keras model on Ray Tune.

    Parameters
    ----------
    space : dict
        Nested search space with sections ``tasks``, ``optimization`` and ``data``
        (see :mod:`glimr_cv.space`).
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
    stopper : ray.tune.Stopper, callable or dict, optional
        Called in the driver as ``stopper(trial_id, result)`` after each epoch of
        a fold; True ends that fold after its next epoch, as a finished fold scored
        at its best epoch (``stopped_early``). A ``ray.tune.Stopper``'s
        ``stop_all()`` ends every running fold in the same way and starts no more:
        a fold still waiting for a slot never trains, and its configuration ends
        "incomplete". A dict is Ray Tune's criteria, ``{"epoch": 20,
        "digit_accuracy": 0.99}``: a fold stops when any reported value reaches
        its bound.
    loader_kwargs, fit_kwargs : dict, optional
        Extra keyword arguments of the loader and of ``model.fit``.
    seed : int
        Seed of configuration sampling and of each fold's Keras initialisation.
    racing : {"paired", "forgiving", "aggressive", "ttest"}, RacingRule or None
        Rule that stops a configuration's CV early (see :mod:`glimr_cv.engine.racing`);
        ``None`` trains every fold. Default "paired": stop a configuration once it
        trails the incumbent by more than 0.001 on average over the folds both
        finished (:class:`glimr_cv.engine.racing.Paired`).
    fold_stopping : {"auto", "paired_curve"}, EpochRule or None
        Rule that stops a fold before its last epoch when its learning curve is
        hopeless against the incumbent's on the same fold (see
        :class:`glimr_cv.engine.racing.PairedCurve`); the fold counts as finished,
        scored at its best epoch. ``None`` trains every epoch. Default "auto":
        "paired_curve" with racing, ``None`` with ``racing=None``.
    min_folds : int, optional
        Finished folds before racing may stop a configuration; defaults to the
        rule's own (1, or 2 for "ttest").
    max_failures : int
        Retries of a fold whose worker dies before it counts as failed. An
        exception in the builder, the loader or ``fit`` fails the fold at once:
        the same code on the same data would raise again.
    fail_fast : int or None
        Stop the whole search, keeping what finished and resumable with
        :meth:`restore`, when the same error ends the first fold of this many
        configurations, or when a worker cannot load the builder or loader;
        ``None`` never stops early.
    deterministic : bool
        Turn on TensorFlow op determinism in every worker
        (``tf.config.experimental.enable_op_determinism``). With one fold at a
        time (``max_concurrent_trials=1``), the same ``seed`` then gives the same
        configurations, folds and fold scores; see "Reproducibility" in the README.
    reuse_models : bool
        When a worker trains another fold of the configuration it trained last, train
        its previous Keras model with every variable reset to the builder's fresh
        model for the new fold, so that Keras does not trace the train step again
        (identical results; see :func:`glimr_cv.engine.fold.build_model`). While a
        fold starts, the worker briefly holds the weights twice. Turn off for models
        that keep state outside Keras variables, or whose weights fit in memory only once.
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
        racing: str | RacingRule | None = "paired",
        min_folds: int | None = None,
        max_failures: int = 2,
        reuse_models: bool = True,
        fold_stopping: str | EpochRule | None = "auto",
        fail_fast: int | None = 3,
        deterministic: bool = False,
    ):
        self._parsed = validate_space(space)
        self.space = space
        for name, value in validate(_CONSTRAINTS, locals()).items():
            setattr(self, name, value)
        self.loader_kwargs, self.fit_kwargs = dict(loader_kwargs or {}), dict(fit_kwargs or {})
        check_loader(loader, cv_folds)
        self.loader = loader
        self.metric_names = metric_names(space)
        self.metric = default_metric(space) if metric is None else metric
        if self.metric not in self.metric_names:
            raise ValueError(expected("metric", f"one of the reported metrics {self.metric_names}", self.metric))
        clash = sorted(set(self.fit_kwargs) & set(_FIT_RESERVED))
        if clash:
            raise ValueError(expected("fit_kwargs", f"none of {list(_FIT_RESERVED)} (the search sets them; epochs "
                                      "come from optimization/epochs)", got=str(clash)))
        from .engine.stopping import as_stopper  # imports Ray Tune: not at `import glimr_cv`

        self.stopper = as_stopper(stopper, [*self.metric_names, *_STOPPER_KEYS])
        if min_folds is not None and isinstance(racing, RacingRule):
            raise ValueError(expected("min_folds", "None with a RacingRule object (set min_folds on the rule itself)",
                                      min_folds))
        self.racing = get_rule(racing, min_folds)
        self.fold_stopping = get_epoch_rule(fold_stopping, self.racing)
        check_picklable(space, builder, loader)
        self._driver_stops = False  # whether a run's Tune scheduler or stopper stops folds from the driver
        self._searcher_token = None  # the run's searcher, found again after a crash
        self._default_settings()

    # -- running -----------------------------------------------------------------
    @property
    def spec(self):
        """What every fold needs besides its configuration (:class:`glimr_cv.engine.fold.TrialSpec`), read-only.

        A new object on each access, made from the search's settings; changing it changes nothing here.
        """
        from .engine.fold import TrialSpec

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
            seed=self.seed,
            reuse_models=self.reuse_models,
            fold_stopping=self.fold_stopping,
            driver_stops=self._driver_stops,
            epoch_checkpoints=self.every_epoch,
            deterministic=self.deterministic,
        )

    def check(self) -> dict:
        """Try the search in this process before any Ray worker starts.

        1. Sample a configuration, call the builder and the loader for fold 0, and
           train and validate on one batch each, exactly as a fold does.
        2. Build and compile more configurations until every option of every choice
           (and grid) is taken at least once (not all pairs); one that takes a
           structured option (a sub-space) is also trained on one batch.
        3. Find the modules the pickled builder and loader import that Ray workers
           could not: those loaded here from source travel by value.

        The usual mistakes (a wrong builder tuple, output or label names that are
        not the task names, a loader that returns no datasets, shape mismatches, a
        metric that will not be reported) become errors that say what was expected.

        Returns
        -------
        dict
            The validation metrics of that one batch, by reported name.

        Raises
        ------
        TypeError, ValueError
            Naming the builder, the loader or the config path at fault, and the
            options of the configuration that failed (``tasks/label/loss[1]``).
        ImportError
            Naming a module the workers need that cannot travel by value.
        """
        import random

        from .engine.fold import preflight

        first, *others = covering_configs(self._parsed, random.Random(self.seed))
        report = preflight(self.spec, first[0], others)
        self._ship()
        return report

    def _ship(self) -> list[str]:
        """Register the user's modules that workers cannot import to travel by value (ImportError if one cannot)."""
        return ship_by_value([self.builder, self.loader, self.stopper, self.space, self.loader_kwargs, self.fit_kwargs])

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
        reuse_actors: bool = True,
        verbose: int = 0,
        address: str | None = None,
        callbacks: list | None = None,
        tracking: Any = None,
    ) -> SearchResults:
        """Run the search.

        Parameters
        ----------
        local_dir : str
            Folder for experiments; the run writes to ``local_dir/name``. On a
            cluster, a folder every node sees at the same path, or a URI that
            Ray Tune's storage takes (``s3://bucket/runs``, ``gs://...``).
        name : str, optional
            Experiment name; defaults to a timestamp.
        num_samples : int or None
            Most configurations to start (``None``: no limit, needs ``max_fold_trainings``).
            With a ``tune.grid_search`` in the space, as in Ray Tune, each grid point
            is tried ``num_samples`` times.
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
        reuse_actors : bool
            Train the next fold in the same Ray actor (default). ``False`` starts a
            new worker process, with its TensorFlow import, for every fold.
        verbose : int
            0 (default) shows the live leaderboard and glimr_cv's own messages only;
            a failed fold's error is a line of the leaderboard and its traceback
            stays in its trial folder. 1 or 2 bring back Ray Tune's console output,
            warnings and tracebacks.
        address : str, optional
            The Ray cluster to run on: ``"auto"`` (the one ``ray start`` started on
            this machine) or ``"host:port"`` of its head node. ``None`` uses the Ray
            this process is connected to, or the cluster in ``RAY_ADDRESS``, or a new
            local Ray. An address other than the connected Ray's is an error, and so
            is Ray Client (``ray://``): this process must be a driver on a node.
        callbacks : list of ray.tune.Callback, optional
            Ray Tune callbacks, called in this driver, as Ray documents them
            (``MLflowLoggerCallback``, ``WandbLoggerCallback``, ``CSVLoggerCallback``, ...):
            one run per fold training, whose config has ``__glimr_cv__/config_id``
            and ``__glimr_cv__/fold`` besides the sampled values.
        tracking : Tracker or list of Tracker, optional
            Experiment tracking that understands folds (:mod:`glimr_cv.tracking`):
            ``MLflowTracker(uri, experiment_name=...)``, ``TensorBoardTracker()``.
            It is checked (reached) before Ray starts, and ``Search.restore`` continues its runs.

        Returns
        -------
        SearchResults
        """
        from .session import start

        return start(self, local_dir, name, num_samples=num_samples, max_concurrent_trials=max_concurrent_trials,
                     scheduler=scheduler, search_alg=search_alg, max_fold_trainings=max_fold_trainings, check=check,
                     reuse_actors=reuse_actors, verbose=verbose, address=address, callbacks=callbacks,
                     tracking=tracking)

    def nested(self, local_dir: str, outer_folds: int = 5, name: str | None = None, final: str = "ensemble",
               num_samples: int | None = 10, **experiment_kwargs):
        """Nested cross-validation: one search per outer fold, scored on its held-out rows.

        See :func:`glimr_cv.nested.nested_cv`, which this calls with this search.
        """
        from .nested import nested_cv

        return nested_cv(self, local_dir, outer_folds=outer_folds, name=name, final=final, num_samples=num_samples,
                         **experiment_kwargs)

    # -- an experiment folder ------------------------------------------------------
    @classmethod
    def load(cls, local_dir: str, name: str | None = None) -> "Search":
        """The ``Search`` saved in an experiment directory (``local_dir/name``, or ``local_dir`` alone)."""
        return load_search(experiment_path(local_dir, name))

    @classmethod
    def restore(cls, local_dir: str, name: str | None = None, verbose: int = 0,
                address: str | None = None) -> SearchResults:
        """Resume an interrupted experiment and return its results when it finishes.

        Finished folds are kept; folds that were running are trained again, and so
        may be one that finished in the last seconds before the crash, before Ray
        Tune saved its state (with the same seed and score); the fold scheduler,
        racing state and inner searcher continue where they were.
        ``verbose`` and ``address`` are those of :meth:`experiment`: resume from any
        node that sees ``local_dir``.

        Resuming runs the folder's code (its pickled builder and loader, checked
        against the hash recorded when the search started): restore only folders
        you trust. A folder written before glimr_cv's folder format 1 is brought
        up to it first (:func:`glimr_cv.engine.store.migrate`).
        """
        from .session import resume

        return resume(experiment_path(local_dir, name), verbose, address)
