"""Nothing a student wrote runs in a page the course shows: outputs and markdown are sanitized.

A graded notebook is shown to people twice: in the feedback page the student gets, and in nbgrader's formgrader,
which renders it on the instructor's own Jupyter server (where a script could act as the instructor). So the
autograded notebook itself is made inert before it is saved (:class:`SanitizeNotebook`, in the grading pipeline),
and every HTML page the course writes is sanitized again on the way out (:func:`clean_html`, plus a
Content-Security-Policy that allows no script at all: :func:`protect_page`).

What survives from a student's cell outputs: plain text, PNG/JPEG images, and HTML reduced to an allow-list of
harmless tags and attributes (tables, lists, emphasis; links only to http(s); images only as inline PNG/JPEG).
Everything else (JavaScript, SVG, Markdown and LaTeX outputs, widget views, iframes, event handlers, styles) is
dropped and replaced by its text form. Markdown and raw cells the student wrote are kept as text: HTML in them is
escaped, not rendered. Links and images in markdown may only point to http(s), mailto, relative paths, anchors and
the cell's own attachments; a cell with anything else is shown as text (:mod:`course_utils.grader.safe_markdown`,
which also supplies the ``markdown2html`` filter that formgrader's and feedback's exporters use).
"""

from __future__ import annotations

import base64
import re
from typing import Any

from nbformat.notebooknode import NotebookNode
from nbgrader.preprocessors import NbGraderPreprocessor

from course_utils import cells
from course_utils.grader import safe_markdown
from course_utils.grader.integrity import METADATA_KEY, Findings

TAGS = ["a", "abbr", "b", "blockquote", "br", "caption", "code", "dd", "del", "div", "dl", "dt", "em", "h1", "h2",
        "h3", "h4", "h5", "h6", "hr", "i", "img", "ins", "kbd", "li", "ol", "p", "pre", "q", "s", "samp", "small",
        "span", "strong", "sub", "sup", "table", "tbody", "td", "tfoot", "th", "thead", "tr", "tt", "u", "ul"]
