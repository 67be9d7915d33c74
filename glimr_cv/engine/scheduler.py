"""The fold scheduler: which (configuration, fold) to train next.

Pure Python, no Ray or Keras. :class:`glimr_cv.engine.searcher.CVSearcher` is a thin
Ray Tune adapter over it.
"""

from __future__ import annotations

import heapq
import math
import statistics
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Sequence

from ..checks import check_choice, check_int, expected
from ..direction import Direction
from .racing import RacingRule

__all__ = ["FoldScheduler", "ConfigState", "Run", "NEW", "WAIT", "DONE", "STATUSES"]

NEW = "new"  # ask the inner searcher for a new configuration, then call add_config
WAIT = "wait"  # nothing to start until a running fold finishes
DONE = "done"  # nothing will ever be started again

#: Configuration statuses, as shown in result tables.
STATUSES = ("complete", "running", "pruned", "failed", "incomplete")


class Run(NamedTuple):
    """Train fold ``fold`` of configuration ``config_id``."""

    config_id: int
    fold: int


@dataclass
class ConfigState:
    """What the scheduler knows of one configuration.

    ``curves`` holds the raw per-epoch validation values of finished folds, kept
    only while the configuration runs or is the incumbent (they serve as the
    reference of fold stopping); ``stopped_early`` the folds stopped before their
    last epoch.
    """

    config_id: int
    params: Any
    todo: list[int]
    running: set[int] = field(default_factory=set)
    scores: dict[int, float] = field(default_factory=dict)
    status: str = "running"
    error: str | None = None
    skipped: int = 0  # folds never trained because the configuration was stopped
    version: int = 0  # heap entries with another version are stale
    curves: dict[int, list[float]] = field(default_factory=dict)
    stopped_early: set[int] = field(default_factory=set)
    started: dict[int, int] = field(default_factory=dict)  # running fold -> dispatch number

    def __setstate__(self, state: dict) -> None:
        # schedulers pickled before curves existed lack the newer fields
        self.__dict__.update(curves={}, stopped_early=set(), started={})
        self.__dict__.update(state)

    @property
    def mean(self) -> float:
        return statistics.fmean(self.scores.values()) if self.scores else math.nan


class _Trails:
    """Per fold, how far the configurations other than ``incumbent`` trailed it (:meth:`FoldScheduler.fold_order`).

    A score's trail is added when the score arrives, so ``sum`` may differ in its
    last bits from the sum in configuration order that defines the order. ``size``,
    the sum of the trails' magnitudes, bounds that difference; ``grid`` is the
    least ``k`` such that every trail is a multiple of ``2**-k``, and a sum below
    ``2**(53 - grid)`` in magnitude is exact in any order.
    """

    __slots__ = ("count", "grid", "incumbent", "size", "sum")

    def __init__(self, incumbent: int, cv_folds: int):
        self.incumbent = incumbent
        self.sum = [0.0] * cv_folds
        self.size = [0.0] * cv_folds
        self.count = [0] * cv_folds
        self.grid = [0] * cv_folds

    def add(self, fold: int, trail: float) -> None:
        self.sum[fold] += trail
        self.size[fold] += abs(trail)
        self.count[fold] += 1
        self.grid[fold] = max(self.grid[fold], trail.as_integer_ratio()[1].bit_length() - 1)


