"""Fine-tuning scaffolding for the dialogue-summary task: data, a small training loop, evaluation, the sweep.

The notebook's exercises (LoRA, ROUGE, BLEU, soft prompts) are written by the learner; this module only
provides the plumbing around them, so it never holds an answer:

* data -- prompt-completion pairs for "summarise this dialogue" and their token rows with the prompt
  masked out of the loss (label ``-100``), batched with right padding;
* :func:`fine_tune` -- AdamW on whatever parameters you hand it, for any model and any loss;
* evaluation -- batched greedy summaries (optionally behind a soft prompt), mean ROUGE-L through your
  own function or the ``rouge-score`` package, and story perplexity (the forgetting probe);
* the cached sweep -- ``python -m course_utils.finetuning --sweep`` trains full fine-tuning, BitFit,
  LoRA at ranks 1-64 (with the ``peft`` library) and prompt tuning on ``tiny-base`` with one recipe,
  and writes ``assets/finetuning/sweep.json`` (settings, timings, ROUGE, forgetting) for the notebook.

    >>> from course_utils import finetuning as ft
    >>> pairs = ft.summary_pairs(seed=2, n=3)
    >>> pairs[0][0].startswith("Summarize the dialogue:")
    True
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import torch
from torch import nn

from course_utils import world
from course_utils.exercises import needs_exercise  # noqa: F401  (re-exported for the notebook)
from course_utils.train import BLOCK_SIZE, collate, encode_pair, encode_pairs  # noqa: F401  (re-exported: ft.collate, ...)

FINETUNE_SEED = 2  # training dialogues: a seed neither tiny-base (0) nor tiny-instruct (1) saw
SWEEP_PATH = Path(__file__).resolve().parent / "assets" / "finetuning" / "sweep.json"
MAX_LEN = BLOCK_SIZE  # the bundled models' context window
TARGETS = {  # target-module choices used by the sweep and the widget (GPT-2 names)
    "c_attn": ["c_attn"],
    "attention": ["c_attn", "attn.c_proj"],
    "all-linear": ["c_attn", "attn.c_proj", "c_fc", "mlp.c_proj"],
}


# ----------------------------------------------------------------------------------------------
# Data


def summary_pairs(seed: int = FINETUNE_SEED, n: int = 2000) -> list[tuple[str, str]]:
    """``n`` (prompt, completion) pairs: the summarise instruction and `` <reference summary>``."""
    return [(world.summarize_prompt(d.text), " " + d.summary) for d in world.dialogues(seed, n)]


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
                    soft_prompt: nn.Module | None = None, batch_size: int = 32) -> list[str]:
    """Greedy completions of ``prompts`` in batches (left padding + KV cache), cut at EOS or a newline.

    Same tokens as ``model.generate(do_sample=False)`` one prompt at a time (tested), ~10x faster.
    With ``soft_prompt`` the virtual tokens go in front of every prompt.
    """
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
            nxt = out.logits[:, -1].argmax(-1)  # (B,)
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


# ----------------------------------------------------------------------------------------------
# The cached sweep (uses the peft library, so it holds none of the notebook's answers)


@dataclass
class SweepConfig:
    """One recipe for every method, so the comparison is fair (the learning rate is per method family)."""
    base: str = "tiny-base"
    steps: int = 200
    batch_size: int = 16
    n_train: int = 2000
    n_eval: int = 50
    n_stories: int = 50
    seed: int = 0
    lr_full: float = 1e-4
    lr_bitfit: float = 2e-2
    lr_lora: float = 2e-3
    lr_prompt: float = 1e-1
    lora_alpha_over_r: float = 2.0
    ranks: dict[str, tuple[int, ...]] = field(default_factory=lambda: {
        "all-linear": (1, 2, 4, 8, 16, 32, 64), "c_attn": (1, 4, 16, 64)})
    n_virtual_tokens: int = 20
    more_virtual_tokens: int = 50  # a second prompt-tuning run: does a longer soft prompt help?
    harder_lr_full: float = 1e-3  # the same steps with a 10x larger learning rate: does forgetting grow?
    harder_lr_lora: float = 5e-3


class _PeftPrompt(nn.Module):
    """Adapts a peft prompt-tuning model to this module's soft-prompt interface (B, T, d) -> (B, n + T, d)."""

    def __init__(self, peft_model: nn.Module) -> None:
        super().__init__()
        self.peft_model = peft_model

    def forward(self, embeds: torch.Tensor) -> torch.Tensor:
        prompt = self.peft_model.get_prompt(embeds.shape[0]).to(embeds.dtype)  # (B, n, d)
        return torch.cat([prompt, embeds], dim=1)


