"""The sandbox worker (a "zygote"): a separate, long-lived process that forks confined children, each
running a short chunk of jobs one after the other (a job that fails hard ends its child; the jobs
queued behind it run in a new child).

This file is run as a script (``python -I worker.py pot|sympy PARALLEL``) by the worker pool of
distill/sandbox/__init__.py and imports only the standard library (plus sympy in ``sympy`` mode), never
the distill package. It owns the run-time side of confinement: the builtins and module proxies a
program gets (whose names distill/sandbox/check.py reads for its static check), the children's
limits and namespaces, and the sympy solving of equation systems. It reads jobs on stdin and writes
results on stdout; besides the modules it imports (sympy's children import some lazily, read-only),
the only files it opens are its own /proc entries (memory use, capabilities, the user namespace's id
maps) and /dev/null. It stays one file (over 600 lines) because it is one script: run with ``-I``,
it has no package and no script folder on ``sys.path``, so it cannot import a sibling module;
everything in it runs in the worker or in its confined children.

Protocol (stdin/stdout of the worker, one JSON object per line, never pickle):
- the worker writes ``{"ready": true, "isolation": {"description": str, "nobody", "userns", "netns": bool,
  ...}}`` once its imports are done and its namespaces are set up (``_isolate``);
- the parent writes a batch ``{"jobs": [{"i": k, "task": "pot"|"eot", ...}], "timeout": s,
  "memory_mb": m, "output_bytes": b}``;
- the worker answers one line per job, in completion order: ``{"i": k, "status": "ok"|FAILURE,
  "reason": str, ...}`` (``ok`` results carry ``ans`` and ``printed`` for programs, ``values`` for
  equation systems), then ``{"done": true}``.

The worker keeps only ``ENV`` of its environment (the parent passes nothing else), so no variable of
the parent process reaches a child. Each child, before it touches the job: starts its own session (so
the whole group can be killed), points fds 0-2 at /dev/null and closes every other fd but its result
pipe, sets rlimits (CPU, address space, file size 0, no new fds (sympy children: a few, read-only
use), no new processes, no core dumps), drops to nobody (65534) when it runs as root, because
RLIMIT_NPROC is ignored for root (../shared/docs/STYLE.md, "Known traps"), and sets no_new_privs.
The worker itself leaves the network namespace at start (as root: a new network and PID namespace;
otherwise a new user namespace with a network and a PID namespace, its capabilities dropped), going
on as that PID namespace's init, so children have no network and see no process outside. The
child's result is capped in size; a child that runs past its wall-clock limit is killed with its
process group and only that job fails.
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
import types

NOBODY = 65534
CLONE_NEWNET = 0x40000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
PR_SET_NO_NEW_PRIVS = 38
_LINUX_CAPABILITY_VERSION_3 = 0x20080522
ENV = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}
"""The whole environment of the worker and its children: nothing of the parent's (no API keys)."""
MAX_REASON = 300
ALLOWED_MODULES = ("math", "fractions", "decimal", "datetime")
MODE = "pot"
_LIBC = None


class OutputLimit(Exception):
    """The program printed more than the output cap."""


# --- programs (PoT) ------------------------------------------------------------------------------

SAFE_BUILTIN_NAMES = (
    # No attribute access by name (getattr, vars, dir), no code (eval, exec, compile), no files, no
    # introspection (type, object, globals). ``format(value, spec)`` stays: it reads ``spec`` only
    # as the format mini-language of the value's type (numbers, Decimal, datetime's strftime codes),
    # never as field names, unlike ``str.format`` and ``format_map`` (which the attribute
    # allowlist of check.check_program refuses); PoT programs use it to round (format(x, ".2f")).
    "abs", "all", "any", "bin", "bool", "chr", "dict", "divmod", "enumerate", "filter", "float", "format",
    "frozenset", "hex", "int", "isinstance", "len", "list", "map", "max", "min", "oct", "ord", "pow", "range",
    "repr", "reversed", "round", "set", "slice", "sorted", "str", "sum", "tuple", "zip", "True", "False", "None",
    "Exception", "ArithmeticError", "ValueError", "TypeError", "ZeroDivisionError", "KeyError", "IndexError",
    "OverflowError", "NameError", "StopIteration",
)
"""The builtins a program sees (``print`` and ``__import__`` are replaced by our own)."""

MODULE_API = {
    # every public name of math is a pure function or a constant
    "math": None,
    "fractions": ("Fraction",),
    # no module-level contexts (DefaultContext...: shared mutable state between the programs of a
    # chunk), no localcontext (needs `with`, which is refused)
    "decimal": ("Decimal", "getcontext", "ROUND_05UP", "ROUND_CEILING", "ROUND_DOWN", "ROUND_FLOOR",
                "ROUND_HALF_DOWN", "ROUND_HALF_EVEN", "ROUND_HALF_UP", "ROUND_UP", "DecimalException",
                "DivisionByZero", "InvalidOperation", "Overflow", "Inexact", "Rounded", "MAX_PREC"),
    "datetime": ("date", "datetime", "time", "timedelta", "timezone", "MINYEAR", "MAXYEAR"),
}
"""Module -> the names a program may use from it (None: every public name); the allowlist of both the
static check (imports, attributes) and the module proxies a program gets at run time."""


