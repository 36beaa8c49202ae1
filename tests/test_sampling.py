"""Tests of course_utils.sampling and course_utils.widgets.sampling (the sampling notebook's scaffolding)."""

from __future__ import annotations

import statistics

import pytest
import torch

from course_utils import sampling


def _prompt(k: int = 2) -> str:
    pairs = sampling.review_pairs(5, k + 1)
    blocks = [f"Review: {t}\nSentiment: {y}" for t, y in pairs[:k]]
    return "\n\n".join(blocks + [f"Review: {pairs[k][0]}\nSentiment:"])


# ----------------------------------------------------------------------------------------------
# Next-token distributions and the decoding loop


def test_next_token_logits_is_the_last_position(base):
    model, tok = base
    logits = sampling.next_token_logits(model, tok, "Once upon a time")
    assert logits.shape == (len(tok),)
    with torch.no_grad():
        ref = model(**tok("Once upon a time", return_tensors="pt")).logits[0, -1]
    assert torch.allclose(logits, ref, atol=1e-5)


def test_next_token_logits_crops_a_prompt_longer_than_the_window(base):
    model, tok = base
    long = " ".join(["The lamp is good."] * 100)
    assert len(tok(long)["input_ids"]) > sampling.context_size(model)
    logits = sampling.next_token_logits(model, tok, long)
    assert torch.isfinite(logits).all()


def test_greedy_loop_matches_model_generate(base):
    model, tok = base
    prompt = "Once upon a time, there was a"
    ours = sampling.generate_with(model, tok, prompt, lambda lg: lg.argmax(-1), max_new_tokens=30)
    ids = tok(prompt, return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=30, do_sample=False, pad_token_id=tok.eos_token_id)
    assert ours == tok.decode(out[0, ids["input_ids"].shape[1]:])


def test_sampling_loop_reproduces_model_generate_with_the_same_seed(base):
    model, tok = base
    prompt = "#Person1#: Hello, I am looking for"
    torch.manual_seed(3)
    ours = sampling.generate_with(model, tok, prompt,
                                  lambda lg: torch.multinomial(torch.softmax(lg, -1), 1)[:, 0], max_new_tokens=25)
    ids = tok(prompt, return_tensors="pt")
    torch.manual_seed(3)
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=25, do_sample=True, top_k=0, pad_token_id=tok.eos_token_id)
    assert ours == tok.decode(out[0, ids["input_ids"].shape[1]:])


def test_loop_runs_past_the_context_window(base):
    model, tok = base
    ctx = sampling.context_size(model)
    prompt_ids = tok(" ".join(["The lamp is good."] * 60))["input_ids"][: ctx - 5]
    new = sampling.generate_ids(model, prompt_ids, lambda lg: lg.argmax(-1), max_new_tokens=12, stop_at_eos=False)
    assert len(new) == 1 and len(new[0]) == 12


def test_loop_samples_rows_independently_and_stops_at_eos(base):
    model, tok = base
    torch.manual_seed(0)
    seqs = sampling.generate_ids(model, [tok.eos_token_id], lambda lg: torch.multinomial(torch.softmax(lg, -1), 1),
                                 max_new_tokens=40, num_samples=4)
    assert len(seqs) == 4 and len({tuple(s) for s in seqs}) > 1
    for s in seqs:
        assert tok.eos_token_id not in s[:-1]  # nothing after an end-of-text

    always_eos = lambda lg: torch.full((lg.shape[0],), tok.eos_token_id)  # noqa: E731
    assert sampling.generate_ids(model, [5], always_eos, max_new_tokens=10) == [[tok.eos_token_id]]


@pytest.mark.parametrize("bad, message", [(lambda lg: torch.softmax(lg, -1), "integer token id"),
                                          (lambda lg: torch.tensor([1, 2, 3]), "integer token id"),
                                          (lambda lg: "a", "must return token ids")])
def test_loop_explains_a_bad_next_token_function(base, bad, message):
    model, tok = base
    with pytest.raises((TypeError, ValueError), match=message):
        sampling.generate_with(model, tok, "Once", bad, max_new_tokens=2)


