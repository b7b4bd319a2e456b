"""The sandbox: untrusted programs and equation solving run here, never in the package's own process.

Two layers, so that one mistake does not open the machine:

1. ``check_program`` (distill/sandbox/check.py) reads a program with Python's ``ast`` against an
   allowlist of constructs, modules, attributes and builtins; a program that fails is ``unsafe``
   with the reason and never runs.
2. The program then runs in a child forked from a warm worker process (distill/sandbox/worker.py),
   with restricted builtins, wall-clock and CPU limits, an address-space limit, no new files,
   fds or processes (rlimits), no new privileges, and an environment built for the worker
   (worker.ENV: PATH and LANG, nothing of ours such as OPENAI_API_KEY). As root the child drops to
   the user nobody and the worker leaves the network namespace; as an ordinary user the worker
   enters a new user, network and PID namespace (no privilege needed where the kernel allows it)
   and drops the capabilities it grants; where the kernel refuses, the rest still holds. ``isolation()``
   says which is in force (``distill verify`` prints it). A program that hangs or crashes takes down
   only itself: the worker kills that child and runs the jobs queued behind it in a fresh one.

This module owns layer 2's parent side: the pool of warm workers (``Worker``, ``worker(kind)``,
``configure``, ``close_all``) and the two calls the thought forms make, ``run_programs`` (PoT) and
``solve_systems`` (EoT systems the forward pass does not settle). It imports nothing of the thought
forms: it takes program texts and equation trees and returns result dicts. It reads and writes no files;
it starts ``python -I distill/sandbox/worker.py`` processes and talks to them over pipes.

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

from distill.sandbox.check import Unsafe, check_program
from distill.sandbox.worker import ENV

WORKER = Path(__file__).with_name("worker.py")
DEFAULT_TIMEOUT = 5.0
MEMORY_MB = 512
"""Address space a child may add to what the worker already maps."""
OUTPUT_BYTES = 64 * 1024
"""Most a program may print (more is an exec_error)."""
STARTUP_TIMEOUT = 120.0


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
