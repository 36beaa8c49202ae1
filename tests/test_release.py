"""Release hygiene: notebooks/ is exactly what `course release` makes of solutions/, and leaks nothing.

`course release` regenerates notebooks/ from solutions/ (nbgrader's generate_assignment with a temporary
gradebook): run it and commit notebooks/ whenever a solutions notebook changes.
"""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest

from course_utils import grading

ROOT = Path(__file__).resolve().parents[1]
SOURCES = sorted(p for p in (ROOT / "solutions").glob("*/*.ipynb") if ".ipynb_checkpoints" not in p.parts)
RELEASES = sorted(p for p in (ROOT / "notebooks").glob("*/*.ipynb") if ".ipynb_checkpoints" not in p.parts)
MARKERS = ("BEGIN SOLUTION", "END SOLUTION", "BEGIN HIDDEN TESTS", "END HIDDEN TESTS")


def _release_of(source: Path) -> Path:
    return ROOT / "notebooks" / source.parent.name / source.name


@pytest.fixture(scope="module")
def fresh(tmp_path_factory) -> Path:
    """`course release` of every assignment into a temporary folder."""
    if not SOURCES:
        pytest.skip("no solutions notebooks yet")
    out = tmp_path_factory.mktemp("release")
    grading.release(ROOT, sorted({p.parent.name for p in SOURCES}), out)
    return out


def test_every_solutions_notebook_has_a_release():
    missing = [str(_release_of(p).relative_to(ROOT)) for p in SOURCES if not _release_of(p).is_file()]
    assert not missing, f"not released yet: {missing}; run `course release` (or `make release`) and commit notebooks/"


def test_no_release_without_a_source():
    orphans = [str(p.relative_to(ROOT)) for p in RELEASES
               if not (ROOT / "solutions" / p.parent.name / p.name).is_file()]
    assert not orphans, f"notebooks/ has notebooks with no solutions/ source: {orphans}"


@pytest.mark.parametrize("source", SOURCES, ids=[p.parent.name for p in SOURCES])
def test_release_is_in_sync_with_its_source(source: Path, fresh: Path):
    committed = _release_of(source)
    if not committed.is_file():
        pytest.skip(f"{committed.relative_to(ROOT)} not released yet (see test_every_solutions_notebook_has_a_release)")
    regenerated = fresh / source.parent.name / source.name
    if committed.read_bytes() != regenerated.read_bytes():
        old, new = nbformat.read(committed, as_version=4), nbformat.read(regenerated, as_version=4)
        differ = [i for i, (a, b) in enumerate(zip(old.cells, new.cells)) if a != b]
        pytest.fail(f"{committed.relative_to(ROOT)} differs from `course release` of {source.relative_to(ROOT)} "
                    f"(cells {differ[:10]}, {len(old.cells)} vs {len(new.cells)} cells): run `course release` "
                    "and commit notebooks/")


def test_release_is_deterministic(fresh: Path, tmp_path: Path):
    name = SOURCES[0].parent.name
    grading.release(ROOT, [name], tmp_path)
    for path in (fresh / name).glob("*.ipynb"):
        assert (tmp_path / name / path.name).read_bytes() == path.read_bytes()


def _regions(source: str, begin: str, end: str) -> list[str]:
    lines, inside, out = source.split("\n"), False, []
    for line in lines:
        if begin in line:
            inside = True
        elif end in line:
            inside = False
        elif inside:
            out.append(line.strip())
    return out


@pytest.mark.parametrize("release", RELEASES, ids=[p.parent.name for p in RELEASES])
def test_release_leaks_no_solution_and_no_hidden_test(release: Path):
    text = release.read_text()
    for marker in MARKERS:
        assert marker not in text, f"{release.relative_to(ROOT)} contains {marker!r}"
    source_path = ROOT / "solutions" / release.parent.name / release.name
    if not source_path.is_file():
        pytest.skip("no source to compare with")
    source, student = nbformat.read(source_path, as_version=4), nbformat.read(release, as_version=4)
    cells = {c.metadata.get("nbgrader", {}).get("grade_id"): c for c in student.cells}
    leaks = []
    for cell in source.cells:
        grade_id = cell.metadata.get("nbgrader", {}).get("grade_id")
        if grade_id not in cells:
            continue
        outside = set(line.strip() for line in re.sub(r"### BEGIN (SOLUTION|HIDDEN TESTS).*?### END \1", "",
                                                      cell.source, flags=re.S).split("\n"))
        secret = _regions(cell.source, "BEGIN SOLUTION", "END SOLUTION") + \
            _regions(cell.source, "BEGIN HIDDEN TESTS", "END HIDDEN TESTS")
        released_lines = set(line.strip() for line in cells[grade_id].source.split("\n"))
        leaks += [f"{grade_id}: {line}" for line in secret
                  if len(line) >= 20 and line in released_lines and line not in outside]
    assert not leaks, f"{release.relative_to(ROOT)} leaks solution or hidden-test lines: {leaks[:5]}"
    for cell in student.cells:
        assert not cell.get("outputs"), f"{release.relative_to(ROOT)} ships cell outputs"


EXERCISE_HEADING = re.compile(r"^### ✏️ Exercise (\d+) — .+ \((\d+) points?\)$", re.M)


@pytest.mark.parametrize("source", SOURCES, ids=[p.parent.name for p in SOURCES])
def test_exercise_headings_are_numbered_in_order_and_state_the_points_their_tests_carry(source: Path):
    """House style: '### ✏️ Exercise N — title (P points)'; P is what the graded cells up to the next exercise
    or section heading are worth, so a learner reads the same points the gradebook will show."""
    stated: list[tuple[int, int]] = []  # (number, points in the heading)
    carried: list[int] = []  # points of the graded cells under each heading
    in_exercise = False
    for cell in nbformat.read(source, as_version=4).cells:
        if cell.cell_type == "markdown":
            loose = re.findall(r"^#+ .*Exercise \d+.*$", cell.source, re.M)
            found = EXERCISE_HEADING.findall(cell.source)
            assert len(found) == len(loose), f"{source.name}: heading not in the house form: {loose}"
            if found:
                stated.append((int(found[-1][0]), int(found[-1][1])))
                carried.append(0)
                in_exercise = True
            elif re.search(r"^## ", cell.source, re.M):
                in_exercise = False
        meta = cell.metadata.get("nbgrader", {})
        if meta.get("grade") and in_exercise:
            carried[-1] += int(meta.get("points", 0))
    graded_total = sum(int(c.metadata.get("nbgrader", {}).get("points", 0)) for c in
                       nbformat.read(source, as_version=4).cells if c.metadata.get("nbgrader", {}).get("grade"))
    assert [n for n, _ in stated] == list(range(1, len(stated) + 1)), f"{source.name}: exercises out of order"
    assert [p for _, p in stated] == carried, f"{source.name}: headings state {stated}, graded cells carry {carried}"
    assert sum(carried) == graded_total, f"{source.name}: graded cells outside any exercise section"
