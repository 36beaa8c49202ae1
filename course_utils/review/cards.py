"""Flashcard decks: loading and validating the JSON files in ``course_utils/decks/`` (see docs/decks.md).

One file per topic, ``<topic>.json``::

    {"format": "llm-foundations-deck", "version": 1, "topic": "attention",
     "title": "Attention: how a transformer reads", "notebook": "01_attention",
     "cards": [{"id": "causal-mask", "q": "...", "a": "...", "source": "course", "tags": ["masking"]}]}

A card's key in the progress file is ``<topic>/<id>``, so ids must stay stable when a card's text is edited.
Every problem is reported as a :class:`DeckError` that names the file and the card.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DECK_FORMAT = "llm-foundations-deck"
DECK_VERSION = 1
DECK_DIR = Path(__file__).resolve().parents[1] / "decks"
# The order decks are shown in; a deck file for another topic is loaded after these.
TOPICS = ("foundations", "attention", "sampling", "finetuning", "rlhf", "quantization")

_ID = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")
_SOURCE = re.compile(r"^(course|seed:[0-9]{3}_[0-9a-f]{16}\.txt(#[0-9]+)?)$")
_NOTEBOOK = re.compile(r"^([0-9]{2}_[a-z_]+|general)$")
_DECK_KEYS = {"format", "version", "topic", "title", "notebook", "cards"}
_CARD_KEYS = {"id", "q", "a", "source", "notebook", "tags", "note"}
_REQUIRED_CARD_KEYS = ("id", "q", "a", "source")


class DeckError(ValueError):
    """A deck file or one of its cards is malformed; the message names the file and the card."""


@dataclass(frozen=True)
class Card:
    """One question/answer card. ``source`` is ``course`` or ``seed:<seed file>[#card number]``."""

    topic: str
    id: str
    question: str
    answer: str
    source: str
    notebook: str
    tags: tuple[str, ...] = ()
    note: str = ""

    @property
    def key(self) -> str:
        """The card's key in the progress file."""
        return f"{self.topic}/{self.id}"


@dataclass(frozen=True)
class Deck:
    topic: str
    title: str
    notebook: str
    cards: tuple[Card, ...]
    path: Path


def _text(value: Any, where: str, field: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise DeckError(f"{where}: {field!r} must be a non-empty string, got {value!r}")
    return value.strip()


def _card(raw: Any, index: int, topic: str, notebook: str, path: Path) -> Card:
    card_id = raw.get("id") if isinstance(raw, dict) else None
    where = f"{path}: card #{index + 1}" + (f" (id {card_id!r})" if isinstance(card_id, str) else "")
    if not isinstance(raw, dict):
        raise DeckError(f"{where}: a card must be a JSON object with id, q, a, source; got {raw!r}")
    unknown = set(raw) - _CARD_KEYS
    if unknown:
        raise DeckError(f"{where}: unknown key(s) {sorted(unknown)}; a card has {sorted(_CARD_KEYS)} "
                        "(question and answer are 'q' and 'a')")
    missing = [k for k in _REQUIRED_CARD_KEYS if k not in raw]
    if missing:
        raise DeckError(f"{where}: missing {missing}; every card needs id, q, a and source")
    if not isinstance(card_id, str) or not _ID.match(card_id):
        raise DeckError(f"{where}: id {card_id!r} must be lower-case words joined by '-', e.g. 'causal-mask'")
    source = raw["source"]
    if not isinstance(source, str) or not _SOURCE.match(source):
        raise DeckError(f"{where}: source {source!r} must be 'course' or 'seed:<seed file name>[#n]', "
                        "e.g. 'seed:000_92643deff82322b1.txt#3'")
    card_notebook = raw.get("notebook", notebook)
    if not isinstance(card_notebook, str) or not _NOTEBOOK.match(card_notebook):
        raise DeckError(f"{where}: notebook {card_notebook!r} must look like '01_attention' or be 'general'")
    tags = raw.get("tags", [])
    if not isinstance(tags, list) or not all(isinstance(t, str) and t.strip() for t in tags):
        raise DeckError(f"{where}: tags must be a list of non-empty strings, got {tags!r}")
    note = raw.get("note", "")
    if not isinstance(note, str):
        raise DeckError(f"{where}: note must be a string, got {note!r}")
    return Card(topic=topic, id=card_id, question=_text(raw["q"], where, "q"), answer=_text(raw["a"], where, "a"),
                source=source, notebook=card_notebook, tags=tuple(t.strip() for t in tags), note=note.strip())


def load_deck(path: str | Path) -> Deck:
    """Load and validate one deck file; a :class:`DeckError` names the file and the card at fault."""
    path = Path(path)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise DeckError(f"{path}: not valid JSON: {err.msg} at line {err.lineno}, column {err.colno}") from None
    except OSError as err:
        raise DeckError(f"{path}: cannot be read: {err}") from None
    if not isinstance(raw, dict):
        raise DeckError(f"{path}: a deck must be a JSON object, got {type(raw).__name__}")
    unknown = set(raw) - _DECK_KEYS
    if unknown:
        raise DeckError(f"{path}: unknown top-level key(s) {sorted(unknown)}; a deck has {sorted(_DECK_KEYS)}")
    if raw.get("format") != DECK_FORMAT or raw.get("version") != DECK_VERSION:
        raise DeckError(f"{path}: expected \"format\": \"{DECK_FORMAT}\" and \"version\": {DECK_VERSION}, got "
                        f"{raw.get('format')!r} version {raw.get('version')!r}")
    topic = _text(raw.get("topic"), str(path), "topic")
    if topic != path.stem:
        raise DeckError(f"{path}: topic {topic!r} must match the file name ({path.stem!r})")
    title = _text(raw.get("title"), str(path), "title")
    notebook = _text(raw.get("notebook"), str(path), "notebook")
    if not _NOTEBOOK.match(notebook):
        raise DeckError(f"{path}: notebook {notebook!r} must look like '01_attention' or be 'general'")
    cards_raw = raw.get("cards")
    if not isinstance(cards_raw, list) or not cards_raw:
        raise DeckError(f"{path}: 'cards' must be a non-empty list of cards")
    cards = [_card(c, i, topic, notebook, path) for i, c in enumerate(cards_raw)]
    seen: dict[str, int] = {}
    for i, card in enumerate(cards):
        if card.id in seen:
            raise DeckError(f"{path}: card #{i + 1} (id {card.id!r}) repeats the id of card #{seen[card.id] + 1}; "
                            "ids must be unique within a deck")
        seen[card.id] = i
    return Deck(topic=topic, title=title, notebook=notebook, cards=tuple(cards), path=path)


def load_decks(directory: str | Path | None = None) -> dict[str, Deck]:
    """Every ``*.json`` deck in ``directory`` (default: the bundled decks), in :data:`TOPICS` order."""
    directory = Path(directory) if directory is not None else DECK_DIR
    files = sorted(directory.glob("*.json"))
    if not files:
        raise DeckError(f"{directory}: no deck files (*.json) found")
    decks = {d.topic: d for d in (load_deck(f) for f in files)}
    order = {t: i for i, t in enumerate(TOPICS)}
    return dict(sorted(decks.items(), key=lambda kv: (order.get(kv[0], len(order)), kv[0])))
