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

Skipping unchanged work: ``settings_digest`` names the settings and inputs an output depends on,
``fingerprints`` and ``mismatch`` what a stage wrote; every stage records and compares these, no other way.
The module is longer than most because it is the one place for these mechanics (formats, logs, folder
locks, digests): splitting it would spread one policy over several files.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Iterable, Iterator, Mapping


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


def read_record(path: str | Path) -> dict:
    """A stage's own record of earlier work (a summary, a state file): {} when it is missing, broken or
    not an object, which means the work is done again, not an error."""
    try:
        record = read_json(path, default={})
    except DataError:
        return {}
    return record if isinstance(record, dict) else {}


def file_digest(path: str | Path) -> str:
    """The first 16 hex digits of the sha256 of a file's bytes: names a data file's exact content."""
    h = hashlib.sha256()
    with Path(path).open("rb") as fh:  # in chunks: a mix or a weights file need not fit in memory
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


def settings_digest(*parts: Any, ensure_ascii: bool = True) -> str:
    """The first 16 hex digits of the sha256 of ``parts``, each as canonical JSON (sorted keys; a value
    JSON cannot hold as its str()), one after the other: names the settings and inputs a stage's output
    depends on, so a rerun that finds the same digest recorded skips. Parts let a long input (verify's
    rows) be hashed row by row, never as one string; ``ensure_ascii=False`` hashes text as UTF-8.
    The one way every stage fingerprints "the inputs are unchanged" (with ``file_digest`` for a file's
    bytes and ``fingerprints`` for the files it wrote); a digest changes only when a part does."""
    h = hashlib.sha256()
    for part in parts:
        h.update(json.dumps(part, sort_keys=True, default=str, ensure_ascii=ensure_ascii).encode())
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


# --- one writer per folder: OS file locks that die with their holder ------------------------------

LOCK_NAME = ".distill.lock"


class FolderBusy(DataError):
    """Another live process writes the folder; the message names it (pid, command, since when)."""


_held: dict[tuple[int, str], list] = {}  # (pid, lock file) -> [fd, depth, mode]: a process re-enters its own
# lock; keyed by pid because a forked child inherits this dict but not the lock


