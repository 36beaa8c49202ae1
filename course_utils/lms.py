"""Canvas in and out: its submissions zip becomes ``submissions/``, the grades become its gradebook CSV.

**Roster** (``load_roster``): ``student_id,canvas_user_id[,name,sis_user_id,sis_login_id,section]``, or Canvas's own
gradebook export (Grades > Export: ``Student,ID,SIS User ID,SIS Login ID,Section,...``; ``ID`` is the Canvas user
id, the student id is an added ``student_id`` column, else ``SIS Login ID``). Student ids are folder names
(letters, digits, ``_ . @ + -``). Every bad line is reported with file, line, value and the fix.

**In** (``collect_canvas``). Canvas names each uploaded file ``<name>_[LATE_]<user id>_<file id>_<file name>``
(canvas-lms ``lib/content_zipper.rb``: ``<name>`` is the lower-cased sortable name without punctuation, absent under
anonymous grading, where the user id is ``anon_<id>``; ``<file id>`` is the upload's attachment id, which grows with
every upload); a file name uploaded again becomes ``01_attention-1.ipynb``, ``-2``, ... Every attempt is kept in
``OUT/.canvas/attempts/<student>/<assignment>/<file id>/`` (with ``attempt.json``: zip, entry, late flag, sha256);
the latest (highest file id, then re-upload number) is copied to ``OUT/<student>/<assignment>/<assignment>.ipynb``,
the layout ``course autograde`` reads (it skips dot-folders). The same zip again changes nothing; a newer zip moves
the latest forward; a notebook there that is none of the attempts (edited by hand) is never overwritten. No
``timestamp.txt``: the zip has no submission time (rubyzip stamps entries with the time the zip was built) and
``LATE`` is only yes/no, so it goes into ``attempt.json`` and the report. Entries that are not collected are listed
with the reason, on screen and in ``OUT/.canvas/reports/``. Zip entries are hostile input: absolute paths, ``..``,
links, encrypted or oversized entries are refused, and output paths are built only from roster ids and known
assignment names, never from the zip.

**Out** (``write_canvas_grades``). canvas-lms's ``GradebookImporter`` reads a header
``Student,ID,SIS User ID,SIS Login ID,Section,<assignment>...``, matches students by ``ID`` (then SIS ids, then
name) and assignment columns by ``Title (assignment id)`` or title (an unknown title creates an assignment), and an
optional ``Points Possible`` line. We write one column per graded assignment (the Canvas export's header when its
title is the assignment's name), points possible = ``max_score``, one line per roster student. Not graded (nothing
handed in, or a grading error) is blank, which Canvas reads as "no score"; ``missing="zero"`` writes 0 for work that
was not handed in.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import re
import stat
import zipfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

STUDENT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@+-]{0,99}$")  # the rule of submissions.SAFE_NAME
STATE = ".canvas"  # OUT/.canvas/{attempts,reports}: a dot-folder, so `course autograde OUT` skips it
CANVAS_FILE = re.compile(r"^(?:(?P<name>(?!LATE_).*?)_)?(?:(?P<late>LATE)_)?(?P<user>\d+)_(?P<file_id>\d+)_"
                         r"(?P<display>.+)$")
CANVAS_ANON = re.compile(r"^(?:(?P<late>LATE)_)?(?P<user>anon_[A-Za-z0-9]+)_(?P<file_id>\d+)_(?P<display>.+)$")
CANVAS_TEXT = re.compile(r"^(?:.*?_)?(?:LATE_)?(?:\d+|anon_[A-Za-z0-9]+)_(?:text|link)\.html$")
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
        if not STUDENT_ID.match(student_id):
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


# --------------------------------------------------------------------------------------------------- in
@dataclass(frozen=True)
class CanvasFile:
    """One file name of Canvas's submissions zip, taken apart."""

    name: str       # lower-cased sortable name, no punctuation ("doejane")
    late: bool
    user: str       # Canvas user id, or anon_<id> under anonymous grading
    file_id: int    # the upload's attachment id: higher is later
    display: str    # the file name the student uploaded, as Canvas shows it ("01_attention-1.ipynb")


