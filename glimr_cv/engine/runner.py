"""Ray Tune wiring: the trainable, a Tuner for a new or a restored experiment, and the run.

Ray Tune's three kinds of settings stay apart: the *space* belongs to the
:class:`~glimr_cv.engine.searcher.CVSearcher` (Tune's ``param_space`` is empty),
*how to search* is the :class:`ray.tune.TuneConfig`, and *how to run* the
:class:`ray.tune.RunConfig`.
"""

from __future__ import annotations

import os
from typing import Any

from ray.tune import ProgressReporter

from .fold import TrialSpec
from .quiet import quiet_tune
from .searcher import CVSearcher

__all__ = ["init_ray", "new_tuner", "restore_tuner", "run", "SilentReporter"]

#: Environment of every Ray worker: no TensorFlow C++ info lines, no Python warnings.
WORKER_ENV = {"TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONWARNINGS": "ignore"}


class SilentReporter(ProgressReporter):
    """A Ray Tune progress reporter that reports nothing: glimr_cv shows its own leaderboard."""

    def should_report(self, trials, done: bool = False) -> bool:
        return False

    def report(self, trials, done: bool, *sys_info) -> None:
        pass


def init_ray(verbose: int = 0) -> None:
    """Start a local Ray unless this process is already connected to one."""
    import ray

    if ray.is_initialized():
        return
    # no worker_process_setup_hook importing TensorFlow: a worker that is slow to start made Tune
    # train every short fold on the first one; quiet runs keep worker output off the driver instead
    runtime_env = {"env_vars": dict(WORKER_ENV)}
    with quiet_tune(verbose):
        # quiet: worker output stays in Ray's session logs (Tune's log_to_file adds nothing there, and its
        # stdout Tee raised AttributeError: 'Tee' object has no attribute 'close' at shutdown)
        ray.init(include_dashboard=False, configure_logging=False, runtime_env=runtime_env, log_to_driver=bool(verbose))


def _trainable(spec: TrialSpec, resources: dict):
    from ray import tune

    import ray

    from .trainable import train_fold

    # as a reference the worker fetches itself, so that a builder it cannot unpickle fails the fold, unretried
    shipped = (ray.put(spec),)
    return tune.with_resources(tune.with_parameters(train_fold, spec=shipped), {k.lower(): v for k, v in resources.items()})


def new_tuner(spec: TrialSpec, resources: dict, searcher: CVSearcher, path: str, *, scheduler: Any = None,
              max_concurrent_trials: int | None = None, reuse_actors: bool = True,
              checkpoint_kwargs: dict | None = None, max_failures: int = 2, verbose: int = 0):
    """A Tuner whose trials are the folds ``searcher`` hands out, writing to folder ``path``."""
    from ray import tune

    from .trainable import trial_dirname

    how_to_search = tune.TuneConfig(
        search_alg=searcher,
        scheduler=scheduler,
        num_samples=-1,  # the searcher says when it has finished
        max_concurrent_trials=max_concurrent_trials,
        reuse_actors=reuse_actors,  # a new actor per fold spent ~75% of worker time importing TensorFlow
        trial_dirname_creator=trial_dirname,
    )
    how_to_run = tune.RunConfig(
        name=os.path.basename(path),
        storage_path=os.path.dirname(path),
        checkpoint_config=tune.CheckpointConfig(**(checkpoint_kwargs or {})),
        failure_config=tune.FailureConfig(max_failures=max_failures),
        progress_reporter=None if verbose else SilentReporter(),  # Tune's notebook reporter clears the cell
        verbose=verbose,
    )
    return tune.Tuner(_trainable(spec, resources), param_space={}, tune_config=how_to_search, run_config=how_to_run)


def restore_tuner(path: str, spec: TrialSpec, resources: dict, verbose: int = 0):
    """The Tuner of the interrupted experiment in folder ``path``, to resume."""
    from ray import tune

    if not tune.Tuner.can_restore(path):
        raise FileNotFoundError(f"restore: {path!r} holds no Ray Tune experiment state to resume")
    with quiet_tune(verbose):
        return tune.Tuner.restore(path, trainable=_trainable(spec, resources), resume_unfinished=True,
                                  resume_errored=True)


def run(tuner, verbose: int = 0):
    """Fit ``tuner``, quietly unless ``verbose``; Tune's ``ResultGrid``."""
    with quiet_tune(verbose):
        return tuner.fit()
