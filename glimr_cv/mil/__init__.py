"""Multiple-instance learning for glimr_cv: bags of instances, one label per bag.

A patient's slide is a bag of tiles or cells (instances: feature vectors or small
images); bags differ in size and a patient may have several.

* Data: :func:`kfold_bag_loader` (:class:`BagKFoldLoader`) splits bags into k
  folds with :func:`glimr_cv.kfold_loader`'s guarantees (folds fixed by the seed,
  a patient's bags on one side of each fold with ``groups`` and a group splitter,
  the instances shipped to Ray workers once, ``preprocess`` fit on each fold's
  training instances only) and feeds batches as
  ``({"instances": (B, n, ...), "mask": (B, n) bool}, {task: labels})``, padded
  to the largest bag of each batch. :func:`pack_bags` stores bags as one array
  of instances and offsets.
* Keras layers, registered for ``keras.saving.load_model`` (package ``glimr_cv``):
  :class:`AttentionPooling` and :class:`GatedAttentionPooling` (Ilse et al.,
  2018), :class:`MeanPooling`, :class:`MaxPooling`; :func:`bag_pooling` makes one
  by name, so a search space can tune ``"pooling": {"attention", "gated", "mean"}``;
  :func:`attention_weights` reads a trained model's weights of a bag's instances.
* Whole slides: :func:`kfold_slide_loader` (:class:`SlideKFoldLoader`) reads one
  feature file per slide (HDF5 ``features``/``coords``, or ``.npy``) inside the
  ``tf.data`` pipeline, bags by slide or by patient, with survival labels too;
  :func:`predict_slides` and :func:`predict_bags` predict new slides;
  :func:`tile_scores` and :func:`plot_heatmap` show where the model looks;
  :func:`synthetic_slides` writes a synthetic cohort.
* Example data: :func:`digit_bags`, bags of scikit-learn's digits, positive when
  they hold a 9, with synthetic patients; :mod:`glimr_cv.mil.demo` also has a
  ``SPACE`` and ``builder`` for them.

A builder takes the features as::

    instances = keras.Input((None, 64), name="instances")
    mask = keras.Input((None,), dtype="bool", name="mask")
    h = keras.layers.Dense(32, activation="relu")(instances)   # per instance
    z = bag_pooling(config["pooling"], units=config["attention_units"])(h, mask=mask)
    outputs = {"bag": keras.layers.Dense(1, activation="sigmoid", name="bag")(z)}
    model = keras.Model({"instances": instances, "mask": mask}, outputs)

The Keras names load Keras on first use, which also registers the layers: import
them (or :mod:`glimr_cv.mil.layers`) before loading a saved model.
"""

from ..lazy import lazy_getattr
from .bags import BagKFoldLoader, kfold_bag_loader, pack_bags
from .demo import DigitBags, digit_bags
from .slides import SlideKFoldLoader, kfold_slide_loader, read_slide, slide_info
from .synthetic import synthetic_slides

_LAZY = {
    "AttentionPooling": ".layers",
    "GatedAttentionPooling": ".layers",
    "MeanPooling": ".layers",
    "MaxPooling": ".layers",
    "POOLINGS": ".layers",
    "bag_pooling": ".layers",
    "attention_weights": ".layers",
    "tile_scores": ".heatmaps",
    "plot_heatmap": ".heatmaps",
    "predict_bags": ".predict",
    "predict_slides": ".predict",
    "bag_dataset": ".predict",
}

__all__ = [
    "kfold_slide_loader",
    "SlideKFoldLoader",
    "read_slide",
    "slide_info",
    "synthetic_slides",
    "kfold_bag_loader",
    "BagKFoldLoader",
    "pack_bags",
    "AttentionPooling",
    "GatedAttentionPooling",
    "MeanPooling",
    "MaxPooling",
    "POOLINGS",
    "bag_pooling",
    "attention_weights",
    "tile_scores",
    "plot_heatmap",
    "predict_bags",
    "predict_slides",
    "bag_dataset",
    "digit_bags",
    "DigitBags",
]


__getattr__ = lazy_getattr(__name__, _LAZY, globals())  # Keras and Ray load only when used


def __dir__():
    return sorted(set(globals()) | set(__all__))
