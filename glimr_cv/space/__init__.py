"""The search space: glimr's nested-dict notation (:mod:`.notation`) and its required sections (:mod:`.sections`)."""

from .notation import SpaceError, loguniform, prune_search, sample_space
from .sections import metric_names, optimization_space, validate_space

__all__ = ["SpaceError", "loguniform", "prune_search", "sample_space", "metric_names", "optimization_space",
           "validate_space"]
