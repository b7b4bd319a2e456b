"""The gold teacher: every form derived from GSM8K's annotated solutions, no API.

GSM8K solutions mark each calculator step as ``<<expr=result>>``:
``Natalia sold 48/2 = <<48/2=24>>24 clips in May.\\nNatalia sold 48+24 = <<48+24=72>>72 ...``

This module reads a solution once for every form (``Solution``) and asks the form to write itself
(``derive``: the form's ``from_gold``, distill/thoughts/<form>.py). What it reads is what the forms
share: the solution's text without annotations; its steps as ``name = expr`` lines, where a number
equal to an earlier step's result becomes that step's name, and each quantity is named in snake_case
from the words of its solution sentence (the words after the result, ``24 clips in May`` ->
``clips_in_may``; else the words before the calculation; ``vK`` when neither gives a name), so the
forms that compute (PoT, EoT) name every quantity alike; the target (the last step whose value is
the gold answer); the numbers each step writes; and the question's sentences (the facts it states,
with their numbers, and the sentence that asks).

Steps are read and computed with exact fractions by distill/arithmetic.py (Python's ``ast`` against a
whitelist; nothing is evaluated), the reader of the EoT form, so every step read here is an
expression the EoT verifier reads; a step it refuses fails in this teacher's own words
(``unsupported BinOp`` for ``560//10``). This module keeps what is GSM8K's: where the annotations
stand, how their text is written (``$``, thousands commas, ``x`` for times, ``%``), which literal is
an earlier step's result, the names of the quantities, and the sentences of the question. A problem
without annotations (or with a step we cannot read) is a failed answer with a reason; whether a
derived program or system gives the gold answer is left to the verify stage, so the yield is
measured by the real verifiers. (The module is over 450 lines because reading GSM8K is one job:
annotations, quantity names and question sentences follow one dataset's writing, and every form's
``from_gold`` reads them together; split, one format's rules would live in several files.)
"""
from __future__ import annotations

import ast
import keyword
import math
import re
from dataclasses import dataclass
from fractions import Fraction
from functools import cached_property
from typing import Iterator, Sequence

from distill import arithmetic
from distill.answers import answers_match, parse_number
from distill.teachers import Answer, Job, canonical_request, request_hash
from distill.thoughts import get_form, numbers

ANNOTATION = re.compile(r"<<([^<>]*)>>")
_TIMES = re.compile(r"(?<=[\d)\s])[x×X](?=[\s\d(.])")
_PERCENT = re.compile(r"(\d+(?:\.\d+)?)\s*%")
_LEADING_ZERO = re.compile(r"(?<![\d.])0+(?=\d)")


class StepError(ValueError):
    """A calculator annotation we cannot read as arithmetic."""


def format_number(x: float) -> str:
    """72.0 -> '72', 0.25 -> '0.25'; never scientific notation."""
    if float(x).is_integer():
        return str(int(x))
    return f"{x:.10f}".rstrip("0").rstrip(".")


def strip_annotations(text: str) -> str:
    return ANNOTATION.sub("", text)


def _normalise(expr: str) -> str:
    expr = expr.replace("$", "").replace(",", "").replace("÷", "/").replace("^", "**").replace("−", "-")
    expr = _TIMES.sub("*", expr)
    expr = _PERCENT.sub(r"(\1/100)", expr)
    return _LEADING_ZERO.sub("", expr).strip()


def _value(expr: ast.expr, env: dict[str, Fraction]) -> Fraction:
    """The exact value of a step whose names are earlier steps (``env``); StepError when it has none."""
    try:
        return arithmetic.evaluate(arithmetic.read(expr, functions=False), env)
    except arithmetic.Refused as exc:
        if isinstance(exc.node, ast.BinOp) and isinstance(exc.node.op, ast.Pow):  # exponent not a small number
            raise StepError("only small integer powers are read") from None
        raise StepError(f"unsupported {type(exc.node).__name__}") from None
    except arithmetic.Unknown:
        raise StepError("unsupported Name") from None  # a word of the annotation, not an earlier step
    except arithmetic.NeedsSolver:  # a fractional power
        raise StepError("only small integer powers are read") from None
    except arithmetic.Undefined as exc:
        raise StepError(exc.reason) from None


