"""Grading speed: the cold-import floor, and ``course autograde`` throughput on local workers and on Dask.

Timings on a shared machine vary from day to day, so the targets are ratios measured in one run:

* the **floor** is what every graded notebook pays before any test runs: a fresh Python importing torch and
  transformers and loading a bundled model (median of three);
* **seconds per notebook** is the wall-clock time of a whole ``course autograde`` run (coordinator, sandboxes,
  judges) divided by the notebooks it graded, and its **ratio to the floor**;
* **gradings per core-hour** is notebooks per hour per worker (a worker uses about one core);
* the **scaling efficiency** from 1 to 2 workers is the 2-worker throughput over twice the 1-worker throughput,
  on a real local Dask cluster (scheduler and workers on 127.0.0.1).

The workload is the solutions of every assignment handed in by ``students`` students (each notebook must score full
marks, or the run is reported as failed).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator

ROOT = Path(__file__).resolve().parents[1]
FLOOR_CODE = ("import torch, transformers\nfrom course_utils.models import load_model\n"
              "load_model('tiny-base')\n")


def floor(repeats: int = 3) -> dict:
    """The cold-import floor, in seconds (median of ``repeats`` fresh interpreters)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        proc = subprocess.run([sys.executable, "-c", FLOOR_CODE], cwd=ROOT, capture_output=True, text=True,
                              env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=300)
        if proc.returncode != 0:
            return {"status": "failed", "reason": proc.stderr.strip()[-300:]}
        times.append(time.perf_counter() - start)
    return {"status": "ok", "seconds": round(statistics.median(times), 2), "runs": [round(t, 2) for t in times]}


def solutions_as_submissions(folder: Path, notebooks: list[Path], students: int) -> int:
    """``folder/<student>/<assignment>/`` holding the filled-in solutions; returns the number of notebooks."""
    import nbformat

    from course_utils.grader import workspace

    with tempfile.TemporaryDirectory(prefix="bench-release-") as tmp:
        names = [nb.parent.name for nb in notebooks]
        workspace.release(ROOT, names, Path(tmp))
        count = 0
        for nb in notebooks:
            release = nbformat.read(Path(tmp) / nb.parent.name / nb.name, as_version=4)
            solved = workspace.fill_in_solutions(release, nbformat.read(nb, as_version=4))
            for i in range(students):
                dest = folder / f"student{i + 1:02d}" / nb.parent.name
                dest.mkdir(parents=True, exist_ok=True)
                nbformat.write(solved, dest / nb.name)
                count += 1
    return count


@contextlib.contextmanager
def local_dask(workers: int) -> Iterator[str]:
    """A Dask scheduler and ``workers`` single-threaded workers on 127.0.0.1, stopped afterwards."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    address = f"tcp://127.0.0.1:{port}"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    procs = [subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1",
                               "--port", str(port), "--no-dashboard", "--no-show"], env=env,
                              start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    try:
        from distributed import Client

        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.2)
        for i in range(workers):
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "distributed.cli.dask_worker", address, "--name", f"bench{i + 1}",
                 "--nthreads", "1", "--no-nanny", "--no-dashboard", "--memory-limit", "0"], env=env,
                start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        with Client(address, timeout=30) as client:
            client.wait_for_workers(workers, timeout=120)
            client.run(_warm_worker)        # a long-running cluster's workers are warm: do not time the warm-up
        yield address
    finally:
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)


def _warm_worker() -> bool:
    from course_utils.grader import cluster, judge

    judge.warm_up()
    cluster._WARM = True  # noqa: SLF001 - the worker's own flag: warm-up done
    return True


def autograde_run(submissions: Path, *, jobs: int = 1, scheduler: str | None = None,
                  timeout: float = 3600) -> dict:
    """One ``course autograde`` run on a fresh workspace: wall seconds, and the records' statuses and scores."""
    from course_utils.grader import autograde, workspace

    course = Path(sys.executable).parent / "course"
    with tempfile.TemporaryDirectory(prefix="bench-ws-") as tmp:
        cmd = [str(course if course.exists() else "course"), "--root", str(ROOT), "--workspace",
               str(Path(tmp) / "ws"), "autograde", str(submissions)]
        cmd += ["--scheduler", scheduler] if scheduler else ["--jobs", str(jobs)]
        start = time.perf_counter()
        proc = subprocess.run(cmd, cwd=tmp, capture_output=True, text=True, timeout=timeout,
                              env={**os.environ, "HF_HUB_OFFLINE": "1"})
        seconds = time.perf_counter() - start
        records = autograde.load_records(workspace.Workspace.at(ROOT, Path(tmp) / "ws"))
    not_full = sorted(f"{r.student}/{r.assignment} {r.score}/{r.max_score} {r.status}" for r in records
                      if r.status != "graded" or r.score != r.max_score)
    return {"seconds": round(seconds, 1), "notebooks": len(records), "not_full_marks": not_full,
            "workers": sorted({r.worker for r in records if r.worker}), "exit": proc.returncode,
            "tail": (proc.stdout + proc.stderr).strip()[-300:]}