def _methods(cfg: SweepConfig) -> list[dict[str, Any]]:
    """Every run of the sweep, in a fixed order (``index``), as JSON-ready specs."""
    full = dict(method="full", peft_class="none (all weights)")
    runs = [dict(full, name="full fine-tuning", lr=cfg.lr_full),
            dict(name="BitFit (biases only)", method="bitfit", peft_class="selective", lr=cfg.lr_bitfit)]
    for target, ranks in cfg.ranks.items():
        runs += [dict(name=f"LoRA {target} r={r}", method="lora", peft_class="reparameterization", target=target,
                      r=r, alpha=cfg.lora_alpha_over_r * r, lr=cfg.lr_lora) for r in ranks]
    runs += [dict(name=f"prompt tuning ({n} virtual tokens)", method="prompt", peft_class="additive",
                  n_virtual_tokens=n, lr=cfg.lr_prompt) for n in (cfg.n_virtual_tokens, cfg.more_virtual_tokens)]
    runs.append(dict(full, name=f"full fine-tuning, lr {cfg.harder_lr_full:g}", lr=cfg.harder_lr_full,
                     variant="harder"))
    r = 8
    runs.append(dict(name=f"LoRA all-linear r={r}, lr {cfg.harder_lr_lora:g}", method="lora",
                     peft_class="reparameterization", target="all-linear", r=r, alpha=cfg.lora_alpha_over_r * r,
                     lr=cfg.harder_lr_lora, variant="harder"))
    return [dict(spec, index=i) for i, spec in enumerate(runs)]


