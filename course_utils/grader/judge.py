"""The judge: run a submission in the sandboxed kernel and decide every test in a trusted interpreter.

:func:`grade` takes a :class:`Job` (a sanitized submission, the instructor's source cells, the assignment's data
files, the settings) and returns a :class:`Result`. It runs in a grading worker (a local process, or a Dask
worker): never in the student's kernel, never with the gradebook.

1. The student's kernel starts in the sandbox with the oracle installed before any student code
   (:class:`~course_utils.grader.kernel.KernelSession`).
2. The submission's cells run there one by one, **except test cells**, which never enter the kernel: no test
   code, expected value or reference solution is ever in the student's interpreter, its memory, history or files.
   The instructor's demo cells that no student code needs are not run there either (the judge runs those the tests
   need).
3. This process is the judge: it runs the instructor's locked cells that the tests need (:func:`plan.plan`) and
   then each test cell, in a fresh namespace where the exercise names are the oracle's proxies
   (:class:`~course_utils.grader.interpreter.Interpreter`). A test passes when its code raises nothing. The verdict
   is written into the test cell as nbgrader reads it (an error output, or none), with what it printed as evidence.

Whatever the student's code does inside its kernel, it can only change its own answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import os
import socket
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from course_utils import cells
from course_utils.grader import plan as planning
from course_utils.grader import proxy, sandbox, scratch, version
from course_utils.grader.budget import Budget
from course_utils.grader.integrity import Findings
from course_utils.grader.interpreter import Interpreter
from course_utils.grader.jobs import Job, Result, Settings, Verdict
from course_utils.grader.kernel import GraderTooSlowError, KernelSession, KernelStartError

__all__ = ["GraderTooSlowError", "Job", "KernelStartError", "Result", "Settings", "Verdict", "grade", "warm_up"]


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def grade(job: Job) -> Result:
    """Run and judge one notebook (see the module docstring). Never raises for a submission's behaviour."""
    started = time.perf_counter()
    result = Result(job.student, job.assignment, job.notebook, worker=worker_name(), version=version.grader_version())
    if job.version and job.version != result.version:
        result.status = "refused"
        result.error = (f"worker {result.worker} runs grader version {result.version[:12]}, the coordinator "
                        f"{job.version[:12]}: install the same course version on every worker")
        return result
    try:
        mode = sandbox.detect_mode(job.settings.sandbox)
    except (RuntimeError, ValueError) as err:
        result.status, result.error = "error", str(err)
        return result
    result.sandbox = mode
    plan = planning.plan(job.source_cells)
    previous_env = os.environ.get("NBGRADER_EXECUTION")
    os.environ["NBGRADER_EXECUTION"] = "autograde"     # the judge's copies of locked cells run as graded
    try:
        for attempt in range(1, job.settings.start_attempts + 1):
            run = _Run(job, plan, mode)
            try:
                _WARM.run(run.main())
                break
            except KernelStartError as err:
                if attempt == job.settings.start_attempts:
                    result.status, result.error = "error", str(err)
                    return result
                result.notes.append(f"the kernel failed to start once: {str(err)[:200]}")
            except GraderTooSlowError as err:
                result.status, result.error = "error", str(err)
                return result
            finally:
                run.cleanup()
    finally:
        if previous_env is None:
            os.environ.pop("NBGRADER_EXECUTION", None)
        else:
            os.environ["NBGRADER_EXECUTION"] = previous_env
    import nbformat  # noqa: PLC0415

    if mode not in sandbox.ISOLATING_MODES:
        run.findings.note(f"sandbox mode {mode!r}: {sandbox.describe(mode)}")
    result.executed = json.loads(nbformat.writes(run.nb))
    result.verdicts = run.verdicts
    result.review += run.findings.review
    result.notes += [n for n in run.findings.notes if n not in result.notes]
    result.kernel_cpu_seconds = round(run.kernel_cpu, 2)
    result.timings = {k: round(v, 2) for k, v in run.timings.items()}
    result.seconds = round(time.perf_counter() - started, 2)
    return result


