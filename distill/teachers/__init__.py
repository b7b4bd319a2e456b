"""Teachers: whatever writes reasoning for a (problem, form) pair. One protocol, three plug-ins.

- ``gold``: derives all three forms from GSM8K's annotated solutions; offline, free (default).
- ``replay``: completions read from a JSONL file; a request that is not there is an error.
- ``openai``: any OpenAI-compatible chat-completions endpoint, cached in the completion store.

A teacher receives ``Job``s and yields ``(job, Answer)`` pairs as answers arrive, in any order.
Every answer is either a list of completions or a failure with a reason; transient errors that
outlive the retries are not answers (the job is left for a rerun), see ``teachers.api``.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator, Protocol, Sequence

if TYPE_CHECKING:
    from distill.config import Config


class TeacherError(RuntimeError):
    """A teacher that cannot go on (bad key, bad URL, missing replay entries); the message says the fix."""


class BudgetReached(RuntimeError):
    """The next calls would spend more than ``teacher.budget``; everything paid for is kept."""


@dataclass(frozen=True)
class Job:
    """One request to a teacher: a problem in one thought form."""

    problem_id: str
    form: str
    version: int
    question: str
    gold: float
    messages: tuple
    """Chat messages as ``form.teacher_messages(question)`` returns them (a tuple of dicts)."""
    rationale: str | None = None

    @property
    def key(self) -> tuple[str, str]:
        return (self.problem_id, self.form)


@dataclass
class Answer:
    """What a teacher returned for one job: ``completions`` (one per sample, None where that sample
    failed) or a failure ``reason`` for the whole request."""

    completions: list[str | None]
    reasons: list[str]
    request_hash: str
    cached: bool = False
    usage: dict = field(default_factory=dict)

    @classmethod
    def failed(cls, reason: str, request_hash: str, cached: bool = False) -> "Answer":
        return cls([None], [reason], request_hash, cached)

    @classmethod
    def ok(cls, texts: Sequence[str], request_hash: str, cached: bool = False) -> "Answer":
        return cls(list(texts), [""] * len(texts), request_hash, cached)


class Teacher(Protocol):
    name: str
    model: str

    def answer(self, jobs: Sequence[Job]) -> Iterator[tuple[Job, Answer]]:
        """Answers to ``jobs`` as they arrive (any order). Raises TeacherError or BudgetReached."""


def canonical_request(model: str, messages: Sequence[dict], temperature: float, n: int, max_tokens: int) -> dict:
    """The request body whose hash keys the completion store (only what changes the answer)."""
    return {"model": model, "messages": [dict(m) for m in messages], "temperature": float(temperature),
            "n": int(n), "max_tokens": int(max_tokens)}


def request_hash(request: dict) -> str:
    """sha256 of the canonical JSON of a request: sorted keys, no spaces, unicode kept."""
    text = json.dumps(request, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _gold(cfg: "Config", run_dir: Path):
    from distill.teachers.gold import GoldTeacher

    return GoldTeacher()


def _replay(cfg: "Config", run_dir: Path):
    from distill.teachers.replay import ReplayTeacher

    return ReplayTeacher.from_config(cfg)


def _openai(cfg: "Config", run_dir: Path):
    from distill.teachers.api import OpenAITeacher

    return OpenAITeacher.from_config(cfg, run_dir)


TEACHERS: dict[str, Callable[["Config", Path], Teacher]] = {"gold": _gold, "replay": _replay, "openai": _openai}


def get_teacher(cfg: "Config", run_dir: Path) -> Teacher:
    """The teacher named by ``cfg.teacher.name``; a bad name lists the valid ones."""
    if cfg.teacher.name not in TEACHERS:
        from distill.errors import ConfigError

        raise ConfigError(f"unknown teacher {cfg.teacher.name!r}; valid teachers: {', '.join(TEACHERS)}")
    return TEACHERS[cfg.teacher.name](cfg, Path(run_dir))
