"""`make bench`: how fast and how big the course is, measured, written to benchmarks/results.{md,json}.

    python -m benchmarks.run                    # everything (about 5-10 min on 2 cores)
    python -m benchmarks.run --only 02_sampling --no-autograde --no-libraries

What is measured (docs/benchmarks.md explains each figure):

1. every ``solutions/*/*.ipynb``, executed top to bottom by nbclient in a fresh kernel (a subprocess of a
   subprocess, in a temporary copy of its folder): wall time (kernel start included) and peak RSS of the
   kernel (``getrusage`` inside the kernel, cross-checked by sampling the kernel's process tree); once as a
   learner runs it and once with ``NBGRADER_EXECUTION=autograde`` as nbgrader sets it when grading;
2. widget redraw latency, measured in the kernel right after the notebook ran: every slider / dropdown /
   toggle that has an observer is set to many values (``.value = v``, which runs the redraw synchronously) and
   each assignment is timed; ``Redrawer.timings_ms`` of the course's widgets is reported next to it;
3. grading speed (benchmarks/grading.py): the cold-import floor, and ``course autograde`` of the solutions of
   every assignment (two students) on 1 and 2 local workers and on a local Dask cluster of 1 and 2 workers:
   seconds per notebook, its ratio to the floor, gradings per core-hour, scaling efficiency;
4. the learners' reference implementations (taken from the solution cells of the solutions notebooks, not
   from course_utils) against the field's libraries where they overlap: speed ratio and largest difference.

Needs no network (``HF_HUB_OFFLINE=1``) and nothing outside the repo and its .venv.
"""

from __future__ import annotations

import argparse
import ast
import datetime as dt
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path
from typing import Any, Callable

from benchmarks import grading

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
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


# ---------------------------------------------------------------------------------------------------------
# Small utilities


