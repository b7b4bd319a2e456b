"""Untrusted programs and equation solving run here, never in the package's own process.

Two layers, so that one mistake does not open the machine:

1. ``check_program`` reads a program with Python's ``ast`` (parsing, not running) against an
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
2. The program then runs in a child forked from a warm worker process (distill/thoughts/worker.py),
   with restricted builtins, wall-clock and CPU limits, an address-space limit, no new files,
   fds or processes (rlimits), no new privileges, and an environment built for the worker
   (worker.ENV: PATH and LANG, nothing of ours such as OPENAI_API_KEY). As root the child drops to
   the user nobody and the worker leaves the network namespace; as an ordinary user the worker
   enters a new user, network and PID namespace (no privilege needed where the kernel allows it)
   and drops the capabilities it grants; where the kernel refuses, the rest still holds. ``isolation()``
   says which is in force (``distill verify`` prints it). A program that hangs or crashes takes down
   only itself: the worker kills that child and runs the jobs queued behind it in a fresh one.

Speed: forking per program costs about 2 ms here, so a child runs a short chunk of programs (up to
16) one after the other, each in a fresh namespace with fresh builtins and module proxies and a reset
decimal context; layer 1 forbids attribute assignment, so one program cannot leave state for the
next. Measured by benchmarks/verify.py. ``configure(workers=N)`` (VerifyConfig.workers) sets how many
children run side by side.

What the OS layer gives depends on the user: as root the child is nobody, so RLIMIT_NPROC and file
permissions apply and it cannot signal the worker; as an ordinary user it keeps that user's id (in
its own user namespace) but, in its own PID namespace, sees no process outside it and cannot signal
the worker (the namespace's init). Where the kernel grants no PID namespace, a program that got past
layer 1 could still signal that user's processes (no new processes, files, fds or network either
way); layer 1 is what stops that.

Jobs and results cross the process boundary as JSON lines, never pickle. Workers are started lazily,
one per kind (``pot``: a lean process for programs; ``sympy``: one with sympy imported, for equation
systems that need solving), reused for every later call, restarted when they die, and closed at exit.

Results are dicts ``{"status": "ok"|FAILURE, "reason": str, ...}`` (see worker.py for the fields).
"""
from __future__ import annotations

import ast
import atexit
import builtins
import json
import os
import select
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Sequence

from distill.thoughts.worker import ALLOWED_MODULES, ENV, SAFE_BUILTIN_NAMES, module_api

WORKER = Path(__file__).with_name("worker.py")
DEFAULT_TIMEOUT = 5.0
MEMORY_MB = 512
"""Address space a child may add to what the worker already maps."""
OUTPUT_BYTES = 64 * 1024
"""Most a program may print (more is an exec_error)."""
MAX_PROGRAM_CHARS = 20_000
MAX_PROGRAM_LINES = 500
STARTUP_TIMEOUT = 120.0

ALLOWED_IMPORTS = ALLOWED_MODULES
MODULE_NAMES = frozenset(name for module in ALLOWED_MODULES for name in module_api(module))

# --- the allowlist of layer 1 ----------------------------------------------------------------------
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
            if alias.name not in ALLOWED_IMPORTS:
                return f"import of {alias.name!r} is not allowed (allowed: {', '.join(ALLOWED_IMPORTS)})"
    elif isinstance(node, ast.ImportFrom):
        if node.level or node.module not in ALLOWED_IMPORTS:
            return f"import from {node.module or '.'!r} is not allowed (allowed: {', '.join(ALLOWED_IMPORTS)})"
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