class _Substitute(ast.NodeTransformer):
    """Replace a literal equal to an earlier step's stated result by that step's variable."""

    def __init__(self, results: list[tuple[str, Fraction]]):
        self.results = results

    def visit_Constant(self, node: ast.Constant):
        if isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
            if isinstance(node.value, float) and not math.isfinite(node.value):
                return node  # 1e999 reads as inf: no earlier result equals it, and _value refuses it
            value = Fraction(str(node.value))
            for name, result in reversed(self.results):  # the most recent step wins a tie
                if result == value:
                    return ast.copy_location(ast.Name(id=name, ctx=ast.Load()), node)
        return node


# A calculation the annotator left unmarked, usually the last line: "20/4 = $5", "$40 − $4 = $36".
_NUM = r"(?:\d[\d,]*(?:\.\d+)?|\.\d+)"
_PLAIN_STEP = re.compile(rf"((?:\$?{_NUM}\s*[-+*/×x−]\s*)+\$?{_NUM})\s*=\s*\$?({_NUM})(?![\d/.,]*\d)")


@dataclass(frozen=True)
class RawStep:
    """One calculation of a solution and where it stands: ``before`` is the text of its sentence up to
    the calculation, ``after`` the text after its result, ``sentence`` the whole sentence."""
    raw: str
    before: str
    after: str
    sentence: str


_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z$\d])")
_RESULT = re.compile(rf"\s*\$?\s*-?{_NUM}\s*%?")


def _sentence_at(line: str, pos: int) -> tuple[int, int]:
    """The span of the sentence of ``line`` that holds position ``pos``."""
    start, end = 0, len(line)
    for m in _SENTENCE_END.finditer(line):
        if m.start() < pos:
            start = m.end()
        else:
            end = m.start()
            break
    return start, end


def raw_step_contexts(rationale: str) -> list[RawStep]:
    """The ``expr=result`` steps of a solution in order, each with its sentence: its annotations, and on
    a line without any, a plain ``a op b = c`` calculation (GSM8K's annotators sometimes skipped the
    last step)."""
    steps = []
    for line in rationale.splitlines():
        annotations = list(ANNOTATION.finditer(line))
        matches = annotations or list(_PLAIN_STEP.finditer(line))
        previous_end = 0
        for m in matches:
            if annotations:
                raw = m.group(1)
                result = _RESULT.match(line, m.end())
                after_at = result.end() if result else m.end()
            else:
                raw = f"{m.group(1)}={m.group(2)}"
                after_at = m.end()
            start, end = _sentence_at(line, m.start())
            before = line[max(start, previous_end):m.start()]
            steps.append(RawStep(raw, before, line[after_at:max(end, after_at)], line[start:end]))
            previous_end = after_at
    return steps


@dataclass(frozen=True)
class Step:
    """A read calculation: ``expr`` names earlier steps ``v1``, ``v2``, ... (``v<k>`` is step k)."""
    expr: ast.expr
    value: Fraction
    context: RawStep


def read_steps(rationale: str) -> list[Step]:
    """Every calculation of a solution read as arithmetic on earlier steps, with exact values."""
    contexts = raw_step_contexts(rationale)
    if not contexts:
        raise StepError("no <<expr=result>> annotations or plain calculations")
    steps: list[Step] = []
    stated: list[tuple[str, Fraction]] = []
    env: dict[str, Fraction] = {}
    for k, context in enumerate(contexts, 1):
        raw = context.raw
        expr, sep, result = raw.rpartition("=")
        if not sep or not expr.strip():
            raise StepError(f"annotation {raw!r} has no 'expr=result'")
        try:
            tree = arithmetic.parse(_normalise(expr))
        except arithmetic.Refused:
            raise StepError(f"annotation {raw!r} is not arithmetic") from None
        tree = _Substitute(stated).visit(tree)
        value = _value(tree, env)
        name = f"v{k}"
        env[name] = value
        steps.append(Step(tree, value, context))
        number = parse_number(result)
        stated.append((name, Fraction(repr(number)) if number is not None else value))
    return steps


