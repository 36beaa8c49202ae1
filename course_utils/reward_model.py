"""The reward model of the RLHF notebook: review prompts, preference triples, a scalar-head reward model.

* the preference data -- the course world's ranked reviews (:func:`course_utils.world.preferences`), turned into
  (prompt, chosen, rejected) triples through the learner's ``rankings_to_pairs``;
* the reward model -- ``tiny-base`` with a scalar score head (transformers' ``GPT2ForSequenceClassification``,
  ``num_labels=1``), trained with the learner's pairwise loss, which this module only *calls*.
The notebook imports all of it through :mod:`course_utils.rlhf`.
"""

from __future__ import annotations

import contextlib
import random
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import torch

from course_utils import world

RM_TRAIN_SEED = 4          # preference rankings the reward model learns from (the models never saw seed 4)
RM_HELD_OUT_SEED = world.HELD_OUT_SEED

Triple = tuple[str, str, str]  # (prompt, chosen, rejected)


def ready(*values: Any) -> None:
    """Inside ``needs_exercise``: stop a demo whose inputs (results of a demo cell above) are still ``None``.

    A demo cell sets its results to ``None`` before trying the learner's function; until that works, the
    cells that use those results print "answer the exercise" instead of failing with a ``NameError``.
    """
    if any(v is None for v in values):
        raise NotImplementedError("a demo cell above has not produced its results yet")


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """Silence transformers' warnings for a block (e.g. generate's padding notice when pad = end-of-text)."""
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)


# ----------------------------------------------------------------------------------------------
# Prompts and preference data


def policy_prompt(item: str) -> str:
    """The prompt the policy completes: the preference data's instruction followed by ``Review:``."""
    if item not in world.ITEMS:
        raise ValueError(f"unknown item {item!r}: pick one of world.ITEMS, e.g. {world.ITEMS[:3]}")
    return f"Write a review of the {item}.\nReview:"


def item_of(prompt: str) -> str:
    """The product a prompt asks about (``"Write a review of the lamp. ..."`` -> ``"lamp"``)."""
    head = prompt.split("\n")[0]
    for item in world.ITEMS:
        if head.rstrip(".").endswith(" " + item):
            return item
    raise ValueError(f"cannot find the item in prompt {prompt!r}: expected 'Write a review of the <item>.'")


def rm_text(prompt: str, response: str) -> str:
    """What the reward model reads: the prompt and the response as the policy writes them, then ``Sentiment:``.

    ``tiny-base`` learned from its review pages to sum a review up right after ``Sentiment:``, so the hidden
    state of that last token is a ready-made summary for the score head to read.
    """
    base = prompt if prompt.endswith("Review:") else prompt + "\nReview:"
    return f"{base} {response.strip()}\nSentiment:"


def preference_triples(prefs: Sequence[world.Preference], pairs_fn: Callable[..., Any],
                       drop_ties: bool = True) -> list[Triple]:
    """(prompt, chosen, rejected) for every pair the learner's ``pairs_fn(responses, ranking)`` returns.

    ``drop_ties``: the labeller gave both responses the same score, so the ranking between them is an
    arbitrary tie-break and teaches nothing; such pairs are dropped.
    """
    triples: list[Triple] = []
    for pref in prefs:
        score = dict(zip(pref.responses, pref.scores))
        for pair in pairs_fn(list(pref.responses), list(pref.ranking)):
            chosen, rejected = pair
            if drop_ties and score.get(chosen) == score.get(rejected):
                continue
            triples.append((pref.prompt, chosen, rejected))
    return triples


# ----------------------------------------------------------------------------------------------
# Reward model


def load_reward_model(backbone: str = "tiny-base", seed: int = 0) -> tuple[Any, Any]:
    """``(reward_model, tokenizer)``: a pre-trained backbone plus a fresh linear score head (one output).

    ``backbone``: a bundled model name or a directory saved with ``save_pretrained``.

    transformers' ``GPT2ForSequenceClassification`` reads the hidden state of the last non-padding
    token and maps it to ``num_labels`` numbers; with ``num_labels=1`` that number is the reward.
    """
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from course_utils.models import bundled_model_dir

    path = Path(backbone) if Path(backbone).is_dir() else bundled_model_dir(backbone)
    torch.manual_seed(seed)
    with quiet_transformers():  # "some weights were newly initialized": yes, the score head, on purpose
        model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=1)
    tokenizer = AutoTokenizer.from_pretrained(path)
    model.config.pad_token_id = tokenizer.pad_token_id
    model.eval()
    return model, tokenizer


def _batch(tokenizer: Any, texts: Sequence[str]) -> dict[str, torch.Tensor]:
    tokenizer.padding_side = "right"
    return tokenizer(list(texts), return_tensors="pt", padding=True)


def reward_scores(model: Any, tokenizer: Any, texts: Sequence[str], batch_size: int = 128,
                  grad: bool = False) -> torch.Tensor:
    """The reward model's score for each full text (prompt + response): shape ``(N,)``."""
    out = []
    with torch.set_grad_enabled(grad):
        for i in range(0, len(texts), batch_size):
            enc = _batch(tokenizer, texts[i:i + batch_size])
            out.append(model(**enc).logits[:, 0])  # (b,)
    return torch.cat(out) if out else torch.zeros(0)


