"""Data for a search: the loader contract (:mod:`.contract`) and loaders over in-memory arrays (:mod:`.folds`)."""

from .contract import Loader, RowLoader, check_loader, is_row_loader, row_loader
from .folds import KFoldLoader, kfold_loader

__all__ = ["Loader", "RowLoader", "check_loader", "is_row_loader", "row_loader", "KFoldLoader", "kfold_loader"]
