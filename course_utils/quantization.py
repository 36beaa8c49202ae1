"""Scaffolding for the quantization and efficiency notebook: size accounting, perplexity, demos.

Nothing here answers an exercise: quantizing, pruning and the distillation loss are the learner's own
functions, passed in where a demo needs them.

    >>> from course_utils import quantization as qz
    >>> model, tok = load_model("tiny-base")
    >>> batch = qz.heldout_batch(tok)                          # tokenized once, reused for every model
    >>> qz.perplexity(model, batch)                            # ~1.5 on the bundled model
    >>> qz.size_bytes(model), qz.size_bytes(model, bits=4, granularity="channel")

Conventions used throughout (the notebook states them next to each exercise):

* "the linear layers" are the modules that are ``torch.nn.Linear`` or transformers' GPT-2 ``Conv1D``
  (``c_attn``, ``c_proj``, ``c_fc`` and ``mlp.c_proj`` in every block, plus ``lm_head``, whose weight is
  *tied* to the token embedding ``wte``: one tensor, stored once);
* a quantized weight costs ``bits / 8`` bytes per value (values are packed, two int4 per byte), plus one
  float32 scale (4 bytes) per scale group and, for zero-point, one byte per zero point;
* everything else (biases, LayerNorms, position embeddings) stays float32: 4 bytes per value.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch
from torch import nn

BITS_CHOICES = (2, 3, 4, 5, 6, 7, 8, 16)
GRANULARITIES = ("tensor", "channel")
SCHEMES = ("absmax", "zeropoint")
PETAFLOP_S_DAY = 1e15 * 24 * 3600  # FLOPs done at 1 petaFLOP/s for one day = 8.64e19

# Chinchilla's parametric loss L(N, D) = E + A / N^alpha + B / D^beta, as re-fitted to the paper's data by
# Besiroglu et al. (2024, "Chinchilla scaling: a replication attempt"); its optimum is ~20 tokens/parameter.
CHINCHILLA_FIT = {"E": 1.8172, "A": 482.01, "B": 2085.43, "alpha": 0.3478, "beta": 0.3658}


# ----------------------------------------------------------------------------------------------
# Which weights count as "linear layers", and what a model costs in bytes


def _conv1d_class() -> type | None:
    try:
        from transformers.pytorch_utils import Conv1D
    except ImportError:  # pragma: no cover - transformers is a dependency
        return None
    return Conv1D


def linear_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """``(name, module)`` for every ``nn.Linear`` and GPT-2 ``Conv1D`` in ``model`` (weights deduplicated)."""
    conv1d = _conv1d_class()
    kinds = (nn.Linear,) + ((conv1d,) if conv1d is not None else ())
    seen: set[int] = set()
    out = []
    for name, module in model.named_modules():
        if isinstance(module, kinds) and id(module.weight) not in seen:
            seen.add(id(module.weight))
            out.append((name, module))
    return out


def _out_features(module: nn.Module) -> int:
    """Output features of a linear layer: Conv1D stores its weight as (in, out), nn.Linear as (out, in)."""
    return int(module.weight.shape[1] if not isinstance(module, nn.Linear) else module.weight.shape[0])


def _n_scales(module: nn.Module, granularity: str | int) -> int:
    if granularity == "tensor":
        return 1
    if granularity == "channel":
        return _out_features(module)
    if isinstance(granularity, int) and not isinstance(granularity, bool) and granularity > 0:
        return math.ceil(module.weight.numel() / granularity)
    raise ValueError(f"granularity must be 'tensor', 'channel' or a positive group size (int), got {granularity!r}")


def size_breakdown(model: nn.Module, bits: int = 32, scheme: str = "absmax",
                   granularity: str | int = "tensor") -> dict[str, int]:
    """Bytes to store ``model``: ``{"weights", "scales", "other", "total"}``.

    ``bits`` 32 or 16: every parameter in float32 or a 16-bit float (tied weights counted once).
    ``bits`` 2-8: the linear layers' weights as packed ``bits``-bit integers plus their scales (and zero
    points for ``scheme="zeropoint"``); everything else float32.
    """
    params = {id(p): p for p in model.parameters()}
    if bits in (32, 16):
        total = sum(p.numel() for p in params.values()) * bits // 8
        return {"weights": total, "scales": 0, "other": 0, "total": total}
    if not isinstance(bits, int) or not 2 <= bits <= 8:
        raise ValueError(f"bits must be 32, 16 or an int from 2 to 8, got {bits!r}")
    if scheme not in SCHEMES:
        raise ValueError(f"scheme must be one of {SCHEMES}, got {scheme!r}")
    weights = scales = 0
    quantized: set[int] = set()
    for _, module in linear_modules(model):
        quantized.add(id(module.weight))
        weights += math.ceil(module.weight.numel() * bits / 8)
        scales += _n_scales(module, granularity) * (4 + (1 if scheme == "zeropoint" else 0))
    other = 4 * sum(p.numel() for i, p in params.items() if i not in quantized)
    return {"weights": weights, "scales": scales, "other": other, "total": weights + scales + other}


def size_bytes(model: nn.Module, bits: int = 32, scheme: str = "absmax", granularity: str | int = "tensor") -> int:
    """Total bytes of :func:`size_breakdown`."""
    return size_breakdown(model, bits, scheme, granularity)["total"]


def round_weights(model: nn.Module, dtype: torch.dtype) -> nn.Module:
    """A copy of ``model`` whose parameters are rounded to ``dtype`` (e.g. bfloat16) and stored back in float32.

    This simulates *storing* the weights in a 16-bit format while computing in float32.
    """
    out = copy.deepcopy(model)
    with torch.no_grad():
        for p in out.parameters():
            p.copy_(p.to(dtype).to(p.dtype))
    return out


def changed_parameters(before: nn.Module, after: nn.Module) -> list[str]:
    """Names of the parameters whose values differ between two models of the same architecture."""
    a = dict(before.named_parameters(remove_duplicate=False))
    return [n for n, p in after.named_parameters(remove_duplicate=False) if not torch.equal(p, a[n])]


# ----------------------------------------------------------------------------------------------
# Perplexity on held-out text (one padded batch, tokenized once)


def heldout_batch(tokenizer: Any, n: int = 16, seed: int | None = None, max_tokens: int = 96) -> dict[str, torch.Tensor]:
    """``n`` held-out course-world documents as one right-padded batch with ``labels`` (-100 on padding).

    Each document is cut to ``max_tokens`` tokens and ends with EOS, as in ``train.perplexity``.
    """
    from course_utils import world

    docs = world.pretraining_documents(world.HELD_OUT_SEED if seed is None else seed, n)
    rows = [tokenizer(d)["input_ids"][: max_tokens - 1] + [tokenizer.eos_token_id] for d in docs]
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), tokenizer.eos_token_id)  # (B, T)
    labels = torch.full((len(rows), width), -100)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r)
        labels[i, : len(r)] = torch.tensor(r)
        mask[i, : len(r)] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


@torch.no_grad()
def perplexity(model: nn.Module, batch: dict[str, torch.Tensor]) -> float:
    """exp(mean next-token cross-entropy) of ``model`` on a :func:`heldout_batch` (padding ignored)."""
    return math.exp(float(model(**batch).loss))


def weight_error(original: nn.Module, quantized: nn.Module) -> dict[str, float]:
    """Mean and max |w - w_hat| over the linear layers' weights, and the relative (L2) error."""
    q = dict(quantized.named_modules())
    sq_err = sq_norm = 0.0
    total_abs = 0.0
    count = 0
    worst = 0.0
    for name, module in linear_modules(original):
        diff = (module.weight.detach() - q[name].weight.detach()).float()
        total_abs += float(diff.abs().sum())
        count += diff.numel()
        worst = max(worst, float(diff.abs().max()))
        sq_err += float((diff ** 2).sum())
        sq_norm += float((module.weight.detach().float() ** 2).sum())
    return {"mean_abs": total_abs / max(count, 1), "max_abs": worst, "relative": math.sqrt(sq_err / max(sq_norm, 1e-30))}


