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

from distill import sandbox
from distill.thoughts import get_form

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
    ("import fractions\nans = fractions.sys.modules['os']", {"unsafe"}),
    ("import math\nans = math.__loader__", {"unsafe"}),
    ("import decimal\ndecimal.getcontext().prec = 10 ** 9\nans = 1", {"unsafe"}),
    ("class Evil:\n    pass\nans = 1", {"unsafe"}),
    ("with open('x', 'w') as f:\n    f.write('x')", {"unsafe"}),
    ("ans = 10 ** 10 ** 8", {"timeout"}),
    ("import math\nans = math.factorial(10 ** 8)", {"timeout", "exec_error"}),
    ("exit(3)", {"unsafe"}),
    ("raise SystemExit(0)", {"unsafe"}),
    ("ans = globals()['__builtins__']", {"unsafe"}),
    ("ans = type(1).mro()", {"unsafe"}),
    ("breakpoint()", {"unsafe"}),
    ("ans = input()", {"unsafe"}),
    ("x = 1\n" * 30_000 + "ans = x", {"unsafe"}),
    ("ans = " + "(" * 300 + "1" + ")" * 300, {"parse_error", "unsafe"}),
    ("ans = 1\x00", {"parse_error"}),
    ("ans = float('nan')", {"no_answer"}),
    ("ans = 10 ** 400", {"no_answer"}),
    # pattern matching binds attributes by keyword, with no attribute node in the tree
    ("match print:\n    case str(format=f):\n        ans = f('{0.__globals__}', print)", {"unsafe"}),
    ("match print:\n    case object(__globals__=g):\n        ans = g['os'].environ", {"unsafe"}),
    ("match 42:\n    case int(real=r):\n        ans = r", {"unsafe"}),
    ("match {'a': print}:\n    case {'a': p}:\n        ans = p", {"unsafe"}),
    ("match [1, 2]:\n    case [a, *rest]:\n        ans = a", {"unsafe"}),
    # format strings whose fields walk attributes
    ("ans = '{0.__globals__}'.format(print)", {"unsafe"}),
    ("ans = '{.__self__}'.format(print)", {"unsafe"}),
    ("ans = '{a.__globals__[os]}'.format_map({'a': print})", {"unsafe"}),
    ("ans = str.format('{0.__globals__}', print)", {"unsafe"}),
    ("fmt = '{0.__globals__}'\nf = fmt.format\nans = f(print)", {"unsafe"}),
    ("ans = format(print, '{0.__globals__}')", {"exec_error"}),  # format() reads a spec, never fields
    ("ans = f'{print:{print}}'", {"exec_error"}),
    ("ans = f'{print.__globals__}'", {"unsafe"}),
    ("ans = f'{42:>{print.__self__}}'", {"unsafe"}),
    # reading the environment
    ("import os\nans = os.environ['OPENAI_API_KEY']", {"unsafe"}),
    ("ans = __builtins__['__import__']('os').environ", {"unsafe"}),
    ("ans = print.__self__", {"unsafe"}),
    ("ans = print.__globals__['os'].environ", {"unsafe"}),
    ("ans = open('/proc/self/environ').read()", {"unsafe"}),
    ("import decimal\nans = decimal.getcontext.__self__", {"unsafe"}),
    ("e = Exception()\nans = e.__traceback__.tb_frame.f_globals", {"unsafe"}),
    ("try:\n    1 / 0\nexcept Exception as e:\n    ans = e.with_traceback", {"unsafe"}),
    ("import datetime\nans = datetime.datetime_CAPI", {"unsafe"}),
    ("from fractions import sys\nans = sys.modules", {"unsafe"}),
    ("from decimal import DefaultContext\nans = DefaultContext", {"unsafe"}),
    ("import math as __builtins__\nans = 1", {"unsafe"}),
    ("from math import *\nans = pi", {"unsafe"}),
    ("ans = vars()", {"unsafe"}),
    ("ans = dir()", {"unsafe"}),
    ("def f(**kw):\n    return kw\nans = f(**{'__globals__': 1})", {"unsafe"}),
    ("@print\ndef f():\n    pass\nans = 1", {"unsafe"}),
    # pushing a secret into the verdict text (its reason, a print, ans)
    ("raise ValueError(open('/proc/self/environ').read())", {"unsafe"}),
    ("import os\nraise Exception(os.environ.get('OPENAI_API_KEY'))", {"unsafe"}),
    ("print(__import__('os').environ)", {"unsafe"}),
    ("ans = str(print.__globals__)", {"unsafe"}),
    ("ans = ''.join(open('/proc/1/environ'))", {"unsafe"}),
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
                          "ans = 7", ESCAPE + f"os.kill({os.getpid()}, 0)\nans = 1"])
    assert results[0]["ans"] == "65534.0"
    assert results[1]["status"] == "exec_error" and "PermissionError" in results[1]["reason"]
    assert results[2]["ans"] == "7.0"
    # in the worker's PID namespace no process outside it (we, other users' sandboxes) can be named
    assert sandbox.worker("pot").isolation["pidns"]
    assert results[3]["status"] == "exec_error" and "ProcessLookupError" in results[3]["reason"]


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
    # the static check already refuses `.traps` and `DefaultContext`; bypassed, the worker's fresh
    # decimal context and module proxies per program still hold
    programs = ["import decimal\ndecimal.getcontext().traps[decimal.DivisionByZero] = False\nans = 1",
                "import decimal\nans = decimal.Decimal(1) / decimal.Decimal(0)",
                "import decimal\nans = decimal.DefaultContext",
                "import math\nans = math.pi"] * 3
    assert [r["status"] for r in sandbox.run_programs(programs[:4], LIMIT)] == ["unsafe", "exec_error", "unsafe", "ok"]
    results = _unchecked(programs)
    assert [r["status"] for r in results[:4]] == ["ok", "exec_error", "exec_error", "ok"]
    assert "DivisionByZero" in results[1]["reason"] and results[3]["ans"].startswith("3.14")
    assert "DefaultContext" in results[2]["reason"]
    assert [r["status"] for r in results] == [r["status"] for r in results[:4]] * 3


