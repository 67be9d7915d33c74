"""The notebooks are tests.

Every ``notebooks/*.ipynb`` runs top to bottom in a fresh kernel of this
interpreter, on a copy in a temporary folder (its results go there), with
``GLIMR_CV_NOTEBOOK_BUDGET=small``. The committed files themselves must carry the
outputs of a complete run (the full budget), without errors or start-up noise.
"""

import concurrent.futures
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile
import time

import nbformat
import pytest

NOTEBOOK_DIR = pathlib.Path(__file__).resolve().parent.parent / "notebooks"
NOTEBOOKS = sorted(p.name for p in NOTEBOOK_DIR.glob("*.ipynb"))
CELL_TIMEOUT = 600  # seconds for one cell; a whole small run takes about a minute
KERNEL = "python3"

# Text no output may hold: TensorFlow's C++ start-up lines, and Ray Tune's experiment box
FORBIDDEN = [
    ("a TensorFlow/absl C++ log line", re.compile(r"I0000|^[IWEF]\d{4} \d\d:\d\d:\d\d")),
    ("TensorFlow's oneDNN notice", re.compile(r"oneDNN")),
    ("a TensorFlow CUDA line", re.compile(r"cuda", re.I)),
    ("Ray Tune's experiment box", re.compile(r"Configuration for experiment")),
]
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def _read(path) -> nbformat.NotebookNode:
    return nbformat.read(str(path), as_version=4)


def _code_cells(nb):
    return [(i, cell) for i, cell in enumerate(nb.cells) if cell.cell_type == "code"]


def _output_text(output) -> str:
    if output.output_type == "stream":
        return output.get("text", "")
    if output.output_type == "error":
        return "\n".join([f"{output.ename}: {output.evalue}", *output.get("traceback", [])])
    data = output.get("data", {})
    return "\n".join(v if isinstance(v, str) else "\n".join(v) for k, v in data.items() if k.startswith("text/"))


def _output_problems(nb) -> list[str]:
    """Error outputs and forbidden text, one line each, naming the cell."""
    problems = []
    for i, cell in _code_cells(nb):
        for output in cell.get("outputs", []):
            if output.output_type == "error":
                problems.append(f"cell {i}: an error output ({output.ename}: {output.evalue})")
                continue
            for line in ANSI.sub("", _output_text(output)).splitlines():
                what = next((what for what, pattern in FORBIDDEN if pattern.search(line)), None)
                if what:
                    problems.append(f"cell {i}: {what}: {line[:160]!r}")
    return problems


def _kernel_prefix() -> str | None:
    """``sys.prefix`` of the interpreter that the ``python3`` kernelspec starts, or None without one."""
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    try:
        spec = KernelSpecManager().get_kernel_spec(KERNEL)
    except NoSuchKernel:
        return None
    exe = spec.argv[0]
    # jupyter_client starts its own interpreter (this one) for a bare "python"
    if exe in {"python", f"python{sys.version_info[0]}", "python%d.%d" % sys.version_info[:2]}:
        exe = sys.executable
    try:
        out = subprocess.run([exe, "-c", "import sys; print(sys.prefix)"], capture_output=True, text=True, timeout=60)
    except OSError:
        return ""
    return out.stdout.strip()


def _failure(name: str, nb, err: Exception) -> str:
    """The failing cell's source and its error, from the executed notebook."""
    failing = next(((i, c) for i, c in _code_cells(nb)
                    if any(o.output_type == "error" for o in c.get("outputs", []))), None)
    if failing is None:  # a timeout or a dead kernel leaves no error output
        source = getattr(err, "cell", None)
        detail = ANSI.sub("", str(err))
        return f"{name}: {type(err).__name__}\n{detail}" + (f"\n--- cell source ---\n{source}" if source else "")
    i, cell = failing
    error = next(o for o in cell.outputs if o.output_type == "error")
    trace = ANSI.sub("", "\n".join(error.get("traceback", [])))
    why = "" if type(err).__name__ == "CellExecutionError" else f" ({type(err).__name__}: {str(err).splitlines()[0]})"
    return (f"{name}: cell {i} raised {error.ename}: {error.evalue}{why}\n"
            f"--- cell source ---\n{cell.source}\n--- traceback ---\n{trace}")


