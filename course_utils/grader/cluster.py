"""Grading on a Dask cluster: the same jobs as the local workers, on ``dask worker`` processes anywhere.

``course autograde DIR --scheduler tcp://HOST:PORT`` hands every notebook to an existing Dask distributed cluster
through :class:`DaskWorkers`, a ``concurrent.futures`` executor like :class:`~course_utils.grader.workers.
LocalWorkers`; the coordinator code path is the same (:mod:`course_utils.grader.autograde`).

* A task is one notebook of one (student, assignment). The job carries the submission, the instructor's source
  cells and the assignment's data files as bytes: the workers need no shared file system, and never see the
  gradebook.
* A worker runs one task at a time (:func:`grade_on_worker` holds a lock; start workers with ``--nthreads 1``),
  in its own sandbox, and returns the verdicts, flags, the executed notebook and its log.
* A worker whose course or grader version differs from the coordinator's refuses the task
  (:func:`course_utils.grader.version.grader_version`); the submission's row says why.
* A worker killed in the middle of a task: the scheduler gives the task to another worker; after the scheduler's
  ``allowed-failures`` it gives up and the row says ``error`` with the reason.

Workers need the course installed (``pip install 'llm-foundations[cluster]'``, the same version as the
coordinator) and, for isolation, bubblewrap. :func:`slurm_job_script` and the README show how to start them on
Slurm (dask-jobqueue) and Kubernetes.
"""

from __future__ import annotations

import threading
from typing import Any

from course_utils.grader import jobs

_LOCK = threading.Lock()
_WARM = False


def grade_on_worker(job: jobs.Job) -> jobs.Result:
    """The task a Dask worker runs: one notebook, judged in this process (one at a time)."""
    global _WARM  # noqa: PLW0603 - once per worker process
    from course_utils.grader import judge  # noqa: PLC0415 - torch and the judge: on the worker only

    with _LOCK:
        if not _WARM:
            judge.warm_up()
            _WARM = True
        result = judge.grade(job)
    try:
        from distributed import get_worker  # noqa: PLC0415

        worker = get_worker()
        result.worker = str(worker.name if worker.name not in (None, "") else worker.address)
    except (ImportError, ValueError):
        pass
    return result


class DaskWorkers:
    """The workers of a running Dask cluster, as a ``concurrent.futures`` executor of grading jobs."""

    def __init__(self, address: str, *, retries: int = 1, timeout: float = 30) -> None:
        try:
            from distributed import Client  # noqa: PLC0415
        except ImportError as err:
            raise RuntimeError("grading on a Dask cluster needs the 'cluster' extra: "
                               "pip install -e '.[cluster]'") from err
        try:
            self.client = Client(address, timeout=timeout)
        except OSError as err:
            raise RuntimeError(f"no Dask scheduler answers at {address!r} ({err}); start one with "
                               "`dask scheduler` and its workers with `dask worker ADDRESS --nthreads 1`") from err
        self.executor = self.client.get_executor(pure=False, retries=retries)
        workers = self.client.scheduler_info().get("workers", {})
        self.description = f"the Dask cluster at {address} ({len(workers)} worker{'s' if len(workers) != 1 else ''})"

    def submit(self, job: jobs.Job) -> Any:
        return self.executor.submit(grade_on_worker, job)

    def shutdown(self, cancel: bool = False) -> None:
        try:
            self.executor.shutdown(wait=not cancel)
        finally:
            self.client.close()


def slurm_job_script(*, workers_per_job: int = 2, memory: str = "8GB", walltime: str = "02:00:00",
                     queue: str | None = None, account: str | None = None, python: str = "python",
                     scheduler_address: str | None = None) -> str:
    """The batch script that starts grading workers on Slurm (dask-jobqueue's ``SLURMCluster``).

    Each job starts ``workers_per_job`` worker processes of one thread each (one notebook at a time each), with
    ``memory`` for all of them. Pass ``scheduler_address`` to attach to a scheduler that is already running.
    """
    try:
        from dask_jobqueue import SLURMCluster  # noqa: PLC0415
    except ImportError as err:
        raise RuntimeError("Slurm job scripts need dask-jobqueue: pip install -e '.[cluster]'") from err
    kwargs: dict[str, Any] = dict(cores=workers_per_job, processes=workers_per_job, memory=memory,
                                  walltime=walltime, python=python, queue=queue, account=account,
                                  job_name="course-grading", scheduler_options={"dashboard_address": None},
                                  job_script_prologue=["export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false",
                                                       "command -v bwrap >/dev/null || echo 'warning: bubblewrap "
                                                       "is not installed: kernels will run less isolated' >&2"])
    cluster = SLURMCluster(**kwargs)
    try:
        script = cluster.job_script()
    finally:
        cluster.close()
    import re  # noqa: PLC0415

    script = script.replace("--name dummy-name", "--name course-$SLURM_JOB_ID")
    if scheduler_address:
        script = re.sub(r"tcp://[^\s]+", scheduler_address, script)
    return script
