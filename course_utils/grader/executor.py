"""``SandboxedExecute``: nbgrader's execute step, run in a sandbox and checked for tampering.

It replaces nbgrader's ``Execute`` preprocessor in ``Autograde.autograde_preprocessors`` (see nbgrader_config.py).
For each notebook it

1. copies the submission's other files into a fresh scratch folder (never the gradebook, never solutions/),
2. appends a per-run random *sentinel* to every test cell: a test cell only earns its points when its sentinel
   printed, i.e. the cell really ran to its end (a cell that was blanked, skipped or cut short scores 0),
3. starts the kernel in the sandbox (:mod:`course_utils.sandbox`) and runs the cells one by one, with a per-cell
   timeout (interrupt first; a kernel that ignores the interrupt is killed), a notebook time budget and a cap on
   the bytes of output kept,
4. before each test cell, asks the kernel for its execution hooks (:data:`course_utils.integrity.PROBE_SOURCE`):
   a test cell that runs while untrusted code is hooked into the kernel (input/AST transformers, patched shell,
   patched check helpers or builtins...) scores 0,
5. removes the sentinels again and writes a report (flags, per-cell results, sandbox mode, seconds) as JSON under
   ``report_directory/<student>/<assignment>/<notebook>.json`` for ``course grades``.
After a dead kernel or a kill, the remaining test cells get an error output, hence 0 points.
"""

from __future__ import annotations

import ast
import json
import re
import secrets
import shutil
import time
from pathlib import Path
from queue import Empty
from typing import Any

from jupyter_client.kernelspec import KernelSpec
from jupyter_client.manager import AsyncKernelManager
from jupyter_core.utils import ensure_async, run_sync
from nbclient import NotebookClient
from nbclient.exceptions import CellTimeoutError, DeadKernelError
from nbformat.notebooknode import NotebookNode
from nbgrader.preprocessors import NbGraderPreprocessor
from traitlets import Bool, Integer, List, Unicode

from course_utils import integrity, probe
from course_utils import sandbox as _sandbox


_TELLING = re.compile(r"Error|Traceback|Killed|denied|cannot|failed", re.I)


class KernelStartError(RuntimeError):
    """The sandboxed kernel did not come up (before any of the submission's code ran)."""


class GraderTooSlowError(RuntimeError):
    """An instructor's cell timed out before any student code ran: grade again, on a faster machine or with a
    longer timeout (the submission gets status "error", not a zero)."""


class SandboxKernelManager(AsyncKernelManager):
    """A kernel manager whose kernel command is the sandbox command line (interrupts go by message)."""

    sandbox_argv = List(Unicode())

    @property
    def kernel_spec(self) -> KernelSpec:  # type: ignore[override]
        return KernelSpec(argv=list(self.sandbox_argv), display_name="Python 3 (grading sandbox)",
                          language="python", interrupt_mode="message", env={}, metadata={})


class _Client(NotebookClient):
    """nbclient with an output budget: past ``max_output_bytes`` (per notebook) outputs are dropped, errors kept."""

    max_output_bytes = Integer(10_000_000)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.output_bytes = 0
        self.truncated: set[int] = set()

    def output(self, outs: list, msg: dict, display_id: str | None, cell_index: int) -> NotebookNode | None:
        content = msg.get("content", {})
        if msg.get("msg_type") in ("stream", "display_data", "execute_result", "update_display_data"):
            size = len(content.get("text", "")) + sum(len(str(v)) for v in content.get("data", {}).values())
            self.output_bytes += size
            if self.output_bytes > self.max_output_bytes:
                if cell_index not in self.truncated:
                    self.truncated.add(cell_index)
                    note = NotebookNode(output_type="stream", name="stdout",
                                        text="\n[output truncated by the grader: too much output]\n")
                    outs.append(note)
                return None
        return super().output(outs, msg, display_id, cell_index)