def _kernel_env() -> dict:
    """The kernel's environment: a user's, with the small budget.

    Without ``PYTEST_CURRENT_TEST`` the kernel sends what C++ code writes to file
    descriptors 1 and 2 into the notebook, as in Jupyter (ipykernel does not under
    pytest), and without the suite's ``TF_CPP_MIN_LOG_LEVEL`` TensorFlow logs as it
    would for a user.
    """
    env = {k: v for k, v in os.environ.items() if k not in ("PYTEST_CURRENT_TEST", "TF_CPP_MIN_LOG_LEVEL")}
    env["GLIMR_CV_NOTEBOOK_BUDGET"] = "small"
    env["RAY_ADDRESS"] = "local"  # the kernel starts its own Ray, whatever else runs on this machine
    return env


def _execute(name: str, folder, kernel: str, shared: pathlib.Path | None = None):
    """Run notebook ``name`` on the small budget in ``folder``: ``(executed notebook, failure message or None)``.

    With ``shared``, the result is also published there, whatever happens.
    """
    from nbclient import NotebookClient
    from nbclient.exceptions import CellControlSignal, DeadKernelError

    copy = folder / name
    nb, failure = None, "the run raised before its notebook was read"
    try:
        shutil.copyfile(NOTEBOOK_DIR / name, copy)
        nb = _read(copy)
        client = NotebookClient(nb, kernel_name=kernel, timeout=CELL_TIMEOUT,
                                resources={"metadata": {"path": str(folder)}})
        try:
            # the kernel's own stderr (Ray's daemons write there when it shuts them down) goes to a file,
            # not to the terminal of an xdist controller, which captures nothing
            with open(folder / "kernel.stderr", "wb") as stderr:
                client.execute(env=_kernel_env(), stderr=stderr)
            failure = None
        except (CellControlSignal, DeadKernelError, TimeoutError, RuntimeError) as err:
            failure = _failure(name, nb, err)
    except BaseException as err:
        failure = f"{name}: the run itself failed: {err!r}"
        raise
    finally:
        if shared is not None:
            if nb is not None:
                nbformat.write(nb, str(copy))
            _publish(shared, name, copy if nb is not None else None, failure)
    return nb, failure


_SMALL_RUNS: dict[str, concurrent.futures.Future] = {}


def _venv_kernel_name() -> str:
    """The ``python3`` kernel, made to run this interpreter (this venv); raises if it cannot.

    A fresh venv has ipykernel's spec, which starts the launching interpreter; a
    spec in the user's folder or elsewhere may point at another Python, so the
    venv's own spec is installed then and preferred.
    """
    if _kernel_prefix() != sys.prefix:
        subprocess.run([sys.executable, "-m", "ipykernel", "install", "--sys-prefix", "--name", KERNEL],
                       check=True, capture_output=True)
        os.environ["JUPYTER_PREFER_ENV_PATH"] = "1"  # the venv's spec before the user's, for this session
        found = _kernel_prefix()
        if found != sys.prefix:
            raise RuntimeError(f"the {KERNEL!r} kernelspec starts the Python of {found!r}, not this venv "
                               f"({sys.prefix!r}), even after `{sys.executable} -m ipykernel install --sys-prefix`")
    return KERNEL


SHARED = "GLIMR_CV_NOTEBOOK_RUNS"  # under xdist: the folder where the controller's runs leave their results


