"""EoT: conventions, the forward pass, the sympy path, each named rule on and off, every verdict reason."""
from __future__ import annotations

import pytest

from distill.thoughts import get_form
from distill.thoughts.eot import RULES, clean, forward_pass, parse_system
from distill.thoughts.exemplars import EXEMPLARS

EOT = get_form("eot")
T = 2.0


def ans(text: str, strict: bool = False):
    return EOT.extract(text, timeout=T, strict=strict)


def test_the_instruction_and_student_input_are_exactly_as_in_the_method():
    assert EOT.instruction == "System of linear equations: (Do not simplify)"
    assert EOT.student_input("Q?") == "Question: Q?\nSystem of linear equations: (Do not simplify)\n"
    assert "ans" in EOT.teacher_messages("Q?")[0]["content"] and len(EOT.teacher_messages("Q?")) == 18


def test_every_exemplar_system_verifies_in_strict_mode():
    verdicts = EOT.verify_many(list(EOT.exemplars), [e.answer for e in EXEMPLARS], timeout=T, strict=True)
    assert [v.status for v in verdicts] == ["correct"] * 8


def test_the_method_example_with_an_unknown_is_solved_with_sympy():
    text = ("% Let the number of red marbles be x:\nred = x\n% There are three times as many blue marbles as red ones:\n"
            "blue = 3 * red\n% Together there are 48 marbles:\nred + blue = 48\n"
            "% How many blue marbles are there? The answer is blue:\nans = blue")
    e = ans(text, strict=True)
    assert e.answer == 36 and e.reason == "solved with sympy"


def test_a_forward_only_system_is_evaluated_exactly_without_the_solver():
    p = forward_pass(parse_system("total_eggs = 16\neggs_used = 3 + 4\neggs_sold = total_eggs - eggs_used\n"
                                  "income = eggs_sold * 2\nans = income"))
    assert p.value == 18 and p.job is None
    assert forward_pass(parse_system("a = 1 / 3\nans = a * 3")).value == 1  # exact fractions, no 0.999...


def test_definitions_may_come_in_any_order_and_on_either_side():
    assert ans("ans = total\ntotal = apples + pears\n12 = apples\npears = 3").answer == 15


def test_implicit_products_are_read_as_the_conventions_say():
    assert ans("x = 4\nans = 2x + 3(10) + (x)(2)", strict=True).answer == 46
    assert ans("v2 = 5\nans = v2 * 2", strict=True).answer == 10  # a digit inside a name is no product


def test_comments_fences_and_surrounding_prose_are_dropped():
    text = "Sure! Here are the equations.\n```\n% 16 eggs, a % line with = inside\neggs = 16\nans = eggs\n```\nDone."
    assert clean(text) == "% 16 eggs, a % line with = inside\neggs = 16\nans = eggs"
    assert EOT.student_target(text) == clean(text)
    assert ans(text, strict=True).answer == 16


@pytest.mark.parametrize("rule, text, flexible", [
    ("unicode_operators", "a = 3 \u00d7 4 \u2212 2\nans = a \u00f7 5", 2),
    ("currency_and_thousands", "price = $1,200\nans = price / 2", 600),
    ("percent_literal", "bill = 40\ntip = 15% * bill\nans = tip", 6),
    ("caret_as_power", "side = 3\nans = side^2", 9),
    ("reassignment_as_update", "total = 100\ntotal = total - 40\ntotal = total / 2\nans = total", 30),
    ("round_functions", "people = 14\nans = ceil(people / 4) + round(2.5) + floor(7 / 2) + abs(0 - 1)", 11),
])
def test_each_named_rule_repairs_in_flexible_mode_and_is_off_in_strict_mode(rule, text, flexible):
    assert rule in RULES
    assert ans(text).answer == pytest.approx(flexible)
    strict = ans(text, strict=True)
    assert strict.status in ("parse_error", "no_answer") and strict.reason


def test_the_update_rule_does_not_touch_a_genuine_equation_in_an_unknown():
    # meals has no value from the lines above, so `meals = 2 * meals - 5` is an equation, not an update
    assert ans("meals = x\nmeals = 2 * meals - 5\nans = meals").answer == 5


def test_no_rule_picks_among_several_solutions():
    e = ans("x**2 = 16\nans = x")
    assert e.status == "no_answer" and "2 solutions" in e.reason


def test_each_verdict_reason_on_real_looking_outputs():
    outputs = {
        "correct": ("% Natalia sold 48 clips in April:\napril = 48\n% half as many in May:\nmay = april / 2\n"
                    "ans = april + may", 72),
        "wrong_answer": ("april = 48\nmay = april * 2\nans = april + may", 72),
        "no_answer": ("% Let the clips in May be x:\nmay = x\napril = 48\nans = april + may", 72),
        "parse_error": ("april = 48\nmay = april / 2\nif may > 20: bonus = 1\nans = april + may", 72),
        "exec_error": ("april = 48\nweeks = 0\nper_week = april / weeks\nans = per_week", 72),
        "timeout": ("a*b*c + a**3 = 2\nb**3*c + c**2*a = 5\na**2 + b**2 + c**5 = 3\nans = a", 1),
    }
    verdicts = EOT.verify_many([t for t, _ in outputs.values()], [g for _, g in outputs.values()], timeout=1.0,
                               strict=True)
    assert [v.status for v in verdicts] == list(outputs)
    assert all(v.reason for v in verdicts[1:])
    assert "unconstrained" in verdicts[2].reason and "line 3" in verdicts[3].reason
    assert "division by zero" in verdicts[4].reason


