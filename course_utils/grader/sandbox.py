"""Run a student's kernel where it cannot reach the gradebook, the solutions or other students' work.

The grader (nbclient, outside) talks to the kernel (inside) over ZMQ on Unix sockets in a scratch folder that both
sides see, so the kernel needs no network at all. Modes, strongest first (``detect_mode("auto")`` picks the first
that works on this machine):

``bwrap``
    bubblewrap, started as root: new mount, PID, network, IPC and UTS namespaces. The sandbox's file system is
    built from an allow-list: ``/usr`` and ``/etc`` (read-only, Jupyter's and IPython's configuration folders
    hidden behind empty read-only ones), the Python installation, the virtual environment and the
    ``course_utils`` package (read-only), a private ``/tmp`` and ``/var/tmp``, and the kernel's scratch folder
    (:mod:`course_utils.grader.scratch`) as one size-limited tmpfs holding its working folder and HOME, into which
    only the runtime folder (connection file, sockets) is bound read-write from the host and the inbox (the
    assignment's data files) read-only. The course root, the gradebook, ``solutions/``, other submissions and home
    folders simply do not exist in there; nothing the kernel writes, but its few sockets, lands on the host's disk.
    The kernel then drops to a fresh unused uid/gid (one per kernel, >= 200000) with no capabilities and
    ``no_new_privs``.
``bwrap-userns``
    the same file-system view for a grader that is not root (unprivileged user namespaces): the kernel appears as
    uid 65534 but is the grader's own user outside.
``setpriv``
    no bubblewrap, grader is root: the kernel runs as a fresh unused uid in a private scratch folder, same limits.
    It cannot write the grader's files nor read private ones, but it can read world-readable files (``solutions/``
    usually is) and it has the network.
``none``
    no isolation at all (the kernel runs as the grader in a scratch folder). Grades say so.

Limits in every mode: address space, largest file, number of processes, CPU seconds; no core dumps. In the bwrap
modes also the total the kernel can write (``Limits.work_mb`` for its working folder and HOME together,
``Limits.tmp_mb`` for each of ``/tmp`` and ``/var/tmp``); the modes that do not isolate keep the host folder.
:func:`processes` lists a sandbox's processes (for CPU-time accounting and to end strays between cells).
"""

from __future__ import annotations

import functools
import os
import secrets
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from course_utils.grader import scratch

MODES = ("bwrap", "bwrap-userns", "setpriv", "none")
ISOLATING_MODES = ("bwrap", "bwrap-userns")
NOBODY = 65534                       # the uid seen inside a user namespace (bwrap-userns)
FIRST_UID, UID_RANGE = 200_000, 100_000  # root modes: a random uid in [200000, 300000) per kernel
_LAUNCHER = Path(__file__).with_name("sandbox_launch.py")
_SYSTEM_DIRS = ("bin", "sbin", "lib", "lib32", "lib64", "libx32")
# configuration the kernel has no business reading, below /, /usr, /usr/local and the Python prefixes
CONFIG_DIRS = ("etc/jupyter", "etc/ipython", "etc/jupyterhub", "etc/nbgrader")


@dataclass(frozen=True)
class Limits:
    """Resource limits of one sandboxed kernel (0 means no limit)."""

    memory_mb: int = 8192   # address space; torch alone maps ~1.3 GB of it
    file_mb: int = 256      # largest file the kernel may write
    nproc: int = 64         # processes of the sandbox uid
    cpu_s: int = 1800       # CPU seconds of the kernel process
    tmp_mb: int = 512       # size of the private /tmp and of /var/tmp (bwrap modes)
    work_mb: int = 512      # the working folder and HOME together: one tmpfs (bwrap modes)

    def launcher_args(self) -> list[str]:
        return [f"--memory-mb={self.memory_mb}", f"--file-mb={self.file_mb}", f"--nproc={self.nproc}",
                f"--cpu-s={self.cpu_s}"]


def course_package_dir() -> Path:
    """The folder of the installed ``course_utils`` package (notebooks import it and load its assets)."""
    return Path(__file__).resolve().parents[1]


