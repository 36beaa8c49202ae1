"""Spaced repetition for the flashcards: the SM-2 schedule and the learner's progress file.

**Scheduling: SM-2** (Wozniak 1990, the SuperMemo-2 algorithm). The card's self-rating 1-5 ("How well did you
know this? 1 Not at all ... 5 Perfectly") is SM-2's quality ``q`` directly:

- ``q >= 3`` (recalled): repetitions ``n += 1``; the interval becomes 1 day (first success), 6 days
  (second), then ``previous interval * EF`` rounded half up, computed with the EF before this rating.
- ``q < 3`` (not recalled): ``n = 0`` and the interval restarts at 1 day.
- Either way the easiness factor ``EF += 0.1 - (5 - q) * (0.08 + (5 - q) * 0.02)``, never below 1.3
  (starts at 2.5): 5 -> +0.10, 4 -> 0, 3 -> -0.14, 2 -> -0.32, 1 -> -0.54.
- A card rated below 4 is shown again in the same session until it gets a 4 or 5 (SM-2's step 6). Those
  same-day repeats are drills: only the **first** rating of a card on a given day changes its schedule.

**Storage.** The progress file (default ``$XDG_DATA_HOME/llm-foundations/progress.json``, or
``~/.local/share/...``; ``COURSE_PROGRESS_FILE`` overrides) is a log of every rating, keyed by card; a card's
schedule is recomputed by replaying its log through SM-2. Saving takes a file lock, re-reads the file,
merges the logs (union by event id) and writes atomically (temp file in the same folder, fsync, os.replace),
so two open notebooks never lose each other's ratings and a crash never leaves half a file. A file that
cannot be read as a progress file is moved aside to ``progress.json.corrupt-<timestamp>`` and reported,
never silently reset.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import time
import uuid
import warnings
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Iterable

FORMAT = "llm-foundations-progress"
VERSION = 1
MIN_EASINESS = 1.3
START_EASINESS = 2.5
RATINGS = (1, 2, 3, 4, 5)
RATING_LABELS = {1: "Not at all", 2: "Barely", 3: "With effort", 4: "After a pause", 5: "Perfectly"}
LOCK_TIMEOUT_S = 10.0


# --------------------------------------------------------------------------------------------- SM-2
@dataclass(frozen=True)
class CardState:
    """A card's SM-2 state. ``due is None`` means the card is new (never rated)."""

    repetitions: int = 0          # n: successful recalls in a row
    easiness: float = START_EASINESS  # EF
    interval: int = 0             # days until the next review
    due: date | None = None
    last_review: date | None = None
    reviews: int = 0              # scheduling reviews (first rating of a day), all ratings
    lapses: int = 0               # ratings below 3 after the card had been recalled at least once

    @property
    def is_new(self) -> bool:
        return self.due is None

    def is_due(self, today: date) -> bool:
        """True for a seen card whose due date has come (new cards are not 'due')."""
        return self.due is not None and self.due <= today


def check_rating(rating: Any) -> int:
    """The rating as an int 1-5, or a ValueError that names the bad value."""
    if isinstance(rating, bool) or not isinstance(rating, int) or rating not in RATINGS:
        raise ValueError(f"a rating must be an integer from 1 (not at all) to 5 (perfectly), got {rating!r}")
    return rating


def sm2(state: CardState, rating: int, day: date) -> CardState:
    """The state after rating a card ``rating`` (1-5) on ``day``: one SM-2 step (drills excluded)."""
    q = check_rating(rating)
    if q >= 3:
        n = state.repetitions + 1
        # round half up (Python's round() would send 2.5 to 2)
        interval = 1 if n == 1 else 6 if n == 2 else max(1, math.floor(state.interval * state.easiness + 0.5))
        lapses = state.lapses
    else:
        n, interval = 0, 1
        lapses = state.lapses + (1 if state.repetitions > 0 else 0)
    easiness = max(MIN_EASINESS, state.easiness + 0.1 - (5 - q) * (0.08 + (5 - q) * 0.02))
    return CardState(repetitions=n, easiness=round(easiness, 6), interval=interval,
                     due=day + timedelta(days=interval), last_review=day, reviews=state.reviews + 1,
                     lapses=lapses)


