"""Nested cross-validation: an unbiased score of the whole search, configuration choice included.

The best CV mean of a search is optimistic: it is the maximum over configurations
of noisy estimates, chosen on the very folds it is read from. Nested CV splits
the rows into outer folds; for each, a whole search (with its own k-fold CV) runs
on the outer training rows only, its best configuration becomes a final model,
and that model is scored once on the outer test rows, which neither the search
nor the choice saw.
"""

from __future__ import annotations

import copy
import datetime
import json
import os
import pickle
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from .checks import check_choice, check_int, check_type, expected
from .data.contract import resolve_folds, row_loader

__all__ = ["nested_cv", "NestedResults"]

_FINALS = ("ensemble", "refit")
_SETTINGS = "nested.json"  # outer folds, rows, metric: what a rerun must share to resume


@dataclass
class NestedResults:
    """What :func:`nested_cv` returns.

    Attributes
    ----------
    path : str
        The nested run's folder; outer fold ``k``'s search is ``path/outer_{k}``.
    metric, mode : str
        The search's metric and its direction.
    final : {"ensemble", "refit"}
        How each outer fold's final model was made.
    table : DataFrame
        One row per outer fold: ``outer_fold, n_train, n_test, config_id``
        (the configuration the inner search chose), ``inner_mean_<metric>`` (its
        inner CV mean), ``outer_<m>`` for every reported metric ``m`` (the final
        model on the outer test rows; ``outer_<metric>`` first), then the chosen
        sampled hyperparameters as ``config/<path>``.
    inner : list of SearchResults
        The inner search of each outer fold.
    splits : list of (numpy.ndarray, numpy.ndarray)
        The ``(train_rows, test_rows)`` of each outer fold, indices into the
        search's loader; every row is a test row exactly once.
    """

    path: str
    metric: str
    mode: str
    final: str
    table: pd.DataFrame
    inner: list = field(repr=False)
    splits: list = field(repr=False)

    @property
    def scores(self) -> pd.Series:
        """The outer test score of each outer fold (``table["outer_<metric>"]``)."""
        return self.table[f"outer_{self.metric}"]

    @property
    def score_mean(self) -> float:
        """Mean of the outer test scores: the nested CV estimate."""
        return float(np.mean(self.scores))

    @property
    def score_std(self) -> float:
        """Population standard deviation of the outer test scores (as the ``std_`` of a search's table)."""
        return float(np.std(self.scores))

    def summary(self) -> str:
        """``"outer <metric>: mean ± std over k folds"``."""
        return f"outer {self.metric}: {self.score_mean:.4f} ± {self.score_std:.4f} over {len(self.table)} folds"

    def __str__(self) -> str:
        return self.summary()

    def __repr__(self) -> str:
        return f"NestedResults({self.summary()}, final={self.final!r}, path={self.path!r})"


