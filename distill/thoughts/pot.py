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
    instruction = INSTRUCTION
    system = SYSTEM
    rules = ("solution_function", "printed_answer")

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
