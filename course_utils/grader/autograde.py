"""Autograding a folder of submissions: the coordinator.

For each student and assignment it imports the submission (:mod:`course_utils.grader.submissions`), and when
anything that can change the grade changed (the files, the assignment's source, the settings, the grader version:
:func:`grading_key`) it grades it in three stages (:mod:`course_utils.grader.pipeline`):

1. here: nbgrader's sanitize stage (the gradebook's submission row, test cells restored from the source);
2. on the workers (:mod:`course_utils.grader.workers`, or a Dask cluster): the sandboxed kernel runs and the judge
   decides each test; the job carries everything as data, so a worker needs no shared file system;
3. here again: outputs made inert, scores saved, the judge's verdicts written as the gradebook's automatic scores,
   late penalties. Only this process writes the gradebook, the records and the reports.

One :class:`Record` per student and assignment (``records/<student>/<assignment>.json``) says how it went:
status, score, flags for review, notes, sandbox mode, worker, seconds. Nothing about one submission (a broken
file, a path too long, a worker that died) stops the others: it becomes that submission's row.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import signal
import threading
import time
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from traitlets.config import Config

from course_utils import cells
from course_utils.grader import executor, pipeline, sandbox, submissions, timestamps, version
from course_utils.grader.integrity import METADATA_KEY, Findings
from course_utils.grader.jobs import Job, Result, Settings
from course_utils.grader.workspace import (COURSE_ID, LogCapture, Workspace, assignments, coursedir_for,
                                           ensure_gradebook, nbgrader_config, register, tree_hash)

Log = Callable[[str], Any]


@dataclass
class Record:
    """The outcome of grading one student's assignment (saved as records/<student>/<assignment>.json)."""

    student: str
    assignment: str
    status: str = "graded"          # graded | zero (nothing gradable) | error (the grader failed) | unchanged
    score: float | None = None
    max_score: float | None = None
    flagged: bool = False
    review: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    sandbox: str = ""
    worker: str = ""
    seconds: float = 0.0
    graded_at: str = ""
    key: str = ""
    files: dict[str, str] = field(default_factory=dict)
    cells: list[dict] = field(default_factory=list)

    def path(self, ws: Workspace) -> Path:
        return ws.records / self.student / f"{self.assignment}.json"

    def save(self, ws: Workspace) -> None:
        self.flagged = bool(self.review)
        path = self.path(ws)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(asdict(self), indent=1, sort_keys=True))
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> "Record | None":
        try:
            data = json.loads(Path(path).read_text())
            return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})
        except (OSError, ValueError, TypeError):
            return None


def grading_key(ws: Workspace, assignment: str, files: dict[str, str], settings: Settings) -> str:
    """Changes when the submission, the assignment's source, the execution settings or the grader change."""
    blob = {"files": files, "source": tree_hash(ws.source / assignment), "grader": version.grader_version(),
            "settings": asdict(settings)}
    return hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()


def settings_from(config: Config) -> Settings:
    return executor.JudgeExecute(config=config).settings()


@dataclass
class _Pending:
    """A submission between the stages: its record so far, its notebooks' jobs, their results."""

    record: Record
    imported: submissions.Imported
    key: str
    started: float
    unusable: list[str]
    jobs: dict[str, Job] = field(default_factory=dict)
    results: dict[str, Result] = field(default_factory=dict)


