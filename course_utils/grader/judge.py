"""The judge: run a submission in the sandboxed kernel and decide every test in a trusted interpreter.

:func:`grade` takes a :class:`Job` (a sanitized submission, the instructor's source cells, the assignment's data
files, the settings) and returns a :class:`Result`. It runs in a grading worker (a local process, or a Dask
worker): never in the student's kernel, never with the gradebook.

1. The student's kernel starts in the sandbox (:mod:`course_utils.grader.sandbox`). Before any student code, the
   oracle (:mod:`course_utils.grader.oracle`) is installed in it and a comm is opened to it.
2. The submission's cells run there one by one, **except test cells**, which never enter the kernel: no test
   code, expected value or reference solution is ever in the student's interpreter, its memory, history or files.
   A cell's time limit is charged against the sandbox's own CPU time (a busy neighbour cannot make it time out;
   a generous wall-clock bound still ends a kernel that sleeps), and between cells every process of the sandbox
   other than the kernel is ended.
3. This process is the judge. It runs the instructor's locked cells that the tests need (:func:`cells.plan`) and
   then each test cell, in a fresh namespace where the exercise names are the oracle's proxies
   (:mod:`course_utils.grader.proxy`). A test passes when its code raises nothing. The verdict is written into the
   test cell as nbgrader reads it (an error output, or none), with what the test printed as evidence.

Whatever the student's code does inside its kernel, it can only change its own answers.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import io
import json
import linecache
import os
import platform
import signal
import socket
import tempfile
import time
import traceback
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from queue import Empty
from typing import Any

from course_utils.grader import cells, proxy, sandbox, version

ORACLE_BOOTSTRAP = "import course_utils.grader.oracle as _course_oracle; _course_oracle.install(); del _course_oracle"
MAX_MESSAGE_BYTES = 64 * 1024 * 1024     # one message from the kernel (ZMQ drops the peer past it)
MAX_TEST_OUTPUT = 100_000                # characters of a test's printed evidence kept in the notebook


_DEFAULT_MEMORY_MB = sandbox.Limits.memory_mb


@dataclass
class Settings:
    """How a notebook is run. ``timeout`` is CPU seconds of the sandbox per cell (and per test's calls)."""

    timeout: int = 60
    wall_factor: float = 5.0
    notebook_timeout: int = 900
    startup_timeout: int = 120
    interrupt_grace: int = 10
    max_output_bytes: int = 10_000_000
    sandbox: str = "auto"
    memory_mb: int = _DEFAULT_MEMORY_MB
    stderr_fails_tests: bool = False
    start_attempts: int = 3
    run_all_cells: bool = False      # also run the demo cells no student code needs (for their outputs)


@dataclass
class Job:
    """One notebook of one student's submission, everything a worker needs (no shared file system)."""

    student: str
    assignment: str
    notebook: str
    submission: dict                 # the sanitized notebook (nbformat 4 JSON)
    source_cells: list[dict]         # the instructor's source notebook's cells
    files: dict[str, bytes]          # the assignment's data files, by relative path
    settings: Settings = field(default_factory=Settings)
    version: str = ""                # the coordinator's grader version; a worker with another one refuses


@dataclass
class Verdict:
    grade_id: str
    points: float
    passed: bool
    reason: str | None = None        # set when the grader, not a check, decided (not run, kernel died, ...)
    seconds: float = 0.0


@dataclass
class Result:
    """What a worker sends back: the executed notebook, one verdict per test, findings."""

    student: str
    assignment: str
    notebook: str
    status: str = "graded"           # graded | refused (version mismatch) | error (the grader failed)
    executed: dict | None = None
    verdicts: list[Verdict] = field(default_factory=list)
    review: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    sandbox: str = ""
    seconds: float = 0.0
    kernel_cpu_seconds: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)   # seconds per phase: start, cells, judge, tests
    worker: str = ""
    version: str = ""
    error: str = ""

    def as_dict(self) -> dict:
        return asdict(self)


class GraderTooSlowError(RuntimeError):
    """An instructor's cell ran out of time before any student code ran: the machine's fault, not a zero."""


