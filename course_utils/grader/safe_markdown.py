"""Markdown from a graded notebook, made safe for the pages that render it (formgrader, feedback).

nbgrader's formgrader renders every markdown cell of the autograded notebook with nbconvert's ``markdown2html``
(mistune, ``escape=False``, every URL scheme allowed) on the instructor's own Jupyter origin, with no
Content-Security-Policy: a student's ``[see my derivation](javascript:...)`` becomes a live link there. Escaping
HTML tags is not enough, because a *link* or an *image* is markdown, not HTML. Two layers, each enough alone:

1. **The stored notebook** (:func:`safe_markdown`, called by :func:`~course_utils.grader.sanitize.sanitize_notebook`).
   Each markdown cell is rendered with nbconvert's own parser (:class:`MarkdownWithMath`, the renderer formgrader
   uses) and every link and image destination it finds is checked against an allow-list (:func:`url_problem`):
   ``http``, ``https``, ``mailto``, relative paths, ``#anchors``, and ``attachment:NAME`` of an attachment the
   cell really has. The rendered HTML is checked too (no tag, handler or URL attribute outside what markdown
   makes; no ``\\href`` or ``\\url`` for MathJax). A cell that fails any check is kept *as text*: a note, then
   its source in a code block (rendered literally by every markdown renderer), and the result is checked again.
   A missing attachment therefore becomes visible text instead of nbconvert's ``InvalidNotebook`` (which made
   formgrader and feedback fail on the whole submission).
2. **The renderer** (:func:`markdown2html`, installed by :func:`course_utils.grader.pipeline.configure` as the
   ``markdown2html`` filter of every ``HTMLExporter``: formgrader's and feedback's). It applies the same rules
   to whatever notebook it is given (one graded before this existed, say), then cleans the HTML with an
   allow-list (bleach, which decodes entities and control characters itself before it checks a scheme).

The parser is the one the pages use, so an encoding trick (``&#106;avascript:``, a reference-style link, an
autolink, upper case, a leading space) is seen exactly as the page would see it; no regular expression over
the source decides anything.
"""

from __future__ import annotations

import base64
import binascii
import html
import re
from collections.abc import Mapping
from html.parser import HTMLParser
from typing import Any
from urllib.parse import unquote

from jinja2 import pass_context
from nbconvert.filters.markdown_mistune import IPythonRenderer, MarkdownWithMath

SAFE_SCHEMES = ("http", "https", "mailto")
ATTACHMENT_TYPES = ("image/png", "image/jpeg", "image/gif")    # what an attachment may be (SVG is a document)
_SCHEME = re.compile(r"([a-z][a-z0-9+.\-]*):")
# Files a browser runs as a page when a relative link opens them: formgrader serves a submission's own files
# (``/formgrader/submissions/<id>/<path>``, the student's ``evil.html`` next to the notebook) on the instructor's
# Jupyter origin, so a relative link may not point to one.
ACTIVE_DOCUMENTS = (".htm", ".html", ".shtml", ".xht", ".xhtml", ".svg", ".svgz", ".xml", ".xsl", ".xslt", ".js",
                    ".mjs", ".pdf", ".swf")
_IGNORED_BY_BROWSERS = re.compile(r"[\x00-\x20\x7f]")            # stripped or dropped when a browser parses a URL
_MATH_LINK = re.compile(r"\\(href|url)(?![A-Za-z])")             # MathJax's link commands
_DATA_IMAGE = re.compile(r"data:image/(png|jpeg|gif);base64,[A-Za-z0-9+/=\s]*", re.I)
_URL_ATTRIBUTES = {"href", "src", "srcset", "action", "formaction", "xlink:href", "poster", "background", "data",
                   "cite", "longdesc", "usemap", "ping", "manifest", "codebase", "dynsrc", "lowsrc"}
# What nbconvert's markdown renderer itself emits (and nothing else may appear in a student's rendered cell).
_MARKDOWN_TAGS = {"a", "blockquote", "br", "code", "dd", "del", "div", "dl", "dt", "em", "h1", "h2", "h3", "h4",
                  "h5", "h6", "hr", "img", "input", "li", "ol", "p", "pre", "span", "strong", "table", "tbody",
                  "td", "th", "thead", "tr", "ul"}
_BLEACH_TAGS = sorted(_MARKDOWN_TAGS | {"abbr", "b", "caption", "i", "ins", "kbd", "q", "s", "samp", "small",
                                        "sub", "sup", "tfoot", "tt", "u"})
