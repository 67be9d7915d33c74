"""The compat module: every private name of Ray, Tune, Serve and TensorFlow that glimr_cv uses, one test each.

Each test says what the function relies on, so that a release that moves it fails
here, by name, rather than somewhere downstream. ``make test-compat`` runs these
(and the rest) against the oldest and the newest Ray that setup.cfg allows.
"""

import os
import pickle

import pytest

from glimr_cv.engine import compat


def test_ray_is_a_version_these_private_names_were_checked_on():
    major_minor = compat.ray_version()[:2]
    assert compat.RAY_CHECKED[0] <= major_minor < (3, 0), compat.ray_version()


def test_read_ray_address_finds_no_cluster_here_or_the_one_ray_start_left(tmp_path, monkeypatch):
    address = compat.read_ray_address()
    assert address is None or ":" in address  # a "host:port", or none when no `ray start` ran here


def test_loopback_node_flips_rays_cluster_constant_for_the_start_only():
    from ray._private import ray_constants

    before = ray_constants.ENABLE_RAY_CLUSTER
    with compat.loopback_node():
        assert ray_constants.ENABLE_RAY_CLUSTER is False
    assert ray_constants.ENABLE_RAY_CLUSTER == before


def test_replica_grpc_wrapper_puts_the_loopback_for_every_interface_and_only_on_a_loopback_node():
    from ray.serve._private import replica

    if not hasattr(replica, "add_port_to_grpc_server"):
        # Ray Serve before the replicas' own gRPC server (2.41): nothing to wrap, and nothing is added
        assert compat.replica_grpc_on_loopback(True) is False
        assert not hasattr(replica, "add_port_to_grpc_server")
        return
    original = replica.add_port_to_grpc_server
    try:
        calls = []
        replica.add_port_to_grpc_server = lambda server, address: calls.append(address) or 1
        assert compat.replica_grpc_on_loopback(False) is False  # a networked node: unchanged
        assert compat.replica_grpc_on_loopback(True) is True
        replica.add_port_to_grpc_server(None, "[::]:0")
        replica.add_port_to_grpc_server(None, "10.0.0.1:5")
        assert calls == ["127.0.0.1:0", "10.0.0.1:5"]
        assert compat.replica_grpc_on_loopback(True) is True  # once wrapped, left as is
    finally:
        replica.add_port_to_grpc_server = original


def test_tune_staging_folders_follow_tunes_layout(tmp_path, monkeypatch):
    monkeypatch.setenv("RAY_TMPDIR", str(tmp_path))
    older = tmp_path / "ray" / "session_1" / "artifacts" / "2024" / "exp" / "driver_artifacts"
    newer = tmp_path / "ray" / "session_2" / "artifacts" / "2025" / "exp" / "driver_artifacts"
    for folder in (older, newer):
        folder.mkdir(parents=True)
    os.utime(older, (1, 1))
    assert compat.tune_staging_folders("exp") == [str(newer), str(older)]
    assert compat.tune_staging_folders("other") == []


def test_unfinish_tune_search_clears_the_flag_tune_saves_and_keeps_the_rest():
    data = pickle.dumps({"finished": True, "counter": 3})
    assert pickle.loads(compat.unfinish_tune_search(data)) == {"finished": False, "counter": 3}
    assert compat.unfinish_tune_search(pickle.dumps({"finished": False})) is None
    assert compat.unfinish_tune_search(pickle.dumps(["not", "tune's"])) is None


def test_optuna_define_by_run_is_set_as_the_constructor_would_and_a_users_space_is_kept():
    pytest.importorskip("optuna")
    from ray.tune.search.optuna import OptunaSearch

    def space(trial):
        trial.suggest_float("x", 0, 1)

    searcher = OptunaSearch(seed=0)
    assert compat.optuna_define_by_run(searcher, space, "m", "max") is True
    suggestion = searcher.suggest("t0")
    assert 0 <= suggestion["x"] <= 1
    own = OptunaSearch(space=lambda trial: None, metric="m", mode="max")
    assert compat.optuna_define_by_run(own, space, "m", "max") is False


def test_gradient_registry_is_tensorflows_and_grows_with_a_trace():
    tf = pytest.importorskip("tensorflow")
    registry = compat.gradient_registry()
    assert isinstance(registry, dict) and registry  # TensorFlow registers its own ops' gradients at import

    @tf.custom_gradient
    def identity(x):
        return x, lambda dy: dy

    before = set(registry)
    tf.function(lambda x: identity(x)).get_concrete_function(tf.TensorSpec([], tf.float32))
    assert any(k.startswith("CustomGradient-") for k in set(compat.gradient_registry()) - before)


def test_under_xla_is_true_only_in_a_jit_compiled_trace():
    tf = pytest.importorskip("tensorflow")
    seen = {}

    def probe(x):
        seen[tf.executing_eagerly()] = compat.under_xla()
        return x

    probe(tf.constant(1.0))
    tf.function(probe)(tf.constant(1.0))
    graph = seen[False]
    tf.function(probe, jit_compile=True)(tf.constant(1.0))
    assert seen[True] is False and graph is False and seen[False] is True


def test_replace_tuner_callbacks_swaps_those_of_the_same_class_in_the_restored_run_config():
    from types import SimpleNamespace

    from ray.tune import Callback

    class Mine(Callback):
        pass

    class Theirs(Callback):
        pass

    saved = SimpleNamespace(callbacks=[Mine(), Theirs()])
    tuner = SimpleNamespace(_local_tuner=SimpleNamespace(get_run_config=lambda: saved))
    fresh = Mine()
    compat.replace_tuner_callbacks(tuner, [fresh])
    assert [type(c) for c in saved.callbacks] == [Theirs, Mine] and saved.callbacks[1] is fresh
    with pytest.raises(RuntimeError, match="keeps the callbacks it was saved with"):
        compat.replace_tuner_callbacks(SimpleNamespace(), [fresh])


def test_the_restored_tuner_has_the_private_run_config_this_relies_on():
    from ray.tune.impl.tuner_internal import TunerInternal

    assert callable(getattr(TunerInternal, "get_run_config", None))
