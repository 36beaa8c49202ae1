"""Shared widget plumbing: redraws with their errors and timings, static fallbacks, and the autograding switch.

* :class:`Redrawer` wraps a redraw function: errors go to an HTML widget, timings to ``timings_ms``.
* :class:`StaticFallback` (a mixin for a widget Box) makes the widget's display bundle carry, next to the
  live widget, a static picture of what the widget shows (``text/html``, plus ``image/png`` when its picture
  is an image) and a one-line ``text/plain``. Front ends with a widget manager (JupyterLab, Notebook 7, VS Code)
  draw the live widget; those without one (nbconvert HTML of a notebook saved without widget state, GitHub's
  viewer, VS Code when widgets fail) show the picture instead of an error or nothing.
* :func:`grading` / :class:`NotBuilt`: while nbgrader runs a notebook (``NBGRADER_EXECUTION`` set) the
  factories build nothing (no model call, no learner function, no widget): they return a :class:`NotBuilt`,
  a one-line note, so the grader has nothing to wait on.

The picture is taken when the widget is displayed (the cell's value, or ``display(w)``); it is not re-sent on
every change. Re-sending it means an ``update_display_data`` message, and JupyterLab 4.6 answers that by
building a new view of the widget: measured in headless Chromium, the slider being moved lost its focus and
the arrow keys stopped moving it after the first step. Display the widget again, or ``w.snapshot()``, to keep
a picture of a later state. Building the picture costs about a millisecond, at display time only, so redraws
stay as fast as before.
"""

from __future__ import annotations

import base64
import html
import os
import sys
import time
import traceback
from typing import Any, Callable

import ipywidgets as widgets

GRADING_VARIABLE = "NBGRADER_EXECUTION"


def _colab_widget_manager() -> None:
    """On Google Colab, ipywidgets 8 widgets need Colab's custom widget manager: turn it on (no-op elsewhere).

    Untested here (no Colab); guarded so that it can never break an import.
    """
    if "google.colab" not in sys.modules:
        return
    try:
        from google.colab import output  # type: ignore[import-not-found]  # noqa: PLC0415

        output.enable_custom_widget_manager()
    except Exception:  # noqa: BLE001 - an old or changed Colab: widgets then show their static pictures
        pass


_colab_widget_manager()


def grading() -> bool:
    """True while nbgrader executes the notebook (it sets ``NBGRADER_EXECUTION`` to autograde/validate)."""
    return bool(os.environ.get(GRADING_VARIABLE))


def error_output(height: str = "auto") -> widgets.HTML:
    """Where a widget shows its redraw errors (a callback that raises would otherwise fail silently).

    An HTML widget rather than an ``Output``: its text lives in the kernel too (so the static picture shows
    it), it needs no output capture (nbclient cannot replay ``Output`` captures when it stores no widget
    state: KeyError in nbclient's output hook), and a redraw that succeeds sends nothing at all.
    """
    return widgets.HTML(layout=widgets.Layout(height=height))


def figure_output(height: str = "360px") -> widgets.Output:
    """An Output with a fixed height, so redraws do not make the page jump."""
    return widgets.Output(layout=widgets.Layout(height=height, overflow="hidden"))


class Redrawer:
    """Wraps a redraw function: shows its errors in ``errors`` and records how long each call took.

    ``errors`` is the HTML widget from :func:`error_output` (an ``Output`` also works). ``last_error`` is
    the last failure as text (None after a redraw that worked); ``timings_ms`` (last 1000 calls) feeds the
    benchmark's redraw-latency figures.
    """

    def __init__(self, draw: Callable[..., Any], errors: widgets.HTML | widgets.Output) -> None:
        self.draw = draw
        self.errors = errors
        self.timings_ms: list[float] = []
        self.last_error: str | None = None

    def _show(self, text: str) -> None:
        if isinstance(self.errors, widgets.Output):
            self.errors.clear_output()
            if text:
                with self.errors:
                    print(text)
            return
        value = (f"<pre style='color:#b00;white-space:pre-wrap;font:12px monospace;margin:2px 0'>{html.escape(text)}"
                 "</pre>") if text else ""
        if self.errors.value != value:  # no message to the front end when nothing changed
            self.errors.value = value

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            result = self.draw(*args, **kwargs)
            if self.last_error is not None or isinstance(self.errors, widgets.Output):
                self._show("")
            self.last_error = None
            return result
        except Exception as err:  # noqa: BLE001 - shown to the learner, never swallowed silently
            self.last_error = f"{type(err).__name__}: {err}"
            self._show("Your function raised an error while redrawing:\n" + traceback.format_exc(limit=3))
            return None
        finally:
            self.timings_ms = (self.timings_ms + [(time.perf_counter() - start) * 1e3])[-1000:]


