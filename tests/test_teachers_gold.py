"""The gold teacher: CoT, PoT and EoT derived from GSM8K's <<expr=result>> annotations."""
from __future__ import annotations

import pytest

from distill.teachers import Job
from distill.teachers.gold import GoldTeacher, StepError, cot_from, derive, format_number, program_from

NATALIA = ("Natalia sold 48/2 = <<48/2=24>>24 clips in May.\n"
           "Natalia sold 48+24 = <<48+24=72>>72 clips altogether in April and May.")


def test_the_cot_is_the_solution_without_annotations_ending_with_the_answer():
    assert cot_from(NATALIA, 72.0) == ("Natalia sold 48/2 = 24 clips in May.\n"
                                       "Natalia sold 48+24 = 72 clips altogether in April and May.\nThe answer is 72.")


def test_each_calculator_step_becomes_a_program_line_reusing_earlier_results():
    assert program_from(NATALIA, 72.0) == "v1 = 48 / 2\nv2 = 48 + v1\nans = v2"


def test_an_unannotated_last_calculation_is_still_read():
    text = "She has 3*4 = <<3*4=12>>12 apples.\nShe gives half away, 12/2 = 6 apples."
    assert program_from(text, 6.0) == "v1 = 3 * 4\nv2 = v1 / 2\nans = v2"


def test_percent_times_sign_and_leading_zeros_are_normalised():
    assert program_from("<<20%*50=10>>10 and <<2x05=10>>10", 10.0).splitlines()[:2] == ["v1 = 20 / 100 * 50",
                                                                                      "v2 = 2 * 5"]


def test_ans_points_at_the_last_step_that_gives_the_gold_answer():
    assert program_from("<<2+3=5>>5 then <<5*0=0>>0", 5.0).endswith("ans = v1")


def test_a_solution_without_calculations_cannot_give_a_program():
    with pytest.raises(StepError, match="no <<expr=result>>"):
        derive("pot", "He simply has five.", 5.0)


def test_numbers_are_written_without_scientific_notation():
    assert [format_number(x) for x in (72.0, 0.25, 1_500_000.0, -3.0)] == ["72", "0.25", "1500000", "-3"]


def test_the_teacher_gives_a_failed_answer_with_a_reason_for_what_it_cannot_derive():
    jobs = [Job("a", "eot", 1, "q", 72.0, (), NATALIA), Job("b", "pot", 1, "q", 5.0, (), None)]
    got = {job.problem_id: answer for job, answer in GoldTeacher().answer(jobs)}
    assert got["a"].completions == ["v1 = 48 / 2\nv2 = 48 + v1\nans = v2"]
    assert got["b"].completions == [None] and got["b"].reasons[0].startswith("underivable")


def test_most_of_the_first_200_training_problems_derive_and_verify_in_every_form(data_dir):
    from distill.problems import load_problems
    from teacher_fakes import real_forms

    if not real_forms():
        pytest.skip("the thought forms are not written yet")
    from distill.thoughts import get_form

    problems = load_problems("gsm8k", "train", data_dir)[:200]
    for name in ("cot", "pot", "eot"):
        texts, golds = [], []
        for p in problems:
            try:
                texts.append(derive(name, p.rationale, p.answer))
                golds.append(p.answer)
            except StepError:
                pass
        verdicts = get_form(name).verify_many(texts, golds)
        assert sum(v.correct for v in verdicts) >= 0.85 * len(problems), name
