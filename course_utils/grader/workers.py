"""Where grading jobs run: warm local worker processes, behind a ``concurrent.futures`` interface.

A worker is a process that has imported torch, transformers and the grader once (:func:`judge.warm_up`) and then
judges one notebook after another (:func:`judge.grade`). The coordinator (:mod:`course_utils.grader.autograde`)
only submits jobs and collects results; it alone writes the gradebook.

:class:`LocalWorkers` keeps ``n`` such processes. A worker that dies in the middle of a job (killed, out of
memory, a crash in a library) breaks its pool, and every job of the pool fails with it, the innocent ones too. So:

* a job that had not started yet is simply submitted again;
* a job that was running when the pool broke is a *suspect*: it is tried again **alone**, in a one-process
  quarantine pool, so that a submission that kills its worker only ever breaks itself;
* a suspect that breaks the quarantine pool too is the cause: it is tried ``retries`` more times, after which its
  result says ``error`` with the reason.

A worker's memory is capped (``memory_mb``, the address space of the worker process): an allocation past it
(a judge computing on a student's absurd value) raises ``MemoryError`` in that one test instead of waking the
kernel's OOM killer. The sandboxed kernel sets its own limit. The Dask cluster executor
(:mod:`course_utils.grader.cluster`) offers the same interface.
"""

from __future__ import annotations

import itertools
import multiprocessing
import os
import shutil
import tempfile
import threading
import uuid
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Callable

from course_utils.grader import jobs, scratch

_POOLS = itertools.count(1)  # numbers the LocalWorkers of this process: their scratch folders' owner tags
MAX_WAITS = 20            # pool breaks a job may wait through before it starts (workers that cannot start)
DEFAULT_MEMORY_MB = 6144   # a warm worker grading the largest notebook peaks at about 1.9 GB of address space


WORKER_BYTES = int(3.5 * 2**30)  # a worker (judge, ~1.9 GB at most) and its sandboxed kernel (~1.5 GB), side by side


def auto_jobs(cores: int | None = None, available_bytes: int | None = None) -> tuple[int, str]:
    """How many local workers ``--jobs auto`` starts: one per usable core, as many as the available memory holds
    (:data:`WORKER_BYTES` each), at least one; and the reason, for the log."""
    if cores is None:
        try:
            cores = len(os.sched_getaffinity(0))
        except (AttributeError, OSError):
            cores = os.cpu_count() or 1
    if available_bytes is None:
        available_bytes = _available_memory()
    by_memory = available_bytes // WORKER_BYTES if available_bytes else cores
    jobs = max(1, min(cores, by_memory))
    memory = f"{available_bytes / 2**30:.0f} GB available" if available_bytes else "memory unknown"
    return jobs, f"--jobs auto: {cores} usable core{'s' if cores != 1 else ''}, {memory}"


