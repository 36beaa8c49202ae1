"""The LoRA-rank widget: rank and target modules -> trainable parameters, adapter size, share, measured quality.

    >>> from course_utils.widgets.finetuning import lora_rank_explorer
    >>> w = lora_rank_explorer(model)                       # counts from the layer shapes
    >>> w = lora_rank_explorer(model, inject_fn=inject_lora, count_fn=ft.count_trainable_parameters)
    >>> w.rank.value = 16; w.state["trainable"]              # tests drive it headlessly

Quality comes from the cached sweep (``python -m course_utils.finetuning --sweep``): ROUGE-L on held-out
dialogues after the sweep's training steps at each measured rank. Ranks the sweep did not train are shown as
"not measured", with the nearest measured neighbours -- never an invented number. The chart is inline SVG
(no JavaScript, no figure rendering), so a slider change redraws in about a millisecond.
"""

from __future__ import annotations

import copy
import html
import math
from typing import Any, Callable

import ipywidgets as widgets
from torch import nn

from course_utils.finetuning import TARGETS, linear_shape
from course_utils.sweeps.finetuning import load_sweep
from course_utils.widgets.common import NotBuilt, Redrawer, StaticFallback, error_output, grading

_COLORS = {"c_attn": "#1f77b4", "attention": "#2ca02c", "all-linear": "#d62728"}


def lora_layers(model: nn.Module, target_modules: list[str]) -> list[tuple[str, int, int]]:
    """``(name, in_features, out_features)`` of every linear layer whose name ends with a target."""
    found = []
    for name, module in model.named_modules():
        if any(name == t or name.endswith("." + t) for t in target_modules):
            d_in, d_out, _ = linear_shape(module)
            found.append((name, d_in, d_out))
    return found


def measured_quality(sweep: dict[str, Any] | None, target: str) -> dict[int, float]:
    """``{rank: ROUGE-L}`` of the sweep's LoRA runs on ``target`` (empty when not swept)."""
    if not sweep:
        return {}
    return {int(r["r"]): float(r["rougeL"]) for r in sweep.get("runs", [])
            if r.get("method") == "lora" and r.get("target") == target and not r.get("variant")}


def _svg_chart(sweep: dict[str, Any] | None, rank: int, target: str, width: int = 440, height: int = 220) -> str:
    """ROUGE-L against rank (log scale) for each swept target, the current rank marked. Inline SVG."""
    left, right, top, bottom = 44, 64, 12, 34
    w, h = width - left - right, height - top - bottom
    x = lambda r: left + w * math.log2(r) / 6  # noqa: E731 - ranks 1..64
    y = lambda v: top + h * (1 - v)  # noqa: E731 - ROUGE in [0, 1]
    parts = [f'<svg width="{width}" height="{height}" xmlns="http://www.w3.org/2000/svg" '
             'style="font: 11px sans-serif">',
             f'<rect x="{left}" y="{top}" width="{w}" height="{h}" fill="none" stroke="#999"/>']
    for v in (0, 0.25, 0.5, 0.75, 1.0):
        parts.append(f'<text x="{left - 6}" y="{y(v) + 4:.1f}" text-anchor="end">{v:.2f}</text>')
    for r in (1, 2, 4, 8, 16, 32, 64):
        parts.append(f'<text x="{x(r):.1f}" y="{top + h + 14}" text-anchor="middle">{r}</text>')
    parts.append(f'<text x="{left + w / 2}" y="{height - 4}" text-anchor="middle">LoRA rank r</text>')
    legend_x, legend_y = left + w - 8, y(0.2)  # lower right, inside the frame: the curves are high there
    if sweep:
        for run in sweep.get("runs", []):
            if run.get("method") == "full" and not run.get("variant"):
                parts.append(f'<line x1="{left}" x2="{left + w}" y1="{y(run["rougeL"]):.1f}" '
                             f'y2="{y(run["rougeL"]):.1f}" stroke="#555" stroke-dasharray="4 3"/>')
                parts.append(f'<text x="{left + w + 4}" y="{y(run["rougeL"]) + 4:.1f}">full FT</text>')
        base = sweep.get("baseline", {}).get("rougeL")
        if base is not None:
            parts.append(f'<line x1="{left}" x2="{left + w}" y1="{y(base):.1f}" y2="{y(base):.1f}" '
                         'stroke="#aaa" stroke-dasharray="2 3"/>')
            parts.append(f'<text x="{left + w + 4}" y="{y(base) + 4:.1f}">no tuning</text>')
    for name in TARGETS:
        quality = measured_quality(sweep, name)
        if not quality:
            continue
        color = _COLORS.get(name, "#333")
        points = " ".join(f"{x(r):.1f},{y(v):.1f}" for r, v in sorted(quality.items()))
        parts.append(f'<polyline points="{points}" fill="none" stroke="{color}" '
                     f'stroke-width="{3 if name == target else 1.5}"/>')
        parts += [f'<circle cx="{x(r):.1f}" cy="{y(v):.1f}" r="3" fill="{color}"/>' for r, v in quality.items()]
        parts.append(f'<text x="{legend_x}" y="{legend_y:.1f}" fill="{color}" text-anchor="end">LoRA, {name}</text>')
        legend_y += 14
    parts.append(f'<line x1="{x(rank):.1f}" x2="{x(rank):.1f}" y1="{top}" y2="{top + h}" stroke="#ff7f0e" '
                 'stroke-width="2"/>')
    parts.append("</svg>")
    return "".join(parts)


