"""`course progress`: visible checks counted on a copy of each notebook, flashcards due per deck."""

from __future__ import annotations

import argparse
import io
from datetime import date, timedelta
from pathlib import Path

import nbformat
import pytest

from course_utils import cells
from course_utils.review import progress
from course_utils.review.srs import ProgressStore


@pytest.fixture(autouse=True)
def progress_file(tmp_path, monkeypatch):
    path = tmp_path / "data" / "progress.json"
    monkeypatch.setenv("COURSE_PROGRESS_FILE", str(path))
    return path


def _graded(source: str, grade_id: str) -> nbformat.NotebookNode:
    cell = nbformat.v4.new_code_cell(source)
    cell.metadata["nbgrader"] = {"grade": True, "grade_id": grade_id, "locked": True, "points": 1,
                                 "schema_version": 3, "solution": False, "task": False}
    return cell


def _notebook(path: Path, cells: list) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.cells = cells
    nb.metadata["kernelspec"] = {"display_name": "Python 3", "language": "python", "name": "python3"}
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)
    return path


def _learner_notebook(path: Path) -> Path:
    answer = nbformat.v4.new_code_cell("def double(x):\n    return 2 * x")
    answer.metadata["nbgrader"] = {"grade": False, "grade_id": "answer", "locked": False,
                                   "schema_version": 3, "solution": True, "task": False}
    return _notebook(path, [
        nbformat.v4.new_markdown_cell("# A lesson"),
        answer,
        _graded('"""double: small numbers."""\nassert double(2) == 4', "t1"),
        _graded('"""double: a case the learner gets wrong."""\nassert double(3) == 7', "t2"),
        nbformat.v4.new_code_cell("open('scratch.txt', 'w').write('written by the notebook')"),
        _graded('"""double: negatives."""\nassert double(-1) == -2', "t3"),
    ])


def _args(path: Path, *extra: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    progress.add_arguments(parser)
    return parser.parse_args([str(path), *extra])


def test_graded_cells_are_code_cells_with_grade_true():
    nb = nbformat.v4.new_notebook()
    manual = nbformat.v4.new_code_cell("x = 1")
    manual.metadata["nbgrader"] = {"grade": True, "solution": True}  # manually graded answer: not a check
    nb.cells = [nbformat.v4.new_code_cell("1"), _graded("assert True", "a"), manual, _graded("assert 1", "b")]
    assert [i for i, c in enumerate(nb.cells) if cells.is_test_cell(c)] == [1, 3]


def test_counts_passing_checks_without_touching_the_notebook(tmp_path):
    nb_path = _learner_notebook(tmp_path / "notebooks" / "01_demo" / "01_demo.ipynb")
    before, mtime = nb_path.read_bytes(), nb_path.stat().st_mtime_ns
    result = progress.check_notebook(nb_path, timeout=60)
    assert (result.name, result.checks, result.passed, result.problem) == ("01_demo", 3, 2, "")
    assert nb_path.read_bytes() == before and nb_path.stat().st_mtime_ns == mtime
    assert not (nb_path.parent / "scratch.txt").exists(), "the copy must run in a temporary directory"
    assert list(nb_path.parent.iterdir()) == [nb_path]


def test_a_cell_over_the_timeout_stops_the_notebook(tmp_path):
    nb_path = _notebook(tmp_path / "slow.ipynb", [
        _graded('"""fast."""\nassert True', "fast"),
        nbformat.v4.new_code_cell("import time\ntime.sleep(60)"),
        _graded('"""after the slow cell."""\nassert True', "after"),
    ])
    result = progress.check_notebook(nb_path, timeout=2)
    assert (result.checks, result.passed) == (2, 1)
    assert "longer than 2 s" in result.problem
    assert result.seconds < 30


def test_no_run_counts_checks_and_shows_due_cards(tmp_path, progress_file):
    _learner_notebook(tmp_path / "notebooks" / "01_demo" / "01_demo.ipynb")
    (tmp_path / "notebooks" / "broken.ipynb").write_text("{ not a notebook")
    yesterday = date.today() - timedelta(days=1)
    store = ProgressStore.load()
    store.record("attention/causal-mask", 5, yesterday)  # interval 1: due today
    store.record("attention/rnn", 4, date.today())       # done today
    out = io.StringIO()
    assert progress.run(_args(tmp_path / "notebooks", "--no-run"), out=out) == 0
    text = out.getvalue()
    assert "01_demo" in text and "3 checks (not run" in text
    assert "broken" in text and "cannot be read" in text
    row = next(line.split() for line in text.splitlines() if line.strip().startswith("attention "))
    cards, seen, due, new, done = map(int, row[1:6])
    assert (seen, due, done) == (2, 1, 1) and new == cards - 2
    assert str(progress_file) in text
    assert len(text.splitlines()) <= 24, "the overview must fit on one screen"


def test_run_executes_and_totals(tmp_path):
    _learner_notebook(tmp_path / "nbs" / "01_demo.ipynb")
    out = io.StringIO()
    assert progress.run(_args(tmp_path / "nbs", "--timeout", "60"), out=out) == 0
    text = out.getvalue()
    assert "  2/3" in text and "all notebooks" in text


def test_missing_path_is_a_clear_error(tmp_path, capsys):
    assert progress.run(_args(tmp_path / "nowhere")) == 2
    assert "does not exist" in capsys.readouterr().err


def test_arguments_plug_into_a_subcommand():
    parser = argparse.ArgumentParser(prog="course")
    sub = parser.add_subparsers(dest="command")
    progress.add_arguments(sub.add_parser("progress"))
    args = parser.parse_args(["progress", "--no-run"])
    assert args.path == "notebooks" and args.no_run and args.timeout == 120 and args.progress_file is None