def autograde(ws: Workspace, source: Path, *, overrides: Config | None = None, force: bool = False,
              only_students: list[str] | None = None, only_assignments: list[str] | None = None,
              jobs: int = 1, workers: Any = None, log: Log = print) -> list[Record]:
    """Import every submission under ``source`` and grade the new or changed ones on ``workers`` (default:
    ``jobs`` local worker processes). Returns one record per submission found."""
    ws.create()
    ensure_gradebook(ws.gradebook)
    config = nbgrader_config(ws, overrides)
    settings = settings_from(config)
    if workers is None:   # local workers use what is detected here; a cluster's workers detect their own
        settings.sandbox = sandbox.detect_mode(settings.sandbox)
        log(f"sandbox: {settings.sandbox} ({sandbox.describe(settings.sandbox)})")
    found, warnings = submissions.discover(Path(source), set(assignments(ws.root)))
    for warning in warnings:
        log(f"warning: {warning}")
    found = [f for f in found if (not only_students or f[0] in only_students)
             and (not only_assignments or f[1] in only_assignments)]
    found = heaviest_first(ws.source, found)
    owned = workers is None                      # local workers are ours to start and to stop
    records: list[Record] = []
    futures: dict[Future, tuple[_Pending, str]] = {}
    try:
        if workers is None and any(force or Record.load(Record(s, a).path(ws)) is None for s, a, _ in found):
            workers = _local_workers(jobs, settings)   # something new to grade: warm up while we register, prepare
            log(f"grading on {workers.description}")
        for name in sorted({a for _, a, _ in found}):
            register(ws, name)
        times = timestamps.TimestampCheck(config, ws.root,
                                          config.CourseDirectory.get("release_directory", "notebooks"))
        for student, name, folder in found:
            try:
                item = _prepare(ws, config, settings, times, student, name, folder, force, log)
            except Exception as err:  # noqa: BLE001 - this submission's row, never the end of the run
                record = Record(student, name, status="error", sandbox=settings.sandbox, graded_at=_now(),
                                review=[f"could not be imported or prepared ({type(err).__name__}: "
                                        f"{str(err)[:300]}): fix it, then re-run autograde"])
                _save_quietly(ws, record, log)
                records.append(record)
                _log_record(record, log)
                continue
            if isinstance(item, Record):
                records.append(item)
            elif not item.jobs:
                records.append(_finalize(ws, config, item, log))
            else:
                if workers is None:   # started at the first notebook to grade: they warm up while we prepare
                    workers = _local_workers(jobs, settings)
                    log(f"grading on {workers.description}")
                for notebook, job in item.jobs.items():
                    futures[workers.submit(job)] = (item, notebook)
            records += _collect(ws, config, futures, log, block=False)
        records += _collect(ws, config, futures, log, block=True)
    except BaseException:                        # Ctrl-C, or a gradebook that cannot be written: no worker left
        if owned and workers is not None:
            workers.shutdown(cancel=True)
        raise
    if owned and workers is not None:
        workers.shutdown()
        for note in getattr(workers, "notes", []):     # scratch a dead worker left that could not be removed
            log(f"warning: {note}")
    return sorted(records, key=lambda r: (r.student, r.assignment))


def heaviest_first(source: Path, found: list[tuple[str, str, Path]]) -> list[tuple[str, str, Path]]:
    """The submissions in the order they are graded: the heaviest assignments first (by the characters of code
    in their source notebooks, a cheap and stable stand-in for grading time), then by name and student. Longest
    jobs first is the classic rule for parallel workers: the short ones fill the gaps at the end of the run instead
    of one long notebook keeping a single worker busy while the others wait."""
    def code_size(name: str) -> int:
        size = 0
        for path in (source / name).glob("*.ipynb"):
            with contextlib.suppress(OSError, ValueError, AttributeError, TypeError):
                cells = json.loads(path.read_text(encoding="utf-8")).get("cells", [])
                size += sum(len("".join(c.get("source", ""))) for c in cells if c.get("cell_type") == "code")
        return size

    sizes = {name: code_size(name) for name in {a for _, a, _ in found}}
    return sorted(found, key=lambda f: (-sizes[f[1]], f[1], f[0]))


def _local_workers(jobs: int, settings: Settings) -> Any:
    """``jobs`` local worker processes, started now, each with a spare kernel for ``settings``."""
    from course_utils.grader.workers import LocalWorkers  # noqa: PLC0415

    workers = LocalWorkers(max(1, jobs), spare=settings)
    workers.start()
    return workers


def _prepare(ws: Workspace, config: Config, settings: Settings, times: timestamps.TimestampCheck,
             student: str, name: str, folder: Path, force: bool, log: Log) -> "Record | _Pending":
    """Stage 1 for one submission: import, skip when unchanged, check its timestamp, sanitize, build the jobs."""
    imported = submissions.import_submission(folder, student, name, ws.submitted, ws.archive)
    if imported.archived:
        log(f"{student}/{name}: changed since the last import; the previous copy is kept in {imported.archived}")
    key = grading_key(ws, name, imported.manifest, settings)
    previous = Record.load(Record(student, name).path(ws))
    if not force and previous and previous.key == key and previous.status in ("graded", "zero"):
        previous.status = "unchanged"
        log(f"{student}/{name}: unchanged since it was graded ({_fmt(previous.score)}/{_fmt(previous.max_score)})")
        return previous
    record = Record(student, name, graded_at=_now(), sandbox=settings.sandbox, key=key, files=imported.manifest)
    record.notes += [f"not imported: {item}" for item in imported.left_out]
    stamp = times.problem(ws.submitted / student / name, name, handed_in=folder)   # (collected just now)
    if stamp:
        record.review.append(stamp)
    expected = sorted(p.stem for p in (ws.release / name).glob("*.ipynb"))
    usable, unusable = [], []
    for notebook in expected:
        problem = _notebook_problem(ws.submitted / student / name, notebook)
        (unusable if problem else usable).append(notebook)
        if problem:
            record.review.append(problem)
    item = _Pending(record, imported, key, time.perf_counter(), unusable)
    for path in (ws.integrity / student / name).glob("*.json"):
        path.unlink()
    if usable:
        _sanitize(ws, config, student, name, usable)
        for notebook in usable:
            import nbformat  # noqa: PLC0415

            nb = nbformat.read(ws.autograded / student / name / f"{notebook}.ipynb", as_version=4)
            info = {"student": student, "assignment": name, "notebook": notebook, "db_url": ws.db_url}
            job = executor.build_job(nb, info, ws.source, settings)
            item.jobs[notebook] = job
    else:
        record.status = "zero"
    return item