class KernelStartError(RuntimeError):
    """The sandboxed kernel did not come up (before any of the submission's code ran)."""


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
    settings = job.settings
    try:
        mode = sandbox.detect_mode(settings.sandbox)
    except (RuntimeError, ValueError) as err:
        result.status, result.error = "error", str(err)
        return result
    result.sandbox = mode
    if mode not in sandbox.ISOLATING_MODES:
        result.notes.append(f"sandbox mode {mode!r}: {sandbox.describe(mode)}")
    plan = cells.plan(job.source_cells)
    previous_env = os.environ.get("NBGRADER_EXECUTION")
    os.environ["NBGRADER_EXECUTION"] = "autograde"     # the judge's copies of locked cells run as graded
    for attempt in range(1, settings.start_attempts + 1):
        run = _Run(job, plan, mode)
        try:
            asyncio.run(run.main())
            break
        except KernelStartError as err:
            if attempt == settings.start_attempts:
                result.status, result.error = "error", str(err)
                return result
            result.notes.append(f"the kernel failed to start once: {str(err)[:200]}")
        except GraderTooSlowError as err:
            result.status, result.error = "error", str(err)
            return result
        finally:
            run.cleanup()
            if previous_env is None:
                os.environ.pop("NBGRADER_EXECUTION", None)
            else:
                os.environ["NBGRADER_EXECUTION"] = previous_env
    import nbformat  # noqa: PLC0415

    result.executed = json.loads(nbformat.writes(run.nb))
    result.verdicts = run.verdicts
    result.review += [r for r in run.review if r not in result.review]
    result.notes += [n for n in run.notes if n not in result.notes]
    result.kernel_cpu_seconds = round(run.kernel_cpu, 2)
    result.timings = {k: round(v, 2) for k, v in run.timings.items()}
    result.seconds = round(time.perf_counter() - started, 2)
    return result


# ---------------------------------------------------------------------------------------------- the run


class _Budget:
    """CPU and wall-clock allowance of one cell, or of one test's calls into the kernel."""

    def __init__(self, run: "_Run", what: str) -> None:
        self.run, self.what = run, what
        self.cpu_start = run.cpu_now()
        self.wall_start = time.monotonic()

    def exceeded(self) -> str | None:
        settings = self.run.settings
        cpu = self.run.cpu_now() - self.cpu_start
        wall = time.monotonic() - self.wall_start
        if cpu > settings.timeout:
            return f"{self.what} timed out (more than {settings.timeout} s of CPU time)"
        if wall > settings.timeout * settings.wall_factor:
            return f"{self.what} timed out (more than {settings.timeout * settings.wall_factor:g} s)"
        if time.monotonic() > self.run.deadline:
            return f"the notebook timed out (its {settings.notebook_timeout} s budget)"
        return None


class _Client:
    """nbclient's NotebookClient with an output budget that counts every output type (built lazily)."""

    @staticmethod
    def make(nb: Any, km: Any, settings: Settings, workdir: Path) -> Any:
        from nbclient import NotebookClient  # noqa: PLC0415 - slow import

        class CappedClient(NotebookClient):
            def __init__(self, *args: Any, **kwargs: Any) -> None:
                super().__init__(*args, **kwargs)
                self.output_bytes = 0
                self.truncated: set[int] = set()

            def output(self, outs: list, msg: dict, display_id: str | None, cell_index: int) -> Any:
                size = _size(msg.get("content", {}))
                self.output_bytes += size
                if self.output_bytes > settings.max_output_bytes:
                    if cell_index not in self.truncated:
                        self.truncated.add(cell_index)
                        outs.append(_stream("\n[output truncated by the grader: too much output]\n"))
                    if msg.get("msg_type") == "error":
                        content = msg.get("content", {})
                        outs.append(_error(str(content.get("ename", "Error"))[:200],
                                           str(content.get("evalue", ""))[:2000]))
                    return None
                return super().output(outs, msg, display_id, cell_index)

            def on_comm_open_jupyter_widget(self, msg: dict) -> None:
                return None   # no widget front end is emulated: a widget's outputs stay in its cell, as text

        return CappedClient(nb, km=km, timeout=None, startup_timeout=settings.startup_timeout, allow_errors=True,
                            interrupt_on_timeout=False, raise_on_iopub_timeout=False, iopub_timeout=5,
                            record_timing=False, shutdown_kernel="immediate", store_widget_state=False,
                            skip_cells_with_tag=f"never-skip-{uuid.uuid4().hex}",
                            on_cell_executed=_record_silent_error,
                            resources={"metadata": {"path": str(workdir)}})


