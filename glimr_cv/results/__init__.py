"""After a search: :class:`SearchResults`, the tables and glimr's analysis functions."""

from .analysis import experiment_table, read_folds, top_k_configs, top_k_trials
from .summary import SearchResults, collect_results
from .tables import cv_table, format_leaderboard, scheduler_table

__all__ = ["SearchResults", "collect_results", "cv_table", "format_leaderboard", "scheduler_table", "read_folds",
           "experiment_table", "top_k_trials", "top_k_configs"]
