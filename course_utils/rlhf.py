"""RLHF scaffolding: a reward model from the world's preference rankings, rollouts, and a compact PPO loop.

The notebook's exercises (``rankings_to_pairs``, ``pairwise_reward_loss``, ``kl_penalized_rewards``,
``ppo_clipped_loss``) are written by the learner; this module holds only the plumbing around them and
*calls* the learner's functions, passed in as arguments, so it never holds an answer:

* the preference data -- the course world's ranked reviews (:func:`course_utils.world.preferences`),
  turned into (prompt, chosen, rejected) triples through the learner's ``rankings_to_pairs``;
* the reward model -- ``tiny-base`` with a scalar score head (transformers'
  ``GPT2ForSequenceClassification``, ``num_labels=1``), trained with the learner's pairwise loss;
* rollouts -- sample completions from the policy, log-probabilities under the policy and the frozen
  reference model, and a reward per completion;
* :func:`run_ppo` -- PPO with a KL penalty to the reference model: per-token rewards from the learner's
  ``kl_penalized_rewards``, advantages as whitened returns-to-go, updates with the learner's
  ``ppo_clipped_loss``;
* evaluation -- reward-model score, the world's hidden "labeller" score, sentiment from an AI judge
  (``tiny-instruct`` as a classifier), KL to the reference and distinct-n;
* the cached beta sweep (the whole pipeline once per KL coefficient) lives in :mod:`course_utils.rlhf_sweep`;
  ``python -m course_utils.rlhf`` (or ``-m course_utils.rlhf_sweep``) re-creates it.

    >>> from course_utils import rlhf
    >>> rlhf.policy_prompt("lamp")
    'Write a review of the lamp.\\nReview:'
"""

from __future__ import annotations

import contextlib
import copy
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import torch

from course_utils import world
from course_utils.exercises import needs_exercise  # noqa: F401  (re-exported for the notebook)

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


# ----------------------------------------------------------------------------------------------
# Rollouts


@dataclass
class Rollout:
    """A batch of sampled completions. Shapes: B prompts, P prompt tokens, T completion tokens."""
    prompts: list[str]
    query: torch.Tensor          # (B, P) prompt ids (all prompts have the same length here)
    response: torch.Tensor       # (B, T) completion ids, padded after the end-of-text token
    mask: torch.Tensor           # (B, T) bool: True on real completion tokens (the end-of-text token included)
    texts: list[str]             # (B,) completions as text (without the end-of-text token)


def make_prompts(n: int, seed: int) -> list[str]:
    """``n`` review prompts for random products."""
    rng = random.Random(seed)
    return [policy_prompt(rng.choice(world.ITEMS)) for _ in range(n)]


