"""A student's script never runs in a page the course shows: checked in a real browser.

A graded notebook with the outputs a hostile submission produces (``<script>``, event handlers, JavaScript, SVG
and Markdown outputs, an iframe, a markdown cell and a raw HTML cell) is made inert by the grading pipeline's
:func:`~course_utils.grader.sanitize.sanitize_notebook`, then rendered the two ways people see it: the feedback
page (nbgrader's feedback exporter, our protections) and nbgrader's formgrader view (its ``formgrade`` template,
served on the instructor's own Jupyter origin). Each page is opened in headless Chromium; every payload would set
``document.title`` or a global flag, and neither may change. A control renders the same notebook *without*
sanitizing and proves the payloads are real (in that page, the script does run).
"""

from __future__ import annotations

import copy
import tempfile
from pathlib import Path

import nbformat
import pytest

from browser_helpers import CHROMIUM_FLAGS, chromium_path
from course_utils.grader import feedback, sanitize

pytestmark = pytest.mark.browser

PAYLOADS = [
    {"text/html": '<b>hello</b><script>window.PWNED = "script"; document.title = "pwned"</script>'},
    {"text/html": '<img src=x onerror="window.PWNED = \'onerror\'; document.title = \'pwned\'">'},
    {"application/javascript": 'window.PWNED = "javascript"; document.title = "pwned"'},
    {"image/svg+xml": '<svg xmlns="http://www.w3.org/2000/svg" onload="window.PWNED = \'svg\'"></svg>'},
    {"text/markdown": '<img src=x onerror="window.PWNED = \'markdown\'">'},
    {"text/html": '<iframe srcdoc="<script>parent.PWNED = \'iframe\'</script>"></iframe>'},
]


def hostile_notebook() -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    code = nbformat.v4.new_code_cell("display(...)")
    code.outputs = [nbformat.v4.new_output("display_data", data={**data, "text/plain": "x"}) for data in PAYLOADS]
    nb.cells.append(code)
    nb.cells.append(nbformat.v4.new_markdown_cell('<img src=x onerror="window.PWNED = \'cell\'"> *text*'))
    raw = nbformat.v4.new_raw_cell('<script>window.PWNED = "raw"</script>')
    raw.metadata["format"] = "text/html"
    nb.cells.append(raw)
    return nb


def feedback_page(nb: nbformat.NotebookNode) -> str:
    from nbconvert import HTMLExporter
    from traitlets.config import Config

    c = Config()
    c.HTMLExporter.sanitize_html = True
    exporter = HTMLExporter(config=c)
    exporter.register_preprocessor(feedback.HideHiddenTests(), enabled=True)
    body, _ = exporter.from_notebook_node(nb)
    return sanitize.protect_page(body)


def formgrade_page(nb: nbformat.NotebookNode, protect: bool = True) -> str:
    """The autograded notebook as nbgrader's formgrader renders it (its own template, its own exporter)."""
    from nbconvert import HTMLExporter
    from nbgrader.server_extensions.formgrader import handlers
    from traitlets.config import Config

    c = Config()
    c.HTMLExporter.template_name = "formgrade"
    c.HTMLExporter.extra_template_basedirs = [handlers.template_path]
    c.HTMLExporter.sanitize_html = protect
    resources = {"assignment_id": "01_x", "notebook_id": "01_x", "submission_id": "s1", "index": 0, "total": 1,
                 "base_url": "/", "student": "mallory", "last_name": "M", "first_name": "M",
                 "notebook_path": "/tree/01_x.ipynb"}       # what formgrader's SubmissionNavigation passes
    body, _ = HTMLExporter(config=c).from_notebook_node(nb, resources=resources)
    return body


@pytest.fixture(scope="module")
def browser():
    if chromium_path() is None:
        pytest.skip("Chromium is not installed (apt-get install -y chromium; tools/install-system-deps.sh)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package (dev extras) is missing")
    profile = tempfile.mkdtemp(prefix="chromium-profile-")
    with sync_api.sync_playwright() as p:
        context = p.chromium.launch_persistent_context(profile, executable_path=chromium_path(), headless=True,
                                                       args=CHROMIUM_FLAGS)
        yield context
        context.close()


def _ran(browser, html: str, tmp_path: Path, name: str) -> list[str]:
    path = tmp_path / f"{name}.html"
    path.write_text(html)
    page = browser.new_page()
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    page.goto(path.as_uri())
    page.wait_for_timeout(1500)
    ran = page.evaluate("() => [window.PWNED || null, document.title]")
    page.close()
    return [x for x in (ran[0], "title" if ran[1] == "pwned" else None, *dialogs) if x]


def test_the_payloads_are_real_without_sanitizing(browser, tmp_path: Path):
    assert _ran(browser, formgrade_page(hostile_notebook(), protect=False), tmp_path, "control"), \
        "the control page should run the student's script: the payloads are not testing anything"


@pytest.mark.parametrize("render", [feedback_page, formgrade_page], ids=["feedback", "formgrader"])
def test_no_script_of_the_student_runs(browser, tmp_path: Path, render):
    nb = sanitize.sanitize_notebook(copy.deepcopy(hostile_notebook()))
    assert _ran(browser, render(nb), tmp_path, render.__name__) == []
