"""Live progress display: the CV leaderboard, redrawn while a search runs."""

from __future__ import annotations

import sys
import time
from typing import Any, Callable

__all__ = ["ProgressDisplay", "in_notebook"]


def in_notebook() -> bool:
    """Whether this runs in a Jupyter kernel (not a terminal IPython): the leaderboard is then redrawn in place."""
    shell = getattr(sys.modules.get("IPython"), "get_ipython", lambda: None)()
    return type(shell).__name__ == "ZMQInteractiveShell"


class ProgressDisplay:
    """Shows ``render()`` at most every ``every`` seconds; call it whenever something changed.

    Parameters
    ----------
    render : callable
        Returns the text (or, in Jupyter, a DataFrame) to show.
    every : float
        Minimum seconds between two displays.
    jupyter : bool
        Redraw in place in a notebook instead of appending to the console.
    """

    def __init__(self, render: Callable[[], Any], every: float = 10.0, jupyter: bool = False):
        self.render = render
        self.every = every
        self.jupyter = jupyter
        self._last = -float("inf")

    def __call__(self) -> None:
        self.show()

    def show(self, force: bool = False) -> None:
        """Display now if ``every`` seconds have passed since the last time, or if ``force``."""
        now = time.monotonic()
        if not force and now - self._last < self.every:
            return
        self._last = now
        shown = self.render()
        if self.jupyter:
            from IPython.display import clear_output, display

            clear_output(wait=True)
            display(shown)
        else:
            print(shown, file=sys.stdout, flush=True)