@torch.no_grad()
def sample(policy: Any, tokenizer: Any, prompts: Sequence[str], max_new_tokens: int = 48,
           seed: int = 0, temperature: float = 1.0) -> Rollout:
    """Sample one completion per prompt (pure sampling: no top-k, no top-p) and mark its real tokens."""
    enc = [tokenizer(p)["input_ids"] for p in prompts]
    if len({len(e) for e in enc}) != 1:
        raise ValueError("all prompts must have the same number of tokens (use policy_prompt(item))")
    query = torch.tensor(enc)  # (B, P)
    torch.manual_seed(seed)
    with quiet_transformers():  # finished rows feed pad tokens back in, and pad = end-of-text here
        out = policy.generate(query, attention_mask=torch.ones_like(query), do_sample=True, top_k=0, top_p=1.0,
                              temperature=temperature, max_new_tokens=max_new_tokens,
                              pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    response = out[:, query.shape[1]:]  # (B, T)
    eos = response == tokenizer.eos_token_id
    ended_before = torch.cumsum(eos.int(), dim=1) - eos.int()  # EOS tokens strictly before each position
    mask = ended_before == 0  # up to and including the first EOS
    texts = [tokenizer.decode(r[m & (r != tokenizer.eos_token_id)]) for r, m in zip(response, mask)]
    return Rollout(list(prompts), query, response, mask, texts)


def token_logprobs(model: Any, query: torch.Tensor, response: torch.Tensor) -> torch.Tensor:
    """log p(response token t | prompt, response tokens < t) for every completion position: ``(B, T)``."""
    ids = torch.cat([query, response], dim=1)  # (B, P+T)
    # padding after the end-of-text token sits to the right of every real token, so causal attention never
    # lets a real token see it: an all-ones mask is exact here (and silences transformers' padding warning)
    logits = model(ids, attention_mask=torch.ones_like(ids)).logits[:, query.shape[1] - 1:-1]  # (B, T, V)
    return torch.log_softmax(logits.float(), dim=-1).gather(-1, response[..., None])[..., 0]  # (B, T)


# ----------------------------------------------------------------------------------------------
# Rewards and evaluation


class RewardModelScorer:
    """Reward of (prompt, completion) pairs from a trained reward model, standardised once.

    ``calibrate`` sets the offset and scale so that the reference policy's completions score mean 0 and
    standard deviation 1: the KL coefficient beta then means the same thing whatever the raw scale.
    """

    def __init__(self, model: Any, tokenizer: Any) -> None:
        self.model, self.tokenizer = model, tokenizer
        self.offset, self.scale = 0.0, 1.0

    def raw(self, prompts: Sequence[str], completions: Sequence[str]) -> torch.Tensor:
        return reward_scores(self.model, self.tokenizer, [rm_text(p, c) for p, c in zip(prompts, completions)])

    def calibrate(self, prompts: Sequence[str], completions: Sequence[str]) -> "RewardModelScorer":
        r = self.raw(prompts, completions)
        self.offset, self.scale = float(r.mean()), float(r.std().clamp_min(1e-6))
        return self

    def __call__(self, prompts: Sequence[str], completions: Sequence[str]) -> torch.Tensor:
        return (self.raw(prompts, completions) - self.offset) / self.scale  # (B,)


def labeller_scores(prompts: Sequence[str], completions: Sequence[str]) -> list[float]:
    """The world's hidden preference score (the 'human labeller' the reward model only saw rankings of)."""
    return [world.preference_score(c, item_of(p)) for p, c in zip(prompts, completions)]


@torch.no_grad()
def positive_probability(judge: Any, tokenizer: Any, completions: Sequence[str],
                         log_odds: bool = False) -> torch.Tensor:
    """P(" positive") vs P(" negative") from ``tiny-instruct`` asked to classify each text: ``(N,)``.

    ``log_odds=True`` returns log P(positive) - log P(negative) instead, which still ranks texts where the
    probability has saturated at 1. This is the offline stand-in for the seeds' lab, where a hate-speech
    classifier scored toxicity.
    """
    pos, neg = tokenizer(" positive")["input_ids"], tokenizer(" negative")["input_ids"]
    if len(pos) != 1 or len(neg) != 1:
        raise ValueError("the label words ' positive' and ' negative' must be single tokens for this judge")
    out = []
    tokenizer.padding_side = "left"
    for i in range(0, len(completions), 64):
        enc = tokenizer([world.classify_prompt(c.strip()) for c in completions[i:i + 64]], return_tensors="pt",
                        padding=True)
        pos_ids = (enc["attention_mask"].cumsum(-1) - 1).clamp_min(0)
        logits = judge(**enc, position_ids=pos_ids).logits[:, -1]  # (b, V)
        pair = logits[:, [pos[0], neg[0]]].float()  # (b, 2)
        out.append(pair[:, 0] - pair[:, 1] if log_odds else torch.softmax(pair, dim=-1)[:, 0])
    tokenizer.padding_side = "right"
    return torch.cat(out)


def distinct_n(texts: Sequence[str], n: int = 2) -> float:
    """Distinct n-grams / all n-grams over ``texts`` (word level): lower means more repetitive, less diverse."""
    grams = [tuple(w[i:i + n]) for w in (t.split() for t in texts) for i in range(len(w) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 0.0


def evaluate(policy: Any, ref: Any, tokenizer: Any, reward_fn: Callable[..., torch.Tensor], *,
             n: int = 64, seed: int = 999, judge: Any = None) -> dict[str, Any]:
    """Sample ``n`` completions on held-out prompts and measure them: reward, labeller score, KL, diversity."""
    prompts = make_prompts(n, seed)
    ro = sample(policy, tokenizer, prompts, seed=seed)
    with torch.no_grad():
        kl = ((token_logprobs(policy, ro.query, ro.response) - token_logprobs(ref, ro.query, ro.response))
              * ro.mask).sum(1)  # (B,)
    labels = labeller_scores(prompts, ro.texts)
    result = {"reward": float(reward_fn(prompts, ro.texts).mean()), "labeller": sum(labels) / n,
              "kl": float(kl.mean()), "distinct_1": distinct_n(ro.texts, 1), "distinct_2": distinct_n(ro.texts, 2),
              "length": float(ro.mask.sum(1).float().mean()), "prompts": prompts, "texts": ro.texts}
    if judge is not None:
        result["p_positive"] = float(positive_probability(judge, tokenizer, ro.texts).mean())
    return result


# ----------------------------------------------------------------------------------------------
# PPO


def whitened_returns(per_token_rewards: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Advantages: the return-to-go G_t = r_t + r_{t+1} + ... of each token, standardised over real tokens.

    (A full PPO also learns a value function V(s_t) and uses A_t = G_t - V(s_t), or GAE; standardising
    over the batch is the simplest baseline and works for these short completions.)
    """
    r = per_token_rewards * mask  # (B, T)
    returns = r.flip(1).cumsum(1).flip(1)  # (B, T) sum of the rewards from t to the end
    valid = returns[mask]
    return ((returns - valid.mean()) / (valid.std() + 1e-8)) * mask


@dataclass
class PPOHistory:
    """Per-step measurements of one PPO run, plus samples before and after."""
    beta: float
    reward: list[float] = field(default_factory=list)      # mean reward-model score of the step's samples
    labeller: list[float] = field(default_factory=list)    # mean hidden labeller score of the same samples
    kl: list[float] = field(default_factory=list)          # mean KL(policy || reference) per completion
    distinct_2: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    samples: dict[int, list[str]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Batch:
    """One PPO batch: the rollout and everything measured on it before any update."""
    rollout: Rollout
    old_logprobs: torch.Tensor   # (B, T) under the policy that sampled the batch (no gradient)
    ref_logprobs: torch.Tensor   # (B, T) under the frozen reference model
    reward: torch.Tensor         # (B,) one score per completion


@torch.no_grad()
def collect(policy: Any, ref: Any, tokenizer: Any, reward_fn: Callable[..., torch.Tensor], prompts: Sequence[str],
            seed: int = 0, max_new_tokens: int = 48) -> Batch:
    """Roll out: sample one completion per prompt, then score it and record both models' log-probs."""
    ro = sample(policy, tokenizer, prompts, max_new_tokens, seed=seed)
    return Batch(ro, token_logprobs(policy, ro.query, ro.response), token_logprobs(ref, ro.query, ro.response),
                 torch.as_tensor(reward_fn(ro.prompts, ro.texts), dtype=torch.float32))


def per_token_rewards(batch: Batch, kl_fn: Callable[..., Any], beta: float) -> torch.Tensor:
    """The learner's ``kl_fn(reward, logprobs, ref_logprobs, beta)`` on each completion's real tokens: ``(B, T)``."""
    out = torch.zeros_like(batch.old_logprobs)
    for b, m in enumerate(batch.rollout.mask):
        n = int(m.sum())
        r = kl_fn(batch.reward[b], batch.old_logprobs[b, :n], batch.ref_logprobs[b, :n], beta)
        r = torch.as_tensor(r, dtype=torch.float32).detach()
        if r.shape != (n,):
            raise ValueError(f"kl_penalized_rewards returned shape {tuple(r.shape)} for a completion of {n} "
                             f"tokens: expected ({n},), one reward per token")
        out[b, :n] = r
    return out


def ppo_update(policy: Any, opt: torch.optim.Optimizer, batch: Batch, advantages: torch.Tensor,
               loss_fn: Callable[..., Any], epochs: int = 2, clip_eps: float = 0.2) -> list[float]:
    """``epochs`` gradient steps on one batch with the learner's ``loss_fn`` over all real tokens."""
    ro, mask, losses = batch.rollout, batch.rollout.mask, []
    for _ in range(epochs):
        new = token_logprobs(policy, ro.query, ro.response)  # (B, T) with gradient
        loss = loss_fn(new[mask], batch.old_logprobs[mask], advantages[mask], clip_eps)
        if not isinstance(loss, torch.Tensor) or loss.dim() != 0 or not loss.requires_grad:
            raise ValueError("ppo_clipped_loss must return a 0-dim tensor computed from `logprobs` "
                             f"(so that it has a gradient), got {loss!r}")
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(policy.parameters(), 1.0)
        opt.step()
        losses.append(float(loss.detach()))
    return losses


def run_ppo(policy: Any, ref: Any, tokenizer: Any, reward_fn: Callable[..., torch.Tensor],
            kl_fn: Callable[..., Any], loss_fn: Callable[..., Any], *, beta: float, steps: int = 20,
            batch_size: int = 32, ppo_epochs: int = 2, lr: float = 3e-4, clip_eps: float = 0.2,
            max_new_tokens: int = 48, seed: int = 0, keep_samples: int = 4,
            on_step: Callable[[int, PPOHistory], None] | None = None) -> PPOHistory:
    """PPO with a KL penalty: ``steps`` x (roll out, score, penalise, ``ppo_epochs`` clipped updates).

    ``kl_fn(reward, logprobs, ref_logprobs, beta)`` and ``loss_fn(logprobs, old_logprobs, advantages,
    clip_eps)`` are the learner's functions: the first is called on each completion's real tokens (1-D),
    the second on all real tokens of the batch (1-D). ``policy`` is updated in place; ``ref`` stays frozen.
    """
    if beta < 0:
        raise ValueError(f"beta must be >= 0 (it weighs a penalty), got {beta}")
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    opt = torch.optim.Adam(policy.parameters(), lr=lr)
    hist = PPOHistory(beta=beta)
    for step in range(steps):
        t0 = time.perf_counter()
        prompts = make_prompts(batch_size, seed * 100_003 + step)
        batch = collect(policy, ref, tokenizer, reward_fn, prompts, seed * 100_003 + step, max_new_tokens)
        advantages = whitened_returns(per_token_rewards(batch, kl_fn, beta), batch.rollout.mask)  # (B, T)
        ppo_update(policy, opt, batch, advantages, loss_fn, ppo_epochs, clip_eps)
        texts = batch.rollout.texts
        if step == 0:
            hist.samples[0] = texts[:keep_samples]
        hist.reward.append(float(batch.reward.mean()))
        hist.labeller.append(sum(labeller_scores(prompts, texts)) / batch_size)
        hist.kl.append(float(((batch.old_logprobs - batch.ref_logprobs) * batch.rollout.mask).sum(1).mean()))
        hist.distinct_2.append(distinct_n(texts, 2))
        hist.seconds.append(time.perf_counter() - t0)
        if on_step is not None:
            on_step(step, hist)
    hist.samples[steps] = texts[:keep_samples]
    return hist


def frozen_copy(model: Any) -> Any:
    """A deep copy with gradients off: the reference model that the KL penalty compares against."""
    ref = copy.deepcopy(model).eval()
    for p in ref.parameters():
        p.requires_grad_(False)
    return ref


if __name__ == "__main__":  # `python -m course_utils.rlhf` re-creates the cached sweep, as it always did
    from course_utils.rlhf_sweep import main

    raise SystemExit(main())