def parse_canvas_name(filename: str) -> CanvasFile | None:
    """``doejane_LATE_12345_6789012_01_attention-1.ipynb`` -> its parts; None if it is not Canvas's form."""
    m = CANVAS_ANON.match(filename) or CANVAS_FILE.match(filename)  # anonymous grading: no name, anon_<id>
    if not m:
        return None
    return CanvasFile(m.groupdict().get("name") or "", bool(m["late"]), m["user"], int(m["file_id"]), m["display"])


def match_notebook(display: str, assignments: Iterable[str]) -> tuple[str, int] | None:
    """(assignment, re-upload number) for ``01_attention.ipynb`` (0), ``01_attention-2.ipynb`` (2) or a browser
    copy ``01_attention (1).ipynb`` (1); None when the name is no assignment's notebook."""
    names = sorted(assignments)
    for name in names:  # exact names first: an assignment may itself end in -N
        if display == f"{name}.ipynb":
            return name, 0
    for name in names:
        m = re.fullmatch(re.escape(name) + r"(?:-(\d{1,6})| \((\d{1,6})\))\.ipynb", display)
        if m:
            return name, int(m[1] or m[2])
    return None


@dataclass(frozen=True)
class Limits:
    max_entries: int = 20_000
    max_file_mb: float = 50.0      # as `course autograde` (submissions.py)
    max_total_mb: float = 4096.0


@dataclass
class Collected:
    student: str
    assignment: str
    path: Path
    entry: str         # the zip entry of the latest attempt
    action: str        # new | updated | unchanged | conflict
    late: bool
    attempts: int      # attempts kept under .canvas/attempts (the latest included)


@dataclass
class CollectReport:
    zip: Path
    out: Path
    collected: list[Collected] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)   # (zip entry, why it was not collected)
    problems: list[str] = field(default_factory=list)
    report_path: Path | None = None

    @property
    def ok(self) -> bool:
        return not self.skipped and not self.problems

    def lines(self, details: bool = True) -> list[str]:
        """A summary line; with ``details`` one line per submission; then every file not collected and every problem."""
        counts = {a: sum(c.action == a for c in self.collected) for a in ("new", "updated", "unchanged", "conflict")}
        out = [f"{self.zip.name}: {len(self.collected)} submissions ({counts['new']} new, {counts['updated']} updated "
               f"to a later attempt, {counts['unchanged']} unchanged, {counts['conflict']} left as they were), "
               f"{sum(c.late for c in self.collected)} late, {len(self.skipped)} files not collected -> {self.out}"]
        for c in self.collected if details else []:
            late = ", LATE" if c.late else ""
            out.append(f"  {c.student}/{c.assignment}: {c.action}{late}, {c.attempts} attempt(s) kept, "
                       f"latest {c.entry}")
        out += [f"not collected: {entry}: {why}" for entry, why in self.skipped]
        out += [f"problem: {p}" for p in self.problems]
        return out


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _write(path: Path, data: bytes) -> None:
    """Write via a temporary file and a rename: a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _refuse(info: zipfile.ZipInfo, limits: Limits) -> str | None:
    """Why a zip entry is refused before it is read, or None."""
    name = info.filename
    parts = re.split(r"[/\\]", name)
    mode = info.external_attr >> 16
    if any(ord(ch) < 32 for ch in name):
        return "control characters in the name (hostile entry)"
    if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name):
        return "an absolute path (hostile entry)"
    if ".." in parts:
        return "a path that climbs out of the folder with '..' (hostile entry)"
    if stat.S_ISLNK(mode):
        return "a symbolic link (hostile entry)"
    if stat.S_IFMT(mode) and not stat.S_ISREG(mode):
        return "not a regular file"
    if info.flag_bits & 0x1:
        return "encrypted"
    if info.file_size > limits.max_file_mb * 1024 * 1024:
        return f"larger than {limits.max_file_mb:g} MB"
    if "__MACOSX" in parts or parts[-1] == ".DS_Store":
        return "macOS metadata, not a submission"
    return None


def _identify(entry: str, roster: Roster) -> tuple[CanvasFile, Student] | str:
    """The Canvas file and the roster's student behind a zip entry, or why there is none."""
    base = re.split(r"[/\\]", entry)[-1]
    canvas = parse_canvas_name(base)
    if canvas is None:
        if CANVAS_TEXT.match(base):
            return "a text-entry or URL submission (Canvas writes it as HTML), not a notebook"
        return "not Canvas's name form <name>_[LATE_]<user id>_<file id>_<file name>"
    if canvas.user.startswith("anon_"):
        return ("anonymous grading hides who submitted: download again once the assignment's grades are posted "
                "(or anonymity is turned off)")
    student = roster.by_canvas_id.get(int(canvas.user))
    if student is None:
        return (f"Canvas user {canvas.user} ({canvas.name or 'no name'}) is not in the roster {roster.path}: add a "
                "line for them and collect again")
    return canvas, student


