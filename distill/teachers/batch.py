"""The OpenAI Batch API: submit every unanswered request as one batch file, collect the results later
into the same completion store (half the price on OpenAI, no rate limits, up to 24 h).

Data contract: ``<run_dir>/batches/input-<k>.jsonl`` (the uploaded requests, one
``{"custom_id": request_hash, "method", "url", "body"}`` per line) and ``<run_dir>/batches/jobs.json``
(``[{"id", "input_file_id", "input", "requests", "status", "imported", "stored", "errors"}]``).
``submit`` skips requests already stored or waiting in an open batch, so submitting twice never pays
twice; ``collect`` polls the open batches and appends each result to the store (``source: "batch"``)
and the ledger. Results that failed stay unanswered and go into the next ``submit``.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Sequence

from distill.files import read_json, read_jsonl, write_json, write_jsonl
from distill.layout import RunFolder
from distill.teachers import Job, request_hash

ENDPOINT = "/v1/chat/completions"
MAX_REQUESTS = 50_000  # OpenAI's limit per batch file
CLOSED = ("failed", "expired", "cancelled", "cancelling")


def _jobs_path(run_dir: Path) -> Path:
    return RunFolder(run_dir).batches / "jobs.json"


def load_jobs(run_dir: Path) -> list[dict]:
    path = _jobs_path(run_dir)
    return read_json(path, default=[])


def submit(teacher, run_dir: Path, jobs: Sequence[Job], metadata: dict | None = None) -> dict:
    """Upload the requests of ``jobs`` that are neither stored nor waiting; record the batch jobs."""
    run_dir = Path(run_dir)
    records = load_jobs(run_dir)
    waiting = set()
    for rec in records:
        if not rec["imported"] and rec["status"] not in CLOSED:
            waiting.update(row["custom_id"] for row in read_jsonl(rec["input"]))
    lines, seen = [], set()
    for job in jobs:
        request = teacher.request_for(job)
        h = request_hash(request)
        if h in teacher.store or h in waiting or h in seen:
            continue
        seen.add(h)
        lines.append({"custom_id": h, "method": "POST", "url": ENDPOINT, "body": request})
    client = teacher.sync_client()
    submitted = []
    for start in range(0, len(lines), MAX_REQUESTS):
        chunk = lines[start:start + MAX_REQUESTS]
        path = write_jsonl(RunFolder(run_dir).batches / f"input-{len(records):03d}.jsonl", chunk)
        with path.open("rb") as fh:
            uploaded = client.files.create(file=fh, purpose="batch")
        batch = client.batches.create(input_file_id=uploaded.id, endpoint=ENDPOINT, completion_window="24h",
                                      metadata={k: str(v) for k, v in (metadata or {}).items()} or None)
        records.append({"id": batch.id, "input_file_id": uploaded.id, "input": str(path), "requests": len(chunk),
                        "status": batch.status, "imported": False, "stored": 0, "errors": 0,
                        "submitted_at": time.time()})
        write_json(_jobs_path(run_dir), records)  # after each batch: a crash never forgets a paid-for job
        submitted.append(batch.id)
    return {"batches": submitted, "requests": len(lines), "already_stored_or_waiting": len(jobs) - len(lines)}


def collect(teacher, run_dir: Path, poll: float = 10.0, wait: float = 0.0) -> dict:
    """Poll open batches (for up to ``wait`` seconds) and import finished ones into the store."""
    run_dir = Path(run_dir)
    records = load_jobs(run_dir)
    client = teacher.sync_client()
    deadline = time.monotonic() + wait
    while True:
        for rec in records:
            if rec["imported"] or rec["status"] in CLOSED:
                continue
            batch = client.batches.retrieve(rec["id"])
            rec["status"] = batch.status
            if batch.status == "completed":
                stored, errors = _import(teacher, rec, client.files.content(batch.output_file_id).text)
                rec.update(imported=True, stored=stored, errors=errors)
            write_json(_jobs_path(run_dir), records)
        open_ = [r for r in records if not r["imported"] and r["status"] not in CLOSED]
        if not open_ or time.monotonic() + poll > deadline:
            break
        time.sleep(poll)
    return {"batches": len(records), "open": len(open_), "imported": sum(r["imported"] for r in records),
            "stored": sum(r["stored"] for r in records), "errors": sum(r["errors"] for r in records),
            "closed_unfinished": sum(r["status"] in CLOSED for r in records)}


def _import(teacher, rec: dict, output: str) -> tuple[int, int]:
    requests = {row["custom_id"]: row["body"] for row in read_jsonl(rec["input"])}
    stored = errors = 0
    for line in output.splitlines():
        if not line.strip():
            continue
        item = json.loads(line)
        h = item.get("custom_id")
        response = item.get("response") or {}
        if h not in requests or response.get("status_code") != 200 or h in teacher.store:
            errors += h not in teacher.store
            continue
        body = response.get("body")
        raw = body if isinstance(body, str) else json.dumps(body, ensure_ascii=False)
        usage = body.get("usage", {}) if isinstance(body, dict) else {}
        teacher.store.put(h, requests[h], raw, usage, source="batch")
        teacher.ledger.record(h, usage, teacher.model, source="batch")
        stored += 1
    return stored, errors