def _sanitize(ws: Workspace, config: Config, student: str, name: str, notebooks: list[str]) -> None:
    """nbgrader's sanitize stage only (the execute and finish stages run later): writes autograded/..."""
    from nbgrader.converters import Autograde  # noqa: PLC0415

    sanitize_only = Config(config)
    sanitize_only.Autograde.autograde_preprocessors = []
    with LogCapture() as logs:
        try:
            for notebook in notebooks:
                coursedir = coursedir_for(sanitize_only, student_id=student, assignment_id=name,
                                          notebook_id=notebook)
                coursedir.get_existing_timestamp = timestamps.nbgrader_timestamp   # not a time: flagged, not fatal
                converter = Autograde(coursedir=coursedir, config=sanitize_only)
                converter.force = True
                converter.start()
        except Exception as err:
            detail = " / ".join(m for m in logs.messages if m)[-400:]
            raise RuntimeError(f"nbgrader could not prepare the submission ({err}): {detail}") from err


def _collect(ws: Workspace, config: Config, futures: dict[Future, tuple[_Pending, str]], log: Log,
             block: bool) -> list[Record]:
    """Stage 3 for every submission whose notebooks are all back (all of them, with ``block``). Collected
    futures leave ``futures``."""
    records: list[Record] = []
    while futures:
        done, _ = wait(list(futures), timeout=None if block else 0, return_when=FIRST_COMPLETED)
        if not done:
            break
        for future in done:
            item, notebook = futures.pop(future)
            try:
                result = future.result()
            except Exception as err:  # noqa: BLE001 - a worker that failed for good: this notebook's error
                result = Result(item.record.student, item.record.assignment, notebook, status="error",
                                      error=f"{type(err).__name__}: {err}")
            item.results[notebook] = result
            if len(item.results) == len(item.jobs):
                with _interrupt_after():       # Ctrl-C never lands half-way through writing a submission
                    records.append(_finalize(ws, config, item, log))
    return records


@contextlib.contextmanager
def _interrupt_after() -> Iterator[None]:
    """Hold a Ctrl-C (SIGINT) until the block is done, then raise it: the gradebook, the record and the graded
    notebook of one submission are written together or not at all, and the next run resumes from there."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: received.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if received:
            raise KeyboardInterrupt


def _finalize(ws: Workspace, config: Config, item: _Pending, log: Log) -> Record:
    """Stage 3 for one submission: write each notebook's verdicts and the record (never raises)."""
    record = item.record
    try:
        for notebook, result in sorted(item.results.items()):
            _finish_notebook(ws, config, record, notebook, result)
        _scores(ws, record, item)
    except Exception as err:  # noqa: BLE001 - the grader's own failure is this submission's row
        record.status = "error"
        record.review.append(f"grading failed ({type(err).__name__}: {str(err)[:300]}): scored 0 until re-graded "
                             "with --force")
    record.seconds = round(time.perf_counter() - item.started, 2)
    _save_quietly(ws, record, log)
    _log_record(record, log)
    return record


