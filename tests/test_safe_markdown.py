"""Links and images in a graded notebook's markdown: only http(s), mailto, relative paths, anchors and the cell's own
attachments reach a page (:mod:`course_utils.grader.safe_markdown`).

Each payload goes through the two layers separately, so that each is proven on its own: the stored notebook
(:func:`~course_utils.grader.sanitize.sanitize_notebook`, then nbconvert's *plain* renderer, the one formgrader uses
without the course's config) and the course's ``markdown2html`` filter (the raw cell, as formgrader renders it
with the course's config). A control renders every payload with nbconvert's plain renderer and proves it live.
The last tests render a hostile autograded notebook exactly as formgrader does (red team's ``render_formgrade.py``).
"""

from __future__ import annotations

import base64
import copy
import re
from html.parser import HTMLParser
from pathlib import Path

import nbformat
import pytest
from jinja2 import Environment
from nbconvert.filters.markdown_mistune import IPythonRenderer, MarkdownWithMath

from course_utils.grader import pipeline, safe_markdown, sanitize

PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\0" * 16).decode()
SVG = base64.b64encode(b'<svg xmlns="http://www.w3.org/2000/svg" onload="alert(1)"/>').decode()
JS = "alert(document.domain)"

# (id, markdown, attachments): every one is a live script link or a page crash without the sanitizer
PAYLOADS = [
    ("plain", f"[see my derivation](javascript:{JS})", None),
    ("reference", f"[ref link][r]\n\n[r]: javascript:{JS}", None),
    ("reference-title", f'[k]\n\n[k]: javascript:{JS} "title"', None),
    ("entity-decimal", f"[e](&#106;avascript:{JS})", None),
    ("entity-hex", f"[e](jav&#x61;script:{JS})", None),
    ("entity-colon", f"[e](javascript&colon;{JS})", None),
    ("upper-case", f"[d](JaVaScRiPt:{JS})", None),
    ("leading-space", f"[g]( javascript:{JS})", None),
    ("vbscript", "[h](vbscript:msgbox(1))", None),
    ("autolink", f"<javascript:{JS}>", None),
    ("image", f"![img](javascript:{JS})", None),
    ("image-reference", "![i][p]\n\n[p]: vbscript:x", None),
    ("data-link", "[data](data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==)", None),
    ("data-image", "![svg](data:image/svg+xml;base64," + SVG + ")", None),
    ("nested", f"> * [in a list in a quote](javascript:{JS})", None),
    ("math-href", f"$\\href{{javascript:{JS}}}{{math link}}$", None),
    ("missing-attachment", "![x](attachment:nope.png)", None),
    ("svg-attachment", "![x](attachment:evil.svg)", {"evil.svg": {"image/svg+xml": SVG}}),
    ("raw-anchor", f'Look: <a href="javascript:{JS}">my plot</a>', None),
    ("raw-anchor-obfuscated", f'<A HREF=" JaVa&#10;ScRiPt:{JS}">x</A>', None),
    ("raw-image", '<img src="vbscript:msgbox(1)">', None),
]
# HTML-like payloads: in a student's cell the escaping of HTML already made them text (no note needed there)
ESCAPED = {"autolink", "raw-anchor", "raw-anchor-obfuscated", "raw-image"}
BENIGN = [
    ("https", "[course](https://example.org/a?b=1#c)", "https://example.org/a?b=1#c"),
    ("http-autolink", "<http://example.org>", "http://example.org"),
    ("mailto-autolink", "write to <mailto:me@example.org>", "mailto:me@example.org"),
    ("bare-url", "see https://example.org/x", "https://example.org/x"),
    ("mailto", "[mail me](mailto:me@example.org)", "mailto:me@example.org"),
    ("relative", "[next](../02_sampling/02_sampling.ipynb)", "../02_sampling/02_sampling.ipynb"),
    ("anchor", "[up](#Attention)", "#Attention"),
    ("relative-image", "![plot](figures/loss.png)", "figures/loss.png"),
    ("attachment", "![pasted](attachment:pasted.png)", "data:image/png;base64,"),
    ("math", "Softmax: $p_i = e^{z_i} / \\sum_j e^{z_j}$ and $$\\sqrt{d_k}$$ cost $5", None),
]
ATTACHMENT = {"pasted.png": {"image/png": PNG}}


