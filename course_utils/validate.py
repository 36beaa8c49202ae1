"""``course validate NOTEBOOK``: run a learner's notebook in a clean kernel and say which checks fail, and why.

It runs the notebook as the grader would (top to bottom, fresh kernel, the notebook's own folder as working
directory) but on the learner's machine, without the hidden tests and without the sandbox. The notebook file is
not changed. The exit status is 0 when every check passes, 1 when any fails, 2 when it could not run at all.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

from course_utils.cells import is_test_cell

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


@dataclass
class CheckResult:
    grade_id: str
    points: float
    passed: bool
    message: str = ""


@dataclass
class Validation:
    notebook: Path
    seconds: float = 0.0
    checks: list[CheckResult] = field(default_factory=list)
    unanswered: list[str] = field(default_factory=list)      # exercises still raising NotImplementedError
    other_errors: list[str] = field(default_factory=list)    # errors in cells that are not checks

    @property
    def ok(self) -> bool:
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
        if self.ok:
            lines.append("  all checks pass.")
        return "\n".join(lines)


def _error_text(cell: nbformat.NotebookNode) -> str:
    for out in cell.get("outputs", []):
        if out.get("output_type") == "error":
            return _ANSI.sub("", f"{out.get('ename')}: {out.get('evalue')}").strip()
    return ""


def validate(path: Path | str, timeout: int = 120) -> Validation:
    """Execute ``path`` in a fresh kernel (the file itself is not changed) and collect the checks' results."""
    from nbclient import NotebookClient  # noqa: PLC0415 - slow import

    path = Path(path).resolve()
    result = Validation(path)
    nb = nbformat.read(path, as_version=4)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    started = time.perf_counter()
    client = NotebookClient(nb, timeout=timeout, allow_errors=True, kernel_name="python3",
                            resources={"metadata": {"path": str(path.parent)}})
    client.execute()
    result.seconds = time.perf_counter() - started
    for number, cell in enumerate(nb.cells, start=1):
        if cell.cell_type != "code":
            continue
        meta = cell.metadata.get("nbgrader", {})
        message = _error_text(cell)
        if is_test_cell(cell):
            result.checks.append(CheckResult(meta.get("grade_id", f"cell {number}"), float(meta.get("points", 0)),
                                             not message, message))
        elif message.startswith("NotImplementedError"):
            result.unanswered.append(meta.get("grade_id") or f"cell {number}")
        elif message:
            result.other_errors.append(f"cell {number}{' ' + meta['grade_id'] if meta.get('grade_id') else ''}: "
                                       f"{message.splitlines()[0][:300]}")
    return result