def _finish_notebook(ws: Workspace, config: Config, record: Record, notebook: str, result: Result) -> None:
    import nbformat  # noqa: PLC0415
    from traitlets.utils.importstring import import_item  # noqa: PLC0415

    record.worker = record.worker or result.worker
    record.sandbox = result.sandbox or record.sandbox
    path = ws.autograded / record.student / record.assignment / f"{notebook}.ipynb"
    nb = nbformat.read(path, as_version=4)
    findings = Findings.from_metadata(nb.metadata.get(METADATA_KEY))
    if result.status != "graded":
        record.status = "error"
        record.review.append(f"{notebook}: the grader failed ({result.error[:300]}); scored 0 until re-graded "
                             "with --force")
        findings.flag(record.review[-1])
        for cell in nb.cells:
            if cell.cell_type == "code" and cell.metadata.get("nbgrader", {}).get("grade"):
                cell.outputs = [cells.error_output("GradingError", result.error[:500])]
    else:
        executor.apply_result(nb, result)
        findings = Findings.from_metadata(nb.metadata.get(METADATA_KEY))
    nb.metadata[METADATA_KEY] = findings.as_dict()
    resources = {"nbgrader": {"student": record.student, "assignment": record.assignment, "notebook": notebook,
                              "db_url": ws.db_url}}
    for name in pipeline.FINISH:
        nb, resources = import_item(name)(config=config).preprocess(nb, resources)
    findings = Findings.from_metadata(nb.metadata.get(METADATA_KEY))   # the finish stage may add notes
    nbformat.write(nb, path)
    executor.write_report(ws.integrity, result, findings)
    record.review += [r for r in findings.review if r not in record.review]
    record.notes += [n for n in findings.notes if n not in record.notes]
    record.cells += [{"notebook": notebook, "grade_id": v.grade_id, "points": v.points, "passed": v.passed,
                      **({"reason": v.reason} if v.reason else {})} for v in result.verdicts]


def _scores(ws: Workspace, record: Record, item: _Pending) -> None:
    """The judge's verdicts are the gradebook's automatic scores; unusable notebooks score 0."""
    from nbgrader.api import Gradebook, MissingEntry  # noqa: PLC0415

    verdicts = {(notebook, v.grade_id): v for notebook, result in item.results.items() for v in result.verdicts
                if result.status == "graded"}
    with Gradebook(ws.db_url, COURSE_ID) as gb:
        gb.update_or_create_student(record.student)
        try:
            submission = gb.find_submission(record.assignment, record.student)
        except MissingEntry:
            submission = gb.update_or_create_submission(record.assignment, record.student)
        for nb in submission.notebooks:
            judged = item.results.get(nb.name)
            for grade in nb.grades:
                verdict = verdicts.get((nb.name, grade.name))     # only test cells have verdicts
                if nb.name in item.unusable or (judged is not None and judged.status != "graded"):
                    grade.auto_score, grade.needs_manual_grade = 0.0, False
                elif verdict is not None:
                    grade.auto_score = float(grade.max_score) if verdict.passed else 0.0
                if record.review:
                    grade.needs_manual_grade = True   # formgrader lists it for review
        gb.db.commit()
        submission = gb.find_submission(record.assignment, record.student)
        record.score, record.max_score = float(submission.score), float(submission.max_score)


def _notebook_problem(folder: Path, notebook: str) -> str | None:
    """Why ``folder/notebook.ipynb`` cannot be graded (missing, renamed, not a notebook), or None."""
    import nbformat  # noqa: PLC0415

    path = folder / f"{notebook}.ipynb"
    if not path.is_file():
        others = sorted(p.name for p in folder.glob("*.ipynb")) if folder.is_dir() else []
        hint = f"; found {', '.join(others)} instead (rename it to {notebook}.ipynb and re-run)" if others else ""
        return f"missing notebook {notebook}.ipynb: scored 0{hint}"
    try:
        nb = nbformat.read(path, as_version=4)
        nbformat.validate(nb)
    except Exception as err:  # noqa: BLE001 - any reason it is not a notebook
        return f"{notebook}.ipynb is not a valid notebook ({type(err).__name__}: {str(err)[:150]}): scored 0"
    return None


def _save_quietly(ws: Workspace, record: Record, log: Log) -> None:
    try:
        record.save(ws)
    except OSError as err:
        log(f"{record.student}/{record.assignment}: could not save its record ({err})")


def _log_record(record: Record, log: Log) -> None:
    flag = f"  FLAGGED: {' | '.join(record.review)[:300]}" if record.review else ""
    where = f" on {record.worker}" if record.worker else ""
    log(f"{record.student}/{record.assignment}: {record.status} {_fmt(record.score)}/{_fmt(record.max_score)} "
        f"in {record.seconds:.1f} s{where}{flag}")


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:g}"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def load_records(ws: Workspace) -> list[Record]:
    records = [Record.load(p) for p in sorted(ws.records.glob("*/*.json"))] if ws.records.is_dir() else []
    return [r for r in records if r is not None]
