"""The student's kernel, seen from the grading worker: started in the sandbox, run cell by cell, asked questions.

:class:`KernelSession` owns one sandboxed kernel for one notebook:

* it starts the kernel (:mod:`course_utils.grader.sandbox`) and, before any student code, installs the oracle
  (:mod:`course_utils.grader.oracle`) and opens the judge's comm to it;
* :meth:`KernelSession.execute` runs one cell within a :class:`~course_utils.grader.budget.Budget` (the
  sandbox's own CPU time, a wall-clock bound, the notebook's deadline); an interrupt first, a kill if ignored;
* :meth:`KernelSession.end_strays` ends every process of the sandbox but the kernel (none may outlive a cell);
* :meth:`KernelSession.oracle` sends one request of the judge and waits for the reply, with the same budget and
  at most ``max_received_mb`` of answers per test;
* every output type (display updates too) counts towards the notebook's output cap; a message over
  :data:`MAX_MESSAGE_BYTES` is dropped by zmq itself, and the dropped connection is flagged;
* the data files arrive through the inbox of :mod:`course_utils.grader.scratch`; a kernel that writes on the
  host's disk beyond its cap (its working folder in the modes that do not isolate, its runtime folder, its log)
  is stopped and flagged.
Findings go to the session's :class:`~course_utils.grader.integrity.Findings`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
import uuid
from queue import Empty
from typing import Any

from course_utils.cells import error_output, grade_id
from course_utils.grader import kernel_client, proxy, sandbox, scratch
from course_utils.grader.budget import Budget
from course_utils.grader.integrity import Findings
from course_utils.grader.jobs import Settings

ORACLE_BOOTSTRAP = "import course_utils.grader.oracle as _course_oracle; _course_oracle.install(); del _course_oracle"
MAX_MESSAGE_BYTES = 64 * 1024 * 1024     # one message from the kernel (ZMQ drops the peer past it)
MAX_CALL_OUTPUT = 100_000                # characters of what the student's code prints during one request
class GraderTooSlowError(RuntimeError):
    """An instructor's cell ran out of time before any student code ran: the machine's fault, not a zero."""


class KernelStartError(RuntimeError):
    """The sandboxed kernel did not come up (before any of the submission's code ran)."""


class KernelSession:
    """One sandboxed kernel for one notebook (see the module docstring). It may be started before its notebook is
    known (:meth:`start`, then :meth:`adopt`): a warm kernel, used once."""

    def __init__(self, nb: Any, settings: Settings, mode: str, files: dict[str, bytes], findings: Findings) -> None:
        if nb is None:
            import nbformat  # noqa: PLC0415

            nb = nbformat.v4.new_notebook()
        self.nb, self.settings, self.mode, self.findings = nb, settings, mode, findings
        self.dead: str | None = None
        self.kernel_pid: int | None = None
        self.uid = sandbox.sandbox_uid()
        self.scratch = scratch.prepare()
        self.workdir, self.runtime = self.scratch / "work", self.scratch / "runtime"
        scratch.post(self.scratch, files)
        limits = sandbox.Limits(memory_mb=settings.memory_mb, work_mb=settings.disk_mb)
        self.km = kernel_client.sandbox_kernel_manager(mode, self.runtime, self.workdir, limits, self.uid,
                                                       MAX_MESSAGE_BYTES)
        self.client = kernel_client.capped_client(nb, self.km, self.workdir, settings.max_output_bytes,
                                                  settings.startup_timeout)
        self.deadline = time.monotonic() + settings.notebook_timeout
        self.comm_id = uuid.uuid4().hex
        self.lock: asyncio.Lock | None = None
        self.log_path = self.scratch.parent / f"{self.scratch.name}.log"
        self.started = False
        self.watch: scratch.Watch | None = None
        self.disk_full: str | None = None
        self.drops: kernel_client.DropWatch | None = None
        self._stack: contextlib.AsyncExitStack | None = None

    # ------------------------------------------------------------------ life cycle

    async def start(self) -> None:
        """Start the kernel and install its oracle (no student code has run yet)."""
        self.lock = asyncio.Lock()
        env = sandbox.kernel_env(self.scratch, {"NBGRADER_EXECUTION": "autograde"})
        self._stack = contextlib.AsyncExitStack()
        log = self._stack.enter_context(open(self.log_path, "wb"))
        try:
            await self._stack.enter_async_context(self.client.async_setup_kernel(
                cwd=str(self.workdir), env=env, stdout=log, stderr=log, cleanup_kc=True))
            self.drops = kernel_client.DropWatch(self.client.kc.iopub_channel.socket)
            await self._bootstrap()
            if self.mode == "bwrap":        # its sockets are bound: the kernel's uid may write nothing there now
                scratch.seal(self.runtime)
            self.watch = scratch.Watch(self.scratch, self.log_path, self.settings.disk_mb,
                                       host_work=self.mode not in sandbox.ISOLATING_MODES)
        except Exception as err:
            await self.stop()
            raise KernelStartError(f"the kernel did not start in sandbox mode {self.mode!r} ({err}); "
                                   f"kernel log: {scratch.log_tail(self.log_path, 600)}") from err
        self.started = True

    def adopt(self, nb: Any, files: dict[str, bytes], settings: Settings, findings: Findings) -> None:
        """Give a started kernel its notebook: the data files, the settings' clock, where findings go."""
        self.nb, self.settings, self.findings = nb, settings, findings
        self.client.nb = nb
        scratch.post(self.scratch, files)
        self.deadline = time.monotonic() + settings.notebook_timeout

    async def alive(self) -> bool:
        return self.started and self.km.has_kernel and bool(await self.km.is_alive())

    async def stop(self) -> None:
        """Stop the kernel and kill every process of its sandbox."""
        await self._disk_guard()
        try:
            if self._stack is not None:
                with contextlib.suppress(Exception):
                    await self._stack.aclose()
        finally:
            self._stack = None
            await self.kill()
            self.drops = None
            kernel_client.close_context(self.km)

    @contextlib.asynccontextmanager
    async def running(self):  # noqa: ANN201 - an async context manager
        """Start the kernel and its oracle (unless it was started already); stop it on the way out."""
        if not self.started:
            await self.start()
        try:
            await self._receive("work")      # the data files, before any student code
            yield self
        finally:
            await self.stop()

    def cleanup(self) -> None:
        """Note what the kernel's log says, then delete the log and the scratch folder. Never raises."""
        for note in (scratch.log_note(self.log_path), scratch.remove(self.log_path), scratch.remove(self.scratch)):
            if note:
                self.findings.note(note)

    async def _disk_guard(self) -> str | None:
        """Polled while a cell or a request runs, and after each cell (see :class:`scratch.Watch`): a kernel that
        wrote on the host's disk beyond its limits is stopped and flagged, and its message returned; one that
        filled its own tmpfs (bwrap modes: nothing reached the host) is flagged once."""
        if self.watch is None:
            return None
        found = self.watch.check()
        if found and self.dead is None:
            self.dead = f"the submission {found}: its kernel was stopped"
            self.findings.flag(self.dead)
            await self.kill()
        if not self.disk_full and self.dead is None and not self.watch.host_work:
            if self.kernel_pid is None:
                self.kernel_pid = kernel_client.kernel_pid(self._processes())
            self.disk_full = self.watch.tmpfs_full(self.kernel_pid)
            if self.disk_full:
                self.findings.flag(f"the submission {self.disk_full}")
        return found

    def check_connection(self) -> None:
        """Flag a dropped iopub connection: the kernel sent a message over :data:`MAX_MESSAGE_BYTES` (not once it
        died or was stopped: that drops the connection too, and has its own flag)."""
        if self.drops is not None and self.drops.dropped() and self.dead is None:
            self.findings.flag(f"the kernel sent a message larger than the {MAX_MESSAGE_BYTES // 2**20} MB the grader "
                               "accepts (or broke its connection): the message was dropped")

    async def _bootstrap(self) -> None:
        """Install the oracle (before any student code) and open the judge's comm to it."""
        kc = self.client.kc
        await self._receive("home")
        await self._trusted(ORACLE_BOOTSTRAP, "the oracle could not be installed in the kernel")
        msg = kc.session.msg("comm_open", {"comm_id": self.comm_id, "target_name": "course-oracle", "data": {}})
        kc.shell_channel.send(msg)
        header, _, _ = await self._request({"op": "ping"}, [], Budget(self, "the oracle's start"))
        if header.get("ok") != "pong":
            raise KernelStartError("the oracle did not answer")

    async def _receive(self, what: str) -> None:
        """Copy the inbox's ``work`` (data files) or ``home`` (font cache) into the kernel's own folder."""
        code = scratch.receive_code(self.scratch, what)
        if code is not None:
            await self._trusted(code, f"the inbox's {what} files could not be copied into the kernel")

    async def _trusted(self, code: str, failure: str) -> None:
        """Run the grader's own ``code`` in the kernel (before any student code), silently."""
        kc = self.client.kc
        msg_id = kc.execute(code, silent=True, store_history=False)
        deadline, reply = time.monotonic() + self.settings.startup_timeout, None
        while reply is None and time.monotonic() < deadline:
            with contextlib.suppress(Empty):
                reply = await kc.shell_channel.get_msg(timeout=max(0.05, deadline - time.monotonic()))
                reply = reply if reply.get("parent_header", {}).get("msg_id") == msg_id else None
        if reply is None or reply.get("content", {}).get("status") != "ok":
            detail = (reply or {}).get("content", {}).get("evalue", "no answer")
            raise KernelStartError(f"{failure}: {detail}")

    # ------------------------------------------------------------------ accounting

    def root_pid(self) -> int | None:
        process = getattr(getattr(self.km, "provisioner", None), "process", None)
        return getattr(process, "pid", None)

    def _processes(self) -> list[sandbox.Process]:
        return sandbox.processes(self.root_pid(), self.uid if self.mode in ("bwrap", "setpriv") else None)

    def cpu_now(self) -> float:
        return sandbox.cpu_seconds(self._processes())

    def end_strays(self) -> None:
        """End every process of the sandbox but the kernel and its launchers: none may outlive a cell."""
        procs = self._processes()
        by_pid = {p.pid: p for p in procs}
        if self.kernel_pid is None or self.kernel_pid not in by_pid:
            self.kernel_pid = kernel_client.kernel_pid(procs)
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
            self.findings.flag(f"the submission left {len(strays)} process(es) running after a cell: ended by "
                               "the grader")

    async def end_strays_between(self) -> None:
        """:meth:`end_strays` while no cell or request runs."""
        assert self.lock is not None
        async with self.lock:
            self.end_strays()

    # ------------------------------------------------------------------ cells

    async def execute(self, cell: Any, index: int, student_code_ran: bool) -> None:
        """Run one cell in the kernel, charging its time to the sandbox's CPU (see :class:`Budget`)."""
        from nbclient.exceptions import DeadKernelError  # noqa: PLC0415 - slow import

        assert self.lock is not None
        async with self.lock:
            budget = Budget(self, f"cell {label(cell, index)}")
            task = asyncio.ensure_future(self.client.async_execute_cell(cell, index, store_history=True))
            reason = None
            while not task.done():
                await asyncio.wait({task}, timeout=0.25)
                if await self._disk_guard() or task.done():
                    break
                reason = budget.exceeded()
                if reason:
                    if not student_code_ran and "notebook" not in reason:
                        task.cancel()
                        raise GraderTooSlowError(
                            f"the instructor's cell {label(cell, index)} ran out of time ({reason}) before any "
                            "of the student's code had run: grade again with a longer --timeout")
                    await self._interrupt(task, reason)
                    break
            if self.dead is not None and not (await asyncio.wait({task}, timeout=5))[0]:
                task.cancel()            # (stopped by the disk guard: nbclient notices within a second)
            try:
                await task
            except DeadKernelError:
                self.dead = self.dead or f"the kernel died during cell {label(cell, index)}"
                cell.outputs.append(error_output("DeadKernelError", self.dead))
                self.findings.flag(self.dead)
            except asyncio.CancelledError:
                self.dead = self.dead or f"the kernel was stopped during cell {label(cell, index)}"
                cell.outputs.append(error_output("GradingError", self.dead))
            except Exception as err:  # noqa: BLE001 - anything else nbclient raises: record it, stop the run
                self.dead = f"the grader lost the kernel during cell {label(cell, index)}: {type(err).__name__}"
                cell.outputs.append(error_output(type(err).__name__, self.dead))
                self.findings.flag(self.dead)
                await self.kill()
            if reason:
                cell.outputs.append(error_output("TimeoutError", f"{reason}: interrupted by the grader"))
                self.findings.flag(f"cell {label(cell, index)}: {reason}")
            if self.client.truncated:
                self.findings.note(f"output truncated (more than {self.settings.max_output_bytes:,} bytes)")
            self.check_connection()
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
        self.findings.flag(self.dead)
        await self.kill()
        await asyncio.wait({task}, timeout=5)
        if not task.done():
            task.cancel()
        return False

    async def kill(self) -> None:
        if self.km is not None and self.km.has_kernel:
            with contextlib.suppress(Exception):
                await self.km.shutdown_kernel(now=True)
        self.kill_processes()

    def kill_processes(self) -> None:
        """SIGKILL to every process of the sandbox (needs no event loop: also at a worker's exit)."""
        with contextlib.suppress(Exception):
            for proc in self._processes():
                os.kill(proc.pid, signal.SIGKILL)

    # ------------------------------------------------------------------ the oracle

    async def oracle(self, header: dict, buffers: list, budget: Budget) -> proxy.Reply:
        """One request of the judge, answered by the student's kernel (what it printed comes with the reply)."""
        if self.dead is not None:
            raise proxy.KernelGone(self.dead)
        assert self.lock is not None
        async with self.lock:
            reply_header, reply_buffers, output = await self._request(header, buffers, budget)
        return proxy.Reply(reply_header, reply_buffers, output)

    async def _request(self, header: dict, buffers: list, budget: Budget) -> tuple[dict, list, str]:
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
                    break          # the oracle flushes stdout before it answers: the output is complete
                if kind == "status" and content.get("execution_state") == "idle":
                    idle = True
                elif kind in ("stream", "display_data", "execute_result", "error") and size < MAX_CALL_OUTPUT:
                    text = kernel_client.as_text(kind, content)[: MAX_CALL_OUTPUT - size]
                    size += len(text)
                    output.append(text)
            if idle:
                raise proxy.KernelGone("the kernel finished the request without answering it (its oracle was "
                                       "replaced or broken by the submission)")
            if await self._disk_guard():
                raise proxy.KernelGone(self.dead or "the kernel was stopped")
            reason = budget.exceeded()
            if reason:
                await self._interrupt_request(msg_id, reason)
                raise TimeoutError(f"{reason}: the call into the student's code was interrupted")
            if time.monotonic() - last_alive_check > 1:
                last_alive_check = time.monotonic()
                if not await self.km.is_alive():
                    self.dead = "the kernel died during a test's call into the student's code"
                    self.findings.flag(self.dead)
                    raise proxy.KernelGone(self.dead)
        self.check_connection()
        budget.take(*reply)
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
                self.findings.flag(f"a test's call into the student's code: {reason}")
                return
        self.dead = f"the kernel ignored the interrupt ({reason}) and was killed"
        self.findings.flag(self.dead)
        await self.kill()


# ---------------------------------------------------------------------------------------------------- helpers


def label(cell: Any, index: int) -> str:
    gid = grade_id(cell)
    return f"{gid!r}" if gid else f"{index + 1} (a code cell)"