class _Live(HTMLParser):
    """What a browser would act on: a script URL (javascript:, vbscript:, data: other than an inline PNG/JPEG/GIF
    image) in any URL attribute, and MathJax link commands in typeset text (outside pre/code)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.found: list[str] = []
        self.literal = 0

    def handle_starttag(self, tag, attrs):
        self.literal += tag in ("pre", "code")
        for name, value in attrs:
            url = re.sub(r"[\x00-\x20]", "", value or "").lower()
            if name in ("href", "src", "xlink:href", "action", "formaction", "srcset", "poster", "data"):
                if url.startswith(("javascript:", "vbscript:")) or (
                        url.startswith("data:") and not (tag == "img" and re.match(r"data:image/(png|jpeg|gif);", url))):
                    self.found.append(f"<{tag} {name}={value!r}>")

    def handle_endtag(self, tag):
        self.literal -= tag in ("pre", "code") and self.literal > 0

    def handle_data(self, data):
        if not self.literal and re.search(r"\\(href|url)\b", data):
            self.found.append(f"math link {data.strip()[:60]!r}")


def live(html: str) -> list[str]:
    parser = _Live()
    parser.feed(html)
    parser.close()
    return parser.found


def plain_render(source: str, attachments=None) -> str:
    """nbconvert's own markdown2html, as formgrader calls it without the course's config."""
    return MarkdownWithMath(renderer=IPythonRenderer(escape=False, attachments=attachments or {})).render(source)


def filter_render(cell: nbformat.NotebookNode) -> str:
    """The course's filter, called the way the formgrade template calls it (with the cell in the context)."""
    env = Environment()
    env.filters["markdown2html"] = safe_markdown.markdown2html
    return env.from_string("{{ cell.source | markdown2html }}").render(cell=cell)


def md_cell(source: str, attachments=None) -> nbformat.NotebookNode:
    cell = nbformat.v4.new_markdown_cell(source)
    if attachments:
        cell.attachments = copy.deepcopy(attachments)
    return cell


def stored(cell: nbformat.NotebookNode) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.cells.append(copy.deepcopy(cell))
    return sanitize.sanitize_notebook(nb).cells[0]


@pytest.mark.parametrize("name, source, attachments", PAYLOADS, ids=[p[0] for p in PAYLOADS])
def test_the_payload_is_real_without_the_sanitizer(name, source, attachments):
    try:
        html = plain_render(source, attachments)
    except Exception as err:  # noqa: BLE001 - the page would fail: that is the bug, too
        assert "attachment" in name, err
        return
    assert live(html), f"{name}: the control should be live, or the payload tests nothing: {html}"


@pytest.mark.parametrize("name, source, attachments", PAYLOADS, ids=[p[0] for p in PAYLOADS])
def test_the_stored_notebook_alone_is_safe_in_formgrader(name, source, attachments):
    cell = stored(md_cell(source, attachments))
    html = plain_render(cell.source, cell.get("attachments"))    # no exception: the page renders
    assert not live(html), html
    if name not in ESCAPED:
        assert "[grader] This markdown cell is shown as text" in cell.source
    assert set(cell.get("attachments", {}).get("evil.svg", {})) <= {"image/png"}, "an SVG attachment was kept"


@pytest.mark.parametrize("name, source, attachments", PAYLOADS, ids=[p[0] for p in PAYLOADS])
def test_the_course_filter_alone_is_safe(name, source, attachments):
    html = filter_render(md_cell(source, attachments))
    assert not live(html), html
    assert "shown as text" in html


@pytest.mark.parametrize("name, source, url", BENIGN, ids=[b[0] for b in BENIGN])
def test_benign_links_images_and_math_survive_both_layers(name, source, url):
    cell = stored(md_cell(source, ATTACHMENT))
    assert cell.source == source, "a benign cell must be left as it is"
    for html in (plain_render(cell.source, cell.get("attachments")), filter_render(md_cell(source, ATTACHMENT))):
        assert "shown as text" not in html and not live(html)
        if url:
            assert re.search(r'(href|src)="' + re.escape(url.replace("&", "&amp;")), html), html
        else:
            assert "$p_i = e^{z_i}" in html and "$$\\sqrt{d_k}$$" in html


