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


def test_a_torn_last_line_is_skipped_and_fenced_off_before_the_next_append(tmp_path):
    store = CompletionStore(tmp_path)
    store.put("a", req(), "raw-a")
    store.close()
    with (tmp_path / CompletionStore.FILE).open("a") as fh:
        fh.write('{"hash": "b", "request": {}, "raw": "half wri')  # kill -9 mid-write
    torn = CompletionStore(tmp_path)
    assert "a" in torn and "b" not in torn and torn.skipped_lines == 1
    torn.put("c", req(1), "raw-c")
    torn.close()
    assert {"a", "c"} <= set(CompletionStore(tmp_path)._records)


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
