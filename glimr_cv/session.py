"""A search's run: from :meth:`glimr_cv.Search.experiment` (or :meth:`~glimr_cv.Search.restore`) to its results.

:func:`start` checks the run's arguments, runs the preflight while Ray starts,
makes the experiment folder and hands the folds to Ray Tune; :func:`resume`
continues an interrupted one; both end in :func:`finish_run`, which shows the
live leaderboard while Tune runs and assembles :class:`~glimr_cv.SearchResults`.
This module works through the ``Search``'s public settings only, and nothing
below it imports it.
"""

from __future__ import annotations

import concurrent.futures
import datetime
import os
import time
from typing import Any

from .checks import Bool, Instance, Int, check_int, check_type, expected, validate
from .direction import scored_folds
from .engine.scheduler import FoldScheduler
from .engine.store import META_FILE, SEARCH_FILE, drop_empty_folders, experiment_path, load_search, migrate, \
    reopen_search, repair_state, save_search
from .results.summary import SearchResults, collect_results
from .results.tables import format_leaderboard, scheduler_table
from .space.notation import grid_variants
from .space.searchers import check_searcher

__all__ = ["SearchHalted", "start", "resume", "finish_run", "results_of", "slots"]


class SearchHalted(RuntimeError):
    """A search stopped early on an error every configuration would meet; ``results`` holds what finished."""

    def __init__(self, message: str, results: SearchResults):
        super().__init__(message)
        self.results = results


