"""The execute stage of the grading pipeline: build a judge :class:`~course_utils.grader.jobs.Job` from a
sanitized notebook, and write the judge's :class:`~course_utils.grader.jobs.Result` back into it.

:class:`JudgeExecute` is the nbgrader preprocessor (plain ``nbgrader autograde`` runs it in-process, one notebook
at a time). ``course autograde`` uses :func:`build_job` and :func:`apply_result` around its workers instead, so
that many notebooks are judged at once while only the coordinator writes the gradebook.

Each verdict becomes what nbgrader reads in a test cell: a passing test has no error output, a failing one ends
with one; nothing else in the cell (no ``execute_result``, which nbgrader would read as partial credit) can come
from the student's kernel, because the test never ran there.
"""

from __future__ import annotations

import json
from pathlib import Path

from nbformat.notebooknode import NotebookNode
from nbgrader.preprocessors import NbGraderPreprocessor
from traitlets import Bool, Float, Integer, Unicode

from course_utils.cells import is_test_cell
from course_utils.grader import jobs, version
from course_utils.grader.integrity import METADATA_KEY, Findings


class JudgeExecute(NbGraderPreprocessor):
    """Run a submission in the sandbox and decide its tests in the judge (see :mod:`course_utils.grader.judge`)."""

    timeout = Integer(60, help="CPU seconds of the sandbox a cell (or one test's calls) may use").tag(config=True)
    wall_factor = Float(5.0, help="a cell may also run at most timeout * wall_factor seconds of wall-clock time"
                        ).tag(config=True)
    notebook_timeout = Integer(900, help="seconds the whole notebook may take").tag(config=True)
    startup_timeout = Integer(120, help="seconds to wait for the kernel to start").tag(config=True)
    interrupt_grace = Integer(10, help="seconds an interrupted kernel gets before it is killed").tag(config=True)
    max_output_bytes = Integer(10_000_000, help="bytes of output kept per notebook (every output type)"
                               ).tag(config=True)
    sandbox = Unicode("auto", help="sandbox mode: auto, bwrap, bwrap-userns, setpriv or none").tag(config=True)
    memory_mb = Integer(jobs.Settings.memory_mb, help="address-space limit of the kernel (MB)").tag(config=True)
    disk_mb = Integer(jobs.Settings.disk_mb, help="what the kernel may write in its working folder and HOME "
                      "together (MB): the size of its tmpfs in the bwrap modes, watched otherwise").tag(config=True)
    stderr_fails_tests = Bool(False, help="nbgrader's rule: a test that writes to stderr scores 0").tag(config=True)
    start_attempts = Integer(3, help="tries to start the kernel (a start failure runs no student code)"
                             ).tag(config=True)
    run_all_cells = Bool(False, help="also run, in the kernel, the instructor's demo cells that no student code "
                         "needs (slower; only for their outputs in the graded notebook)").tag(config=True)
    source_directory = Unicode("solutions", help="the course's source folder").tag(config=True)
    report_directory = Unicode("", help="where the per-notebook reports go (default: 'integrity' next to the "
                               "gradebook)").tag(config=True)

    def settings(self) -> jobs.Settings:
        return jobs.Settings(timeout=self.timeout, wall_factor=self.wall_factor,
                              notebook_timeout=self.notebook_timeout, startup_timeout=self.startup_timeout,
                              interrupt_grace=self.interrupt_grace, max_output_bytes=self.max_output_bytes,
                              sandbox=self.sandbox, memory_mb=self.memory_mb, disk_mb=self.disk_mb,
                              stderr_fails_tests=self.stderr_fails_tests, start_attempts=self.start_attempts,
                              run_all_cells=self.run_all_cells)

    def preprocess(self, nb: NotebookNode, resources: dict) -> tuple[NotebookNode, dict]:
        info = resources.get("nbgrader", {})
        job = build_job(nb, info, Path(self.source_directory), self.settings())
        from course_utils.grader import judge  # noqa: PLC0415 - torch and the judge: only where it runs

        result = judge.grade(job)
        if result.status != "graded":
            raise RuntimeError(f"the judge could not grade {job.student}/{job.assignment}: {result.error}")
        apply_result(nb, result)
        write_report(Path(self.report_directory or _default_reports(info)), result, _findings(nb))
        return nb, resources


