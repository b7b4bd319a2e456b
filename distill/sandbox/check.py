"""Layer 1 of the sandbox: the static allowlist check of a program, before anything runs.

``check_program`` reads a program with Python's ``ast`` (parsing, not running) against an
allowlist: only the node types a math program needs (ALLOWED_NODES: assignments, arithmetic,
comparisons, if/for/while, plain functions and lambdas, try/except, comprehensions, containers,
subscripts, f-strings), imports only of math, fractions, decimal and datetime and only of their
allowed names (worker.MODULE_API), attribute reads only of names in SAFE_ATTRIBUTES (that API plus
methods of lists, dicts, sets, strings, numbers and dates; no ``format``/``format_map``, whose
fields walk attributes), no dunder names, no builtin outside worker.SAFE_BUILTIN_NAMES. Anything
else is refused with its line and what it is ("line 3: match statements are not allowed"):
pattern matching binds attributes by keyword (``case str(format=f)``) without an attribute node,
so it is refused as a whole, as are classes, ``with``, ``async``, ``yield``, decorators, ``**``
in calls and attribute assignment. A program that fails is ``unsafe`` with the reason and never runs.

Reads only the program text it is given and the worker's lists of allowed modules, names and
builtins (distill/sandbox/worker.py, so the check and the run time agree); writes nothing.
"""
from __future__ import annotations

import ast
import builtins

from distill.sandbox.worker import ALLOWED_MODULES, SAFE_BUILTIN_NAMES, module_api

MAX_PROGRAM_CHARS = 20_000
MAX_PROGRAM_LINES = 500

MODULE_NAMES = frozenset(name for module in ALLOWED_MODULES for name in module_api(module))

# What a grade-school math program needs, and nothing else. A node type not listed is refused with
# its line and what it is, whatever Python version adds (type aliases, type parameters...).
ALLOWED_NODES = frozenset({
    ast.Module, ast.Expr, ast.Assign, ast.AugAssign, ast.AnnAssign, ast.Delete, ast.Pass, ast.Break,
    ast.Continue, ast.If, ast.For, ast.While, ast.FunctionDef, ast.Return, ast.Lambda, ast.Try,
    ast.ExceptHandler, ast.Raise, ast.Assert, ast.Import, ast.ImportFrom, ast.alias, ast.Global,
    ast.Nonlocal, ast.arguments, ast.arg, ast.keyword,
    ast.Name, ast.Constant, ast.Attribute, ast.Subscript, ast.Slice, ast.Starred, ast.Call,
    ast.BinOp, ast.UnaryOp, ast.BoolOp, ast.Compare, ast.IfExp, ast.NamedExpr,
    ast.List, ast.Tuple, ast.Dict, ast.Set, ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp,
    ast.comprehension,
    # f-strings: every expression inside is a node of this same check (so f"{x.__class__}" is refused
    # as an attribute), and a format spec is read by the value's __format__ as its mini-language, never
    # as a field name that walks attributes (that is str.format and format_map, refused as attributes)
    ast.JoinedStr, ast.FormattedValue,
    ast.Load, ast.Store, ast.Del,
}) | {cls for base in (ast.operator, ast.unaryop, ast.boolop, ast.cmpop) for cls in base.__subclasses__()}

_REFUSED = {
    "Match": "match statements", "match_case": "match statements", "ClassDef": "class definitions",
    "AsyncFunctionDef": "async functions", "Await": "await expressions", "AsyncFor": "async for loops",
    "AsyncWith": "async with blocks", "With": "with blocks", "Yield": "yield expressions",
    "YieldFrom": "yield from expressions", "TryStar": "except* blocks",
    "TypeAlias": "type aliases",
}

SAFE_ATTRIBUTES = frozenset({
    # list, dict, set
    "append", "extend", "insert", "pop", "remove", "index", "count", "sort", "reverse", "copy", "clear",
    "items", "keys", "values", "get", "setdefault", "update", "popitem", "add", "discard", "union",
    "intersection", "difference", "symmetric_difference", "issubset", "issuperset", "isdisjoint",
    # str (no format, format_map: their fields walk attributes, "{0.__globals__}".format(print))
    "lower", "upper", "strip", "lstrip", "rstrip", "split", "rsplit", "join", "replace", "startswith",
    "endswith", "isdigit", "isnumeric", "isdecimal", "isalpha", "zfill", "find", "rfind", "title",
    "capitalize", "splitlines", "ljust", "rjust", "center", "partition",
    # numbers, Fraction, Decimal
    "real", "imag", "numerator", "denominator", "conjugate", "is_integer", "as_integer_ratio", "bit_length",
    "limit_denominator", "from_float", "from_decimal", "quantize", "sqrt", "exp", "ln", "log10",
    "to_integral_value", "normalize", "is_nan", "is_finite", "adjusted", "copy_abs",
    # date, datetime, timedelta
    "year", "month", "day", "hour", "minute", "second", "microsecond", "weekday", "isoweekday", "days",
    "seconds", "microseconds", "total_seconds", "date", "time", "strftime", "isoformat", "fromisoformat",
    "toordinal", "fromordinal", "today", "max", "min",
}) | MODULE_NAMES
"""Attribute names a program may read, on any object: the public API of the allowed modules
(worker.MODULE_API) and methods of the values a math program makes. Everything else, dunders and
frame or code attributes (gi_frame, f_globals) included, is refused; attributes are never assigned
or deleted."""

_UNAVAILABLE_BUILTINS = frozenset(dir(builtins)) - set(SAFE_BUILTIN_NAMES) - {"print"}
"""Python's builtins that a program does not get: reading one it does not define itself is refused
by name (at run time it would only be a NameError, with a less helpful reason)."""
_PLAIN = ALLOWED_NODES - {ast.Name, ast.Attribute, ast.Import, ast.ImportFrom, ast.alias, ast.FunctionDef, ast.arg,
                          ast.keyword, ast.ExceptHandler, ast.Global, ast.Nonlocal, ast.comprehension}