def steps_from(rationale: str) -> list[tuple[str, Fraction]]:
    """``[(line, value)]``: program lines ``vK = expr`` with their exact values."""
    return [(f"v{k} = {ast.unparse(step.expr)}", step.value) for k, step in enumerate(read_steps(rationale), 1)]


def _final_step(steps: Sequence[Step], gold: float) -> int:
    """The number (1-based) of the last step whose value is the gold answer; else the last step."""
    for k in range(len(steps), 0, -1):
        if answers_match(float(steps[k - 1].value), gold):
            return k
    return len(steps)


# --- EoT: comments and names from the solution's sentences --------------------------------------

_WORD = re.compile(r"[A-Za-z]+(?:'[A-Za-z]+)?|\d[\d,.]*|[^\sA-Za-z\d]")
# Words that end the phrase a quantity is named from: a new clause starts.
_BREAK = frozenset("because since so and but then which that while if when or where who after before until "
                   "than leaving bringing making giving".split())
# Words that carry no meaning in a name (articles, pronouns, auxiliaries).
_FILLER = frozenset("a an the his her their its our my your he she they it we i you them him us me there here this "
                    "these those is are was were be been being has have had will would can could should must "
                    "does do did only just also now still means mean thus therefore hence".split())
# Prepositions: kept inside a name (clips_in_may), trimmed from its ends.
_EDGE = frozenset("to of in on at for from with by per into about as over each".split())
# A phrase after the result that opens with one of these says what kind of amount it is, not of what:
# the subject before the calculation goes in front (earns_per_minute, needs_more).
_RELATIONAL = frozenset("per more less left each remaining fewer extra".split())
_RESERVED = frozenset({"ans", "x", "print", *keyword.kwlist, *keyword.softkwlist})
_ARITHMETIC_TAIL = re.compile(r"(?:[\d\s$.,+\-*/×÷()%^=−]|(?<=[\s\d])[xX](?=[\s\d]))*$")
MAX_NAME_WORDS = 3
MAX_NAME_CHARS = 40


def _words(text: str) -> list[str]:
    """Lower-case word tokens, numbers and punctuation marks of a text (``Mark's`` -> ``mark``)."""
    out = []
    for tok in _WORD.findall(text):
        if tok[0].isalpha():
            tok = re.sub(r"'s$", "", tok).replace("'", "").lower()
        out.append(tok)
    return out


def _is_word(tok: str) -> bool:
    return tok.isascii() and tok.isalpha()


def _trim(words: list[str]) -> list[str]:
    words = [w for w in words if w not in _FILLER]
    while words and words[0] in _EDGE - {"per", "each"}:
        words = words[1:]
    while words and words[-1] in _EDGE:
        words = words[:-1]
    return words


def _phrase_after(text: str) -> list[str]:
    """The words right after a result, up to a number, punctuation or a new clause."""
    words = []
    for tok in _words(text):
        if not _is_word(tok) or tok in _BREAK:
            break
        words.append(tok)
    return _trim(words)


def _phrase_before(text: str) -> list[str]:
    """The words just before a calculation: of the last run of words (between numbers, marks and clause
    words) that has any meaning, its last two; "He eats 32 from the largest pizzas because 2 x 16"
    -> largest pizzas."""
    runs: list[list[str]] = [[]]
    for tok in _words(_ARITHMETIC_TAIL.sub("", text)):
        if _is_word(tok) and tok not in _BREAK:
            runs[-1].append(tok)
        elif runs[-1]:
            runs.append([])  # a number, a mark or a new clause starts a new run
    meaningful = [trimmed for run in runs if (trimmed := _trim(run))]
    return meaningful[-1][-2:] if meaningful else []


