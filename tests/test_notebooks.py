"""Every student release notebook runs top to bottom with each exercise failing until it is answered.

The solutions notebooks themselves are executed by nbmake (``testpaths`` in pyproject.toml includes
``solutions``); the grading round trip (full marks / zero) is in test_grading*.py.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest

from course_utils import cells, runner

ROOT = Path(__file__).resolve().parents[1]
RELEASES = sorted(p for p in (ROOT / "notebooks").glob("*/*.ipynb") if ".ipynb_checkpoints" not in p.parts)


@pytest.mark.slow
@pytest.mark.parametrize("path", RELEASES, ids=[p.parent.name for p in RELEASES])
def test_release_runs_and_every_exercise_fails_until_answered(path: Path):
    """A learner's run (the course's one runner, learner mode): every test cell fails, and the only errors in
    other cells are the exercises' NotImplementedError."""
    run = runner.run_notebook(path, mode="learner", timeout=120)
    assert not run.problem, f"{path.name}: {run.problem}"
    graded_in_source = any(cells.is_test_cell(c)
                           for c in nbformat.read(ROOT / "solutions" / path.parent.name / path.name, 4).cells)
    assert bool(run.checks) == graded_in_source, f"{path.name}: graded test cells lost in the release"
    passing = [c.grade_id for c in run.checks if c.passed]
    assert not passing, f"these test cells pass on the blank release (they must fail until answered): {passing}"
    assert not run.other_errors, f"{path.name}: cells other than exercises fail on the blank release: " \
        f"{run.other_errors}"