NOTE = "*[grader] This markdown cell is shown as text: {reasons}.*"


def url_problem(url: str, attachments: Mapping[str, Any], *, image: bool) -> str | None:
    """Why ``url`` may not be a link (or, with ``image``, an image source) in a page; None when it may.

    Every reading a browser could make of it is checked: as written, with HTML entities decoded, with
    percent-escapes decoded, without the control characters and spaces browsers drop. Any reading with a scheme
    other than http, https or mailto is refused; ``attachment:NAME`` only when the cell has that attachment.
    """
    what = "an image" if image else "a link"
    forms = {url, html.unescape(url)}
    forms |= {unquote(form) for form in forms}
    forms |= {html.unescape(form) for form in forms}
    schemes = set()
    for form in forms:
        match = _SCHEME.match(_IGNORED_BY_BROWSERS.sub("", form).lower())
        schemes.add(match.group(1) if match else "")
    bad = sorted(s for s in schemes if s and s not in SAFE_SCHEMES and s != "attachment")
    if bad:
        return f"{what} to a `{re.sub('[^a-z0-9]', '', bad[0])[:20]}:` address"
    if "" in schemes and any(_relative_document(form) for form in forms):
        return f"{what} to a page or script next to the notebook (formgrader would serve it as the instructor)"
    if "attachment" in schemes:
        if not (url.startswith("attachment:") and url[len("attachment:"):] in attachments):
            return f"{what} of an attachment the cell does not have"
    return None


def _relative_document(url: str) -> bool:
    """Whether a relative ``url`` names a file a browser would run as a page (see :data:`ACTIVE_DOCUMENTS`)."""
    path = re.split(r"[?#]", _IGNORED_BY_BROWSERS.sub("", url), maxsplit=1)[0].lower().rstrip("/.")
    return path.startswith("//") is False and path.endswith(ACTIVE_DOCUMENTS)


def clean_attachments(attachments: Any) -> dict[str, dict[str, str]]:
    """A cell's attachments reduced to PNG/JPEG/GIF images whose data is base64 (everything else is dropped)."""
    kept: dict[str, dict[str, str]] = {}
    if not isinstance(attachments, Mapping):
        return kept
    for name, bundle in attachments.items():
        if not isinstance(name, str) or not isinstance(bundle, Mapping):
            continue
        images = {}
        for mime in ATTACHMENT_TYPES:
            data = bundle.get(mime)
            data = "".join(str(d) for d in data) if isinstance(data, list) else data
            if isinstance(data, str) and _is_base64(data):
                images[mime] = data
        if images:
            kept[name] = images
    return kept


class PolicyRenderer(IPythonRenderer):
    """nbconvert's markdown renderer with the URL policy: a forbidden link or image is rendered as plain text and
    listed in :attr:`problems`, as are raw HTML (unless ``raw_html``) and a missing attachment."""

    def __init__(self, attachments: Mapping[str, Any], raw_html: bool = False) -> None:
        super().__init__(escape=False, attachments=dict(attachments), embed_images=False)
        self.raw_html = raw_html
        self.problems: list[str] = []

    def link(self, text: str, url: str, title: str | None = None) -> str:
        problem = url_problem(url, self.attachments, image=False)
        if problem:
            self.problems.append(problem)
            return f"{text} [{self.escape_html(url)}]"
        return super().link(text, url, title)

    def image(self, text: str, url: str, title: str | None = None) -> str:
        problem = url_problem(url, self.attachments, image=True)
        if problem:
            self.problems.append(problem)
            return self.escape_html(f"[image: {_strip_tags(text)} ({url})]")
        return super().image(text, url, title)

    def inline_html(self, html_text: str) -> str:
        return self._raw(html_text)

    def block_html(self, html_text: str) -> str:
        return self._raw(html_text)

    def _raw(self, html_text: str) -> str:
        if self.raw_html:
            return html_text
        self.problems.append("raw HTML")
        return self.escape_html(html_text)


