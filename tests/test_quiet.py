"""A quiet terminal: what a new user sees from `make demo` and from a fold that fails."""

import os
import re
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.slow

# TensorFlow's C++ log lines (absl: I1128 ..., E0000 ...), its start-up notes, and Ray Tune's banners
NOISE = re.compile(r"^\S*[IWEF]\d{4} |absl::InitializeLog|oneDNN|cuda|Configuration for experiment|Number of trials|"
                   r"tensorboard|Token authentication|Trial task failed|Traceback \(most recent", re.IGNORECASE)


def run(args, cwd, timeout=420):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TF_CPP", "RAY_"))}  # as a user's shell
    out = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)
    return out.returncode, out.stdout + out.stderr


def test_the_demo_prints_the_leaderboard_and_its_own_lines_only(tmp_path):
    code, text = run([sys.executable, "-m", "glimr_cv.cli", "demo", "--samples", "2", "--folds", "2", "--epochs", "1",
                      "--dir", str(tmp_path)], tmp_path)
    assert code == 0, text
    noise = [line for line in text.splitlines() if NOISE.search(line)]
    assert not noise, "\n".join(noise)
    lines = text.splitlines()
    final = max(i for i, line in enumerate(lines) if line.startswith("rank  config  status"))
    assert lines[final + 1].lstrip().startswith("1 "), text  # the last board is the final one, best first
    assert sum(line.startswith("best configuration:") for line in lines) == 1
    assert f"results: {tmp_path}" in text


def test_a_fold_error_is_one_leaderboard_line_with_the_path_of_its_traceback(tmp_path):
    script = tmp_path / "failing.py"
    script.write_text(textwrap.dedent('''
        from glimr_cv import Search
        from glimr_cv.demo import SPACE, loader

        def builder(config):
            raise RuntimeError("this builder fails on every worker")

        if __name__ == "__main__":
            space = dict(SPACE, optimization={**SPACE["optimization"], "epochs": 1})
            search = Search(space, builder, loader, cv_folds=2, max_failures=0)
            search.set_reporter(max_report_frequency=1000)
            search.experiment("out", name="x", num_samples=2, check=False)
    '''))
    code, text = run([sys.executable, str(script)], tmp_path)
    assert code == 0, text
    noise = [line for line in text.splitlines() if NOISE.search(line)]
    assert not noise, "\n".join(noise)
    errors = [line for line in text.splitlines() if "this builder fails on every worker" in line]
    final = text[text.rindex("rank  config  status"):]
    assert len([e for e in errors if e in final]) == 2  # one line per configuration in the final board
    for line in errors:
        path = re.search(r"traceback: (\S+error\.txt)\)", line).group(1)
        assert os.path.isfile(path) and "RuntimeError" in open(path).read()
