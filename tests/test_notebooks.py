"""Every student release notebook runs top to bottom with each exercise failing until it is answered.

The solutions notebooks themselves are executed by nbmake (``testpaths`` in pyproject.toml includes
``solutions``); the grading round trip (full marks / zero) is in test_grading*.py.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
RELEASES = sorted(p for p in (ROOT / "notebooks").glob("*/*.ipynb") if ".ipynb_checkpoints" not in p.parts)


def _is_test_cell(cell) -> bool:
    return cell.cell_type == "code" and cell.metadata.get("nbgrader", {}).get("grade", False)


def _errors(cell) -> list[dict]:
    return [o for o in cell.get("outputs", []) if o.get("output_type") == "error"]


@pytest.mark.slow
@pytest.mark.parametrize("path", RELEASES, ids=[p.parent.name for p in RELEASES])
def test_release_runs_and_every_exercise_fails_until_answered(path: Path, tmp_path: Path):
    from nbclient import NotebookClient

    work = tmp_path / path.parent.name
    shutil.copytree(path.parent, work)
    nb = nbformat.read(work / path.name, as_version=4)
    client = NotebookClient(nb, timeout=120, kernel_name="python3", allow_errors=True,
                            resources={"metadata": {"path": str(work)}})
    env = dict(os.environ, HF_HUB_OFFLINE="1", MPLBACKEND="Agg")
    os.environ.update(env)
    client.execute()

    tests = [c for c in nb.cells if _is_test_cell(c)]
    graded_in_source = any(c.metadata.get("nbgrader", {}).get("grade", False)
                           for c in nbformat.read(ROOT / "solutions" / path.parent.name / path.name, 4).cells)
    assert bool(tests) == graded_in_source, f"{path.name}: graded test cells lost in the release"
    passing = [c.metadata["nbgrader"]["grade_id"] for c in tests if not _errors(c)]
    assert not passing, f"these test cells pass on the blank release (they must fail until answered): {passing}"
    for cell in nb.cells:
        if cell.cell_type != "code" or _is_test_cell(cell):
            continue
        for err in _errors(cell):
            assert err["ename"] in ("NotImplementedError",), (
                f"{path.name}: a non-test cell fails on the blank release with {err['ename']}: {err['evalue']}\n"
                f"cell:\n{cell.source[:500]}")
