"""Hostile programs and equation texts: each gets a verdict with a reason within its limit, nothing
outside a temporary directory changes, and the batch goes on (the last, honest item is still correct).

The second half bypasses the sandbox's static check on purpose and shows that the OS-level limits of
the child (no new processes, no new files, unprivileged user) hold on their own.
"""
from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

from distill.thoughts import get_form, sandbox

LIMIT = 1.0
TAG = f"distill-hostile-{uuid.uuid4().hex[:8]}"
OUTSIDE = Path("/tmp") / TAG  # a path outside the test's tmp dir that no program may create

HOSTILE_PROGRAMS = [
    # (program, expected statuses)
    ("while True:\n    pass", {"timeout"}),
    ("total = 0\nwhile True:\n    total += 1\nans = total", {"timeout"}),
    ("try:\n    while True:\n        pass\nexcept Exception:\n    pass\nans = 1", {"timeout"}),
    ("import os\nwhile True:\n    os.fork()", {"unsafe"}),
    ("x = ' ' * (10 ** 10)\nans = 1", {"exec_error"}),
    ("chunks = []\nwhile True:\n    chunks.append('x' * 10 ** 7)", {"exec_error", "timeout"}),
    ("x = [1]\nwhile True:\n    x = x + x", {"exec_error", "timeout"}),
    ("print(open('/etc/passwd').read())", {"unsafe"}),
    (f"open('{OUTSIDE}', 'w').write('pwned')\nans = 1", {"unsafe"}),
    ("import socket\ns = socket.socket()\ns.connect(('127.0.0.1', 80))", {"unsafe"}),
    (f"import subprocess\nsubprocess.run(['touch', '{OUTSIDE}'])", {"unsafe"}),
    (f"from os import system\nsystem('touch {OUTSIDE}')", {"unsafe"}),
    (f"__import__('os').system('touch {OUTSIDE}')", {"unsafe"}),
    ("ans = __builtins__['open']('/etc/passwd').read()", {"unsafe"}),
    ("ans = ().__class__.__base__.__subclasses__()", {"unsafe"}),
    ("f = lambda: 0\nans = f.__globals__", {"unsafe"}),
    ("ans = getattr(1, '__cl' + 'ass__')", {"unsafe"}),
    ("g = (i for i in [1])\nans = g.gi_frame.f_back", {"unsafe"}),
    ("ans = '{0.__class__}'.format(1)", {"unsafe"}),
    ("ans = f'{().__class__}'", {"unsafe"}),
    ("def f(n):\n    return f(n + 1)\nans = f(0)", {"exec_error"}),
    ("print('x' * 10 ** 6)\nans = 1", {"exec_error"}),
    ("for i in range(10 ** 6):\n    print(i)\nans = 1", {"exec_error"}),
    ("import os\nos._exit(0)", {"unsafe"}),
    ("import signal\nsignal.signal(signal.SIGALRM, lambda *a: None)\nsignal.alarm(1)", {"unsafe"}),
    ("exec('import os')", {"unsafe"}),
    ("ans = eval('6 * 7')", {"unsafe"}),
    ("import importlib\nos = importlib.import_module('os')", {"unsafe"}),
    ("import ctypes\nctypes.CDLL(None).abort()", {"unsafe"}),
    ("import sys\nsys.setrecursionlimit(10 ** 9)", {"unsafe"}),
    ("import fractions\nans = fractions.sys.modules['os']", {"exec_error"}),
    ("import math\nans = math.__loader__", {"unsafe"}),
    ("import decimal\ndecimal.getcontext().prec = 10 ** 9\nans = 1", {"unsafe"}),
    ("class Evil:\n    pass\nans = 1", {"unsafe"}),
    ("with open('x', 'w') as f:\n    f.write('x')", {"unsafe"}),
    ("ans = 10 ** 10 ** 8", {"timeout"}),
    ("import math\nans = math.factorial(10 ** 8)", {"timeout", "exec_error"}),
    ("exit(3)", {"unsafe"}),
    ("raise SystemExit(0)", {"exec_error"}),
    ("ans = globals()['__builtins__']", {"unsafe"}),
    ("ans = type(1).mro()", {"unsafe"}),
    ("breakpoint()", {"unsafe"}),
    ("ans = input()", {"unsafe"}),
    ("x = 1\n" * 30_000 + "ans = x", {"unsafe"}),
    ("ans = " + "(" * 300 + "1" + ")" * 300, {"parse_error", "unsafe"}),
    ("ans = 1\x00", {"parse_error"}),
    ("ans = float('nan')", {"no_answer"}),
    ("ans = 10 ** 400", {"no_answer"}),
]

