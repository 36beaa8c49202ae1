"""The course world: deterministic, varied, and with the structure the lessons rely on."""

import hashlib

import pytest

from course_utils import world


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def test_same_seed_same_corpus_byte_for_byte():
    assert _digest(world.pretraining_corpus(3, 500)) == _digest(world.pretraining_corpus(3, 500))


def test_different_seeds_differ_and_held_out_has_unseen_combinations():
    train = set(world.pretraining_documents(world.TRAIN_SEED, 3000))
    held_out = world.pretraining_documents(world.HELD_OUT_SEED, 300)
    unseen = [d for d in held_out if d not in train]
    assert len(unseen) / len(held_out) > 0.9, "held-out documents should mostly be new combinations"


def test_corpus_is_a_few_megabytes_and_mixes_every_kind():
    docs = world.pretraining_documents(world.TRAIN_SEED, 12_000)
    size = sum(len(d) for d in docs)
    assert 2e6 < size < 8e6
    kinds = {"story": sum("upon a time" in d or " named " in d or " called " in d or " lived in " in d
                          for d in docs),
             "dialogue": sum(d.startswith("#Person1#:") for d in docs),
             "review": sum(d.startswith("Review:") for d in docs)}
    for kind, n in kinds.items():
        assert n > 0.2 * len(docs), f"too few {kind} documents: {n}"


def test_dialogue_summaries_copy_the_dialogues_facts():
    for d in world.dialogues(5, 200):
        assert d.text.startswith("#Person1#:") and "#Person2#:" in d.text
        content = [w.strip(".,") for w in d.summary.split() if w[0].isupper() or w.isdigit()]
        for word in content:
            if not word.startswith("#"):
                assert word in d.text, f"summary word {word!r} not in dialogue: {d}"


def test_review_labels_follow_the_summed_sentiment_and_are_balanced():
    reviews = world.reviews(7, 400, balanced=False)
    positives = sum(r.label == "positive" for r in reviews)
    assert 140 < positives < 260
    for r in reviews:
        assert (r.score > 0) == (r.label == "positive")
        assert r.item in r.text


def test_negation_flips_and_halves_polarity():
    assert world.preference_score("The lamp is not bad.", "lamp") == pytest.approx(0.5)
    assert world.preference_score("The lamp is very good.", "lamp") == pytest.approx(1.5)
    assert world.preference_score("The lamp is a bit noisy.", "lamp") == pytest.approx(-0.6)


def test_preference_penalises_off_topic_and_repetition():
    on_topic = world.preference_score("The lamp is great.", "lamp")
    off_topic = world.preference_score("The chair is great.", "lamp")
    repeated = world.preference_score("The lamp is great. great great great great.", "lamp")
    assert on_topic > off_topic and on_topic > repeated


def test_preferences_are_ranked_best_first():
    for p in world.preferences(11, 50):
        assert sorted(p.ranking) == list(range(len(p.responses)))
        ranked_scores = [p.scores[i] for i in p.ranking]
        assert ranked_scores == sorted(ranked_scores, reverse=True)


def test_instruction_pairs_cover_all_tasks():
    prompts = [p for p, _ in world.instructions(2, 400)]
    for head in ("Summarize the dialogue:", "Is this review positive or negative?", "Continue the story:",
                 "Write a "):
        assert any(p.startswith(head) for p in prompts), head


def test_review_page_uses_one_label_vocabulary():
    rng = world.rng_for(4)
    for _ in range(50):
        page = world.make_review_page(rng)
        labels = {line.split(": ", 1)[1] for line in page.splitlines() if line.startswith("Sentiment:")}
        assert any(labels <= set(pair) for pair in world.LABEL_SETS), labels


def test_bad_arguments_are_named():
    with pytest.raises(TypeError, match="seed must be an int"):
        world.rng_for("7")
    with pytest.raises(ValueError, match="label must be"):
        world.make_review(world.rng_for(1), label="meh")


def test_sorting_pages_draw_fresh_box_names_and_keep_them_within_a_page():
    rng = world.rng_for(8)
    pairs = set()
    for _ in range(80):
        page = world.make_sorting_page(rng)
        assert page.startswith(world.SORT_HEADER + " ") and page.endswith(".")
        items = [item.split(": ") for item in page[len(world.SORT_HEADER) + 1:-1].split(", ")]
        assert 6 <= len(items) <= 16 and all(len(item) == 2 for item in items)
        box_of: dict[str, set[str]] = {}
        for word, box in items:
            kinds = [c for c, members in world.WORD_CLASSES.items() if word in members]
            assert len(kinds) == 1, word
            box_of.setdefault(kinds[0], set()).add(box)
        assert all(len(boxes) == 1 for boxes in box_of.values()), page  # one box per kind on a page
        boxes = [b for bs in box_of.values() for b in bs]
        assert len(set(boxes)) == len(boxes) and set(boxes) <= set(world.LABEL_WORDS)
        pairs.add(tuple(sorted(boxes)))
    assert len(pairs) > 40, "box names should change from page to page"


def test_box_names_are_never_words_that_get_sorted():
    sorted_words = {w for members in world.WORD_CLASSES.values() for w in members}
    assert not sorted_words & set(world.LABEL_WORDS)
    assert world.sorting_prompt([("fox", "red"), ("Paris", "blue")], "owl") == "Sort the words: fox: red, Paris: blue, owl:"
    with pytest.raises(ValueError, match="classes must be"):
        world.make_sorting_page(world.rng_for(3), classes=["poem", "city"])
    with pytest.raises(ValueError, match="classes must be"):
        world.make_sorting_page(world.rng_for(3), classes=["city"])


def test_sentiment_score_is_the_sentiment_part_of_the_preference():
    assert world.sentiment_score("The lamp is not bad. It is very good.") == pytest.approx(0.5 + 1.5)
    assert world.sentiment_score("The lamp is great. great.") == pytest.approx(2.0)  # each word counts once
    assert world.preference_score("The lamp is great.", "lamp") == world.sentiment_score("The lamp is great.")
