"""Whole-slide MIL end to end: a search on feature files, what each worker read, nested CV on bags and slides,
prediction on new slides and heatmaps."""

import glob
import os
import uuid

import numpy as np
import pytest

import e2e_helpers as h

from glimr_cv import Search, nested_cv
from glimr_cv.mil import BagKFoldLoader, SlideKFoldLoader, kfold_slide_loader, synthetic_slides

pytestmark = pytest.mark.slow

WIDTH = 8


def space(epochs=2, loss=None):
    return {
        "pooling": {"gated", "mean"},
        "units": 8,
        "tasks": {"label": {"loss": loss or {"name": "bce", "loss": "BinaryCrossentropy"}, "loss_weight": 1.0,
                            "metrics": [{"name": "auc", "metric": "AUC"}]}},
        "optimization": {"method": "adam", "learning_rate": 0.01, "epochs": epochs},
        "data": {"batch_size": 4},
    }


def builder(config):
    import keras

    from glimr_cv import keras_losses, keras_metrics
    from glimr_cv.mil import bag_pooling

    instances = keras.Input((None, WIDTH), name="instances")
    mask = keras.Input((None,), dtype="bool", name="mask")
    h = keras.layers.Dense(config["units"], activation="relu")(instances)
    pooling = bag_pooling(config["pooling"], units=8) if config["pooling"] != "mean" else bag_pooling("mean")
    z = pooling(h, mask=mask)
    outputs = {"label": keras.layers.Dense(1, activation="sigmoid", name="label")(z)}
    losses, weights = keras_losses(config)
    return keras.Model({"instances": instances, "mask": mask}, outputs), losses, weights, keras_metrics(config)


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cohort")
    return synthetic_slides(folder, patients=24, slides_per_patient=(1, 2), tiles=(40, 80), width=WIDTH, seed=5,
                            signal=3.0)


@pytest.fixture(scope="module")
def slide_search(cohort, ray_local, tmp_path_factory):
    log = tmp_path_factory.mktemp("reads")
    loader = kfold_slide_loader(cohort, labels={"label": "high_risk"}, max_instances=32, read_log=str(log))
    search = Search(space(), builder, loader, metric="label_auc", cv_folds=3, racing=None)
    search.set_reporter(max_report_frequency=0)
    root = tmp_path_factory.mktemp("runs")
    results = search.experiment(str(root), name="slides", num_samples=2)
    return {"loader": loader, "results": results, "log": log, "root": root}


def test_a_search_on_slide_files_trains_every_fold_and_keeps_no_features(slide_search):
    results = slide_search["results"]
    assert set(results.table["status"]) == {"complete"} and len(results.folds) == 6
    folder = results.path
    size = os.path.getsize(os.path.join(folder, "glimr_cv_search.pkl"))
    assert size < 200_000, size  # the search pickles paths and labels, not features
    not_checkpoints = sum(os.path.getsize(f) for f in glob.glob(os.path.join(folder, "**"), recursive=True)
                          if os.path.isfile(f) and "checkpoint_" not in f)
    assert not_checkpoints < 5_000_000


def test_the_report_of_a_slide_search_shows_a_validation_slides_heatmap(slide_search):
    import json

    from glimr_cv.results.report import write_report

    results, loader = slide_search["results"], slide_search["loader"]
    with open(os.path.join(results.path, "heatmap.json")) as f:
        record = json.load(f)
    bag = record["bag"]
    assert bag in loader.folds(3)[record["fold"]][1]  # a validation slide of its fold
    assert len(record["coords"]) == len(record["attention"]) == loader.sizes[bag]
    assert abs(sum(record["attention"]) - 1) < 1e-4
    page = open(write_report(results.path)).read()
    assert '<figure id="heatmap"><img src="data:image/png;base64,' in page


