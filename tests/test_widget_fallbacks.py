"""Every widget leaves a static picture of its state in its cell's output, and builds nothing while autograded.

A widget's display bundle carries, next to the live widget (``application/vnd.jupyter.widget-view+json``), a
``text/html`` picture (the controls' values as a table, what the widget shows: heatmap, bars, tables, SVG) and
a one-line ``text/plain``; the attention explorer adds its heatmap as ``image/png``. Front ends without a
widget manager show that picture: checked here through nbconvert's HTML exporter, as for a notebook saved by
JupyterLab, Notebook 7 or VS Code (none of them saves widget state by default). The end-to-end versions:
tests/test_browser.py (notebooks run and saved in JupyterLab, then converted) and tests/test_packaging.py
(a started notebook executed by ``jupyter nbconvert`` in a fresh virtual environment).
"""

from __future__ import annotations

import base64
import html
from typing import Any, Callable

import ipywidgets
import nbformat
import pytest
import torch
from bs4 import BeautifulSoup

from ipywidgets.widgets.widget import _instances as live_widgets

from course_utils.widgets.common import NotBuilt, Redrawer, StaticFallback, controls, error_output

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
torch.set_num_threads(1)


@pytest.fixture(scope="module")
def attention_model():
    from course_utils.attention import load_attention_model

    return load_attention_model("tiny-base")


@pytest.fixture(scope="module")
def base():
    from course_utils.models import load_model

    return load_model("tiny-base")


def _not_done(*_args: Any, **_kwargs: Any) -> Any:
    raise NotImplementedError()


# name -> (build(attention_model, base, tmp_path) -> widget, change(widget) -> text the picture must show after)
def _attention(am, _b, _t):
    from course_utils.widgets.attention import attention_explorer

    return attention_explorer(*am, "Tom lost a red ball.")


def _decoding(_a, b, _t):
    from course_utils.widgets.sampling import decoding_explorer

    return decoding_explorer(*b, prompt="Once upon a time, there was a")


def _lora(_a, b, _t):
    from course_utils.widgets.finetuning import lora_rank_explorer

    return lora_rank_explorer(b[0])


def _beta(_a, _b, _t):
    from course_utils.widgets.rlhf import beta_explorer

    return beta_explorer()


def _bits(_a, b, _t):
    from course_utils import quantization as qz
    from course_utils.widgets.quantization import bit_width_explorer

    batch = qz.heldout_batch(b[1], n=2, max_tokens=16)
    return bit_width_explorer(_not_done, _not_done, _not_done, _not_done, model=b[0], batch=batch, bits=16)


def _cards(_a, _b, tmp):
    from course_utils.review.flashcards import review

    return review("attention", progress_file=tmp / "progress.json")


def _set(control: ipywidgets.Widget, index: int) -> None:
    control.index = index


WIDGETS: dict[str, tuple[Callable, Callable[[Any], str] | None]] = {
    "attention": (_attention, lambda w: (setattr(w.layer, "value", 1), setattr(w.head, "value", 1), "layer 1, head 1")[-1]),
    "decoding": (_decoding, lambda w: (setattr(w.top_k, "value", 7), "<b>7</b> of")[-1]),
    "lora": (_lora, lambda w: (setattr(w.rank, "value", 16), "rank r</td><td style='white-space:pre-wrap'><b>16")[-1]),
    "beta": (_beta, lambda w: (_set(w.beta, 1), f"after, β = {w.beta.options[1]}")[-1]),
    "bit width": (_bits, None),
    "flashcards": (_cards, lambda w: (w.show_button.click(), "<b>A.</b>")[-1]),
}


@pytest.fixture(params=list(WIDGETS), ids=list(WIDGETS))
def widget(request, attention_model, base, tmp_path):
    build, change = WIDGETS[request.param]
    return build(attention_model, base, tmp_path), change


def _displays(w: ipywidgets.Widget) -> list[str]:
    """What the widget shows a learner: the values of its visible HTML parts, its images as base64."""
    if w.layout.display == "none":
        return []
    if isinstance(w, ipywidgets.Box):
        return [v for child in w.children for v in _displays(child)]
    if isinstance(w, (ipywidgets.HTML, ipywidgets.HTMLMath)) and w.value:
        return [w.value]
    if isinstance(w, ipywidgets.Image) and w.value:
        return [base64.b64encode(w.value).decode()]
    return []