def _available_memory() -> int:
    """MemAvailable from /proc/meminfo (Linux), else 0 (unknown)."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def start_worker(memory_mb: int, warm: bool = True, owner: str = "", spare: jobs.Settings | None = None) -> None:
    """A worker's initializer: cap its address space (soft limit: the sandbox launcher sets the kernel's own),
    name its kernels' scratch folders after ``owner`` (the coordinator's pid and pool: ``/tmp/cgk-PID-N-*``), then
    import what grading needs (``warm``) and start a spare kernel for ``spare`` settings (its first notebook then
    finds one ready). A worker that exits removes its spare kernel's folder
    (``judge._WarmKernels``); the coordinator sweeps what a worker that died left (:meth:`LocalWorkers.shutdown`)."""
    if owner:
        scratch.set_owner(owner)
    if memory_mb:
        import resource  # noqa: PLC0415 - POSIX only

        _, hard = resource.getrlimit(resource.RLIMIT_AS)
        limit = memory_mb * 2**20
        if hard == resource.RLIM_INFINITY or hard > limit:
            resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    if warm:
        from course_utils.grader import judge  # noqa: PLC0415 - torch and the judge: in the worker only

        judge.warm_up(spare)


def _started() -> bool:
    """A no-op task: submitted once, it makes the pool start its processes (and their warm-up) now."""
    return True


def grade(job: jobs.Job) -> jobs.Result:
    """The default task of a worker: :func:`course_utils.grader.judge.grade` (imported here, in the worker, so
    that the coordinator never imports torch)."""
    from course_utils.grader import judge  # noqa: PLC0415

    return judge.grade(job)


def run_marked(grade: Callable[[jobs.Job], jobs.Result], job: jobs.Job, marker: str) -> jobs.Result:
    """Run ``grade(job)`` in a worker, leaving ``marker`` on disk while it runs (the coordinator reads it when
    the pool breaks: was this job running, or still waiting?)."""
    path = Path(marker)
    path.touch()
    try:
        return grade(job)
    finally:
        path.unlink(missing_ok=True)


class LocalWorkers:
    """``n`` warm worker processes on this machine (see the module docstring)."""

    def __init__(self, n: int = 1, retries: int = 2, tasks_per_worker: int = 50,
                 memory_mb: int = DEFAULT_MEMORY_MB,
                 grade: Callable[[jobs.Job], jobs.Result] = grade, warm: bool = True,
                 spare: jobs.Settings | None = None) -> None:
        if n < 1:
            raise ValueError(f"--jobs must be at least 1, got {n}")
        self.n, self.retries, self.tasks_per_worker = n, retries, tasks_per_worker
        self.memory_mb, self.grade, self.warm, self.spare = memory_mb, grade, warm, spare
        self.lock = threading.Lock()
        self.markers = Path(tempfile.mkdtemp(prefix="course-workers-"))
        self.owner = f"{os.getpid()}-{next(_POOLS)}"      # names its kernels' scratch folders: cgk-PID-N-*
        self.notes: list[str] = []                         # what shutdown could not remove
        self.pool = self._new_pool(n)
        self.quarantine: ProcessPoolExecutor | None = None
        self.description = f"{n} local worker process{'es' if n > 1 else ''}"

    def _new_pool(self, n: int) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(max_workers=n, mp_context=multiprocessing.get_context("spawn"),
                                   initializer=start_worker,
                                   initargs=(self.memory_mb, self.warm, self.owner, self.spare if self.warm else None),
                                   max_tasks_per_child=self.tasks_per_worker)

    def start(self) -> None:
        """Start the worker processes now (they warm up while the coordinator prepares the first submissions),
        instead of at the first job."""
        with self.lock:
            self.pool.submit(_started)

    def submit(self, job: jobs.Job) -> "Future[jobs.Result]":
        outer: Future[jobs.Result] = Future()
        self._attempt(job, outer, failures=0, alone=False, waits=0)
        return outer

    def _pool(self, alone: bool) -> ProcessPoolExecutor:
        with self.lock:
            if not alone:
                return self.pool
            if self.quarantine is None:
                self.quarantine = self._new_pool(1)
            return self.quarantine

    def _attempt(self, job: jobs.Job, outer: "Future[jobs.Result]", failures: int, alone: bool,
                 waits: int) -> None:
        marker = str(self.markers / uuid.uuid4().hex)
        pool = self._pool(alone)
        try:
            inner = pool.submit(run_marked, self.grade, job, marker)
        except (BrokenProcessPool, RuntimeError):
            self._rebuild(pool)
            pool = self._pool(alone)
            inner = pool.submit(run_marked, self.grade, job, marker)
        inner.add_done_callback(self._on_done(job, outer, failures, alone, waits, pool, marker))

    def _on_done(self, job: jobs.Job, outer: "Future[jobs.Result]", failures: int, alone: bool, waits: int,
                 pool: ProcessPoolExecutor, marker: str) -> Callable[[Future], None]:
        def done(inner: Future) -> None:
            if outer.cancelled():
                return
            error = inner.exception()
            if error is None:
                outer.set_result(inner.result())
                return
            if not isinstance(error, BrokenProcessPool):
                outer.set_result(self._error(job, f"the worker failed: {type(error).__name__}: {error}"))
                return
            self._rebuild(pool)
            was_running = Path(marker).exists()
            Path(marker).unlink(missing_ok=True)
            if not was_running and waits >= MAX_WAITS:
                outer.set_result(self._error(job, f"the worker pool broke {waits + 1} times before this submission "
                                                  f"could start (do the workers start at all?): {error}"))
                return
            if not was_running:                 # it never ran: it cannot have broken anything
                again = (failures, alone, waits + 1)
            elif not alone:                     # a suspect: try it alone, where only it can break its worker
                again = (failures, True, waits)
            elif failures < self.retries:       # it broke its worker alone: the cause; a few more tries
                again = (failures + 1, True, waits)
            else:
                outer.set_result(self._error(job, f"the worker failed {failures + 1} time(s) while grading this "
                                                  f"submission alone: {type(error).__name__}: {error}"))
                return
            threading.Thread(target=self._attempt, args=(job, outer, *again), daemon=True).start()
        return done

    @staticmethod
    def _error(job: jobs.Job, reason: str) -> jobs.Result:
        return jobs.Result(job.student, job.assignment, job.notebook, status="error", error=reason)

    def _rebuild(self, broken: ProcessPoolExecutor) -> None:
        with self.lock:
            if self.pool is broken:
                self.pool = self._new_pool(self.n)
            elif self.quarantine is broken:
                self.quarantine = self._new_pool(1)
        broken.shutdown(wait=False, cancel_futures=False)

    def shutdown(self, cancel: bool = False) -> None:
        """Stop the workers (``cancel``: kill them, dropping the jobs not done), then remove the markers and every
        scratch folder a worker left (one that died: its kernels died with it, their folders did not)."""
        with self.lock:
            pools = [p for p in (self.pool, self.quarantine) if p is not None]
        for pool in pools:
            processes = list((getattr(pool, "_processes", None) or {}).values())
            if cancel:
                for process in processes:
                    process.kill()
            pool.shutdown(wait=not cancel, cancel_futures=cancel)
            for process in processes:
                process.join(timeout=30)
        shutil.rmtree(self.markers, ignore_errors=True)
        self.notes += scratch.sweep(self.owner)
