"""Ray Tune schedulers and stoppers, made fold-correct.

Ray Tune ends a trial that a scheduler (ASHA, median stopping) or a stopper
stops by killing its training loop: a fold stopped that way would leave no
checkpoint and no final report, and vanish from the results. Here the decision
is taken in the driver as Tune would take it, but instead of killing the trial
it is posted to the fold (:func:`request_stop`, on a small named Ray actor of the
driver's job, its stop board); the fold reads it after its next epoch
(:func:`stop_requested`), stops and ends like any finished fold: scored at its
best epoch, checkpointed, ``stopped_early``.

:class:`FoldStops` wraps the user's scheduler and stopper for the Tuner. It is in
every search: it also ends, before they start, the folds waiting for a slot that
need not train any more (the search halted, or their configuration ended).
Schedulers that pause or mutate trials (population based training, synchronous
HyperBand) cannot work with folds and are refused by :func:`check_scheduler`.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Mapping

from ray.tune.schedulers import TrialScheduler

from ..checks import expected
from ..schema import SCORE

__all__ = ["FoldStops", "check_scheduler", "as_stopper", "request_stop", "stop_requested", "clear_stop"]

_NAMESPACE = "glimr_cv"
_BOARD = "glimr_cv_stop_board"  # and the driver's job id: searches of other drivers on a cluster have their own


class _StopBoard:
    """A Ray actor in the driver's job: the stops the driver asked of running folds, by trial id."""

    def __init__(self):
        self.reasons: dict[str, str] = {}

    def request(self, trial_id: str, reason: str) -> None:
        self.reasons[trial_id] = reason

    def reason(self, trial_id: str) -> str | None:
        return self.reasons.get(trial_id)

    def clear(self, trial_id: str) -> None:
        self.reasons.pop(trial_id, None)


_boards: dict[tuple[str, str], Any] = {}  # this process's handles, by (job id, node id) of its Ray connection


def _stop_board(create: bool = False):
    """The board of this Ray job: made by the driver at its first stop, found by its folds' workers; None before.

    A fold's worker belongs to the job of the driver that runs its search, so
    both find the same board by the job id. It lives as long as that driver: a
    board another driver made would die with it, and hold its stops too.
    """
    import ray

    if not ray.is_initialized():
        return None
    context = ray.get_runtime_context()
    job = context.get_job_id()
    key = (job, context.get_node_id())  # a Ray started again in this process is another node
    if key in _boards:
        return _boards[key]
    name = f"{_BOARD}_{job}"
    try:
        board = ray.get_actor(name, namespace=_NAMESPACE)
    except ValueError:  # no stop asked yet
        if not create:
            return None
        board = ray.remote(num_cpus=0)(_StopBoard).options(name=name, namespace=_NAMESPACE,
                                                           get_if_exists=True).remote()
    _boards[key] = board
    return board


def request_stop(trial_id: str, reason: str) -> None:
    """Ask the fold of ``trial_id`` to stop; it stops after the epoch it is training.

    Returns once the board holds the request. Tune resumes a fold only after the
    driver has handled its last result, so a stop asked for on epoch ``k``'s result
    ends the fold after epoch ``k + 1``, however slowly the board starts.
    """
    import ray

    # waited on: the board starts on the first stop, and a fold that found none went on training
    ray.get(_stop_board(create=True).request.remote(trial_id, reason))


def stop_requested(trial_id: str) -> str | None:
    """Why the driver asked this fold to stop ("scheduler" or "stopper"), or None."""
    import ray

    board = _stop_board()
    return None if board is None else ray.get(board.reason.remote(trial_id))


def clear_stop(trial_id: str) -> None:
    board = _stop_board()
    if board is not None:
        board.clear.remote(trial_id)


def check_scheduler(scheduler: Any) -> Any:
    """``scheduler`` if it can stop folds; a clear error for one that pauses or mutates trials."""
    if scheduler is None:
        return None
    from ray.tune.schedulers import HyperBandScheduler, PopulationBasedTraining, ResourceChangingScheduler

    if not isinstance(scheduler, TrialScheduler):
        raise TypeError(expected("scheduler", "a ray.tune TrialScheduler such as ASHAScheduler() or None", scheduler))
    refused = {
        PopulationBasedTraining: "it changes a trial's configuration mid-training, but a fold must train one "
                                 "configuration from start to end",
        HyperBandScheduler: "it pauses and resumes trials in brackets, but folds run to their end or stop",
        ResourceChangingScheduler: "it changes a running trial's resources",
    }
    for kind, why in refused.items():
        if isinstance(scheduler, kind):
            raise ValueError(expected("scheduler",
                                      "a scheduler that only stops trials (ASHAScheduler, MedianStoppingRule, "
                                      "FIFOScheduler)", got=f"{type(scheduler).__name__}: {why}"))
    return scheduler


class _CriteriaStopper:
    """Ray Tune's dict stopping criteria: stop when any ``result[key] >= value``."""

    def __init__(self, criteria: Mapping[str, float]):
        self.criteria = dict(criteria)

    def __call__(self, trial_id: str, result: dict) -> bool:
        return any(key in result and result[key] is not None and result[key] >= value
                   for key, value in self.criteria.items())

    def stop_all(self) -> bool:
        return False


