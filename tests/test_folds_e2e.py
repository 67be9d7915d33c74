"""End to end: kfold_loader through Search on a local Ray; the data go to the object store once."""

import collections
import os
import traceback

import pytest

from glimr_cv import Search
from glimr_cv.demo import SPACE, builder, digits_arrays
from glimr_cv.folds import KFoldLoader, kfold_loader

pytestmark = pytest.mark.slow


@pytest.fixture
def serializations(monkeypatch):
    """Where each pickling of a KFoldLoader in this (driver) process came from."""
    seen = collections.Counter()
    reduce_ex = KFoldLoader.__reduce_ex__

    def counting(self, protocol):
        frames = traceback.extract_stack()
        if any(f.name == "_save" and f.filename.endswith(os.path.join("glimr_cv", "search.py")) for f in frames):
            seen["Search._save"] += 1
        elif any(f.name == "put" and f"{os.sep}ray{os.sep}" in f.filename for f in frames):
            seen["ray.put"] += 1
        else:
            seen["other: " + " < ".join(f.name for f in frames[-6:-1])] += 1
        return reduce_ex(self, protocol)

    monkeypatch.setattr(KFoldLoader, "__reduce_ex__", counting)
    return seen


def _search(loader):
    space = dict(SPACE, optimization={**SPACE["optimization"], "epochs": 1})
    search = Search(space, builder, loader, metric="digit_accuracy", cv_folds=2, racing=None, seed=0)
    search.set_reporter(max_report_frequency=0)
    return search


def test_kfold_loader_runs_through_search_and_ships_its_data_once(ray_local, tmp_path, serializations):
    x, y = digits_arrays()
    loader = kfold_loader(x, {"digit": y}, splitter="stratified", seed=0, val_batch_size=256)
    counts = {}
    for num_samples in (2, 3):
        serializations.clear()
        results = _search(loader).experiment(str(tmp_path), name=f"n{num_samples}", num_samples=num_samples)
        counts[num_samples] = dict(serializations)
        assert list(results.table["status"]) == ["complete"] * num_samples
        assert list(results.table["n_folds"]) == [2] * num_samples
        assert (results.folds["status"] == "complete").sum() == 2 * num_samples
        assert results.table["mean_digit_accuracy"].min() > 0.3  # one epoch on digits learns something
    # Per experiment the driver pickles the loader exactly twice, however many trials run:
    # once by ray.put, when tune.with_parameters puts the TrialSpec (holding the loader and
    # its arrays) into the object store; every trial then ray.get()s that one object, arrays
    # zero-copy. And once by Search._save, cloudpickling the Search into the experiment
    # directory for Search.restore. 4 and 6 trials give the same count.
    assert counts[2] == counts[3] == {"ray.put": 1, "Search._save": 1}, counts


def test_the_arrays_arrive_in_workers_as_zero_copy_views_of_the_object_store(ray_local):
    import ray

    x, y = digits_arrays()
    loader = kfold_loader(x, {"digit": y})

    @ray.remote(num_cpus=0)
    def probe(loader):
        # Ray hands numpy arrays nested in objects out as read-only views of shared memory
        return loader.features.flags.writeable, loader.labels["digit"].flags.writeable, len(loader.folds(2))

    assert ray.get(probe.remote(ray.put(loader))) == (False, False, 2)
