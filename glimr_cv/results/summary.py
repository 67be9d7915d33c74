"""What a search returns: :class:`SearchResults`, assembled from the folder and the fold scheduler; :func:`load_results`."""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any, Callable

import pandas as pd

from ..checks import check_id, check_int
from ..engine.store import FolderError, Opaque, decode, experiment_path, local_folder, read_meta, read_state
from ..schema import fold_columns
from .analysis import read_folds
from .tables import format_leaderboard, scheduler_table

__all__ = ["SearchResults", "collect_results", "load_results"]


@dataclass
class SearchResults:
    """What :meth:`glimr_cv.Search.experiment` returns.

    Attributes
    ----------
    path : str
        The experiment directory; for a URI (``s3://...``), its local copy.
    metric, mode : str
        Metric that ranks configurations and its direction.
    table : DataFrame
        One row per configuration (see :func:`cv_table`), best first.
    folds : DataFrame
        One row per (configuration, fold): ``config_id, fold, status, <metrics>,
        best_epoch, epochs, fit_seconds, model_reused, checkpoint_path, trial_id, error``.
    best_config_id : int or None
        The complete configuration with the best mean.
    best_config : dict or None
        Its sampled configuration.
    best_checkpoints : list of str
        Checkpoint directories of its folds, in fold order.
    result_grid : ray.tune.ResultGrid
        Ray Tune's own results, one per fold training.
    fold_trainings : int
        Fold trainings started.
    fold_trainings_saved : int
        Fold trainings racing skipped.
    epoch_trainings : int
        Epochs trained over all folds (a fold stopped early counts its epochs so far).
    folds_stopped_early : int
        Folds that ended before their last epoch (``folds.stopped_early``).
    """

    path: str
    metric: str
    mode: str
    cv_folds: int
    table: pd.DataFrame
    folds: pd.DataFrame
    configs: dict
    result_grid: Any = None
    fold_trainings: int = 0
    fold_trainings_saved: int = 0
    epoch_trainings: int = 0
    folds_stopped_early: int = 0
    reporter: dict = field(default_factory=dict)
    builder: Callable | None = field(default=None, repr=False)

    @property
    def best_config_id(self) -> int | None:
        ranked = self.table[self.table["status"] == "complete"]
        return None if ranked.empty else int(ranked.iloc[0]["config_id"])

    @property
    def best_config(self) -> dict | None:
        cid = self.best_config_id
        return None if cid is None else self.configs[cid]

    @property
    def best_checkpoints(self) -> list[str]:
        cid = self.best_config_id
        return [] if cid is None else list(self.complete_folds(cid)["checkpoint_path"])

    def leaderboard(self, max_rows: int = 20) -> str:
        """The table as text: rank, status, folds done, mean ± std and sampled parameters."""
        check_int("max_rows", max_rows, 1)
        table = self.table if self.reporter.get("sort_by_metric", True) else self.table.sort_values("config_id")
        return format_leaderboard(table, self.metric, self.cv_folds, self.reporter.get("parameters", ()), max_rows,
                                  self.reporter.get("metrics", ()))

    def load_model(self, config_id: int | None = None, fold: int = 0):
        """Rebuild a fold's model with the builder and load its best-epoch weights.

        Results read from a folder (:func:`load_results`) have no builder: the
        fold's whole model (``model.keras``, saved with every fold Keras can
        serialize) is loaded in Keras's safe mode, without the user's code. A fold
        without one is rebuilt by the builder, unpickled from the folder's saved
        search after its hash is checked, with the configuration from the trial's
        own pickle: the folder is then trusted like code.

        Parameters
        ----------
        config_id : int, optional
            Defaults to the best configuration.
        fold : int
            Which fold's checkpoint to load.
        """
        cid = self.best_config_id if config_id is None else check_id("config_id", config_id, self.configs)
        if cid is None:
            raise ValueError("no configuration is complete, so there is no best model; pass config_id")
        check_int("fold", fold, 0)
        rows = self.folds[(self.folds["config_id"] == cid) & (self.folds["fold"] == fold)]
        lost = rows[rows["status"] == "lost"]
        if len(lost):
            raise ValueError(f"config_id={cid}, fold={fold}: {lost.iloc[0]['error']}")
        rows = rows[rows["status"] == "complete"]
        if rows.empty:
            raise ValueError(f"no finished checkpoint for config_id={cid}, fold={fold}; finished folds are "
                             f"{sorted(self.complete_folds(cid)['fold'])}")
        checkpoint = rows.iloc[0]["checkpoint_path"]
        whole = os.path.join(checkpoint, "model.keras")
        if self.builder is None and os.path.isfile(whole):
            import keras

            from ..keras_io import check_keras_file, import_own_modules

            import_own_modules(check_keras_file(whole))  # glimr_cv's layers a saved bag model names
            # Keras's safe mode loads no code from the file: a folder's models need none of its pickles
            return keras.saving.load_model(whole, compile=False, safe_mode=True)
        if self.builder is None:
            from ..engine.store import load_search

            self.builder = load_search(self.path).builder
        model = self.builder(self.model_config(cid))[0]
        model.load_weights(os.path.join(checkpoint, "model.weights.h5"))
        return model

    def model_config(self, config_id: int) -> dict:
        """The configuration a model of ``config_id`` is built from, with its classes and functions.

        :attr:`configs` read from a folder are plain data, where a class or a
        function is its ``repr`` (an :class:`~glimr_cv.engine.store.Opaque`);
        then the trial's own ``params.pkl`` (Ray Tune's pickle of the
        configuration) is read, which runs code from the folder.
        """
        params = self.configs[check_id("config_id", config_id, self.configs)]
        if not _has_opaque(params):
            return params
        import glob
        import pickle

        from ..schema import META

        for file in sorted(glob.glob(os.path.join(self.path, f"c{int(config_id):04d}_f*_*", "params.pkl"))):
            try:
                with open(file, "rb") as f:
                    trusted = pickle.load(f)
            except Exception:  # cut short or damaged: another fold's copy may be whole
                continue
            return {k: v for k, v in trusted.items() if k != META}
        raise FolderError(f"config_id={config_id}: its classes and functions are kept only in its trials' "
                          f"params.pkl, and none of them in {self.path!r} can be read")

    def complete_folds(self, config_id: int) -> pd.DataFrame:
        """The fold rows of ``config_id`` that finished, in fold order: what its CV mean and ensemble are made of."""
        folds = self.folds
        config_id = check_id("config_id", config_id, self.configs)
        rows = folds[(folds["config_id"] == config_id) & (folds["status"] == "complete")]
        return rows.sort_values("fold")

    def best_models(self) -> list:
        """The best configuration's model for each of its folds (a ready CV ensemble)."""
        cid = self.best_config_id
        return [] if cid is None else [self.load_model(cid, int(f)) for f in self.complete_folds(cid)["fold"]]

    def ensemble(self, config_id: int | None = None):
        """ONE Keras model averaging the fold models of the best configuration, output by output.

        Built-in Keras layers only (see :func:`glimr_cv.deploy.fold_ensemble`); its
        predictions are the mean of the fold models' predictions.
        """
        from ..deploy.ensemble import best_ensemble

        return best_ensemble(self, config_id)

    def export(self, path: str | None = None, config_id: int | None = None) -> str:
        """Save :meth:`ensemble` as a ``.keras`` file (default ``ensemble.keras`` in the experiment folder).

        Plain ``keras.saving.load_model(path)`` loads it without glimr_cv installed,
        unless it holds glimr_cv's own layers (MIL pooling); custom layers of the
        builder must be registered and importable where it is loaded. Returns the absolute path written.
        """
        from ..deploy.ensemble import export_ensemble

        return export_ensemble(self, path, config_id)

    def refit(self, data=None, epochs: int | None = None, path: str | None = None, **kwargs):
        """Train the best configuration on all the data, save it (default ``refit.keras``) and return it.

        ``data=None`` uses a ``kfold_loader``'s full-data mode; ``epochs`` defaults to
        the median best epoch of its folds. See :func:`glimr_cv.deploy.refit_config`
        for the other arguments (``config_id``, ``verbose``, ``fit_kwargs``, ``save``).
        """
        from ..deploy.refit import refit_config

        return refit_config(self, data=data, epochs=epochs, path=path, **kwargs)

    def __getattr__(self, name: str):
        # glimr returned Ray Tune's ResultGrid; its per-trial methods have per-configuration answers here
        pointer = _RESULT_GRID.get(name)
        if pointer is None:
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        raise AttributeError(f"SearchResults.{name}: glimr returned Ray Tune's ResultGrid, whose results are single "
                             f"trials; a glimr_cv configuration is k folds, so use {pointer} (Tune's own grid is "
                             "results.result_grid)")

    def __repr__(self) -> str:
        counts = self.table["status"].value_counts().to_dict() if len(self.table) else {}
        return (f"SearchResults(path={self.path!r}, configurations={len(self.table)}, statuses={counts}, "
                f"fold_trainings={self.fold_trainings}, best_config_id={self.best_config_id})")


