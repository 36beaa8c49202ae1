"""The one notebook runner: run a notebook in a fresh kernel and report its checks, with one set of rules.

``course validate``, ``course progress``, the benchmark and the tests all run notebooks through
:func:`run_notebook`, so they agree on what ran and what passed:

* a **copy** of the notebook runs in a fresh ``python3`` kernel, in a temporary copy of its folder (its data files
  are found; nothing in the learner's folder is changed or created), offline (``HF_HUB_OFFLINE=1``);
* ``mode="grader"`` (the default) runs it **as the grader would**: ``NBGRADER_EXECUTION=autograde`` is set, so the
  notebooks take their autograding paths (smaller demos, no widgets); ``mode="learner"`` runs it as a learner
  does (the benchmark's top-to-bottom timing);
* a **check** is a test cell (:func:`course_utils.cells.is_test_cell`); it **passed** when it ran and has no error
  output (:func:`course_utils.cells.passed`); what failed says :func:`course_utils.cells.error_text`;
* an exercise still **unanswered** is a non-test cell that raised ``NotImplementedError``.
(Graded submissions are run differently, in the sandbox, and judged outside the kernel:
:mod:`course_utils.grader.judge`.)
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from course_utils import cells

MODES = ("grader", "learner")


@dataclass
class Check:
    grade_id: str
    points: float
    passed: bool
    message: str = ""


@dataclass
class Run:
    """What happened when a notebook ran."""

    path: Path | None
    nb: Any                                  # the executed copy
    seconds: float = 0.0
    problem: str = ""                        # why the run stopped early (timeout, dead kernel, ...), if it did
    checks: list[Check] = field(default_factory=list)
    unanswered: list[str] = field(default_factory=list)      # exercises still raising NotImplementedError
    other_errors: list[str] = field(default_factory=list)    # errors in cells that are not checks

    @property
    def passed(self) -> int:
        return sum(c.passed for c in self.checks)


def run_notebook(source: Path | str | Any, *, cwd: Path | str | None = None, mode: str = "grader",
                 timeout: int = 120, stop_on_error: bool = False, quiet: bool = True,
                 on_cell_start: Callable[..., Any] | None = None) -> Run:
    """Run a copy of ``source`` (a path, or a notebook already read) and collect its checks (see the module)."""
    import nbformat  # noqa: PLC0415 - slow imports, only when a notebook runs
    from nbclient import NotebookClient  # noqa: PLC0415
    from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError  # noqa: PLC0415

    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}: use one of {', '.join(MODES)}")
    path = Path(source).resolve() if isinstance(source, (str, Path)) else None
    nb = nbformat.read(path, as_version=4) if path is not None else nbformat.from_dict(source)
    run = Run(path, nb)
    started = time.perf_counter()
    with _environment(mode), _workdir(cwd, path) as workdir:
        client = NotebookClient(nb, timeout=timeout, kernel_name="python3", allow_errors=not stop_on_error,
                                record_timing=False, resources={"metadata": {"path": str(workdir)}},
                                on_cell_start=on_cell_start)
        try:
            if quiet:   # the kernel's own stderr (start-up warnings) would clutter a summary
                client.execute(stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            else:
                client.execute()
        except CellTimeoutError:
            run.problem = f"stopped: a cell ran longer than {timeout} s"
        except DeadKernelError:
            run.problem = "stopped: the kernel died"
        except CellExecutionError as err:
            text = cells.ANSI.sub("", str(err)).strip()
            run.problem = f"stopped at an error: {text.splitlines()[-1][:400] if text else type(err).__name__}"
        except Exception as err:  # noqa: BLE001 - a broken notebook is a result, never a crash of the caller
            run.problem = f"stopped: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
    run.seconds = time.perf_counter() - started
    _collect(run)
    return run


def _collect(run: Run) -> None:
    for number, cell in enumerate(run.nb.cells, start=1):
        if cell.get("cell_type") != "code":
            continue
        message = cells.error_text(cell)
        gid = cells.grade_id(cell)
        if cells.is_test_cell(cell):
            ran = cell.get("execution_count") is not None or bool(cell.get("outputs"))
            ok = ran and cells.passed(cell)
            run.checks.append(Check(gid or f"cell {number}", cells.points(cell), ok,
                                    message or ("" if ok else "did not run")))
        elif message.startswith("NotImplementedError"):
            run.unanswered.append(gid or f"cell {number}")
        elif message:
            run.other_errors.append(f"cell {number}{' ' + gid if gid else ''}: {message.splitlines()[0][:300]}")


@contextmanager
def _workdir(cwd: Path | str | None, path: Path | None, max_mb: float = 50.0) -> Iterator[Path]:
    """``cwd`` when given; else a temporary copy of the notebook's folder (files over ``max_mb`` left out)."""
    if cwd is not None:
        yield Path(cwd)
        return
    with tempfile.TemporaryDirectory(prefix="course-run-") as tmp:
        work = Path(tmp) / (path.parent.name if path is not None else "work")
        if path is not None:
            shutil.copytree(path.parent, work, symlinks=False, ignore=lambda folder, names: [
                n for n in names if n in (".ipynb_checkpoints", "__pycache__") or (
                    os.path.isfile(os.path.join(folder, n)) and os.path.getsize(os.path.join(folder, n))
                    > max_mb * 2 ** 20)])
        else:
            work.mkdir()
        yield work


@contextmanager
def _environment(mode: str) -> Iterator[None]:
    """The kernel inherits this process's environment: set the rules for the run, restore them after."""
    values = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
              "MPLBACKEND": "module://matplotlib_inline.backend_inline",
              "NBGRADER_EXECUTION": "autograde" if mode == "grader" else None}
    old = {k: os.environ.get(k) for k in values}
    for key, value in values.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    try:
        yield
    finally:
        for key, value in old.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