def test_loop_rejects_bad_arguments(base):
    model, _ = base
    with pytest.raises(ValueError, match="max_new_tokens"):
        sampling.generate_ids(model, [1], lambda lg: lg.argmax(-1), max_new_tokens=-1)
    with pytest.raises(ValueError, match="no tokens"):
        sampling.generate_ids(model, [], lambda lg: lg.argmax(-1))


def test_repetition_measures():
    assert sampling.distinct_n("a b c d", 2) == 1.0
    assert sampling.distinct_n("a b a b a b", 2) == pytest.approx(2 / 5)
    assert sampling.distinct_n("a", 2) == 0.0
    assert sampling.longest_repeat("the lamp is good and the lamp is good and fine") == "the lamp is good and"
    assert sampling.longest_repeat("no repeats at all here") == ""


def test_entropy_bits():
    assert float(sampling.entropy_bits(torch.tensor([1.0, 0.0, 0.0]))) == pytest.approx(0.0)
    assert float(sampling.entropy_bits(torch.full((8,), 1 / 8))) == pytest.approx(3.0)


# ----------------------------------------------------------------------------------------------
# Few-shot scoring


def test_label_word_ids_are_single_tokens(base):
    _, tok = base
    for pair in sampling.world.LABEL_SETS:
        a, b = sampling.label_word_ids(tok, pair)
        assert a != b
    with pytest.raises(ValueError, match="tokens"):
        sampling.label_word_ids(tok, ("positive", "extraordinarilyunusualword"))


def test_label_probabilities_match_one_prompt_at_a_time(base):
    model, tok = base
    # shared examples (the shared-prefix path) and different lengths (padding)
    prompts = [_prompt(2)[: -len("Sentiment:")] + "Sentiment:", _prompt(2)]
    prompts += ["Review: " + t + "\nSentiment:" for t, _ in sampling.review_pairs(7, 3)]
    scores = sampling.label_probabilities(model, tok, prompts, ("good", "bad"), batch_size=2)
    ids = list(sampling.label_word_ids(tok, ("good", "bad")))
    for i, p in enumerate(prompts):
        ref = torch.softmax(sampling.next_token_logits(model, tok, p), -1)[ids]
        assert torch.allclose(scores.probs[i], ref, atol=1e-6), i
    assert scores.predictions()[0] in ("positive", "negative")
    assert len(scores.top) == len(prompts) and all(isinstance(t, str) for t in scores.top)
    assert scores.top_is(["positive"] * len(prompts)) == [t == " good" for t in scores.top]
    assert scores.mass().shape == (len(prompts),)


def test_label_probabilities_with_a_shared_prefix(base):
    model, tok = base
    prefix = _prompt(3).rsplit("\n\nReview:", 1)[0] + "\n\n"
    prompts = [prefix + f"Review: {t}\nSentiment:" for t, _ in sampling.review_pairs(9, 6)]
    assert sampling._common_prefix([tok(p)["input_ids"] for p in prompts]) > 50
    scores = sampling.label_probabilities(model, tok, prompts, ("positive", "negative"))
    ids = list(sampling.label_word_ids(tok, ("positive", "negative")))
    ref = torch.stack([torch.softmax(sampling.next_token_logits(model, tok, p), -1)[ids] for p in prompts])
    assert torch.allclose(scores.probs, ref, atol=1e-6)


def test_label_probabilities_overflow(base):
    model, tok = base
    long = " ".join(["The lamp is good."] * 70) + "\nSentiment:"
    with pytest.raises(ValueError, match="context window"):
        sampling.label_probabilities(model, tok, [long], ("positive", "negative"))
    scores = sampling.label_probabilities(model, tok, [long, "Review: ok\nSentiment:"], ("positive", "negative"),
                                          overflow="truncate")
    assert scores.truncated == [True, False] and scores.lengths[0] > sampling.context_size(model)
    with pytest.raises(ValueError, match="overflow"):
        sampling.label_probabilities(model, tok, [long], ("positive", "negative"), overflow="drop")


