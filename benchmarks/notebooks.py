"""Parts 1 and 2 of the benchmark: one notebook, top to bottom in a fresh kernel, timed and measured.

``run_notebook`` starts a child process (``python -m benchmarks.run --execute-one``) in a temporary copy of the
notebook's folder; the child runs the notebook with the course's one runner (:mod:`course_utils.runner`), times
each cell, samples the kernel's process tree for memory, and appends two probe cells
(:mod:`benchmarks.probes`): the kernel's own peak RSS and CPU time, and the widgets' redraw latency.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from benchmarks.common import ROOT, descendants, isolated_env, memory_bytes, percentile
from benchmarks.probes import RSS_MARK, RSS_PROBE, WIDGET_MARK, WIDGET_PROBE


def _marked(cell: Any, mark: str) -> Any:
    for out in cell.get("outputs", []):
        text = out.get("text", "") if out.get("output_type") == "stream" else ""
        for line in text.splitlines():
            if line.startswith(mark):
                return json.loads(line[len(mark):])
    return None


def execute_one(path: Path, mode: str, result_path: Path, cwd: Path) -> None:
    """Child process: run one notebook with the course's runner and write what was measured as JSON."""
    import nbformat

    from course_utils import runner

    nb = nbformat.read(path, as_version=4)
    n_orig = len(nb.cells)
    nb.cells.append(nbformat.v4.new_code_cell(RSS_PROBE))
    if mode == "normal":
        nb.cells.append(nbformat.v4.new_code_cell(WIDGET_PROBE))
    starts: dict[int, float] = {}
    peak = {"tree": 0, "stop": False}

    def sample() -> None:  # the kernel's process tree, every 50 ms, until the notebook's own cells are done
        me = os.getpid()
        while not peak["stop"]:
            total = sum(memory_bytes(pid) for pid in descendants(me))
            peak["tree"] = max(peak["tree"], total)
            time.sleep(0.05)

    def on_cell_start(cell: Any, cell_index: int) -> None:
        starts[cell_index] = time.perf_counter()
        if cell_index == n_orig:
            peak["stop"] = True

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    load_at_start = round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None
    t0 = time.perf_counter()
    run = runner.run_notebook(nb, cwd=cwd, mode="learner" if mode == "normal" else "grader", timeout=600,
                              stop_on_error=True, quiet=False, on_cell_start=on_cell_start)
    nb = run.nb
    error = run.problem or None
    t_end = starts.get(n_orig, time.perf_counter())
    peak["stop"] = True
    failed_cell = None
    if error is not None:
        failed_cell = max((i for i in starts if i < n_orig), default=None)
    code_starts = sorted(i for i in starts if i < n_orig)
    durations = []
    for k, i in enumerate(code_starts):
        end = starts[code_starts[k + 1]] if k + 1 < len(code_starts) else t_end
        if nb.cells[i].cell_type == "code":
            durations.append((end - starts[i], i, nb.cells[i].source.strip().splitlines()[0][:70]
                              if nb.cells[i].source.strip() else ""))
    durations.sort(reverse=True)
    rss = _marked(nb.cells[n_orig], RSS_MARK) if error is None else None
    widgets = _marked(nb.cells[n_orig + 1], WIDGET_MARK) if error is None and mode == "normal" else None
    result = {
        "notebook": path.stem, "mode": mode, "ok": error is None, "error": error, "failed_cell": failed_cell,
        "traceback": None,
        "wall_s": round(t_end - t0, 2),
        "kernel_start_s": round(min(starts.values()) - t0, 2) if starts else None,
        "kernel_peak_rss_mb": round(rss["self_kb"] * 1024 / 1e6, 1) if rss else None,
        "kernel_cpu_s": round(rss["cpu_s"], 1) if rss else None,
        "load_avg_1m_at_start": load_at_start,
        "kernel_children_peak_rss_mb": round(rss["children_kb"] * 1024 / 1e6, 1) if rss else None,
        "sampled_tree_peak_pss_mb": round(peak["tree"] / 1e6, 1),
        "slowest_cells": [{"cell": i, "s": round(s, 2), "first_line": line} for s, i, line in durations[:4]],
        "widgets": widgets,
    }
    result_path.write_text(json.dumps(result, indent=1))


def run_notebook(path: Path, mode: str, timeout: float = 900) -> dict:
    """Run ``execute_one`` in a fresh subprocess, in a temporary copy of the notebook's folder."""
    with tempfile.TemporaryDirectory(prefix=f"bench-{path.stem}-") as tmp_name:
        tmp = Path(tmp_name)
        work = tmp / path.parent.name
        shutil.copytree(path.parent, work, ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
        result_path = tmp / "result.json"
        cmd = [sys.executable, "-m", "benchmarks.run", "--execute-one", str(work / path.name), "--mode", mode,
               "--result", str(result_path)]
        start = time.perf_counter()
        try:
            proc = subprocess.run(cmd, cwd=ROOT, env=isolated_env(tmp, autograde=mode == "autograde"),
                                  capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return {"notebook": path.stem, "mode": mode, "ok": False, "error": f"timed out after {timeout:.0f} s"}
        if not result_path.exists():
            return {"notebook": path.stem, "mode": mode, "ok": False,
                    "error": f"runner exited {proc.returncode}: {proc.stderr.strip()[-600:]}"}
        result = json.loads(result_path.read_text())
        result["process_s"] = round(time.perf_counter() - start, 2)
        if not result["ok"]:
            result["stderr_tail"] = proc.stderr.strip()[-600:]
        peaks = [v for v in (result.get("kernel_peak_rss_mb"), result.get("sampled_tree_peak_pss_mb")) if v]
        result["peak_rss_mb"] = max(peaks) if peaks else None
        return result


def summarize_widgets(widgets: dict | None) -> dict | None:
    """Median / p95 / max over every timed change of every control of one notebook."""
    if not widgets or not widgets.get("controls"):
        return None
    all_ms = [ms for c in widgets["controls"] for ms in c["ms"]]
    if not all_ms:
        return None
    worst = max(widgets["controls"], key=lambda c: percentile(c["ms"], 95) if c["ms"] else 0)
    draws = widgets.get("redrawer_ms") or []
    return {
        "controls": len(widgets["controls"]), "changes": len(all_ms),
        "median_ms": round(statistics.median(all_ms), 1), "p95_ms": round(percentile(all_ms, 95), 1),
        "max_ms": round(max(all_ms), 1),
        "slowest_control": f"{worst['widget']} {worst['description']!r}".strip(),
        "slowest_control_p95_ms": round(percentile(worst["ms"], 95), 1) if worst["ms"] else None,
        "redrawer_median_ms": round(statistics.median(draws), 1) if draws else None,
        "redrawer_p95_ms": round(percentile(draws, 95), 1) if draws else None,
        "per_control": [{"widget": c["widget"], "description": c["description"], "n": len(c["ms"]),
                         "median_ms": round(statistics.median(c["ms"]), 1) if c["ms"] else None,
                         "p95_ms": round(percentile(c["ms"], 95), 1) if c["ms"] else None}
                        for c in widgets["controls"]],
    }
