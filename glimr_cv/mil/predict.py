"""Prediction on new bags and slides: padding, masking and batching done here, Ray Data for many slides."""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from ..checks import check_choice, check_int, check_number, check_type, expected, listed

__all__ = ["bag_batches", "bag_dataset", "predict_bags", "predict_slides", "SlidePredictor"]


def _bag_arrays(bags: Any) -> list[np.ndarray]:
    if isinstance(bags, np.ndarray) and bags.dtype != object and bags.ndim == 2:
        bags = [bags]  # one bag
    if not isinstance(bags, (list, tuple, np.ndarray)) or not len(bags):
        raise TypeError(expected("bags", "a non-empty list of (n_i, d) arrays of instances, one per bag", bags))
    arrays = []
    for i, bag in enumerate(bags):
        array = np.asarray(bag, dtype=np.float32)
        if array.ndim < 2 or not len(array):
            raise ValueError(expected(f"bags[{i}]", "an (n_i, ...) array of at least one instance",
                                      got=f"shape {array.shape}"))
        if arrays and array.shape[1:] != arrays[0].shape[1:]:
            raise ValueError(expected(f"bags[{i}]", f"instances of shape {arrays[0].shape[1:]} like bags[0]",
                                      array.shape[1:]))
        arrays.append(array)
    return arrays


def _padded(arrays: list[np.ndarray]) -> dict:
    """One batch of bags, zero-padded to its largest bag, with the mask of the real instances."""
    longest = max(len(a) for a in arrays)
    instances = np.zeros((len(arrays), longest, *arrays[0].shape[1:]), dtype=np.float32)
    mask = np.zeros((len(arrays), longest), dtype=bool)
    for i, array in enumerate(arrays):
        instances[i, : len(array)] = array
        mask[i, : len(array)] = True
    return {"instances": instances, "mask": mask}


def bag_batches(bags: Any, batch_size: int = 8) -> list[dict]:
    """Bags as a model takes them: batches of ``{"instances": (B, n, ...), "mask": (B, n)}``, padded per batch.

    Raises
    ------
    TypeError, ValueError
        Naming ``bags[i]`` for a bag that is empty or of another instance shape.
    """
    check_int("batch_size", batch_size, 1)
    arrays = _bag_arrays(bags)
    return [_padded(arrays[i : i + batch_size]) for i in range(0, len(arrays), batch_size)]


def bag_dataset(bags: Any, batch_size: int = 8):
    """:func:`bag_batches` as a ``tf.data.Dataset`` (the batches differ in length, so each is one element)."""
    import tensorflow as tf

    batches = bag_batches(bags, batch_size)
    shape = batches[0]["instances"].shape[2:]

    def batch(i):
        return batches[int(i)]["instances"], batches[int(i)]["mask"]

    def element(i):
        x, m = tf.numpy_function(batch, [i], [tf.float32, tf.bool], stateful=False)
        return {"instances": tf.ensure_shape(x, [None, None, *shape]), "mask": tf.ensure_shape(m, [None, None])}

    return tf.data.Dataset.range(len(batches)).map(element)


def _outputs(model, batches: list) -> Any:
    """Predictions of ``batches`` concatenated: an array, or a dict by output name."""
    from ..keras_io import to_numpy_outputs

    # called eagerly: batches of bags differ in length, and a traced step would trace again for each
    parts = [to_numpy_outputs(model, model(b, training=False)) for b in batches]
    if isinstance(parts[0], dict):
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    return np.concatenate(parts)


def predict_bags(model_or_path: Any, bags: Any, batch_size: int = 8, preprocess: Any = None) -> Any:
    """Predictions of a bag model (or a ``.keras`` file) for ``bags``, one row per bag, in order.

    Parameters
    ----------
    model_or_path : keras.Model or str
        A model taking ``{"instances", "mask"}`` (as the bag loaders feed it).
    bags : list of numpy.ndarray
        One ``(n_i, ...)`` array of instances per bag, or one bag.
    batch_size : int
        Bags per batch (each batch is padded to its largest bag).
    preprocess : fitted transformer, optional
        Applied to every bag's instances first (a fold's ``fitted_preprocess``).

    Returns
    -------
    numpy.ndarray or dict of str to numpy.ndarray
        As :func:`glimr_cv.predict`: an array for one output, a dict by name for several.
    """
    from ..keras_io import load_keras_model

    model = load_keras_model(model_or_path)  # imports the pooling layers a saved bag model names
    arrays = _bag_arrays(bags)
    if preprocess is not None:
        arrays = [np.asarray(preprocess.transform(a.reshape(len(a), -1)), dtype=np.float32) for a in arrays]
    _check_instances(model, arrays[0].shape[1:], "after preprocess" if preprocess is not None else "")
    return _outputs(model, bag_batches(arrays, batch_size))


