"""Shards: a deterministic share of a stage's work, so several processes or hosts split it.

A shard is written ``i/n``, 0-based: ``0/2`` and ``1/2`` together cover everything once. An item
belongs to shard ``i`` when ``sha256(key) mod n == i``; the key is a stable name of the item (the
``(problem_id, form)`` pair in ``generate``, the problem id in ``evaluate``), so the split depends
neither on the order of the items nor on how many there are, and a shard rerun after a crash takes
exactly the same items again (it resumes alone).

Files: shard ``i/n`` of a stage writes ``<name>.shard-<i>-of-<n><ext>`` beside the unsharded
``<name><ext>`` (``samples.shard-0-of-2.jsonl``); ``shard_files`` lists the unsharded file and
every shard file of a name, which readers (``verify``, the evaluate merge) take as one union.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence, TypeVar

from distill.errors import ConfigError

T = TypeVar("T")
FORMAT = "i/n with 0 <= i < n, e.g. --shard 0/2 and --shard 1/2"
_SPEC = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")
_FILE = re.compile(r"\.shard-(\d+)-of-(\d+)$")


@dataclass(frozen=True)
class Shard:
    index: int
    count: int

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    def owns(self, key: str | Sequence[str]) -> bool:
        return shard_of(key, self.count) == self.index

    def select(self, items: Iterable[T], key) -> list[T]:
        """The items whose ``key(item)`` belongs to this shard, in their order."""
        return [item for item in items if self.owns(key(item))]

    @property
    def tag(self) -> str:
        return f"shard-{self.index}-of-{self.count}"

    def path(self, path: Path) -> Path:
        """``dir/name.ext`` -> ``dir/name.shard-i-of-n.ext``: the file this shard writes."""
        path = Path(path)
        return path.with_name(f"{path.stem}.{self.tag}{path.suffix}")


def parse_shard(spec: str | None) -> Shard | None:
    """``"1/4"`` -> Shard(1, 4); None or "" -> None (unsharded). Anything else is a ConfigError."""
    if spec is None or str(spec).strip() == "":
        return None
    match = _SPEC.match(str(spec))
    if not match:
        raise ConfigError(f"--shard {spec!r} is not a shard: write {FORMAT}")
    index, count = int(match.group(1)), int(match.group(2))
    if count < 1 or index >= count:
        raise ConfigError(f"--shard {spec!r} is out of range: write {FORMAT}")
    return Shard(index, count)


def shard_of(key: str | Sequence[str], count: int) -> int:
    """Which of ``count`` shards a key belongs to: sha256 of the key's parts joined by NUL, mod count."""
    text = key if isinstance(key, str) else "\x00".join(str(k) for k in key)
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "big") % count


def shard_files(path: Path) -> list[Path]:
    """The unsharded ``path`` (if present) and every shard file of it, in a stable order."""
    path = Path(path)
    found = [path] if path.exists() else []
    pattern = f"{path.stem}.shard-*-of-*{path.suffix}"
    shards = []
    for candidate in path.parent.glob(pattern) if path.parent.exists() else []:
        match = _FILE.search(candidate.name[: len(candidate.name) - len(path.suffix)] if path.suffix else candidate.name)
        if match:
            shards.append((int(match.group(2)), int(match.group(1)), candidate))
    return found + [p for *_, p in sorted(shards)]


def pick(values: str | Sequence[str] | None, shard: Shard | None) -> str | None:
    """One of several endpoints for a shard: ``values[i % len(values)]`` (the first when unsharded)."""
    if isinstance(values, str) and "," in values:  # --base-url URL,URL
        values = [v.strip() for v in values.split(",") if v.strip()]
    if values is None or isinstance(values, str):
        return values
    values = list(values)
    if not values:
        return None
    return values[(shard.index if shard else 0) % len(values)]