def _one_run(spec: dict[str, Any], cfg: SweepConfig, rows, log: bool) -> dict[str, Any]:
    """Load a fresh base model, set up one method, train, evaluate; returns a JSON-ready record."""
    import peft

    from course_utils.models import count_parameters, load_model

    model, tok = load_model(cfg.base)
    total = count_parameters(model)
    loss_fn, soft, net, disable = None, None, model, None
    if spec["method"] == "full":
        params = list(model.parameters())
    elif spec["method"] == "bitfit":
        for name, p in model.named_parameters():
            p.requires_grad_(name.endswith(".bias"))
        params = [p for p in model.parameters() if p.requires_grad]
    elif spec["method"] == "lora":
        config = peft.LoraConfig(r=spec["r"], lora_alpha=spec["alpha"], target_modules=TARGETS[spec["target"]],
                                 fan_in_fan_out=True, lora_dropout=0.0, bias="none")
        pm = peft.get_peft_model(model, config)
        net, disable = pm.get_base_model(), pm.disable_adapter
        params = [p for p in pm.parameters() if p.requires_grad]
    else:
        config = peft.PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=spec["n_virtual_tokens"],
                                         prompt_tuning_init=peft.PromptTuningInit.TEXT,
                                         prompt_tuning_init_text="Summarize the dialogue:",
                                         tokenizer_name_or_path=str(tok.name_or_path))
        pm = peft.get_peft_model(model, config)
        net, soft = pm.get_base_model(), _PeftPrompt(pm)
        params = [p for p in pm.parameters() if p.requires_grad]
        loss_fn = lambda _m, ids, labels, mask: pm(input_ids=ids, attention_mask=mask, labels=labels).loss  # noqa: E731
    train_log = fine_tune(net, rows, params, steps=cfg.steps, lr=spec["lr"], batch_size=cfg.batch_size,
                          seed=cfg.seed, pad_id=tok.eos_token_id, loss_fn=loss_fn, log_every=100 if log else 0)
    ev = evaluate_summaries(net, tok, cfg.n_eval, soft_prompt=soft)
    rec = dict(spec, trainable_params=train_log.trainable, total_params=total, share=train_log.trainable / total,
               seconds=round(train_log.seconds, 2), cpu_seconds=round(train_log.cpu_seconds, 2),
               cpu_per_step=round(train_log.cpu_seconds / cfg.steps, 4), optimizer_bytes=train_log.optimizer_bytes,
               rougeL=round(ev["rougeL"], 4),
               story_ppl_after=round(story_perplexity(net, tok, cfg.n_stories, soft_prompt=soft), 4),
               losses=[round(x, 4) for x in train_log.losses[:: max(1, cfg.steps // 50)]],
               example=ev["predictions"][0])
    if disable is not None:
        with disable():
            rec["story_ppl_adapter_removed"] = round(story_perplexity(net, tok, cfg.n_stories), 4)
    elif spec["method"] == "prompt":  # the frozen model, no prompt in front
        rec["story_ppl_adapter_removed"] = round(story_perplexity(net, tok, cfg.n_stories), 4)
    return rec


def _cpu_name() -> str:
    """The CPU model (Linux ``/proc/cpuinfo``), else whatever ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def run_sweep(cfg: SweepConfig | None = None, out: Path | None = SWEEP_PATH, only: str | None = None,
              part: tuple[int, int] = (0, 1), log: bool = True) -> dict[str, Any]:
    """Train every method of :func:`_methods` with one recipe and write the JSON the notebook shows.

    ``only`` keeps runs whose name contains it (e.g. ``"r=8"``); ``part=(i, n)`` runs every n-th run from
    the i-th, so n processes can share the work (combine their files with :func:`merge_sweeps`).
    """
    from course_utils.models import load_model

    cfg = cfg or SweepConfig()
    t0 = time.perf_counter()
    model, tok = load_model(cfg.base)
    rows = encode_pairs(tok, summary_pairs(FINETUNE_SEED, cfg.n_train))
    before = evaluate_summaries(model, tok, cfg.n_eval)
    baseline = dict(rougeL=round(before["rougeL"], 4), story_ppl=round(story_perplexity(model, tok, cfg.n_stories), 4),
                    example=before["predictions"][0], reference=before["references"][0])
    runs = []
    for spec in _methods(cfg)[part[0]::part[1]]:
        if only and only not in spec["name"]:
            continue
        runs.append(_one_run(spec, cfg, rows, log))
        if log:
            r = runs[-1]
            print(f"{r['name']:<36} ROUGE-L {r['rougeL']:.3f}  story ppl {r['story_ppl_after']:.3f}  "
                  f"trainable {r['trainable_params']:>7,}  {r['cpu_seconds']:.0f} CPU s", flush=True)
    result = dict(
        settings=dict(asdict(cfg), ranks={k: list(v) for k, v in cfg.ranks.items()},
                      targets={k: TARGETS[k] for k in cfg.ranks}, train_seed=FINETUNE_SEED,
                      eval_seed=world.HELD_OUT_SEED, optimizer="AdamW betas (0.9, 0.95), 10 % warm-up, clip 1.0",
                      torch=torch.__version__, threads=torch.get_num_threads(), machine=platform.machine(),
                      cpu=_cpu_name(), cpu_count=os.cpu_count(), python=platform.python_version(),
                      command="python -m course_utils.finetuning --sweep",
                      load_average_at_end=round(os.getloadavg()[0], 1), date=time.strftime("%Y-%m-%d")),
        baseline=baseline, runs=runs, sweep_seconds=round(time.perf_counter() - t0, 1))
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=1) + "\n")
    return result


def merge_sweeps(paths: Sequence[Path], out: Path | None = SWEEP_PATH) -> dict[str, Any]:
    """Combine the files of a sweep run in parts (same settings) into one, runs in their fixed order."""
    parts = [json.loads(Path(p).read_text()) for p in paths]
    merged = dict(parts[0], runs=sorted((r for p in parts for r in p["runs"]), key=lambda r: r["index"]),
                  sweep_seconds=max(p["sweep_seconds"] for p in parts), parallel_parts=len(parts))
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(merged, indent=1) + "\n")
    return merged


def load_sweep(path: Path = SWEEP_PATH) -> dict[str, Any]:
    """The cached sweep written by ``python -m course_utils.finetuning --sweep``."""
    if not path.is_file():
        raise FileNotFoundError(f"no cached sweep at {path}: run `python -m course_utils.finetuning --sweep`")
    return json.loads(path.read_text())


def sweep_table(sweep: dict[str, Any], names: Sequence[str] | None = None) -> str:
    """A markdown table: method -> trainable parameters, training CPU seconds, ROUGE-L, story perplexity."""
    b = sweep["baseline"]
    lines = ["| method | PEFT class | trainable params | share | train CPU s | ROUGE-L | story ppl, task mode "
             "| story ppl, adapter removed |", "|---|---|---:|---:|---:|---:|---:|---:|",
             f"| tiny-base, no tuning | - | 0 | 0 % | 0 | {b['rougeL']:.2f} | {b['story_ppl']:.2f} | - |"]
    for r in sweep["runs"]:
        if names is not None and r["name"] not in names:
            continue
        removed = r.get("story_ppl_adapter_removed")
        share = f"{100 * r['share']:.0f} %" if r["share"] >= 0.1 else f"{100 * r['share']:.2g} %"
        lines.append(f"| {r['name']} | {r['peft_class']} | {r['trainable_params']:,} | {share} | "
                     f"{r['cpu_seconds']:.0f} | {r['rougeL']:.2f} | {r['story_ppl_after']:.2f} | "
                     f"{'-' if removed is None else f'{removed:.2f}'} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m course_utils.finetuning", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sweep", action="store_true", help="run the full comparison and write the JSON")
    parser.add_argument("--quick", action="store_true", help="a few steps, few ranks (for tests); needs --out")
    parser.add_argument("--only", default=None, help="run only methods whose name contains this")
    parser.add_argument("--part", default="0/1", help="I/N: run every N-th run from the I-th (parallel parts)")
    parser.add_argument("--merge", nargs="+", type=Path, help="combine the JSON files of parts into --out")
    parser.add_argument("--out", type=Path, default=SWEEP_PATH)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: steady timings on a busy machine)")
    args = parser.parse_args(argv)
    if args.merge:
        merge_sweeps(args.merge, args.out)
        print(f"merged {len(args.merge)} parts -> {args.out}")
        return 0
    if not args.sweep:
        parser.print_help()
        return 0
    if args.quick and args.out.resolve() == SWEEP_PATH.resolve():
        parser.error("--quick would overwrite the cached sweep: give --out FILE")
    i, n = (int(x) for x in args.part.split("/"))
    torch.set_num_threads(args.threads)
    cfg = (SweepConfig(steps=4, n_train=40, n_eval=4, n_stories=4, ranks={"all-linear": (1, 4), "c_attn": (2,)})
           if args.quick else SweepConfig())
    result = run_sweep(cfg, args.out, only=args.only, part=(i, n))
    print(f"sweep done in {result['sweep_seconds']:.0f} s -> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