def test_url_policy_on_its_own():
    ok = ["https://a.b", "HTTP://A.B", "mailto:x@y.z", "", "#x", "a/b.png", "./c:d", "//cdn.example.org/x.png",
          "attachment:a.png"]
    bad = ["javascript:x", " javascript:x", "\tjava\nscript:x", "JAVASCRIPT:x", "&#x6A;avascript:x", "%6aavascript:x",
           "vbscript:x", "data:text/html,x", "data:image/png;base64,AAAA", "file:///etc/passwd", "attachment:b.png"]
    assert [u for u in ok if safe_markdown.url_problem(u, {"a.png": {}}, image=False)] == []
    assert [u for u in bad if not safe_markdown.url_problem(u, {"a.png": {}}, image=True)] == []


def test_relative_links_to_pages_a_browser_would_run_are_refused():
    """formgrader serves a submission's own files on the instructor's origin: evil.html next to the notebook."""
    bad = ["evil.html", "./EVIL.HTM", "sub/x.svg", "x.svg?raw=1", "x.xhtml#top", "evil%2Ehtml", "evil.html/",
           "/files/x.html", "x.js", " evil.html", "ev\til.html"]
    ok = ["notes.png", "data.csv", "02_sampling.ipynb", "x.html.png", "https://example.org/page.html",
          "//cdn.example.org/page.html", "#evil.html"]
    assert [u for u in bad if not safe_markdown.url_problem(u, {}, image=False)] == []
    assert [u for u in ok if safe_markdown.url_problem(u, {}, image=False)] == []
    cell = stored(md_cell("see [my work](evil.html) and ![plot](plot.svg)"))
    assert "shown as text" in cell.source and 'href="evil.html"' not in filter_render(md_cell("[w](evil.html)"))


def test_attachments_keep_only_real_images():
    cleaned = safe_markdown.clean_attachments({
        "a.png": {"image/png": PNG, "text/html": "<script>x</script>"},
        "b.svg": {"image/svg+xml": SVG},
        "c.png": {"image/png": "not base64 !"},
        "d.jpg": {"image/jpeg": [PNG[:8], PNG[8:]]},
        7: {"image/png": PNG},
    })
    assert cleaned == {"a.png": {"image/png": PNG}, "d.jpg": {"image/jpeg": PNG}}


def test_instructor_cells_keep_their_markdown_but_lose_what_a_student_removed():
    """nbgrader restores a locked cell's source, never its attachments: a student who deletes one must not make the
    page fail, and one who swaps it for an SVG must not get it rendered."""
    meta = {"nbgrader": {"grade_id": "intro", "locked": True, "grade": False, "solution": False}}
    nb = nbformat.v4.new_notebook()
    for attachments in (None, {"fig.png": {"image/svg+xml": SVG}}, {"fig.png": {"image/png": PNG}}):
        cell = md_cell("# Intro <b>bold</b>\n\n![figure](attachment:fig.png)", attachments)
        cell.metadata = copy.deepcopy(meta)
        nb.cells.append(cell)
    sanitize.sanitize_notebook(nb)
    assert [("shown as text" in c.source) for c in nb.cells] == [True, True, False]
    assert "<b>bold</b>" in nb.cells[2].source, "the instructor's own HTML is not escaped"
    assert nb.metadata["course_integrity"]["notes"] == [
        "markdown shown as text: cell 1 (an image of an attachment the cell does not have), "
        "cell 2 (an image of an attachment the cell does not have)"]
    for cell in nb.cells:
        plain_render(cell.source, cell.get("attachments"))     # renders, no InvalidNotebook


@pytest.mark.parametrize("source", [
    "[x](javascript:alert(1))\n````\n```\n[y](javascript:alert(2))\n```\n````\n$\\href{javascript:1}{y}$",
    "[x](javascript:alert(1))\n~~~\n$\\href{javascript:1}{y}$",
    "`` ` `` [x](javascript:alert(1)) ``````\n```",
], ids=["nested-fences", "open-tilde-fence", "backtick-runs"])
def test_a_literal_cell_cannot_break_out_of_its_code_block(source):
    assert live(plain_render(source)), "the control: the source itself is live"
    text, problems = safe_markdown.safe_markdown(source, {})
    assert problems and source in text, "shown whole, as text"
    assert not live(plain_render(text)) and safe_markdown.check(text, {})[1] == []


def test_links_inside_code_blocks_are_text_already():
    source = "````\n```\n[x](javascript:alert(1))\n```\n````\n~~~\n$\\href{javascript:1}{y}$"
    assert safe_markdown.safe_markdown(source, {}) == (source, [])
    assert not live(plain_render(source))


