"""Teacher throughput: samples per second of the openai teacher against a local server that takes
200 ms per request, at concurrency 1 and 32, and the ratio to the ideal (concurrency / latency).

Every answer goes the full way: request, raw response appended to the completion store (fsynced),
ledger entry, parse. The server runs in its own process (as a real one would: it must not share our
GIL), and one untimed warm-up call pays the one-time imports first. Target (issue #4): at least 80%
of the ideal at concurrency 32.

    python benchmarks/teacher.py [--latency 0.2] [--concurrency 1 32] [--seconds 3]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TESTS = Path(__file__).resolve().parent.parent / "tests"

from distill.teachers import Job  # noqa: E402
from distill.teachers.api import OpenAITeacher  # noqa: E402
from distill.teachers.ledger import Ledger  # noqa: E402
from distill.teachers.store import CompletionStore  # noqa: E402


def measure(url: str, concurrency: int, latency: float, seconds: float) -> dict:
    n = max(concurrency, int(round(seconds * concurrency / latency)))
    jobs = [Job(f"p{i}", "eot", 1, f"q{i}", 1.0, ({"role": "user", "content": f"c{concurrency} question {i}"},))
            for i in range(n)]
    with tempfile.TemporaryDirectory() as tmp:
        teacher = OpenAITeacher(model="bench", base_url=url, api_key="local", store=CompletionStore(tmp),
                                ledger=Ledger(Path(tmp) / "ledger.jsonl", model="bench"), concurrency=concurrency,
                                timeout=30.0)
        start = time.perf_counter()
        answered = sum(1 for _ in teacher.answer(jobs))
        elapsed = time.perf_counter() - start
    rate = answered / elapsed
    ideal = concurrency / latency
    return {"concurrency": concurrency, "requests": answered, "seconds": round(elapsed, 3),
            "samples_per_s": round(rate, 2), "ideal_per_s": round(ideal, 2), "ratio": round(rate / ideal, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency", type=float, default=0.2, help="server seconds per request")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--seconds", type=float, default=3.0, help="ideal duration of each measurement")
    args = parser.parse_args()
    server = subprocess.Popen([sys.executable, str(TESTS / "fake_openai_server.py"), "--latency", str(args.latency)],
                              stdout=subprocess.PIPE, text=True)
    try:
        url = server.stdout.readline().strip()
        measure(url, 1, args.latency, 0.0)  # warm-up: imports and the first connection, untimed
        results = [measure(url, c, args.latency, args.seconds) for c in args.concurrency]
    finally:
        server.kill()
    print(f"{'concurrency':>11} {'requests':>8} {'seconds':>8} {'samples/s':>10} {'ideal/s':>8} {'ratio':>6}")
    for r in results:
        print(f"{r['concurrency']:>11} {r['requests']:>8} {r['seconds']:>8} {r['samples_per_s']:>10} "
              f"{r['ideal_per_s']:>8} {r['ratio']:>6.1%}")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