def readonly_binds() -> list[Path]:
    """Host folders the kernel needs read-only: the Python installation, the virtual environment, course_utils.

    Only these (plus system folders) are visible in the bwrap modes; nested entries are dropped.
    """
    candidates = {Path(sys.base_prefix).resolve(), Path(sys.prefix).resolve(), Path(sys.exec_prefix).resolve(),
                  Path(sys.executable).resolve().parent, course_package_dir()}
    system = [Path("/usr"), Path("/etc")]
    kept: list[Path] = []
    for path in sorted(candidates, key=lambda p: len(p.parts)):
        if not path.exists() or any(path == s or s in path.parents for s in system + kept):
            continue
        kept.append(path)
    return kept


def _ancestor_dirs(paths: list[Path]) -> list[Path]:
    """Parents that bwrap would otherwise create with mode 0700 (unreadable for the sandbox uid)."""
    out: list[Path] = []
    for path in paths:
        for parent in reversed(path.parents):
            if parent != Path("/") and parent not in out and not any(parent == p for p in paths):
                out.append(parent)
    return out


def hidden_config() -> list[Path]:
    """Jupyter's and IPython's configuration folders that the sandbox would show (a deployment's
    ``/etc/jupyter/nbgrader_config.py`` may hold the gradebook's database URL with its password): each is covered
    by an empty read-only folder. Only existing ones, below a folder the sandbox binds."""
    visible = [Path("/usr"), Path("/etc"), *readonly_binds()]
    prefixes = {Path("/"), Path("/usr"), Path("/usr/local"), Path(sys.prefix), Path(sys.base_prefix),
                Path(sys.exec_prefix)}
    found: list[Path] = []
    for prefix in sorted(prefixes):
        for name in CONFIG_DIRS:
            path = (prefix / name).resolve()
            if path.exists() and path not in found and any(path == v or v in path.parents for v in visible):
                found.append(path)
    return found


def bwrap_prefix(root: Path, *, userns: bool, limits: Limits) -> list[str]:
    """The ``bwrap ...`` arguments that build the sandbox for the scratch folder ``root`` (the command to run
    follows them). See :mod:`course_utils.grader.scratch` for what lies where."""
    bwrap = shutil.which("bwrap") or "bwrap"
    argv = [bwrap, "--die-with-parent", "--new-session", "--unshare-pid", "--unshare-net", "--unshare-ipc",
            "--unshare-uts", "--unshare-cgroup-try", "--hostname", "grader"]
    if userns:
        argv += ["--unshare-user", "--uid", str(NOBODY), "--gid", str(NOBODY)]
    argv += ["--ro-bind", "/usr", "/usr", "--ro-bind", "/etc", "/etc"]
    for name in _SYSTEM_DIRS:
        host = Path("/") / name
        if host.is_symlink():
            argv += ["--symlink", os.readlink(host), str(host)]
        elif host.is_dir():
            argv += ["--ro-bind", str(host), str(host)]
    argv += ["--ro-bind-try", "/sys", "/sys", "--proc", "/proc", "--dev", "/dev"]
    tmp_size = _size(limits.tmp_mb)
    argv += ["--perms", "1777", *tmp_size, "--tmpfs", "/tmp", "--perms", "1777", *tmp_size, "--tmpfs", "/var/tmp"]
    binds = readonly_binds()
    for parent in _ancestor_dirs(binds + [root]):
        if parent not in (Path("/tmp"), Path("/var"), Path("/var/tmp")):
            argv += ["--perms", "0755", "--dir", str(parent)]
    for path in binds:
        argv += ["--ro-bind", str(path), str(path)]
    for path in hidden_config():
        if path.is_dir():
            argv += ["--perms", "0555", "--size", "4096", "--tmpfs", str(path), "--remount-ro", str(path)]
        else:
            argv += ["--ro-bind", "/dev/null", str(path)]
    argv += ["--perms", "0755", *_size(limits.work_mb), "--tmpfs", str(root),
             "--perms", "0755", "--dir", str(root / "work"), "--perms", "0755", "--dir", str(root / "home"),
             "--bind", str(root / "runtime"), str(root / "runtime"),
             "--ro-bind", str(root / "inbox"), str(root / "inbox"), "--chdir", str(root / "work")]
    return argv


