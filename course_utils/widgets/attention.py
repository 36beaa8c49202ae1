"""Attention heatmaps and the attention explorer widget.

Plotting functions turn arrays into matplotlib figures and do nothing else; :func:`attention_explorer`
wires the bundled model, the plots and ipywidgets together.

    >>> from course_utils.widgets.attention import attention_explorer
    >>> explorer = attention_explorer(model, tokenizer, "Tom lost a red ball.")
    >>> explorer                                  # in a notebook: text box, layer/head selectors, heatmap
    >>> explorer.layer.value = 2                  # headless: set a value, the image is redrawn
    >>> explorer.redrawer.timings_ms[-1]          # how long that redraw took
"""

from __future__ import annotations

import io
from typing import Any, Callable, Sequence

import ipywidgets as widgets
import matplotlib
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure  # explicit Figures: no pyplot state, safe inside widget callbacks

from course_utils.attention import AttentionMaps, attention_maps
from course_utils.widgets.common import NotBuilt, Redrawer, StaticFallback, error_output, grading

CMAP = "viridis"


# ----------------------------------------------------------------------------------------------
# Plots (arrays -> figures)


def _label_axes(ax: Any, rows: Sequence[str] | None, cols: Sequence[str] | None, fontsize: float) -> None:
    if cols is not None:
        ax.set_xticks(range(len(cols)))
        ax.set_xticklabels(cols, rotation=90, fontsize=fontsize)
    if rows is not None:
        ax.set_yticks(range(len(rows)))
        ax.set_yticklabels(rows, fontsize=fontsize)


def _fontsize(n: int) -> float:
    return max(4.0, min(10.0, 260.0 / max(n, 1)))


def plot_attention(weights: Any, labels: Sequence[str] | None = None, *, col_labels: Sequence[str] | None = None,
                   title: str | None = None, ax: Any = None, vmax: float | None = 1.0,
                   colorbar: bool = True) -> Figure:
    """A heatmap of one attention map ``(T_q, T_k)``: row ``i`` = where query token ``i`` looks.

    ``labels`` name the rows (queries) and, unless ``col_labels`` is given, the columns (keys).
    Returns the figure (displayed by Jupyter when it is the cell's last value).
    """
    import numpy as np

    w = np.asarray(getattr(weights, "detach", lambda: weights)(), dtype=float)
    if w.ndim != 2:
        raise ValueError(f"plot_attention wants one map of shape (T_q, T_k), got shape {w.shape}; "
                         "pick a layer and a head first, e.g. weights[layer, head].")
    cols = col_labels if col_labels is not None else labels
    for name, lab, n in (("labels", labels, w.shape[0]), ("col_labels", cols, w.shape[1])):
        if lab is not None and len(lab) != n:
            raise ValueError(f"{name} has {len(lab)} entries for {n} tokens: they must match the map's shape")
    if ax is None:
        side = min(7.0, 2.5 + 0.12 * max(w.shape))
        fig = Figure(figsize=(side + (1.0 if colorbar else 0), side))
        ax = fig.add_subplot()
    else:
        fig = ax.figure
    im = ax.imshow(w, cmap=CMAP, vmin=0.0, vmax=vmax, aspect="auto", interpolation="nearest")
    _label_axes(ax, labels, cols, _fontsize(max(w.shape)))
    ax.set_xlabel("key: the token looked at")
    ax.set_ylabel("query: the token looking")
    if title:
        ax.set_title(title, fontsize=10)
    if colorbar:
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    fig.tight_layout()
    return fig