class _Run:
    """One execution of one notebook: the kernel's cells, the judge's cells and tests, interleaved."""

    def __init__(self, job: Job, plan: cells.Plan, mode: str) -> None:
        import nbformat  # noqa: PLC0415

        self.job, self.plan, self.mode, self.settings = job, plan, mode, job.settings
        self.nb = nbformat.reads(json.dumps(job.submission), as_version=4)
        self.verdicts: list[Verdict] = []
        self.review: list[str] = []
        self.notes: list[str] = []
        self.kernel_cpu = 0.0
        self.dead: str | None = None
        self.kernel_pid: int | None = None
        self.uid = sandbox.sandbox_uid()
        self.scratch = sandbox.prepare_scratch()
        self.workdir = self.scratch / "work"
        for rel, data in job.files.items():
            target = (self.workdir / rel).resolve()
            if self.workdir.resolve() in target.parents:
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(data)
        self.judge_dir = Path(tempfile.mkdtemp(prefix="course-judge-"))
        for rel, data in job.files.items():
            target = (self.judge_dir / rel).resolve()
            if self.judge_dir.resolve() in target.parents:
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(data)
        limits = sandbox.Limits(memory_mb=self.settings.memory_mb)
        self.km = _kernel_manager(mode, self.scratch, self.workdir, limits, self.uid)
        self.client = _Client.make(self.nb, self.km, self.settings, self.workdir)
        self.deadline = time.monotonic() + self.settings.notebook_timeout
        self.started = False
        self.comm_id = uuid.uuid4().hex
        self.lock: asyncio.Lock | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.judge_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="judge")
        self.judge: _Judge | None = None
        self._pending: list[asyncio.Future] = []
        self.log_path = self.scratch.parent / f"{self.scratch.name}.log"
        self.timings: dict[str, float] = {"start": 0.0, "kernel_cells": 0.0, "judge_waits": 0.0, "tests": 0.0}

    # ------------------------------------------------------------------ accounting

    def root_pid(self) -> int | None:
        process = getattr(getattr(self.km, "provisioner", None), "process", None)
        return getattr(process, "pid", None)

    def cpu_now(self) -> float:
        uid = self.uid if self.mode in ("bwrap", "setpriv") else None
        return sandbox.cpu_seconds(sandbox.processes(self.root_pid(), uid))

    def end_strays(self) -> None:
        """End every process of the sandbox but the kernel and its launchers: none may outlive a cell."""
        uid = self.uid if self.mode in ("bwrap", "setpriv") else None
        procs = sandbox.processes(self.root_pid(), uid)
        by_pid = {p.pid: p for p in procs}
        if self.kernel_pid is None or self.kernel_pid not in by_pid:
            self.kernel_pid = _kernel_pid(procs)
        if self.kernel_pid is None:
            return
        keep = {self.kernel_pid}
        current = by_pid.get(self.kernel_pid)
        while current is not None and current.ppid not in keep:
            keep.add(current.ppid)
            current = by_pid.get(current.ppid)
        strays = [p for p in procs if p.pid not in keep]
        for proc in strays:
            with contextlib.suppress(OSError):
                os.kill(proc.pid, signal.SIGKILL)
        if strays:
            self._flag(f"the submission left {len(strays)} process(es) running after a cell: ended by the grader")

    def _flag(self, message: str) -> None:
        if message not in self.review:
            self.review.append(message)

    def _note(self, message: str) -> None:
        if message not in self.notes:
            self.notes.append(message)

    # ------------------------------------------------------------------ main

    async def main(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.lock = asyncio.Lock()
        env = sandbox.kernel_env(self.scratch, {"NBGRADER_EXECUTION": "autograde"})
        with open(self.log_path, "wb") as log:
            try:
                began = time.perf_counter()
                async with self.client.async_setup_kernel(cwd=str(self.workdir), env=env, stdout=log, stderr=log,
                                                          cleanup_kc=True):
                    self._cap_sockets()
                    await self._bootstrap()
                    self.timings["start"] = time.perf_counter() - began
                    self.started = True
                    self.judge = _Judge(self)
                    await self._cells()
                    self.kernel_cpu = self.cpu_now()
            except (GraderTooSlowError, KernelStartError):
                raise
            except Exception as err:
                if not self.started:
                    tail = self.log_path.read_bytes()[-600:].decode("utf-8", "replace").strip().replace("\n", " / ")
                    raise KernelStartError(f"the kernel did not start in sandbox mode {self.mode!r} ({err}); "
                                           f"kernel log: {tail}") from err
                raise
            finally:
                await self._kill()
        self.judge_pool.shutdown(wait=False)

    def cleanup(self) -> None:
        self.judge_pool.shutdown(wait=False)
        with contextlib.suppress(Exception):
            tail = self.log_path.read_bytes()[-4000:].decode("utf-8", "replace") if self.log_path.exists() else ""
            telling = [line.strip() for line in tail.splitlines() if any(
                w in line for w in ("Error", "Traceback", "Killed", "denied", "cannot", "failed"))]
            if telling:
                self._note("kernel log: " + " / ".join(telling[-3:])[:300])
        self.log_path.unlink(missing_ok=True)
        sandbox.remove_scratch(self.scratch)
        sandbox.remove_scratch(self.judge_dir)
        if self.judge is not None:
            self.judge.close()

    def _cap_sockets(self) -> None:
        import zmq  # noqa: PLC0415

        kc = self.client.kc
        for channel in (kc.iopub_channel, kc.shell_channel, kc.control_channel):
            socket_ = getattr(channel, "socket", None)
            if socket_ is not None:
                with contextlib.suppress(zmq.ZMQError):
                    socket_.setsockopt(zmq.MAXMSGSIZE, MAX_MESSAGE_BYTES)

    async def _bootstrap(self) -> None:
        """Install the oracle (before any student code) and open the judge's comm to it."""
        kc = self.client.kc
        msg_id = kc.execute(ORACLE_BOOTSTRAP, silent=True, store_history=False)
        reply = await self._shell_reply(msg_id, self.settings.startup_timeout)
        if reply is None or reply.get("content", {}).get("status") != "ok":
            detail = (reply or {}).get("content", {}).get("evalue", "no answer")
            raise KernelStartError(f"the oracle could not be installed in the kernel: {detail}")
        msg = kc.session.msg("comm_open", {"comm_id": self.comm_id, "target_name": "course-oracle", "data": {}})
        kc.shell_channel.send(msg)
        header, _, _ = await self._request({"op": "ping"}, [], _Budget(self, "the oracle's start"))
        if header.get("ok") != "pong":
            raise KernelStartError("the oracle did not answer")

    async def _shell_reply(self, msg_id: str, timeout: float) -> dict | None:
        kc = self.client.kc
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                reply = await kc.shell_channel.get_msg(timeout=max(0.05, deadline - time.monotonic()))
            except Empty:
                return None
            if reply.get("parent_header", {}).get("msg_id") == msg_id:
                return reply
        return None

    # ------------------------------------------------------------------ the cell loop

    async def _cells(self) -> None:
        student_code_ran = False
        judge_done: set[int] = set()
        locked_positions = {cells.grade_id(c): i for i, c in enumerate(self.plan.cells) if cells.grade_id(c)}
        student_sources = [c.source for c in self.nb.cells if c.cell_type == "code" and not cells.is_locked_code(c)
                           and not cells.is_test_cell(c)]
        kernel_needs = None if self.settings.run_all_cells else \
            cells.kernel_locked_cells(self.plan.cells, student_sources)
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
            if cells.is_test_cell(cell):
                continue  # a test cell the source does not know: IntegrityCheck already removed its metadata
            if not cell.source.strip():
                continue
            locked = cells.is_locked_code(cell)
            position = locked_positions.get(gid) if locked else None
            if not locked:
                await self._drain()   # the judge's queued cells finish before a student cell can change names
            if position is not None:
                await self._catch_up(judge_done, upto=position)
                if position in self.plan.judge_cells and position not in judge_done:
                    judge_done.add(position)
                    self._judge_locked_soon(position)
            if self.dead is not None:
                continue
            if locked and kernel_needs is not None and gid not in kernel_needs:
                skipped += 1
                cell.outputs = [_stream("[not run while grading: no code of the student's needs this cell]\n")]
                continue
            student_code_ran = student_code_ran or not locked
            await self._execute(cell, index, student_code_ran)
        await self._drain()
        if skipped:
            self._note(f"{skipped} of the instructor's demo cells were not run in the kernel (no student code "
                       "needs them; the tests that do run them in the judge)")

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

    async def _judge_test(self, cell: Any, test: cells.TestPlan) -> None:
        assert self.judge is not None and self.loop is not None
        if self.dead is not None:
            verdict = Verdict(test.grade_id, test.points, False, f"not run: {self.dead}")
            cell.outputs = [_error("GradingError", verdict.reason)]
        else:
            began = time.perf_counter()
            verdict, outputs = await self.loop.run_in_executor(self.judge_pool, self.judge.run_test, test)
            self.timings["tests"] += time.perf_counter() - began
            cell.outputs = outputs
        cell.source = test.source
        cell.execution_count = None
        self.verdicts.append(verdict)
        if self.dead is None:
            await self._end_strays_locked()

    async def _end_strays_locked(self) -> None:
        assert self.lock is not None
        async with self.lock:
            self.end_strays()

    async def _execute(self, cell: Any, index: int, student_code_ran: bool) -> None:
        """Run one cell in the kernel, charging its time to the sandbox's CPU (see :class:`_Budget`)."""
        assert self.lock is not None
        began = time.perf_counter()
        try:
            await self._execute_locked(cell, index, student_code_ran)
        finally:
            self.timings["kernel_cells"] += time.perf_counter() - began

    async def _execute_locked(self, cell: Any, index: int, student_code_ran: bool) -> None:
        from nbclient.exceptions import DeadKernelError  # noqa: PLC0415 - slow import

        assert self.lock is not None
        async with self.lock:
            budget = _Budget(self, f"cell {_label(cell, index)}")
            task = asyncio.ensure_future(self.client.async_execute_cell(cell, index, store_history=True))
            reason = None
            while not task.done():
                await asyncio.wait({task}, timeout=0.25)
                if task.done():
                    break
                reason = budget.exceeded()
                if reason:
                    if not student_code_ran and "notebook" not in reason:
                        task.cancel()
                        raise GraderTooSlowError(
                            f"the instructor's cell {_label(cell, index)} ran out of time ({reason}) before any "
                            "of the student's code had run: grade again with a longer --timeout")
                    await self._interrupt(task, reason)
                    break
            try:
                await task
            except DeadKernelError:
                self.dead = self.dead or f"the kernel died during cell {_label(cell, index)}"
                cell.outputs.append(_error("DeadKernelError", self.dead))
                self._flag(self.dead)
            except asyncio.CancelledError:
                self.dead = self.dead or f"the kernel was stopped during cell {_label(cell, index)}"
                cell.outputs.append(_error("GradingError", self.dead))
            except Exception as err:  # noqa: BLE001 - anything else nbclient raises: record it, stop the run
                self.dead = f"the grader lost the kernel during cell {_label(cell, index)}: {type(err).__name__}"
                cell.outputs.append(_error(type(err).__name__, self.dead))
                self._flag(self.dead)
                await self._kill()
            if reason:
                cell.outputs.append(_error("TimeoutError", f"{reason}: interrupted by the grader"))
                self._flag(f"cell {_label(cell, index)}: {reason}")
            if self.client.truncated:
                self._note(f"output truncated (more than {self.settings.max_output_bytes:,} bytes)")
            if self.dead is None:
                self.end_strays()

    async def _interrupt(self, task: "asyncio.Future[Any]", reason: str) -> bool:
        """Interrupt the kernel; True when it stops within the grace period, else it is killed."""
        with contextlib.suppress(Exception):
            await self.km.interrupt_kernel()
        done, _ = await asyncio.wait({task}, timeout=self.settings.interrupt_grace)
        if done:
            return True
        self.dead = f"the kernel ignored the interrupt ({reason}) and was killed"
        self._flag(self.dead)
        await self._kill()
        await asyncio.wait({task}, timeout=5)
        if not task.done():
            task.cancel()
        return False

    async def _kill(self) -> None:
        if self.km is not None and self.km.has_kernel:
            with contextlib.suppress(Exception):
                await self.km.shutdown_kernel(now=True)
        with contextlib.suppress(Exception):
            for proc in sandbox.processes(self.root_pid(), self.uid if self.mode in ("bwrap", "setpriv") else None):
                os.kill(proc.pid, signal.SIGKILL)

    # ------------------------------------------------------------------ the oracle

    async def oracle(self, header: dict, buffers: list, budget: _Budget) -> proxy.Reply:
        if self.dead is not None:
            raise proxy.KernelGone(self.dead)
        assert self.lock is not None
        async with self.lock:
            reply_header, reply_buffers, output = await self._request(header, buffers, budget)
        return proxy.Reply(reply_header, reply_buffers, output)

    async def _request(self, header: dict, buffers: list, budget: _Budget) -> tuple[dict, list, str]:
        kc = self.client.kc
        msg = kc.session.msg("comm_msg", {"comm_id": self.comm_id, "data": header})
        msg["buffers"] = buffers
        kc.shell_channel.send(msg)
        msg_id = msg["header"]["msg_id"]
        reply: tuple[dict, list] | None = None
        idle = False
        output: list[str] = []
        size = 0
        last_alive_check = time.monotonic()
        while reply is None:
            try:
                incoming = await kc.iopub_channel.get_msg(timeout=0.25)
            except Empty:
                incoming = None
            if incoming is not None and incoming.get("parent_header", {}).get("msg_id") == msg_id:
                kind, content = incoming.get("msg_type"), incoming.get("content", {})
                if kind == "comm_msg" and content.get("comm_id") == self.comm_id:
                    data = content.get("data")
                    reply = (data if isinstance(data, dict) else {}, list(incoming.get("buffers") or []))
                elif kind == "status" and content.get("execution_state") == "idle":
                    idle = True
                elif kind in ("stream", "display_data", "execute_result", "error") and size < MAX_TEST_OUTPUT:
                    text = _as_text(kind, content)[: MAX_TEST_OUTPUT - size]
                    size += len(text)
                    output.append(text)
            if reply is not None:
                break          # the oracle flushes stdout before it answers: the output is complete
            if idle and reply is None:
                raise proxy.KernelGone("the kernel finished the request without answering it (its oracle was "
                                       "replaced or broken by the submission)")
            reason = budget.exceeded()
            if reason:
                await self._interrupt_request(msg_id, reason)
                raise TimeoutError(f"{reason}: the call into the student's code was interrupted")
            if time.monotonic() - last_alive_check > 1:
                last_alive_check = time.monotonic()
                if not await self.km.is_alive():
                    self.dead = "the kernel died during a test's call into the student's code"
                    self._flag(self.dead)
                    raise proxy.KernelGone(self.dead)
        return reply[0], reply[1], "".join(output)

    async def _interrupt_request(self, msg_id: str, reason: str) -> None:
        kc = self.client.kc
        with contextlib.suppress(Exception):
            await self.km.interrupt_kernel()
        deadline = time.monotonic() + self.settings.interrupt_grace
        while time.monotonic() < deadline:
            try:
                incoming = await kc.iopub_channel.get_msg(timeout=0.25)
            except Empty:
                continue
            if (incoming.get("parent_header", {}).get("msg_id") == msg_id and incoming.get("msg_type") == "status"
                    and incoming.get("content", {}).get("execution_state") == "idle"):
                self._flag(f"a test's call into the student's code: {reason}")
                return
        self.dead = f"the kernel ignored the interrupt ({reason}) and was killed"
        self._flag(self.dead)
        await self._kill()


# ---------------------------------------------------------------------------------------------- the judge


class _JudgeShell:
    """What ``get_ipython()`` is in the judge: the magics the course's cells use, and nothing else."""

    def run_line_magic(self, name: str, line: str, *_: Any) -> None:
        if name in ("matplotlib", "config", "load_ext", "reload_ext", "autoreload"):
            return None
        raise NotImplementedError(f"the magic %{name} is not available in the judge")

    def run_cell_magic(self, name: str, line: str, cell: str) -> None:
        if name == "capture":
            return None
        raise NotImplementedError(f"the cell magic %%{name} is not available in the judge")

    def system(self, *_: Any) -> None:
        raise NotImplementedError("shell commands are not run in the judge")

    getoutput = system


class _Judge:
    """The trusted interpreter: the instructor's cells and tests, with the exercise names as proxies."""

    def __init__(self, run: _Run) -> None:
        self.run = run
        self.budget = _Budget(run, "the judge")
        self.remote = proxy.Remote(self._transport)
        shell = _JudgeShell()
        self.namespace: dict[str, Any] = {"__name__": "__main__", "__builtins__": builtins,
                                          "get_ipython": lambda: shell}
        self.previous_dir = os.getcwd()
        os.chdir(run.judge_dir)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.chdir(self.previous_dir)
        with contextlib.suppress(Exception):
            import matplotlib.pyplot as plt  # noqa: PLC0415

            plt.close("all")
        self.namespace.clear()

    def _transport(self, header: dict, buffers: list) -> proxy.Reply:
        assert self.run.loop is not None
        future = asyncio.run_coroutine_threadsafe(self.run.oracle(header, buffers, self.budget), self.run.loop)
        return future.result()

    def _bind(self, names: list[str]) -> None:
        for name in names:
            try:
                self.namespace[name] = self.remote.resolve(name)
            except NameError:
                self.namespace.pop(name, None)

    def _exec(self, source: str, label: str) -> None:
        code = cells.python_source(source)
        filename = f"<{label}>"
        linecache.cache[filename] = (len(code), None, code.splitlines(True), filename)
        exec(compile(code, filename, "exec"), self.namespace)  # noqa: S102 - the instructor's own code

    def run_locked(self, position: int) -> None:
        """One of the instructor's locked cells, for the state the tests need (its output is not kept)."""
        self.budget = _Budget(self.run, f"locked cell {self.run.plan.locked_id(position)!r} in the judge")
        label = self.run.plan.locked_id(position) or f"cell {position}"
        sink = io.StringIO()
        try:
            with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
                self._bind(self.run.plan.cell_exercise_names.get(position, []))
                self._exec(self.run.plan.cells[position]["source"], label)
        except BaseException as err:  # noqa: BLE001 - a broken answer can make a demo fail; tests then fail
            if isinstance(err, proxy.KernelGone):
                return
            self.run._note(f"the judge's run of locked cell {label!r} raised {type(err).__name__}: "
                           f"{str(err)[:200]}")

    def run_test(self, test: cells.TestPlan) -> tuple[Verdict, list]:
        """Run one test cell; its verdict, and its outputs as nbgrader reads them."""
        started = time.perf_counter()
        self.budget = _Budget(self.run, f"test {test.grade_id!r}")
        out, err_out = _Capped(MAX_TEST_OUTPUT), _Capped(MAX_TEST_OUTPUT)
        error: BaseException | None = None
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err_out):
                self._bind(test.exercise_names)
                self._exec(test.source, test.grade_id)
        except BaseException as exc:  # noqa: BLE001 - any failure of the test is its verdict
            error = exc
        verdict = Verdict(test.grade_id, test.points, error is None, seconds=round(time.perf_counter() - started, 3))
        outputs = []
        text = out.getvalue() + err_out.getvalue()
        if text:
            outputs.append(_stream(text))
        if error is None and err_out.getvalue() and self.run.settings.stderr_fails_tests:
            verdict.passed = False
            verdict.reason = "the test wrote to stderr (stderr_fails_tests is set)"
            outputs.append(_error("StderrOutput", verdict.reason))
        if error is not None:
            if isinstance(error, (proxy.KernelGone, TimeoutError)):
                verdict.reason = str(error)
            outputs.append(_error_from(error, test.grade_id))
        return verdict, outputs


