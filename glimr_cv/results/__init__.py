"""After a search: :class:`SearchResults`, the tables, glimr's analysis functions, plots and the HTML report."""

from .analysis import experiment_table, read_epochs, read_folds, top_k_configs, top_k_trials
from .plots import plot_fold_scores, plot_hyperparameters, plot_learning_curves, plot_timeline, save_plots
from .report import report_html, run_state, write_report
from .summary import SearchResults, collect_results
from .tables import cv_table, format_leaderboard, scheduler_table

__all__ = ["SearchResults", "collect_results", "cv_table", "format_leaderboard", "scheduler_table", "read_folds",
           "read_epochs", "experiment_table", "top_k_trials", "top_k_configs", "plot_fold_scores", "plot_timeline",
           "plot_learning_curves", "plot_hyperparameters", "save_plots", "write_report", "report_html", "run_state"]
