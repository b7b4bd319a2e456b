"""Equation-of-Thought: a system of equations whose last line is ``ans = <var>``, solved without eval.

Reading (never ``eval``, ``sympify`` or ``parse_expr`` of the text): each line is normalised by our own
rules below, then each side of its ``=`` is read by distill/arithmetic.py (Python's ``ast``, which
runs nothing, converted through a whitelist — numbers, snake_case names, ``+ - * / **`` with a bounded
numeric exponent, parentheses, and (flexible mode) ``ceil floor round abs`` — into exact trees).
Anything else is a ``parse_error`` naming the line and what was refused. Input size, line length and
nesting are bounded.

Conventions that are part of the format (METHOD.md), always on:
- lines starting with ``%`` (or ``#``) are comments; blank lines are skipped; of a fenced block only its
  body is read, and prose lines before the first or after the last equation are dropped;
- implicit products ``2x`` -> ``2*x``, ``3(10)`` -> ``3*(10)``, ``(a)(b)`` -> ``(a)*(b)``;
- expressions on both sides of ``=``.

Solving: a forward pass evaluates every equation whose one side is a single undetermined name and
whose other side is known, with exact fractions, and checks equations whose two sides are both known.
When that determines ``ans`` and leaves nothing unresolved (forward-only systems, most GSM8K
problems), no solver runs. Otherwise the reduced system goes to ``sympy.solve`` in the sandbox's
sympy worker, one forked child per system with the time limit, so a pathological system cannot hang us.

Named repair rules (flexible mode, the default; ``strict=True`` switches every one off). Each reads
what the writer evidently meant; none picks a value among several candidates:
- ``unicode_operators``: ``×``, ``·``, ``÷``, ``−`` (and en/em dashes) read as ``* / -``; other
  non-ASCII characters are always a parse_error (look-alike letters would make a different variable);
- ``currency_and_thousands``: ``$5`` -> ``5``, ``1,200`` -> ``1200``;
- ``percent_literal``: ``15%`` inside an equation -> ``(15/100)``;
- ``caret_as_power``: ``^`` -> ``**``;
- ``reassignment_as_update``: ``total = total - 40``, where ``total`` already has a value from the
  lines above, is a Python-style update: later lines see the new value (METHOD.md's first known
  failure mode). Without the rule the line contradicts the one that set ``total``;
- ``round_functions``: ``ceil floor round abs`` of a quantity known by forward evaluation (``round``
  rounds halves away from zero). Without the rule a function call is a parse_error.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction
from typing import Sequence

from distill import arithmetic, sandbox
from distill.thoughts import Extraction, Form

INSTRUCTION = "System of linear equations: (Do not simplify)"
SYSTEM = ("Complete the equations for the question. Write one equation per line, each preceded by a comment "
          "line starting with '% ' that restates the piece of the question it encodes. Use snake_case "
          "variable names; introduce an unknown quantity as x (for example 'meals = x'). Keep the numbers as "
          "they are written in the question and do not simplify. Call the target ans and make ans a number: "
          "the last line must be 'ans = <variable>'. Do not reassign a variable, and do not use functions, "
          "inequalities or if/else.")
SOLUTIONS = (  # the exemplars' solutions, in the order of distill.thoughts.exemplars.EXEMPLARS
    # A baker makes 36 muffins ...
    "% The baker makes 36 muffins in the morning and 24 in the afternoon:\n"
    "total_muffins = 36 + 24\n% She packs them in boxes of 6:\nboxes = total_muffins / 6\n"
    "% How many boxes does she fill? The answer is boxes:\nans = boxes",
    # Tom has 3 times as ...
    "% Let the number of Ana's stickers be x:\nana = x\n% Tom has 3 times as many stickers as Ana:\n"
    "tom = 3 * ana\n% Together they have 48 stickers:\ntom + ana = 48\n"
    "% How many stickers does Tom have? The answer is tom:\nans = tom",
    # A shirt costs $25. During ...
    "% A shirt costs $25:\nshirt_price = 25\n% Every shirt is 20% off:\n"
    "sale_price = shirt_price - shirt_price * 20 / 100\n% Maria buys 3 shirts:\ntotal_cost = 3 * sale_price\n"
    "% How much does she pay? The answer is total_cost:\nans = total_cost",
    # Liam reads 15 pages on ...
    "% Liam reads 15 pages on Monday:\nmonday = 15\n% On Tuesday he reads twice as many pages as on Monday:\n"
    "tuesday = 2 * monday\n% On Wednesday he reads 10 fewer pages than on Tuesday:\nwednesday = tuesday - 10\n"
    "% How many pages does he read in the three days? The answer is total:\n"
    "total = monday + tuesday + wednesday\nans = total",
    # A farmer keeps chickens and ...
    "% Let the number of cows be x:\ncows = x\n% The animals have 20 heads:\nchickens + cows = 20\n"
    "% They have 56 legs; a chicken has 2 legs and a cow 4:\n2 * chickens + 4 * cows = 56\n"
    "% How many cows does the farmer keep? The answer is cows:\nans = cows",
    # Sara earns $12 an hour. ...
    "% Sara earns $12 an hour and works 8 hours a day for 5 days:\nearnings = 12 * 8 * 5\n"
    "% She spends $150 on groceries:\nleft = earnings - 150\n"
    "% How much does she have left? The answer is left:\nans = left",
    # A water tank holds 400 ...
    "% A water tank holds 400 liters when full and is 3/4 full:\nwater = 400 * 3 / 4\n"
    "% Then 120 liters are used:\nremaining = water - 120\n"
    "% How many liters are left in the tank? The answer is remaining:\nans = remaining",
    # Jake is 4 years older ...
    "% Let the sister's age now be x:\nsister = x\n% Jake is 4 years older than his sister:\njake = sister + 4\n"
    "% In 6 years the sum of their ages will be 40:\n(jake + 6) + (sister + 6) = 40\n"
    "% How old is Jake now? The answer is jake:\nans = jake",
)
RULES = ("unicode_operators", "currency_and_thousands", "percent_literal", "caret_as_power",
         "reassignment_as_update", "round_functions")

MAX_CHARS = 10_000
MAX_LINES = 200
MAX_LINE_CHARS = 500
_UNICODE_OPS = str.maketrans({"\u00d7": "*", "\u22c5": "*", "\u00b7": "*", "\u2219": "*", "\u00f7": "/",
                              "\u2212": "-", "\u2013": "-", "\u2014": "-"})
_THOUSANDS = re.compile(r"(?<![\w.])(\d{1,3}(?:,\d{3})+)(?![\d,])")
_PERCENT = re.compile(r"(\d+(?:\.\d+)?)\s*%")
_IMPLICIT = [(re.compile(r"(?<![\w.])(\d+(?:\.\d+)?)\s*(?=[A-Za-z_(])"), r"\1*"),
             (re.compile(r"\)\s*(?=[\w(])"), ")*")]
_COMPARISON = re.compile(r"==|!=|<|>")
_KEYWORD = re.compile(r"\b(?:if|else|elif|lambda|for|while|import|from|def|return|and|or|not|in|is|print)\b")
_FENCE = re.compile(r"```[^\n]*\n(.*?)(?:```|\Z)", re.DOTALL)


class EotError(Exception):
    def __init__(self, status: str, reason: str):
        super().__init__(reason)
        self.status, self.reason = status, reason


@dataclass(frozen=True)
class Equation:
    lhs: tuple
    rhs: tuple
    line: int
    text: str


# --- reading -----------------------------------------------------------------------------------

def clean(completion: str | None) -> str:
    """The system in a completion: a fenced block's body; prose lines before the first and after the
    last equation or comment dropped."""
    text = (completion or "").replace("\r\n", "\n")
    m = _FENCE.search(text)
    if m:
        text = m.group(1)
    lines = [line.rstrip() for line in text.split("\n")]
    body = [i for i, line in enumerate(lines) if _is_comment(line) or re.search("[=<>]", line)]
    start, end = (body[0], body[-1] + 1) if body else (0, 0)
    return "\n".join(line for line in lines[start:end] if line.strip())


def _is_comment(line: str) -> bool:
    return line.lstrip().startswith(("%", "#"))


def _comment(text: str) -> str:
    """``% <text>:``, the exemplars' form: a fact's closing ``.`` or ``!`` becomes the colon."""
    return "% " + re.sub(r"[.!;,]+$", "", text.strip()) + ":"


def _normalise(line: str, n: int, strict: bool) -> str:
    if not strict:
        line = line.translate(_UNICODE_OPS)
    bad = next((ch for ch in line if ord(ch) > 127), None)
    if bad is not None:
        raise EotError("parse_error", f"line {n}: non-ASCII character {bad!r} (U+{ord(bad):04X})")
    if not strict:
        line = _THOUSANDS.sub(lambda m: m.group(1).replace(",", ""), line.replace("$", ""))
        line = _PERCENT.sub(r"(\1/100)", line)
        line = line.replace("^", "**")
    for pattern, repl in _IMPLICIT:
        line = pattern.sub(repl, line)
    return line


def parse_system(text: str, *, strict: bool = False) -> list[Equation]:
    """The equations of a (cleaned) system; raises EotError("parse_error", reason)."""
    if len(text) > MAX_CHARS:
        raise EotError("parse_error", f"system longer than {MAX_CHARS} characters")
    lines = text.split("\n")
    if len(lines) > MAX_LINES:
        raise EotError("parse_error", f"system longer than {MAX_LINES} lines")
    eqs = []
    for n, raw in enumerate(lines, 1):
        line = raw.strip()
        if not line or _is_comment(line):
            continue
        if len(line) > MAX_LINE_CHARS:
            raise EotError("parse_error", f"line {n} is longer than {MAX_LINE_CHARS} characters")
        keyword = _KEYWORD.search(line)
        if keyword:
            raise EotError("parse_error", f"line {n}: the Python keyword {keyword.group(0)!r} is not allowed "
                                          f"in an equation: {line[:80]!r}")
        line = _normalise(line, n, strict)
        if _COMPARISON.search(line):
            raise EotError("parse_error", f"line {n}: comparisons and inequalities are not equations: {raw.strip()!r}")
        sides = line.split("=")
        if len(sides) == 1:
            raise EotError("parse_error", f"line {n} is not an equation: {raw.strip()[:80]!r}")
        if len(sides) > 2:
            raise EotError("parse_error", f"line {n} has more than one '=': {raw.strip()[:80]!r}")
        if arithmetic.nesting(line) > arithmetic.MAX_DEPTH:
            raise EotError("parse_error", f"line {n}: parentheses nested deeper than {arithmetic.MAX_DEPTH}")
        lhs, rhs = (_parse_side(s, n, strict) for s in sides)
        eqs.append(Equation(lhs, rhs, n, raw.strip()))
    if not eqs:
        raise EotError("no_answer", "no equations")
    return eqs


def _parse_side(src: str, n: int, strict: bool) -> tuple:
    if not src.strip():
        raise EotError("parse_error", f"line {n}: one side of '=' is empty")
    try:
        return arithmetic.read(arithmetic.parse(src, n), n, functions=not strict)
    except arithmetic.Refused as exc:
        raise EotError("parse_error", str(exc)) from None
    except arithmetic.Undefined as exc:  # an exponent is computed as it is read
        raise EotError("exec_error", str(exc)) from None


# --- the forward pass ------------------------------------------------------------------------------

def _try(tree: tuple, known: dict[str, Fraction], n: int) -> Fraction | None:
    """The exact value of a side, or None while it needs a name without a value or the solver."""
    try:
        return arithmetic.evaluate(tree, known, n)
    except (arithmetic.Unknown, arithmetic.NeedsSolver):
        return None
    except arithmetic.Undefined as exc:
        raise EotError("exec_error", str(exc)) from None


def _rename(tree: tuple, alias: dict[str, str]) -> tuple:
    if tree[0] == "name":
        return ("name", alias.get(tree[1], tree[1]))
    if tree[0] == "num":
        return tree
    if tree[0] == "call":
        return ("call", tree[1], _rename(tree[2], alias))
    return (tree[0], *(_rename(t, alias) for t in tree[1:]))


def _substitute(tree: tuple, known: dict[str, Fraction]) -> tuple:
    if tree[0] == "name":
        return ("num", known[tree[1]]) if tree[1] in known else tree
    if tree[0] == "num":
        return tree
    if tree[0] == "call":
        value = _try(tree, known, 0)
        return ("num", value) if value is not None else ("call", tree[1], _substitute(tree[2], known))
    return (tree[0], *(_substitute(t, known) for t in tree[1:]))


def _resolve(eq: Equation, known: dict[str, Fraction]) -> bool:
    """Define a name or check an equation from known values; True when the equation is used up."""
    lv, rv = _try(eq.lhs, known, eq.line), _try(eq.rhs, known, eq.line)
    if lv is not None and rv is not None:
        if lv != rv:
            raise EotError("no_answer", f"line {eq.line} contradicts the lines above: {eq.text!r} gives "
                                        f"{_show(lv)} on the left and {_show(rv)} on the right")
        return True
    for side, value in ((eq.lhs, rv), (eq.rhs, lv)):
        if value is not None and side[0] == "name" and side[1] not in known:
            known[side[1]] = value
            return True
    return False


@dataclass
class ForwardPass:
    """What the forward pass left: ``value`` when it settled ``ans``, else a job for sympy."""
    value: Fraction | None
    job: dict | None


def _serial(tree: tuple) -> list:
    if tree[0] == "num":
        return ["num", [str(tree[1].numerator), str(tree[1].denominator)]]
    if tree[0] == "name":
        return ["name", tree[1]]
    if tree[0] == "call":
        raise EotError("no_answer", f"{tree[1]}() of a quantity that is only known after solving is not supported")
    return [tree[0], *(_serial(t) for t in tree[1:])]


def forward_pass(eqs: list[Equation], *, strict: bool = False) -> ForwardPass:
    """Forward pass (exact fractions), then what is left for the solver."""
    known: dict[str, Fraction] = {}
    alias: dict[str, str] = {}
    seen: set[str] = set()
    pending: list[Equation] = []
    for k, eq in enumerate(eqs):
        lhs, rhs = _rename(eq.lhs, alias), _rename(eq.rhs, alias)
        if (not strict and eq.lhs[0] == "name" and lhs[1] in known and lhs[1] in arithmetic.names(rhs)):
            new = f"{eq.lhs[1]}'{k}"  # an apostrophe cannot occur in a written name
            alias[eq.lhs[1]] = new
            lhs = ("name", new)
        eq = Equation(lhs, rhs, eq.line, eq.text)
        seen |= arithmetic.names(lhs) | arithmetic.names(rhs)
        if not _resolve(eq, known):
            pending.append(eq)
    progress = True
    while pending and progress:
        progress = False
        for eq in list(pending):
            if _resolve(eq, known):
                pending.remove(eq)
                progress = True
    target = alias.get("ans", "ans")
    if target not in seen:
        raise EotError("no_answer", "no equation defines ans (the last line should be 'ans = <variable>')")
    if target in known and not pending:
        return ForwardPass(known[target], None)
    eqs_left = [[_serial(_substitute(e.lhs, known)), _serial(_substitute(e.rhs, known))] for e in pending]
    if target in known:
        eqs_left.append([["name", target], _serial(("num", known[target]))])
    return ForwardPass(None, {"eqs": eqs_left, "target": target})


def _show(value) -> str:
    try:
        return f"{float(value):g}"
    except OverflowError:
        return "a number beyond a float"


def _answer(value) -> Extraction:
    """An exact value as an answer; one beyond a float's range (1e308) is no answer, not a crash."""
    try:
        return Extraction(float(value), "ok", "")
    except OverflowError:
        return Extraction(None, "no_answer", "ans is too large for a float (over 1e308)")


