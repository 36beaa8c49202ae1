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
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Iterable, Sequence

import torch

from course_utils import world
from course_utils.models import ASSETS_DIR, BUNDLED_MODELS
from course_utils.train_data import attention_loss, copy_batch, fourier_positions

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
    sorting_pages: int = 0  # extra documents: sorting pages with fresh box names (world.make_sorting_page)
    copy_rows: int = 0  # copy rows per step while there is no text yet (train_data.copy_row)
    copy_rows_with_text: int = 0  # copy rows per step next to batch_size rows of text (keeps the skill in use)
    copy_width: int = 64  # tokens per copy row (short rows: cheap)
    copy_only_steps: int = 0  # steps at the start with copy rows only, no text: the copying heads form first
    attention_weight: float = 0.0  # weight of train_data.attention_loss on copy rows (0: next-token loss only)
    positions: str = "learned"  # "fourier": wpe starts as train_data.fourier_positions (and stays: frozen)
    init_range: float = 0.02  # std of the initial weights (GPT-2's initializer_range)
    probe_every: int = 0  # record copy ratio, induction score and fresh-label accuracy every N steps (0: never)


MODEL_SHAPE = dict(n_layer=4, n_embd=128, n_head=4, n_positions=BLOCK_SIZE)

# The bundled tiny-base: copy rows first (with attention targets for two heads), then world text with sorting
# pages and copy rows, fixed Fourier positions. See course_utils.train_data for why, the model card for the curve.
BASE_RECIPE = TrainConfig(steps=3000, batch_size=12, lr=1e-3, warmup=100, weight_decay=0.01, n_documents=20_000,
                          sorting_pages=15_000, copy_rows=32, copy_rows_with_text=8, copy_width=64, copy_only_steps=800,
                          attention_weight=0.3, positions="fourier", probe_every=100)
# tiny-instruct: tiny-base + instruction pairs, with plain text (and sorting pages) and copy rows mixed in.
INSTRUCT_RECIPE = TrainConfig(steps=800, lr=1e-3, warmup=50, n_documents=20_000, sorting_pages=2000,
                              copy_rows_with_text=8, attention_weight=0.3)


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
    trainable = [p for p in model.parameters() if p.requires_grad]  # fixed position vectors are not trained
    decay = [p for p in trainable if p.dim() >= 2]
    no_decay = [p for p in trainable if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr, betas=(0.9, 0.95))
    return opt, torch.optim.lr_scheduler.LambdaLR(opt, lambda s: _schedule(s, cfg))