def apply_rating(state: CardState, rating: int, day: date) -> CardState:
    """SM-2 with same-day drills: a second rating on the same day leaves the schedule unchanged."""
    check_rating(rating)
    if state.last_review == day:
        return state
    return sm2(state, rating, day)


def needs_drill(rating: int) -> bool:
    """SM-2 step 6: a card rated below 4 comes back later in the same session."""
    return check_rating(rating) < 4


# ------------------------------------------------------------------------------------ review events
@dataclass(frozen=True)
class Review:
    """One rating: ``day`` is the learner's local date (it drives the schedule), ``t`` the UTC time."""

    id: str
    t: str
    day: date
    rating: int

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "t": self.t, "day": self.day.isoformat(), "rating": self.rating}

    @staticmethod
    def from_json(raw: Any) -> "Review":
        if not isinstance(raw, dict) or set(raw) != {"id", "t", "day", "rating"}:
            raise ValueError(f"a review must be an object with keys id, t, day, rating; got {raw!r}")
        if not isinstance(raw["id"], str) or not raw["id"] or not isinstance(raw["t"], str):
            raise ValueError(f"a review's id and t must be non-empty strings; got {raw!r}")
        return Review(raw["id"], raw["t"], date.fromisoformat(raw["day"]), check_rating(raw["rating"]))


def replay(reviews: Iterable[Review]) -> CardState:
    """A card's state from its rating log, in (day, time, id) order."""
    state = CardState()
    for r in sorted(reviews, key=lambda r: (r.day, r.t, r.id)):
        state = apply_rating(state, r.rating, r.day)
    return state


# ------------------------------------------------------------------------------------------ storage
class ProgressFileError(RuntimeError):
    """The progress file cannot be used (for example written by a newer version of the course)."""


class ProgressFileWarning(UserWarning):
    """A corrupted progress file was found and moved aside."""


def default_progress_path() -> Path:
    """``$COURSE_PROGRESS_FILE``, else ``$XDG_DATA_HOME/llm-foundations/progress.json`` (or ~/.local/share)."""
    explicit = os.environ.get("COURSE_PROGRESS_FILE")
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_DATA_HOME") or (os.environ.get("LOCALAPPDATA") if os.name == "nt" else None)
    root = Path(base).expanduser() if base else Path.home() / ".local" / "share"
    return root / "llm-foundations" / "progress.json"


class _FileLock:
    """An exclusive lock on ``<file>.lock`` (fcntl on POSIX, msvcrt on Windows), waited for up to a timeout."""

    def __init__(self, path: Path, timeout: float = LOCK_TIMEOUT_S) -> None:
        self.path, self.timeout, self._fd = path, timeout, -1

    def __enter__(self) -> "_FileLock":
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                if os.name == "nt":  # pragma: no cover - exercised on Windows only
                    import msvcrt
                    msvcrt.locking(self._fd, msvcrt.LK_NBLCK, 1)
                else:
                    import fcntl
                    fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return self
            except OSError:
                if time.monotonic() > deadline:
                    os.close(self._fd)
                    raise ProgressFileError(f"could not lock {self.path} within {self.timeout:.0f} s: another "
                                            "process holds it; close other notebooks that are saving, then retry")
                time.sleep(0.01)

    def __exit__(self, *exc: object) -> None:
        try:
            if os.name == "nt":  # pragma: no cover
                import msvcrt
                os.lseek(self._fd, 0, 0)
                msvcrt.locking(self._fd, msvcrt.LK_UNLCK, 1)
            else:
                import fcntl
                fcntl.flock(self._fd, fcntl.LOCK_UN)
        finally:
            os.close(self._fd)


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically: temp file in the same folder, flush, fsync, os.replace."""
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    if os.name != "nt":  # make the rename itself durable
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def _parse(text: str) -> dict[str, list[Review]]:
    """The rating logs in a progress file's text; ValueError if it is not one, ProgressFileError if newer."""
    raw = json.loads(text)
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise ValueError(f"not a progress file (expected \"format\": \"{FORMAT}\")")
    if not isinstance(raw.get("version"), int):
        raise ValueError("its \"version\" is missing or not an integer")
    if raw["version"] > VERSION:
        raise ProgressFileError(f"it was written by a newer version of the course (format version "
                                f"{raw['version']}, this one reads {VERSION}): update the course")
    logs = raw.get("reviews")
    if not isinstance(logs, dict):
        raise ValueError("its \"reviews\" is not an object of card -> list of ratings")
    out: dict[str, list[Review]] = {}
    for key, events in logs.items():
        if not isinstance(events, list):
            raise ValueError(f"the reviews of card {key!r} are not a list")
        out[key] = [Review.from_json(e) for e in events]
    return out


