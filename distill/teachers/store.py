"""The completion store: every raw teacher response, appended and fsynced before it is used.

Data contract: ``<store_dir>/completions.jsonl``, one record per API response:
``{"hash", "request" (the canonical request), "raw" (the response body exactly as received),
"usage", "source" ("api" | "batch"), "time"}``. ``hash`` is ``request_hash(request)``: sha256 of
the canonical model, messages, temperature, n and max_tokens. The store is shared by every run
(``teacher.store_dir``), so a request answered once is never paid for again; a rerun after
``kill -9`` finds every response that reached the disk.

Each record (or group of records, see ``put_many``) is written with one ``os.write`` on an ``O_APPEND`` descriptor and fsynced, so two
processes appending at once do not interleave lines; a torn last line (a crash mid-write) is
skipped on reading and fenced off with a newline before the next append.
"""
from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path


class CompletionStore:
    FILE = "completions.jsonl"

    def __init__(self, store_dir: str | Path):
        self.dir = Path(store_dir)
        self.path = self.dir / self.FILE
        self._records: dict[str, dict] = {}
        self._lock = threading.Lock()
        self._fd: int | None = None
        self.skipped_lines = 0
        self._load()

    def _load(self) -> None:
        if not self.path.exists():
            return
        with self.path.open(encoding="utf-8") as fh:
            for line in fh:
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    self.skipped_lines += 1  # a torn line from a crash: that request is simply asked again
                    continue
                if isinstance(record, dict) and "hash" in record:
                    self._records[record["hash"]] = record

    def __contains__(self, request_hash: str) -> bool:
        return request_hash in self._records

    def __len__(self) -> int:
        return len(self._records)

    def get(self, request_hash: str) -> dict | None:
        return self._records.get(request_hash)

    def _open(self) -> int:
        if self._fd is None:
            self.dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            size = os.fstat(fd).st_size
            if size:
                with self.path.open("rb") as fh:
                    fh.seek(size - 1)
                    if fh.read(1) != b"\n":
                        os.write(fd, b"\n")  # fence off a torn tail instead of truncating: another writer may be live
            self._fd = fd
        return self._fd

    def put(self, request_hash: str, request: dict, raw: str, usage: dict | None = None, source: str = "api") -> dict:
        """Append one response durably (write + fsync) and return its record."""
        return self.put_many([(request_hash, request, raw, usage, source)])[0]

    def put_many(self, items: list[tuple]) -> list[dict]:
        """Append ``(hash, request, raw, usage[, source])`` items with one write and one fsync (group commit)."""
        records = [{"hash": it[0], "request": it[1], "raw": it[2], "usage": it[3] or {},
                    "source": it[4] if len(it) > 4 else "api", "time": time.time()} for it in items]
        data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode("utf-8")
        with self._lock:
            fd = self._open()
            os.write(fd, data)
            os.fsync(fd)
            for record in records:
                self._records[record["hash"]] = record
        return records

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
