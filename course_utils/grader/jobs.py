"""What the coordinator and a worker hand each other: a notebook to grade (:class:`Job`, with its
:class:`Settings`) and what came of it (:class:`Result`, one :class:`Verdict` per test).

Plain dataclasses that import nothing heavy: the coordinator (:mod:`course_utils.grader.autograde`) builds jobs
and reads results without importing torch or the judge; only a worker does (:mod:`course_utils.grader.judge`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from course_utils.grader import sandbox

_DEFAULT_MEMORY_MB = sandbox.Limits.memory_mb
_DEFAULT_DISK_MB = sandbox.Limits.work_mb


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
    disk_mb: int = _DEFAULT_DISK_MB  # the kernel's working folder and HOME together (a tmpfs, or watched)
    stderr_fails_tests: bool = False
    start_attempts: int = 3
    max_received_mb: int = 256       # bytes of answers the judge accepts from the kernel per cell or test
    run_all_cells: bool = False      # also run the demo cells no student code needs (for their outputs)


@dataclass
class Verdict:
    grade_id: str
    points: float
    passed: bool
    reason: str | None = None        # set when the grader, not a check, decided (not run, kernel died, ...)
    seconds: float = 0.0


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
