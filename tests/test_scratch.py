"""A kernel's scratch folder (course_utils.grader.scratch), without a kernel: what the grader removes, watches and
copies. The end-to-end cases (a real sandboxed kernel filling its disk, a 3,000-deep chain) are in
tests/fixtures/grading/hostile.py, graded by test_grading.py."""

from __future__ import annotations

import os
import stat
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from course_utils.grader import judge, scratch
from course_utils.grader.integrity import Findings

DEPTH = 3000


def deep_chain(top: Path, depth: int = DEPTH, payload: bytes = b"x" * 1000) -> None:
    """``top/d/d/.../d/bottom.txt``, ``depth`` folders deep (past PATH_MAX: built relative to open folders), the
    bottom folder and ``top/d`` read-only, as the hostile ``deep_dirs`` case leaves it."""
    top.mkdir()
    fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for _ in range(depth):
            os.mkdir("d", dir_fd=fd)
            below = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = below
        out = os.open("bottom.txt", os.O_WRONLY | os.O_CREAT, 0o444, dir_fd=fd)
        os.write(out, payload)
        os.close(out)
        os.chmod(fd, 0o555)
    finally:
        os.close(fd)
    os.chmod(top / "d", 0o500)


def depth_of(top: Path) -> int:
    depth, fd = 0, os.open(top, os.O_RDONLY | os.O_DIRECTORY)
    try:
        while "d" in os.listdir(fd):
            below = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd, depth = below, depth + 1
    finally:
        os.close(fd)
    return depth


# ---------------------------------------------------------------------------------------------- remove

def test_remove_deletes_a_3000_deep_chain_with_read_only_folders(tmp_path: Path):
    top = tmp_path / "scratch"
    deep_chain(top)
    (top / "link").symlink_to(tmp_path / "outside")          # a link is removed, never followed
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "keep.txt").write_text("the grader's")
    assert depth_of(top) == DEPTH, "the fixture did not build the chain"

    assert scratch.remove(top) is None
    assert not os.path.lexists(top), f"{top} is still there"
    assert (tmp_path / "outside" / "keep.txt").read_text() == "the grader's", "remove followed a link"


def test_remove_of_a_file_a_link_or_nothing(tmp_path: Path):
    (tmp_path / "f").write_bytes(b"x")
    (tmp_path / "l").symlink_to(tmp_path / "f")
    assert scratch.remove(tmp_path / "l") is None and (tmp_path / "f").exists()
    assert scratch.remove(tmp_path / "f") is None and not (tmp_path / "f").exists()
    assert scratch.remove(tmp_path / "never-made") is None


