"""Where grading jobs run: warm local worker processes, behind a ``concurrent.futures`` interface.

A worker is a process that has imported torch, transformers and the grader once (:func:`judge.warm_up`) and then
judges one notebook after another (:func:`judge.grade`). The coordinator (:mod:`course_utils.grader.autograde`)
only submits jobs and collects results; it alone writes the gradebook.

:class:`LocalWorkers` keeps ``n`` such processes. A worker that dies in the middle of a job (killed, out of
memory, a crash in a library) breaks nothing else: the pool is rebuilt and the job is tried again, up to
``retries`` times, after which its result says ``error`` with the reason. The Dask cluster executor
(:mod:`course_utils.grader.cluster`) offers the same interface.
"""

from __future__ import annotations

import multiprocessing
import threading
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Callable

from course_utils.grader import judge


class LocalWorkers:
    """``n`` warm worker processes on this machine."""

    def __init__(self, n: int = 1, retries: int = 2, tasks_per_worker: int = 50) -> None:
        if n < 1:
            raise ValueError(f"--jobs must be at least 1, got {n}")
        self.n, self.retries, self.tasks_per_worker = n, retries, tasks_per_worker
        self.lock = threading.Lock()
        self.pool = self._new_pool()
        self.description = f"{n} local worker process{'es' if n > 1 else ''}"

    def _new_pool(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(max_workers=self.n, mp_context=multiprocessing.get_context("spawn"),
                                   initializer=judge.warm_up, max_tasks_per_child=self.tasks_per_worker)

    def submit(self, job: judge.Job) -> "Future[judge.Result]":
        outer: Future[judge.Result] = Future()
        self._attempt(job, outer, attempt=1)
        return outer

    def _attempt(self, job: judge.Job, outer: "Future[judge.Result]", attempt: int) -> None:
        with self.lock:
            pool = self.pool
        try:
            inner = pool.submit(judge.grade, job)
        except (BrokenProcessPool, RuntimeError):
            self._rebuild(pool)
            with self.lock:
                inner = self.pool.submit(judge.grade, job)
        inner.add_done_callback(self._on_done(job, outer, attempt, pool))

    def _on_done(self, job: judge.Job, outer: "Future[judge.Result]", attempt: int,
                 pool: ProcessPoolExecutor) -> Callable[[Future], None]:
        def done(inner: Future) -> None:
            if outer.cancelled():
                return
            error = inner.exception()
            if error is None:
                outer.set_result(inner.result())
                return
            if isinstance(error, BrokenProcessPool) and attempt <= self.retries:
                self._rebuild(pool)
                threading.Thread(target=self._attempt, args=(job, outer, attempt + 1), daemon=True).start()
                return
            outer.set_result(judge.Result(job.student, job.assignment, job.notebook, status="error",
                                          error=f"the worker failed {attempt} time(s): {type(error).__name__}: "
                                                f"{error}"))
        return done

    def _rebuild(self, broken: ProcessPoolExecutor) -> None:
        with self.lock:
            if self.pool is broken:
                self.pool = self._new_pool()
        broken.shutdown(wait=False, cancel_futures=False)

    def shutdown(self, cancel: bool = False) -> None:
        with self.lock:
            pool = self.pool
        if cancel:
            for process in list(getattr(pool, "_processes", {}).values()):
                process.kill()
        pool.shutdown(wait=not cancel, cancel_futures=cancel)
