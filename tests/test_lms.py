"""Canvas in and out (course_utils/lms.py): `course collect` and `course grades --format canvas`."""

from __future__ import annotations

import csv
import io
import json
import stat
import subprocess
import sys
import zipfile
from pathlib import Path

import nbformat
import pytest

from course_utils import cli
from course_utils.grader import canvas as lms

ASSIGNMENTS = ["01_attention", "02_sampling"]
ROSTER = """student_id,canvas_user_id,name,sis_user_id,sis_login_id,section
jdoe,12345,"Doe, Jane",S001,jdoe@uni.edu,Section A
bsmith,23456,"Smith, Bob",S002,bsmith@uni.edu,Section A
clee,34567,"Lee, Chris",,,Section B
"""


def notebook(text: str) -> bytes:
    nb = nbformat.v4.new_notebook()
    nb.cells.append(nbformat.v4.new_code_cell(f"answer = {text!r}", id="answer"))  # a fixed id: same text, same bytes
    return nbformat.writes(nb).encode()


def make_zip(path: Path, entries: dict[str, bytes], links: tuple[str, ...] = ()) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
        for name in links:  # a symbolic link entry, as `zip --symlinks` writes it
            info = zipfile.ZipInfo(name)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, "/etc/passwd")
    return path


# What Canvas's "Download Submissions" zip looks like (lib/content_zipper.rb): name_[LATE_]userid_fileid_file.
GOOD = {
    "doejane_12345_600001_01_attention.ipynb": notebook("jane, first try"),
    "doejane_12345_600007_01_attention-1.ipynb": notebook("jane, re-upload"),       # the latest of jdoe's two
    "smithbob_LATE_23456_600003_01_attention.ipynb": notebook("bob, late"),
    "leechris_34567_600004_02_sampling.ipynb": notebook("chris"),                   # assignment from the name
}
BAD = {
    "ghostuser_99999_600005_01_attention.ipynb": "not in the roster",
    "doejane_12345_600006_03_unknown.ipynb": "expected one of 01_attention.ipynb, 02_sampling.ipynb",
    "../doejane_12345_600008_01_attention.ipynb": "'..'",
    "/tmp/doejane_12345_600011_01_attention.ipynb": "absolute path",
    "smithbob_LATE_23456_600009_notes.pdf": "not a notebook",
    "leechris_34567_text.html": "text-entry",
    "anon_x7k2p_600012_01_attention.ipynb": "anonymous grading",
    "README.txt": "not Canvas's name form",
    "doejane_12345_600010_01_attention.ipynb": "symbolic link",
}


@pytest.fixture
def roster(tmp_path: Path) -> lms.Roster:
    path = tmp_path / "roster.csv"
    path.write_text(ROSTER)
    return lms.load_roster(path)


@pytest.fixture
def canvas_zip(tmp_path: Path) -> Path:
    entries = {**GOOD, **{name: notebook("hostile") for name in BAD if "symbolic" not in BAD[name]}}
    entries["smithbob_LATE_23456_600009_notes.pdf"] = b"%PDF-1.4"
    entries["leechris_34567_text.html"] = b"<p>see attached</p>"
    entries["README.txt"] = b"hello"
    return make_zip(tmp_path / "submissions.zip", entries, links=("doejane_12345_600010_01_attention.ipynb",))