def test_each_worker_opens_only_the_files_of_the_bags_its_fold_trains_or_validates_on(slide_search):
    loader, results = slide_search["loader"], slide_search["results"]
    reads = []
    for path in glob.glob(str(slide_search["log"] / "*.log")):
        for line in open(path).read().splitlines():
            pid, slide, _, count, when = line.split("\t")
            reads.append((int(pid), slide, int(count), float(when)))
    assert reads
    folds = results.folds
    slides_of = lambda bags: {s for b in bags for s in loader.slides(int(b))}  # noqa: E731
    attributed = 0
    for pid, slide, count, when in reads:
        rows = folds[(folds["worker"].str.split("@").str[0].astype(int) == pid)
                     & (folds["started_at"] <= when) & (folds["ended_at"] >= when)]
        if pid == os.getpid():  # the preflight, in this process: fold 0
            train, val = loader.folds(3)[0]
            assert slide in slides_of(train) | slides_of(val)
            continue
        assert len(rows) == 1, (pid, slide, when)
        train, val = loader.folds(3)[int(rows["fold"].iloc[0])]
        assert slide in slides_of(train) | slides_of(val)
        if slide in slides_of(train) and slide not in slides_of(val):
            assert count <= 32  # a training read is the draw, not the whole file
        attributed += 1
    assert attributed >= 6


def test_predict_slides_and_heatmaps_of_a_trained_model(slide_search, cohort, tmp_path):
    import ray
    from sklearn.metrics import roc_auc_score

    from glimr_cv.mil import predict_bags, predict_slides, read_slide, tile_scores

    results = slide_search["results"]
    path = results.export(str(tmp_path / "ensemble.keras"))
    local = predict_slides(path, cohort.iloc[:6])
    assert list(local["slide"]) == list(cohort["slide"][:6])
    bags = [read_slide(p) for p in cohort["path"][:6]]
    np.testing.assert_allclose(np.stack(local["prediction"]), predict_bags(path, bags, batch_size=3), rtol=1e-5)
    from glimr_cv import predict  # the one predict takes bags, and slide manifests, for a bag model

    np.testing.assert_allclose(predict(path, bags, batch_size=3), predict_bags(path, bags, batch_size=3), rtol=1e-6)
    np.testing.assert_allclose(np.stack(predict(path, cohort.iloc[:6])["prediction"]), np.stack(local["prediction"]),
                               rtol=1e-6)
    # bad slides come back as rows, not as an exception out of Ray Data: such an exception would keep the actors, and
    # the CPUs they hold, while anything keeps it (a notebook keeps the last one), and the run below would wait for ever
    cpus = ray.cluster_resources()["CPU"]  # one actor holding every CPU
    with pytest.raises(ValueError, match=r"^predict_slides: 3 of 6 slides could not be predicted: ") as raised:
        predict_slides(path, h.damaged_cohort(cohort.iloc[:6], tmp_path), ray=True, num_cpus=cpus, batch_size=4)
    distributed = predict_slides(path, cohort.iloc[:6], ray=True, batch_size=2)
    assert raised.value is not None  # held until here
    np.testing.assert_allclose(np.stack(distributed["prediction"]), np.stack(local["prediction"]), rtol=1e-5)
    assert list(distributed["slide"]) == list(local["slide"])
    # heatmaps: attention sums to 1 on every slide, and a model whose head is one Dense layer splits its logit
    model = results.load_model(results.best_config_id, 0)
    features = read_slide(cohort["path"][0])
    scores = tile_scores(model, features)
    assert scores["attention"].shape == (len(features),) and abs(scores["attention"].sum() - 1) < 1e-4
    import keras

    logit = keras.ops.convert_to_numpy(model.get_layer("label").kernel)  # a sigmoid head: the sum is the logit
    out = model.predict({"instances": features[None], "mask": np.ones((1, len(features)), bool)}, verbose=0)
    probability = float(np.ravel(out["label"] if isinstance(out, dict) else out)[0])
    assert logit.shape[1] == 1
    assert float(scores["contribution"].sum()) == pytest.approx(np.log(probability / (1 - probability)), abs=1e-3)
    import h5py

    with h5py.File(cohort["path"][0]) as h5:
        tumour = h5["tumour"][()]
    if tumour.any() and not tumour.all():
        assert 0.0 <= roc_auc_score(tumour, scores["attention"]) <= 1.0


class Recording:
    """Writes which bags (told by their content, :meth:`_ids`) each fold or full dataset held and served."""

    record_dir = None

    def _record(self, kind, train, val):
        np.savez(os.path.join(self.record_dir, f"{kind}_{os.getpid()}_{uuid.uuid4().hex}.npz"),
                 held=self._ids(range(self.n)), train=self._ids(train), val=self._ids(val))

    def __call__(self, batch_size, cv_index=0, cv_folds=5):
        train, val = self.folds(cv_folds)[cv_index]
        self._record("fold", train, val)
        return super().__call__(batch_size, cv_index, cv_folds)

    def full(self, batch_size):
        self._record("full", np.arange(self.n), np.arange(0))
        return super().full(batch_size)


