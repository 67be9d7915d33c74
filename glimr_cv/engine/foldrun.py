"""One fold's epochs as pure bookkeeping: what each epoch reports, the best epoch, and when to stop.

No Ray, no Keras: :class:`FoldRun` takes an epoch's losses and validation
metrics and answers with a :class:`Epoch` decision, which the trainable
(:mod:`glimr_cv.engine.trainable`) carries out with Keras and Ray Tune. The
fold's final row is :meth:`FoldRun.details` plus the profile, assembled by
:func:`glimr_cv.schema.final_row`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from ..direction import Direction
from ..schema import SCORE
from .racing import EpochRule, orient

__all__ = ["FoldRun", "Epoch"]


@dataclass(frozen=True)
class Epoch:
    """What to do after an epoch.

    ``report``: what to report (None when the epoch failed); ``improved``: it is
    the best epoch so far (keep its weights); ``stop``: why the fold ends now
    ("error", "fold_stopping", or the driver's "scheduler" or "stopper"), or None.
    """

    report: dict | None
    improved: bool = False
    stop: str | None = None


@dataclass
class FoldRun:
    """The epochs of one fold of one configuration.

    Parameters
    ----------
    metric, mode : str
        The search's metric and its direction.
    epochs : int
        Epochs the fold trains at most.
    rule : EpochRule, optional
        The fold-stopping rule, compared with ``reference``.
    reference : sequence of float, optional
        The incumbent's raw per-epoch values of ``metric`` on this fold.
    poll : callable, optional
        ``poll() -> reason or None``: whether the driver asked the fold to stop.
    """

    metric: str
    mode: str
    epochs: int
    rule: EpochRule | None = None
    reference: Sequence[float] | None = None
    poll: Callable[[], str | None] | None = None
    best: float | None = None
    best_epoch: int | None = None
    metrics: dict = field(default_factory=dict)
    curve: list = field(default_factory=list)
    done: int = 0
    error: str | None = None
    stopped_by: str | None = None

    def _better(self, score: float) -> bool:
        return Direction(self.mode).better(score, self.best)

    def on_epoch(self, epoch: int, losses: dict, report: dict) -> Epoch:
        """Epoch ``epoch`` (1-based) ended with training and validation ``losses`` and the validation ``report``.

        A non-finite ``loss`` or ``val_loss`` fails the fold (``stop="error"``).
        Otherwise the report gains ``epoch`` and ``fold_score`` (the best value of
        the metric so far); the fold stops before its last epoch when the rule
        finds its curve hopeless against the reference, or when the driver asked.
        """
        self.done = epoch
        for key in ("loss", "val_loss"):
            value = float(losses.get(key, 0.0))
            if not math.isfinite(value):
                self.error = f"{'validation ' if key == 'val_loss' else ''}loss became {value} at epoch {epoch}"
                return Epoch(None, stop="error")
        score = report[self.metric]
        self.curve.append(score)
        improved = self._better(score)
        if improved:
            self.best, self.best_epoch, self.metrics = score, epoch, dict(report)
        stop = None
        if epoch < self.epochs:
            reference = orient(self.reference or [], self.mode)
            if self.rule is not None and reference and \
                    self.rule.should_stop(orient(self.curve, self.mode), reference, self.epochs):
                stop = "fold_stopping"
            elif self.poll is not None:
                stop = self.poll()
        if stop is not None:
            self.stopped_by = stop
        return Epoch({**report, "epoch": epoch, SCORE: self.best}, improved, stop)

    def keeps_latest(self, decision: Epoch) -> bool:
        """Whether this epoch leaves a latest-state checkpoint (with per-epoch checkpoints on)."""
        return decision.stop is None and self.done < self.epochs and self.best is not None

    def restore(self, latest: dict) -> None:
        """Continue from a fold's saved latest epoch (:meth:`latest`)."""
        self.best, self.best_epoch = latest["best"], latest["best_epoch"]
        self.metrics, self.done, self.curve = dict(latest["metrics"]), int(latest["epochs"]), list(latest["curve"])

    def latest(self) -> dict:
        """The state to save with a latest-epoch checkpoint."""
        return {"best": self.best, "best_epoch": self.best_epoch, "metrics": self.metrics, "epochs": self.done,
                "curve": self.curve}

    def failure(self) -> str | None:
        """Why the fold failed, or None: a non-finite loss, or a metric never finite."""
        if self.error is None and self.best is None:
            return f"{self.metric} was never finite in {self.done} epochs"
        return self.error

    def details(self) -> dict:
        """The fold's details (:data:`glimr_cv.schema.DETAILS`), but for its timing."""
        return {"score": self.best, "best_epoch": self.best_epoch, "epochs": self.done,
                "stopped_early": self.stopped_by is not None, "stopped_by": self.stopped_by}

    def outcome(self) -> dict:
        """The best epoch's metrics, ``fold_score`` and the curve: the report keys of a fold's last report."""
        return {**self.metrics, SCORE: self.best, "curve": list(self.curve)}

    @staticmethod
    def from_meta(spec: Any, meta: dict, epochs: int, poll: Callable | None) -> "FoldRun":
        """The run of a trial: its spec's rule, and the reference curve its bookkeeping carries."""
        return FoldRun(spec.metric, spec.mode, epochs, rule=spec.fold_stopping, reference=meta.get("reference"),
                       poll=poll)