#: Ray Tune ``ResultGrid`` names that glimr's code calls, and what answers them here.
_RESULT_GRID = {
    "get_best_result": "results.best_config (its sampled configuration), results.table (its CV means, first row) "
                       "and results.best_models() or results.best_checkpoints (its k fold models)",
    "get_dataframe": "results.table (one row per configuration: CV means, std, rank) or results.folds (one row per "
                     "fold training, Tune's trial)",
    "num_errors": "results.table['status'].eq('failed').sum()",
    "errors": "results.table[results.table['status'] == 'failed']['error']",
}


def _has_opaque(value: Any) -> bool:
    if isinstance(value, dict):
        return any(_has_opaque(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return any(_has_opaque(v) for v in value)
    return isinstance(value, Opaque)


def _lost_folds(scheduler, folds: pd.DataFrame) -> pd.DataFrame:
    """Rows for the folds the scheduler scored whose trial folders are gone: lost, never hidden."""
    if scheduler is None:
        return folds
    have = set(zip(folds["config_id"], folds["fold"])) if len(folds) else set()
    rows = []
    for c in scheduler.configs.values():
        for fold, score in c.scores.items():
            if (c.config_id, fold) not in have:
                warnings.warn(f"fold {fold} of configuration {c.config_id} finished with score {score}, but its "
                              "trial folder is gone; it counts as lost", UserWarning, stacklevel=3)
                rows.append({"config_id": c.config_id, "fold": fold, "status": "lost", "score": score,
                             "error": "fold lost: its trial folder is gone", "config": c.params})
    if not rows:
        return folds
    extra = pd.DataFrame(rows)
    return (pd.concat([folds, extra], ignore_index=True) if len(folds) else extra).sort_values(
        ["config_id", "fold"]).reset_index(drop=True)


def _config_states(scheduler, folds: pd.DataFrame) -> dict:
    """The scheduler's configurations, plus those only the folder knows (it was saved before they started).

    A configuration with a lost fold is no longer complete: it shows as
    "incomplete", with the loss as its error.
    """
    states = dict(scheduler.configs) if scheduler is not None else {}
    if len(folds):
        for cid, rows in folds.groupby("config_id"):
            if cid not in states:
                failed = rows["status"].eq("failed").any()
                states[cid] = SimpleNamespace(
                    config_id=int(cid), params=rows["config"].iloc[0], status="failed" if failed else "running",
                    error=rows["error"].dropna().iloc[0] if failed and rows["error"].notna().any() else None)
            lost = rows[rows["status"] == "lost"]
            if len(lost) and states[cid].status == "complete":
                c = states[cid]
                states[cid] = SimpleNamespace(config_id=c.config_id, params=c.params, status="incomplete",
                                              error=f"fold {int(lost['fold'].iloc[0])}: {lost['error'].iloc[0]}")
    return dict(sorted(states.items()))


def collect_results(path: str, scheduler, *, metric: str, mode: str, cv_folds: int, metrics: list,
                    reporter: dict, builder: Callable | None = None, result_grid: Any = None,
                    run: str | None = None) -> SearchResults:
    """:class:`SearchResults` of experiment folder ``path``, whose fold ``scheduler`` is given.

    The scheduler knows each configuration's status and why it stopped; the
    folder holds every fold's details. ``scheduler`` may be None, or lag behind
    the folder (a running or interrupted experiment read from disk): the
    configurations it does not know are "running", or "failed" with a failed fold.
    ``run`` is the search's id: a trial of another search in the folder is refused.
    """
    path = local_folder(path)  # a URI's experiment, downloaded: its readers here and downstream use os paths
    folds = _lost_folds(scheduler, read_folds(path, run))
    states = _config_states(scheduler, folds)
    table = scheduler_table(states.values(), metric, mode, cv_folds, folds, metrics)
    return SearchResults(
        path=path,
        metric=metric,
        mode=mode,
        cv_folds=cv_folds,
        table=table,
        folds=folds.reindex(columns=fold_columns([m for m in metrics if m in folds.columns])),
        configs={cid: c.params for cid, c in states.items()},
        result_grid=result_grid,
        fold_trainings=scheduler.n_started if scheduler is not None else len(folds),
        fold_trainings_saved=scheduler.fold_trainings_saved if scheduler is not None else 0,
        epoch_trainings=int(pd.to_numeric(folds.get("epochs"), errors="coerce").fillna(0).sum()) if len(folds) else 0,
        folds_stopped_early=int(folds["stopped_early"].eq(True).sum()) if "stopped_early" in folds else 0,
        reporter=reporter,
        builder=builder,
    )


def load_results(local_dir: str, name: str | None = None) -> SearchResults:
    """:class:`SearchResults` of an experiment folder alone: finished, running or interrupted.

    Reads plain data only (see :mod:`glimr_cv.engine.store`): the search's
    settings from ``glimr_cv.json``, the configurations' statuses from
    ``glimr_cv_state.json`` and every fold from its trial folder. It unpickles
    nothing and needs none of the user's code, so a folder from anyone can be
    read. Damage is repaired from the fold's other record or named in a warning
    (see :func:`glimr_cv.results.analysis.read_folds`).

    Raises
    ------
    FileNotFoundError
        When the folder is not a glimr_cv experiment.
    FolderError
        When it is another search's, of another format, or damaged beyond repair.
    """
    path = experiment_path(local_dir, name)
    local = local_folder(path)
    meta = read_meta(local)
    try:
        state = read_state(local)
    except FolderError as err:  # statuses come from the folder alone then
        warnings.warn(f"{err}; the configurations' statuses are read from the trial folders alone", UserWarning,
                      stacklevel=2)
        state = None
    if state is not None and state.run not in (None, meta.get("run")):
        raise FolderError(f"glimr_cv_state.json in {path!r} is another search's (run {state.run}) than its "
                          f"glimr_cv.json (run {meta.get('run')}); expected one search per experiment folder")
    reporter = decode(meta.get("reporter")) or {}
    return collect_results(local, state, metric=meta["metric"], mode=meta["mode"], cv_folds=int(meta["cv_folds"] or 1),
                           metrics=list(meta["metrics"]), reporter=reporter, builder=None, run=meta.get("run"))
