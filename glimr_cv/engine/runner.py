"""Ray Tune wiring: the trainable, a Tuner for a new or a restored experiment, and the run.

Ray Tune's three kinds of settings stay apart: the *space* belongs to the
:class:`~glimr_cv.engine.searcher.CVSearcher` (Tune's ``param_space`` is empty),
*how to search* is the :class:`ray.tune.TuneConfig`, and *how to run* the
:class:`ray.tune.RunConfig`.
"""

from __future__ import annotations

import os
import re
import socket
from typing import Any

from ray.tune import ProgressReporter
from ray.tune.progress_reporter import TrialProgressCallback

from ..checks import check_type, expected
from .fold import TrialSpec
from .quiet import quiet_tune
from .searcher import CVSearcher
from .store import split_experiment

__all__ = ["init_ray", "ray_resources", "new_tuner", "restore_tuner", "run", "SilentReporter",
           "SilentTrialLog"]

#: Environment of every Ray worker: no TensorFlow C++ info lines, no Python warnings.
WORKER_ENV = {"TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONWARNINGS": "ignore"}


class SilentReporter(ProgressReporter):
    """A Ray Tune progress reporter that reports nothing: glimr_cv shows its own leaderboard."""

    def should_report(self, trials, done: bool = False) -> bool:
        return False

    def report(self, trials, done: bool, *sys_info) -> None:
        pass


class SilentTrialLog(TrialProgressCallback):
    """Ray Tune's per-trial log lines, none of them.

    Tune adds its own unless given one, and that one prints "Trial ... completed.
    Last result:" at any verbosity for a trial that ended before its first report:
    a fold that a stopper's ``stop_all`` ended while it waited for a slot.
    """

    def on_trial_result(self, *args, **info) -> None:
        pass

    def on_trial_error(self, *args, **info) -> None:
        pass

    def on_trial_complete(self, *args, **info) -> None:
        pass


def init_ray(verbose: int = 0, address: str | None = None) -> None:
    """Connect this process to Ray as a driver, unless it is connected already.

    Parameters
    ----------
    verbose : int
        Nonzero sends the workers' output to this console.
    address : str, optional
        The cluster to join: ``"auto"`` (the one ``ray start`` started on this
        machine, or ``RAY_ADDRESS``'s) or ``"host:port"`` of its head node.
        ``None`` joins the cluster in ``RAY_ADDRESS`` if it is set, and otherwise
        starts a local Ray.

    Raises
    ------
    TypeError
        If ``address`` is not a string.
    ValueError
        If ``address`` is malformed or a Ray Client address (``ray://``), or names
        another Ray than the one this process is connected to, or this process is
        connected through Ray Client.
    """
    import ray

    check_type("address", address, str, "'auto' or 'host:port'", allow_none=True)
    from_env = address in (None, "auto") and bool(os.environ.get("RAY_ADDRESS"))  # as ray.init reads them
    name, wanted = ("RAY_ADDRESS", os.environ["RAY_ADDRESS"]) if from_env else ("address", address)
    if wanted is not None and wanted.startswith("ray://"):
        raise ValueError(expected(name, "'auto' or 'host:port' (a driver on a node of the cluster)", wanted,
                                  _NO_CLIENT))
    if ray.util.client.ray.is_connected():
        raise ValueError(f"address: expected a driver connected to Ray directly, but this process is connected "
                         f"through Ray Client; {_NO_CLIENT}")
    if address is not None and address != "auto" and not _ADDRESS.fullmatch(address):
        raise ValueError(expected("address", "'auto' or 'host:port' (e.g. '10.0.0.1:6379')", address))
    if ray.is_initialized():
        connected = ray.get_runtime_context().gcs_address
        if address is not None and not _same_address(address, connected):
            raise ValueError(expected("address", f"None or the Ray this process is connected to ({connected})", address,
                                      "call ray.shutdown() first to join another cluster"))
        return
    # no worker_process_setup_hook importing TensorFlow: a worker that is slow to start made Tune
    # train every short fold on the first one; quiet runs keep worker output off the driver instead
    runtime_env = {"env_vars": dict(WORKER_ENV)}
    with quiet_tune(verbose):
        # worker output stays in Ray's session logs: Tune's log_to_file writes a fold's stdout and stderr to its
        # trial folder only with SyncConfig(sync_artifacts=True), and then (Ray 2.60) every worker logs at exit
        # AttributeError: 'Tee' object has no attribute 'close' (absl's handler closing sys.stderr), and a
        # reused worker logs "ValueError when calling 'flush'" on the previous fold's closed file
        ray.init(address=address, include_dashboard=False, configure_logging=False, runtime_env=runtime_env,
                 log_to_driver=bool(verbose))


