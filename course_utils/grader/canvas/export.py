"""Grades -> a CSV that Canvas's gradebook import accepts (see :mod:`course_utils.grader.canvas`)."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from course_utils.grader.canvas.collect import write_file
from course_utils.grader.canvas.roster import CANVAS_INFO, Roster


@dataclass
class CanvasExport:
    path: Path
    assignments: list[str]
    students: int
    unmatched: list[str] = field(default_factory=list)   # graded students who are not in the roster
    warnings: list[str] = field(default_factory=list)


def _number(text: str | None) -> float | None:
    try:
        return float(text) if text not in (None, "") else None
    except ValueError:
        return None


def _fmt(x: float) -> str:
    return f"{round(x, 2):.2f}".rstrip("0").rstrip(".")  # Canvas exports two decimals


def read_grades_csv(path: Path | str) -> list[dict[str, str]]:
    """The rows of ``course grades``'s generic CSV (student_id, assignment, status, score, max_score, flagged...)."""
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def canvas_gradebook(rows: Iterable[Mapping[str, str]], roster: Roster,
                     missing: str = "blank") -> tuple[list[list[str]], CanvasExport]:
    """The table Canvas's gradebook import reads (header, Points Possible, one line per roster student)."""
    if missing not in ("blank", "zero"):
        raise ValueError(f"missing={missing!r}: use 'blank' (no score) or 'zero'")
    export = CanvasExport(Path(), [], len(roster.students))
    cells: dict[tuple[str, str], str] = {}
    points: dict[str, float | None] = {}  # None: no row says how many points (then Canvas keeps its own)
    for n, row in enumerate(rows, start=2):
        student, name = (row.get("student_id") or "").strip(), (row.get("assignment") or "").strip()
        if not student or not name:
            export.warnings.append(f"grades line {n}: no student_id or assignment: skipped")
            continue
        max_score, score = _number(row.get("max_score")), _number(row.get("score"))
        known = [p for p in (points.get(name), max_score) if p is not None]
        points[name] = max(known) if known else None
        if student not in roster.by_student:
            export.unmatched.append(f"{student}/{name}: not in the roster {roster.path}: not exported (add a "
                                    "line with their Canvas user id)")
            continue
        if row.get("status") == "error" or score is None:
            cells[(student, name)] = ""
            export.warnings.append(f"{student}/{name}: no score (status {row.get('status') or '?'}): left blank; "
                                   "grade it again (course autograde --force --student ...)")
            continue
        cells[(student, name)] = _fmt(score)
        if (row.get("flagged") or "no") != "no":
            export.warnings.append(f"{student}/{name}: flagged for review ({row.get('flag_reasons') or '?'}), "
                                   f"exported with its score {_fmt(score)}: look at it before you import")
    export.assignments = sorted(points)
    default = "0" if missing == "zero" else ""
    table = [CANVAS_INFO + [roster.canvas_columns.get(a, a) for a in export.assignments],
             ["Points Possible", "", "", "", ""] + [_fmt(p) if (p := points[a]) is not None else ""
                                                   for a in export.assignments]]
    for s in sorted(roster.students, key=lambda s: (s.name.lower(), s.student_id)):
        table.append([s.name or s.student_id, str(s.canvas_user_id), s.sis_user_id, s.sis_login_id, s.section]
                     + [cells.get((s.student_id, a), default) for a in export.assignments])
    return table, export


def write_canvas_grades(rows: Iterable[Mapping[str, str]], roster: Roster, out: Path | str,
                        missing: str = "blank") -> CanvasExport:
    """Write :func:`canvas_gradebook` to ``out`` (UTF-8 CSV) and say what was left out."""
    table, export = canvas_gradebook(rows, roster, missing)
    buffer = io.StringIO()
    csv.writer(buffer).writerows(table)
    export.path = Path(out)
    write_file(export.path, buffer.getvalue().encode("utf-8"))
    return export
