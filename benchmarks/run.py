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
import json
import os
import sys
from pathlib import Path
from typing import Any

from benchmarks import grading
from benchmarks.common import HERE, ROOT, TARGETS, discover, machine
from benchmarks.libraries import library_bench
from benchmarks.notebooks import execute_one, run_notebook, summarize_widgets
from benchmarks.report import README_BEGIN, README_END, readme_summary, render_markdown, update_readme

__all__ = ["README_BEGIN", "README_END", "main", "readme_summary", "update_readme"]


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