class _Run:
    """One notebook: the kernel's cells, the judge's cells and tests, interleaved in the notebook's order.

    The judge runs in one thread (its cells and tests, in order); the kernel is driven from the event loop. A
    request from the judge waits for the kernel to be idle (the session's lock). The judge never falls behind a
    student cell (its queue is drained first), and a test runs when the kernel has run everything before it.
    """

    def __init__(self, job: Job, plan: planning.Plan, mode: str) -> None:
        import nbformat  # noqa: PLC0415

        self.job, self.plan, self.settings = job, plan, job.settings
        self.nb = nbformat.reads(json.dumps(job.submission), as_version=4)
        self.findings = Findings()
        self.verdicts: list[Verdict] = []
        self.kernel_cpu = 0.0
        self.mode = mode
        self.session: KernelSession | None = None
        self.judge_dir = Path(tempfile.mkdtemp(prefix="course-judge-"))
        scratch.write_files(self.judge_dir, job.files)
        self.loop: asyncio.AbstractEventLoop | None = None
        self.judge_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="judge")
        self.judge: Interpreter | None = None
        self.budget: Budget | None = None
        self._pending: list[asyncio.Future] = []
        self.timings: dict[str, float] = {"start": 0.0, "kernel_cells": 0.0, "judge_waits": 0.0, "tests": 0.0}

    async def main(self) -> None:
        self.loop = asyncio.get_running_loop()
        began = time.perf_counter()
        warm = await _WARM.take(self.mode, self.settings)
        if warm is not None:
            warm.adopt(self.nb, self.job.files, self.settings, self.findings)
            self.session = warm
        else:
            self.session = KernelSession(self.nb, self.settings, self.mode, self.job.files, self.findings)
        _WARM.prepare_next(self.mode, self.settings)        # the next job's kernel starts while this one runs
        async with self.session.running():
            self.timings["start"] = time.perf_counter() - began
            self.judge = Interpreter(self.plan, self._transport, self._use_budget, self.findings.note,
                                     self.judge_dir, self.settings.stderr_fails_tests)
            await self._cells()
            self.kernel_cpu = self.session.cpu_now()
        self.judge_pool.shutdown(wait=False)

    def cleanup(self) -> None:
        """Every step on its own: one that fails (a folder the kernel made undeletable...) skips none of the
        others and never fails the grade; it leaves a note at most."""
        steps = [lambda: self.judge_pool.shutdown(wait=False),
                 lambda: self.session.cleanup() if self.session is not None else None,
                 lambda: scratch.remove(self.judge_dir),
                 lambda: self.judge.close() if self.judge is not None else None]
        for step in steps:
            try:
                problem = step()
            except Exception as err:  # noqa: BLE001 - cleanup must not turn a graded notebook into an error
                problem = f"the grader's cleanup failed: {type(err).__name__}: {str(err)[:200]}"
            if isinstance(problem, str):
                self.findings.note(problem)

    # ------------------------------------------------------------------ the judge's link to the kernel

    def _use_budget(self, what: str) -> None:
        self.budget = Budget(self.session, what)

    def _transport(self, header: dict, buffers: list) -> proxy.Reply:
        assert self.loop is not None
        budget = self.budget or Budget(self.session, "the judge")
        future = asyncio.run_coroutine_threadsafe(self.session.oracle(header, buffers, budget), self.loop)
        return future.result()

    # ------------------------------------------------------------------ the cell loop

    async def _cells(self) -> None:
        student_code_ran = False
        judge_done: set[int] = set()
        locked_positions = {cells.grade_id(c): i for i, c in enumerate(self.plan.cells) if cells.grade_id(c)}
        student_sources = [c.source for c in self.nb.cells if c.cell_type == "code" and not cells.is_locked_code(c)
                           and not cells.is_test_cell(c)]
        kernel_needs = None if self.settings.run_all_cells else \
            planning.kernel_locked_cells(self.plan.cells, student_sources)
        skipped = 0
        for index, cell in enumerate(self.nb.cells):
            if cell.cell_type != "code":
                continue
            gid = cells.grade_id(cell)
            test = self.plan.test(gid) if cells.is_test_cell(cell) and gid else None
            if test is not None:
                await self._catch_up(judge_done, upto=test.index)
                await self._judge_test(cell, test)
                continue
            if cells.is_test_cell(cell) or not cell.source.strip():
                continue  # (a test cell the source does not know has lost its metadata in IntegrityCheck)
            locked = cells.is_locked_code(cell)
            position = locked_positions.get(gid) if locked else None
            if not locked:
                await self._drain()   # the judge's queued cells finish before a student cell can change names
            if position is not None:
                await self._catch_up(judge_done, upto=position)
                if position in self.plan.judge_cells and position not in judge_done:
                    judge_done.add(position)
                    self._judge_locked_soon(position)
            if self.session.dead is not None:
                continue
            if locked and kernel_needs is not None and gid not in kernel_needs:
                skipped += 1
                cell.outputs = [cells.stream_output("[not run while grading: no code of the student's needs "
                                                    "this cell]\n")]
                continue
            student_code_ran = student_code_ran or not locked
            began = time.perf_counter()
            if locked and kernel_needs is not None and kernel_needs[gid] != cell.source:
                await self._execute_part(cell, index, kernel_needs[gid])
            else:
                await self.session.execute(cell, index, student_code_ran)
            self.timings["kernel_cells"] += time.perf_counter() - began
        await self._drain()
        if skipped:
            self.findings.note(f"{skipped} of the instructor's demo cells were not run in the kernel (no student "
                               "code needs them; the tests that do run them in the judge)")

    async def _execute_part(self, cell: Any, index: int, code: str) -> None:
        """Run only the statements of a locked cell that the student's code needs (the cell keeps its source)."""
        source = cell.source
        cell.source = code
        try:
            await self.session.execute(cell, index, student_code_ran=False)
        finally:
            cell.source = source
        cell.outputs.insert(0, cells.stream_output("[while grading, only the statements of this cell that the "
                                                   "student's code needs ran: " + ", ".join(
                                                       line.split("=")[0].split(" import ")[-1].strip()[:40]
                                                       for line in code.splitlines()[:6]) + "]\n"))

    async def _catch_up(self, done: set[int], upto: int) -> None:
        """Queue the judge's cells before source position ``upto`` and wait for the queue."""
        for position in self.plan.judge_cells:
            if position < upto and position not in done:
                done.add(position)
                self._judge_locked_soon(position)
        await self._drain()

    def _judge_locked_soon(self, position: int) -> None:
        assert self.judge is not None and self.loop is not None
        self._pending.append(self.loop.run_in_executor(self.judge_pool, self.judge.run_locked, position))

    async def _drain(self) -> None:
        pending, self._pending = self._pending, []
        began = time.perf_counter()
        for future in pending:
            await future
        self.timings["judge_waits"] += time.perf_counter() - began

    async def _judge_test(self, cell: Any, test: planning.TestPlan) -> None:
        assert self.judge is not None and self.loop is not None
        if self.session.dead is not None:
            verdict = Verdict(test.grade_id, test.points, False, f"not run: {self.session.dead}")
            cell.outputs = [cells.error_output("GradingError", verdict.reason)]
        else:
            began = time.perf_counter()
            verdict, outputs = await self.loop.run_in_executor(self.judge_pool, self.judge.run_test, test)
            self.timings["tests"] += time.perf_counter() - began
            cell.outputs = outputs
        cell.source = test.source
        cell.execution_count = None
        self.verdicts.append(verdict)
        if self.session.dead is None:
            await self.session.end_strays_between()


