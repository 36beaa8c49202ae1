"""Fresh-label in-context learning: prompts that cannot be solved without their examples, and their scoring."""

from __future__ import annotations

import random

import pytest
import torch

from course_utils import incontext, world


def test_episode_examples_are_balanced_use_the_episode_boxes_and_never_the_query():
    for task, classes in incontext.TASKS.items():
        query = incontext.queries(task, 1)[0]
        for k in (0, 1, 2, 5, 8):
            ep = incontext.make_episode(random.Random(k), query, k, task)
            assert ep.prompt.startswith(world.SORT_HEADER) and ep.prompt.endswith(f" {query[0]}:")
            items = [item.split(": ") for item in ep.prompt[len(world.SORT_HEADER) + 1:].split(", ")[:-1]]
            assert len(items) == k and ep.label_words[0] != ep.label_words[1]
            boxes = [box for _, box in items]
            if k >= 2:
                assert abs(boxes.count(ep.label_words[0]) - boxes.count(ep.label_words[1])) <= 1
            for word, box in items:
                assert word != query[0], "the query word is never one of its own examples"
                c = ep.label_words.index(box)
                assert word in world.WORD_CLASSES[classes[c]], "each example sits in its own class's box"
    with pytest.raises(ValueError, match="k must be"):
        incontext.make_episode(random.Random(0), ("good", 0), -1)


def test_boxes_change_between_episodes_and_queries_stay_the_same():
    a, b = incontext.episodes(4, n=20), incontext.episodes(8, n=20)
    assert len({e.label_words for e in a}) > 10
    assert [e.prompt.rsplit(" ", 1)[1] for e in a] == [e.prompt.rsplit(" ", 1)[1] for e in b]
    assert [e.answer for e in a] == [i % 2 for i in range(20)]
    assert incontext.episodes(4, n=20) == a  # deterministic
    assert all("Sort the words:" in e.prompt for e in incontext.episodes(2, n=6, task="category"))
    with pytest.raises(ValueError, match="task must be"):
        incontext.episodes(2, n=4, task="poem")


def test_scores_match_one_prompt_at_a_time(base):
    model, tok = base
    eps = incontext.episodes(2, n=6)
    batched = incontext.score_episodes(model, tok, eps, batch_size=4)
    for e, row in zip(eps, batched):
        ids = torch.tensor([tok(e.prompt)["input_ids"]])
        with torch.no_grad():
            probs = torch.softmax(model(ids).logits[0, -1], -1)
        words = [tok(" " + w)["input_ids"][0] for w in e.label_words]
        assert torch.allclose(row, probs[words], atol=1e-5)


def test_fresh_label_eval_reports_every_k_and_refuses_prompts_that_do_not_fit(base):
    model, tok = base
    res = incontext.fresh_label_eval(model, tok, ks=(0, 2), n=8, name="tiny-base")
    assert [r.k for r in res] == [0, 2] and all(0 <= r.accuracy <= 1 and len(r.per_query) == 8 for r in res)
    assert res[1].mean_tokens > res[0].mean_tokens
    table = incontext.results_table(res)
    assert "tiny-base" in table and table.count("\n") == 2
    with pytest.raises(ValueError, match="context window"):
        incontext.fresh_label_eval(model, tok, ks=(90,), n=2)


def test_label_words_are_single_tokens(base):
    _, tok = base
    for word in world.LABEL_WORDS:
        assert len(tok(" " + word)["input_ids"]) == 1, word
