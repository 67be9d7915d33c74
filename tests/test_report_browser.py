"""The HTML report in a real headless Chromium: it renders (not blank) and every image loads.

Chromium is Debian's ``chromium`` package. When it is missing, the tests install it
(``apt-get update`` then ``apt-get install -y chromium``) when they run as root with
apt-get, or skip saying why. Set ``GLIMR_CV_REPORT_SCREENSHOT=path.png`` to keep the
screenshot for a look.
"""

import os
import re
import shutil
import subprocess

import numpy as np
import pytest

pytest.importorskip("matplotlib")

from glimr_cv.results import write_report  # noqa: E402
from test_plots import write_experiment  # noqa: E402

pytestmark = pytest.mark.slow

INSTALL_TIMEOUT = 1800  # apt-get on a slow mirror
RUN_TIMEOUT = 180
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars",
         "--disable-dev-shm-usage"]


def _find_chromium():
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    return "/usr/bin/chromium" if os.access("/usr/bin/chromium", os.X_OK) else None


def _install_chromium():
    """apt-get install chromium; returns why it could not, or None."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return "chromium is not installed, and installing it (apt-get install chromium) needs root"
    if shutil.which("apt-get") is None:
        return "chromium is not installed, and there is no apt-get to install it with"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (["apt-get", "update"], ["apt-get", "install", "-y", "--no-install-recommends", "chromium"]):
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=INSTALL_TIMEOUT, env=env)
        except subprocess.TimeoutExpired:
            return f"{' '.join(command)} took more than {INSTALL_TIMEOUT} s"
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
            return f"{' '.join(command)} failed ({done.returncode}): {' / '.join(tail)}"
    return None


@pytest.fixture(scope="module")
def chromium():
    path = _find_chromium()
    if path is None:
        why = _install_chromium()
        path = _find_chromium()
        if path is None:
            pytest.skip(why or "chromium was installed but is not on the PATH")
    return path


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    root = tmp_path_factory.mktemp("browser")
    return write_report(write_experiment(root, "finished"))


def run_chromium(chromium, tmp_path, *args):
    profile = tmp_path / "profile"
    profile.mkdir(exist_ok=True)
    command = [chromium, *FLAGS, f"--user-data-dir={profile}", *args]
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=RUN_TIMEOUT, cwd=tmp_path,
                              env={**os.environ, "HOME": str(tmp_path)})
    except subprocess.TimeoutExpired:
        pytest.fail(f"chromium did not finish in {RUN_TIMEOUT} s: {' '.join(command)}")


def test_the_report_renders_in_chromium(chromium, report, tmp_path):
    import matplotlib.image

    shot = tmp_path / "report.png"
    done = run_chromium(chromium, tmp_path, f"--screenshot={shot}", "--window-size=1280,2000",
                        "--virtual-time-budget=10000", f"file://{report}")
    assert shot.is_file(), f"no screenshot; chromium said:\n{done.stderr[-3000:]}"
    keep = os.environ.get("GLIMR_CV_REPORT_SCREENSHOT")
    if keep:
        shutil.copy(shot, keep)
    pixels = matplotlib.image.imread(str(shot))
    assert pixels.shape[:2] == (2000, 1280)
    rgb = (pixels[..., :3] * 255).round().astype(np.uint8).reshape(-1, 3)
    colors = np.unique(rgb, axis=0)
    assert len(colors) > 200, f"only {len(colors)} colours: the page looks blank"
    not_white = (rgb < 245).any(axis=1).mean()
    assert not_white > 0.05, f"{not_white:.1%} of the pixels are not white: the page looks blank"
    # the status colours of the badges and plots are on screen (complete green, pruned orange)
    for color in ((0x1B, 0x9E, 0x77), (0xE6, 0x89, 0x2E)):
        assert (np.abs(rgb.astype(int) - color).max(axis=1) <= 8).sum() > 100, color


def test_every_image_loads_in_chromium(chromium, report, tmp_path):
    with open(report, encoding="utf-8") as f:
        page = f.read()
    probe = ("<script>window.addEventListener('load', () => { const images = [...document.images]; "
             "const loaded = images.every(i => i.complete && i.naturalWidth > 0); "
             "document.body.setAttribute('data-images-loaded', String(loaded)); "
             "document.body.setAttribute('data-images', String(images.length)); "
             "document.body.setAttribute('data-widths', images.map(i => i.naturalWidth).join(',')); });</script>")
    copy = tmp_path / "probe.html"
    copy.write_text(page.replace("</body>", probe + "\n</body>"), encoding="utf-8")
    done = run_chromium(chromium, tmp_path, "--dump-dom", "--virtual-time-budget=10000", f"file://{copy}")
    body = re.search(r"<body([^>]*)>", done.stdout)
    assert body, f"no DOM dumped; chromium said:\n{done.stderr[-3000:]}"
    attrs = dict(re.findall(r'(data-[\w-]+)="([^"]*)"', body.group(1)))
    assert attrs.get("data-images") == "4", attrs
    assert attrs.get("data-images-loaded") == "true", attrs
    assert all(int(w) > 400 for w in attrs["data-widths"].split(",")), attrs
