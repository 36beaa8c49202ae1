"""Plots for the sampling notebook and the decoding explorer widget.

Plotting functions turn arrays into matplotlib figures and do nothing else; :func:`decoding_explorer`
wires the bundled model, *your* softmax and filter functions and ipywidgets together.

    >>> from course_utils.widgets.sampling import decoding_explorer
    >>> explorer = decoding_explorer(model, tokenizer, prompt="Once upon a time, there was a",
    ...                              filter_fns={"softmax": softmax_with_temperature, "top_k": top_k_filter,
    ...                                          "top_p": top_p_filter, "sample": sample_next_token})
    >>> explorer                          # in a notebook: prompt box, sliders, distribution, continuations
    >>> explorer.top_k.value = 5          # headless: set a value, the distribution is redrawn
    >>> explorer.kept.sum()               # how many tokens survive the filters
    >>> explorer.redrawer.timings_ms[-1]  # how long that redraw took (ms)
"""

from __future__ import annotations

import html
from typing import Any, Callable, Mapping, Sequence

import ipywidgets as widgets
import torch
from matplotlib.figure import Figure  # explicit Figures: no pyplot state, safe inside widget callbacks

from course_utils.sampling import (FewShotResult, context_size, entropy_bits, generate_with, next_token_logits,
                                   token_labels)
from course_utils.widgets.common import NotBuilt, Redrawer, StaticFallback, error_output, grading

KEPT, REMOVED = "#1f77b4", "#c8c8c8"


# ----------------------------------------------------------------------------------------------
# Plots (arrays -> figures)


def _np(x: Any):
    import numpy as np

    if isinstance(x, torch.Tensor):
        return x.detach().cpu().double().numpy()
    return np.asarray(x, dtype=float)


def plot_distribution(probs: Any, labels: Sequence[str], *, kept: Any = None, title: str | None = None,
                      ax: Any = None) -> Figure:
    """Bars of a next-token distribution over a few tokens; ``kept`` (bools) colours survivors, greys the rest."""
    p = _np(probs)
    if p.ndim != 1 or len(labels) != len(p):
        raise ValueError(f"plot_distribution wants probs of shape (n,) and n labels, got shape {p.shape} "
                         f"and {len(labels)} labels")
    keep = [True] * len(p) if kept is None else [bool(k) for k in _np(kept)]
    if ax is None:
        fig = Figure(figsize=(max(4.0, 0.45 * len(p) + 1.5), 2.8))
        ax = fig.add_subplot()
    else:
        fig = ax.figure
    ax.bar(range(len(p)), p, color=[KEPT if k else REMOVED for k in keep])
    ax.set_xticks(range(len(p)))
    ax.set_xticklabels(labels, rotation=60, fontsize=8)
    ax.set_ylabel("probability")
    ax.set_ylim(0, max(1e-9, float(p.max())) * 1.15)
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig


def plot_temperatures(prob_rows: Mapping[float, Any], labels: Sequence[str]) -> Figure:
    """One panel per temperature: the same tokens' probabilities at ``T`` (keys) side by side."""
    fig = Figure(figsize=(3.2 * len(prob_rows), 2.9))
    for i, (t, probs) in enumerate(prob_rows.items()):
        ax = fig.add_subplot(1, len(prob_rows), i + 1)
        plot_distribution(probs, labels, ax=ax, title=f"T = {t:g}")
        ax.set_ylim(0, 1)
        if i:
            ax.set_ylabel("")
    fig.tight_layout()
    return fig


def plot_cumulative(sorted_probs: Any, p: float, n_kept: int, labels: Sequence[str] | None = None) -> Figure:
    """Sorted probabilities and their running sum, with the top-p line and the kept prefix marked."""
    q = _np(sorted_probs)
    fig = Figure(figsize=(6.5, 3.0))
    ax = fig.add_subplot()
    x = range(1, len(q) + 1)
    ax.bar(x, q, color=[KEPT if i < n_kept else REMOVED for i in range(len(q))], label="probability")
    ax.plot(x, q.cumsum(), "o-", color="#d62728", label="cumulative probability")
    ax.axhline(p, ls="--", color="k", lw=1)
    ax.text(len(q) + 0.4, p, f"p = {p:g}", va="bottom", ha="right", fontsize=9)
    if labels is not None:
        ax.set_xticks(list(x))
        ax.set_xticklabels(labels, rotation=60, fontsize=8)
    else:
        ax.set_xlabel("rank")
    ax.set_ylim(0, 1.05)
    ax.legend(fontsize=8, loc="center right")
    ax.set_title(f"top-p keeps the {n_kept} most probable token(s): the smallest prefix whose sum reaches p",
                 fontsize=9)
    fig.tight_layout()
    return fig


