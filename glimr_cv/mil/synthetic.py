"""Synthetic whole-slide cohorts on disk: tile grids, one tumour region per slide, survival that depends on it.

For tutorials, tests and benchmarks: no network, no real images. Each slide is
a grid of tiles with coordinates; a disc of it is tumour, whose tiles' features
are shifted along a few directions; a patient's risk grows with the tumour's
extent on its slides. Files are written as the slide-feature pipelines of the
field write them (HDF5 with ``features``, ``coords``, and here ``tumour``, the
truth the attention can be checked against) or as ``.npy``.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import numpy as np

from ..checks import check_choice, check_int, check_number, expected

if TYPE_CHECKING:
    import pandas

__all__ = ["synthetic_slides", "TILE"]

#: Tile size in pixels: coordinates are multiples of it, as a 20x extractor at 256 px writes them.
TILE = 256


def synthetic_slides(folder: str | os.PathLike, patients: int = 40, slides_per_patient: tuple = (1, 2),
                     tiles: tuple = (200, 400), width: int = 32, signal: float = 1.5, informative: int = 4,
                     beta: float = 2.5, censoring: float = 0.3, format: str = "h5", seed: int = 0,
                     dtype: Any = np.float32) -> "pandas.DataFrame":
    """Write a synthetic cohort of slide feature files and return its manifest.

    Parameters
    ----------
    folder : str
        Where the files go (created).
    patients : int
        Patients; each has ``slides_per_patient`` slides (an inclusive range).
    tiles : (int, int)
        Inclusive range of tiles per slide (a near-square grid of that many).
    width : int
        Features per tile.
    signal : float
        Shift of tumour tiles' features along ``informative`` directions, in
        standard deviations of the background.
    beta : float
        Log hazard ratio per unit of the patient's tumour fraction, standardized.
    censoring : float
        About this share of patients is censored (uniform censoring times).
    format : {"h5", "npy"}
        HDF5 files (``features``, ``coords``, ``tumour``) or ``.npy`` files
        (``<slide>.npy``, ``<slide>.coords.npy``, ``<slide>.tumour.npy``).
    seed : int
        Seed of everything.
    dtype : numpy dtype
        dtype of the features.

    Returns
    -------
    pandas.DataFrame
        One row per slide: ``path, slide, patient, tiles, tumour_fraction`` (of
        the slide), ``time, event`` (of its patient) and ``high_risk`` (the
        patient's tumour fraction above the median, a binary label).
    """
    import pandas as pd

    check_int("patients", patients, 2)
    check_int("width", width, 1)
    check_int("informative", informative, 1, width)
    check_number("signal", signal, 0)
    check_choice("format", format, ("h5", "npy"))
    lo, hi = (int(v) for v in tiles)
    s_lo, s_hi = (int(v) for v in slides_per_patient)
    if not 1 <= lo <= hi or not 1 <= s_lo <= s_hi:
        raise ValueError(expected("tiles, slides_per_patient", "inclusive ranges of ints >= 1",
                                  got=f"{tiles!r} and {slides_per_patient!r}"))
    folder = os.path.abspath(os.fspath(folder))
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(seed)
    direction = np.zeros(width)
    direction[:informative] = 1.0 / np.sqrt(informative)
    rows = []
    for p in range(patients):
        fraction = rng.uniform(0.03, 0.45)  # the patient's tumour burden
        for s in range(int(rng.integers(s_lo, s_hi + 1))):
            n = int(rng.integers(lo, hi + 1))
            side = int(np.ceil(np.sqrt(n)))
            grid = np.stack(np.divmod(np.arange(n), side), axis=1)[:, ::-1]  # (x, y) tile indices
            centre = rng.uniform(0, side, size=2)
            distance = np.linalg.norm(grid + 0.5 - centre, axis=1)
            radius = np.quantile(distance, np.clip(fraction * rng.uniform(0.8, 1.2), 0.01, 0.9))
            tumour = distance <= radius
            features = rng.normal(size=(n, width)) + rng.normal(scale=0.2, size=width)  # a slide's stain shift
            features[tumour] += signal * np.sqrt(informative) * direction
            features = features.astype(dtype)
            name = f"patient{p:04d}_slide{s}"
            if format == "h5":
                import h5py

                path = os.path.join(folder, f"{name}.h5")
                with h5py.File(path, "w") as h5:
                    h5["features"] = features
                    h5["coords"] = (grid * TILE).astype(np.int64)
                    h5["tumour"] = tumour
            else:
                path = os.path.join(folder, f"{name}.npy")
                np.save(path, features)
                np.save(path[:-4] + ".coords.npy", (grid * TILE).astype(np.int64))
                np.save(path[:-4] + ".tumour.npy", tumour)
            rows.append({"path": path, "slide": name, "patient": f"patient{p:04d}", "tiles": n,
                         "tumour_fraction": float(tumour.mean()), "burden": fraction})
    frame = pd.DataFrame(rows)
    burden = frame.groupby("patient")["burden"].first()
    z = (burden - burden.mean()) / (burden.std() or 1.0)
    event_time = rng.exponential(1.0 / np.exp(beta * z.to_numpy()))
    censor_time = rng.uniform(0, np.quantile(event_time, 1 - censoring) * 2 if censoring > 0 else np.inf,
                              size=len(burden)) if censoring > 0 else np.full(len(burden), np.inf)
    time = np.minimum(event_time, censor_time)
    event = (event_time <= censor_time).astype(np.int64)
    scale = 60.0 / np.median(time)  # months, roughly
    per_patient = pd.DataFrame({"patient": burden.index, "time": np.round(time * scale, 3), "event": event,
                                "high_risk": (burden > burden.median()).astype(np.int64).to_numpy()})
    return frame.drop(columns="burden").merge(per_patient, on="patient")
