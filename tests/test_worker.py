"""Worker preparation (glimr_cv.engine.trainable._prepare_worker), in a fresh process each."""

import subprocess
import sys

import pytest

pytest.importorskip("tensorflow")

PROBE = """
import keras, tensorflow as tf
from glimr_cv.engine import trainable
trainable._prepare_worker({cpus})
keras.ops.ones((2, 2)) + 1  # TensorFlow's runtime starts here, with the pools set above
print(tf.config.threading.get_intra_op_parallelism_threads(), tf.config.threading.get_inter_op_parallelism_threads())
"""


def pools(cpus):
    out = subprocess.run([sys.executable, "-c", PROBE.format(cpus=cpus)], capture_output=True, text=True,
                         env={"TF_CPP_MIN_LOG_LEVEL": "3", "PATH": ""}, check=True).stdout
    return tuple(int(n) for n in out.split()[-2:])


@pytest.mark.parametrize("cpus, expected", [(1, (1, 1)), (2.0, (2, 2)), (0.5, (1, 1))])
def test_tensorflow_gets_the_cpus_a_fold_reserved(cpus, expected):
    assert pools(cpus) == expected


def test_unknown_cpus_keep_tensorflow_defaults():
    assert pools(None) == (0, 0)  # 0: TensorFlow picks, i.e. every core
