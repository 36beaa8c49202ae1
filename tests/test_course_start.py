"""``course start``, ``course start --update`` and ``course lab``: a learner's folder, and nothing of theirs is lost.

The shipped notebooks are faked with a small folder (``source``) so that a "new version" can be made by editing
it; tests/test_packaging.py runs the real commands from an installed wheel.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import nbformat
import pytest

import course_utils
from course_utils import cli, learner

ROOT = Path(__file__).resolve().parents[1]


def _nb(text: str) -> bytes:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell(text, id="intro"), nbformat.v4.new_code_cell("x = 1", id="code")]
    return nbformat.writes(nb).encode()


@pytest.fixture()
def source(tmp_path: Path, monkeypatch) -> Path:
    """A stand-in for the notebooks the package ships (``learner.shipped_dir``)."""
    src = tmp_path / "shipped"
    for name in ("99_review", "01_attention", "02_sampling"):
        (src / name).mkdir(parents=True)
        (src / name / f"{name}.ipynb").write_bytes(_nb(f"# {name}, version 1"))
    (src / "01_attention" / "data.txt").write_text("a data file next to the notebook\n")
    (src / "01_attention" / ".ipynb_checkpoints").mkdir()
    (src / "01_attention" / ".ipynb_checkpoints" / "01_attention-checkpoint.ipynb").write_text("{}")
    monkeypatch.setattr(learner, "shipped_dir", lambda: src)
    return src


def _tree(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` (hidden ones included) -> SHA-256 of its bytes."""
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_start_copies_every_notebook_and_records_what_it_copied(source: Path, tmp_path: Path):
    work = tmp_path / "work" / "llm-foundations"
    report = learner.start(work)
    expected = ["01_attention/01_attention.ipynb", "01_attention/data.txt", "02_sampling/02_sampling.ipynb",
                "99_review/99_review.ipynb"]
    assert report.added == expected
    for rel in expected:
        assert (work / rel).read_bytes() == (source / rel).read_bytes()
    assert not (work / "01_attention" / ".ipynb_checkpoints").exists()
    record = json.loads((work / learner.RECORD).read_text())
    assert record["version"] == course_utils.__version__ and sorted(record["files"]) == expected
    assert (work / "99_review" / "99_review.ipynb").stat().st_mode & 0o644 == 0o644  # an ordinary file


def test_start_again_changes_nothing(source: Path, tmp_path: Path):
    work = tmp_path / "llm-foundations"
    learner.start(work)
    (work / "01_attention" / "01_attention.ipynb").write_bytes(_nb("my answers"))
    before = _tree(work)
    assert learner.start(work).already_started
    assert _tree(work) == before


def test_start_never_overwrites_a_file_that_is_there(source: Path, tmp_path: Path):
    work = tmp_path / "folder-with-work"
    (work / "01_attention").mkdir(parents=True)
    mine = work / "01_attention" / "01_attention.ipynb"
    mine.write_bytes(b"my own notebook")
    with pytest.raises(learner.StartError, match=r"01_attention/01_attention.ipynb.*--update"):
        learner.start(work)
    assert mine.read_bytes() == b"my own notebook" and _tree(work) == {"01_attention/01_attention.ipynb":
                                                                         hashlib.sha256(b"my own notebook").hexdigest()}


def test_start_into_a_folder_with_other_files_adds_the_course_beside_them(source: Path, tmp_path: Path):
    work = tmp_path / "projects"
    work.mkdir()
    (work / "notes.md").write_text("mine")
    learner.start(work)
    assert (work / "notes.md").read_text() == "mine" and (work / "02_sampling" / "02_sampling.ipynb").is_file()


def test_update_keeps_edits_byte_for_byte_and_puts_new_versions_beside_them(source: Path, tmp_path: Path):
    work = tmp_path / "llm-foundations"
    learner.start(work)
    edited = work / "01_attention" / "01_attention.ipynb"
    edited.write_bytes(edited.read_bytes().replace(b"x = 1", b"x = 42  # my answer"))
    mine = edited.read_bytes()
    (work / "my_notes.txt").write_text("keep me")

    # a new version: 01 and 02 change, 03 is new, 00 is the same, data.txt is gone
    (source / "01_attention" / "01_attention.ipynb").write_bytes(_nb("# 01_attention, version 2"))
    (source / "02_sampling" / "02_sampling.ipynb").write_bytes(_nb("# 02_sampling, version 2"))
    (source / "03_finetuning").mkdir()
    (source / "03_finetuning" / "03_finetuning.ipynb").write_bytes(_nb("# 03_finetuning, version 2"))
    (source / "01_attention" / "data.txt").unlink()

    report = learner.update(work)
    beside = f"01_attention/01_attention.v{course_utils.__version__}.ipynb"
    assert report.added == ["03_finetuning/03_finetuning.ipynb"]
    assert report.replaced == ["02_sampling/02_sampling.ipynb"]  # never edited: safe to bring up to date
    assert report.beside == [("01_attention/01_attention.ipynb", beside)]
    assert report.unchanged == ["99_review/99_review.ipynb"]
    assert report.retired == ["01_attention/data.txt"]
    assert edited.read_bytes() == mine, "the learner's edited notebook changed"
    assert (work / beside).read_bytes() == (source / "01_attention" / "01_attention.ipynb").read_bytes()
    assert (work / "02_sampling" / "02_sampling.ipynb").read_bytes() == _nb("# 02_sampling, version 2")
    assert (work / "my_notes.txt").read_text() == "keep me" and (work / "01_attention" / "data.txt").is_file()
    text = "\n".join(report.lines())
    assert "kept      01_attention/01_attention.ipynb (you edited it); the new version is beside it" in text
    assert "updated   02_sampling/02_sampling.ipynb" in text and "added     03_finetuning" in text

    # running it again changes nothing and makes no second copy
    before = _tree(work)
    again = learner.update(work)
    assert _tree(work) == before
    assert again.beside == [("01_attention/01_attention.ipynb", beside)] and not again.added + again.replaced

    # yet another version of 01 with the same package version: a second name, the first copy untouched
    (source / "01_attention" / "01_attention.ipynb").write_bytes(_nb("# 01_attention, version 3"))
    third = learner.update(work)
    assert third.beside[0][1] == f"01_attention/01_attention.v{course_utils.__version__}-2.ipynb"
    assert edited.read_bytes() == mine and (work / beside).read_bytes() == _nb("# 01_attention, version 2")


