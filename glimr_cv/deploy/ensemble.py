"""The fold ensemble: ONE Keras model that averages k fold models, output by output.

The ensemble is made of built-in Keras layers only (an ``Input`` per model input,
each fold model wrapped in a functional model named ``fold_{i}``, and one
``keras.layers.Average`` per output, named like it), so a saved ensemble loads with
plain ``keras.saving.load_model`` where glimr_cv is not installed. The fold
models themselves are saved as the builder made them: layers of the user's own
(custom classes) must be registered (``keras.saving.register_keras_serializable``)
and importable, or passed as ``custom_objects``, where the file is loaded.
"""

from __future__ import annotations

import os
import warnings
from typing import Any, Sequence

from ..checks import check_id, check_type, expected
from ..keras_io import input_structure, named_outputs

__all__ = ["fold_ensemble", "best_ensemble", "export_ensemble"]


def _input_structure(model) -> Any:
    structure = input_structure(model)
    if structure is None:
        raise TypeError(
            f"fold_ensemble: model {model.name!r} has no known inputs; expected functional or Sequential "
            "models built with keras.Input (a subclassed model defines its inputs only when called)")
    return structure


def _new_inputs(structure):
    import keras

    def new(tensor):
        return keras.Input(shape=tuple(tensor.shape[1:]), dtype=tensor.dtype, name=tensor.name)

    return keras.tree.map_structure(new, structure)


def fold_ensemble(models: Sequence, name: str = "fold_ensemble"):
    """One Keras model whose every output is the mean of that output over ``models``.

    Parameters
    ----------
    models : sequence of keras.Model
        Models with the same inputs and outputs, such as the fold models of a
        configuration (:meth:`SearchResults.best_models`). They are not changed:
        each is wrapped in a functional model named ``fold_{i}``, so layer names
        repeated across folds do not clash.
    name : str
        Name of the ensemble model.

    Returns
    -------
    keras.Model
        Takes the inputs of ``models[0]`` (same names, shapes and dtypes) and
        returns its outputs' structure: a dict by output name when the models
        return a dict, a list or a single tensor otherwise. Each output is a
        ``keras.layers.Average`` named like the output.

    Raises
    ------
    ValueError
        On an empty ``models`` or models whose outputs differ.
    TypeError
        On models without known inputs (subclassed models).
    """
    import keras

    models = list(models)
    if not models:
        raise ValueError(expected("fold_ensemble", "at least one model", got="none"))
    for i, model in enumerate(models):
        if not isinstance(model, keras.Model):
            raise TypeError(expected(f"fold_ensemble: models[{i}]", "a keras.Model", got=type(model).__name__))
    structure = _input_structure(models[0])
    inputs = _new_inputs(structure)
    per_fold = []
    for i, model in enumerate(models):
        fold_inputs = _new_inputs(structure)
        wrapped = keras.Model(fold_inputs, model(fold_inputs), name=f"fold_{i}")
        per_fold.append(wrapped(inputs))
    outputs = [named_outputs(out, models[0]) for out in per_fold]
    names = list(outputs[0])
    for i, out in enumerate(outputs[1:], 1):
        if list(out) != names:
            raise ValueError(f"fold_ensemble: models[{i}] has outputs {list(out)}, but models[0] has {names}")
    averaged = {n: keras.layers.Average(name=n)([out[n] for out in outputs]) for n in names}
    first = per_fold[0]
    if isinstance(first, dict):
        result = averaged
    elif isinstance(first, (list, tuple)):
        result = [averaged[n] for n in names]
    else:
        result = averaged[names[0]]
    return keras.Model(inputs, result, name=name)


def _fold_ids(results, config_id: int) -> list[int]:
    return [int(f) for f in results.complete_folds(config_id)["fold"]]


def _config_id(results, config_id: int | None) -> int:
    cid = results.best_config_id if config_id is None else check_id("config_id", config_id, results.configs)
    if cid is None:
        raise ValueError("no configuration is complete, so there is no best configuration; pass config_id")
    lost = results.folds[(results.folds["config_id"] == cid) & (results.folds["status"] == "lost")]
    if len(lost):  # an ensemble of the folds left would not be the configuration CV scored
        raise ValueError(f"config_id={cid}: fold {int(lost['fold'].iloc[0])} is lost ({lost['error'].iloc[0]}); "
                         "its ensemble would miss that fold's model, so it is refused; choose another "
                         "configuration, or train it again")
    return cid


def _warn_fold_preprocess(results) -> None:
    """Warn when each fold model expects features its own fold's transformer made."""
    from ..engine.store import read_meta

    try:
        preprocess = read_meta(results.path).get("preprocess")
    except (OSError, ValueError):  # the settings are only read for this warning
        return
    if preprocess is not None:  # a kfold_loader's or a bag loader's
        warnings.warn(
            "ensemble: the search's kfold_loader has preprocess, fit on each fold's training rows, so each fold "
            "model expects features transformed by its own fold's transformer (loader.fitted_preprocess(i)); the "
            "ensemble feeds one input to all of them. Prefer results.refit() (one transformer, fit on all rows), "
            "or a model that normalizes inside Keras.", UserWarning, stacklevel=3)


def best_ensemble(results, config_id: int | None = None):
    """:func:`fold_ensemble` of the fold models of ``config_id`` (default: the best configuration).

    The fold models come from :meth:`SearchResults.load_model` (the builder, with
    each fold's best-epoch weights); the ensemble is named
    ``glimr_cv_config{config_id}``.
    """
    cid = _config_id(results, config_id)
    folds = _fold_ids(results, cid)
    if not folds:
        raise ValueError(f"config_id={cid} has no finished fold to ensemble")
    _warn_fold_preprocess(results)
    return fold_ensemble([results.load_model(cid, f) for f in folds], name=f"glimr_cv_config{cid}")


def export_ensemble(results, path: str | os.PathLike | None = None, config_id: int | None = None) -> str:
    """Save :func:`best_ensemble` as a ``.keras`` file (default: ``ensemble.keras`` in the experiment folder).

    Returns
    -------
    str
        The absolute path written. Plain Keras loads it
        (``keras.saving.load_model(path)``) without glimr_cv installed, unless
        the model holds glimr_cv's own layers (MIL pooling).
    """
    check_type("path", path, (str, os.PathLike), "a file name ending in .keras", allow_none=True)
    path = os.path.join(results.path, "ensemble.keras") if path is None else os.fspath(path)
    if not path.endswith(".keras"):
        raise ValueError(expected("path", "a file name ending in .keras", path))
    model = best_ensemble(results, config_id)
    path = os.path.abspath(path)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    model.save(path)
    return path
