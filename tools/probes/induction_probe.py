"""Probe: how fast does a tiny GPT-2 learn in-context copying? (record of the recipe search, issue #16)

    python tools/probes/induction_probe.py --steps 600 --copy 0.5 --pos sin --out /tmp/p.json
"""
from __future__ import annotations

import argparse, json, math, time
import torch
import torch.nn.functional as F

from course_utils import world
from course_utils.attention import repeated_random_tokens, sinusoidal_positions
from course_utils.models import load_model


SHORT = 0.0
ALT_VOCAB = 0


def copy_row(gen, vocab: int, width: int, lmin: int, lmax: int, rmax: int) -> torch.Tensor:
    """Random spans, each repeated 2..rmax times, concatenated up to ``width`` tokens."""
    out = []
    while sum(map(len, out)) < width:
        if float(torch.rand(1, generator=gen)) < SHORT:  # a stepping stone: "A B A B A B" needs a previous-token head
            L, r = 2, int(torch.randint(3, 7, (1,), generator=gen))
            if ALT_VOCAB:
                out += [torch.randint(1, ALT_VOCAB + 1, (2,), generator=gen)] * r + [torch.zeros(1, dtype=torch.long)]
                continue
        else:
            L = int(torch.randint(lmin, lmax + 1, (1,), generator=gen))
            r = int(torch.randint(2, rmax + 1, (1,), generator=gen))
        span = torch.randint(1, vocab, (L,), generator=gen)
        out += [span] * r + [torch.zeros(1, dtype=torch.long)]
    return torch.cat(out)[:width]


def text_blocks(tok, n_docs: int, T: int) -> torch.Tensor:
    ids = []
    for d in world.pretraining_documents(world.TRAIN_SEED, n_docs):
        ids += tok(d)["input_ids"] + [0]
    n = len(ids) // (T + 1)
    return torch.tensor(ids[: n * (T + 1)]).view(n, T + 1)


@torch.no_grad()
def probe(model, V, stories_ids):
    L = 30
    rep = repeated_random_tokens(V, length=L, repeats=2, seed=0, batch=8)
    out = model(rep, output_attentions=True)
    nll = F.cross_entropy(out.logits[:, :-1].transpose(1, 2), rep[:, 1:], reduction="none")
    first, second = nll[:, : L - 1].mean().item(), nll[:, L:].mean().item()
    attn = torch.stack(out.attentions, 1)
    rows = torch.arange(L, 2 * L)
    ind = attn[:, :, :, rows, rows - L + 1].mean(dim=(0, 3))
    ind2 = attn[:, :, :, rows, rows - L + 2].mean(dim=(0, 3))
    prev = []
    for ids in stories_ids:
        a = torch.stack(model(ids[None], output_attentions=True).attentions, 1)[0]
        prev.append(torch.diagonal(a, offset=-1, dim1=-2, dim2=-1).mean(-1))
    prev = torch.stack(prev).mean(0)
    return dict(first=round(first, 3), second=round(second, 3), ratio=round(second / first, 3),
                ind=round(ind.max().item(), 3), ind2=round(ind2.max().item(), 3), prev=round(prev.max().item(), 3))


