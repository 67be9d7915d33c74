"""glimr's module path for its utilities: ``from glimr_cv.utils import sample_space, prune_search``.

They live in :mod:`glimr_cv.space.notation`; this module lets glimr code run
with ``glimr`` changed to ``glimr_cv`` in its imports. Unlike glimr's,
:func:`sample_space` takes an optional seed and samples domains at any depth,
inside the options of a choice too.
"""

from .space.notation import prune_search, sample_space

__all__ = ["sample_space", "prune_search"]