def slots(resources: dict, max_concurrent_trials: int | None) -> int | None:
    """Folds that train at once: what the connected Ray's CPUs and GPUs allow, at most ``max_concurrent_trials``."""
    import ray

    total = ray.cluster_resources()
    fits = [int(total.get(key, 0) // need) for key, need in resources.items() if need]
    found = min(fits) if fits else None
    if max_concurrent_trials is not None:
        found = max_concurrent_trials if found is None else min(found, max_concurrent_trials)
    return found


def _check_while_ray_starts(search, start_ray) -> None:
    """Run ``search.check()`` in a thread while ``start_ray()`` runs here: the preflight's TensorFlow and Ray's
    start take seconds each, and do not wait for each other.

    A mistake the check finds is raised as before; a Ray this call started for
    nothing is shut down again, so that a mistake leaves nothing running.
    """
    import ray

    connected = ray.is_initialized()
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="glimr_cv-preflight") as pool:
        checked = pool.submit(search.check)
        try:
            start_ray()  # in the main thread: Ray sets its signal handlers there
        finally:
            try:
                checked.result()
            except BaseException:
                if not connected and ray.is_initialized():
                    ray.shutdown()
                raise


#: The plain arguments of :meth:`glimr_cv.Search.experiment`, checked in this order.
_EXPERIMENT = {"num_samples": Int(1, none=True), "max_fold_trainings": Int(1, none=True),
               "max_concurrent_trials": Int(1, none=True), "reuse_actors": Bool(), "check": Bool(),
               "verbose": Int(0, 3), "local_dir": Instance((str, os.PathLike), "a path")}


def start(search, local_dir: str, name: str | None = None, *, num_samples: int | None = 10,
          max_concurrent_trials: int | None = None, scheduler: Any = None, search_alg: Any = None,
          max_fold_trainings: int | None = None, check: bool = True, reuse_actors: bool = True, verbose: int = 0,
          address: str | None = None, callbacks: list | None = None, tracking: Any = None) -> SearchResults:
    """Run ``search`` (see :meth:`glimr_cv.Search.experiment` for the arguments)."""
    from ray.tune.search import Searcher

    from .engine import runner
    from .engine.searcher import CVSearcher
    from .engine.stopping import FoldStops, check_scheduler

    validate(_EXPERIMENT, locals())
    if num_samples is None and max_fold_trainings is None:
        raise ValueError(expected("num_samples", "an int >= 1 when max_fold_trainings is None (or the search "
                                  "never ends)", None))
    check_type("search_alg", search_alg, Searcher, "a ray.tune.search.Searcher such as OptunaSearch()", allow_none=True)
    if search_alg is not None:
        check_searcher(search._parsed, search_alg)
    check_scheduler(scheduler)
    name = name or datetime.datetime.now().strftime("search_%Y-%m-%d_%H-%M-%S")
    path = experiment_path(local_dir, name)
    if os.path.exists(os.path.join(path, SEARCH_FILE)):
        raise FileExistsError(f"name: expected a new experiment name, but {path!r} exists; "
                              f"use Search.restore({os.path.dirname(path)!r}, {name!r}) to resume it")
    trackers = None
    if callbacks is not None or tracking is not None:  # checked before the preflight and Ray: they are quick
        from .tracking.callback import as_trackers, check_callbacks

        callbacks = check_callbacks(callbacks)
        trackers = as_trackers(tracking, name, path) if tracking is not None else None
    # before the folder exists: a mistake, or a wrong address, leaves nothing behind
    if check:
        _check_while_ray_starts(search, lambda: runner.init_ray(verbose, address))
    else:
        search._ship()  # check() does it: modules the workers cannot import travel by value
        runner.init_ray(verbose, address)

    # as in Ray Tune, num_samples repeats a grid: every grid point num_samples times
    grid = len(grid_variants(search._parsed)) if search_alg is None else 1
    max_configs = None if num_samples is None else num_samples * grid
    fold_scheduler = FoldScheduler(scored_folds(search.cv_folds), search.mode, search.racing, max_configs,
                                   max_fold_trainings, slots=slots(search.resources, max_concurrent_trials))
    searcher = CVSearcher(search._parsed, fold_scheduler, search.metric, search.mode, search.seed, inner=search_alg,
                          path=path, references=search.fold_stopping is not None, fail_fast=search.fail_fast)
    search._searcher_token = searcher.token  # finds Tune's restored copy of it after a crash
    # Tune's scheduler and stopper decide in the driver; the folds stop themselves when told
    search._driver_stops = scheduler is not None or search.stopper is not None
    # in every search: it also ends the waiting folds that need not train (a halt, a failed configuration)
    stops = FoldStops(scheduler, search.stopper, search.mode, searcher.stop_all, searcher.cancel, searcher.moot)
    save_search(search, path, run=searcher.token)
    tracker = None
    if trackers:
        from .tracking.callback import TrackingCallback

        tracker = TrackingCallback.attach(trackers, search, searcher, path, num_samples=num_samples,
                                          max_fold_trainings=max_fold_trainings, search_alg=search_alg)
    tuner = runner.new_tuner(
        search.spec, search.resources, searcher, path, scheduler=stops,
        max_concurrent_trials=max_concurrent_trials, reuse_actors=reuse_actors,
        checkpoint_kwargs=search.checkpoint_kwargs, max_failures=search.max_failures, verbose=verbose,
        callbacks=[*(callbacks or []), *([tracker] if tracker else [])],
    )
    return finish_run(search, runner, tuner, searcher, path, verbose, tracker)


def resume(path: str, verbose: int = 0, address: str | None = None) -> SearchResults:
    """Resume the interrupted experiment in folder ``path`` (see :meth:`glimr_cv.Search.restore`)."""
    from .engine import runner
    from .engine.searcher import CVSearcher
    from .tracking.callback import TrackingCallback

    check_int("verbose", verbose, 0, 3)
    if os.path.isfile(os.path.join(path, SEARCH_FILE)) and not os.path.isfile(os.path.join(path, META_FILE)):
        migrate(path)
    search = load_search(path)
    repair_state(path)
    reopen_search(path)  # after a halt; a finished search just says "finished" again
    tracker = TrackingCallback.reattach(path, search._searcher_token)  # its trackers, their runs continued
    runner.init_ray(verbose, address)
    tuner = runner.restore_tuner(path, search.spec, search.resources, verbose,
                                 callbacks=[tracker] if tracker else None)
    searcher = CVSearcher.live(search._searcher_token)
    if searcher is None:
        raise RuntimeError(f"restore: the searcher of {path!r} was not restored by Ray Tune; "
                           "expected Tune's saved tuner state to hold it")
    searcher.reopen(on_restore=True)  # after a halt: the failed and the unfinished configurations go on
    return finish_run(search, runner, tuner, searcher, path, verbose, tracker)


def results_of(search, path: str, searcher, result_grid=None) -> SearchResults:
    """:class:`SearchResults` of experiment folder ``path``, run by ``searcher`` in this process."""
    return collect_results(
        path, searcher.fold_scheduler, metric=search.metric, mode=search.mode, cv_folds=scored_folds(search.cv_folds),
        metrics=search.metric_names, reporter=search.reporter, builder=search.builder,
        result_grid=result_grid, run=searcher.token,
    )


def _leaderboard(search, searcher, started: float):
    """The live board: the scheduler's table (a DataFrame in Jupyter), with a title line in a terminal."""
    scheduler = searcher.fold_scheduler
    table = scheduler_table(scheduler.configs.values(), search.metric, search.mode, scored_folds(search.cv_folds))
    if not search.reporter["sort_by_metric"]:
        table = table.sort_values("config_id", ignore_index=True)
    if search.jupyter:
        return table
    minutes, seconds = divmod(int(time.monotonic() - started), 60)
    statuses = ", ".join(f"{n} {s}" for s, n in table["status"].value_counts().items()) if len(table) else "none yet"
    title = (f"[{minutes:02d}:{seconds:02d}] {scheduler.n_started - scheduler.n_running} folds done, "
             f"{scheduler.n_running} running; configurations: {statuses}")
    return title + "\n" + format_leaderboard(table, search.metric, scored_folds(search.cv_folds),
                                             search.reporter["parameters"])


def finish_run(search, runner, tuner, searcher, path: str, verbose: int = 0, tracker=None) -> SearchResults:
    """Let Ray Tune run the folds while the leaderboard shows, then assemble the results.

    Raises
    ------
    SearchHalted
        When the searcher halted on an error every configuration meets.
    """
    display = None
    if search.report_every > 0:
        from .engine.progress import ProgressDisplay

        started = time.monotonic()
        display = ProgressDisplay(lambda: _leaderboard(search, searcher, started), search.report_every, search.jupyter)
    searcher.on_change, searcher.path = display, path  # a restored experiment may have moved
    resume_with = (f"resume with glimr_cv.Search.restore({os.path.dirname(path)!r}, {os.path.basename(path)!r}) "
                   f"or `glimr-cv resume {path}`")
    try:
        grid = runner.run(tuner, verbose)
    except KeyboardInterrupt:  # a second Ctrl-C: Ray Tune skips its last save
        print(f"interrupted: the folds that finished are kept in {path!r}; {resume_with}", flush=True)
        raise
    finally:
        searcher.write_state()  # the final statuses, as plain data: Tune's last save may precede them
        drop_empty_folders(path, searcher.cancelled)  # folds a stop_all ended before they started
    results = results_of(search, path, searcher, grid)
    if callable(getattr(search.loader, "coords", None)):  # a slide loader: the report shows where the model looks
        try:
            from .mil.heatmaps import save_heatmap

            save_heatmap(results, search.loader)
        except Exception as err:  # a picture must never cost the results
            print(f"note: no heatmap for the report ({type(err).__name__}: {err})", flush=True)
    if tracker is not None:  # the final table, the artifacts, every run closed
        tracker.finish(results)
    scheduler = searcher.fold_scheduler
    if not searcher.halted and (scheduler.n_running or any(c.status == "running" for c in scheduler.configs.values())):
        # Ray Tune ends the run on Ctrl-C (SIGINT) and saves its state; say how to go on
        print(f"interrupted: the folds that finished are kept in {path!r}; {resume_with}", flush=True)
    if display is not None:  # the final board from the folder, which has every fold's own error
        display.render = lambda: results.table if search.jupyter else results.leaderboard()
        display.show(force=True)
    if searcher.halted:
        raise SearchHalted(
            f"search stopped early: {searcher.halted['message']}\nEverything that finished is kept in {path!r}; "
            f"fix the cause and resume with glimr_cv.Search.restore({os.path.dirname(path)!r}, "
            f"{os.path.basename(path)!r})", results)
    return results