def _size(mb: int) -> list[str]:
    return ["--size", str(mb * 1024 * 1024)] if mb else []


def kernel_argv(mode: str, runtime: Path, workdir: Path, limits: Limits = Limits(),
                python: str | None = None, uid: int | None = None) -> list[str]:
    """The full command that starts an ipykernel in ``mode``; ``{connection_file}`` is filled by jupyter_client.

    ``runtime`` is the folder of the connection file and sockets, in the scratch folder ``runtime.parent``
    (:mod:`course_utils.grader.scratch`); ``workdir`` the working folder there. ``uid`` is the unused uid the
    kernel drops to in the root modes (default: a fresh one).
    """
    if mode not in MODES:
        raise ValueError(f"unknown sandbox mode {mode!r}; use one of {', '.join(MODES)} or 'auto'")
    root = Path(runtime).parent
    python = python or sys.executable
    kernel = [python, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    uid = uid if uid is not None else sandbox_uid()
    # what the kernel's uid is given before it drops to it: in bwrap its tmpfs folders and the runtime folder
    owned = [root / "work", root / "home", root / "runtime"] if mode == "bwrap" else [root]
    drop = ["--uid", str(uid), "--gid", str(uid)] if mode in ("bwrap", "setpriv") else []
    drop += [arg for path in owned for arg in ("--own", str(path))] if drop else []
    launch = [python, "-I", str(_LAUNCHER), *drop, *limits.launcher_args(), "--", *kernel]
    if mode in ISOLATING_MODES:
        return bwrap_prefix(root, userns=mode == "bwrap-userns", limits=limits) + launch
    return launch


def sandbox_uid() -> int:
    """A fresh, unused uid for one kernel (root modes): sandboxes running side by side cannot signal each other
    and do not share a process limit. No account has it, so it owns nothing outside its scratch folder."""
    return FIRST_UID + secrets.randbelow(UID_RANGE)


def kernel_env(root: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    """A clean environment for the kernel in the scratch folder ``root``: nothing of the grader's leaks in
    (tokens, paths, HOME)."""
    home = root / "home"
    env = {
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), "/usr/local/bin", "/usr/bin", "/bin"]),
        "HOME": str(home), "USER": "nobody", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "TMPDIR": "/tmp",
        "XDG_CACHE_HOME": str(home / ".cache"), "XDG_CONFIG_HOME": str(home / ".config"),
        "XDG_DATA_HOME": str(home / ".local/share"), "IPYTHONDIR": str(home / ".ipython"),
        "JUPYTER_CONFIG_DIR": str(home / ".jupyter"), "JUPYTER_DATA_DIR": str(home / ".local/share/jupyter"),
        "JUPYTER_RUNTIME_DIR": str(root / "runtime"), "MPLCONFIGDIR": str(home / ".config/matplotlib"),
        "MPLBACKEND": "module://matplotlib_inline.backend_inline",
        "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_HOME": str(home / ".cache/huggingface"),
        "TOKENIZERS_PARALLELISM": "false", "PYTHONDONTWRITEBYTECODE": "1", "PYTHONHASHSEED": "0",
        "PYTHONSAFEPATH": "1", "PYTHONNOUSERSITE": "1",  # the working folder never shadows installed modules
        "PYDEVD_DISABLE_FILE_VALIDATION": "1",
        # the kernel imports the grader's own course_utils (read-only in the sandbox), however it is installed
        "PYTHONPATH": str(course_package_dir().parent),
    }
    for key in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        if key in os.environ:
            env[key] = os.environ[key]
    env.update(extra or {})
    return env


def run_python(code: str, mode: str, limits: Limits = Limits(), timeout: float = 60) -> subprocess.CompletedProcess:
    """Run ``python -c code`` exactly where a kernel would run in ``mode`` (a fresh scratch folder, removed after)."""
    root = scratch.prepare("cgk-run-")
    try:
        argv = kernel_argv(mode, root / "runtime", root / "work", limits)
        cut = argv.index("ipykernel_launcher") - 1  # "-m ipykernel_launcher -f {connection_file}" -> "-c code"
        return subprocess.run(argv[:cut] + ["-c", code], capture_output=True, text=True, timeout=timeout,
                              cwd=root / "work", env=kernel_env(root))
    finally:
        scratch.remove(root)


