"""The grading round trip on a small fixture course, and a suite of bad and hostile submissions.

The fixture course (tests/fixtures/grading/course) is copied to a temporary folder, so these tests never touch
the real gradebook. All hostile submissions are graded in ONE `course autograde --jobs 2` run: that also proves a
bad submission does not stop the others, nor starve its neighbour. Real notebooks (solutions/*) are covered by
test_grading_notebooks.py; the feedback page of the XSS submission is opened in Chromium by test_browser.py.
"""

from __future__ import annotations

import csv
import glob
import importlib.util
import json
import os
import shutil
import sqlite3
import sys
from html.parser import HTMLParser
from pathlib import Path

import nbformat
import pytest

from course_utils import cli
from course_utils.grader import autograde, sandbox
from course_utils.grader import workspace as grading

FIXTURES = Path(__file__).parent / "fixtures" / "grading"
ASSIGNMENT = "01_fixture"
TIMEOUT = "15"  # per cell: the fixture's cells take well under a second, its setup cell imports torch
# the scratch folders and logs of the kernels a `course autograde --jobs N` run in this process starts: its local
# workers name them after their coordinator's pid (other graders on this machine use other names)
SCRATCH_OF_THIS_RUN = f"/tmp/cgk-{os.getpid()}-*"

_spec = importlib.util.spec_from_file_location("grading_hostile", FIXTURES / "hostile.py")
hostile = importlib.util.module_from_spec(_spec)
sys.modules["grading_hostile"] = hostile
_spec.loader.exec_module(hostile)


class _LiveMarkup(HTMLParser):
    """Collects what would run in a browser: script-like tags, event handlers, javascript: URLs."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[str] = []

    def handle_starttag(self, tag: str, attrs: list) -> None:
        if tag in ("script", "iframe", "svg", "object", "embed", "style", "link", "meta", "base", "form"):
            self.found.append(f"<{tag}>")
        for name, value in attrs:
            if name.startswith("on") or "javascript:" in (value or "").lower().replace(" ", ""):
                self.found.append(f"{tag} {name}={value!r}")


def live_markup(html: str) -> list[str]:
    parser = _LiveMarkup()
    parser.feed(html)
    return parser.found


class _ScriptURLs(HTMLParser):
    """Attribute values a browser would run as script: javascript: or vbscript: URLs (entities decoded, the
    spaces and control characters browsers drop removed, any case)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.found: list[str] = []

    def handle_starttag(self, tag: str, attrs: list) -> None:
        for name, value in attrs:
            url = "".join(ch for ch in (value or "") if ord(ch) > 0x20).lower()
            if url.startswith(("javascript:", "vbscript:")):
                self.found.append(f"<{tag} {name}={value!r}>")


def script_urls(html: str) -> list[str]:
    parser = _ScriptURLs()
    parser.feed(html)
    parser.close()
    return parser.found


def markdown_as_formgrader_renders_it(nb: nbformat.NotebookNode) -> str:
    """Every markdown cell through nbconvert's own renderer, as formgrader renders it without the course's filter
    (so the stored notebook is proven safe on its own)."""
    from nbconvert.filters.markdown_mistune import IPythonRenderer, MarkdownWithMath

    return "".join(MarkdownWithMath(renderer=IPythonRenderer(escape=False, attachments=c.get("attachments", {})))
                   .render(c.source) for c in nb.cells if c.cell_type == "markdown")


def _isolating_mode() -> str | None:
    try:
        mode = sandbox.detect_mode("auto")
    except Exception:  # noqa: BLE001
        return None
    return mode if mode in sandbox.ISOLATING_MODES else None


needs_bwrap = pytest.mark.skipif(
    _isolating_mode() is None,
    reason="bubblewrap isolation is not available here (install the Debian package 'bubblewrap'; in a container "
           "it also needs permission to create namespaces): the hostile suite needs it to prove isolation")


@pytest.fixture(scope="module")
def course(tmp_path_factory) -> Path:
    """A private copy of the fixture course, released, with its student notebook and a perfect submission."""
    root = tmp_path_factory.mktemp("course")
    shutil.copytree(FIXTURES / "course", root, dirs_exist_ok=True)
    assert cli.main(["--root", str(root), "release"]) == 0
    return root


