"""A kernel's scratch folder on the host, and the little of it that the student's code may touch.

One folder per kernel, ``/tmp/cgk-XXXX`` (a short path: Unix socket names are limited to 107 bytes)::

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

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

RUNTIME_ENTRY_BYTES = 1024 * 1024      # the connection file is < 1 kB; sockets are 0 bytes
LOG_BYTES = 32 * 1024 * 1024           # a kernel's own log is a few kB (ipykernel captures the cells' fds)


def prepare(prefix: str = "cgk-") -> Path:
    """A fresh scratch folder for one kernel (see the module docstring for its layout)."""
    base = "/tmp" if os.path.isdir("/tmp") and os.access("/tmp", os.W_OK) else None
    root = Path(tempfile.mkdtemp(prefix=prefix, dir=base))
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
    """What the kernel may leave on the host after its start: the entries of ``runtime`` it had then (none of
    them a folder or a big file) and a log below :data:`LOG_BYTES`. :meth:`check` says what it did otherwise."""

    def __init__(self, runtime: Path, log: Path) -> None:
        self.runtime, self.log = runtime, log
        self.expected = frozenset(os.listdir(runtime))

    def check(self) -> str | None:
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
        return None


def remove(path: Path) -> str | None:
    """Delete ``path`` whatever a kernel left in it (a 3,000-deep chain, read-only folders, 200,000 files).

    Never raises: None when it is gone, else what is left. ``shutil.rmtree`` first (it recurses in Python and can
    fail with RecursionError), then ``chmod -R u+rwx`` and ``rm -rf``, which walk any depth without following
    links."""
    path = Path(path)
    if not os.path.lexists(path):
        return None
    if path.is_symlink() or not path.is_dir():
        try:
            path.unlink()
            return None
        except OSError as err:
            return f"the grader could not remove {path}: {type(err).__name__}"

    def _writable_parent(_func, failed, _exc):  # noqa: ANN001 - rmtree's onerror: a read-only folder in the way
        parent = os.path.dirname(failed)
        if os.path.isdir(parent) and not os.path.islink(parent):
            try:
                os.chmod(parent, 0o700)
                _func(failed)
            except OSError:
                pass

    try:
        shutil.rmtree(path, onerror=_writable_parent)
    except (OSError, RecursionError, ValueError):
        pass
    if not os.path.lexists(path):
        return None
    try:
        subprocess.run(["chmod", "-R", "u+rwx", "--", str(path)], capture_output=True, timeout=300)
        subprocess.run(["rm", "-rf", "--one-file-system", "--", str(path)], capture_output=True, timeout=600)
    except (OSError, subprocess.SubprocessError) as err:
        return f"the grader could not remove {path}: {type(err).__name__}: {str(err)[:200]}"
    return None if not os.path.lexists(path) else f"the grader could not remove {path} completely"


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