HOSTILE_EQUATIONS = [
    ("a = 9**9**9\nans = a", {"parse_error"}),
    ("ans = " + "(" * 500 + "1" + ")" * 500, {"parse_error"}),
    ("ans = __import__('os').system('touch " + str(OUTSIDE) + "')", {"parse_error"}),
    ("__builtins__ = 1\nans = __builtins__", {"parse_error"}),
    ("ans = ().__class__.__base__", {"parse_error"}),
    ("ans = (lambda: 42)()", {"parse_error"}),
    ("x = 1\n" * 5000 + "ans = x", {"parse_error"}),
    ("ans = " + "1 + " * 3000 + "1", {"parse_error"}),
    ("\u0430pples = 5\nans = \u0430pples", {"parse_error"}),  # Cyrillic a
    ("apples = 5\nans = apples\uff0b1", {"parse_error"}),  # fullwidth plus
    ("ans = eval('6*7')", {"parse_error"}),
    ("ans = open('/etc/passwd')", {"parse_error"}),
    ("a = 1\nimport os\nans = a", {"parse_error"}),
    ("ans = 'forty two'", {"parse_error"}),
    ("ans = [1, 2][0]", {"parse_error"}),
    ("ans = x if x > 0 else 1", {"parse_error"}),
    ("a = 99**100\nb = a**100\nans = b", {"exec_error"}),
    ("a = 2**100\nb = a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a\n"
     "c = b*b*b*b\nans = c", {"exec_error"}),
    ("a*b*c + a**3 = 2\nb**3*c + c**2*a = 5\na**2 + b**2 + c**5 = 3\nans = a", {"timeout", "no_answer"}),
    ("ans = 1/0", {"exec_error"}),
    ("ans = 1\x00", {"parse_error"}),
    ("ans = f'{x}'", {"parse_error"}),
]

HONEST_PROGRAM = ("eggs = 16\nans = eggs - 3 - 4", 9.0)
HONEST_SYSTEM = ("% Janet's ducks lay 16 eggs:\neggs = 16\nleft = eggs - 3 - 4\nans = left", 9.0)


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    yield tmp_path
    assert not OUTSIDE.exists()
    assert list(tmp_path.iterdir()) == []  # nor did anything land in the working directory


def test_the_corpus_is_large_enough():
    assert len(HOSTILE_PROGRAMS) >= 30 and len(HOSTILE_EQUATIONS) >= 15


def test_every_hostile_program_gets_a_verdict_with_a_reason_and_the_batch_goes_on(in_tmp):
    texts = [p for p, _ in HOSTILE_PROGRAMS] + [HONEST_PROGRAM[0]]
    verdicts = get_form("pot").verify_many(texts, [42.0] * len(HOSTILE_PROGRAMS) + [HONEST_PROGRAM[1]],
                                           timeout=LIMIT, strict=True)
    for (program, expected), verdict in zip(HOSTILE_PROGRAMS, verdicts):
        assert verdict.status in expected, (program[:80], verdict)
        assert verdict.reason, program[:80]
    assert verdicts[-1].status == "correct"


def test_every_hostile_equation_text_gets_a_verdict_with_a_reason_and_the_batch_goes_on(in_tmp):
    for strict in (False, True):
        texts = [t for t, _ in HOSTILE_EQUATIONS] + [HONEST_SYSTEM[0]]
        verdicts = get_form("eot").verify_many(texts, [42.0] * len(HOSTILE_EQUATIONS) + [HONEST_SYSTEM[1]],
                                               timeout=LIMIT, strict=strict)
        for (text, expected), verdict in zip(HOSTILE_EQUATIONS, verdicts):
            assert verdict.status in expected, (text[:80], verdict)
            assert verdict.reason, text[:80]
        assert verdicts[-1].status == "correct"


# --- defence in depth: the static check bypassed -------------------------------------------------

ESCAPE = ("os = [c for c in ().__class__.__base__.__subclasses__() if c.__name__ == 'catch_warnings'][0]()"
          "._module.sys.modules['os']\n")


