"""What every part of the benchmark shares: paths, targets, the machine, the kernel's environment, processes."""

from __future__ import annotations

import datetime as dt
import os
import platform
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
HERE = ROOT / "benchmarks"
TARGETS = {
    "notebook_s": 60.0,        # every notebook top to bottom
    "notebook_aim_s": 30.0,
    "rss_mb": 1500.0,          # peak RSS of the kernel, 1.5 GB (10^6 bytes per MB)
    "autograde_s": 20.0,       # a notebook under NBGRADER_EXECUTION
    "course_s": 300.0,         # all notebooks, one after the other
    "redraw_p95_ms": 100.0,    # a widget control changed -> redraw finished, in the kernel
    "grading_floor_ratio": 1.0,  # autograding seconds per notebook / the cold-import floor, same run
}
RSS_MARK, WIDGET_MARK = "__BENCH_RSS__", "__BENCH_WIDGETS__"
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def percentile(values: list[float], q: float) -> float:
    """Linear-interpolated percentile (numpy's default), q in [0, 100]."""
    xs = sorted(values)
    if not xs:
        return float("nan")
    k = (len(xs) - 1) * q / 100.0
    lo, hi = int(k), min(int(k) + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def descendants(pid: int) -> list[int]:
    """Every process below ``pid``, from /proc (psutil when it is installed: also works off Linux)."""
    try:
        import psutil

        return [p.pid for p in psutil.Process(pid).children(recursive=True)]
    except Exception:  # noqa: BLE001 - psutil missing or the process is gone: fall back to /proc
        pass
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parents[int(stat.parent.name)] = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
    found, frontier = [], [pid]
    while frontier:
        kids = [c for c, p in parents.items() if p == frontier.pop()]
        found += kids
        frontier += kids
    return found


def memory_bytes(pid: int) -> int:
    """The memory ``pid`` really holds: its PSS (proportional set size) where Linux gives it, else its RSS.

    PSS splits each shared page between the processes that share it. Summing RSS over a process tree would
    count the pages that forked workers (the DDP demo) share with the kernel once per process.
    """
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        pages = int(Path(f"/proc/{pid}/statm").read_text().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        try:
            import psutil

            return psutil.Process(pid).memory_info().rss
        except Exception:  # noqa: BLE001 - gone between listing and reading
            return 0


def isolated_env(tmp: Path, *, autograde: bool) -> dict[str, str]:
    """The environment a benchmarked kernel gets: offline, its own HOME (flashcard progress and Jupyter/IPython
    state go to a temporary folder), the user's caches kept (matplotlib's font cache is read, not rebuilt)."""
    env = dict(os.environ)
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    home = tmp / "home"
    home.mkdir(parents=True, exist_ok=True)
    env.update({
        "HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config"), "XDG_DATA_HOME": str(home / ".local/share"),
        "XDG_CACHE_HOME": cache, "IPYTHONDIR": str(tmp / "ipython"), "JUPYTER_CONFIG_DIR": str(tmp / "jupyter"),
        "JUPYTER_DATA_DIR": str(tmp / "jupyter-data"), "JUPYTER_RUNTIME_DIR": str(tmp / "jupyter-runtime"),
        "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
        "PYTHONPATH": os.pathsep.join(filter(None, [os.environ.get("PYTHONPATH"), str(ROOT)])),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    })
    env.pop("MPLBACKEND", None)
    env.pop("JUPYTER_PATH", None)
    if autograde:
        env["NBGRADER_EXECUTION"] = "autograde"  # the value nbgrader itself sets while autograding
    else:
        env.pop("NBGRADER_EXECUTION", None)
    return env


def discover(only: list[str] | None = None, source: Path = ROOT / "solutions") -> list[Path]:
    notebooks = sorted(p for p in Path(source).glob("*/*.ipynb") if ".ipynb_checkpoints" not in p.parts)
    if only:
        notebooks = [p for p in notebooks if any(o in p.stem for o in only)]
    return notebooks


def machine() -> dict:
    info: dict[str, Any] = {"date_utc": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
                            "python": platform.python_version(), "os": platform.platform()}
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
        info["cpu"] = re.search(r"model name\s*:\s*(.+)", cpuinfo).group(1).strip()
    except (OSError, AttributeError):
        info["cpu"] = platform.processor() or platform.machine()
    info["cores_usable"] = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    try:
        kb = int(re.search(r"MemTotal:\s*(\d+)", Path("/proc/meminfo").read_text()).group(1))
        info["ram_gb"] = round(kb * 1024 / 1e9, 1)
    except (OSError, AttributeError):
        pass
    try:
        info["load_avg_1m_at_start"] = round(os.getloadavg()[0], 2)
    except OSError:
        pass
    for pkg in ("torch", "transformers", "peft", "ipywidgets", "nbclient", "nbgrader"):
        try:
            from importlib.metadata import version

            info[pkg] = version(pkg)
        except Exception:  # noqa: BLE001
            info[pkg] = None
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                                timeout=10).stdout.strip()
        info["git_commit"] = commit or None
    except (OSError, subprocess.TimeoutExpired):
        info["git_commit"] = None
    return info