def check(source: str, attachments: Mapping[str, Any], *, raw_html: bool = False) -> tuple[str, list[str]]:
    """``source`` rendered as formgrader renders it (with the URL policy), and every problem found on the way and
    in the HTML that came out."""
    renderer = PolicyRenderer(attachments, raw_html=raw_html)
    try:
        rendered = MarkdownWithMath(renderer=renderer).render(source)
    except Exception as err:  # noqa: BLE001 - whatever stops the renderer would stop the page
        return "", [f"markdown that nbconvert cannot render ({type(err).__name__})"]
    problems = list(renderer.problems)
    scan = _HTMLScan(renderer.attachments)
    scan.feed(rendered)
    scan.close()
    # raw HTML is allowed in an instructor's cell, and in the filter (bleach cleans it); its URLs never are
    problems += scan.problems if not raw_html else [p for p in scan.problems if p != "raw HTML"]
    return rendered, list(dict.fromkeys(problems))


def safe_markdown(source: str, attachments: Mapping[str, Any], *, raw_html: bool = False) -> tuple[str, list[str]]:
    """``source`` when it renders safely, else a note and the source as a literal code block; and the problems.

    The replacement is checked again; if even that fails (it should not), the cell becomes the note alone.
    """
    _, problems = check(source, attachments, raw_html=raw_html)
    if not problems:
        return source, []
    note = NOTE.format(reasons="; ".join(problems))
    longest = max((len(run) for run in re.findall(r"`+", source)), default=0)
    fence = "`" * max(3, longest + 1)
    literal = f"{note}\n\n{fence}\n{source}\n{fence}\n"
    if check(literal, {}, raw_html=False)[1]:
        return NOTE.format(reasons="it cannot be shown safely") + "\n", problems
    return literal, problems


@pass_context
def markdown2html(context: Any, source: str) -> str:
    """The ``markdown2html`` filter for formgrader's and feedback's exporters: nbconvert's rendering under the
    URL policy (an unsafe cell is shown as text, a missing attachment too), then an HTML allow-list."""
    import bleach  # noqa: PLC0415 - nbconvert's own dependency

    cell = context.get("cell", {}) if hasattr(context, "get") else {}
    attachments = clean_attachments(cell.get("attachments") if hasattr(cell, "get") else None)
    text, _ = safe_markdown(str(source or ""), attachments, raw_html=True)
    rendered, _ = check(text, attachments, raw_html=True)
    return bleach.clean(rendered, tags=_BLEACH_TAGS, attributes=_rendered_attribute_allowed,
                        protocols=[*SAFE_SCHEMES, "data"], strip=False, strip_comments=True)


def _rendered_attribute_allowed(tag: str, name: str, value: str) -> bool:
    if name in ("title", "alt", "colspan", "rowspan", "align"):
        return True
    if name == "class":
        return tag in ("a", "code", "div", "input", "li", "pre", "span") and "mermaid" not in value.lower()
    if name == "id":
        return tag in ("h1", "h2", "h3", "h4", "h5", "h6")
    if tag == "a" and name == "href":
        return url_problem(value, {}, image=False) is None
    if tag == "img" and name == "src":
        return bool(_DATA_IMAGE.fullmatch(value)) or url_problem(value, {}, image=True) is None
    if tag == "input":
        return (name, value) == ("type", "checkbox") or name in ("checked", "disabled")
    return False


class _HTMLScan(HTMLParser):
    """Problems in rendered markdown: tags markdown does not make, event handlers, URLs outside the policy, and
    MathJax link commands in text MathJax would typeset (outside ``pre``/``code``, which it skips)."""

    def __init__(self, attachments: Mapping[str, Any]) -> None:
        super().__init__(convert_charrefs=True)
        self.attachments = attachments
        self.problems: list[str] = []
        self._literal = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in _MARKDOWN_TAGS:
            self.problems.append("raw HTML")
        if tag in ("pre", "code"):
            self._literal += 1
        for name, value in attrs:
            value = value or ""
            if name.startswith("on"):
                self.problems.append("raw HTML")
            elif name in _URL_ATTRIBUTES and not (tag == "img" and name == "src" and _DATA_IMAGE.fullmatch(value)):
                problem = url_problem(value, self.attachments, image=tag == "img")
                if problem:
                    self.problems.append(problem)

    def handle_endtag(self, tag: str) -> None:
        if tag in ("pre", "code") and self._literal:
            self._literal -= 1

    def handle_data(self, data: str) -> None:
        if not self._literal and _MATH_LINK.search(data):
            self.problems.append("a link in math (MathJax's href or url command)")


def _is_base64(data: str) -> bool:
    try:
        base64.b64decode(re.sub(r"\s", "", data), validate=True)
        return True
    except (binascii.Error, ValueError):
        return False


def _strip_tags(text: str) -> str:
    return re.sub(r"<[^>]*>", "", text)