class _Capped(io.StringIO):
    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit, self.dropped = limit, False

    def write(self, text: str) -> int:
        room = self.limit - self.tell()
        if room <= 0:
            if not self.dropped:
                self.dropped = True
                super().write("\n[more output not kept]\n")
            return len(text)
        return super().write(text[:room])


# ---------------------------------------------------------------------------------------------- helpers


def _kernel_manager(mode: str, scratch: Path, workdir: Path, limits: sandbox.Limits, uid: int) -> Any:
    from jupyter_client.kernelspec import KernelSpec  # noqa: PLC0415
    from jupyter_client.manager import AsyncKernelManager  # noqa: PLC0415
    from traitlets import List, Unicode  # noqa: PLC0415

    class SandboxKernelManager(AsyncKernelManager):
        """A kernel manager whose kernel command is the sandbox command line (interrupts go by message)."""

        sandbox_argv = List(Unicode())

        @property
        def kernel_spec(self) -> KernelSpec:  # type: ignore[override]
            return KernelSpec(argv=list(self.sandbox_argv), display_name="Python 3 (grading sandbox)",
                              language="python", interrupt_mode="message", env={}, metadata={})

    return SandboxKernelManager(transport="ipc", connection_file=str(scratch / "kernel.json"),
                                sandbox_argv=sandbox.kernel_argv(mode, scratch, workdir, limits, uid=uid))