def tree(folder: Path) -> dict[str, bytes]:
    """Every file under folder (reports aside) with its bytes."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and "reports" not in p.parts}


# --------------------------------------------------------------------------------------------- names
@pytest.mark.parametrize("name, expected", [
    ("doejane_12345_6789012_01_attention.ipynb", ("doejane", False, "12345", 6789012, "01_attention.ipynb")),
    ("doejane_LATE_12345_6789012_01_attention-1.ipynb", ("doejane", True, "12345", 6789012, "01_attention-1.ipynb")),
    ("o_brienmary_77_88_my file (1).ipynb", ("o_brienmary", False, "77", 88, "my file (1).ipynb")),
    ("_12345_678_01_attention.ipynb", ("", False, "12345", 678, "01_attention.ipynb")),
    ("LATE_anon_x7k2p_678_01_attention.ipynb", ("", True, "anon_x7k2p", 678, "01_attention.ipynb")),
])
def test_canvas_file_names_are_taken_apart(name, expected):
    parsed = lms.parse_canvas_name(name)
    assert parsed is not None, name
    assert (parsed.name, parsed.late, parsed.user, parsed.file_id, parsed.display) == expected


@pytest.mark.parametrize("name", ["01_attention.ipynb", "doejane_01_attention.ipynb", "doejane_12_x.ipynb"])
def test_other_names_are_not_canvas_files(name):
    assert lms.parse_canvas_name(name) is None


def test_notebook_names_and_reupload_numbers():
    assert lms.match_notebook("01_attention.ipynb", ASSIGNMENTS) == ("01_attention", 0)
    assert lms.match_notebook("01_attention-12.ipynb", ASSIGNMENTS) == ("01_attention", 12)
    assert lms.match_notebook("01_attention (1).ipynb", ASSIGNMENTS) == ("01_attention", 1)
    assert lms.match_notebook("01_attention_final.ipynb", ASSIGNMENTS) is None
    assert lms.match_notebook("01_attention-1.pdf", ASSIGNMENTS) is None
    assert lms.match_notebook("lab-2.ipynb", ["lab", "lab-2"]) == ("lab-2", 0)  # an assignment ending in -N
    assert lms.match_notebook("lab-3.ipynb", ["lab", "lab-2"]) == ("lab", 3)


# --------------------------------------------------------------------------------------------- collect
def test_collect_builds_the_autograde_layout_and_keeps_every_attempt(tmp_path, roster, canvas_zip):
    out = tmp_path / "submissions"
    report = lms.collect_canvas(canvas_zip, roster, out, ASSIGNMENTS)

    got = {(c.student, c.assignment): c for c in report.collected}
    assert sorted(got) == [("bsmith", "01_attention"), ("clee", "02_sampling"), ("jdoe", "01_attention")]
    assert all(c.action == "new" for c in report.collected)
    assert (out / "jdoe/01_attention/01_attention.ipynb").read_bytes() == notebook("jane, re-upload")
    assert (out / "bsmith/01_attention/01_attention.ipynb").read_bytes() == notebook("bob, late")
    assert (out / "clee/02_sampling/02_sampling.ipynb").read_bytes() == notebook("chris")
    assert got[("bsmith", "01_attention")].late and not got[("jdoe", "01_attention")].late
    assert got[("jdoe", "01_attention")].attempts == 2

    kept = out / ".canvas/attempts/jdoe/01_attention"
    assert (kept / "600001/01_attention.ipynb").read_bytes() == notebook("jane, first try")
    assert (kept / "600007/01_attention-1.ipynb").read_bytes() == notebook("jane, re-upload")
    meta = json.loads((out / ".canvas/attempts/bsmith/01_attention/600003/attempt.json").read_text())
    assert meta["late"] is True and meta["entry"] == "smithbob_LATE_23456_600003_01_attention.ipynb"
    assert not list(out.rglob("timestamp.txt")), "Canvas's zip has no submission time: no timestamp.txt"

    # every entry of the zip is either collected or listed with its reason, never dropped silently
    skipped = dict(report.skipped)
    assert set(skipped) == set(BAD)
    for name, reason in BAD.items():
        assert reason in skipped[name], (name, skipped[name])
    collected_entries = {json.loads(p.read_text())["entry"] for p in out.rglob("attempt.json")}
    assert collected_entries == set(GOOD)
    assert not report.ok
    text = report.report_path.read_text()
    assert report.report_path.parent == out / ".canvas/reports"
    assert all(name in text for name in BAD) and "jdoe/01_attention: new" in text

    # nothing was written outside OUT, and OUT is what `course autograde` reads
    assert sorted(p.name for p in tmp_path.iterdir()) == ["roster.csv", "submissions", "submissions.zip"]
    from course_utils.grader.submissions import discover

    found, warnings = discover(out, set(ASSIGNMENTS))
    assert [(s, a) for s, a, _ in found] == [("bsmith", "01_attention"), ("clee", "02_sampling"),
                                             ("jdoe", "01_attention")]
    assert warnings == []


def test_collecting_the_same_zip_again_changes_nothing(tmp_path, roster, canvas_zip):
    out = tmp_path / "submissions"
    lms.collect_canvas(canvas_zip, roster, out, ASSIGNMENTS)
    before = tree(out)
    mtimes = {p: p.stat().st_mtime_ns for p in out.rglob("*.ipynb")}
    report = lms.collect_canvas(canvas_zip, roster, out, ASSIGNMENTS)
    assert [c.action for c in report.collected] == ["unchanged"] * 3
    assert tree(out) == before
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.ipynb")} == mtimes
    assert len(list((out / ".canvas/reports").iterdir())) == 2  # one report per run


def test_a_newer_zip_moves_the_latest_forward_and_an_older_one_does_not_go_back(tmp_path, roster, canvas_zip):
    out = tmp_path / "submissions"
    lms.collect_canvas(canvas_zip, roster, out, ASSIGNMENTS)
    newer = make_zip(tmp_path / "newer.zip", {
        "doejane_LATE_12345_600020_01_attention-2.ipynb": notebook("jane, third try"),
        "smithbob_LATE_23456_600003_01_attention.ipynb": notebook("bob, late"),  # the same file again
    })
    report = lms.collect_canvas(newer, roster, out, ASSIGNMENTS)
    got = {c.student: c for c in report.collected}
    assert got["jdoe"].action == "updated" and got["jdoe"].late and got["jdoe"].attempts == 3
    assert got["bsmith"].action == "unchanged"
    assert (out / "jdoe/01_attention/01_attention.ipynb").read_bytes() == notebook("jane, third try")
    assert report.ok

    again = lms.collect_canvas(canvas_zip, roster, out, ASSIGNMENTS)  # the older zip, collected late
    assert {c.student: c.action for c in again.collected}["jdoe"] == "unchanged"
    assert (out / "jdoe/01_attention/01_attention.ipynb").read_bytes() == notebook("jane, third try")
    assert len(list((out / ".canvas/attempts/jdoe/01_attention").iterdir())) == 3


def test_a_notebook_changed_by_hand_is_never_overwritten(tmp_path, roster, canvas_zip):
    out = tmp_path / "submissions"
    lms.collect_canvas(canvas_zip, roster, out, ASSIGNMENTS)
    mine = out / "jdoe/01_attention/01_attention.ipynb"
    mine.write_bytes(notebook("fixed by the instructor"))
    newer = make_zip(tmp_path / "newer.zip", {"doejane_12345_600030_01_attention.ipynb": notebook("jane, 4th")})
    report = lms.collect_canvas(newer, roster, out, ASSIGNMENTS)
    assert [c.action for c in report.collected] == ["conflict"]
    assert mine.read_bytes() == notebook("fixed by the instructor")
    assert any(str(mine) in p and "changed by hand" in p for p in report.problems)
    assert (out / ".canvas/attempts/jdoe/01_attention/600030/01_attention.ipynb").is_file()  # kept all the same


def test_assignment_option_and_size_limits(tmp_path, roster, canvas_zip):
    out = tmp_path / "submissions"
    report = lms.collect_canvas(canvas_zip, roster, out, ASSIGNMENTS, assignment="01_attention")
    assert sorted(c.student for c in report.collected) == ["bsmith", "jdoe"]
    assert "but --assignment is 01_attention" in dict(report.skipped)["leechris_34567_600004_02_sampling.ipynb"]
    with pytest.raises(ValueError, match="unknown assignment '99_nope'"):
        lms.collect_canvas(canvas_zip, roster, out, ASSIGNMENTS, assignment="99_nope")

    tiny = lms.Limits(max_file_mb=0.0001)  # ~100 bytes: every notebook is "too large"
    report = lms.collect_canvas(canvas_zip, roster, tmp_path / "tiny", ASSIGNMENTS, limits=tiny)
    assert report.collected == [] and "larger than" in dict(report.skipped)["doejane_12345_600001_01_attention.ipynb"]
    with pytest.raises(ValueError, match="more than 3"):
        lms.collect_canvas(canvas_zip, roster, tmp_path / "few", ASSIGNMENTS, limits=lms.Limits(max_entries=3))

    bomb = tmp_path / "bomb.zip"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("doejane_12345_700001_01_attention.ipynb", b"\0" * (2 * 1024 * 1024))  # 2 MB -> ~2 kB
    report = lms.collect_canvas(bomb, roster, tmp_path / "bomb", ASSIGNMENTS, limits=lms.Limits(max_file_mb=1))
    assert report.collected == [] and "larger than 1 MB" in report.skipped[0][1]

    (tmp_path / "not.zip").write_text("not a zip")
    with pytest.raises(ValueError, match="not a readable zip"):
        lms.collect_canvas(tmp_path / "not.zip", roster, out, ASSIGNMENTS)


# --------------------------------------------------------------------------------------------- roster
@pytest.mark.parametrize("line, message", [
    ("jdoe,12x45", "canvas_user_id '12x45' is not a Canvas user id"),
    ("jane doe,55555", "student_id 'jane doe' cannot be a student id"),
    ("../x,55555", "student_id '../x' cannot be a student id"),
    (",55555", "no student_id for Canvas user 55555"),
    ("other,12345", "Canvas user 12345 is already on line 2"),
    ("jdoe,55555", "student id 'jdoe' is already on line 2"),
])
def test_a_bad_roster_line_is_named(tmp_path, line, message):
    path = tmp_path / "roster.csv"
    path.write_text("student_id,canvas_user_id\njdoe,12345\n" + line + "\n")
    with pytest.raises(lms.RosterError) as err:
        lms.load_roster(path)
    assert f"{path}, line 3: {message}" in str(err.value)


def test_a_file_that_is_no_roster_says_what_is_expected(tmp_path):
    path = tmp_path / "roster.csv"
    path.write_text("name,email\nJane,j@x\n")
    with pytest.raises(lms.RosterError, match="line 1: not a roster: expected the columns student_id,canvas_user_id"):
        lms.load_roster(path)
    with pytest.raises(lms.RosterError, match="no roster at"):
        lms.load_roster(tmp_path / "missing.csv")


CANVAS_EXPORT = (
    "\ufeffStudent,ID,SIS User ID,SIS Login ID,Section,01_attention (4567),Quiz 1 (777),"
    "Assignments Current Score,Current Score,Final Score\n"
    "    Points Possible,,,,,5.00,10.00,(read only),(read only),(read only)\n"
    '"Doe, Jane",12345,S001,jdoe,Section A,4.00,8.00,80,80,80\n'
    '"Smith, Bob",23456,S002,bsmith,Section A,,,,,\n'
    '"Student, Test",99999,,,Section A,,,,,\n'
)


def test_canvas_gradebook_export_is_a_roster(tmp_path):
    path = tmp_path / "export.csv"
    path.write_text(CANVAS_EXPORT)
    roster = lms.load_roster(path)
    assert [(s.student_id, s.canvas_user_id, s.name) for s in roster.students] == [
        ("jdoe", 12345, "Doe, Jane"), ("bsmith", 23456, "Smith, Bob")]
    assert roster.canvas_columns == {"01_attention": "01_attention (4567)", "Quiz 1": "Quiz 1 (777)"}
    assert "Test Student" in roster.skipped[0]
    semicolons = tmp_path / "export-semicolons.csv"  # Canvas in locales with decimal commas
    semicolons.write_text("Student;ID;SIS User ID;SIS Login ID;Section\nDoe, Jane;12345;S001;jdoe;A\n")
    assert lms.load_roster(semicolons).by_canvas_id[12345].student_id == "jdoe"


# --------------------------------------------------------------------------------------------- grades out
GRADES = [  # rows of `course grades`'s generic CSV
    {"student_id": "jdoe", "assignment": "01_attention", "status": "graded", "score": "4.5", "max_score": "5",
     "flagged": "no", "flag_reasons": ""},
    {"student_id": "bsmith", "assignment": "01_attention", "status": "error", "score": "0", "max_score": "5",
     "flagged": "yes", "flag_reasons": "grader failed"},
    {"student_id": "jdoe", "assignment": "02_sampling", "status": "zero", "score": "0", "max_score": "12",
     "flagged": "yes", "flag_reasons": "no notebook"},
    {"student_id": "stranger", "assignment": "02_sampling", "status": "graded", "score": "12", "max_score": "12",
     "flagged": "no", "flag_reasons": ""},
]


def canvas_accepts(table: list[list[str]]) -> None:
    """The header and Points Possible checks of canvas-lms's GradebookImporter (app/models/gradebook_importer.rb)."""
    header = table[0]
    assert len(header) > 3 and "Student" in header[0] and "ID" in header[1]           # row_has_student_headers?
    assert header[2] == "SIS User ID" and header[3] == "SIS Login ID"                  # update_column_count
    assert "Section" in header[4]                                                      # last_student_info_column
    assert "Points Possible" in table[1][0]                                            # check_for_non_student_row


