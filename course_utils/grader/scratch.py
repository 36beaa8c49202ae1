"""A kernel's scratch folder on the host, and the little of it that the student's code may touch.

One folder per kernel, ``/tmp/cgk-XXXX`` or, in a local worker, ``/tmp/cgk-PID-N-XXXX`` with its coordinator's pid
and pool number (:func:`set_owner`; a short path: Unix socket names are limited to 107 bytes). When its workers
have exited, the coordinator removes what a worker that died left of its pool's folders (:func:`sweep`)::

    runtime/        the connection file and the kernel's ipc sockets: the only host folder the kernel may write,
                    and only while it starts (sealed after the start in the ``bwrap`` mode, watched in every mode)
    inbox/work/     the assignment's data files, written by the trusted worker (also after a warm kernel started)
    inbox/home/     a warm matplotlib font list, so that no kernel rebuilds it (seconds)
    work/ home/     the kernel's working folder and HOME in the modes that do not isolate (``setpriv``, ``none``).
                    In the bwrap modes the sandbox mounts one size-limited tmpfs over the whole folder instead
                    (``Limits.work_mb``): its own ``work`` and ``home`` live in memory and vanish with it, and only
                    ``runtime`` (read-write) and ``inbox`` (read-only) are bound from the host.
    ../cgk-XXXX.log the kernel's stdout and stderr (at most the largest-file limit; watched)

Before any of the student's code runs, trusted code in the kernel copies ``inbox/home`` into its HOME and
``inbox/work`` into its working folder (:func:`receive_code`). :class:`Watch` is the cheap check (one listing
of ``runtime``, one ``stat`` of the log) that the kernel's poll runs a few times a second; :func:`remove` deletes
whatever a kernel left behind (deep chains, read-only folders, many files) and never raises.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
from pathlib import Path

RUNTIME_ENTRY_BYTES = 1024 * 1024      # the connection file is < 1 kB; sockets are 0 bytes
LOG_BYTES = 32 * 1024 * 1024           # a kernel's own log is a few kB (ipykernel captures the cells' fds)
FULL_MARGIN = 1024 * 1024              # a tmpfs with less free space than this is full
WALK_EVERY = 0.25                      # seconds between two walks of a host working folder (at least)
_OWNER = ""                            # see set_owner


def set_owner(tag: str) -> None:
    """Name this process's scratch folders ``cgk-TAG-XXXX`` (a local worker: ``PID-N``, its coordinator's pid and
    pool number), so that a leftover can be traced to its grading run and swept (:func:`sweep`)."""
    global _OWNER
    _OWNER = _tag(tag)


def _tag(tag: str) -> str:
    return "".join(c for c in str(tag) if c.isalnum() or c == "-").strip("-")[:24]


def _base() -> str:
    return "/tmp" if os.path.isdir("/tmp") and os.access("/tmp", os.W_OK) else tempfile.gettempdir()


def prepare(prefix: str = "cgk-") -> Path:
    """A fresh scratch folder for one kernel (see the module docstring for its layout)."""
    root = Path(tempfile.mkdtemp(prefix=f"{prefix}{_OWNER}-" if _OWNER else prefix, dir=_base()))
    root.chmod(0o755)
    for sub in ("work", "home", "runtime", "inbox/work", "inbox/home/.config/matplotlib"):
        (root / sub).mkdir(mode=0o755, parents=True, exist_ok=True)
    for sub in ("inbox", "inbox/work", "inbox/home", "inbox/home/.config", "inbox/home/.config/matplotlib"):
        (root / sub).chmod(0o755)
    _seed_matplotlib_cache(root / "inbox/home/.config/matplotlib")
    return root


def post(root: Path, files: dict[str, bytes]) -> None:
    """The assignment's data files into the kernel's inbox (readable by the sandbox's uid)."""
    write_files(root / "inbox" / "work", files, readable=True)


def receive_code(root: Path, what: str) -> str | None:
    """The code the kernel runs (before any student code) to copy ``inbox/<what>`` into its own ``<what>`` folder
    (``work`` or ``home``); None when there is nothing to copy."""
    inbox = root / "inbox" / what
    if not any(inbox.iterdir()):
        return None
    return (f"import shutil as _s; _s.copytree({str(inbox)!r}, {str(root / what)!r}, dirs_exist_ok=True); "
            "del _s")


def write_files(folder: Path, files: dict[str, bytes], readable: bool = False) -> None:
    """Data files into ``folder`` (paths that would leave it are skipped); ``readable``: for every uid."""
    root = folder.resolve()
    for rel, data in files.items():
        target = (folder / rel).resolve()
        if root in target.parents:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
            if readable:
                target.chmod(0o644)
                for parent in target.parents:
                    if parent == root:
                        break
                    parent.chmod(0o755)


def seal(runtime: Path) -> None:
    """Take the runtime folder back from the kernel once its sockets are bound (root only): it can no longer
    create anything there, nor grow its connection file. The grader, as root, still reaches the sockets."""
    for path in (runtime, *(p for p in runtime.iterdir() if p.is_file() and not p.is_symlink())):
        os.chown(path, 0, 0, follow_symlinks=False)
    runtime.chmod(0o755)


class Watch:
    """The kernel's use of the host's disk, checked by the kernel's poll a few times a second (:meth:`check`).

    * what it may leave in ``runtime`` after its start: the entries it had then, none a folder or a big file;
    * its log: below :data:`LOG_BYTES`;
    * ``host_work`` (the modes that do not isolate, where ``work`` and ``home`` are host folders): their total
      below ``disk_mb`` (a walk of both, at most every :data:`WALK_EVERY` seconds and never more than a tenth
      of the time);
    * otherwise (bwrap) ``work`` and ``home`` share one tmpfs of ``disk_mb``: :meth:`tmpfs_full` says when it is
      full (the writes that did not fit failed in the kernel; the host's disk was never at risk).
    """

    def __init__(self, root: Path, log: Path, disk_mb: int, host_work: bool) -> None:
        self.root, self.runtime, self.log = Path(root), Path(root) / "runtime", Path(log)
        self.disk_mb, self.host_work = disk_mb, host_work
        self.expected = frozenset(os.listdir(self.runtime))
        self._next_walk = 0.0

    def check(self) -> str | None:
        """What the kernel wrote on the host's disk that it may not (its kernel must be stopped), or None."""
        try:
            with os.scandir(self.runtime) as entries:
                for entry in entries:
                    if entry.name not in self.expected:
                        return f"wrote {entry.name[:60]!r} into the kernel's runtime folder on the grader's disk"
                    if entry.is_dir(follow_symlinks=False) or (entry.is_file(follow_symlinks=False) and
                                                               entry.stat(follow_symlinks=False).st_size
                                                               > RUNTIME_ENTRY_BYTES):
                        return f"replaced {entry.name!r} in the kernel's runtime folder on the grader's disk"
            if self.log.exists() and self.log.stat().st_size > LOG_BYTES:
                return f"wrote more than {LOG_BYTES // 2**20} MB to the kernel's log on the grader's disk"
        except OSError:
            return None
        if self.host_work and self.disk_mb and time.monotonic() >= self._next_walk:
            began = time.monotonic()
            used = disk_usage([self.root / "work", self.root / "home"], stop_at=self.disk_mb * 2**20)
            self._next_walk = time.monotonic() + max(WALK_EVERY, 10 * (time.monotonic() - began))
            if used > self.disk_mb * 2**20:
                return (f"wrote more than the {self.disk_mb} MB disk limit of its working folder and HOME on the "
                        "grader's disk")
        return None

    def tmpfs_full(self, pid: int | None) -> str | None:
        """bwrap modes: whether the tmpfs of ``work`` and ``home`` is full, as the sandbox's process ``pid`` sees
        it (``/proc/PID/root``: the tmpfs exists only in the sandbox's mount namespace). None when it is not, or
        when there is no such process."""
        if self.host_work or not self.disk_mb or pid is None:
            return None
        try:
            fs = os.statvfs(f"/proc/{pid}/root{self.root}")
        except OSError:
            return None
        size, free = fs.f_blocks * fs.f_frsize, fs.f_bavail * fs.f_frsize
        if size > (self.disk_mb + 1) * 2**20 or size == 0:
            return None           # not our tmpfs (the kernel is gone, or a pid was reused)
        if free < FULL_MARGIN:
            return (f"filled the {self.disk_mb} MB disk limit of its working folder and HOME (its writes past it "
                    "failed)")
        return None


def disk_usage(folders: list[Path], stop_at: int = 0) -> int:
    """Bytes of disk the files below ``folders`` take (``st_blocks``: a sparse file costs what it holds), walked
    without recursion and without following links; stops counting past ``stop_at`` (0: never)."""
    total, stack = 0, [str(f) for f in folders]
    while stack and not (stop_at and total > stop_at):
        try:
            with os.scandir(stack.pop()) as entries:
                for entry in entries:
                    try:
                        st = entry.stat(follow_symlinks=False)
                    except OSError:
                        continue
                    total += st.st_blocks * 512
                    if entry.is_dir(follow_symlinks=False):
                        stack.append(entry.path)
        except OSError:
            continue
    return total


def remove(path: Path) -> str | None:
    """Delete ``path`` whatever a kernel left in it (a 3,000-deep chain, read-only folders, many files).

    Never raises: None when it is gone, else what is left, in words. The walk (:func:`_remove_tree`) is
    iterative and relative to open folders, so neither depth nor path length stops it; a folder the kernel
    made read-only (or unreadable) is given back to its owner first. Links are removed, never followed."""
    path = Path(path)
    try:
        if not os.path.lexists(path):
            return None
        if path.is_symlink() or not path.is_dir():
            path.unlink()
        else:
            _remove_tree(str(path))
    except Exception as err:  # noqa: BLE001 - whatever happened, the caller carries on with a note
        left = os.path.lexists(path)
        return f"the grader could not remove {path}{' completely' if left else ''}: {type(err).__name__}: " \
               f"{str(err)[:200]}"
    return None


def sweep(owner: str) -> list[str]:
    """Remove every scratch folder and log named after ``owner`` (see :func:`set_owner`): what the kernels of a
    worker that died left behind. Call it only once no process of that owner runs. Returns notes of what could
    not be removed (never raises)."""
    tag = _tag(owner)
    if not tag:
        raise ValueError(f"sweep needs the owner tag its workers were given (like '1234-1'), got {owner!r}")
    leftovers = sorted(Path(_base()).glob(f"cgk-{tag}-*"))
    return [note for note in (remove(path) for path in leftovers) if note]


_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)


