"""Every use of a private name of Ray, Ray Tune, Ray Serve or TensorFlow, each behind a version check.

A Ray or TensorFlow release may rename or drop what these functions reach
into. Each checks what it needs first and falls back (or says what to do) when
it is missing, so that a release breaks one function here, loudly or to a
documented fallback, and nothing elsewhere. ``tests/test_compat.py`` tests each
one; ``make test-compat`` runs the suite against the oldest and the newest Ray
that ``setup.cfg`` allows. Versions checked: Ray 2.41 and 2.60 (Tune, Serve),
TensorFlow 2.16 to 2.21.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pickle
import tempfile
from typing import Any, Callable, Iterator

__all__ = ["ray_version", "read_ray_address", "loopback_node", "replica_grpc_on_loopback", "tune_staging_folders",
           "unfinish_tune_search", "optuna_define_by_run", "replace_tuner_callbacks", "gradient_registry",
           "under_xla"]

#: The Ray versions (major, minor) whose private names these functions were checked on.
RAY_CHECKED = ((2, 41), (2, 60))


def ray_version() -> tuple[int, ...]:
    """Ray's version as a tuple of ints (``(2, 60, 0)``)."""
    import ray

    return tuple(int(p) for p in ray.__version__.split(".")[:3] if p.isdigit())


def _ray_in_range() -> bool:
    return RAY_CHECKED[0] <= ray_version()[:2] < (3, 0)


# -- Ray core ----------------------------------------------------------------------------------


def read_ray_address() -> str | None:
    """The address of the Ray that ``ray start`` started on this machine, as ``ray.init("auto")`` finds it.

    Ray keeps it in a file its private ``ray._private.utils.read_ray_address``
    reads (Ray 2.41-2.60). Where that is missing, None: callers treat an
    unknown address as "maybe the same Ray" and let ``ray.init`` decide.
    """
    try:
        from ray._private.utils import read_ray_address as read
    except ImportError:
        return None
    try:
        return read()
    except Exception:  # an unreadable address file: as if none
        return None


@contextlib.contextmanager
def loopback_node() -> Iterator[None]:
    """While active, a Ray started in this process takes 127.0.0.1 as its node address, so it listens there only.

    Ray 2.41-2.60 binds its GCS, raylet, agents and workers to the node address
    when that is the loopback, and to every interface otherwise; but ``ray.init``
    turns ``_node_ip_address="127.0.0.1"`` into the machine's network address
    unless Ray's cluster mode is off, which the private constant
    ``ray._private.ray_constants.ENABLE_RAY_CLUSTER`` says (what
    ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` sets, when set before Ray is
    imported). This sets it for the start only.

    Raises
    ------
    RuntimeError
        On a Ray without it, saying to pass ``ray_bind='all'``.
    """
    try:
        from ray._private import ray_constants
    except ImportError:
        ray_constants = None
    if ray_constants is None or not hasattr(ray_constants, "ENABLE_RAY_CLUSTER"):
        raise RuntimeError("ray_bind: this Ray version has no way known to glimr_cv to start a loopback-only node; "
                           "pass ray_bind='all' (glimr-cv serve --ray-bind all) or start Ray yourself")
    saved = ray_constants.ENABLE_RAY_CLUSTER
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = saved


def replica_grpc_on_loopback(node_is_loopback: bool) -> bool:
    """Make this Ray Serve replica's inter-deployment gRPC server listen on 127.0.0.1, not ``[::]``.

    Ray Serve 2.60 starts that server on ``[::]:0`` (every interface), whatever
    the node's address, through ``ray.serve._private.replica.add_port_to_grpc_server``;
    on a loopback-only node it would be the one port reachable from other
    machines. Called in the replica before the server starts, this routes the
    call through a wrapper that puts the loopback address instead. Returns
    whether the wrapper is in place: False on a node with a network address, or
    where Ray Serve is laid out otherwise (then it changes nothing).
    """
    try:
        from ray.serve._private import replica
    except ImportError:
        return False
    add = getattr(replica, "add_port_to_grpc_server", None)
    if add is None or getattr(add, "glimr_cv_loopback", False):
        return add is not None
    if not node_is_loopback:
        return False

    def add_on_loopback(server, address):
        if isinstance(address, str) and address.startswith("[::]:"):
            address = "127.0.0.1:" + address.rpartition(":")[2]
        return add(server, address)

    add_on_loopback.glimr_cv_loopback = True
    replica.add_port_to_grpc_server = add_on_loopback
    return True


# -- Ray Tune's files ---------------------------------------------------------------------------


def tune_staging_folders(name: str) -> list[str]:
    """Ray Tune's local staging copies of experiment ``name``'s driver files, newest first.

    Ray Tune (2.41-2.60) writes its state in
    ``<ray temp>/ray/session_*/artifacts/<timestamp>/<name>/driver_artifacts`` and
    then copies it into the experiment folder. The layout is Tune's own, not an
    API: where it changes, no folder is found and :func:`glimr_cv.engine.store.repair_state`
    says it cannot repair.
    """
    temp = os.environ.get("RAY_TMPDIR", tempfile.gettempdir())
    found = glob.glob(os.path.join(temp, "ray", "session_*", "artifacts", "*", name, "driver_artifacts"))
    return sorted(found, key=os.path.getmtime, reverse=True)


