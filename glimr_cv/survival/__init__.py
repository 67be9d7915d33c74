"""Survival analysis for glimr_cv: Cox and parametric losses, Harrell's C, and loaders.

Labels are a float32 array of shape ``(n, 2)``: column 0 the follow-up time,
column 1 the event (1 event, 0 censored); NaN in either marks a missing label,
which every loss and metric here skips (multi-task data). Build them with
:func:`survival_labels`, from arrays or a scikit-survival structured array.

* Losses (Keras 3, TensorFlow backend), usable in a task's ``loss`` entry:
  :func:`cox_loss` / :class:`CoxLoss` (negative partial log-likelihood, Efron or
  Breslow ties), :func:`exponential_nll`, :func:`weibull_nll`.
* Metrics: :class:`ConcordanceIndex` (a Keras metric over a whole validation
  set, for a task's ``metrics`` entry) and :func:`concordance_index` (NumPy).
* Data: :func:`kfold_survival_loader`, a :func:`glimr_cv.kfold_loader` with folds
  stratified on the event and training batches that hold events, and
  :func:`event_stratified_order`.

For example, a task of the search space::

    "risk": {
        "loss": {"name": "cox", "loss": cox_loss, "kwargs": {"ties": "breslow"}},
        "loss_weight": 1.0,
        "metrics": [{"name": "cindex", "metric": ConcordanceIndex}],
    }

with ``Search(..., metric="risk_cindex", mode="max")``. The Keras names load
Keras on first use, which also registers them for ``keras.saving.load_model``
(package ``glimr_cv``): import them before loading a saved model.
"""

from .concordance import concordance_index
from .data import SurvivalKFoldLoader, event_stratified_order, kfold_survival_loader, survival_labels
from ..lazy import lazy_getattr

_LAZY = {
    "cox_loss": ".losses",
    "CoxLoss": ".losses",
    "exponential_nll": ".losses",
    "weibull_nll": ".losses",
    "ConcordanceIndex": ".metrics",
}

__all__ = [
    "survival_labels",
    "cox_loss",
    "CoxLoss",
    "exponential_nll",
    "weibull_nll",
    "concordance_index",
    "ConcordanceIndex",
    "event_stratified_order",
    "kfold_survival_loader",
    "SurvivalKFoldLoader",
]


__getattr__ = lazy_getattr(__name__, _LAZY, globals())  # Keras and Ray load only when used


def __dir__():
    return sorted(set(globals()) | set(__all__))