def _open_dir(name: str, dir_fd: int | None) -> int:
    try:
        return os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
    except PermissionError:          # a folder the kernel made unreadable: give it back, then open it
        os.chmod(name, 0o700, dir_fd=dir_fd)
        return os.open(name, _DIR_FLAGS, dir_fd=dir_fd)


def _remove_tree(top: str) -> None:
    """Remove the folder ``top`` and everything below it, depth first, holding at most two folders open."""
    fd, names = _open_dir(top, None), []            # names: the way down from ``top``
    try:
        while True:
            with contextlib.suppress(OSError):
                os.chmod(fd, 0o700)                  # a read-only folder: its entries could not be removed
            child = None
            with os.scandir(fd) as entries:
                for entry in entries:
                    if entry.is_dir(follow_symlinks=False):
                        child = entry.name
                        break
                    os.unlink(entry.name, dir_fd=fd)
            if child is not None:                    # down into it
                below = _open_dir(child, fd)
                os.close(fd)
                fd = below
                names.append(child)
                continue
            if not names:                            # ``top`` is empty
                break
            above = os.open("..", _DIR_FLAGS, dir_fd=fd)    # the kernel is gone: nothing moves under us
            os.close(fd)
            fd = above
            os.rmdir(names.pop(), dir_fd=fd)
    finally:
        os.close(fd)
    os.rmdir(top)


def log_tail(log: Path, limit: int) -> str:
    """The end of a kernel's log, on one line ("" when there is none)."""
    try:
        return log.read_bytes()[-limit:].decode("utf-8", "replace").strip().replace("\n", " / ")
    except OSError:
        return ""


def log_note(log: Path) -> str | None:
    """A note of the telling lines at the end of a kernel's log (errors, kills), if any."""
    telling = [line.strip() for line in log_tail(log, 4000).split(" / ") if any(
        w in line for w in ("Error", "Traceback", "Killed", "denied", "failed"))]
    return "kernel log: " + " / ".join(telling[-3:])[:300] if telling else None


def _seed_matplotlib_cache(dest: Path) -> None:
    """Copy the grader's matplotlib font list, so each kernel does not rebuild it (seconds)."""
    try:
        import matplotlib  # noqa: PLC0415 - optional and slow-ish

        src = Path(matplotlib.get_cachedir())
    except Exception:  # noqa: BLE001 - no matplotlib, or no cache dir: the kernel builds its own
        return
    for font_list in src.glob("fontlist-*.json"):
        shutil.copy2(font_list, dest / font_list.name)
        (dest / font_list.name).chmod(0o644)
