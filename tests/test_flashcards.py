"""Flashcards: SM-2 intervals, the progress file (atomic, merged, corruption kept aside), decks, the widget."""

from __future__ import annotations

import json
import multiprocessing
import os
import re
from datetime import date, timedelta
from pathlib import Path

import pytest

from course_utils.review import cards as cards_mod
from course_utils.review import srs
from course_utils.review.cards import DeckError, load_deck, load_decks
from course_utils.review.flashcards import FlashcardWidget, build_queue, review, select_cards, to_html
from course_utils.review.srs import CardState, ProgressFileError, ProgressFileWarning, ProgressStore, apply_rating, sm2

DAY = date(2026, 1, 10)
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def progress_file(tmp_path, monkeypatch):
    """Every test gets its own progress file: never the learner's."""
    path = tmp_path / "data" / "progress.json"
    monkeypatch.setenv("COURSE_PROGRESS_FILE", str(path))
    return path


# ----------------------------------------------------------------------------------------- SM-2
def _run(ratings: list[int], start: date = DAY) -> list[CardState]:
    """Rate a new card with each rating in turn, each time on the day it falls due."""
    state, day, out = CardState(), start, []
    for r in ratings:
        state = sm2(state, r, day)
        out.append(state)
        day = state.due
    return out


@pytest.mark.parametrize("rating, easiness", [(1, 1.96), (2, 2.18), (3, 2.36), (4, 2.5), (5, 2.6)])
def test_first_rating_of_a_new_card(rating, easiness):
    s = sm2(CardState(), rating, DAY)
    assert s.interval == 1 and s.due == DAY + timedelta(days=1) and s.last_review == DAY
    assert s.easiness == pytest.approx(easiness)
    assert s.repetitions == (1 if rating >= 3 else 0)


def test_intervals_after_perfect_ratings():
    states = _run([5, 5, 5, 5])
    assert [s.interval for s in states] == [1, 6, 16, 45]  # 6 * 2.7 = 16.2 -> 16; 16 * 2.8 = 44.8 -> 45
    assert [s.easiness for s in states] == pytest.approx([2.6, 2.7, 2.8, 2.9])
    assert states[-1].due == DAY + timedelta(days=1 + 6 + 16 + 45)


def test_intervals_after_good_ratings_keep_easiness():
    states = _run([4, 4, 4, 4, 4])
    assert [s.interval for s in states] == [1, 6, 15, 38, 95]  # 37.5 rounds half up to 38; 95 = 38 * 2.5
    assert all(s.easiness == pytest.approx(2.5) for s in states)


def test_intervals_after_hard_ratings_shrink_easiness():
    states = _run([3, 3, 3, 3])
    assert [s.easiness for s in states] == pytest.approx([2.36, 2.22, 2.08, 1.94])
    # the interval uses the easiness from *before* the rating: 6 * 2.22 = 13.32 -> 13; 13 * 2.08 = 27.04 -> 27
    assert [s.interval for s in states] == [1, 6, 13, 27]


def test_a_lapse_restarts_the_intervals():
    states = _run([5, 5, 5, 2, 4, 4])
    lapse = states[3]
    assert (lapse.repetitions, lapse.interval, lapse.lapses) == (0, 1, 1)
    assert lapse.easiness == pytest.approx(2.8 - 0.32)
    assert [s.interval for s in states[4:]] == [1, 6]


def test_easiness_never_drops_below_1_3():
    states = _run([1] * 6)
    assert states[-1].easiness == pytest.approx(1.3)
    assert all(s.interval == 1 and s.repetitions == 0 for s in states)
    assert states[-1].lapses == 0  # never recalled, so never lapsed


def test_same_day_rating_is_a_drill_and_keeps_the_schedule():
    first = apply_rating(CardState(), 2, DAY)
    assert apply_rating(first, 5, DAY) == first
    assert apply_rating(first, 5, DAY + timedelta(days=1)).repetitions == 1


