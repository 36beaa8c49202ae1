"""The grading round trip on every real notebook: the solutions score full marks, the blank release scores zero.

Each solutions/NN_topic notebook present at test time is released to a temporary folder, then two submissions are
autograded in one run (sandboxed, as an instructor would): the release with the solutions filled in, and the release
as handed out. Both must be graded without any integrity flag (a flag on the solutions is a false alarm to fix).
The workspace is temporary: the real gradebook is never touched.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest

from course_utils.grader import autograde
from course_utils.grader import workspace as grading

ROOT = Path(__file__).resolve().parents[1]
SOURCES = sorted(p for p in (ROOT / "solutions").glob("*/*.ipynb") if ".ipynb_checkpoints" not in p.parts)
MODELS = ROOT / "course_utils" / "assets" / "tiny-base"
TIMEOUT = 120  # per cell, generous for a busy CI machine: the benchmark measures the real time


@pytest.mark.slow
@pytest.mark.skipif(not MODELS.is_dir(), reason="the bundled models are not built yet (make models)")
@pytest.mark.parametrize("source", SOURCES, ids=[p.parent.name for p in SOURCES])
def test_solutions_get_full_marks_and_the_blank_release_zero(source: Path, tmp_path: Path):
    name = source.parent.name
    grading.release(ROOT, [name], tmp_path / "release")
    release = nbformat.read(tmp_path / "release" / name / source.name, as_version=4)
    solved = grading.fill_in_solutions(release, nbformat.read(source, as_version=4))
    subs = tmp_path / "submissions"
    for student, nb in (("solutions", solved), ("blank", release)):
        (subs / student / name).mkdir(parents=True)
        nbformat.write(nb, subs / student / name / source.name)
    ws = grading.Workspace.at(ROOT, tmp_path / "workspace")
    records = {r.student: r for r in autograde.autograde(
        ws, subs, overrides=grading.settings_config(timeout=TIMEOUT), only_assignments=[name], jobs=2,
        log=lambda *_: None)}
    perfect, blank = records["solutions"], records["blank"]
    print(f"\n{name}: solutions {perfect.score}/{perfect.max_score} in {perfect.seconds:.1f} s, "
          f"blank {blank.score}/{blank.max_score} in {blank.seconds:.1f} s, sandbox {perfect.sandbox}")
    failing = [c["grade_id"] + (f" ({c['reason']})" if c.get("reason") else "") for c in perfect.cells
               if not c["passed"]]
    assert perfect.status == "graded" and perfect.score == perfect.max_score, \
        f"{name}: the solutions lose points on {failing}: see {ws.integrity / 'solutions' / name}"
    assert not perfect.review, f"{name}: false alarms on the solutions: {perfect.review}"
    passing = [c["grade_id"] for c in blank.cells if c["passed"]]
    assert blank.score == 0, f"{name}: the blank release earns points on {passing}"
    assert not blank.review, f"{name}: false alarms on the blank release: {blank.review}"
