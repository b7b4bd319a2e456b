"""Which numbers of a target's text are not the question's: the one definition of "a number in the
question", shared by the gold teacher (which restates only the question in EoT comments) and the verify
stage's metric ``verify/<form>/computed_numbers_in_text``.

A number is a run of digits as a text writes it: ``1,000`` (thousands commas) is 1000, ``$5`` is 5,
``2.50`` is 2.5, ``.5`` is 0.5; a sign is ignored (``-3`` is 3). A number glued to letters, digits or
underscores on its left (``v2``, ``apples_2``, ``x2``) is part of a name, not a number. Number words
("half", "twice") are not numbers here: a text that says "half" states no number.

The question's numbers are the numbers it writes, plus what its written fractions and percentages
mean: ``1/2`` gives 1, 2 and 0.5; ``50%`` gives 50 and 0.5. So a comment that restates ``50%`` as
0.5 restates the question, and one that states any other number states something the question does
not: a computed result (arithmetic done in text), or a constant from outside the question (a chicken's
2 legs, 60 minutes in an hour). Both are counted; the gold teacher's PoT and EoT write neither.

Text outside the reasoning the tools run is each form's ``Form.text_outside`` (CoT: all of it; PoT:
comments and string literals; EoT: comment and other non-equation lines). Reads and writes nothing.
"""
from __future__ import annotations

import re
from fractions import Fraction

NUMBER = re.compile(r"(?<![A-Za-z0-9_.,])(?:\d{1,3}(?:,\d{3})+(?![\d])(?:\.\d+)?|\d+(?:\.\d+)?|\.\d+)")
"""A number as a text writes it (see the module docstring); its value is :func:`value`."""
_FRACTION = re.compile(rf"({NUMBER.pattern})\s*/\s*({NUMBER.pattern})")
_PERCENT = re.compile(rf"({NUMBER.pattern})\s*%")


def value(text: str) -> Fraction:
    """The exact value of a :data:`NUMBER` match: ``'1,000'`` -> 1000, ``'2.50'`` -> 5/2."""
    return Fraction(text.replace(",", ""))


def numbers(text: str) -> list[str]:
    """The numbers a text writes, as written (``'$1,000 and 2.5%'`` -> ``['1,000', '2.5']``)."""
    return NUMBER.findall(text)


def question_values(question: str) -> set[Fraction]:
    """Every value the question states: its numbers, and the values of its fractions and percentages."""
    values = {value(n) for n in numbers(question)}
    for m in _FRACTION.finditer(question):
        denominator = value(m.group(2))
        if denominator:
            values.add(value(m.group(1)) / denominator)
    values |= {value(m.group(1)) / 100 for m in _PERCENT.finditer(question)}
    return values


def absent_from(text: str, question: str | set[Fraction]) -> list[str]:
    """The numbers of ``text`` (as written) whose value the question does not state, in order."""
    known = question if isinstance(question, set) else question_values(question)
    return [n for n in numbers(text) if value(n) not in known]


def computed_in_text(form, completion: str, question: str) -> list[str]:
    """The numbers that ``form``'s training target of ``completion`` writes outside its equations or
    code (``form.text_outside``) and ``question`` does not state: arithmetic done in text."""
    return absent_from(form.text_outside(form.student_target(completion)), question)
