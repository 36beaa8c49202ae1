"""Demos and scaffolding for the attention notebook: attention maps, token labels, test sequences, positions.

Nothing here answers an exercise: the notebook's learners write scaled dot-product attention, the causal
mask, head splitting, a whole attention layer and the previous-token score themselves. This module only
gets data in and out of the bundled model so the notebook can stay about ideas.

    >>> from course_utils.attention import load_attention_model, attention_maps
    >>> model, tok = load_attention_model("tiny-base")            # eager attention: maps are returned
    >>> maps = attention_maps(model, tok, "Tom lost a red ball.")
    >>> maps.weights.shape                                         # (layers, heads, T, T)
    torch.Size([4, 4, 7, 7])
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Sequence

import torch

from course_utils.exercises import needs_exercise  # noqa: F401  (re-exported for the notebook)
from course_utils.tokens import token_label, token_labels  # noqa: F401


# ----------------------------------------------------------------------------------------------
# Loading a model whose attention weights can be read


def load_attention_model(name: str = "tiny-base") -> tuple[Any, Any]:
    """``(model, tokenizer)`` with eager attention, so ``output_attentions=True`` really returns maps.

    transformers 5 uses fused ``sdpa`` attention by default, which returns *no* attention weights
    (silently an empty tuple); the eager implementation computes the same outputs and keeps the weights.
    """
    from transformers.utils import logging as hf_logging

    from course_utils.models import load_model

    hf_logging.disable_progress_bar()
    return load_model(name, attn_implementation="eager")


def layer_io(model: Any, ids: torch.Tensor, layer: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """The input and output of block ``layer``'s attention module during a normal forward pass.

    Returns ``(x, y)``, both ``(B, T, C)``: ``x`` is what the attention layer receives (the output of
    the block's first LayerNorm, ``ln_1``) and ``y`` is what it returns (after its output projection).
    """
    if ids.dim() == 1:
        ids = ids[None]  # (1, T)
    block = model.transformer.h[layer]
    seen: dict[str, torch.Tensor] = {}
    hooks = [block.ln_1.register_forward_hook(lambda _m, _i, out: seen.__setitem__("x", out)),
             block.attn.register_forward_hook(lambda _m, _i, out: seen.__setitem__("y", out[0]))]
    try:
        with torch.no_grad():
            model(ids)
    finally:
        for hook in hooks:
            hook.remove()
    return seen["x"], seen["y"]


# ----------------------------------------------------------------------------------------------
# Tokens as readable labels (token_label / token_labels live in course_utils.tokens)


def show_tokens(tokenizer: Any, text: str, width: int = 100) -> str:
    """``text`` split into its tokens as ``[piece|id]`` cells, wrapped at ``width`` characters."""
    ids = tokenizer(text)["input_ids"]
    cells = [f"[{label}|{i}]" for label, i in zip(token_labels(tokenizer, ids), ids)]
    lines, line = [], ""
    for cell in cells:
        if line and len(line) + len(cell) + 1 > width:
            lines.append(line)
            line = ""
        line = f"{line} {cell}" if line else cell
    lines.append(line)
    return "\n".join(lines) + f"\n({len(text)} characters, {len(text.split())} words -> {len(ids)} tokens)"


# ----------------------------------------------------------------------------------------------
# Attention maps of a whole model


@dataclass(frozen=True)
class AttentionMaps:
    """The attention weights of every layer and head for one text."""
    ids: torch.Tensor          # (T,) token ids
    labels: list[str]          # T readable token labels
    weights: torch.Tensor      # (L, H, T, T): weights[l, h, i, j] = how much token i attends to token j

    @property
    def n_layers(self) -> int:
        return int(self.weights.shape[0])

    @property
    def n_heads(self) -> int:
        return int(self.weights.shape[1])

    def head(self, layer: int, head: int) -> torch.Tensor:
        """The (T, T) map of one head, with a clear error for an index out of range."""
        if not 0 <= layer < self.n_layers:
            raise ValueError(f"layer={layer} is out of range: this model has layers 0..{self.n_layers - 1}")
        if not 0 <= head < self.n_heads:
            raise ValueError(f"head={head} is out of range: this model has heads 0..{self.n_heads - 1}")
        return self.weights[layer, head]


def attention_weights(model: Any, ids: torch.Tensor) -> torch.Tensor:
    """Attention weights for a batch of token ids ``(B, T)``: a tensor ``(B, L, H, T, T)``.

    The model must use eager attention (see :func:`load_attention_model`).
    """
    if ids.dim() == 1:
        ids = ids[None]  # (1, T)
    n_positions = getattr(model.config, "n_positions", None)
    if n_positions is not None and ids.shape[1] > n_positions:
        raise ValueError(f"{ids.shape[1]} tokens is longer than the model's context of {n_positions}: "
                         "use a shorter text.")
    with torch.no_grad():
        out = model(ids, output_attentions=True)
    if not out.attentions:
        raise ValueError("The model returned no attention weights: load it with attn_implementation='eager' "
                         "(course_utils.attention.load_attention_model does).")
    return torch.stack(out.attentions, dim=1)  # (B, L, H, T, T)


def attention_maps(model: Any, tokenizer: Any, text: str) -> AttentionMaps:
    """Tokenize ``text``, run the model once and return every layer's and head's attention map."""
    if not text.strip():
        raise ValueError("The text is empty: type a sentence to see how the model attends.")
    ids = torch.tensor(tokenizer(text)["input_ids"])  # (T,)
    weights = attention_weights(model, ids)[0]  # (L, H, T, T)
    return AttentionMaps(ids=ids, labels=token_labels(tokenizer, ids), weights=weights)


# ----------------------------------------------------------------------------------------------
# Test sequences for finding heads


def repeated_random_tokens(vocab_size: int, length: int = 30, repeats: int = 2, *, seed: int = 0,
                           batch: int = 1, exclude: Sequence[int] = (0,)) -> torch.Tensor:
    """``batch`` rows of ``length`` random token ids repeated ``repeats`` times: shape ``(batch, length * repeats)``.

    An *induction head* would notice, in the second copy, that the current token appeared before and look
    at the token that followed it then: position ``i`` attending to position ``i - length + 1``.
    Random tokens (not text) make sure the only way to predict the second copy is to copy the first.
    ``exclude`` keeps special tokens (the end-of-text id 0) out.
    """
    if length < 2 or repeats < 1 or batch < 1:
        raise ValueError(f"need length >= 2, repeats >= 1, batch >= 1; got length={length}, repeats={repeats}, "
                         f"batch={batch}")
    allowed = torch.tensor([i for i in range(vocab_size) if i not in set(exclude)])
    if len(allowed) < length:
        raise ValueError(f"vocab_size={vocab_size} leaves {len(allowed)} tokens: too few for length={length}")
    gen = torch.Generator().manual_seed(seed)
    rows = [allowed[torch.randperm(len(allowed), generator=gen)[:length]] for _ in range(batch)]
    return torch.stack(rows).repeat(1, repeats)  # (batch, length * repeats)


@dataclass(frozen=True)
class CopyTest:
    """How a model does on random tokens repeated twice (see :func:`copy_test`)."""
    first: float  # mean loss on the first copy (nats/token): nothing to copy yet
    second: float  # mean loss on the second copy: copying from the first one makes it low
    induction: torch.Tensor  # (layers, heads): mean attention from the second copy to "the token after the last time"
    next_after: torch.Tensor  # (layers, heads): the same one position further ("the token after that one")

    @property
    def ratio(self) -> float:
        """Loss on the second copy over loss on the first: ~1 without in-context copying, towards 0 with it."""
        return self.second / self.first


def copy_test(model: Any, vocab_size: int, length: int = 30, batch: int = 4, seed: int = 0) -> CopyTest:
    """Feed ``batch`` rows of ``length`` random tokens repeated twice; measure the loss on each copy and
    every head's induction score (the model needs eager attention, see :func:`load_attention_model`).

    The induction score of a head is its mean attention from position ``i`` of the second copy to position
    ``i - length + 1``: the token that followed the previous occurrence of the current token (Olsson et al.);
    ``next_after`` is the mean attention to ``i - length + 2``, one token further.
    """
    rep = repeated_random_tokens(vocab_size, length=length, repeats=2, seed=seed, batch=batch)  # (B, 2L)
    with torch.no_grad():
        out = model(rep, output_attentions=True)
    if not out.attentions:
        raise ValueError("The model returned no attention weights: load it with attn_implementation='eager'.")
    nll = torch.nn.functional.cross_entropy(out.logits[:, :-1].transpose(1, 2), rep[:, 1:], reduction="none")
    attn = torch.stack(out.attentions, dim=1)  # (B, layers, H, 2L, 2L)
    rows = torch.arange(length, 2 * length)  # queries in the second copy
    induction = attn[:, :, :, rows, rows - length + 1].mean(dim=(0, 3))  # (layers, H)
    further = rows[:-1]  # the last query has no "one further" inside the first copy's continuation
    next_after = attn[:, :, :, further, further - length + 2].mean(dim=(0, 3))  # (layers, H)
    return CopyTest(float(nll[:, : length - 1].mean()), float(nll[:, length:].mean()), induction, next_after)


def causal_uniform_baseline(T: int, offset: int = 1, start: int | None = None) -> float:
    """What a head that spreads its attention evenly over all allowed tokens scores on a diagonal score.

    Row ``i`` of a causal uniform map gives ``1 / (i + 1)`` to each of its ``i + 1`` allowed tokens, so the
    mean of ``attn[i, i - offset]`` over rows ``i >= start`` (default ``offset``) is the mean of ``1/(i+1)``.
    A head that scores no higher than this is not looking at that diagonal in particular.
    """
    start = offset if start is None else start
    rows = range(max(start, offset), T)
    if not rows:
        raise ValueError(f"no rows: T={T}, offset={offset}, start={start}")
    return sum(1.0 / (i + 1) for i in rows) / len(rows)


# ----------------------------------------------------------------------------------------------
# Positions


def sinusoidal_positions(n_positions: int, d_model: int, base: float = 10_000.0) -> torch.Tensor:
    """The fixed positional encoding of the original transformer (Vaswani et al., 2017): ``(n_positions, d_model)``.

    ``PE[p, 2i] = sin(p / base^(2i/d))`` and ``PE[p, 2i+1] = cos(p / base^(2i/d))``: every pair of
    dimensions is a clock ticking at its own speed, so each position gets a unique pattern and nearby
    positions get similar ones.
    """
    if d_model % 2:
        raise ValueError(f"d_model={d_model} must be even (sines and cosines come in pairs)")
    pos = torch.arange(n_positions, dtype=torch.float32)[:, None]  # (P, 1)
    freq = base ** (-torch.arange(0, d_model, 2, dtype=torch.float32) / d_model)  # (d/2,)
    pe = torch.zeros(n_positions, d_model)
    pe[:, 0::2] = torch.sin(pos * freq)
    pe[:, 1::2] = torch.cos(pos * freq)
    return pe  # (P, d)


def cosine_similarity_matrix(vectors: torch.Tensor) -> torch.Tensor:
    """``(N, d) -> (N, N)`` cosine similarity of every pair of rows (for comparing position vectors)."""
    unit = torch.nn.functional.normalize(vectors.detach().float(), dim=-1)
    return unit @ unit.T


# ----------------------------------------------------------------------------------------------
# Why attention: how far back can a recurrent network "see"?


def rnn_influence(T: int = 60, d: int = 32, *, seed: int = 0, scale: float = 0.9) -> torch.Tensor:
    """How much the last hidden state of a random RNN depends on each input: ``(T,)`` gradient norms.

    ``h_t = tanh(W h_{t-1} + U x_t)`` with random ``W`` (spectral radius about ``scale``). The returned
    ``g[t] = ||d h_T / d x_t||`` shrinks roughly geometrically with the distance ``T - t``: everything
    the network knows about early tokens has to survive being squeezed through the same small vector
    again and again. In attention every token is one step away from every other.
    """
    gen = torch.Generator().manual_seed(seed)
    W = torch.randn(d, d, generator=gen) * scale / math.sqrt(d)  # (d, d)
    U = torch.randn(d, d, generator=gen) / math.sqrt(d)  # (d, d)
    x = torch.randn(T, d, generator=gen, requires_grad=True)  # (T, d)
    h = torch.zeros(d)
    for t in range(T):
        h = torch.tanh(W @ h + U @ x[t])
    grads = [torch.autograd.grad(h[k], x, retain_graph=True)[0] for k in range(d)]  # d x (T, d)
    jac = torch.stack(grads)  # (d_out, T, d_in)
    return jac.pow(2).sum(dim=(0, 2)).sqrt().detach()  # (T,)


# ----------------------------------------------------------------------------------------------
# The three model families, shown on one sentence


def family_examples(text: str, *, seed: int = 0, mask_rate: float = 0.15) -> dict[str, tuple[str, str]]:
    """Input -> target pairs for the three pre-training objectives, on the words of ``text``.

    * ``"autoencoding (MLM)"``: some words replaced by ``[MASK]``; the target is the original words there
      (BERT: the model sees both sides of every mask).
    * ``"autoregressive (CLM)"``: the input is the text so far, the target is the next word, at every
      position (GPT: only the left side is visible).
    * ``"sequence-to-sequence (span corruption)"``: spans replaced by sentinels ``<X>``, ``<Y>``...; the
      target lists each sentinel followed by the words it hides (T5).
    """
    words = re.findall(r"\w+|[^\w\s]", text)
    if len(words) < 4:
        raise ValueError(f"need a text of at least 4 words to show the objectives, got {text!r}")
    gen = torch.Generator().manual_seed(seed)
    n_mask = max(1, round(mask_rate * len(words)))
    masked = sorted(torch.randperm(len(words), generator=gen)[:n_mask].tolist())
    mlm_in = " ".join("[MASK]" if i in masked else w for i, w in enumerate(words))
    mlm_out = ", ".join(f"[MASK]{k + 1}={words[i]}" for k, i in enumerate(masked))

    k = len(words) // 2
    clm_in = " ".join(words[:k])
    clm_out = f"{words[k]}   (and at every other position: the word that follows it)"

    sentinels = ["<X>", "<Y>", "<Z>"]
    starts = sorted(torch.randperm(len(words) - 2, generator=gen)[:2].tolist())
    if starts[1] - starts[0] < 3:
        starts = [starts[0], min(starts[0] + 3, len(words) - 2)]
    spans = [(s, min(s + 2, len(words))) for s in starts][: len(sentinels)]
    out_in, out_tg, pos = [], [], 0
    for (a, b), s in zip(spans, sentinels):
        if a < pos:
            continue
        out_in += words[pos:a] + [s]
        out_tg += [s] + words[a:b]
        pos = b
    out_in += words[pos:]
    return {
        "autoencoding (MLM)": (mlm_in, mlm_out),
        "autoregressive (CLM)": (clm_in, clm_out),
        "sequence-to-sequence (span corruption)": (" ".join(out_in), " ".join(out_tg)),
    }
