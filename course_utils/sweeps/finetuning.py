"""The cached comparison of notebook 3: full fine-tuning, BitFit, LoRA and prompt tuning, with one recipe.

Training 21 models (17 on summaries, 4 on steering) does not fit a notebook's time budget, so the comparison is run once and cached in
``assets/finetuning/sweep.json`` together with its settings and the machine it ran on. It uses the ``peft``
library (LoRA, prompt tuning), so it holds none of the notebook's answers.
``python -m course_utils.sweeps.finetuning --sweep`` (or ``python -m course_utils.finetuning --sweep``)
re-creates it: about 13 minutes on one CPU thread (21 runs), or less with ``--part I/N`` processes and ``--merge``.

    >>> from course_utils.sweeps import finetuning as finetuning_sweep
    >>> [m["name"] for m in finetuning_sweep.methods(finetuning_sweep.SweepConfig())][:2]
    ['full fine-tuning', 'BitFit (biases only)']
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from course_utils import world
from course_utils.finetuning import (FINETUNE_SEED, TARGETS, evaluate_steering, evaluate_summaries, fine_tune,
                                     steer_pairs, story_perplexity, summary_pairs)
from course_utils.train import encode_pairs

SWEEP_PATH = Path(__file__).resolve().parents[1] / "assets" / "finetuning" / "sweep.json"
SWEEP_COMMAND = "python -m course_utils.finetuning --sweep"  # as recorded in the cached file's settings




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
    steer_steps: int = 200  # the second task: steer tiny-base's reviews positive (style, not a new skill)
    steer_n_eval: int = 100
    steer_prompt_init: str = "Write a positive review:"


class _PeftPrompt(nn.Module):
    """Adapts a peft prompt-tuning model to this module's soft-prompt interface (B, T, d) -> (B, n + T, d)."""

    def __init__(self, peft_model: nn.Module) -> None:
        super().__init__()
        self.peft_model = peft_model

    def forward(self, embeds: torch.Tensor) -> torch.Tensor:
        prompt = self.peft_model.get_prompt(embeds.shape[0]).to(embeds.dtype)  # (B, n, d)
        return torch.cat([prompt, embeds], dim=1)


def methods(cfg: SweepConfig) -> list[dict[str, Any]]:
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


def steer_methods(cfg: SweepConfig) -> list[dict[str, Any]]:
    """The runs of the steering task (same learning rates per family as the summary task)."""
    runs = [dict(name="full fine-tuning", method="full", peft_class="none (all weights)", lr=cfg.lr_full),
            dict(name="LoRA all-linear r=4", method="lora", peft_class="reparameterization", target="all-linear", r=4,
                 alpha=cfg.lora_alpha_over_r * 4, lr=cfg.lr_lora)]
    runs += [dict(name=f"prompt tuning ({n} virtual tokens)", method="prompt", peft_class="additive",
                  n_virtual_tokens=n, lr=cfg.lr_prompt) for n in (cfg.n_virtual_tokens, cfg.more_virtual_tokens)]
    return [dict(spec, index=i, task="steer") for i, spec in enumerate(runs)]


