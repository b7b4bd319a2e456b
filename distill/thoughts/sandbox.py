"""Untrusted programs and equation solving run here, never in the package's own process.

Two layers, so that one mistake does not open the machine:

1. ``check_program`` reads a program with Python's ``ast`` (parsing, not running) against a whitelist:
   imports only of math, fractions, decimal and datetime; no dunder names or attributes, no frame or
   code attributes (``gi_frame``, ``f_globals``...), no ``open``/``eval``/``exec``/``getattr``..., no
   classes, ``with``, ``async`` or attribute assignment. A program that fails it is ``unsafe`` with
   the reason, and never runs.
2. The program then runs in a child forked from a warm worker process (distill/thoughts/worker.py),
   with restricted builtins, wall-clock and CPU limits, an address-space limit, no new files,
   fds or processes (rlimits), as the unprivileged user nobody when we are root, and without network
   when the worker could leave its network namespace. A program that hangs or crashes takes down only
   itself: the worker kills that child and runs the jobs queued behind it in a fresh one.

Speed: forking per program costs about 2 ms here, so a child runs a short chunk of programs (up to
16) one after the other, each in a fresh namespace with fresh builtins and module proxies and a reset
decimal context; layer 1 forbids attribute assignment, so one program cannot leave state for the
next. Measured by benchmarks/verify.py.

What the OS layer gives depends on the user: as root the child drops to nobody, so RLIMIT_NPROC
and file permissions apply and it cannot signal the worker; as an ordinary user it keeps that
user's id, so a program that got past layer 1 could still signal that user's processes (no
new processes, files, fds or network either way). Layer 1 is what stops that.

Jobs and results cross the process boundary as JSON lines, never pickle. Workers are started lazily,
one per kind (``pot``: a lean process for programs; ``sympy``: one with sympy imported, for equation
systems that need solving), reused for every later call, restarted when they die, and closed at exit.

Results are dicts ``{"status": "ok"|FAILURE, "reason": str, ...}`` (see worker.py for the fields).
"""
from __future__ import annotations

import ast
import atexit
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

WORKER = Path(__file__).with_name("worker.py")
DEFAULT_TIMEOUT = 5.0
MEMORY_MB = 512
"""Address space a child may add to what the worker already maps."""
OUTPUT_BYTES = 64 * 1024
"""Most a program may print (more is an exec_error)."""
MAX_PROGRAM_CHARS = 20_000
MAX_PROGRAM_LINES = 500
STARTUP_TIMEOUT = 120.0

ALLOWED_IMPORTS = ("math", "fractions", "decimal", "datetime")
FORBIDDEN_NAMES = frozenset({
    "open", "exec", "eval", "compile", "globals", "locals", "vars", "dir", "getattr", "setattr", "delattr",
    "hasattr", "input", "breakpoint", "help", "exit", "quit", "memoryview", "type", "object", "super",
    "classmethod", "staticmethod", "property", "id", "os", "sys", "subprocess", "socket", "shutil", "signal",
    "builtins", "importlib", "ctypes", "pathlib", "io", "threading", "multiprocessing", "resource", "gc",
    "inspect", "pickle", "marshal", "code", "codecs",
})
FORBIDDEN_ATTRS = frozenset({"format", "format_map", "mro", "register"})
FRAME_ATTR_PREFIXES = ("gi_", "cr_", "ag_", "f_", "tb_", "co_")
FORBIDDEN_NODES = {
    ast.ClassDef: "class definitions", ast.AsyncFunctionDef: "async functions", ast.Await: "await",
    ast.AsyncFor: "async for", ast.AsyncWith: "async with", ast.With: "with blocks", ast.Yield: "yield",
    ast.YieldFrom: "yield from",
}


class Unsafe(ValueError):
    """A program that uses something the sandbox does not allow; the message says what."""


def check_program(src: str) -> ast.Module:
    """The parsed program if it passes the whitelist; raises SyntaxError (unreadable) or Unsafe."""
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
    for node in ast.walk(tree):
        line = getattr(node, "lineno", "?")
        kind = FORBIDDEN_NODES.get(type(node))
        if kind:
            raise Unsafe(f"line {line}: {kind} are not allowed")
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name not in ALLOWED_IMPORTS:
                    raise Unsafe(f"line {line}: import of {alias.name!r} is not allowed "
                                 f"(allowed: {', '.join(ALLOWED_IMPORTS)})")
        elif isinstance(node, ast.ImportFrom):
            if node.level or node.module not in ALLOWED_IMPORTS:
                raise Unsafe(f"line {line}: import from {node.module or '.'!r} is not allowed "
                             f"(allowed: {', '.join(ALLOWED_IMPORTS)})")
            for alias in node.names:
                if alias.name.startswith("_"):
                    raise Unsafe(f"line {line}: importing private name {alias.name!r} is not allowed")
        elif isinstance(node, ast.Name):
            if node.id.startswith("__") or node.id in FORBIDDEN_NAMES:
                raise Unsafe(f"line {line}: the name {node.id!r} is not allowed")
        elif isinstance(node, ast.Attribute):
            attr = node.attr
            if attr.startswith("_") or attr in FORBIDDEN_ATTRS or attr.startswith(FRAME_ATTR_PREFIXES):
                raise Unsafe(f"line {line}: the attribute {attr!r} is not allowed")
            if not isinstance(node.ctx, ast.Load):
                raise Unsafe(f"line {line}: assigning or deleting attributes ({attr!r}) is not allowed")
        elif isinstance(node, (ast.FunctionDef, ast.Lambda)):
            args = node.args
            for a in args.posonlyargs + args.args + args.kwonlyargs + [args.vararg, args.kwarg]:
                if a is not None and a.arg.startswith("__"):
                    raise Unsafe(f"line {line}: the parameter name {a.arg!r} is not allowed")
            if isinstance(node, ast.FunctionDef) and node.name.startswith("__"):
                raise Unsafe(f"line {line}: the function name {node.name!r} is not allowed")
        elif isinstance(node, ast.ExceptHandler) and node.name and node.name.startswith("__"):
            raise Unsafe(f"line {line}: the name {node.name!r} is not allowed")
        elif isinstance(node, ast.keyword) and node.arg and node.arg.startswith("__"):
            raise Unsafe(f"line {line}: the keyword {node.arg!r} is not allowed")
    return tree


class Worker:
    """One warm worker process of a kind; thread-safe; restarted after a failure."""

    def __init__(self, kind: str, parallel: int | None = None):
        self.kind = kind
        self.parallel = parallel or max(1, min(4, os.cpu_count() or 1))
        self._proc: subprocess.Popen | None = None
        self._owner = os.getpid()
        self._lock = threading.Lock()
        self._buf = b""

    def _start(self) -> None:
        self._proc = subprocess.Popen(
            [sys.executable, "-I", str(WORKER), self.kind, str(self.parallel)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, start_new_session=True)
        self._buf = b""
        line = self._readline(time.monotonic() + STARTUP_TIMEOUT)
        if line is None or not json.loads(line).get("ready"):
            self.close()
            raise RuntimeError(f"the {self.kind} sandbox worker did not start ({sys.executable} {WORKER})")

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


def worker(kind: str) -> Worker:
    """The shared warm worker of a kind (``pot`` or ``sympy``), started on first use."""
    with _WORKERS_LOCK:
        if kind not in _WORKERS:
            _WORKERS[kind] = Worker(kind)
        return _WORKERS[kind]


@atexit.register
def close_all() -> None:
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