def test_the_module_proxies_hold_only_the_allowed_names_when_the_check_is_bypassed():
    results = _unchecked(["import fractions\nans = fractions.sys", "from fractions import Fraction\nans = Fraction(1, 2)",
                          "import datetime\nans = datetime.datetime_CAPI"])
    assert [r["status"] for r in results] == ["exec_error", "ok", "exec_error"]
    assert "AttributeError" in results[0]["reason"] and results[1]["ans"] == "0.5"


def test_an_escaped_program_that_ignores_every_catchable_signal_is_still_stopped_at_its_limit():
    program = (ESCAPE + "sig = os.sys.modules['signal']\n"
               "for s in (sig.SIGXCPU, sig.SIGTERM, sig.SIGINT, sig.SIGHUP, sig.SIGALRM):\n"
               "    sig.signal(s, sig.SIG_IGN)\n"
               "while True:\n    pass")
    results = _unchecked([program, "ans = 5"])
    assert results[0]["status"] == "timeout" and results[1]["ans"] == "5.0"


# --- the environment and the namespaces -----------------------------------------------------------

SECRET = "sk-test-SECRET123-" + uuid.uuid4().hex
ENV_READS = [
    ESCAPE + "ans = ','.join(sorted(os.environ))",
    ESCAPE + "ans = os.environ.get('OPENAI_API_KEY') or os.environ.get('DISTILL_FAKE_TOKEN') or 'none'",
    ESCAPE + "raise ValueError(str(dict(os.environ)))",
    ESCAPE + "print(os.environ)\nans = None",
    ESCAPE + "fd = os.open('/proc/self/environ', os.O_RDONLY)\nans = os.read(fd, 65536).decode()",
    ESCAPE + "fd = os.open('/proc/%d/environ' % os.getppid(), os.O_RDONLY)\nans = os.read(fd, 65536).decode()",
    ESCAPE + "ans = os.readlink('/proc/self/ns/net')",
]


@pytest.fixture
def secret_env(monkeypatch):
    """A fake API key and another variable in our environment, with workers started after they were set."""
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    monkeypatch.setenv("DISTILL_FAKE_TOKEN", SECRET[::-1])
    sandbox.close_all()
    yield
    sandbox.close_all()


def test_an_escaped_program_sees_only_the_environment_built_for_the_worker(secret_env):
    results = _unchecked(ENV_READS)
    text = repr(results)
    assert SECRET not in text and SECRET[::-1] not in text
    assert results[0] == {**results[0], "status": "ok", "ans": "LANG,PATH"}
    assert results[1]["ans"] == "none"
    assert results[2]["status"] == "exec_error" and "PATH" in results[2]["reason"]
    assert "PATH" in results[3]["printed"]
    # no file may be opened at all, so neither our /proc/<pid>/environ nor the worker's
    assert [r["status"] for r in results[4:6]] == ["exec_error", "exec_error"]
    assert "Too many open files" in results[4]["reason"] or "Permission" in results[4]["reason"]
    # and the children live in another network namespace than ours
    assert results[6]["status"] == "ok" and results[6]["ans"] != os.readlink("/proc/self/ns/net")


def test_isolation_says_what_is_in_force_for_the_user_running_it():
    text = sandbox.isolation()
    if os.geteuid() == 0:
        assert text.startswith("uid nobody (dropped from root)")
    else:
        assert text.startswith(("user, network and PID namespace", "user and network namespace",
                                "rlimits only (no namespaces:"))
    assert "minimal environment" in text and "rlimits" in text


