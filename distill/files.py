"""Reading and writing the project's data files: JSON and JSONL with errors that name the file and the
fix, atomic writes, append-only logs and file digests. It owns the formats' mechanics (the json.dumps
options, the torn-tail policy), not what any file holds; it writes only the paths it is given.

Whole files: a file a stage produces is written to a temporary name in the same folder and then
renamed (``atomic_open``, ``atomic_write_text``, ``write_json``, ``write_jsonl``), so a crash leaves
either the old file or the new one, never half of one. ``read_json`` and ``read_jsonl`` read them back;
a missing or malformed file is a ``DataError`` naming the file and the fix. ``file_digest`` names a
file's exact content (mixes, verified data).

Append-only JSONL logs (samples, the cost ledger, evaluation answers) are written by ``append_log``
only: each write is flushed at once (it survives ``kill -9`` of the writer) and fsynced either per
write (the default) or at most every ``sync_every`` seconds (for a caller that can afford to lose the
last seconds to an OS crash because it gets them back). One torn-tail policy holds for every reader
and writer of such a log, the former completion store's ``completions.jsonl`` included:

- a last line without its newline is not yet a record: readers (``read_log``, ``log_lines``) skip
  it, because its writer may still be live or was killed mid-write; the next writer cuts it off
  before it appends (``append_log``), so a record always starts on a line of its own;
- a complete line that is not valid JSON (a torn write in the middle, left by a writer that did not
  cut) is skipped by ``read_log``; ``log_lines`` hands it to the caller, which may count it.

That is how stages resume after ``kill -9``: what a log holds is what was done.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Iterable, Iterator


_UMASK = os.umask(0)
os.umask(_UMASK)
_REQUIRED = object()  # read_json without a default: a missing file is an error


class DataError(ValueError):
    """A data file that is missing or malformed; the message names the file, the line and the fix."""


# --- whole files: atomic writes, JSON, digests ---------------------------------------------------

@contextmanager
def atomic_open(path: str | Path) -> Iterator[IO[str]]:
    """A text file to write ``path`` through: written under a temporary name in the same folder,
    fsynced and renamed over ``path`` when the block ends; an error leaves ``path`` as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the file ordinary permissions
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | Path, text: str) -> Path:
    with atomic_open(path) as fh:
        fh.write(text)
    return Path(path)


def write_json(path: str | Path, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, ensure_ascii=False, sort_keys=True) + "\n")


def write_jsonl(path: str | Path, rows: Iterable[dict]) -> Path:
    """One JSON object per line, streamed (``rows`` may be a generator), atomic."""
    with atomic_open(path) as fh:
        for r in rows:
            fh.write(json.dumps(r, ensure_ascii=False) + "\n")
    return Path(path)


def read_json(path: str | Path, hint: str = "", *, default: Any = _REQUIRED) -> Any:
    """The JSON value in ``path``. A missing file returns ``default`` when one is given, else it is a
    DataError; a file that cannot be read or is not valid JSON is always a DataError. The messages
    name the file and end with ``hint`` (the fix)."""
    path, fix = Path(path), f"; {hint}" if hint else ""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        if default is not _REQUIRED:
            return default
        raise DataError(f"{path} not found{fix}") from None
    except OSError as exc:  # a folder, no permission
        raise DataError(f"{path} cannot be read ({exc.strerror or exc}){fix}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"{path} is not valid JSON ({exc}){fix}") from None


def file_digest(path: str | Path) -> str:
    """The first 16 hex digits of the sha256 of a file's bytes: names a data file's exact content."""
    h = hashlib.sha256()
    with Path(path).open("rb") as fh:  # in chunks: a mix or a weights file need not fit in memory
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


# --- JSONL datasets: every line a record, a bad line is an error ---------------------------------

def iter_jsonl(path: str | Path, hint: str = "") -> Iterator[tuple[int, dict]]:
    """(line number, record) of each non-blank line; a bad line stops with file, line and what is wrong."""
    path = Path(path)
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}:{lineno}: not valid JSON ({exc.msg}); is the file truncated? {hint}".strip()) from None
            if not isinstance(row, dict):
                raise DataError(f"{path}:{lineno}: expected a JSON object, got {type(row).__name__}. {hint}".strip())
            yield lineno, row