@pytest.mark.parametrize("bad", [0, 6, 2.5, True, "3", None])
def test_ratings_outside_1_to_5_are_refused(bad):
    with pytest.raises(ValueError, match="rating must be an integer from 1"):
        srs.check_rating(bad)


def test_replay_is_order_independent_of_storage():
    reviews = [srs.Review("b", "2026-01-11T09:00:00+00:00", DAY + timedelta(days=1), 4),
               srs.Review("a", "2026-01-10T09:00:00+00:00", DAY, 5)]
    assert srs.replay(reviews) == srs.replay(list(reversed(reviews))) == _run([5, 4])[-1]


# ----------------------------------------------------------------------------------------- storage
def test_default_path_is_per_user_and_outside_the_repo(monkeypatch, tmp_path):
    monkeypatch.delenv("COURSE_PROGRESS_FILE")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert srs.default_progress_path() == tmp_path / "xdg" / "llm-foundations" / "progress.json"
    monkeypatch.delenv("XDG_DATA_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    path = srs.default_progress_path()
    assert path == tmp_path / "home" / ".local" / "share" / "llm-foundations" / "progress.json"
    assert REPO not in path.parents


def test_env_var_overrides_the_path(progress_file):
    assert srs.default_progress_path() == progress_file
    assert ProgressStore().path == progress_file


def test_ratings_survive_a_reload(progress_file):
    store = ProgressStore.load()
    store.record("attention/causal-mask", 5, DAY)
    store.record("attention/causal-mask", 4, DAY + timedelta(days=1))
    again = ProgressStore.load()
    assert again.state("attention/causal-mask") == _run([5, 4])[-1]
    raw = json.loads(progress_file.read_text())
    assert raw["format"] == srs.FORMAT and len(raw["reviews"]["attention/causal-mask"]) == 2


def test_nothing_is_written_until_a_rating(progress_file):
    ProgressStore.load()
    review("attention")
    assert not progress_file.parent.exists()


def test_write_is_atomic_temp_file_fsync_replace(progress_file, monkeypatch):
    store = ProgressStore.load()
    store.record("rlhf/ppo", 5, DAY)
    before = progress_file.read_bytes()
    calls: list[tuple] = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(srs.os, "fsync", lambda fd: (calls.append(("fsync",)), real_fsync(fd))[1])

    def crash_on_replace(src, dst):
        calls.append(("replace", Path(src).parent, Path(dst)))
        raise OSError("simulated crash before the rename")

    monkeypatch.setattr(srs.os, "replace", crash_on_replace)
    with pytest.raises(OSError, match="simulated crash"):
        store.record("rlhf/ppo", 3, DAY + timedelta(days=1))
    assert ("fsync",) in calls and calls[-1] == ("replace", progress_file.parent, progress_file)
    assert progress_file.read_bytes() == before, "a failed write must leave the old file intact"
    assert [p.name for p in progress_file.parent.iterdir() if p.suffix == ".tmp"] == [], "temp file left behind"
    monkeypatch.setattr(srs.os, "replace", real_replace)
    store.save()  # the rating kept in memory is written by the next save
    assert len(json.loads(progress_file.read_text())["reviews"]["rlhf/ppo"]) == 2


@pytest.mark.parametrize("content", ["{not json", '{"format": "something else"}', "",
                                     '{"format": "llm-foundations-progress", "version": 1, "reviews": '
                                     '{"a/b": [{"id": "x", "t": "t", "day": "2026-01-01", "rating": 9}]}}'])
def test_corrupted_file_is_moved_aside_and_reported(progress_file, content):
    progress_file.parent.mkdir(parents=True)
    progress_file.write_text(content)
    with pytest.warns(ProgressFileWarning, match="moved aside"):
        store = ProgressStore.load()
    aside = list(progress_file.parent.glob("progress.json.corrupt-*"))
    assert len(aside) == 1 and aside[0].read_text() == content, "the corrupted file must be kept, unchanged"
    assert not progress_file.exists()
    assert store.notices and str(aside[0]) in store.notices[0]
    store.record("attention/rnn", 4, DAY)
    assert ProgressStore.load().state("attention/rnn").repetitions == 1


def test_corruption_is_shown_in_the_widget(progress_file):
    progress_file.parent.mkdir(parents=True)
    progress_file.write_text("garbage")
    with pytest.warns(ProgressFileWarning):
        w = review("attention", today=DAY)
    assert "moved aside" in w.notices.value and "corrupt-" in w.notices.value


def test_newer_format_is_refused_not_overwritten(progress_file):
    progress_file.parent.mkdir(parents=True)
    text = json.dumps({"format": srs.FORMAT, "version": srs.VERSION + 1, "reviews": {}})
    progress_file.write_text(text)
    with pytest.raises(ProgressFileError, match="newer version"):
        ProgressStore.load()
    w = review("sampling", today=DAY)
    assert "could not be loaded" in w.notices.value
    w.show_button.click()
    w.rating_buttons[5].click()
    assert progress_file.read_text() == text
    assert "could not be saved" in w.errors.value


def test_two_stale_stores_do_not_lose_each_others_ratings(progress_file):
    a, b = ProgressStore.load(), ProgressStore.load()
    a.record("attention/rnn", 5, DAY)
    b.record("sampling/greedy", 3, DAY)
    a.record("attention/bpe", 4, DAY)
    logs = ProgressStore.load().logs
    assert set(logs) == {"attention/rnn", "sampling/greedy", "attention/bpe"}


def _writer(path: str, worker: int, n: int, barrier) -> None:
    os.environ["COURSE_PROGRESS_FILE"] = path
    store = ProgressStore.load()  # loaded once: stale as soon as another process writes
    barrier.wait()
    for i in range(n):
        store.record(f"rlhf/card-{i % 5}", 1 + (worker + i) % 5, DAY + timedelta(days=i))


def test_concurrent_writers_in_processes_keep_every_rating(progress_file):
    try:
        ctx = multiprocessing.get_context("fork")
    except ValueError:  # pragma: no cover - platforms without fork
        pytest.skip("needs the fork start method")
    workers, n = 4, 25
    barrier = ctx.Barrier(workers)
    procs = [ctx.Process(target=_writer, args=(str(progress_file), w, n, barrier)) for w in range(workers)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0] * workers
    logs = json.loads(progress_file.read_text())["reviews"]
    assert sum(len(v) for v in logs.values()) == workers * n
    assert len({e["id"] for v in logs.values() for e in v}) == workers * n


# ----------------------------------------------------------------------------------------- decks
def test_bundled_decks_load_with_every_topic():
    decks = load_decks()
    assert list(decks) == list(cards_mod.TOPICS)
    for topic in ("attention", "sampling", "finetuning", "rlhf", "quantization"):
        assert len(decks[topic].cards) >= 25, topic
        assert decks[topic].notebook.endswith(topic)


def test_every_seed_flashcard_is_in_a_deck():
    sources = {c.source for d in load_decks().values() for c in d.cards}
    numbered = {"000_92643deff82322b1.txt": 13, "001_64613055a4996312.txt": 24}
    for name, count in numbered.items():
        missing = [n for n in range(1, count + 1) if f"seed:{name}#{n}" not in sources]
        assert not missing, f"seed cards of {name} missing from the decks: {missing}"
    for name in ("002_35fcce53b74846a3.txt", "003_6012cd2a07260b51.txt", "004_eb4863e6d2d138da.txt"):
        assert any(s.startswith(f"seed:{name}") for s in sources), name


def test_decks_are_clean_english_with_the_notes_errors_fixed():
    all_cards = [c for d in load_decks().values() for c in d.cards]
    text = " ".join(c.question + " " + c.answer for c in all_cards)
    assert not re.search(r"[\uac00-\ud7af\u4e00-\u9fff]", text), "untranslated Korean/Chinese text in a deck"
    for wrong in ("precious", "Shredded", "undirectional", "20h tasks"):
        assert wrong not in text
    use_cases = next(c for c in all_cards if c.source == "seed:000_92643deff82322b1.txt#6")
    assert "summar" in use_cases.answer.lower() and "translat" in use_cases.answer.lower()
    assert len({c.key for c in all_cards}) == len(all_cards)
    for c in all_cards:
        for text in (c.question, c.answer):
            assert text.count("$") % 2 == 0, f"unbalanced $...$ (LaTeX) in card {c.key}"
            assert not re.search(r"(?<!\\)\\(?!\\)[a-z]+", re.sub(r"\$[^$]*\$|`[^`]*`", "", text)), \
                f"a LaTeX command outside $...$ in card {c.key}"


def _deck(tmp_path: Path, cards: list, topic: str = "demo", **top) -> Path:
    deck = {"format": "llm-foundations-deck", "version": 1, "topic": topic, "title": "Demo",
            "notebook": "01_attention", "cards": cards, **top}
    path = tmp_path / f"{topic}.json"
    path.write_text(json.dumps(deck))
    return path


GOOD = {"id": "one", "q": "Q?", "a": "A.", "source": "course"}


@pytest.mark.parametrize("bad, message", [
    ({"id": "two", "q": "Q?", "source": "course"}, r"card #2 \(id 'two'\): missing \['a'\]"),
    ({"id": "two", "q": "  ", "a": "A", "source": "course"}, r"card #2 \(id 'two'\): 'q' must be a non-empty"),
    ({"id": "Two Words", "q": "Q", "a": "A", "source": "course"}, r"card #2 .*lower-case words"),
    ({"id": "two", "question": "Q", "a": "A", "source": "course"}, r"card #2 .*unknown key.*'question'"),
    ({"id": "two", "q": "Q", "a": "A", "source": "my notes"}, r"card #2 .*source 'my notes'"),
    ({"id": "two", "q": "Q", "a": "A", "source": "course", "tags": "x"}, r"card #2 .*tags must be a list"),
    ({"id": "one", "q": "Q", "a": "A", "source": "course"}, r"card #2 \(id 'one'\) repeats the id of card #1"),
    ("just text", r"card #2: a card must be a JSON object"),
])
def test_malformed_card_error_names_file_and_card(tmp_path, bad, message):
    path = _deck(tmp_path, [GOOD, bad])
    with pytest.raises(DeckError, match=message) as err:
        load_deck(path)
    assert str(path) in str(err.value)


def test_malformed_deck_files(tmp_path):
    broken = tmp_path / "broken.json"
    broken.write_text('{"format": "llm-foundations-deck",\n "cards": [}')
    with pytest.raises(DeckError, match=r"broken.json: not valid JSON: .* line 2"):
        load_deck(broken)
    misnamed = _deck(tmp_path, [GOOD], topic="demo").rename(tmp_path / "other.json")
    with pytest.raises(DeckError, match=r"other.json: topic 'demo' must match the file name \('other'\)"):
        load_deck(misnamed)
    with pytest.raises(DeckError, match="non-empty list of cards"):
        load_deck(_deck(tmp_path, []))
    with pytest.raises(DeckError, match="no deck files"):
        load_decks(tmp_path / "empty")


def test_review_names_the_decks_when_the_topic_is_unknown():
    with pytest.raises(ValueError, match=r"unknown flashcard deck 'atention'.*'attention'"):
        review("atention")


# ----------------------------------------------------------------------------------------- widget
def _small_decks(tmp_path: Path) -> Path:
    deck_dir = tmp_path / "decks"
    deck_dir.mkdir()
    for topic in ("alpha", "beta"):
        _deck(deck_dir, [{"id": f"c{i}", "q": f"{topic} question {i}?", "a": f"{topic} answer {i}",
                          "source": "course"} for i in range(3)], topic=topic)
    return deck_dir


def test_widget_flip_and_rate_flow(tmp_path, progress_file):
    w = review("alpha", today=DAY, deck_dir=_small_decks(tmp_path))
    assert isinstance(w, FlashcardWidget) and w.current.id == "c0" and not w.flipped
    assert "alpha question 0" in w.question.value and w.answer.value == ""
    assert all(b.disabled for b in w.rating_buttons.values())
    assert w.rating_box.layout.display == "none" and w.show_button.layout.display != "none"
    w.rating_buttons[5].click()  # rating before flipping does nothing
    assert w.current.id == "c0" and not progress_file.exists()
    assert w.rating_buttons[1].description == "1 Not at all" and w.rating_buttons[5].description == "5 Perfectly"

    w.show_button.click()
    assert w.flipped and "alpha answer 0" in w.answer.value and not w.rating_buttons[3].disabled
    assert w.show_button.disabled and w.show_button.layout.display == "none" and w.rating_box.layout.display != "none"
    w.rating_buttons[5].click()
    assert w.current.id == "c1" and not w.flipped and w.answer.value == ""
    assert ProgressStore.load().state("alpha/c0").due == DAY + timedelta(days=1)
    c = w.counts()
    assert (c.due, c.new, c.repeat, c.done_today) == (0, 2, 0, 1)
    assert "New <b>2</b>" in w.header.value and "Done today <b>1</b>" in w.header.value

    w.show_button.click()
    w.rating_buttons[2].click()  # below 4: comes back at the end of the session
    assert [card.id for card in w.queue] == ["c2", "c1"] and w.counts().repeat == 1
    w.show_button.click()
    w.rating_buttons[4].click()
    assert w.current.id == "c1"
    w.show_button.click()
    w.rating_buttons[5].click()  # a drill: finishes the card, schedule unchanged
    assert w.current is None and "Nothing left" in w.question.value
    assert w.show_button.layout.display == "none" and w.rating_box.layout.display == "none"
    assert ProgressStore.load().state("alpha/c1").easiness == pytest.approx(2.18)
    assert w.counts().done_today == 3


def test_widget_next_day_shows_due_cards_first(tmp_path, progress_file):
    deck_dir = _small_decks(tmp_path)
    store = ProgressStore.load()
    store.record("alpha/c2", 5, DAY)
    store.record("alpha/c1", 2, DAY)  # still to repeat today
    today = review("alpha", today=DAY, deck_dir=deck_dir)
    assert [c.id for c in today.queue] == ["c0", "c1"]
    tomorrow = review("alpha", today=DAY + timedelta(days=1), deck_dir=deck_dir)
    assert [c.id for c in tomorrow.queue] == ["c1", "c2", "c0"]
    c = tomorrow.counts()
    assert (c.due, c.new, c.done_today) == (2, 1, 0)


def test_review_scopes(tmp_path, progress_file):
    deck_dir = _small_decks(tmp_path)
    assert review(deck_dir=deck_dir, today=DAY).cards == []  # nothing started yet
    assert "review(" in review("due", deck_dir=deck_dir, today=DAY).question.value
    ProgressStore.load().record("beta/c0", 4, DAY - timedelta(days=1))
    due = review(deck_dir=deck_dir, today=DAY)
    assert [c.key for c in due.queue] == ["beta/c0", "beta/c1", "beta/c2"]
    assert len(review("all", deck_dir=deck_dir, today=DAY).queue) == 6


def test_bundled_deck_widgets_build_for_every_topic():
    for topic in (*cards_mod.TOPICS, "all", "due", None):
        w = review(topic, today=DAY)
        assert isinstance(w, FlashcardWidget)
    store = ProgressStore.load()
    title, cards = select_cards(load_decks(), "attention", store)
    assert build_queue(cards, store, DAY) == cards  # all new, deck order


def test_card_text_is_escaped_and_formatted():
    assert to_html("an *inside* job, 2 * 3 * 4") == "<p>an <i>inside</i> job, 2 * 3 * 4</p>"
    out = to_html("Use `x < y` and **bold**.\n\n- one\n- two\n1. first\n<script>alert(1)</script>")
    assert "<script>" not in out and "&lt;script&gt;" in out
    assert "<code>x &lt; y</code>" in out and "<b>bold</b>" in out
    assert "<ul><li>one</li><li>two</li></ul><ol><li>first</li></ol>" in out
    assert to_html("$\\sqrt{d_k}$") == "<p>$\\sqrt{d_k}$</p>"
