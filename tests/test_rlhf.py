"""Tests of course_utils.rlhf (preference data, reward model, rollouts, PPO plumbing) and the beta explorer.

The notebook's exercises are the learner's; the tests use their own small versions below (the module
under test never holds them).
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.set_num_threads(1)  # tiny models: one thread is as fast, and far faster on a busy machine

from course_utils import rlhf, world  # noqa: E402
from course_utils.sweeps import rlhf as rlhf_sweep  # noqa: E402
from course_utils.models import ModelNotFoundError, load_model  # noqa: E402


def _pairs(responses, ranking):
    return [(responses[a], responses[b]) for k, a in enumerate(ranking) for b in ranking[k + 1:]]


def _bt_loss(r_c, r_r):
    return F.softplus(r_r - r_c).mean()


def _kl_rewards(reward, logprobs, ref_logprobs, beta):
    r = -beta * (logprobs - ref_logprobs)
    r[..., -1] += reward
    return r


def _clip_loss(lp, old, adv, eps):
    ratio = torch.exp(lp - old)
    return -torch.minimum(ratio * adv, ratio.clamp(1 - eps, 1 + eps) * adv).mean()


def _rm(seed: int = 0):
    try:
        return rlhf.load_reward_model("tiny-base", seed=seed)
    except ModelNotFoundError as err:
        pytest.skip(f"bundled model missing: {err}")


@pytest.fixture(scope="module")
def instruct():
    try:
        return load_model("tiny-instruct")
    except ModelNotFoundError as err:
        pytest.skip(f"bundled model missing: {err}")


@pytest.fixture(scope="module")
def reward_model():
    return _rm()


# ----------------------------------------------------------------------------------------------
# Prompts and preference data


def test_policy_prompt_and_item_round_trip():
    for item in world.ITEMS:
        prompt = rlhf.policy_prompt(item)
        assert rlhf.item_of(prompt) == item
        assert prompt.startswith(f"Write a review of the {item}.")
    with pytest.raises(ValueError, match="unknown item"):
        rlhf.policy_prompt("spaceship")
    with pytest.raises(ValueError, match="cannot find the item"):
        rlhf.item_of("Tell me a story.")


def test_rm_text_matches_what_the_policy_writes():
    pref = world.preferences(3, 1)[0]
    text = rlhf.rm_text(pref.prompt, pref.responses[0])
    assert text == rlhf.policy_prompt(rlhf.item_of(pref.prompt)) + " " + pref.responses[0] + "\nSentiment:"
    assert rlhf.rm_text(rlhf.policy_prompt("lamp"), " good.") == "Write a review of the lamp.\nReview: good.\nSentiment:"


def test_preference_triples_follow_the_ranking_and_drop_ties():
    prefs = world.preferences(5, 30)
    triples = rlhf.preference_triples(prefs, _pairs)
    all_pairs = sum(len(_pairs(p.responses, p.ranking)) for p in prefs)
    ties = sum(1 for p in prefs for a, b in _pairs(p.scores, p.ranking) if a == b)
    assert len(triples) == all_pairs - ties
    for prompt, chosen, rejected in triples:
        pref = next(p for p in prefs if p.prompt == prompt and chosen in p.responses and rejected in p.responses)
        score = dict(zip(pref.responses, pref.scores))
        assert score[chosen] > score[rejected]
    assert len(rlhf.preference_triples(prefs, _pairs, drop_ties=False)) == all_pairs


def test_preference_triples_call_the_given_function():
    calls = []

    def spy(responses, ranking):
        calls.append((list(responses), list(ranking)))
        return []

    assert rlhf.preference_triples(world.preferences(5, 3), spy) == []
    assert len(calls) == 3 and all(len(r) == 4 for r, _ in calls)


def test_distinct_n():
    assert rlhf.distinct_n(["a b c d"], 2) == 1.0
    assert rlhf.distinct_n(["great great great great"], 1) == 0.25
    assert rlhf.distinct_n(["great great great"], 2) == 0.5
    assert rlhf.distinct_n([""], 2) == 0.0


def test_whitened_returns_are_returns_to_go_standardised_over_real_tokens():
    rewards = torch.tensor([[0.0, 0.0, 1.0], [0.0, -1.0, 0.0]])
    mask = torch.tensor([[True, True, True], [True, True, False]])
    adv = rlhf.whitened_returns(rewards, mask)
    returns = torch.tensor([1.0, 1.0, 1.0, -1.0, -1.0])
    expected = (returns - returns.mean()) / returns.std()
    assert torch.allclose(adv[mask], expected, atol=1e-6)
    assert adv[1, 2] == 0


def test_ready_turns_a_missing_demo_result_into_the_exercise_message(capsys):
    with rlhf.needs_exercise("rankings_to_pairs"):
        rlhf.ready([1], None)  # a result of a demo cell above is still missing
    assert "rankings_to_pairs" in capsys.readouterr().out
    rlhf.ready([1], 0.0, [])  # present (even if empty or zero): no error


# ----------------------------------------------------------------------------------------------
# Reward model


def test_reward_model_is_a_backbone_with_a_scalar_head(reward_model):
    model, tok = reward_model
    texts = [rlhf.rm_text(rlhf.policy_prompt("lamp"), "The design is great."),
             rlhf.rm_text(rlhf.policy_prompt("lamp"), "The design is great. The price is bad, really bad.")]
    scores = rlhf.reward_scores(model, tok, texts)
    assert scores.shape == (2,)
    one_by_one = torch.cat([rlhf.reward_scores(model, tok, [t]) for t in texts])
    assert torch.allclose(scores, one_by_one, atol=1e-5)  # right padding does not change a score


def test_head_training_with_the_pairwise_loss_beats_guessing_and_leaves_the_backbone_alone():
    model, tok = _rm()
    backbone_before = {k: v.clone() for k, v in model.transformer.state_dict().items()}
    train = rlhf.preference_triples(world.preferences(rlhf.RM_TRAIN_SEED, 60), _pairs)
    held = rlhf.preference_triples(world.preferences(rlhf.RM_HELD_OUT_SEED, 30), _pairs)
    losses = rlhf.train_reward_model(model, tok, train, _bt_loss, steps=200)
    assert len(losses) == 200 and losses[-1] < losses[0]
    assert rlhf.pairwise_accuracy(model, tok, held) > 0.65
    assert all(torch.equal(v, model.transformer.state_dict()[k]) for k, v in backbone_before.items())
    # a loss with the wrong sign learns the opposite preference: the check can fail
    wrong, _ = _rm()
    rlhf.train_reward_model(wrong, tok, train, lambda c, r: _bt_loss(r, c), steps=200)
    assert rlhf.pairwise_accuracy(wrong, tok, held) < 0.4


def test_full_training_steps_score_each_distinct_completion_once(monkeypatch):
    model, tok = _rm()
    train = rlhf.preference_triples(world.preferences(rlhf.RM_TRAIN_SEED, 20), _pairs)
    sizes = []
    original = rlhf.reward_scores

    def spy(m, t, texts, **kw):
        sizes.append(len(texts))
        return original(m, t, texts, **kw)

    monkeypatch.setattr(rlhf, "reward_scores", spy)
    before = model.transformer.h[0].attn.c_attn.weight.clone()
    losses = rlhf.train_reward_model(model, tok, train, _bt_loss, train_backbone=True, steps=2,
                                     prompts_per_step=2, lr=1e-3)
    assert len(losses) == 2
    assert all(n <= 8 for n in sizes)  # 2 rankings x 4 completions, each scored once
    assert not torch.equal(before, model.transformer.h[0].attn.c_attn.weight)


def test_train_reward_model_rejects_bad_inputs(reward_model):
    model, tok = reward_model
    with pytest.raises(ValueError, match="no preference pairs"):
        rlhf.train_reward_model(model, tok, [], _bt_loss, steps=1)
    triple = [(world.preferences(0, 1)[0].prompt, "good.", "bad.")]
    with pytest.raises(ValueError, match="0-dim"):
        rlhf.train_reward_model(model, tok, triple, lambda c, r: F.softplus(r - c), steps=1)
    with pytest.raises(ValueError, match="gradient"):
        rlhf.train_reward_model(model, tok, triple, lambda c, r: torch.tensor(0.5), steps=1)


# ----------------------------------------------------------------------------------------------
# Rollouts and PPO


def test_sample_masks_up_to_and_including_the_first_eos(instruct):
    model, tok = instruct
    ro = rlhf.sample(model, tok, rlhf.make_prompts(6, seed=0), seed=0)
    assert ro.response.shape[0] == 6 and ro.mask.shape == ro.response.shape
    for r, m, text in zip(ro.response, ro.mask, ro.texts):
        n = int(m.sum())
        assert bool(m[:n].all()) and not bool(m[n:].any())
        eos = (r == tok.eos_token_id).nonzero()
        if len(eos):
            assert int(eos[0]) == n - 1
        assert tok.decode(r[:n][r[:n] != tok.eos_token_id]) == text
    again = rlhf.sample(model, tok, rlhf.make_prompts(6, seed=0), seed=0)
    assert again.texts == ro.texts  # seeded


def test_token_logprobs_match_the_model_loss(instruct):
    model, tok = instruct
    ro = rlhf.sample(model, tok, rlhf.make_prompts(2, seed=1), seed=1)
    lp = rlhf.token_logprobs(model, ro.query, ro.response)
    n = int(ro.mask[0].sum())
    ids = torch.cat([ro.query[0], ro.response[0, :n]])[None]
    labels = ids.clone()
    labels[0, : ro.query.shape[1]] = -100
    with torch.no_grad():
        loss = model(ids, labels=labels).loss
    assert torch.allclose(-lp[0, :n].mean(), loss, atol=1e-4)


def test_per_token_rewards_call_the_function_per_completion_and_check_its_shape(instruct):
    model, tok = instruct
    ref = rlhf.frozen_copy(model)
    batch = rlhf.collect(model, ref, tok, lambda p, t: torch.arange(len(t), dtype=torch.float32),
                         rlhf.make_prompts(3, seed=2), seed=2)
    per_token = rlhf.per_token_rewards(batch, _kl_rewards, beta=0.1)
    for b in range(3):
        n = int(batch.rollout.mask[b].sum())
        assert per_token[b, n - 1] == pytest.approx(float(b), abs=1e-5)  # same model: KL 0, reward on the last token
        assert float(per_token[b, : n - 1].abs().sum()) < 1e-5  # no reward before the last token
    with pytest.raises(ValueError, match="one reward per token"):
        rlhf.per_token_rewards(batch, lambda r, lp, ref_lp, beta: lp[:-1], beta=0.1)


def test_one_ppo_update_moves_towards_rewarded_completions(instruct):
    model, tok = instruct
    torch.manual_seed(0)
    policy = load_model("tiny-instruct")[0]
    ref = rlhf.frozen_copy(model)
    batch = rlhf.collect(policy, ref, tok, lambda p, t: torch.tensor([3.0, -3.0] * (len(t) // 2)),
                         rlhf.make_prompts(8, seed=11), seed=11)
    adv = rlhf.whitened_returns(rlhf.per_token_rewards(batch, _kl_rewards, 0.05), batch.rollout.mask)
    rlhf.ppo_update(policy, torch.optim.Adam(policy.parameters(), lr=1e-3), batch, adv, _clip_loss, epochs=2)
    with torch.no_grad():
        new = rlhf.token_logprobs(policy, batch.rollout.query, batch.rollout.response)
    delta = ((new - batch.old_logprobs) * batch.rollout.mask).sum(1)
    assert float(delta[0::2].mean()) > float(delta[1::2].mean()) + 1
    # a wrong sign in the loss goes the other way: the check can fail
    policy2 = load_model("tiny-instruct")[0]
    rlhf.ppo_update(policy2, torch.optim.Adam(policy2.parameters(), lr=1e-3), batch, adv,
                    lambda *a: -_clip_loss(*a), epochs=2)
    with torch.no_grad():
        new2 = rlhf.token_logprobs(policy2, batch.rollout.query, batch.rollout.response)
    delta2 = ((new2 - batch.old_logprobs) * batch.rollout.mask).sum(1)
    assert float(delta2[0::2].mean()) < float(delta2[1::2].mean())


def test_ppo_update_rejects_a_loss_without_gradient(instruct):
    model, tok = instruct
    ref = rlhf.frozen_copy(model)
    batch = rlhf.collect(model, ref, tok, lambda p, t: torch.zeros(len(t)), rlhf.make_prompts(2, seed=3), seed=3)
    adv = torch.zeros_like(batch.old_logprobs)
    opt = torch.optim.Adam(model.parameters(), lr=0.0)
    with pytest.raises(ValueError, match="gradient"):
        rlhf.ppo_update(model, opt, batch, adv, lambda lp, old, a, eps: torch.tensor(0.0))


def test_run_ppo_records_every_step_and_raises_reward(instruct):
    model, tok = instruct
    ref = rlhf.frozen_copy(model)
    policy = load_model("tiny-instruct")[0]

    def reward_fn(prompts, texts):  # a simple reward: the labeller's own score
        return torch.tensor(rlhf.labeller_scores(prompts, texts)) / 3

    seen = []
    hist = rlhf.run_ppo(policy, ref, tok, reward_fn, _kl_rewards, _clip_loss, beta=0.05, steps=3, batch_size=8,
                        lr=1e-3, on_step=lambda s, h: seen.append(s))
    assert seen == [0, 1, 2]
    for key in ("reward", "labeller", "kl", "distinct_2", "seconds"):
        assert len(getattr(hist, key)) == 3
    assert hist.kl[0] == pytest.approx(0.0, abs=1e-5)  # the first batch is sampled before any update
    assert set(hist.samples) == {0, 3}
    json.dumps(hist.to_dict())  # cacheable
    with pytest.raises(ValueError, match="beta"):
        rlhf.run_ppo(policy, ref, tok, reward_fn, _kl_rewards, _clip_loss, beta=-1.0, steps=1)


def test_reward_scorer_calibration_standardises(reward_model):
    model, tok = reward_model
    prefs = world.preferences(8, 8)
    prompts = [rlhf.policy_prompt(rlhf.item_of(p.prompt)) for p in prefs]
    texts = [p.responses[0] for p in prefs]
    scorer = rlhf.RewardModelScorer(model, tok).calibrate(prompts, texts)
    r = scorer(prompts, texts)
    assert float(r.mean()) == pytest.approx(0.0, abs=1e-5)
    assert float(r.std()) == pytest.approx(1.0, abs=1e-4)


def test_positive_probability_judge_separates_clear_reviews(instruct):
    model, tok = instruct
    p = rlhf.positive_probability(model, tok, ["I bought this lamp last Monday. The design is great. The price is very good.",
                                               "I bought this lamp last Monday. The design is terrible. The price is awful."])
    assert p.shape == (2,)
    assert float(p[0]) > 0.5 > float(p[1])


# ----------------------------------------------------------------------------------------------
# The cached sweep and the explorer


def test_sweep_round_trip(tmp_path):
    runs = {"0.0": {"history": rlhf.PPOHistory(beta=0.0, reward=[0.1, 0.5], labeller=[1, 2], kl=[0, 3],
                                                distinct_2=[0.9, 0.5], seconds=[1, 1]).to_dict(),
                    "eval": {"reward": 1.0, "labeller": 2.0, "kl": 3.0, "distinct_2": 0.5, "texts": ["a"]}}}
    runs["0.0"]["eval"]["texts"] = [f"t{i}" for i in range(40)]
    path = rlhf_sweep.save_sweep(runs, tmp_path / "s.json")
    loaded = rlhf_sweep.load_sweep(path)
    assert loaded["0.0"]["history"]["reward"] == [0.1, 0.5]
    assert loaded["0.0"]["eval"]["texts"] == [f"t{i}" for i in range(16)]
    assert len(runs["0.0"]["eval"]["texts"]) == 40  # the caller's dict is not modified
    with pytest.raises(FileNotFoundError, match="RUN_SWEEP"):
        rlhf_sweep.load_sweep(tmp_path / "missing.json")


def test_exercise_functions_come_from_the_answer_cells(tmp_path):
    import nbformat

    def cell(source, grade_id=None, solution=False, grade=False):
        c = nbformat.v4.new_code_cell(source)
        if grade_id:
            c.metadata["nbgrader"] = {"grade_id": grade_id, "solution": solution, "grade": grade, "locked": False,
                                      "schema_version": 3, "task": False}
        return c

    nb = nbformat.v4.new_notebook()
    nb.cells = [cell("x = 1")] + [cell(f"def {name}(*args):\n    return {k}", name, solution=True)
                                  for k, name in enumerate(rlhf_sweep.EXERCISES)]
    nb.cells.append(cell("raise RuntimeError('a test cell is not run')", "test_x", grade=True))
    path = tmp_path / "nb.ipynb"
    nbformat.write(nb, path)
    fns = rlhf_sweep.exercise_functions(path)
    assert [fns[n]() for n in rlhf_sweep.EXERCISES] == [0, 1, 2, 3]
    nb.cells = nb.cells[:3]
    nbformat.write(nb, path)
    with pytest.raises(ValueError, match="kl_penalized_rewards, ppo_clipped_loss"):
        rlhf_sweep.exercise_functions(path)
    with pytest.raises(FileNotFoundError, match="--notebook"):
        rlhf_sweep.exercise_functions(tmp_path / "missing.ipynb")


def test_beta_sweep_runs_the_pipeline_with_the_given_functions():
    calls = {"pairs": 0, "rm": 0, "kl": 0, "ppo": 0}

    def count(key, fn):
        def wrapped(*args):
            calls[key] += 1
            return fn(*args)
        return wrapped

    cfg = rlhf_sweep.SweepConfig(betas=(0.0, 1.0), steps=1, batch_size=2, rm_train_prompts=6, rm_steps=3,
                           calibration_prompts=4, eval_prompts=2)
    sweep = rlhf_sweep.beta_sweep(count("pairs", _pairs), count("rm", _bt_loss), count("kl", _kl_rewards),
                            count("ppo", _clip_loss), config=cfg, log=lambda m: None)
    assert all(calls.values()), calls
    assert list(sweep["runs"]) == ["0.0", "1.0"]
    made = sweep["provenance"]
    assert made["config"]["steps"] == 1 and made["config"]["seed"] == 0
    assert made["torch"] == torch.__version__ and set(made["seconds_per_beta"]) == {"0.0", "1.0"}
    json.dumps(sweep)


def test_cached_sweep_records_how_it_was_made():
    if not rlhf_sweep.SWEEP_PATH.is_file():
        pytest.skip("no cached sweep yet: run python -m course_utils.sweeps.rlhf")
    made = rlhf_sweep.sweep_provenance()
    assert sorted(made["config"]["betas"]) == sorted(float(b) for b in rlhf_sweep.load_sweep())
    for key in ("seed", "rm_seed", "calibration_seed", "eval_seed", "steps", "batch_size"):
        assert key in made["config"]
    for key in ("torch", "transformers", "date", "seconds_total", "regenerate"):
        assert made[key]
    assert 0.5 < made["reward_model_held_out_accuracy"] <= 1


def test_cached_sweep_has_the_betas_and_shows_the_tradeoff():
    if not rlhf_sweep.SWEEP_PATH.is_file():
        pytest.skip("no cached sweep yet: run the notebook's sweep cell with RUN_SWEEP = True")
    sweep = rlhf_sweep.load_sweep()
    betas = sorted(float(b) for b in sweep)
    assert betas[0] == 0.0 and len(betas) >= 3
    kl = {float(b): run["eval"]["kl"] for b, run in sweep.items()}
    assert kl[0.0] > kl[betas[-1]]  # a larger penalty keeps the policy closer to the reference
    for run in sweep.values():
        assert len(run["history"]["reward"]) == len(run["history"]["kl"]) > 0
        assert run["eval"]["texts"]


def test_beta_explorer_redraws_per_beta_headlessly():
    from course_utils.widgets.rlhf import beta_explorer

    def run(beta, kl):
        return {"history": {"reward": [0, 1], "labeller": [0, 1], "kl": [0, kl], "seconds": [1, 1]},
                "eval": {"reward": 1.0, "labeller": 1.0, "kl": kl, "distinct_2": 0.5, "length": 20.0,
                         "p_positive": 0.9, "texts": [f"<b>{beta}</b>"]},
                "before": {"reward": 0.0, "labeller": 0.0, "kl": 0.0, "distinct_2": 0.8, "length": 20.0,
                           "p_positive": 0.5}}

    w = beta_explorer({"0.3": run("0.3", 1.0), "0.0": run("0.0", 9.0)})
    assert list(w.beta.options) == ["0.0", "0.3"]
    assert w.state["beta"] == 0.0 and w.state["kl"] == 9.0
    w.beta.value = "0.3"
    assert w.state["kl"] == 1.0
    assert "&lt;b&gt;0.3&lt;/b&gt;" in w.readout.value  # sample texts are escaped
    assert w.redrawer.last_error is None and max(w.redrawer.timings_ms) < 100
    assert w.state["verdict"].startswith("✓ aligned")  # both scores rose
    hacked = run("0.0", 40.0)
    hacked["eval"]["labeller"] = -2.0
    w = beta_explorer({"0.0": hacked})
    assert "reward hacking" in w.state["verdict"] and "reward hacking" in w.readout.value
    with pytest.raises(ValueError, match="empty"):
        beta_explorer({})


def test_plots_use_the_learners_function():
    import matplotlib

    matplotlib.use("Agg")
    from course_utils.widgets.rlhf import plot_clipped_objective, plot_ppo, plot_reward_model_training

    calls = []

    def loss(lp, old, adv, eps):
        calls.append(eps)
        return _clip_loss(lp, old, adv, eps)

    fig = plot_clipped_objective(loss, clip_eps=0.3)
    assert calls and set(calls) == {0.3}
    line = fig.axes[0].lines[1].get_ydata()  # A = +1: flat at 1.3 beyond the clip
    assert max(line) == pytest.approx(1.3, abs=1e-5)
    assert plot_reward_model_training([0.7, 0.6, 0.5] * 5, 0.9).axes
    assert plot_ppo({"β = 0": rlhf.PPOHistory(beta=0.0, reward=[0, 1], labeller=[0, 1], kl=[0, 2])}).axes


def test_beta_explorer_verdict_names_what_the_run_did():
    from course_utils.widgets.rlhf import _verdict

    before = {"reward": 0.1, "labeller": -1.6, "kl": 0.0}
    hacked = _verdict(before, {"reward": 6.4, "labeller": -4.4, "kl": 45.5})
    assert hacked.startswith("⚠ reward hacking") and "reward-model score +6.30" in hacked and "labeller -2.80" in hacked
    assert _verdict(before, {"reward": 1.7, "labeller": 1.2, "kl": 5.5}).startswith("✓ aligned")
    assert _verdict(before, {"reward": 0.5, "labeller": -1.1, "kl": 1.0}).startswith("· little change")
    assert _verdict(before, {}) == "", "a run without an evaluation gets no verdict rather than a wrong one"


def test_sweep_entry_points_old_and_new_and_the_old_module_path():
    """``python -m course_utils.sweeps.rlhf`` is the command; the older ``python -m course_utils.rlhf`` and
    ``import course_utils.rlhf_sweep`` (notebooks and scripts written before the move) still reach it."""
    for module in ("course_utils.sweeps.rlhf", "course_utils.rlhf"):
        shown = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True, text=True, timeout=120)
        assert shown.returncode == 0 and "--betas" in shown.stdout and "--notebook" in shown.stdout, shown.stderr
    sys.modules.pop("course_utils.rlhf_sweep", None)
    with pytest.warns(DeprecationWarning, match="course_utils.sweeps.rlhf"):
        old = importlib.import_module("course_utils.rlhf_sweep")
    assert old is rlhf_sweep
    assert rlhf_sweep.SWEEP_PATH.parent.parent.name == "assets" and rlhf_sweep.SOLUTIONS_NOTEBOOK.is_file()
