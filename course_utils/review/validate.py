"""``course validate NOTEBOOK``: run a learner's notebook in a clean kernel and say which checks fail, and why.

It runs the notebook as the grader would (top to bottom, fresh kernel, the notebook's own folder as working
directory, ``NBGRADER_EXECUTION`` set: :mod:`course_utils.runner`'s rules) but on the learner's machine, without
the hidden tests and without the sandbox. The notebook file is not changed. The exit status is 0 when every check
passes, 1 when any fails, 2 when it could not run at all.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from course_utils import runner


@dataclass
class Validation:
    notebook: Path
    seconds: float = 0.0
    checks: list[runner.Check] = field(default_factory=list)
    unanswered: list[str] = field(default_factory=list)      # exercises still raising NotImplementedError
    other_errors: list[str] = field(default_factory=list)    # errors in cells that are not checks
    problem: str = ""

    @property
    def ok(self) -> bool:
        if self.problem:
            return False
        if not self.checks:
            return not self.other_errors and not self.unanswered
        return all(c.passed for c in self.checks) and not self.unanswered

    def summary(self) -> str:
        passed = sum(c.passed for c in self.checks)
        points = sum(c.points for c in self.checks if c.passed), sum(c.points for c in self.checks)
        lines = [f"{self.notebook.name}: {passed} of {len(self.checks)} checks pass "
                 f"({points[0]:g} of {points[1]:g} points visible here; hidden tests run only when graded) "
                 f"[{self.seconds:.1f} s]"]
        for check in self.checks:
            if not check.passed:
                lines.append(f"  FAIL {check.grade_id} ({check.points:g} pt): " + check.message.replace("\n", "\n       "))
        for name in self.unanswered:
            lines.append(f"  todo {name}: not answered yet (still raises NotImplementedError)")
        for error in self.other_errors:
            lines.append(f"  error {error}")
        if self.problem:
            lines.append(f"  {self.problem}")
        if self.ok:
            lines.append("  all checks pass.")
        return "\n".join(lines)


def validate(path: Path | str, timeout: int = 120) -> Validation:
    """Execute ``path`` in a fresh kernel (the file itself is not changed) and collect the checks' results."""
    path = Path(path).resolve()
    run = runner.run_notebook(path, timeout=timeout, mode="grader")
    return Validation(path, run.seconds, run.checks, run.unanswered, run.other_errors, run.problem)
