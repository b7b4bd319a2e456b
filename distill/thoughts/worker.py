"""The sandbox worker (a "zygote"): a separate, long-lived process that forks confined children, each
running a short chunk of jobs one after the other (a job that fails hard ends its child; the jobs
queued behind it run in a new child).

This file is run as a script (``python -I worker.py pot|sympy PARALLEL``) by distill/thoughts/sandbox.py
and imports only the standard library (plus sympy in ``sympy`` mode), never the distill package.

Protocol (stdin/stdout of the worker, one JSON object per line, never pickle):
- the worker writes ``{"ready": true}`` once its imports are done;
- the parent writes a batch ``{"jobs": [{"i": k, "task": "pot"|"eot", ...}], "timeout": s,
  "memory_mb": m, "output_bytes": b}``;
- the worker answers one line per job, in completion order: ``{"i": k, "status": "ok"|FAILURE,
  "reason": str, ...}`` (``ok`` results carry ``ans`` and ``printed`` for programs, ``values`` for
  equation systems), then ``{"done": true}``.

Each child, before it touches the job: starts its own session (so the whole group can be killed),
points fds 0-2 at /dev/null and closes every other fd but its result pipe, sets rlimits (CPU, address
space, file size 0, no new fds (sympy children: a few, read-only use), no new processes, no core
dumps), and drops to nobody (65534) when
it runs as root, because RLIMIT_NPROC is ignored for root (../shared/docs/STYLE.md, "Known traps").
The worker itself leaves the network namespace at start when it may (unshare(CLONE_NEWNET) as root),
so children have no network either. The child's result is capped in size; a child that runs past its
wall-clock limit is killed with its process group and only that job fails.
"""
from __future__ import annotations

import gc
import json
import math
import os
import resource
import select
import signal
import sys
import time
import types  # noqa: F401 - preloaded for the children

NOBODY = 65534
CLONE_NEWNET = 0x40000000
MAX_REASON = 300
ALLOWED_MODULES = ("math", "fractions", "decimal", "datetime")
MODE = "pot"


class OutputLimit(Exception):
    """The program printed more than the output cap."""


# --- programs (PoT) ------------------------------------------------------------------------------

_SAFE_BUILTIN_NAMES = (
    "abs", "all", "any", "bin", "bool", "chr", "dict", "divmod", "enumerate", "filter", "float", "format",
    "frozenset", "hex", "int", "isinstance", "len", "list", "map", "max", "min", "oct", "ord", "pow", "range",
    "repr", "reversed", "round", "set", "slice", "sorted", "str", "sum", "tuple", "zip", "True", "False", "None",
    "Exception", "ArithmeticError", "ValueError", "TypeError", "ZeroDivisionError", "KeyError", "IndexError",
    "OverflowError", "NameError", "StopIteration",
)


def _module_proxy(name: str):
    """A namespace with a module's public, non-module attributes: ``fractions.sys`` must not exist."""
    import types

    module = __import__(name)
    public = {k: v for k, v in vars(module).items()
              if not k.startswith("_") and not isinstance(v, types.ModuleType) and k not in _SHARED_STATE}
    return types.SimpleNamespace(**public)


# Module-level mutable objects a program could change for the next program of its chunk
# (``decimal.Context()`` copies DefaultContext); left out of the proxies.
_SHARED_STATE = frozenset({"DefaultContext", "BasicContext", "ExtendedContext"})
_PRISTINE_DECIMAL = None


def _safe_import(name, globals=None, locals=None, fromlist=(), level=0):
    if level != 0 or name not in ALLOWED_MODULES:
        raise ImportError(f"import of {name!r} is not allowed; allowed: {', '.join(ALLOWED_MODULES)}")
    return _module_proxy(name)


def _number_text(value) -> tuple[str | None, str]:
    """(text of a finite number, reason when it is not one) for the value of ``ans``."""
    import decimal
    import fractions

    if isinstance(value, bool):
        return None, f"ans is a bool ({value}), not a number"
    if isinstance(value, str):
        return (value[:200], "") if value.strip() else (None, "ans is an empty string")
    if isinstance(value, (int, float, fractions.Fraction, decimal.Decimal)):
        try:
            f = float(value)
        except (OverflowError, ValueError):
            return None, "ans is too large to be a number of the answer"
        if not math.isfinite(f):
            return None, f"ans is {f}, not a finite number"
        return repr(f), ""
    return None, f"ans is a {type(value).__name__}, not a number"


