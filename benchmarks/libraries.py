"""Part 4 of the benchmark: the learners' reference implementations against the field's libraries.

The reference answers come from the solution cells of the solutions notebooks (executed on their own, not from
course_utils); each is timed against the library that does the same job (transformers' logits processors, peft,
rouge-score), one CPU thread each, and the outputs are compared.
"""

from __future__ import annotations

import ast
import re
import time
import traceback
from pathlib import Path
from typing import Any, Callable


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