def test_few_shot_eval_calls_the_learners_function(base):
    model, tok = base
    calls = []

    def build(examples, query, k, label_words=("positive", "negative")):
        calls.append((len(examples), k, label_words))
        blocks = [f"Review: {t}\nSentiment: {label_words[y != 'positive']}" for t, y in examples[:k]]
        return "\n\n".join(blocks + [f"Review: {query}\nSentiment:"])

    res = sampling.few_shot_eval(model, tok, build, ks=(0, 2), n=8, n_sets=2, label_words=("good", "bad"))
    assert [r.k for r in res] == [0, 2] and len(calls) == 16
    assert all(c == (2, k, ("good", "bad")) for c, k in zip(calls, [0] * 8 + [2] * 8))
    assert all(0.0 <= r.accuracy <= 1.0 and len(r.per_set) == 2 for r in res)
    assert res[1].mean_tokens > res[0].mean_tokens
    again = sampling.few_shot_eval(model, tok, build, ks=(0, 2), n=8, n_sets=2, label_words=("good", "bad"))
    assert [r.accuracy for r in again] == [r.accuracy for r in res]  # deterministic
    assert "tiny" not in sampling.results_table(res) and "accuracy" in sampling.results_table(res)

    three_args = lambda ex, q, k: build(ex, q, k)  # noqa: E731 - no label_words parameter: not passed
    assert sampling.few_shot_eval(model, tok, three_args, ks=(0,), n=4, n_sets=2)
    with pytest.raises(ValueError, match="split evenly"):
        sampling.few_shot_eval(model, tok, build, ks=(0,), n=10, n_sets=4)


# ----------------------------------------------------------------------------------------------
# Plots and the decoding explorer


def test_plots_return_figures():
    from matplotlib.figure import Figure

    from course_utils.widgets import sampling as ws

    assert isinstance(ws.plot_distribution(torch.tensor([0.5, 0.3, 0.2]), ["a", "b", "c"], kept=[1, 1, 0]), Figure)
    assert isinstance(ws.plot_temperatures({0.5: [0.9, 0.1], 2.0: [0.6, 0.4]}, ["a", "b"]), Figure)
    assert isinstance(ws.plot_cumulative(torch.tensor([0.5, 0.3, 0.2]), 0.7, 2), Figure)
    res = [sampling.FewShotResult("m", k, 0.5 + 0.1 * k, 0.2, 30 * (k + 1), 0.0) for k in (0, 1, 2)]
    assert isinstance(ws.plot_few_shot(res, context_k=1.5), Figure)
    with pytest.raises(ValueError, match="labels"):
        ws.plot_distribution([0.5, 0.5], ["a"])


def _my_filters():
    """Learner-style functions written here, independent of the transformers warpers the widget defaults to."""
    def softmax(logits, temperature):
        return torch.softmax(logits / temperature, dim=-1)

    def top_k(logits, k):
        kth = torch.sort(logits, descending=True).values[..., min(k, logits.shape[-1]) - 1]
        return torch.where(logits >= kth, logits, torch.tensor(float("-inf")))

    def top_p(logits, p):
        probs = torch.softmax(logits, -1)
        order = torch.argsort(probs, descending=True)
        before = torch.cumsum(probs[order], 0) - probs[order]
        keep = torch.zeros_like(probs, dtype=torch.bool)
        keep[order[before < p]] = True
        return torch.where(keep, logits, torch.tensor(float("-inf")))

    return {"softmax": softmax, "top_k": top_k, "top_p": top_p}


def test_explorer_redraws_the_distribution_headlessly(base):
    from transformers import TopPLogitsWarper

    from course_utils.widgets.sampling import decoding_explorer

    model, tok = base
    ex = decoding_explorer(model, tok, prompt="Once upon a time, there was a")
    assert ex.redrawer.last_error is None and "transformers" in ex.children[1].children[1].value
    assert bool(ex.kept.all()) and torch.allclose(ex.final, ex.probs)
    ex.top_k.value = 5
    assert int(ex.kept.sum()) == 5 and "<b>5</b>" in ex.summary.value
    assert abs(float(ex.final.sum()) - 1) < 1e-5 and float(ex.final[~ex.kept].sum()) == 0
    ex.top_k.value = 0
    ex.top_p.value = 0.9
    logits = sampling.next_token_logits(model, tok, "Once upon a time, there was a")
    expected = torch.isfinite(TopPLogitsWarper(0.9)(None, logits[None])[0])
    assert torch.equal(ex.kept, expected)
    n_hot = int(ex.kept.sum())
    ex.temperature.value = 0.3
    assert int(ex.kept.sum()) < n_hot  # cooling: fewer tokens reach p
    assert float(ex.probs.max()) > float(torch.softmax(logits, -1).max())
    ex.prompt.value = "#Person1#: Hello, I am looking for a red"
    assert "line-through" in ex.chart.value and ex.redrawer.last_error is None