class _WarmKernels:
    """The worker's event loop (one thread, for every job) and one spare kernel, started before it is needed.

    A sandboxed kernel takes seconds to start (bubblewrap, Python, torch). The spare for the next job starts
    while the current job runs, on CPU the job leaves idle; it is used for one notebook only, like any other.
    When the worker exits, :meth:`close` stops the spare and removes its scratch folder, whatever state its start
    is in (at the interpreter's exit the loop may cancel it half-way).
    """

    def __init__(self) -> None:
        self.loop: asyncio.AbstractEventLoop | None = None
        self.spare: "asyncio.Task[KernelSession | None] | None" = None
        self.spare_session: KernelSession | None = None      # the spare's session, from before its start
        self.key: tuple | None = None

    def run(self, coro: Any) -> Any:
        if self.loop is None:
            import threading  # noqa: PLC0415

            self.loop = asyncio.new_event_loop()
            threading.Thread(target=self.loop.run_forever, name="grading-loop", daemon=True).start()
            import atexit  # noqa: PLC0415

            atexit.register(self.close)
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    @staticmethod
    def _key(mode: str, settings: Settings) -> tuple:
        return mode, settings.memory_mb, settings.disk_mb, settings.startup_timeout

    async def take(self, mode: str, settings: Settings) -> KernelSession | None:
        """The spare kernel, if one was started for these settings and is alive."""
        task, key, self.spare, self.key, self.spare_session = self.spare, self.key, None, None, None
        if task is None:
            return None
        session = await task
        if session is not None and key == self._key(mode, settings) and await session.alive():
            return session
        if session is not None:
            await session.stop()
            session.cleanup()
        return None

    def prepare_next(self, mode: str, settings: Settings) -> None:
        session = KernelSession(None, settings, mode, {}, Findings())

        async def start() -> KernelSession | None:
            try:
                await session.start()
            except Exception:  # noqa: BLE001 - no spare: the next job starts its own kernel
                session.cleanup()
                return None
            return session
        assert self.loop is not None
        self.key, self.spare_session = self._key(mode, settings), session
        self.spare = self.loop.create_task(start())

    def close(self) -> None:
        """At the worker's exit: stop the spare kernel and remove its scratch folder and log."""
        task, session, self.spare, self.spare_session = self.spare, self.spare_session, None, None
        if session is None:
            return
        if self.loop is not None and task is not None and self.loop.is_running():
            async def stop() -> None:
                with contextlib.suppress(BaseException):
                    await asyncio.wait_for(asyncio.shield(task), timeout=10)
                await session.stop()
            with contextlib.suppress(BaseException):
                asyncio.run_coroutine_threadsafe(stop(), self.loop).result(timeout=20)
        session.kill_processes()       # whatever the loop managed: no process, no folder is left behind
        session.cleanup()


_WARM = _WarmKernels()


def warm_up(spare: Settings | None = None) -> None:
    """Import what grading needs once per worker process, before any job (a warm worker grades faster); with
    ``spare`` settings, also start the spare kernel the first job will take (in the background)."""
    os.environ.setdefault("MPLBACKEND", "Agg")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    for module in ("nbclient", "torch", "transformers", "matplotlib.pyplot", "course_utils.checks",
                   "course_utils.models"):
        with contextlib.suppress(Exception):
            importlib.import_module(module)
    version.grader_version()
    if spare is not None:
        with contextlib.suppress(RuntimeError, ValueError):       # no sandbox here: the first job will say so
            mode = sandbox.detect_mode(spare.sandbox)

            async def start_spare() -> None:
                _WARM.prepare_next(mode, spare)
            _WARM.run(start_spare())
