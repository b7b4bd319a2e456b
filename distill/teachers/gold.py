"""The gold teacher: all three forms derived from GSM8K's annotated solutions, no API.

GSM8K solutions mark each calculator step as ``<<expr=result>>``:
``Natalia sold 48/2 = <<48/2=24>>24 clips in May.\\nNatalia sold 48+24 = <<48+24=72>>72 ...``

- CoT: the text with the annotations stripped, then ``The answer is N.``
- PoT: one line per step, ``vK = expr``, where a number equal to an earlier step's result becomes
  that step's variable (``v2 = 48 + v1``), then ``ans = vK`` for the last step giving the gold answer.
- EoT: the same steps as a forward-only system of equations (METHOD.md: "a forward-only problem needs
  no x"), ending ``ans = vK``.

Steps are read with Python's ``ast`` against a whitelist and computed with exact fractions; nothing is
evaluated. A problem without annotations (or with a step we cannot read) is a failed answer with a
reason; whether a derived program or system gives the gold answer is left to the verify stage, so
the yield is measured by the real verifiers.
"""
from __future__ import annotations

import ast
import re
from fractions import Fraction
from typing import Iterator, Sequence

from distill.answers import answers_match, parse_number
from distill.teachers import Answer, Job, canonical_request, request_hash

ANNOTATION = re.compile(r"<<([^<>]*)>>")
_TIMES = re.compile(r"(?<=[\d)\s])[x×X](?=[\s\d(.])")
_PERCENT = re.compile(r"(\d+(?:\.\d+)?)\s*%")
_LEADING_ZERO = re.compile(r"(?<![\d.])0+(?=\d)")
_BINOPS = {ast.Add: lambda a, b: a + b, ast.Sub: lambda a, b: a - b, ast.Mult: lambda a, b: a * b,
           ast.Div: lambda a, b: a / b}


class StepError(ValueError):
    """A calculator annotation we cannot read as arithmetic."""


def format_number(x: float) -> str:
    """72.0 -> '72', 0.25 -> '0.25'; never scientific notation."""
    if float(x).is_integer():
        return str(int(x))
    return f"{x:.10f}".rstrip("0").rstrip(".")


def strip_annotations(text: str) -> str:
    return ANNOTATION.sub("", text)


def cot_from(rationale: str, gold: float) -> str:
    body = "\n".join(line.rstrip() for line in strip_annotations(rationale).strip().splitlines() if line.strip())
    return f"{body}\nThe answer is {format_number(gold)}."


def _normalise(expr: str) -> str:
    expr = expr.replace("$", "").replace(",", "").replace("÷", "/").replace("^", "**").replace("−", "-")
    expr = _TIMES.sub("*", expr)
    expr = _PERCENT.sub(r"(\1/100)", expr)
    return _LEADING_ZERO.sub("", expr).strip()


def _value(node: ast.AST, env: dict[str, Fraction]) -> Fraction:
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
        return Fraction(str(node.value))
    if isinstance(node, ast.Name) and node.id in env:
        return env[node.id]
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        v = _value(node.operand, env)
        return -v if isinstance(node.op, ast.USub) else v
    if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
        left, right = _value(node.left, env), _value(node.right, env)
        if isinstance(node.op, ast.Div) and right == 0:
            raise StepError("division by zero")
        return _BINOPS[type(node.op)](left, right)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Pow):
        base, exp = _value(node.left, env), _value(node.right, env)
        if exp.denominator != 1 or abs(exp) > 12:
            raise StepError("only small integer powers are read")
        return base ** int(exp)
    raise StepError(f"unsupported {type(node).__name__}")


class _Substitute(ast.NodeTransformer):
    """Replace a literal equal to an earlier step's stated result by that step's variable."""

    def __init__(self, results: list[tuple[str, Fraction]]):
        self.results = results

    def visit_Constant(self, node: ast.Constant):
        if isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
            value = Fraction(str(node.value))
            for name, result in reversed(self.results):  # the most recent step wins a tie
                if result == value:
                    return ast.copy_location(ast.Name(id=name, ctx=ast.Load()), node)
        return node


# A calculation the annotator left unmarked, usually the last line: "20/4 = $5", "$40 − $4 = $36".
_NUM = r"(?:\d[\d,]*(?:\.\d+)?|\.\d+)"
_PLAIN_STEP = re.compile(rf"((?:\$?{_NUM}\s*[-+*/×x−]\s*)+\$?{_NUM})\s*=\s*\$?({_NUM})(?![\d/.,]*\d)")


def raw_steps(rationale: str) -> list[str]:
    """The ``expr=result`` steps of a solution in order: its annotations, and on a line without any,
    a plain ``a op b = c`` calculation (GSM8K's annotators sometimes skipped the last step)."""
    steps = []
    for line in rationale.splitlines():
        found = ANNOTATION.findall(line)
        if not found:
            found = [f"{m.group(1)}={m.group(2)}" for m in _PLAIN_STEP.finditer(line)]
        steps.extend(found)
    return steps


def steps_from(rationale: str) -> list[tuple[str, Fraction]]:
    """``[(line, value)]``: program lines ``vK = expr`` with their exact values."""
    annotations = raw_steps(rationale)
    if not annotations:
        raise StepError("no <<expr=result>> annotations or plain calculations")
    lines: list[tuple[str, Fraction]] = []
    stated: list[tuple[str, Fraction]] = []
    env: dict[str, Fraction] = {}
    for k, raw in enumerate(annotations, 1):
        expr, sep, result = raw.rpartition("=")
        if not sep or not expr.strip():
            raise StepError(f"annotation {raw!r} has no 'expr=result'")
        try:
            tree = ast.parse(_normalise(expr), mode="eval")
        except SyntaxError:
            raise StepError(f"annotation {raw!r} is not arithmetic") from None
        tree = _Substitute(stated).visit(tree)
        value = _value(tree.body, env)
        name = f"v{k}"
        env[name] = value
        lines.append((f"{name} = {ast.unparse(tree.body)}", value))
        number = parse_number(result)
        stated.append((name, Fraction(repr(number)) if number is not None else value))
    return lines


def program_from(rationale: str, gold: float) -> str:
    """PoT/EoT lines for a rationale, ending ``ans = vK`` (the last step whose value is gold)."""
    lines = steps_from(rationale)
    final = len(lines)
    for k in range(len(lines), 0, -1):
        if answers_match(float(lines[k - 1][1]), gold):
            final = k
            break
    return "\n".join(line for line, _ in lines) + f"\nans = v{final}"


def derive(form: str, rationale: str | None, gold: float) -> str:
    """The completion the gold teacher gives for one form; raises StepError when it cannot."""
    if not rationale:
        raise StepError("no annotated rationale (only GSM8K has one)")
    if form == "cot":
        return cot_from(rationale, gold)
    if form in ("pot", "eot"):
        return program_from(rationale, gold)
    raise StepError(f"the gold teacher knows cot, pot and eot, not {form!r}")


class GoldTeacher:
    name = "gold"
    model = "gsm8k-annotations"

    def answer(self, jobs: Sequence[Job]) -> Iterator[tuple[Job, Answer]]:
        for job in jobs:
            h = request_hash({**canonical_request(self.model, (), 0.0, 1, 0), "problem_id": job.problem_id,
                              "form": job.form, "version": job.version})
            try:
                yield job, Answer.ok([derive(job.form, job.rationale, job.gold)], h)
            except StepError as exc:
                yield job, Answer.failed(f"underivable: {exc}", h)
