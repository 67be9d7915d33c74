"""Where a bag model looks: per-tile attention and contributions, drawn over the slide's tile grid.

:func:`tile_scores` gives, for one slide's tiles, the attention weights of a
trained model's pooling layer and, when the model's head is one dense layer
after the pooling, each tile's exact contribution to the output.
:func:`plot_heatmap` draws any per-tile values at their coordinates with
matplotlib (the ``plots`` extra).
"""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np

from ..checks import expected

__all__ = ["tile_scores", "plot_heatmap", "tile_size", "save_heatmap", "HEATMAP_FILE"]


def _dense_head(model, pooling, output: str | None):
    """The Dense layer that makes ``output`` straight from the pooling layer's bag embedding, or None."""
    import keras

    names = list(model.output) if isinstance(model.output, dict) else list(getattr(model, "output_names", []))
    if output is None:
        if len(names) != 1:
            raise ValueError(expected("output", f"one of the model's outputs {names}", output))
        output = names[0]
    candidates = [layer for layer in model.layers if isinstance(layer, keras.layers.Dense) and layer.name == output]
    if not candidates:
        tensor = model.output[output] if isinstance(model.output, dict) else None
        candidates = [layer for layer in model.layers if isinstance(layer, keras.layers.Dense)
                      and tensor is not None and layer.output is tensor]
    if not candidates:
        return None, output
    head = candidates[0]
    pooled = pooling.output[0] if isinstance(pooling.output, (list, tuple)) else pooling.output
    try:
        takes_pooled = head.input is pooled
    except (AttributeError, ValueError):  # a layer called more than once has no single input
        takes_pooled = False
    return (head if takes_pooled else None), output


def tile_scores(model: Any, features: Any, output: str | None = None, layer: Any = None) -> dict:
    """Per-tile attention (and contributions, where the model allows) for one slide's tiles.

    Parameters
    ----------
    model : keras.Model
        A bag model with an attention (or mean) pooling layer, as
        :func:`glimr_cv.mil.attention_weights` takes it.
    features : numpy.ndarray
        The slide's ``(n_tiles, d)`` features, as the model takes them
        (through the fold's preprocessing, if any).
    output : str, optional
        The output whose contributions are computed (needed with several outputs).
    layer : str or layer, optional
        The pooling layer, when the model has several.

    Returns
    -------
    dict
        ``attention``: float32 ``(n,)``, summing to 1. ``contribution``: float32
        ``(n,)`` or ``(n, k)`` (one column per output unit), or None: when
        ``output`` is a ``Dense`` layer applied to the pooled embedding ``z =
        sum_i a_i h_i``, its pre-activation is ``sum_i a_i (W h_i + b)``, so tile
        ``i`` contributes ``a_i (W h_i + b)`` exactly (the contributions add up
        to the pre-activation output: a logit, or a log hazard); with any other
        head no such split exists and it is None.

    Raises
    ------
    ValueError, TypeError
        For a model without a pooling layer, or features that are not one slide's tiles.
    """
    import keras
    from keras import ops

    from .layers import _pooling_layer, attention_weights

    tiles = np.asarray(features)
    if tiles.ndim != 2 or not len(tiles):
        raise ValueError(expected("features", "one slide's (n_tiles, d) tile features", got=f"shape {tiles.shape}"))
    attention = attention_weights(model, tiles, layer=layer)
    pooling = _pooling_layer(model, layer)
    head, _ = _dense_head(model, pooling, output)
    contribution = None
    if head is not None:
        inputs = {"instances": tiles[None], "mask": np.ones((1, len(tiles)), dtype=bool)}
        if not isinstance(model.input, dict):
            inputs = inputs["instances"]
        embedded = keras.Model(model.input, pooling.input)(inputs, training=False)
        embedded = embedded[0] if isinstance(embedded, (list, tuple)) else embedded
        per_tile = ops.convert_to_numpy(ops.matmul(embedded[0], head.kernel) + head.bias)
        contribution = (attention[:, None] * per_tile).astype(np.float32)
        if contribution.shape[1] == 1:
            contribution = contribution[:, 0]
    return {"attention": attention, "contribution": contribution}


def tile_size(coords: np.ndarray) -> float:
    """The tile pitch of a coordinate grid: the smallest positive step between distinct x (or y) values."""
    steps = []
    for axis in (0, 1):
        values = np.unique(coords[:, axis])
        if len(values) > 1:
            steps.append(np.diff(values).min())
    return float(min(steps)) if steps else 1.0


def _numbers(name: str, values: Any) -> np.ndarray:
    """``values`` as float64, or the template's message naming ``name``."""
    try:
        return np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(expected(name, "numbers", got=f"{type(values).__name__} {str(values)[:60]}")) from None


