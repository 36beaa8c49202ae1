"""In-context learning with fresh labels: a task no model can solve without its examples.

A *sorting prompt* lists words with the box each one goes in, then one more word:
``Sort the words: great: red, Paris: blue, awful: blue, nice: red, poor:`` -> `` blue``. The two box names are drawn
at random for every prompt from :data:`course_utils.world.LABEL_WORDS`, so with no example the model cannot
know which box is which: it is right half of the time at best. Whatever it gains with more examples it learned
*from the prompt*. The query word never appears among its own examples, so copying the same word is not
enough: the model has to recognise a word *of the same kind* (positive or negative, animal or city).
The bundled models saw such pages in pre-training (:func:`course_utils.world.make_sorting_page`), never these
prompts.

    >>> from course_utils.models import load_model
    >>> from course_utils.incontext import fresh_label_eval
    >>> model, tok = load_model("tiny-base")
    >>> [round(r.accuracy, 2) for r in fresh_label_eval(model, tok, ks=(0, 8), n=40)]   # doctest: +SKIP
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch

from course_utils import world
from course_utils.sampling import _last_token_probs, context_size, encode, label_word_ids

TASKS = {"sentiment": ("positive", "negative"), "category": ("animal", "city")}  # the two classes of each task


@dataclass(frozen=True)
class Episode:
    """One fresh-label prompt: ``k`` sorted examples and the query, with the two box names it uses."""
    prompt: str
    label_words: tuple[str, str]  # (box of class 0, box of class 1)
    answer: int  # 0 or 1: which of the two words is right


def make_episode(rng: random.Random, query: tuple[str, int], k: int, task: str = "sentiment") -> Episode:
    """A k-shot sorting prompt for ``query = (word, class)``; examples are other words of the task's classes.

    For ``k >= 2`` each class has ``k // 2`` examples (one more for a random class when k is odd), so the
    examples never give the answer away by majority; the query word itself is never an example.
    """
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    classes = TASKS[task]
    words = tuple(rng.sample(world.LABEL_WORDS, 2))
    counts = [k // 2, k // 2]
    if k % 2:
        counts[rng.randrange(2)] += 1
    examples = [(rng.choice([w for w in world.WORD_CLASSES[classes[c]] if w != query[0]]), c)
                for c in (0, 1) for _ in range(counts[c])]
    rng.shuffle(examples)
    prompt = world.sorting_prompt([(w, words[c]) for w, c in examples], query[0])
    return Episode(prompt, words, query[1])


def queries(task: str, n: int, seed: int = world.HELD_OUT_SEED) -> list[tuple[str, int]]:
    """``n`` query words of the task's two classes, alternating class 0 and 1."""
    if task not in TASKS:
        raise ValueError(f"task must be one of {sorted(TASKS)}, got {task!r}")
    rng = world.rng_for(seed)
    return [(rng.choice(world.WORD_CLASSES[TASKS[task][i % 2]]), i % 2) for i in range(n)]


def episodes(k: int, n: int = 100, task: str = "sentiment", seed: int = 0) -> list[Episode]:
    """The ``n`` prompts :func:`fresh_label_eval` scores at ``k`` (same queries for every k, fresh boxes each)."""
    rng = random.Random(seed * 1000 + k)
    return [make_episode(rng, q, k, task) for q in queries(task, n)]


@dataclass
class InContextResult:
    """Accuracy of one model at one k, over ``n`` fresh-label prompts."""
    model: str
    k: int
    accuracy: float  # the right label word is the more probable of the two
    label_mass: float  # mean probability on the two label words of the prompt
    mean_tokens: float
    per_query: list[bool] = field(default_factory=list, repr=False)


@torch.no_grad()
def score_episodes(model: Any, tokenizer: Any, eps: Sequence[Episode], batch_size: int = 32) -> torch.Tensor:
    """``(N, 2)`` next-token probabilities of each episode's two label words after its prompt."""
    ctx = context_size(model)
    rows, pairs = [], []
    for e in eps:
        ids = encode(tokenizer, e.prompt)
        if len(ids) > ctx:
            raise ValueError(f"a prompt of {len(ids)} tokens does not fit the context window of {ctx}: use fewer "
                             "examples")
        rows.append(ids)
        pairs.append(label_word_ids(tokenizer, e.label_words))
    out = torch.empty(len(rows), 2)
    for start in range(0, len(rows), batch_size):
        probs = _last_token_probs(model, tokenizer, rows[start:start + batch_size])  # (B, V)
        idx = torch.tensor(pairs[start:start + batch_size])  # (B, 2)
        out[start:start + len(idx)] = probs.gather(1, idx)
    return out


def fresh_label_eval(model: Any, tokenizer: Any, ks: Sequence[int] = (0, 1, 2, 4, 8), *, n: int = 100,
                     task: str = "sentiment", name: str = "model", seed: int = 0) -> list[InContextResult]:
    """Accuracy at each k on ``n`` held-out queries, each prompt with its own random pair of box names."""
    results = []
    for k in ks:
        eps = episodes(k, n, task, seed)
        probs = score_episodes(model, tokenizer, eps)
        right = [bool(p[e.answer] > p[1 - e.answer]) for p, e in zip(probs.tolist(), eps)]
        tokens = sum(len(encode(tokenizer, e.prompt)) for e in eps) / len(eps)
        results.append(InContextResult(name, k, sum(right) / len(eps), float(probs.sum(-1).mean()), tokens, right))
    return results


def results_table(results: Sequence[InContextResult]) -> str:
    """Accuracy per model (columns) and k (rows), as plain text."""
    models = list(dict.fromkeys(r.model for r in results))
    ks = sorted({r.k for r in results})
    lines = [f"{'k':>3}" + "".join(f"{m:>16}" for m in models) + f"{'prompt tokens':>15}"]
    for k in ks:
        row = {r.model: r for r in results if r.k == k}
        tokens = next(iter(row.values())).mean_tokens
        lines.append(f"{k:>3}" + "".join(f"{row[m].accuracy:>16.2f}" if m in row else f"{'':>16}" for m in models)
                     + f"{tokens:>15.0f}")
    return "\n".join(lines)


def plot_in_context(results: Sequence[InContextResult], *, title: str = "fresh labels: learned from the prompt",
                    ax: Any = None, chance: float = 0.5):
    """Accuracy against k, one line per model, with the chance level: a ``matplotlib`` Figure."""
    from matplotlib.figure import Figure

    if ax is None:
        fig = Figure(figsize=(5.5, 3.4))
        ax = fig.add_subplot()
    else:
        fig = ax.figure
    for name in dict.fromkeys(r.model for r in results):
        rows = sorted((r for r in results if r.model == name), key=lambda r: r.k)
        ax.plot([r.k for r in rows], [r.accuracy for r in rows], "o-", label=name)
    ax.axhline(chance, ls=":", color="gray", lw=1)
    ax.text(0, chance + 0.01, "chance", fontsize=8, color="gray", va="bottom")
    ax.set(xlabel="k (labelled examples in the prompt)", ylabel="accuracy (held-out queries)", ylim=(0, 1.05),
           title=title)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return fig