def nested_cv(search, local_dir: str, outer_folds: int = 5, name: str | None = None, final: str = "ensemble",
              num_samples: int | None = 10, **experiment_kwargs) -> NestedResults:
    """Nested cross-validation of a search: one inner search per outer fold, scored on rows it never saw.

    For each outer fold ``k`` (the loader's own splitter, groups and
    stratification, ``loader.outer_folds``), a copy of ``search`` whose
    loader holds only the outer training rows (``loader.subset``) runs
    ``experiment(local_dir/name, "outer_{k}", num_samples, **experiment_kwargs)``,
    with its own ``cv_folds``-fold CV on those rows. Its best configuration (as
    :attr:`SearchResults.best_config_id`) becomes the final model, which is
    scored on the outer test rows.

    The outer score is computed in this process with Keras, as a fold's
    validation score is: the final model's test-row predictions go through a
    pass-through model compiled with the builder's losses, loss weights and
    metrics, evaluated in batches of the validation batch size. So ``loss``
    leaves out weight-regularization penalties, and metrics that accumulate
    over the whole set (``ConcordanceIndex``) see all test rows at once.

    Parameters
    ----------
    search : glimr_cv.Search
        The search to assess; its loader must hold its rows
        (:class:`glimr_cv.data.contract.RowLoader`: ``kfold_loader``,
        ``kfold_survival_loader``, ``kfold_bag_loader``, ``kfold_slide_loader``),
        so that they can be split; rows are bags for the bag and slide loaders.
    local_dir : str
        Folder for experiments; the nested run writes to ``local_dir/name``.
    outer_folds : int
        Outer folds (default 5).
    name : str, optional
        Name of the nested run; defaults to a timestamp. Pass one to be able
        to resume.
    final : {"ensemble", "refit"}
        ``"ensemble"``: the mean of the chosen configuration's fold models'
        predictions, as :meth:`SearchResults.ensemble` (with ``preprocess``,
        each fold model gets the test rows through its own fold's transformer).
        ``"refit"``: the chosen configuration trained on all outer training
        rows, as :meth:`SearchResults.refit` (saved as ``outer_{k}/refit.keras``).
    num_samples : int or None
        Configurations of each inner search.
    **experiment_kwargs
        Other arguments of :meth:`Search.experiment`, for every inner search.
        A ``search_alg`` or ``scheduler`` is deep-copied for each outer fold,
        so that no state passes from one to the next.

    Returns
    -------
    NestedResults

    Raises
    ------
    TypeError
        If ``search`` is not a ``Search``, or its loader does not hold its rows.
    ValueError
        On a bad ``outer_folds`` or ``final``, outer training rows that cannot
        make the search's ``cv_folds`` folds, or a ``name`` that holds a nested
        run with other outer folds or rows.
    RuntimeError
        When an inner search finishes with no complete configuration.

    Notes
    -----
    Everything finished is kept in ``local_dir/name``: each inner search in
    ``outer_{k}``, its choice in ``outer_{k}.choice.json`` and its outer score
    in ``outer_{k}.<final>.json``. Running ``nested_cv`` again with the same
    ``local_dir``, ``name`` and ``outer_folds`` resumes: finished outer folds
    are read back, not trained again (with their choice, whatever the search's
    settings are now); an interrupted inner search (killed, or stopped by
    :class:`glimr_cv.SearchHalted`) continues with :meth:`Search.restore`.
    Another ``final`` reuses the finished inner searches and only builds and
    scores the new final models. A ``name`` whose outer folds or rows differ
    is refused.
    """
    from .results.summary import load_results
    from .space.notation import flatten, parse_space, sampled_paths

    # a workflow above Search, through its public seams only: experiment, restore, spec and its settings
    if not all(hasattr(search, name) for name in ("experiment", "restore", "spec", "loader", "metric", "cv_folds")):
        raise TypeError(expected("search", "a glimr_cv.Search", got=type(search).__name__))
    loader = row_loader(search.loader, "nested cross-validation, which splits its rows into outer folds,")
    check_choice("final", final, _FINALS)
    check_int("num_samples", num_samples, 1, allow_none=True)
    splits = loader.outer_folds(outer_folds)
    for k, (train, _) in enumerate(splits):
        _inner_search(search, k, train)  # every outer fold can make the inner folds, before anything runs

    check_type("local_dir", local_dir, (str, os.PathLike), "a path")
    check_type("name", name, str, "a folder name", allow_none=True)
    name = name or datetime.datetime.now().strftime("nested_%Y-%m-%d_%H-%M-%S")
    root = os.path.abspath(os.path.join(os.path.expanduser(os.fspath(local_dir)), name))
    _check_settings(root, {"outer_folds": int(outer_folds), "rows": int(loader.n), "metric": search.metric,
                                 "mode": search.mode, "test_rows": [test.tolist() for _, test in splits]})

    rows, inner_results = [], []
    sampled = [f"config/{p}" for p in sampled_paths(parse_space(search.space))]
    for k, (train, test) in enumerate(splits):
        inner = _inner_search(search, k, train)
        exp = f"outer_{k}"
        choice_file = os.path.join(root, f"{exp}.choice.json")
        if os.path.exists(choice_file):
            results = load_results(root, exp)
            with open(choice_file) as f:
                choice = json.load(f)
        else:
            results = _run_inner(inner, root, exp, num_samples, experiment_kwargs)
            cid = results.best_config_id
            if cid is None:
                raise RuntimeError(f"outer fold {k}: no configuration of {results.path!r} completed its inner CV, "
                                   "so there is nothing to choose; see its table and errors")
            mean = results.table.loc[results.table["config_id"] == cid, f"mean_{search.metric}"].iloc[0]
            choice = {"config_id": int(cid), "inner_mean": float(mean)}
            _write_json(choice_file, choice)

        score_file = os.path.join(root, f"{exp}.{final}.json")
        if os.path.exists(score_file):
            with open(score_file) as f:
                scores = json.load(f)
        else:
            scores = _outer_scores(inner, results, choice["config_id"], loader, train, test, final)
            _write_json(score_file, scores)

        params = flatten(results.configs[choice["config_id"]], prefix="config/")
        row = {"outer_fold": k, "n_train": len(train), "n_test": len(test), "config_id": choice["config_id"],
               f"inner_mean_{search.metric}": choice["inner_mean"]}
        row.update({f"outer_{m}": scores[m] for m in [search.metric, *search.metric_names] if m in scores})
        # a path of an option this configuration did not choose is NaN, as in a search's table
        row.update({p: (params[p] if _scalar(params[p]) else repr(params[p])) if p in params else np.nan
                    for p in sampled})
        rows.append(row)
        inner_results.append(results)
        if search.report_every > 0:
            print(f"nested CV, outer fold {k + 1}/{len(splits)}: config {choice['config_id']}, inner "
                  f"{search.metric} {choice['inner_mean']:.4f}, outer {scores[search.metric]:.4f}", flush=True)

    return NestedResults(path=root, metric=search.metric, mode=search.mode, final=final, table=pd.DataFrame(rows),
                         inner=inner_results, splits=[(train, test) for train, test in splits])


