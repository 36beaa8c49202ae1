"""Class-scale grading: a real Dask scheduler and two workers on 127.0.0.1, started and stopped by these tests,
against the fixture course of test_grading.py.

Serial and distributed runs give the same scores and flags; both workers are used and the grades say which graded
what; a worker killed in the middle of a run loses no submission; a worker with another grader version refuses;
Ctrl-C leaves the gradebook consistent and the next run resumes. The Slurm job script is checked as text.
"""

from __future__ import annotations

import csv
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import nbformat
import pytest

from course_utils import cli
from course_utils.grader import autograde, version
from course_utils.grader import workspace as grading

FIXTURES = Path(__file__).parent / "fixtures" / "grading"
ASSIGNMENT = "01_fixture"
TIMEOUT = "15"
CASES = ["solution", "blank", "partial", "always_equal", "duplicate_answer", "display_hook_credit"]
COLUMNS = ("score", "max_score", "status", "flagged", "flag_reasons")

_spec = importlib.util.spec_from_file_location("grading_hostile", FIXTURES / "hostile.py")
hostile = importlib.util.module_from_spec(_spec)
sys.modules.setdefault("grading_hostile", hostile)
_spec.loader.exec_module(hostile)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Cluster:
    """``dask scheduler`` and ``dask worker`` processes on loopback, each in its own process group."""

    def __init__(self, workers: tuple[str, ...] = ("w1", "w2")) -> None:
        self.port = _free_port()
        self.address = f"tcp://127.0.0.1:{self.port}"
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES": "2"}
        self.procs: dict[str, subprocess.Popen] = {}
        self.procs["scheduler"] = subprocess.Popen(
            [sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1", "--port",
             str(self.port), "--no-dashboard", "--no-show"], env=env, start_new_session=True,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self._wait_port()
        for name in workers:
            self.procs[name] = subprocess.Popen(
                [sys.executable, "-m", "distributed.cli.dask_worker", self.address, "--name", name, "--nthreads",
                 "1", "--nworkers", "1", "--no-nanny", "--no-dashboard", "--memory-limit", "0"],
                env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self._wait_workers(len(workers))

    def _wait_port(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.2)
        raise RuntimeError("the Dask scheduler did not start")

    def _wait_workers(self, n: int, timeout: float = 120) -> None:
        from distributed import Client

        with Client(self.address, timeout=30) as client:
            client.wait_for_workers(n, timeout=timeout)

    def kill(self, name: str) -> None:
        os.killpg(self.procs[name].pid, signal.SIGKILL)

    def stop(self) -> None:
        for proc in self.procs.values():
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait(timeout=30)


@pytest.fixture(scope="module")
def course(tmp_path_factory) -> Path:
    pytest.importorskip("distributed", reason="the 'cluster' extra is not installed (pip install -e '.[cluster]')")
    root = tmp_path_factory.mktemp("course")
    shutil.copytree(FIXTURES / "course", root, dirs_exist_ok=True)
    assert cli.main(["--root", str(root), "release"]) == 0
    return root


@pytest.fixture(scope="module")
def submissions(course: Path, tmp_path_factory) -> Path:
    release = nbformat.read(course / "notebooks" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb", as_version=4)
    source = nbformat.read(course / "solutions" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb", as_version=4)
    solved = grading.fill_in_solutions(release, source)
    staging, subs = tmp_path_factory.mktemp("all"), tmp_path_factory.mktemp("subs")
    hostile.build(release, solved, staging, gradebook=staging / "gradebook.db",
                  solutions=course / "solutions" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb")
    for student in CASES:
        shutil.copytree(staging / student, subs / student)
    return subs


@pytest.fixture(scope="module")
def cluster():
    pytest.importorskip("distributed")
    running = Cluster()
    yield running
    running.stop()


def _rows(path: Path) -> dict[str, dict]:
    with open(path) as fh:
        return {row["student_id"]: row for row in csv.DictReader(fh)}


def _grade(course: Path, subs: Path, ws: Path, *extra: str) -> dict[str, dict]:
    base = ["--root", str(course), "--workspace", str(ws)]
    cli.main(base + ["autograde", str(subs), "--timeout", TIMEOUT, *extra])
    assert cli.main(base + ["grades"]) == 0
    return _rows(ws / "grades.csv")


@pytest.mark.slow
def test_serial_and_distributed_runs_give_the_same_grades(course, submissions, cluster, tmp_path):
    serial = _grade(course, submissions, tmp_path / "serial")
    distributed = _grade(course, submissions, tmp_path / "dask", "--scheduler", cluster.address)
    assert set(serial) == set(distributed) == set(CASES)
    differ = {s: ({k: serial[s][k] for k in COLUMNS}, {k: distributed[s][k] for k in COLUMNS})
              for s in CASES if any(serial[s][k] != distributed[s][k] for k in COLUMNS)}
    assert not differ, differ
    assert {row["worker"] for row in distributed.values()} == {"w1", "w2"}, "both workers graded"
    assert all(float(serial[s]["score"]) == hostile.CASES[s].score for s in CASES)


@pytest.mark.slow
def test_a_worker_with_another_version_refuses_and_the_row_says_why(course, submissions, cluster, tmp_path,
                                                                      monkeypatch):
    from course_utils.grader.cluster import DaskWorkers

    monkeypatch.setattr(version, "grader_version", lambda: "0" * 64)      # the coordinator's side only
    workers = DaskWorkers(cluster.address)
    try:
        records = autograde.autograde(grading.Workspace.at(course, tmp_path / "ws"), submissions,
                                      only_students=["solution"], workers=workers, log=lambda *_: None)
    finally:
        workers.shutdown()
    [record] = records
    assert record.status == "error" and record.score == 0
    assert any("version" in r and "000000000000" in r for r in record.review), record.review


@pytest.mark.slow
def test_a_worker_killed_mid_run_loses_no_submission(course, submissions, tmp_path):
    own = Cluster(("k1", "k2"))
    try:
        ws = tmp_path / "ws"
        timer = threading.Timer(6.0, own.kill, args=("k1",))     # k1 is in the middle of its first notebook
        timer.start()
        rows = _grade(course, submissions, ws, "--scheduler", own.address)
        timer.cancel()
    finally:
        own.stop()
    assert set(rows) == set(CASES), "every submission has its row"
    wrong = {s: (r["status"], r["score"]) for s, r in rows.items()
             if r["status"] != "graded" or float(r["score"]) != hostile.CASES[s].score}
    assert not wrong, f"rescheduled tasks must be graded normally: {wrong}"
    assert {r["worker"] for r in rows.values()} <= {"k1", "k2"} and "k2" in {r["worker"] for r in rows.values()}


@pytest.mark.slow
def test_ctrl_c_leaves_the_gradebook_consistent_and_the_next_run_resumes(course, submissions, tmp_path):
    ws = tmp_path / "ws"
    cmd = [sys.executable, "-m", "course_utils.cli", "--root", str(course), "--workspace", str(ws), "autograde",
           str(submissions), "--timeout", TIMEOUT]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "HF_HUB_OFFLINE": "1"})
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and len(list((ws / "records").glob("*/*.json"))) < 2:
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, out
    finished = {p.parent.name for p in (ws / "records").glob("*/*.json")}
    assert 2 <= len(finished) < len(CASES), out
    # consistent: every saved record is in the gradebook with the same score
    assert cli.main(["--root", str(course), "--workspace", str(ws), "grades"]) == 0
    rows = _rows(ws / "grades.csv")
    assert set(rows) == finished and all(float(rows[s]["score"]) == hostile.CASES[s].score for s in finished)
    # the next run grades only the rest
    lines: list[str] = []
    records = autograde.autograde(grading.Workspace.at(course, ws), submissions,
                                  overrides=grading.settings_config(timeout=int(TIMEOUT)), log=lines.append)
    status = {r.student: r.status for r in records}
    assert {s for s, st in status.items() if st == "unchanged"} == finished, lines
    assert all(status[s] == "graded" for s in CASES if s not in finished)


def test_the_slurm_job_script_starts_single_threaded_workers_that_join_the_scheduler():
    pytest.importorskip("dask_jobqueue", reason="the 'cluster' extra is not installed")
    from course_utils.grader.cluster import slurm_job_script

    script = slurm_job_script(workers_per_job=3, memory="12GB", walltime="01:30:00", queue="short",
                              account="cs101", scheduler_address="tcp://10.0.0.5:8786")
    lines = script.splitlines()
    assert lines[0].startswith("#!")
    for directive in ("#SBATCH -J course-grading", "#SBATCH -p short", "#SBATCH -A cs101",
                      "#SBATCH --cpus-per-task=3", "#SBATCH --mem=12G", "#SBATCH -t 01:30:00"):
        assert directive in lines, f"{directive!r} missing from:\n{script}"
    [worker] = [line for line in lines if "dask_worker" in line]
    assert "tcp://10.0.0.5:8786" in worker and "--nthreads 1" in worker and "--nworkers 3" in worker
    assert "course-$SLURM_JOB_ID" in worker, "each job's workers need names of their own"
    assert "HF_HUB_OFFLINE=1" in script and "bwrap" in script
    assert cli.main(["slurm-script", "--queue", "short"]) == 0