# ----------------------------------------------------------------------------------------------
# Autograding: build nothing


class NotBuilt:
    """What a widget factory returns while a notebook is autograded: a note, no widget, no comm, no work."""

    def __init__(self, title: str) -> None:
        self.title = title

    def _message(self) -> str:
        return (f"The {self.title} is not built while the notebook is autograded "
                f"({GRADING_VARIABLE} is set); it appears when you run the notebook yourself.")

    def _repr_mimebundle_(self, **_kwargs: Any) -> dict[str, str]:
        return {"text/plain": self._message(),
                "text/html": f"<p style='color:#666'><i>{html.escape(self._message())}</i></p>"}

    def __repr__(self) -> str:
        return f"NotBuilt({self.title!r})"

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):  # IPython probes _repr_*_ / _ipython_*_ names: a plain "no such attribute"
            raise AttributeError(name)
        raise AttributeError(f"{self._message()} It has no {name!r}: unset {GRADING_VARIABLE} to build it.")


# ----------------------------------------------------------------------------------------------
# Static fallbacks

_STATIC_CLASS = "course-widget-static"


def _visible(w: widgets.Widget) -> bool:
    layout = getattr(w, "layout", None)
    return not (layout is not None and (layout.display == "none" or layout.visibility == "hidden"))


def _is_control(w: widgets.Widget) -> bool:
    """A control a learner sets (slider, dropdown, toggle, text box...), as opposed to something displayed."""
    return (isinstance(w, widgets.widget_description.DescriptionWidget) and isinstance(w, widgets.ValueWidget)
            and not isinstance(w, (widgets.HTML, widgets.HTMLMath, widgets.Label)))


def control_value(w: widgets.Widget) -> str:
    """A control's value as a learner reads it: a selection's label, a number in its readout format."""
    if isinstance(w, widgets.widget_selection._Selection):  # its label (``w.label`` can lag behind ``index``)
        labels, index = getattr(w, "_options_labels", ()), w.index
        return str(labels[index]) if index is not None and index < len(labels) else str(w.value)
    value = w.value
    fmt = getattr(w, "readout_format", None)
    if isinstance(value, float) and fmt:
        try:
            return format(value, fmt)
        except (ValueError, TypeError):
            pass
    if isinstance(value, float):
        return f"{value:g}"
    text = str(value)
    return text if len(text) <= 300 else text[:300] + "…"


def controls(root: widgets.Widget) -> list[tuple[str, str]]:
    """``(description, value)`` of every visible control under ``root``, in display order."""
    found: list[tuple[str, str]] = []

    def walk(w: widgets.Widget) -> None:
        if not _visible(w):
            return
        if isinstance(w, widgets.Box):
            for child in w.children:
                walk(child)
        elif _is_control(w):
            found.append((str(w.description or type(w).__name__), control_value(w)))

    walk(root)
    return found


def _controls_table(items: list[widgets.Widget]) -> str:
    rows = "".join(f"<tr><td style='padding:1px 10px 1px 0;color:#555'>{html.escape(str(w.description or ''))}"
                   f"</td><td style='white-space:pre-wrap'><b>{html.escape(control_value(w))}</b></td></tr>"
                   for w in items)
    return f"<table style='border-collapse:collapse;font-size:12px;margin:2px 0'>{rows}</table>"


def _image_tag(w: widgets.Image) -> str:
    if not w.value:
        return ""
    style = "".join(f"{k}:{v};" for k, v in (("width", w.layout.width), ("height", w.layout.height)) if v)
    data = base64.b64encode(bytes(w.value)).decode("ascii")
    return (f"<img src='data:image/{html.escape(w.format)};base64,{data}' alt='the widget&#39;s picture' "
            f"style='{style}max-width:100%'/>")


