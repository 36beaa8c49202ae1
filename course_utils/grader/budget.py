"""What one cell, or one test's calls into the student's kernel, may use: CPU time, wall-clock time, bytes.

A :class:`Budget` is charged to the sandbox's own CPU time (a busy neighbour cannot make a cell time out), with a
wall-clock bound of ``wall_factor`` times the limit (a kernel that only sleeps still ends) and the notebook's
deadline; :meth:`Budget.take` counts the answers a test received against ``max_received_mb``. The session it
meters is a :class:`course_utils.grader.kernel.KernelSession` (anything with ``settings``, ``deadline`` and
``cpu_now()``).
"""

from __future__ import annotations

import json
import time
from typing import Any, Protocol


class TooMuchDataError(RuntimeError):
    """The values a test received from the student's code add up to more than the grader accepts."""


class Metered(Protocol):
    """What a budget reads of its kernel session."""

    settings: Any        # course_utils.grader.kernel.Settings: timeout, wall_factor, notebook_timeout, ...
    deadline: float      # time.monotonic() at which the whole notebook is out of time

    def cpu_now(self) -> float: ...


class Budget:
    """CPU and wall-clock allowance of one cell, or of one test's calls into the kernel."""

    def __init__(self, session: Metered, what: str) -> None:
        self.session, self.what = session, what
        self.received = 0
        self.cpu_start = session.cpu_now()
        self.wall_start = time.monotonic()

    def exceeded(self) -> str | None:
        """Why this cell or test is out of time, or None."""
        settings = self.session.settings
        cpu = self.session.cpu_now() - self.cpu_start
        wall = time.monotonic() - self.wall_start
        if cpu > settings.timeout:
            return f"{self.what} timed out (more than {settings.timeout} s of CPU time)"
        if wall > settings.timeout * settings.wall_factor:
            return f"{self.what} timed out (more than {settings.timeout * settings.wall_factor:g} s)"
        if time.monotonic() > self.session.deadline:
            return f"the notebook timed out (its {settings.notebook_timeout} s budget)"
        return None

    def take(self, header: dict, buffers: list) -> None:
        """Count one reply against the bytes the judge accepts from the kernel for this cell or test."""
        self.received += sum(len(b) for b in buffers) + len(json.dumps(header, default=str))
        limit = self.session.settings.max_received_mb
        if limit and self.received > limit * 2**20:
            raise TooMuchDataError(f"{self.what}: the student's code sent more than {limit} MB of answers "
                                   "(the grader's limit per test)")
