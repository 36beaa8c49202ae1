"""``course progress``: where a learner stands, on one screen.

For each of the learner's notebooks (default ``notebooks/`` under the current directory), how many of its
visible checks pass, and for each flashcard deck how many cards are due. Checks are counted by running a
**copy** of each notebook with the course's one runner (:mod:`course_utils.runner`, the same rules as
``course validate``: the learner's file is never touched).

    course progress                 # notebooks/ under the current directory
    course progress path/to/my.ipynb --timeout 60
    course progress --no-run        # only list the notebooks' checks and the flashcards (instant)
    python -m course_utils.review.progress # the same without the ``course`` command
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import TextIO

BAR_WIDTH = 20


@dataclass
class NotebookResult:
    name: str
    checks: int
    passed: int | None = None     # None: not run
    seconds: float = 0.0
    problem: str = ""             # why the count is incomplete (cannot be read, timeout, kernel died)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``course progress`` (also used by ``python -m course_utils.review.progress``)."""
    parser.add_argument("path", nargs="?", default="notebooks",
                        help="a folder of notebooks or one .ipynb file (default: notebooks/)")
    parser.add_argument("--no-run", action="store_true",
                        help="do not execute the notebooks: count their checks and show the flashcards only")
    parser.add_argument("--timeout", type=int, default=120, metavar="SECONDS",
                        help="stop a notebook when one cell runs longer than this (default: 120)")
    parser.add_argument("--progress-file", default=None, metavar="FILE",
                        help="flashcard progress file (default: $COURSE_PROGRESS_FILE or "
                             "~/.local/share/llm-foundations/progress.json)")


def find_notebooks(path: Path) -> list[Path]:
    """``path`` itself if it is a notebook, else every ``*.ipynb`` below it (checkpoints skipped), sorted."""
    if path.is_file():
        return [path]
    return sorted(p for p in path.rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts)


def check_notebook(path: Path, timeout: int = 120, run: bool = True) -> NotebookResult:
    """Count the visible checks of one notebook that pass, running a copy of it (:mod:`course_utils.runner`:
    the same rules as ``course validate``)."""
    import nbformat

    from course_utils import cells, runner

    name = path.stem
    try:
        nb = nbformat.read(path, as_version=4)
    except Exception as err:  # noqa: BLE001 - any unreadable file is reported, never fatal
        return NotebookResult(name, 0, problem=f"cannot be read ({type(err).__name__}: {err})")
    graded = [c for c in nb.cells if cells.is_test_cell(c)]
    if not run or not graded:
        return NotebookResult(name, len(graded))
    result = runner.run_notebook(path, timeout=timeout, mode="grader")
    return NotebookResult(name, len(result.checks), result.passed, result.seconds, result.problem)


def _bar(done: int, total: int) -> str:
    filled = round(BAR_WIDTH * done / total) if total else 0
    return "█" * filled + "·" * (BAR_WIDTH - filled)


def format_notebook_row(r: NotebookResult) -> str:
    if r.problem and r.passed is None:
        return f"  {r.name:<22} {r.problem}"
    if r.checks == 0:
        return f"  {r.name:<22} no graded checks"
    if r.passed is None:
        return f"  {r.name:<22} {r.checks:>3} checks (not run: --no-run)"
    line = f"  {r.name:<22} {r.passed:>3}/{r.checks:<3} {_bar(r.passed, r.checks)}  {r.seconds:5.1f} s"
    return line + (f"  {r.problem}" if r.problem else "")


def flashcard_lines(progress_file: str | None, today: date | None = None) -> list[str]:
    """The flashcard half of the screen: one row per deck."""
    from course_utils.review.flashcards import deck_summary
    from course_utils.review.srs import ProgressFileError, ProgressStore

    store = ProgressStore(progress_file)
    lines = [f"Flashcards (progress file: {store.path})"]
    try:
        store.reload()
    except (OSError, ProgressFileError) as err:
        lines.append(f"  Your progress file cannot be read: {err}")
    lines += [f"  {n}" for n in store.notices]
    lines.append(f"  {'deck':<14} {'cards':>5} {'seen':>5} {'due':>5} {'new':>5} {'done today':>11}  next due")
    total_due = 0
    for row in deck_summary(store, today):
        total_due += row["due"]
        lines.append(f"  {row['topic']:<14} {row['cards']:>5} {row['seen']:>5} {row['due']:>5} {row['new']:>5} "
                     f"{row['done_today']:>11}  {row['next_due'] or '-'}")
    lines.append(f"  {total_due} card(s) due today: review them with `review()` in 99_review, "
                 "or `review(\"<deck>\")` at the end of a notebook.")
    return lines


def run(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """Print the overview; returns 0, or 2 when the path does not exist."""
    out = out or sys.stdout
    path = Path(args.path)
    if not path.exists():
        print(f"course progress: {path} does not exist. Run it from the course folder (which has notebooks/) "
              "or give the folder or notebook to look at.", file=sys.stderr)
        return 2
    notebooks = find_notebooks(path)
    how = "counted only (--no-run)" if args.no_run else "run on a copy; your files are not modified"
    print(f"Checks in {path} ({how})", file=out)
    if not notebooks:
        print("  no notebooks found", file=out)
    total = passed = 0
    for nb_path in notebooks:
        result = check_notebook(nb_path, timeout=args.timeout, run=not args.no_run)
        print(format_notebook_row(result), file=out, flush=True)
        total += result.checks
        passed += result.passed or 0
    if not args.no_run and total:
        print(f"  {'all notebooks':<22} {passed:>3}/{total:<3} {_bar(passed, total)}", file=out)
    print(file=out)
    for line in flashcard_lines(args.progress_file):
        print(line, file=out)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="course progress", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
