import os
import pathlib
import shutil
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")
# Every Ray the suite starts (its own, the notebook kernels', the CLI subprocesses') has one CPU, so a
# search trains one fold at a time. Each fold slot is a worker process that imports TensorFlow before
# it trains (about 4.5 CPU-s), and the suite is bound by its CPU. A test of folds at once asks for half
# a CPU per fold.
os.environ.setdefault("RAY_OVERRIDE_RESOURCES", '{"CPU": 1}')

import pytest


@pytest.fixture(scope="session")
def ray_local():
    """One embedded local Ray for all end-to-end tests."""
    import ray

    if not ray.is_initialized():
        ray.init(num_cpus=1, include_dashboard=False, configure_logging=False,
                 runtime_env={"env_vars": {"TF_CPP_MIN_LOG_LEVEL": "2"}})
    yield ray
    ray.shutdown()


def pytest_collection_modifyitems(config, items):
    # run the fast pure-logic tests first so a broken core fails in seconds
    items.sort(key=lambda item: 1 if item.get_closest_marker("slow") else 0)


SMALL_RUN_TEST = "test_notebook_runs_on_the_small_budget"


def pytest_configure(config):
    if getattr(config.option, "numprocesses", None) and "PYTEST_XDIST_WORKER" not in os.environ:
        # the xdist controller: its workers, started after this, inherit where its notebook runs publish
        os.environ["GLIMR_CV_NOTEBOOK_RUNS"] = tempfile.mkdtemp(prefix="glimr_cv_notebook_runs_")


def pytest_unconfigure(config):
    if getattr(config.option, "numprocesses", None) and "PYTEST_XDIST_WORKER" not in os.environ:
        shutil.rmtree(os.environ.pop("GLIMR_CV_NOTEBOOK_RUNS", ""), ignore_errors=True)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_node_collection_finished(node, ids):
    # Under xdist the controller runs the notebooks, once, while its workers run the other tests.
    shared = pathlib.Path(os.environ.get("GLIMR_CV_NOTEBOOK_RUNS", ""))
    if not shared.name or (shared / "started").exists() or not any(SMALL_RUN_TEST in i for i in ids):
        return
    sys.path.insert(0, str(pathlib.Path(__file__).parent))
    import test_notebooks

    test_notebooks.start_small_runs(shared)
    (shared / "started").touch()


def pytest_collection_finish(session):
    # The notebooks' small runs wait mostly on a kernel's imports and Ray's start; started now, in the
    # background, they use the core that the fast tests, which run first, leave idle.
    if os.environ.get("PYTEST_XDIST_WORKER"):
        return  # the controller started them
    for item in session.items:
        start = getattr(item.module, "start_small_runs", None)
        if start is not None and item.originalname == SMALL_RUN_TEST:
            start()
            return
