"""Tests of course_utils.finetuning (data, training loop, evaluation), the cached sweep (course_utils.sweeps.finetuning) and the LoRA-rank widget."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys

import pytest
import torch
from torch import nn

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.set_num_threads(1)  # tiny models: one thread is as fast, and far faster on a busy machine

from course_utils import finetuning as ft  # noqa: E402
from course_utils.sweeps import finetuning as fs  # noqa: E402
from course_utils import world  # noqa: E402
from course_utils.models import load_model  # noqa: E402


@pytest.fixture(scope="module")
def base():
    return load_model("tiny-base")


class _Prefix(nn.Module):
    """A minimal soft prompt for the tests (the notebook's exercise is the learner's own)."""

    def __init__(self, n: int, d: int) -> None:
        super().__init__()
        self.prompt = nn.Parameter(torch.randn(n, d) * 0.1)

    def forward(self, embeds):
        return torch.cat([self.prompt.expand(embeds.shape[0], -1, -1), embeds], dim=1)


# ----------------------------------------------------------------------------------------------
# Data


def test_encode_pair_masks_the_prompt_and_ends_with_eos(base):
    _, tok = base
    prompt, completion = ft.summary_pairs(n=1)[0]
    ids, labels = ft.encode_pair(tok, prompt, completion)
    n_prompt = len(tok(prompt)["input_ids"])
    assert len(ids) == len(labels)
    assert labels[:n_prompt] == [-100] * n_prompt
    assert labels[n_prompt:] == ids[n_prompt:]
    assert ids[-1] == tok.eos_token_id
    assert tok.decode(ids[n_prompt:-1]) == completion
    short_ids, short_labels = ft.encode_pair(tok, prompt, completion, max_len=10)
    assert len(short_ids) == len(short_labels) == 10


def test_collate_pads_right_and_masks_padding():
    ids, labels, mask = ft.collate([([5, 6, 7], [-100, 6, 7]), ([8], [8])], pad_id=0)
    assert ids.tolist() == [[5, 6, 7], [8, 0, 0]]
    assert labels.tolist() == [[-100, 6, 7], [8, -100, -100]]
    assert mask.tolist() == [[1, 1, 1], [1, 0, 0]]
    with pytest.raises(ValueError, match="no rows"):
        ft.collate([], 0)


@pytest.mark.parametrize("text", ["#Person1# buys a red lamp for ten dollars.", "It's 5 o'clock -- OK?", "",
                                  "  Multiple   spaces\nand\tTabs ", "café ümlaut"])
def test_tokenize_matches_rouge_score(text):
    from rouge_score import tokenize as rs_tokenize

    assert ft.tokenize(text) == rs_tokenize.tokenize(text, None)


def test_linear_shape_handles_linear_and_conv1d():
    from transformers.pytorch_utils import Conv1D

    assert ft.linear_shape(nn.Linear(3, 5)) == (3, 5, False)
    assert ft.linear_shape(Conv1D(5, 3)) == (3, 5, True)  # Conv1D(nf=out, nx=in), weight (in, out)
    with pytest.raises(TypeError, match="nn.Linear or a transformers Conv1D"):
        ft.linear_shape(nn.Embedding(4, 2))


# ----------------------------------------------------------------------------------------------
# Training


def test_fine_tune_trains_only_the_given_parameters_and_lowers_the_loss(base):
    model, tok = copy.deepcopy(base[0]), base[1]
    rows = ft.encode_pairs(tok, ft.summary_pairs(n=64))
    for p in model.parameters():
        p.requires_grad_(False)
    biases = [p for n, p in model.named_parameters() if n.endswith(".bias")]
    for p in biases:
        p.requires_grad_(True)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    log = ft.fine_tune(model, rows, biases, steps=12, lr=1e-2, batch_size=8, pad_id=tok.eos_token_id)
    assert len(log.losses) == 12 and log.seconds > 0 and log.trainable == sum(p.numel() for p in biases)
    assert sum(log.losses[-3:]) < sum(log.losses[:3])
    for n, p in model.named_parameters():
        changed = not torch.equal(before[n], p)
        assert changed == n.endswith(".bias"), n
    assert not model.training


def test_fine_tune_refuses_bad_arguments(base):
    model, tok = base
    rows = ft.encode_pairs(tok, ft.summary_pairs(n=4))
    with pytest.raises(ValueError, match="no parameters"):
        ft.fine_tune(model, rows, [], steps=1, lr=1e-3)
    frozen = nn.Parameter(torch.zeros(2), requires_grad=False)
    with pytest.raises(ValueError, match="requires_grad=False"):
        ft.fine_tune(model, rows, [frozen], steps=1, lr=1e-3)


def test_optimizer_state_bytes_counts_two_adam_moments():
    p = nn.Parameter(torch.randn(10, 3))
    opt = torch.optim.AdamW([p], lr=0.1)
    assert ft.optimizer_state_bytes(opt) == 0
    p.sum().backward()
    opt.step()
    assert ft.optimizer_state_bytes(opt) == 2 * 30 * 4


# ----------------------------------------------------------------------------------------------
# Evaluation


def test_batched_greedy_matches_generate_one_by_one(base):
    from course_utils.train import greedy_completion

    model, tok = base
    prompts = [world.summarize_prompt(d.text) for d in world.dialogues(world.HELD_OUT_SEED, 5)]
    prompts.append("Once upon a time")  # a much shorter prompt: lots of left padding
    batched = ft.greedy_generate(model, tok, prompts, max_new_tokens=24, batch_size=6)
    assert batched == [greedy_completion(model, tok, p, 24) for p in prompts]


def test_soft_prompt_forward_matches_peft_prompt_tuning(base):
    import peft

    model, tok = base
    soft = _Prefix(4, model.config.n_embd)
    ref = peft.get_peft_model(copy.deepcopy(model), peft.PromptTuningConfig(task_type="CAUSAL_LM",
                                                                           num_virtual_tokens=4))
    ref.prompt_encoder["default"].embedding.weight.data.copy_(soft.prompt.data)
    ids, labels, mask = ft.collate(ft.encode_pairs(tok, ft.summary_pairs(n=3)), tok.eos_token_id)
    ours = ft.soft_prompt_forward(model, soft, ids, mask, labels)
    theirs = ref(input_ids=ids, attention_mask=mask, labels=labels)
    torch.testing.assert_close(ours.logits, theirs.logits)
    torch.testing.assert_close(ours.loss, theirs.loss)


def test_soft_prompt_generation_does_not_depend_on_the_batch(base):
    model, tok = base
    torch.manual_seed(0)
    soft = _Prefix(3, model.config.n_embd)
    prompts = [world.summarize_prompt(d.text) for d in world.dialogues(world.HELD_OUT_SEED, 3)] + ["The cat"]
    together = ft.greedy_generate(model, tok, prompts, max_new_tokens=12, soft_prompt=soft, batch_size=4)
    alone = ft.greedy_generate(model, tok, prompts, max_new_tokens=12, soft_prompt=soft, batch_size=1)
    assert together == alone
    with pytest.raises(ValueError, match="soft prompt should map"):
        ft.greedy_generate(model, tok, prompts[:1], soft_prompt=lambda e: e[:, 1:])


def test_perplexity_matches_the_training_script(base):
    from course_utils.train import perplexity

    model, tok = base
    stories = world.stories(world.HELD_OUT_SEED, 6)
    assert ft.perplexity(model, tok, stories, batch_size=4) == pytest.approx(perplexity(model, tok, stories),
                                                                           rel=1e-5)


def test_mean_rouge_accepts_floats_and_triples():
    preds, refs = ["a red lamp", "the cat"], ["a red lamp", "a dog"]
    assert ft.mean_rouge(preds, refs) == pytest.approx(0.5)
    assert ft.mean_rouge(preds, refs, lambda p, r: (0.0, 0.0, 1.0)) == 1.0
    with pytest.raises(ValueError, match="as many predictions"):
        ft.mean_rouge(preds, refs[:1])


# ----------------------------------------------------------------------------------------------
# Sweep


def test_sweep_command_refuses_to_overwrite_the_cache_in_quick_mode_and_old_entry_point_still_works(capsys):
    with pytest.raises(SystemExit) as refused:
        fs.main(["--sweep", "--quick"])  # --out defaults to the shipped cache
    assert refused.value.code == 2 and "--quick would overwrite the cached sweep" in capsys.readouterr().err
    shown = subprocess.run([sys.executable, "-m", "course_utils.finetuning", "--help"], capture_output=True,
                           text=True, timeout=120)
    assert shown.returncode == 0 and "--sweep" in shown.stdout and "--merge" in shown.stdout


def test_quick_sweep_writes_every_method_and_removing_lora_restores_the_base(tmp_path):
    cfg = fs.SweepConfig(steps=2, n_train=16, n_eval=2, n_stories=3, batch_size=4, ranks={"c_attn": (1,)},
                         n_virtual_tokens=2, more_virtual_tokens=3)
    parts = [fs.run_sweep(cfg, tmp_path / f"part{i}.json", part=(i, 2), log=False) for i in range(2)]
    merged = fs.merge_sweeps([tmp_path / "part0.json", tmp_path / "part1.json"], tmp_path / "sweep.json")
    saved = json.loads((tmp_path / "sweep.json").read_text())
    assert saved == json.loads(json.dumps(merged))
    assert saved["settings"]["steps"] == 2 and saved["settings"]["eval_seed"] == world.HELD_OUT_SEED
    assert [r["index"] for r in saved["runs"]] == list(range(7))
    assert [r["method"] for r in saved["runs"]] == ["full", "bitfit", "lora", "prompt", "prompt", "full", "lora"]
    assert saved["runs"][4]["trainable_params"] == 3 * 128
    lora = saved["runs"][2]
    assert lora["trainable_params"] == 4 * 1 * (128 + 3 * 128)  # 4 layers x r x (in + out)
    baseline = parts[0]["baseline"]["story_ppl"]
    assert lora["story_ppl_adapter_removed"] == pytest.approx(baseline, abs=1e-4)
    prompt = saved["runs"][3]
    assert prompt["trainable_params"] == 2 * 128
    assert prompt["story_ppl_adapter_removed"] == pytest.approx(baseline, abs=1e-4)
    full = saved["runs"][0]
    assert full["trainable_params"] == full["total_params"] and full["cpu_seconds"] > 0
    assert full["optimizer_bytes"] == 2 * 4 * full["trainable_params"]
    assert "| full fine-tuning |" in fs.sweep_table(saved)


def test_cached_sweep_is_complete_and_consistent():
    if not fs.SWEEP_PATH.is_file():
        pytest.skip("no cached sweep yet: python -m course_utils.finetuning --sweep")
    sweep = fs.load_sweep()
    s = sweep["settings"]
    assert s["steps"] >= 100 and s["n_eval"] >= 30 and s["eval_seed"] == world.HELD_OUT_SEED
    assert sweep["sweep_seconds"] > 0
    assert [r["name"] for r in sweep["runs"]] == [m["name"] for m in fs.methods(fs.SweepConfig(
        **{k: v for k, v in s.items() if k in fs.SweepConfig.__dataclass_fields__}))]
    layers = {"c_attn": 4 * (128 + 384), "all-linear": 4 * ((128 + 384) + (128 + 128) + (128 + 512) + (512 + 128))}
    for run in sweep["runs"]:
        for key in ("rougeL", "cpu_seconds", "seconds", "trainable_params", "story_ppl_after"):
            assert key in run, (run["name"], key)
        assert 0.0 <= run["rougeL"] <= 1.0
        if run["method"] == "lora":
            assert run["trainable_params"] == run["r"] * layers[run["target"]]
            assert run["story_ppl_adapter_removed"] == pytest.approx(sweep["baseline"]["story_ppl"], abs=1e-3)


# ----------------------------------------------------------------------------------------------
# Widget

_FAKE_SWEEP = {"baseline": {"rougeL": 0.1, "story_ppl": 1.5},
               "runs": [{"method": "full", "rougeL": 0.8}]
               + [{"method": "lora", "target": "c_attn", "r": r, "rougeL": 0.2 + 0.05 * i}
                  for i, r in enumerate((1, 2, 4, 8, 16, 32, 64))]}


def test_widget_counts_parameters_and_reports_measured_quality(base):
    from course_utils.widgets.finetuning import lora_rank_explorer

    w = lora_rank_explorer(base[0], _FAKE_SWEEP)
    assert w.state["trainable"] == 8 * 4 * (128 + 384) and w.state["rougeL"] == pytest.approx(0.35)
    w.rank.value = 5
    assert w.state["trainable"] == 5 * 4 * (128 + 384) and w.state["rougeL"] is None
    assert "not measured at r=5" in w.readout.value and "r=4: 0.30" in w.readout.value
    w.target.value = "all-linear"
    assert w.state["layers"] == 16 and "not measured for these targets" in w.readout.value
    assert w.state["bytes_fp32"] == 4 * w.state["trainable"]
    assert 0 < w.state["share"] < 1 and w.redrawer.last_error is None
    assert max(w.redrawer.timings_ms[1:]) < 100


def test_widget_uses_the_learners_functions_and_shows_their_errors(base):
    from course_utils.widgets.finetuning import lora_rank_explorer

    calls = []

    def inject(model, targets, r, alpha):
        calls.append((tuple(targets), r, alpha))
        for p in model.parameters():
            p.requires_grad_(False)
        model.extra = nn.Parameter(torch.zeros(r, 3))
        return model

    w = lora_rank_explorer(base[0], None, inject_fn=inject, count_fn=lambda m: sum(
        p.numel() for p in m.parameters() if p.requires_grad))
    assert w.state["trainable"] == 8 * 3 and calls[-1] == (("c_attn",), 8, 16.0)
    w.rank.value = 2
    assert w.state["trainable"] == 6
    broken = lora_rank_explorer(base[0], None, inject_fn=inject, count_fn=lambda m: 1 / 0)
    assert broken.redrawer.last_error.startswith("ZeroDivisionError")


def test_load_sweep_says_how_to_make_a_missing_cache(tmp_path):
    with pytest.raises(FileNotFoundError, match="python -m course_utils.finetuning --sweep"):
        fs.load_sweep(tmp_path / "nothing.json")
    (tmp_path / "s.json").write_text(json.dumps(_FAKE_SWEEP))
    assert fs.load_sweep(tmp_path / "s.json") == _FAKE_SWEEP


def test_sweep_table_has_one_row_per_selected_run_with_its_figures():
    sweep = {"baseline": {"rougeL": 0.018, "story_ppl": 1.39},
             "runs": [dict(name="full fine-tuning", peft_class="none", trainable_params=981888, share=1.0,
                           cpu_seconds=61.4, rougeL=0.79, story_ppl_after=1.412),
                      dict(name="LoRA c_attn r=4", peft_class="reparameterization", trainable_params=8192,
                           share=8192 / 981888, cpu_seconds=50.2, rougeL=0.456, story_ppl_after=2.5,
                           story_ppl_adapter_removed=1.39)]}
    lines = fs.sweep_table(sweep).splitlines()
    assert len(lines) == 5 and lines[0].count("|") == lines[1].count("|") == lines[2].count("|")
    assert lines[2].startswith("| tiny-base, no tuning |") and "| 0.02 | 1.39 |" in lines[2]
    assert lines[3] == "| full fine-tuning | none | 981,888 | 100 % | 61 | 0.79 | 1.41 | - |"
    assert "| 8,192 | 0.83 % | 50 | 0.46 | 2.50 | 1.39 |" in lines[4]
    only = fs.sweep_table(sweep, ["LoRA c_attn r=4"]).splitlines()
    assert len(only) == 4 and only[-1].startswith("| LoRA c_attn r=4 |")


def test_measured_quality_keeps_plain_lora_runs_of_the_chosen_target():
    from course_utils.widgets.finetuning import measured_quality

    sweep = {"runs": [{"method": "lora", "target": "c_attn", "r": 4, "rougeL": 0.4},
                      {"method": "lora", "target": "all-linear", "r": 4, "rougeL": 0.6},
                      {"method": "lora", "target": "all-linear", "r": 8, "rougeL": 0.9, "variant": "harder"},
                      {"method": "full", "rougeL": 0.8}]}
    assert measured_quality(sweep, "c_attn") == {4: 0.4}
    assert measured_quality(sweep, "all-linear") == {4: 0.6}
    assert measured_quality(sweep, "attention") == {} and measured_quality(None, "c_attn") == {}


def test_lora_layers_match_the_names_peft_would_wrap(base):
    import peft

    from course_utils.widgets.finetuning import lora_layers

    for target, modules in ft.TARGETS.items():
        layers = lora_layers(base[0], modules)
        ref = peft.get_peft_model(copy.deepcopy(base[0]), peft.LoraConfig(r=1, target_modules=modules,
                                                                          fan_in_fan_out=True))
        assert sum(d_in + d_out for _, d_in, d_out in layers) == ref.get_nb_trainable_parameters()[0], target
    assert {name.split(".", 3)[-1] for name, _, _ in lora_layers(base[0], ["attn.c_proj"])} == {"attn.c_proj"}


def test_widget_on_the_cached_sweep_redraws_fast(base):
    from course_utils.widgets.finetuning import lora_rank_explorer, measured_quality

    if not fs.SWEEP_PATH.is_file():
        pytest.skip("no cached sweep yet: python -m course_utils.finetuning --sweep")
    sweep = fs.load_sweep()
    w = lora_rank_explorer(base[0], sweep)
    for target in ft.TARGETS:
        w.target.value = target
        for r in range(1, 65):
            w.rank.value = r
            quality = measured_quality(sweep, target)
            assert w.state["rougeL"] == quality.get(r)
            assert w.state["share"] == pytest.approx(w.state["trainable"] / base[0].num_parameters())
    timings = sorted(w.redrawer.timings_ms[1:])
    assert timings[int(0.95 * len(timings))] < 100, f"p95 redraw {timings[int(0.95 * len(timings))]:.1f} ms"


def test_needs_exercise_explains_unanswered_exercises_and_lets_real_errors_through(capsys):
    with ft.needs_exercise("LoRALinear", "inject_lora"):
        raise NotImplementedError
    assert "your LoRALinear and inject_lora: answer those exercises" in capsys.readouterr().out
    with pytest.raises(ZeroDivisionError):
        with ft.needs_exercise("SoftPrompt"):
            1 / 0


def test_count_trainable_parameters_counts_elements_once_and_skips_frozen():
    lin = nn.Linear(3, 4)
    assert ft.count_trainable_parameters(lin) == 16
    lin.weight.requires_grad_(False)
    assert ft.count_trainable_parameters(lin) == 4
    shared = nn.Linear(2, 2)
    assert ft.count_trainable_parameters(nn.Sequential(shared, shared)) == 6
    model, _ = load_model("tiny-base")
    assert ft.count_trainable_parameters(model) == model.num_parameters(only_trainable=True)