def test_remove_never_raises_and_says_what_is_left(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    top = tmp_path / "scratch"
    deep_chain(top, depth=5)

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Operation not permitted")
    monkeypatch.setattr(scratch.os, "rmdir", refuse)
    note = scratch.remove(top)
    assert note is not None and str(top) in note and "PermissionError" in note and "completely" in note, note


# ---------------------------------------------------------------------------------------------- Watch

def _layout(root: Path) -> tuple[Path, Path]:
    for sub in ("runtime", "work", "home"):
        (root / sub).mkdir(parents=True)
    (root / "runtime" / "kernel.json").write_text("{}")
    (root / "runtime" / "kernel-1-shell").write_bytes(b"")
    log = root.parent / f"{root.name}.log"
    log.write_bytes(b"started\n")
    return root, log


def test_watch_flags_a_file_written_into_the_runtime_folder(tmp_path: Path):
    root, log = _layout(tmp_path / "k")
    watch = scratch.Watch(root, log, disk_mb=512, host_work=False)
    assert watch.check() is None, "the entries of the kernel's start are allowed"
    (root / "runtime" / "payload.bin").write_bytes(b"x")
    found = watch.check()
    assert found is not None and "payload.bin" in found and "runtime" in found, found


@pytest.mark.parametrize("change", ["grown", "folder"])
def test_watch_flags_a_replaced_runtime_entry(tmp_path: Path, change: str):
    root, log = _layout(tmp_path / "k")
    watch = scratch.Watch(root, log, disk_mb=512, host_work=False)
    if change == "grown":
        os.truncate(root / "runtime" / "kernel.json", scratch.RUNTIME_ENTRY_BYTES + 1)
    else:
        (root / "runtime" / "kernel-1-shell").unlink()
        (root / "runtime" / "kernel-1-shell").mkdir()
    found = watch.check()
    assert found is not None and ("kernel.json" in found or "kernel-1-shell" in found), found


def test_watch_flags_an_oversized_log(tmp_path: Path):
    root, log = _layout(tmp_path / "k")
    watch = scratch.Watch(root, log, disk_mb=512, host_work=False)
    os.truncate(log, scratch.LOG_BYTES)
    assert watch.check() is None, "a log of exactly the limit is allowed"
    os.truncate(log, scratch.LOG_BYTES + 1)
    found = watch.check()
    assert found is not None and "log" in found and f"{scratch.LOG_BYTES // 2**20} MB" in found, found


def test_watch_counts_the_host_working_folder_and_home_in_the_modes_that_do_not_isolate(tmp_path: Path):
    root, log = _layout(tmp_path / "k")
    watch = scratch.Watch(root, log, disk_mb=1, host_work=True)
    (root / "work" / "sparse.bin").touch()
    os.truncate(root / "work" / "sparse.bin", 2**30)       # 1 GB long, no block written: costs no disk
    assert watch.check() is None
    (root / "home" / "a.bin").write_bytes(os.urandom(600 * 1024))
    (root / "work" / "b.bin").write_bytes(os.urandom(600 * 1024))
    watch._next_walk = 0.0                                  # the walk is rate-limited; this test does not wait
    found = watch.check()
    assert found is not None and "1 MB disk limit" in found, found
    isolated = scratch.Watch(root, log, disk_mb=1, host_work=False)
    assert isolated.check() is None, "in the bwrap modes the host folders are not the kernel's (its tmpfs is)"


def test_tmpfs_full_is_none_for_a_folder_that_is_not_the_sandboxes_tmpfs(tmp_path: Path):
    root, log = _layout(tmp_path / "k")
    watch = scratch.Watch(root, log, disk_mb=1, host_work=False)
    assert watch.tmpfs_full(os.getpid()) is None, "the host's disk is larger than 1 MB: not the kernel's tmpfs"
    assert watch.tmpfs_full(None) is None


# ---------------------------------------------------------------------------------------------- inbox

def test_post_and_receive_code_copy_the_data_files_into_the_working_folder(tmp_path: Path):
    root = scratch.prepare(prefix="cgk-test-")
    try:
        assert scratch.receive_code(root, "work") is None, "an empty inbox needs no copy"
        scratch.post(root, {"data/words.txt": b"alpha\nbeta\n", "top.bin": b"\x00\x01", "../escape.txt": b"no"})
        assert not (root / "inbox" / "escape.txt").exists() and not (root / "escape.txt").exists()
        posted = root / "inbox" / "work" / "data" / "words.txt"
        assert stat.S_IMODE(posted.stat().st_mode) == 0o644 and stat.S_IMODE(posted.parent.stat().st_mode) == 0o755
        code = scratch.receive_code(root, "work")
        assert code is not None
        exec(compile(code, "<receive>", "exec"), {})          # what the kernel runs before any student code
        assert (root / "work" / "data" / "words.txt").read_bytes() == b"alpha\nbeta\n"
        assert (root / "work" / "top.bin").read_bytes() == b"\x00\x01"
    finally:
        assert scratch.remove(root) is None
    assert not root.exists()


# ---------------------------------------------------------------------------------------------- the judge

class _FailingSession:
    def cleanup(self) -> None:
        raise OSError(16, "Device or resource busy")


class _Interpreter:
    closed = False

    def close(self) -> None:
        self.closed = True


def test_the_judges_cleanup_runs_every_step_and_only_notes_a_failure(tmp_path: Path):
    run = object.__new__(judge._Run)                       # only what cleanup touches
    run.judge_pool, run.session, run.judge = ThreadPoolExecutor(max_workers=1), _FailingSession(), _Interpreter()
    run.findings = Findings()
    run.judge_dir = tmp_path / "judge"
    deep_chain(run.judge_dir, depth=50)
    run.cleanup()
    assert not run.judge_dir.exists(), "a failed step skipped the removal of the judge's folder"
    assert run.judge.closed, "a failed step skipped closing the judge"
    assert run.findings.review == [], "a cleanup failure is no reason to flag a submission"
    assert any("cleanup failed" in n and "OSError" in n for n in run.findings.notes), run.findings.notes


def test_sweep_removes_only_its_owners_folders():
    mine, other = scratch.prepare(prefix="cgk-sweeptest-a-"), scratch.prepare(prefix="cgk-sweeptest-ab-")
    try:
        (mine.parent / f"{mine.name}.log").write_text("log")
        assert scratch.sweep("sweeptest-a") == []
        assert not mine.exists() and not (mine.parent / f"{mine.name}.log").exists()
        assert other.exists(), "sweep removed the folder of another owner whose tag merely starts the same way"
    finally:
        scratch.remove(other)
    with pytest.raises(ValueError, match="got ''"):
        scratch.sweep("")