def read(path: Path) -> list[list[str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.reader(fh))


def test_canvas_grades_csv(tmp_path, roster):
    export = lms.write_canvas_grades(GRADES, roster, tmp_path / "canvas.csv")
    table = read(tmp_path / "canvas.csv")
    canvas_accepts(table)
    assert table[0] == lms.CANVAS_INFO + ["01_attention", "02_sampling"]
    assert table[1] == ["Points Possible", "", "", "", "", "5", "12"]
    rows = {r[1]: r for r in table[2:]}  # by Canvas user id, which is what Canvas matches first
    assert rows["12345"] == ["Doe, Jane", "12345", "S001", "jdoe@uni.edu", "Section A", "4.5", "0"]
    assert rows["23456"][5:] == ["", ""], "a grading error and a missing submission are blank, not 0"
    assert rows["34567"][5:] == ["", ""]
    assert len(table) == 2 + 3 and export.students == 3
    assert export.unmatched == [f"stranger/02_sampling: not in the roster {roster.path}: not exported (add a line "
                                "with their Canvas user id)"]
    assert any("bsmith/01_attention: no score (status error)" in w for w in export.warnings)
    assert any("jdoe/02_sampling: flagged for review (no notebook)" in w for w in export.warnings)

    no_points = [{"student_id": "jdoe", "assignment": "03_x", "status": "error", "score": "", "max_score": ""}]
    lms.write_canvas_grades(no_points, roster, tmp_path / "no-points.csv")
    assert read(tmp_path / "no-points.csv")[1][5] == "", "no max_score: no Points Possible (not 0)"

    lms.write_canvas_grades(GRADES, roster, tmp_path / "zero.csv", missing="zero")
    rows = {r[1]: r for r in read(tmp_path / "zero.csv")[2:]}
    assert rows["34567"][5:] == ["0", "0"] and rows["23456"][5:] == ["", "0"]  # an error stays blank


def test_canvas_grades_reuse_the_assignment_columns_of_a_canvas_export(tmp_path):
    path = tmp_path / "export.csv"
    path.write_text(CANVAS_EXPORT)
    lms.write_canvas_grades(GRADES[:1], lms.load_roster(path), tmp_path / "canvas.csv")
    table = read(tmp_path / "canvas.csv")
    canvas_accepts(table)
    assert table[0][5:] == ["01_attention (4567)"]  # Canvas matches "Title (id)" by id
    assert table[2][:2] == ["Doe, Jane", "12345"] and table[2][5] == "4.5"


# --------------------------------------------------------------------------------------------- CLI
@pytest.fixture
def course(tmp_path: Path) -> Path:
    root = tmp_path / "course"
    for name in ASSIGNMENTS:
        (root / "solutions" / name).mkdir(parents=True)
        (root / "solutions" / name / f"{name}.ipynb").write_bytes(notebook("source"))
    (root / "roster.csv").write_text(ROSTER)
    return root


def test_cli_collect(course, canvas_zip, capsys):
    out = course / "submissions"
    args = ["--root", str(course), "collect", str(canvas_zip), "--roster", str(course / "roster.csv"),
            "--out", str(out)]
    assert cli.main(args) == 1, "files were not collected: exit 1"
    printed = capsys.readouterr().out
    assert "3 submissions (3 new" in printed and "1 late" in printed
    for name in BAD:
        assert f"not collected: {name}:" in printed
    assert (out / "jdoe/01_attention/01_attention.ipynb").read_bytes() == notebook("jane, re-upload")

    clean = make_zip(course / "clean.zip", GOOD)
    assert cli.main(args[:3] + [str(clean)] + args[4:]) == 0
    assert "3 unchanged" in capsys.readouterr().out

    bad_roster = course / "bad.csv"
    bad_roster.write_text("student_id,canvas_user_id\njane doe,1\n")
    assert cli.main(args[:5] + [str(bad_roster)] + args[6:]) == 2
    assert f"{bad_roster}, line 2: student_id 'jane doe'" in capsys.readouterr().err
    assert cli.main(args + ["--assignment", "99_nope"]) == 2
    assert "unknown assignment '99_nope'" in capsys.readouterr().err


def test_cli_grades_canvas(course, capsys):
    from course_utils.grader.autograde import Record
    from course_utils.grader.workspace import Workspace

    ws = Workspace.at(course)
    Record("jdoe", "01_attention", score=5.0, max_score=5.0, graded_at="2026-01-01T00:00:00Z").save(ws)
    Record("clee", "01_attention", status="zero", score=0.0, max_score=5.0, review=["no notebook"]).save(ws)
    roster = str(course / "roster.csv")
    assert cli.main(["--root", str(course), "grades", "--format", "canvas", "--roster", roster]) == 0
    captured = capsys.readouterr()
    assert "3 students, 1 assignments (01_attention)" in captured.out
    assert "clee/01_attention: flagged for review (no notebook)" in captured.err
    table = read(ws.path / "grades-canvas.csv")
    canvas_accepts(table)
    assert [r[5] for r in table[2:]] == ["5", "0", ""]  # jdoe, clee, bsmith (sorted by name: Doe, Lee, Smith)
    assert not (ws.path / "grades.csv").exists(), "the generic CSV is not written as a side effect"

    assert cli.main(["--root", str(course), "grades", "--format", "canvas"]) == 2
    assert "needs --roster" in capsys.readouterr().err
    assert cli.main(["--root", str(course), "grades", "--roster", roster]) == 2
    assert cli.main(["--root", str(course), "grades"]) == 0
    assert read(ws.path / "grades.csv")[0][:3] == ["student_id", "assignment", "status"]


def test_help_lists_collect_and_the_canvas_format():
    run = lambda *a: subprocess.run([sys.executable, "-m", "course_utils.cli", *a], capture_output=True,  # noqa: E731
                                    text=True, timeout=120)
    assert "collect" in run("--help").stdout
    grades = run("grades", "--help").stdout
    assert "--format {csv,canvas}" in grades and "--roster" in grades and "--missing {blank,zero}" in grades
