"""The concept-question checks: visible form checks that never judge the choice, hidden key checks that explain."""

from __future__ import annotations

import pytest
import torch

from course_utils import checks
from course_utils.checks import CheckFailure


@pytest.mark.parametrize("answer", ["b", "B", " c ", "a"])
def test_expect_choice_accepts_any_option_in_any_case(answer):
    checks.expect_choice(answer, "abcd", what="answer_q")


@pytest.mark.parametrize("answer,says", [(2, "one letter in quotes"), ("e", "not one of the options"),
                                         ("ab", "not one of the options"), (None, "not answered yet"),
                                         (..., "not answered yet"), (["a"], "one letter in quotes")])
def test_expect_choice_says_what_is_wrong_with_the_form(answer, says):
    with pytest.raises(CheckFailure, match=says) as failure:
        checks.expect_choice(answer, "abcd", what="answer_q")
    assert "'a', 'b', 'c' or 'd'" in str(failure.value)


@pytest.mark.parametrize("answer", [3, 2.5, -1e9, torch.tensor(4.0), [7]])
def test_expect_numeric_accepts_numbers(answer):
    checks.expect_numeric(answer, what="answer_n", unit="GB")


@pytest.mark.parametrize("answer,says", [("3", "should be a number"), (True, "should be a number"),
                                         (float("nan"), "finite"), (None, "not answered yet"), ([1, 2], "should be a number")])
def test_expect_numeric_rejects_what_is_not_a_number(answer, says):
    with pytest.raises(CheckFailure, match=says):
        checks.expect_numeric(answer, what="answer_n", unit="GB")


def test_expect_mapping_checks_keys_and_values_not_the_matches():
    checks.expect_mapping({"x": "A", "y": "b"}, ["x", "y"], ["a", "b"], what="answer_m")
    with pytest.raises(CheckFailure, match="should be a dict"):
        checks.expect_mapping(["a", "b"], ["x", "y"], ["a", "b"], what="answer_m")
    with pytest.raises(CheckFailure, match="exactly the keys"):
        checks.expect_mapping({"x": "a"}, ["x", "y"], ["a", "b"], what="answer_m")
    with pytest.raises(CheckFailure, match=r"answer_m\['y'\] is not one of the options"):
        checks.expect_mapping({"x": "a", "y": "z"}, ["x", "y"], ["a", "b"], what="answer_m")


def test_expect_answer_explains_a_wrong_choice_without_printing_the_key():
    checks.expect_answer(" B", "b", what="Q1")
    with pytest.raises(CheckFailure) as failure:
        checks.expect_answer("c", "b", what="Q1", explain={"c": "c confuses X with Y."})
    message = str(failure.value)
    assert "c confuses X with Y." in message and "'b'" not in message and "expected" not in message
    with pytest.raises(CheckFailure, match="reread the section"):
        checks.expect_answer("d", "b", what="Q1", explain={"c": "..."})


def test_expect_answer_on_numbers_uses_a_relative_tolerance_and_names_typical_mistakes():
    checks.expect_answer(3100, 3072, rel=0.1, what="Q3")
    with pytest.raises(CheckFailure, match="wrong way"):
        checks.expect_answer(5461, 3072, rel=0.1, what="Q3", explain={4096 * 4 / 3: "converts the wrong way"})
    with pytest.raises(CheckFailure, match="should be a number"):
        checks.expect_answer("3072", 3072, what="Q3")
    with pytest.raises(CheckFailure) as failure:
        checks.expect_answer(1.0, 32.5, what="Q7", otherwise="half a byte per weight")
    assert "32.5" not in str(failure.value)


def test_expect_answer_on_a_matching_names_a_wrong_entry_and_its_explanation():
    key = {"agent": "a", "action": "b"}
    checks.expect_answer({"agent": "A", "action": "b"}, key, what="Q1")
    with pytest.raises(CheckFailure) as failure:
        checks.expect_answer({"agent": "a", "action": "c"}, key, what="Q1", explain={"action": "one token."})
    assert "1 of 2 matched wrongly" in str(failure.value) and "one token." in str(failure.value)


def test_a_custom_object_cannot_pass_for_the_right_answer():
    class Anything(str):
        def __eq__(self, other):
            return True

        __hash__ = str.__hash__

    with pytest.raises(CheckFailure):
        checks.expect_answer(Anything("z"), "b", what="Q")