SAFE_MIME = ("text/plain", "image/png", "image/jpeg", "text/html")
CSP = ("default-src 'none'; img-src data:; style-src 'unsafe-inline'; font-src data:; "
       "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
_DATA_IMAGE = re.compile(r"^data:image/(png|jpeg|gif);base64,[A-Za-z0-9+/=\s]*$")
_BASE64 = re.compile(r"^[A-Za-z0-9+/=\s]*$")
_ESCAPED_AUTOLINK = re.compile(r"&lt;((?:https?|mailto):[^\s&<>\"'`\\]+)&gt;", re.I)


def _attribute_allowed(tag: str, name: str, value: str) -> bool:
    if name in ("title", "colspan", "rowspan", "align", "alt"):
        return True
    if tag == "a" and name == "href":
        return value.lower().startswith(("http://", "https://", "#"))
    if tag == "img" and name == "src":
        return bool(_DATA_IMAGE.match(value))
    if tag == "img" and name in ("width", "height"):
        return value.isdigit()
    return False


def clean_html(html: str) -> str:
    """``html`` reduced to harmless tags and attributes (everything else escaped as text)."""
    import bleach  # noqa: PLC0415 - nbconvert's own dependency

    return bleach.clean(html, tags=TAGS, attributes=_attribute_allowed, protocols=["http", "https", "data"],
                        strip=False, strip_comments=True)


def escape_markdown_html(source: str) -> str:
    """Markdown with every HTML tag escaped (the text stays readable; nothing in it is rendered as HTML).

    An autolink to http(s) or mailto (``<https://example.org>``) looks like a tag but is markdown: it is put back
    (only when it holds no ``&``, quote or space), and :func:`~course_utils.grader.safe_markdown.safe_markdown`
    then checks it like any link.
    """
    import bleach  # noqa: PLC0415

    escaped = bleach.clean(source, tags=[], attributes={}, strip=False, strip_comments=True)
    return _ESCAPED_AUTOLINK.sub(r"<\1>", escaped)


def clean_output(output: NotebookNode) -> NotebookNode | None:
    """One output with only safe parts; None when nothing safe is left."""
    kind = output.get("output_type")
    if kind == "stream":
        return NotebookNode(output_type="stream", name="stderr" if output.get("name") == "stderr" else "stdout",
                            text=_text(output.get("text", "")))
    if kind == "error":
        return NotebookNode(output_type="error", ename=_text(output.get("ename", "Error"))[:500],
                            evalue=_text(output.get("evalue", "")),
                            traceback=[_text(line) for line in output.get("traceback", [])][:200])
    if kind not in ("display_data", "execute_result"):
        return None
    data = output.get("data", {}) if isinstance(output.get("data"), dict) else {}
    kept: dict[str, Any] = {}
    for mime in SAFE_MIME:
        value = data.get(mime)
        if value is None:
            continue
        value = _text(value)
        if mime == "text/html":
            kept[mime] = clean_html(value)
        elif mime.startswith("image/"):
            if _BASE64.match(value) and _decodes(value):
                kept[mime] = value
        else:
            kept[mime] = value
    dropped = sorted(set(data) - set(kept))
    if dropped and "text/plain" not in kept:
        kept["text/plain"] = f"[output of type {', '.join(dropped)[:200]} not shown]"
    if not kept:
        return None
    out = NotebookNode(output_type=kind, data=kept, metadata={})
    if kind == "execute_result":
        out["execution_count"] = output.get("execution_count") if isinstance(output.get("execution_count"), int) \
            else None
    return out


def sanitize_notebook(nb: NotebookNode) -> NotebookNode:
    """Make a graded notebook inert, in place: outputs cleaned, student markdown/raw cells escaped, no widget
    state. The instructor's locked cells keep their markdown: by this stage nbgrader has restored them from the
    source (a cell claiming an unknown id lost its metadata in :class:`~course_utils.grader.integrity.IntegrityCheck`).

    Every markdown cell, the instructor's too (nbgrader restores their source, not their attachments), then goes
    through :func:`~course_utils.grader.safe_markdown.safe_markdown`: a link or image outside the allow-list, a
    missing attachment or (in a student's cell) HTML that survived the escaping makes the cell a note plus its
    text in a code block; the notebook's findings get a note saying which cells. Attachments are kept only as
    PNG/JPEG/GIF images.
    """
    nb.metadata.pop("widgets", None)
    shown_as_text: list[str] = []
    for index, cell in enumerate(nb.cells):
        instructor = bool(cells.grade_id(cell)) and bool(cells.nbgrader_meta(cell).get("locked"))
        attachments = safe_markdown.clean_attachments(cell.get("attachments"))   # nbgrader never restores them
        if attachments and cell.cell_type in ("markdown", "raw"):
            cell.attachments = attachments
        else:
            cell.pop("attachments", None)
        if cell.cell_type == "code":
            cell.outputs = [o for o in (clean_output(o) for o in cell.get("outputs", [])) if o is not None]
        elif cell.cell_type == "markdown":
            source = cells.source_of(cell)
            source = source if instructor else escape_markdown_html(source)
            cell.source, problems = safe_markdown.safe_markdown(source, attachments, raw_html=instructor)
            if problems:
                shown_as_text.append(f"cell {index + 1} ({'; '.join(problems)})")
        elif cell.cell_type == "raw":
            for key in ("format", "raw_mimetype"):
                cell.metadata.pop(key, None)
            cell.source = escape_markdown_html(cells.source_of(cell))
    if shown_as_text:
        findings = Findings.from_metadata(nb.metadata.get(METADATA_KEY))
        findings.note(f"markdown shown as text: {', '.join(shown_as_text)}"[:500])
        nb.metadata[METADATA_KEY] = findings.as_dict()
    return nb


class SanitizeNotebook(NbGraderPreprocessor):
    """The grading pipeline's step that makes the autograded notebook inert before it is saved."""

    def preprocess(self, nb: NotebookNode, resources: dict) -> tuple[NotebookNode, dict]:
        return sanitize_notebook(nb), resources


def protect_page(html: str) -> str:
    """An HTML page with a Content-Security-Policy that forbids every script, frame and remote load."""
    meta = f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
    head = re.search(r"<head[^>]*>", html, flags=re.I)
    if head:
        return html[: head.end()] + meta + html[head.end():]
    return f"<!DOCTYPE html><html><head>{meta}</head><body>{html}</body></html>"


def _text(value: Any) -> str:
    if isinstance(value, list):
        value = "".join(str(v) for v in value)
    return str(value)


def _decodes(value: str) -> bool:
    try:
        base64.b64decode(value.replace("\n", ""), validate=False)
        return True
    except (ValueError, TypeError):
        return False
