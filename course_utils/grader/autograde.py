"""Autograding a folder of submissions: import, grade each in the sandbox, record what happened.

One :class:`Record` per student and assignment (``<workspace>/records/<student>/<assignment>.json``) says how it
went: status, score, flags for review, notes, sandbox mode, seconds. One failure never stops the others.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import shutil
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from traitlets.config import Config

from course_utils import integrity, sandbox, submissions
from course_utils.grading import (GRADER_MODULES, COURSE_ID, LogCapture, Workspace, assignments, coursedir_for,
                                  ensure_gradebook, nbgrader_config, register, tree_hash)


@dataclass
class Record:
    """The outcome of grading one student's assignment (saved as records/<student>/<assignment>.json)."""

    student: str
    assignment: str
    status: str = "graded"          # graded | zero (nothing gradable) | error (the grader failed) | unchanged
    score: float | None = None
    max_score: float | None = None
    flagged: bool = False
    review: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    sandbox: str = ""
    seconds: float = 0.0
    graded_at: str = ""
    key: str = ""
    files: dict[str, str] = field(default_factory=dict)
    cells: list[dict] = field(default_factory=list)

    def path(self, ws: Workspace) -> Path:
        return ws.records / self.student / f"{self.assignment}.json"

    def save(self, ws: Workspace) -> None:
        self.flagged = bool(self.review)
        path = self.path(ws)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(asdict(self), indent=1, sort_keys=True))

    @classmethod
    def load(cls, path: Path) -> "Record | None":
        try:
            data = json.loads(Path(path).read_text())
            return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})
        except (OSError, ValueError, TypeError):
            return None


def grading_key(ws: Workspace, assignment: str, files: dict[str, str], config: Config) -> str:
    """Changes when the submission, the assignment's source, the execution settings or the grader change."""
    here = Path(__file__).parent
    code = {name: submissions.sha256(here / name) for name in GRADER_MODULES if (here / name).is_file()}
    settings = {k: repr(v) for k, v in sorted(config.SandboxedExecute.items())}
    blob = {"files": files, "source": tree_hash(ws.source / assignment), "code": code, "settings": settings}
    return hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()


def autograde(ws: Workspace, source: Path, *, overrides: Config | None = None, force: bool = False,
              only_students: list[str] | None = None, only_assignments: list[str] | None = None,
              jobs: int = 1, log=print) -> list[Record]:  # noqa: ANN001 - any print-like callable
    """Import every submission under ``source`` and grade the new or changed ones, ``jobs`` at a time.

    One failure never stops the rest: it becomes a record with status "error" (scored 0, flagged).
    """
    ws.create()
    ensure_gradebook(ws.gradebook)
    config = nbgrader_config(ws, overrides)
    mode = sandbox.detect_mode(config.SandboxedExecute.get("sandbox", "auto"))
    config.SandboxedExecute.sandbox = mode  # workers use what was detected here
    log(f"sandbox: {mode} ({sandbox.describe(mode)})")
    found, warnings = submissions.discover(Path(source), set(assignments(ws.root)))
    for warning in warnings:
        log(f"warning: {warning}")
    found = [f for f in found if (not only_students or f[0] in only_students)
             and (not only_assignments or f[1] in only_assignments)]
    records: list[Record] = []
    for name in sorted({a for _, a, _ in found}):
        register(ws, name)
    pending: list[tuple[str, str, submissions.Imported, str]] = []
    for student, name, folder in found:
        imported = submissions.import_submission(folder, student, name, ws.submitted, ws.archive)
        if imported.archived:
            log(f"{student}/{name}: changed since the last import; the previous copy is kept in {imported.archived}")
        key = grading_key(ws, name, imported.manifest, config)
        previous = Record.load(Record(student, name).path(ws))
        if not force and previous and previous.key == key and previous.status in ("graded", "zero"):
            previous.status = "unchanged"
            records.append(previous)
            log(f"{student}/{name}: unchanged since it was graded ({_fmt(previous.score)}/{_fmt(previous.max_score)})")
            continue
        pending.append((student, name, imported, key))

    def finish(record: Record, imported: submissions.Imported, key: str) -> None:
        record.key, record.files = key, imported.manifest
        record.save(ws)
        records.append(record)
        flag = f"  FLAGGED: {' | '.join(record.review)[:300]}" if record.review else ""
        log(f"{record.student}/{record.assignment}: {record.status} {_fmt(record.score)}/{_fmt(record.max_score)} "
            f"in {record.seconds:.1f} s{flag}")

    if jobs > 1 and len(pending) > 1:
        with ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = {pool.submit(grade_submission, ws, s, n, config, imp.left_out): (s, n, imp, key)
                       for s, n, imp, key in pending}
            for future in as_completed(futures):
                student, name, imported, key = futures[future]
                try:
                    record = future.result()
                except Exception as err:  # noqa: BLE001 - a worker that died: record it, go on
                    record = Record(student, name, status="error", sandbox=mode,
                                    review=[f"grading failed ({type(err).__name__}: {err}): re-run autograde"])
                finish(record, imported, key)
    else:
        for student, name, imported, key in pending:
            finish(grade_submission(ws, student, name, config, imported.left_out), imported, key)
    return sorted(records, key=lambda r: (r.student, r.assignment))


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:g}"