def plot_few_shot(results: Sequence[FewShotResult], *, context_k: float | None = None,
                  chance: float = 0.5) -> Figure:
    """Accuracy (left: comparing the two label words, solid; the top token being the right word, dashed) and
    the probability on the two label words (right) against k, one colour per model."""
    fig = Figure(figsize=(10, 3.4))
    ax_acc, ax_mass = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    for name in dict.fromkeys(r.model for r in results):
        rows = sorted((r for r in results if r.model == name), key=lambda r: r.k)
        ks = [r.k for r in rows]
        line, = ax_acc.plot(ks, [r.accuracy for r in rows], "o-", label=f"{name}: right word more probable")
        ax_acc.plot(ks, [r.top_accuracy for r in rows], "s--", color=line.get_color(), alpha=0.7,
                    label=f"{name}: right word is the top token")
        ax_mass.plot(ks, [r.label_mass for r in rows], "o-", label=name)
        for r in rows:
            if r.truncated > 0:
                ax_acc.annotate(f"{r.truncated:.0%} cut", (r.k, r.accuracy), fontsize=7,
                                textcoords="offset points", xytext=(3, -10))
    ax_acc.axhline(chance, ls=":", color="gray", lw=1)
    ax_acc.text(0, chance, "chance", fontsize=8, color="gray", va="bottom")
    for ax, ylabel in ((ax_acc, "accuracy (held-out reviews)"), (ax_mass, "P(either label word)")):
        if context_k is not None:
            ax.axvline(context_k, ls="--", color="#d62728", lw=1)
            ax.text(context_k, 0.02, " context\n window full", color="#d62728", fontsize=8)
        ax.set_xlabel("k (examples in the prompt)")
        ax.set_ylabel(ylabel)
        ax.set_ylim(0, 1.05)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------------------------
# The decoding explorer


def _transformers_filters() -> dict[str, Callable[..., torch.Tensor]]:
    """Default filters: transformers' own logits warpers (used when you pass no functions of your own)."""
    from transformers import TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

    def softmax(logits: torch.Tensor, temperature: float) -> torch.Tensor:
        return torch.softmax(TemperatureLogitsWarper(float(temperature))(None, logits[None])[0], dim=-1)

    def top_k(logits: torch.Tensor, k: int) -> torch.Tensor:
        return TopKLogitsWarper(int(k))(None, logits[None])[0]

    def top_p(logits: torch.Tensor, p: float) -> torch.Tensor:
        return TopPLogitsWarper(float(p))(None, logits[None])[0]

    return {"softmax": softmax, "top_k": top_k, "top_p": top_p}


_NAMES = {"softmax": "softmax_with_temperature", "top_k": "top_k_filter", "top_p": "top_p_filter",
          "sample": "sample_next_token"}