def read_jsonl(path: str | Path, required: Iterable[str] = (), hint: str = "") -> list[dict]:
    """All records of a JSONL file; a missing file or field names itself and the fix (hint)."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: file not found. {hint}".strip())
    required = tuple(required)
    rows = []
    for lineno, row in iter_jsonl(path, hint):
        missing = [k for k in required if k not in row]
        if missing:
            raise DataError(f"{path}:{lineno}: missing field {missing[0]!r}. {hint}".strip())
        rows.append(row)
    return rows


# --- append-only logs: the torn-tail policy of the module docstring ------------------------------

def log_lines(path: str | Path, offset: int = 0) -> Iterator[tuple[int, str]]:
    """(byte offset just past the line, the line) of each complete line of a log from byte ``offset``;
    a last line without its newline is not yet a record and is not yielded. Nothing for a missing file."""
    path = Path(path)
    if not path.exists():
        return
    with path.open("rb") as fh:
        fh.seek(offset)
        for line in fh:
            if not line.endswith(b"\n"):
                return
            offset += len(line)
            yield offset, line.decode("utf-8")


def read_log(path: str | Path) -> Iterator[dict]:
    """Records of an append-only log; an unfinished last line and lines that are not JSON are skipped."""
    for _, line in log_lines(path):
        try:
            yield json.loads(line)
        except json.JSONDecodeError:
            continue


@contextmanager
def append_log(path: str | Path, *, sync_every: float = 0.0, ensure_ascii: bool = False) -> Iterator["LogWriter"]:
    """The one writer of an append-only log: creates its folder, cuts an unfinished last line, and
    appends records flushed at once and fsynced per write (``sync_every=0``) or at most every
    ``sync_every`` seconds, and once more at the end. ``ensure_ascii`` is the log's json.dumps option
    (it decides the file's bytes, so each log keeps the one it was always written with)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _cut_torn_tail(path)
    with path.open("a", encoding="utf-8") as fh:
        log = LogWriter(fh, sync_every, ensure_ascii)
        try:
            yield log
        finally:
            log.close()


class LogWriter:
    """Appends to an open log; made by ``append_log``."""

    def __init__(self, fh: IO[str], sync_every: float = 0.0, ensure_ascii: bool = False):
        self._fh, self._sync_every, self._ensure_ascii = fh, sync_every, ensure_ascii
        self._synced = time.monotonic()
        self._pending = False

    def write(self, record: dict) -> None:
        self.write_all([record])

    def write_all(self, records: Iterable[dict]) -> None:
        """Append records with one write and one flush (so a batch survives ``kill -9`` whole or torn at its end)."""
        self._fh.write("".join(json.dumps(r, ensure_ascii=self._ensure_ascii) + "\n" for r in records))
        self._fh.flush()
        self._pending = True
        if time.monotonic() - self._synced >= self._sync_every:
            self._sync()

    def close(self) -> None:
        self._fh.flush()
        if self._pending:
            self._sync()

    def _sync(self) -> None:
        os.fsync(self._fh.fileno())
        self._synced = time.monotonic()
        self._pending = False


def _cut_torn_tail(path: Path, chunk: int = 1 << 16) -> None:
    """Drop an unfinished last line so the next record starts on a line of its own; reads only the
    file's end (back to its last newline), not the whole log."""
    if not path.exists():
        return
    with path.open("rb+") as fh:
        end = pos = fh.seek(0, os.SEEK_END)
        while pos > 0:
            start = max(0, pos - chunk)
            fh.seek(start)
            data = fh.read(pos - start)
            if pos == end and data.endswith(b"\n"):
                return
            newline = data.rfind(b"\n")
            if newline >= 0:
                fh.truncate(start + newline + 1)
                return
            pos = start
        if end:
            fh.truncate(0)