def _check_instances(model, got: tuple, when: str) -> None:
    """Refuse instances of another shape than the model's ``instances`` input takes (Keras's error names no slide)."""
    from ..keras_io import is_bag_model, model_inputs, shape_fits, shape_text

    kind, inputs = model_inputs(model)
    if not is_bag_model(kind, inputs):
        return
    want = inputs["instances"][0][1:]  # (bag length, *instance shape): the instance shape
    if not shape_fits(got, want):
        raise ValueError(expected("bags", f"instances of shape {shape_text(want)}, as the model's input 'instances' "
                                          f"takes them", got=f"instances of shape {shape_text(got)}"
                                  + (f" {when}" if when else "")))


def _manifest(manifest: Any, path: str, slide: str | None):
    import pandas as pd

    from .slides import SlideKFoldLoader, manifest_path

    if isinstance(manifest, SlideKFoldLoader):
        frame = manifest.manifest
        return pd.DataFrame({"slide": manifest.slide_ids, "path": frame[manifest.path_column]})
    if isinstance(manifest, (str, os.PathLike)):
        base = os.path.dirname(os.path.abspath(os.fspath(manifest)))
        frame = pd.read_csv(manifest)
        if path in frame.columns:
            frame[path] = [manifest_path(p, base) for p in frame[path]]
    else:
        frame = check_type("manifest", manifest, pd.DataFrame, "a DataFrame of slides, a CSV path or a slide loader")
    if path not in frame.columns:
        raise ValueError(expected("manifest", f"a column {path!r} of feature files", list(frame.columns)))
    ids = frame[slide] if slide is not None and slide in frame.columns else \
        [os.path.splitext(os.path.basename(str(p)))[0] for p in frame[path]]
    return pd.DataFrame({"slide": [str(s) for s in ids], "path": [os.fspath(p) for p in frame[path]],
                         "order": np.arange(len(frame))})


def _rows(out: Any, n: int) -> list:
    """Predictions of ``n`` bags, one entry per bag: an array, or a dict by output name."""
    if isinstance(out, dict):
        return [{k: v[i] for k, v in out.items()} for i in range(n)]
    return list(out)


class SlidePredictor:
    """What :func:`predict_slides` maps over a ``ray.data.Dataset`` of slides: the model loaded once per actor.

    Each batch is a dict of NumPy columns ``slide``, ``path`` and ``order``; each
    file is read whole (``features``), optionally transformed, and the bags are
    predicted ``batch_size`` at a time. A slide that cannot be read or predicted
    does not fail the batch: its row gets NaN predictions and its ``error``
    ("FileNotFoundError: no such feature file ..."), which is "" on the others.
    """

    def __init__(self, model_path: Any, features: str = "features", preprocess: Any = None, batch_size: int = 1):
        from ..keras_io import load_keras_model

        self.model = load_keras_model(model_path)  # a path, or (in this process) a model
        self.features, self.preprocess, self.batch_size = features, preprocess, batch_size

    def _blank(self, like: Any = None) -> Any:
        """NaN predictions of one slide (a failed slide's row), shaped as ``like`` or as the model's outputs."""
        def nan(shape):
            return np.full(shape, np.nan, dtype=np.float32)

        if like is not None:
            return {k: nan(np.shape(v)) for k, v in like.items()} if isinstance(like, dict) else nan(np.shape(like))
        try:
            output = self.model.output
        except (AttributeError, ValueError):  # a subclassed model: no symbolic output
            return nan(())
        if isinstance(output, dict):
            return {k: nan(tuple(d or 1 for d in v.shape[1:])) for k, v in output.items()}
        return nan(tuple(d or 1 for d in output.shape[1:]))

    def _predict(self, bags: list) -> list:
        """One prediction or exception per bag: together, or one by one when together fails (to find the culprit)."""
        try:
            return _rows(predict_bags(self.model, bags, self.batch_size, self.preprocess), len(bags))
        except Exception as err:  # noqa: BLE001 - a slide of another width, say: predict each alone to name it
            if len(bags) == 1:
                return [err]
        found = []
        for bag in bags:
            try:
                found.append(_rows(predict_bags(self.model, [bag], 1, self.preprocess), 1)[0])
            except Exception as err:  # noqa: BLE001 - this slide's own failure, kept for its row
                found.append(err)
        return found

    def __call__(self, batch: dict) -> dict:
        from .slides import check_finite_tiles, read_slide

        results: list = []
        for p in batch["path"]:
            try:
                bag = read_slide(str(p), features=self.features)
                check_finite_tiles(bag)  # a NaN tile would make the slide's prediction NaN, unsaid
                results.append(bag)
            except Exception as err:  # noqa: BLE001 - one unreadable file must not fail the cohort's others
                results.append(err)
        readable = [i for i, r in enumerate(results) if not isinstance(r, Exception)]
        for i, value in zip(readable, self._predict([results[i] for i in readable]) if readable else []):
            results[i] = value
        failed = [isinstance(r, Exception) for r in results]
        if any(failed):
            blank = self._blank(next((r for r, bad in zip(results, failed) if not bad), None))
            predictions = [blank if bad else r for r, bad in zip(results, failed)]
        else:
            predictions = results
        columns = {"slide": batch["slide"], "order": batch["order"]}
        if predictions and isinstance(predictions[0], dict):
            columns.update({f"prediction_{k}": [p[k] for p in predictions] for k in predictions[0]})
        else:
            columns["prediction"] = predictions
        columns["error"] = np.array([_error_text(r) if bad else "" for r, bad in zip(results, failed)], dtype=object)
        return columns


