"""Batch prediction: :func:`predict` in this process, :func:`predict_ray` over a ``ray.data.Dataset``."""

from __future__ import annotations

import os
import re
from typing import Any

import numpy as np

from ..checks import check_bool, check_int, check_type, expected
from ..keras_io import (check_keras_file, conform_rows, is_bag_model, load_keras_model, model_inputs,
                        model_output_names, to_numpy_outputs)

__all__ = ["load_keras_model", "check_keras_file", "model_inputs", "model_output_names", "to_model_input",
           "same_rows", "nan_rows", "check_no_nan", "empty_outputs", "predict", "BatchPredictor", "predict_ray"]


def _column(frame, name: str, shape: tuple):
    values = frame[name].to_numpy()
    if values.dtype == object and not len(values):  # no rows: nothing to stack
        values = np.zeros((0, *(d or 0 for d in shape)), dtype="float32")
    elif values.dtype == object:  # a column of arrays or lists
        values = np.stack([np.asarray(v) for v in values])
    if len(shape) == 1 and shape[0] == 1 and values.ndim == 1:
        values = values[:, None]
    return values


def _rows_of(value: Any) -> int | None:
    """Rows of an array-like (its first axis), None for a scalar."""
    shape = np.shape(value)
    return shape[0] if shape else None


def same_rows(name: str, columns: dict) -> int | None:
    """The number of rows every input in ``columns`` (by input name) has.

    Raises
    ------
    ValueError
        When they differ, naming every input and its rows:
        ``"data: expected the same number of rows for every input, but got 'a': 2 rows, 'b': 3 rows"``.
    """
    rows = {str(k): _rows_of(v) for k, v in columns.items()}
    if len(set(rows.values())) > 1:
        got = ", ".join(f"{k!r}: " + ("a scalar" if n is None else f"{n} row{'' if n == 1 else 's'}")
                        for k, n in rows.items())
        raise ValueError(expected(name, "the same number of rows for every input", got=got))
    return next(iter(rows.values()), None)


def to_model_input(model, data: Any) -> Any:
    """``data`` as the model takes it: NumPy (an array, a list, or a dict by input name) or a ``tf.data.Dataset``.

    The one place where input data becomes the model's input: a pandas
    DataFrame gives its values (one input), or one column per named input;
    ``(features, labels)`` dataset elements give their features.

    Raises
    ------
    ValueError
        When named inputs are missing, naming those expected, or when inputs
        have different numbers of rows, naming each input's.
    TypeError
        On data of another type.
    """
    kind, inputs = model_inputs(model)
    try:
        import tensorflow as tf
    except ImportError:  # pragma: no cover - TensorFlow is a dependency
        tf = None
    if tf is not None and isinstance(data, tf.data.Dataset):
        element = data.element_spec
        if isinstance(element, tuple) and len(element) in (2, 3) and kind != "list":
            return data.map(lambda *e: e[0])  # (features, labels[, weights]) -> features
        return data
    try:
        import pandas as pd
    except ImportError:  # pragma: no cover - pandas is a dependency
        pd = None
    if pd is not None and isinstance(data, pd.DataFrame):
        if kind == "dict":
            missing = [n for n in inputs if n not in data.columns]
            if missing:
                raise ValueError(f"data: the model takes inputs named {list(inputs)}, so a DataFrame needs those "
                                 f"columns, but {missing} are missing (columns: {list(data.columns)[:20]})")
            return {n: _column(data, n, inputs[n][0]) for n in inputs}
        return data.to_numpy()
    if pd is not None and isinstance(data, pd.Series):
        return data.to_numpy()
    if isinstance(data, dict):
        if kind == "dict":
            missing = [n for n in inputs if n not in data]
            if missing:
                raise ValueError(f"data: expected a dict with the model's inputs {list(inputs)}, but {missing} are "
                                 f"missing (got keys {list(data)})")
            x = {n: np.asarray(data[n]) for n in inputs}
        elif kind in ("single", "list") and len(data) == len(inputs) and set(data) == set(inputs):
            x = {n: np.asarray(data[n]) for n in inputs}
            same_rows("data", x)
            return x[next(iter(inputs))] if kind == "single" else list(x.values())
        elif kind == "single":
            raise ValueError(expected("data", f"an array, as the model has one input {list(inputs)}",
                                      got=f"a dict keyed {list(data)}"))
        else:
            x = {k: np.asarray(v) for k, v in data.items()}
        same_rows("data", x)
        return x
    if isinstance(data, (np.ndarray, list, tuple)) or np.isscalar(data):
        if kind == "list" and isinstance(data, (list, tuple)) and len(data) == len(inputs):
            x = [np.asarray(d) for d in data]
            same_rows("data", dict(zip(inputs, x)))
            return x
        x = np.asarray(data)
        if x.ndim == 0:  # Keras would fail deep inside predict on an array without a row axis
            raise ValueError(expected("data", "rows of features (an array whose first axis is the rows)",
                                      got=f"a single value {data!r}"))
        return x
    raise TypeError(expected("data", "a NumPy array, a dict of arrays, a pandas DataFrame or a tf.data.Dataset",
                             got=type(data).__name__))