@functools.lru_cache(maxsize=None)
def _works(mode: str) -> tuple[bool, str]:
    """Whether a Python with ipykernel starts in ``mode`` here (unprivileged where the mode drops privileges)."""
    try:
        proc = run_python("import os, ipykernel; print(os.getuid())", mode)
    except (OSError, subprocess.TimeoutExpired) as err:
        return False, str(err)
    if proc.returncode != 0:
        return False, (proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"])[-1]
    uid = proc.stdout.strip()
    if mode in ("bwrap", "setpriv") and (not uid.isdigit() or uid == "0"):
        return False, f"the kernel ran as uid {uid!r}: privileges were not dropped"
    return True, ""


def detect_mode(requested: str = "auto") -> str:
    """The sandbox mode to use: ``requested`` if it works here, or with "auto" the strongest that does.

    Raises RuntimeError when a specific mode was requested but does not work on this machine.
    """
    requested = requested or "auto"
    if requested != "auto":
        if requested not in MODES:
            raise ValueError(f"unknown sandbox mode {requested!r}; use one of auto, {', '.join(MODES)}")
        if requested != "none":
            ok, why = _works(requested)
            if not ok:
                raise RuntimeError(f"sandbox mode {requested!r} does not work on this machine: {why}")
        return requested
    root = os.geteuid() == 0
    order = (["bwrap"] if root else ["bwrap-userns"]) if shutil.which("bwrap") else []
    order += ["setpriv"] if root else []
    for mode in order:
        if _works(mode)[0]:
            return mode
    return "none"


def describe(mode: str) -> str:
    """One line for logs and reports: what ``mode`` protects."""
    return {
        "bwrap": "bubblewrap namespaces, allow-listed read-only file system, no network, unprivileged uid",
        "bwrap-userns": "bubblewrap namespaces (user namespace), allow-listed read-only file system, no network",
        "setpriv": "unprivileged uid in a private folder: no bubblewrap, world-readable files and the network are "
                   "reachable",
        "none": "NOT ISOLATED: the kernel runs as the grader (install bubblewrap, see the README)",
    }[mode]


# ------------------------------------------------------------------------------------------- process accounting


@dataclass(frozen=True)
class Process:
    """One process of a sandbox, as /proc shows it."""

    pid: int
    ppid: int
    session: int
    uid: int
    cpu_seconds: float      # user + system time, its own and its reaped children's


_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _read_process(pid: int) -> Process | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            raw = fh.read().decode("ascii", "replace")
        uid = os.stat(f"/proc/{pid}").st_uid
    except OSError:
        return None
    fields = raw[raw.rfind(")") + 2:].split()   # after "pid (comm) ": state ppid pgrp session ...
    try:
        ppid, session = int(fields[1]), int(fields[3])
        utime, stime, cutime, cstime = (int(fields[i]) for i in (11, 12, 13, 14))
    except (IndexError, ValueError):
        return None
    return Process(pid, ppid, session, uid, (utime + stime + cutime + cstime) / _TICKS)


def processes(root_pid: int | None, uid: int | None = None) -> list[Process]:
    """The sandbox's processes: ``root_pid`` and its descendants, plus (in the root modes, where ``uid`` is the
    sandbox's own) every process of that uid, wherever it was re-parented."""
    table = [p for p in (_read_process(int(name)) for name in os.listdir("/proc") if name.isdigit()) if p]
    children: dict[int, list[Process]] = {}
    for proc in table:
        children.setdefault(proc.ppid, []).append(proc)
    found: dict[int, Process] = {}
    stack = [p for p in table if p.pid == root_pid]
    while stack:
        proc = stack.pop()
        if proc.pid not in found:
            found[proc.pid] = proc
            stack.extend(children.get(proc.pid, []))
    if uid is not None and uid >= FIRST_UID:
        found.update({p.pid: p for p in table if p.uid == uid})
    return list(found.values())


def cpu_seconds(procs: list[Process]) -> float:
    return sum(p.cpu_seconds for p in procs)

