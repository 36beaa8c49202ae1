"""A submission's ``timestamp.txt``: nbgrader stores it as the submission time, and late penalties follow it.

nbgrader reads ``submitted/<student>/<assignment>/timestamp.txt`` as it is. That file comes with the submission
folder, from whoever put the folder together: ``nbgrader collect``, your own script, or the student, who can
write any date into it. ``course collect`` (Canvas) writes none (Canvas's zip holds no submission time). Nothing
here changes the file or the time nbgrader stores; an implausible one flags the submission for review
(:meth:`TimestampCheck.problem`), with what is wrong and how to fix it:

* **not a time** nbgrader's parser reads (nbgrader itself would stop on it): the submission is graded with no
  submission time (so no late penalty: :func:`nbgrader_timestamp`);
* **before the assignment's release**: ``c.SubmissionTimes.released = {"01_attention": "2026-01-12T09:00+00:00"}``
  in ``nbgrader_config.py``, else the time the release folder (``notebooks/<assignment>/``) first appeared in the
  course's git history (a lower bound: no check when neither is known);
* **in the future**: later than the moment ``course autograde`` collected it into the workspace (give or take
  ``c.SubmissionTimes.clock_skew_minutes``).
"""

from __future__ import annotations

import subprocess
from datetime import datetime, timedelta, timezone
from pathlib import Path

from traitlets import Dict, Float, Unicode
from traitlets.config import Config, Configurable

FILE = "timestamp.txt"
EXAMPLE = "2026-03-01T12:00:00+00:00"


class SubmissionTimes(Configurable):
    """When each assignment was released, for the plausibility check of ``timestamp.txt``."""

    released = Dict(value_trait=Unicode(), help="assignment -> the time it was released (ISO 8601); without "
                    "one, the first commit of notebooks/<assignment>/ in the course's git history").tag(config=True)
    clock_skew_minutes = Float(10.0, help="how far in the future a timestamp may be (clocks differ)").tag(config=True)


def parse(text: str) -> datetime:
    """``text`` as nbgrader reads it (naive UTC); ValueError when nbgrader could not read it either."""
    from nbgrader.utils import parse_utc  # noqa: PLC0415

    try:
        return parse_utc(text)
    except (ValueError, OverflowError, TypeError) as err:
        raise ValueError(f"{text!r} is not a time ({err})") from err


def read(folder: Path) -> tuple[str | None, datetime | None]:
    """The text of ``folder/timestamp.txt`` (None: no file, or an empty one, which nbgrader ignores) and its time
    (None when it is not one)."""
    path = Path(folder) / FILE
    if not path.is_file():
        return None, None
    text = path.read_text(errors="replace").strip()
    if not text:
        return None, None
    try:
        return text, parse(text)
    except ValueError:
        return text, None


def nbgrader_timestamp(folder: str) -> datetime | None:
    """A stand-in for nbgrader's ``CourseDirectory.get_existing_timestamp``: None instead of a crash when the file
    is not a time (:meth:`TimestampCheck.problem` flags it)."""
    return read(Path(folder))[1]


def first_commit_time(root: Path, folder: str) -> datetime | None:
    """When ``folder`` (relative to ``root``) first appeared in the git history of ``root`` (naive UTC); None when
    ``root`` is no git repository, git is missing or the folder was never committed."""
    try:
        out = subprocess.run(["git", "-C", str(root), "log", "--diff-filter=A", "--format=%cI", "--", folder],
                             capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    lines = out.stdout.split() if out.returncode == 0 else []
    return parse(lines[-1]) if lines else None


class TimestampCheck:
    """The plausibility check of one grading run (the release times are looked up once per assignment)."""

    def __init__(self, config: Config, root: Path, release_directory: str = "notebooks") -> None:
        settings = SubmissionTimes(config=config)
        self.skew = timedelta(minutes=settings.clock_skew_minutes)
        self.root, self.release_directory = Path(root), release_directory
        self._released: dict[str, tuple[datetime, str] | None] = {}
        for assignment, text in settings.released.items():
            try:
                self._released[assignment] = (parse(text), "SubmissionTimes.released in nbgrader_config.py")
            except ValueError as err:
                raise ValueError(f"SubmissionTimes.released[{assignment!r}]: {err}; write the release time as ISO "
                                 f"8601, e.g. {EXAMPLE!r}") from err

    def released(self, assignment: str) -> tuple[datetime, str] | None:
        """When ``assignment`` was released and where that comes from, or None when unknown."""
        if assignment not in self._released:
            folder = f"{self.release_directory}/{assignment}"
            when = first_commit_time(self.root, folder)
            self._released[assignment] = (when, f"the first commit of {folder}/") if when else None
        return self._released[assignment]

    def problem(self, folder: Path, assignment: str, collected_at: datetime | None = None,
                handed_in: Path | None = None) -> str | None:
        """Why the ``timestamp.txt`` in the submission ``folder`` is implausible, with the fix; None when it is
        absent or plausible. ``collected_at``: when the submission was collected (default: now); ``handed_in``:
        the folder it was copied from (where to fix it; default ``folder``)."""
        text, when = read(folder)
        if text is None:
            return None
        fix = (f"{FILE} comes with the submission folder, not from Canvas or `course collect`: put the time it was "
               f"really handed in into {Path(handed_in or folder) / FILE} (ISO 8601, e.g. {EXAMPLE}) or delete the "
               "file, then re-run course autograde")
        if when is None:
            return (f"{FILE} says {text[:60]!r}, which is not a time: graded without a submission time (no late "
                    f"penalty). {fix}")
        released = self.released(assignment)
        if released and when < released[0]:
            return (f"{FILE} says {_utc(when)}, before {assignment} was released ({_utc(released[0])}, "
                    f"{released[1]}): stored as the submission time, so it is never late. {fix}")
        now = (collected_at or datetime.now(timezone.utc)).astimezone(timezone.utc).replace(tzinfo=None)
        if when > now + self.skew:
            return (f"{FILE} says {_utc(when)}, after the submission was collected ({_utc(now)}): stored as the "
                    f"submission time. {fix}")
        return None



def _utc(when: datetime) -> str:
    return f"{when:%Y-%m-%d %H:%M} UTC"
