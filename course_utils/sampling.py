"""Demos and scaffolding for the sampling notebook: next-token distributions, a generation loop, few-shot scoring.

Nothing here answers an exercise: learners write ``softmax_with_temperature``, ``top_k_filter``,
``top_p_filter`` and ``sample_next_token`` themselves. This module gets logits out of the bundled model,
runs a decoding loop around *their* sampling function, and builds and scores few-shot prompts
(:func:`few_shot_prompt`, :func:`few_shot_eval`; fresh-label in-context learning is in :mod:`course_utils.incontext`),
so the notebook can stay about ideas.

    >>> from course_utils.models import load_model
    >>> from course_utils.sampling import next_token_logits, generate_with
    >>> model, tok = load_model("tiny-base")
    >>> logits = next_token_logits(model, tok, "Once upon a time, there was a")   # (V,)
    >>> generate_with(model, tok, "Once upon a time,", lambda lg: lg.argmax(-1), max_new_tokens=20)
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch

from course_utils import world
from course_utils.exercises import needs_exercise  # noqa: F401  (re-exported for the notebook)
from course_utils.tokens import token_label, token_labels  # noqa: F401

# A few reviews the models never saw, for few-shot examples (the held-out queries use world.HELD_OUT_SEED).
EXAMPLE_SEED = 2024

NextTokenFn = Callable[[torch.Tensor], Any]  # logits (B, V) -> token ids (B,) (or (B, 1), or an int for B = 1)




# ----------------------------------------------------------------------------------------------
# Tokens and next-token distributions






def context_size(model: Any) -> int:
    """How many tokens the model can look at (GPT-2: ``n_positions``, 256 for the bundled models)."""
    config = model.config
    for name in ("n_positions", "max_position_embeddings", "n_ctx"):
        if getattr(config, name, None):
            return int(getattr(config, name))
    raise ValueError(f"cannot find the context size of {type(model).__name__}: its config has no n_positions "
                     "or max_position_embeddings")


def encode(tokenizer: Any, prompt: str) -> list[int]:
    """The token ids of ``prompt`` (no special tokens added)."""
    if not isinstance(prompt, str):
        raise TypeError(f"the prompt must be a str, got {type(prompt).__name__}: {prompt!r}")
    return list(tokenizer(prompt)["input_ids"])


@torch.no_grad()
def next_token_logits(model: Any, tokenizer: Any, prompt: str) -> torch.Tensor:
    """The model's logits for the token after ``prompt``: a ``(V,)`` float tensor (raw scores, not probabilities).

    Prompts longer than the context window keep only their last tokens (the model cannot see further back).
    An empty prompt starts from the end-of-text token, as a new document would.
    """
    ids = encode(tokenizer, prompt) or [tokenizer.eos_token_id]
    ids = ids[-context_size(model):]
    out = model(input_ids=torch.tensor([ids]))
    return out.logits[0, -1].float().clone()  # (V,)


def top_tokens(probs: torch.Tensor, tokenizer: Any, n: int = 10) -> list[tuple[str, float]]:
    """The ``n`` most probable tokens of a ``(V,)`` distribution as ``(label, probability)``, best first."""
    if probs.dim() != 1:
        raise ValueError(f"top_tokens wants one distribution of shape (V,), got shape {tuple(probs.shape)}")
    values, ids = torch.topk(probs, min(n, probs.shape[-1]))
    return list(zip(token_labels(tokenizer, ids), (float(v) for v in values)))


def entropy_bits(probs: torch.Tensor) -> torch.Tensor:
    """Shannon entropy in bits over the last axis: 0 for a one-hot distribution, log2(V) for a uniform one."""
    p = probs.double()
    return -(torch.where(p > 0, p * torch.log2(p.clamp_min(1e-300)), torch.zeros_like(p))).sum(-1)


# ----------------------------------------------------------------------------------------------
# A decoding loop around a learner's sampling function (nanoGPT's recipe)


def _as_ids(chosen: Any, batch: int) -> torch.Tensor:
    """Whatever a next-token function returned, as a ``(B,)`` LongTensor (or a clear error)."""
    if isinstance(chosen, int) and not isinstance(chosen, bool):
        chosen = torch.tensor([chosen])
    if not isinstance(chosen, torch.Tensor):
        raise TypeError(f"the next-token function must return token ids (a tensor or an int), "
                        f"got {type(chosen).__name__}: {chosen!r}")
    ids = chosen.reshape(-1)
    if ids.numel() != batch or ids.is_floating_point():
        raise ValueError(f"the next-token function got logits of shape ({batch}, V) and must return {batch} integer "
                         f"token id(s); it returned {tuple(chosen.shape)} of dtype {chosen.dtype}. "
                         "Sample over the last axis (the vocabulary), one id per row.")
    return ids.long()


@torch.no_grad()
def generate_ids(model: Any, prompt_ids: Sequence[int], next_token: NextTokenFn, *, max_new_tokens: int = 40,
                 num_samples: int = 1, stop_at_eos: bool = True, eos_id: int | None = None) -> list[list[int]]:
    """Generate token by token: logits of the last position -> ``next_token`` -> append -> repeat.

    ``next_token`` gets the logits ``(B, V)`` of the last position (``B = num_samples`` copies of the prompt,
    sampled independently) and returns ``B`` token ids. Uses the KV cache while the text fits in the context
    window, then falls back to re-reading the last ``context`` tokens. Returns the new ids of each sample
    (cut after the first end-of-text when ``stop_at_eos``).
    """
    if max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
    if not prompt_ids:
        raise ValueError("the prompt has no tokens: give at least one (e.g. the end-of-text id)")
    eos_id = model.config.eos_token_id if eos_id is None else eos_id
    ctx = context_size(model)
    ids = torch.tensor([list(prompt_ids)[-ctx:]] * num_samples)  # (B, T)
    new: list[list[int]] = [[] for _ in range(num_samples)]
    done = torch.zeros(num_samples, dtype=torch.bool)
    past, use_cache = None, True
    for _ in range(max_new_tokens):
        if ids.shape[1] >= ctx:  # the window is full: crop and re-read (no cache beyond the window)
            ids, past, use_cache = ids[:, -(ctx - 1):], None, False
        inputs = ids[:, -1:] if past is not None else ids
        mask = torch.ones_like(ids)  # (B, T) every token is real (end-of-text = pad id must not be masked)
        out = model(input_ids=inputs, attention_mask=mask, past_key_values=past, use_cache=use_cache)
        past = out.past_key_values if use_cache else None
        logits = out.logits[:, -1, :].float()  # (B, V)
        chosen = _as_ids(next_token(logits), num_samples)  # (B,)
        for b in range(num_samples):
            if not done[b]:
                new[b].append(int(chosen[b]))
        if stop_at_eos and eos_id is not None:
            done |= chosen == eos_id
            if bool(done.all()):
                break
        ids = torch.cat([ids, chosen[:, None]], dim=1)
    if stop_at_eos and eos_id is not None:
        new = [seq[: seq.index(eos_id) + 1] if eos_id in seq else seq for seq in new]
    return new


def generate_with(model: Any, tokenizer: Any, prompt: str, next_token: NextTokenFn, *, max_new_tokens: int = 40,
                  num_samples: int = 1, stop_at_eos: bool = True) -> str | list[str]:
    """The text that ``next_token`` (e.g. your ``sample_next_token``) writes after ``prompt``.

    One string for ``num_samples=1``, else a list. End-of-text is shown as ``<|endoftext|>``.
    """
    ids = encode(tokenizer, prompt) or [tokenizer.eos_token_id]
    seqs = generate_ids(model, ids, next_token, max_new_tokens=max_new_tokens, num_samples=num_samples,
                        stop_at_eos=stop_at_eos, eos_id=tokenizer.eos_token_id)
    texts = [tokenizer.decode(s) for s in seqs]
    return texts[0] if num_samples == 1 else texts


def distinct_n(texts: Sequence[str] | str, n: int = 2) -> float:
    """Distinct n-grams / all n-grams over whitespace words: 1.0 = no repeats; low = repetitive text."""
    if isinstance(texts, str):
        texts = [texts]
    grams = [tuple(words[i:i + n]) for t in texts for words in [t.split()] for i in range(len(words) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 0.0


def longest_repeat(text: str, min_words: int = 3) -> str:
    """The longest word sequence (>= ``min_words`` words) that occurs at least twice in ``text``, or ''."""
    words = text.split()
    best = ""
    for n in range(min_words, len(words) // 2 + 1):
        seen, found = set(), ""
        for i in range(len(words) - n + 1):
            gram = tuple(words[i:i + n])
            if gram in seen:
                found = " ".join(gram)
                break
            seen.add(gram)
        if not found:
            break
        best = found
    return best


# ----------------------------------------------------------------------------------------------
# Few-shot prompting, scored by the next-token probabilities of two label words


def review_pairs(seed: int, n: int) -> list[tuple[str, str]]:
    """``n`` reviews from ``seed`` as ``(text, label)`` pairs, labels ``positive``/``negative`` alternating."""
    return [(r.text, r.label) for r in world.reviews(seed, n)]


def few_shot_prompt(examples: Sequence[tuple[str, str]], query: str, k: int,
                    label_words: tuple[str, str] = ("positive", "negative")) -> str:
    """The k-shot prompt in the format of the pre-training review pages: the first ``k`` examples, then the query.

    Each ``(text, label)`` example (label ``"positive"`` or ``"negative"``) becomes ``"Review: <text>\\nSentiment:
    <word>"`` with ``label_words[0]`` for positive and ``label_words[1]`` for negative; the query block ends with
    ``"Sentiment:"`` (the label word's token carries its own leading space); blocks are joined by an empty line.
    """
    if isinstance(k, bool) or not isinstance(k, int) or not 0 <= k <= len(examples):
        raise ValueError(f"k must be an int from 0 to len(examples) = {len(examples)}, got {k!r}")
    blocks = []
    for text, label in list(examples)[:k]:
        if label not in ("positive", "negative"):
            raise ValueError(f"labels must be 'positive' or 'negative', got {label!r}")
        blocks.append(f"Review: {text}\nSentiment: {label_words[0] if label == 'positive' else label_words[1]}")
    blocks.append(f"Review: {query}\nSentiment:")
    return "\n\n".join(blocks)


def label_word_ids(tokenizer: Any, label_words: tuple[str, str]) -> tuple[int, int]:
    """The token ids of `` word`` (with its leading space) for both label words; each must be one token."""
    ids = []
    for word in label_words:
        pieces = encode(tokenizer, " " + word)
        if len(pieces) != 1:
            raise ValueError(f"the label word {word!r} is {len(pieces)} tokens ({token_labels(tokenizer, pieces)}); "
                             "scoring compares the probability of one next token: pick single-token words.")
        ids.append(pieces[0])
    return ids[0], ids[1]


@dataclass
class LabelScores:
    """Next-token probabilities of the two label words after each prompt."""
    probs: torch.Tensor  # (N, 2): P(positive word), P(negative word)
    lengths: list[int]  # prompt lengths in tokens (before any truncation)
    truncated: list[bool]  # True where the prompt did not fit and lost its first tokens
    top: list[str]  # the single most probable next token after each prompt: what greedy decoding would write
    label_words: tuple[str, str] = ("positive", "negative")

    def predictions(self) -> list[str]:
        """``positive`` where the positive word is the more probable of the two, else ``negative``."""
        return ["positive" if bool(a > b) else "negative" for a, b in self.probs.tolist()]

    def top_is(self, labels: Sequence[str]) -> list[bool]:
        """Whether the most probable next token is exactly the right label word (`` positive`` for ``positive``...)."""
        return [t == " " + self.label_words[y != "positive"] for t, y in zip(self.top, labels)]

    def mass(self) -> torch.Tensor:
        """``(N,)`` probability on either label word: how sure the model is that a label word comes next."""
        return self.probs.sum(-1)


@torch.no_grad()
def label_probabilities(model: Any, tokenizer: Any, prompts: Sequence[str], label_words: tuple[str, str],
                        *, overflow: str = "error", batch_size: int = 64) -> LabelScores:
    """P(`` label_words[0]``) and P(`` label_words[1]``) as the next token after each prompt (batched, no generation).

    ``overflow``: what to do with a prompt longer than the context window: ``"error"`` (a ValueError that
    says by how much) or ``"truncate"`` (keep the last tokens, as a chat window drops the oldest text).
    """
    if overflow not in ("error", "truncate"):
        raise ValueError(f"overflow must be 'error' or 'truncate', got {overflow!r}")
    ids_pos, ids_neg = label_word_ids(tokenizer, label_words)
    ctx = context_size(model)
    rows, lengths, truncated = [], [], []
    for i, prompt in enumerate(prompts):
        ids = encode(tokenizer, prompt)
        if not ids:
            raise ValueError(f"prompt {i} is empty")
        lengths.append(len(ids))
        truncated.append(len(ids) > ctx)
        if len(ids) > ctx and overflow == "error":
            raise ValueError(f"prompt {i} is {len(ids)} tokens but the model's context window holds {ctx}: "
                             "use fewer examples, shorter ones, or overflow='truncate' to drop the oldest tokens.")
        rows.append(ids[-ctx:])
    out = torch.empty(len(rows), 2)
    top = torch.empty(len(rows), dtype=torch.long)
    order = sorted(range(len(rows)), key=lambda i: len(rows[i]))  # similar lengths together: less padding
    for start in range(0, len(order), batch_size):
        chunk = torch.tensor(order[start:start + batch_size])
        probs = _last_token_probs(model, tokenizer, [rows[i] for i in chunk.tolist()])  # (B, V)
        out[chunk] = probs[:, [ids_pos, ids_neg]]
        top[chunk] = probs.argmax(-1)
    return LabelScores(out, lengths, truncated, [tokenizer.decode([int(i)]) for i in top], tuple(label_words))


def _common_prefix(rows: Sequence[Sequence[int]]) -> int:
    """Length of the longest run of leading token ids that every row shares."""
    n = min(len(r) for r in rows)
    for j in range(n):
        first = rows[0][j]
        if any(r[j] != first for r in rows):
            return j
    return n


@torch.no_grad()
def _last_token_probs(model: Any, tokenizer: Any, rows: Sequence[Sequence[int]]) -> torch.Tensor:
    """Next-token probabilities ``(B, V)`` after each row of ids (rows of any length <= the context window).

    Rows that share leading tokens (the same few-shot examples) read that prefix once: its keys and values
    are cached and repeated over the batch, and only the differing ends are run, right-padded.
    """
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    body, head = model.base_model, model.get_output_embeddings()  # transformer blocks, then the LM head
    shared = min(_common_prefix(rows), min(len(r) for r in rows) - 1) if len(rows) > 1 else 0
    past = None
    if shared > 0:
        past = body(input_ids=torch.tensor([list(rows[0][:shared])]), use_cache=True).past_key_values
        past.batch_repeat_interleave(len(rows))
    tails = [list(r[shared:]) for r in rows]
    T = max(len(t) for t in tails)
    ids = torch.full((len(rows), T), pad, dtype=torch.long)  # right padding: positions stay in order
    mask = torch.zeros((len(rows), shared + T), dtype=torch.long)
    mask[:, :shared] = 1
    for b, t in enumerate(tails):
        ids[b, :len(t)] = torch.tensor(t)
        mask[b, shared:shared + len(t)] = 1
    hidden = body(input_ids=ids, attention_mask=mask, past_key_values=past,
                  use_cache=past is not None).last_hidden_state  # (B, T, d)
    last = torch.tensor([len(t) - 1 for t in tails])
    logits = head(hidden[torch.arange(len(rows)), last]).float()  # (B, V): only the last real position
    return torch.softmax(logits, dim=-1)


def example_sets(pool: Sequence[tuple[str, str]], n_sets: int, k_max: int, seed: int = 0
                 ) -> list[list[tuple[str, str]]]:
    """``n_sets`` lists of ``k_max`` examples drawn from ``pool`` (seeded); a k-shot prompt uses the first k.

    The same order serves every k, so the 2-shot prompt is the 1-shot prompt plus one example.
    """
    if k_max > len(pool):
        raise ValueError(f"k_max={k_max} examples asked for but the pool has only {len(pool)}")
    rng = random.Random(seed)
    return [rng.sample(list(pool), k_max) for _ in range(n_sets)]


@dataclass
class FewShotResult:
    """Accuracy and friends for one model and one k (mean over the example sets)."""
    model: str
    k: int
    accuracy: float
    label_mass: float  # mean probability on the two label words
    mean_tokens: float  # mean prompt length in tokens
    truncated: float  # fraction of prompts that did not fit the context window
    per_set: list[float] = field(default_factory=list)  # accuracy with each example set
    top_accuracy: float = 0.0  # fraction where the single most probable next token is the right label word


def few_shot_eval(model: Any, tokenizer: Any, build_prompt: Callable[..., str], ks: Sequence[int] = (0, 1, 2, 4),
                  *, n: int = 100, n_sets: int = 4, label_words: tuple[str, str] = ("positive", "negative"),
                  name: str = "model", overflow: str = "truncate", seed: int = 0) -> list[FewShotResult]:
    """Score ``build_prompt(examples, query, k)`` (e.g. :func:`few_shot_prompt`) for each k.

    Queries: ``n`` held-out reviews (``world.HELD_OUT_SEED``, balanced), split over ``n_sets`` sets of examples
    drawn from reviews of :data:`EXAMPLE_SEED` (every query of a set sees the same examples, as with one
    prompt template). A query counts as right when the correct label word is the more probable of the two
    after the prompt. ``build_prompt`` gets ``label_words=`` too when its signature accepts it.
    """
    import inspect

    if n % n_sets:
        raise ValueError(f"n={n} queries do not split evenly over n_sets={n_sets} example sets")
    queries = review_pairs(world.HELD_OUT_SEED, n)
    sets = example_sets(review_pairs(EXAMPLE_SEED, 64), n_sets, max(ks, default=0), seed)
    try:
        takes_words = "label_words" in inspect.signature(build_prompt).parameters
    except (TypeError, ValueError):
        takes_words = False
    kwargs = {"label_words": label_words} if takes_words else {}
    per = n // n_sets
    results = []
    for k in ks:
        right, mass, lengths, cut, per_set, top = [], [], [], [], [], []
        for s, examples in enumerate(sets):
            group = queries[s * per:(s + 1) * per]  # alternating labels: each group is balanced
            prompts = [build_prompt(examples, text, k, **kwargs) for text, _ in group]
            scores = label_probabilities(model, tokenizer, prompts, label_words, overflow=overflow)
            ok = [p == label for p, (_, label) in zip(scores.predictions(), group)]
            right += ok
            top += scores.top_is([label for _, label in group])
            per_set.append(sum(ok) / per)
            mass += scores.mass().tolist()
            lengths += scores.lengths
            cut += scores.truncated
        results.append(FewShotResult(name, k, sum(right) / n, sum(mass) / n, sum(lengths) / n, sum(cut) / n,
                                     per_set, sum(top) / n))
    return results


def results_table(results: Sequence[FewShotResult]) -> str:
    """A plain-text table of few-shot results (one row per model and k)."""
    lines = [f"{'model':<15}{'k':>3}{'accuracy':>10}{'top token right':>17}{'P(label words)':>16}"
             f"{'prompt tokens':>15}{'truncated':>11}"]
    for r in results:
        lines.append(f"{r.model:<15}{r.k:>3}{r.accuracy:>10.2f}{r.top_accuracy:>17.2f}{r.label_mass:>16.3f}"
                     f"{r.mean_tokens:>15.0f}{r.truncated:>11.0%}")
    return "\n".join(lines)
