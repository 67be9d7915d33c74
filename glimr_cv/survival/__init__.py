"""Survival analysis for glimr_cv: Cox, parametric and discrete-time losses, C-indices, Brier scores, and loaders.

Labels are a float32 array of shape ``(n, 2)``: column 0 the follow-up time,
column 1 the event (1 event, 0 censored); NaN in either marks a missing label,
which every loss and metric here skips (multi-task data). Build them with
:func:`survival_labels`, from arrays or a scikit-survival structured array.

* Losses (Keras 3, TensorFlow backend), usable in a task's ``loss`` entry:
  :func:`cox_loss` / :class:`CoxLoss` (negative partial log-likelihood, Efron or
  Breslow ties), :func:`exponential_nll`, :func:`weibull_nll`, and
  :func:`discrete_time_nll` / :class:`DiscreteTimeNLL` (hazards in time
  intervals, as whole-slide survival models use; its edges,
  :func:`discrete_time_edges`, fitted to each training fold), with
  :func:`hazards_to_survival`, :func:`discrete_risk` and :func:`survival_at`.
* Keras metrics over a whole validation set, for a task's ``metrics`` entry:
  :class:`ConcordanceIndex` (Harrell's C), :class:`UnoConcordance` (Uno's IPCW
  C) and :class:`IntegratedBrierScore`.
* NumPy: :func:`concordance_index` (Harrell's C), and, equal to
  scikit-survival's, :func:`uno_concordance`, :func:`brier_score`,
  :func:`integrated_brier_score`, :func:`censoring_survival` and
  :func:`breslow_survival` (a Cox model's survival functions).
* Fold-fitted objects (:class:`DiscreteTimeNLL` with ``intervals``, the IPCW
  metrics) have a method ``fit_fold(train_labels)``, which the search calls
  with each training fold's labels (see :mod:`glimr_cv.survival.discrete`).
* Data: :func:`kfold_survival_loader`, a :func:`glimr_cv.kfold_loader` with folds
  stratified on the event and training batches that hold events, and
  :func:`event_stratified_order`.

For example, a task of the search space::

    "risk": {
        "loss": {"name": "cox", "loss": cox_loss, "kwargs": {"ties": "breslow"}},
        "loss_weight": 1.0,
        "metrics": [{"name": "cindex", "metric": ConcordanceIndex}],
    }

with ``Search(..., metric="risk_cindex", mode="max")``, or a discrete-time task
whose output has 4 linear units::

    "survival": {
        "loss": {"name": "nll", "loss": DiscreteTimeNLL, "kwargs": {"intervals": 4}},
        "loss_weight": 1.0,
        "metrics": [{"name": "cindex", "metric": ConcordanceIndex, "kwargs": {"prediction": "hazard_logits"}},
                    {"name": "ibs", "metric": IntegratedBrierScore}],
    }

The Keras names, and the discrete-time functions that share their module, load
Keras on first use, which also registers them for ``keras.saving.load_model``
(package ``glimr_cv``): import them before loading a saved model.
"""

from .concordance import concordance_index
from .data import SurvivalKFoldLoader, event_stratified_order, kfold_survival_loader, survival_labels, survival_strata
from .evaluation import brier_score, breslow_survival, censoring_survival, integrated_brier_score, uno_concordance
from ..lazy import lazy_getattr

_LAZY = {
    "cox_loss": ".losses",
    "CoxLoss": ".losses",
    "exponential_nll": ".losses",
    "weibull_nll": ".losses",
    "ConcordanceIndex": ".metrics",
    "UnoConcordance": ".metrics",
    "IntegratedBrierScore": ".metrics",
    "discrete_time_nll": ".discrete",
    "DiscreteTimeNLL": ".discrete",
    "discrete_time_edges": ".discrete",
    "hazards_to_survival": ".discrete",
    "discrete_risk": ".discrete",
    "survival_at": ".discrete",
}

__all__ = [
    "survival_labels",
    "cox_loss",
    "CoxLoss",
    "exponential_nll",
    "weibull_nll",
    "concordance_index",
    "ConcordanceIndex",
    "discrete_time_nll",
    "DiscreteTimeNLL",
    "discrete_time_edges",
    "hazards_to_survival",
    "discrete_risk",
    "survival_at",
    "uno_concordance",
    "UnoConcordance",
    "brier_score",
    "integrated_brier_score",
    "IntegratedBrierScore",
    "censoring_survival",
    "breslow_survival",
    "event_stratified_order",
    "kfold_survival_loader",
    "SurvivalKFoldLoader",
    "survival_strata",
]


__getattr__ = lazy_getattr(__name__, _LAZY, globals())  # Keras and Ray load only when used


def __dir__():
    return sorted(set(globals()) | set(__all__))
