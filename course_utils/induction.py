"""Watch an induction head form: a 2-layer attention-only transformer trained live on repeated random tokens.

Olsson et al. (2022, "In-context learning and induction heads") found that transformers learn to copy from
their context *abruptly*: for a while the loss on repeated text barely moves, then within a short stretch
of training an **induction head** appears (a head that attends to the token *after* the previous
occurrence of the current token) and the loss on the repeat collapses. This is the **phase change**.

The smallest model that shows it has two layers of attention and nothing else (no MLPs, no LayerNorm), as
in the paper's toy models: one layer cannot build an induction head, because its keys only know their own
token and position; with two layers, a head in layer 0 can copy "which token came before me" into each
position, and a head in layer 1 can then look for "the position whose previous token is my token".
Trained on rows made of one random span repeated to the end of the row, it goes through the phase
change in a few hundred steps, about 15 s on a laptop CPU.

    >>> from course_utils.induction import train_toy
    >>> run = train_toy(steps=1000)                     # doctest: +SKIP
    >>> run.curve[-1].ratio < 0.5                       # doctest: +SKIP
    True
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn import functional as F


class AttentionOnlyLayer(nn.Module):
    """Multi-head causal self-attention whose output is added to the residual stream (no MLP, no norm)."""

    def __init__(self, d_model: int, n_heads: int):
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model={d_model} must be a multiple of n_heads={n_heads}")
        self.n_heads, self.d_head = n_heads, d_model // n_heads
        self.qkv = nn.Linear(d_model, 3 * d_model, bias=False)
        self.out = nn.Linear(d_model, d_model, bias=False)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``x`` (B, T, d) -> (the residual stream after this layer (B, T, d), attention (B, H, T, T))."""
        B, T, _ = x.shape
        q, k, v = self.qkv(x).view(B, T, 3, self.n_heads, self.d_head).unbind(2)  # each (B, T, H, dh)
        scores = torch.einsum("bihd,bjhd->bhij", q, k) / math.sqrt(self.d_head)  # (B, H, T, T)
        future = torch.triu(torch.ones(T, T, dtype=torch.bool), diagonal=1)
        weights = scores.masked_fill(future, float("-inf")).softmax(-1)
        mixed = torch.einsum("bhij,bjhd->bihd", weights, v).reshape(B, T, -1)  # (B, T, d)
        return x + self.out(mixed), weights


class AttentionOnlyTransformer(nn.Module):
    """Token + learned position embeddings, ``n_layers`` attention-only layers, an unembedding."""

    def __init__(self, vocab_size: int = 64, d_model: int = 64, n_heads: int = 4, n_layers: int = 2,
                 max_len: int = 64):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, d_model)
        self.positions = nn.Parameter(0.1 * torch.randn(max_len, d_model))
        self.layers = nn.ModuleList(AttentionOnlyLayer(d_model, n_heads) for _ in range(n_layers))
        self.unembed = nn.Linear(d_model, vocab_size, bias=False)

    def forward(self, ids: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """``ids`` (B, T) -> (logits (B, T, V), one attention tensor (B, H, T, T) per layer)."""
        x = self.embed(ids) + self.positions[: ids.shape[1]]
        maps = []
        for layer in self.layers:
            x, weights = layer(x)
            maps.append(weights)
        return self.unembed(x), maps


def repeated_span_batch(gen: torch.Generator, batch: int, length: int, vocab_size: int) -> torch.Tensor:
    """``(batch, length)`` rows, each one random span (``length // 8`` to ``length // 2`` tokens) repeated to the end."""
    rows = []
    for _ in range(batch):
        n = int(torch.randint(max(1, length // 8), length // 2 + 1, (1,), generator=gen))
        span = torch.randint(0, vocab_size, (n,), generator=gen)
        rows.append(span.repeat(length // n + 1)[:length])
    return torch.stack(rows)


@dataclass(frozen=True)
class ToyProbe:
    """The toy model at one training step, on random spans repeated twice."""
    step: int
    seconds: float
    first: float  # loss on the first copy (nats/token): nothing to copy from
    second: float  # loss on the second copy
    induction: float  # best layer-1 head's attention to "the token after the earlier occurrence"
    previous: float  # best layer-0 head's attention to the previous position

    @property
    def ratio(self) -> float:
        """Second-copy loss over first-copy loss: ~1 before the phase change, far lower after it."""
        return self.second / self.first


@dataclass
class ToyRun:
    """A trained toy model, its probe curve, and the two-copy test rows it was probed on."""
    model: AttentionOnlyTransformer
    curve: list[ToyProbe] = field(default_factory=list)
    test_rows: torch.Tensor | None = None  # (B, 2L)


@torch.no_grad()
def probe_toy(model: AttentionOnlyTransformer, rows: torch.Tensor, step: int = 0, seconds: float = 0.0) -> ToyProbe:
    """Loss on each copy of ``rows`` (random spans repeated twice) and the best induction / previous-token scores."""
    L = rows.shape[1] // 2
    logits, maps = model(rows)
    nll = F.cross_entropy(logits[:, :-1].transpose(1, 2), rows[:, 1:], reduction="none")  # (B, 2L-1)
    queries = torch.arange(L, 2 * L - 1)
    induction = maps[-1][:, :, queries, queries - L + 1].mean(dim=(0, 2)).max()
    i = torch.arange(1, rows.shape[1])
    previous = maps[0][:, :, i, i - 1].mean(dim=(0, 2)).max()
    return ToyProbe(step, round(seconds, 2), float(nll[:, : L - 1].mean()), float(nll[:, L:].mean()),
                    float(induction), float(previous))


def train_toy(steps: int = 1000, *, vocab_size: int = 64, length: int = 48, batch: int = 64, lr: float = 1e-3,
              probe_every: int = 25, seed: int = 0) -> ToyRun:
    """Train an :class:`AttentionOnlyTransformer` on repeated random spans; probe it every ``probe_every`` steps."""
    if steps < 1 or probe_every < 1:
        raise ValueError(f"steps and probe_every must be >= 1, got steps={steps}, probe_every={probe_every}")
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model = AttentionOnlyTransformer(vocab_size=vocab_size, max_len=length)
    test = torch.randint(0, vocab_size, (64, length // 2), generator=torch.Generator().manual_seed(seed + 1))
    run = ToyRun(model, test_rows=test.repeat(1, 2))
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    start = time.perf_counter()
    for step in range(steps + 1):
        if step % probe_every == 0 or step == steps:
            run.curve.append(probe_toy(model, run.test_rows, step, time.perf_counter() - start))
        if step == steps:
            break
        rows = repeated_span_batch(gen, batch, length, vocab_size)
        logits, _ = model(rows)
        loss = F.cross_entropy(logits[:, :-1].reshape(-1, vocab_size), rows[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    model.eval()
    return run


def phase_change_step(curve: list[ToyProbe], threshold: float = 0.5) -> int | None:
    """The first probed step whose second-copy loss is below ``threshold`` times the first-copy loss."""
    return next((p.step for p in curve if p.ratio < threshold), None)
