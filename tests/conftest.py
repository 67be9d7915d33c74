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