def test_update_of_an_edited_notebook_without_a_new_version_keeps_it(source: Path, tmp_path: Path):
    work = tmp_path / "llm-foundations"
    learner.start(work)
    (work / "99_review" / "99_review.ipynb").write_bytes(b"edited")
    report = learner.update(work)
    assert report.kept == ["99_review/99_review.ipynb"] and not report.beside
    assert (work / "99_review" / "99_review.ipynb").read_bytes() == b"edited"


def test_update_without_a_record_treats_every_difference_as_the_learners(source: Path, tmp_path: Path):
    work = tmp_path / "llm-foundations"
    learner.start(work)
    (work / learner.RECORD).unlink()
    (source / "02_sampling" / "02_sampling.ipynb").write_bytes(_nb("v2"))
    report = learner.update(work)
    assert [rel for rel, _ in report.beside] == ["02_sampling/02_sampling.ipynb"] and not report.replaced
    assert (work / "02_sampling" / "02_sampling.ipynb").read_bytes() == _nb("# 02_sampling, version 1")


@pytest.mark.parametrize("content", ["not json", "[]", '{"files": 3}'])
def test_a_damaged_record_stops_the_update_with_advice(source: Path, tmp_path: Path, content: str):
    work = tmp_path / "llm-foundations"
    learner.start(work)
    (work / learner.RECORD).write_text(content)
    before = _tree(work)
    with pytest.raises(learner.StartError, match="damaged.*move it away"):
        learner.update(work)
    assert _tree(work) == before


def test_bad_folders_get_clear_errors(source: Path, tmp_path: Path):
    a_file = tmp_path / "notes.txt"
    a_file.write_text("x")
    with pytest.raises(learner.StartError, match="is a file, not a folder"):
        learner.start(a_file)
    with pytest.raises(learner.StartError, match=r"no course folder at .*missing: run course start"):
        learner.update(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(learner.StartError, match="is empty: run course start"):
        learner.update(tmp_path / "empty")


def test_the_cli(source: Path, tmp_path: Path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert cli.main(["start"]) == 0
    out = capsys.readouterr().out
    assert "Started the course in llm-foundations" in out and "course lab llm-foundations" in out
    assert (tmp_path / "llm-foundations" / "99_review" / "99_review.ipynb").is_file()
    assert cli.main(["start"]) == 0 and "already a course folder" in capsys.readouterr().out
    (tmp_path / "llm-foundations" / "99_review" / "99_review.ipynb").write_bytes(b"mine")
    (source / "99_review" / "99_review.ipynb").write_bytes(_nb("v2"))
    assert cli.main(["start", "--update"]) == 0
    assert "the new version is beside it" in capsys.readouterr().out
    (tmp_path / "file.txt").write_text("x")
    assert cli.main(["start", "file.txt"]) == 2
    err = capsys.readouterr().err
    assert "file.txt is a file, not a folder" in err and "course start ./llm-foundations" in err
    assert cli.main(["lab", "nowhere"]) == 2
    assert "no folder" in capsys.readouterr().err


def test_lab_finds_the_course_folder_and_runs_this_pythons_jupyterlab(source: Path, tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(learner.StartError, match="run course start first"):
        learner.find_course_folder(None)
    learner.start(tmp_path / "llm-foundations")
    assert learner.find_course_folder(None) == tmp_path / "llm-foundations"
    monkeypatch.chdir(tmp_path / "llm-foundations")
    assert learner.find_course_folder(None) == tmp_path / "llm-foundations"
    calls = []
    monkeypatch.setattr(learner.subprocess, "call", lambda cmd, **kw: calls.append((cmd, kw)) or 0)
    assert cli.main(["lab", "--no-browser", "--port", "9999"]) == 0
    cmd, kw = calls[0]
    assert cmd[:3] == [learner.sys.executable, "-m", "jupyterlab"] and "--no-browser" in cmd and "--port=9999" in cmd
    assert f"--ServerApp.root_dir={tmp_path / 'llm-foundations'}" in cmd and kw["cwd"] == tmp_path / "llm-foundations"


def test_a_clone_ships_its_committed_release():
    """In a clone (editable install) ``course start`` copies notebooks/ itself; in a wheel, the packaged copy."""
    shipped = learner.shipped_dir()
    assert shipped in (ROOT / "notebooks", Path(course_utils.__file__).parent / "student_notebooks")
    files = learner.shipped_files()
    assert files and all(not rel.startswith("solutions") for rel in files)
