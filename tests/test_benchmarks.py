"""`make bench` (benchmarks/run.py): it measures a real notebook run and keeps the README's table current.

The full benchmark takes minutes and belongs to `make bench`; here it runs on the one-page fixture assignment
(no autograding, no library race), which is enough to prove that the figures come from a real execution.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import run as bench

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "tests" / "fixtures" / "grading" / "course" / "solutions"


@pytest.fixture(scope="module")
def fixture_results(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, str]:
    out = tmp_path_factory.mktemp("bench")
    assert bench.main(["--source", str(FIXTURE), "--no-autograde", "--no-libraries", "--out", str(out)]) == 0
    return json.loads((out / "results.json").read_text()), (out / "results.md").read_text()


def test_a_notebook_run_is_measured(fixture_results: tuple[dict, str]):
    results, markdown = fixture_results
    [row] = results["notebooks"]
    assert row["notebook"] == "01_fixture"
    normal, graded = row["normal"], row["autograde"]
    assert normal["ok"] and graded["ok"], (normal.get("error"), graded.get("error"))
    assert 0 < normal["wall_s"] < 300
    assert 20 < normal["peak_rss_mb"] < 5000, "the kernel imports torch: tens of MB at least"
    assert results["course"]["total_s"] == pytest.approx(normal["wall_s"], abs=0.1)
    assert row["widgets"] is None, "the fixture shows no widget"
    assert "| 01_fixture |" in markdown and "no observed control" in markdown


def test_a_failing_notebook_is_reported_not_hidden(tmp_path: Path):
    broken = tmp_path / "src" / "09_broken"
    broken.mkdir(parents=True)
    (broken / "09_broken.ipynb").write_text(json.dumps({
        "cells": [{"cell_type": "code", "execution_count": None, "id": "c1", "metadata": {}, "outputs": [],
                   "source": "raise RuntimeError('deliberately broken')"}],
        "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
        "nbformat": 4, "nbformat_minor": 5}))
    out = tmp_path / "out"
    bench.main(["--source", str(tmp_path / "src"), "--no-autograde", "--no-libraries", "--no-autograde-mode",
                "--out", str(out)])
    results = json.loads((out / "results.json").read_text())
    assert not results["notebooks"][0]["normal"]["ok"]
    assert "deliberately broken" in results["notebooks"][0]["normal"]["error"]
    assert "failed ❌" in (out / "results.md").read_text()
    assert results["course"]["ok"] is False


def test_update_readme_replaces_only_the_marked_section(fixture_results: tuple[dict, str]):
    results, _ = fixture_results
    readme = f"# Title\n\nintro\n\n{bench.README_BEGIN}\nold table\n{bench.README_END}\n\n## After\nkept\n"
    updated = bench.update_readme(readme, bench.readme_summary(results))
    assert "old table" not in updated
    assert "| 01_fixture |" in updated
    assert updated.startswith("# Title\n\nintro\n\n") and updated.endswith(f"{bench.README_END}\n\n## After\nkept\n")
    assert bench.update_readme(updated, bench.readme_summary(results)) == updated, "idempotent"


def test_update_readme_without_markers_says_what_to_add():
    with pytest.raises(ValueError, match="bench:begin"):
        bench.update_readme("# A README without the section\n", "table")


def test_the_repository_readme_has_the_section():
    text = (ROOT / "README.md").read_text()
    assert bench.README_BEGIN in text and bench.README_END in text