def _render(w: widgets.Widget) -> str:
    """What ``w`` shows, as static HTML: display widgets as they are, controls as a table of their values."""
    if not _visible(w):
        return ""
    if isinstance(w, widgets.Image):
        return _image_tag(w)
    if isinstance(w, (widgets.HTML, widgets.HTMLMath)):
        return w.value
    if isinstance(w, widgets.Label):
        return f"<span>{html.escape(w.value)}</span>"
    if isinstance(w, widgets.Box):
        parts: list[str] = []
        run: list[widgets.Widget] = []  # consecutive controls: one table
        for child in w.children:
            if _visible(child) and _is_control(child):
                run.append(child)
                continue
            if run:
                parts.append(_controls_table(run))
                run = []
            parts.append(_render(child))
        if run:
            parts.append(_controls_table(run))
        style = ("display:flex;flex-wrap:wrap;gap:12px;align-items:flex-start" if isinstance(w, widgets.HBox)
                 else "")
        return f"<div style='{style}'>{''.join(p for p in parts if p)}</div>"
    if _is_control(w):
        return _controls_table([w])
    return ""  # buttons, Output areas (their text lives in the front end), anything else


def _first_image(w: widgets.Widget) -> bytes | None:
    if not _visible(w):
        return None
    if isinstance(w, widgets.Image) and w.format == "png" and w.value:
        return bytes(w.value)
    if isinstance(w, widgets.Box):
        for child in w.children:
            found = _first_image(child)
            if found is not None:
                return found
    return None


class StaticFallback:
    """Mixin for a widget Box: its display also carries a static picture of its current state.

    ``static_title`` names the widget in the picture's caption. Put it first among the bases:
    ``class AttentionExplorer(StaticFallback, widgets.VBox)``.
    """

    static_title = "widget"

    def _last_error(self) -> str | None:
        for value in vars(self).values():
            if isinstance(value, Redrawer) and value.last_error:
                return value.last_error
        return None

    def static_text(self) -> str:
        """One line for text-only front ends: the widget's name and its controls' values."""
        values = ", ".join(f"{d} = {v if len(v) <= 40 else v[:40] + '…'}" for d, v in controls(self))  # type: ignore[arg-type]
        return f"{self.static_title}" + (f" ({values})" if values else "") + \
            " [interactive in JupyterLab / Notebook 7; this is its text form]"

    def static_html(self) -> str:
        """The static picture: a caption, the controls' values and what the widget displays, as HTML."""
        error = self._last_error()
        shown = any(isinstance(v, Redrawer) and not isinstance(v.errors, widgets.Output) for v in vars(self).values())
        note = (f"<p style='color:#b00;font-size:12px'>The last redraw failed: {html.escape(error)}</p>"
                if error and not shown else "")  # an HTML errors widget is already part of the picture
        caption = (f"<div style='color:#666;font-size:11px;margin-bottom:4px'>Static picture of the "
                   f"<b>{html.escape(self.static_title)}</b> as it was displayed. Its controls work in JupyterLab "
                   "or Notebook 7 (and in VS Code when widgets load).</div>")
        return (f"<div class='{_STATIC_CLASS}' style='border-left:3px solid #ddd;padding-left:8px'>"
                f"{caption}{_render(self)}{note}</div>")  # type: ignore[arg-type]

    def static_png(self) -> bytes | None:
        """The widget's picture as PNG bytes when it is an image (e.g. a heatmap), else None."""
        return _first_image(self)  # type: ignore[arg-type]

    def snapshot(self) -> Any:
        """A static picture of the widget's state now, to display in its own output (``w.snapshot()``)."""
        from IPython.display import HTML  # noqa: PLC0415

        return HTML(self.static_html())

    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, Any] | None:
        data = super()._repr_mimebundle_(**kwargs)  # type: ignore[misc]  # text/plain + widget view
        if not data:
            return data
        data = dict(data)
        try:
            data["text/html"] = self.static_html()
            data["text/plain"] = self.static_text()
            png = self.static_png()
            if png is not None:
                data["image/png"] = base64.b64encode(png).decode("ascii")
        except Exception as err:  # noqa: BLE001 - the live widget must display even if its picture fails
            data["text/html"] = (f"<p style='color:#b00'>No static picture of the {html.escape(self.static_title)}: "
                                 f"{html.escape(type(err).__name__)}: {html.escape(str(err))}</p>")
        return data
