"""RLHF figures and the beta explorer.

* :func:`plot_reward_model_training` -- the pairwise loss per step and held-out accuracy;
* :func:`plot_clipped_objective` -- the learner's ``ppo_clipped_loss`` as a function of the ratio;
* :func:`plot_ppo` -- reward-model score, labeller score and KL per PPO step for one or more runs;
* :func:`beta_explorer` -- a slider over the cached beta sweep: curves, measurements and samples.

    >>> from course_utils.widgets.rlhf import beta_explorer
    >>> w = beta_explorer()                 # the cached sweep (assets/rlhf/beta_sweep.json)
    >>> w.beta.value = w.beta.options[0]; w.state["beta"]   # tests drive it headlessly

The explorer draws inline SVG from cached numbers (no model call, no figure rendering), so a slider
change redraws in about a millisecond.
"""

from __future__ import annotations

import html
from typing import Any, Callable, Mapping, Sequence

import ipywidgets as widgets
import matplotlib.pyplot as plt
import torch

from course_utils.widgets.common import NotBuilt, Redrawer, StaticFallback, error_output, grading

_PALETTE = ["#d62728", "#ff7f0e", "#2ca02c", "#1f77b4", "#9467bd", "#8c564b"]
METRICS = [("reward", "reward-model score"), ("labeller", "labeller score (hidden)"), ("kl", "KL to reference")]


def _history(run: Any) -> Mapping[str, Any]:
    """A PPOHistory, its dict, or a cached sweep entry -> the per-step measurements."""
    if hasattr(run, "to_dict"):
        return run.to_dict()
    return run.get("history", run)


def plot_reward_model_training(losses: Sequence[float], accuracy: float | None = None):
    """The reward model's pairwise loss per training step, against ln 2 (a model that cannot tell pairs apart)."""
    fig, ax = plt.subplots(figsize=(6, 3))
    ax.plot(losses, color="#1f77b4", lw=2, label="training loss")
    ax.axhline(0.6931, ls=":", color="#777", label="ln 2: cannot tell the pair apart")
    title = "reward model" + (f": held-out accuracy {accuracy:.2f}" if accuracy is not None else "")
    ax.set(xlabel="training step", ylabel="-log σ(r_chosen - r_rejected)", title=title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    plt.close(fig)
    return fig


def plot_clipped_objective(loss_fn: Callable[..., Any], clip_eps: float = 0.2):
    """The learner's clipped surrogate for one token, as a function of the ratio, for A = +1 and A = -1."""
    ratios = torch.linspace(0.0, 2.0, 201)
    fig, axes = plt.subplots(1, 2, figsize=(9, 3), sharey=True)
    for ax, a in zip(axes, (1.0, -1.0)):
        objective = [-float(loss_fn(torch.log(r.clamp_min(1e-6)).reshape(1), torch.zeros(1),
                                    torch.tensor([a]), clip_eps)) for r in ratios]
        ax.plot(ratios, [float(r) * a for r in ratios], ls=":", color="#999", label="unclipped ρ·A")
        ax.plot(ratios, objective, color="#1f77b4", lw=2, label="PPO: min(ρA, clip(ρ)A)")
        for x in (1 - clip_eps, 1 + clip_eps):
            ax.axvline(x, color="#ccc", lw=1)
        ax.set(title=f"advantage A = {a:+.0f}", xlabel="ratio ρ = π_θ / π_old")
        ax.legend(fontsize=8)
    axes[0].set_ylabel("objective (to maximise)")
    fig.tight_layout()
    plt.close(fig)
    return fig


def plot_ppo(runs: Mapping[str, Any], title: str = "PPO"):
    """Reward-model score, hidden labeller score and KL per step; one line per run (label -> history)."""
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.3))
    for i, (label, run) in enumerate(runs.items()):
        h = _history(run)
        for ax, (key, name) in zip(axes, METRICS):
            ax.plot(h[key], color=_PALETTE[i % len(_PALETTE)], lw=2, label=label)
            ax.set(title=name, xlabel="PPO step")
    axes[0].set_ylabel("mean over the step's samples")
    axes[2].set_ylabel("nats per completion")
    axes[0].legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    plt.close(fig)
    return fig


def _svg_curves(sweep: Mapping[str, Any], selected: str, key: str, name: str, width: int = 260,
                height: int = 170) -> str:
    """One metric per step for every beta of the sweep, the selected one bold. Inline SVG."""
    left, right, top, bottom = 40, 8, 18, 26
    w, h = width - left - right, height - top - bottom
    series = {b: [float(v) for v in _history(run)[key]] for b, run in sweep.items()}
    lo = min(min(s) for s in series.values())
    hi = max(max(s) for s in series.values())
    lo, hi = (lo - 0.5, hi + 0.5) if hi - lo < 1e-9 else (lo, hi)
    steps = max(len(s) for s in series.values()) - 1 or 1
    x = lambda i: left + w * i / steps  # noqa: E731
    y = lambda v: top + h * (1 - (v - lo) / (hi - lo))  # noqa: E731
    parts = [f'<svg width="{width}" height="{height}" xmlns="http://www.w3.org/2000/svg" '
             'style="font: 10px sans-serif">',
             f'<text x="{left}" y="11" font-weight="bold">{html.escape(name)}</text>',
             f'<rect x="{left}" y="{top}" width="{w}" height="{h}" fill="none" stroke="#999"/>',
             f'<text x="{left - 4}" y="{top + 8}" text-anchor="end">{hi:.1f}</text>',
             f'<text x="{left - 4}" y="{top + h}" text-anchor="end">{lo:.1f}</text>',
             f'<text x="{left + w / 2}" y="{height - 4}" text-anchor="middle">PPO step</text>']
    for i, (b, s) in enumerate(series.items()):
        color = _PALETTE[i % len(_PALETTE)]
        points = " ".join(f"{x(j):.1f},{y(v):.1f}" for j, v in enumerate(s))
        bold = b == selected
        parts.append(f'<polyline points="{points}" fill="none" stroke="{color}" '
                     f'stroke-width="{3 if bold else 1}" opacity="{1 if bold else 0.35}"/>')
    parts.append("</svg>")
    return "".join(parts)


