"""Bundled models load offline, generate on-topic text, and the other loading paths behave."""

import json
import time

import pytest
import torch

from course_utils import models, world
from course_utils.models import ModelNotFoundError, load_model
from course_utils.train import greedy_completion, perplexity


@pytest.fixture(scope="module")
def base():
    return load_model("tiny-base")


@pytest.fixture(scope="module")
def instruct():
    return load_model("tiny-instruct")


def test_bundled_models_load_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model, tokenizer = load_model("tiny-base")  # load time is measured by `make bench`, not asserted here
    assert 0.8e6 < models.count_parameters(model) < 1.5e6
    assert not model.training
    assert tokenizer.eos_token == world.EOS


def test_tokenizer_round_trips_the_corpus(base):
    _, tokenizer = base
    for doc in world.pretraining_documents(world.HELD_OUT_SEED, 100):
        assert tokenizer.decode(tokenizer(doc)["input_ids"]) == doc
    assert tokenizer.decode(tokenizer("Unknown Wörter und 한국어")["input_ids"]) == "Unknown Wörter und 한국어"


@pytest.mark.parametrize("start, expected_words", [
    ("Once upon a time, there was a little fox named", {"fox", "the", "was"}),
    ("#Person1#: Hello, I am looking for", {"#Person2#:"}),
    ("Review: I bought this lamp last Monday.", {"is"}),
])
def test_base_model_continues_each_kind_of_text(base, start, expected_words):
    model, tokenizer = base
    text = greedy_completion(model, tokenizer, start, 40)
    assert len(text.split()) >= 5
    assert expected_words & set(text.split()), text


def test_held_out_perplexity_is_low(base):
    model, tokenizer = base
    assert perplexity(model, tokenizer, world.pretraining_documents(world.HELD_OUT_SEED + 1, 40)) < 3.0


def test_instruct_summarizes_and_base_does_not(base, instruct):
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"])
    dialogues = world.dialogues(world.HELD_OUT_SEED + 2, 12)

    def rouge(model_tok):
        m, t = model_tok
        return sum(scorer.score(d.summary, greedy_completion(m, t, world.summarize_prompt(d.text)))["rougeL"]
                   .fmeasure for d in dialogues) / len(dialogues)

    assert rouge(instruct) > 0.6
    assert rouge(base) < 0.4


def test_model_cards_record_the_measurements():
    for name in models.BUNDLED_MODELS:
        folder = models.bundled_model_dir(name)
        card = json.loads((folder / "metrics.json").read_text())
        assert card["metrics"]["heldout_perplexity"] <= 3.0
        assert (folder / "README.md").read_text().startswith(f"# {name}")
        assert (folder / "model.safetensors").stat().st_size < 10e6


def test_unknown_name_offline_fails_fast_with_the_bundled_list(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.perf_counter()
    with pytest.raises(ModelNotFoundError) as err:
        load_model("no-such-org/no-such-model")
    assert time.perf_counter() - start < 60, "an unknown name must fail, not hang on hub retries"
    assert "tiny-base" in str(err.value) and "tiny-instruct" in str(err.value)


def test_directory_without_config_is_explained(tmp_path):
    with pytest.raises(ModelNotFoundError, match="no config.json"):
        load_model(tmp_path)


def test_local_directory_goes_through_from_pretrained(base, tmp_path):
    model, tokenizer = base
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    again, tok2 = load_model(str(tmp_path))
    ids = tokenizer("Once upon a time", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        assert torch.allclose(model(ids).logits, again(ids).logits)
    assert tok2("Once upon a time")["input_ids"] == ids[0].tolist()


def test_eager_attention_returns_maps():
    model, tokenizer = load_model("tiny-base", attn_implementation="eager")
    ids = tokenizer("The lamp is good.", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        out = model(ids, output_attentions=True)
    assert len(out.attentions) == model.config.n_layer
    assert out.attentions[0].shape == (1, model.config.n_head, ids.shape[1], ids.shape[1])


def test_base_model_copies_from_its_context():
    """The phenomenon notebook 1 teaches: on random tokens repeated twice, the second copy is far easier."""
    from course_utils.attention import copy_test

    model, tokenizer = load_model("tiny-base", attn_implementation="eager")
    test = copy_test(model, len(tokenizer))
    assert test.ratio <= 0.3, f"loss on the second copy {test.second:.2f} vs first {test.first:.2f}"
    uniform = sum(1 / (i + 1) for i in range(30, 60)) / 30  # a head spreading its attention evenly: 0.023
    assert float(test.induction.max()) > 10 * uniform, f"no induction head: best score {float(test.induction.max()):.3f}"
    card = json.loads((models.bundled_model_dir("tiny-base") / "metrics.json").read_text())
    assert card["metrics"]["copy_ratio"] <= 0.3 and len(card["training_curve"]) > 10


@pytest.mark.parametrize("name", ["tiny-base", "tiny-instruct"])
def test_in_context_learning_rises_with_the_number_of_examples(name):
    """The phenomenon notebook 2 teaches: fresh box names, chance without examples, far better with 8."""
    from course_utils.incontext import fresh_label_eval

    model, tokenizer = load_model(name)
    for task in ("sentiment", "category"):
        k0, k8 = fresh_label_eval(model, tokenizer, ks=(0, 8), n=40, task=task)
        assert k0.accuracy <= 0.7, f"{name} {task}: {k0.accuracy:.2f} with no example is not a guess"
        assert k8.accuracy >= 0.85, f"{name} {task}: only {k8.accuracy:.2f} with 8 examples"


def test_base_model_has_a_previous_token_head_on_stories():
    """Notebook 1 finds a previous-token head: one head attends to the token just before, far above uniform."""
    from course_utils import world
    from course_utils.attention import attention_weights, causal_uniform_baseline

    model, tokenizer = load_model("tiny-base", attn_implementation="eager")
    scores, lengths = [], []
    for text in world.stories(world.HELD_OUT_SEED, 4):
        ids = torch.tensor([tokenizer(text)["input_ids"]])
        weights = attention_weights(model, ids)[0]  # (L, H, T, T)
        scores.append(torch.diagonal(weights, offset=-1, dim1=-2, dim2=-1).mean(-1))  # (L, H)
        lengths.append(ids.shape[1])
    best = float(torch.stack(scores).mean(0).max())
    assert best > 0.8 and best > 10 * causal_uniform_baseline(round(sum(lengths) / len(lengths))), best
