"""Refit: the best configuration trained once more, on all the data, for the epochs CV chose."""

from __future__ import annotations

import math
import os
import pickle
from typing import Any

import numpy as np

from ..checks import check_bool, check_int, check_type, expected

__all__ = ["refit_config", "refit_epochs", "full_data"]


def refit_epochs(folds, config_id: int) -> int:
    """The median best epoch (1-based) of ``config_id``'s finished folds, rounded half up.

    Raises
    ------
    ValueError
        When the configuration has no finished fold with a best epoch.
    """
    rows = folds[(folds["config_id"] == config_id) & (folds["status"] == "complete")]
    epochs = rows["best_epoch"].dropna().astype(float) if "best_epoch" in rows else []
    if not len(epochs):
        raise ValueError(f"refit: config_id={config_id} has no finished fold with a best_epoch; pass epochs=")
    return max(1, int(math.floor(float(np.median(epochs)) + 0.5)))


def full_data(loader: Any, params: dict) -> Any:
    """All the data of ``loader`` for ``params``: the full-data mode of a loader that holds its rows.

    Raises
    ------
    TypeError
        For a loader that does not hold its rows (see :mod:`glimr_cv.data.contract`).
    """
    from ..data.contract import row_loader

    loader = row_loader(loader, "refit with data=None, which trains on all of its rows, (or pass data=, a "
                                "tf.data.Dataset of (features, {task: labels}) batches over all the rows)")
    return loader.full(params["data"]["batch_size"])


def _check_dataset(data: Any, tasks: list) -> None:
    import tensorflow as tf

    check_type("data", data, tf.data.Dataset, "a tf.data.Dataset of (features, {task: labels}) batches, or None")
    element = data.element_spec
    if not isinstance(element, tuple) or len(element) < 2:
        raise ValueError(expected("data", "elements that are (features, labels) pairs", got=str(element)))
    labels = element[1]
    if not isinstance(labels, dict) or sorted(labels) != sorted(tasks):
        got = sorted(labels) if isinstance(labels, dict) else type(labels).__name__
        raise ValueError(expected("data", f"labels in a dict keyed by the tasks {sorted(tasks)}", got=str(got)))


def refit_config(results, data: Any = None, epochs: int | None = None, path: str | os.PathLike | None = None,
                 config_id: int | None = None, verbose: int = 0, fit_kwargs: dict | None = None,
                 save: bool = True):
    """Train one configuration (default: the best) on all the data and save it.

    The model is built and compiled as a fold is (``clear_session``, a Keras seed,
    the builder, ``keras_optimizer(config["optimization"])``, the builder's losses,
    loss weights and metrics; the seed is that of a fold after the last one), then
    fit without validation data.

    Parameters
    ----------
    results : SearchResults
        Of an experiment folder holding its saved ``Search``.
    data : tf.data.Dataset, optional
        ``(features, {task: labels})`` batches over all the rows. ``None``: the
        search's ``kfold_loader`` in its full-data mode (:meth:`KFoldLoader.full`:
        all rows, ``preprocess`` fit on all rows, batch size from the
        configuration); another loader needs ``data=``.
    epochs : int, optional
        Default: the median ``best_epoch`` of the configuration's folds
        (:func:`refit_epochs`), the length of training CV found best.
    path : str, optional
        A ``.keras`` file; default ``refit.keras`` in the experiment folder.
        With a ``kfold_loader``'s ``preprocess`` and ``data=None``, the transformer
        fit on all rows is pickled next to it (``refit.preprocess.pkl``): new
        data must go through it before the model.
    config_id : int, optional
        Which configuration; default the best.
    verbose : int
        ``model.fit``'s verbosity (default silent).
    fit_kwargs : dict, optional
        Extra ``model.fit`` arguments, over the search's ``fit_kwargs``.
    save : bool
        Save to ``path`` (default True).

    Returns
    -------
    keras.Model
        The trained model (compiled).

    Raises
    ------
    TypeError, ValueError
        On a ``data`` that is not such a dataset, ``data=None`` with a loader
        other than a ``kfold_loader``, a bad ``epochs`` or ``path``.
    """
    from ..direction import scored_folds
    from ..engine.fold import build_model, fit_to_labels, fold_seed, fold_tasks
    from ..engine.store import load_search
    from .ensemble import _config_id

    cid = _config_id(results, config_id)
    params = results.model_config(cid)
    path = os.path.join(results.path, "refit.keras") if path is None else os.fspath(path)
    if save and not path.endswith(".keras"):
        raise ValueError(expected("path", "a file name ending in .keras", path))
    epochs = refit_epochs(results.folds, cid) if epochs is None else check_int("epochs", epochs, 1)
    check_int("verbose", verbose, 0, 2)
    check_bool("save", save)
    fit_extra = dict(check_type("fit_kwargs", fit_kwargs, dict, "a dict", allow_none=True) or {})
    search = load_search(results.path)
    spec = search.spec
    if results.builder is not None:
        spec.builder = results.builder

    transformer = None
    if data is None:
        data = full_data(search.loader, params)
        labels = search.loader.labels
        if getattr(search.loader, "preprocess", None) is not None:
            transformer = search.loader.fit_preprocess(np.arange(search.loader.n))
    else:
        _check_dataset(data, spec.task_names)
        labels = None

    model, _ = build_model(params, spec, seed=fold_seed(spec, cid, scored_folds(spec.cv_folds)))
    tasks = fold_tasks(model)
    if tasks:  # fold-fitted losses and metrics are fit to all the rows the model trains on
        if labels is None:
            labels = {t: np.concatenate([np.asarray(y[t]) for _, y in data]) for t in tasks}
        fit_to_labels(model, labels)
    kwargs = {"shuffle": False, **spec.fit_kwargs, **fit_extra}  # tf.data pipelines shuffle themselves
    for reserved in ("x", "y", "epochs", "validation_data", "validation_split"):
        kwargs.pop(reserved, None)
    kwargs["verbose"] = verbose
    model.fit(data, epochs=epochs, **kwargs)
    if save:
        path = os.path.abspath(path)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        model.save(path)
        if transformer is not None:
            with open(path[: -len(".keras")] + ".preprocess.pkl", "wb") as f:
                pickle.dump(transformer, f)
    return model