def _score_unique(model: Any, tokenizer: Any, triples: Sequence[Triple], grad: bool = False
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Scores of the chosen and rejected texts of ``triples``, each distinct text scored once: ``(N,), (N,)``."""
    texts = {t: i for i, t in enumerate(dict.fromkeys(rm_text(p, x) for p, c, r in triples for x in (c, r)))}
    scores = reward_scores(model, tokenizer, list(texts), grad=grad)  # (U,)
    chosen = torch.tensor([texts[rm_text(p, c)] for p, c, _ in triples])
    rejected = torch.tensor([texts[rm_text(p, r)] for p, _, r in triples])
    return scores[chosen], scores[rejected]


def pairwise_accuracy(model: Any, tokenizer: Any, triples: Sequence[Triple]) -> float:
    """Fraction of (prompt, chosen, rejected) where the model scores the chosen response higher."""
    if not triples:
        raise ValueError("no preference pairs to evaluate: pass a non-empty list of (prompt, chosen, rejected)")
    chosen, rejected = _score_unique(model, tokenizer, triples)
    return float((chosen > rejected).float().mean())


@torch.no_grad()
def last_token_features(model: Any, tokenizer: Any, texts: Sequence[str], batch_size: int = 64) -> torch.Tensor:
    """The backbone's hidden state at each text's last token, what the score head reads: ``(N, d)``."""
    backbone = getattr(model, model.base_model_prefix)  # GPT2ForSequenceClassification.transformer
    out = []
    for i in range(0, len(texts), batch_size):
        enc = _batch(tokenizer, texts[i:i + batch_size])
        h = backbone(**enc).last_hidden_state  # (b, T, d)
        last = enc["attention_mask"].sum(1) - 1  # (b,) right padding: the last real token
        out.append(h[torch.arange(h.shape[0]), last])
    return torch.cat(out)


def _groups(triples: Sequence[Triple]) -> list[list[Triple]]:
    """Split ``triples`` into rankings: consecutive pairs with the same prompt that share a completion."""
    groups: list[list[Triple]] = []
    seen: set[str] = set()
    for t in triples:
        if groups and groups[-1][0][0] == t[0] and (t[1] in seen or t[2] in seen):
            groups[-1].append(t)
        else:
            groups.append([t])
            seen = set()
        seen.update(t[1:])
    return groups


def train_reward_model(model: Any, tokenizer: Any, triples: Sequence[Triple], loss_fn: Callable[..., Any], *,
                       train_backbone: bool = False, steps: int = 300, lr: float = 3e-3,
                       prompts_per_step: int = 8, seed: int = 0) -> list[float]:
    """Train ``model`` on preference triples with the learner's ``loss_fn(r_chosen, r_rejected)``; returns losses.

    ``train_backbone=False`` (fast): the transformer stays frozen; every distinct text is read once, and
    only the linear score head is trained on those features, on all pairs at each step.
    ``train_backbone=True`` (slow, what InstructGPT did): everything is trained; each step takes the pairs of
    ``prompts_per_step`` rankings and scores each distinct completion once (the K completions of a prompt
    give K(K-1)/2 pairs for K forward passes). Use ``lr=1e-3`` and ~60 steps there.
    """
    if not triples:
        raise ValueError("no preference pairs to train on: did rankings_to_pairs return an empty list?")
    torch.manual_seed(seed)
    losses: list[float] = []

    def step(r_chosen: torch.Tensor, r_rejected: torch.Tensor, opt: torch.optim.Optimizer) -> None:
        loss = loss_fn(r_chosen, r_rejected)
        if not isinstance(loss, torch.Tensor) or loss.dim() != 0 or not loss.requires_grad:
            raise ValueError("the loss must be a 0-dim tensor computed from the rewards (a mean over pairs, "
                             f"with a gradient), got {loss!r}")
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))

    if not train_backbone:
        texts = {t: i for i, t in enumerate(dict.fromkeys(rm_text(p, x) for p, c, r in triples for x in (c, r)))}
        features = last_token_features(model, tokenizer, list(texts))  # (U, d), computed once
        chosen = torch.tensor([texts[rm_text(p, c)] for p, c, _ in triples])
        rejected = torch.tensor([texts[rm_text(p, r)] for p, _, r in triples])
        head = model.score
        opt = torch.optim.Adam(head.parameters(), lr=lr)
        for _ in range(steps):
            scores = head(features)[:, 0]  # (U,)
            step(scores[chosen], scores[rejected], opt)
        return losses

    groups = _groups(triples)
    rng = random.Random(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    order: list[int] = []
    for _ in range(steps):
        if len(order) < prompts_per_step:
            order += rng.sample(range(len(groups)), len(groups))
        picked, order = order[:prompts_per_step], order[prompts_per_step:]
        step(*_score_unique(model, tokenizer, [t for g in picked for t in groups[g]], grad=True), opt)
    model.eval()
    return losses
