"""glimr_cv: cross-validated hyperparameter search for Keras models on Ray Tune.

The public API, in one place:

* :class:`Search` runs a search; :class:`SearchResults` is what it returns;
  :class:`SearchHalted` is raised when an error every configuration meets stops it.
* Search-space notation: :func:`sample_space`, :func:`prune_search`,
  :func:`optimization_space`, :func:`loguniform`, :func:`validate_space`.
* Builder helpers (import Keras): :func:`keras_losses`, :func:`keras_metrics`,
  :func:`keras_optimizer`.
* Data: :func:`kfold_loader`, a ready k-fold loader over in-memory arrays.
* Racing rules: :class:`Forgiving`, :class:`Aggressive`, :class:`Paired`, :class:`TTest`.
* Fold-stopping rules: :class:`EpochRule`, :class:`PairedCurve`.
* Nested cross-validation: :func:`nested_cv`, :class:`NestedResults`.
* glimr's analysis functions: :func:`experiment_table`, :func:`default_checkpoints`,
  :func:`top_k_trials`, :func:`top_k_configs`; glimr's utilities in :mod:`glimr_cv.utils`.
"""

from .data.folds import KFoldLoader, kfold_loader
from .engine.racing import Aggressive, EpochRule, Forgiving, Paired, PairedCurve, RacingRule, TTest
from .engine.scheduler import FoldScheduler
from .results.analysis import default_checkpoints, experiment_table, top_k_configs, top_k_trials
from .results.summary import SearchResults
from .space.notation import SpaceError, loguniform, prune_search, sample_space
from .space.sections import metric_names, optimization_space, validate_space
from .lazy import lazy_getattr

__version__ = "0.1.0"

_LAZY = {
    "Search": ".search",
    "load_results": ".results.summary",
    "SearchHalted": ".session",
    "keras_losses": ".keras.helpers",
    "keras_metrics": ".keras.helpers",
    "keras_optimizer": ".keras.helpers",
    "predict": ".deploy.batch",
    "predict_ray": ".deploy.batch",
    "serve": ".deploy.serving",
    "nested_cv": ".nested",
    "NestedResults": ".nested",
    "tracking": ".tracking",
}

__all__ = [
    "Search",
    "load_results",
    "SearchHalted",
    "SearchResults",
    "SpaceError",
    "sample_space",
    "prune_search",
    "optimization_space",
    "loguniform",
    "validate_space",
    "metric_names",
    "keras_losses",
    "keras_metrics",
    "keras_optimizer",
    "kfold_loader",
    "KFoldLoader",
    "RacingRule",
    "Forgiving",
    "Aggressive",
    "Paired",
    "TTest",
    "EpochRule",
    "PairedCurve",
    "FoldScheduler",
    "experiment_table",
    "default_checkpoints",
    "top_k_trials",
    "top_k_configs",
    "predict",
    "predict_ray",
    "serve",
    "nested_cv",
    "NestedResults",
]


__getattr__ = lazy_getattr(__name__, _LAZY, globals())  # Keras and Ray load only when used
