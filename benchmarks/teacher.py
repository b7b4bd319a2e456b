"""Teacher throughput: samples per second of the openai teacher against a local server that takes
200 ms per request, at concurrency 1 and 32, and the ratio to the ideal (concurrency / latency).

Every answer goes the full way: request, raw response appended to the completion store (fsynced),
ledger entry, parse. The server runs in its own process (as a real one would: it must not share our
GIL), and one untimed warm-up call pays the one-time imports first. Target: at least 80%
of the ideal (the client must not be what limits a run) at concurrency 32.

    python benchmarks/teacher.py [--latency 0.2] [--concurrency 1 32] [--seconds 3]

Store: ``--store-entries 100000`` (the default; 0 skips it) also measures the completion
store holding that many responses: the time to open it, the time per lookup of a stored hash (hit)
and of an absent one (miss), and the memory it holds (RSS of a fresh process after opening and
looking up, minus before), for the SQLite store (distill/teachers/store.py) against the former
store, which read the whole completions.jsonl into a dict (the baseline, kept below as it was).
Each store is measured in its own process, so one's memory does not hide in the other's.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TESTS = Path(__file__).resolve().parent.parent / "tests"

from distill.teachers import Job, request_hash  # noqa: E402
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


class JsonlDictStore:
    """The baseline: the completion store before it moved to SQLite (commit dc02d11), reading only. It loads
    every record of completions.jsonl into a dict; a lookup is a dict access."""

    def __init__(self, store_dir: str | Path):
        self._records: dict[str, dict] = {}
        with (Path(store_dir) / "completions.jsonl").open(encoding="utf-8") as fh:
            for line in fh:
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if isinstance(record, dict) and "hash" in record:
                    self._records[record["hash"]] = record

    def get(self, request_hash: str) -> dict | None:
        return self._records.get(request_hash)


def _raw(i: int) -> str:
    """A chat-completions body of the size a teacher answer has (about 1 kB with a 600-character answer)."""
    text = (f"Step {i}: " + "Natalia sold 48/2 = 24 clips in May and 48+24 = 72 clips altogether. " * 9)[:600]
    return json.dumps({"id": f"chatcmpl-{i}", "object": "chat.completion", "created": 1700000000, "model": "bench",
                       "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                                    "finish_reason": "stop"}],
                       "usage": {"prompt_tokens": 180, "completion_tokens": 150, "total_tokens": 330}})


def _rss() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def store_child(kind: str, store_dir: str, lookups: int = 20_000) -> dict:
    """In a fresh process: open one store, look up ``lookups`` hits and misses; time and memory."""
    import gc
    import random

    hashes = [line.split('"hash": "', 1)[1][:64] for line in open(Path(store_dir) / "keys.txt")]
    rng = random.Random(0)
    hits = [rng.choice(hashes) for _ in range(lookups)]
    misses = [f"{rng.getrandbits(256):064x}" for _ in range(lookups)]
    gc.collect()
    before = _rss()
    start = time.perf_counter()
    store = JsonlDictStore(store_dir) if kind == "jsonl" else CompletionStore(store_dir)
    opened = time.perf_counter() - start
    start = time.perf_counter()
    found = sum(store.get(h) is not None for h in hits)
    hit_s = (time.perf_counter() - start) / lookups
    start = time.perf_counter()
    absent = sum(store.get(h) is None for h in misses)
    miss_s = (time.perf_counter() - start) / lookups
    gc.collect()
    assert found == lookups and absent == lookups
    return {"store": kind, "open_s": round(opened, 3), "hit_us": round(hit_s * 1e6, 2),
            "miss_us": round(miss_s * 1e6, 2), "rss_mb": round((_rss() - before) / 2**20, 1)}


def store_benchmark(entries: int) -> list[dict]:
    with tempfile.TemporaryDirectory() as tmp:
        legacy, new = Path(tmp) / "legacy", Path(tmp) / "sqlite"
        legacy.mkdir()
        with (legacy / "completions.jsonl").open("w", encoding="utf-8") as out, \
                (legacy / "keys.txt").open("w") as keys:
            for i in range(entries):
                request = {"model": "bench", "messages": [{"role": "user", "content": f"question {i}"}],
                           "temperature": 0.0, "n": 1, "max_tokens": 512}
                line = json.dumps({"hash": request_hash(request), "request": request, "raw": _raw(i),
                                   "usage": {"prompt_tokens": 180}, "source": "api", "time": 0.0})
                out.write(line + "\n")
                keys.write(line[:80] + "\n")
        new.mkdir()
        (new / "completions.jsonl").symlink_to(legacy / "completions.jsonl")
        (new / "keys.txt").symlink_to(legacy / "keys.txt")
        start = time.perf_counter()
        CompletionStore(new).close()  # the one-time import of an existing completions.jsonl
        imported = time.perf_counter() - start
        size_mb = (legacy / "completions.jsonl").stat().st_size / 2**20
        results = []
        for kind, folder in (("jsonl", legacy), ("sqlite", new)):
            out = subprocess.run([sys.executable, __file__, "--store-child", kind, str(folder)], capture_output=True,
                                 text=True, check=True)
            results.append(json.loads(out.stdout.strip().splitlines()[-1]))
    base, ours = results
    print(f"completion store, {entries:,} responses ({size_mb:.0f} MB of JSONL; one-time import into SQLite "
          f"{imported:.1f} s)")
    print(f"{'store':>22} {'open s':>7} {'hit us':>7} {'miss us':>8} {'RSS MB':>7}")
    for name, r in (("in-memory JSONL (base)", base), ("SQLite WAL (ours)", ours)):
        print(f"{name:>22} {r['open_s']:>7} {r['hit_us']:>7} {r['miss_us']:>8} {r['rss_mb']:>7}")
    print(f"ratios ours/base: memory {ours['rss_mb'] / max(base['rss_mb'], 0.1):.3f}, open "
          f"{ours['open_s'] / max(base['open_s'], 1e-6):.3f}, hit lookup {ours['hit_us'] / max(base['hit_us'], 1e-3):.1f}x, "
          f"miss lookup {ours['miss_us'] / max(base['miss_us'], 1e-3):.1f}x")
    print(json.dumps({"entries": entries, "import_s": round(imported, 2), "base": base, "ours": ours}))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency", type=float, default=0.2, help="server seconds per request")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--seconds", type=float, default=3.0, help="ideal duration of each measurement")
    parser.add_argument("--store-entries", type=int, default=100_000, help="responses in the store benchmark (0: skip)")
    parser.add_argument("--store-child", nargs=2, metavar=("KIND", "DIR"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.store_child:
        print(json.dumps(store_child(*args.store_child)))
        return
    if args.store_entries:
        store_benchmark(args.store_entries)
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
