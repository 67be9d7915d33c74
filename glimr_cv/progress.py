"""Live progress display: the CV leaderboard, refreshed while a search runs."""

from __future__ import annotations

import sys
import time

from ray.tune import Callback

__all__ = ["ProgressDisplay"]


class ProgressDisplay(Callback):
    """Prints the leaderboard of a running search at most every ``every`` seconds.

    Parameters
    ----------
    render : callable
        Returns the text (or, in Jupyter, a DataFrame) to show.
    every : float
        Minimum seconds between two displays.
    jupyter : bool
        Redraw in place in a notebook instead of appending to the console.
    """

    def __init__(self, render, every: float = 10.0, jupyter: bool = False):
        self.render = render
        self.every = every
        self.jupyter = jupyter
        self._last = 0.0

    def show(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last < self.every:
            return
        self._last = now
        text = self.render()
        if self.jupyter:
            from IPython.display import clear_output, display

            clear_output(wait=True)
            display(text)
        else:
            print(text, file=sys.stdout, flush=True)

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.show()

    def on_step_end(self, iteration, trials, **info):
        self.show()

    def __getstate__(self):
        state = self.__dict__.copy()
        state["render"] = None  # rebuilt by Search.restore
        return state