def module_api(name: str) -> tuple[str, ...]:
    """The names of ``MODULE_API[name]``, resolved (math: its public functions and constants)."""
    names = MODULE_API[name]
    if names is None:
        module = __import__(name)
        names = tuple(sorted(k for k, v in vars(module).items()
                             if not k.startswith("_") and not isinstance(v, types.ModuleType)))
    return names


def _module_proxy(name: str):
    """A namespace with only the allowed names of a module (MODULE_API): ``fractions.sys`` must not exist."""
    module = __import__(name)
    return types.SimpleNamespace(**{k: getattr(module, k) for k in module_api(name)})


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

    safe = {name: getattr(builtins, name) for name in SAFE_BUILTIN_NAMES}
    safe.update(print=_print, __import__=_safe_import)
    env = {"__builtins__": safe, "__name__": "__main__"}
    decimal.setcontext(_PRISTINE_DECIMAL.copy() if _PRISTINE_DECIMAL else decimal.Context())
    try:
        code = compile(job["src"], "<program>", "exec")
        exec(code, env)  # noqa: S102 - runs in a forked, rlimited, unprivileged child; checked by check.check_program
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
    values, free, complex_values = [], set(), []
    for sol in solutions:
        value = sol.get(target, target)
        for _ in range(3):
            value = value.subs(sol)
        if value.free_symbols:
            free |= {s.name for s in value.free_symbols}
            continue
        real = _real_value(value, sp)
        if real is None:
            # a complex root (x**3 = 8 has two) is not a quantity of a word problem: look at the next one
            complex_values.append(str(value)[:60])
            continue
        if not math.isfinite(real):
            return {"status": "no_answer", "reason": f"{job['target']} is too large for a float (over 1e308)"}
        values.append(repr(real))
    if free:
        return {"status": "no_answer",
                "reason": f"{job['target']} depends on unconstrained unknown(s): {', '.join(sorted(free))}"}
    if not values:
        return {"status": "no_answer",
                "reason": f"{job['target']} is not a real number ({', '.join(complex_values[:3])})"}
    return {"status": "ok", "values": sorted(set(values), key=float)}


IMAGINARY_TOLERANCE = 1e-12
"""Relative imaginary part below which a numerically evaluated value counts as real: sympy leaves
``is_real`` None for some real roots (casus irreducibilis: cubic roots written with complex radicals)."""


def _real_value(value, sp) -> float | None:
    """The value as a float when it is real; None when it is (or cannot be shown not to be) complex."""
    if value.is_real:
        return float(value)
    if value.is_real is False:
        return None
    # is_real is None: sympy cannot decide symbolically; decide from 30 digits
    z = complex(sp.N(value, 30))
    if abs(z.imag) <= IMAGINARY_TOLERANCE * max(1.0, abs(z.real)):
        return z.real
    return None


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
    if _LIBC is not None and hasattr(_LIBC, "prctl"):
        # an exec of a setuid binary (su, passwd) or one with file capabilities gains nothing
        _LIBC.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)


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


def _libc():
    try:
        import ctypes

        return ctypes.CDLL(None, use_errno=True)
    except (OSError, AttributeError):
        return None


def _unshare(flags: int) -> str:
    """'' when unshare(flags) worked, else why not."""
    import ctypes

    if _LIBC is None or not hasattr(_LIBC, "unshare"):
        return "no unshare() in this C library"
    if _LIBC.unshare(flags) != 0:
        return os.strerror(ctypes.get_errno())
    return ""


def _net_ns() -> str:
    try:
        return os.readlink("/proc/self/ns/net")
    except OSError:
        return ""


def _drop_capabilities() -> None:
    """No capabilities left (those a new user namespace grants its first process): capset(0, 0, 0)."""
    import ctypes

    class Header(ctypes.Structure):
        _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]

    class Data(ctypes.Structure):
        _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]

    data = (Data * 2)()
    if _LIBC.capset(ctypes.byref(Header(_LINUX_CAPABILITY_VERSION_3, 0)), data) != 0:
        raise OSError(ctypes.get_errno(), "capset: " + os.strerror(ctypes.get_errno()))


def _capabilities() -> str:
    """The effective capability set of this process (CapEff of /proc/self/status, hex), '' if unknown."""
    try:
        with open("/proc/self/status") as fh:
            return next((line.split()[1] for line in fh if line.startswith("CapEff:")), "")
    except OSError:
        return ""