#: Why Ray Client cannot run a search: Tune would drive it from the head node, away from this process.
_NO_CLIENT = ("under Ray Client, Ray Tune runs the search in an actor on the head node, where the fold scheduler "
              "of this process never hears of a fold (every configuration stays 'running'); run the script on a "
              "node of the cluster, e.g. with `ray job submit`")

#: ``host:port``: a host name, an IPv4 address or a bracketed IPv6 one.
_ADDRESS = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[^\s:/\[\]]+):\d+")


def _same_address(address: str, connected: str) -> bool:
    """Whether joining ``address`` means the Ray whose GCS is at ``connected``."""
    if address == "auto":  # as ray.init resolves it: RAY_ADDRESS, else the cluster `ray start` started here
        from .compat import read_ray_address

        found = os.environ.get("RAY_ADDRESS") or read_ray_address()
        return found in (None, "auto") or _same_address(found, connected)
    return _canonical(address) == _canonical(connected)


def _canonical(address: str) -> str:
    """``ip:port`` of ``host:port``: host names resolved, the loopback as the node's IP (what Ray binds to)."""
    import ray

    host, _, port = address.rpartition(":")
    try:
        host = socket.gethostbyname(host.strip("[]"))
    except OSError:  # not resolvable here: compare as written
        pass
    if host.startswith("127."):
        host = ray.util.get_node_ip_address()
    return f"{host}:{port}"


def ray_resources(resources: dict) -> dict:
    """``resources`` as :func:`ray.tune.with_resources` reads them: its own names for CPU, GPU and memory.

    Tune reads ``"cpu"``, ``"gpu"`` (or ``"CPU"``, ``"GPU"``) and ``"memory"``, and takes
    every other key as a custom resource, so custom resources keep their case
    (``"Accel"`` is not ``"accel"``). Amounts, fractions included, pass unchanged.
    """
    out: dict = {}
    for key, value in resources.items():
        name = key.lower() if key.lower() in ("cpu", "gpu", "memory") else key
        if name in out:
            raise ValueError(expected("resources", f"{name!r} once", sorted(resources), "names of CPU, GPU and "
                                      "memory are case-insensitive"))
        out[name] = value
    return out


def _trainable(spec: TrialSpec, resources: dict):
    from ray import tune

    import ray

    from .trainable import train_fold

    # as a reference the worker fetches itself, so that a builder it cannot unpickle fails the fold, unretried
    shipped = (ray.put(spec),)
    return tune.with_resources(tune.with_parameters(train_fold, spec=shipped), ray_resources(resources))


def new_tuner(spec: TrialSpec, resources: dict, searcher: CVSearcher, path: str, *, scheduler: Any = None,
              max_concurrent_trials: int | None = None, reuse_actors: bool = True,
              checkpoint_kwargs: dict | None = None, max_failures: int = 2, verbose: int = 0,
              callbacks: list | None = None):
    """A Tuner whose trials are the folds ``searcher`` hands out, writing to folder ``path``.

    ``callbacks`` are Ray Tune callbacks (``tune.RunConfig(callbacks=...)``), called in this driver.
    """
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
    storage_path, name = split_experiment(path)  # a folder or a URI (s3://...), as Tune's storage takes it
    how_to_run = tune.RunConfig(
        name=name,
        storage_path=storage_path,
        checkpoint_config=tune.CheckpointConfig(**(checkpoint_kwargs or {})),
        failure_config=tune.FailureConfig(max_failures=max_failures),
        progress_reporter=None if verbose else SilentReporter(),  # Tune's notebook reporter clears the cell
        verbose=verbose,
        # a list of our own: Tune appends its default loggers to it
        callbacks=[*(callbacks or []), *([] if verbose else [SilentTrialLog()])],
    )
    return tune.Tuner(_trainable(spec, resources), param_space={}, tune_config=how_to_search, run_config=how_to_run)


def restore_tuner(path: str, spec: TrialSpec, resources: dict, verbose: int = 0, callbacks: list | None = None):
    """The Tuner of the interrupted experiment in folder ``path``, to resume.

    Ray Tune restores the callbacks the experiment started with. ``callbacks``
    take the place of those of the same classes (a tracking callback re-created
    from its saved settings, say); the others are kept.
    """
    from ray import tune

    if not tune.Tuner.can_restore(path):
        raise FileNotFoundError(f"restore: {path!r} holds no Ray Tune experiment state to resume")
    with quiet_tune(verbose):
        tuner = tune.Tuner.restore(path, trainable=_trainable(spec, resources), resume_unfinished=True,
                                   resume_errored=True)
    if callbacks:
        from .compat import replace_tuner_callbacks

        replace_tuner_callbacks(tuner, callbacks)
    return tuner


def run(tuner, verbose: int = 0):
    """Fit ``tuner``, quietly unless ``verbose``; Tune's ``ResultGrid``."""
    with quiet_tune(verbose):
        return tuner.fit()