def _bundle(w: Any) -> dict[str, Any]:
    return w._repr_mimebundle_()


def _notebook_with(bundles: list[dict[str, Any]], widget_state: dict | None = None) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    for i, data in enumerate(bundles):
        cell = nbformat.v4.new_code_cell("explorer", execution_count=i + 1)
        cell.outputs = [nbformat.v4.new_output("display_data", data=data)]
        nb.cells.append(cell)
    if widget_state is not None:
        nb.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {
            "version_major": 2, "version_minor": 0, "state": widget_state}}
    return nb


def _html(nb: nbformat.NotebookNode) -> BeautifulSoup:
    from nbconvert import HTMLExporter

    body, _ = HTMLExporter().from_notebook_node(nb)
    return BeautifulSoup(body, "html.parser")


def test_the_display_carries_the_live_widget_and_a_picture_of_its_state(widget):
    w, change = widget
    data = _bundle(w)
    assert data[WIDGET_VIEW]["model_id"] == w.model_id, "the live widget must stay the preferred display"
    picture = data["text/html"]
    assert "course-widget-static" in picture and w.static_title in picture
    for description, value in controls(w):
        assert html.escape(description) in picture and html.escape(value)[:20] in picture, (description, value)
    assert w.static_title in data["text/plain"] and len(data["text/plain"].splitlines()) == 1
    shown = _displays(w)
    assert shown, f"the {w.static_title} displays nothing?"
    for value in shown:
        assert value in picture, f"the picture lacks part of what the widget shows: {value[:120]!r}"
    if change is not None:
        expected = change(w)
        assert expected not in picture, "the test's change must make a visible difference"
        assert expected in _bundle(w)["text/html"], f"the picture does not follow the widget's state ({expected!r})"


def test_the_attention_heatmap_is_also_a_png(attention_model, base, tmp_path):
    w = _attention(attention_model, base, tmp_path)
    png = base64.b64decode(_bundle(w)["image/png"])
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and png == w.image.value
    assert base64.b64encode(png).decode() in _bundle(w)["text/html"]  # the HTML picture shows the same heatmap


def test_nbconvert_html_shows_every_picture_when_no_widget_state_was_saved(attention_model, base, tmp_path):
    built = [build(attention_model, base, tmp_path) for build, _ in WIDGETS.values()]
    soup = _html(_notebook_with([_bundle(w) for w in built]))
    outputs = soup.select(".jp-OutputArea-output")
    assert len(outputs) == len(built)
    for w, out in zip(built, outputs):
        pictures = out.select(".course-widget-static")
        assert pictures, f"no static picture of the {w.static_title} in nbconvert's HTML: {str(out)[:300]}"
        assert w.static_title in pictures[0].get_text()
        caption = pictures[0].find("div").get_text()
        assert pictures[0].select("img") or len(pictures[0].get_text()) > len(caption) + 20, \
            f"the {w.static_title}'s picture shows nothing but its caption"
    assert not soup.find("script", type=WIDGET_VIEW)


def test_with_saved_widget_state_nbconvert_uses_the_live_widget_instead(base, tmp_path):
    """What the README says about ``jupyter nbconvert --execute``: it saves widget state, and then the page
    loads the widget library (from unpkg.com) to draw the widget rather than the picture."""
    w = _lora(None, base, tmp_path)
    soup = _html(_notebook_with([_bundle(w)], widget_state={w.model_id: {"model_name": "VBoxModel", "state": {}}}))
    assert soup.find("script", type=WIDGET_VIEW) and not soup.select(".course-widget-static")


def test_redraw_errors_are_shown_in_the_widget_and_in_its_picture(base):
    from course_utils.widgets.sampling import decoding_explorer

    ex = decoding_explorer(*base, filter_fns={"softmax": _not_done})
    assert "write softmax_with_temperature above first" in ex.errors.value
    assert "write softmax_with_temperature above first" in _bundle(ex)["text/html"]