def _inner_search(search, k: int, train: np.ndarray):
    """A copy of ``search`` (same settings) whose loader holds only outer fold ``k``'s training rows."""
    inner = copy.copy(search)
    inner.loader = search.loader.subset(train)
    try:
        inner.loader.folds(resolve_folds(search.cv_folds))  # without CV, a trial takes fold 0 of the default
    except ValueError as e:
        raise ValueError(f"outer fold {k}: its {len(train)} training rows cannot make the search's folds; "
                         f"{e}") from None
    return inner


def _scalar(value: Any) -> bool:
    return isinstance(value, (str, int, float, bool, type(None), np.integer, np.floating, np.bool_))


def _write_json(path: str, value: Any) -> None:
    tmp = path + ".writing"
    with open(tmp, "w") as f:
        json.dump(value, f)
    os.replace(tmp, path)  # a kill leaves the old file or none, never half of one


def _check_settings(root: str, settings: dict) -> None:
    """Write ``root/nested.json``, or check that the run already there has the same outer folds and rows."""
    path = os.path.join(root, _SETTINGS)
    if os.path.exists(path):
        with open(path) as f:
            saved = json.load(f)
        differ = [key for key in settings if saved.get(key) != settings[key]]
        if differ:
            raise ValueError(f"name: expected a new name or the same nested run, but {root!r} holds one with other "
                             f"{', '.join(differ)}; resuming it would mix outer folds")
        return
    os.makedirs(root, exist_ok=True)
    _write_json(path, settings)


def _run_inner(inner, root: str, exp: str, num_samples, experiment_kwargs: dict):
    """Run outer fold ``exp``'s search, or resume it when an earlier run left it unfinished."""
    from .engine.store import SEARCH_FILE

    if os.path.exists(os.path.join(root, exp, SEARCH_FILE)):
        resume = {k: experiment_kwargs[k] for k in ("verbose", "address") if k in experiment_kwargs}
        return type(inner).restore(root, exp, **resume)
    kwargs = dict(experiment_kwargs)
    for stateful in ("search_alg", "scheduler"):  # a fresh one per outer fold: no state crosses outer folds
        if kwargs.get(stateful) is not None:
            kwargs[stateful] = copy.deepcopy(kwargs[stateful])
    return inner.experiment(root, name=exp, num_samples=num_samples, **kwargs)