def _error_text(err: Exception) -> str:
    """``"FileNotFoundError: no such feature file ..."``: an error's type and the first line of its message."""
    lines = str(err).strip().splitlines()
    return f"{type(err).__name__}: {lines[0] if lines else ''}"


def _failures(table: Any, frame: Any) -> str:
    """The failed slides of ``table`` in words: id, file and error of the first few."""
    failed = table[table["error"] != ""]
    paths = dict(zip(frame["order"], frame["path"]))
    named = listed(f"{s!r} ({paths[o]}): {e}" for s, o, e in zip(failed["slide"], failed["order"], failed["error"]))
    return f"{len(failed)} of {len(table)} slides could not be predicted: {named}"


def predict_slides(model_path: Any, manifest: Any, path: str = "path", slide: str | None = "slide",
                   features: str = "features", preprocess: Any = None, batch_size: int = 1, ray: bool = False,
                   concurrency: int = 1, num_cpus: float = 1, errors: str = "raise"):
    """Predictions of a bag model for whole-slide feature files, one row per slide.

    Parameters
    ----------
    model_path : str or keras.Model
        A ``.keras`` file (with ``ray=True``, a path every worker can read), or a model.
    manifest : pandas.DataFrame, str or SlideKFoldLoader
        Slides and their feature files (column ``path``), a CSV of them, or a
        slide loader (its slides).
    path, slide : str
        Columns of the file and of the slide id (default: the file's name).
    features : str
        HDF5 dataset of the features.
    preprocess : fitted transformer, optional
        Applied to each slide's tiles first (``loader.fitted_preprocess(i)``).
    batch_size : int
        Slides per batch (padded to the largest); memory grows with it.
    ray : bool
        Read and predict on a Ray cluster with Ray Data (``concurrency`` actors,
        each loading the model once); otherwise in this process.
    concurrency, num_cpus : int, float
        Ray Data actors, and the CPUs each reserves.
    errors : {"raise", "keep"}
        What a slide that cannot be read or predicted (a missing or damaged
        file, features of another width or holding NaN or infinity) does once
        every slide has been tried:
        ``"raise"`` a ``ValueError`` naming each such slide, its file and its
        error; ``"keep"`` its row, with NaN predictions and the error in an
        ``error`` column ("" on the slides predicted).

    Returns
    -------
    pandas.DataFrame
        ``slide`` and ``prediction`` (an array per slide), or ``prediction_<output>`` for several outputs;
        and ``error`` with ``errors="keep"``.

    Raises
    ------
    ValueError
        With ``errors="raise"``, when some slides could not be predicted:
        "predict_slides: 2 of 40 slides could not be predicted: 'p7' (/data/p7.h5):
        FileNotFoundError: no such feature file ...".
    """
    import pandas as pd

    check_int("batch_size", batch_size, 1)
    check_choice("errors", errors, ("raise", "keep"))
    frame = _manifest(manifest, path, slide)
    if not ray:
        predictor = SlidePredictor(model_path, features, preprocess, batch_size)
        # batch_size slides read at a time, as on Ray: a cohort's features need not fit in memory together
        table = pd.concat([pd.DataFrame(predictor({c: frame[c].to_numpy()[i: i + batch_size]
                                                   for c in ("slide", "path", "order")}))
                           for i in range(0, max(len(frame), 1), batch_size)], ignore_index=True)
    else:
        import ray.data

        from ..keras_io import check_keras_file

        check_type("model_path", model_path, (str, os.PathLike), "the path of a .keras file every worker can read")
        check_keras_file(os.path.abspath(os.fspath(model_path)), "model_path")
        check_int("concurrency", concurrency, 1)
        check_number("num_cpus", num_cpus, 0)
        # a slide's failure is a row, not an exception: an exception out of Ray Data would keep its actors, and
        # their CPUs, for as long as it is referenced (a notebook keeps it), and stop at the first bad slide
        predicted = ray.data.from_pandas(frame).map_batches(
            SlidePredictor, batch_size=batch_size, batch_format="numpy",
            fn_constructor_kwargs={"model_path": os.path.abspath(os.fspath(model_path)), "features": features,
                                   "preprocess": preprocess, "batch_size": batch_size},
            compute=ray.data.ActorPoolStrategy(size=concurrency), num_cpus=num_cpus)
        # Ray Data may hand batches back in another order
        table = predicted.to_pandas().sort_values("order", kind="stable").reset_index(drop=True)
    if errors == "raise" and (table["error"] != "").any():
        raise ValueError(f"predict_slides: {_failures(table, frame)}; fix or leave out those files, or pass "
                         f"errors='keep' for the other slides' predictions and an 'error' column")
    return table.drop(columns=["order"] + (["error"] if errors == "raise" else []))
