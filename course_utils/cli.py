"""The ``course`` command: start, lab, release, validate, autograde, feedback, grades, progress.

    course start [DIR] [--update]                    copy the student notebooks to DIR (default ./llm-foundations)
    course lab [DIR]                                 open JupyterLab on DIR
    course release [ASSIGNMENT ...] [--out DIR]      solutions/ -> notebooks/ (deterministic, no leftovers)
    course validate NOTEBOOK                         which checks fail and why (exit 1 if any)
    course autograde DIR [--force] [--timeout S]     grade DIR/<student>/<assignment>/<assignment>.ipynb
    course feedback                                  feedback HTML per student (no hidden test code)
    course grades [--out CSV]                        one row per submission, with flags for review
    course grades --format canvas --roster R.csv     the same scores as a CSV for Canvas's gradebook import
    course collect ZIP --roster R.csv [--out DIR]    Canvas's submissions zip -> DIR/<student>/<assignment>/
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
    from course_utils.grader.workspace import find_course_root  # noqa: PLC0415

    return Path(args.root).resolve() if args.root else find_course_root(Path.cwd())


def _workspace(args: argparse.Namespace):
    from course_utils.grader.workspace import Workspace  # noqa: PLC0415

    return Workspace.at(_root(args), args.workspace)


def cmd_release(args: argparse.Namespace) -> int:
    from course_utils.grader import workspace as grading  # noqa: PLC0415

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
    from course_utils.review.validate import validate  # noqa: PLC0415

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


def _jobs(text: str) -> "int | str":
    """``--jobs``: a whole number of workers, or ``auto``."""
    if text == "auto":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--jobs takes a whole number or 'auto', got {text!r}") from None


def cmd_autograde(args: argparse.Namespace) -> int:
    from course_utils.grader import autograde, workspace as grading  # noqa: PLC0415

    ws = _workspace(args)
    source = Path(args.dir).resolve()
    if not source.is_dir():
        print(f"no folder {source}; expected {source}/<student_id>/<assignment>/<assignment>.ipynb", file=sys.stderr)
        return 2
    if ws.path == source or ws.path in source.parents:
        print(f"{source} is inside the workspace {ws.path}: point autograde at the submissions as handed in",
              file=sys.stderr)
        return 2
    if args.jobs == "auto":
        from course_utils.grader.workers import auto_jobs  # noqa: PLC0415

        args.jobs, why = auto_jobs()
        if not args.scheduler:
            print(f"{args.jobs} notebook{'s' if args.jobs > 1 else ''} at a time ({why}; set --jobs N to choose)")
    if args.jobs < 1:
        print(f"--jobs must be at least 1, got {args.jobs}", file=sys.stderr)
        return 2
    overrides = grading.settings_config(timeout=args.timeout, sandbox_mode=args.sandbox, memory_mb=args.memory_mb,
                                        disk_mb=args.disk_mb)
    workers = None
    if args.scheduler:
        from course_utils.grader.cluster import DaskWorkers  # noqa: PLC0415

        workers = DaskWorkers(args.scheduler)
    try:
        records = autograde.autograde(ws, source, overrides=overrides, force=args.force,
                                      only_students=args.student, only_assignments=args.assignment, jobs=args.jobs,
                                      workers=workers)
    except KeyboardInterrupt:
        if workers is not None:
            workers.shutdown(cancel=True)
        print("interrupted: what was finished is saved; run the same command again to grade the rest",
              file=sys.stderr)
        return 130
    if workers is not None:
        workers.shutdown()
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


def cmd_slurm_script(args: argparse.Namespace) -> int:
    from course_utils.grader.cluster import slurm_job_script  # noqa: PLC0415

    print(slurm_job_script(workers_per_job=args.workers_per_job, memory=args.memory, walltime=args.walltime,
                           queue=args.queue, account=args.account, scheduler_address=args.scheduler))
    return 0


def cmd_feedback(args: argparse.Namespace) -> int:
    from course_utils.grader.feedback import generate_feedback  # noqa: PLC0415

    ws = _workspace(args)
    written = generate_feedback(ws, args.student, args.assignment, include_flagged=args.include_flagged)
    print(f"{len(written)} feedback files under {ws.feedback}")
    return 0


def cmd_grades(args: argparse.Namespace) -> int:
    from course_utils.grader.feedback import write_grades  # noqa: PLC0415

    ws = _workspace(args)
    if args.format == "canvas":
        return _grades_canvas(args, ws, write_grades)
    if args.roster:
        print("--roster is only used with --format canvas", file=sys.stderr)
        return 2
    out = write_grades(ws, Path(args.out) if args.out else None)
    print(f"grades written to {out}")
    return 0


def _grades_canvas(args: argparse.Namespace, ws, write_grades) -> int:  # noqa: ANN001 - Workspace, its writer
    import tempfile  # noqa: PLC0415

    from course_utils.grader import canvas as lms  # noqa: PLC0415

    if not args.roster:
        print("course grades --format canvas needs --roster ROSTER.csv (student_id,canvas_user_id or Canvas's "
              "gradebook export; see README, 'Canvas: submissions in, grades out')", file=sys.stderr)
        return 2
    roster = lms.load_roster(args.roster)
    with tempfile.TemporaryDirectory() as tmp:  # the generic CSV is the one source of scores and flags
        rows = lms.read_grades_csv(write_grades(ws, Path(tmp) / "grades.csv"))
    export = lms.write_canvas_grades(rows, roster, Path(args.out) if args.out else ws.path / "grades-canvas.csv",
                                     missing=args.missing)
    for line in export.warnings + export.unmatched:
        print(f"warning: {line}", file=sys.stderr)
    print(f"Canvas gradebook CSV written to {export.path}: {export.students} students, "
          f"{len(export.assignments)} assignments ({', '.join(export.assignments) or 'none graded yet'}). "
          "Import it in Canvas: Grades > Import")
    return 1 if export.unmatched else 0


def cmd_collect(args: argparse.Namespace) -> int:
    from course_utils.grader import canvas as lms, workspace as grading  # noqa: PLC0415

    roster = lms.load_roster(args.roster)
    report = lms.collect_canvas(args.zip, roster, Path(args.out), grading.assignments(_root(args)),
                                assignment=args.assignment)
    for line in roster.skipped + report.lines(details=False):
        print(line)
    print(f"report: {report.report_path}. Next: course autograde {args.out}")
    return 0 if report.ok else 1


def cmd_progress(args: argparse.Namespace) -> int:
    try:
        from course_utils.review import progress  # noqa: PLC0415
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
    p.add_argument("--disk-mb", type=int, help="what a kernel may write in its working folder and HOME together "
                   "(default 512)")
    p.add_argument("--jobs", "-j", type=_jobs, default="auto", help="notebooks graded at once on this machine "
                   "(default auto: one per usable core, as many as memory holds at ~3.5 GB each; a kernel and its "
                   "judge use one core)")
    p.add_argument("--scheduler", metavar="tcp://HOST:PORT", help="grade on the workers of this Dask cluster "
                   "instead (pip install -e '.[cluster]'; see the README)")
    p.set_defaults(func=cmd_autograde)

    p = sub.add_parser("slurm-script", help="print a Slurm batch script that starts grading workers (Dask)")
    p.add_argument("--workers-per-job", type=int, default=2, help="worker processes per Slurm job (default 2)")
    p.add_argument("--memory", default="8GB", help="memory per Slurm job (default 8GB)")
    p.add_argument("--walltime", default="02:00:00", help="Slurm time limit (default 02:00:00)")
    p.add_argument("--queue", help="Slurm partition")
    p.add_argument("--account", help="Slurm account")
    p.add_argument("--scheduler", metavar="tcp://HOST:PORT", help="the running scheduler the workers join")
    p.set_defaults(func=cmd_slurm_script)

    p = sub.add_parser("feedback", help="feedback HTML per graded submission (hidden tests not shown)")
    p.add_argument("--student", action="append")
    p.add_argument("--assignment", action="append")
    p.add_argument("--include-flagged", action="store_true",
                   help="also for submissions flagged for review (look at them first)")
    p.set_defaults(func=cmd_feedback)

    p = sub.add_parser("grades", help="write the grades CSV (scores, flags for review, sandbox mode)")
    p.add_argument("--out", help="CSV path (default: <workspace>/grades.csv, or grades-canvas.csv for canvas)")
    p.add_argument("--format", choices=["csv", "canvas"], default="csv",
                   help="csv: one row per submission (default); canvas: Canvas's gradebook import format")
    p.add_argument("--roster", help="with --format canvas: student_id,canvas_user_id CSV or Canvas's gradebook export")
    p.add_argument("--missing", choices=["blank", "zero"], default="blank",
                   help="with --format canvas: a student with no graded submission gets a blank cell (default: "
                   "no score) or 0")
    p.set_defaults(func=cmd_grades)

    p = sub.add_parser("collect", help="unpack an LMS's submissions zip into DIR/<student_id>/<assignment>/")
    p.add_argument("zip", help="the zip from Canvas (the assignment's page > Download Submissions)")
    p.add_argument("--format", choices=["canvas"], default="canvas", help="the LMS that made the zip (canvas)")
    p.add_argument("--roster", required=True,
                   help="CSV: student_id,canvas_user_id (optional name, sis_user_id, sis_login_id, section), or "
                   "Canvas's gradebook export (its SIS Login ID, or an added student_id column, is the student id)")
    p.add_argument("--assignment", help="the assignment (default: from each notebook's name)")
    p.add_argument("--out", default="submissions", help="submissions folder (default: ./submissions)")
    p.set_defaults(func=cmd_collect)

    p = sub.add_parser("progress", help="your progress: checks passing per notebook, flashcards due")
    try:
        from course_utils.review import progress  # noqa: PLC0415 - written separately; the CLI works without it

        progress.add_arguments(p)
    except Exception:  # noqa: BLE001 - a missing or broken progress module must not break grading
        pass
    p.set_defaults(func=cmd_progress)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    warnings.filterwarnings("ignore", message=".*not in session.*")  # nbgrader + SQLAlchemy 2 noise
    from course_utils.grader.workspace import python_bin_on_path  # noqa: PLC0415

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
