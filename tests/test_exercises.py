"""course_utils.exercises.needs_exercise: the one helper every notebook's demo cells use."""

from __future__ import annotations

import importlib

import pytest

from course_utils.exercises import needs_exercise


def test_an_unanswered_exercise_becomes_a_message_naming_it(capsys):
    with needs_exercise("top_k_filter"):
        raise NotImplementedError()
    out = capsys.readouterr().out
    assert "your top_k_filter: answer that exercise above, run its cell, then run this cell again" in out


def test_several_exercises_are_listed_in_plain_english(capsys):
    with needs_exercise("rouge_n", "rouge_l", "bleu"):
        raise NotImplementedError()
    assert "your rouge_n, rouge_l and bleu: answer those exercises above, run their cells" in capsys.readouterr().out


def test_a_real_bug_in_an_answer_still_raises(capsys):
    with pytest.raises(ZeroDivisionError):
        with needs_exercise("causal_mask"):
            1 / 0
    assert capsys.readouterr().out == ""


def test_code_after_a_finished_demo_runs_normally(capsys):
    with needs_exercise("causal_mask"):
        value = 3
    assert value == 3 and capsys.readouterr().out == ""


@pytest.mark.parametrize("topic", ["attention", "sampling", "finetuning", "rlhf"])
def test_every_topic_module_offers_the_same_helper(topic: str):
    module = importlib.import_module(f"course_utils.{topic}")
    assert module.needs_exercise is needs_exercise