def _notebooks(root: Path) -> tuple[nbformat.NotebookNode, nbformat.NotebookNode]:
    release = nbformat.read(root / "notebooks" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb", as_version=4)
    source = nbformat.read(root / "solutions" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb", as_version=4)
    return release, grading.fill_in_solutions(release, source)


def _grades(csv_path: Path) -> dict[str, dict]:
    with open(csv_path) as fh:
        return {row["student_id"]: row for row in csv.DictReader(fh)}


def cli_grades(root: Path, ws: Path) -> Path:
    assert cli.main(["--root", str(root), "--workspace", str(ws), "grades", "--out", str(ws / "again.csv")]) == 0
    return ws / "again.csv"


def test_release_is_deterministic_and_leak_free(course: Path, tmp_path: Path):
    first = (course / "notebooks" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb").read_bytes()
    assert cli.main(["--root", str(course), "release", ASSIGNMENT, "--out", str(tmp_path)]) == 0
    assert (tmp_path / ASSIGNMENT / f"{ASSIGNMENT}.ipynb").read_bytes() == first
    text = first.decode()
    for marker in ("BEGIN SOLUTION", "END SOLUTION", "BEGIN HIDDEN TESTS", "add(-5, -7)", "sum(xs) / len(xs)"):
        assert marker not in text, f"the release leaks {marker!r}"
    assert not (course / "gradebook.db").exists() and not (course / "grading").exists(), "release left state behind"


def test_solutions_full_marks_blank_zero_and_regrading_is_idempotent(course: Path, tmp_path: Path):
    release, solved = _notebooks(course)
    subs, ws = tmp_path / "subs", tmp_path / "ws"
    for student, nb in (("perfect", solved), ("blank", release)):
        (subs / student / ASSIGNMENT).mkdir(parents=True)
        nbformat.write(nb, subs / student / ASSIGNMENT / f"{ASSIGNMENT}.ipynb")
    before = {p: p.read_bytes() for p in subs.rglob("*") if p.is_file()}
    base = ["--root", str(course), "--workspace", str(ws)]
    assert cli.main(base + ["autograde", str(subs), "--timeout", TIMEOUT]) == 0
    assert cli.main(base + ["grades"]) == 0
    grades = _grades(ws / "grades.csv")
    assert (grades["perfect"]["score"], grades["perfect"]["max_score"], grades["perfect"]["flagged"]) == ("5", "5", "no")
    assert (grades["blank"]["score"], grades["blank"]["flagged"]) == ("0", "no")
    assert grades["perfect"]["sandbox"] in sandbox.MODES
    assert {p: p.read_bytes() for p in subs.rglob("*") if p.is_file()} == before, "a submission was modified"

    # unchanged input and settings: nothing is graded again, nothing changes
    overrides = grading.settings_config(timeout=int(TIMEOUT))
    records = autograde.autograde(grading.Workspace.at(course, ws), subs, overrides=overrides, log=lambda *_: None)
    assert {r.status for r in records} == {"unchanged"}
    assert _grades(Path(cli_grades(course, ws))) == grades
    # a changed submission is graded again and the old copy is archived, not overwritten
    nbformat.write(release, subs / "perfect" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb")
    records = {r.student: r for r in autograde.autograde(grading.Workspace.at(course, ws), subs, overrides=overrides,
                                                          log=lambda *_: None)}
    assert records["perfect"].status == "graded" and records["perfect"].score == 0
    archived = list((ws / "archive" / "perfect" / ASSIGNMENT).glob("*/*.ipynb"))
    assert len(archived) == 1 and nbformat.read(archived[0], as_version=4).cells == solved.cells

    # feedback: one HTML per submission, no hidden test code, the failing check's message is there
    assert cli.main(base + ["feedback"]) == 0
    page = (ws / "feedback" / "blank" / ASSIGNMENT / f"{ASSIGNMENT}.html").read_text()
    assert "add(-5, -7)" not in page and "BEGIN HIDDEN TESTS" not in page and "hidden tests: not shown" in page
    assert "NotImplementedError" in page


def test_fallback_mode_without_isolation_still_grades(course: Path, tmp_path: Path):
    release, solved = _notebooks(course)
    subs = tmp_path / "subs"
    (subs / "perfect" / ASSIGNMENT).mkdir(parents=True)
    nbformat.write(solved, subs / "perfect" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb")
    ws = grading.Workspace.at(course, tmp_path / "ws")
    overrides = grading.settings_config(timeout=int(TIMEOUT), sandbox_mode="none")
    [record] = autograde.autograde(ws, subs, overrides=overrides, log=lambda *_: None)
    assert (record.score, record.sandbox) == (5.0, "none")
    assert any("NOT ISOLATED" in note for note in record.notes)


@needs_bwrap
@pytest.mark.slow
def test_hostile_submissions_get_what_they_deserve_in_one_run(course: Path, tmp_path: Path):
    release, solved = _notebooks(course)
    subs, ws = tmp_path / "subs", tmp_path / "ws"
    solutions = course / "solutions" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb"
    cases = hostile.build(release, solved, subs, gradebook=ws / "gradebook.db", solutions=solutions)
    solutions_before = solutions.read_bytes()
    base = ["--root", str(course), "--workspace", str(ws)]
    scratch_before = set(glob.glob(SCRATCH_OF_THIS_RUN))
    status = cli.main(base + ["autograde", str(subs), "--timeout", TIMEOUT, "--jobs", "2"])
    scratch_left = sorted(set(glob.glob(SCRATCH_OF_THIS_RUN)) - scratch_before)
    assert cli.main(base + ["grades"]) == 0
    grades = _grades(ws / "grades.csv")
    table = "\n".join(f"{s:18} {g['score']:>3}/{g['max_score']} {g['flagged']:3} {g['flag_reasons'][:150]}"
                      for s, g in sorted(grades.items()))
    print("\n" + table)
    (tmp_path / "hostile-table.txt").write_text(table)

    assert set(grades) == set(cases), "every submission has a row"
    problems = []
    for student, case in cases.items():
        row = grades[student]
        if float(row["score"]) != case.score:
            problems.append(f"{student}: score {row['score']}, deserves {case.score:g} ({case.what})")
        if float(row["max_score"]) != hostile.MAX_SCORE:
            problems.append(f"{student}: max score {row['max_score']} (points were tampered with)")
        if (row["flagged"] == "yes") != case.flagged:
            problems.append(f"{student}: flagged={row['flagged']}, expected {case.flagged}: {row['flag_reasons']}")
        if case.reason and not any(r.lower() in row["flag_reasons"].lower() for r in case.reason.split("|")):
            problems.append(f"{student}: reasons lack {case.reason!r}: {row['flag_reasons']}")
        if row["status"] != case.status:
            problems.append(f"{student}: status {row['status']}, expected {case.status}")
    assert not problems, "\n".join(problems) + "\n" + table
    assert status == 0, "no grading run may crash"

    # the gradebook agrees with the CSV (nobody rewrote it), and the solutions are untouched
    with sqlite3.connect(ws / "gradebook.db") as con:
        rows = con.execute("SELECT student.id, SUM(COALESCE(grade.manual_score, grade.auto_score, 0)) "
                           "FROM grade JOIN submitted_notebook ON grade.notebook_id = submitted_notebook.id "
                           "JOIN submitted_assignment ON submitted_notebook.assignment_id = submitted_assignment.id "
                           "JOIN student ON submitted_assignment.student_id = student.id GROUP BY student.id").fetchall()
    assert {s: float(v) for s, v in rows} == {s: float(g["score"]) for s, g in grades.items()}
    assert solutions.read_bytes() == solutions_before
    report = json.loads((ws / "integrity" / "solution" / ASSIGNMENT / f"{ASSIGNMENT}.json").read_text())
    assert report["sandbox"] in sandbox.ISOLATING_MODES and all(c["passed"] for c in report["cells"])
    assert len({g["worker"] for g in grades.values() if g["worker"]}) == 2, "both local workers graded"

    # nothing of the hidden tests is anywhere in what the student's kernel could see or print
    graded = {p.parts[-3]: p.read_text() for p in (ws / "autograded").glob(f"*/{ASSIGNMENT}/{ASSIGNMENT}.ipynb")}
    leaked = graded["history_leak"]
    student_outputs = "".join(json.dumps(c.get("outputs", [])) for c in json.loads(leaked)["cells"]
                              if not c.get("metadata", {}).get("nbgrader", {}).get("grade"))
    assert "print('In:', In)" in leaked and "add(-5, -7)" not in student_outputs, "hidden tests reached the kernel"
    # the kernel could read no Jupyter or IPython configuration (the case prints FOUND for every file it read)
    config_outputs = "".join(json.dumps(c.get("outputs", []))
                             for c in json.loads(graded["reads_jupyter_config"])["cells"])
    assert "looked into" in config_outputs and "FOUND" not in config_outputs, config_outputs[:2000]
    # every kernel's scratch folder and log on the host is gone, the 3,000-deep chain's and the spare kernels' too
    assert not scratch_left, f"scratch left on the host by this run: {scratch_left}"
    # outputs of every type are capped: a 30 MB traceback and 30 MB of display metadata do not survive
    for student in ("huge_outputs", "update_display", "big_message"):
        assert len(graded[student]) < 12_000_000, f"{student}: autograded notebook of {len(graded[student]):,} bytes"
    # nothing a student wrote is live HTML in the autograded notebook (formgrader renders it)
    xss = json.loads(graded["stored_xss"])
    for cell in xss["cells"]:
        html_parts = ["".join(o.get("data", {}).get("text/html", "")) for o in cell.get("outputs", [])]
        if cell["cell_type"] in ("markdown", "raw") and not cell.get("metadata", {}).get("nbgrader"):
            html_parts.append("".join(cell["source"]))
        assert not [h for h in html_parts if live_markup(h)], f"live markup in the graded notebook: {html_parts}"
    assert not any(set(o.get("data", {})) - {"text/plain", "text/html", "image/png", "image/jpeg"}
                   for c in xss["cells"] for o in c.get("outputs", [])), "an unsafe output type survived"

    # feedback: generated for the unflagged and the ungradable ones, held back for the flagged, never hidden tests
    assert cli.main(base + ["feedback"]) == 0
    pages = {p.parts[-3]: p.read_text() for p in (ws / "feedback").glob(f"*/{ASSIGNMENT}/*.html")}
    expected = {s for s, c in cases.items() if not c.flagged or c.status == "zero"}
    assert set(pages) == expected
    assert not [s for s, page in pages.items() if "add(-5, -7)" in page or "BEGIN HIDDEN" in page]
    page = pages["stored_xss"]
    assert "Content-Security-Policy" in page and "script-src" not in page.split("Content-Security-Policy")[1][:40]
    body = page.split("<body", 1)[-1]
    leftovers = [m for m in live_markup(body) if "document.title" in m or "pwned" in m or "alert" in m]
    assert not leftovers and "document.title = \"pwned\"</script>" not in page, leftovers
    (tmp_path / "xss-feedback.html").write_text(page)

    # markdown links and images to javascript:/vbscript: are text in the graded notebook and in the feedback page;
    # a missing attachment is text too, and the page is written
    for student in ("xss_md_link", "missing_attachment"):
        rendered = markdown_as_formgrader_renders_it(nbformat.reads(graded[student], as_version=4))
        assert not script_urls(rendered) and "[grader] This markdown cell is shown as text" in rendered, rendered
        assert not script_urls(pages[student]) and "shown as text" in pages[student], student
        assert 'href="evil.html"' not in rendered and 'href="evil.html"' not in pages[student], student
        assert "markdown shown as text" in grades[student]["notes"], grades[student]["notes"]
    assert "an attachment the cell does not have" in pages["missing_attachment"]

    # files handed in next to the notebook stay out of feedback/ (reviewed, then sent), and stay in submitted/
    assert cli.main(base + ["feedback", "--include-flagged", "--student", "extra_files"]) == 0
    sent = ws / "feedback" / "extra_files" / ASSIGNMENT
    assert sorted(p.name for p in sent.rglob("*")) == [f"{ASSIGNMENT}.html"], list(sent.rglob("*"))
    for where in (subs, ws / "submitted", ws / "autograded"):
        assert {n for n in hostile.EXTRA_FILES["extra_files"]} <= {p.name for p in (where / "extra_files" / ASSIGNMENT)
                                                                   .iterdir()}, f"a student's file was lost in {where}"
    # the forged timestamp is flagged, not changed: the gradebook holds what the file says
    with sqlite3.connect(ws / "gradebook.db") as con:
        [(stamp,)] = con.execute("SELECT timestamp FROM submitted_assignment WHERE student_id = 'extra_files'")
    assert str(stamp).startswith("2000-01-01"), stamp


@pytest.mark.slow
def test_control_without_isolation_the_attacks_do_work(course: Path, tmp_path: Path):
    """Control experiment: with `--sandbox none` the same two attacks succeed (the solutions are read, the
    gradebook is rewritten), so the hostile suite passes because of the sandbox, not because the attacks are inert."""
    release, solved = _notebooks(course)
    staging, subs, ws = tmp_path / "all", tmp_path / "subs", tmp_path / "ws"
    solutions = course / "solutions" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb"
    hostile.build(release, solved, staging, gradebook=ws / "gradebook.db", solutions=solutions)
    for student in ("read_solutions", "solution", "write_gradebook"):
        shutil.copytree(staging / student, subs / student)
    overrides = grading.settings_config(timeout=int(TIMEOUT), sandbox_mode="none")
    records = {r.student: r for r in autograde.autograde(grading.Workspace.at(course, ws), subs, overrides=overrides,
                                                          jobs=1, log=lambda *_: None)}
    assert records["read_solutions"].score == 2, "unsandboxed, the stolen solution of add() earns its 2 points"
    with sqlite3.connect(ws / "gradebook.db") as con:
        [(rewritten,)] = con.execute(
            "SELECT SUM(COALESCE(grade.manual_score, grade.auto_score)) FROM grade "
            "JOIN submitted_notebook ON grade.notebook_id = submitted_notebook.id "
            "JOIN submitted_assignment ON submitted_notebook.assignment_id = submitted_assignment.id "
            "WHERE submitted_assignment.student_id = 'solution'").fetchall()
    assert records["solution"].score == 5 and rewritten == 400, "unsandboxed, the gradebook was rewritten"