def _why_not(canvas: CanvasFile, student: str, out: Path, assignment: str | None, known: list[str]) -> str:
    if not canvas.display.endswith(".ipynb"):
        return f"not a notebook ({canvas.display!r}): only the assignment's notebook is collected"
    other = match_notebook(canvas.display, known)
    if assignment and other:
        return f"the notebook of {other[0]}, but --assignment is {assignment}: collect it with --assignment {other[0]}"
    expected = f"{assignment}.ipynb" if assignment else f"one of {', '.join(f'{a}.ipynb' for a in known)}"
    name = assignment or "<assignment>"
    return (f"a notebook named {canvas.display!r}, expected {expected}: if it is the student's work, copy it to "
            f"{out / student / name / name}.ipynb yourself")


def collect_canvas(zip_path: Path | str, roster: Roster, out: Path | str, assignments: Iterable[str],
                   assignment: str | None = None, limits: Limits = Limits()) -> CollectReport:
    """Turn Canvas's submissions zip into ``out/<student>/<assignment>/<assignment>.ipynb`` (see module docstring)."""
    zip_path, out, known = Path(zip_path), Path(out), sorted(set(assignments))
    if assignment is not None and assignment not in known:
        raise ValueError(f"unknown assignment {assignment!r}; known: {', '.join(known) or 'none (no solutions/)'}")
    if not known:
        raise ValueError("no assignments known (expected solutions/NN_topic/NN_topic.ipynb): run from the course root")
    report = CollectReport(zip_path, out)
    found: dict[tuple[str, str], list[tuple[CanvasFile, int, str, bytes]]] = {}
    try:
        archive = zipfile.ZipFile(zip_path)
    except FileNotFoundError:
        raise ValueError(f"no zip at {zip_path}") from None
    except (zipfile.BadZipFile, OSError) as err:
        raise ValueError(f"{zip_path} is not a readable zip ({err}): download it again from Canvas "
                         "(the assignment's page > Download Submissions)") from None
    with archive:
        infos = [i for i in archive.infolist() if not i.is_dir()]
        if len(infos) > limits.max_entries:
            raise ValueError(f"{zip_path} has {len(infos)} files, more than {limits.max_entries}: is it Canvas's "
                             "submissions zip?")
        total = 0
        for info in infos:
            entry = info.filename
            who = _refuse(info, limits) or _identify(entry, roster)
            if isinstance(who, str):
                report.skipped.append((entry, who))
                continue
            canvas, student = who
            match = match_notebook(canvas.display, [assignment] if assignment else known)
            if match is None:
                report.skipped.append((entry, _why_not(canvas, student.student_id, out, assignment, known)))
                continue
            try:
                with archive.open(info) as fh:
                    data = fh.read(int(limits.max_file_mb * 1024 * 1024) + 1)
            except (zipfile.BadZipFile, NotImplementedError, OSError, EOFError, RuntimeError) as err:
                report.skipped.append((entry, f"cannot be read ({type(err).__name__}: {err})"))
                continue
            total += len(data)
            if len(data) > limits.max_file_mb * 1024 * 1024 or total > limits.max_total_mb * 1024 * 1024:
                report.skipped.append((entry, "over the size limits (zip bomb?)"))
                continue
            found.setdefault((student.student_id, match[0]), []).append((canvas, match[1], entry, data))
    for (student_id, name), attempts in sorted(found.items()):
        try:
            report.collected.append(_place(report, out, student_id, name, attempts, zip_path))
        except OSError as err:  # one folder we cannot write must not stop the others
            report.problems.append(f"{student_id}/{name}: {type(err).__name__}: {err}")
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
    label = re.sub(r"[^A-Za-z0-9._-]", "_", zip_path.stem)
    report.report_path = out / STATE / "reports" / f"collect-{stamp}-{label}.txt"
    _write(report.report_path, ("\n".join(report.lines()) + "\n").encode())
    return report


