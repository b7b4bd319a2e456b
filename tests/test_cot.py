"""CoT: the number after the last "The answer is", strict and flexible modes, the teacher prompt."""
from __future__ import annotations

import pytest

from distill.thoughts import get_form
from distill.thoughts.exemplars import EXEMPLARS

COT = get_form("cot")


def test_the_instruction_and_student_input_are_exactly_as_in_the_method():
    assert COT.instruction == "Let's think step by step."
    assert COT.student_input("How many?") == "Question: How many?\nLet's think step by step.\n"


def test_the_teacher_prompt_is_a_system_message_eight_exemplars_and_the_question():
    msgs = COT.teacher_messages("How many apples?")
    assert msgs[0]["role"] == "system" and msgs[-1] == {"role": "user", "content": "Question: How many apples?"}
    assert len(msgs) == 2 + 2 * len(EXEMPLARS) and len(EXEMPLARS) == 8
    assert [m["role"] for m in msgs[1:-1]] == ["user", "assistant"] * 8


def test_every_exemplar_verifies_in_strict_mode():
    verdicts = COT.verify_many(list(COT.exemplars), [e.answer for e in EXEMPLARS], strict=True)
    assert [v.status for v in verdicts] == ["correct"] * 8


def test_no_exemplar_is_a_test_question(data_dir):
    from distill.problems import load_problems

    questions = {p.question.strip().lower() for p in load_problems("gsm8k", "test", data_dir)}
    assert not any(e.question.strip().lower() in questions for e in EXEMPLARS)


@pytest.mark.parametrize("text, expected", [
    ("She pays 3 * 20 = $60.\nThe answer is 60.", 60),
    ("The answer is $1,080.", 1080),
    ("So the total is 1,250 dollars. The answer is: 1,250", 1250),
    ("The answer is 25%.", 25),
    ("The answer is 3 + 4 = 7.", 7),
    ("The answer is -3.", -3),
    ("The answer is \u22123.", -3),
    ("The answer is 2.5 hours.", 2.5),
    ("The answer is 3/4.", 0.75),
    ("First the answer is 5, but wait: 5 + 1 = 6. The answer is 6.", 6),
    ("THE ANSWER IS 12", 12),
    ("The final answer is 9.", 9),
])
def test_the_number_after_the_last_the_answer_is_is_read(text, expected):
    e = COT.extract(text, strict=True)
    assert e.status == "ok" and e.answer == pytest.approx(expected)


def test_strict_mode_needs_the_phrase_and_flexible_mode_falls_back_to_the_last_number():
    text = "Tom has 12 apples and buys 6 more, so he has 12 + 6 = 18 apples."
    assert COT.extract(text, strict=True).status == "no_answer"
    e = COT.extract(text)
    assert e.answer == 18 and "last number" in e.reason


def test_flexible_mode_reads_a_gsm8k_style_final_line_before_the_last_number():
    e = COT.extract("48 / 2 = 24 clips in May.\n#### 72\n(checked 3 times)")
    assert e.answer == 72 and "####" in e.reason


def test_each_verdict_reason_on_real_looking_outputs():
    outputs = {
        "correct": ("Natalia sold 48 / 2 = 24 clips in May.\nAltogether 48 + 24 = 72.\nThe answer is 72.", 72),
        "wrong_answer": ("Natalia sold 48 / 2 = 24 clips in May.\nThe answer is 24.", 72),
        "no_answer": ("I cannot solve this problem without more information.", 72),
        "parse_error": ("Altogether she sold many clips. The answer is seventy-two.", 72),
    }
    verdicts = COT.verify_many([t for t, _ in outputs.values()], [g for _, g in outputs.values()])
    assert [v.status for v in verdicts] == list(outputs)
    assert all(v.reason for v in verdicts[1:]) and verdicts[1].reason == "answer 24 != gold 72"
    assert all(v.form == "cot" and v.version == COT.version for v in verdicts)


def test_an_empty_or_missing_completion_is_no_answer():
    assert [e.status for e in COT.extract_many(["", None, "   "])] == ["no_answer"] * 3


def test_the_student_target_keeps_the_reasoning_without_blank_lines():
    assert COT.student_target("\n  Step one.  \n\nThe answer is 3.\n\n") == "Step one.\nThe answer is 3."


def test_verify_many_refuses_mismatched_lengths():
    with pytest.raises(ValueError, match="gold"):
        COT.verify_many(["The answer is 1."], [1.0, 2.0])


def test_a_cot_answer_found_by_a_fallback_is_correct_lenient_and_not_strict():
    from distill.thoughts import get_form

    form = get_form("cot")
    outputs = ["5 + 7 = 12 apples in all.", "5 + 7 = 12. The answer is 12."]
    flexible = form.verify_many(outputs, [12.0, 12.0])
    strict = form.verify_strict_many(outputs, [12.0, 12.0], flexible)
    assert [v.status for v in flexible] == ["correct", "correct"]
    assert [v.status for v in strict] == ["no_answer", "correct"]
