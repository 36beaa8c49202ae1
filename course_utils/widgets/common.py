"""Shared widget plumbing: error capture, figure redraws without flicker, and redraw timing."""

from __future__ import annotations

import time
import traceback
from typing import Any, Callable

import ipywidgets as widgets


def error_output(height: str = "auto") -> widgets.Output:
    """An Output for callback errors: a widget callback that raises would otherwise fail silently."""
    return widgets.Output(layout=widgets.Layout(height=height))


def figure_output(height: str = "360px") -> widgets.Output:
    """An Output with a fixed height, so redraws do not make the page jump."""
    return widgets.Output(layout=widgets.Layout(height=height, overflow="hidden"))


class Redrawer:
    """Wraps a redraw function: captures its errors into ``errors`` and records how long each call took.

    ``timings_ms`` (last 1000 calls) feeds the benchmark's redraw-latency figures.
    """

    def __init__(self, draw: Callable[..., Any], errors: widgets.Output) -> None:
        self.draw = draw
        self.errors = errors
        self.timings_ms: list[float] = []
        self.last_error: str | None = None

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            result = self.draw(*args, **kwargs)
            self.last_error = None
            self.errors.clear_output()
            return result
        except Exception as err:  # noqa: BLE001 - shown to the learner, never swallowed silently
            self.last_error = f"{type(err).__name__}: {err}"
            with self.errors:
                self.errors.clear_output()
                print("Your function raised an error while redrawing:")
                traceback.print_exc(limit=3)
            return None
        finally:
            self.timings_ms = (self.timings_ms + [(time.perf_counter() - start) * 1e3])[-1000:]
