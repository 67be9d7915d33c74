"""A Keras model's file, inputs and outputs, read one way for the ensemble, prediction, serving, MIL and nested CV."""

from __future__ import annotations

import importlib
import json
import os
import zipfile
from typing import Any

import numpy as np

from .checks import expected

__all__ = ["check_keras_file", "load_keras_model", "input_structure", "model_inputs", "model_output_names", "named_outputs",
           "to_numpy_outputs", "shape_text", "shape_fits", "conform_rows", "is_bag_model", "import_own_modules"]


def input_structure(model) -> Any:
    """The model's symbolic inputs as it takes them: one tensor, a list, or a dict by name; None if unknown.

    A functional model gives its own structure (a dict for named inputs); a
    Sequential model built with an ``Input`` its inputs; a subclassed model,
    whose inputs exist only once called, None.
    """
    try:
        return model.input
    except (AttributeError, ValueError):
        pass
    inputs = getattr(model, "inputs", None)
    if not inputs:
        return None
    return inputs[0] if len(inputs) == 1 else list(inputs)


def model_inputs(model) -> tuple[str, dict]:
    """``(kind, {name: (shape without the batch axis, dtype)})`` of the model's inputs.

    ``kind`` is ``"dict"`` (named inputs, a dict by name), ``"list"`` (several
    positional inputs), ``"single"`` or ``"unknown"`` (a subclassed model).
    """
    structure = input_structure(model)
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


def shape_text(shape: tuple) -> str:
    """``(any, 4)`` for ``(None, 4)``, ``(4,)`` for ``(4,)``: a shape as messages show it."""
    dims = ["any" if d is None else str(d) for d in shape]
    return "(" + ", ".join(dims) + ("," if len(dims) == 1 else "") + ")"


def shape_fits(got: tuple, shape: tuple) -> bool:
    """Whether ``got`` is ``shape`` exactly, an unknown dimension (None) taking any size."""
    return len(got) == len(shape) and all(s is None or s == g for g, s in zip(got, shape))


def is_bag_model(kind: str, inputs: dict) -> bool:
    """Whether :func:`model_inputs` describe a bag model: inputs ``instances`` and ``mask``, as the MIL loaders feed."""
    return kind == "dict" and set(inputs) == {"instances", "mask"} and len(inputs["instances"][0]) >= 1


def _fits(row: tuple, shape: tuple) -> bool:
    """Whether rows of shape ``row`` fit an input of shape ``shape`` (both without the batch axis), by Keras's rule.

    A functional model adds or drops one trailing axis of size 1 to reach its
    input's rank (``Functional._adjust_input_rank``), and an unknown dimension
    (None) takes any size.
    """
    row, shape = tuple(row), tuple(shape)
    if len(row) == len(shape) + 1 and row[-1] == 1:
        row = row[:-1]
    elif len(row) + 1 == len(shape) and shape[-1] == 1:
        shape = shape[:-1]
    return shape_fits(row, shape)


def conform_rows(name: str, model, x: Any) -> Any:
    """Model input ``x`` (NumPy: an array, a list of arrays, or a dict by input name) in the rank the model takes.

    Rows that fit by Keras's rule (:func:`_fits`) get the input's own rank here
    (a trailing axis of size 1 added or dropped): a Keras model that predicted one
    rank and is then given the other fails to retrace ("as_list() is not defined
    on an unknown TensorShape", Keras 3.15). Rows that do not fit are refused,
    naming the input, where Keras would fail from inside ``predict``. A model
    whose input shapes are unknown (subclassed) takes ``x`` as it is.

    Raises
    ------
    ValueError
        ``"data: expected rows of shape (4,) ..., but got 1 row of shape ()"``.
    """
    kind, inputs = model_inputs(model)
    names = list(inputs)
    if kind == "dict" and isinstance(x, dict):
        given = [(n, f"{name}[{n!r}]", n) for n in names if n in x]  # (key in x, where, input name)
    elif kind == "list" and isinstance(x, (list, tuple)) and len(x) == len(names):
        given = [(i, f"{name}[{i}]", n) for i, n in enumerate(names)]
    elif kind == "single" and not isinstance(x, (dict, list, tuple)):
        given = [(0, name, names[0])]
    else:
        return x  # unknown shapes, or a structure Keras maps itself (a dict for positional inputs, say)
    out = dict(x) if kind == "dict" else list(x) if kind == "list" else [x]
    for key, where, input_name in given:
        value = np.asarray(out[key])
        shape, got = inputs[input_name][0], value.shape[1:]
        if not value.ndim:
            continue  # no row axis: the caller's message
        if not _fits(got, shape):
            rows = f"{value.shape[0]} row{'' if value.shape[0] == 1 else 's'}"
            raise ValueError(expected(where, f"rows of shape {shape_text(shape)}, as the model's input {input_name!r} "
                                             f"takes them (a trailing axis of size 1 may be added or left out)",
                                      got=f"{rows} of shape {shape_text(got)}"))
        if len(got) == len(shape) + 1:
            value = value[..., 0]
        elif len(got) + 1 == len(shape):
            value = value[..., None]
        out[key] = value
    return out if kind != "single" else out[0]