def throughput(notebooks: list[Path], students: int = 2, dask: bool = True) -> dict:
    """The floor, then autograde runs with 1 and 2 local workers and (``dask``) 1 and 2 Dask workers."""
    result: dict = {"floor": floor(), "students": students, "runs": {}}
    floor_s = result["floor"].get("seconds")
    with tempfile.TemporaryDirectory(prefix="bench-subs-") as tmp:
        subs = Path(tmp) / "submissions"
        result["notebooks"] = solutions_as_submissions(subs, notebooks, students)
        plans = [("local", 1), ("local", 2)] + ([("dask", 1), ("dask", 2)] if dask and _has_dask() else [])
        for kind, workers in plans:
            if kind == "local":
                run = autograde_run(subs, jobs=workers)
            else:
                with local_dask(workers) as address:
                    run = autograde_run(subs, scheduler=address)
            n = max(result["notebooks"], 1)     # every notebook handed in, graded or not
            run["per_notebook_s"] = round(run["seconds"] / n, 2)
            run["gradings_per_core_hour"] = round(3600 * n / run["seconds"] / workers, 1)
            if floor_s:
                run["floor_ratio"] = round(run["per_notebook_s"] / floor_s, 2)
            result["runs"][f"{kind}-{workers}"] = run
    runs = result["runs"]
    if "dask-1" in runs and "dask-2" in runs:
        result["dask_scaling_efficiency"] = round(runs["dask-1"]["seconds"] / runs["dask-2"]["seconds"] / 2, 2)
    if "local-1" in runs and "local-2" in runs:
        result["local_scaling_efficiency"] = round(runs["local-1"]["seconds"] / runs["local-2"]["seconds"] / 2, 2)
    return result


def _has_dask() -> bool:
    import importlib.util

    return importlib.util.find_spec("distributed") is not None


def report(result: dict, target_ratio: float, mark) -> list[str]:  # noqa: ANN001 - mark(ok) -> " ✅"/" ❌"
    """Markdown lines for benchmarks/results.md and the README."""
    floor_s = (result.get("floor") or {}).get("seconds")
    if not floor_s:
        return [f"**Grading speed**: the floor could not be measured ({result.get('floor')})."]
    lines = [f"**Grading speed** ({result.get('notebooks')} notebooks: the solutions of every assignment handed in "
             f"by {result.get('students')} students; every run must give full marks). The floor, a fresh Python "
             f"importing torch and transformers and loading tiny-base, took **{floor_s:.1f} s** (median of 3, same "
             "run).", "",
             "| workers | wall | per notebook | ratio to the floor | gradings per core-hour | full marks |",
             "|---|---:|---:|---:|---:|---|"]
    for name, run in result.get("runs", {}).items():
        ratio = run.get("floor_ratio")
        ok = not run["not_full_marks"] and run["exit"] == 0
        lines.append(f"| {name.replace('-', ', ')} | {run['seconds']:.0f} s | {run['per_notebook_s']:.1f} s | "
                     f"{ratio:.2f}×{mark(ok and ratio is not None and ratio <= target_ratio)} | "
                     f"{run['gradings_per_core_hour']:.0f} | "
                     f"{'yes' if ok else 'NO: ' + '; '.join(run['not_full_marks'][:3]) + run['tail'][-100:]} |")
    lines += ["", f"Target: ≤ {target_ratio:g}× the floor per notebook. Scaling efficiency from 1 to 2 workers: "
              f"local {result.get('local_scaling_efficiency', '–')}, Dask {result.get('dask_scaling_efficiency', '–')}"
              " (1.0 = twice the throughput; this machine has 2 cores)."]
    return lines