def _percentile(values: list[float], q: float) -> float:
    """Linear-interpolated percentile (numpy's default), q in [0, 100]."""
    xs = sorted(values)
    if not xs:
        return float("nan")
    k = (len(xs) - 1) * q / 100.0
    lo, hi = int(k), min(int(k) + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def _descendants(pid: int) -> list[int]:
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


def _memory_bytes(pid: int) -> int:
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


# ---------------------------------------------------------------------------------------------------------
# 1 + 2. Executing one notebook (runs in a child process: ``--execute-one``)

RSS_PROBE = f"""import json as _j, resource as _r
_u = _r.getrusage(_r.RUSAGE_SELF)
print({RSS_MARK!r} + _j.dumps({{"self_kb": _u.ru_maxrss, "cpu_s": _u.ru_utime + _u.ru_stime,
                                 "children_kb": _r.getrusage(_r.RUSAGE_CHILDREN).ru_maxrss}}))"""

WIDGET_PROBE = f'''def _bench_widget_latency(budget_s=25.0, per_control=30):
    """Set every observed control to many values; time each assignment (observers run synchronously)."""
    import gc, json, random, time
    import ipywidgets as W
    from ipywidgets.widgets import widget as _wmod
    rng = random.Random(0)
    numeric = (W.IntSlider, W.FloatSlider, W.FloatLogSlider)
    selection = (W.SelectionSlider, W.Dropdown, W.ToggleButtons, W.RadioButtons, W.Select)

    def handlers(w, name):
        return [h for kind in w._trait_notifiers.get(name, {{}}).values() for h in kind]

    def from_flashcards(h):
        module = getattr(getattr(h, "__func__", h), "__module__", "") or ""
        return module.startswith("course_utils.flashcards")

    controls = []
    for w in list(_wmod._instances.values()):
        if not isinstance(w, numeric + selection):
            continue
        hs = handlers(w, "value") + handlers(w, "index")
        if hs and not any(from_flashcards(h) for h in hs):
            controls.append(w)

    def values(w):
        """per_control values, each different from the one before (controls with few options are revisited)."""
        if isinstance(w, selection):
            attr, grid, current = "index", list(range(len(w.options))), w.index
        elif isinstance(w, W.FloatLogSlider):
            steps = int(round((w.max - w.min) / w.step))
            attr, grid, current = "value", [w.base ** (w.min + i * w.step) for i in range(steps + 1)], w.value
        else:
            step = w.step or 1
            steps = int(round((w.max - w.min) / step))
            grid = [w.min + i * step for i in range(steps + 1)]
            grid = [int(v) for v in grid] if isinstance(w, W.IntSlider) else [round(v, 10) for v in grid]
            attr, current = "value", w.value
        out = []
        for _ in range(per_control if len(grid) > 1 else 0):
            current = rng.choice([v for v in grid if v != current])
            out.append((attr, current))
        return out

    def redrawer_timings():
        try:
            from course_utils.widgets.common import Redrawer
        except Exception:
            return []
        found = []
        for o in gc.get_objects():
            try:
                if isinstance(o, Redrawer):
                    found.append(o)
            except ReferenceError:      # a dead weakref.proxy (peft, torch hooks): isinstance itself raises
                continue
        return found

    redrawers = redrawer_timings()
    seen = {{id(r): len(r.timings_ms) for r in redrawers}}
    per_control_budget = budget_s / max(len(controls), 1)
    report = []
    for w in controls:
        times, spent = [], 0.0
        for attr, v in values(w):
            start = time.perf_counter()
            setattr(w, attr, v)
            ms = (time.perf_counter() - start) * 1e3
            times.append(ms)
            spent += ms / 1e3
            if spent > per_control_budget and len(times) >= 3:
                break
        report.append({{"widget": type(w).__name__, "description": w.description, "ms": times}})
    draws = []
    for r in redrawers:
        draws += r.timings_ms[seen.get(id(r), 0):] if id(r) in seen else r.timings_ms
    print({WIDGET_MARK!r} + json.dumps({{"controls": report, "redrawer_ms": draws}}))

_bench_widget_latency()'''


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
            total = sum(_memory_bytes(pid) for pid in _descendants(me))
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
    worst = max(widgets["controls"], key=lambda c: _percentile(c["ms"], 95) if c["ms"] else 0)
    draws = widgets.get("redrawer_ms") or []
    return {
        "controls": len(widgets["controls"]), "changes": len(all_ms),
        "median_ms": round(statistics.median(all_ms), 1), "p95_ms": round(_percentile(all_ms, 95), 1),
        "max_ms": round(max(all_ms), 1),
        "slowest_control": f"{worst['widget']} {worst['description']!r}".strip(),
        "slowest_control_p95_ms": round(_percentile(worst["ms"], 95), 1) if worst["ms"] else None,
        "redrawer_median_ms": round(statistics.median(draws), 1) if draws else None,
        "redrawer_p95_ms": round(_percentile(draws, 95), 1) if draws else None,
        "per_control": [{"widget": c["widget"], "description": c["description"], "n": len(c["ms"]),
                         "median_ms": round(statistics.median(c["ms"]), 1) if c["ms"] else None,
                         "p95_ms": round(_percentile(c["ms"], 95), 1) if c["ms"] else None}
                        for c in widgets["controls"]],
    }


# ---------------------------------------------------------------------------------------------------------
# 3. Autograding through the course's own command


# Grading speed lives in benchmarks/grading.py (the floor, local workers, Dask).


# ---------------------------------------------------------------------------------------------------------
# 4. Reference implementations (from the solution cells) vs the field's libraries


def solution_namespace(path: Path) -> dict[str, Any]:
    """The functions and classes defined in a notebook's solution cells, with the notebook's imports.

    Only imports and top-level ``def``/``class`` statements are executed (never training or demos), so this
    takes well under a second. Cells with IPython magics are read without their magic lines.
    """
    import nbformat

    nb = nbformat.read(path, as_version=4)
    ns: dict[str, Any] = {"__name__": f"bench_{path.stem}"}

    def parse(src: str) -> ast.Module | None:
        src = "\n".join(line for line in src.splitlines() if not line.lstrip().startswith(("%", "!")))
        try:
            return ast.parse(src)
        except SyntaxError:
            return None

    for cell in nb.cells:
        if cell.cell_type != "code" or not (tree := parse(cell.source)):
            continue
        is_solution = cell.metadata.get("nbgrader", {}).get("solution", False)
        keep = (ast.Import, ast.ImportFrom) + ((ast.FunctionDef, ast.ClassDef) if is_solution else ())
        for node in tree.body:
            if isinstance(node, keep):
                try:
                    exec(compile(ast.Module(body=[node], type_ignores=[]), str(path), "exec"), ns)
                except Exception:  # noqa: BLE001 - an optional import that fails here is not needed
                    pass
    return ns


def _time_call(fn: Callable[[], Any], min_time: float = 0.15, repeats: int = 5) -> float:
    """Best-of-``repeats`` seconds per call, each repeat looping until ``min_time`` has passed."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        n, start = 0, time.perf_counter()
        while True:
            fn()
            n += 1
            elapsed = time.perf_counter() - start
            if elapsed >= min_time:
                break
        best = min(best, elapsed / n)
    return best


def _find(ns: dict[str, Any], *patterns: str, kind: type | tuple = ()) -> tuple[str, Any] | None:
    """The first name in ``ns`` matching one of ``patterns`` (regexes, tried in order)."""
    for pattern in patterns:
        for name, obj in ns.items():
            if name.startswith("_") or not re.fullmatch(pattern, name):
                continue
            if kind and not (isinstance(obj, kind) or (isinstance(obj, type) and issubclass(obj, kind))):
                continue
            if callable(obj):
                return name, obj
    return None


def _compare(name: str, library: str, ours: Callable[[], Any], theirs: Callable[[], Any]) -> dict:
    import torch

    a, b = ours(), theirs()
    mismatched = 0  # filters: tokens kept by one and removed (-inf) by the other
    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        finite = torch.isfinite(a) & torch.isfinite(b)
        mismatched = int((torch.isfinite(a) != torch.isfinite(b)).sum())
        diff = float((a[finite] - b[finite]).abs().max()) if finite.any() else 0.0
        agree = mismatched == 0 and diff < 1e-4
    else:
        diff = max(abs(float(x) - float(y)) for x, y in zip(a, b, strict=True))
        agree = diff < 1e-6
    t_ours, t_lib = _time_call(ours), _time_call(theirs)
    return {"reference": name, "library": library, "ours_us": round(t_ours * 1e6, 1),
            "library_us": round(t_lib * 1e6, 1), "ratio": round(t_ours / t_lib, 2), "max_abs_diff": diff,
            "kept_removed_mismatches": mismatched, "agree": agree}


def bench_sampling(ns: dict[str, Any]) -> list[dict]:
    import torch
    from transformers import TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

    torch.manual_seed(0)
    B, V = 8, 50257  # a batch of GPT-2-sized vocabularies
    logits = torch.randn(B, V) * 3
    ids = torch.zeros(B, 1, dtype=torch.long)
    rows = []
    pairs = [
        (("softmax_with_temperature", "(apply_)?temperature.*"), "transformers TemperatureLogitsWarper(0.7) + softmax",
         lambda f: f(logits, 0.7), lambda: torch.softmax(TemperatureLogitsWarper(0.7)(ids, logits), dim=-1)),
        (("top_k.*", ".*top_k_filter.*"), "transformers TopKLogitsWarper(50)",
         lambda f: f(logits, 50), lambda: TopKLogitsWarper(top_k=50)(ids, logits)),
        (("top_p.*", ".*top_p_filter.*", "nucleus.*"), "transformers TopPLogitsWarper(0.9)",
         lambda f: f(logits, 0.9), lambda: TopPLogitsWarper(top_p=0.9)(ids, logits)),
    ]
    for patterns, library, ours, theirs in pairs:
        found = _find(ns, *patterns)
        if not found:
            rows.append({"reference": "/".join(patterns), "library": library, "status": "n/a",
                         "reason": "no such function in the solution cells"})
            continue
        name, fn = found
        try:
            rows.append(_compare(f"{name} (02_sampling)", library, lambda fn=fn: ours(fn), theirs))
        except Exception as err:  # noqa: BLE001 - a signature we did not guess: say so
            rows.append({"reference": name, "library": library, "status": "n/a",
                         "reason": f"{type(err).__name__}: {str(err)[:160]}"})
    return rows


def bench_lora(ns: dict[str, Any]) -> list[dict]:
    import torch
    from peft import LoraConfig, get_peft_model

    found = _find(ns, "LoRA.*", "Lora.*", kind=torch.nn.Module)
    if not found:
        return [{"reference": "LoRA layer", "library": "peft LoRA Linear", "status": "n/a",
                 "reason": "no LoRA nn.Module class in the solution cells"}]
    name, cls = found
    torch.manual_seed(0)
    d, r, alpha = 128, 8, 16
    x = torch.randn(16, 64, d)  # (B, T, d)
    base = torch.nn.Linear(d, d)
    try:
        ours = _build_lora(cls, base, r, alpha)
    except Exception as err:  # noqa: BLE001
        return [{"reference": name, "library": "peft LoRA Linear", "status": "n/a",
                 "reason": f"could not build {name}(base, r={r}, alpha={alpha}): {type(err).__name__}: {err}"}]
    A, B = _lora_matrices(ours)
    with torch.no_grad():
        A.copy_(torch.randn_like(A) * 0.1)
        B.copy_(torch.randn_like(B) * 0.1)
    model = torch.nn.Sequential()
    model.add_module("proj", torch.nn.Linear(d, d))
    model.proj.load_state_dict(base.state_dict())
    peft_model = get_peft_model(model, LoraConfig(r=r, lora_alpha=alpha, target_modules=["proj"], lora_dropout=0.0))
    layer = peft_model.base_model.model.proj
    with torch.no_grad():  # same adapter in peft's layout: lora_A (r, d_in), lora_B (d_out, r)
        pa, pb = layer.lora_A["default"].weight, layer.lora_B["default"].weight
        pa.copy_(A if A.shape == pa.shape else A.T)
        pb.copy_(B if B.shape == pb.shape else B.T)
    ours.eval()
    peft_model.eval()
    with torch.no_grad():
        return [_compare(f"{name} forward (03_finetuning)", f"peft LoRA Linear (r={r}, alpha={alpha})",
                         lambda: ours(x), lambda: peft_model(x))]


def _build_lora(cls: type, base: Any, r: int, alpha: int) -> Any:
    import inspect

    params = inspect.signature(cls).parameters
    kwargs = {}
    for key in ("r", "rank"):
        if key in params:
            kwargs[key] = r
    for key in ("alpha", "lora_alpha"):
        if key in params:
            kwargs[key] = alpha
    return cls(base, **kwargs)


def _lora_matrices(module: Any) -> tuple[Any, Any]:
    import torch

    named = dict(module.named_parameters())
    for a_name, b_name in (("A", "B"), ("lora_A", "lora_B"), ("a", "b")):
        a = named.get(a_name) if a_name in named else getattr(getattr(module, a_name, None), "weight", None)
        b = named.get(b_name) if b_name in named else getattr(getattr(module, b_name, None), "weight", None)
        if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
            return a, b
    raise ValueError(f"no A/B matrices among {list(named)}")


def bench_rouge(ns: dict[str, Any]) -> list[dict]:
    from rouge_score import rouge_scorer

    from course_utils import world

    pairs = _rouge_pairs(world)
    rows = []
    for patterns, key in ((("rouge_?1", "rouge_?n"), "rouge1"), (("rouge_?2", "rouge_?n"), "rouge2"),
                          (("rouge_?l", "rouge_?L", "rouge_lcs"), "rougeL")):
        found = _find(ns, *patterns)
        library = f"rouge-score RougeScorer(['{key}'])"
        if not found:
            rows.append({"reference": "/".join(patterns), "library": library, "status": "n/a",
                         "reason": "no such function in the solution cells"})
            continue
        name, fn = found
        scorer = rouge_scorer.RougeScorer([key])
        n_arg = {"rouge1": 1, "rouge2": 2}.get(key)
        ours_one = _rouge_adapter(fn, n_arg)
        try:
            rows.append(_compare(f"{name} F1 (03_finetuning)", library,
                                 lambda: [ours_one(p, ref) for p, ref in pairs],
                                 lambda: [scorer.score(ref, p)[key].fmeasure for p, ref in pairs]))
        except Exception as err:  # noqa: BLE001
            rows.append({"reference": name, "library": library, "status": "n/a",
                         "reason": f"{type(err).__name__}: {str(err)[:160]}"})
    return rows


def _rouge_pairs(world: Any) -> list[tuple[str, str]]:
    """(prediction, reference) pairs of course-world summaries, lower-case words only (both tokenisers agree)."""
    import random

    clean = lambda s: " ".join(re.findall(r"[a-z0-9]+", s.lower()))  # noqa: E731
    summaries = [clean(d.summary) for d in world.dialogues(world.HELD_OUT_SEED, 60)]
    rng = random.Random(0)
    return [(summaries[i], summaries[rng.randrange(len(summaries))]) for i in range(len(summaries))]


def _rouge_adapter(fn: Callable, n: int | None) -> Callable[[str, str], float]:
    """Call the learner's ROUGE with (prediction, reference[, n]) and take the F1 from what comes back."""
    import inspect

    params = list(inspect.signature(fn).parameters)

    def call(pred: str, ref: str) -> float:
        args: list[Any] = [pred, ref]
        if n is not None and len(params) >= 3 and not re.search(r"[12]$", fn.__name__):
            args.append(n)
        out = fn(*args)
        if isinstance(out, dict):
            out = out.get("f1", out.get("fmeasure", out.get("f", next(iter(out.values())))))
        elif isinstance(out, (tuple, list)):
            out = out[-1]
        return float(out)

    return call


def library_bench(notebooks: list[Path]) -> list[dict]:
    """All comparisons, on one CPU thread: on a shared machine that keeps the ratios stable."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _library_rows(notebooks)
    finally:
        torch.set_num_threads(threads)


def _library_rows(notebooks: list[Path]) -> list[dict]:
    by_topic = {p.stem.split("_", 1)[-1]: p for p in notebooks}
    rows: list[dict] = []
    for topic, benches in (("sampling", [bench_sampling]), ("finetuning", [bench_lora, bench_rouge])):
        path = by_topic.get(topic)
        if path is None:
            rows.append({"reference": f"{topic} notebook", "status": "n/a", "reason": "notebook not written yet"})
            continue
        ns = solution_namespace(path)
        for bench in benches:
            try:
                rows += bench(ns)
            except Exception as err:  # noqa: BLE001 - one comparison failing must not stop the benchmark
                rows.append({"reference": bench.__name__, "status": "n/a",
                             "reason": f"{type(err).__name__}: {str(err)[:200]}",
                             "trace": traceback.format_exc(limit=3)[-600:]})
    return rows


# ---------------------------------------------------------------------------------------------------------
# Machine and report


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


def _us(us: float) -> str:
    return f"{us / 1000:.2f} ms" if us >= 1000 else f"{us:.0f} µs"


def _mark(ok: bool | None) -> str:
    return "" if ok is None else (" ✅" if ok else " ❌")


def render_markdown(results: dict) -> str:
    t = results["targets"]
    m = results["machine"]
    lines = ["# Benchmark results", "",
             f"Generated by `make bench` (`python -m benchmarks.run`) on {m['date_utc']}, commit "
             f"`{m.get('git_commit')}`. What each figure means: [docs/benchmarks.md](../docs/benchmarks.md).", "",
             f"Targets: each notebook ≤ {t['notebook_s']:.0f} s (aim {t['notebook_aim_s']:.0f} s) and "
             f"≤ {t['rss_mb'] / 1000:.1f} GB peak RSS; ≤ {t['autograde_s']:.0f} s with `NBGRADER_EXECUTION` set; "
             f"whole course ≤ {t['course_s'] / 60:.0f} min; widget redraw p95 ≤ {t['redraw_p95_ms']:.0f} ms. "
             "✅ met, ❌ missed.", "",
             "| notebook | run top to bottom | kernel CPU | peak RSS | under autograding | widget redraw median / p95 "
             "(changes) | slowest cell |",
             "|---|---:|---:|---:|---:|---:|---|"]
    for row in results["notebooks"]:
        normal, grade, w = row["normal"], row.get("autograde"), row.get("widgets")
        if normal.get("ok"):
            wall = f"{normal['wall_s']:.1f} s{_mark(normal['wall_s'] <= t['notebook_s'])}"
            if normal["wall_s"] > t["notebook_aim_s"] and normal["wall_s"] <= t["notebook_s"]:
                wall += " (over the 30 s aim)"
            rss = (f"{normal['peak_rss_mb']:.0f} MB{_mark(normal['peak_rss_mb'] <= t['rss_mb'])}"
                   if normal.get("peak_rss_mb") else "?")
        else:
            wall, rss = f"failed ❌: {normal.get('error', '?')[:80]}", "–"
        if grade is None:
            ag = "not run"
        elif grade.get("ok"):
            ag = f"{grade['wall_s']:.1f} s{_mark(grade['wall_s'] <= t['autograde_s'])}"
        else:
            ag = f"failed ❌: {grade.get('error', '?')[:60]}"
        wid = (f"{w['median_ms']:.0f} / {w['p95_ms']:.0f} ms{_mark(w['p95_ms'] <= t['redraw_p95_ms'])} "
               f"({w['changes']})" if w else "no observed control")
        slow = normal.get("slowest_cells") or []
        slowest = f"{slow[0]['s']:.1f} s: `{slow[0]['first_line'].replace('|', '¦')}`" if slow else ""
        cpu = f"{normal['kernel_cpu_s']:.0f} s" if normal.get("kernel_cpu_s") is not None else "–"
        lines.append(f"| {row['notebook']} | {wall} | {cpu} | {rss} | {ag} | {wid} | {slowest} |")
    c = results["course"]
    lines += ["", f"**Whole course** (every notebook, one after the other): {c['total_s']:.0f} s"
              f"{_mark(c['ok'] and c['total_s'] <= t['course_s'])} (target ≤ {t['course_s']:.0f} s); "
              f"under autograding {c['total_autograde_s']:.0f} s."
              if c.get("total_s") is not None else "**Whole course**: no notebook ran."]
    g = results.get("grading")
    if g:
        lines += [""] + grading.report(g, t["grading_floor_ratio"], _mark)
    else:
        lines += ["", "**Grading speed**: not measured (--no-autograde)."]
    libs = results.get("libraries") or []
    if libs:
        lines += ["", "### Reference implementations vs the field's libraries", "",
                  "The learners' reference answers (the solution cells, executed on their own) against the "
                  "library that does the same job. Ratio = ours / library time per call (below 1: ours is "
                  "faster), one CPU thread each; same = outputs agree (largest difference in brackets).", "",
                  "| reference (notebook) | library | ours | library | ratio | same |", "|---|---|---:|---:|---:|---|"]
        for r in libs:
            if r.get("status") == "n/a":
                lines.append(f"| {r.get('reference', '?')} | {r.get('library', '')} | n/a | | | {r['reason']} |")
            else:
                same = "yes" if r["agree"] else "no"
                same += f" (max diff {r['max_abs_diff']:.1e}"
                if r.get("kept_removed_mismatches"):
                    same += f"; {r['kept_removed_mismatches']} tokens kept by one, removed by the other"
                lines.append(f"| {r['reference']} | {r['library']} | {_us(r['ours_us'])} | {_us(r['library_us'])} "
                             f"| {r['ratio']:.2f}× | {same}) |")
    lines += ["", "### Machine", "",
              f"{m.get('cpu')}, {m.get('cores_usable')} usable cores, {m.get('ram_gb')} GB RAM; {m.get('os')}; "
              f"Python {m.get('python')}, torch {m.get('torch')}, transformers {m.get('transformers')}, "
              f"peft {m.get('peft')}, ipywidgets {m.get('ipywidgets')}, nbclient {m.get('nbclient')}. "
              f"Load average when the run started: {m.get('load_avg_1m_at_start')} (timings on a shared machine "
              "are noisy).", ""]
    return "\n".join(lines)


README_BEGIN = "<!-- bench:begin (written by `make bench`; edits here are replaced) -->"
README_END = "<!-- bench:end -->"


def readme_summary(results: dict) -> str:
    """The README's copy of the results: the notebook table and the course / autograding lines."""
    md = render_markdown(results)
    body = md.split("\n", 2)[2]                      # drop the "# Benchmark results" title
    body = body.split("\n### ", 1)[0].rstrip()       # the library comparison and the machine stay in results.md
    body = body.replace("](../docs/", "](docs/")
    m = results["machine"]
    return (f"{body}\n\nMachine: {m.get('cpu')}, {m.get('cores_usable')} usable cores; load average "
            f"{m.get('load_avg_1m_at_start')} at the start. Library comparisons and details: "
            "[benchmarks/results.md](benchmarks/results.md).")


def update_readme(text: str, summary: str) -> str:
    """Replace what lies between the README's bench markers with ``summary``; everything else is kept."""
    begin, end = text.find(README_BEGIN), text.find(README_END)
    if begin < 0 or end < begin:
        raise ValueError(f"the README has no benchmark section: add a line {README_BEGIN!r} and, below it, a line "
                         f"{README_END!r} where the table should go (or run with --no-readme)")
    return text[:begin + len(README_BEGIN)] + "\n" + summary.strip() + "\n" + text[end:]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="*", help="notebook name parts to keep (e.g. 02_sampling)")
    parser.add_argument("--no-autograde", action="store_true", help="skip `course autograde`")
    parser.add_argument("--students", type=int, default=2, help="copies of the solutions graded per run (default 2)")
    parser.add_argument("--no-autograde-mode", action="store_true", help="skip the NBGRADER_EXECUTION runs")
    parser.add_argument("--no-libraries", action="store_true", help="skip the library comparisons")
    parser.add_argument("--out", type=Path, default=HERE, help="folder for results.md/results.json")
    parser.add_argument("--source", type=Path, default=ROOT / "solutions",
                        help="folder of NN_topic/NN_topic.ipynb notebooks (default: solutions)")
    parser.add_argument("--readme", type=Path, default=ROOT / "README.md",
                        help="README whose benchmark section is updated when --out is the default folder")
    parser.add_argument("--no-readme", action="store_true", help="leave the README alone")
    parser.add_argument("--execute-one", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--mode", default="normal", help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.execute_one:
        execute_one(args.execute_one, args.mode, args.result, args.execute_one.parent)
        return 0

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    notebooks = discover(args.only, args.source)
    results: dict[str, Any] = {"targets": TARGETS, "machine": machine(), "notebooks": []}
    print(f"benchmarking {len(notebooks)} notebook(s): {', '.join(p.stem for p in notebooks) or '-'}", flush=True)
    for path in notebooks:
        row: dict[str, Any] = {"notebook": path.stem}
        row["normal"] = run_notebook(path, "normal")
        row["widgets"] = summarize_widgets(row["normal"].pop("widgets", None))
        if not args.no_autograde_mode:
            row["autograde"] = run_notebook(path, "autograde")
            row["autograde"].pop("widgets", None)
        results["notebooks"].append(row)
        n, g, w = row["normal"], row.get("autograde") or {}, row["widgets"] or {}
        print(f"  {path.stem}: {'ok' if n['ok'] else 'FAILED ' + str(n.get('error'))} {n.get('wall_s')} s, "
              f"{n.get('peak_rss_mb')} MB; autograde {g.get('wall_s')} s; redraw p95 {w.get('p95_ms')} ms",
              flush=True)
    normals = [r["normal"] for r in results["notebooks"]]
    results["course"] = {
        "total_s": round(sum(n.get("wall_s") or 0 for n in normals), 1) if normals else None,
        "total_autograde_s": round(sum((r.get("autograde") or {}).get("wall_s") or 0
                                       for r in results["notebooks"]), 1),
        "ok": all(n.get("ok") for n in normals),
    }
    if not args.no_autograde:
        print("grading speed: the floor, then `course autograde` on 1 and 2 local and Dask workers ...", flush=True)
        results["grading"] = grading.throughput(notebooks, students=args.students)
        for name, run in results["grading"]["runs"].items():
            print(f"  {name}: {run['per_notebook_s']} s per notebook = {run.get('floor_ratio')}x the floor "
                  f"({results['grading']['floor'].get('seconds')} s)", flush=True)
    if not args.no_libraries:
        print("reference implementations vs libraries ...", flush=True)
        results["libraries"] = library_bench(discover(None, args.source))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=1, ensure_ascii=False) + "\n")
    (args.out / "results.md").write_text(render_markdown(results))
    print(f"wrote {args.out / 'results.md'} and results.json", flush=True)
    if not args.no_readme and args.out.resolve() == HERE.resolve():
        args.readme.write_text(update_readme(args.readme.read_text(), readme_summary(results)))
        print(f"updated the benchmark section of {args.readme}", flush=True)
    print(render_markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