def test_the_course_config_installs_the_filter():
    from traitlets.config import Config
    from nbconvert import HTMLExporter

    exporter = HTMLExporter(config=pipeline.configure(Config()))
    assert exporter.environment.filters["markdown2html"] is safe_markdown.markdown2html


# ---------------------------------------------------------------------------------------------------------------
# The formgrader page, rendered the way formgrader renders it (red team's render_formgrade.py)

def hostile_autograded_notebook() -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.cells.append(md_cell("# Answers\n\nSee [the course](https://example.org) and ![p](attachment:pasted.png)",
                            ATTACHMENT))
    for _, source, attachments in PAYLOADS:
        nb.cells.append(md_cell(source, attachments))
    nb.cells.append(md_cell("\n\n".join(source for _, source, att in PAYLOADS if not att)))
    return nb


def render_formgrade(nb: nbformat.NotebookNode, tmp_path, course_config: bool = True,
                     template: str = "formgrade") -> str:
    """The page formgrader (or, with ``template="feedback"``, ``course feedback``) makes of ``nb``."""
    from nbconvert.exporters import HTMLExporter
    from nbgrader.server_extensions.formgrader import handlers
    from traitlets.config import Config

    c = pipeline.configure(Config()) if course_config else Config()
    c.HTMLExporter.template_name = template
    c.HTMLExporter.extra_template_basedirs = [handlers.template_path]
    if template == "feedback":    # (GenerateFeedback adds bootstrap's CSS, which that template inlines)
        c.HTMLExporter.extra_template_paths = [str(Path(handlers.template_path).parent / "static" / "node_modules"
                                                   / "bootstrap" / "dist" / "css")]
    exporter = HTMLExporter(config=c)
    resources = {"assignment_id": "a", "notebook_id": "n", "submission_id": "s", "index": 0, "total": 1,
                 "base_url": "", "student": "x", "last_name": "", "first_name": "", "notebook_path": "/x",
                 "nbgrader": {"score": 1, "max_score": 5, "late_penalty": 0, "notebook": "n"}}
    path = tmp_path / "autograded.ipynb"
    nbformat.write(nb, path)
    html, _ = exporter.from_filename(str(path), resources=resources)
    return html


def test_formgrader_page_of_a_hostile_submission_has_no_script_url(tmp_path):
    autograded = sanitize.sanitize_notebook(hostile_autograded_notebook())     # what autograde saves
    html = render_formgrade(autograded, tmp_path)
    assert not live(html), live(html)
    assert 'href="https://example.org"' in html and 'src="data:image/png;base64,' in html, "benign content kept"
    # one note per payload cell (but the escaped HTML-like ones) and one for the cell holding them all
    assert html.count("[grader] This markdown cell is shown as text") == len(PAYLOADS) - len(ESCAPED) + 1
    # each layer alone: the stored notebook with nbgrader's own config, the raw notebook with the course's filter
    assert not live(render_formgrade(autograded, tmp_path, course_config=False))
    assert not live(render_formgrade(hostile_autograded_notebook(), tmp_path))


def test_formgrader_control_without_the_fix_is_live(tmp_path):
    nb = hostile_autograded_notebook()
    nb.cells = [c for c in nb.cells if "attachment:" not in c.source]      # (a missing one crashes the page)
    assert len(live(render_formgrade(nb, tmp_path, course_config=False))) >= len(PAYLOADS) - 2


@pytest.mark.parametrize("template", ["formgrade", "feedback"])
def test_a_missing_attachment_is_text_not_a_broken_page(tmp_path, template):
    from nbformat.validator import NotebookValidationError
    from nbconvert.filters.markdown_mistune import InvalidNotebook

    nb = nbformat.v4.new_notebook()
    nb.cells = [md_cell("My plot: ![x](attachment:nope.png)"), nbformat.v4.new_code_cell("1 + 1")]
    with pytest.raises((InvalidNotebook, NotebookValidationError)):      # the control: nbgrader's own config
        render_formgrade(nb, tmp_path, course_config=False, template=template)
    stored_nb = sanitize.sanitize_notebook(copy.deepcopy(nb))
    for page in (render_formgrade(nb, tmp_path, template=template),      # each layer alone
                 render_formgrade(stored_nb, tmp_path, course_config=False, template=template)):
        assert "an attachment the cell does not have" in page and "attachment:nope.png" in page
        assert not live(page)