def _name_for(step: RawStep) -> str | None:
    """A snake_case name from the words of the step's sentence, or None when they give no valid one."""
    after, before = _phrase_after(step.after), _phrase_before(step.before)
    if not after or after[0] in _RELATIONAL:
        room = max(0, MAX_NAME_WORDS - len(after))
        after = [*before[max(0, len(before) - room):], *after]
    words = _trim(after[:MAX_NAME_WORDS])
    while words and len("_".join(words)) > MAX_NAME_CHARS:
        words = words[:-1]
    name = "_".join(words)
    if not re.fullmatch(r"[a-z][a-z_]*", name) or name in _RESERVED or name in arithmetic.FUNCTIONS:
        return None
    return name


def quantity_names(steps: Sequence[Step]) -> list[str]:
    """One distinct snake_case name per step: from its sentence, ``vK`` when the sentence gives none;
    a name already taken gets ``_2``, ``_3``, ... Every name is one the EoT parser reads as a quantity:
    ASCII letters and underscores, not ``ans``, ``x``, a Python keyword or a function name."""
    names: list[str] = []
    for k, step in enumerate(steps, 1):
        base = _name_for(step.context) or f"v{k}"
        name, n = base, 1
        while name in names:  # a text name has no digit, so it never meets a vK
            n += 1
            name = f"{base}_{n}"
        names.append(name)
    return names


class _Rename(ast.NodeTransformer):
    def __init__(self, names: dict[str, str]):
        self.names = names

    def visit_Name(self, node: ast.Name):
        return ast.copy_location(ast.Name(id=self.names.get(node.id, node.id), ctx=node.ctx), node)


def named_lines(steps: Sequence[Step]) -> tuple[list[str], list[str]]:
    """``(names, lines)``: every step as ``name = expr`` with the names of :func:`quantity_names`; the
    lines PoT and EoT share, so the two forms name every quantity alike."""
    names = quantity_names(steps)
    rename = _Rename({f"v{k}": name for k, name in enumerate(names, 1)})
    lines = [f"{name} = {ast.unparse(rename.visit(ast.parse(ast.unparse(step.expr), mode='eval')).body)}"
             for step, name in zip(steps, names)]
    return names, lines


# --- the question's own sentences (what EoT comments restate) -----------------------------------------

_QUESTION_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z$\d\"'(])")
# Where the asking part of a sentence starts: "If she works 5 hours, how many ...?"
_ASKING = re.compile(r",\s+(?=(?:how|what|which|who|whom|whose|when|where|why|calculate|find|determine|compute)\b)",
                     re.IGNORECASE)
# Number words a question writes instead of digits; a step's literal matches the sentence that says it.
_NUMBER_WORDS = {word: Fraction(k) for k, word in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
    "seventeen eighteen nineteen twenty".split())}
_NUMBER_WORDS.update({w: Fraction(v) for w, v in (("thirty", 30), ("forty", 40), ("fifty", 50), ("sixty", 60),
                                                  ("seventy", 70), ("eighty", 80), ("ninety", 90), ("hundred", 100),
                                                  ("thousand", 1000), ("million", 1_000_000), ("dozen", 12),
                                                  ("twice", 2), ("double", 2), ("doubles", 2), ("triple", 3),
                                                  ("thrice", 3), ("half", 2), ("halves", 2), ("quarter", 4),
                                                  ("quarters", 4), ("third", 3), ("thirds", 3))})


@dataclass(frozen=True)
class QuestionParts:
    """A question as EoT comments read it: its fact sentences and the sentence that asks."""
    facts: tuple[str, ...]
    asks: str


def question_parts(question: str) -> QuestionParts:
    """The sentences of a question on one line each; the last one with a ``?`` (else the last one) asks.
    Its leading condition ("If she works 5 hours, how many ...?") is a fact of its own. No part holds an
    ``=`` (a ``%`` line with one is a known EoT failure mode): an ``=`` reads "is"."""
    text = " ".join(re.sub(r"\s*=\s*", " is ", question).split())
    sentences = [s for s in _QUESTION_SENTENCE_END.split(text) if s.strip()]
    if not sentences:
        return QuestionParts((), "")
    at = max((k for k, s in enumerate(sentences) if "?" in s), default=len(sentences) - 1)
    asks = sentences[at]
    facts = sentences[:at] + sentences[at + 1:]
    split = list(_ASKING.finditer(asks))
    if split:
        condition, asks = asks[:split[-1].start()], asks[split[-1].end():]
        asks = asks[:1].upper() + asks[1:]
        facts.insert(at, condition)
    return QuestionParts(tuple(facts), asks)