def plot_masks(panels: dict[str, Any]) -> Figure:
    """Side-by-side masks (True = may attend) or weight maps, one panel per entry.

    Each value is a ``(T_q, T_k)`` array, or a tuple ``(array, row_labels, col_labels)`` to name the tokens.
    """
    import numpy as np

    fig = Figure(figsize=(3.6 * len(panels), 3.6))
    for k, (name, panel) in enumerate(panels.items()):
        m, rows, cols = panel if isinstance(panel, tuple) else (panel, None, None)
        ax = fig.add_subplot(1, len(panels), k + 1)
        arr = np.asarray(getattr(m, "detach", lambda: m)(), dtype=float)
        if arr.ndim != 2:
            raise ValueError(f"panel {name!r} has shape {arr.shape}; each panel must be one (T_q, T_k) map")
        ax.imshow(arr, cmap=CMAP, vmin=0.0, vmax=1.0, interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        _label_axes(ax, rows, cols, 8)
        ax.set_title(name, fontsize=10)
    fig.tight_layout()
    return fig


def plot_head_grid(maps: AttentionMaps, *, max_tokens: int = 40) -> Figure:
    """Every layer (rows) and head (columns) of ``maps`` as small heatmaps, first ``max_tokens`` tokens."""
    L, H = maps.n_layers, maps.n_heads
    T = min(max_tokens, len(maps.labels))
    fig = Figure(figsize=(2.3 * H, 2.3 * L))
    for layer in range(L):
        for head in range(H):
            ax = fig.add_subplot(L, H, layer * H + head + 1)
            ax.imshow(maps.weights[layer, head, :T, :T].numpy(), cmap=CMAP, vmin=0, vmax=1,
                      interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"layer {layer}, head {head}", fontsize=8)
    fig.tight_layout()
    return fig


def plot_head_scores(scores: Any, *, title: str, baseline: float | None = None) -> Figure:
    """A (layers, heads) table of scores as an annotated heatmap; ``baseline`` is noted in the title."""
    import numpy as np

    s = np.asarray(getattr(scores, "detach", lambda: scores)(), dtype=float)
    if s.ndim != 2:
        raise ValueError(f"scores must be a (layers, heads) table, got shape {s.shape}")
    fig = Figure(figsize=(1.2 * s.shape[1] + 2.2, 0.8 * s.shape[0] + 1.4))
    ax = fig.add_subplot()
    im = ax.imshow(s, cmap=CMAP, vmin=0.0, vmax=1.0)
    for (i, j), v in np.ndenumerate(s):
        ax.text(j, i, f"{v:.2f}", ha="center", va="center", color="white" if v < 0.6 else "black", fontsize=9)
    ax.set_xticks(range(s.shape[1]))
    ax.set_yticks(range(s.shape[0]))
    ax.set_xlabel("head")
    ax.set_ylabel("layer")
    ax.set_title(title + (f"\n(uniform-attention baseline {baseline:.2f})" if baseline is not None else ""),
                 fontsize=10)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    fig.tight_layout()
    return fig


def figure_png(fig: Figure, dpi: int = 72) -> bytes:
    """The figure rendered to PNG bytes (for an ``ipywidgets.Image``)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


# ----------------------------------------------------------------------------------------------
# The explorer


class _Frame:
    """A pre-rendered heatmap frame for one text: axes, token labels and colour bar, with an empty plot area.

    Drawing dozens of tick labels is what makes matplotlib slow (0.3-0.9 s here); the frame is rendered
    once per text, and a redraw only colours the plot area's pixels and encodes a PNG (a few ms).
    """

    def __init__(self, labels: Sequence[str], width_px: int, height_px: int, dpi: int) -> None:
        import numpy as np

        T = len(labels)
        fig = Figure(figsize=(width_px / dpi, height_px / dpi), dpi=dpi)
        ax = fig.add_axes((0.15, 0.15, 0.74, 0.83))  # room for labels left and below, colour bar right
        im = ax.imshow(np.zeros((T, T)), cmap=CMAP, vmin=0.0, vmax=1.0, interpolation="nearest", aspect="auto")
        fig.colorbar(im, cax=fig.add_axes((0.905, 0.15, 0.02, 0.83)))
        # Token labels as plain text artists: about a third cheaper to draw than tick labels.
        ax.set_xticks([])
        ax.set_yticks([])
        size = max(3.0, min(10.0, 0.85 * (0.83 * height_px / max(T, 1)) * 72 / dpi))  # points, fits a row
        for i, label in enumerate(labels):
            ax.text(i, -0.005, label, rotation=90, ha="center", va="top", fontsize=size,
                    transform=ax.get_xaxis_transform())
            ax.text(-0.005, i, label, ha="right", va="center", fontsize=size, transform=ax.get_yaxis_transform())
        fig.text(0.52, 0.005, "key: the token looked at", ha="center", va="bottom", fontsize=9)
        fig.text(0.005, 0.56, "query: the token looking", rotation=90, ha="left", va="center", fontsize=9)
        canvas = FigureCanvasAgg(fig)
        canvas.draw()
        self.pixels = np.asarray(canvas.buffer_rgba()).copy()  # (Hpx, Wpx, 4) uint8, row 0 = top
        box = ax.get_window_extent()  # display pixels, origin at the bottom left
        H = self.pixels.shape[0]
        self.top, self.bottom = int(round(H - box.y1)) + 1, int(round(H - box.y0)) - 1
        self.left, self.right = int(round(box.x0)) + 1, int(round(box.x1)) - 1
        rows, cols = self.bottom - self.top, self.right - self.left
        self.row_index = (np.arange(rows) * T) // rows  # pixel row -> query token
        self.col_index = (np.arange(cols) * T) // cols  # pixel column -> key token
        self.colormap = matplotlib.colormaps[CMAP]

    def png(self, weights: Any) -> bytes:
        """PNG bytes of the frame with ``weights`` ``(T, T)`` painted into the plot area."""
        import numpy as np
        from PIL import Image

        rgba = self.colormap(np.clip(weights, 0.0, 1.0), bytes=True)  # (T, T, 4) uint8
        out = self.pixels.copy()
        out[self.top:self.bottom, self.left:self.right] = rgba[self.row_index][:, self.col_index]
        buf = io.BytesIO()
        Image.fromarray(out[..., :3]).save(buf, format="png", compress_level=1)
        return buf.getvalue()


class AttentionExplorer(StaticFallback, widgets.VBox):
    """Text box, layer and head selectors, and the selected head's attention heatmap.

    The model runs once per distinct text and the labelled frame is drawn once per text (both cached);
    changing the layer or head only re-colours the plot area, which keeps that redraw far under 100 ms.
    Attributes for headless use: ``text``, ``layer``, ``head`` (the controls), ``image`` (PNG bytes in
    ``image.value``), ``info`` (the caption), ``redrawer`` (errors, ``timings_ms``), ``maps`` (the current
    :class:`AttentionMaps`), ``shown`` (the ``(T, T)`` array on screen).
    """

    WIDTH_PX, HEIGHT_PX = 640, 600
    static_title = "attention explorer"

    def __init__(self, model: Any, tokenizer: Any, text: str, *,
                 score_fn: Callable[[Any], Any] | None = None, max_tokens: int = 64, dpi: int = 90) -> None:
        self._model, self._tokenizer = model, tokenizer
        self._score_fn, self._max_tokens, self._dpi = score_fn, max_tokens, dpi
        self._cache: dict[str, tuple[AttentionMaps, _Frame]] = {}
        self.maps: AttentionMaps | None = None
        self.shown: Any = None
        n_layers, n_heads = model.config.n_layer, model.config.n_head

        self.text = widgets.Textarea(value=text, description="text", continuous_update=False,
                                     layout=widgets.Layout(width="98%", height="60px"))
        self.layer = widgets.ToggleButtons(options=list(range(n_layers)), value=0, description="layer",
                                           style={"button_width": "40px"})
        self.head = widgets.ToggleButtons(options=list(range(n_heads)), value=0, description="head",
                                          style={"button_width": "40px"})
        self.info = widgets.HTML(value="", layout=widgets.Layout(height="24px"))
        self.image = widgets.Image(format="png", layout=widgets.Layout(height=f"{self.HEIGHT_PX}px",
                                                                       width=f"{self.WIDTH_PX}px"))
        self.errors = error_output()
        self.redrawer = Redrawer(self._draw, self.errors)
        for control in (self.text, self.layer, self.head):
            control.observe(lambda _change: self.redrawer(), names="value")
        super().__init__([self.text, self.layer, self.head, self.info, self.image, self.errors])
        self.redrawer()

    def _for_text(self, text: str) -> tuple[AttentionMaps, _Frame]:
        """Model forward + labelled frame, computed once per distinct text."""
        if text not in self._cache:
            maps = attention_maps(self._model, self._tokenizer, text)
            if len(maps.labels) > self._max_tokens:
                raise ValueError(f"the text has {len(maps.labels)} tokens; the explorer shows at most "
                                 f"{self._max_tokens}: shorten it (or pass max_tokens=...).")
            if len(self._cache) >= 16:
                self._cache.pop(next(iter(self._cache)))
            self._cache[text] = (maps, _Frame(maps.labels, self.WIDTH_PX, self.HEIGHT_PX, self._dpi))
        return self._cache[text]

    def _draw(self) -> None:
        maps, frame = self._for_text(self.text.value)
        layer, head = int(self.layer.value), int(self.head.value)
        self.maps = maps
        self.shown = maps.head(layer, head).numpy()  # (T, T)
        self.image.value = frame.png(self.shown)
        self.info.value = f"<b>layer {layer}, head {head}</b> &nbsp; {self._score_text(maps, layer, head)}"

    def _score_text(self, maps: AttentionMaps, layer: int, head: int) -> str:
        if self._score_fn is None:
            return ""
        try:
            scores = self._score_fn(maps.weights[layer])  # (H, T, T) -> (H,)
            value = float(scores[head])
        except NotImplementedError:
            return "<i>write <code>previous_token_score</code> above to see this head's score here</i>"
        except Exception as err:  # noqa: BLE001 - the learner's function failed: say so, keep the heatmap
            return f"<span style='color:#b00'>your score function raised {type(err).__name__}: {err}</span>"
        return f"previous-token score (your function): <b>{value:.3f}</b>"


def attention_explorer(model: Any, tokenizer: Any, text: str = "Tom lost a red ball. Tom was sad.", *,
                       score_fn: Callable[[Any], Any] | None = None,
                       max_tokens: int = 64) -> AttentionExplorer | NotBuilt:
    """Build the attention explorer for ``model`` (loaded with eager attention).

    ``score_fn``: optional, e.g. your ``previous_token_score``: it gets one layer's maps ``(H, T, T)`` and
    returns a score per head; the selected head's score is shown above the heatmap.
    While autograding (``NBGRADER_EXECUTION`` set) nothing is computed: a :class:`NotBuilt` note comes back.
    """
    if grading():
        return NotBuilt(AttentionExplorer.static_title)
    implementation = getattr(model.config, "_attn_implementation", "eager")
    if implementation != "eager":
        raise ValueError(f"the model uses attn_implementation={implementation!r}, which returns no attention "
                         "maps: load it with course_utils.attention.load_attention_model (eager attention).")
    return AttentionExplorer(model, tokenizer, text, score_fn=score_fn, max_tokens=max_tokens)