def _predict(model, data, tasks: list) -> dict:
    from .keras_io import named_outputs
    from .engine.quiet import quiet_retracing

    with quiet_retracing():  # batches of bags differ in length: a trace each, expected
        out = named_outputs(model.predict(data, verbose=0), model)
    if sorted(out) != sorted(tasks) and len(out) == len(tasks):
        out = dict(zip(tasks, out.values()))  # outputs named otherwise, in task order
    return {t: np.asarray(out[t]) for t in tasks}


def _outer_scores(inner, results, config_id: int, loader, train: np.ndarray, test: np.ndarray,
                  final: str) -> dict:
    """Every reported metric of ``config_id``'s final model on the outer ``test`` rows."""
    spec = inner.spec
    params = results.model_config(config_id)
    tasks = spec.task_names
    batch_size = int(loader.val_batch_size or params["data"]["batch_size"])
    if results.builder is not None:
        spec.builder = results.builder
    sub = inner.loader  # the outer training rows, as the inner search had them

    if final == "ensemble":
        predictions = []
        for fold in [int(f) for f in results.complete_folds(config_id)["fold"]]:
            fitted = None if sub.preprocess is None else sub.fitted_preprocess(fold, resolve_folds(inner.cv_folds))
            model = results.load_model(config_id, fold)
            predictions.append(_predict(model, loader.rows_dataset(test, batch_size, fitted), tasks))
        # the mean of the fold models' outputs, which is what SearchResults.ensemble()'s model computes
        predicted = {t: np.mean([p[t] for p in predictions], axis=0) for t in tasks}
    else:
        model = results.refit(config_id=config_id)
        fitted = None
        transformer = os.path.join(results.path, "refit.preprocess.pkl")
        if sub.preprocess is not None and os.path.exists(transformer):  # fit on all outer training rows
            with open(transformer, "rb") as f:
                fitted = pickle.load(f)
        elif sub.preprocess is not None:
            fitted = sub.fit_preprocess(np.arange(sub.n))
        predicted = _predict(model, loader.rows_dataset(test, batch_size, fitted), tasks)

    labels = {t: loader.labels[t][test] for t in tasks}
    train_labels = {t: loader.labels[t][train] for t in tasks}
    return _evaluate(spec, params, predicted, labels, batch_size, train_labels)


def _evaluate(spec, params: dict, predicted: dict, labels: dict, batch_size: int, train_labels: dict) -> dict:
    """Keras's validation metrics of ``predicted`` against ``labels``, named as the search reports them.

    Losses and metrics fit to a fold (``fit_fold``: interval edges, censoring
    weights) are fit to the outer training rows, as the final model's were.
    """
    import keras
    import tensorflow as tf

    from .engine.fold import fit_fold_objects, validation_report

    _, losses, loss_weights, metrics = spec.builder(params)  # fresh loss and metric objects
    fit_fold_objects(losses, metrics, spec.task_names, train_labels)
    inputs = {f"predicted_{t}": keras.Input(p.shape[1:], dtype=str(p.dtype), name=f"predicted_{t}")
              for t, p in predicted.items()}
    scorer = keras.Model(inputs, {t: keras.layers.Identity(name=t)(inputs[f"predicted_{t}"]) for t in predicted})
    scorer.compile(loss=losses, loss_weights=loss_weights, metrics=metrics, jit_compile=False)
    data = tf.data.Dataset.from_tensor_slices(({f"predicted_{t}": p for t, p in predicted.items()}, labels))
    logs = scorer.evaluate(data.batch(batch_size), verbose=0, return_dict=True)
    return validation_report({f"val_{k}": v for k, v in logs.items()}, spec)
