"""Program-of-Thought: a Python program that assigns ``ans``, run in the sandbox (distill/sandbox/).

Extraction: the program (the first fenced code block when there is one, else the whole text) is
checked against the sandbox's allowlist of constructs, modules, attributes and builtins (``unsafe``
with the line and construct when it fails, ``parse_error`` when it is not Python) and run in a
forked, confined child with a wall-clock and CPU limit (``timeout``, default 5 s). The answer is
the value of ``ans`` after the program ends.

Flexible mode (default) adds two documented fallbacks, both switched off by ``strict=True``:
- ``solution_function``: a program that assigns no ``ans`` but defines ``solution()`` (the PAL style)
  is answered by calling it;
- ``printed_answer``: a program that assigns no ``ans`` but prints numbers is answered by the last
  number it printed.

Reads and writes no files; the sandbox's children, which run the programs, may not create any.
"""
from __future__ import annotations

import ast
import io
import re
import tokenize
from typing import Sequence

from distill import sandbox
from distill.answers import last_number, parse_number
from distill.thoughts import Extraction, Form

INSTRUCTION = "Let\u2019s break down the code step by step"
SYSTEM = ("You solve grade-school math word problems by writing a short Python program. Give each quantity "
          "of the question a descriptive variable name, compute step by step, and store the final number "
          "in a variable named ans. Use plain Python (the math and fractions modules are available); do not "
          "read input, print, or write files. Reply with the program only.")
SOLUTIONS = (  # the exemplars' solutions, in the order of distill.thoughts.exemplars.EXEMPLARS
    # A baker makes 36 muffins ...
    "morning_muffins = 36\nafternoon_muffins = 24\nmuffins_per_box = 6\n"
    "total_muffins = morning_muffins + afternoon_muffins\nans = total_muffins / muffins_per_box",
    # Tom has 3 times as ...
    "total_stickers = 48\n# Tom has 3 parts and Ana 1 part of the total\nana_stickers = total_stickers / (3 + 1)\n"
    "tom_stickers = 3 * ana_stickers\nans = tom_stickers",
    # A shirt costs $25. During ...
    "shirt_price = 25\ndiscount_percent = 20\nshirts = 3\n"
    "sale_price = shirt_price * (1 - discount_percent / 100)\nans = shirts * sale_price",
    # Liam reads 15 pages on ...
    "monday = 15\ntuesday = 2 * monday\nwednesday = tuesday - 10\nans = monday + tuesday + wednesday",
    # A farmer keeps chickens and ...
    "heads = 20\nlegs = 56\n# every animal has at least 2 legs; each cow has 2 more\n"
    "extra_legs = legs - 2 * heads\ncows = extra_legs / 2\nans = cows",
    # Sara earns $12 an hour. ...
    "hourly_wage = 12\nhours_per_day = 8\ndays = 5\ngroceries = 150\n"
    "earnings = hourly_wage * hours_per_day * days\nans = earnings - groceries",
    # A water tank holds 400 ...
    "from fractions import Fraction\n\ncapacity = 400\nwater = capacity * Fraction(3, 4)\n"
    "used = 120\nans = water - used",
    # Jake is 4 years older ...
    "age_gap = 4\nyears_ahead = 6\nfuture_sum = 40\nsum_now = future_sum - 2 * years_ahead\n"
    "sister_age = (sum_now - age_gap) / 2\nans = sister_age + age_gap",
)
_FENCE = re.compile(r"```[ \t]*(?:python|py|python3)?[ \t]*\n(.*?)(?:```|\Z)", re.DOTALL | re.IGNORECASE)


def clean(completion: str | None) -> str:
    """The program in a completion: the first fenced block's body, else the whole text; trailing spaces
    and blank edges removed."""
    text = (completion or "").replace("\r\n", "\n")
    m = _FENCE.search(text)
    if m:
        text = m.group(1)
    return "\n".join(line.rstrip() for line in text.strip("\n").splitlines()).strip("\n")


class PoT(Form):
    name = "pot"
    version = 1
    title = "PoT"
    rank = 2  # after EoT, before free text (distill.scoring)
    instruction = INSTRUCTION
    system = SYSTEM
    exemplars = SOLUTIONS
    sandboxed = True
    gold_derivation = ("one line `name = expr` per calculation of the solution, each quantity named from the "
                       "solution's words (the same names as EoT), then `ans = <name>`")
    rules = ("solution_function", "printed_answer")

    def from_gold(self, solution) -> str:
        """The program: one line ``name = expr`` per calculation (the quantities EoT names alike), then
        ``ans = <name>`` of the last step whose value is the gold answer."""
        return "\n".join(solution.lines) + f"\nans = {solution.target}"

    def student_target(self, completion: str) -> str:
        return clean(completion)

    def strict_may_differ(self, completion: str | None, flexible) -> bool:
        """Only a program that mentions ``solution`` (the sandbox calls it when no ``ans`` is assigned) or
        ``print`` (the printed fallback): any other program runs and is read alike in both modes. Read
        from the text, since a verdict does not say which fallback gave its answer."""
        program = clean(completion)
        return "solution" in program or "print" in program

    def text_outside(self, target: str) -> str:
        """Its comments and string literals (the text a ``print`` shows), read by Python's tokenizer
        (which runs nothing); all of it when it is not Python (``ast.parse`` refuses it)."""
        try:
            ast.parse(target)
            tokens = list(tokenize.generate_tokens(io.StringIO(target).readline))
        except (tokenize.TokenError, SyntaxError, ValueError, RecursionError):
            return target
        text = {tokenize.COMMENT, tokenize.STRING, getattr(tokenize, "FSTRING_MIDDLE", tokenize.STRING)}
        return "\n".join(tok.string for tok in tokens if tok.type in text)

    def extract_many(self, completions: Sequence[str | None], *, timeout: float = 5.0,
                     strict: bool = False) -> list[Extraction]:
        programs = [clean(c) for c in completions]
        out: list[Extraction | None] = [None] * len(programs)
        todo = []
        for i, program in enumerate(programs):
            if not program.strip():
                out[i] = Extraction(None, "no_answer", "empty completion: no program")
            else:
                todo.append(i)
        results = sandbox.run_programs([programs[i] for i in todo], timeout, call_solution=not strict)
        for i, result in zip(todo, results):
            out[i] = _extraction(result, strict)
        return out  # type: ignore[return-value]



def _extraction(result: dict, strict: bool) -> Extraction:
    if result["status"] != "ok":
        return Extraction(None, result["status"], result.get("reason", ""))
    text = result.get("ans")
    if text is not None:
        value = parse_number(text)
        if value is None:
            return Extraction(None, "no_answer", f"ans is {text[:60]!r}, not a number")
        return Extraction(value, "ok", "")
    reason = result.get("reason") or "the program assigns no variable ans"
    if not strict and "assigns no variable ans" in reason:
        printed = last_number(result.get("printed", ""))
        if printed is not None:
            return Extraction(printed, "ok", "fallback: last number printed")
    return Extraction(None, "no_answer", reason)


FORM = PoT()