def _from_solver(result: dict) -> Extraction:
    if result["status"] != "ok":
        return Extraction(None, result["status"], result.get("reason", ""))
    try:
        values = [float(v) for v in result["values"]]
    except (OverflowError, ValueError):
        return Extraction(None, "no_answer", "ans is not a finite number a float can hold")
    if len(values) != 1:
        shown = ", ".join(f"{v:g}" for v in values[:5])
        return Extraction(None, "no_answer", f"ans has {len(values)} solutions ({shown}); no rule picks one")
    return Extraction(values[0], "ok", "solved with sympy")


class EoT(Form):
    name = "eot"
    version = 1
    title = "EoT"
    rank = 1  # first: the paper's best single form for small students (distill.scoring)
    instruction = INSTRUCTION
    system = SYSTEM
    exemplars = SOLUTIONS
    sandboxed = True
    gold_derivation = ("the same quantities as PoT as a system of equations; `%` comments restate only the "
                       "question (each fact sentence before the equation that uses its number; last the question "
                       "naming the target), never a computed number")
    rules = RULES

    def from_gold(self, solution) -> str:
        """The same quantities as PoT as a forward-only system (METHOD.md: "a forward-only problem needs no
        x"), written as real EoT is (METHOD.md "The EoT format"): ``% `` comments restate pieces of the
        *question*, never the solution. Before a step, each fact sentence of the question that states one
        of the step's numbers (in digits or a number word) and was not restated yet, in the question's
        order; last, the question's asking sentence naming the target, as the exemplars do. So no comment
        holds a number the question does not (the solution's results stay in the equations, where the
        solver computes them), nor an ``=`` (METHOD.md lists ``%`` lines with ``=`` among real EoT's
        failure modes). For "Natalia sold clips to 48 of her friends in April, and then she sold half as
        many clips in May. How many clips did Natalia sell altogether in April and May?"::

            % Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May:
            clips_in_may = 48 / 2
            clips_altogether = 48 + clips_in_may
            % How many clips did Natalia sell altogether in April and May? The answer is clips_altogether:
            ans = clips_altogether
        """
        facts = solution.facts
        said: set[int | None] = set()
        lines = []
        for literals, equation in zip(solution.step_numbers, solution.lines):
            first = {next((k for k, (_, values) in enumerate(facts) if value in values), None) for value in literals}
            for k in sorted(first - said - {None}):  # in the question's order
                lines.append(_comment(facts[k][0]))
            said |= first
            lines.append(equation)
        target, asks = solution.target, solution.asks
        lines.append(f"% {asks} The answer is {target}:" if asks else f"% The answer is {target}:")
        lines.append(f"ans = {target}")
        return "\n".join(lines)

    def student_target(self, completion: str) -> str:
        return clean(completion)

    def text_outside(self, target: str) -> str:
        """Its comment lines and any other line that is not an equation (no ``=``)."""
        return "\n".join(line for line in target.splitlines() if _is_comment(line) or "=" not in line)

    def extract_many(self, completions: Sequence[str | None], *, timeout: float = 5.0,
                     strict: bool = False) -> list[Extraction]:
        out: list[Extraction | None] = [None] * len(completions)
        jobs, where = [], []
        for i, completion in enumerate(completions):
            if completion and len(completion) > 4 * MAX_CHARS:
                out[i] = Extraction(None, "parse_error", f"completion longer than {4 * MAX_CHARS} characters")
                continue
            text = clean(completion)
            if not text.strip():
                out[i] = Extraction(None, "no_answer", "empty completion: no equations")
                continue
            try:
                p = forward_pass(parse_system(text, strict=strict), strict=strict)
            except EotError as exc:
                out[i] = Extraction(None, exc.status, exc.reason)
                continue
            if p.value is not None:
                out[i] = _answer(p.value)
            else:
                jobs.append(p.job)
                where.append(i)
        if jobs:
            for i, result in zip(where, sandbox.solve_systems(jobs, timeout)):
                out[i] = _from_solver(result)
        return out  # type: ignore[return-value]



FORM = EoT()
