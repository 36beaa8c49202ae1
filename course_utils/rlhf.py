"""RLHF scaffolding, as the RLHF notebook imports it: the reward model and PPO, in one namespace.

The notebook's exercises (``rankings_to_pairs``, ``pairwise_reward_loss``, ``kl_penalized_rewards``,
``ppo_clipped_loss``, ...) are written by the learner; these modules hold only the plumbing around them and
*call* the learner's functions, passed in as arguments, so they never hold an answer:

* :mod:`course_utils.reward_model` -- prompts, preference triples, the reward model and its training;
* :mod:`course_utils.ppo` -- rollouts, rewards and evaluation, and the PPO loop with a KL penalty;
* the cached beta sweep (the whole pipeline once per KL coefficient) is :mod:`course_utils.sweeps.rlhf`;
  ``python -m course_utils.sweeps.rlhf`` (or ``python -m course_utils.rlhf``) re-creates it.

    >>> from course_utils import rlhf
    >>> rlhf.policy_prompt("lamp")
    'Write a review of the lamp.\\nReview:'
"""

from __future__ import annotations

import sys

from course_utils.exercises import needs_exercise
from course_utils.ppo import (
    Rollout, make_prompts, sample, token_logprobs, RewardModelScorer, labeller_scores,
    positive_probability, distinct_n, evaluate, whitened_returns, PPOHistory, Batch, collect,
    per_token_rewards, ppo_update, run_ppo, frozen_copy,
)
from course_utils.reward_model import (
    ready, quiet_transformers, policy_prompt, item_of, rm_text, preference_triples,
    load_reward_model, reward_scores, pairwise_accuracy, last_token_features, train_reward_model,
    RM_TRAIN_SEED, RM_HELD_OUT_SEED, Triple,
)

__all__ = [
    "needs_exercise", "Batch", "PPOHistory", "RM_HELD_OUT_SEED", "RM_TRAIN_SEED", "RewardModelScorer",
    "Rollout", "Triple", "collect", "distinct_n", "evaluate", "frozen_copy", "item_of", "labeller_scores",
    "last_token_features", "load_reward_model", "make_prompts", "pairwise_accuracy", "per_token_rewards",
    "policy_prompt", "positive_probability", "ppo_update", "preference_triples", "quiet_transformers",
    "ready", "reward_scores", "rm_text", "run_ppo", "sample", "token_logprobs", "train_reward_model",
    "whitened_returns",
]

if __name__ == "__main__":  # the older entry point of the sweep; imported here only, so no import cycle
    from course_utils.sweeps.rlhf import main

    sys.exit(main())
