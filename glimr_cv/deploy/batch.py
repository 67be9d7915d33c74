"""Batch prediction: :func:`predict` in this process, :func:`predict_ray` over a ``ray.data.Dataset``."""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from ..checks import check_int, check_type

__all__ = ["load_keras_model", "model_inputs", "model_output_names", "to_model_input", "predict",
           "BatchPredictor", "predict_ray"]


def load_keras_model(model_or_path: Any):
    """A ``keras.Model`` as given, or loaded (uncompiled, for inference) from a ``.keras`` file."""
    if isinstance(model_or_path, (str, os.PathLike)):
        path = os.fspath(model_or_path)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"model: no such file {path!r}; expected a .keras file (model.save(path))")
        import keras

        return keras.saving.load_model(path, compile=False)
    import keras

    if isinstance(model_or_path, keras.Model):
        return model_or_path
    raise TypeError(f"model: expected a keras.Model or the path of a .keras file, but got {type(model_or_path).__name__}")


def model_inputs(model) -> tuple[str, dict]:
    """``(kind, {name: (shape without the batch axis, dtype)})`` of the model's inputs.

    ``kind`` is ``"dict"`` (named inputs, a dict by name), ``"list"`` (several
    positional inputs), ``"single"`` or ``"unknown"`` (a subclassed model).
    """
    try:
        structure = model.input
    except (AttributeError, ValueError):
        inputs = getattr(model, "inputs", None)
        structure = (inputs[0] if len(inputs) == 1 else list(inputs)) if inputs else None
    if structure is None:
        return "unknown", {}

    def spec(t):
        return tuple(t.shape[1:]), str(t.dtype)

    if isinstance(structure, dict):
        return "dict", {str(k): spec(v) for k, v in structure.items()}
    if isinstance(structure, (list, tuple)):
        if len(structure) == 1:
            return "single", {structure[0].name: spec(structure[0])}
        return "list", {t.name: spec(t) for t in structure}
    return "single", {structure.name: spec(structure)}


def model_output_names(model) -> list[str]:
    try:
        output = model.output
    except (AttributeError, ValueError):
        output = None
    if isinstance(output, dict):
        return [str(k) for k in output]
    return list(getattr(model, "output_names", None) or [])


def _column(frame, name: str, shape: tuple):
    values = frame[name].to_numpy()
    if values.dtype == object:  # a column of arrays or lists
        values = np.stack([np.asarray(v) for v in values])
    if len(shape) == 1 and shape[0] == 1 and values.ndim == 1:
        values = values[:, None]
    return values