def grade_submission(ws: Workspace, student: str, name: str, config: Config, left_out: list[str]) -> Record:
    """Autograde one imported submission with nbgrader (in the sandbox) and collect its record."""
    from nbgrader.api import Gradebook, MissingEntry  # noqa: PLC0415
    from nbgrader.converters import Autograde  # noqa: PLC0415

    started = time.perf_counter()
    record = Record(student, name, graded_at=datetime.now(timezone.utc).isoformat(timespec="seconds"))
    record.notes += [f"not imported: {item}" for item in left_out]
    folder = ws.submitted / student / name
    expected = sorted(p.stem for p in (ws.release / name).glob("*.ipynb"))
    usable, unusable = [], []
    for notebook in expected:
        problem = _notebook_problem(folder, notebook)
        (unusable if problem else usable).append(notebook)
        if problem:
            record.review.append(problem)
    reports = ws.integrity / student / name
    shutil.rmtree(reports, ignore_errors=True)
    if not usable:
        with Gradebook(ws.db_url, COURSE_ID) as gb:
            gb.update_or_create_student(student)
            gb.update_or_create_submission(name, student)
    if usable:
        with LogCapture() as logs:
            try:
                for notebook in usable:
                    coursedir = coursedir_for(config, student_id=student, assignment_id=name, notebook_id=notebook)
                    converter = Autograde(coursedir=coursedir, config=config)
                    converter.force = True
                    converter.start()
            except Exception as err:  # noqa: BLE001 - one broken submission must not stop the others
                record.status = "error"
                detail = " / ".join(m for m in logs.messages if m)[-400:]
                record.review.append(f"grading failed ({type(err).__name__}: {err}); scored 0 until fixed: {detail}")
                unusable = expected
    else:
        record.status = "zero"
    for path in integrity.report_paths(ws.integrity, student, name):
        report = integrity.read_report(path)
        record.review += [r for r in report.get("review", []) if r not in record.review]
        record.notes += [n for n in report.get("notes", []) if n not in record.notes]
        record.cells += report.get("cells", [])
        record.sandbox = report.get("sandbox", record.sandbox)
    record.sandbox = record.sandbox or sandbox.detect_mode(config.SandboxedExecute.get("sandbox", "auto"))
    with Gradebook(ws.db_url, COURSE_ID) as gb:
        try:
            submission = gb.find_submission(name, student)
        except MissingEntry:  # nbgrader failed before it recorded the submission
            gb.update_or_create_student(student)
            submission = gb.update_or_create_submission(name, student)
        for nb in submission.notebooks:
            for grade in nb.grades:
                if nb.name in unusable:
                    grade.auto_score, grade.needs_manual_grade = 0.0, False
                if record.review:
                    grade.needs_manual_grade = True  # formgrader lists it for review
        gb.db.commit()
        submission = gb.find_submission(name, student)
        record.score, record.max_score = float(submission.score), float(submission.max_score)
    record.seconds = round(time.perf_counter() - started, 2)
    record.flagged = bool(record.review)
    return record


def _notebook_problem(folder: Path, notebook: str) -> str | None:
    """Why ``folder/notebook.ipynb`` cannot be graded (missing, renamed, not a notebook), or None."""
    import nbformat  # noqa: PLC0415

    path = folder / f"{notebook}.ipynb"
    if not path.is_file():
        others = sorted(p.name for p in folder.glob("*.ipynb")) if folder.is_dir() else []
        hint = f"; found {', '.join(others)} instead (rename it to {notebook}.ipynb and re-run)" if others else ""
        return f"missing notebook {notebook}.ipynb: scored 0{hint}"
    try:
        nb = nbformat.read(path, as_version=4)
        nbformat.validate(nb)
    except Exception as err:  # noqa: BLE001 - any reason it is not a notebook
        return f"{notebook}.ipynb is not a valid notebook ({type(err).__name__}: {str(err)[:150]}): scored 0"
    return None


def load_records(ws: Workspace) -> list[Record]:
    records = [Record.load(p) for p in sorted(ws.records.glob("*/*.json"))] if ws.records.is_dir() else []
    return [r for r in records if r is not None]
