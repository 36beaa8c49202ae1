"""The local worker pool: a submission that kills its worker breaks only itself; a worker's memory is capped.

The jobs here are judged by small stand-ins for :func:`course_utils.grader.judge.grade` (defined in this module,
so the spawned workers can import them): one kills its own worker process, as the kernel's OOM killer would.
"""

from __future__ import annotations

import glob
import os
import signal
import time

import pytest

from course_utils.grader import judge, scratch
from course_utils.grader.workers import LocalWorkers


def _job(student: str) -> judge.Job:
    return judge.Job(student, "a1", "a1.ipynb", {}, [], {}, judge.Settings())


def kill_own_worker(job: judge.Job) -> judge.Result:
    """Killers die with their worker, leaving their kernel's scratch folder behind; everyone else takes a moment
    (so that they share the pool with a killer) and removes its own."""
    folder = scratch.prepare()
    if job.student.startswith("killer"):
        time.sleep(0.3)
        os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(0.5)
    scratch.remove(folder)
    return judge.Result(job.student, job.assignment, job.notebook, worker=str(os.getpid()), notes=[folder.name])


def allocate_too_much(job: judge.Job) -> judge.Result:
    """What a judge computing on an absurd student value does: allocate 16 GB."""
    result = judge.Result(job.student, job.assignment, job.notebook, worker=str(os.getpid()))
    try:
        block = bytearray(16 * 2**30)
        result.notes.append(f"allocated {len(block)} bytes")
    except MemoryError:
        result.notes.append("MemoryError")
    return result


def test_a_submission_that_kills_its_worker_breaks_only_itself():
    workers = LocalWorkers(2, retries=1, grade=kill_own_worker, warm=False)
    try:
        students = ["alice", "killer", "bob", "carol", "dave", "erin"]
        futures = {s: workers.submit(_job(s)) for s in students}
        results = {s: f.result(timeout=300) for s, f in futures.items()}
    finally:
        workers.shutdown()
    assert {s: r.status for s, r in results.items()} == {**{s: "graded" for s in students}, "killer": "error"}
    assert "alone" in results["killer"].error and "2 time(s)" in results["killer"].error, results["killer"].error
    assert not workers.markers.exists(), "the pool's marker folder is removed at shutdown"
    assert all(r.notes[0].startswith(f"cgk-{workers.owner}-") for s, r in results.items() if s != "killer"), \
        "the workers name their kernels' scratch folders after the pool"
    left = glob.glob(f"{scratch._base()}/cgk-{workers.owner}-*")
    assert not left and workers.notes == [], f"the killer's scratch folders survived the shutdown: {left}"


def test_a_worker_cannot_allocate_past_its_memory_cap():
    workers = LocalWorkers(1, grade=allocate_too_much, memory_mb=2048, warm=False)
    try:
        result = workers.submit(_job("alice")).result(timeout=120)
    finally:
        workers.shutdown()
    assert (result.status, result.notes) == ("graded", ["MemoryError"])


def test_workers_must_be_at_least_one():
    with pytest.raises(ValueError, match="--jobs must be at least 1, got 0"):
        LocalWorkers(0)


def test_jobs_auto_is_one_per_core_as_far_as_memory_goes():
    from course_utils.grader.workers import WORKER_BYTES, auto_jobs

    assert auto_jobs(cores=8, available_bytes=64 * 2**30)[0] == 8          # cores decide
    assert auto_jobs(cores=8, available_bytes=3 * WORKER_BYTES + 1)[0] == 3  # memory decides
    assert auto_jobs(cores=4, available_bytes=WORKER_BYTES // 2)[0] == 1     # never fewer than one
    jobs, why = auto_jobs(cores=2, available_bytes=0)                       # memory unknown: cores
    assert jobs == 2 and "2 usable cores" in why and "memory unknown" in why

