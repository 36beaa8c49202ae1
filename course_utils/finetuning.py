"""Fine-tuning scaffolding for the dialogue-summary task: data, a small training loop and evaluation.

The notebook's exercises (LoRA, ROUGE, BLEU, soft prompts) are written by the learner; this module only
provides the plumbing around them, so it never holds an answer:

* data -- prompt-completion pairs for "summarise this dialogue" and their token rows with the prompt
  masked out of the loss (label ``-100``), batched with right padding;
* :func:`fine_tune` -- AdamW on whatever parameters you hand it, for any model and any loss;
* evaluation -- batched greedy summaries (optionally behind a soft prompt), mean ROUGE-L through your
  own function or the ``rouge-score`` package, and story perplexity (the forgetting probe);
* the cached comparison of full fine-tuning, BitFit, LoRA and prompt tuning lives in
  :mod:`course_utils.sweeps.finetuning`; ``python -m course_utils.finetuning --sweep`` re-creates it.

    >>> from course_utils import finetuning as ft
    >>> pairs = ft.summary_pairs(seed=2, n=3)
    >>> pairs[0][0].startswith("Summarize the dialogue:")
    True
"""

from __future__ import annotations

import math
import random
import re
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

import torch
from torch import nn

from course_utils import world
from course_utils.exercises import needs_exercise  # noqa: F401  (re-exported for the notebook)
from course_utils.train import BLOCK_SIZE, collate, encode_pair, encode_pairs  # noqa: F401  (re-exported: ft.collate, ...)

FINETUNE_SEED = 2  # training dialogues: a seed neither tiny-base (0) nor tiny-instruct (1) saw
MAX_LEN = BLOCK_SIZE  # the bundled models' context window
TARGETS = {  # target-module choices used by the cached sweep and the widget (GPT-2 names)
    "c_attn": ["c_attn"],
    "attention": ["c_attn", "attn.c_proj"],
    "all-linear": ["c_attn", "attn.c_proj", "c_fc", "mlp.c_proj"],
}


# ----------------------------------------------------------------------------------------------
# Data


def summary_pairs(seed: int = FINETUNE_SEED, n: int = 2000) -> list[tuple[str, str]]:
    """``n`` (prompt, completion) pairs: the summarise instruction and `` <reference summary>``."""
    return [(world.summarize_prompt(d.text), " " + d.summary) for d in world.dialogues(seed, n)]


def _review_start(review_text: str) -> tuple[str, str]:
    """A review's first sentence (the opener, about the product) and the rest (the aspect sentences)."""
    opener, _, body = review_text.partition(". ")
    return opener + ".", body


def steer_pairs(seed: int = FINETUNE_SEED, n: int = 2000, label: str = "positive") -> list[tuple[str, str]]:
    """``n`` (prompt, completion) pairs that teach a *style* rather than a task: the prompt is the start of a
    review page, ``Review: I bought this lamp last Monday.``, and the completion the rest of a ``label`` review."""
    rng = world.rng_for(seed)
    pairs = []
    for _ in range(n):
        opener, body = _review_start(world.make_review(rng, label=label).text)
        pairs.append((f"Review: {opener}", " " + body))
    return pairs


def steer_prompts(n: int = 50, seed: int = world.HELD_OUT_SEED) -> list[str]:
    """``n`` held-out review starts (``Review: <opener>``) for measuring which way generation leans."""
    return [prompt for prompt, _ in steer_pairs(seed, n, label="positive")]


def evaluate_steering(model: nn.Module, tokenizer, n: int = 50, seed: int = world.HELD_OUT_SEED,
                      soft_prompt: nn.Module | None = None) -> dict[str, Any]:
    """Sampled continuations (temperature 1, seeded) of ``n`` held-out review starts, judged by
    :func:`world.sentiment_score`: the share that reads positive, the mean score, and the continuations.
    Sampling shows what the model's distribution leans to; greedy decoding would loop on one phrase."""
    texts = greedy_generate(model, tokenizer, steer_prompts(n, seed), max_new_tokens=32, soft_prompt=soft_prompt,
                            temperature=1.0)
    scores = [world.sentiment_score(t) for t in texts]
    return {"positive_share": sum(x > 0 for x in scores) / n, "mean_sentiment": sum(scores) / n,
            "predictions": texts}


def tokenize(text: str) -> list[str]:
    """Words as ``rouge-score`` sees them: lower-case, every non-alphanumeric run becomes a space.

    ``"#Person1# buys a red lamp."`` -> ``['person1', 'buys', 'a', 'red', 'lamp']``.
    """
    return [t for t in re.sub(r"[^a-z0-9]+", " ", text.lower()).split() if t]


