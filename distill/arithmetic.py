"""Arithmetic expressions: read with Python's ``ast`` against a whitelist, computed with exact fractions.

The one reader and evaluator of arithmetic in the package, run in our own process (it runs nothing
it reads, so it needs no sandbox). The EoT form (distill/thoughts/eot.py) reads the two sides of each
equation of model output with it, the gold teacher (distill/teachers/gold.py) GSM8K's calculator
annotations, so a step the gold teacher reads is an expression the EoT verifier reads.

Reading never uses ``eval``, ``sympify`` or ``parse_expr``: ``parse`` builds Python's ``ast`` (parsing
runs nothing) and ``read`` converts it through a whitelist into an exact tree::

    ("num", Fraction) | ("name", str) | ("neg", tree) | (op, tree, tree) | ("call", function, tree)

with ``op`` one of add, sub, mul, div, pow. Allowed: numbers (ints up to 400 bits, finite floats, both
read exactly), names that are ASCII and do not start with ``_``, ``+ - * / **`` with an exponent that
is a plain number up to MAX_EXPONENT, unary ``-`` and ``+``, and (``functions=True``) the FUNCTIONS
``ceil floor round abs`` of one argument. Anything else is ``Refused``, naming what was refused.

Computing (``evaluate``) is exact, with Fractions; a number beyond MAX_BITS, a division by zero or a
power too large is ``Undefined``. A name without a value yet is ``Unknown`` and a fractional power
``NeedsSolver``: neither is an error, the caller may leave the expression to a solver.

Errors carry the line the caller says the expression is on (0 when it says none): ``str(error)`` is
"line 3: division by zero", ``error.reason`` the text after the line. The reasons are written for a
reader of equations, as the EoT form's verdicts quote them. Reads and writes no files.
"""
from __future__ import annotations

import ast
import math
from fractions import Fraction

MAX_DEPTH = 20
"""Deepest parenthesis nesting read."""
MAX_EXPONENT = 100
MAX_BITS = 4096
"""Largest numerator or denominator (in bits) computed with."""
FUNCTIONS = {"ceil": math.ceil, "floor": math.floor, "abs": abs,
             "round": lambda q: math.floor(abs(q) + Fraction(1, 2)) * (1 if q >= 0 else -1)}
_OPS = {ast.Add: "add", ast.Sub: "sub", ast.Mult: "mul", ast.Div: "div", ast.Pow: "pow"}
_OP_TEXT = {ast.FloorDiv: "//", ast.Mod: "%", ast.BitXor: "^", ast.BitOr: "|", ast.BitAnd: "&",
            ast.MatMult: "@", ast.LShift: "<<", ast.RShift: ">>"}


class ExpressionError(ValueError):
    """An expression refused or without a value; ``reason`` says why, ``line`` where."""

    def __init__(self, reason: str, line: int = 0, node: ast.AST | None = None):
        super().__init__(f"line {line}: {reason}")
        self.reason, self.line, self.node = reason, line, node


class Refused(ExpressionError):
    """An expression Python cannot read or the whitelist does not allow; ``node`` is the part refused
    (None when the text does not parse)."""


class Undefined(ExpressionError):
    """An expression without an exact value within the bounds (division by zero, a number too large)."""


class Unknown(Exception):
    """An expression that mentions a name without a value yet."""


class NeedsSolver(Exception):
    """An expression that is not computed exactly here (a fractional power)."""


# --- reading -----------------------------------------------------------------------------------

def nesting(text: str) -> int:
    """The deepest parenthesis (or bracket) nesting of a text."""
    depth = deepest = 0
    for ch in text:
        if ch in "([{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in ")]}":
            depth -= 1
    return deepest


def parse(src: str, line: int = 0) -> ast.expr:
    """Python's ast of one expression (building it runs nothing); Refused when Python cannot read it."""
    try:
        return ast.parse(src.strip(), mode="eval").body
    except SyntaxError as exc:
        raise Refused(f"cannot read {src.strip()[:60]!r} ({exc.msg})", line) from None
    except (RecursionError, MemoryError, ValueError):
        raise Refused("expression too deep or malformed", line) from None