def as_stopper(stopper: Any, reported: list[str] | None = None) -> Any:
    """``stopper`` as an object with ``__call__(trial_id, result)`` and ``stop_all()``.

    Accepts a ``ray.tune.Stopper``, a function ``(trial_id, result) -> bool`` or
    Ray Tune's dict criteria ``{"training_iteration": 10, "val_auc": 0.99}``
    (stop a fold when any reported value reaches its bound). With ``reported``,
    dict keys must be among those reported names.
    """
    if stopper is None:
        return None
    if isinstance(stopper, Mapping):
        for key, value in stopper.items():
            if reported is not None and key not in reported:
                raise ValueError(expected(f"stopper[{key!r}]", f"a reported name, one of {sorted(reported)}", key))
            if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
                raise TypeError(expected(f"stopper[{key!r}]", "a number", value))
        return _CriteriaStopper(stopper)
    if not callable(stopper):
        raise TypeError(expected("stopper", "a ray.tune.Stopper, a callable(trial_id, result) -> bool or a dict "
                                 "of stopping criteria", stopper))
    return stopper


class FoldStops(TrialScheduler):
    """A Tune scheduler that lets the user's scheduler and stopper stop folds gracefully.

    Each epoch's result goes to ``stopper`` and then to ``scheduler``, as in Ray
    Tune. A "stop" becomes a request to the fold (:func:`request_stop`) and Tune
    is told to continue, so the fold ends by itself after its next epoch. When
    ``stopper.stop_all()`` is true, ``on_stop_all`` is called once (the searcher
    then starts nothing new), every running fold is asked to stop, and every
    fold still waiting for a slot is told to the searcher (``on_cancel(trial_id)``)
    and ended by Tune before it starts. A waiting fold for which ``moot(trial_id)``
    (the searcher halted, or the fold's configuration ended) ends the same way,
    before Tune next starts a fold; without a scheduler or a stopper, that is all
    this scheduler does.
    """

    # class defaults, for a FoldStops that Tune pickled before these attributes existed
    moot: Callable[[str], bool] | None = None
    stops = True

    def __init__(self, scheduler: TrialScheduler | None = None, stopper: Any = None, mode: str = "max",
                 on_stop_all: Callable[[], None] | None = None, on_cancel: Callable[[str], None] | None = None,
                 moot: Callable[[str], bool] | None = None):
        from ray.tune.schedulers import FIFOScheduler

        super().__init__()
        self.stops = scheduler is not None or stopper is not None  # folds read the stop board only then
        self.scheduler = check_scheduler(scheduler) or FIFOScheduler()
        self.mode = mode
        self.stopper = stopper
        self.on_stop_all = on_stop_all
        self.on_cancel = on_cancel
        self.moot = moot
        self.stopped_all = False
        # Tune checks that every result holds the scheduler's metric: fold_score is in all, failed folds' too
        TrialScheduler.set_search_properties(self, SCORE, mode)

    @property
    def supports_buffered_results(self):
        return False  # one epoch at a time, so a stop request lands after the epoch that earned it

    def set_search_properties(self, metric, mode, **spec) -> bool:
        from ray.tune.result import DEFAULT_METRIC

        if getattr(self.scheduler, "metric", None) in (None, DEFAULT_METRIC):
            # a scheduler made without metric and mode follows the search's fold score
            self.scheduler.set_search_properties(SCORE, self.mode, **spec)
        return True

    def _clear(self, trial) -> None:
        if self.stops:
            clear_stop(trial.trial_id)

    def _inner(self, method: str, *args):
        return getattr(self.scheduler, method)(*args)

    def on_trial_add(self, tune_controller, trial):
        self._inner("on_trial_add", tune_controller, trial)

    def on_trial_error(self, tune_controller, trial):
        self._clear(trial)
        self._inner("on_trial_error", tune_controller, trial)

    def on_trial_result(self, tune_controller, trial, result):
        if "fold_status" in result:  # a fold's last report: it is ending anyway
            return TrialScheduler.CONTINUE
        reason = None
        if self.stopper is not None:
            if self.stopper(trial.trial_id, result):
                reason = "stopper"
            if not self.stopped_all and getattr(self.stopper, "stop_all", lambda: False)():
                self.stopped_all = True
                self._stop_all(tune_controller)
        metric = getattr(self.scheduler, "metric", None)
        if reason is None and (metric is None or metric in result):
            if self.scheduler.on_trial_result(tune_controller, trial, result) == TrialScheduler.STOP:
                reason = "scheduler"
        if reason is not None:
            request_stop(trial.trial_id, reason)
        return TrialScheduler.CONTINUE

    def _stop_all(self, tune_controller) -> None:
        if self.on_stop_all is not None:
            self.on_stop_all()
        for other in self._end_waiting(tune_controller):
            request_stop(other.trial_id, "stopper")

    def _end_waiting(self, tune_controller, which: Callable[[str], bool] | None = None) -> list:
        """End the live trials that wait for a slot (those for which ``which(trial_id)``), before they start;
        the others."""
        from ray.tune.experiment import Trial

        running = []
        for other in list(tune_controller.get_live_trials()):
            if other.status == Trial.PENDING and (which is None or which(other.trial_id)):
                # not started: ended now rather than trained for an epoch and stopped
                if self.on_cancel is not None:
                    self.on_cancel(other.trial_id)
                tune_controller.stop_trial(other)  # as Tune's HyperBand ends the trials it drops
            else:
                running.append(other)
        return running

    def on_trial_complete(self, tune_controller, trial, result):
        self._clear(trial)
        self._inner("on_trial_complete", tune_controller, trial, result)

    def on_trial_remove(self, tune_controller, trial):
        self._clear(trial)
        self._inner("on_trial_remove", tune_controller, trial)

    def choose_trial_to_run(self, tune_controller):
        # Tune asks this before it starts any waiting trial, and the searcher learns of a fold's end
        # after this scheduler does: here is the first moment a halt or a failed configuration shows
        if self.moot is not None:
            self._end_waiting(tune_controller, self.moot)
        return self.scheduler.choose_trial_to_run(tune_controller)

    def debug_string(self) -> str:
        return f"FoldStops over {self.scheduler.debug_string()}"
