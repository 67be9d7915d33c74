"""Deployment of a search's result: a fold ensemble, a refit, batch prediction and serving.

* :func:`fold_ensemble` averages fold models, output by output, in ONE Keras model
  of built-in layers; :meth:`SearchResults.ensemble` and :meth:`SearchResults.export`
  build (and save) that of the best configuration.
* :meth:`SearchResults.refit` trains the best configuration on all the data
  (:func:`refit_config`).
* :func:`predict` predicts NumPy, pandas or tf.data inputs with a model or a
  ``.keras`` file; :func:`predict_ray` maps a ``ray.data.Dataset`` through a model
  loaded once per worker (:class:`BatchPredictor`). Both refuse NaN features
  unless ``allow_nan=True``; :func:`check_keras_file` tells a corrupt model file
  from a missing one without loading it.
* :func:`serve` puts a ``.keras`` model behind a JSON HTTP endpoint on Ray Serve
  (the ``serve`` extra: ``pip install glimr_cv[serve]``); a local Ray it starts
  listens on the loopback only (:func:`connect_ray`).

Keras, TensorFlow and Ray are imported only when a function runs.
"""

from .batch import BatchPredictor, check_keras_file, load_keras_model, predict, predict_ray
from .ensemble import best_ensemble, export_ensemble, fold_ensemble
from .refit import refit_config, refit_epochs
from .serving import RequestError, connect_ray, parse_request, serve

__all__ = [
    "fold_ensemble",
    "best_ensemble",
    "export_ensemble",
    "refit_config",
    "refit_epochs",
    "predict",
    "predict_ray",
    "BatchPredictor",
    "load_keras_model",
    "check_keras_file",
    "serve",
    "connect_ray",
    "parse_request",
    "RequestError",
]