def read(node: ast.AST, line: int = 0, *, functions: bool = True) -> tuple:
    """The exact tree of an expression's ast; Refused naming what the whitelist does not allow."""
    if isinstance(node, ast.Constant):
        value = node.value
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise Refused(f"{value!r} is not a number", line, node)
        if isinstance(value, int) and value.bit_length() > 400:
            raise Refused("number too long", line, node)
        if isinstance(value, float) and not math.isfinite(value):
            raise Refused("number out of range", line, node)
        return ("num", Fraction(repr(value)) if isinstance(value, float) else Fraction(value))
    if isinstance(node, ast.Name):
        name = node.id
        if not name.isascii() or name.startswith("_"):
            raise Refused(f"the name {name!r} is not allowed", line, node)
        if name in FUNCTIONS:
            raise Refused(f"{name!r} is a function name, not a quantity", line, node)
        return ("name", name)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        inner = read(node.operand, line, functions=functions)
        return ("neg", inner) if isinstance(node.op, ast.USub) else inner
    if isinstance(node, ast.BinOp):
        op = _OPS.get(type(node.op))
        if op is None:
            text = _OP_TEXT.get(type(node.op), type(node.op).__name__)
            raise Refused(f"the operator {text} is not allowed in an equation", line, node)
        left, right = read(node.left, line, functions=functions), read(node.right, line, functions=functions)
        if op == "pow":
            if names(right):
                raise Refused("an exponent must be a number, not a quantity", line, node)
            try:
                exponent = evaluate(right, {})
            except NeedsSolver:
                raise Refused("an exponent must be a plain number", line, node) from None
            if abs(exponent) > MAX_EXPONENT:
                raise Refused(f"exponent {exponent} is larger than {MAX_EXPONENT}", line, node)
        return (op, left, right)
    if isinstance(node, ast.Call):
        fname = node.func.id if isinstance(node.func, ast.Name) else None
        if fname not in FUNCTIONS:
            what = fname or ast.unparse(node.func)[:40]
            raise Refused(f"{what}(...) is not a known function", line, node)
        if not functions:
            raise Refused(f"function {fname}() is off in strict mode (rule round_functions)", line, node)
        if len(node.args) != 1 or node.keywords:
            raise Refused(f"{fname}() takes exactly one argument", line, node)
        return ("call", fname, read(node.args[0], line, functions=functions))
    what = {ast.Lambda: "lambda", ast.IfExp: "if/else", ast.Attribute: "attribute access",
            ast.Compare: "a comparison", ast.Subscript: "indexing"}.get(type(node), type(node).__name__)
    raise Refused(f"{what} is not allowed in an equation", line, node)


def names(tree: tuple) -> set[str]:
    """Every name a tree mentions."""
    if tree[0] == "name":
        return {tree[1]}
    if tree[0] == "num":
        return set()
    if tree[0] == "call":
        return names(tree[2])
    return set().union(*(names(t) for t in tree[1:]))


# --- computing -----------------------------------------------------------------------------------

def _bounded(q: Fraction, line: int) -> Fraction:
    if q.numerator.bit_length() > MAX_BITS or q.denominator.bit_length() > MAX_BITS:
        raise Undefined(f"a number grew beyond {MAX_BITS} bits", line)
    return q


def evaluate(tree: tuple, known: dict[str, Fraction], line: int = 0) -> Fraction:
    """The exact value of a tree given the values of names; Unknown, NeedsSolver or Undefined."""
    op = tree[0]
    if op == "num":
        return tree[1]
    if op == "name":
        if tree[1] not in known:
            raise Unknown(tree[1])
        return known[tree[1]]
    if op == "neg":
        return -evaluate(tree[1], known, line)
    if op == "call":
        return Fraction(FUNCTIONS[tree[1]](evaluate(tree[2], known, line)))
    a, b = evaluate(tree[1], known, line), evaluate(tree[2], known, line)
    if op == "add":
        return _bounded(a + b, line)
    if op == "sub":
        return _bounded(a - b, line)
    if op == "mul":
        return _bounded(a * b, line)
    if op == "div":
        if b == 0:
            raise Undefined("division by zero", line)
        return _bounded(a / b, line)
    if b.denominator != 1:
        raise NeedsSolver()
    if a == 0 and b < 0:
        raise Undefined("zero to a negative power", line)
    if abs(b) > MAX_EXPONENT or a.numerator.bit_length() * abs(b) > MAX_BITS * 2:
        raise Undefined("power too large", line)
    return _bounded(a ** int(b), line)