"""Allowed node types without a rule on their fields: allowed as they are."""


class Unsafe(ValueError):
    """A program that uses something the sandbox does not allow; the message says what."""


def _bound_names(tree: ast.AST) -> set[str]:
    """Every name the program binds itself (assignments, defs, parameters, imports, loop and except names)."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and not isinstance(node.ctx, ast.Load):
            names.add(node.id)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.arg):
            names.add(node.arg)
        elif isinstance(node, ast.alias):
            names.add((node.asname or node.name).split(".")[0])
        elif isinstance(node, ast.ExceptHandler) and node.name:
            names.add(node.name)
        elif isinstance(node, (ast.Global, ast.Nonlocal)):
            names.update(node.names)
    return names


class _BoundNames:
    """``_bound_names(tree)``, computed on first use (only a program that reads a builtin it does not get)."""

    def __init__(self, tree: ast.AST):
        self.tree, self.names = tree, None

    def __contains__(self, name: str) -> bool:
        if self.names is None:
            self.names = _bound_names(self.tree)
        return name in self.names


def _check_node(node: ast.AST, bound: _BoundNames) -> str | None:
    """Why ``node`` is refused (without its line), or None when it is allowed."""
    kind = type(node)
    if kind not in ALLOWED_NODES:
        what = _REFUSED.get(kind.__name__) or (
            "match statements" if kind.__name__.startswith("Match") else f"{kind.__name__} nodes")
        return f"{what} are not allowed"
    if isinstance(node, ast.Name):
        if node.id.startswith("__"):
            return f"the name {node.id!r} is not allowed"
        if node.id in _UNAVAILABLE_BUILTINS and isinstance(node.ctx, ast.Load) and node.id not in bound:
            return (f"the builtin {node.id!r} is not available in the sandbox "
                    "(only plain ones such as print, len, range, sum, round, int, float)")
    elif isinstance(node, ast.Attribute):
        if node.attr not in SAFE_ATTRIBUTES:
            return f"the attribute {node.attr!r} is not allowed"
        if not isinstance(node.ctx, ast.Load):
            return f"assigning or deleting attributes ({node.attr!r}) is not allowed"
    elif isinstance(node, ast.Import):
        for alias in node.names:
            if alias.name not in ALLOWED_MODULES:
                return f"import of {alias.name!r} is not allowed (allowed: {', '.join(ALLOWED_MODULES)})"
    elif isinstance(node, ast.ImportFrom):
        if node.level or node.module not in ALLOWED_MODULES:
            return f"import from {node.module or '.'!r} is not allowed (allowed: {', '.join(ALLOWED_MODULES)})"
        api = module_api(node.module)
        for alias in node.names:
            if alias.name == "*":
                return f"'from {node.module} import *' is not allowed; import the names you use"
            if alias.name not in api:
                return f"{alias.name!r} is not an allowed name of {node.module}"
    elif isinstance(node, ast.alias):
        if (node.asname or "").startswith("__"):
            return f"the name {node.asname!r} is not allowed"
    elif isinstance(node, ast.FunctionDef):
        if node.decorator_list:
            return "decorators are not allowed"
        if getattr(node, "type_params", None):
            return "type parameters are not allowed"
        if node.name.startswith("__"):
            return f"the function name {node.name!r} is not allowed"
    elif isinstance(node, ast.arg):
        if node.arg.startswith("__"):
            return f"the parameter name {node.arg!r} is not allowed"
    elif isinstance(node, ast.keyword):
        if node.arg is None:
            return "**-unpacking in a call is not allowed"
        if node.arg.startswith("__"):
            return f"the keyword {node.arg!r} is not allowed"
    elif isinstance(node, ast.ExceptHandler):
        if node.name and node.name.startswith("__"):
            return f"the name {node.name!r} is not allowed"
    elif isinstance(node, (ast.Global, ast.Nonlocal)):
        bad = next((n for n in node.names if n.startswith("__")), None)
        if bad:
            return f"the name {bad!r} is not allowed"
    elif isinstance(node, ast.comprehension):
        if node.is_async:
            return "async comprehensions are not allowed"
    return None


def check_program(src: str) -> ast.Module:
    """The parsed program if every node passes the allowlist; raises SyntaxError (unreadable) or Unsafe
    ("line 3: match statements are not allowed")."""
    if len(src) > MAX_PROGRAM_CHARS or src.count("\n") > MAX_PROGRAM_LINES:
        raise Unsafe(f"program longer than {MAX_PROGRAM_CHARS} characters or {MAX_PROGRAM_LINES} lines")
    if "\x00" in src:
        raise SyntaxError("the program contains a NUL byte")
    try:
        tree = ast.parse(src, "<program>", "exec")
    except (RecursionError, MemoryError):
        raise Unsafe("program nested too deeply to read") from None
    except ValueError as exc:
        raise SyntaxError(str(exc)) from None
    bound = _BoundNames(tree)
    if all(type(node) in _PLAIN or _check_node(node, bound) is None for node in ast.walk(tree)):
        return tree
    # refused: find the first refused construct in source order, for the reason, depth first (an
    # explicit stack: `1 + 1 + ...` nests thousands deep)
    stack = [(tree, 0)]
    while stack:
        node, line = stack.pop()
        line = getattr(node, "lineno", line)
        if type(node) not in _PLAIN:
            why = _check_node(node, bound)
            if why:
                raise Unsafe(f"line {line}: {why}" if line else why)
        children = list(ast.iter_child_nodes(node))
        children.reverse()
        stack.extend((child, line) for child in children)
    return tree