def run_program(job: dict, output_bytes: int) -> dict:
    import builtins
    import decimal

    printed: list[str] = []
    size = [0]

    def _print(*args, sep=" ", end="\n"):
        text = str(sep).join(str(a) for a in args) + str(end)
        size[0] += len(text)
        if size[0] > output_bytes:
            raise OutputLimit(f"the program printed more than {output_bytes} bytes")
        printed.append(text)

    safe = {name: getattr(builtins, name) for name in _SAFE_BUILTIN_NAMES}
    safe.update(print=_print, __import__=_safe_import)
    env = {"__builtins__": safe, "__name__": "__main__"}
    decimal.setcontext(_PRISTINE_DECIMAL.copy() if _PRISTINE_DECIMAL else decimal.Context())
    try:
        code = compile(job["src"], "<program>", "exec")
        exec(code, env)  # noqa: S102 - runs in a forked, rlimited, unprivileged child; checked by sandbox.check_program
        if "ans" not in env and job.get("call_solution") and callable(env.get("solution")):
            env["ans"] = env["solution"]()
    except OutputLimit as exc:
        return {"status": "exec_error", "reason": str(exc)}
    except MemoryError:
        return {"status": "exec_error", "reason": "MemoryError: the program ran out of its memory limit"}
    except RecursionError:
        return {"status": "exec_error", "reason": "RecursionError: recursion too deep"}
    except SyntaxError as exc:
        return {"status": "parse_error", "reason": f"SyntaxError: {exc.msg} (line {exc.lineno})"}
    except BaseException as exc:  # the program's own failure, reported with its type; SystemExit included
        try:
            text = str(exc)[:MAX_REASON]
        except BaseException:
            text = "(unprintable)"
        return {"status": "exec_error", "reason": f"{type(exc).__name__}: {text}".rstrip(": ")}
    tail = "".join(printed)[-2000:]
    if "ans" not in env:
        return {"status": "ok", "ans": None, "printed": tail, "reason": "the program assigns no variable ans"}
    text, reason = _number_text(env["ans"])
    return {"status": "ok", "ans": text, "printed": tail, "reason": reason}


# --- equation systems (EoT) ----------------------------------------------------------------------

def _sym(tree, sp, symbols):
    """sympy object from the parent's whitelisted tree (lists of plain values, never text to parse)."""
    op = tree[0]
    if op == "num":
        p, q = tree[1]
        return sp.Rational(int(p), int(q))
    if op == "name":
        if tree[1] not in symbols:
            symbols[tree[1]] = sp.Symbol(tree[1])
        return symbols[tree[1]]
    if op == "neg":
        return -_sym(tree[1], sp, symbols)
    a, b = _sym(tree[1], sp, symbols), _sym(tree[2], sp, symbols)
    if op == "add":
        return a + b
    if op == "sub":
        return a - b
    if op == "mul":
        return a * b
    if op == "div":
        return a / b
    if op == "pow":
        return a ** b
    raise ValueError(f"unknown node {op!r}")


def solve_system(job: dict) -> dict:
    import sympy as sp

    symbols: dict = {}
    eqs = [sp.Eq(_sym(lhs, sp, symbols), _sym(rhs, sp, symbols)) for lhs, rhs in job["eqs"]]
    eqs = [e for e in eqs if e is not sp.true]
    if any(e is sp.false for e in eqs):
        return {"status": "no_answer", "reason": "the equations contradict each other"}
    target = symbols.get(job["target"])
    if target is None:
        return {"status": "no_answer", "reason": f"no equation mentions {job['target']}"}
    # the target first, so that a value in terms of other unknowns names those unknowns
    unknowns = [target] + sorted((s for s in symbols.values() if s is not target), key=lambda s: s.name)
    solutions = sp.solve(eqs, unknowns, dict=True)
    if not solutions:
        return {"status": "no_answer", "reason": "the system has no solution"}
    values, free = [], set()
    for sol in solutions:
        value = sol.get(target, target)
        for _ in range(3):
            value = value.subs(sol)
        if value.free_symbols:
            free |= {s.name for s in value.free_symbols}
            continue
        if not value.is_real:
            return {"status": "no_answer", "reason": f"{job['target']} is not a real number ({value})"}
        values.append(repr(float(value)))
    if free:
        return {"status": "no_answer",
                "reason": f"{job['target']} depends on unconstrained unknown(s): {', '.join(sorted(free))}"}
    return {"status": "ok", "values": sorted(set(values), key=float)}


# --- the child ---------------------------------------------------------------------------------

def _vm_bytes() -> int:
    """Address space the worker maps now; a child may add the memory limit to it."""
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[0]) * resource.getpagesize()
    except (OSError, ValueError, IndexError):
        return 2 * 2**30  # no /proc (not Linux): a generous base, the limit still bounds a memory bomb