class BetaExplorer(StaticFallback, widgets.VBox):
    """The widget: ``beta`` slider over the cached runs, ``readout`` HTML, ``state`` (the values shown)."""

    static_title = "KL-penalty (beta) explorer"

    def __init__(self, sweep: Mapping[str, Any]) -> None:
        if not sweep:
            raise ValueError("the beta sweep is empty: run the notebook's sweep cell with RUN_SWEEP = True")
        self.sweep = dict(sorted(sweep.items(), key=lambda kv: float(kv[0])))
        self.state: dict[str, Any] = {}
        self.beta = widgets.SelectionSlider(options=list(self.sweep), value=list(self.sweep)[0],
                                            description="β (KL)", continuous_update=False)
        self.readout = widgets.HTML(layout=widgets.Layout(height="430px", overflow="auto"))
        self.errors = error_output()
        self.redrawer = Redrawer(self._draw, self.errors)
        self.beta.observe(lambda _: self.redrawer(), names="value")
        super().__init__([self.beta, self.readout, self.errors])
        self.redrawer()

    def _draw(self) -> None:
        beta = str(self.beta.value)
        run = self.sweep[beta]
        ev, h = run.get("eval", {}), _history(run)
        before = run.get("before", {})
        self.state = {"beta": float(beta), **{k: ev.get(k) for k in ("reward", "labeller", "kl", "distinct_2",
                                                                      "p_positive")}}
        self.state["verdict"] = verdict = _verdict(before, ev)
        rows = [("reward-model score", "reward"), ("labeller score (hidden)", "labeller"),
                ("P(positive), AI judge", "p_positive"), ("KL to reference (nats)", "kl"),
                ("distinct-2 (diversity)", "distinct_2"), ("completion length (tokens)", "length")]
        table = "".join(f"<tr><td style='padding-right:10px;white-space:nowrap'>{name}</td>"
                        f"<td style='padding:0 10px'>{before.get(k, float('nan')):.2f}</td>"
                        f"<td><b>{ev.get(k, float('nan')):.2f}</b></td></tr>"
                        for name, k in rows if k in ev)
        charts = "".join(_svg_curves(self.sweep, beta, k, n) for k, n in METRICS)
        legend = " ".join(f"<span style='color:{_PALETTE[i % len(_PALETTE)]};"
                          f"font-weight:{'bold' if b == beta else 'normal'}'>━ β = {html.escape(b)}</span>"
                          for i, b in enumerate(self.sweep))
        samples = "".join(f"<li>{html.escape(t)}</li>" for t in ev.get("texts", [])[:5])
        self.readout.value = (
            f"<div style='font-size:12px'>{legend} &nbsp; (bold: the β chosen; one line per cached run)</div>"
            f"<div style='display:flex'>{charts}</div>"
            f"<div style='margin:4px 0'>{html.escape(verdict)}</div>"
            f"<div style='display:flex;gap:24px'><table><tr><th></th><th style='padding:0 10px'>before</th>"
            f"<th style='white-space:nowrap'>after, β = {html.escape(beta)}</th></tr>"
            f"{table}</table><div style='max-width:560px'><b>samples after training</b> "
            f"({len(h.get('reward', []))} PPO steps)<ul>{samples}</ul></div></div>")


def _verdict(before: Mapping[str, Any], after: Mapping[str, Any]) -> str:
    """One sentence on what this run did: reward hacking, alignment, or hardly any change."""
    try:
        d_reward = after["reward"] - before["reward"]
        d_label = after["labeller"] - before["labeller"]
    except (KeyError, TypeError):
        return ""
    change = (f"change from before: reward-model score {d_reward:+.2f}, labeller {d_label:+.2f}; "
              f"KL {after.get('kl', float('nan')):.1f} nats")
    if d_reward > 0.5 and d_label < 0:
        return f"⚠ reward hacking: the reward model's score rose while the labeller's fell ({change})."
    if d_reward > 0.5 and d_label > 0:
        return f"✓ aligned: the reward model and the labeller both prefer the new reviews ({change})."
    return f"· little change: the KL penalty holds the policy near the reference ({change})."


def beta_explorer(sweep: Mapping[str, Any] | None = None) -> BetaExplorer | NotBuilt:
    """Build the explorer over ``sweep`` (default: the cached sweep in ``assets/rlhf``).

    While autograding (``NBGRADER_EXECUTION`` set) nothing is loaded: a :class:`NotBuilt` note comes back.
    """
    if grading():
        return NotBuilt(BetaExplorer.static_title)
    if sweep is None:
        from course_utils.sweeps.rlhf import load_sweep

        sweep = load_sweep()
    return BetaExplorer(sweep)
