"""The bit-width explorer: pick bits (2-8, 16) and a scheme, see what quantization does to the bundled model.

    >>> from course_utils.widgets.quantization import bit_width_explorer
    >>> w = bit_width_explorer(quantize_model, absmax_quantize, zeropoint_quantize, dequantize,
    ...                        model=model, batch=heldout)
    >>> w                                   # in a notebook: shows it
    >>> w.bits.value = 4; w.last["ppl"]     # headless: drive it and read its state

It shows, for the chosen setting:

* the histogram of one output channel's weights with the quantization levels (the grid of values the
  integers can represent) drawn over it;
* the model's size, the weight error and the held-out perplexity of the whole quantized model;
* a map of size vs perplexity with every setting visited so far.

The quantization itself is the learner's: the factory takes their ``quantize_model`` (for the whole model)
and ``absmax_quantize`` / ``zeropoint_quantize`` / ``dequantize`` (for the levels). Results are cached per
(bits, scheme, granularity), so revisiting a setting only redraws.
"""

from __future__ import annotations

import html
import math
import time
from typing import Any, Callable

import ipywidgets as widgets
import torch
from torch import nn

from course_utils import quantization as qz
from course_utils.widgets.common import NotBuilt, Redrawer, StaticFallback, error_output, grading

GRANULARITY_OPTIONS = (("per tensor", "tensor"), ("per channel", "channel"), ("groups of 32", 32))
SCHEME_OPTIONS = (("absmax (symmetric)", "absmax"), ("zero-point (asymmetric)", "zeropoint"))


def _as_out_in(module: nn.Module) -> torch.Tensor:
    """A linear layer's weight as (out, in): GPT-2's Conv1D stores (in, out), nn.Linear (out, in)."""
    w = module.weight.detach()
    return w if isinstance(module, nn.Linear) else w.T


