"""The completion store and the cost ledger: durable, shared, tolerant of a crash mid-write."""
from __future__ import annotations

import json

from distill.teachers import canonical_request, request_hash
from distill.teachers.ledger import Ledger
from distill.teachers.store import CompletionStore


def req(i: int = 0, **kw) -> dict:
    base = dict(model="m", messages=[{"role": "user", "content": f"q{i}"}], temperature=0.0, n=1, max_tokens=64)
    base.update(kw)
    return canonical_request(**base)


def test_the_request_hash_changes_with_every_field_that_changes_the_answer():
    hashes = {request_hash(r) for r in (req(), req(1), req(model="m2"), req(temperature=0.7), req(n=2),
                                          req(max_tokens=32))}
    assert len(hashes) == 6
    assert request_hash(req()) == request_hash(json.loads(json.dumps(req())))  # canonical: stable across a round trip


def test_a_stored_response_is_found_again_by_a_new_store_on_the_same_folder(tmp_path):
    store = CompletionStore(tmp_path)
    store.put(request_hash(req()), req(), '{"choices": []}', {"prompt_tokens": 3})
    store.close()
    again = CompletionStore(tmp_path)
    assert request_hash(req()) in again and again.get(request_hash(req()))["usage"] == {"prompt_tokens": 3}


def test_a_torn_line_of_the_former_jsonl_store_is_skipped_and_the_rest_is_imported(tmp_path):
    legacy = tmp_path / CompletionStore.FILE
    legacy.write_text(json.dumps({"hash": "a", "request": req(), "raw": "raw-a", "usage": {}}) + "\n"
                      + '{"hash": "b", "request": {}, "raw": "half wri\n'  # kill -9 mid-write, fenced off
                      + json.dumps({"hash": "c", "request": req(1), "raw": "raw-c"}) + "\n")
    store = CompletionStore(tmp_path)
    assert "a" in store and "c" in store and "b" not in store and store.skipped_lines == 1
    assert store.get("a")["raw"] == "raw-a" and store.get("a")["request"] == req()


def test_lines_appended_to_the_former_store_after_an_import_are_read_on_the_next_open(tmp_path):
    legacy = tmp_path / CompletionStore.FILE
    legacy.write_text(json.dumps({"hash": "a", "request": {}, "raw": "raw-a"}) + "\n" + '{"hash": "u", "raw"')
    first = CompletionStore(tmp_path)
    assert len(first) == 1 and "u" not in first  # an unfinished last line waits: its writer may be live
    first.close()
    with legacy.open("a") as fh:
        fh.write(': "raw-u"}\n' + json.dumps({"hash": "d", "request": {}, "raw": "raw-d"}) + "\n")
    again = CompletionStore(tmp_path)
    assert {"a", "u", "d"} == set(again.hashes()) and again.get("u")["raw"] == "raw-u"
    assert len(CompletionStore(tmp_path)) == 3  # each line imported once


def test_a_hash_already_stored_keeps_its_first_response(tmp_path):
    store = CompletionStore(tmp_path)
    store.put("a", req(), "first")
    store.put("a", req(), "second")
    assert store.get("a")["raw"] == "first" and len(store) == 1


def test_an_export_is_a_jsonl_the_replay_teacher_reads(tmp_path):
    from distill.teachers import Job
    from distill.teachers.replay import ReplayTeacher

    store = CompletionStore(tmp_path / "store")
    job = Job("p1", "cot", 1, "q", 1.0, ({"role": "user", "content": "q"},))
    request = canonical_request("m", job.messages, 0.0, 1, 512)
    raw = '{"choices": [{"index": 0, "message": {"content": "The answer is 1."}}]}'
    store.put(request_hash(request), request, raw)
    assert store.export_jsonl(tmp_path / "out.jsonl") == 1
    record = json.loads((tmp_path / "out.jsonl").read_text())
    assert record["hash"] == request_hash(request) and record["raw"] == raw and record["request"] == request
    [(_, answer)] = list(ReplayTeacher(tmp_path / "out.jsonl", "m").answer([job]))
    assert answer.completions == ["The answer is 1."]


def _writer(store_dir: str, start: int, count: int) -> None:
    store = CompletionStore(store_dir)
    for i in range(start, start + count, 5):
        store.put_many([(f"h{k}", req(k), f"raw-{k}", {"k": k}) for k in range(i, min(i + 5, start + count))])
    store.close()


def test_four_processes_writing_at_once_lose_nothing_and_corrupt_nothing(tmp_path):
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(str(tmp_path), w * 100, 100)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    store = CompletionStore(tmp_path)
    assert len(store) == 400
    assert all(store.get(f"h{k}")["raw"] == f"raw-{k}" and store.get(f"h{k}")["usage"] == {"k": k} for k in range(400))
    assert store.get("h400") is None


def test_the_ledger_prices_tokens_and_keeps_its_totals_across_runs(tmp_path):
    prices = {"m": {"input": 0.5, "output": 1.5}}
    ledger = Ledger(tmp_path / "ledger.jsonl", prices, model="m")
    ledger.record("h1", {"prompt_tokens": 1_000_000, "completion_tokens": 2_000_000}, "m")
    assert ledger.cost == 3.5 and ledger.totals()["input_tokens"] == 1_000_000
    again = Ledger(tmp_path / "ledger.jsonl", prices, model="m")
    assert again.cost == 3.5 and again.totals()["calls"] == 0 and again.totals()["total_calls"] == 1


def test_a_reservation_that_would_pass_the_budget_is_refused(tmp_path):
    ledger = Ledger(None, {"m": {"input": 1e6, "output": 1e6}}, budget=10.0, model="m")
    assert ledger.reserve(6.0) and not ledger.reserve(6.0)
    ledger.release(6.0)
    assert ledger.reserve(6.0)


def test_many_processes_opening_a_new_store_at_once_all_open_it(tmp_path):
    # SQLite skips the busy handler for the switch to WAL: without a retry, a process opening a new
    # store beside another one got "database is locked" at once (seen with two generate --shard)
    import subprocess
    import sys

    code = ("import sys, time; from distill.teachers.store import CompletionStore\n"
            "while time.time() < float(sys.argv[2]): pass\n"  # all processes start their open together
            "CompletionStore(sys.argv[1])\n")
    start = __import__("time").time() + 3
    procs = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "store"), str(start)],
                              stderr=subprocess.PIPE, text=True) for _ in range(12)]
    errors = [p.communicate(timeout=120)[1] for p in procs]
    assert [p.returncode for p in procs] == [0] * 12, [e for e in errors if e][:1]