def _isolate() -> dict:
    """The strongest isolation the kernel grants this process without asking anyone; what is in force.

    As root: a new network and PID namespace (children also drop to nobody, see _confine). Otherwise: a new
    user namespace (needs no privilege where the kernel allows unprivileged user namespaces) holding
    a new network namespace and, where granted, a new PID namespace; our own uid and gid are mapped
    to themselves and the capabilities the namespace grants are dropped at once, so a child is an
    ordinary user without network who sees only its namespace's processes. When the kernel refuses,
    the rlimits and the minimal environment still hold, and the description says why.
    """
    before = _net_ns()
    parts = ["minimal environment", "rlimits"] + (["no new privileges"] if hasattr(_LIBC, "prctl") else [])
    if os.getuid() == 0:
        # a PID namespace as well: an escaped program, nobody, could otherwise signal every process
        # of nobody on the machine (other sandboxes' children)
        pid_ns = not _unshare(CLONE_NEWNET | CLONE_NEWPID)
        why = "" if pid_ns else _unshare(CLONE_NEWNET)
        net = not why and _net_ns() != before
        if pid_ns:
            _become_init()
        spaces = "network and PID namespace" if pid_ns else "network namespace"
        desc = (f"uid nobody (dropped from root), no network ({spaces})" if net
                else f"uid nobody (dropped from root); network NOT isolated (unshare(CLONE_NEWNET): {why or 'no effect'})")
        return {"description": ", ".join([desc] + parts), "nobody": True, "userns": False, "netns": net,
                "pidns": pid_ns, "pid": os.getpid(), "net_before": before, "net_after": _net_ns()}
    uid, gid = os.getuid(), os.getgid()
    # a PID namespace too where the kernel grants it: a child then sees and can signal only the
    # processes of its namespace, and none of those it may signal (we are its init) outside it
    pid_ns = not _unshare(CLONE_NEWUSER | CLONE_NEWNET | CLONE_NEWPID)
    why = "" if pid_ns else _unshare(CLONE_NEWUSER | CLONE_NEWNET)
    if why:
        return {"description": f"rlimits only (no namespaces: unshare(CLONE_NEWUSER|CLONE_NEWNET): {why}), "
                               + ", ".join(p for p in parts if p != "rlimits"),
                "nobody": False, "userns": False, "netns": False, "net_before": before, "net_after": _net_ns()}
    try:
        # keep our own ids inside; unmapped they read as 65534 (overflow), which is also unprivileged
        for name, text in (("setgroups", "deny"), ("uid_map", f"{uid} {uid} 1"), ("gid_map", f"{gid} {gid} 1")):
            with open(f"/proc/self/{name}", "w") as fh:
                fh.write(text)
    except OSError:
        pass
    try:
        _drop_capabilities()
    except OSError as exc:
        # the namespace's capabilities could not be dropped: refuse to start rather than run programs with them
        raise SystemExit(f"sandbox worker: cannot drop the user namespace's capabilities: {exc}") from None
    if pid_ns:
        _become_init()
    uid = os.getuid()
    spaces = "user, network and PID namespace" if pid_ns else "user and network namespace"
    return {"description": ", ".join([f"{spaces} (uid {uid}, no capabilities), no network"] + parts),
            "nobody": False, "userns": True, "netns": _net_ns() != before, "pidns": pid_ns, "pid": os.getpid(),
            "net_before": before, "net_after": _net_ns(), "capabilities": _capabilities()}


def _become_init() -> None:
    """Go on as the first process (pid 1) of the new PID namespace: a fork; this process only waits.

    The parent's pipes are inherited, and the sandbox kills the whole process group, so the waiting
    process needs no part in the protocol; it exits with the worker's status.
    """
    pid = os.fork()
    if pid == 0:
        return
    # SIGTERM (sandbox.Worker.close) or the end of our parent: end the worker and reap it; an init
    # in its namespace takes only SIGKILL from outside
    signal.signal(signal.SIGTERM, lambda *_: os.kill(pid, signal.SIGKILL))
    while True:
        try:
            _, status = os.waitpid(pid, 0)
            break
        except InterruptedError:
            continue
    os._exit(os.waitstatus_to_exitcode(status) & 0xFF)


def main() -> None:
    global MODE, _LIBC
    mode, parallel = sys.argv[1], int(sys.argv[2])
    MODE = mode
    # the parent starts us with ENV already; this holds whoever starts us (children fork from us)
    for key in [k for k in os.environ if k not in ENV]:
        del os.environ[key]
    _LIBC = _libc()
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
    isolation = _isolate()
    devnull = os.open(os.devnull, os.O_RDWR)
    vm_base = _vm_bytes()
    gc.collect()
    gc.freeze()  # fewer copy-on-write page faults in the children
    out = sys.stdout
    out.write(json.dumps({"ready": True, "isolation": isolation}) + "\n")
    out.flush()
    for line in sys.stdin:
        if line.strip():
            run_batch(json.loads(line), parallel, devnull, vm_base, out)
            out.write(json.dumps({"done": True}) + "\n")
            out.flush()


if __name__ == "__main__":
    main()
