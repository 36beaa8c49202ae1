"""What goes back out of the workspace: feedback HTML per student (no hidden test code, nothing that runs) and
the grades CSV.

The feedback folder holds only the pages written here. nbgrader's ``GenerateFeedback`` also copies every other
file of the autograded folder (the student's extra files: an ``evil.svg`` or ``evil.html`` would be served
next to the page, with no Content-Security-Policy; ``timestamp.txt``; the instructor's data files):
:class:`PagesOnlyFeedback` copies none, and :func:`keep_only_pages` removes anything else found in a feedback
folder. Only feedback/ is touched: ``submitted/`` and ``autograded/`` keep every file a student handed in.
"""

from __future__ import annotations

import csv
import html
import re
import shutil
from pathlib import Path

from nbformat.notebooknode import NotebookNode
from nbgrader.preprocessors import NbGraderPreprocessor

from course_utils.grader import sanitize
from course_utils.grader.autograde import load_records
from course_utils.cells import without_hidden_tests
from course_utils.grader.workspace import COURSE_ID, LogCapture, Workspace, coursedir_for, nbgrader_config

CSV_COLUMNS = ["student_id", "assignment", "status", "score", "max_score", "percent", "flagged", "flag_reasons",
               "notes", "sandbox", "worker", "seconds", "graded_at"]
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def _pages_only_feedback() -> type:
    from nbgrader.converters import GenerateFeedback  # noqa: PLC0415

    class PagesOnlyFeedback(GenerateFeedback):
        """nbgrader's feedback converter without its copying of the autograded folder's other files."""

        def init_assignment(self, assignment_id: str, student_id: str) -> None:
            """(nbgrader's version copies every non-notebook file of the autograded folder into feedback/)"""

    return PagesOnlyFeedback


def keep_only_pages(folder: Path, notebooks: list[str]) -> list[str]:
    """Remove from the feedback ``folder`` everything but ``<notebook>.html`` of ``notebooks``; returns what went
    (relative paths). Only for feedback folders: what is in them is a copy or a page written here."""
    keep = {f"{notebook}.html" for notebook in notebooks}
    removed: list[str] = []
    if not folder.is_dir():
        return removed
    for entry in sorted(folder.iterdir()):
        if entry.name in keep and entry.is_file() and not entry.is_symlink():
            continue
        removed.append(entry.name + ("/" if entry.is_dir() and not entry.is_symlink() else ""))
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()
    return removed


class HideHiddenTests(NbGraderPreprocessor):
    """Feedback shows what failed, never how it was tested: hidden test code and test-cell tracebacks go.

    In every graded cell the lines between ``### BEGIN HIDDEN TESTS`` and ``### END HIDDEN TESTS`` become one
    comment, and an error's traceback (which quotes the failing line of the test) is cut to ``Name: message``
    (a check's message: input, expected, got, hint).
    """

    def preprocess_cell(self, cell: NotebookNode, resources: dict, index: int) -> tuple[NotebookNode, dict]:
        meta = cell.get("metadata", {}).get("nbgrader", {})
        if not meta.get("grade"):
            return cell, resources
        cell.source = without_hidden_tests(cell.source)
        for out in cell.get("outputs", []):
            if out.get("output_type") == "error":
                out["traceback"] = [f"{out.get('ename', 'Error')}: {ANSI.sub('', str(out.get('evalue', '')))}"]
        return cell, resources


def generate_feedback(ws: Workspace, students: list[str] | None = None, names: list[str] | None = None,
                      include_flagged: bool = False, log=print) -> list[Path]:  # noqa: ANN001 - print-like
    """HTML feedback for every graded submission (``feedback/<student>/<assignment>/<notebook>.html``).

    Flagged submissions are left out unless ``include_flagged``: review them first (a submission that hooked
    the kernel could have copied test code into its own outputs).
    """
    converter_class = _pages_only_feedback()
    config = nbgrader_config(ws)
    written: list[Path] = []
    for record in load_records(ws):
        if (students and record.student not in students) or (names and record.assignment not in names):
            continue
        if record.review and record.status != "zero" and not include_flagged:
            log(f"{record.student}/{record.assignment}: flagged for review, no feedback yet "
                "(review it, then: course feedback --include-flagged --student ...)")
            continue
        dest = ws.feedback / record.student / record.assignment
        if not (ws.autograded / record.student / record.assignment).is_dir():
            dest.mkdir(parents=True, exist_ok=True)
            page = dest / f"{record.assignment}.html"
            reasons = "".join(f"<li>{html.escape(r)}</li>" for r in record.review if "scored 0" in r)
            page.write_text(sanitize.protect_page(
                f"<html><head><meta charset=\"utf-8\"></head><body><h1>{html.escape(record.assignment)}</h1>"
                f"<p>Score: {record.score or 0:g} / {record.max_score or 0:g}</p><ul>{reasons}</ul></body></html>"))
            written.append(page)
            continue
        with LogCapture() as logs:
            try:
                coursedir = coursedir_for(config, student_id=record.student, assignment_id=record.assignment)
                converter = converter_class(coursedir=coursedir, config=config)
                converter.force = True
                converter.start()
            except Exception as err:  # noqa: BLE001 - one failure must not stop the others
                log(f"{record.student}/{record.assignment}: feedback failed: {err} "
                    + " / ".join(logs.messages[-3:]))
                continue
        notebooks = sorted(p.stem for p in (ws.autograded / record.student / record.assignment).glob("*.ipynb"))
        removed = keep_only_pages(dest, notebooks)
        if removed:
            log(f"{record.student}/{record.assignment}: removed from its feedback folder (not a feedback page; "
                f"submitted/ keeps the student's files): {', '.join(removed)[:300]}")
        for page in sorted(dest.glob("*.html")):
            page.write_text(sanitize.protect_page(page.read_text()))
            written.append(page)
    return written


def write_grades(ws: Workspace, out: Path | None = None) -> Path:
    """One row per graded submission: scores from the gradebook (manual grades count), flags from the records."""
    from nbgrader.api import Gradebook, MissingEntry  # noqa: PLC0415

    out = Path(out) if out else ws.path / "grades.csv"
    out.parent.mkdir(parents=True, exist_ok=True)
    rows = []
    gradebook = Gradebook(ws.db_url, COURSE_ID) if ws.gradebook.exists() else None
    try:
        for record in sorted(load_records(ws), key=lambda r: (r.student, r.assignment)):
            score, max_score = record.score, record.max_score
            if gradebook is not None:
                try:
                    submission = gradebook.find_submission(record.assignment, record.student)
                    score, max_score = float(submission.score), float(submission.max_score)
                except MissingEntry:
                    pass
            percent = round(100 * score / max_score, 1) if score is not None and max_score else ""
            rows.append({
                "student_id": record.student, "assignment": record.assignment, "status": record.status,
                "score": "" if score is None else f"{score:g}", "max_score": "" if max_score is None else f"{max_score:g}",
                "percent": percent, "flagged": "yes" if record.review else "no",
                "flag_reasons": " | ".join(record.review), "notes": " | ".join(record.notes),
                "sandbox": record.sandbox, "worker": record.worker, "seconds": f"{record.seconds:.1f}",
                "graded_at": record.graded_at,
            })
    finally:
        if gradebook is not None:
            gradebook.close()
    with open(out, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    return out