# ----------------------------------------------------------------------------------------------
# The size / perplexity table


@dataclass
class Row:
    """One line of the size / perplexity table."""
    name: str
    bits: int
    scheme: str
    granularity: str | int
    size: int
    ppl: float
    rel_error: float
    seconds: float


def compare(model: nn.Module, batch: dict[str, torch.Tensor], configs: Sequence[tuple[int, str, str | int]],
            quantize_model: Callable[..., nn.Module]) -> list[Row]:
    """Size and perplexity of ``model`` stored at each ``(bits, scheme, granularity)`` in ``configs``.

    ``bits`` 32 is the model as it is; 16 rounds every weight to bfloat16; 2-8 calls the learner's
    ``quantize_model(model, bits, scheme, granularity)``.
    """
    rows = []
    for bits, scheme, gran in configs:
        t = time.perf_counter()
        if bits == 32:
            m, name = model, "fp32"
        elif bits == 16:
            m, name = round_weights(model, torch.bfloat16), "bf16"
        else:
            m = quantize_model(model, bits, scheme, gran)
            name = f"int{bits} {scheme} " + (f"group-{gran}" if isinstance(gran, int) else f"per-{gran}")
        rows.append(Row(name, bits, scheme if bits <= 8 else "-", gran if bits <= 8 else "-",
                        size_bytes(model, bits, scheme, gran), perplexity(m, batch),
                        weight_error(model, m)["relative"], time.perf_counter() - t))
    return rows


def format_table(rows: Sequence[Row], baseline: Row | None = None) -> str:
    """A plain-text table: name, size in kB, compression, perplexity and its change, weight error."""
    base = baseline or rows[0]
    lines = [f"{'storage':<28}{'size (kB)':>11}{'smaller':>9}{'perplexity':>12}{'change':>9}{'weight err':>12}"]
    for r in rows:
        lines.append(f"{r.name:<28}{r.size / 1e3:>11.0f}{base.size / r.size:>8.1f}x{r.ppl:>12.3f}"
                     f"{(r.ppl / base.ppl - 1) * 100:>+8.1f}%{r.rel_error:>12.4f}")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------
