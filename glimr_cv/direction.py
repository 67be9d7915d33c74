"""Which way a metric is better: one name for score orientation, used wherever scores are compared."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable

from .checks import check_choice

__all__ = ["Direction", "scored_folds"]


@dataclass(frozen=True)
class Direction:
    """A metric's direction, from a search's ``mode``: ``"max"`` (higher is better) or ``"min"``.

    Racing rules and the scheduler see scores *oriented* (:meth:`orient`), so
    that higher is always better for them.
    """

    mode: str

    def __post_init__(self):
        check_choice("mode", self.mode, ("max", "min"))

    @property
    def sign(self) -> float:
        return 1.0 if self.mode == "max" else -1.0

    @property
    def ascending(self) -> bool:
        """Whether sorting ascending puts the best first."""
        return self.mode == "min"

    @property
    def words(self) -> str:
        return "higher is better" if self.mode == "max" else "lower is better"

    def orient(self, score: float) -> float:
        """``score`` with higher is better."""
        return self.sign * score

    def better(self, score: float, than: float | None) -> bool:
        """Whether finite ``score`` beats ``than`` (None: nothing yet); a non-finite score never does."""
        if not math.isfinite(score):
            return False
        return than is None or self.orient(score) > self.orient(than)

    def best(self, scores: Iterable[float]) -> float:
        """The best of ``scores``."""
        return max(scores) if self.mode == "max" else min(scores)


def scored_folds(cv_folds: int | None) -> int:
    """Folds a configuration is scored on: ``cv_folds``, or 1 for one train/validation split (``cv_folds=None``)."""
    return 1 if cv_folds is None else int(cv_folds)