def _place(report: CollectReport, out: Path, student: str, name: str,
           attempts: list[tuple[CanvasFile, int, str, bytes]], zip_path: Path) -> Collected:
    """Keep every attempt under .canvas/attempts, then make the latest the notebook autograde reads."""
    store = out / STATE / "attempts" / student / name
    for canvas, reupload, entry, data in attempts:
        kept = store / str(canvas.file_id) / canvas.display
        if kept.is_file():
            if _sha256(kept.read_bytes()) != _sha256(data):
                report.problems.append(f"{entry}: Canvas file {canvas.file_id} was collected before with other "
                                       f"content ({kept}): that copy is kept, this one stays in the zip: compare them")
            continue
        _write(kept, data)
        meta = {"zip": zip_path.name, "entry": entry, "canvas_user_id": canvas.user, "file_id": canvas.file_id,
                "reupload": reupload, "late": canvas.late, "sha256": _sha256(data),
                "collected_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        _write(kept.parent / "attempt.json", (json.dumps(meta, indent=1) + "\n").encode())
    kept_all = []  # (file id, re-upload, path, meta) of every attempt on disk, from this zip or earlier ones
    for folder in sorted(p for p in store.iterdir() if p.is_dir() and p.name.isdigit()):
        for path in sorted(folder.glob("*.ipynb")):
            number = match_notebook(path.name, [name])
            if number is None or path.is_symlink() or not path.is_file():
                continue
            try:
                meta = json.loads((folder / "attempt.json").read_text())
            except (OSError, ValueError):
                meta = {}
            kept_all.append((int(folder.name), number[1], path, meta if isinstance(meta, dict) else {}))
    if not kept_all:  # only if someone replaced the kept files with links or other names
        report.problems.append(f"{store}: no readable attempt: {student}/{name} left as it is")
        return Collected(student, name, out / student / name / f"{name}.ipynb", "", "conflict", False, 0)
    _, _, latest, meta = max(kept_all, key=lambda k: (k[0], k[1]))
    data = latest.read_bytes()
    current = out / student / name / f"{name}.ipynb"
    if not current.exists() and not current.is_symlink():
        action = "new"
    elif current.is_symlink() or not current.is_file():
        action = "conflict"
        report.problems.append(f"{current} is not a regular file: left as it is; remove it and collect again")
    else:
        now = _sha256(current.read_bytes())
        if now == _sha256(data):
            action = "unchanged"
        elif now in {_sha256(k[2].read_bytes()) for k in kept_all}:
            action = "updated"  # it was an earlier attempt, and that one is kept under .canvas/attempts
        else:
            action = "conflict"
            report.problems.append(f"{current} is none of the collected attempts (changed by hand?): left as it "
                                   f"is; the latest attempt is {latest}: move yours away and collect again")
    if action in ("new", "updated"):
        _write(current, data)
    return Collected(student, name, current, str(meta.get("entry", latest.name)), action, bool(meta.get("late")),
                     len(kept_all))


# --------------------------------------------------------------------------------------------------- out
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
    _write(export.path, buffer.getvalue().encode("utf-8"))
    return export