def _confine(result_fd: int, devnull: int, timeout: float, memory_bytes: int) -> None:
    os.setsid()
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    os.closerange(3, result_fd)
    os.closerange(result_fd + 1, 1 << 16)
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGPIPE, signal.SIGXFSZ):
        signal.signal(sig, signal.SIG_DFL if sig != signal.SIGXFSZ else signal.SIG_IGN)
    cpu = max(1, math.ceil(timeout))
    # Programs (untrusted code) may open nothing. The sympy worker runs only our own trees, never text,
    # and sympy imports submodules lazily while it solves, so it may still open files for reading.
    nofile = 0 if MODE == "pot" else 64
    limits = [(resource.RLIMIT_CPU, (cpu, cpu + 1)), (resource.RLIMIT_FSIZE, (0, 0)),
              (resource.RLIMIT_CORE, (0, 0)), (resource.RLIMIT_NPROC, (0, 0)),
              (resource.RLIMIT_NOFILE, (nofile, nofile))]
    if memory_bytes:
        limits.append((resource.RLIMIT_AS, (memory_bytes, memory_bytes)))
    for which, value in limits:
        try:
            resource.setrlimit(which, value)
        except (ValueError, OSError):
            pass  # a limit the platform lacks; the others and the wall-clock kill still hold
    os.chdir("/")
    if os.getuid() == 0:
        os.setgroups([])
        os.setgid(NOBODY)
        os.setuid(NOBODY)


def _run_one(job: dict, batch: dict) -> bytes:
    try:
        if job["task"] == "pot":
            result = run_program(job, batch.get("output_bytes", 65536))
        else:
            result = solve_system(job)
        return json.dumps(result).encode()
    except MemoryError:
        return b'{"status": "exec_error", "reason": "MemoryError: out of the memory limit"}'
    except RecursionError:
        return b'{"status": "exec_error", "reason": "RecursionError: too deep"}'
    except BaseException as exc:
        return json.dumps({"status": "exec_error", "reason": f"{type(exc).__name__}: {str(exc)[:MAX_REASON]}"}).encode()


def _child(chunk: list[dict], batch: dict, result_fd: int, devnull: int, vm_base: int) -> None:
    """Run a chunk of jobs one after the other, each in a fresh namespace, one result line each.

    Each job gets its own CPU budget (the soft RLIMIT_CPU is moved up before each, under a hard limit
    for the whole chunk); the worker kills the child when one job passes its wall-clock limit and
    runs the chunk's remaining jobs in a new child, so a bad job takes down only itself.
    """
    try:
        memory = batch.get("memory_mb", 512)
        timeout = float(batch["timeout"])
        cpu = max(1, math.ceil(timeout))
        _confine(result_fd, devnull, timeout * len(chunk), vm_base + memory * 2**20 if memory else 0)
        for job in chunk:
            used = resource.getrusage(resource.RUSAGE_SELF)
            spent = math.ceil(used.ru_utime + used.ru_stime)
            try:
                hard = resource.getrlimit(resource.RLIMIT_CPU)[1]
                resource.setrlimit(resource.RLIMIT_CPU, (min(hard, spent + cpu), hard))
            except (ValueError, OSError):
                pass
            data = _run_one(job, batch) + b"\n"
            view = memoryview(data)
            while view:
                view = view[os.write(result_fd, view):]
    finally:
        os._exit(0)


def _reap(pid: int, deadline: float) -> tuple[int, bool]:
    """(wait status, killed): a child that closed its pipe but lingers is killed at its deadline."""
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return status, False
        if time.monotonic() >= deadline:
            _kill(pid)
            return os.waitpid(pid, 0)[1], True
        time.sleep(0.001)


def _failure(status: int, timed_out: bool, timeout: float, over_cap: bool, cap: int) -> dict:
    """Why the job a child was running gave no result."""
    if timed_out:
        return {"status": "timeout", "reason": f"no result within the {timeout:g} s wall-clock limit"}
    if over_cap:
        return {"status": "exec_error", "reason": f"result larger than {cap} bytes"}
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        if sig == signal.SIGXCPU:  # the soft RLIMIT_CPU; our own wall-clock kill is `timed_out` above
            return {"status": "timeout", "reason": f"CPU time limit ({math.ceil(timeout)} s) reached"}
        return {"status": "exec_error", "reason": f"the process died of signal {signal.Signals(sig).name}"}
    code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else -1
    return {"status": "exec_error", "reason": f"the process exited (code {code}) without a result"}