def _sentence_values(sentence: str) -> set[Fraction]:
    """What a sentence states: its numbers (distill.thoughts.numbers) and number words."""
    words = {w.lower() for w in re.findall(r"[A-Za-z]+", sentence)}
    return numbers.question_values(sentence) | {_NUMBER_WORDS[w] for w in words if w in _NUMBER_WORDS}


def _literals(expr: ast.AST) -> list[Fraction]:
    """The numbers written in a step, left to right."""
    if isinstance(expr, ast.Constant):
        value = expr.value
        return [Fraction(str(value))] if isinstance(value, (int, float)) and not isinstance(value, bool) else []
    return [v for child in ast.iter_child_nodes(expr) for v in _literals(child)]


@dataclass(frozen=True)
class Solution:
    """A GSM8K solution as the forms' ``from_gold`` read it: what this module parses, once, for every
    form. The steps are read when a form first asks for them (CoT needs none), raising StepError."""

    rationale: str
    gold: float
    question: str = ""

    @property
    def text(self) -> str:
        """The solution without its annotations, blank lines and trailing spaces."""
        return "\n".join(line.rstrip() for line in strip_annotations(self.rationale).strip().splitlines()
                         if line.strip())

    @property
    def answer(self) -> str:
        """The gold answer as the solution writes a number (``72``, ``0.25``)."""
        return format_number(self.gold)

    @cached_property
    def steps(self) -> list[Step]:
        return read_steps(self.rationale)

    @cached_property
    def _named(self) -> tuple[list[str], list[str]]:
        return named_lines(self.steps)

    @property
    def lines(self) -> list[str]:
        """Every step as ``name = expr`` (:func:`named_lines`)."""
        return self._named[1]

    @property
    def target(self) -> str:
        """The name of the last step whose value is the gold answer (else of the last step)."""
        return self._named[0][_final_step(self.steps, self.gold) - 1]

    @property
    def step_numbers(self) -> list[list[Fraction]]:
        """The numbers each step writes, left to right."""
        return [_literals(step.expr) for step in self.steps]

    @cached_property
    def _parts(self) -> QuestionParts:
        return question_parts(self.question)

    @property
    def facts(self) -> list[tuple[str, set[Fraction]]]:
        """The question's fact sentences, each with what it states (its numbers and number words)."""
        return [(fact, _sentence_values(fact)) for fact in self._parts.facts]

    @property
    def asks(self) -> str:
        """The question's asking sentence ("" without a question)."""
        return self._parts.asks


def derive(form: str, rationale: str | None, gold: float, question: str = "") -> str:
    """The completion the gold teacher gives for one form (the form's ``from_gold``); raises StepError
    when it cannot."""
    if not rationale:
        raise StepError("no annotated rationale (only GSM8K has one)")
    return get_form(form).from_gold(Solution(rationale, gold, question))


class GoldTeacher:
    name = "gold"
    # The derivation's version: samples of an earlier derivation (v1: vK names in PoT, EoT comments that
    # restated the solution) record their model, so a run folder shows which one made them.
    model = "gsm8k-annotations-v2"

    def answer(self, jobs: Sequence[Job]) -> Iterator[tuple[Job, Answer]]:
        for job in jobs:
            h = request_hash({**canonical_request(self.model, (), 0.0, 1, 0), "problem_id": job.problem_id,
                              "form": job.form, "version": job.version})
            try:
                yield job, Answer.ok([derive(job.form, job.rationale, job.gold, job.question)], h)
            except StepError as exc:
                yield job, Answer.failed(f"underivable: {exc}", h)
