"""The orientation: 00_start sorts first and says where to go, how long it takes and how checks work; the review
sorts last; every topic notebook explains its exercises and questions; the self-check's helper."""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest
import torch

from course_utils.review.selfcheck import compare_prediction

ROOT = Path(__file__).resolve().parents[1]
TOPICS = ["01_attention", "02_sampling", "03_finetuning", "04_rlhf", "05_quantization"]


def _text(folder: str, name: str) -> str:
    nb = nbformat.read(ROOT / folder / name / f"{name}.ipynb", as_version=4)
    return "\n".join(c.source for c in nb.cells)


@pytest.mark.parametrize("folder", ["solutions", "notebooks"])
def test_start_sorts_first_and_review_last(folder: str):
    names = sorted(p.name for p in (ROOT / folder).iterdir() if p.is_dir() and not p.name.startswith("."))
    assert names[0] == "00_start" and names[-1] == "99_review", names
    assert set(TOPICS) <= set(names)


def test_start_gives_route_hours_prerequisites_checks_and_progress():
    text = _text("solutions", "00_start")
    for topic in TOPICS + ["99_review"]:
        row = next((line for line in text.splitlines() if line.startswith(f"| `{topic}`")), "")
        assert re.search(r"\d+(\.\d+)? h|\d+ min", row), f"no expected time for {topic} in the route table: {row!r}"
    for needed in ("broadcasting", "autograd", "course validate", "course progress", "hidden tests", "❓",
                   "✏️ Exercise N", "NotImplementedError"):
        assert needed in text, f"00_start does not mention {needed!r}"
    assert len(re.findall(r"^prediction_\d+ = \.\.\.", text, re.M)) >= 5, "the self-check needs five predictions"


@pytest.mark.parametrize("topic", TOPICS)
def test_every_topic_notebook_says_how_its_exercises_and_questions_work(topic: str):
    intro = nbformat.read(ROOT / "solutions" / topic / f"{topic}.ipynb", as_version=4).cells[0].source
    assert re.search(r"\*\*How (the exercises work|to work)\.\*\*", intro), f"{topic}: no 'How the exercises work' paragraph"
    assert "hidden" in intro.lower() or "more checks run when" in intro.lower(), f"{topic}: hidden tests not mentioned"
    assert "❓" in intro, f"{topic}: concept questions not explained in the introduction"


def test_nothing_names_the_old_review_notebook():
    offenders = []
    for path in [ROOT / "README.md", *ROOT.glob("docs/*.md"), *ROOT.glob("course_utils/**/*.py"),
                 *ROOT.glob("course_utils/decks/*.json"), *ROOT.glob("benchmarks/*"), *ROOT.glob("tests/*.py")]:
        if path.is_file() and path.name != "test_start.py" and "00_review" in path.read_text(errors="ignore"):
            offenders.append(str(path.relative_to(ROOT)))
    assert not offenders, f"still naming 00_review: {offenders}"


def test_compare_prediction_judges_shapes_numbers_and_waits_for_a_prediction(capsys):
    assert compare_prediction((2, 4), torch.Size([2, 4]), what="shape", explain="why")
    assert compare_prediction([2, 4, 6], torch.tensor([2.0, 4.0, 6.0]), what="grad", explain="why")
    assert compare_prediction(0, torch.tensor(0.0), what="p", explain="why")
    assert not compare_prediction((4, 3), torch.Size([3, 4]), what="shape", explain="because")
    out = capsys.readouterr().out
    assert "✅ shape: (2, 4)" in out and "❌ shape: you predicted (4, 3), torch says (3, 4)." in out and "because" in out
    assert not compare_prediction(..., 1, what="w", explain="hidden until you predict")
    assert "write your prediction" in capsys.readouterr().out
