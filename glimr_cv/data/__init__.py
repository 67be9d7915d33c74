"""Data for a search: loaders that split in-memory data into fixed folds."""

from .folds import KFoldLoader, check_loader, kfold_loader

__all__ = ["KFoldLoader", "check_loader", "kfold_loader"]