# Distillation demo: train a small student from the bundled model


def student_like(teacher: nn.Module, n_layer: int = 2, n_embd: int = 64, n_head: int = 2, seed: int = 0) -> nn.Module:
    """A fresh, smaller GPT-2 with the teacher's vocabulary (same tokenizer)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    t = teacher.config
    torch.manual_seed(seed)
    cfg = GPT2Config(vocab_size=t.vocab_size, n_positions=t.n_positions, n_layer=n_layer, n_embd=n_embd,
                     n_head=n_head, bos_token_id=t.bos_token_id, eos_token_id=t.eos_token_id,
                     pad_token_id=t.pad_token_id, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    return GPT2LMHeadModel(cfg)


def training_blocks(tokenizer: Any, n_docs: int = 600, block: int = 64, seed: int | None = None) -> torch.Tensor:
    """Course-world training text cut into rows of ``block`` tokens: (N, block)."""
    from course_utils import world

    ids: list[int] = []
    for doc in world.pretraining_documents(world.TRAIN_SEED if seed is None else seed, n_docs):
        ids.extend(tokenizer(doc)["input_ids"] + [tokenizer.eos_token_id])
    n = len(ids) // block
    return torch.tensor(ids[: n * block]).view(n, block)


@dataclass
class DistillRun:
    """Result of :func:`train_student`."""
    label: str
    losses: list[float]
    eval_ppl: list[tuple[int, float]] = field(default_factory=list)   # (step, held-out perplexity)
    seconds: float = 0.0
    student: nn.Module | None = None


def train_student(teacher: nn.Module, blocks: torch.Tensor, batch: dict[str, torch.Tensor],
                  loss_fn: Callable[..., torch.Tensor], *, temperature: float = 2.0, alpha: float = 0.5,
                  steps: int = 150, batch_size: int = 16, lr: float = 3e-3, eval_every: int = 50,
                  seed: int = 0, label: str = "", teacher_logits: torch.Tensor | None = None) -> DistillRun:
    """Train :func:`student_like` ``(teacher)`` on ``blocks`` with the learner's ``loss_fn``.

    ``loss_fn(student_logits, teacher_logits, temperature, alpha, labels)`` receives next-token logits
    (B, T-1, V) and labels (B, T-1). ``alpha=0`` is ordinary training on the data alone; ``alpha=1`` learns
    from the teacher's softened distribution alone. ``teacher_logits`` (N, T, V) for all ``blocks`` can be
    passed in to avoid recomputing them for each run.
    """
    student = student_like(teacher, seed=seed)
    opt = torch.optim.AdamW(student.parameters(), lr=lr, weight_decay=0.0)
    gen = torch.Generator().manual_seed(seed)
    run = DistillRun(label=label or f"T={temperature}, alpha={alpha}", losses=[])
    start = time.perf_counter()
    student.train()
    for step in range(steps):
        idx = torch.randint(len(blocks), (batch_size,), generator=gen)
        ids = blocks[idx]  # (B, T)
        with torch.no_grad():
            t_logits = teacher_logits[idx] if teacher_logits is not None else teacher(input_ids=ids).logits
        s_logits = student(input_ids=ids).logits  # (B, T, V)
        loss = loss_fn(s_logits[:, :-1], t_logits[:, :-1], temperature, alpha, ids[:, 1:])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        run.losses.append(float(loss.detach()))
        if (step + 1) % eval_every == 0 or step == steps - 1:
            student.eval()
            run.eval_ppl.append((step + 1, perplexity(student, batch)))
            student.train()
    student.eval()
    run.seconds = time.perf_counter() - start
    run.student = student
    return run


@torch.no_grad()
def all_teacher_logits(teacher: nn.Module, blocks: torch.Tensor, chunk: int = 64) -> torch.Tensor:
    """The teacher's logits for every row of ``blocks``: (N, T, V), computed once."""
    return torch.cat([teacher(input_ids=blocks[i: i + chunk]).logits for i in range(0, len(blocks), chunk)])


# ----------------------------------------------------------------------------------------------
# Scaling laws


def chinchilla_loss(n_params: Any, n_tokens: Any) -> Any:
    """Predicted pre-training loss L(N, D) = E + A / N^alpha + B / D^beta (:data:`CHINCHILLA_FIT`)."""
    f = CHINCHILLA_FIT
    return f["E"] + f["A"] / n_params ** f["alpha"] + f["B"] / n_tokens ** f["beta"]


def training_flops(n_params: float, n_tokens: float) -> float:
    """C ~ 6 N D: ~2 FLOPs per parameter per token forward, ~4 backward."""
    return 6.0 * n_params * n_tokens


def compute_optimal(compute_flops: float, tokens_per_param: float = 20.0) -> tuple[float, float]:
    """Chinchilla's rule of thumb: ``(n_params, n_tokens)`` spending ``compute_flops`` with C = 6 N D, D = r N."""
    if not compute_flops > 0:
        raise ValueError(f"compute_flops must be positive, got {compute_flops!r}")
    n_params = (compute_flops / (6.0 * tokens_per_param)) ** 0.5
    return n_params, tokens_per_param * n_params
