"""The completion store: every raw teacher response, committed durably before it is used.

Data contract: ``<store_dir>/completions.sqlite3``, an SQLite database in WAL mode with one row per
API response in table ``completions``: ``hash`` (primary key), ``request`` (the canonical request,
JSON), ``raw`` (the response body exactly as received), ``usage`` (JSON), ``source`` ("api" |
"batch"), ``time``. ``hash`` is ``request_hash(request)``: sha256 of the canonical model, messages,
temperature, n and max_tokens. The store is shared by every run and every shard
(``teacher.store_dir``), so a request answered once is never paid for again; a rerun after
``kill -9`` finds every response whose commit returned.

Why SQLite and not the former append-only JSONL read into a dict: a lookup is one primary-key read
from disk, so memory no longer grows with the store (``benchmarks/teacher.py --store`` measures it
at 100,000 responses), and several processes (the shards of ``generate --shard``) write to it at
once safely: SQLite serialises writers with its lock (``busy_timeout`` waits for it), WAL lets
readers go on meanwhile, and ``synchronous=FULL`` fsyncs every commit. WAL needs every process on
one host (it uses shared memory): shards on several hosts give each host its own ``store_dir``
(shards never share a request, so nothing is paid twice).

The former ``<store_dir>/completions.jsonl`` is still read: on opening, the lines appended since the
last import (its byte offset is kept in table ``meta``) are imported, so an existing cache keeps
working and an older writer appending to it is picked up on the next open. It is read as every
append log is (``distill.files``): a last line without its newline is not yet a record and is left
for later (its writer may still be live), and a torn line (a crash mid-write) is skipped and
counted in ``skipped_lines``. ``export_jsonl`` (``python -m distill.teachers.store export
OUT.jsonl``) writes the records back out in that format, for the replay teacher.
"""
from __future__ import annotations

import json
import sqlite3
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from distill.files import log_lines, write_jsonl

BUSY_TIMEOUT_MS = 60_000  # a writer waits this long for another shard's commit before failing loudly
_COLUMNS = ("hash", "request", "raw", "usage", "source", "time")


