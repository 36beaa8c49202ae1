"""The widgets work in a real browser: JupyterLab + headless Chromium, as a learner opens the notebooks.

For every solutions notebook that shows a widget: open it in JupyterLab, Run All, change a control (a slider
handle moved with the arrow keys, a dropdown, a text box + Enter) and check that what the widget displays (its
plot, printed figures or HTML) changed. A screenshot of the widget cell goes to docs/screenshots/<notebook>.png.

The solutions notebooks are used (copied to a temporary folder) because widgets that wrap a learner's function
need an answer to draw anything. Needs Debian's ``chromium`` (``apt-get install -y chromium``; `make test` and
.ci/run install it) and the ``playwright`` Python package (dev extras); skips with the reason when either is
missing. Playwright's own browser download is never used.

Environment knobs: COURSE_BROWSER_NOTEBOOKS (a folder laid out like solutions/, default solutions/),
COURSE_SCREENSHOT_DIR (default docs/screenshots), CHROMIUM (the browser executable).

Learner mode by default: the kernels run exactly as a learner's (no NBGRADER_EXECUTION), since a notebook's
autograding fast path may show a smaller widget (e.g. one cached run instead of a sweep). The time is mostly the
notebooks' own run time (the whole course: <= 5 min on 2 cores); JupyterLab is loaded once and reused.
COURSE_BROWSER_AUTOGRADING=1 runs the kernels with NBGRADER_EXECUTION=autograde instead (faster, smaller demos).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from browser_helpers import (CHROMIUM_FLAGS, LabServer, chromium_path, close_notebooks, has_widgets,
                             open_and_run_all, poke_widgets, screenshot_cell)

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[1]
SOURCE = Path(os.environ.get("COURSE_BROWSER_NOTEBOOKS", ROOT / "solutions"))
SCREENSHOTS = Path(os.environ.get("COURSE_SCREENSHOT_DIR", ROOT / "docs" / "screenshots"))
NOTEBOOKS = sorted(p for p in SOURCE.glob("*/*.ipynb") if ".ipynb_checkpoints" not in p.parts)
WIDGET_NOTEBOOKS = [p for p in NOTEBOOKS if has_widgets(p)]
AUTOGRADING = os.environ.get("COURSE_BROWSER_AUTOGRADING", "") not in ("", "0")


@pytest.fixture(scope="module")
def playwright_api():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("python package 'playwright' is not installed (pip install -e '.[dev]')")
    if chromium_path() is None:
        pytest.skip("Chromium is not installed (apt-get install -y chromium; tools/install-system-deps.sh)")
    manager = sync_playwright().start()
    yield manager
    manager.stop()


@pytest.fixture(scope="module")
def browser(playwright_api):
    profile = tempfile.mkdtemp(prefix="chromium-profile-")
    context = playwright_api.chromium.launch_persistent_context(
        profile, executable_path=chromium_path(), headless=True, args=CHROMIUM_FLAGS,
        viewport={"width": 1280, "height": 900}, device_scale_factor=1)
    context.set_default_timeout(30_000)
    yield context
    context.close()
    shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture(scope="module")
def lab(playwright_api):
    """A JupyterLab server on a temporary copy of the notebooks (the sources are never modified)."""
    root = Path(tempfile.mkdtemp(prefix="lab-root-"))
    for nb in WIDGET_NOTEBOOKS:
        shutil.copytree(nb.parent, root / nb.parent.name, dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    server = LabServer(root, extra_env={"NBGRADER_EXECUTION": "autograde"} if AUTOGRADING else None)
    try:
        server.start()
        assert server.api("GET", "/api")["version"]
        yield server
    finally:
        pid = server.proc.pid if server.proc else None
        survivors = server.stop()
        shutil.rmtree(root, ignore_errors=True)
        assert not survivors, f"processes of the JupyterLab server survived its shutdown: {survivors}"
        if pid is not None:
            with pytest.raises(ProcessLookupError):
                os.killpg(pid, 0)  # the server's whole process group is gone


@pytest.fixture(scope="module")
def page(browser, lab):
    """One page for the whole module: JupyterLab loads once, each test opens its notebook in it."""
    page = browser.new_page()
    page.on("dialog", lambda dialog: dialog.dismiss())
    yield page
    page.close()


@pytest.mark.skipif(not WIDGET_NOTEBOOKS, reason=f"no notebook with a widget under {SOURCE} yet")
@pytest.mark.parametrize("notebook", WIDGET_NOTEBOOKS, ids=[p.stem for p in WIDGET_NOTEBOOKS])
def test_widget_redraws_in_the_browser(notebook: Path, lab: LabServer, page):
    rel = f"{notebook.parent.name}/{notebook.name}"
    try:
        run = open_and_run_all(page, lab.url, rel)
        state = run.state
        assert not state["errors"], f"{rel}: cells raised in the browser after {run.seconds:.0f} s: {state['errors']}"
        assert state["executed"] == state["total"], f"{rel}: not every code cell ran ({state})"
        pokes = poke_widgets(page, run)
        if not pokes:
            pytest.skip(f"{rel}: no slider, dropdown, toggle or text box in the page after Run All")
        report = "; ".join(f"code cell {p.cell} {p.control} {p.description!r}: "
                           f"{'redrew' if p.changed else 'no change'} ({p.seconds} s)" for p in pokes)
        print(f"{rel}: JupyterLab loaded in {run.load_seconds:.1f} s, notebook + kernel ready in "
              f"{run.kernel_seconds:.1f} s, Run All took {run.seconds:.1f} s "
              f"(attempt {run.attempts}); {report}")
        responded = [p for p in pokes if p.changed]
        assert responded, f"{rel}: changing a control did not change any widget display: {report}"
        screenshot_cell(page, run, responded[0].cell, SCREENSHOTS / f"{notebook.stem}.png")
    finally:
        close_notebooks(page)
        lab.shutdown_kernels()
