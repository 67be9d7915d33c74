"""The interface of a tracker, and what every tracker shares: a queue of pending writes, and outages survived.

A tracker is a small object that writes the operations of
:mod:`glimr_cv.tracking.plan` (:class:`~glimr_cv.tracking.plan.Open`,
:class:`~glimr_cv.tracking.plan.Log`, :class:`~glimr_cv.tracking.plan.Close`) to
one tracking system. :class:`glimr_cv.tracking.callback.TrackingCallback` drives
it from the Ray Tune driver. A subclass implements :meth:`Tracker.check`,
:meth:`Tracker.settings`, :meth:`Tracker.open` and :meth:`Tracker._write`, and
may implement :meth:`Tracker.state` and :meth:`Tracker.artifacts`.
"""

from __future__ import annotations

import importlib.util
import threading
import time
import warnings
from typing import Any, ClassVar

from ..checks import expected

__all__ = ["Tracker", "require"]


def require(module: str, who: str) -> None:
    """Raise an ImportError naming the extra to install when ``module`` is missing (without importing it)."""
    if importlib.util.find_spec(module) is None:
        raise ImportError(f"{who} needs {module}, which is not installed; pip install 'glimr_cv[tracking]'")


class Tracker:
    """A destination for a search's runs: a parent run, one run per configuration, one per fold.

    Writes are queued (:meth:`send`) and written by :meth:`flush`. When a write
    fails (a tracking server that went away), the search goes on: the tracker
    warns once, keeps the pending writes in order, tries again every
    ``retry_every`` seconds, and once more, with the tracking system's usual
    patience, at the end of the search (``flush(final=True)``).

    Attributes
    ----------
    retry_every : float
        Seconds between attempts after a failed write.
    final_wait : float
        Seconds the end of the search waits for a write still under way (a
        tracking server that stopped answering) before it gives up on it.
    """

    #: Name of the tracker's section in the experiment's tracking state.
    kind: ClassVar[str] = "tracker"
    retry_every: float = 30.0
    final_wait: float = 30.0

    # -- what a subclass implements ---------------------------------------------------
    def check(self, name: str, path: str) -> None:
        """Check the settings and reach the tracking system, quickly, before Ray starts.

        ``name`` and ``path`` are the experiment's name and folder. Raises an error
        naming the argument at fault and what was expected.
        """

    def settings(self) -> dict:
        """Keyword arguments that re-create this tracker (JSON values), saved with the experiment."""
        return {}

    def open(self, info, state: dict | None) -> None:
        """Start writing the runs of search ``info``; ``state`` is :meth:`state` of an earlier driver, or None."""

    def state(self) -> dict:
        """What a resumed search needs to continue the same runs (run ids), as JSON values."""
        return {}

    def _write(self, pending: list) -> None:
        """Write the operations of ``pending`` in order, deleting each from the list once it is written.

        On an error, raise it: the operations left in ``pending`` are tried again later.
        """
        raise NotImplementedError

    def artifacts(self, results, outcome: str) -> None:
        """At the end of a search, log what it produced (``results`` is its ``SearchResults``)."""

    def describe(self) -> str:
        """The tracker and where it writes, for messages."""
        return type(self).__name__

    # -- shared -----------------------------------------------------------------------
    def _runtime(self) -> None:
        """The queue and its locks: operations come from the driver, writes may happen in another thread."""
        self._pending: list = []
        self._lock = threading.Lock()  # the queue
        self._writing = threading.Lock()  # one write at a time
        self._offline_since: float | None = None
        self._next_try = 0.0
        self._warned = False

    def send(self, ops: list) -> None:
        """Queue operations (see :mod:`glimr_cv.tracking.plan`)."""
        if "_pending" not in self.__dict__:
            self._runtime()
        with self._lock:
            self._pending.extend(ops)

    @property
    def pending(self) -> int:
        """Operations not written yet."""
        return len(self.__dict__.get("_pending", ()))

    def flush(self, final: bool = False) -> bool:
        """Write what is pending; False when the tracking system could not be reached.

        After a failure, nothing is tried before ``retry_every`` seconds have
        passed, unless ``final``. Safe to call from another thread than :meth:`send`'s.
        """
        if "_pending" not in self.__dict__:
            self._runtime()
        if not self._writing.acquire(timeout=-1 if not final else self.final_wait):
            self._failed(TimeoutError(f"a write still running after {self.final_wait:g} s"), final)
            return False
        try:
            return self._flush(final)
        finally:
            self._writing.release()

    def _flush(self, final: bool) -> bool:
        with self._lock:
            if not self._pending:
                return True
            if not final and time.monotonic() < self._next_try:
                return False
            batch, self._pending = self._pending, []
        try:
            self._write_batch(batch, final)
        except Exception as err:  # a tracker never fails the search
            with self._lock:
                self._pending[:0] = batch  # what was not written, before what came since, in order
            self._failed(err, final)
            return False
        self._offline_since = None
        return True

    def _write_batch(self, batch: list, final: bool) -> None:
        self._write(batch)

    def _failed(self, err: Exception, final: bool) -> None:
        self._next_try = time.monotonic() + self.retry_every
        if self._offline_since is None:
            self._offline_since = time.time()
        detail = f"{type(err).__name__}: {str(err).strip().splitlines()[0] if str(err).strip() else ''}"[:400]
        if final:
            warnings.warn(f"tracking: {self.describe()} could still not be written to at the end of the search "
                          f"({detail}); {len(self._pending)} updates are lost. The search's results are in its "
                          "folder; Search.restore sends the configurations' values again.", RuntimeWarning,
                          stacklevel=3)
        elif not self._warned:
            self._warned = True
            warnings.warn(f"tracking: {self.describe()} could not be written to ({detail}); the search goes on, "
                          f"and its updates are kept and sent again every {self.retry_every:g} s and at the end",
                          RuntimeWarning, stacklevel=3)

    def __getstate__(self) -> dict:
        # a tracker travels as its settings: clients, queues and run ids stay in this driver and the state file
        return {k: v for k, v in self.__dict__.items() if not k.startswith("_")}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.settings().items())
        return f"{type(self).__name__}({args})"


def tracker_class(path: str) -> type:
    """The tracker class ``"module:Name"``."""
    module, _, name = path.partition(":")
    cls = getattr(importlib.import_module(module), name)
    if not (isinstance(cls, type) and issubclass(cls, Tracker)):
        raise TypeError(expected("tracking", "a glimr_cv.tracking.Tracker class", path))
    return cls


def class_path(tracker: Any) -> str:
    return f"{type(tracker).__module__}:{type(tracker).__qualname__}"
