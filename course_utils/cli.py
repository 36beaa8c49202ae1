"""The ``course`` command: start, lab, release, validate, autograde, feedback, grades, progress.

    course start [DIR] [--update]                    copy the student notebooks to DIR (default ./llm-foundations)
    course lab [DIR]                                 open JupyterLab on DIR
    course release [ASSIGNMENT ...] [--out DIR]      solutions/ -> notebooks/ (deterministic, no leftovers)
    course validate NOTEBOOK                         which checks fail and why (exit 1 if any)
    course autograde DIR [--force] [--timeout S]     grade DIR/<student>/<assignment>/<assignment>.ipynb
    course feedback                                  feedback HTML per student (no hidden test code)
    course grades [--out CSV]                        one row per submission, with flags for review
    course progress                                  a learner's progress (checks passing, cards due)

Instructor state lives in ``--workspace`` (default ``<course root>/grading/``). See "For instructors" in README.md.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from pathlib import Path


def _root(args: argparse.Namespace) -> Path:
    from course_utils.grading import find_course_root  # noqa: PLC0415

    return Path(args.root).resolve() if args.root else find_course_root(Path.cwd())


def _workspace(args: argparse.Namespace):
    from course_utils.grading import Workspace  # noqa: PLC0415

    return Workspace.at(_root(args), args.workspace)


def cmd_release(args: argparse.Namespace) -> int:
    from course_utils import grading  # noqa: PLC0415

    root = _root(args)
    names = args.assignment or grading.assignments(root)
    if not names:
        print(f"no assignments in {root / 'solutions'} (expected solutions/NN_topic/NN_topic.ipynb)", file=sys.stderr)
        return 1
    written = grading.release(root, names, args.out, force=args.force)
    for path in written:
        print(f"released {path.relative_to(path.parents[1])} -> {path}")
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    from course_utils.validate import validate  # noqa: PLC0415

    path = Path(args.notebook)
    if not path.is_file():
        print(f"no notebook at {path}", file=sys.stderr)
        return 2
    try:
        result = validate(path, timeout=args.timeout)
    except Exception as err:  # noqa: BLE001 - unreadable notebook, kernel that would not start...
        print(f"could not run {path}: {type(err).__name__}: {err}", file=sys.stderr)
        return 2
    print(result.summary())
    return 0 if result.ok else 1


def cmd_autograde(args: argparse.Namespace) -> int:
    from course_utils import autograde, grading  # noqa: PLC0415

    ws = _workspace(args)
    source = Path(args.dir).resolve()
    if not source.is_dir():
        print(f"no folder {source}; expected {source}/<student_id>/<assignment>/<assignment>.ipynb", file=sys.stderr)
        return 2
    if ws.path == source or ws.path in source.parents:
        print(f"{source} is inside the workspace {ws.path}: point autograde at the submissions as handed in",
              file=sys.stderr)
        return 2
    overrides = grading.settings_config(timeout=args.timeout, sandbox_mode=args.sandbox, memory_mb=args.memory_mb)
    records = autograde.autograde(ws, source, overrides=overrides, force=args.force, only_students=args.student,
                                  only_assignments=args.assignment, jobs=args.jobs)
    graded = [r for r in records if r.status != "unchanged"]
    flagged = [r for r in records if r.review]
    errors = [r for r in records if r.status == "error"]
    seconds = [r.seconds for r in graded]
    per = f", {sum(seconds) / len(seconds):.1f} s per submission" if seconds else ""
    print(f"{len(records)} submissions: {len(graded)} graded, {len(records) - len(graded)} unchanged, "
          f"{len(flagged)} flagged for review, {len(errors)} grading errors{per}. "
          f"Workspace: {ws.path}. Next: course feedback; course grades")
    if not records:
        print(f"nothing to grade under {source} (expected <student_id>/<assignment>/<assignment>.ipynb)",
              file=sys.stderr)
    return 1 if errors else 0


def cmd_feedback(args: argparse.Namespace) -> int:
    from course_utils.feedback import generate_feedback  # noqa: PLC0415

    ws = _workspace(args)
    written = generate_feedback(ws, args.student, args.assignment, include_flagged=args.include_flagged)
    print(f"{len(written)} feedback files under {ws.feedback}")
    return 0


def cmd_grades(args: argparse.Namespace) -> int:
    from course_utils.feedback import write_grades  # noqa: PLC0415

    ws = _workspace(args)
    out = write_grades(ws, Path(args.out) if args.out else None)
    print(f"grades written to {out}")
    return 0


def cmd_progress(args: argparse.Namespace) -> int:
    try:
        from course_utils import progress  # noqa: PLC0415
    except ImportError:
        print("course progress is not available in this version", file=sys.stderr)
        return 2
    return int(progress.run(args))


def cmd_start(args: argparse.Namespace) -> int:
    from course_utils import __version__, learner  # noqa: PLC0415

    folder = args.dir or learner.DEFAULT_DIR
    try:
        report = learner.update(folder) if args.update else learner.start(folder)
    except learner.StartError as err:
        print(f"course start: {err}", file=sys.stderr)
        return 2
    try:
        shown = os.path.relpath(report.folder)
    except ValueError:  # Windows: another drive
        shown = str(report.folder)
    if shown.startswith(".."):
        shown = str(report.folder)
    if report.already_started:
        print(f"{shown} is already a course folder: nothing copied, nothing changed.\n"
              f"  course start --update {shown}   add the notebooks of a newer version (your edits are kept)\n"
              f"  course lab {shown}              open it in JupyterLab")
        return 0
    verb = "Updated" if args.update else "Started the course in"
    print(f"{verb} {shown} (llm-foundations {__version__}):")
    print("\n".join(report.lines()) or "  nothing to do")
    if not args.update:
        print(f"Next: course lab {shown}   (or open the folder in VS Code, or: cd {shown} && jupyter notebook)")
    return 0


def cmd_lab(args: argparse.Namespace) -> int:
    from course_utils import learner  # noqa: PLC0415

    try:
        return learner.lab(args.dir, port=args.port, no_browser=args.no_browser)
    except learner.StartError as err:
        print(f"course lab: {err}", file=sys.stderr)
        return 2


def _add_learner_commands(sub: argparse._SubParsersAction) -> None:
    """``course start`` and ``course lab``: a learner's set-up after ``pip install``."""
    p = sub.add_parser("start", help="copy the student notebooks into a folder of your own (never overwrites)")
    p.add_argument("dir", nargs="?", help="the folder (default: ./llm-foundations)")
    p.add_argument("--update", action="store_true", help="add new or changed notebooks of this version; edited "
                   "ones are kept and the new version is written beside them")
    p.set_defaults(func=cmd_start)

    p = sub.add_parser("lab", help="open JupyterLab on your course folder")
    p.add_argument("dir", nargs="?", help="the folder (default: the current folder if it is a course folder, "
                   "else ./llm-foundations)")
    p.add_argument("--port", type=int, help="port for JupyterLab (default: its own choice, 8888 or next free)")
    p.add_argument("--no-browser", action="store_true", help="do not open a browser; print the URL")
    p.set_defaults(func=cmd_lab)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="course", description="LLM Foundations: start the course, release, "
                                     "check and grade the course notebooks.",
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", help="course root (default: the nearest folder above that has solutions/)")
    parser.add_argument("--workspace", help="instructor workspace (default: <root>/grading)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_learner_commands(sub)

    p = sub.add_parser("release", help="generate the student notebooks (notebooks/) from solutions/")
    p.add_argument("assignment", nargs="*", help="assignments to release (default: all)")
    p.add_argument("--out", help="release folder (default: <root>/notebooks)")
    p.add_argument("--force", action="store_true", help="overwrite release notebooks that have outputs")
    p.set_defaults(func=cmd_release)

    p = sub.add_parser("validate", help="run a notebook and list the checks that fail (exit 1 if any)")
    p.add_argument("notebook")
    p.add_argument("--timeout", type=int, default=300, help="seconds per cell (default 300)")
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("autograde", help="grade DIR/<student_id>/<assignment>/<assignment>.ipynb in a sandbox")
    p.add_argument("dir", help="folder of submissions, one folder per student")
    p.add_argument("--force", action="store_true", help="grade again even when nothing changed")
    p.add_argument("--student", action="append", help="only this student (repeatable)")
    p.add_argument("--assignment", action="append", help="only this assignment (repeatable)")
    p.add_argument("--timeout", type=int, help="seconds per cell before it is interrupted (default 60)")
    p.add_argument("--sandbox", choices=["auto", "bwrap", "bwrap-userns", "setpriv", "none"],
                   help="isolation mode (default auto: the strongest that works here)")
    p.add_argument("--memory-mb", type=int, help="address-space limit per kernel (default 8192)")
    p.add_argument("--jobs", "-j", type=int, default=1, help="submissions graded at once (default 1; each "
                   "kernel may need up to ~1.5 GB and one core)")
    p.set_defaults(func=cmd_autograde)

    p = sub.add_parser("feedback", help="feedback HTML per graded submission (hidden tests not shown)")
    p.add_argument("--student", action="append")
    p.add_argument("--assignment", action="append")
    p.add_argument("--include-flagged", action="store_true",
                   help="also for submissions flagged for review (look at them first)")
    p.set_defaults(func=cmd_feedback)

    p = sub.add_parser("grades", help="write the grades CSV (scores, flags for review, sandbox mode)")
    p.add_argument("--out", help="CSV path (default: <workspace>/grades.csv)")
    p.set_defaults(func=cmd_grades)

    p = sub.add_parser("progress", help="your progress: checks passing per notebook, flashcards due")
    try:
        from course_utils import progress  # noqa: PLC0415 - written separately; the CLI works without it

        progress.add_arguments(p)
    except Exception:  # noqa: BLE001 - a missing or broken progress module must not break grading
        pass
    p.set_defaults(func=cmd_progress)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    warnings.filterwarnings("ignore", message=".*not in session.*")  # nbgrader + SQLAlchemy 2 noise
    from course_utils.grading import python_bin_on_path  # noqa: PLC0415

    python_bin_on_path()
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (ValueError, RuntimeError, FileNotFoundError) as err:
        print(f"course {args.command}: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