class FoldScheduler:
    """Hands out folds from a priority heap of unfinished configurations.

    The heap holds the started configurations that still have folds to start,
    keyed on the mean score of their finished folds (best first); configurations
    with no finished fold come after all scored ones, oldest first. The
    *incumbent* is the complete configuration with the best mean (lowest
    ``config_id`` on ties, as in :attr:`glimr_cv.SearchResults.best_config_id`).

    :meth:`next` applies this rule:

    1. If ``max_fold_trainings`` folds have been started, start nothing.
    2. If the worker that takes the next fold likely holds the model of a
       configuration with folds to start (that of the fold that ended last while
       a slot is free, else that of the running fold started first), the racing
       rule does not stop it, it is competitive (step 4) and, with racing, there is
       an incumbent, start its next fold.
    3. Look at the top configuration ``c`` of the heap. If the racing rule stops
       it against the incumbent, mark it ``pruned``, drop it and look again.
    4. ``c`` is *competitive* when racing is off (every fold runs anyway, so started
       configurations finish first), when there is no incumbent yet and ``explore``
       configurations have started, or when ``c`` has a finished fold and its mean is
       at least the incumbent's. If ``c`` is competitive, start ``c``'s next fold.
    5. Otherwise, if a new configuration may start (``max_configs`` and the fold
       budget allow; a new configuration needs ``cv_folds`` of budget left), ask
       for one (:data:`NEW`).
    6. Otherwise start ``c``'s next fold, unless racing is on and ``c`` has folds
       running: their scores may still stop it, so pass over ``c`` for now and
       look at the next configuration of the heap.
    7. Otherwise return :data:`WAIT` while folds are running, else :data:`DONE`
       (configurations still ``running`` become ``incomplete``).

    A call takes O(log n) time for n configurations, amortized over the heap's
    stale entries and the configurations it prunes, but for :meth:`fold_order`'s
    rare rebuilds and the first :data:`DONE`.

    With a racing rule that pairs folds (:attr:`RacingRule.pairs_folds`), a
    configuration that starts once there is an incumbent runs its folds in
    :meth:`fold_order`: the folds on which finished configurations trailed
    the incumbent most come first, so a hopeless configuration shows it on its first
    fold instead of tying on an easy one.

    So the first folds of ``explore`` configurations run first; then the best of
    them is completed first, giving a strong incumbent early (the forgiving rule
    stops more against a better incumbent). After that, only configurations that
    match the incumbent's mean keep their folds ahead of new configurations, and a
    configuration that is behind has at most one fold in flight once no new
    configuration may start.

    For fold stopping, :meth:`finish` also takes a fold's learning curve, and
    :meth:`reference` gives the incumbent's curve on a fold to the fold that starts
    next on it.

    Parameters
    ----------
    cv_folds : int
        Folds per configuration (1 for a single train/validation split).
    mode : {"max", "min"}
        Whether higher or lower scores are better.
    racing : RacingRule or None
        Rule that stops hopeless configurations; ``None`` runs every fold.
    max_configs : int or None
        Most configurations to start.
    max_fold_trainings : int or None
        Most fold trainings to start, in all.
    explore : int or None
        With racing, configurations whose first fold runs before any configuration
        gets a second one; ``None`` means ``2 * cv_folds``. In replays of the racing
        benchmark's fold scores (30 configurations x 5 folds, 2 slots), forgiving
        racing needed 40% of the exhaustive fold trainings with ``explore=1``, 39%
        with 5 and 38% with 10, and kept the exhaustive winner.
    """

    def __init__(
        self,
        cv_folds: int,
        mode: str = "max",
        racing: RacingRule | None = None,
        max_configs: int | None = None,
        max_fold_trainings: int | None = None,
        explore: int | None = None,
        slots: int | None = None,
    ):
        self.cv_folds = check_int("cv_folds", cv_folds, 1)
        self.mode = check_choice("mode", mode, ("max", "min"))
        self.racing = racing
        self.max_configs = max_configs
        self.max_fold_trainings = max_fold_trainings
        self.explore = 2 * cv_folds if explore is None else explore
        self.configs: dict[int, ConfigState] = {}
        self.incumbent: int | None = None
        self.n_started = 0
        self.n_running = 0
        self.closed = False
        self.frozen = False  # freeze(): the budget is the folds started
        self.slots = slots
        self._heap: list[tuple] = []
        self._events: list[tuple[str, int, float]] = []
        self._dispatched = 0
        self._freed: int | None = None  # configuration of the fold that ended last
        # derived from the configurations, not pickled; None: rebuilt when next needed
        self._running: set[tuple[int, int]] | None = set()  # (dispatch number, config_id) of each running fold
        self._trails: _Trails | None = None
        self._swept = False  # no configuration is "running" since the last DONE

    _DERIVED = ("_running", "_trails", "_swept", "_direction")

    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k not in self._DERIVED}

    def __setstate__(self, state: dict) -> None:
        # schedulers pickled by older versions lack the newer fields
        self.__dict__.update(_dispatched=0, _freed=None, _running=None, _trails=None, _swept=False, frozen=False)
        self.__dict__.update(state)

    # -- orientation: rules and the heap see "higher is better" -------------
    def _o(self, score: float) -> float:
        direction = self.__dict__.get("_direction")
        if direction is None or direction.mode != self.mode:
            direction = self._direction = Direction(self.mode)
        return direction.orient(score)

    def _oriented(self, c: ConfigState) -> dict[int, float]:
        return {f: self._o(s) for f, s in c.scores.items()}

    # -- heap -----------------------------------------------------------------
    def _push(self, c: ConfigState) -> None:
        c.version += 1
        key = (0, -self._o(c.mean)) if c.scores else (1, 0.0)
        heapq.heappush(self._heap, (key, c.config_id, c.version))

    def _valid(self, entry: tuple) -> bool:
        c = self.configs[entry[1]]
        return entry[2] == c.version and c.status == "running" and bool(c.todo)

    # -- budget ---------------------------------------------------------------
    def _budget_left(self) -> float:
        if self.max_fold_trainings is None:
            return math.inf
        return self.max_fold_trainings - self.n_started

    def can_start_config(self) -> bool:
        """Whether a new configuration may start now."""
        if self.closed:
            return False
        if self.max_configs is not None and len(self.configs) >= self.max_configs:
            return False
        return self._budget_left() >= self.cv_folds

    def _competitive(self, c: ConfigState) -> bool:
        if self.racing is None:
            return True
        if self.incumbent is None:
            return len(self.configs) >= self.explore or not self.can_start_config()
        if not c.scores:
            return False
        return self._o(c.mean) >= self._o(self.configs[self.incumbent].mean)

    # -- decisions --------------------------------------------------------------
    def next(self) -> Run | str:
        """The next fold to train (already marked started), or NEW, WAIT or DONE."""
        if self._budget_left() > 0:
            near = self._near_model()
            if near is not None:
                return self._dispatch(near)
            passed_over = []
            try:
                while self._heap:
                    entry = self._heap[0]
                    if not self._valid(entry):
                        heapq.heappop(self._heap)
                        continue
                    c = self.configs[entry[1]]
                    if self._should_stop(c):
                        heapq.heappop(self._heap)
                        self._stop(c, "pruned")
                        continue
                    if self._competitive(c):
                        heapq.heappop(self._heap)
                        return self._dispatch(c)
                    if self.can_start_config():
                        break
                    heapq.heappop(self._heap)
                    if c.running and self.racing is not None:
                        passed_over.append(entry)  # still valid: its version is unchanged
                        continue
                    return self._dispatch(c)
            finally:
                for entry in passed_over:
                    heapq.heappush(self._heap, entry)
            if self.can_start_config():
                return NEW
        if self.n_running:
            return WAIT
        if not self._swept:  # only add_config and retry make a configuration "running" again
            for c in self.configs.values():
                if c.status == "running":
                    self._stop(c, "incomplete")
            self._swept = True
        return DONE

    def _near_model(self) -> ConfigState | None:
        """The configuration whose model is likely on the worker the next fold goes to, if it may go first.

        That worker is the one freed last while a slot is free (``n_running <
        slots``), and otherwise, when the next fold waits for a slot, the one
        whose running fold started first. A worker that trains another fold of
        its last configuration reuses that model (no new trace). The
        configuration goes first only if the heap would give it a fold now anyway:
        racing does not stop it and it is competitive.
        """
        if self.slots is not None and self.n_running < self.slots:
            config_id = self._freed
        else:
            running = self._running_folds()
            config_id = min(running)[1] if running else None
        c = self.configs.get(config_id) if config_id is not None else None
        if c is None or c.status != "running" or not c.todo or self._should_stop(c) or not self._competitive(c):
            return None
        if self.racing is not None and self.incumbent is None:
            return None  # exploring: first folds of new configurations come first
        return c

    def _running_folds(self) -> set[tuple[int, int]]:
        """``(dispatch number, config_id)`` of every running fold that has a dispatch number."""
        if self._running is None:
            self._running = {(seq, c.config_id) for c in self.configs.values() for seq in c.started.values()}
        return self._running

    def _should_stop(self, c: ConfigState) -> bool:
        if self.racing is None or self.incumbent is None:
            return False
        return self.racing.should_stop(self._oriented(c), self._oriented(self.configs[self.incumbent]))

    def _dispatch(self, c: ConfigState) -> Run:
        fold = c.todo.pop(0)
        c.running.add(fold)
        self._dispatched += 1
        if self._running is not None:
            if fold in c.started:
                self._running.discard((c.started[fold], c.config_id))
            self._running.add((self._dispatched, c.config_id))
        c.started[fold] = self._dispatched
        self.n_started += 1
        self.n_running += 1
        if c.todo:
            self._push(c)
        return Run(c.config_id, fold)

    def _stop(self, c: ConfigState, status: str) -> None:
        c.skipped += len(c.todo)
        c.todo = []
        c.status = status
        c.curves = {}  # it can never be the incumbent, so never a reference
        c.version += 1
        self._events.append((status, c.config_id, c.mean))

    def add_config(self, params: Any) -> Run:
        """Register a new configuration and start its first fold."""
        if not self.can_start_config():
            raise RuntimeError("add_config called while no new configuration may start")
        c = ConfigState(len(self.configs), params, todo=self.fold_order())
        self.configs[c.config_id] = c
        self._swept = False
        return self._dispatch(c)

    def fold_order(self) -> list[int]:
        """The order in which a configuration starting now runs its folds.

        Without an incumbent or a racing rule that pairs folds
        (:attr:`~glimr_cv.engine.racing.RacingRule.pairs_folds`), ``0, 1, ...,
        cv_folds - 1``. Otherwise the folds by how far the other configurations'
        finished folds trailed the incumbent's on the same fold, on average,
        largest first; a fold nobody else finished counts as trailing by 0, and
        ties keep index order. Fold difficulty varies more than good
        configurations differ, and on an easy fold every configuration ties; on
        the fold that separates them, a hopeless one trails at once.

        In replays of the racing benchmark's exhaustive runs (5 seeds each, 2 slots),
        this order took the paired rule with fold stopping from 74.8% to 65.0% of
        the exhaustive fold trainings on a binary AUC task where 37% of fold scores
        are 1.0, and from 26.8% to 26.4% on digits, with picks within 0.2 pp of the
        exhaustive winner on 10 of 10 runs either way. Forgiving is left in index
        order: the hard fold first, its mean of one fold is compared with the
        incumbent's hard fold alone, and it lost a winner in synthetic tests.

        The sums are kept as scores arrive, and rebuilt in O(n) for n configurations
        when the incumbent changes; a call takes O(``cv_folds``) time otherwise. The
        order is that of the sums in configuration order, to the last bit: folds
        whose mean trails are equal up to rounding are summed again in that order.
        """
        order = list(range(self.cv_folds))
        best = self.configs.get(self.incumbent)
        if best is None or not getattr(self.racing, "pairs_folds", False):
            return order
        t = self._trails
        if t is None or t.incumbent != self.incumbent:
            t = self._trails = self._build_trails(best)
        # The key -(mean trail) of each fold, its trails summed in configuration
        # order, lies in [lo, hi]: the key of the incremental sum where that sum is
        # exact, else an interval around it. Only folds whose intervals overlap may
        # compare otherwise than their incremental sums: those need the sums in order.
        spans = []
        for f in order:
            n, size = t.count[f], t.size[f]
            if not n:
                spans.append((0.0, 0.0, f, 0.0))
            elif size < math.ldexp(1.0, 53 - t.grid[f]):
                key = -(t.sum[f] / n)
                spans.append((key, key, f, key))
            elif size < 2.0 ** 1000 and n < 2 ** 40:
                key = -(t.sum[f] / n)
                # the keys of two sums of the same trails, in any order, differ by less than about
                # 2**-51 * size (the sums' rounding and the divisions'); r leaves room for lo's and hi's
                r = size * 2.0 ** -50 + 2.0 ** -1070
                spans.append((key - r, key + r, f, None))
            else:  # sums that may overflow
                return sorted(order, key=self._trail_keys(best).__getitem__)
        spans.sort()
        groups: list[list[tuple]] = []
        top = -math.inf
        for span in spans:
            if span[0] > top:
                groups.append([])
            groups[-1].append(span)
            top = max(top, span[1])
        keys = None
        rank = {}
        for i, group in enumerate(groups):
            for _, _, f, key in group:
                if len(group) == 1:
                    key = 0.0
                elif key is None:
                    keys = self._trail_keys(best) if keys is None else keys
                    key = keys[f]
                rank[f] = (i, key)
        return sorted(order, key=rank.__getitem__)

    def _build_trails(self, best: ConfigState) -> _Trails:
        t = _Trails(best.config_id, self.cv_folds)
        mine = self._oriented(best)
        for c in self.configs.values():
            if c is not best:
                for fold, score in c.scores.items():
                    t.add(fold, mine[fold] - self._o(score))
        return t

    def _trail_keys(self, best: ConfigState) -> list[float]:
        """:meth:`fold_order`'s key of each fold, from sums in configuration order (O(configurations))."""
        trail = [0.0] * self.cv_folds
        count = [0] * self.cv_folds
        for c in self.configs.values():
            if c is best:
                continue
            for fold, score in c.scores.items():
                trail[fold] += self._o(best.scores[fold]) - self._o(score)
                count[fold] += 1
        return [-(trail[f] / count[f]) if count[f] else 0.0 for f in range(self.cv_folds)]

    def _add_trail(self, c: ConfigState, fold: int, score: float) -> None:
        """Count the trail of ``c``'s new score on ``fold`` in the incremental sums, if they are kept."""
        t = self._trails
        if t is None:
            return
        best = self.configs.get(self.incumbent)
        if (best is None or t.incumbent != best.config_id or c is best or fold in c.scores
                or not 0 <= fold < self.cv_folds or fold not in best.scores):
            # every trail changes with the incumbent's scores, and a replaced score cannot
            # leave the sums within their bound: rare, so rebuild when next needed
            self._trails = None
            return
        t.add(fold, self._o(best.scores[fold]) - self._o(score))

    def close(self) -> None:
        """The inner searcher has no more configurations."""
        self.closed = True

    def freeze(self) -> None:
        """Start nothing more: the budget becomes the folds started, and :meth:`cancel` shrinks it with them."""
        self.max_fold_trainings = self.n_started
        self.frozen = True

    def thaw(self, budget: int | None) -> None:
        """Undo :meth:`freeze`: ``budget`` fold trainings in all (``None``: no limit) may start again."""
        self.max_fold_trainings = budget
        self.frozen = False

    def retry(self, config_id: int) -> None:
        """Run the unfinished folds of a failed or incomplete configuration (a resumed search, its cause fixed)."""
        c = self.configs[config_id]
        if c.status not in ("failed", "incomplete"):
            raise ValueError(expected("config_id", "a failed or incomplete configuration",
                                      got=f"{config_id}, which is {c.status}"))
        c.todo = [f for f in range(self.cv_folds) if f not in c.scores and f not in c.running]
        c.skipped = 0
        c.status, c.error = "running", None
        self._swept = False
        if c.todo:
            self._push(c)

    def cancel(self, config_id: int, fold: int) -> None:
        """A started fold that will not train after all: it waited for a slot, and the search stopped
        or its configuration ended meanwhile.

        It no longer counts as started. While its configuration is running, it is
        again to do, first of its folds; otherwise it counts as skipped, like the
        folds the configuration's end left to do. A :meth:`freeze` budget shrinks
        with it, so that nothing more starts; another budget gets the fold training back.
        """
        c = self.configs[config_id]
        if fold not in c.running:
            raise ValueError(expected("fold", f"a running fold of configuration {config_id}", fold))
        self._release(c, fold)
        self.n_started -= 1
        if self.frozen:
            self.max_fold_trainings -= 1
        if c.status == "running":
            c.todo.insert(0, fold)
            self._push(c)
        else:
            c.skipped += 1

    # -- outcomes ---------------------------------------------------------------
    def finish(self, config_id: int, fold: int, score: float, curve: Sequence[float] | None = None,
               stopped_early: bool = False) -> None:
        """Record the validation score of a finished fold.

        Parameters
        ----------
        config_id, fold : int
            The fold that finished.
        score : float
            Its validation score; ``None`` or non-finite fails the configuration.
        curve : sequence of float, optional
            Its raw per-epoch validation values of the metric (not oriented), kept
            as the reference of :meth:`reference` while they may serve as one.
        stopped_early : bool
            Whether the fold stopped before its last epoch.
        """
        c = self.configs[config_id]
        self._release(c, fold)
        if score is None or not math.isfinite(score):
            return self._fail(c, f"fold {fold} reported a non-finite score {score!r}")
        self._add_trail(c, fold, float(score))
        c.scores[fold] = float(score)
        if stopped_early:
            c.stopped_early.add(fold)
        if c.status != "running":
            return  # pruned or failed while this fold was in flight: keep the split, not the status
        if curve is not None:
            c.curves[fold] = [math.nan if v is None else float(v) for v in curve]
        if not c.todo and not c.running:
            c.status = "complete"
            c.version += 1
            self._events.append(("complete", config_id, c.mean))
            best = self.configs.get(self.incumbent)
            if best is None or (self._o(c.mean), -config_id) > (self._o(best.mean), -best.config_id):
                self.incumbent = config_id
                self._trails = None  # trails are measured against the incumbent: all change
                if best is not None:
                    best.curves = {}  # dethroned for good: the incumbent only ever gets better
            else:
                c.curves = {}
        elif c.todo:
            self._push(c)

    def reference(self, fold: int) -> list[float] | None:
        """The incumbent's raw per-epoch values on ``fold`` (a copy), or None when there are none."""
        best = self.configs.get(self.incumbent)
        curve = best.curves.get(fold) if best is not None else None
        return list(curve) if curve else None

    def fail(self, config_id: int, fold: int, error: str) -> None:
        """A fold failed for good: its configuration is ``failed`` and stops."""
        c = self.configs[config_id]
        self._release(c, fold)
        self._fail(c, error)

    def _fail(self, c: ConfigState, error: str) -> None:
        if c.status == "running":
            c.error = error
            self._stop(c, "failed")

    def _release(self, c: ConfigState, fold: int) -> None:
        if fold in c.running:
            c.running.discard(fold)
            seq = c.started.pop(fold, None)
            if seq is not None and self._running is not None:
                self._running.discard((seq, c.config_id))
            self.n_running -= 1
            self._freed = c.config_id

    def pop_events(self) -> list[tuple[str, int, float]]:
        """Status changes since the last call: ``(status, config_id, mean of finished folds)``."""
        events, self._events = self._events, []
        return events

    # -- reporting --------------------------------------------------------------
    @property
    def fold_trainings_saved(self) -> int:
        """Folds never trained because racing stopped their configuration."""
        return sum(c.skipped for c in self.configs.values() if c.status == "pruned")

    def best(self) -> int | None:
        """The incumbent's config_id (never a pruned, failed or incomplete configuration)."""
        return self.incumbent
