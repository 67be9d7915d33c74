"""Ray Tune adapter over the fold scheduler: hands out (configuration, fold) trials."""

from __future__ import annotations

import os
import random
import tempfile
import uuid
import weakref
from typing import Any, Callable

from ray import cloudpickle
from ray.tune.search import Searcher

from ..space.notation import grid_variants, is_conditional, resolve
from ..space.searchers import check_searcher, optuna_define_by_run, searcher_kind, to_inner
from .scheduler import DONE, NEW, WAIT, FoldScheduler, Run
from ..schema import META, SCORE, STATUS, TRIAL_DIR, UNPICKLE, trial_error

__all__ = ["CVSearcher"]


def _keep_traceback(folder: str, text: str | None) -> str | None:
    """Write a failed fold's reported traceback to ``error.txt`` in its trial folder, as Tune does; its path."""
    if not text or not os.path.isdir(os.path.dirname(folder)):  # a URI's folder is not on this disk
        return None
    os.makedirs(folder, exist_ok=True)  # Tune creates it with the fold's first files, maybe later
    path = os.path.join(folder, "error.txt")
    with open(path, "w") as f:
        f.write(text)
    return path


class CVSearcher(Searcher):
    """A ``ray.tune.search.Searcher`` whose trials are folds of configurations.

    Which fold runs next is decided by a :class:`glimr_cv.engine.scheduler.FoldScheduler`
    (see its docstring for the exact rule). New configurations come from the
    ``inner`` Tune searcher (e.g. ``OptunaSearch``) or, when it is ``None``, from
    seeded random sampling of the space. The inner searcher is told a
    configuration's result once: its CV mean when all folds finish; when racing
    prunes it, the mean of the folds it finished (an honest but optimistic
    estimate, since pruned configurations were worse than the incumbent); an
    error when it failed or the run ended before it finished.

    Parameters
    ----------
    space : dict
        The parsed search space.
    fold_scheduler : FoldScheduler
        Decides which fold runs next.
    metric, mode : str
        Metric of the fold score and its direction.
    seed : int
        Seed of the default random sampling.
    inner : ray.tune.search.Searcher or None
        Searcher that proposes configurations.
    on_change : callable or None
        Called with no argument after a fold starts or ends (e.g. a live
        leaderboard); not kept when the searcher is pickled.
    path : str, optional
        The experiment folder, where a failed fold's error is read from.
    token : str, optional
        Finds this searcher again with :meth:`live`, also after Ray Tune restored
        it from its experiment folder; defaults to a new unique token.
    references : bool
        Give each fold the incumbent's learning curve on that fold (``reference``
        in the trial's bookkeeping), for a fold-stopping rule.
    fail_fast : int or None
        :meth:`halt` when the same error ends the first fold of this many
        configurations, or at once when the user's code cannot be loaded on a
        worker; ``None`` never halts.
    """

    _live: "weakref.WeakValueDictionary[str, CVSearcher]" = weakref.WeakValueDictionary()

    def __init__(
        self,
        space: dict,
        fold_scheduler: FoldScheduler,
        metric: str,
        mode: str,
        seed: int = 0,
        inner: Searcher | None = None,
        on_change: Callable[[], None] | None = None,
        path: str | None = None,
        token: str | None = None,
        references: bool = False,
        fail_fast: int | None = 3,
    ):
        # Tune checks that every result holds the searcher's metric; fold_score always is there
        super().__init__(metric=SCORE, mode=mode)
        self.cv_metric = metric
        self.space = space
        self.fold_scheduler = fold_scheduler
        self.inner = inner
        self.on_change = on_change
        self.path = path
        self.token = token or uuid.uuid4().hex
        self._live[self.token] = self
        self._rng = random.Random(seed)
        self._trials: dict[str, Run] = {}
        self._inner_ids: dict[int, str] = {}
        self.references = references
        self.fail_fast = fail_fast
        self.halted: dict | None = None
        self.cancelled: list[str] = []  # trial folders of the folds cancel() took back: empty, never used
        self._first_errors: dict[str, set] = {}
        self._grid = grid_variants(space) if inner is None else [space]  # the points of a grid_search
        if inner is not None:
            check_searcher(space, inner)
            if is_conditional(space) and searcher_kind(inner) == "optuna":
                from .compat import optuna_define_by_run as install

                install(inner, optuna_define_by_run(space), metric, mode)
            else:
                inner.set_search_properties(metric, mode, to_inner(space))

    def set_search_properties(self, metric, mode, config, **spec) -> bool:
        return True  # metric, mode and space were fixed by Search

    # -- configurations ---------------------------------------------------------
    def _new_params(self, config_id: int) -> Any:
        if self.inner is None:
            # a grid is tried point by point, num_samples times over, as Ray Tune's own searcher does
            return resolve(self._grid[config_id % len(self._grid)], self._rng)
        inner_id = f"config_{config_id}"
        suggestion = self.inner.suggest(inner_id)
        if suggestion is None or suggestion == Searcher.FINISHED:
            return suggestion
        self._inner_ids[config_id] = inner_id
        # the suggested values, in their options; what the inner searcher left open is drawn here
        return resolve(self.space, self._rng, suggestion)

    # -- Tune interface ---------------------------------------------------------
    def suggest(self, trial_id: str) -> dict | None | str:
        while True:
            action = self.fold_scheduler.next()
            self._flush()
            if isinstance(action, Run):
                return self._assign(trial_id, action)
            if action == WAIT:
                return None
            if action == DONE:
                return Searcher.FINISHED
            assert action == NEW
            params = self._new_params(len(self.fold_scheduler.configs))
            if params is None:
                return None
            if params == Searcher.FINISHED:
                self.fold_scheduler.close()
                continue
            return self._assign(trial_id, self.fold_scheduler.add_config(params))

    def _assign(self, trial_id: str, run: Run) -> dict:
        self._trials[trial_id] = run
        params = self.fold_scheduler.configs[run.config_id].params
        self._changed()
        meta = {"config_id": run.config_id, "fold": run.fold, "run": self.token}
        if self.references:  # the worker's fold-stopping rule compares its curve with the incumbent's
            reference = self.fold_scheduler.reference(run.fold)
            if reference:
                meta["reference"] = list(reference)
        return {**params, META: meta}

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        run = self._trials.get(trial_id)
        if run is None:
            return
        folder = os.path.join(self.path or "", TRIAL_DIR.format(config_id=run.config_id, fold=run.fold, trial_id=trial_id))
        if error or not result:
            # Tune wrote the traceback to the trial folder before telling the searcher
            detail = trial_error(folder) if self.path else None
            self.fold_scheduler.fail(run.config_id, run.fold, f"fold {run.fold}: {detail or f'raised an error (trial {trial_id})'}")
        elif result.get(STATUS) == "failed":
            first = not self.fold_scheduler.configs[run.config_id].scores
            where = _keep_traceback(folder, result.get("traceback")) if self.path else None
            detail = f"{result.get('error')}" + (f" (traceback: {where})" if where else "")
            self.fold_scheduler.fail(run.config_id, run.fold, f"fold {run.fold}: {detail}")
            self._fail_fast(run, result, first)
        else:
            self.fold_scheduler.finish(run.config_id, run.fold, result.get(SCORE), curve=result.get("curve"),
                                       stopped_early=bool(result.get("stopped_early")))
        self._flush()
        self._changed()

    # -- stopping the whole search ------------------------------------------------
    def _fail_fast(self, run: Run, result: dict, first: bool) -> None:
        """Halt on an error that every configuration will meet: retrying or sampling more cannot help.

        That is an error loading the user's code on a worker (an import or
        unpickling error), or the same error on the first fold of ``fail_fast``
        configurations while no fold has succeeded yet.
        """
        if self.fail_fast is None or self.halted:
            return
        error, kind = str(result.get("error")), result.get("error_type")
        if result.get("phase") == UNPICKLE or kind in ("ModuleNotFoundError", "ImportError"):
            return self.halt(f"fold {run.fold} of configuration {run.config_id} failed loading the user's code on a "
                             f"Ray worker, which every fold would: {error}", error)
        if not first or any(c.scores for c in self.fold_scheduler.configs.values()):
            return  # a fold that succeeded: the error belongs to some configurations, not to all
        configs = self._first_errors.setdefault(error, set())
        configs.add(run.config_id)
        if len(configs) >= self.fail_fast:
            self.halt(f"the first fold of configurations {sorted(configs)} failed with the same error, so "
                      f"every configuration probably will: {error}", error)

    def halt(self, message: str, error: str | None = None) -> None:
        """Start nothing more; the run ends when the running folds end, and :meth:`reopen` resumes it.

        Configurations that failed with ``error`` are tried again after :meth:`reopen`.
        """
        self.halted = {"message": message, "error": error, "budget": self.fold_scheduler.max_fold_trainings}
        self.fold_scheduler.freeze()

    def moot(self, trial_id: str) -> bool:
        """Whether the fold of ``trial_id``, not started yet, need not train: the search halted, or its
        configuration has ended (failed, or pruned) since the fold was handed out."""
        run = self._trials.get(trial_id)
        if run is None:
            return False
        return bool(self.halted) or self.fold_scheduler.configs[run.config_id].status != "running"

    def stop_all(self) -> None:
        """A stopper's ``stop_all()``: start nothing more (running folds are asked to stop)."""
        self.fold_scheduler.close()
        self.fold_scheduler.freeze()

    def cancel(self, trial_id: str) -> None:
        """The fold of ``trial_id`` waited for a slot, and Tune ends it unstarted (:meth:`moot`, or :meth:`stop_all`).

        Not trained and not failed, it does not count among the fold trainings. In a
        stopped search its configuration ends "incomplete"; in a halted one the fold
        runs when the search resumes. The trial folder that Tune made for it is in
        :attr:`cancelled`.
        """
        run = self._trials.pop(trial_id, None)
        if run is None:
            return
        self.fold_scheduler.cancel(run.config_id, run.fold)
        self.cancelled.append(TRIAL_DIR.format(config_id=run.config_id, fold=run.fold, trial_id=trial_id))
        self._changed()

    def reopen(self, on_restore: bool = False) -> list[int]:
        """Undo :meth:`halt` for a resumed run: the budget comes back, and the halting error's
        configurations and those the halted run left incomplete are tried again; their config_ids.
        ``on_restore``: also once Ray Tune has put back the saved state, which it does when the
        resumed run starts."""
        if on_restore:
            self._reopen = True
        if not self.halted:
            return []
        self.fold_scheduler.thaw(self.halted["budget"])
        error = self.halted["error"]
        # a halted run ends with nothing left to start, so the configurations still running become
        # "incomplete" then: a fold of theirs was cancelled at the halt, or had not been handed out
        retried = [c.config_id for c in self.fold_scheduler.configs.values()
                   if c.status == "incomplete"
                   or c.status == "failed" and error is not None and error in (c.error or "")]
        for config_id in retried:
            self.fold_scheduler.retry(config_id)
            self._inner_ids.pop(config_id, None)  # the inner searcher was told of the failure already
        self.halted = None
        self._first_errors = {}
        return retried

    def _flush(self) -> None:
        events = self.fold_scheduler.pop_events()
        if not events:
            return
        for status, config_id, mean in events:
            inner_id = self._inner_ids.get(config_id)
            if inner_id is None:
                continue
            if status in ("complete", "pruned") and mean == mean:
                self.inner.on_trial_complete(inner_id, {self.cv_metric: mean})
            else:
                self.inner.on_trial_complete(inner_id, None, error=True)

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change()

    # -- persistence ------------------------------------------------------------
    def get_state(self) -> dict:
        state = {
            "scheduler": self.fold_scheduler,
            "trials": self._trials,
            "inner_ids": self._inner_ids,
            "rng": self._rng.getstate(),
            "inner": None,
            "halted": self.halted,
            "first_errors": self._first_errors,
        }
        if self.inner is not None:
            with tempfile.TemporaryDirectory() as tmp:
                path = os.path.join(tmp, "inner.pkl")
                self.inner.save(path)
                with open(path, "rb") as f:
                    state["inner"] = f.read()
        return state

    def set_state(self, state: dict) -> None:
        self.fold_scheduler = state["scheduler"]
        self._trials = state["trials"]
        self._inner_ids = state["inner_ids"]
        self._rng.setstate(state["rng"])
        self.halted = state.get("halted")
        self._first_errors = state.get("first_errors", {})
        if self.__dict__.pop("_reopen", False):  # Tune sets the saved state when the resumed run starts
            self.reopen()
        if self.inner is not None and state["inner"] is not None:
            with tempfile.TemporaryDirectory() as tmp:
                path = os.path.join(tmp, "inner.pkl")
                with open(path, "wb") as f:
                    f.write(state["inner"])
                self.inner.restore(path)

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as f:
            cloudpickle.dump(self.get_state(), f)
        self.write_state()

    def write_state(self) -> None:
        """Write the configurations' statuses and scores as plain JSON into the experiment folder.

        Ray Tune saves the searcher every few seconds while the search runs; the
        JSON goes with it, so a reader of the folder never needs the pickle.
        """
        if self.path:
            from .store import write_state

            write_state(self.path, self.fold_scheduler, self.token,
                        None if not self.halted else self.halted["message"])

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as f:
            self.set_state(cloudpickle.load(f))

    def __getstate__(self):
        state = self.__dict__.copy()
        state["on_change"] = None  # a display callback does not survive a restart
        return state

    def __setstate__(self, state):
        self.__dict__.setdefault("_grid", [state["space"]])  # a searcher pickled before grids existed
        self.__dict__.setdefault("cancelled", [])
        self.__dict__.update(state)
        self._live[self.token] = self  # Tune unpickles its searcher on restore

    @classmethod
    def live(cls, token: str) -> "CVSearcher | None":
        """The searcher with ``token`` in this process, if any (Tune's restored copy included)."""
        return cls._live.get(token)