def test_a_redraw_that_works_sends_nothing_to_the_errors_widget():
    errors = error_output()
    changes: list[Any] = []
    errors.observe(changes.append, names="value")
    broken = {"now": False}

    def draw() -> None:
        if broken["now"]:
            raise ValueError("bad value")

    redraw = Redrawer(draw, errors)
    for _ in range(5):
        redraw()
    assert changes == [] and redraw.last_error is None
    broken["now"] = True
    redraw()
    assert "ValueError: bad value" in errors.value and redraw.last_error == "ValueError: bad value"
    broken["now"] = False
    redraw()
    assert errors.value == "" and redraw.last_error is None and len(changes) == 2


def test_a_picture_that_fails_never_hides_the_widget(base, tmp_path, monkeypatch):
    w = _lora(None, base, tmp_path)

    def broken(self) -> str:
        raise RuntimeError("no picture today")

    monkeypatch.setattr(StaticFallback, "static_html", broken)
    data = _bundle(w)
    assert WIDGET_VIEW in data and "no picture today" in data["text/html"]


def test_snapshot_is_a_picture_of_the_state_now(base, tmp_path):
    w = _lora(None, base, tmp_path)
    w.rank.value = 32
    assert "<b>32</b>" in w.snapshot().data


# -- autograding: nothing to wait on ------------------------------------------------------------------------


class _Untouchable:
    """A model, tokenizer or batch that fails the test if a factory so much as looks at it."""

    touched: list[str] = []

    def __getattr__(self, name: str) -> Any:
        _Untouchable.touched.append(name)
        raise AssertionError(f"the factory used {name!r} while autograding")

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        _Untouchable.touched.append("__call__")
        raise AssertionError("the factory called something while autograding")


def test_factories_build_nothing_while_autograding(monkeypatch, tmp_path):
    import course_utils.models
    import course_utils.sweeps.rlhf
    from course_utils.review.flashcards import review
    from course_utils.widgets.attention import attention_explorer
    from course_utils.widgets.finetuning import lora_rank_explorer
    from course_utils.widgets.quantization import bit_width_explorer
    from course_utils.widgets.rlhf import beta_explorer
    from course_utils.widgets.sampling import decoding_explorer

    monkeypatch.setenv("NBGRADER_EXECUTION", "autograde")
    monkeypatch.setattr(course_utils.models, "load_model", _Untouchable())
    monkeypatch.setattr(course_utils.sweeps.rlhf, "load_sweep", _Untouchable())
    x, fn = _Untouchable(), _Untouchable()
    _Untouchable.touched = []
    before = set(live_widgets)
    built = [attention_explorer(x, x, "text", score_fn=fn), decoding_explorer(x, x, filter_fns={"softmax": fn}),
             lora_rank_explorer(), lora_rank_explorer(x, inject_fn=fn, count_fn=fn), beta_explorer(),
             bit_width_explorer(fn, fn, fn, fn), bit_width_explorer(fn, fn, fn, fn, model=x, batch=x),
             review("attention", progress_file=tmp_path / "missing" / "progress.json")]
    assert _Untouchable.touched == []
    assert all(isinstance(b, NotBuilt) for b in built)
    assert set(live_widgets) == before, "a widget (and its comm) was created while autograding"
    assert not (tmp_path / "missing").exists()
    note = built[0]._repr_mimebundle_()
    assert "not built while the notebook is autograded" in note["text/plain"] and "NBGRADER_EXECUTION" in note["text/html"]
    with pytest.raises(AttributeError, match="unset NBGRADER_EXECUTION"):
        built[0].layer  # noqa: B018 - a later cell using the widget gets a clear message


def test_factories_build_the_widget_when_not_autograding(monkeypatch, base):
    from course_utils.widgets.finetuning import lora_rank_explorer

    monkeypatch.delenv("NBGRADER_EXECUTION", raising=False)
    assert not isinstance(lora_rank_explorer(base[0]), NotBuilt)
    monkeypatch.setenv("NBGRADER_EXECUTION", "")  # set but empty: nbgrader never does that; treated as unset
    assert not isinstance(lora_rank_explorer(base[0]), NotBuilt)