def _unchecked(programs: list[str]) -> list[dict]:
    """Run programs in the worker WITHOUT check_program, as if an escape had slipped through it."""
    return sandbox.worker("pot").run([{"task": "pot", "src": p} for p in programs], timeout=LIMIT)


def test_the_escape_used_below_really_reaches_os_when_the_check_is_bypassed():
    result = _unchecked([ESCAPE + "ans = os.getpid()"])[0]
    assert result["status"] == "ok" and result["ans"] is not None
    assert sandbox.run_programs([ESCAPE + "ans = 1"], LIMIT)[0]["status"] == "unsafe"


def test_an_escaped_program_can_start_no_process_open_no_file_and_reach_no_module_on_disk(in_tmp):
    target = in_tmp / "pwned.txt"
    results = _unchecked([
        ESCAPE + "ans = os.fork()",
        ESCAPE + f"fd = os.open('{target}', os.O_WRONLY | os.O_CREAT, 0o666)\nans = fd",
        ESCAPE + f"fd = os.open('{OUTSIDE}', os.O_WRONLY | os.O_CREAT, 0o666)\nans = fd",
        ESCAPE + f"status = os.system('touch {OUTSIDE}')\nans = 1 if status == 0 else 0",
        ESCAPE + "ans = len(os.listdir('/'))",
        ESCAPE + "m = os.sys.modules['importlib'].import_module('socket')\nans = 1",
        ESCAPE + "ans = 1",
    ])
    assert [r["status"] for r in results] == ["exec_error", "exec_error", "exec_error", "ok", "exec_error",
                                              "exec_error", "ok"]
    assert results[3]["ans"] == "0.0"  # os.system could not start a shell
    assert not target.exists() and not OUTSIDE.exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="dropping to nobody happens only when the worker runs as root")
def test_an_escaped_program_runs_as_nobody_and_cannot_kill_the_worker():
    results = _unchecked([ESCAPE + "ans = os.getuid()", ESCAPE + "os.kill(os.getppid(), 9)\nans = 1",
                          "ans = 7"])
    assert results[0]["ans"] == "65534.0"
    assert results[1]["status"] == "exec_error" and "PermissionError" in results[1]["reason"]
    assert results[2]["ans"] == "7.0"


def test_a_program_that_kills_itself_takes_down_only_itself():
    results = _unchecked([ESCAPE + "os.kill(os.getpid(), 9)", "ans = 1", ESCAPE + "os._exit(3)", "ans = 2"])
    assert [r["status"] for r in results] == ["exec_error", "ok", "exec_error", "ok"]
    assert "SIGKILL" in results[0]["reason"] and "code 3" in results[2]["reason"]
    assert [r.get("ans") for r in results[1::2]] == ["1.0", "2.0"]


def test_a_dead_worker_is_replaced_and_the_next_batch_runs():
    w = sandbox.worker("pot")
    assert w.run([{"task": "pot", "src": "ans = 1"}], timeout=LIMIT)[0]["ans"] == "1.0"
    os.kill(w._proc.pid, 9)
    w._proc.wait()
    assert sandbox.run_programs(["ans = 2"], LIMIT)[0]["ans"] == "2.0"


def test_a_program_cannot_leave_state_for_the_next_program_of_its_chunk():
    programs = ["import decimal\ndecimal.getcontext().traps[decimal.DivisionByZero] = False\nans = 1",
                "import decimal\nans = decimal.Decimal(1) / decimal.Decimal(0)",
                "import decimal\nans = decimal.DefaultContext",
                "import math\nans = math.pi"] * 3
    results = sandbox.run_programs(programs, LIMIT)
    assert [r["status"] for r in results[:4]] == ["ok", "exec_error", "exec_error", "ok"]
    assert "DivisionByZero" in results[1]["reason"] and results[3]["ans"].startswith("3.14")
    assert [r["status"] for r in results] == [r["status"] for r in results[:4]] * 3


def test_an_escaped_program_that_ignores_every_catchable_signal_is_still_stopped_at_its_limit():
    program = (ESCAPE + "sig = os.sys.modules['signal']\n"
               "for s in (sig.SIGXCPU, sig.SIGTERM, sig.SIGINT, sig.SIGHUP, sig.SIGALRM):\n"
               "    sig.signal(s, sig.SIG_IGN)\n"
               "while True:\n    pass")
    results = _unchecked([program, "ans = 5"])
    assert results[0]["status"] == "timeout" and results[1]["ans"] == "5.0"