def _kernel_pid(procs: list[sandbox.Process]) -> int | None:
    """The ipykernel process of a sandbox: the first process whose own command is ``python -m ipykernel_launcher``
    (bubblewrap and the launcher carry that command as arguments; the kernel runs it)."""
    for proc in sorted(procs, key=lambda p: p.pid):
        try:
            with open(f"/proc/{proc.pid}/cmdline", "rb") as fh:
                argv = fh.read().split(b"\0")
        except OSError:
            continue
        if argv[1:3] == [b"-m", b"ipykernel_launcher"]:
            return proc.pid
    return None


def _size(content: Any) -> int:
    try:
        return len(json.dumps(content, default=str))
    except (TypeError, ValueError):
        return 1_000_000


def _as_text(kind: str, content: dict) -> str:
    if kind == "stream":
        return str(content.get("text", ""))
    if kind == "error":
        return f"{content.get('ename', 'Error')}: {content.get('evalue', '')}\n"
    data = content.get("data", {})
    text = data.get("text/plain", "") if isinstance(data, dict) else ""
    return (text if isinstance(text, str) else "") + "\n"


def _stream(text: str, name: str = "stdout") -> Any:
    from nbformat.notebooknode import NotebookNode  # noqa: PLC0415

    return NotebookNode(output_type="stream", name=name, text=text)


