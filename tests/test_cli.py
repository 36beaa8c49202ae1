"""The `course` command: argument handling, `validate` for learners, and delegation to `course progress`."""

from __future__ import annotations

import shutil
import subprocess
import sys
import types
from pathlib import Path

import nbformat
import pytest

from course_utils import cli
from course_utils.grader import workspace as grading

FIXTURE = Path(__file__).parent / "fixtures" / "grading" / "course"
NAME = "01_fixture"


@pytest.fixture(scope="module")
def course(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cli-course")
    shutil.copytree(FIXTURE, root, dirs_exist_ok=True)
    assert cli.main(["--root", str(root), "release"]) == 0
    return root


def test_help_lists_every_command():
    out = subprocess.run([sys.executable, "-m", "course_utils.cli", "--help"], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0
    for command in ("release", "validate", "autograde", "feedback", "grades", "progress"):
        assert command in out.stdout


def test_bad_arguments_say_what_is_wrong(course: Path, tmp_path: Path, capsys):
    assert cli.main(["--root", str(course), "release", "99_nope"]) == 2
    assert "99_nope" in capsys.readouterr().err
    assert cli.main(["--root", str(course), "autograde", str(tmp_path / "missing")]) == 2
    assert "student_id" in capsys.readouterr().err
    assert cli.main(["validate", str(tmp_path / "missing.ipynb")]) == 2
    with pytest.raises(SystemExit) as stop:
        cli.main(["--root", str(course), "autograde", str(tmp_path), "--jobs", "many"])
    assert stop.value.code == 2 and "--jobs takes a whole number or 'auto', got 'many'" in capsys.readouterr().err


def test_validate_lists_failing_checks_and_exits_nonzero(course: Path, tmp_path: Path, capsys):
    release = course / "notebooks" / NAME / f"{NAME}.ipynb"
    before = release.read_bytes()
    assert cli.main(["validate", str(release)]) == 1
    out = capsys.readouterr().out
    assert "0 of 4 checks pass" in out and "FAIL test_add_visible" in out and "not answered yet" in out
    assert release.read_bytes() == before, "validate must not change the notebook"

    solved = grading.fill_in_solutions(nbformat.read(release, as_version=4),
                                       nbformat.read(course / "solutions" / NAME / f"{NAME}.ipynb", as_version=4))
    nbformat.write(solved, tmp_path / f"{NAME}.ipynb")
    assert cli.main(["validate", str(tmp_path / f"{NAME}.ipynb")]) == 0
    assert "4 of 4 checks pass" in capsys.readouterr().out


def test_progress_is_delegated(monkeypatch):
    calls = {}
    fake = types.ModuleType("course_utils.review.progress")
    fake.add_arguments = lambda parser: parser.add_argument("--deck")
    fake.run = lambda args: calls.setdefault("deck", args.deck) and 7
    monkeypatch.setitem(sys.modules, "course_utils.review.progress", fake)
    import course_utils.review

    monkeypatch.setattr(course_utils.review, "progress", fake, raising=False)
    assert cli.main(["progress", "--deck", "attention"]) == 7
    assert calls == {"deck": "attention"}


def test_release_does_not_overwrite_work(course: Path, tmp_path: Path, capsys):
    out = tmp_path / "release"
    assert cli.main(["--root", str(course), "release", "--out", str(out)]) == 0
    path = out / NAME / f"{NAME}.ipynb"
    nb = nbformat.read(path, as_version=4)
    nb.cells[1].outputs = [nbformat.v4.new_output("stream", name="stdout", text="my work\n")]
    nbformat.write(nb, path)
    assert cli.main(["--root", str(course), "release", "--out", str(out)]) == 2
    assert "somebody worked in it" in capsys.readouterr().err
    assert "my work" in path.read_text()
    assert cli.main(["--root", str(course), "release", "--out", str(out), "--force"]) == 0
    assert "my work" not in path.read_text()
