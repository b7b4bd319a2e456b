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

from distill.config import ConfigError

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


# --- evaluate --shard: the merge ----------------------------------------------------------------

def merge_evaluation(cfg, run_dir: Path, mix: str, student: str | None = None) -> dict:
    """Join the shards of ``<run_dir>/eval/<mix>/shard-<i>-of-<n>/`` into the unsharded logs
    ``<run_dir>/eval/<mix>/<test_set>/<form>.jsonl``, after checking that all n shards scored every
    problem of ``cfg.data.test_sets`` (first ``evaluate.limit``) with this very student (same weight
    and decoding digest). The evaluate stage run after it finds every problem answered, so it logs
    the metrics one process would have logged, computed by the same code, without generating again.
    With ``evaluate.samples`` > 1 the shards' ``<form>.samples.jsonl`` are joined the same way (every
    (problem, sample) pair needed; a sample is the same draw in any shard, distill.decoding.Sampling).

    Returns ``{"shards": n, "records": records imported}``; a missing shard or problem is a DataError
    naming the command that fills it.
    """
    from contextlib import ExitStack

    from distill.files import DataError, read_log, write_jsonl
    from distill.problems import load_problems
    from distill.stages.evaluate import choose_forms, evaluated_name, student_digest
    from distill.student import resolve_student

    with ExitStack() as stack:
        found_student = resolve_student(student, Path(run_dir), mix, cfg.tracking_uri, stack)
        digest = student_digest(found_student.model_dir, cfg)
    name = evaluated_name(found_student.card, found_student, mix)[2]  # as the evaluate stage names the folder
    out = Path(run_dir) / "eval" / name
    found = sorted((int(m.group(2)), int(m.group(1)), d) for d in (out.glob("shard-*-of-*") if out.exists() else [])
                   if (m := re.fullmatch(r"shard-(\d+)-of-(\d+)", d.name)))
    if not found:
        raise DataError(f"{out}: no shard folders (shard-I-of-N/): run `distill evaluate --shard I/N` for each I first")
    counts = sorted({n for n, _, _ in found})
    if len(counts) > 1:
        raise DataError(f"{out}: shards of {counts[0]} and of {counts[1]} are mixed: remove the folders of the count "
                        "you do not want to merge")
    count = counts[0]
    missing = sorted(set(range(count)) - {i for _, i, _ in found})
    if missing:
        raise DataError(f"{out}: shard {missing[0]}/{count} has not run: `distill evaluate --shard {missing[0]}/{count}`")

    forms = choose_forms(cfg.evaluate.forms, found_student.card, found_student)
    imported = 0
    for test_set in cfg.data.test_sets:
        problems = load_problems(test_set, "test", cfg.data_path, hub=cfg.data.hub)
        if cfg.evaluate.limit:
            problems = problems[: cfg.evaluate.limit]
        for form in forms:
            records: dict[str, dict] = {}
            target = out / test_set / f"{form}.jsonl"
            for record in read_log(target):
                if record.get("student") == digest:
                    records[record["problem_id"]] = record
            for _, index, folder in found:
                for record in read_log(folder / test_set / f"{form}.jsonl"):
                    if record.get("student") == digest and record.get("problem_id") not in records:
                        records[record["problem_id"]] = record
                        imported += 1
            absent = [p.id for p in problems if p.id not in records]
            if absent:
                shard = shard_of(absent[0], count)
                raise DataError(f"{out}: {len(absent)} problems of {test_set}/{form} have no answer by this student "
                                f"(first: {absent[0]}, shard {shard}/{count}): run `distill evaluate --shard "
                                f"{shard}/{count}` with the same student and settings, then merge again")
            ids = {p.id for p in problems}
            write_jsonl(target, [records[p.id] for p in problems] + [r for pid, r in records.items() if pid not in ids])
            if cfg.evaluate.samples > 1:
                imported += _merge_samples(cfg, out / test_set / f"{form}.samples.jsonl", found, test_set, form,
                                           problems, digest, count)
    return {"shards": count, "records": imported}


def _merge_samples(cfg, target: Path, found, test_set: str, form: str, problems, digest: str, count: int) -> int:
    """The sampled records (evaluate.samples > 1) of the shards joined into ``target`` as merge_evaluation
    joins the greedy ones, keyed by (problem id, sample index); returns how many were imported."""
    from distill.files import DataError, read_log, write_jsonl
    from distill.stages.evaluate import sampling_digest

    sampled = sampling_digest(digest, cfg)
    records: dict[tuple, dict] = {}
    imported = 0
    for path in [target, *(folder / test_set / target.name for _, _, folder in found)]:
        for record in read_log(path):
            key = (record.get("problem_id"), record.get("sample"))
            if record.get("student") == sampled and key not in records:
                records[key] = record
                imported += path != target
    wanted = [(p.id, j) for p in problems for j in range(cfg.evaluate.samples)]
    absent = [key for key in wanted if key not in records]
    if absent:
        shard = shard_of(absent[0][0], count)
        raise DataError(f"{target.parent.parent}: {len(absent)} samples of {test_set}/{form} are missing (first: "
                        f"{absent[0][0]} sample {absent[0][1]}, shard {shard}/{count}): run `distill evaluate --shard "
                        f"{shard}/{count}` with the same student and evaluate.samples, then merge again")
    keys = set(wanted)
    write_jsonl(target, [records[k] for k in wanted] + [r for k, r in records.items() if k not in keys])
    return imported
