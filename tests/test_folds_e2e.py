"""End to end: kfold_loader through Search on a local Ray; the data go to the object store once."""

import collections
import os
import traceback

import pytest

from glimr_cv import Search
from glimr_cv.demo import SPACE, builder, digits_arrays
from glimr_cv.data.folds import KFoldLoader, kfold_loader

pytestmark = pytest.mark.slow


@pytest.fixture
def serializations(monkeypatch):
    """Where each pickling of a KFoldLoader in this (driver) process came from."""
    seen = collections.Counter()
    reduce_ex = KFoldLoader.__reduce_ex__

    def counting(self, protocol):
        frames = traceback.extract_stack()
        in_ray = {f.name for f in frames if f"{os.sep}ray{os.sep}" in f.filename}
        in_store = {f.name for f in frames if f.filename.endswith(os.path.join("glimr_cv", "engine", "store.py"))}
        in_shipping = any(f.filename.endswith(os.path.join("glimr_cv", "engine", "shipping.py")) for f in frames)
        if "put" in in_ray:
            seen["ray.put"] += 1
        elif in_shipping:
            seen["shipping.ship_by_value"] += 1
        elif in_store & {"save_search", "check_picklable"}:
            seen["store." + (in_store & {"save_search", "check_picklable"}).pop()] += 1
        else:
            seen["other: " + " < ".join(f.name for f in frames[-6:-1])] += 1
        return reduce_ex(self, protocol)

    monkeypatch.setattr(KFoldLoader, "__reduce_ex__", counting)
    return seen


def test_kfold_loader_runs_through_search_and_ships_its_data_once(ray_local, tmp_path, serializations, monkeypatch):
    from glimr_cv.engine.searcher import CVSearcher

    x, y = digits_arrays()
    loader = kfold_loader(x, {"digit": y}, splitter="stratified", seed=0, val_batch_size=256)
    at_suggest = []  # serializations so far, each time the driver creates a trial
    suggest = CVSearcher.suggest
    monkeypatch.setattr(CVSearcher, "suggest", lambda self, trial_id: (
        at_suggest.append(sum(serializations.values())), suggest(self, trial_id))[1])

    space = dict(SPACE, optimization={**SPACE["optimization"], "epochs": 1})
    search = Search(space, builder, loader, metric="digit_accuracy", cv_folds=2, racing=None, seed=0)
    search.set_reporter(max_report_frequency=0)
    results = search.experiment(str(tmp_path), name="digits", num_samples=2)

    assert list(results.table["status"]) == ["complete", "complete"]
    assert list(results.table["folds_done"]) == [2, 2]
    assert (results.folds["status"] == "complete").sum() == 4
    assert results.table["mean_digit_accuracy"].min() > 0.2  # one epoch beats chance (0.1); lowest seen 0.50
    # The driver pickles the loader four times per experiment, however many trials run:
    # - Search() cloudpickles it once to check that it is picklable (store.check_picklable);
    # - ray.put, once: tune.with_parameters puts the TrialSpec (holding the loader and its
    #   arrays) into the object store; every trial ray.get()s that one object, arrays zero-copy;
    # - store.save_search cloudpickles the Search into the experiment directory for Search.restore;
    # - shipping.ship_by_value scans what the pickle imports, its arrays out of band (not copied).
    # All four come before the first trial: creating the 4 trials (the last two after the first
    # folds finished) pickled nothing more, so more configurations or folds cannot add any.
    assert dict(serializations) == {"store.check_picklable": 1, "ray.put": 1, "store.save_search": 1,
                                    "shipping.ship_by_value": 1}, serializations
    assert len(at_suggest) >= 4 and set(at_suggest) == {4}, at_suggest


def test_the_arrays_arrive_in_workers_as_zero_copy_views_of_the_object_store(ray_local):
    import ray

    x, y = digits_arrays()
    loader = kfold_loader(x, {"digit": y})

    @ray.remote(num_cpus=0)
    def probe(loader):
        # Ray hands numpy arrays nested in objects out as read-only views of shared memory
        return loader.features.flags.writeable, loader.labels["digit"].flags.writeable, len(loader.folds(2))

    assert ray.get(probe.remote(ray.put(loader))) == (False, False, 2)