class RecordingBags(Recording, BagKFoldLoader):
    def _ids(self, bags):  # each bag's instances carry its patient id in their last feature
        return np.array([int(self.instances[self.offsets[b], -1]) for b in bags], dtype=np.int64)


class RecordingSlides(Recording, SlideKFoldLoader):
    def _ids(self, bags):  # slides are named patient<id>_slide<k>
        return np.array([int(self.slides(int(b))[0].split("_")[0][len("patient"):]) for b in bags], dtype=np.int64)


def _records(folder):
    out = []
    for path in sorted(glob.glob(os.path.join(folder, "*.npz"))):
        with np.load(path) as f:
            out.append((os.path.basename(path).split("_")[0], {k: f[k] for k in ("held", "train", "val")}))
    return out


def _check_no_leak(nested, ids_of_rows, records):
    """Every inner loader held exactly one outer fold's training rows and served nothing of its test rows."""
    splits = nested.splits
    served = {k: set() for k in range(len(splits))}
    for kind, record in records:
        matches = [k for k, (train, _) in enumerate(splits) if sorted(record["held"]) == sorted(ids_of_rows(train))]
        assert len(matches) == 1, "an inner loader held rows other than one outer fold's training rows"
        k = matches[0]
        served[k] |= set(record["train"].tolist()) | set(record["val"].tolist())
        assert not set(record["held"].tolist()) & set(ids_of_rows(splits[k][1]))
    for k, (train, test) in enumerate(splits):
        assert served[k] == set(ids_of_rows(train))
        assert not served[k] & set(ids_of_rows(test))


@pytest.mark.parametrize("kind", ["bags", "slides"])
def test_nested_cv_with_a_bag_loader_and_a_slide_loader_keeps_outer_test_rows_out(kind, cohort, ray_local, tmp_path):
    from glimr_cv.mil import read_slide

    records = tmp_path / "records"
    records.mkdir()
    frame = cohort.drop_duplicates("patient").reset_index(drop=True)  # one slide per patient: ids are patients
    patient_ids = np.array([int(p[len("patient"):]) for p in frame["patient"]])
    if kind == "bags":
        bags = [np.hstack([read_slide(p), np.full((1, 1), i, "float32").repeat(len(read_slide(p)), 0)])
                for p, i in zip(frame["path"], patient_ids)]
        loader = RecordingBags(bags, {"label": frame["high_risk"].to_numpy().astype("float32")}, splitter="stratified")
        width = WIDTH + 1
    else:
        loader = RecordingSlides(frame, labels={"label": "high_risk"}, splitter="stratified")
        width = WIDTH
    loader.record_dir = str(records)

    def local_builder(config):
        import keras

        from glimr_cv import keras_losses, keras_metrics
        from glimr_cv.mil import bag_pooling

        instances = keras.Input((None, width), name="instances")
        mask = keras.Input((None,), dtype="bool", name="mask")
        z = bag_pooling("mean")(keras.layers.Dense(4, activation="relu")(instances), mask=mask)
        outputs = {"label": keras.layers.Dense(1, activation="sigmoid", name="label")(z)}
        losses, weights = keras_losses(config)
        return keras.Model({"instances": instances, "mask": mask}, outputs), losses, weights, keras_metrics(config)

    s = space(epochs=1)
    s["pooling"] = "mean"
    search = Search(s, local_builder, loader, metric="label_auc", cv_folds=2, racing=None)
    search.set_reporter(max_report_frequency=0)
    nested = nested_cv(search, str(tmp_path), outer_folds=2, name=kind, num_samples=1, check=False,
                       max_concurrent_trials=1)
    assert len(nested.table) == 2 and nested.table["n_test"].sum() == loader.n
    assert nested.table["outer_label_auc"].between(0, 1).all()
    ids = lambda rows: patient_ids[np.asarray(rows)].tolist()  # noqa: E731
    _check_no_leak(nested, ids, _records(str(records)))
