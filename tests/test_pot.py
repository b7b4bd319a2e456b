"""PoT: programs that assign ``ans``, run in the sandbox; every verdict reason on real-looking output."""
from __future__ import annotations

import pytest

from distill.thoughts import get_form
from distill.thoughts.exemplars import EXEMPLARS

POT = get_form("pot")
T = 2.0  # a short limit keeps the suite quick; the default is 5 s


def test_the_instruction_has_the_curly_apostrophe_of_the_method():
    assert POT.instruction == "Let\u2019s break down the code step by step"
    assert POT.student_input("Q?") == "Question: Q?\nLet\u2019s break down the code step by step\n"


def test_every_exemplar_program_verifies_in_strict_mode():
    verdicts = POT.verify_many(list(POT.exemplars), [e.answer for e in EXEMPLARS], timeout=T, strict=True)
    assert [v.status for v in verdicts] == ["correct"] * 8
    assert len(POT.teacher_messages("Q?")) == 18


def test_a_fenced_program_with_prose_around_it_is_cleaned_for_running_and_for_training():
    text = "Here is the program:\n```python\neggs = 16\nans = eggs - 3 - 4\n```\nIt prints nothing."
    assert POT.student_target(text) == "eggs = 16\nans = eggs - 3 - 4"
    assert POT.verify(text, 9, timeout=T).status == "correct"


def test_each_verdict_reason_on_real_looking_outputs():
    outputs = {
        "correct": ("clips_april = 48\nclips_may = clips_april / 2\nans = clips_april + clips_may", 72),
        "wrong_answer": ("clips_april = 48\nclips_may = clips_april * 2\nans = clips_april + clips_may", 72),
        "no_answer": ("clips_april = 48\nclips_may = clips_april / 2\ntotal = clips_april + clips_may", 72),
        "parse_error": ("To solve this, first compute the clips sold in May.\nans = 72", 72),
        "exec_error": ("boxes = 0\nans = 72 / boxes", 72),
        "timeout": ("total = 0\nwhile total != 72:\n    total += 5\nans = total", 72),
        "unsafe": ("import numpy as np\nans = np.sum([48, 24])", 72),
    }
    verdicts = POT.verify_many([t for t, _ in outputs.values()], [g for _, g in outputs.values()], timeout=T,
                               strict=True)
    assert [v.status for v in verdicts] == list(outputs)
    reasons = [v.reason for v in verdicts]
    assert all(reasons[1:])
    assert "ans" in reasons[2] and "SyntaxError" in reasons[3] and "ZeroDivisionError" in reasons[4]
    assert "numpy" in reasons[6]


@pytest.mark.parametrize("program, expected", [
    ("from fractions import Fraction\nans = Fraction(7, 2)", 3.5),
    ("from decimal import Decimal\nans = Decimal('2.50') * 4", 10),
    ("import math\nans = math.ceil(23 / 5)", 5),
    ("ans = '42'", 42),
    ("import datetime\nans = (datetime.date(2024, 3, 1) - datetime.date(2024, 2, 1)).days", 29),
    ("prices = [3, 4.5, 2]\nans = sum(p * 2 for p in prices)", 19),
    ("def total(a, b):\n    return a + b\nans = total(20, 22)", 42),
])
def test_ordinary_python_and_the_allowed_modules_work(program, expected):
    e = POT.extract(program, timeout=T, strict=True)
    assert e.status == "ok" and e.answer == pytest.approx(expected)


def test_a_non_numeric_ans_is_a_failure_with_its_type():
    got = POT.extract_many(["ans = [1, 2]", "ans = True", "ans = 'many'", "ans = float('inf')"], timeout=T)
    assert [e.status for e in got] == ["no_answer", "no_answer", "no_answer", "no_answer"]
    assert "list" in got[0].reason and "bool" in got[1].reason and "'many'" in got[2].reason


def test_flexible_mode_calls_solution_and_reads_printed_numbers_and_strict_mode_does_not():
    pal = "def solution():\n    apples = 5\n    return apples * 3"
    printing = "apples = 5\nprint('total apples:', apples * 3)"
    assert [e.answer for e in POT.extract_many([pal, printing], timeout=T)] == [15, 15]
    assert POT.extract(printing, timeout=T).reason == "fallback: last number printed"
    assert [e.status for e in POT.extract_many([pal, printing], timeout=T, strict=True)] == ["no_answer"] * 2


def test_an_empty_completion_is_no_answer_without_running_anything():
    assert POT.extract("", timeout=T).status == "no_answer"
    assert POT.extract(None, timeout=T).status == "no_answer"


@pytest.mark.parametrize("program, reason", [
    ("x = 1\ny = 2\nmatch x:\n    case 1:\n        ans = y", "line 3: match statements are not allowed"),
    ("class A:\n    pass", "line 1: class definitions are not allowed"),
    ("ans = 1\nwith x:\n    pass", "line 2: with blocks are not allowed"),
    ("ans = 1\nans = '{}'.format(2)", "line 2: the attribute 'format' is not allowed"),
    ("def g():\n    yield 1\nans = 1", "line 2: yield expressions are not allowed"),
    ("ans = 1\nimport numpy", "line 2: import of 'numpy' is not allowed (allowed: math, fractions, decimal, datetime)"),
    ("from math import sys", "line 1: 'sys' is not an allowed name of math"),
    ("x = [1]\nx.foo = 2", "line 2: the attribute 'foo' is not allowed"),
    ("ans = getattr(1, 'real')", "line 1: the builtin 'getattr' is not available in the sandbox"),
])
def test_a_refused_program_is_unsafe_with_its_line_and_construct(program, reason):
    e = POT.extract(program, timeout=T, strict=True)
    assert e.status == "unsafe" and e.reason.startswith(reason)


def test_ordinary_methods_f_strings_and_the_allowed_module_api_pass_the_check():
    program = ("import math\nfrom decimal import Decimal, ROUND_HALF_UP\nprices = {'pen': 2, 'book': 5}\n"
               "names = sorted(prices.keys())\nnames.append('x')\ntotal = sum(v for k, v in prices.items())\n"
               "price = Decimal('2.675').quantize(Decimal('0.01'), rounding=ROUND_HALF_UP)\n"
               "print(f'total {total:.2f} and {price}')\nans = math.floor(total * 1.5) + len(names)")
    e = POT.extract(program, timeout=T, strict=True)
    assert e.status == "ok" and e.answer == 13


def test_the_text_outside_a_program_is_its_comments_and_strings_never_its_code():
    program = 'price = 25  # $25 a shirt\nsale = price * 0.8\nprint("sale price", sale, "was 20.0")\nans = sale'
    assert POT.text_outside(program).splitlines() == ["# $25 a shirt", '"sale price"', '"was 20.0"']
    assert POT.text_outside('x = "unclosed\nans = 1') == 'x = "unclosed\nans = 1'  # not Python: all of it


def test_strict_runs_again_only_programs_a_fallback_may_have_answered():
    from distill.thoughts import get_form

    form = get_form("pot")
    outputs = ["x = 3\nprint(x * 4)", "def solution():\n    return 12", "ans = 12"]
    flexible = form.verify_many(outputs, [12.0] * 3)
    assert [v.status for v in flexible] == ["correct"] * 3
    assert [form.strict_may_differ(o, v) for o, v in zip(outputs, flexible)] == [True, True, False]
    strict = form.verify_strict_many(outputs, [12.0] * 3, flexible)
    assert [v.status for v in strict] == ["no_answer", "no_answer", "correct"]