def _error(ename: str, evalue: str, tb: list[str] | None = None) -> Any:
    from nbformat.notebooknode import NotebookNode  # noqa: PLC0415

    return NotebookNode(output_type="error", ename=ename, evalue=evalue, traceback=tb or [f"{ename}: {evalue}"])


def _error_from(error: BaseException, label: str) -> Any:
    """A failed test as an error output: the check's message, and the test's own traceback for the instructor
    (feedback shows only the last line; see :mod:`course_utils.grader.feedback`)."""
    ename = getattr(error, "remote_type", None) or type(error).__name__
    evalue = str(error)[:20_000]
    frames = [line for line in traceback.format_exception(type(error), error, error.__traceback__)
              if f"<{label}>" in line or not line.startswith("  File")][-12:]
    remote_tb = getattr(error, "remote_traceback", "")
    tb = [*frames[:-1], *(["The student's code raised:\n" + remote_tb] if remote_tb else []), f"{ename}: {evalue}"]
    return _error(ename, evalue, tb)


def _record_silent_error(cell: Any, execute_reply: dict, **_: Any) -> None:
    """An error reply without an error output (traceback display switched off) still counts as an error."""
    content = execute_reply.get("content", {})
    if content.get("status") == "error" and not any(o.get("output_type") == "error" for o in cell.outputs):
        cell.outputs.append(_error(content.get("ename", "Error"), content.get("evalue", "")
                                   or "an error was raised while error display was switched off"))


def _label(cell: Any, index: int) -> str:
    gid = cells.grade_id(cell)
    return f"{gid!r}" if gid else f"{index + 1} (a code cell)"


def warm_up() -> None:
    """Import what grading needs once per worker process, before any job (a warm worker grades faster)."""
    os.environ.setdefault("MPLBACKEND", "Agg")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import importlib  # noqa: PLC0415

    for module in ("nbclient", "torch", "transformers", "matplotlib.pyplot", "course_utils.checks",
                   "course_utils.models"):
        with contextlib.suppress(Exception):
            importlib.import_module(module)
    version.grader_version()


def job_summary(result: Result) -> str:
    passed = sum(v.points for v in result.verdicts if v.passed)
    total = sum(v.points for v in result.verdicts)
    return f"{result.student}/{result.assignment}/{result.notebook}: {passed:g}/{total:g} on {platform.node()}"