# SandboxedExecute was this stage's name before the judge: an nbgrader_config.py that names it keeps working.
SandboxedExecute = JudgeExecute


def build_job(nb: NotebookNode, info: dict, source_directory: Path, settings: jobs.Settings) -> jobs.Job:
    """The job for one sanitized notebook: the submission, the instructor's source cells, the data files."""
    import nbformat  # noqa: PLC0415

    assignment, notebook = str(info.get("assignment", "")), str(info.get("notebook", ""))
    source_path = source_directory / assignment / f"{notebook}.ipynb"
    source = nbformat.read(source_path, as_version=4)
    submission = json.loads(nbformat.writes(nb))
    return jobs.Job(student=str(info.get("student", "")), assignment=assignment, notebook=notebook,
                     submission=submission, source_cells=[dict(c) for c in source.cells],
                     files=assignment_files(source_directory / assignment), settings=settings,
                     version=version.grader_version())


def assignment_files(folder: Path, max_bytes: int = 200 * 1024 * 1024) -> dict[str, bytes]:
    """The instructor's data files of an assignment (not notebooks, not links), by relative path."""
    files: dict[str, bytes] = {}
    total = 0
    if not folder.is_dir():
        return files
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder)
        if path.is_symlink() or not path.is_file() or path.suffix == ".ipynb" or any(
                part.startswith(".") or part == "__pycache__" for part in rel.parts):
            continue
        total += path.stat().st_size
        if total > max_bytes:
            raise ValueError(f"the data files of {folder} are larger than {max_bytes // 2**20} MB")
        files[rel.as_posix()] = path.read_bytes()
    return files


def apply_result(nb: NotebookNode, result: jobs.Result) -> None:
    """Copy the executed notebook's outputs into ``nb`` (same cells) and the verdicts into its test cells."""
    import nbformat  # noqa: PLC0415

    if result.executed is None:
        raise ValueError(f"no executed notebook for {result.student}/{result.assignment}: {result.error}")
    executed = nbformat.reads(json.dumps(result.executed), as_version=4)
    if len(executed.cells) != len(nb.cells):
        raise ValueError("the executed notebook does not have the submission's cells")
    for cell, done in zip(nb.cells, executed.cells):
        if cell.cell_type == "code":
            cell.outputs = done.get("outputs", [])
            cell.execution_count = done.get("execution_count")
            cell.source = done.source if is_test_cell(cell) else cell.source
    findings = _findings(nb)
    for message in result.review:
        findings.flag(message)
    for message in result.notes:
        findings.note(message)
    nb.metadata[METADATA_KEY] = findings.as_dict()


def _findings(nb: NotebookNode) -> Findings:
    return Findings.from_metadata(nb.metadata.get(METADATA_KEY))


def write_report(directory: Path, result: jobs.Result, findings: Findings) -> Path:
    """``<directory>/<student>/<assignment>/<notebook>.json``: verdicts, flags, notes, sandbox, worker, time."""
    path = directory / result.student / result.assignment / f"{result.notebook}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    report = {
        "student": result.student, "assignment": result.assignment, "notebook": result.notebook,
        "status": result.status, "sandbox": result.sandbox, "worker": result.worker, "seconds": result.seconds,
        "kernel_cpu_seconds": result.kernel_cpu_seconds, "version": result.version,
        "cells": [{"grade_id": v.grade_id, "points": v.points, "passed": v.passed,
                   **({"reason": v.reason} if v.reason else {})} for v in result.verdicts],
        **findings.as_dict(),
    }
    path.write_text(json.dumps(report, indent=1, sort_keys=True))
    return path


def _default_reports(info: dict) -> str:
    db_url = str(info.get("db_url", ""))
    return str(Path(db_url.replace("sqlite:///", "", 1)).parent / "integrity") if db_url else "integrity"