def _parse_result(line: bytes) -> dict:
    try:
        result = json.loads(line.decode())
        if isinstance(result, dict) and isinstance(result.get("status"), str):
            return result
    except ValueError:
        pass
    return {"status": "exec_error", "reason": "the process wrote a malformed result"}


def run_batch(batch: dict, parallel: int, devnull: int, vm_base: int, out) -> None:
    timeout = float(batch["timeout"])
    cap = int(batch.get("output_bytes", 65536)) + 16384
    jobs = batch["jobs"]
    size = max(1, min(int(batch.get("per_child", 16)), -(-len(jobs) // (2 * parallel))))
    queue = [jobs[k:k + size] for k in range(0, len(jobs), size)][::-1]
    active: dict[int, dict] = {}  # read fd -> {"chunk", "pid", "deadline", "buf", "done"}

    def emit(job: dict, result: dict) -> None:
        result["i"] = job["i"]
        out.write(json.dumps(result) + "\n")

    def close(fd: int, timed_out: bool, over_cap: bool = False) -> None:
        entry = active.pop(fd)
        os.close(fd)
        if timed_out or over_cap:
            _kill(entry["pid"])
        status, killed = _reap(entry["pid"], entry["deadline"])
        rest = entry["chunk"][entry["done"]:]
        if rest:
            emit(rest[0], _failure(status, timed_out or killed, timeout, over_cap, cap))
            if rest[1:]:
                queue.append(rest[1:])

    while queue or active:
        while queue and len(active) < parallel:
            chunk = queue.pop()
            r, w = os.pipe()
            pid = os.fork()
            if pid == 0:
                os.close(r)
                _child(chunk, batch, w, devnull, vm_base)
            os.close(w)
            active[r] = {"chunk": chunk, "pid": pid, "deadline": time.monotonic() + timeout, "buf": b"", "done": 0}
        wait = max(0.0, min(a["deadline"] for a in active.values()) - time.monotonic())
        ready, _, _ = select.select(list(active), [], [], wait)
        for fd in ready:
            entry = active[fd]
            chunk = os.read(fd, 65536)
            if not chunk:
                close(fd, False)
                continue
            entry["buf"] += chunk
            while b"\n" in entry["buf"]:
                line, _, entry["buf"] = entry["buf"].partition(b"\n")
                if entry["done"] >= len(entry["chunk"]):
                    break  # more lines than jobs: not from our child code; ignored
                emit(entry["chunk"][entry["done"]], _parse_result(line))
                entry["done"] += 1
                entry["deadline"] = time.monotonic() + timeout
            if len(entry["buf"]) > cap:
                close(fd, False, over_cap=True)
        now = time.monotonic()
        for fd in [fd for fd, a in active.items() if a["deadline"] <= now]:
            close(fd, True)
        out.flush()


def _kill(pid: int) -> None:
    for target in (lambda: os.killpg(pid, signal.SIGKILL), lambda: os.kill(pid, signal.SIGKILL)):
        try:
            target()
        except OSError:
            pass


def _leave_network() -> None:
    """No network for any child: a new, empty network namespace (needs root; skipped otherwise)."""
    if os.getuid() != 0:
        return
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).unshare(CLONE_NEWNET)
    except (OSError, AttributeError):
        pass


def main() -> None:
    global MODE
    mode, parallel = sys.argv[1], int(sys.argv[2])
    MODE = mode
    import datetime  # noqa: F401 - preloaded so a child's `import` never touches the file system
    import decimal
    import fractions  # noqa: F401

    global _PRISTINE_DECIMAL
    _PRISTINE_DECIMAL = decimal.Context()  # a copy of the defaults, taken before any program runs

    if mode == "sympy":
        import sympy  # noqa: F401

        x, y = sympy.symbols("x y")  # warm its lazy imports and caches before forking
        sympy.solve([x - 1], [x], dict=True)
        sympy.solve([x**2 - 16, y - 2 * x], [x, y], dict=True)
        sympy.solve([sympy.Eq(x * y, 6), x + y - 5], [x, y], dict=True)
        sympy.solve([x ** sympy.Rational(1, 2) - 3], [x], dict=True)
    _leave_network()
    devnull = os.open(os.devnull, os.O_RDWR)
    vm_base = _vm_bytes()
    gc.collect()
    gc.freeze()  # fewer copy-on-write page faults in the children
    out = sys.stdout
    out.write(json.dumps({"ready": True}) + "\n")
    out.flush()
    for line in sys.stdin:
        if line.strip():
            run_batch(json.loads(line), parallel, devnull, vm_base, out)
            out.write(json.dumps({"done": True}) + "\n")
            out.flush()


if __name__ == "__main__":
    main()
