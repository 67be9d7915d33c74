"""The fold scheduler driven as Ray Tune drives it, without Ray: a replay of fold scores.

:class:`Replay` hands a :class:`~glimr_cv.engine.scheduler.FoldScheduler`'s folds
to a fixed number of worker slots, lets them finish in the order their durations
give, and feeds their scores back, so that what the scheduler would start, stop
and select for a given table of fold scores can be worked out in milliseconds:
for tests, and for the racing benchmark, which replays the scores of an
exhaustive run through each racing rule. Given the folds' learning curves, a
replay also stops folds epoch by epoch with a fold-stopping rule.
"""

from __future__ import annotations

import collections
import math
from collections.abc import Mapping, Sequence
from typing import Any, Callable

from ..checks import expected
from ..direction import Direction
from .racing import EpochRule, orient
from .scheduler import DONE, NEW, WAIT, FoldScheduler, Run

__all__ = ["Replay"]


def _lookup(source, name: str, missing: Any) -> Callable[[int, int], Any]:
    """``source`` as a function ``(config_id, fold) -> value``, ``missing`` where it has none."""
    if source is None:
        return lambda config_id, fold: missing
    if callable(source):
        return source
    if isinstance(source, Mapping):
        return lambda config_id, fold: source.get((config_id, fold), missing)
    if isinstance(source, Sequence) and not isinstance(source, str):
        def table(config_id: int, fold: int) -> Any:
            try:
                return source[config_id][fold]
            except (IndexError, KeyError, TypeError):
                return missing

        return table
    raise TypeError(expected(name, "a callable (config_id, fold) -> value, a mapping keyed by (config_id, fold) or a "
                                   "table of rows by config_id", got=type(source).__name__))


