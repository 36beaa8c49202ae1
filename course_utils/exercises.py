"""What every notebook's demo cells share: run a demo only once the exercises it uses are answered."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator


@contextmanager
def needs_exercise(*names: str) -> Iterator[None]:
    """Run a demo that uses the learner's functions; if one is not written yet, say so instead of failing.

        with needs_exercise("top_k_filter"):
            print(top_k_filter(logits, 5))

    Only ``NotImplementedError`` (the unanswered exercise) is caught: a real bug in an answer still raises.
    """
    try:
        yield
    except NotImplementedError:
        listed = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
        which = "that exercise above, run its cell" if len(names) == 1 else "those exercises above, run their cells"
        print(f"This demo uses your {listed}: answer {which}, then run this cell again.")
