"""Experiment tracking that understands cross-validation (the ``tracking`` extra: MLflow and TensorBoard).

A tracker writes a search as a tree of runs: one run for the search, one per
configuration nested in it (CV mean and standard deviation of every metric,
rank, folds done, and its status: complete, pruned and by which racing rule, or
failed), and one per fold nested in its configuration (per-epoch curves, best
epoch, early stopping, timings, worker). It writes from the Ray Tune driver,
where the fold scheduler decides, so workers need no tracking credentials.

>>> from glimr_cv.tracking import MLflowTracker, TensorBoardTracker
>>> search.experiment("runs", name="digits",
...                   tracking=MLflowTracker("http://127.0.0.1:5000", experiment_name="digits"))

* :class:`MLflowTracker` (:mod:`glimr_cv.tracking.mlflow`): MLflow runs, live
  while the search runs, the report and the exported ensemble (and, with
  ``log_model=True``, an MLflow model of the Keras flavor) at the end.
* :class:`TensorBoardTracker` (:mod:`glimr_cv.tracking.tensorboard`): one
  HParams session per configuration, scored by its CV mean, with its folds' curves.
* :class:`Tracker` (:mod:`glimr_cv.tracking.base`): the interface, for other systems.

A resumed search (``Search.restore``) continues the same runs: their ids are kept
in ``glimr_cv_tracking.json`` in the experiment folder, with each tracker's
settings. A tracker that cannot be reached while the search runs warns once; its
updates are kept and sent again later and at the end. Ray Tune's own logger
callbacks (``MLflowLoggerCallback``, ``WandbLoggerCallback``, ...) go in
``experiment(callbacks=[...])``; they log one run per fold training, with
``__glimr_cv__/config_id`` and ``__glimr_cv__/fold`` among its parameters.

Names are imported on first use: ``import glimr_cv`` loads neither MLflow nor TensorBoard.
"""

from ..lazy import lazy_getattr

_LAZY = {
    "Tracker": ".base",
    "MLflowTracker": ".mlflow",
    "TensorBoardTracker": ".tensorboard",
    "TrackingCallback": ".callback",
    "as_trackers": ".callback",
    "check_callbacks": ".callback",
    "Planner": ".plan",
    "SearchInfo": ".plan",
    "STATE_FILE": ".plan",
}

__all__ = ["STATE_FILE", "MLflowTracker", "TensorBoardTracker", "Tracker", "TrackingCallback"]

__getattr__ = lazy_getattr(__name__, _LAZY, globals())