class LoRARankExplorer(StaticFallback, widgets.VBox):
    """The widget object: ``rank`` and ``target`` controls, ``readout`` HTML, ``state`` (last values shown)."""

    static_title = "LoRA rank explorer"

    def __init__(self, model: nn.Module, sweep: dict[str, Any] | None, inject_fn: Callable | None,
                 count_fn: Callable | None, alpha_over_r: float) -> None:
        self.model, self.sweep = model, sweep
        self.inject_fn, self.count_fn, self.alpha_over_r = inject_fn, count_fn, alpha_over_r
        self.total = sum(p.numel() for p in model.parameters())
        self.steps = (sweep or {}).get("settings", {}).get("steps", "?")
        self.state: dict[str, Any] = {}
        self._cache: dict[tuple[str, int], int] = {}
        self._skeleton: nn.Module | None = None  # the model on the meta device: copies cost no memory
        self.rank = widgets.IntSlider(value=8, min=1, max=64, description="rank r", continuous_update=False)
        self.target = widgets.Dropdown(options=list(TARGETS), value="c_attn", description="targets")
        self.readout = widgets.HTML(layout=widgets.Layout(height="270px"))
        self.errors = error_output()
        self.redrawer = Redrawer(self._draw, self.errors)
        self.rank.observe(lambda _: self.redrawer(), names="value")
        self.target.observe(lambda _: self.redrawer(), names="value")
        super().__init__([widgets.HBox([self.rank, self.target]), self.readout, self.errors])
        self.redrawer()

    def trainable(self, target: str, r: int) -> int:
        """Trainable parameters of LoRA rank ``r`` on ``target``: your functions if given, else the shapes."""
        key = (target, r)
        if key not in self._cache:
            if self.inject_fn is not None and self.count_fn is not None:
                if self._skeleton is None:
                    self._skeleton = copy.deepcopy(self.model).to("meta")
                clone = copy.deepcopy(self._skeleton)
                self.inject_fn(clone, TARGETS[target], r, self.alpha_over_r * r)
                self._cache[key] = int(self.count_fn(clone))
            else:  # each adapted layer adds A (r x in) and B (out x r)
                self._cache[key] = sum(r * (d_in + d_out) for _, d_in, d_out in
                                       lora_layers(self.model, TARGETS[target]))
        return self._cache[key]

    def _draw(self) -> None:
        r, target = int(self.rank.value), str(self.target.value)
        n = self.trainable(target, r)
        layers = lora_layers(self.model, TARGETS[target])
        quality = measured_quality(self.sweep, target)
        if r in quality:
            q_text, q_value = f"<b>{quality[r]:.2f}</b> (measured at r={r})", quality[r]
        elif quality:
            lower = max((k for k in quality if k < r), default=None)
            upper = min((k for k in quality if k > r), default=None)
            near = ", ".join(f"r={k}: {quality[k]:.2f}" for k in (lower, upper) if k is not None)
            q_text, q_value = f"not measured at r={r} (nearest: {near})", None
        else:
            q_text, q_value = "not measured for these targets in the cached sweep", None
        self.state = dict(rank=r, target=target, layers=len(layers), trainable=n, bytes_fp32=4 * n,
                          bytes_fp16=2 * n, share=n / self.total, rougeL=q_value)
        shapes = sorted({(d_in, d_out) for _, d_in, d_out in layers})
        per_layer = "; ".join(f"{d_in}&times;{d_out} &rarr; {r}&times;({d_in}+{d_out})" for d_in, d_out in shapes)
        rows = [("adapted layers", f"{len(layers)} ({html.escape(', '.join(TARGETS[target]))})"),
                ("per layer", per_layer),
                ("trainable parameters", f"<b>{n:,}</b> of {self.total:,}"),
                ("share of the model", f"<b>{100 * n / self.total:.2f} %</b>"),
                ("adapter size", f"{4 * n / 1024:.1f} KiB in fp32, {2 * n / 1024:.1f} KiB in fp16 "
                                 f"(the full model: {4 * self.total / 2**20:.1f} MiB)"),
                (f"ROUGE-L after {self.steps} steps", q_text)]
        table = "".join(f"<tr><td style='padding-right:12px'>{k}</td><td>{v}</td></tr>" for k, v in rows)
        self.readout.value = (f"<div style='display:flex;gap:16px;align-items:flex-start'>"
                              f"<table style='width:400px;flex:none;line-height:1.3'>{table}</table>"
                              f"{_svg_chart(self.sweep, r, target)}</div>")


def lora_rank_explorer(model: nn.Module | None = None, sweep: dict[str, Any] | None = None,
                       inject_fn: Callable | None = None, count_fn: Callable | None = None,
                       alpha_over_r: float = 2.0) -> LoRARankExplorer | NotBuilt:
    """Build the widget. ``model`` defaults to the bundled tiny-base; ``sweep`` to the cached sweep (if any).

    Pass your own ``inject_fn=inject_lora`` (and ``count_fn=ft.count_trainable_parameters``) to count with them
    (on a copy of the model); without them the count comes from the layer shapes, r x (in + out) per layer.
    While autograding (``NBGRADER_EXECUTION`` set) nothing is computed: a :class:`NotBuilt` note comes back.
    """
    if grading():
        return NotBuilt(LoRARankExplorer.static_title)
    if model is None:
        from course_utils.models import load_model

        model, _ = load_model("tiny-base")
    if sweep is None:
        try:
            sweep = load_sweep()
        except FileNotFoundError:
            sweep = None
    return LoRARankExplorer(model, sweep, inject_fn, count_fn, alpha_over_r)