def _named(x: Any, names: list) -> dict:
    """The model input ``x`` as ``{input name (None for the one input): array}``."""
    if isinstance(x, dict):
        return {str(k): v for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        names = names if len(names) == len(x) else [f"input_{i}" for i in range(len(x))]
        return dict(zip(names, x))
    return {None: x}


def nan_rows(x: Any, names: list | None = None) -> dict:
    """``{input name (None for the one input): indices of the rows holding NaN}``, inputs without NaN left out."""
    found = {}
    for name, value in _named(x, list(names or [])).items():
        array = np.asarray(value)
        if array.dtype.kind not in "fc" or array.ndim == 0 or not array.size:
            continue
        rows = np.flatnonzero(np.isnan(array.reshape(len(array), -1)).any(axis=1))
        if len(rows):
            found[name] = rows
    return found


def _some(rows: Any, most: int = 10) -> str:
    rows = [int(r) for r in rows]
    return "[" + ", ".join(map(str, rows[:most])) + (", ...]" if len(rows) > most else "]")


def check_no_nan(name: str, x: Any, names: list | None = None) -> None:
    """Refuse NaN in the model input ``x``, naming the inputs and rows that hold it.

    Raises
    ------
    ValueError
        ``"data: expected features without NaN, but data['a'] has NaN in 2 rows [3, 7]; pass allow_nan=True ..."``.
    """
    bad = nan_rows(x, names)
    if bad:
        parts = [f"{name if n is None else f'{name}[{n!r}]'} has NaN in {len(rows)} row{'' if len(rows) == 1 else 's'} "
                 f"{_some(rows)}" for n, rows in bad.items()]
        raise ValueError(f"{name}: expected features without NaN, but " + "; ".join(parts)
                         + "; pass allow_nan=True (--allow-nan on the command line) to predict them anyway")


def _zeros_like_spec(shape: Any, dtype: Any) -> np.ndarray:
    return np.zeros(tuple(0 if d is None else int(d) for d in shape), dtype=str(dtype))


def empty_outputs(model, x: Any) -> Any:
    """The model's outputs for zero rows of ``x`` (arrays with a first axis of 0), without running a batch.

    Keras's ``predict`` fails on zero rows (``UnboundLocalError``); the
    output shapes and dtypes come from ``model.compute_output_spec`` (or, for a
    model that cannot say, from calling it on the empty arrays).
    """
    import keras

    def spec(array):
        dtype = np.asarray(array).dtype
        return keras.KerasTensor((0, *np.shape(array)[1:]), dtype=dtype.name if dtype.kind in "biuf" else "float32")

    try:
        out = model.compute_output_spec(keras.tree.map_structure(spec, x))
        return keras.tree.map_structure(lambda s: _zeros_like_spec(s.shape, s.dtype), out)
    except Exception:  # noqa: BLE001 - a model without a symbolic pass: call it on the empty batch
        x = keras.tree.map_structure(lambda a: np.asarray(a, dtype=spec(a).dtype), x)
        return keras.tree.map_structure(lambda t: np.asarray(t), model(x, training=False))


#: What the NaN check in a tf.data pipeline writes in its assertion, and how it is found again.
_NAN_MARK = "glimr_cv: NaN in batch"
_NAN_FOUND = re.compile(re.escape(f"[{_NAN_MARK}] [") + r"(\d+)\] \[in input\] \[([^\]]*)\]")


def _flat_named(element: Any) -> list:
    if isinstance(element, dict):
        return [(str(k), element[k]) for k in sorted(element)]
    if isinstance(element, (list, tuple)):
        return [(f"input {i}", t) for i, t in enumerate(element)]
    return [("data", element)]


def _nan_checked(dataset: Any) -> Any:
    """``dataset`` with every batch checked for NaN: the first holding some stops ``predict``."""
    import tensorflow as tf

    @tf.autograph.experimental.do_not_convert
    def check(i, element):
        asserts = [tf.debugging.Assert(tf.logical_not(tf.reduce_any(tf.math.is_nan(t))), [_NAN_MARK, i, "in input", n])
                   for n, t in _flat_named(element) if t.dtype.is_floating]
        with tf.control_dependencies(asserts):
            return tf.nest.map_structure(tf.identity, element)

    return dataset.enumerate().map(check)


def _predict_dataset(model, dataset: Any, allow_nan: bool) -> Any:
    import tensorflow as tf

    def nothing():
        zeros = tf.nest.map_structure(lambda s: _zeros_like_spec((0, *s.shape[1:]), s.dtype.name),
                                      dataset.element_spec)
        return empty_outputs(model, zeros)

    if int(dataset.cardinality()) == 0:
        return nothing()
    try:
        return model.predict(dataset if allow_nan else _nan_checked(dataset), verbose=0)
    except tf.errors.InvalidArgumentError as err:
        found = _NAN_FOUND.search(str(err))
        if found is None:
            raise
        where = "" if found.group(2) == "data" else f" in input {found.group(2)!r}"
        raise ValueError(f"data: expected features without NaN, but batch {found.group(1)} (from 0) of the "
                         f"tf.data.Dataset has NaN{where}; pass allow_nan=True (--allow-nan on the command line) "
                         "to predict them anyway") from None
    except UnboundLocalError:  # Keras predicting a dataset that yields no batch (its size unknown beforehand)
        if next(iter(dataset.take(1)), None) is not None:
            raise
        return nothing()


def predict(model_or_path: Any, data: Any, batch_size: int | None = None, allow_nan: bool = False) -> Any:
    """Predictions of a Keras model (or a ``.keras`` file) for ``data``, as NumPy.

    Parameters
    ----------
    model_or_path : keras.Model or str
        A model, or the path of a ``.keras`` file (loaded without compiling).
    data : numpy.ndarray, dict of arrays, pandas.DataFrame or tf.data.Dataset
        Rows of features. A DataFrame gives its values, or for a model with
        named (dict) inputs the column of each input's name; a dataset must be
        batched, and ``(features, labels)`` elements give their features.
        Zero rows give zero rows of predictions. For a bag model (inputs
        ``instances`` and ``mask``, as the MIL loaders feed them): a list of
        ``(n_i, ...)`` bags, padded and masked here, or a manifest of slide
        feature files (a DataFrame with a ``path`` column; see
        :func:`glimr_cv.mil.predict_slides`, which also runs on Ray Data).
    batch_size : int, optional
        Rows per batch for arrays and DataFrames (default 256); bags per batch
        for bags (default 8); slides per batch for slide files (default 1: a
        batch is padded to its largest slide, and read whole).
    allow_nan : bool
        Predict features holding NaN. By default they are refused, naming the
        inputs and rows that hold NaN: a model rarely means anything on them.

    Returns
    -------
    numpy.ndarray or dict of str to numpy.ndarray
        An array for a model with one output (also a one-entry dict output); a
        dict by output name for several outputs.

    Raises
    ------
    FileNotFoundError, ValueError
        On a missing or unreadable model file; on missing inputs, inputs with
        different numbers of rows, rows whose shape the model does not take, or
        NaN (without ``allow_nan``).
    """
    check_int("batch_size", batch_size, 1, allow_none=True)
    check_bool("allow_nan", allow_nan)
    model = load_keras_model(model_or_path)
    bags = _bag_input(model, data)
    if bags is not None:  # a bag model (multiple-instance learning): bags or slide files, padded and masked here
        from ..mil.predict import predict_bags, predict_slides

        if bags == "slides":
            return predict_slides(model, data, batch_size=batch_size or 1)
        if not allow_nan:
            check_no_nan("data", {"instances": np.concatenate([np.asarray(b).reshape(len(b), -1) for b in data])},
                         ["instances"])
        return predict_bags(model, data, batch_size=batch_size or 8)
    batch_size = batch_size or 256
    x = to_model_input(model, data)
    import tensorflow as tf

    if isinstance(x, tf.data.Dataset):
        return to_numpy_outputs(model, _predict_dataset(model, x, allow_nan))
    x = conform_rows("data", model, x)
    if not allow_nan:
        check_no_nan("data", x, list(model_inputs(model)[1]))
    named = _named(x, [])
    if any(_rows_of(v) == 0 for v in named.values()):
        return to_numpy_outputs(model, empty_outputs(model, x))
    return to_numpy_outputs(model, model.predict(x, batch_size=batch_size, verbose=0))


def _bag_input(model, data: Any) -> str | None:
    """``"bags"`` or ``"slides"`` when a bag model (inputs ``instances`` and ``mask``) is given bags or a manifest."""
    if not is_bag_model(*model_inputs(model)):
        return None
    import pandas as pd

    if isinstance(data, pd.DataFrame) and "path" in data.columns:
        return "slides"
    if isinstance(data, (list, tuple)) and data and all(np.ndim(b) >= 2 for b in data):
        return "bags"
    return None


class BatchPredictor:
    """The callable class :func:`predict_ray` maps over a ``ray.data.Dataset``'s batches.

    Ray Data constructs it once per worker (actor): ``__init__`` loads the model
    once, and every batch, a dict of NumPy columns, is then predicted with it.
    Subclass it and pass ``predictor=`` to change how a batch becomes the
    model's input (:meth:`features`) or its output columns (:meth:`columns`).

    Parameters
    ----------
    model_path : str
        A ``.keras`` file readable by the workers.
    feature_columns : str or list of str, optional
        A str: that column is the input (a tensor column). A list: those scalar
        columns, stacked side by side as one input. Default: a model with named
        inputs takes the columns of those names; otherwise the only column, or
        every column (except ``keep_columns``), stacked in order.
    keep_columns : list of str, optional
        Columns copied to the output next to the predictions (say, ids).
    prefix : str
        Name of the prediction column (one output), or prefix of
        ``{prefix}_{output}`` (several outputs).
    allow_nan : bool
        Predict rows holding NaN; by default a batch holding some is refused,
        naming the rows (by their ``keep_columns`` values, when there are some).
    """

    def __init__(self, model_path: str, feature_columns: Any = None, keep_columns: Any = None,
                 prefix: str = "prediction", allow_nan: bool = False):
        self.model = load_keras_model(model_path)
        self.kind, self.inputs = model_inputs(self.model)
        self.feature_columns = feature_columns
        self.keep_columns = [keep_columns] if isinstance(keep_columns, str) else list(keep_columns or [])
        self.prefix = prefix
        self.allow_nan = allow_nan

    @staticmethod
    def _require(batch: dict, columns: list, what: str) -> None:
        missing = [c for c in columns if c not in batch]
        if missing:
            raise ValueError(f"predict_ray: {what}: expected columns of the dataset {list(batch)}, but {missing} "
                             f"{'is' if len(missing) == 1 else 'are'} not among them")

    def features(self, batch: dict) -> Any:
        """The model input of a batch (a dict of NumPy columns)."""
        cols = self.feature_columns
        if isinstance(cols, str):
            self._require(batch, [cols], "feature_columns")
            return batch[cols]
        if cols is None and self.kind == "dict":
            self._require(batch, list(self.inputs), f"the model's named inputs {list(self.inputs)}")
            return {n: batch[n] for n in self.inputs}
        if cols is None:
            cols = [c for c in batch if c not in self.keep_columns]
            if len(cols) == 1:
                return batch[cols[0]]
        self._require(batch, list(cols), "feature_columns")
        return np.stack([np.asarray(batch[c]) for c in cols], axis=1)

    def columns(self, batch: dict, outputs: Any) -> dict:
        """The output batch: the kept columns and the predictions."""
        self._require(batch, self.keep_columns, "keep_columns")
        out = {c: batch[c] for c in self.keep_columns}
        if isinstance(outputs, dict):
            out.update({f"{self.prefix}_{k}": v for k, v in outputs.items()})
        else:
            out[self.prefix] = outputs
        return out

    def check(self, batch: dict, x: Any) -> None:
        """Refuse a batch holding NaN (unless ``allow_nan``), naming its rows by the kept columns."""
        if self.allow_nan:
            return
        bad = nan_rows(x, list(self.inputs))
        if not bad:
            return
        parts = []
        for name, rows in bad.items():
            where = "the features" if name is None else f"input {name!r}"
            ids = "; ".join(f"{c}={_some(np.asarray(batch[c])[rows].tolist())}" for c in self.keep_columns[:2])
            parts.append(f"{where} hold NaN in {len(rows)} row{'' if len(rows) == 1 else 's'}"
                         + (f" ({ids})" if ids else f" of a batch of {len(next(iter(batch.values())))}"))
        raise ValueError("predict_ray: expected features without NaN, but " + "; ".join(parts)
                         + "; pass allow_nan=True to predict them anyway")

    def __call__(self, batch: dict) -> dict:
        x = self.features(batch)
        x = conform_rows("predict_ray: features", self.model, x)
        self.check(batch, x)
        rows = len(next(iter(x.values()))) if isinstance(x, dict) else len(x)
        if rows == 0:
            outputs = to_numpy_outputs(self.model, empty_outputs(self.model, x))
        else:
            outputs = to_numpy_outputs(self.model, self.model.predict(x, batch_size=rows, verbose=0))
        return self.columns(batch, outputs)


def _named_inputs(config: dict | None) -> list | None:
    """The input names of a functional model with named (dict) inputs, from its ``.keras`` config; else None."""
    inputs = (config or {}).get("config", {}).get("input_layers") if isinstance(config, dict) else None
    return [str(k) for k in inputs] if isinstance(inputs, dict) else None


def _dataset_columns(dataset: Any) -> list | None:
    """The dataset's column names when Ray knows them without reading data (None otherwise)."""
    try:
        schema = dataset.schema(fetch_if_missing=False)
    except Exception:  # noqa: BLE001 - an older or odd Dataset: the workers check instead
        return None
    names = getattr(schema, "names", None)
    return list(names) if names else None


def _check_columns(columns: list, feature_columns: Any, keep_columns: list, named: list | None) -> None:
    """Refuse, before any data is read, columns the dataset does not have."""
    wanted = [("feature_columns", [feature_columns] if isinstance(feature_columns, str) else list(feature_columns or [])),
              ("keep_columns", keep_columns)]
    if feature_columns is None and named:
        wanted.append((f"the model's named inputs {named} (or feature_columns)", named))
    for what, cols in wanted:
        missing = [c for c in cols if c not in columns]
        if missing:
            got = repr(missing[0]) + " is" if len(missing) == 1 else f"{missing} are"
            raise ValueError(f"{what}: expected columns of the dataset {columns}, but {got} not among them")


def predict_ray(model_path: str | os.PathLike, dataset: Any, batch_size: int = 256, feature_columns: Any = None,
                keep_columns: Any = None, concurrency: int = 1, num_cpus: float = 1, prefix: str = "prediction",
                predictor: type | None = None, allow_nan: bool = False) -> Any:
    """Predictions over a ``ray.data.Dataset``, the model loaded once per worker.

    ``dataset.map_batches`` runs :class:`BatchPredictor` (or ``predictor``) on a
    fixed pool of ``concurrency`` actors; each loads the ``.keras`` file once in
    its ``__init__`` and predicts batches of ``batch_size`` rows.

    What can be checked before any data is read is checked here, so the
    mistake is reported in this call rather than inside a Ray task error when
    the dataset is consumed: the model file (a readable ``.keras`` archive)
    and, when Ray knows the dataset's columns without reading it (a dataset
    read from files or made from items, not yet mapped), the columns named by
    ``feature_columns``, ``keep_columns`` or the model's named inputs.

    Parameters
    ----------
    model_path : str
        A ``.keras`` file on a path every worker can read.
    dataset : ray.data.Dataset
        Rows of features (see :class:`BatchPredictor` for which columns).
    batch_size : int
        Rows per batch.
    feature_columns, keep_columns, prefix
        See :class:`BatchPredictor`.
    concurrency : int
        Actors (each holds one copy of the model).
    num_cpus : float
        CPUs each actor reserves.
    predictor : type, optional
        A subclass of :class:`BatchPredictor`.
    allow_nan : bool
        Predict rows holding NaN; by default a batch holding some fails the
        dataset, naming the rows.

    Returns
    -------
    ray.data.Dataset
        Lazy, like every Ray Data transform: ``prediction`` (or one
        ``prediction_{output}`` column per output) and the ``keep_columns``.

    Raises
    ------
    FileNotFoundError, ValueError, TypeError
        On a missing or unreadable model file, columns the dataset does not
        have, or bad arguments.

    Notes
    -----
    When consuming the dataset fails (NaN refused, say), Ray Data (2.60) lets
    its actors, and the CPUs they reserved, go only once nothing holds the
    exception (ray-project/ray#24948). A script's ``except`` block lets it go;
    a notebook keeps it, even after ``del sys.last_value``. A rerun that needs
    those CPUs then waits without a word: leave it free CPUs (fewer
    ``concurrency`` x ``num_cpus``) or restart the kernel.
    :func:`glimr_cv.mil.predict_slides` is spared: a slide's failure comes back
    as a row.
    """
    import ray.data

    check_type("dataset", dataset, ray.data.Dataset, "a ray.data.Dataset")
    check_type("model_path", model_path, (str, os.PathLike),
               "the path of a .keras file (save a model first: model.save('model.keras'))")
    path = os.path.abspath(os.fspath(model_path))
    config = check_keras_file(path, "model_path")
    check_int("batch_size", batch_size, 1)
    check_int("concurrency", concurrency, 1)
    check_bool("allow_nan", allow_nan)
    if not (feature_columns is None or isinstance(feature_columns, str) or
            (isinstance(feature_columns, (list, tuple)) and all(isinstance(c, str) for c in feature_columns))):
        raise TypeError(expected("feature_columns", "a column name, a list of column names or None", feature_columns))
    keep = [keep_columns] if isinstance(keep_columns, str) else keep_columns
    if not (keep is None or (isinstance(keep, (list, tuple)) and all(isinstance(c, str) for c in keep))):
        raise TypeError(expected("keep_columns", "a list of column names or None", keep_columns))
    predictor = BatchPredictor if predictor is None else predictor
    if not (isinstance(predictor, type) and issubclass(predictor, BatchPredictor)):
        raise TypeError(expected("predictor", "a subclass of glimr_cv.deploy.BatchPredictor", predictor))
    columns = _dataset_columns(dataset)
    if columns is not None:
        _check_columns(columns, feature_columns, list(keep or []), _named_inputs(config))
    return dataset.map_batches(
        predictor,
        fn_constructor_kwargs={"model_path": path, "feature_columns": feature_columns,
                               "keep_columns": keep, "prefix": prefix, "allow_nan": allow_nan},
        batch_size=batch_size,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=concurrency),
        num_cpus=num_cpus,
    )