def plot_heatmap(coords: Any, values: Any, ax: Any = None, tile: float | None = None, cmap: str = "magma",
                 title: str | None = None, colorbar: bool = True, label: str = "attention"):
    """Draw per-tile ``values`` at their ``coords``: the heatmap a pathologist reads over the slide.

    Parameters
    ----------
    coords : array-like of shape (n, 2)
        Tile positions (x, y), as the feature file's ``coords`` holds them (pixels).
    values : array-like of shape (n,)
        A value per tile: attention, a contribution, a prediction.
    ax : matplotlib Axes, optional
        Where to draw; a new figure otherwise.
    tile : float, optional
        The tile size in the units of ``coords``; default: the grid's pitch.
    cmap, title, colorbar, label
        Colour map, title, whether to add a colour bar, and its label.

    Returns
    -------
    matplotlib.axes.Axes
        With y growing downwards, as on a slide; tiles not in ``coords`` are blank.
    """
    import matplotlib.pyplot as plt

    if tile is not None and (isinstance(tile, bool) or not isinstance(tile, numbers.Real) or not tile > 0):
        raise ValueError(expected("tile", "a tile size > 0 in the units of coords, or None", tile))
    xy, v = (_numbers(name, array) for name, array in (("coords", coords), ("values", values)))
    v = v.ravel()
    if xy.ndim != 2 or xy.shape[1] != 2:
        raise ValueError(expected("coords", "an (n, 2) array of tile positions", got=f"shape {xy.shape}"))
    if len(v) != len(xy):
        raise ValueError(expected("values", f"{len(xy)} values, one per tile of coords", len(v)))
    pitch = float(tile) if tile is not None else tile_size(xy)
    cells = np.round((xy - xy.min(axis=0)) / pitch).astype(np.int64)
    grid = np.full((cells[:, 1].max() + 1, cells[:, 0].max() + 1), np.nan)
    grid[cells[:, 1], cells[:, 0]] = v
    if ax is None:
        _, ax = plt.subplots(figsize=(5, 5 * grid.shape[0] / max(grid.shape[1], 1) + 0.5))
    x0, y0 = xy.min(axis=0)
    extent = (x0, x0 + grid.shape[1] * pitch, y0 + grid.shape[0] * pitch, y0)
    image = ax.imshow(grid, cmap=cmap, extent=extent, interpolation="nearest")
    ax.set_aspect("equal")
    ax.set_xlabel("x")
    ax.set_ylabel("y")
    if title:
        ax.set_title(title)
    if colorbar:
        ax.figure.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label=label)
    return ax


#: A validation slide's attention, saved in the experiment folder for the report (plain JSON).
HEATMAP_FILE = "heatmap.json"


def save_heatmap(results: Any, loader: Any, path: str | None = None) -> str | None:
    """Save the tile attention of a validation slide of the best configuration, for the report.

    The slide is the first validation bag with coordinates of the best
    configuration's first finished fold, seen by that fold's model (through its
    fold's preprocessing). The file is plain JSON, so the report draws it
    without the user's code.

    Returns
    -------
    str or None
        The file written, or None when there is no complete configuration or no
        validation bag with coordinates.
    """
    import json

    cid = results.best_config_id
    coords_of = getattr(loader, "coords", None)
    if cid is None or not callable(coords_of):
        return None
    done = results.folds[(results.folds["config_id"] == cid) & (results.folds["status"] == "complete")]
    if not len(done):
        return None
    fold = int(sorted(done["fold"])[0])
    cv_folds = int(results.cv_folds)
    folds = loader.folds(cv_folds if cv_folds > 1 else 5)
    bag = next((int(b) for b in folds[fold][1] if coords_of(int(b)) is not None), None)
    if bag is None:
        return None
    fitted = loader.fitted_preprocess(fold, cv_folds if cv_folds > 1 else 5)
    model = results.load_model(cid, fold)
    scores = tile_scores(model, loader.bag(bag, fitted) if fitted is not None else loader.bag(bag))
    contribution = scores["contribution"]
    record = {
        "config_id": int(cid), "fold": fold, "bag": bag,
        "slides": list(loader.slides(bag)) if callable(getattr(loader, "slides", None)) else [str(bag)],
        "coords": np.asarray(coords_of(bag)).tolist(),
        "attention": scores["attention"].astype(float).tolist(),
        "contribution": None if contribution is None or contribution.ndim != 1 else contribution.astype(float).tolist(),
    }
    import os

    target = os.path.join(results.path, HEATMAP_FILE) if path is None else os.fspath(path)
    tmp = target + ".writing"
    with open(tmp, "w") as f:
        json.dump(record, f)
    os.replace(tmp, target)  # a reader never sees half a file
    return target
