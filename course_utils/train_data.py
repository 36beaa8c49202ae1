"""Rows of token ids for pre-training the bundled models: copy rows and the attention targets that go with them.

The world's documents teach the model its language. **Copy rows** teach it to *use its context*: a random
span of tokens repeated until the row is full (:func:`copy_row`). The first copy of the span is
unpredictable; every later token can be predicted exactly by looking back for the current token and copying
what followed it last time: the job of an **induction head** (Olsson et al., 2022), which needs a
**previous-token head** in an earlier layer (so that each position knows which token came before it).

Why the attention targets (:func:`attention_targets`). Small transformers find that two-head circuit
slowly: each head is useless without the other. A 2-layer *attention-only* model on copy rows finds it in a
few hundred steps (notebook 1 trains one live and shows the phase change), but our probes of the GPT-2
shape that the course uses (LayerNorm, MLPs, tied embeddings: ``tools/probes/induction_probe.py``) were
still not copying after thousands of steps, too slow for a 2-core laptop. So on copy rows one head of
layer 0 gets an extra loss for attending to the previous token and one head of layer 1 for attending to
the token after the last occurrence of the current one (:func:`attention_loss`). Everything else the model
learns (to use the heads, to copy, and in-context learning on the sorting pages) comes from next-token
prediction alone.

Positions: :func:`fourier_positions` is the sinusoidal encoding with frequencies spread over
``(0, pi)`` instead of the original transformer's slow geometric ladder, so that position ``p`` is similar
to itself and to no neighbour, and "one position back" is one fixed linear map (a rotation).
"""

from __future__ import annotations

import math
from typing import Sequence

import torch

SPAN_LENGTHS = (8, 32)  # random span lengths, inclusive
GOLDEN = (math.sqrt(5) - 1) / 2
PREVIOUS_TOKEN_HEAD = (0, 0)  # (layer, head) given the previous-token target on copy rows
INDUCTION_HEAD = (1, 0)  # (layer, head) given the induction target on copy rows


def fourier_positions(n_positions: int, d_model: int, scale: float = 0.1) -> torch.Tensor:
    """``(n_positions, d_model)`` sinusoids ``sin(w_i p), cos(w_i p)`` with ``w_i = pi * frac(i * 0.618...)``.

    The frequencies fill ``(0, pi)`` evenly (a golden-ratio sequence: no two alike, no short period), so
    the dot product of two position vectors is ``sum_i cos(w_i (p - q))``: large for ``p = q``, near zero
    for every other pair. ``scale`` sets the vector length (``scale * sqrt(d_model / 2)``).
    """
    if d_model % 2:
        raise ValueError(f"d_model={d_model} must be even (sines and cosines come in pairs)")
    i = torch.arange(1, d_model // 2 + 1, dtype=torch.float64)
    w = (math.pi * ((i * GOLDEN) % 1.0)).float()  # (d/2,)
    pos = torch.arange(n_positions, dtype=torch.float32)[:, None]  # (P, 1)
    pe = torch.zeros(n_positions, d_model)
    pe[:, 0::2] = torch.sin(pos * w)
    pe[:, 1::2] = torch.cos(pos * w)
    return scale * pe  # (P, d)


def copy_row(gen: torch.Generator, vocab_size: int, width: int,
             lengths: tuple[int, int] = SPAN_LENGTHS) -> torch.Tensor:
    """``(width,)`` token ids: one random span (ids ``1..vocab_size-1``, length drawn from ``lengths``)
    repeated until the row is full."""
    low, high = lengths
    if not 1 <= low <= high:
        raise ValueError(f"lengths must be (low, high) with 1 <= low <= high, got {lengths!r}")
    n = int(torch.randint(low, high + 1, (1,), generator=gen))
    span = torch.randint(1, vocab_size, (n,), generator=gen)
    return span.repeat(width // n + 1)[:width]


def copy_batch(gen: torch.Generator, n_rows: int, width: int, vocab_size: int) -> torch.Tensor:
    """``(n_rows, width)`` copy rows (:func:`copy_row`)."""
    return torch.stack([copy_row(gen, vocab_size, width) for _ in range(n_rows)])


def attention_targets(ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For rows ``ids`` (B, T): the induction target (B, T, T), each query row a distribution over the
    positions ``j + 1`` where token ``j`` equals the query's token (``j < i``), and a (B, T) mask of the
    queries that have such a position (the first copy of a span has none)."""
    T = ids.shape[1]
    same = ids[:, :, None] == ids[:, None, :]  # (B, i, j): token j is the query's token
    target = torch.zeros(same.shape, dtype=torch.float32)
    target[:, :, 1:] = same[:, :, :-1].float()  # attend to j + 1
    target = target * torch.tril(torch.ones(T, T), -1)  # j + 1 <= i  <=>  j < i (and j + 1 = i only if t_i = t_{i-1})
    has = target.sum(-1) > 0
    return target / target.sum(-1, keepdim=True).clamp(min=1.0), has


def attention_loss(attentions: Sequence[torch.Tensor], ids: torch.Tensor,
                   previous: tuple[int, int] = PREVIOUS_TOKEN_HEAD,
                   induction: tuple[int, int] = INDUCTION_HEAD) -> torch.Tensor:
    """Cross-entropy of two heads' attention (``attentions``: per layer (B, H, T, T)) against their targets:
    ``previous`` attends to position ``i - 1``, ``induction`` to :func:`attention_targets`."""
    T = ids.shape[1]
    prev = attentions[previous[0]][:, previous[1]]  # (B, T, T)
    i = torch.arange(1, T)
    loss_prev = -torch.log(prev[:, i, i - 1] + 1e-9).mean()
    target, has = attention_targets(ids)
    ind = attentions[induction[0]][:, induction[1]]  # (B, T, T)
    loss_ind = -(target * torch.log(ind + 1e-9)).sum(-1)[has].mean()
    return loss_prev + loss_ind
