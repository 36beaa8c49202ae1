"""PPO for the RLHF notebook: rollouts, rewards and evaluation, and a compact PPO loop with a KL penalty.

* rollouts -- sample completions from the policy, log-probabilities under the policy and the frozen reference
  model, and a reward per completion;
* :func:`run_ppo` -- PPO with a KL penalty to the reference model: per-token rewards from the learner's
  ``kl_penalized_rewards``, advantages as whitened returns-to-go, updates with the learner's ``ppo_clipped_loss``
  (both passed in, so this module never holds an answer);
* evaluation -- reward-model score, the world's hidden "labeller" score, sentiment from an AI judge
  (``tiny-instruct`` as a classifier), KL to the reference and distinct-n.
The notebook imports all of it through :mod:`course_utils.rlhf`.
"""

from __future__ import annotations

import copy
import random
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Sequence

import torch

from course_utils import world
from course_utils.reward_model import item_of, policy_prompt, quiet_transformers, reward_scores, rm_text

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
