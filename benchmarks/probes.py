"""Code the benchmark runs *inside* a notebook's kernel, after the notebook's own cells (appended as probe cells).

Each probe prints one line: a marker, then JSON, which :func:`benchmarks.notebooks.execute_one` reads back.
"""

from __future__ import annotations

RSS_MARK, WIDGET_MARK = "__BENCH_RSS__", "__BENCH_WIDGETS__"
RSS_PROBE = "from benchmarks.probes import rss_report; rss_report()"
WIDGET_PROBE = "from benchmarks.probes import widget_latency; widget_latency()"


def rss_report() -> None:
    """The kernel's own peak RSS and CPU time, and its children's peak RSS (getrusage)."""
    import json
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    print(RSS_MARK + json.dumps({"self_kb": usage.ru_maxrss, "cpu_s": usage.ru_utime + usage.ru_stime,
                                 "children_kb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}))


def widget_latency(budget_s: float = 25.0, per_control: int = 30) -> None:
    """Set every observed control to many values; time each assignment (observers run synchronously)."""
    import gc, json, random, time
    import ipywidgets as W
    from ipywidgets.widgets import widget as _wmod
    rng = random.Random(0)
    numeric = (W.IntSlider, W.FloatSlider, W.FloatLogSlider)
    selection = (W.SelectionSlider, W.Dropdown, W.ToggleButtons, W.RadioButtons, W.Select)

    def handlers(w, name):
        return [h for kind in w._trait_notifiers.get(name, {}).values() for h in kind]

    def from_flashcards(h):
        module = getattr(getattr(h, "__func__", h), "__module__", "") or ""
        return module.startswith("course_utils.review.flashcards")

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
    seen = {id(r): len(r.timings_ms) for r in redrawers}
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
        report.append({"widget": type(w).__name__, "description": w.description, "ms": times})
    draws = []
    for r in redrawers:
        draws += r.timings_ms[seen.get(id(r), 0):] if id(r) in seen else r.timings_ms
    print(WIDGET_MARK + json.dumps({"controls": report, "redrawer_ms": draws}))