def _merge(a: dict[str, list[Review]], b: dict[str, list[Review]]) -> dict[str, list[Review]]:
    """Union of two rating logs (by event id), each card's events in (day, time, id) order."""
    out: dict[str, list[Review]] = {}
    for key in sorted(set(a) | set(b)):
        by_id = {r.id: r for r in a.get(key, []) + b.get(key, [])}
        out[key] = sorted(by_id.values(), key=lambda r: (r.day, r.t, r.id))
    return out


class ProgressStore:
    """The learner's ratings, loaded from and saved to one progress file (see the module docstring).

    ``notices`` collects messages the learner must see (a corrupted file moved aside, a failed save).
    """

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        self.path = Path(path).expanduser() if path is not None else default_progress_path()
        self.logs: dict[str, list[Review]] = {}
        self.notices: list[str] = []
        self._states: dict[str, CardState] = {}

    @classmethod
    def load(cls, path: str | os.PathLike[str] | None = None) -> "ProgressStore":
        store = cls(path)
        store.reload()
        return store

    # ------------------------------------------------------------------ reading
    def _lock(self) -> _FileLock:
        return _FileLock(self.path.with_name(self.path.name + ".lock"))

    def _read_disk(self) -> dict[str, list[Review]]:
        """The file's logs; a corrupted file is moved aside (call with the lock held)."""
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {}
        try:
            return _parse(text)
        except (ValueError, TypeError, KeyError) as err:  # json.JSONDecodeError is a ValueError
            stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
            aside = self.path.with_name(f"{self.path.name}.corrupt-{stamp}")
            os.replace(self.path, aside)
            message = (f"Your flashcard progress file {self.path} could not be read ({err}). It was moved "
                       f"aside to {aside} (nothing was deleted) and a new file is started. To recover, fix "
                       f"that file and move it back.")
            self.notices.append(message)
            warnings.warn(message, ProgressFileWarning, stacklevel=3)
            return {}

    def reload(self) -> "ProgressStore":
        """Merge in what other notebooks have saved since (ratings not yet saved here are kept)."""
        if self.path.exists():
            with self._lock():
                disk = self._read_disk()
            self.logs = _merge(disk, self.logs)
            self._states.clear()
        return self

    # ------------------------------------------------------------------ state
    def state(self, key: str) -> CardState:
        """The SM-2 state of card ``key`` (``topic/id``), replayed from its log."""
        if key not in self._states:
            self._states[key] = replay(self.logs.get(key, []))
        return self._states[key]

    def reviewed_on(self, key: str, day: date) -> bool:
        """True when card ``key`` was rated on ``day``."""
        return any(r.day == day for r in self.logs.get(key, []))

    # ------------------------------------------------------------------ writing
    def record(self, key: str, rating: int, day: date | None = None, *, save: bool = True) -> CardState:
        """Log a rating of card ``key`` (on ``day``, default today) and save; returns the new state.

        If saving fails the rating stays in memory and is written by the next successful save.
        """
        check_rating(rating)
        when = datetime.now(timezone.utc)
        day = day if day is not None else date.today()
        event = Review(uuid.uuid4().hex, when.isoformat(), day, rating)
        self.logs[key] = self.logs.get(key, []) + [event]
        self._states.pop(key, None)
        if save:
            self.save()
        return self.state(key)

    def save(self) -> None:
        """Under the file lock: re-read the file, merge, write atomically."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._lock():
            merged = _merge(self._read_disk(), self.logs)
            payload = {"format": FORMAT, "version": VERSION,
                       "note": "Flashcard ratings of the LLM Foundations course (a log; schedules are SM-2 "
                               "replays of it). Safe to back up; edit with care.",
                       "reviews": {k: [r.to_json() for r in v] for k, v in merged.items()}}
            atomic_write_text(self.path, json.dumps(payload, indent=1, sort_keys=False) + "\n")
        self.logs = merged
        self._states.clear()