class Replay:
    """Drive a fold scheduler with simulated workers, as Ray Tune would.

    Ray Tune asks the searcher for a trial whenever it has room for one: ``slots``
    folds train at once, and up to ``pending`` more are already handed out and
    wait for a free slot (Tune keeps one trial pending for a custom searcher, so
    the next fold is chosen before the running folds' scores are known). A
    replay does the same with a clock: each fold takes ``seconds(config_id,
    fold)`` from the time it gets a slot, the fold that ends first reports
    ``score(config_id, fold)`` to the scheduler, and the freed slot is filled
    again. On :data:`~glimr_cv.engine.scheduler.NEW` a configuration with
    :meth:`new_params` is registered; ``WAIT`` and ``DONE`` stop the filling. A
    waiting fold whose configuration has ended by the time a slot frees is
    cancelled instead of started, as in a Ray search.

    Parameters
    ----------
    scheduler : FoldScheduler
        The scheduler to drive; it may already have folds handed out.
    score : callable, mapping or sequence
        A fold's validation score: ``score(config_id, fold)``, a mapping keyed by
        ``(config_id, fold)``, or a table whose row ``config_id`` holds the scores
        by fold. ``None`` or no entry means the fold failed
        (:meth:`FoldScheduler.fail`); any other value goes to
        :meth:`FoldScheduler.finish`, which fails a non-finite one itself.
        With ``curves``, ``score`` may be ``None``: a fold scores the best value of
        its curve (by the scheduler's mode), and one without a curve fails.
    slots : int
        Folds that train at once (Ray Tune's concurrent trials).
    pending : int
        Folds handed out beyond the slots, waiting for one.
    seconds : callable, mapping or None
        A fold's duration, in the forms of ``score``; ``None`` (default), or no
        entry, is 1 second, so that folds end oldest first.
    curves : callable, mapping, sequence or None
        A fold's raw per-epoch validation values of the metric (a list), in the
        forms of ``score``. A fold with a curve reports it to
        :meth:`FoldScheduler.finish`, where it becomes a reference; its epochs
        count in ``epoch_trainings``. ``None`` (default): folds report scores only.
    epoch_rule : EpochRule or None
        With ``curves``, stops folds before their last epoch. A fold takes the
        scheduler's :meth:`~FoldScheduler.reference` for its fold when it is handed
        out (as the Ray searcher attaches it to the trial) and, once it has a slot,
        runs epoch by epoch, the rule seeing its curve so far and the reference
        oriented by the scheduler's mode, after every epoch but the last. A fold
        stopped after ``e`` of its ``n`` epochs scores the best of its first ``e``
        values, reports them as its curve with ``stopped_early=True``, and lasts
        ``seconds * e / n``. A fold whose ``score`` is ``None`` fails as without a rule.

    Attributes
    ----------
    scheduler : FoldScheduler
        The scheduler driven.
    running : collections.deque of Run
        Folds holding a slot, oldest first. A :class:`Run` put here by hand (a fold
        the scheduler handed out before the replay started) counts as started when
        the replay first looks at it; one removed by hand is forgotten.
    pending : collections.deque of Run
        Folds handed out and waiting for a slot, oldest first.
    decisions : list
        Every answer of :meth:`FoldScheduler.next`, each ``NEW`` followed by the
        :class:`Run` that :meth:`FoldScheduler.add_config` gave.
    dispatched : list of Run
        Every fold handed out, in order.
    cancelled : list of Run
        Folds handed out that never started: their configuration had ended (failed or
        pruned) while they waited, and :meth:`FoldScheduler.cancel` took them back.
    finished : list of tuple
        ``(config_id, fold, score)`` of every fold that ended, in order; ``score`` is
        ``None`` for a failed fold.
    epoch_trainings : int
        Epochs run by the folds that ended with a curve.
    now : float
        Simulated seconds since the replay started: after :meth:`run`, its wall time.

    Examples
    --------
    >>> from glimr_cv import FoldScheduler, Forgiving
    >>> table = [[0.9, 0.92, 0.91], [0.5, 0.52, 0.49], [0.88, 0.9, 0.93]]
    >>> replay = Replay(FoldScheduler(3, racing=Forgiving(), max_configs=3), table, slots=2, pending=1).run()
    >>> replay.n_started, replay.scheduler.best()
    (7, 0)
    """

    def __init__(self, scheduler: FoldScheduler, score, slots: int = 1, pending: int = 0, seconds=None,
                 curves=None, epoch_rule: EpochRule | None = None):
        if not isinstance(slots, int) or isinstance(slots, bool) or slots < 1:
            raise ValueError(expected("slots", "an int >= 1", slots))
        if not isinstance(pending, int) or isinstance(pending, bool) or pending < 0:
            raise ValueError(expected("pending", "an int >= 0", pending))
        if epoch_rule is not None and not isinstance(epoch_rule, EpochRule):
            raise TypeError(expected("epoch_rule", "an EpochRule or None", got=type(epoch_rule).__name__))
        if epoch_rule is not None and curves is None:
            raise ValueError(expected("epoch_rule", "None without curves (the rule stops folds by their curves)",
                                      epoch_rule))
        self.scheduler = scheduler
        self.slots = slots
        self.max_pending = pending
        self._with_curves = curves is not None
        self._curve = _lookup(curves, "curves", None)
        self._score = self._best_of_curve if score is None and self._with_curves else _lookup(score, "score", None)
        self._seconds = _lookup(seconds, "seconds", 1.0)
        self.epoch_rule = epoch_rule
        self.epoch_trainings = 0
        self._references: dict[Run, list[float] | None] = {}
        self._outcomes: dict[Run, tuple] = {}
        self.running: collections.deque = collections.deque()
        self.pending: collections.deque = collections.deque()
        self.decisions: list = []
        self.dispatched: list[Run] = []
        self.cancelled: list[Run] = []
        self.finished: list[tuple[int, int, Any]] = []
        self.now = 0.0
        self._ends: dict[Run, float] = {}

    # -- hooks --------------------------------------------------------------------
    def new_params(self, config_id: int) -> Any:
        """Parameters of configuration ``config_id``, registered when the scheduler asks for one.

        Returns ``None``; override it to give parameters or to watch the scheduler
        when it starts a configuration.
        """
        return None

    # -- the loop -----------------------------------------------------------------
    def _start(self, run: Run) -> None:
        self.running.append(run)
        self._begin(run)

    def _begin(self, run: Run) -> None:
        """Work out when ``run`` ends and, with curves, what it reports."""
        seconds = self._duration(run)
        if self._with_curves:
            outcome = self._train(run)
            self._outcomes[run] = outcome
            seconds *= outcome[3]
        self._ends[run] = self.now + seconds

    def _duration(self, run: Run) -> float:
        value = self._seconds(run.config_id, run.fold)
        return 1.0 if value is None or not math.isfinite(value) else float(value)

    def _best(self, values: Sequence[float]) -> float:
        finite = [v for v in values if v is not None and not math.isnan(v)]
        if not finite:
            return math.nan
        return Direction(self.scheduler.mode).best(finite)

    def _best_of_curve(self, config_id: int, fold: int) -> float | None:
        curve = self._curve(config_id, fold)
        return self._best(curve) if curve else None

    def _train(self, run: Run) -> tuple:
        """``(score, curve, stopped_early, share of the fold's duration, epochs run)`` of ``run``."""
        reference = self._references.pop(run) if run in self._references else self._reference(run)
        score = self._score(run.config_id, run.fold)
        curve = self._curve(run.config_id, run.fold)
        curve = None if curve is None else list(curve)
        if not curve:
            return score, curve, False, 1.0, 0
        epochs = len(curve)
        if score is not None and self.epoch_rule is not None and reference:
            mode = self.scheduler.mode
            oriented, reference = orient(curve, mode), orient(reference, mode)
            for e in range(1, epochs):  # after the last epoch nothing is left to save
                if self.epoch_rule.should_stop(oriented[:e], reference, epochs):
                    return self._best(curve[:e]), curve[:e], True, e / epochs, e
        return score, curve, False, 1.0, epochs

    def _reference(self, run: Run) -> list[float] | None:
        return self.scheduler.reference(run.fold) if self.epoch_rule is not None else None

    def fill(self) -> Run | str | None:
        """Hand out folds until the slots and the pending places are full, or the scheduler says WAIT or DONE.

        Returns
        -------
        Run, str or None
            The scheduler's last answer (``WAIT`` or ``DONE`` when it stopped the
            filling), or ``None`` when there was no room to ask.
        """
        while self.pending and len(self.running) < self.slots:
            run = self.pending.popleft()
            if self.scheduler.configs[run.config_id].status != "running":
                # as the Ray searcher does: a fold whose configuration ended while it waited never starts
                self.scheduler.cancel(run.config_id, run.fold)
                self._references.pop(run, None)
                self.cancelled.append(run)
                continue
            self._start(run)
        answer = None
        while len(self.running) + len(self.pending) < self.slots + self.max_pending:
            answer = self.scheduler.next()
            self.decisions.append(answer)
            if answer == NEW:
                run = self.scheduler.add_config(self.new_params(len(self.scheduler.configs)))
                self.decisions.append(run)
            elif isinstance(answer, Run):
                run = answer
            elif answer in (WAIT, DONE):
                break
            else:
                raise RuntimeError(f"the scheduler answered {answer!r}, expected a Run, NEW, WAIT or DONE")
            self.dispatched.append(run)
            if self.epoch_rule is not None:
                self._references[run] = self._reference(run)
            if len(self.running) < self.slots:
                self._start(run)
            else:
                self.pending.append(run)
        return answer

    def finish_one(self) -> tuple[int, int, Any]:
        """End the running fold that ends first (the oldest on ties) and report its score.

        Returns
        -------
        tuple
            ``(config_id, fold, score)``; ``score`` is ``None`` when the fold failed.
        """
        if not self.running:
            raise RuntimeError("finish_one: no fold is running")
        for run in self.running:
            if run not in self._ends:  # put in by hand
                self._begin(run)
        index = min(range(len(self.running)), key=lambda i: (self._ends[self.running[i]], i))
        run = self.running[index]
        del self.running[index]
        self.now = max(self.now, self._ends.pop(run))
        if self._with_curves:
            score, curve, stopped_early, _, epochs = self._outcomes.pop(run)
            self.epoch_trainings += epochs
        else:
            score, curve, stopped_early = self._score(run.config_id, run.fold), None, False
        self.finished.append((run.config_id, run.fold, score))
        if score is None:
            self.scheduler.fail(run.config_id, run.fold, f"fold {run.fold} has no score in the replay")
        elif self._with_curves:
            self.scheduler.finish(run.config_id, run.fold, score, curve=curve, stopped_early=stopped_early)
        else:
            self.scheduler.finish(run.config_id, run.fold, score)
        return self.finished[-1]

    def step(self) -> bool:
        """Fill the slots, then end one fold.

        Returns
        -------
        bool
            ``False`` once the scheduler says ``DONE``.

        Raises
        ------
        RuntimeError
            When the scheduler says ``DONE`` while folds are still running, or
            ``WAIT`` while none is (it would wait forever).
        """
        answer = self.fill()
        if answer == DONE:
            if self.running or self.pending:
                raise RuntimeError(f"the scheduler said DONE while {len(self.running) + len(self.pending)} "
                                   "fold(s) are still running")
            return False
        if not self.running:
            raise RuntimeError("the scheduler said WAIT with nothing running: it would wait forever")
        self.finish_one()
        return True

    def run(self, max_steps: int = 100_000) -> "Replay":
        """Step until the scheduler says ``DONE``.

        Returns
        -------
        Replay
            This replay, for chaining.

        Raises
        ------
        RuntimeError
            As :meth:`step` does, or when ``DONE`` has not come after ``max_steps`` folds ended.
        """
        for _ in range(max_steps):
            if not self.step():
                return self
        raise RuntimeError(f"the scheduler never said DONE in {max_steps} steps")

    # -- what the scheduler did -------------------------------------------------------
    @property
    def n_started(self) -> int:
        """Fold trainings the scheduler started (:attr:`FoldScheduler.n_started`)."""
        return self.scheduler.n_started

    @property
    def fold_trainings_saved(self) -> int:
        """Fold trainings racing skipped (:attr:`FoldScheduler.fold_trainings_saved`)."""
        return self.scheduler.fold_trainings_saved

    def summary(self) -> dict:
        """What the scheduler did, in the names of :class:`glimr_cv.SearchResults`.

        Returns
        -------
        dict
            ``fold_trainings``, ``fold_trainings_saved``, ``epoch_trainings``
            (:attr:`epoch_trainings`; ``None`` without curves), ``best_config_id``,
            ``statuses`` (configurations per status) and ``seconds`` (:attr:`now`).
        """
        statuses = collections.Counter(c.status for c in self.scheduler.configs.values())
        return {
            "fold_trainings": self.n_started,
            "fold_trainings_saved": self.fold_trainings_saved,
            "epoch_trainings": self.epoch_trainings if self._with_curves else None,
            "best_config_id": self.scheduler.best(),
            "statuses": dict(statuses),
            "seconds": self.now,
        }