def test_explorer_uses_the_learners_functions_and_is_fast(base):
    from course_utils.widgets.sampling import decoding_explorer

    model, tok = base
    ex = decoding_explorer(model, tok, filter_fns=_my_filters())
    assert "your" in ex.children[1].children[1].value
    times = []
    for t, k, p in [(0.5, 0, 1.0), (1.5, 10, 1.0), (1.0, 0, 0.8), (2.0, 50, 0.95), (0.7, 3, 0.5)] * 4:
        ex.temperature.value, ex.top_k.value, ex.top_p.value = t, k, p
        times.append(ex.redrawer.timings_ms[-1])
        assert ex.redrawer.last_error is None
    assert statistics.median(times) < 100, f"redraw took {statistics.median(times):.1f} ms (median)"
    ex.top_k.value, ex.top_p.value = 3, 1.0
    assert int(ex.kept.sum()) == 3


def test_explorer_reports_the_learners_errors(base):
    from course_utils.widgets.sampling import decoding_explorer

    model, tok = base

    def unanswered(logits, temperature):
        raise NotImplementedError()

    ex = decoding_explorer(model, tok, filter_fns={"softmax": unanswered})
    assert "softmax_with_temperature" in ex.redrawer.last_error
    ex = decoding_explorer(model, tok, filter_fns={"top_k": lambda logits, k: logits[:k]})
    ex.top_k.value = 4
    assert "shape" in ex.redrawer.last_error
    with pytest.raises(ValueError, match="unknown keys"):
        decoding_explorer(model, tok, filter_fns={"topk": None})


def test_explorer_samples_reproducible_continuations(base):
    from course_utils.widgets.sampling import decoding_explorer

    model, tok = base
    ex = decoding_explorer(model, tok, n_samples=3, max_new_tokens=12)
    ex.temperature.value = 1.2
    ex.sample_button.click()
    first = list(ex.samples)
    assert len(first) == 3 and len(set(first)) > 1 and ex.sampler.last_error is None
    torch.manual_seed(0)
    before = torch.rand(3)
    torch.manual_seed(0)
    ex.sample_button.click()
    assert ex.samples == first  # same seed, same settings
    assert torch.equal(torch.rand(3), before)  # the notebook's global random state is left alone
    ex.top_k.value = 1
    ex.sample_button.click()
    assert len(set(ex.samples)) == 1  # greedy

    def my_sample(logits, temperature=1.0, top_k=None, top_p=None, generator=None):
        return logits.argmax(-1)

    ex = decoding_explorer(model, tok, filter_fns={"sample": my_sample}, n_samples=2, max_new_tokens=8)
    ex.sample_button.click()
    assert len(set(ex.samples)) == 1 and "your" in ex.continuations.value


def test_few_shot_prompt_has_the_review_page_format():
    examples = [("Great lamp.", "positive"), ("It broke.", "negative"), ("Nice mug.", "positive")]
    assert sampling.few_shot_prompt(examples, "The box is bad.", 0) == "Review: The box is bad.\nSentiment:"
    assert sampling.few_shot_prompt(examples, "Q.", 2, label_words=("good", "bad")) == (
        "Review: Great lamp.\nSentiment: good\n\nReview: It broke.\nSentiment: bad\n\nReview: Q.\nSentiment:")
    assert sampling.few_shot_prompt(tuple(examples), "Q.", 1).startswith("Review: Great lamp.\nSentiment: positive\n\n")
    for bad_k in (-1, 4, 1.5):
        with pytest.raises(ValueError):
            sampling.few_shot_prompt(examples, "Q.", bad_k)
    with pytest.raises(ValueError, match="neutral"):
        sampling.few_shot_prompt([("Meh.", "neutral")], "Q.", 1)
