"""glimr's configuration methods of a search: checkpoints, the live leaderboard and resources.

:class:`RunSettings` is the part of :class:`glimr_cv.Search` that glimr users set
after construction (``search.set_checkpoints(...)``), kept apart from the
search's own arguments. Each method checks its values and stores them; the
session reads them when the search runs.
"""

from __future__ import annotations

from typing import Any

from .checks import Bool, Instance, Int, Real, check_bool, check_choice, check_number, expected, validate
from .engine.progress import in_notebook
from .space.notation import sampled_paths

__all__ = ["RunSettings"]

_REPORTER = {"parameters": Instance((list, tuple, dict), "a list of config paths or a dict path -> label"),
             "sort_by_metric": Bool(), "max_report_frequency": Real()}
_SCALING = {"num_workers": Int(1, 1), "use_gpu": Bool(),
            "resources_per_worker": Instance(dict, "a dict such as {'CPU': 2, 'GPU': 0}", none=True)}


class RunSettings:
    """Checkpoints, leaderboard and resources, with glimr's setters and their defaults.

    Needs ``metric``, ``mode``, ``metric_names`` and ``_parsed`` (the parsed space) on the instance.
    """

    def _default_settings(self) -> None:
        self.set_checkpoints()
        self.set_reporter()
        self.set_resources()

    def __setattr__(self, name: str, value: Any) -> None:
        # glimr let a Tune reporter be assigned; glimr_cv draws its own leaderboard, so say so now,
        # before an experiment folder exists, rather than fail when the first board is drawn
        if name == "reporter" and not (isinstance(value, dict) and {"parameters", "metrics", "sort_by_metric"} <= set(value)):
            raise TypeError(expected(
                "reporter", "search.set_reporter(metrics=..., parameters=..., max_report_frequency=...), which takes "
                "glimr's reporter arguments", got=f"an assigned {type(value).__name__}",
                hint="glimr_cv draws its own leaderboard of CV means, so a Ray Tune reporter has nothing to show"))
        super().__setattr__(name, value)

    def set_checkpoints(self, metric: str | None = None, mode: str | None = None, num_to_keep: int | None = None,
                        every_epoch: bool = False, **kwargs) -> None:
        """Checkpoint settings (``ray.tune.CheckpointConfig`` keyword arguments).

        Each fold writes one checkpoint, its best epoch by ``metric`` and ``mode``
        of the search, so ``metric`` and ``mode`` here must match the search's
        (unlike glimr, ``mode`` defaults to the search's, not "max"), and
        ``num_to_keep`` (per fold) changes nothing but Tune's bookkeeping: glimr's
        1 is the same as the default None, which spares Tune a state snapshot at
        every checkpoint.

        With ``every_epoch``, a running fold also keeps its latest epoch's state
        (every variable, the optimizer's and the best epoch's weights) in its one
        checkpoint slot, replaced each epoch, so that a fold interrupted by a
        crash continues from its last epoch on :meth:`restore`, on the same data
        order, instead of starting over: for long folds. It costs one write of
        about three times the weights per epoch.
        """
        if metric not in (None, self.metric) or mode not in (None, self.mode):
            raise ValueError(expected("set_checkpoints", f"the search's metric={self.metric!r} and mode={self.mode!r} "
                                      "(or None), since checkpoints follow them", got=f"metric={metric!r}, mode={mode!r}"))
        validate({"num_to_keep": Int(1, none=True), "every_epoch": Bool()}, locals())
        self.every_epoch = every_epoch
        if every_epoch:
            num_to_keep = 1  # one slot: the latest epoch's state, replaced by the fold's final checkpoint
        self.checkpoint_kwargs = {"num_to_keep": num_to_keep, **kwargs}

    def set_reporter(self, metrics: list | None = None, parameters: list | dict | None = None,
                     jupyter: bool | None = None, sort_by_metric: bool = True,
                     max_report_frequency: float = 10.0) -> None:
        """Live leaderboard settings, glimr's arguments.

        Parameters
        ----------
        metrics : list of str, optional
            Further reported metrics whose CV means the final leaderboard shows
            (the live one shows the search's metric).
        parameters : list of str, or dict of str to str, optional
            Config paths (``"optimization/learning_rate"``) to show, or config path
            -> column label as in glimr; default: the sampled ones.
        jupyter : bool, optional
            Redraw in place in a notebook; default: whether this runs in one.
        sort_by_metric : bool
            Best first; ``False`` lists configurations in the order they started.
        max_report_frequency : float
            Seconds between updates; ``0`` or less turns the display off.
        """
        for name in metrics or []:
            check_choice("set_reporter: metrics", name, self.metric_names)
        if parameters is None:
            parameters = sampled_paths(self._parsed)[:6]
        validate(_REPORTER, locals())
        self.reporter = {
            "parameters": dict(parameters) if isinstance(parameters, dict) else list(parameters),
            "metrics": list(metrics or []),
            "sort_by_metric": sort_by_metric,
        }
        self.jupyter = in_notebook() if jupyter is None else check_bool("jupyter", jupyter)
        self.report_every = max_report_frequency

    def set_scaling(self, num_workers: int = 1, use_gpu: bool = False, resources_per_worker: dict | None = None) -> None:
        """glimr's scaling settings, as :meth:`set_resources`: a fold trains in one Ray worker.

        ``resources_per_worker`` is what one fold reserves (``{"CPU": 2, "GPU": 0}``);
        ``use_gpu`` adds one GPU when it names none. Folds run side by side, so
        ``num_workers`` (glimr's data-parallel workers per trial) must be 1.
        """
        validate(_SCALING, locals())
        resources = {"CPU": 1, "GPU": 0} if resources_per_worker is None else dict(resources_per_worker)
        if use_gpu and not resources.get("GPU"):
            resources["GPU"] = 1
        self.set_resources(resources)

    def set_resources(self, resources: dict | None = None) -> None:
        """Resources of one fold training, e.g. ``{"CPU": 1, "GPU": 0}``."""
        resources = {"CPU": 1, "GPU": 0} if resources is None else dict(resources)
        for key, value in resources.items():
            check_number(f"resources[{key!r}]", value, 0)
        self.resources = resources
