"""glimr's module path for :func:`optimization_space`: ``from glimr_cv.optimization import optimization_space``.

It lives in :mod:`glimr_cv.space.sections`; this module lets glimr code run
with ``glimr`` changed to ``glimr_cv`` in its imports.
"""

from .space.sections import optimization_space

__all__ = ["optimization_space"]