class CompletionStore:
    DB = "completions.sqlite3"
    FILE = "completions.jsonl"
    """The former store, imported on open (read-through of existing caches)."""

    def __init__(self, store_dir: str | Path):
        self.dir = Path(store_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.path = self.dir / self.DB
        self.legacy_path = self.dir / self.FILE
        self.skipped_lines = 0
        self._lock = threading.Lock()  # one connection, used by the event loop's commit thread and the caller
        self._db = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None,
                                   check_same_thread=False)
        self._db.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        self._wal()
        self._db.execute("PRAGMA synchronous=FULL")  # fsync each commit: "stored" means on disk
        with self._transaction():
            self._db.execute("CREATE TABLE IF NOT EXISTS completions (hash TEXT PRIMARY KEY, request TEXT NOT NULL, "
                             "raw TEXT NOT NULL, usage TEXT NOT NULL, source TEXT NOT NULL, time REAL NOT NULL)")
            self._db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        self._import_legacy()

    def _wal(self) -> None:
        """Switch the file to WAL mode. SQLite does not call the busy handler for this switch: two
        processes opening a new store at once (two `generate --shard` starting together) can get
        "database is locked" at once, whatever the busy timeout. So retry for as long as that timeout."""
        deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
        while True:
            try:
                self._db.execute("PRAGMA journal_mode=WAL")
                return
            except sqlite3.OperationalError as err:
                if "locked" not in str(err) or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    # -- the former JSONL store ------------------------------------------------------------------

    def _import_legacy(self) -> None:
        if not self.legacy_path.exists():
            return
        with self._transaction():  # IMMEDIATE: two processes opening at once import each line once
            row = self._db.execute("SELECT value FROM meta WHERE key = 'jsonl_offset'").fetchone()
            offset = int(row[0]) if row else 0
            for offset, line in log_lines(self.legacy_path, offset):  # an unfinished last line waits
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    self.skipped_lines += 1  # a torn line from a crash: that request is simply asked again
                    continue
                if isinstance(record, dict) and "hash" in record:
                    # last one wins, as the in-memory store read it
                    self._db.execute("INSERT OR REPLACE INTO completions VALUES (?, ?, ?, ?, ?, ?)",
                                     _row(record))
            self._db.execute("INSERT OR REPLACE INTO meta VALUES ('jsonl_offset', ?)", (str(offset),))

    # -- reading -----------------------------------------------------------------------------------

    def __contains__(self, request_hash: str) -> bool:
        with self._lock:
            return self._db.execute("SELECT 1 FROM completions WHERE hash = ?", (request_hash,)).fetchone() is not None

    def __len__(self) -> int:
        with self._lock:
            return self._db.execute("SELECT count(*) FROM completions").fetchone()[0]

    def get(self, request_hash: str) -> dict | None:
        """The stored record ``{"hash", "request", "raw", "usage", "source", "time"}``, or None."""
        with self._lock:
            row = self._db.execute("SELECT * FROM completions WHERE hash = ?", (request_hash,)).fetchone()
        return _record(row) if row else None

    def hashes(self) -> Iterator[str]:
        """Every stored request hash (streamed, not loaded at once)."""
        with self._lock:
            rows = self._db.execute("SELECT hash FROM completions").fetchall()
        return (r[0] for r in rows)

    # -- writing -----------------------------------------------------------------------------------

    def put(self, request_hash: str, request: dict, raw: str, usage: dict | None = None, source: str = "api") -> dict:
        """Store one response durably (commit + fsync) and return its record."""
        return self.put_many([(request_hash, request, raw, usage, source)])[0]

    def put_many(self, items: list[tuple]) -> list[dict]:
        """Store ``(hash, request, raw, usage[, source])`` items in one transaction (group commit).

        A hash already stored keeps its first response: samples may already refer to it.
        """
        records = [{"hash": it[0], "request": it[1], "raw": it[2], "usage": it[3] or {},
                    "source": it[4] if len(it) > 4 else "api", "time": time.time()} for it in items]
        with self._transaction():
            self._db.executemany("INSERT OR IGNORE INTO completions VALUES (?, ?, ?, ?, ?, ?)",
                                 [_row(r) for r in records])
        return records

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        """BEGIN IMMEDIATE: take SQLite's write lock at once (waiting for another process's commit)."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def export_jsonl(self, path: str | Path) -> int:
        """Write every record as one JSON line (the former completions.jsonl format, which the replay
        teacher reads: ``--teacher replay --replay-file PATH``), streamed and atomic; returns the count."""
        count = 0

        def records() -> Iterator[dict]:
            nonlocal count
            for row in self._db.execute("SELECT * FROM completions ORDER BY rowid"):
                count += 1
                yield _record(row)

        with self._lock:
            write_jsonl(path, records())
        return count

    def close(self) -> None:
        with self._lock:
            self._db.close()


def _row(record: dict) -> tuple:
    return (record["hash"], json.dumps(record.get("request", {}), ensure_ascii=False), str(record.get("raw", "")),
            json.dumps(record.get("usage") or {}), record.get("source", "api"), float(record.get("time", 0.0)))


def _record(row: tuple) -> dict:
    record = dict(zip(_COLUMNS, row))
    record["request"] = json.loads(record["request"])
    record["usage"] = json.loads(record["usage"])
    return record


if __name__ == "__main__":  # python -m distill.teachers.store export OUT.jsonl [STORE_DIR]
    import sys

    if len(sys.argv) not in (3, 4) or sys.argv[1] != "export":
        sys.exit("usage: python -m distill.teachers.store export OUT.jsonl [STORE_DIR (default .cache/completions)]")
    n = CompletionStore(sys.argv[3] if len(sys.argv) == 4 else ".cache/completions").export_jsonl(sys.argv[2])
    print(f"{n} responses written to {sys.argv[2]}")