def _one_run(spec: dict[str, Any], cfg: SweepConfig, rows, log: bool) -> dict[str, Any]:
    """Load a fresh base model, set up one method, train, evaluate; returns a JSON-ready record."""
    import peft

    from course_utils.models import count_parameters, load_model

    model, tok = load_model(cfg.base)
    total = count_parameters(model)
    loss_fn, soft, net, disable = None, None, model, None
    steer = spec.get("task") == "steer"
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
                                         prompt_tuning_init_text=cfg.steer_prompt_init if steer
                                         else "Summarize the dialogue:",
                                         tokenizer_name_or_path=str(tok.name_or_path))
        pm = peft.get_peft_model(model, config)
        net, soft = pm.get_base_model(), _PeftPrompt(pm)
        params = [p for p in pm.parameters() if p.requires_grad]
        loss_fn = lambda _m, ids, labels, mask: pm(input_ids=ids, attention_mask=mask, labels=labels).loss  # noqa: E731
    steps = cfg.steer_steps if steer else cfg.steps
    train_log = fine_tune(net, rows, params, steps=steps, lr=spec["lr"], batch_size=cfg.batch_size,
                          seed=cfg.seed, pad_id=tok.eos_token_id, loss_fn=loss_fn, log_every=100 if log else 0)
    if steer:
        ev = evaluate_steering(net, tok, cfg.steer_n_eval, soft_prompt=soft)
        quality = dict(positive_share=round(ev["positive_share"], 4), mean_sentiment=round(ev["mean_sentiment"], 4))
    else:
        ev = evaluate_summaries(net, tok, cfg.n_eval, soft_prompt=soft)
        quality = dict(rougeL=round(ev["rougeL"], 4))
    rec = dict(spec, trainable_params=train_log.trainable, total_params=total, share=train_log.trainable / total,
               seconds=round(train_log.seconds, 2), cpu_seconds=round(train_log.cpu_seconds, 2),
               cpu_per_step=round(train_log.cpu_seconds / steps, 4), optimizer_bytes=train_log.optimizer_bytes,
               **quality, story_ppl_after=round(story_perplexity(net, tok, cfg.n_stories, soft_prompt=soft), 4),
               losses=[round(x, 4) for x in train_log.losses[:: max(1, steps // 50)]],
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
    """Train every method of :func:`methods` (summaries) and :func:`steer_methods` (positive reviews) with one
    recipe and write the JSON the notebook shows.

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
    steer_rows = encode_pairs(tok, steer_pairs(FINETUNE_SEED, cfg.n_train))
    before = evaluate_steering(model, tok, cfg.steer_n_eval)
    steer_baseline = dict(positive_share=round(before["positive_share"], 4),
                          mean_sentiment=round(before["mean_sentiment"], 4), example=before["predictions"][0])
    runs, steer_runs = [], []
    every = methods(cfg) + steer_methods(cfg)  # one list, so that --part shares both tasks' runs out
    for spec in every[part[0]::part[1]]:
        if only and only not in spec["name"]:
            continue
        steer = spec.get("task") == "steer"
        (steer_runs if steer else runs).append(_one_run(spec, cfg, steer_rows if steer else rows, log))
        if log:
            r = (steer_runs if steer else runs)[-1]
            quality = f"positive {r['positive_share']:.2f}" if steer else f"ROUGE-L {r['rougeL']:.3f}"
            print(f"{r.get('task', 'summary'):<8}{r['name']:<36} {quality}  story ppl {r['story_ppl_after']:.3f}  "
                  f"trainable {r['trainable_params']:>7,}  {r['cpu_seconds']:.0f} CPU s", flush=True)
    result = dict(
        settings=dict(asdict(cfg), ranks={k: list(v) for k, v in cfg.ranks.items()},
                      targets={k: TARGETS[k] for k in cfg.ranks}, train_seed=FINETUNE_SEED,
                      eval_seed=world.HELD_OUT_SEED, optimizer="AdamW betas (0.9, 0.95), 10 % warm-up, clip 1.0",
                      torch=torch.__version__, threads=torch.get_num_threads(), machine=platform.machine(),
                      cpu=_cpu_name(), cpu_count=os.cpu_count(), python=platform.python_version(),
                      command=SWEEP_COMMAND,
                      load_average_at_end=round(os.getloadavg()[0], 1), date=time.strftime("%Y-%m-%d")),
        baseline=baseline, runs=runs, steering=dict(baseline=steer_baseline, runs=steer_runs),
        sweep_seconds=round(time.perf_counter() - t0, 1))
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=1) + "\n")
    return result


def merge_sweeps(paths: Sequence[Path], out: Path | None = SWEEP_PATH) -> dict[str, Any]:
    """Combine the files of a sweep run in parts (same settings) into one, runs in their fixed order."""
    parts = [json.loads(Path(p).read_text()) for p in paths]
    merged = dict(parts[0], runs=sorted((r for p in parts for r in p["runs"]), key=lambda r: r["index"]),
                  sweep_seconds=max(p["sweep_seconds"] for p in parts), parallel_parts=len(parts))
    if all("steering" in p for p in parts):
        merged["steering"] = dict(parts[0]["steering"], runs=sorted(
            (r for p in parts for r in p["steering"]["runs"]), key=lambda r: r["index"]))
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(merged, indent=1) + "\n")
    return merged


def load_sweep(path: Path = SWEEP_PATH) -> dict[str, Any]:
    """The cached sweep (see the module docstring for how it is made)."""
    if not path.is_file():
        raise FileNotFoundError(f"no cached sweep at {path}: run `{SWEEP_COMMAND}`")
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


def steer_table(sweep: dict[str, Any]) -> str:
    """A markdown table of the steering task: method -> trainable parameters, share of positive reviews."""
    st = sweep["steering"]
    b = st["baseline"]
    lines = ["| method | trainable params | train CPU s | reads positive | mean sentiment | story ppl, task mode "
             "| story ppl, adapter removed |", "|---|---:|---:|---:|---:|---:|---:|",
             f"| tiny-base, no tuning | 0 | 0 | {b['positive_share']:.0%} | {b['mean_sentiment']:.2f} | "
             f"{sweep['baseline']['story_ppl']:.2f} | - |"]
    for r in st["runs"]:
        removed = r.get("story_ppl_adapter_removed")
        lines.append(f"| {r['name']} | {r['trainable_params']:,} | {r['cpu_seconds']:.0f} | {r['positive_share']:.0%} | "
                     f"{r['mean_sentiment']:.2f} | {r['story_ppl_after']:.2f} | "
                     f"{'-' if removed is None else f'{removed:.2f}'} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m course_utils.sweeps.finetuning", description=__doc__,
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
    cfg = (SweepConfig(steps=4, n_train=40, n_eval=4, n_stories=4, ranks={"all-linear": (1, 4), "c_attn": (2,)},
                       steer_steps=4, steer_n_eval=4)
           if args.quick else SweepConfig())
    result = run_sweep(cfg, args.out, only=args.only, part=(i, n))
    print(f"sweep done in {result['sweep_seconds']:.0f} s -> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
