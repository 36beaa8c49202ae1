"""The trusted interpreter: the instructor's cells and tests, run in the judge with the exercise names as proxies.

An :class:`Interpreter` holds one notebook's namespace in the grading worker. It runs the locked cells the tests
need (:meth:`Interpreter.run_locked`, output not kept) and each test cell (:meth:`Interpreter.run_test`), after
binding the test's exercise names to what the student's kernel holds at that moment (data, handles or stand-in
classes: :mod:`course_utils.grader.proxy`). A test passes when its code raises nothing; its verdict and its
outputs (what it printed, the check's message as an error) come back as nbgrader reads them.
"""

from __future__ import annotations

import builtins
import contextlib
import io
import linecache
import os
import time
import traceback
from pathlib import Path
from typing import Any, Callable

from course_utils.cells import error_output, stream_output
from course_utils.grader import plan as planning
from course_utils.grader import proxy
from course_utils.grader.jobs import Verdict

MAX_TEST_OUTPUT = 100_000        # characters of a test's printed evidence kept in the notebook


class JudgeShell:
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


class Interpreter:
    """One notebook's trusted namespace. ``transport`` sends one request to the kernel (see
    :class:`~course_utils.grader.proxy.Remote`); ``use_budget(what)`` starts the time allowance of what runs next;
    ``note(message)`` records a finding."""

    def __init__(self, plan: planning.Plan, transport: Callable[[dict, list], proxy.Reply],
                 use_budget: Callable[[str], None], note: Callable[[str], None], workdir: Path,
                 stderr_fails: bool = False) -> None:
        self.plan, self.use_budget, self.note, self.stderr_fails = plan, use_budget, note, stderr_fails
        self.remote = proxy.Remote(transport)
        shell = JudgeShell()
        self.namespace: dict[str, Any] = {"__name__": "__main__", "__builtins__": builtins,
                                          "get_ipython": lambda: shell}
        self.previous_dir = os.getcwd()
        os.chdir(workdir)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.chdir(self.previous_dir)
        with contextlib.suppress(Exception):
            import matplotlib.pyplot as plt  # noqa: PLC0415

            plt.close("all")
        self.namespace.clear()

    def _bind(self, names: list[str]) -> None:
        for name in names:
            try:
                self.namespace[name] = self.remote.resolve(name)
            except NameError:
                self.namespace.pop(name, None)

    def _exec(self, source: str, label: str) -> None:
        code = planning.python_source(source)
        filename = f"<{label}>"
        linecache.cache[filename] = (len(code), None, code.splitlines(True), filename)
        exec(compile(code, filename, "exec"), self.namespace)  # noqa: S102 - the instructor's own code

    def run_locked(self, position: int) -> None:
        """One of the instructor's locked cells, for the state the tests need (its output is not kept)."""
        label = self.plan.locked_id(position) or f"cell {position}"
        self.use_budget(f"locked cell {label!r} in the judge")
        sink = io.StringIO()
        try:
            with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
                self._bind(self.plan.cell_exercise_names.get(position, []))
                self._exec(self.plan.cells[position]["source"], label)
        except BaseException as err:  # noqa: BLE001 - a broken answer can make a demo fail; tests then fail
            if not isinstance(err, proxy.KernelGone):
                self.note(f"the judge's run of locked cell {label!r} raised {type(err).__name__}: {str(err)[:200]}")

    def run_test(self, test: planning.TestPlan) -> tuple[Verdict, list]:
        """Run one test cell; its verdict, and its outputs as nbgrader reads them."""
        started = time.perf_counter()
        self.use_budget(f"test {test.grade_id!r}")
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
            outputs.append(stream_output(text))
        if error is None and err_out.getvalue() and self.stderr_fails:
            verdict.passed = False
            verdict.reason = "the test wrote to stderr (stderr_fails_tests is set)"
            outputs.append(error_output("StderrOutput", verdict.reason))
        if error is not None:
            if isinstance(error, (proxy.KernelGone, TimeoutError)):
                verdict.reason = str(error)
            outputs.append(error_from(error, test.grade_id))
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


def error_from(error: BaseException, label: str) -> Any:
    """A failed test as an error output: the check's message, and the test's own traceback for the instructor
    (feedback shows only the last line; see :mod:`course_utils.grader.feedback`)."""
    ename = getattr(error, "remote_type", None) or type(error).__name__
    evalue = str(error)[:20_000]
    frames = [line for line in traceback.format_exception(type(error), error, error.__traceback__)
              if f"<{label}>" in line or not line.startswith("  File")][-12:]
    remote_tb = getattr(error, "remote_traceback", "")
    tb = [*frames[:-1], *(["The student's code raised:\n" + remote_tb] if remote_tb else []), f"{ename}: {evalue}"]
    return error_output(ename, evalue, tb)