class Worker:
    """One warm worker process of a kind; thread-safe; restarted after a failure."""

    def __init__(self, kind: str, parallel: int | None = None):
        self.kind = kind
        self.parallel = parallel or default_workers()
        self._proc: subprocess.Popen | None = None
        self._owner = os.getpid()
        self._lock = threading.Lock()
        self._buf = b""
        self.isolation: dict = {}

    def _start(self) -> None:
        # env: the worker's whole environment is built here, so no variable of ours (OPENAI_API_KEY...)
        # reaches a program; -I: no PYTHON* variables, no user site, no script folder on sys.path
        self._proc = subprocess.Popen(
            [sys.executable, "-I", str(WORKER), self.kind, str(self.parallel)], env=dict(ENV),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, start_new_session=True)
        self._buf = b""
        line = self._readline(time.monotonic() + STARTUP_TIMEOUT)
        ready = json.loads(line) if line else {}
        if not ready.get("ready"):
            self.close()
            raise RuntimeError(f"the {self.kind} sandbox worker did not start ({sys.executable} {WORKER})")
        self.isolation = ready.get("isolation") or {}

    def describe(self) -> str:
        """What isolation is in force for this worker's programs (starts the worker if needed)."""
        with self._lock:
            if self._owner != os.getpid():
                self._proc, self._owner = None, os.getpid()
            if self._proc is None or self._proc.poll() is not None:
                self._start()
            return self.isolation.get("description", "unknown")

    def _readline(self, deadline: float) -> bytes | None:
        """One line from the worker, or None when it died or the deadline passed."""
        fd = self._proc.stdout.fileno()
        while b"\n" not in self._buf:
            wait = deadline - time.monotonic()
            if wait <= 0 or not select.select([fd], [], [], wait)[0]:
                return None
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                return None
            self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\n")
        return line

    def run(self, jobs: Sequence[dict], timeout: float = DEFAULT_TIMEOUT, memory_mb: int = MEMORY_MB,
            output_bytes: int = OUTPUT_BYTES) -> list[dict]:
        """Results of ``jobs`` in their order; a worker failure fails the unfinished jobs, not the call."""
        if not jobs:
            return []
        results: list[dict | None] = [None] * len(jobs)
        with self._lock:
            if self._owner != os.getpid():
                # we are a fork of the process that started the worker: its pipes are not ours to share
                self._proc, self._owner = None, os.getpid()
            if self._proc is None or self._proc.poll() is not None:
                self._start()
            batch = {"jobs": [{**job, "i": i} for i, job in enumerate(jobs)], "timeout": float(timeout),
                     "memory_mb": memory_mb, "output_bytes": output_bytes}
            # Each child is killed at its own deadline; this bound only catches a broken worker.
            rounds = -(-len(jobs) // self.parallel)
            deadline = time.monotonic() + rounds * (timeout + 1.0) + 30.0
            try:
                self._proc.stdin.write(json.dumps(batch).encode() + b"\n")
                self._proc.stdin.flush()
                while True:
                    line = self._readline(deadline)
                    if line is None:
                        raise RuntimeError("no answer")
                    msg = json.loads(line)
                    if msg.get("done"):
                        break
                    results[msg.pop("i")] = msg
            except (OSError, RuntimeError, ValueError):
                self.close()
        return [r if r is not None else {"status": "exec_error", "reason": "the sandbox worker failed; job not run"}
                for r in results]

    def close(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None or self._owner != os.getpid():
            return
        # SIGTERM first: in a PID namespace the worker is that namespace's init, and the process we
        # started waits for it; asked to end, it kills and reaps the worker (ending every child in the
        # namespace) rather than leave it to whoever adopts orphans. SIGKILL to the group when that fails.
        try:
            proc.terminate()
            proc.wait(timeout=5)
        except (OSError, subprocess.TimeoutExpired):
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except OSError:
                pass
            proc.wait()
        for stream in (proc.stdin, proc.stdout):
            try:
                stream.close()
            except OSError:
                pass


_WORKERS: dict[str, Worker] = {}
_WORKERS_LOCK = threading.Lock()
_SETTINGS = {"workers": 0}


def default_workers() -> int:
    """Children run side by side per worker: ``configure(workers=...)``, else (0, auto) up to 4, one per CPU."""
    return _SETTINGS["workers"] or max(1, min(4, os.cpu_count() or 1))


def configure(workers: int = 0) -> None:
    """Set the sandbox's parallelism (VerifyConfig.workers; 0 = auto); running workers of another
    parallelism are closed and restart with the new one at their next use."""
    if workers < 0:
        raise ValueError(f"workers must be 0 (auto) or more, got {workers}")
    with _WORKERS_LOCK:
        _SETTINGS["workers"] = int(workers)
        for kind, w in list(_WORKERS.items()):
            if w.parallel != default_workers():
                w.close()
                del _WORKERS[kind]


def worker(kind: str) -> Worker:
    """The shared warm worker of a kind (``pot`` or ``sympy``), started on first use."""
    with _WORKERS_LOCK:
        if kind not in _WORKERS:
            _WORKERS[kind] = Worker(kind)
        return _WORKERS[kind]


def isolation() -> str:
    """What the OS gives the sandbox's programs here, in words, e.g. "uid nobody (dropped from root),
    no network (network namespace), minimal environment, rlimits, no new privileges" (root), "user,
    network and PID namespace (uid 1000, no capabilities), no network, ..." (an ordinary user), or
    "rlimits only (no namespaces: <why>), ..." when the kernel refuses namespaces. Starts the program
    worker."""
    return worker("pot").describe()


@atexit.register
def close_all() -> None:
    """Stop every worker; the next call starts fresh ones (with the environment of that moment's rules)."""
    with _WORKERS_LOCK:
        for w in list(_WORKERS.values()):
            w.close()


def run_programs(sources: Sequence[str], timeout: float = DEFAULT_TIMEOUT, *, call_solution: bool = False,
                 memory_mb: int = MEMORY_MB, output_bytes: int = OUTPUT_BYTES) -> list[dict]:
    """Check then run each program; ``{"status": "ok", "ans": text|None, "printed", "reason"}`` or a failure.

    ``call_solution``: when the program assigns no ``ans`` but defines ``solution()``, call it.
    """
    results: list[dict | None] = [None] * len(sources)
    jobs, where = [], []
    for i, src in enumerate(sources):
        try:
            check_program(src)
        except SyntaxError as exc:
            results[i] = {"status": "parse_error", "reason": f"SyntaxError: {exc.msg} (line {exc.lineno})"
                          if exc.lineno else f"SyntaxError: {exc}"}
            continue
        except Unsafe as exc:
            results[i] = {"status": "unsafe", "reason": str(exc)}
            continue
        jobs.append({"task": "pot", "src": src, "call_solution": call_solution})
        where.append(i)
    for i, result in zip(where, worker("pot").run(jobs, timeout, memory_mb, output_bytes)):
        results[i] = result
    return results  # type: ignore[return-value]


def solve_systems(systems: Sequence[dict], timeout: float = DEFAULT_TIMEOUT, *,
                  memory_mb: int = 1024) -> list[dict]:
    """Solve ``{"eqs": [[lhs, rhs], ...], "target": "ans"}`` trees with sympy.solve in a child each;
    ``{"status": "ok", "values": [text, ...]}`` (the distinct real values of the target) or a failure."""
    return worker("sympy").run([{"task": "eot", **s} for s in systems], timeout, memory_mb)