def new_model(tokenizer, cfg: TrainConfig):
    """A freshly initialised GPT-2 of :data:`MODEL_SHAPE` (``cfg.positions="fourier"``: fixed position vectors)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(vocab_size=len(tokenizer), bos_token_id=tokenizer.eos_token_id,
                        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.eos_token_id,
                        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, initializer_range=cfg.init_range,
                        **MODEL_SHAPE)
    model = GPT2LMHeadModel(config)
    if cfg.positions == "fourier":
        with torch.no_grad():
            model.transformer.wpe.weight.copy_(fourier_positions(config.n_positions, config.n_embd))
        model.transformer.wpe.weight.requires_grad_(False)
    elif cfg.positions != "learned":
        raise ValueError(f"positions must be 'learned' or 'fourier', got {cfg.positions!r}")
    return model


def pretraining_text(cfg: TrainConfig) -> list[str]:
    """The world documents of pre-training (:func:`world.pretraining_documents`) with ``cfg.sorting_pages`` label
    pages shuffled in (seeded)."""
    docs = world.pretraining_documents(world.TRAIN_SEED, cfg.n_documents)
    if cfg.sorting_pages:
        docs = docs + world.sorting_pages(world.TRAIN_SEED + 10, cfg.sorting_pages)
        random.Random(cfg.seed).shuffle(docs)
    return docs


def copy_rows_loss(model, gen: torch.Generator, n_rows: int, cfg: TrainConfig, vocab_size: int) -> torch.Tensor:
    """Next-token loss on ``n_rows`` fresh copy rows, plus ``cfg.attention_weight`` times the two heads'
    attention loss (:func:`course_utils.train_data.attention_loss`; needs eager attention for the weights)."""
    ids = copy_batch(gen, n_rows, cfg.copy_width, vocab_size)  # (C, W)
    if not cfg.attention_weight:
        return model(input_ids=ids, labels=ids).loss
    model.set_attn_implementation("eager")
    try:
        out = model(input_ids=ids, labels=ids, output_attentions=True)
    finally:
        model.set_attn_implementation("sdpa")
    return out.loss + cfg.attention_weight * attention_loss(out.attentions, ids)


def pretrain(tokenizer, cfg: TrainConfig, log_every: int = 100, curve: list | None = None):
    """Train a GPT-2-architecture model from scratch: world text, label pages and copy rows.

    ``curve``: a list to append :func:`course_utils.model_card.probe` records to (every ``cfg.probe_every`` steps).
    """
    from course_utils import model_card

    torch.manual_seed(cfg.seed)
    blocks = _blocks(tokenizer, pretraining_text(cfg))
    model = new_model(tokenizer, cfg)
    opt, sched = _optimizer(model, cfg)
    gen = torch.Generator().manual_seed(cfg.seed)
    losses: list[float] = []
    model.train()
    for step in range(cfg.steps + 1):
        if cfg.probe_every and curve is not None and step % cfg.probe_every == 0:
            rec = dict(step=step, train_loss=round(sum(losses) / len(losses), 3) if losses else None,
                       **model_card.probe(model, tokenizer))
            curve.append(rec)
            losses.clear()
            print("  probe", json.dumps(rec), flush=True)
        if step == cfg.steps:
            break
        if step < cfg.copy_only_steps:
            loss = copy_rows_loss(model, gen, cfg.copy_rows, cfg, len(tokenizer))
        else:
            rows = blocks[torch.randint(len(blocks), (cfg.batch_size,), generator=gen)]  # (B, T+1)
            loss = model(input_ids=rows[:, :-1], labels=rows[:, :-1]).loss
            if cfg.copy_rows_with_text:  # one step, two shapes: weighted by their numbers of tokens
                n_text, n_copy = rows[:, :-1].numel(), cfg.copy_rows_with_text * cfg.copy_width
                copy_loss = copy_rows_loss(model, gen, cfg.copy_rows_with_text, cfg, len(tokenizer))
                loss = (n_text * loss + n_copy * copy_loss) / (n_text + n_copy)
        _optimizer_step(model, opt, sched, loss)
        losses.append(loss.item())
        if log_every and (step % log_every == 0 or step == cfg.steps - 1):
            print(f"  pretrain step {step:5d}  loss {loss.item():.3f}", flush=True)
    model.eval()
    return model


def instruction_tune(model, tokenizer, cfg: TrainConfig, log_every: int = 100):
    """Multi-task instruction tuning (FLAN-style) with 25 % plain text mixed in against forgetting.

    The plain text is world documents with ``cfg.sorting_pages`` label pages among them, and every step adds
    ``cfg.copy_rows_with_text`` copy rows: what tiny-base learned to do in context stays in use.
    """
    torch.manual_seed(cfg.seed)
    rng = random.Random(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    pairs = world.instructions(world.INSTRUCT_SEED, cfg.n_documents)
    rows = encode_pairs(tokenizer, pairs)
    docs = world.pretraining_documents(world.INSTRUCT_SEED + 100, cfg.n_documents // 3)
    docs += world.sorting_pages(world.INSTRUCT_SEED + 110, cfg.sorting_pages)
    plain = [(ids, ids) for ids in (tokenizer(d)["input_ids"][:BLOCK_SIZE] for d in docs)]
    opt, sched = _optimizer(model, cfg)
    model.train()
    for step in range(cfg.steps):
        batch = [rng.choice(plain) if rng.random() < 0.25 else rng.choice(rows) for _ in range(cfg.batch_size)]
        ids, labels, mask = collate(batch, tokenizer.pad_token_id)
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        if cfg.copy_rows_with_text:
            n_text, n_copy = int((labels[:, 1:] != -100).sum()), cfg.copy_rows_with_text * cfg.copy_width
            copy_loss = copy_rows_loss(model, gen, cfg.copy_rows_with_text, cfg, len(tokenizer))
            loss = (n_text * loss + n_copy * copy_loss) / (n_text + n_copy)
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m course_utils.train", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a few steps on a small corpus (for tests)")
    parser.add_argument("--out", type=Path, default=ASSETS_DIR, help="where to write the models")
    parser.add_argument("--base-steps", type=int, default=None)
    parser.add_argument("--instruct-steps", type=int, default=None)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: 2)")
    args = parser.parse_args(argv)
    if args.out.resolve() == ASSETS_DIR.resolve() and args.quick:
        parser.error("--quick would overwrite the bundled models: give --out DIR")

    torch.set_num_threads(args.threads or min(2, torch.get_num_threads()))
    base_cfg = (TrainConfig(steps=20, n_documents=400, warmup=5, sorting_pages=50, copy_rows=4, copy_rows_with_text=2,
                            copy_only_steps=8, attention_weight=0.3, positions="fourier", probe_every=10) if args.quick
                else replace(BASE_RECIPE))
    inst_cfg = (TrainConfig(steps=10, n_documents=200, warmup=2, lr=1e-3, sorting_pages=20, copy_rows_with_text=2,
                            attention_weight=0.3)
                if args.quick else replace(INSTRUCT_RECIPE))
    base_cfg.steps = args.base_steps or base_cfg.steps
    inst_cfg.steps = args.instruct_steps or inst_cfg.steps
    n_eval = 5 if args.quick else 50

    from course_utils.model_card import evaluate, samples, save_model

    t0 = time.perf_counter()
    tokenizer = build_tokenizer(world.pretraining_documents(world.TRAIN_SEED, 4000 if not args.quick else 400)
                                + [p + c for p, c in world.instructions(world.INSTRUCT_SEED, 2000)])
    print(f"tokenizer: {len(tokenizer)} tokens", flush=True)

    common = dict(vocab_size=len(tokenizer), threads=torch.get_num_threads())
    t = time.perf_counter()
    curve: list[dict] = []
    base = pretrain(tokenizer, base_cfg, curve=curve)
    base_seconds = time.perf_counter() - t
    card = dict(name="tiny-base", description=BUNDLED_MODELS["tiny-base"], parameters=base.num_parameters(),
                data=f"{base_cfg.n_documents} world documents (seed {world.TRAIN_SEED}): stories, dialogues "
                     f"without summaries, review pages; {base_cfg.sorting_pages} sorting pages (fresh box names per "
                     "page); copy rows (a random span repeated to the end of the row)", config=asdict(base_cfg), train_seconds=base_seconds,
                metrics=evaluate(base, tokenizer, n_eval), samples=samples(base, tokenizer), training_curve=curve,
                **common)
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