def linear_shape(layer: nn.Module) -> tuple[int, int, bool]:
    """``(in_features, out_features, fan_in_fan_out)`` of an ``nn.Linear`` or a transformers ``Conv1D``.

    ``nn.Linear`` stores its weight as (out, in) and computes ``x @ W.T + b``; GPT-2's ``Conv1D`` stores
    it transposed, (in, out), and computes ``x @ W + b`` -- ``fan_in_fan_out=True`` in peft's words.
    """
    weight = getattr(layer, "weight", None)
    if isinstance(layer, nn.Linear):
        return layer.in_features, layer.out_features, False
    if type(layer).__name__ == "Conv1D" and isinstance(weight, torch.Tensor) and weight.dim() == 2:
        return weight.shape[0], weight.shape[1], True  # Conv1D weight: (in, out)
    raise TypeError(f"expected an nn.Linear or a transformers Conv1D layer, got {type(layer).__name__}: "
                    "LoRA here wraps linear maps only (pick target modules such as 'c_attn' or 'c_fc')")


# ----------------------------------------------------------------------------------------------
# Training


LossFn = Callable[[nn.Module, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def count_trainable_parameters(model: nn.Module) -> int:
    """Number of trainable parameters (elements with ``requires_grad``), a shared (tied) tensor counted once."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)  # parameters() yields a shared tensor once


def causal_lm_loss(model: nn.Module, ids: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The model's own next-token cross-entropy over the positions whose label is not -100."""
    return model(input_ids=ids, attention_mask=mask, labels=labels).loss


@dataclass
class TrainLog:
    """What :func:`fine_tune` did: loss per step, wall time, and the parameters it trained."""
    losses: list[float] = field(default_factory=list)
    seconds: float = 0.0
    cpu_seconds: float = 0.0  # CPU time of this process: robust to other programs sharing the machine
    trainable: int = 0
    optimizer_bytes: int = 0

    @property
    def sec_per_step(self) -> float:
        return self.seconds / max(1, len(self.losses))


def fine_tune(model: nn.Module, rows: Sequence[tuple[list[int], list[int]]], params: Iterable[nn.Parameter], *,
              steps: int, lr: float, batch_size: int = 16, seed: int = 0, pad_id: int = 0,
              loss_fn: LossFn | None = None, weight_decay: float = 0.0, log_every: int = 0) -> TrainLog:
    """Train ``params`` (and nothing else) for ``steps`` AdamW steps on random batches of ``rows``.

    ``params`` decides the method: every parameter is full fine-tuning, the LoRA matrices are LoRA, the
    biases are BitFit, a soft prompt's one tensor is prompt tuning. ``loss_fn(model, ids, labels, mask)``
    defaults to :func:`causal_lm_loss`. Gradients reach only ``params``; the optimizer keeps Adam's two
    moment tensors for exactly those parameters -- which is where PEFT saves memory.
    """
    params = [p for p in params]
    if not params:
        raise ValueError("fine_tune() got no parameters to train: pass e.g. "
                         "[p for p in model.parameters() if p.requires_grad]")
    if any(not p.requires_grad for p in params):
        raise ValueError("some parameters passed to fine_tune() have requires_grad=False: "
                         "set p.requires_grad_(True) on the ones you want to train")
    if steps < 1 or lr <= 0:
        raise ValueError(f"steps must be >= 1 and lr > 0, got steps={steps}, lr={lr}")
    loss_fn = loss_fn or causal_lm_loss
    torch.manual_seed(seed)
    rng = random.Random(seed)
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, betas=(0.9, 0.95))
    warmup = max(1, steps // 10)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warmup))
    log = TrainLog(trainable=sum(p.numel() for p in params))
    model.train()
    start, cpu_start = time.perf_counter(), time.process_time()
    try:
        for step in range(steps):
            ids, labels, mask = collate([rows[rng.randrange(len(rows))] for _ in range(batch_size)], pad_id)
            loss = loss_fn(model, ids, labels, mask)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            sched.step()
            log.losses.append(float(loss.detach()))
            if log_every and (step % log_every == 0 or step == steps - 1):
                print(f"  step {step:4d}  loss {log.losses[-1]:.3f}", flush=True)
    finally:
        model.eval()
    log.seconds, log.cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    log.optimizer_bytes = optimizer_state_bytes(opt)
    return log


def optimizer_state_bytes(optimizer: torch.optim.Optimizer) -> int:
    """Bytes held in the optimizer's state tensors (Adam: two moments per trained parameter)."""
    return sum(v.numel() * v.element_size() for state in optimizer.state.values()
               for v in state.values() if isinstance(v, torch.Tensor) and v.dim() > 0)


# ----------------------------------------------------------------------------------------------
# Soft prompts: run a frozen model with learned vectors in front of the input embeddings


def _prefix(soft_prompt: nn.Module, embeds: torch.Tensor) -> tuple[torch.Tensor, int]:
    """``soft_prompt(embeds)`` and how many virtual tokens it put in front (checked)."""
    out = soft_prompt(embeds)  # (B, n + T, d)
    if not isinstance(out, torch.Tensor) or out.dim() != 3 or out.shape[0] != embeds.shape[0] \
            or out.shape[2] != embeds.shape[2] or out.shape[1] < embeds.shape[1]:
        raise ValueError(f"the soft prompt should map embeddings (B, T, d)={tuple(embeds.shape)} to (B, n + T, d); "
                         f"it returned {getattr(out, 'shape', type(out).__name__)}")
    return out, out.shape[1] - embeds.shape[1]


def soft_prompt_forward(model: nn.Module, soft_prompt: nn.Module, ids: torch.Tensor, mask: torch.Tensor,
                        labels: torch.Tensor | None = None) -> Any:
    """The model's output with ``soft_prompt`` applied to the input embeddings (as peft's prompt tuning does).

    The attention mask gets ``n`` ones in front and the labels ``n`` times -100 (no loss on virtual tokens).
    Logits come back for all ``n + T`` positions.
    """
    embeds, n = _prefix(soft_prompt, model.get_input_embeddings()(ids))  # (B, n + T, d)
    mask = torch.cat([mask.new_ones(ids.shape[0], n), mask], dim=1)
    if labels is not None:
        labels = torch.cat([labels.new_full((ids.shape[0], n), -100), labels], dim=1)
    return model(inputs_embeds=embeds, attention_mask=mask, labels=labels)


def soft_prompt_loss(soft_prompt: nn.Module) -> LossFn:
    """A ``loss_fn`` for :func:`fine_tune` that trains through ``soft_prompt``."""
    return lambda model, ids, labels, mask: soft_prompt_forward(model, soft_prompt, ids, mask, labels).loss


# ----------------------------------------------------------------------------------------------
# Evaluation


@torch.no_grad()
def greedy_generate(model: nn.Module, tokenizer, prompts: Sequence[str], max_new_tokens: int = 40,
                    soft_prompt: nn.Module | None = None, batch_size: int = 32, temperature: float = 0.0,
                    seed: int = 0) -> list[str]:
    """Greedy completions of ``prompts`` in batches (left padding + KV cache), cut at EOS or a newline.

    Same tokens as ``model.generate(do_sample=False)`` one prompt at a time (tested), ~10x faster.
    With ``soft_prompt`` the virtual tokens go in front of every prompt. ``temperature > 0`` samples
    instead (seeded with ``seed``: the same call gives the same texts).
    """
    gen = torch.Generator().manual_seed(seed)
    model.eval()
    eos = tokenizer.eos_token_id
    results: list[str] = []
    for start in range(0, len(prompts), batch_size):
        encoded = [tokenizer(p)["input_ids"] for p in prompts[start:start + batch_size]]
        width = max(map(len, encoded))
        ids = torch.full((len(encoded), width), eos, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, e in enumerate(encoded):  # left padding: every prompt ends at the last column
            ids[i, width - len(e):], mask[i, width - len(e):] = torch.tensor(e), 1
        embeds = model.get_input_embeddings()(ids)  # (B, T, d)
        if soft_prompt is not None:
            embeds, n = _prefix(soft_prompt, embeds)
            mask = torch.cat([mask.new_ones(len(encoded), n), mask], dim=1)
            # move the virtual tokens after the padding: (pads, virtual, prompt)
            order = torch.argsort(mask, dim=1, stable=True)
            embeds = torch.gather(embeds, 1, order[..., None].expand_as(embeds))
            mask = torch.gather(mask, 1, order)
        pos = (mask.cumsum(1) - 1).clamp(min=0)  # (B, T) positions count real tokens only
        out = model(inputs_embeds=embeds, attention_mask=mask, position_ids=pos, use_cache=True)
        past, new = out.past_key_values, []
        done = torch.zeros(len(encoded), dtype=torch.bool)
        for _ in range(max_new_tokens):
            logits = out.logits[:, -1]  # (B, V)
            nxt = (logits.argmax(-1) if temperature <= 0 else
                   torch.multinomial(torch.softmax(logits / temperature, -1), 1, generator=gen)[:, 0])  # (B,)
            new.append(nxt)
            done |= nxt == eos
            if bool(done.all()):
                break
            mask = torch.cat([mask, mask.new_ones(len(encoded), 1)], dim=1)
            pos = pos[:, -1:] + 1
            out = model(input_ids=nxt[:, None], attention_mask=mask, position_ids=pos,
                        past_key_values=past, use_cache=True)
            past = out.past_key_values
        tokens = torch.stack(new, dim=1).tolist() if new else [[] for _ in encoded]
        for row in tokens:
            row = row[: row.index(eos)] if eos in row else row
            results.append(tokenizer.decode(row, skip_special_tokens=True).split("\n")[0].strip())
    return results


RougeFn = Callable[[str, str], Any]


def rouge_l_fmeasure(prediction: str, reference: str) -> float:
    """ROUGE-L F1 from the ``rouge-score`` package (the field's reference implementation)."""
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rougeL"]).score(reference, prediction)["rougeL"].fmeasure


def mean_rouge(predictions: Sequence[str], references: Sequence[str], rouge_fn: RougeFn | None = None) -> float:
    """Mean F1 over pairs. ``rouge_fn(prediction, reference)`` may return a float or a (P, R, F1) triple,
    e.g. your own ``rouge_l``; the default is :func:`rouge_l_fmeasure`."""
    if len(predictions) != len(references) or not predictions:
        raise ValueError(f"need as many predictions as references (and at least one): "
                         f"{len(predictions)} vs {len(references)}")
    fn = rouge_fn or rouge_l_fmeasure
    scores = []
    for p, r in zip(predictions, references):
        s = fn(p, r)
        scores.append(float(s[2] if isinstance(s, (tuple, list)) else s))
    return sum(scores) / len(scores)


def evaluate_summaries(model: nn.Module, tokenizer, n: int = 50, seed: int = world.HELD_OUT_SEED,
                       rouge_fn: RougeFn | None = None, soft_prompt: nn.Module | None = None) -> dict[str, Any]:
    """Greedy summaries of ``n`` held-out dialogues: mean ROUGE-L F1 and the first example."""
    dialogues = world.dialogues(seed, n)
    preds = greedy_generate(model, tokenizer, [world.summarize_prompt(d.text) for d in dialogues],
                            soft_prompt=soft_prompt)
    return {"rougeL": mean_rouge(preds, [d.summary for d in dialogues], rouge_fn), "predictions": preds,
            "references": [d.summary for d in dialogues]}


@torch.no_grad()
def perplexity(model: nn.Module, tokenizer, texts: Sequence[str], soft_prompt: nn.Module | None = None,
               batch_size: int = 32) -> float:
    """Token-level perplexity of ``texts`` (EOS appended), optionally with ``soft_prompt`` in front.

    Each text is scored on its own (right padding, masked); the first token is never scored, so the
    figure is comparable with and without a soft prompt.
    """
    model.eval()
    eos = tokenizer.eos_token_id
    nll, count = 0.0, 0
    for start in range(0, len(texts), batch_size):
        rows = [(ids, [-100] + ids[1:]) for ids in
                (tokenizer(t)["input_ids"][: MAX_LEN - 1] + [eos] for t in texts[start:start + batch_size])]
        ids, labels, mask = collate(rows, eos)
        if soft_prompt is None:
            logits = model(input_ids=ids, attention_mask=mask).logits  # (B, T, V)
        else:
            logits = soft_prompt_forward(model, soft_prompt, ids, mask).logits
            logits = logits[:, logits.shape[1] - ids.shape[1]:]  # drop the virtual positions
        loss = nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1), labels[:, 1:].flatten(),
                                           ignore_index=-100, reduction="sum")
        nll += float(loss)
        count += int((labels[:, 1:] != -100).sum())
    return math.exp(nll / count)


def story_perplexity(model: nn.Module, tokenizer, n: int = 50, seed: int = world.HELD_OUT_SEED,
                     soft_prompt: nn.Module | None = None) -> float:
    """Perplexity on ``n`` held-out stories: the skill the summary task does not train (forgetting probe)."""
    return perplexity(model, tokenizer, world.stories(seed, n), soft_prompt=soft_prompt)


if __name__ == "__main__":  # `python -m course_utils.finetuning --sweep` re-creates the cached sweep, as it always did
    from course_utils.sweeps.finetuning import main

    raise SystemExit(main())
