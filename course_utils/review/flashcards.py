"""Flashcards with spaced repetition: the review widget at the end of every notebook.

    from course_utils.review.flashcards import review
    review("attention")     # that topic's deck: cards due today, then new cards
    review()                # everything due across decks (+ new cards of decks you have started)
    review("all")           # everything due, and every new card of every deck

A card shows its question; "Show answer" flips it; you rate yourself 1-5 ("How well did you know this?
1 Not at all ... 5 Perfectly"). The rating schedules the card with SM-2 (:mod:`course_utils.review.srs`), is saved
to your progress file (outside the repository) at once, and the next card comes up. Cards rated below 4
come back at the end of the session. Decks are JSON files in ``course_utils/decks/`` (:mod:`course_utils.review.cards`).
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Sequence

import ipywidgets as widgets

from course_utils.review.cards import TOPICS, Card, Deck, DeckError, load_deck, load_decks
from course_utils.review.srs import ProgressFileError, ProgressStore, check_rating, needs_drill
from course_utils.widgets.common import NotBuilt, StaticFallback, grading

__all__ = ["review", "FlashcardWidget", "deck_summary", "select_cards", "build_queue", "to_html",
           "Card", "Deck", "DeckError", "load_deck", "load_decks", "TOPICS"]

QUESTION_PROMPT = "How well did you know this?"
RATING_BUTTONS = {1: "1 Not at all", 2: "2", 3: "3", 4: "4", 5: "5 Perfectly"}
RATING_TIPS = {1: "Not at all: show it again today and tomorrow", 2: "Barely: show it again today and tomorrow",
               3: "With effort: again today, then on schedule", 4: "After a pause: on schedule",
               5: "Perfectly: a longer interval"}
SCOPES = ("due", "all")


# ------------------------------------------------------------------------------------ text -> HTML
def _inline(text: str) -> str:
    text = re.sub(r"`([^`]+)`", r"<code>\1</code>", text)
    text = re.sub(r"\*\*([^*]+)\*\*", r"<b>\1</b>", text)
    return re.sub(r"(?<![\w*])\*([^*\s][^*]*?)\*(?![\w*])", r"<i>\1</i>", text)


def to_html(text: str) -> str:
    """A card's text as HTML: paragraphs, ``- `` bullets, ``1. `` numbered lists, `code`, **bold**, *italic*.

    Everything else is escaped; ``$...$`` LaTeX is left for the HTMLMath widget to typeset.
    """
    blocks: list[str] = []
    for para in re.split(r"\n\s*\n", text.strip()):
        lines = [ln.rstrip() for ln in para.splitlines() if ln.strip()]
        items: list[str] = []
        kind = ""
        plain: list[str] = []

        def flush_list() -> None:
            nonlocal items, kind
            if items:
                blocks.append(f"<{kind}>" + "".join(f"<li>{i}</li>" for i in items) + f"</{kind}>")
            items, kind = [], ""

        for ln in lines:
            bullet = re.match(r"^\s*[-•▪]\s+(.*)$", ln)
            number = re.match(r"^\s*\d+[.)]\s+(.*)$", ln)
            if bullet or number:
                if plain:
                    blocks.append("<p>" + "<br>".join(plain) + "</p>")
                    plain = []
                new_kind = "ul" if bullet else "ol"
                if kind and kind != new_kind:
                    flush_list()
                kind = new_kind
                items.append(_inline(html.escape((bullet or number).group(1), quote=False)))  # type: ignore[union-attr]
            else:
                flush_list()
                plain.append(_inline(html.escape(ln.strip(), quote=False)))
        flush_list()
        if plain:
            blocks.append("<p>" + "<br>".join(plain) + "</p>")
    return "".join(blocks)


# ------------------------------------------------------------------------------------ queues
def select_cards(decks: dict[str, Deck], topic: str | None, store: ProgressStore) -> tuple[str, list[Card]]:
    """(title, cards in play) for ``topic``: a deck name, ``None``/``"due"`` or ``"all"``."""
    scope = "due" if topic is None else topic
    if not isinstance(scope, str) or (scope not in decks and scope not in SCOPES):
        raise ValueError(f"unknown flashcard deck {topic!r}: choose one of {list(decks)}, "
                         "'due' (everything due) or 'all' (every deck, new cards included)")
    if scope in decks:
        return decks[scope].title, list(decks[scope].cards)
    cards = [c for d in decks.values() for c in d.cards]
    if scope == "all":
        return "All decks", cards
    started = {c.topic for c in cards if store.logs.get(c.key)}
    return "Everything due", [c for c in cards if c.topic in started]


def _last_rating_today(store: ProgressStore, card: Card, today: date) -> int | None:
    todays = [r for r in store.logs.get(card.key, []) if r.day == today]
    return todays[-1].rating if todays else None


def build_queue(cards: Sequence[Card], store: ProgressStore, today: date) -> list[Card]:
    """Today's queue: due cards (most overdue first), then new cards, then today's repeats (last rating < 4)."""
    due, new, repeat = [], [], []
    for i, card in enumerate(cards):
        state = store.state(card.key)
        last = _last_rating_today(store, card, today)
        if last is not None:
            if needs_drill(last):
                repeat.append(card)
        elif state.is_new:
            new.append(card)
        elif state.is_due(today):
            due.append((state.due, i, card))
    return [c for _, _, c in sorted(due, key=lambda t: (t[0], t[1]))] + new + repeat


@dataclass(frozen=True)
class Counts:
    due: int
    new: int
    repeat: int
    done_today: int
    total: int


def count_cards(cards: Sequence[Card], store: ProgressStore, today: date) -> Counts:
    """How many of ``cards`` are due, new, to repeat today, and done today (rated today, last rating >= 4)."""
    due = new = repeat = done = 0
    for card in cards:
        state, last = store.state(card.key), _last_rating_today(store, card, today)
        if last is not None:
            repeat += needs_drill(last)
            done += not needs_drill(last)
        elif state.is_new:
            new += 1
        elif state.is_due(today):
            due += 1
    return Counts(due, new, repeat, done, len(cards))


def deck_summary(store: ProgressStore | None = None, today: date | None = None,
                 decks: dict[str, Deck] | None = None) -> list[dict]:
    """Per deck: cards, seen, due (incl. today's repeats), new, done today and the next due date."""
    store = store if store is not None else ProgressStore.load()
    today = today or date.today()
    decks = decks if decks is not None else load_decks()
    rows = []
    for topic, deck in decks.items():
        c = count_cards(deck.cards, store, today)
        future = [s.due for s in (store.state(k.key) for k in deck.cards) if s.due is not None and s.due > today]
        rows.append({"topic": topic, "notebook": deck.notebook, "cards": c.total, "seen": c.total - c.new,
                     "due": c.due + c.repeat, "new": c.new, "done_today": c.done_today,
                     "next_due": min(future).isoformat() if future else None})
    return rows


# ------------------------------------------------------------------------------------ the widget
def _source_label(card: Card) -> str:
    if card.source == "course":
        origin = "course card"
    else:
        name, _, number = card.source[len("seed:"):].partition("#")
        origin = f"seed notes {name[:3]}" + (f", card {number}" if number else "")
    return f"{card.topic} · {card.notebook} · {origin}"


class FlashcardWidget(StaticFallback, widgets.VBox):
    """Question → "Show answer" → rate 1-5 → next card. Drive it headlessly with ``show_button.click()``
    and ``rating_buttons[r].click()``; read ``current``, ``flipped``, ``queue`` and ``counts()``.
    """

    static_title = "flashcards"

    def __init__(self, cards: Sequence[Card], store: ProgressStore, title: str,
                 today: date | None = None) -> None:
        self.cards, self.store, self.title = list(cards), store, title
        self._today = today
        self.flipped = False
        self.header = widgets.HTML()
        self.meta = widgets.HTML()
        self.question = widgets.HTMLMath(layout=widgets.Layout(min_height="70px"))
        self.answer = widgets.HTMLMath(layout=widgets.Layout(min_height="110px"))
        self.note = widgets.HTML()
        self.show_button = widgets.Button(description="Show answer", button_style="primary",
                                          tooltip="Say your answer first, then check it")
        self.show_button.on_click(lambda _b: self.show_answer())
        self.rating_buttons = {}
        for r, label in RATING_BUTTONS.items():
            button = widgets.Button(description=label, tooltip=RATING_TIPS[r],
                                    layout=widgets.Layout(width="112px" if r in (1, 5) else "44px"))
            button.on_click(lambda _b, r=r: self.rate(r))
            self.rating_buttons[r] = button
        self.rating_box = widgets.HBox([widgets.Label(QUESTION_PROMPT), *self.rating_buttons.values()])
        self.notices = widgets.HTML()
        self.errors = widgets.HTML()  # save failures (an HTML value, so tests and the browser read the same)
        card_box = widgets.VBox([self.meta, self.question, self.answer, self.note],
                                layout=widgets.Layout(border="1px solid #ccc", padding="4px 12px",
                                                      min_height="230px"))
        super().__init__([self.header, card_box,
                          widgets.HBox([self.show_button, self.rating_box], layout=widgets.Layout(height="40px")),
                          self.notices, self.errors], layout=widgets.Layout(max_width="860px"))
        self.queue = build_queue(self.cards, store, self.today)
        self._render()

    @property
    def today(self) -> date:
        return self._today or date.today()

    @property
    def current(self) -> Card | None:
        return self.queue[0] if self.queue else None

    def counts(self) -> Counts:
        return count_cards(self.cards, self.store, self.today)

    # -------------------------------------------------------------- actions
    def show_answer(self) -> None:
        """Flip the current card."""
        if self.current is None:
            return
        self.flipped = True
        self._render()

    def rate(self, rating: int) -> None:
        """Rate the current card (after flipping it), save, and move on."""
        check_rating(rating)
        card = self.current
        if card is None or not self.flipped:
            return
        try:
            self.store.record(card.key, rating, self.today)
            self.errors.value = ""
        except (OSError, ProgressFileError) as err:
            self.errors.value = (f"<p style='color:#b00'>Your rating was kept for this session but could not be "
                                 f"saved to {html.escape(str(self.store.path))}: {html.escape(str(err))}. It will be "
                                 "saved with your next rating once the problem is gone.</p>")
        self.queue.pop(0)
        if needs_drill(rating):
            self.queue.append(card)
        self.flipped = False
        self._render()

    # -------------------------------------------------------------- view
    def _render(self) -> None:
        c = self.counts()
        self.header.value = (f"<b>{html.escape(self.title)}</b> &nbsp; Due <b>{c.due}</b> · New <b>{c.new}</b>"
                             f" · Repeat <b>{c.repeat}</b> · Done today <b>{c.done_today}</b>"
                             f" <span style='color:#888'>({c.total} cards)</span>")
        self.notices.value = "".join(f"<p style='color:#b00'>{html.escape(n)}</p>" for n in self.store.notices)
        card = self.current
        if card is None:
            upcoming = [s.due for s in (self.store.state(k.key) for k in self.cards) if s.due and s.due > self.today]
            later = f" Next review: {min(upcoming).isoformat()}." if upcoming else ""
            self.meta.value = ""
            if not self.cards:
                later = (" Decks join this review once you have rated one of their cards: start one with "
                         "<code>review(\"attention\")</code>, or every deck with <code>review(\"all\")</code>.")
            self.question.value = f"<p><b>Nothing left to review here today.</b>{later}</p>"
            self.answer.value = self.note.value = ""
            self.show_button.disabled = True
            self.show_button.layout.display = "none"
            self.rating_box.layout.display = "none"
            return
        self.meta.value = f"<span style='color:#888;font-size:0.85em'>{html.escape(_source_label(card))}</span>"
        self.question.value = f"<div style='font-size:1.1em'><b>Q.</b> {to_html(card.question)}</div>"
        self.answer.value = (f"<div><b>A.</b> {to_html(card.answer)}</div>" if self.flipped else "")
        self.note.value = (f"<div style='color:#666;font-size:0.85em;line-height:1.35'><i>{html.escape(card.note)}"
                           "</i></div>"
                           if self.flipped and card.note else "")
        self.show_button.disabled = self.flipped
        # one row holds either the "Show answer" button or the rating buttons: the page does not jump
        self.show_button.layout.display = "none" if self.flipped else ""
        self.rating_box.layout.display = "" if self.flipped else "none"
        for button in self.rating_buttons.values():
            button.disabled = not self.flipped


def _open_store(path: str | Path | None) -> ProgressStore:
    """The learner's progress; a file that cannot be used is reported in the widget, never a crash."""
    try:
        return ProgressStore.load(path)
    except (OSError, ProgressFileError) as err:
        store = ProgressStore(path)
        store.notices.append(f"Your flashcard progress could not be loaded from {store.path}: {err}. "
                             "Cards are shown as new; ratings are saved only once the file can be read.")
        return store


def review(topic: str | None = None, *, today: date | None = None, progress_file: str | Path | None = None,
           deck_dir: str | Path | None = None) -> FlashcardWidget | NotBuilt:
    """A flashcard widget for one topic's deck, or for everything due (``None``/``"due"``) or ``"all"``.

    ``progress_file`` defaults to :func:`course_utils.review.srs.default_progress_path`; ``today`` and
    ``deck_dir`` are for tests. While autograding (``NBGRADER_EXECUTION`` set) no deck or progress file is
    read: a :class:`~course_utils.widgets.common.NotBuilt` note comes back.
    """
    if grading():
        return NotBuilt(FlashcardWidget.static_title)
    decks = load_decks(deck_dir)
    store = _open_store(progress_file)
    title, cards = select_cards(decks, topic, store)
    return FlashcardWidget(cards, store, title, today=today)