def test_a_system_without_ans_or_with_contradictions_has_no_answer():
    assert "ans" in ans("a = 1\nb = 2").reason
    e = ans("a = 1\na = 2\nans = a")
    assert e.status == "no_answer" and "contradicts" in e.reason


def test_an_empty_completion_is_no_answer():
    assert [e.status for e in EOT.extract_many(["", None, "no equations here"], timeout=T)] == ["no_answer"] * 3


def test_gold_derived_systems_of_training_problems_verify(data_dir):
    from distill.problems import load_problems
    from distill.teachers.gold import StepError, derive

    texts, golds = [], []
    for p in load_problems("gsm8k", "train", data_dir)[:100]:
        try:
            texts.append(derive("eot", p.rationale, p.answer, p.question))
            golds.append(p.answer)
        except StepError:
            pass
    assert len(texts) >= 95  # not vacuous when derivation breaks
    verdicts = EOT.verify_many(texts, golds, timeout=T, strict=True)
    assert sum(v.correct for v in verdicts) >= 0.9 * len(texts)


def test_a_function_of_a_known_quantity_may_sit_in_an_equation_that_needs_solving():
    assert ans("people = 14\n4 * cars = 4 * ceil(people / 4)\nans = cars").answer == 4
    e = ans("x + 1 = 5\nans = ceil(x / 3)")
    assert e.status == "no_answer" and "only known after solving" in e.reason


def test_an_answer_beyond_a_float_is_no_answer_not_a_crash():
    from distill.thoughts.eot import FORM

    (e,) = FORM.extract_many(["a = 10**100\nb = a * a * a * a\nans = b"])
    assert e.status == "no_answer" and "too large" in e.reason
    (c,) = FORM.extract_many(["a = 10**100 * 10**100 * 10**100 * 10**100\na = 1\nans = a"])
    assert c.status == "no_answer" and "contradicts" in c.reason


SOLVE = 30.0  # sympy needs about 0.5-2 s for a general cubic here; a loaded machine must not turn that into a timeout


def test_a_complex_first_solution_does_not_end_the_search_for_the_real_one():
    # sympy lists x = 2 and two complex cube roots of 8; only the real one is a quantity
    e = EOT.extract("% the volume of a cube of side x is 8:\nx**3 = 8\nans = x", timeout=SOLVE, strict=True)
    assert e.status == "ok" and e.answer == 2 and e.reason == "solved with sympy"
    # here the two complex roots come first (sympy cannot even decide that they are not real)
    e = EOT.extract("x**3 + x + 1 = 0\nans = x", timeout=SOLVE)
    assert e.status == "ok" and e.answer == pytest.approx(-0.6823278038280194)


def test_a_system_with_only_complex_solutions_has_no_answer_naming_them():
    e = EOT.extract("x**2 = -4\nans = x", timeout=SOLVE)
    assert e.status == "no_answer" and "not a real number" in e.reason and "I" in e.reason


def test_real_roots_whose_realness_sympy_cannot_decide_are_evaluated_numerically():
    # casus irreducibilis: three real roots written with complex radicals, is_real None for each
    e = EOT.extract("x**3 - 3*x + 1 = 0\nans = x", timeout=SOLVE)
    assert e.status == "no_answer" and "3 solutions" in e.reason
    assert all(f"{v:g}" in e.reason for v in (-1.87939, 0.347296, 1.53209))


def test_a_value_the_solver_finds_beyond_a_float_is_no_answer_not_infinity():
    # x * y = ... is no definition for the forward pass: sympy solves it, to 1e900
    e = EOT.extract("a = 10**100\nb = a*a*a\nx * 1 = b\nx * y = b * b * b * b\nans = y*1", timeout=SOLVE)
    assert e.status == "no_answer" and "too large for a float" in e.reason


def test_the_text_outside_a_system_is_its_comment_lines_and_any_line_without_an_equation():
    target = "% A shirt costs $25:\nprice = 25\n# 20% off\nsale = price * 0.8\nans = sale"
    assert EOT.text_outside(target) == "% A shirt costs $25:\n# 20% off"


def test_an_output_that_needs_a_repair_rule_is_correct_lenient_and_not_strict():
    from distill.thoughts import get_form

    form = get_form("eot")
    outputs = ["apples = 26 \u2212 9\nans = apples", "apples = 26 - 9\nans = apples"]  # a unicode minus; plain
    flexible = form.verify_many(outputs, [17.0, 17.0])
    assert [v.status for v in flexible] == ["correct", "correct"]
    strict = form.verify_strict_many(outputs, [17.0, 17.0], flexible)
    assert [v.status for v in strict] == ["parse_error", "correct"] and "U+2212" in strict[0].reason
    assert form.rules and "unicode_operators" in form.rules