def main():
    global SHORT
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--T", type=int, default=256)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--copy", type=float, default=0.5, help="share of rows that are copy rows")
    ap.add_argument("--pos", default="learned", help="learned | sin | sinfrozen")
    ap.add_argument("--pos-scale", type=float, default=0.05)
    ap.add_argument("--lmin", type=int, default=4)
    ap.add_argument("--lmax", type=int, default=32)
    ap.add_argument("--rmax", type=int, default=3)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--every", type=int, default=50)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--init", type=float, default=0.02)
    ap.add_argument("--untied", action="store_true")
    ap.add_argument("--alt-vocab", type=int, default=0)
    ap.add_argument("--freeze-l0-qk", action="store_true", help="after the A B warm-up, layer 0 keeps its attention pattern")
    ap.add_argument("--wd", type=float, default=0.05)
    ap.add_argument("--out", default=None)
    ap.add_argument("--freeze-wte", type=int, default=0, help="token embeddings frozen (random) for the first N steps")
    ap.add_argument("--warm", type=int, default=100)
    ap.add_argument("--no-attn-scale", action="store_true", help="GPT2Config(scale_attn_weights=False)")
    ap.add_argument("--short", type=float, default=0.0)
    ap.add_argument("--short-steps", type=int, default=0, help="all ABAB rows for the first N steps")
    a = ap.parse_args()
    global ALT_VOCAB
    ALT_VOCAB = a.alt_vocab
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    from transformers import GPT2Config, GPT2LMHeadModel
    _, tok = load_model("tiny-base")
    V = len(tok)
    cfg = GPT2Config(vocab_size=V, n_layer=a.layers, n_embd=128, n_head=4, n_positions=256, bos_token_id=0,
                     eos_token_id=0, pad_token_id=0, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                     attn_implementation="eager", initializer_range=a.init,
                     tie_word_embeddings=not a.untied, scale_attn_weights=not a.no_attn_scale)
    model = GPT2LMHeadModel(cfg)
    if a.pos.startswith("sin") or a.pos.startswith("fourier"):
        with torch.no_grad():
            if a.pos.startswith("sin"):
                pe = sinusoidal_positions(256, 128)
            else:  # frequencies spread evenly-ish over (0, pi): a sharp kernel, no short period
                k = torch.arange(1, 65, dtype=torch.float64)
                w = (math.pi * ((k * 0.6180339887498949) % 1.0)).float()  # (64,)
                pos = torch.arange(256, dtype=torch.float32)[:, None]
                pe = torch.zeros(256, 128)
                pe[:, 0::2], pe[:, 1::2] = torch.sin(pos * w), torch.cos(pos * w)
            model.transformer.wpe.weight.copy_(a.pos_scale * pe)
        if a.pos.endswith("frozen"):
            model.transformer.wpe.weight.requires_grad_(False)
    if a.freeze_wte:
        model.transformer.wte.weight.requires_grad_(False)
    params = [p for p in model.parameters() if p.requires_grad or p is model.transformer.wte.weight]
    decay = [p for p in params if p.dim() >= 2]
    nodecay = [p for p in params if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": a.wd}, {"params": nodecay, "weight_decay": 0.0}],
                            lr=a.lr, betas=(0.9, 0.95))
    warm = a.warm
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warm))
    blocks = text_blocks(tok, 3000, a.T)
    stories = [torch.tensor(tok(s)["input_ids"]) for s in world.stories(world.HELD_OUT_SEED, 4)]
    gen = torch.Generator().manual_seed(0)
    curve = []
    recent = []
    t0 = time.perf_counter()
    for step in range(a.steps + 1):
        if step % a.every == 0:
            model.eval()
            p = probe(model, V, stories)
            p.update(step=step, sec=round(time.perf_counter() - t0, 1), train=round(sum(recent) / max(1, len(recent)), 3))
            recent.clear()
            curve.append(p)
            print(json.dumps(p), flush=True)
            model.train()
        if step == a.steps:
            break
        SHORT = 1.0 if step < a.short_steps else a.short
        if a.freeze_wte and step == a.freeze_wte:
            model.transformer.wte.weight.requires_grad_(True)
        if a.freeze_l0_qk and step == a.short_steps:
            attn0 = model.transformer.h[0].attn.c_attn
            mask = torch.ones_like(attn0.weight); mask[:, :256] = 0
            bmask = torch.ones_like(attn0.bias); bmask[:256] = 0
            attn0.weight.register_hook(lambda g: g * mask)
            attn0.bias.register_hook(lambda g: g * bmask)
            for group in opt.param_groups:
                group["weight_decay_mask"] = None
        n_copy = int(round(a.copy * a.batch))
        rows = [copy_row(gen, V, a.T + 1, a.lmin, a.lmax, a.rmax) for _ in range(n_copy)]
        idx = torch.randint(len(blocks), (a.batch - n_copy,), generator=gen)
        batch = torch.cat([torch.stack(rows)] + [blocks[idx]]) if rows else blocks[idx]
        loss = model(input_ids=batch[:, :-1], labels=batch[:, :-1]).loss
        recent.append(loss.item())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step(); sched.step()
    if a.out:
        model.save_pretrained(a.out + '.model')
        json.dump(dict(args=vars(a), curve=curve), open(a.out, "w"), indent=1)


if __name__ == "__main__":
    main()
