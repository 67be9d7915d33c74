import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")

import pytest


@pytest.fixture(scope="session")
def ray_local():
    """One embedded local Ray for all end-to-end tests."""
    import ray

    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, configure_logging=False,
                 runtime_env={"env_vars": {"TF_CPP_MIN_LOG_LEVEL": "2"}})
    yield ray
    ray.shutdown()


def pytest_collection_modifyitems(config, items):
    # run the fast pure-logic tests first so a broken core fails in seconds
    items.sort(key=lambda item: 1 if item.get_closest_marker("slow") else 0)


def pytest_collection_finish(session):
    # The notebooks' small runs wait mostly on a kernel's imports and Ray's start; started now, in the
    # background, they use the core that the fast tests, which run first, leave idle.
    for item in session.items:
        start = getattr(item.module, "start_small_runs", None)
        if start is not None and item.originalname == "test_notebook_runs_on_the_small_budget":
            start()
            return
