"""The ``replay`` teacher: completions read from a JSONL file, never an API call.

Data contract: ``teacher.replay_file`` holds one JSON object per line, keyed either by
``request_hash`` (or ``hash``) of the canonical request, or by ``problem_id`` + ``form``; the answer
is ``completion`` (a string), ``completions`` (a list, one per sample) or ``raw`` (a raw
chat-completions body, as in the completion store). So a previous run's ``samples.jsonl`` and the
store's ``completions.jsonl`` both replay. Rows of one key with several ``sample_index`` values
become one answer with several samples. A job that is in neither index is an error that says how
many are missing and shows one.
"""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Iterator, Sequence

from distill.files import DataError, read_jsonl
from distill.teachers import Answer, Job, canonical_request, request_hash

HINT = "Each line needs request_hash (or problem_id and form) and completion, completions or raw."


class ReplayTeacher:
    name = "replay"

    def __init__(self, path: str | Path, model: str = "replay", temperature: float = 0.0, n: int = 1,
                 max_tokens: int = 512):
        self.path = Path(path)
        self.model, self.temperature, self.n, self.max_tokens = model, temperature, n, max_tokens
        self.by_hash: dict[str, Answer] = {}
        self.by_item: dict[tuple[str, str], Answer] = {}
        self._load()

    @classmethod
    def from_config(cls, cfg) -> "ReplayTeacher":
        t = cfg.teacher
        if not t.replay_file:
            raise DataError("the replay teacher needs a file: --set teacher.replay_file=PATH "
                            "(a samples.jsonl or completions.jsonl from an earlier run)")
        return cls(t.replay_file, t.model, t.temperature, t.n, t.max_tokens)

    def _load(self) -> None:
        from distill.teachers.api import parse_raw

        groups: dict[tuple, list[tuple[int, str | None, str]]] = defaultdict(list)
        for lineno, row in enumerate(read_jsonl(self.path, hint=HINT), 1):
            h = row.get("request_hash") or row.get("hash")
            item = (row["problem_id"], row["form"]) if "problem_id" in row and "form" in row else None
            if h is None and item is None:
                raise DataError(f"{self.path}:{lineno}: no request_hash and no problem_id + form. {HINT}")
            if "raw" in row:
                answer = parse_raw(row["raw"], h or "", cached=True)
            elif "completions" in row:
                answer = Answer.ok(row["completions"], h or "", cached=True)
            elif "completion" in row:
                text = row["completion"]
                reason = row.get("reason") or ("" if text else "empty_content")
                groups[(h, item)].append((int(row.get("sample_index", 0)), text, reason))
                continue
            else:
                raise DataError(f"{self.path}:{lineno}: no completion. {HINT}")
            self._index(h, item, answer)
        for (h, item), samples in groups.items():
            samples.sort(key=lambda s: s[0])
            self._index(h, item, Answer([s[1] for s in samples], [s[2] for s in samples], h or "", cached=True))

    def _index(self, h: str | None, item: tuple | None, answer: Answer) -> None:
        if h:
            self.by_hash[h] = answer
        if item:
            self.by_item[item] = answer

    def answer(self, jobs: Sequence[Job]) -> Iterator[tuple[Job, Answer]]:
        found, missing = [], []
        for job in jobs:
            h = request_hash(canonical_request(self.model, job.messages, self.temperature, self.n, self.max_tokens))
            answer = self.by_hash.get(h) or self.by_item.get(job.key)
            (found if answer else missing).append((job, answer, h))
        if missing:
            job, _, h = missing[0]
            raise DataError(f"{self.path}: {len(missing)} of {len(jobs)} requests are not in the replay file, "
                            f"e.g. problem {job.problem_id} form {job.form} (request_hash {h}). "
                            "Generate them with --teacher openai, or replay a file that has them.")
        for job, answer, h in found:
            yield job, Answer(answer.completions, answer.reasons, h, True, answer.usage)