class BitWidthExplorer(StaticFallback, widgets.VBox):
    """The widget returned by :func:`bit_width_explorer` (a VBox with its controls and state as attributes)."""

    static_title = "bit-width explorer"

    def __init__(self, quantize_model: Callable[..., nn.Module], absmax_quantize: Callable[..., Any],
                 zeropoint_quantize: Callable[..., Any], dequantize: Callable[..., torch.Tensor],
                 model: nn.Module, batch: dict[str, torch.Tensor], layer: str, channel: int,
                 bits: int = 4) -> None:
        self.fns = {"quantize_model": quantize_model, "absmax": absmax_quantize,
                    "zeropoint": zeropoint_quantize, "dequantize": dequantize}
        self.model, self.batch, self.layer_name, self.channel = model, batch, layer, channel
        modules = dict(model.named_modules())
        if layer not in modules or not hasattr(modules[layer], "weight"):
            raise ValueError(f"layer {layer!r} is not a layer with a weight in this model; "
                             f"try one of {[n for n, _ in qz.linear_modules(model)][:6]}")
        self.w = _as_out_in(modules[layer]).float()  # (out, in)
        if not 0 <= channel < self.w.shape[0]:
            raise ValueError(f"channel must be in [0, {self.w.shape[0]}), got {channel}")
        self.fp32 = {"ppl": qz.perplexity(model, batch), "size": qz.size_bytes(model)}
        self.cache: dict[tuple, dict[str, Any]] = {}
        self.last: dict[str, Any] = {}

        self.bits = widgets.SelectionSlider(options=list(qz.BITS_CHOICES), value=bits, description="bits",
                                            continuous_update=False, layout=widgets.Layout(width="360px"))
        self.scheme = widgets.Dropdown(options=SCHEME_OPTIONS, value="absmax", description="scheme",
                                       layout=widgets.Layout(width="300px"))
        self.granularity = widgets.Dropdown(options=GRANULARITY_OPTIONS, value="channel",
                                            description="scales", layout=widgets.Layout(width="260px"))
        self.summary = widgets.HTML(layout=widgets.Layout(height="64px"))
        self.plot = widgets.HTML(layout=widgets.Layout(height=f"{_HEIGHT + 10}px"))
        self.errors = error_output()
        self.redraw = Redrawer(self._draw, self.errors)
        for control in (self.bits, self.scheme, self.granularity):
            control.observe(lambda change: self.redraw(), names="value")
        super().__init__([widgets.HBox([self.bits, self.scheme, self.granularity]), self.summary,
                          self.plot, self.errors])
        self._hist: tuple | None = None
        self.redraw()

    # -- computing (cached) --------------------------------------------------------------------
    def key(self) -> tuple:
        b = int(self.bits.value)
        return (16,) if b == 16 else (b, self.scheme.value, self.granularity.value)

    def compute(self, key: tuple) -> dict[str, Any]:
        """Quantize the model and the shown channel for ``key``; cached."""
        if key in self.cache:
            return self.cache[key]
        start = time.perf_counter()
        row = self.w[self.channel]  # (in,)
        if key == (16,):
            quantized = qz.round_weights(self.model, torch.bfloat16)
            levels = None
            row_hat = row.to(torch.bfloat16).float()
            size = qz.size_bytes(self.model, 16)
            note = "bfloat16: no uniform grid (8 bits of precision at every scale)"
        else:
            bits, scheme, gran = key
            quantized = self.fns["quantize_model"](self.model, bits, scheme, gran)
            if not isinstance(quantized, nn.Module):
                raise TypeError(f"quantize_model should return a model, got {type(quantized).__name__}")
            levels, note = self._levels(bits, scheme, gran)
            row_hat = _as_out_in(dict(quantized.named_modules())[self.layer_name]).float()[self.channel]
            size = qz.size_bytes(self.model, bits, scheme, gran)
        result = {"ppl": qz.perplexity(quantized, self.batch), "size": size,
                  "error": qz.weight_error(self.model, quantized), "levels": levels, "note": note,
                  "row_hat": row_hat, "seconds": time.perf_counter() - start}
        self.cache[key] = result
        return result

    def _levels(self, bits: int, scheme: str, gran: Any) -> tuple[torch.Tensor, str]:
        """Every value the integers can stand for, for the shown channel (or its first group)."""
        w = self.w
        if gran == "tensor":
            target, index, note = w, (), "one grid for the whole matrix"
        elif gran == "channel":
            target, index, note = w, (self.channel, 0), f"the grid of channel {self.channel}"
        else:
            target = w.reshape(-1, gran)  # (out * in / g, g)
            index = (self.channel * (w.shape[1] // gran), 0)
            note = f"the grid of the first group of {gran} (each group has its own)"
        axis = None if gran == "tensor" else 0
        if scheme == "absmax":
            _, scale = self.fns["absmax"](target, bits, axis)
            qmax = 2 ** (bits - 1) - 1
            codes = torch.arange(-qmax, qmax + 1)
            zp: Any = 0
        else:
            _, scale, zp = self.fns["zeropoint"](target, bits, axis)
            codes = torch.arange(0, 2 ** bits)
            zp = torch.as_tensor(zp)[index] if torch.as_tensor(zp).dim() else zp
        scale = torch.as_tensor(scale)[index] if torch.as_tensor(scale).dim() else scale
        return self.fns["dequantize"](codes, scale, zp).float().flatten(), note

    # -- drawing ------------------------------------------------------------------------------
    def _draw(self) -> None:
        key = self.key()
        r = self.compute(key)
        row = self.w[self.channel]
        err = (row - r["row_hat"]).abs()
        self.last = {"key": key, "ppl": r["ppl"], "size": r["size"], "relative_error": r["error"]["relative"],
                     "channel_max_error": float(err.max()), "n_levels": None if r["levels"] is None
                     else int(r["levels"].numel())}
        name = "bf16" if key == (16,) else f"int{key[0]} {key[1]}, " + (
            f"groups of {key[2]}" if isinstance(key[2], int) else f"per {key[2]}")
        self.summary.value = (
            f"<b>{name}</b>: size <b>{r['size'] / 1e3:.0f} kB</b> ({self.fp32['size'] / r['size']:.1f}x smaller "
            f"than fp32) &nbsp;|&nbsp; perplexity <b>{r['ppl']:.3f}</b> (fp32 {self.fp32['ppl']:.3f}, "
            f"{(r['ppl'] / self.fp32['ppl'] - 1) * 100:+.1f} %)<br>weight error over the model: "
            f"{r['error']['relative'] * 100:.2f} % (relative L2), mean |w - w&#770;| {r['error']['mean_abs']:.2e}; "
            f"this channel: max |w - w&#770;| {float(err.max()):.2e}")
        self.plot.value = self._render(key, r, row)

    def _render(self, key: tuple, r: dict[str, Any], row: torch.Tensor) -> str:
        """The two panels as one inline SVG (a few ms; a matplotlib PNG takes 10-50x longer)."""
        if self._hist is None:
            lo, hi = float(row.min()), float(row.max())
            pad = 0.08 * (hi - lo)
            counts = torch.histc(row, bins=60, min=lo - pad, max=hi + pad)
            self._hist = (lo - pad, hi + pad, counts.tolist())
        lo, hi, counts = self._hist
        left = _Panel(10, 440, "weight value", "count", lo, hi, 0, max(counts) * 1.1)
        parts = [left.frame(f"{self.layer_name}, channel {self.channel}: {r['note']}")]
        width = (hi - lo) / len(counts)
        path = " ".join(f"L{left.x(lo + i * width):.1f},{left.y(c):.1f} L{left.x(lo + (i + 1) * width):.1f},"
                        f"{left.y(c):.1f}" for i, c in enumerate(counts))
        parts.append(f'<path d="M{left.x(lo):.1f},{left.y(0):.1f} {path} L{left.x(hi):.1f},{left.y(0):.1f} Z" '
                     'fill="#4c72b0" fill-opacity="0.75"/>')
        if r["levels"] is not None:
            lv = [v for v in r["levels"].tolist() if lo <= v <= hi]
            parts.extend(f'<line x1="{left.x(v):.1f}" x2="{left.x(v):.1f}" y1="{left.top}" y2="{left.bottom}" '
                         'stroke="#c44e52" stroke-width="0.8" stroke-opacity="0.8"/>' for v in lv)
            legend = f"red: {len(lv)} of {r['levels'].numel()} levels in view"
        else:
            legend = "bf16: no uniform grid of levels"
        parts.append(f'<text x="{left.right - 4}" y="{left.top + 12}" text-anchor="end" '
                     f'fill="#c44e52">{legend}</text>')

        points = [(v["size"] / 1e3, v["ppl"]) for v in self.cache.values()]
        ppls = [p for _, p in points] + [self.fp32["ppl"]]
        y_lo, y_hi = math.log10(min(ppls) / 1.2), math.log10(max(ppls) * 1.2)
        right = _Panel(500, 300, "size (kB)", "perplexity (log)", 0, self.fp32["size"] / 1e3 * 1.1, y_lo, y_hi,
                       log_y=True)
        parts.append(right.frame("settings visited so far"))
        for x, y in points:
            parts.append(f'<circle cx="{right.x(x):.1f}" cy="{right.y(math.log10(y)):.1f}" r="3" fill="#999"/>')
        for (x, y), colour, label in (((self.fp32["size"] / 1e3, self.fp32["ppl"]), "#55a868", "fp32"),
                                      ((r["size"] / 1e3, r["ppl"]), "#c44e52", "now")):
            cx, cy = right.x(x), right.y(math.log10(y))
            parts.append(f'<circle cx="{cx:.1f}" cy="{cy:.1f}" r="5" fill="{colour}"/>'
                         f'<text x="{cx + 7:.1f}" y="{cy - 5:.1f}" fill="{colour}">{label}</text>')
        return (f'<svg xmlns="http://www.w3.org/2000/svg" width="820" height="{_HEIGHT}" '
                f'font-family="sans-serif" font-size="11">' + "".join(parts) + "</svg>")


_HEIGHT = 260


class _Panel:
    """A plot area inside the SVG: maps data to pixels and draws the frame, ticks and labels."""

    def __init__(self, x0: float, width: float, xlabel: str, ylabel: str, x_lo: float, x_hi: float,
                 y_lo: float, y_hi: float, log_y: bool = False) -> None:
        self.left, self.right = x0 + 55, x0 + width
        self.top, self.bottom = 24, _HEIGHT - 40
        self.xlabel, self.ylabel, self.log_y = xlabel, ylabel, log_y
        self.x_lo, self.x_hi = x_lo, x_hi if x_hi > x_lo else x_lo + 1
        self.y_lo, self.y_hi = y_lo, y_hi if y_hi > y_lo else y_lo + 1

    def x(self, v: float) -> float:
        return self.left + (v - self.x_lo) / (self.x_hi - self.x_lo) * (self.right - self.left)

    def y(self, v: float) -> float:
        return self.bottom - (v - self.y_lo) / (self.y_hi - self.y_lo) * (self.bottom - self.top)

    def frame(self, title: str) -> str:
        out = [f'<rect x="{self.left}" y="{self.top}" width="{self.right - self.left}" '
               f'height="{self.bottom - self.top}" fill="none" stroke="#333"/>',
               f'<text x="{(self.left + self.right) / 2}" y="{self.top - 8}" text-anchor="middle">'
               f'{html.escape(title)}</text>',
               f'<text x="{(self.left + self.right) / 2}" y="{_HEIGHT - 6}" text-anchor="middle">{self.xlabel}</text>',
               f'<text x="{self.left - 42}" y="{(self.top + self.bottom) / 2}" text-anchor="middle" '
               f'transform="rotate(-90 {self.left - 42} {(self.top + self.bottom) / 2})">{self.ylabel}</text>']
        for v in _ticks(self.x_lo, self.x_hi):
            out.append(f'<line x1="{self.x(v):.1f}" x2="{self.x(v):.1f}" y1="{self.bottom}" y2="{self.bottom + 4}" '
                       f'stroke="#333"/><text x="{self.x(v):.1f}" y="{self.bottom + 16}" '
                       f'text-anchor="middle">{_fmt_tick(v)}</text>')
        y_ticks = ([math.log10(t) for t in _log_ticks(10 ** self.y_lo, 10 ** self.y_hi)] if self.log_y
                   else _ticks(self.y_lo, self.y_hi))
        for v in y_ticks:
            label = _fmt_tick(10 ** v) if self.log_y else _fmt_tick(v)
            out.append(f'<line x1="{self.left - 4}" x2="{self.left}" y1="{self.y(v):.1f}" y2="{self.y(v):.1f}" '
                       f'stroke="#333"/><text x="{self.left - 6}" y="{self.y(v) + 4:.1f}" '
                       f'text-anchor="end">{label}</text>')
        return "".join(out)


def _ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """About ``n`` round numbers between ``lo`` and ``hi``."""
    raw = (hi - lo) / n
    step = 10 ** math.floor(math.log10(raw))
    step *= next(m for m in (1, 2, 5, 10) if step * m >= raw)
    first = math.ceil(lo / step) * step
    return [first + i * step for i in range(int((hi - first) / step) + 1)]


def _log_ticks(lo: float, hi: float) -> list[float]:
    """1-2-5 ticks for a log axis, thinned to at most 6."""
    out = [m * 10 ** e for e in range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1)
           for m in (1, 2, 5) if lo <= m * 10 ** e <= hi]
    if len(out) < 2:
        out = [lo * (hi / lo) ** (i / 3) for i in range(4)]
    return out[:: max(1, len(out) // 6)]


def _fmt_tick(v: float) -> str:
    if v == 0:
        return "0"
    if abs(v) >= 1000:
        return f"{v:.0f}"
    return f"{v:.3g}"


def bit_width_explorer(quantize_model: Callable[..., nn.Module], absmax_quantize: Callable[..., Any],
                       zeropoint_quantize: Callable[..., Any], dequantize: Callable[..., torch.Tensor], *,
                       model: nn.Module | None = None, batch: dict[str, torch.Tensor] | None = None,
                       layer: str = "transformer.h.0.mlp.c_proj", channel: int = 0,
                       bits: int = 4) -> BitWidthExplorer | NotBuilt:
    """Build the explorer around the learner's functions (loads ``tiny-base`` when no model is given).

    While autograding (``NBGRADER_EXECUTION`` set) nothing is computed: a :class:`NotBuilt` note comes back.
    """
    if grading():
        return NotBuilt(BitWidthExplorer.static_title)
    if model is None or batch is None:
        from course_utils.models import load_model

        loaded, tokenizer = load_model("tiny-base")
        model = model if model is not None else loaded
        batch = batch if batch is not None else qz.heldout_batch(tokenizer)
    if bits not in qz.BITS_CHOICES:
        raise ValueError(f"bits must be one of {qz.BITS_CHOICES}, got {bits!r}")
    return BitWidthExplorer(quantize_model, absmax_quantize, zeropoint_quantize, dequantize,
                            model, batch, layer, channel, bits)