class SandboxedExecute(NbGraderPreprocessor):
    """Execute a submission in the grading sandbox, with sentinels, hook probes, timeouts and output caps."""

    timeout = Integer(60, help="seconds a cell may run before it is interrupted").tag(config=True)
    notebook_timeout = Integer(900, help="seconds the whole notebook may take").tag(config=True)
    startup_timeout = Integer(120, help="seconds to wait for the kernel to start").tag(config=True)
    interrupt_grace = Integer(10, help="seconds an interrupted kernel gets to answer before it is killed"
                              ).tag(config=True)
    max_output_bytes = Integer(10_000_000, help="bytes of output kept per notebook").tag(config=True)
    sandbox = Unicode("auto", help="sandbox mode: auto, bwrap, bwrap-userns, setpriv or none").tag(config=True)
    start_attempts = Integer(3, help="tries to start the kernel (a start failure runs no student code)"
                             ).tag(config=True)
    memory_mb = Integer(_sandbox.Limits.memory_mb, help="address-space limit of the kernel (MB)").tag(config=True)
    stderr_fails_tests = Bool(False, help="nbgrader's rule: a test cell that writes to stderr (a warning) scores 0"
                              ).tag(config=True)
    source_directory = Unicode("solutions", help="the course's source folder (the assignment's data files are "
                               "copied from there)").tag(config=True)
    report_directory = Unicode("", help="where the per-notebook integrity reports go "
                               "(default: 'integrity' next to the gradebook)").tag(config=True)

    def preprocess(self, nb: NotebookNode, resources: dict) -> tuple[NotebookNode, dict]:
        started = time.perf_counter()
        info = resources.get("nbgrader", {})
        findings = integrity.Findings.from_metadata(nb.metadata.pop(integrity.METADATA_KEY, None))
        mode = _sandbox.detect_mode(self.sandbox)
        if mode not in _sandbox.ISOLATING_MODES:
            findings.note(f"sandbox mode {mode!r}: {_sandbox.describe(mode)}")
        nonce = secrets.token_hex(12)
        originals = integrity.add_sentinels(nb, nonce)
        for attempt in range(1, self.start_attempts + 1):  # a kernel that fails to *start* ran no student code
            scratch = _sandbox.prepare_scratch()
            try:
                _copy_assignment_files(Path(self.source_directory) / str(info.get("assignment", "")), scratch / "work")
                run = _Run(self, nb, mode, scratch, nonce)
                run_sync(run.execute)()
                break
            except KernelStartError as err:
                if attempt == self.start_attempts:
                    raise
                self.log.warning("%s; trying again (%d/%d)", err, attempt + 1, self.start_attempts)
                findings.note(f"the kernel failed to start once: {str(err)[:200]}")
            finally:
                _sandbox.remove_scratch(scratch)
        cells = integrity.settle_test_cells(nb, originals, run.zeroed, run.not_run, findings,
                                            stderr_fails=self.stderr_fails_tests)
        for message in run.problems:
            findings.flag(message)
        if run.kernel_log:
            findings.note(f"kernel log: {run.kernel_log}")
        if run.client_truncated:
            findings.note(f"output truncated (more than {self.max_output_bytes:,} bytes)")
        report = {
            "student": info.get("student"), "assignment": info.get("assignment"), "notebook": info.get("notebook"),
            "sandbox": mode, "seconds": round(time.perf_counter() - started, 2), "cells": cells,
            "probe_seconds": round(run.probe_seconds, 2),
            **findings.as_dict(),
        }
        self._write_report(report, info)
        return nb, resources

    def _write_report(self, report: dict, info: dict) -> None:
        directory = self.report_directory
        if not directory:
            db_url = info.get("db_url", "")
            directory = str(Path(db_url.replace("sqlite:///", "", 1)).parent / "integrity") if db_url else "."
        path = Path(directory) / str(info.get("student", "_")) / str(info.get("assignment", "_"))
        path.mkdir(parents=True, exist_ok=True)
        (path / f"{info.get('notebook', 'notebook')}.json").write_text(json.dumps(report, indent=1, sort_keys=True))


def _copy_assignment_files(src: Path, dest: Path) -> None:
    """The instructor's files of the assignment (not notebooks, not links) into the sandbox's working folder.

    Files a student handed in next to the notebook are *not* copied: a ``torch.py`` or ``course_utils/`` there
    would shadow the real ones for the tests.
    """
    if not src.is_dir():
        return
    for path in sorted(src.rglob("*")):
        rel = path.relative_to(src)
        if path.is_symlink() or not path.is_file() or path.suffix == ".ipynb" or ".ipynb_checkpoints" in rel.parts:
            continue
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)