@contextmanager
def folder_lock(folder: str | Path, command: str, *, shared: bool = False, name: str = LOCK_NAME,
                wait: float = 0.0) -> Iterator[Path]:
    """Hold ``folder/name`` while the block runs: exclusive (one writer of the folder) or ``shared``
    (writers of disjoint shard files, which exclude an exclusive writer but not each other). A holder
    that is busy elsewhere makes this a FolderBusy naming it, at once or after ``wait`` seconds.

    A POSIX record lock (``fcntl.lockf``), not ``flock``: the kernel drops it when its process ends,
    however it ends, so ``kill -9`` leaves no stale lock, and a forked child (the sandbox's workers,
    a DataLoader) does not inherit it and cannot outlive its holder holding it. The same process
    entering again (reproduce calling a stage) nests instead of deadlocking."""
    import fcntl

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = (folder / name).resolve()
    key = (os.getpid(), str(path))
    if key in _held:
        entry = _held[key]
        if entry[2] == "shared" and not shared:
            raise FolderBusy(f"{folder}: this process holds a shared lock and asked for an exclusive one")
        entry[1] += 1
        try:
            yield path
        finally:
            entry[1] -= 1
        return
    # The lock file is never replaced or deleted (a rename would split holders over two files), and
    # the holder's line is written into it through the locked descriptor: closing any other
    # descriptor of a locked file would drop a POSIX lock.
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666 & ~_UMASK)
    deadline, waiting = time.monotonic() + wait, False
    while True:
        try:
            fcntl.lockf(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
            break
        except OSError:
            if time.monotonic() < deadline:
                if not waiting:
                    import sys

                    print(f"waiting for {_holder(path) or 'another process'} to release {path}", file=sys.stderr,
                          flush=True)
                    waiting = True
                time.sleep(0.2)
                continue
            holder = _holder(path) or "another process"
            os.close(fd)
            raise FolderBusy(f"{folder} is being written by {holder}; wait for it to finish (or stop it), "
                             "then run the command again") from None
    try:
        if not shared:
            line = json.dumps({"pid": os.getpid(), "command": command,
                               "since": time.strftime("%Y-%m-%d %H:%M:%S %Z")}) + "\n"
            os.ftruncate(fd, 0)
            os.pwrite(fd, line.encode(), 0)
        _held[key] = [fd, 1, "shared" if shared else "exclusive"]
        yield path
    finally:
        _held.pop(key, None)
        os.close(fd)  # releases the lock


def _holder(path: Path) -> str:
    """'pid 123 (`distill train --preset smoke`, since 2026-12-04 17:00:00 UTC)' from a lock file,
    or the holders of the shard locks beside it."""
    def describe(p: Path) -> str:
        try:
            info = json.loads(p.read_text(encoding="utf-8") or "{}")
        except (OSError, json.JSONDecodeError):
            return ""
        return f"pid {info['pid']} (`{info['command']}`, since {info['since']})" if info.get("pid") else ""

    # an exclusive holder writes its line into the lock file; shard writers (shared) into their own
    found = [describe(path)] if not _shared_only(path) else []
    found += [describe(p) for p in sorted(path.parent.glob(f"{path.name}.*")) if _locked(p)]
    return ", ".join(d for d in found if d)


def _lockable(path: Path, *, shared: bool) -> bool | None:
    """Whether this process could take a lock of that kind on ``path`` now (taken and released at once);
    None when the file cannot be opened."""
    import fcntl

    try:
        fd = os.open(path, os.O_RDONLY if shared else os.O_RDWR)
    except OSError:
        return None
    try:
        fcntl.lockf(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


def _locked(path: Path) -> bool:
    """Whether some process holds a lock on ``path``."""
    return _lockable(path, shared=False) is False


def _shared_only(path: Path) -> bool:
    """Whether the lock is held by shared holders only (then its file names an earlier exclusive holder)."""
    return bool(_lockable(path, shared=True))


@contextmanager
def run_folder_lock(run_dir: str | Path, command: str, shard: Any = None) -> Iterator[Path]:
    """The lock every stage that writes a run folder holds: exclusive, or for one shard of a sharded
    stage (``generate --shard``, ``evaluate --shard``) shared on the folder plus exclusive on the
    shard's own lock file, so the N shards run side by side and nothing else writes meanwhile."""
    if shard is None:
        with folder_lock(run_dir, command) as path:
            yield path
        return
    with folder_lock(run_dir, command, shared=True) as path, \
            folder_lock(run_dir, command, name=f"{LOCK_NAME}.{shard.tag}"):
        yield path


def command_line() -> str:
    """The command this process runs, for a lock's holder line: ``distill train --preset smoke``."""
    import sys

    argv = list(sys.argv)
    if argv and argv[0].endswith(("cli.py", "__main__.py", "/distill")):
        argv[0] = "distill"
    return " ".join(argv)[:300]


# --- fingerprints: what a stage recorded about the files it read and wrote -----------------------

def fingerprint(path: str | Path) -> dict | None:
    """{"digest", "bytes"} of a file, None when it is missing."""
    path = Path(path)
    if not path.is_file():
        return None
    return {"digest": file_digest(path), "bytes": path.stat().st_size}


def folder_files(folder: str | Path, prefix: str = "") -> dict[str, Path]:
    """{prefix + relative path: path} of every file under ``folder`` (for a fingerprint of a model folder)."""
    folder = Path(folder)
    if not folder.is_dir():
        return {}
    return {prefix + p.relative_to(folder).as_posix(): p for p in sorted(folder.rglob("*")) if p.is_file()}


def fingerprints(files: Mapping[str, str | Path]) -> dict[str, dict | None]:
    """{name: fingerprint} of named files: what a stage records about its inputs and its outputs."""
    return {name: fingerprint(path) for name, path in sorted(files.items())}


def mismatch(recorded: Mapping[str, Any] | None, files: Mapping[str, str | Path]) -> str | None:
    """Why ``files`` no longer are what was recorded (a missing, added, emptied or changed file), or None
    when every file matches its recorded digest. ``recorded`` is what ``fingerprints`` returned."""
    if recorded is None:
        return "nothing was recorded about its files"
    for name in sorted(set(recorded) - set(files)):
        if recorded[name] is not None:
            return f"{name} is missing"
    for name, path in sorted(files.items()):
        now, then = fingerprint(path), recorded.get(name, "absent")
        if then == "absent":
            return f"{name} was not recorded"
        if now == then:
            continue
        if now is None:
            return f"{name} is missing"
        if then is None:
            return f"{name} appeared"
        if now["bytes"] != then["bytes"]:
            return f"{name} changed ({then['bytes']:,} bytes recorded, {now['bytes']:,} now)"
        return f"{name} changed (digest {then['digest']} recorded, {now['digest']} now)"
    return None


def check_input(path: str | Path, recorded: Mapping[str, Any] | None, fix: str) -> None:
    """Refuse an input that is missing, or empty or smaller than its producer recorded (``recorded``: the
    producer's fingerprint of it; None when the producer recorded nothing, e.g. a folder written before
    fingerprints were); ``fix`` is the producer's command, which rebuilds it."""
    path = Path(path)
    now = fingerprint(path)
    if now is None:
        raise DataError(f"{path}: file not found. Run `{fix}`.")
    if recorded and now["bytes"] < recorded.get("bytes", 0):
        what = "empty" if now["bytes"] == 0 else f"{now['bytes']:,} bytes"
        raise DataError(f"{path} is {what}, but its producer wrote {recorded['bytes']:,} bytes (damaged or cut); "
                        f"rebuild it with `{fix}`")
