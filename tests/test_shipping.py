"""User code reaches the workers: a builder from a module the workers cannot import still trains."""

import os
import sys
import textwrap

import pytest

from glimr_cv.engine.shipping import unimportable, user_modules

MODULE = textwrap.dedent('''
    """A user's own module, importable only through a sys.path entry the driver added at run time."""

    from glimr_cv.demo import builder as demo_builder, loader as demo_loader


    def my_builder(config):
        return demo_builder(config)


    def my_loader(batch_size, cv_index, cv_folds):
        return demo_loader(batch_size, cv_index=cv_index, cv_folds=cv_folds)
''')


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    folder = tmp_path / "elsewhere"
    folder.mkdir()
    (folder / "my_glimr_code.py").write_text(MODULE)
    monkeypatch.syspath_prepend(str(folder))  # what a notebook's sys.path.insert does
    monkeypatch.chdir(tmp_path)  # the module is not in the working folder either
    import my_glimr_code

    yield my_glimr_code
    sys.modules.pop("my_glimr_code", None)


def test_the_modules_of_functions_classes_and_nested_space_leaves_are_found(user_module):
    import numpy as np

    space = {"tasks": {"t": {"loss": {"loss": user_module.my_builder}, "metrics": [{"metric": np.mean}]}}}
    assert user_modules([user_module.my_loader, None, 3, "text", space]) == ["my_glimr_code", "numpy"]
    assert user_modules([len, os.path.join]) == []  # builtins and the standard library never travel


def test_a_module_from_a_run_time_sys_path_entry_is_unimportable_for_workers(user_module):
    assert unimportable(["my_glimr_code", "numpy", "glimr_cv"]) == ["my_glimr_code"]


@pytest.mark.slow
def test_a_builder_from_a_module_the_workers_cannot_import_trains_every_fold(user_module, ray_local, tmp_path):
    from glimr_cv import Search
    from glimr_cv.demo import SPACE

    space = dict(SPACE, optimization={**SPACE["optimization"], "epochs": 1})
    search = Search(space, user_module.my_builder, user_module.my_loader, cv_folds=2, racing=None)
    search.set_reporter(max_report_frequency=0)
    results = search.experiment(str(tmp_path / "runs"), name="shipped", num_samples=1, check=False)
    assert list(results.table["status"]) == ["complete"], results.table["error"].tolist()
    assert set(results.folds["status"]) == {"complete"} and len(results.folds) == 2


HELPER = textwrap.dedent('''
    """A helper module the user's code imports, also only on the driver's run-time sys.path."""

    def width(config):
        return config["units"]
''')

USES_HELPER = textwrap.dedent('''
    import my_glimr_helper


    def my_builder(config):
        from glimr_cv.demo import builder

        assert my_glimr_helper.width(config) == config["units"]
        return builder(config)
''')


def test_the_pickle_scan_finds_globals_and_modules_of_code_pickled_by_value(user_module):
    import pickle

    from ray import cloudpickle

    from glimr_cv.engine.shipping import pickled_modules

    assert pickled_modules(pickle.dumps([len, textwrap.dedent])) == []  # the standard library never counts
    import numpy as np

    assert pickled_modules(pickle.dumps(np.mean)) == ["numpy"]
    cloudpickle.register_pickle_by_value(user_module)
    try:
        modules = pickled_modules(cloudpickle.dumps(user_module.my_builder))
    finally:
        cloudpickle.unregister_pickle_by_value(user_module)
    assert "glimr_cv" in modules  # imported by the shipped code, so the workers must import it


def test_a_module_that_shipped_code_imports_travels_too(tmp_path, monkeypatch):
    from ray import cloudpickle

    from glimr_cv.engine.shipping import ship_by_value

    folder = tmp_path / "elsewhere"
    folder.mkdir()
    (folder / "my_glimr_helper.py").write_text(HELPER)
    (folder / "my_glimr_uses_helper.py").write_text(USES_HELPER)
    monkeypatch.syspath_prepend(str(folder))
    monkeypatch.chdir(tmp_path)
    import my_glimr_uses_helper

    try:
        assert ship_by_value([my_glimr_uses_helper.my_builder]) == ["my_glimr_uses_helper", "my_glimr_helper"]
    finally:
        for name in ("my_glimr_uses_helper", "my_glimr_helper"):
            cloudpickle.unregister_pickle_by_value(sys.modules.pop(name))


def test_a_module_workers_cannot_import_and_that_cannot_travel_is_named_before_anything_runs(monkeypatch):
    import types

    from glimr_cv.engine import shipping

    compiled = types.ModuleType("lab_compiled_ext")
    compiled.__file__ = "/opt/lab/lab_compiled_ext.cpython-311-x86_64-linux-gnu.so"

    def builder(config):
        return compiled

    builder.__module__ = "lab_compiled_ext"
    monkeypatch.setitem(sys.modules, "lab_compiled_ext", compiled)
    with pytest.raises(ImportError, match=r"builder, loader: expected every module they use to be importable by "
                                          r"Ray workers, but \['lab_compiled_ext'\] cannot be .* install it where "
                                          r"the workers run"):
        shipping.ship_by_value([builder])