def start_small_runs(shared: pathlib.Path | None = None) -> None:
    """Start running every notebook on the small budget, one at a time, in a background thread.

    Called by ``conftest`` when the small-budget test is selected, so that the runs
    overlap other tests: in this process (``pytest_collection_finish``), or, under
    xdist, in the controller, which publishes each result in ``shared`` for the worker
    that runs the test. :func:`small_runs` waits for them.
    """
    if _SMALL_RUNS:
        return
    try:
        kernel = _venv_kernel_name()
    except (RuntimeError, subprocess.CalledProcessError) as err:
        failed = concurrent.futures.Future()
        failed.set_result((None, f"no kernel for this venv: {err}"))
        _SMALL_RUNS.update(dict.fromkeys(NOTEBOOKS, failed))
        for name in NOTEBOOKS if shared else ():
            _publish(shared, name, None, failed.result()[1])
        return
    root = pathlib.Path(tempfile.mkdtemp(prefix="glimr_cv_notebooks_", dir=shared))
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="notebooks")
    for name in NOTEBOOKS:
        folder = root / name.removesuffix(".ipynb")
        folder.mkdir()
        _SMALL_RUNS[name] = pool.submit(_execute, name, folder, kernel, shared)
    pool.shutdown(wait=False)


def _publish(shared: pathlib.Path, name: str, path, failure: str | None) -> None:
    """Leave one run's result for another process: ``<name>.json``, written whole or not at all."""
    tmp = shared / f"{name}.json.tmp"
    tmp.write_text(json.dumps({"notebook": str(path) if path else None, "failure": failure}))
    os.replace(tmp, shared / f"{name}.json")


def _published(shared: pathlib.Path, name: str):
    """The result another process published for ``name``, once it is there."""
    done = shared / f"{name}.json"
    while not done.exists():  # the controller always publishes, failures included
        time.sleep(0.5)
    found = json.loads(done.read_text())
    return (_read(found["notebook"]) if found["notebook"] else None), found["failure"]


@pytest.fixture(scope="module")
def small_runs():
    """Every notebook's small run: ``{name: (executed notebook, failure message or None)}``."""
    shared = os.environ.get(SHARED)
    if shared and (pathlib.Path(shared) / "started").exists():
        return {name: _published(pathlib.Path(shared), name) for name in NOTEBOOKS}
    start_small_runs()  # a no-op when the collection hook started them
    return {name: future.result() for name, future in _SMALL_RUNS.items()}


@pytest.mark.slow
@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs_on_the_small_budget(name, small_runs):
    nb, failure = small_runs[name]
    if failure:
        pytest.fail(failure, pytrace=False)
    problems = _output_problems(nb)
    assert not problems, f"{name} (small budget) printed:\n" + "\n".join(problems)


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_first_code_cell_reads_the_budget(name):
    cells = _code_cells(_read(NOTEBOOK_DIR / name))
    assert cells, f"{name} has no code cell"
    assert 'os.environ.get("GLIMR_CV_NOTEBOOK_BUDGET", "full")' in cells[0][1].source, (
        f"{name}: the first code cell must set BUDGET = os.environ.get(\"GLIMR_CV_NOTEBOOK_BUDGET\", \"full\")")


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_committed_notebook_was_run_top_to_bottom(name):
    cells = _code_cells(_read(NOTEBOOK_DIR / name))
    unexecuted = [i for i, cell in cells if cell.get("execution_count") is None]
    assert not unexecuted, f"{name}: code cells {unexecuted} were never executed; commit the outputs of a full run"
    counts = [cell["execution_count"] for _, cell in cells]
    assert counts == list(range(1, len(cells) + 1)), (
        f"{name}: execution counts {counts} are not 1..{len(cells)}: run it once, top to bottom, with a fresh kernel")
    assert any(cell.get("outputs") for _, cell in cells), f"{name}: no cell has an output"


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_committed_notebook_outputs_are_clean(name):
    problems = _output_problems(_read(NOTEBOOK_DIR / name))
    assert not problems, f"{name}:\n" + "\n".join(problems)