class _Run:
    """One execution of one notebook: the cell loop with timeouts, probes and kernel-death handling."""

    def __init__(self, owner: SandboxedExecute, nb: NotebookNode, mode: str, scratch: Path, nonce: str) -> None:
        self.owner, self.nb, self.mode, self.scratch = owner, nb, mode, scratch
        self.zeroed: dict[int, str] = {}      # cell index -> why its test result cannot be trusted
        self.not_run: dict[int, str] = {}     # cell index -> why it never ran
        self.problems: list[str] = []         # review-level findings of the run
        self.client_truncated = False
        self.kernel_log = ""
        self.started = False
        self.probe_seconds = 0.0
        limits = _sandbox.Limits(memory_mb=owner.memory_mb)
        self.km = km = SandboxKernelManager(transport="ipc", connection_file=str(scratch / "kernel.json"),
                                            sandbox_argv=_sandbox.kernel_argv(mode, scratch, scratch / "work",
                                                                              limits))
        self.client = _Client(nb, km=km, timeout=owner.timeout, startup_timeout=owner.startup_timeout,
                              allow_errors=True, interrupt_on_timeout=False, raise_on_iopub_timeout=False,
                              iopub_timeout=5, record_timing=False, shutdown_kernel="immediate",
                              skip_cells_with_tag=f"never-skip-{nonce}", max_output_bytes=owner.max_output_bytes,
                              on_cell_executed=_record_silent_error,
                              resources={"metadata": {"path": str(scratch / "work")}})
        trusted = [str(p) for p in _sandbox.readonly_binds()]
        self.probe_expr = probe.probe_expression(trusted)
        self.full_probe_expr = probe.probe_expression(trusted, full=True)
        self.log_path = scratch.parent / f"{scratch.name}.log"

    async def execute(self) -> None:
        client, deadline = self.client, time.monotonic() + self.owner.notebook_timeout
        env = _sandbox.kernel_env(self.scratch, {"NBGRADER_EXECUTION": "autograde"})
        with open(self.log_path, "wb") as log:
            try:
                async with client.async_setup_kernel(cwd=str(self.scratch / "work"), env=env, stdout=log,
                                                     stderr=log, cleanup_kc=True):
                    await self._cells(deadline)
            except Exception as err:
                if self.started:
                    raise
                tail = self.log_path.read_bytes()[-600:].decode("utf-8", "replace").strip().replace("\n", " / ")
                raise KernelStartError(f"the kernel did not start in sandbox mode {self.mode!r} ({err}); "
                                   f"kernel log: {tail}") from err
            finally:
                self.client_truncated = bool(client.truncated)
                await self._kill(self.km)  # whatever happened, no kernel outlives its notebook
        tail = self.log_path.read_bytes()[-4000:].decode("utf-8", "replace") if self.log_path.exists() else ""
        self.log_path.unlink(missing_ok=True)
        telling = [line.strip() for line in tail.splitlines() if _TELLING.search(line)]
        if telling:
            self.kernel_log = " / ".join(telling[-3:])[:300]

    async def _cells(self, deadline: float) -> None:
        client = self.client
        self.started = True
        baseline = await self._probe(full=True)
        if baseline is None:
            self.problems.append("the kernel's hooks could not be inspected at start-up")
            baseline = []
        dead: str | None = None
        student_code_ran = False  # until then, a timeout is the machine's fault, not the submission's
        for index, cell in enumerate(self.nb.cells):
            if cell.cell_type != "code" or not cell.source.strip():
                continue
            is_test = integrity.is_test_cell(cell)
            if dead is None and time.monotonic() > deadline:
                dead = f"the notebook ran past its {self.owner.notebook_timeout} s budget"
                self.problems.append(dead)
                await self._kill()
            if dead is not None:
                if is_test:
                    self.not_run[index] = dead
                continue
            if is_test:
                hooks = await self._probe()
                if hooks is None:
                    self.zeroed[index] = "the kernel's hooks could not be inspected before this test"
                else:
                    new = [h for h in hooks if h not in baseline]
                    if new:
                        self.zeroed[index] = "untrusted code was hooked into the kernel: " + "; ".join(new[:5])
                if not await self._alive():
                    dead = "the kernel died"
                    self.not_run[index] = dead
                    continue
            student_code_ran = student_code_ran or not cell.metadata.get("nbgrader", {}).get("locked", False)
            try:
                await client.async_execute_cell(cell, index, store_history=True)
            except CellTimeoutError:
                if not student_code_ran:
                    raise GraderTooSlowError(
                        f"the instructor's cell {_label(cell, index)} ran past the {self.owner.timeout} s timeout "
                        "before any of the student's code had run: this machine is too slow or too busy; grade "
                        "again with a longer --timeout") from None
                cell.outputs.append(_error("TimeoutError", f"the cell ran longer than {self.owner.timeout} s "
                                           "and was interrupted by the grader"))
                self.problems.append(f"cell {_label(cell, index)} timed out after {self.owner.timeout} s")
                if not await self._recover():
                    dead = f"the kernel ignored the interrupt after cell {_label(cell, index)} timed out"
                    self.problems.append(dead + " and was killed")
            except DeadKernelError:
                dead = f"the kernel died during cell {_label(cell, index)}"
                cell.outputs.append(_error("DeadKernelError", dead))
                self.problems.append(dead)
            except Exception as err:  # noqa: BLE001 - anything else nbclient raises: record it, stop this run
                dead = f"the grader lost the kernel during cell {_label(cell, index)}: {type(err).__name__}: {err}"
                cell.outputs.append(_error(type(err).__name__, dead))
                self.problems.append(dead)
                await self._kill()
            if dead is not None and is_test and index not in self.not_run:
                self.zeroed.setdefault(index, dead)
        if dead is None:
            final = await self._probe(full=True)
            new = [h for h in (final or []) if h not in baseline]
            if final is None or new:
                self.problems.append("untrusted code was hooked into the kernel by the end: "
                                     + ("; ".join(new[:5]) if new else "the probe did not answer"))

    async def _request(self, expressions: dict[str, str], timeout: float) -> dict | None:
        """Run an empty silent request with ``expressions``; the reply content, or None without one in time."""
        kc = self.client.kc
        if kc is None:
            return None
        msg_id = kc.execute("", silent=True, store_history=False, user_expressions=expressions)
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            try:
                reply = await ensure_async(kc.shell_channel.get_msg(timeout=remaining))
            except Empty:
                return None
            if reply.get("parent_header", {}).get("msg_id") == msg_id:
                return reply.get("content", {})

    async def _probe(self, full: bool = False) -> list[str] | None:
        """The untrusted hooks the kernel reports, or None when the probe failed or did not answer."""
        started = time.perf_counter()
        content = await self._request({"probe": self.full_probe_expr if full else self.probe_expr}, timeout=30)
        self.probe_seconds += time.perf_counter() - started
        result = (content or {}).get("user_expressions", {}).get("probe", {})
        if result.get("status") != "ok":
            return None
        try:
            payload = json.loads(ast.literal_eval(result["data"]["text/plain"]))
        except (KeyError, ValueError, SyntaxError, TypeError):
            return None
        return [str(h) for h in payload] if isinstance(payload, list) else None

    async def _alive(self) -> bool:
        km = self.client.km
        return km is not None and bool(await ensure_async(km.is_alive()))

    async def _recover(self) -> bool:
        """Interrupt the kernel; True when it answers within the grace period, else it is killed."""
        km = self.client.km
        if km is None or not await self._alive():
            return False
        try:
            await ensure_async(km.interrupt_kernel())
        except Exception:  # noqa: BLE001 - an interrupt that cannot be sent: kill instead
            pass
        if await self._request({}, timeout=self.owner.interrupt_grace) is not None:
            return True
        await self._kill()
        return False

    async def _kill(self, km: AsyncKernelManager | None = None) -> None:
        km = km or self.client.km
        if km is not None and km.has_kernel:
            try:
                await ensure_async(km.shutdown_kernel(now=True))
            except Exception:  # noqa: BLE001 - already gone
                pass


def _record_silent_error(cell: NotebookNode, execute_reply: dict, **_: Any) -> None:
    """An error reply without an error output (traceback display switched off) still counts as an error."""
    content = execute_reply.get("content", {})
    if content.get("status") == "error" and not any(o.get("output_type") == "error" for o in cell.outputs):
        cell.outputs.append(_error(content.get("ename", "Error"), content.get("evalue", "")
                                   or "an error was raised while error display was switched off"))


def _error(ename: str, evalue: str) -> NotebookNode:
    return NotebookNode(output_type="error", ename=ename, evalue=evalue, traceback=[f"{ename}: {evalue}"])


def _label(cell: NotebookNode, index: int) -> str:
    grade_id = cell.metadata.get("nbgrader", {}).get("grade_id")
    return f"{grade_id!r}" if grade_id else f"{index + 1} (a code cell)"
