"""The widgets work in a real browser: JupyterLab and Notebook 7 in headless Chromium, as a learner opens them.

For every solutions notebook that shows a widget, in each front end: open it, Run All, change a control (a
slider handle moved with the arrow keys, a dropdown, a text box + Enter) and check that what the widget
displays (its plot, printed figures or HTML) changed. Then save the notebook as the learner would and convert
the saved file with nbconvert: every widget's output must show its static picture there (the front ends save
no widget state by default, so nbconvert, GitHub's viewer or VS Code without widgets show the picture), while
the live page shows the widgets and no duplicate picture. JupyterLab's screenshot of the widget cell goes to
docs/screenshots/<notebook>.png.

The solutions notebooks are used (copied to a temporary folder) because widgets that wrap a learner's function
need an answer to draw anything. Needs Debian's ``chromium`` (``apt-get install -y chromium``; `make test` and
.ci/run install it) and the ``playwright`` Python package (dev extras); skips with the reason when either is
missing. Playwright's own browser download is never used.

Environment knobs: COURSE_BROWSER_NOTEBOOKS (a folder laid out like solutions/, default solutions/),
COURSE_BROWSER_APPS (default ``lab,notebook``), COURSE_SCREENSHOT_DIR (default docs/screenshots), CHROMIUM
(the browser executable).

The kernels run exactly as a learner's (no NBGRADER_EXECUTION): while autograding, the widget factories build
nothing (see tests/test_widget_fallbacks.py), so there would be nothing to drive. The time is mostly the
notebooks' own run time, once per front end (the whole course: <= 5 min on 2 cores); JupyterLab is loaded once
and reused, Notebook 7 loads one page per notebook.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import nbformat
import pytest

from browser_helpers import (APPS, CHROMIUM_FLAGS, LabServer, chromium_path, close_notebooks, has_widgets,
                             open_and_run_all, poke_widgets, save_notebook, screenshot_cell)

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[1]
SOURCE = Path(os.environ.get("COURSE_BROWSER_NOTEBOOKS", ROOT / "solutions"))
SCREENSHOTS = Path(os.environ.get("COURSE_SCREENSHOT_DIR", ROOT / "docs" / "screenshots"))
NOTEBOOKS = sorted(p for p in SOURCE.glob("*/*.ipynb") if ".ipynb_checkpoints" not in p.parts)
WIDGET_NOTEBOOKS = [p for p in NOTEBOOKS if has_widgets(p)]
FRONT_ENDS = [a.strip() for a in os.environ.get("COURSE_BROWSER_APPS", "lab,notebook").split(",") if a.strip()]
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


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


@pytest.fixture(scope="module", params=FRONT_ENDS)
def lab(request, playwright_api):
    """A JupyterLab or Notebook 7 server on a temporary copy of the notebooks (the sources are never modified)."""
    if request.param not in APPS:
        pytest.fail(f"COURSE_BROWSER_APPS names {request.param!r}; use any of {sorted(APPS)}")
    root = Path(tempfile.mkdtemp(prefix=f"{request.param}-root-"))
    for nb in WIDGET_NOTEBOOKS:
        shutil.copytree(nb.parent, root / nb.parent.name, dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    server = LabServer(root, app=request.param)
    try:
        server.start()
        assert server.api("GET", "/api")["version"]
        yield server
    finally:
        pid = server.proc.pid if server.proc else None
        survivors = server.stop()
        shutil.rmtree(root, ignore_errors=True)
        assert not survivors, f"processes of the {APPS[request.param]} server survived its shutdown: {survivors}"
        if pid is not None:
            with pytest.raises(ProcessLookupError):
                os.killpg(pid, 0)  # the server's whole process group is gone


@pytest.fixture(scope="module")
def page(browser, lab):
    """One page per front end: JupyterLab loads once, each test opens its notebook in it (Notebook 7: a page
    load per notebook, in the same tab)."""
    page = browser.new_page()
    # "Leave the page?" (Notebook 7 moving on to the next notebook): yes. Anything else: no.
    page.on("dialog", lambda dialog: dialog.accept() if dialog.type == "beforeunload" else dialog.dismiss())
    yield page
    page.close()


def _pictures_in_saved_html(path: Path) -> list[str]:
    """For each output of the saved notebook that holds a widget: why its static picture is missing from
    nbconvert's HTML (empty when every widget shows one)."""
    from bs4 import BeautifulSoup
    from nbconvert import HTMLExporter

    nb = nbformat.read(path, as_version=4)
    widget_cells = [i for i, c in enumerate(nb.cells) if c.cell_type == "code"
                    and any(WIDGET_VIEW in o.get("data", {}) for o in c.get("outputs", []))]
    problems = [] if widget_cells else [f"{path.name}: no widget output was saved"]
    body, _ = HTMLExporter().from_notebook_node(nb)
    soup = BeautifulSoup(body, "html.parser")
    cells = soup.select("div.jp-Cell")
    for i in widget_cells:
        if not cells[i].select(".course-widget-static"):
            source = nb.cells[i].source.splitlines()[-1][:60]
            problems.append(f"cell {i} ({source!r}): a widget without its static picture in the HTML")
    if soup.find("script", type=WIDGET_VIEW):
        problems.append("the saved notebook holds widget state: nbconvert draws live widgets instead of pictures")
    return problems


@pytest.mark.skipif(not WIDGET_NOTEBOOKS, reason=f"no notebook with a widget under {SOURCE} yet")
@pytest.mark.parametrize("notebook", WIDGET_NOTEBOOKS, ids=[p.stem for p in WIDGET_NOTEBOOKS])
def test_widget_redraws_in_the_browser(notebook: Path, lab: LabServer, page):
    rel = f"{notebook.parent.name}/{notebook.name}"
    front_end = APPS[lab.app]
    try:
        run = open_and_run_all(page, lab.url, rel, app=lab.app)
        state = run.state
        assert not state["errors"], (f"{front_end}, {rel}: cells raised in the browser after {run.seconds:.0f} s: "
                                     f"{state['errors']}")
        assert state["executed"] == state["total"], f"{front_end}, {rel}: not every code cell ran ({state})"
        pokes = poke_widgets(page, run)
        if not pokes:
            pytest.skip(f"{front_end}, {rel}: no slider, dropdown, toggle or text box in the page after Run All")
        report = "; ".join(f"code cell {p.cell} {p.control} {p.description!r}: "
                           f"{'redrew' if p.changed else 'no change'} ({p.seconds} s)" for p in pokes)
        print(f"{front_end}, {rel}: loaded in {run.load_seconds:.1f} s, notebook + kernel ready in "
              f"{run.kernel_seconds:.1f} s, Run All took {run.seconds:.1f} s (attempt {run.attempts}); {report}")
        responded = [p for p in pokes if p.changed]
        assert responded, f"{front_end}, {rel}: changing a control did not change any widget display: {report}"
        shown = page.locator(f'[id="{run.panel}"] .course-widget-static').count()
        assert shown == 0, f"{front_end}, {rel}: {shown} static picture(s) drawn next to the live widgets"
        if lab.app == "lab":
            screenshot_cell(page, run, responded[0].cell, SCREENSHOTS / f"{notebook.stem}.png")
        save_notebook(page, run)
        problems = _pictures_in_saved_html(lab.root / rel)
        assert not problems, f"{front_end}, {rel}, saved and converted by nbconvert: " + "; ".join(problems)
    finally:
        close_notebooks(page)
        lab.shutdown_kernels()
