"""One number normaliser, used on gold answers and on predictions alike.

It reads the forms that occur in the benchmark files and in model output:
``1,080`` (thousands separators), ``9 (apples)`` (ASDiv units), ``$18``, ``3/4``,
``1 1/2``, ``25%``, ``-3`` and ``−3`` (U+2212), ``-(1/3)`` (ASDiv nluds-1331), and a trailing
period. A percentage keeps its number (``25%`` is 25), as GSM8K's gold answers do. Two answers
match within 1e-3.

What is refused on purpose: ratios and clock times (``3:4``, ``5:45``, ``3:30 p.m.``), ordinals
(``6th``), several answers (``5; 15; 20``) and words (``Yes``). ASDiv uses those forms, and reading
``3:4`` as 3 or 0.75 would invent a gold answer the data set does not state.
"""
from __future__ import annotations

import math
import re
from fractions import Fraction

TOLERANCE = 1e-3

_MINUS = "\u2212\u2013\u2012"  # minus sign, en dash, figure dash used as minus in the data
_CURRENCY = "$€£¥₹"
_NUMBER = (
    # A sign must touch its number (or currency sign): in "20 − 13" the dash is an operator.
    r"(?<![\w.])(?P<sign>[-+" + _MINUS + r"]?)(?:[" + _CURRENCY + r"]\s?)?"
    r"(?P<body>(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|\.\d+)"
    r"(?:\s(?P<mixnum>\d+)/(?P<mixden>\d+)|/(?P<den>\d+(?:\.\d+)?))?"
    r"(?P<pct>\s?%)?"
)
NUMBER_RE = re.compile(_NUMBER)
# A whole answer in parentheses with an optional sign: "-(1/3)".
_WRAPPED = re.compile(r"^(?P<sign>[-+" + _MINUS + r"]?)\s*\(\s*(?P<inner>[^()]+?)\s*\)\s*\.?$")
_UNIT_TAIL = re.compile(r"^(?:\s*\([^()]*\)|\s+[A-Za-z][A-Za-z .'-]*)?\s*\.?\s*$")


MAX_DIGITS = 300
"""A number written with more digits than this is not an answer (model output can ramble digits)."""


def _value(m: re.Match) -> float | None:
    if len(m.group(0)) > MAX_DIGITS:
        return None
    try:
        return _exact_value(m)
    except (OverflowError, ValueError, ZeroDivisionError):
        return None  # beyond a float (1e400): no usable answer, never a crash


def _exact_value(m: re.Match) -> float | None:
    body = m.group("body").replace(",", "")
    value = Fraction(body)
    if m.group("mixnum") is not None:
        den = int(m.group("mixden"))
        if den == 0:
            return None
        value += Fraction(int(m.group("mixnum")), den)
    elif m.group("den") is not None:
        den = Fraction(m.group("den"))
        if den == 0:
            return None
        value /= den
    if m.group("sign") and m.group("sign") != "+":
        value = -value
    return float(value)


def parse_number(text: str | int | float | None) -> float | None:
    """The number a whole answer string states, or None if it is not one number.

    Accepts a number followed by an optional unit (``9 (apples)``, ``12 dollars``) and a
    trailing period; refuses text with several numbers (``5; 15; 20``) or none (``Yes``).
    """
    if text is None or isinstance(text, bool):
        return None
    if isinstance(text, (int, float)):
        return float(text) if math.isfinite(text) else None
    s = str(text).strip().replace("\u00a0", " ")
    wrapped = _WRAPPED.match(s)
    if wrapped:
        inner = parse_number(wrapped.group("inner"))
        if inner is None or wrapped.group("sign") in ("", "+"):
            return inner
        return -inner
    m = NUMBER_RE.search(s)
    if m is None or s[: m.start()].strip(" $€£¥₹=") or not _UNIT_TAIL.match(s[m.end():]):
        return None
    return _value(m)


def numbers_in(text: str) -> list[float]:
    """Every number in free text, in order (for fallbacks such as "last number")."""
    out = []
    for m in NUMBER_RE.finditer(text.replace("\u00a0", " ")):
        value = _value(m)
        if value is not None:
            out.append(value)
    return out


def last_number(text: str) -> float | None:
    found = numbers_in(text)
    return found[-1] if found else None


def answers_match(prediction: float | None, gold: float | None, tolerance: float = TOLERANCE) -> bool:
    """True when both are numbers and |prediction - gold| < tolerance. A missing answer never matches."""
    if prediction is None or gold is None:
        return False
    try:
        return math.isfinite(prediction) and abs(float(prediction) - float(gold)) < tolerance
    except (TypeError, ValueError, OverflowError):
        return False
