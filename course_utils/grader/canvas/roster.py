"""The roster: which Canvas user is which course student (see :mod:`course_utils.grader.canvas`)."""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass, field
from pathlib import Path

from course_utils.grader.submissions import SAFE_NAME

STUDENT_ID = SAFE_NAME    # student ids are folder names: the rule of `course autograde` (use fullmatch)
CANVAS_INFO = ["Student", "ID", "SIS User ID", "SIS Login ID", "Section"]
_NOT_ASSIGNMENTS = re.compile(r"Current Score|Current Points|Current Grade|Final Score|Final Points|Final Grade|"
                              r"Override Score|Override Grade|Override Status|^Integration ID$|^Root Account$")
_TEST_STUDENTS = {"Student, Test", "Test Student"}


class RosterError(ValueError):
    """A roster that cannot be used; the message names each bad line and how to fix it."""


@dataclass(frozen=True)
class Student:
    student_id: str          # the course's id: the folder under submissions/
    canvas_user_id: int      # Canvas's numeric user id ("ID" in its gradebook export)
    name: str = ""
    sis_user_id: str = ""
    sis_login_id: str = ""
    section: str = ""
    line: int = 0


@dataclass
class Roster:
    path: Path
    students: list[Student]
    canvas_columns: dict[str, str] = field(default_factory=dict)  # title -> "Title (id)" from a Canvas export
    skipped: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.by_canvas_id: dict[int, Student] = {s.canvas_user_id: s for s in self.students}
        self.by_student: dict[str, Student] = {s.student_id: s for s in self.students}


def _read_csv(path: Path) -> list[tuple[int, list[str]]]:
    """(line number, cells) for each row; ``;`` as separator when the header has more fields that way."""
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise RosterError(f"no roster at {path}") from None
    except UnicodeDecodeError as err:
        raise RosterError(f"{path}: not UTF-8 text ({err}); save it as CSV UTF-8") from None
    first = text.split("\n", 1)[0]
    delimiter = ";" if first.count(";") > first.count(",") else ","
    reader = csv.reader(io.StringIO(text), delimiter=delimiter)
    rows: list[tuple[int, list[str]]] = []
    try:
        for cells in reader:
            rows.append((reader.line_num, [c.strip() for c in cells]))
    except csv.Error as err:
        raise RosterError(f"{path}, line {reader.line_num}: {err}") from None
    return rows


def load_roster(path: Path | str) -> Roster:
    """Read a roster (see the module docstring); raise :class:`RosterError` listing every bad line."""
    path = Path(path)
    rows = _read_csv(path)
    if not rows:
        raise RosterError(f"{path} is empty; expected a header student_id,canvas_user_id or Canvas's gradebook export")
    header = rows[0][1]
    col = {name: i for i, name in reversed(list(enumerate(header)))}
    canvas_export = "student_id" not in col or "canvas_user_id" not in col
    if canvas_export and not (header and "Student" in header[0] and "ID" in col):
        raise RosterError(f"{path}, line 1: not a roster: expected the columns student_id,canvas_user_id (optional: "
                          f"name, sis_user_id, sis_login_id, section) or Canvas's gradebook export (Student, ID, "
                          f"SIS User ID, SIS Login ID, Section, ...); found {', '.join(header) or 'nothing'}")
    id_col = "student_id" if "student_id" in col else "SIS Login ID"
    if id_col not in col:
        raise RosterError(f"{path}: this Canvas gradebook export has no SIS Login ID column: add a column student_id "
                          "with each student's course id (the folder name under submissions/)")
    canvas_col = "ID" if canvas_export else "canvas_user_id"
    names = ("Student", "SIS User ID", "SIS Login ID", "Section") if canvas_export else \
        ("name", "sis_user_id", "sis_login_id", "section")
    columns: dict[str, str] = {}
    if canvas_export:
        for title in header[header.index("Section") + 1:] if "Section" in header else []:
            if title and title != "student_id" and not _NOT_ASSIGNMENTS.search(title):
                columns.setdefault(re.sub(r"\s*\(\d+\)$", "", title), title)
    errors: list[str] = []
    seen_canvas: dict[int, int] = {}
    seen_student: dict[str, int] = {}
    students: list[Student] = []
    skipped: list[str] = []
    for line, cells in rows[1:]:
        def cell(name: str, cells: list[str] = cells) -> str:
            return cells[col[name]] if name in col and col[name] < len(cells) else ""

        if not any(cells) or (canvas_export and ("Points Possible" in cells[0]
                                                 or all(re.fullmatch(r"(Muted|Manual Posting.*)?", c, re.I)
                                                        for c in cells))):
            continue
        if canvas_export and cells[0] in _TEST_STUDENTS:
            skipped.append(f"{path}, line {line}: Canvas's Test Student: skipped")
            continue
        where = f"{path}, line {line}"
        raw_canvas, student_id = cell(canvas_col), cell(id_col)
        if not re.fullmatch(r"\d{1,18}", raw_canvas):
            errors.append(f"{where}: {canvas_col} {raw_canvas!r} is not a Canvas user id (a whole number, as in "
                          "the ID column of Canvas's gradebook export)")
            continue
        canvas_id = int(raw_canvas)
        if not student_id:
            errors.append(f"{where}: no {id_col} for Canvas user {canvas_id}: fill it in, or delete the line")
            continue
        if not STUDENT_ID.fullmatch(student_id):
            errors.append(f"{where}: {id_col} {student_id!r} cannot be a student id (letters, digits and _ . @ + - "
                          "only, at most 100, starting with a letter or digit): fix it in the roster")
            continue
        if canvas_id in seen_canvas:
            errors.append(f"{where}: Canvas user {canvas_id} is already on line {seen_canvas[canvas_id]}: keep one")
            continue
        if student_id in seen_student:
            errors.append(f"{where}: student id {student_id!r} is already on line {seen_student[student_id]}: "
                          "each student needs their own id")
            continue
        seen_canvas[canvas_id], seen_student[student_id] = line, line
        students.append(Student(student_id, canvas_id, *(cell(n) for n in names), line=line))
    if errors:
        more = f"\n... and {len(errors) - 20} more" if len(errors) > 20 else ""
        raise RosterError("bad roster lines:\n" + "\n".join(errors[:20]) + more)
    if not students:
        raise RosterError(f"{path}: no students in the roster")
    return Roster(path, students, columns, skipped)


