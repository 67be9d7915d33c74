"""glimr's module path for its analysis functions: ``from glimr_cv.analysis import experiment_table``.

They live in :mod:`glimr_cv.results.analysis`; this module lets glimr code run
with ``glimr`` changed to ``glimr_cv`` in its imports.
"""

from .results.analysis import default_checkpoints, experiment_table, top_k_configs, top_k_trials

__all__ = ["experiment_table", "default_checkpoints", "top_k_trials", "top_k_configs"]
