"""Re-create the bundled models: tokenizer, ``tiny-base`` (pre-trained) and ``tiny-instruct`` (instruction-tuned).

    python -m course_utils.train                 # both models into course_utils/assets (about 10 min on 2 cores)
    python -m course_utils.train --quick --out /tmp/m   # a few steps, for the tests
    make models                                  # the same as the first line

Everything is seeded: the corpus comes from :mod:`course_utils.world`, the tokenizer is trained on it, and the
models are trained with fixed seeds, so a re-run gives the same weights up to floating-point thread effects.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable, Sequence

import torch

from course_utils import world
from course_utils.models import ASSETS_DIR, BUNDLED_MODELS

BLOCK_SIZE = 256


@dataclass
class TrainConfig:
    """Hyper-parameters of one training stage (defaults: the bundled tiny-base)."""
    steps: int = 1500
    batch_size: int = 16
    lr: float = 2e-3
    warmup: int = 100
    weight_decay: float = 0.05
    seed: int = 0
    n_documents: int = 12_000


MODEL_SHAPE = dict(n_layer=4, n_embd=128, n_head=4, n_positions=BLOCK_SIZE)


# ----------------------------------------------------------------------------------------------
# Tokenizer


def build_tokenizer(texts: list[str], vocab_size: int = 2048):
    """A byte-level BPE tokenizer (HF ``tokenizers``) wrapped as a transformers fast tokenizer.

    Byte-level means any text can be encoded (no unknown tokens), like GPT-2's tokenizer.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[world.EOS],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=world.EOS, eos_token=world.EOS,
                                   unk_token=world.EOS, pad_token=world.EOS, model_max_length=BLOCK_SIZE)


# ----------------------------------------------------------------------------------------------
# Data


def _blocks(tokenizer, docs: list[str]) -> torch.Tensor:
    """Concatenate documents (each followed by EOS) and cut into rows of BLOCK_SIZE + 1 tokens."""
    ids: list[int] = []
    for doc in docs:
        ids.extend(tokenizer(doc)["input_ids"])
        ids.append(tokenizer.eos_token_id)
    n = len(ids) // (BLOCK_SIZE + 1)
    return torch.tensor(ids[: n * (BLOCK_SIZE + 1)]).view(n, BLOCK_SIZE + 1)  # (N, T+1)


def encode_pair(tokenizer, prompt: str, completion: str, max_len: int = BLOCK_SIZE) -> tuple[list[int], list[int]]:
    """Token ids of prompt + completion + EOS, and labels that are ``-100`` over the prompt.

    The loss is then computed on the completion only: the model learns to *answer*, not to re-write
    the instruction. (``-100`` is the ``ignore_index`` of PyTorch's cross-entropy.)
    """
    p = tokenizer(prompt)["input_ids"]
    c = tokenizer(completion)["input_ids"] + [tokenizer.eos_token_id]
    return (p + c)[:max_len], ([-100] * len(p) + c)[:max_len]


def encode_pairs(tokenizer, pairs: Iterable[tuple[str, str]], max_len: int = BLOCK_SIZE
                 ) -> list[tuple[list[int], list[int]]]:
    """:func:`encode_pair` for every (prompt, completion) pair."""
    return [encode_pair(tokenizer, p, c, max_len) for p, c in pairs]