class DecodingExplorer(StaticFallback, widgets.VBox):
    """Prompt box, temperature / top-k / top-p sliders, the next-token distribution and sampled continuations.

    The model runs once per distinct prompt (cached); a slider change only re-applies the (your) softmax and
    filters to the cached ``(V,)`` logits and rewrites an HTML bar chart, a few milliseconds.
    Attributes for headless use: ``prompt``, ``temperature``, ``top_k`` (0 = off), ``top_p`` (1 = off),
    ``seed``, ``sample_button`` (controls); ``probs`` (tempered ``(V,)`` distribution), ``kept`` (``(V,)``
    bools), ``final`` (the distribution actually sampled from), ``chart``, ``summary``, ``continuations``
    (HTML), ``samples`` (the last continuations as strings), ``redrawer`` (errors, ``timings_ms``).
    """

    N_BARS = 15
    static_title = "decoding explorer"

    def __init__(self, model: Any, tokenizer: Any, prompt: str, *,
                 filter_fns: Mapping[str, Callable[..., Any]] | None = None, n_samples: int = 3,
                 max_new_tokens: int = 30) -> None:
        unknown = set(filter_fns or {}) - set(_NAMES)
        if unknown:
            raise ValueError(f"filter_fns has unknown keys {sorted(unknown)}; use {sorted(_NAMES)}, "
                             "e.g. {'softmax': softmax_with_temperature, 'top_k': top_k_filter}")
        self._model, self._tokenizer = model, tokenizer
        self._fns = {**_transformers_filters(), **{k: v for k, v in (filter_fns or {}).items() if v is not None}}
        self._own = set(filter_fns or {})
        self._n_samples, self._max_new = n_samples, max_new_tokens
        self._cache: dict[str, tuple[torch.Tensor, list[str]]] = {}
        self.probs = self.kept = self.final = None
        self.samples: list[str] = []

        self.prompt = widgets.Textarea(value=prompt, description="prompt", continuous_update=False,
                                       layout=widgets.Layout(width="98%", height="56px"))
        slider = dict(continuous_update=True, style={"description_width": "90px"},
                      layout=widgets.Layout(width="420px"))
        self.temperature = widgets.FloatSlider(value=1.0, min=0.05, max=3.0, step=0.05, description="temperature",
                                               readout_format=".2f", **slider)
        self.top_k = widgets.IntSlider(value=0, min=0, max=100, description="top-k (0 = off)", **slider)
        self.top_p = widgets.FloatSlider(value=1.0, min=0.01, max=1.0, step=0.01, description="top-p (1 = off)",
                                         readout_format=".2f", **slider)
        self.summary = widgets.HTML(layout=widgets.Layout(height="44px"))
        self.chart = widgets.HTML(layout=widgets.Layout(height=f"{22 * self.N_BARS + 30}px"))
        self.seed = widgets.IntText(value=0, description="seed", layout=widgets.Layout(width="160px"))
        self.sample_button = widgets.Button(description=f"sample {n_samples} continuations", icon="play",
                                            layout=widgets.Layout(width="240px"))
        self.continuations = widgets.HTML(layout=widgets.Layout(height="150px", overflow="auto"))
        self.errors = error_output()
        self.redrawer = Redrawer(self._draw, self.errors)
        self.sampler = Redrawer(self._sample, self.errors)
        for control in (self.prompt, self.temperature, self.top_k, self.top_p):
            control.observe(lambda _change: self.redrawer(), names="value")
        self.sample_button.on_click(lambda _button: self.sampler())
        note = ("<i>using your " + ", ".join(f"<code>{_NAMES[k]}</code>" for k in sorted(self._own)) + "</i>"
                if self._own else "<i>using transformers' own logits warpers</i>")
        super().__init__([self.prompt, widgets.HBox([widgets.VBox([self.temperature, self.top_k, self.top_p]),
                                                     widgets.HTML(note)]),
                          self.summary, self.chart, widgets.HBox([self.sample_button, self.seed]),
                          self.continuations, self.errors])
        self.redrawer()

    # -- computation ----------------------------------------------------------------------------
    def _logits(self, prompt: str) -> tuple[torch.Tensor, list[str]]:
        if prompt not in self._cache:
            logits = next_token_logits(self._model, self._tokenizer, prompt)  # (V,)
            if len(self._cache) >= 32:
                self._cache.pop(next(iter(self._cache)))
            self._cache[prompt] = (logits, token_labels(self._tokenizer, range(logits.shape[-1])))
        return self._cache[prompt]

    def _call(self, key: str, *args: Any) -> torch.Tensor:
        try:
            out = self._fns[key](*args)
        except NotImplementedError:
            raise RuntimeError(f"write {_NAMES[key]} above first (it still raises NotImplementedError), "
                               "or build the explorer without it to use transformers' version") from None
        if not isinstance(out, torch.Tensor) or out.shape != args[0].shape:
            raise ValueError(f"{_NAMES[key]} must return a tensor of the input's shape {tuple(args[0].shape)}, "
                             f"got {getattr(out, 'shape', type(out).__name__)}")
        return out.detach().float()

    def _distributions(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Tempered probabilities, the kept mask, and the renormalised distribution that is sampled from."""
        logits, _ = self._logits(self.prompt.value)
        probs = self._call("softmax", logits.clone(), float(self.temperature.value))  # (V,)
        # log-probabilities are the tempered logits up to a constant, which no filter cares about
        filtered = torch.log(probs.clamp_min(1e-30))
        if self.top_k.value > 0:
            filtered = self._call("top_k", filtered, int(self.top_k.value))
        if self.top_p.value < 1.0:
            filtered = self._call("top_p", filtered, float(self.top_p.value))
        kept = torch.isfinite(filtered) & (filtered > -1e4)  # -inf (or a huge negative number) = removed
        final = torch.where(kept, probs, torch.zeros_like(probs))
        return probs, kept, final / final.sum().clamp_min(1e-30)

    # -- drawing --------------------------------------------------------------------------------
    def _draw(self) -> None:
        probs, kept, final = self._distributions()
        self.probs, self.kept, self.final = probs, kept, final
        _, labels = self._logits(self.prompt.value)
        n_kept = int(kept.sum())
        self.summary.value = (
            f"<b>{n_kept}</b> of {probs.shape[-1]} tokens kept, covering <b>{float(probs[kept].sum()):.1%}</b> of "
            f"the tempered probability &nbsp;·&nbsp; entropy {float(entropy_bits(probs)):.2f} bits before, "
            f"{float(entropy_bits(final)):.2f} bits after filtering"
            + ("" if n_kept else " &nbsp;<b style='color:#b00'>no token kept: your filter removed all</b>"))
        self.chart.value = _bars_html(probs, kept, final, labels, self.N_BARS)

    def _sample(self) -> None:
        self.continuations.value = "<i>sampling...</i>"
        T, k, p = float(self.temperature.value), int(self.top_k.value), float(self.top_p.value)
        prompt = self.prompt.value
        with torch.random.fork_rng():  # seed the draws without disturbing the notebook's own random state
            torch.manual_seed(int(self.seed.value))
            if "sample" in self._fns:
                fn = self._fns["sample"]
                texts = generate_with(self._model, self._tokenizer, prompt,
                                      lambda logits: fn(logits, temperature=T, top_k=k or None,
                                                        top_p=p if p < 1.0 else None),
                                      max_new_tokens=self._max_new, num_samples=self._n_samples)
                how = "your <code>sample_next_token</code>"
            else:
                texts = self._generate(prompt, T, k, p)
                how = "<code>model.generate</code> with a <code>GenerationConfig</code>"
        self.samples = list(texts)
        rows = "".join(f"<li><span style='color:#666'>{html.escape(prompt[-60:])}</span>"
                       f"<b>{html.escape(t)}</b></li>" for t in self.samples)
        self.continuations.value = (f"<div style='font-size:12px'>seed {self.seed.value}, T={T:g}, "
                                    f"top-k={k or 'off'}, top-p={p if p < 1 else 'off'} ({how}):<ol>{rows}</ol></div>")

    def _generate(self, prompt: str, T: float, k: int, p: float) -> list[str]:
        from transformers import GenerationConfig

        tok = self._tokenizer
        ids = tok(prompt, return_tensors="pt")["input_ids"][:, -(context_size(self._model) - self._max_new):]
        config = GenerationConfig(max_new_tokens=self._max_new, do_sample=True, temperature=T, top_k=k,
                                  top_p=p, num_return_sequences=self._n_samples,
                                  pad_token_id=tok.eos_token_id, eos_token_id=tok.eos_token_id)
        with torch.no_grad():
            out = self._model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), generation_config=config)
        return [tok.decode(row[ids.shape[1]:]) for row in out]


def _bars_html(probs: torch.Tensor, kept: torch.Tensor, final: torch.Tensor, labels: Sequence[str],
               n: int) -> str:
    """An HTML bar chart of the ``n`` most probable tokens: kept in colour, removed in grey and struck through."""
    values, ids = torch.topk(probs, min(n, probs.shape[-1]))
    top = max(float(values[0]), 1e-9)
    rows = []
    for v, i in zip(values.tolist(), ids.tolist()):
        on = bool(kept[i])
        width = 100.0 * v / top
        label = html.escape(labels[i])
        style = "" if on else "text-decoration:line-through;color:#999"
        rows.append(
            f"<tr><td style='text-align:right;font-family:monospace;{style}'>{label}</td>"
            f"<td style='width:300px'><div style='background:{KEPT if on else REMOVED};width:{width:.1f}%;"
            f"height:14px'></div></td><td style='font-family:monospace'>{v:6.3f}</td>"
            f"<td style='font-family:monospace;color:{'#000' if on else '#999'}'>"
            f"{float(final[i]):6.3f}</td></tr>")
    head = ("<tr><th>token</th><th>probability at this temperature</th><th>p</th>"
            "<th>after filters</th></tr>")
    return f"<table style='font-size:12px;line-height:1.1'>{head}{''.join(rows)}</table>"


def decoding_explorer(model: Any, tokenizer: Any, *, prompt: str = "Once upon a time, there was a",
                      filter_fns: Mapping[str, Callable[..., Any]] | None = None, n_samples: int = 3,
                      max_new_tokens: int = 30) -> DecodingExplorer | NotBuilt:
    """Build the decoding explorer for ``model``.

    ``filter_fns``: your own functions, any of ``{"softmax": softmax_with_temperature, "top_k": top_k_filter,
    "top_p": top_p_filter, "sample": sample_next_token}``; the ones you leave out are transformers' own
    (and without ``"sample"``, continuations come from ``model.generate`` with a ``GenerationConfig``).
    While autograding (``NBGRADER_EXECUTION`` set) nothing is computed: a :class:`NotBuilt` note comes back.
    """
    if grading():
        return NotBuilt(DecodingExplorer.static_title)
    return DecodingExplorer(model, tokenizer, prompt, filter_fns=filter_fns, n_samples=n_samples,
                            max_new_tokens=max_new_tokens)