def model_output_names(model) -> list[str]:
    """The names of the model's outputs: a dict output's keys, else Keras's output names."""
    try:
        output = model.output
    except (AttributeError, ValueError):
        output = None
    if isinstance(output, dict):
        return [str(k) for k in output]
    return list(getattr(model, "output_names", None) or [])


def named_outputs(outputs: Any, model) -> dict:
    """Outputs of ``model`` (tensors or arrays) by name: the dict's keys, or the model's output names."""
    if isinstance(outputs, dict):
        return dict(outputs)
    names = model_output_names(model)
    if isinstance(outputs, (list, tuple)):
        names = names if len(names) == len(outputs) else [f"output_{i}" for i in range(len(outputs))]
        return dict(zip(names, outputs))
    return {names[0] if len(names) == 1 else "output": outputs}


def to_numpy_outputs(model, outputs: Any) -> Any:
    """Predictions as NumPy: one output, an array; several, a dict of arrays by output name."""
    named = {str(k): np.asarray(v) for k, v in named_outputs(outputs, model).items()}
    return next(iter(named.values())) if len(named) == 1 else named


def check_keras_file(path: str | os.PathLike, name: str = "model") -> dict | None:
    """Check, without Keras, that ``path`` is a ``.keras`` file a model can be loaded from; its config.

    A ``.keras`` file is a zip archive holding ``config.json`` (the model's
    architecture) and the weights; this reads the archive's directory and the
    config only, so it is cheap. Other suffixes (a legacy ``.h5``) are not
    checked here and give None.

    Raises
    ------
    FileNotFoundError
        On a missing file: ``"{name}: no such file ..."``.
    ValueError
        On a file that is not a readable ``.keras`` archive:
        ``"{name}: cannot read <path> as a Keras model (<cause>)"``.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        what = "not a file" if os.path.exists(path) else "no such file"
        raise FileNotFoundError(f"{name}: {what} {path!r}; expected a .keras file (model.save(path))")
    if not path.lower().endswith(".keras"):
        return None
    try:
        with zipfile.ZipFile(path) as archive:
            if "config.json" not in archive.namelist():
                raise ValueError("the archive has no config.json")
            config = json.loads(archive.read("config.json"))
    except (zipfile.BadZipFile, ValueError, OSError, RuntimeError, EOFError) as err:  # RuntimeError: encrypted
        cause = ("not a zip archive, which a .keras file is" if isinstance(err, zipfile.BadZipFile)
                 else f"{type(err).__name__}: {err}")
        raise ValueError(f"{name}: cannot read {path} as a Keras model ({cause})") from None
    if not isinstance(config, dict):  # a file's content, not an argument's type: a ValueError
        raise ValueError(f"{name}: cannot read {path} as a Keras model (its config.json holds no model config)")  # noqa: TRY004
    return config


def _own_modules(config: Any) -> set[str]:
    """The ``glimr_cv`` modules whose classes a saved model's config names (``{"module": ..., "class_name": ...}``)."""
    found: set[str] = set()
    stack = [config]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            module = item.get("module")
            if isinstance(module, str) and module.split(".")[0] == "glimr_cv" and "class_name" in item:
                found.add(module)
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return found


def import_own_modules(config: Any) -> None:
    """Import the ``glimr_cv`` modules a saved model's config names, so that Keras finds their classes.

    glimr_cv's layers (MIL pooling) and losses and metrics (survival) register
    with Keras when their module is imported; a fresh process loading a saved
    model has not imported them. Only ``glimr_cv`` modules are imported, so a
    file cannot make this run code of its choosing.
    """
    for module in sorted(_own_modules(config)):
        try:
            importlib.import_module(module)
        except (ImportError, ValueError):  # not a module of this glimr_cv: Keras names the class it cannot find
            pass


def load_keras_model(model_or_path: Any):
    """A ``keras.Model`` as given, or loaded (uncompiled, for inference) from a ``.keras`` file.

    Raises
    ------
    FileNotFoundError
        On a missing file.
    ValueError
        On a file Keras cannot load (corrupt, truncated, not a model, a custom
        layer that is not importable): ``"model: cannot read <path> as a Keras
        model (<cause>)"``. glimr_cv's own layers (MIL pooling, survival
        heads) need no import first: the modules the file names are imported.
    TypeError
        On anything but a model or a path.
    """
    if isinstance(model_or_path, (str, os.PathLike)):
        path = os.fspath(model_or_path)
        import_own_modules(check_keras_file(path))
        import keras

        try:
            return keras.saving.load_model(path, compile=False)
        except Exception as err:  # Keras reports a corrupt archive as "File not found"; say what it is
            message = " ".join(str(err).split())[:500]
            raise ValueError(f"model: cannot read {path} as a Keras model ({type(err).__name__}: {message})") from err
    import keras

    if isinstance(model_or_path, keras.Model):
        return model_or_path
    raise TypeError(expected("model", "a keras.Model or the path of a .keras file", got=type(model_or_path).__name__))
