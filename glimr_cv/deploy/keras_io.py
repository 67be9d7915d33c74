"""A Keras model's inputs and outputs, read one way for the ensemble, prediction, serving and nested CV."""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["input_structure", "model_inputs", "model_output_names", "named_outputs", "to_numpy_outputs"]


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
