"""Verification throughput on realistic programs and equation systems, against the plain baselines.

    python benchmarks/verify.py                      # 2,000 GSM8K training problems
    python benchmarks/verify.py --problems 1000 --baseline 100

Workload: for each GSM8K training solution, the gold teacher's PoT program
(``distill.teachers.gold.derive("pot", ...)``, the PoT form's ``from_gold``): its ``<<expr=result>>``
calculator annotations become lines ``name = expr`` in which a number equal to an earlier result is
replaced by that result's name, then ``ans = <name>`` (the last step giving the gold answer); a
solution it cannot derive is skipped.
The same text is a PoT program and a forward-only EoT system (the gold EoT adds only ``%`` comments).

- PoT: distill's sandbox (static check, then a child forked from a warm worker with rlimits, running a
  chunk of programs) vs a fresh ``python`` subprocess per program (the usual "run it in a subprocess"),
  on a subsample (--baseline), compared as programs per second.
- EoT: distill's solver (whitelisted parse, exact forward evaluation, sympy in the sandbox only when
  needed) vs ``sympy.solve`` called on every system (the same parsed equations built as sympy objects
  in-process), on a subsample, compared as systems per second.

Both sides warm up first (the sandbox worker is started once and reused, which is the design).
Targets: PoT >= 20x, EoT >= 10x on a 2-core machine (verification must not be what limits a run).
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from distill.answers import answers_match  # noqa: E402
from distill.problems import load_problems  # noqa: E402
from distill.teachers.gold import StepError, derive  # noqa: E402


def rate(n: int, seconds: float) -> float:
    return n / seconds if seconds > 0 else float("inf")


def bench_pot(texts: list[str], golds: list[float], n_base: int, timeout: float) -> dict:
    from distill.thoughts import get_form

    pot = get_form("pot")
    pot.extract_many(texts[:8], timeout=timeout)  # warm the worker
    t = time.perf_counter()
    got = pot.extract_many(texts, timeout=timeout)
    ours = rate(len(texts), time.perf_counter() - t)
    correct = sum(e.status == "ok" and answers_match(e.answer, g) for e, g in zip(got, golds))
    base = texts[:n_base]
    t = time.perf_counter()
    for program in base:
        subprocess.run([sys.executable, "-I", "-c", program + "\nprint(ans)"], capture_output=True, timeout=timeout,
                       check=False)
    baseline = rate(len(base), time.perf_counter() - t)
    return {"ours": ours, "baseline": baseline, "n": len(texts), "n_base": len(base), "correct": correct}


def bench_eot(texts: list[str], golds: list[float], n_base: int, timeout: float) -> dict:
    import sympy

    from distill.thoughts import get_form
    from distill.thoughts.eot import EotError, clean, parse_system

    eot = get_form("eot")
    eot.extract_many(texts[:8] + ["x + 1 = 3\nans = x"], timeout=timeout)  # warm both workers
    t = time.perf_counter()
    got = eot.extract_many(texts, timeout=timeout)
    ours = rate(len(texts), time.perf_counter() - t)
    correct = sum(e.status == "ok" and answers_match(e.answer, g) for e, g in zip(got, golds))

    def to_sympy(tree, symbols):
        op = tree[0]
        if op == "num":
            return sympy.Rational(tree[1].numerator, tree[1].denominator)
        if op == "name":
            return symbols.setdefault(tree[1], sympy.Symbol(tree[1]))
        if op == "neg":
            return -to_sympy(tree[1], symbols)
        a, b = to_sympy(tree[1], symbols), to_sympy(tree[2], symbols)
        return {"add": a + b, "sub": a - b, "mul": a * b, "div": a / b if b != 0 else sympy.zoo,
                "pow": a ** b}[op]

    parsed = []
    for text in texts[:n_base]:
        try:
            parsed.append(parse_system(clean(text)))
        except EotError:
            pass
    sympy.solve([sympy.Symbol("w") - 1], dict=True)  # warm sympy's caches
    t = time.perf_counter()
    for eqs in parsed:
        symbols: dict = {}
        system = [sympy.Eq(to_sympy(e.lhs, symbols), to_sympy(e.rhs, symbols)) for e in eqs]
        sympy.solve(system, list(symbols.values()), dict=True)
    baseline = rate(len(parsed), time.perf_counter() - t)
    return {"ours": ours, "baseline": baseline, "n": len(texts), "n_base": len(parsed), "correct": correct}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--problems", type=int, default=2000, help="GSM8K training problems to derive from")
    ap.add_argument("--baseline", type=int, default=100, help="programs/systems timed for each baseline")
    ap.add_argument("--timeout", type=float, default=5.0)
    ap.add_argument("--data-dir", default=os.environ.get("DISTILL_DATA_DIR")
                    or str(Path(__file__).resolve().parent.parent.parent / "shared" / "data"))
    args = ap.parse_args(argv)
    texts, golds = [], []
    for p in load_problems("gsm8k", "train", args.data_dir):
        try:
            texts.append(derive("pot", p.rationale, p.answer))
        except StepError:
            continue
        golds.append(p.answer)
        if len(texts) >= args.problems:
            break
    print(f"workload: {len(texts)} programs/systems derived from GSM8K train annotations; cpus={os.cpu_count()}; "
          f"load average {os.getloadavg()[0]:.1f}")
    pot = bench_pot(texts, golds, args.baseline, args.timeout)
    print(f"PoT  sandbox          {pot['ours']:9.1f} programs/s  ({pot['n']} programs, {pot['correct']} correct)")
    print(f"PoT  fresh python     {pot['baseline']:9.1f} programs/s  ({pot['n_base']} programs)")
    print(f"PoT  ratio            {pot['ours'] / pot['baseline']:9.1f}x   (target >= 20x)")
    eot = bench_eot(texts, golds, args.baseline, args.timeout)
    print(f"EoT  solver           {eot['ours']:9.1f} systems/s   ({eot['n']} systems, {eot['correct']} correct)")
    print(f"EoT  sympy.solve      {eot['baseline']:9.1f} systems/s   ({eot['n_base']} systems)")
    print(f"EoT  ratio            {eot['ours'] / eot['baseline']:9.1f}x   (target >= 10x)")


if __name__ == "__main__":
    main()
