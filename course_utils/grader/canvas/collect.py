"""Canvas's submissions zip -> ``submissions/<student>/<assignment>/`` (see :mod:`course_utils.grader.canvas`)."""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from course_utils.grader.canvas.roster import Roster, Student

STATE = ".canvas"  # OUT/.canvas/{attempts,reports}: a dot-folder, so `course autograde OUT` skips it
CANVAS_FILE = re.compile(r"^(?:(?P<name>(?!LATE_).*?)_)?(?:(?P<late>LATE)_)?(?P<user>\d+)_(?P<file_id>\d+)_"
                         r"(?P<display>.+)$")
CANVAS_ANON = re.compile(r"^(?:(?P<late>LATE)_)?(?P<user>anon_[A-Za-z0-9]+)_(?P<file_id>\d+)_(?P<display>.+)$")
CANVAS_TEXT = re.compile(r"^(?:.*?_)?(?:LATE_)?(?:\d+|anon_[A-Za-z0-9]+)_(?:text|link)\.html$")


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


def write_file(path: Path, data: bytes) -> None:
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
    write_file(report.report_path, ("\n".join(report.lines()) + "\n").encode())
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
        write_file(kept, data)
        meta = {"zip": zip_path.name, "entry": entry, "canvas_user_id": canvas.user, "file_id": canvas.file_id,
                "reupload": reupload, "late": canvas.late, "sha256": _sha256(data),
                "collected_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        write_file(kept.parent / "attempt.json", (json.dumps(meta, indent=1) + "\n").encode())
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
        write_file(current, data)
    return Collected(student, name, current, str(meta.get("entry", latest.name)), action, bool(meta.get("late")),
                     len(kept_all))