def unfinish_tune_search(data: bytes) -> bytes | None:
    """Ray Tune's saved search state (``search_gen_state-*.json``, a pickle) with its "finished" flag cleared.

    The one place glimr_cv rewrites a file of Tune's (checked on Ray 2.41-2.60):
    a halted search ends by telling Tune it has finished, which Tune saves, and a
    restored Tune would then never ask for another fold. None when the flag was
    not set, or the state is not the dict Tune writes.
    """
    state = pickle.loads(data)
    if not isinstance(state, dict) or not state.get("finished"):
        return None
    state["finished"] = False
    return pickle.dumps(state)


def optuna_define_by_run(searcher: Any, define_by_run: Callable, metric: str, mode: str) -> bool:
    """Give a constructed ``OptunaSearch`` a define-by-run space, as its ``space=`` argument would.

    Ray Tune's ``OptunaSearch`` takes a define-by-run function only in its
    constructor; ``set_search_properties`` converts a dict. A search given a
    ready ``OptunaSearch()`` (with the user's sampler and seed) sets the
    function here instead: ``_space``, ``_metric``, ``_mode`` and
    ``_setup_study``, as the constructor does (checked on Ray 2.41 to 2.60).

    Returns
    -------
    bool
        False when the searcher already has a space of its own (it is kept).

    Raises
    ------
    RuntimeError
        On a Ray whose ``OptunaSearch`` lacks these names, saying what to do.
    """
    inner = getattr(searcher, "searcher", searcher)  # a ConcurrencyLimiter wraps one
    needed = ("_space", "_metric", "_mode", "_setup_study")
    if not all(hasattr(inner, name) for name in needed) or not _ray_in_range():
        import ray

        raise RuntimeError(f"search_alg: this Ray ({ray.__version__}) has an OptunaSearch that glimr_cv cannot give a "
                           "conditional space to; pass OptunaSearch(space=glimr_cv.space.searchers."
                           "optuna_define_by_run(glimr_cv.space.parse_space(space)), metric=<the search's metric>, "
                           "mode=...) yourself")
    if inner._space:
        return False
    inner._space = define_by_run
    inner._metric, inner._mode = metric, mode
    inner._setup_study(mode)
    return True


def replace_tuner_callbacks(tuner: Any, callbacks: list) -> None:
    """Put ``callbacks`` into a restored Tuner's run config, in place of its saved ones of the same classes.

    ``tune.Tuner.restore`` takes no callbacks; the restored ``RunConfig`` that
    ``fit`` reads is the private ``tuner._local_tuner.get_run_config()`` (Ray
    2.41-2.60). Without it, the restored run keeps its saved callbacks and a
    RuntimeError says so.
    """
    local = getattr(tuner, "_local_tuner", None)
    if local is None or not callable(getattr(local, "get_run_config", None)):
        raise RuntimeError("restore: this Ray's restored Tuner keeps the callbacks it was saved with; glimr_cv "
                           "cannot re-attach its trackers to it (resume without tracking, or with Ray 2.41-2.60)")
    run_config = local.get_run_config()
    kinds = {type(c) for c in callbacks}
    run_config.callbacks = [c for c in (run_config.callbacks or []) if type(c) not in kinds] + list(callbacks)


# -- TensorFlow --------------------------------------------------------------------------------


def gradient_registry() -> dict:
    """TensorFlow's process-wide gradient registry (``ops._gradient_registry._registry``), or {} where absent.

    Each trace of a Keras train step registers a custom gradient there and never
    removes it (tensorflow/tensorflow#97697); glimr_cv drops the entries of
    finished folds. Checked on TensorFlow 2.16-2.21; without the registry there
    is nothing to drop, and a worker only grows as it would anyway.
    """
    import sys

    if "tensorflow" not in sys.modules:  # another Keras backend: nothing to drop
        return {}
    try:
        from tensorflow.python.framework import ops

        return ops._gradient_registry._registry
    except (ImportError, AttributeError):
        return {}


def under_xla() -> bool:
    """Whether the graph being traced will be compiled by XLA (``jit_compile=True``).

    TensorFlow says so only through ``control_flow_util.GraphOrParentsInXlaContext``
    (private; TensorFlow 2.16-2.21). Without it, False: XLA's own error then
    names the metric's rows variable.
    """
    import tensorflow as tf

    try:
        from tensorflow.python.framework import ops
        from tensorflow.python.ops import control_flow_util
    except ImportError:
        return False
    return not tf.executing_eagerly() and bool(control_flow_util.GraphOrParentsInXlaContext(ops.get_default_graph()))