def collate(rows: Sequence[tuple[list[int], list[int]]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-pad rows into ``input_ids`` (B, T), ``labels`` (B, T) with -100 on padding, ``attention_mask`` (B, T)."""
    if not rows:
        raise ValueError("collate() got no rows: pass at least one (ids, labels) pair")
    width = max(len(ids) for ids, _ in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), width), -100, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, (x, y) in enumerate(rows):
        ids[i, : len(x)] = torch.tensor(x)
        labels[i, : len(y)] = torch.tensor(y)
        mask[i, : len(x)] = 1
    return ids, labels, mask


# ----------------------------------------------------------------------------------------------
# Training loops


def _optimizer_step(model, opt, sched, loss: torch.Tensor) -> None:
    """One update: backward, clip the gradient norm to 1, step the optimizer and the learning-rate schedule."""
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    sched.step()


def _schedule(step: int, cfg: TrainConfig) -> float:
    """Linear warm-up, then cosine decay to 10 % of the peak learning rate."""
    if step < cfg.warmup:
        return (step + 1) / cfg.warmup
    progress = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))


def _optimizer(model, cfg: TrainConfig) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr, betas=(0.9, 0.95))
    return opt, torch.optim.lr_scheduler.LambdaLR(opt, lambda s: _schedule(s, cfg))


def pretrain(tokenizer, cfg: TrainConfig, log_every: int = 100):
    """Train a GPT-2-architecture model from scratch on the world's pre-training corpus."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(cfg.seed)
    blocks = _blocks(tokenizer, world.pretraining_documents(world.TRAIN_SEED, cfg.n_documents))
    config = GPT2Config(vocab_size=len(tokenizer), bos_token_id=tokenizer.eos_token_id,
                        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.eos_token_id,
                        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, **MODEL_SHAPE)
    model = GPT2LMHeadModel(config)
    opt, sched = _optimizer(model, cfg)
    gen = torch.Generator().manual_seed(cfg.seed)
    model.train()
    for step in range(cfg.steps):
        rows = blocks[torch.randint(len(blocks), (cfg.batch_size,), generator=gen)]  # (B, T+1)
        loss = model(input_ids=rows[:, :-1], labels=rows[:, :-1]).loss
        _optimizer_step(model, opt, sched, loss)
        if log_every and (step % log_every == 0 or step == cfg.steps - 1):
            print(f"  pretrain step {step:5d}  loss {loss.item():.3f}", flush=True)
    model.eval()
    return model


def instruction_tune(model, tokenizer, cfg: TrainConfig, log_every: int = 100):
    """Multi-task instruction tuning (FLAN-style) with 25 % plain text mixed in against forgetting."""
    torch.manual_seed(cfg.seed)
    rng = random.Random(cfg.seed)
    pairs = world.instructions(world.INSTRUCT_SEED, cfg.n_documents)
    rows = encode_pairs(tokenizer, pairs)
    plain = [(ids, ids) for ids in (tokenizer(d)["input_ids"][:BLOCK_SIZE]
                                    for d in world.pretraining_documents(world.INSTRUCT_SEED + 100,
                                                                         cfg.n_documents // 3))]
    opt, sched = _optimizer(model, cfg)
    model.train()
    for step in range(cfg.steps):
        batch = [rng.choice(plain) if rng.random() < 0.25 else rng.choice(rows) for _ in range(cfg.batch_size)]
        ids, labels, mask = collate(batch, tokenizer.pad_token_id)
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        _optimizer_step(model, opt, sched, loss)
        if log_every and (step % log_every == 0 or step == cfg.steps - 1):
            print(f"  instruct step {step:5d}  loss {loss.item():.3f}", flush=True)
    model.eval()
    return model


# ----------------------------------------------------------------------------------------------
# Evaluation for the model cards


@torch.no_grad()
def perplexity(model, tokenizer, texts: list[str]) -> float:
    """Token-level perplexity of ``texts`` (each scored on its own, EOS appended)."""
    total_nll, total_tokens = 0.0, 0
    for text in texts:
        ids = torch.tensor([tokenizer(text)["input_ids"][: BLOCK_SIZE - 1] + [tokenizer.eos_token_id]])
        out = model(input_ids=ids, labels=ids)
        n = ids.shape[1] - 1
        total_nll += out.loss.item() * n
        total_tokens += n
    return math.exp(total_nll / total_tokens)


@torch.no_grad()
def greedy_completion(model, tokenizer, prompt: str, max_new_tokens: int = 48) -> str:
    """The model's greedy continuation of ``prompt``, cut at the first EOS or blank line."""
    ids = tokenizer(prompt, return_tensors="pt")
    out = model.generate(**ids, max_new_tokens=max_new_tokens, do_sample=False,
                         pad_token_id=tokenizer.eos_token_id)
    text = tokenizer.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)
    return text.split("\n")[0].strip()


def evaluate(model, tokenizer, n: int = 50) -> dict:
    """Held-out perplexity per document kind, summary ROUGE-L and sentiment accuracy on seed HELD_OUT_SEED."""
    from rouge_score import rouge_scorer

    seed = world.HELD_OUT_SEED
    scorer = rouge_scorer.RougeScorer(["rougeL"])
    dialogues = world.dialogues(seed, n)
    summaries = [greedy_completion(model, tokenizer, world.summarize_prompt(d.text)) for d in dialogues]
    rouge = sum(scorer.score(d.summary, s)["rougeL"].fmeasure for d, s in zip(dialogues, summaries)) / n
    reviews = world.reviews(seed, n)
    answers = [greedy_completion(model, tokenizer, world.classify_prompt(r.text), 3) for r in reviews]
    accuracy = sum(a.split()[:1] == [r.label] for a, r in zip(answers, reviews)) / n
    return {
        "heldout_perplexity": round(perplexity(model, tokenizer,
                                               world.pretraining_documents(seed, 200)), 3),
        "story_perplexity": round(perplexity(model, tokenizer, world.stories(seed, 100)), 3),
        "dialogue_perplexity": round(perplexity(model, tokenizer, [d.text for d in dialogues]), 3),
        "summary_rougeL": round(rouge, 3),
        "sentiment_accuracy": round(accuracy, 3),
        "example_summary": {"dialogue": dialogues[0].text, "reference": dialogues[0].summary,
                            "model": summaries[0]},
    }


def samples(model, tokenizer) -> dict[str, str]:
    """Greedy continuations of a story, dialogue and review start, for the model card."""
    starts = {"story": "Once upon a time, there was a little fox named",
              "dialogue": "#Person1#: Hello, I am looking for",
              "review": "Review: I bought this lamp last Monday."}
    return {k: s + " " + greedy_completion(model, tokenizer, s, 40) for k, s in starts.items()}


# ----------------------------------------------------------------------------------------------
# Saving


def save_model(model, tokenizer, out_dir: Path, card: dict) -> None:
    """Weights as safetensors, config, tokenizer and a model card (README.md + metrics.json)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    model.generation_config.pad_token_id = tokenizer.eos_token_id
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    (out_dir / "metrics.json").write_text(json.dumps(card, indent=2, ensure_ascii=False) + "\n")
    m = card["metrics"]
    lines = [
        f"# {card['name']}", "", card["description"], "",
        "| what | value |", "|---|---|",
        f"| architecture | GPT-2 (transformers `GPT2LMHeadModel`), {MODEL_SHAPE['n_layer']} layers, "
        f"d_model {MODEL_SHAPE['n_embd']}, {MODEL_SHAPE['n_head']} heads, context {BLOCK_SIZE} |",
        f"| parameters | {card['parameters']:,} |",
        f"| tokenizer | byte-level BPE, {card['vocab_size']} tokens |",
        f"| training data | {card['data']} |",
        f"| training | {card['config']['steps']} steps x batch {card['config']['batch_size']}, "
        f"lr {card['config']['lr']}, {card['train_seconds']:.0f} s on {card['threads']} CPU threads |",
        f"| held-out perplexity (seed {world.HELD_OUT_SEED}, mixed documents) | {m['heldout_perplexity']} |",
        f"| held-out story perplexity | {m['story_perplexity']} |",
        f"| dialogue-summary ROUGE-L (50 held-out dialogues, greedy) | {m['summary_rougeL']} |",
        f"| review sentiment accuracy (50 held-out reviews, instruction prompt) | {m['sentiment_accuracy']} |",
        "", "## Samples (greedy)", "",
        *[f"- **{k}**: {v}" for k, v in card["samples"].items()],
        "", "## Summary example", "",
        f"- dialogue: {m['example_summary']['dialogue']}",
        f"- reference: {m['example_summary']['reference']}",
        f"- model: {m['example_summary']['model']}",
        "", "Re-create with `make models` (`python -m course_utils.train`).", "",
    ]
    (out_dir / "README.md").write_text("\n".join(lines))
    for f in out_dir.iterdir():  # safetensors writes 0600; the files must be readable by every user
        f.chmod(0o644)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m course_utils.train", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a few steps on a small corpus (for tests)")
    parser.add_argument("--out", type=Path, default=ASSETS_DIR, help="where to write the models")
    parser.add_argument("--base-steps", type=int, default=None)
    parser.add_argument("--instruct-steps", type=int, default=None)
    args = parser.parse_args(argv)
    if args.out.resolve() == ASSETS_DIR.resolve() and args.quick:
        parser.error("--quick would overwrite the bundled models: give --out DIR")

    torch.set_num_threads(min(2, torch.get_num_threads()))
    base_cfg = TrainConfig(steps=20, n_documents=400, warmup=5) if args.quick else TrainConfig()
    inst_cfg = (TrainConfig(steps=10, n_documents=200, warmup=2, lr=1e-3) if args.quick
                else TrainConfig(steps=800, lr=1e-3, warmup=50, n_documents=20_000))
    base_cfg.steps = args.base_steps or base_cfg.steps
    inst_cfg.steps = args.instruct_steps or inst_cfg.steps
    n_eval = 5 if args.quick else 50

    t0 = time.perf_counter()
    tokenizer = build_tokenizer(world.pretraining_documents(world.TRAIN_SEED, 4000 if not args.quick else 400)
                                + [p + c for p, c in world.instructions(world.INSTRUCT_SEED, 2000)])
    print(f"tokenizer: {len(tokenizer)} tokens", flush=True)

    common = dict(vocab_size=len(tokenizer), threads=torch.get_num_threads())
    t = time.perf_counter()
    base = pretrain(tokenizer, base_cfg)
    base_seconds = time.perf_counter() - t
    card = dict(name="tiny-base", description=BUNDLED_MODELS["tiny-base"], parameters=base.num_parameters(),
                data=f"{base_cfg.n_documents} world documents (seed {world.TRAIN_SEED}): stories, dialogues "
                     "without summaries, review pages", config=asdict(base_cfg), train_seconds=base_seconds,
                metrics=evaluate(base, tokenizer, n_eval), samples=samples(base, tokenizer), **common)
    save_model(base, tokenizer, args.out / "tiny-base", card)
    print(json.dumps(card["metrics"], indent=1), flush=True)

    t = time.perf_counter()
    inst = instruction_tune(base, tokenizer, inst_cfg)
    inst_seconds = time.perf_counter() - t
    card = dict(name="tiny-instruct", description=BUNDLED_MODELS["tiny-instruct"],
                parameters=inst.num_parameters(),
                data=f"tiny-base + {inst_cfg.n_documents} instruction pairs (seed {world.INSTRUCT_SEED}: "
                     "summarize, classify, continue, write a review) with 25 % plain text",
                config=asdict(inst_cfg), train_seconds=inst_seconds, metrics=evaluate(inst, tokenizer, n_eval),
                samples=samples(inst, tokenizer), **common)
    save_model(inst, tokenizer, args.out / "tiny-instruct", card)
    print(json.dumps(card["metrics"], indent=1), flush=True)
    print(f"done in {time.perf_counter() - t0:.0f} s -> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