def to_model_input(model, data: Any) -> Any:
    """``data`` as the model takes it: NumPy (an array, or a dict by input name) or a ``tf.data.Dataset``.

    A pandas DataFrame gives its values (one input), or one column per named
    input; ``(features, labels)`` dataset elements give their features.

    Raises
    ------
    ValueError
        When named inputs are missing, naming those expected.
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
            return {n: np.asarray(data[n]) for n in inputs}
        if kind in ("single", "list") and len(data) == len(inputs) and set(data) == set(inputs):
            values = [np.asarray(data[n]) for n in inputs]
            return values[0] if kind == "single" else values
        if kind == "single":
            raise ValueError(f"data: the model has one input {list(inputs)}, so pass an array, not a dict keyed "
                             f"{list(data)}")
        return {k: np.asarray(v) for k, v in data.items()}
    if isinstance(data, (np.ndarray, list, tuple)) or np.isscalar(data):
        if kind == "list" and isinstance(data, (list, tuple)) and len(data) == len(inputs):
            return [np.asarray(d) for d in data]
        return np.asarray(data)
    raise TypeError(f"data: expected a NumPy array, a dict of arrays, a pandas DataFrame or a tf.data.Dataset, "
                    f"but got {type(data).__name__}")


def to_numpy_outputs(model, outputs: Any) -> Any:
    """One output: an array; several: a dict of arrays by output name."""
    if isinstance(outputs, dict):
        outputs = {str(k): np.asarray(v) for k, v in outputs.items()}
        return next(iter(outputs.values())) if len(outputs) == 1 else outputs
    if isinstance(outputs, (list, tuple)):
        if len(outputs) == 1:
            return np.asarray(outputs[0])
        names = model_output_names(model)
        names = names if len(names) == len(outputs) else [f"output_{i}" for i in range(len(outputs))]
        return {n: np.asarray(o) for n, o in zip(names, outputs)}
    return np.asarray(outputs)


def predict(model_or_path: Any, data: Any, batch_size: int = 256) -> Any:
    """Predictions of a Keras model (or a ``.keras`` file) for ``data``, as NumPy.

    Parameters
    ----------
    model_or_path : keras.Model or str
        A model, or the path of a ``.keras`` file (loaded without compiling).
    data : numpy.ndarray, dict of arrays, pandas.DataFrame or tf.data.Dataset
        Rows of features. A DataFrame gives its values, or for a model with
        named (dict) inputs the column of each input's name; a dataset must be
        batched, and ``(features, labels)`` elements give their features.
    batch_size : int
        Rows per batch for arrays and DataFrames.

    Returns
    -------
    numpy.ndarray or dict of str to numpy.ndarray
        An array for a model with one output (also a one-entry dict output); a
        dict by output name for several outputs.
    """
    check_int("batch_size", batch_size, 1)
    model = load_keras_model(model_or_path)
    x = to_model_input(model, data)
    import tensorflow as tf

    if isinstance(x, tf.data.Dataset):
        outputs = model.predict(x, verbose=0)
    else:
        outputs = model.predict(x, batch_size=batch_size, verbose=0)
    return to_numpy_outputs(model, outputs)


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
    """

    def __init__(self, model_path: str, feature_columns: Any = None, keep_columns: Any = None,
                 prefix: str = "prediction"):
        self.model = load_keras_model(model_path)
        self.kind, self.inputs = model_inputs(self.model)
        self.feature_columns = feature_columns
        self.keep_columns = list(keep_columns or [])
        self.prefix = prefix

    def features(self, batch: dict) -> Any:
        """The model input of a batch (a dict of NumPy columns)."""
        cols = self.feature_columns
        if isinstance(cols, str):
            return batch[cols]
        if cols is None and self.kind == "dict":
            missing = [n for n in self.inputs if n not in batch]
            if missing:
                raise ValueError(f"predict_ray: the model takes inputs named {list(self.inputs)}, but the dataset "
                                 f"has no column {missing} (columns: {list(batch)})")
            return {n: batch[n] for n in self.inputs}
        if cols is None:
            cols = [c for c in batch if c not in self.keep_columns]
            if len(cols) == 1:
                return batch[cols[0]]
        return np.stack([np.asarray(batch[c]) for c in cols], axis=1)

    def columns(self, batch: dict, outputs: Any) -> dict:
        """The output batch: the kept columns and the predictions."""
        out = {c: batch[c] for c in self.keep_columns}
        if isinstance(outputs, dict):
            out.update({f"{self.prefix}_{k}": v for k, v in outputs.items()})
        else:
            out[self.prefix] = outputs
        return out

    def __call__(self, batch: dict) -> dict:
        x = self.features(batch)
        rows = len(next(iter(x.values()))) if isinstance(x, dict) else len(x)
        outputs = to_numpy_outputs(self.model, self.model.predict(x, batch_size=max(rows, 1), verbose=0))
        return self.columns(batch, outputs)


def predict_ray(model_path: str | os.PathLike, dataset: Any, batch_size: int = 256, feature_columns: Any = None,
                keep_columns: Any = None, concurrency: int = 1, num_cpus: float = 1, prefix: str = "prediction",
                predictor: type | None = None) -> Any:
    """Predictions over a ``ray.data.Dataset``, the model loaded once per worker.

    ``dataset.map_batches`` runs :class:`BatchPredictor` (or ``predictor``) on a
    fixed pool of ``concurrency`` actors; each loads the ``.keras`` file once in
    its ``__init__`` and predicts batches of ``batch_size`` rows.

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

    Returns
    -------
    ray.data.Dataset
        Lazy, like every Ray Data transform: ``prediction`` (or one
        ``prediction_{output}`` column per output) and the ``keep_columns``.
    """
    import ray.data

    check_type("dataset", dataset, ray.data.Dataset, "a ray.data.Dataset")
    check_type("model_path", model_path, (str, os.PathLike),
               "the path of a .keras file (save a model first: model.save('model.keras'))")
    path = os.path.abspath(os.fspath(model_path))
    if not os.path.isfile(path):
        raise FileNotFoundError(f"model_path: no such file {path!r}; expected a .keras file")
    check_int("batch_size", batch_size, 1)
    check_int("concurrency", concurrency, 1)
    predictor = BatchPredictor if predictor is None else predictor
    if not (isinstance(predictor, type) and issubclass(predictor, BatchPredictor)):
        raise TypeError(f"predictor: expected a subclass of glimr_cv.deploy.BatchPredictor, but got {predictor!r}")
    return dataset.map_batches(
        predictor,
        fn_constructor_kwargs={"model_path": path, "feature_columns": feature_columns,
                               "keep_columns": keep_columns, "prefix": prefix},
        batch_size=batch_size,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=concurrency),
        num_cpus=num_cpus,
    )
