"""Reading and writing the project's files: JSONL with line-numbered errors, atomic writes.

Every file a stage produces is written to a temporary name in the same folder and then
renamed, so a crash leaves either the old file or the new one, never half of one.
Append-only JSONL logs (completion store, verdicts) are flushed and fsynced per record and
read back tolerating a torn last line, which is how stages resume after ``kill -9``.
"""
from __future__ import annotations

import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator


_UMASK = os.umask(0)
os.umask(_UMASK)


class DataError(ValueError):
    """A data file that is missing or malformed; the message names the file, the line and the fix."""


def atomic_write_text(path: str | Path, text: str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the file ordinary permissions
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def write_json(path: str | Path, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, ensure_ascii=False, sort_keys=True) + "\n")


def write_jsonl(path: str | Path, rows: Iterable[dict]) -> Path:
    return atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


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


def read_log(path: str | Path) -> Iterator[dict]:
    """Records of an append-only log; a torn last line (a crash mid-write) is skipped."""
    path = Path(path)
    if not path.exists():
        return
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            if not line.endswith("\n"):
                return
            try:
                yield json.loads(line)
            except json.JSONDecodeError:
                continue


@contextmanager
def append_log(path: str | Path) -> Iterator["LogWriter"]:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _truncate_torn_tail(path)
    with path.open("a", encoding="utf-8") as fh:
        yield LogWriter(fh)


class LogWriter:
    def __init__(self, fh):
        self._fh = fh

    def write(self, record: dict) -> None:
        self._fh.write(json.dumps(record, ensure_ascii=False) + "\n")
        self._fh.flush()
        os.fsync(self._fh.fileno())


def _truncate_torn_tail(path: Path) -> None:
    """Drop a half-written last line so the next record starts on a line of its own."""
    if not path.exists() or path.stat().st_size == 0:
        return
    with path.open("rb+") as fh:
        data = fh.read()
        if data.endswith(b"\n"):
            return
        fh.truncate(data.rfind(b"\n") + 1)
