"""Keras parts for builders: losses, metrics and optimizers from a sampled configuration."""

from .helpers import keras_losses, keras_metrics, keras_optimizer

__all__ = ["keras_losses", "keras_metrics", "keras_optimizer"]
