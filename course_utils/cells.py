"""The cell vocabulary of the course's notebooks, in one place for the learner's tools, the grader, the benchmark
and the tests.

* a **test cell** is graded code: nbgrader ``grade: true`` and not a solution (its points are all-or-nothing);
* a **solution cell** is where the student answers (``solution: true``);
* a **locked cell** is the instructor's read-only code or text (``locked: true``, not a test);
* the **hidden tests** of a test cell sit between :data:`HIDDEN_BEGIN` and :data:`HIDDEN_END`;
* a check **passed** when its cell has no error output (:func:`passed`); nbgrader's stricter rule also fails a
  test cell that wrote to stderr (``stderr_fails=True``);
* what a failed check says is its error output's ``Name: message``, ANSI colours removed (:func:`error_text`).
"""

from __future__ import annotations

import re
from typing import Any

HIDDEN_BEGIN, HIDDEN_END = "BEGIN HIDDEN TESTS", "END HIDDEN TESTS"
SOLUTION_BEGIN, SOLUTION_END = "BEGIN SOLUTION", "END SOLUTION"
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def nbgrader_meta(cell: Any) -> dict:
    meta = cell.get("metadata", {}).get("nbgrader", {}) if hasattr(cell, "get") else {}
    return meta if isinstance(meta, dict) else {}


def is_test_cell(cell: Any) -> bool:
    """A graded, autograded cell: code, ``grade: true`` and not a (manually graded) solution."""
    meta = nbgrader_meta(cell)
    return cell.get("cell_type") == "code" and bool(meta.get("grade")) and not meta.get("solution")


def is_solution_cell(cell: Any) -> bool:
    return bool(nbgrader_meta(cell).get("solution"))


def is_locked_code(cell: Any) -> bool:
    """The instructor's read-only code (not a test)."""
    meta = nbgrader_meta(cell)
    return cell.get("cell_type") == "code" and bool(meta.get("locked")) and not meta.get("grade") \
        and not meta.get("solution")


def grade_id(cell: Any) -> str | None:
    value = nbgrader_meta(cell).get("grade_id")
    return value if isinstance(value, str) else None


def points(cell: Any) -> float:
    try:
        return float(nbgrader_meta(cell).get("points", 0) or 0)
    except (TypeError, ValueError):
        return 0.0


def source_of(cell: Any) -> str:
    source = cell.get("source", "")
    return "".join(source) if isinstance(source, list) else str(source)


def without_hidden_tests(source: str, placeholder: str | None = "# (hidden tests: not shown)") -> str:
    """``source`` with every hidden-test block replaced by ``placeholder`` (or removed)."""
    kept, hidden = [], False
    for line in source.split("\n"):
        if HIDDEN_BEGIN in line:
            hidden = True
            if placeholder is not None:
                kept.append(line[: len(line) - len(line.lstrip())] + placeholder)
        elif HIDDEN_END in line:
            hidden = False
        elif not hidden:
            kept.append(line)
    return "\n".join(kept)


def error_text(cell: Any) -> str:
    """``Name: message`` of the cell's first error output, colours removed ("" when it has none)."""
    for out in cell.get("outputs", []):
        if out.get("output_type") == "error":
            return ANSI.sub("", f"{out.get('ename')}: {out.get('evalue')}").strip()
    return ""


def passed(cell: Any, stderr_fails: bool = False) -> bool:
    """A check passed: no error output (and, under nbgrader's rule, nothing written to stderr)."""
    outputs = cell.get("outputs", [])
    if any(o.get("output_type") == "error" for o in outputs):
        return False
    return not (stderr_fails and any(o.get("output_type") == "stream" and o.get("name") == "stderr"
                                     for o in outputs))


def stream_output(text: str, name: str = "stdout") -> Any:
    from nbformat.notebooknode import NotebookNode  # noqa: PLC0415

    return NotebookNode(output_type="stream", name=name, text=text)


def error_output(ename: str, evalue: str, traceback: list[str] | None = None) -> Any:
    """An error output as nbgrader reads it: a test cell with one scores 0."""
    from nbformat.notebooknode import NotebookNode  # noqa: PLC0415

    return NotebookNode(output_type="error", ename=ename, evalue=evalue,
                        traceback=traceback or [f"{ename}: {evalue}"])