NON_ROOT_PROBE = f"""
import json, os
from distill import sandbox
escape = {ESCAPE!r}
out = {{"uid": os.getuid(), "net": os.readlink("/proc/self/ns/net"), "isolation": sandbox.worker("pot").describe(),
       "details": sandbox.worker("pot").isolation,
       "programs": sandbox.run_programs(["ans = 6 * 7", "import os\\nans = 1"], 2.0),
       "escaped": sandbox.worker("pot").run([{{"task": "pot", "src": escape + s}} for s in (
           "ans = os.getuid()", "ans = os.readlink('/proc/self/ns/net')", "ans = ','.join(sorted(os.environ))",
           "ans = os.fork()", "os.kill(%d, 0)\\nans = 1" % os.getpid(), "os.kill(1, 9)\\nans = 2")], 2.0),
       "after": sandbox.run_programs(["ans = 3"], 2.0),
       "system": sandbox.solve_systems([{{"eqs": [[["pow", ["name", "x"], ["num", ["3", "1"]]], ["num", ["8", "1"]]],
                                                  [["name", "ans"], ["name", "x"]]], "target": "ans"}}], 10.0)}}
print(json.dumps(out))
"""


def test_as_an_ordinary_user_the_worker_runs_in_its_own_user_and_network_namespace(monkeypatch):
    """The non-root path for real. Run as root (here, CI), the probe runs as nobody; setpriv keeps one
    capability, reading files, because this machine's Python lives under /root (mode 700)."""
    import json
    import shutil
    import subprocess
    import sys

    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    command = [sys.executable, "-c", NON_ROOT_PROBE]
    if os.geteuid() == 0:
        assert shutil.which("setpriv"), "setpriv (util-linux) runs the probe as nobody"
        command = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=+dac_read_search",
                   "--ambient-caps=+dac_read_search"] + command
    done = subprocess.run(command, cwd="/", capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert SECRET not in done.stdout + done.stderr
    out = json.loads(done.stdout.splitlines()[-1])
    assert out["uid"] != 0
    assert [r["status"] for r in out["programs"]] == ["ok", "unsafe"] and out["programs"][0]["ans"] == "42.0"
    assert out["system"][0] == {"status": "ok", "values": ["2.0"]}
    uid, net, env, fork, signal_us, signal_init = out["escaped"]
    assert uid["ans"] == f"{float(out['uid'])}" and env["ans"] == "LANG,PATH"
    assert fork["status"] == "exec_error"
    if out["details"]["userns"]:  # the kernel grants unprivileged user namespaces (it does here)
        assert out["isolation"].startswith("user, network and PID namespace") and out["details"]["netns"]
        assert int(out["details"]["capabilities"], 16) == 0  # the namespace's capabilities are dropped
        assert net["ans"] != out["net"] and out["details"]["net_after"] == net["ans"]
        # in its own PID namespace a program cannot even name a process outside, and the worker,
        # its namespace's init, ignores it
        assert out["details"]["pidns"] and out["details"]["pid"] == 1
        assert signal_us["status"] == "exec_error" and "ProcessLookupError" in signal_us["reason"]
        assert signal_init["status"] == "ok" and out["after"][0]["ans"] == "3.0"
    else:
        assert out["isolation"].startswith("rlimits only (no namespaces:")


FALLBACK_PROBE = """
import json
from distill import sandbox
print(json.dumps({"isolation": sandbox.isolation(), "details": sandbox.worker("pot").isolation,
                  "programs": sandbox.run_programs(["ans = 6 * 7", "while True:\\n    pass"], 1.0)}))
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="only root can take user namespaces away from another user")
def test_where_the_kernel_refuses_namespaces_the_sandbox_falls_back_to_rlimits_and_says_why():
    """A real refusal: nobody, in a user namespace whose limit of nested user namespaces is 0
    (user.max_user_namespaces), starts the sandbox; its unshare() fails with ENOSPC."""
    import ctypes
    import json
    import sys

    libc = ctypes.CDLL(None, use_errno=True)
    (go_r, go_w), (ready_r, ready_w), (out_r, out_w) = os.pipe(), os.pipe(), os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: a user namespace, ids 0 and 65534 mapped by the parent, then nobody
        try:
            os.dup2(out_w, 1)
            assert libc.unshare(0x10000000) == 0  # CLONE_NEWUSER
            os.write(ready_w, b"x")
            os.read(go_r, 1)
            with open("/proc/sys/user/max_user_namespaces", "w") as fh:
                fh.write("0")
            # one capability kept, reading files: this machine's Python lives under /root (mode 700)
            os.execvp("setpriv", ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                                  "--inh-caps=+dac_read_search", "--ambient-caps=+dac_read_search",
                                  sys.executable, "-c", FALLBACK_PROBE])
        finally:
            os._exit(99)
    for fd in (out_w, ready_w, go_r):
        os.close(fd)
    assert os.read(ready_r, 1) == b"x"
    for name in ("uid_map", "gid_map"):
        with open(f"/proc/{pid}/{name}", "w") as fh:
            fh.write("0 0 1\n65534 65534 1\n")
    os.write(go_w, b"x")
    with os.fdopen(out_r) as fh:
        text = fh.read()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, text
    out = json.loads(text.splitlines()[-1])
    assert out["isolation"].startswith("rlimits only (no namespaces: unshare(CLONE_NEWUSER|CLONE_NEWNET): ")
    assert "No space left on device" in out["isolation"] and not out["details"]["netns"]
    assert [r["status"] for r in out["programs"]] == ["ok", "timeout"]
