"""The three thought forms. Each form is one module that owns its teacher prompt, its student
instruction, its answer extraction and its verifier; every stage calls the same object.

The shared contract lives here: ``Verdict`` and ``Extraction`` (typed results, never silent
defaults), the ``Form`` protocol, ``FORMS`` (name -> form) and ``parse_mix``.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Protocol, Sequence

STATUSES = ("correct", "wrong_answer", "no_answer", "parse_error", "exec_error", "timeout", "unsafe")
"""Every verdict has one of these. `correct` and `wrong_answer` mean an answer was extracted."""
FAILURES = STATUSES[2:]


@dataclass(frozen=True)
class Extraction:
    """The answer a completion states, or why it states none."""

    answer: float | None
    status: str = "ok"
    """`ok`, or one of FAILURES."""
    reason: str = ""


@dataclass(frozen=True)
class Verdict:
    status: str
    answer: float | None
    reason: str
    form: str
    version: int

    @property
    def correct(self) -> bool:
        return self.status == "correct"

    def to_dict(self) -> dict:
        return asdict(self)


class Form(Protocol):
    name: str
    version: int
    instruction: str
    """The student instruction, character for character as in METHOD.md."""

    def teacher_messages(self, question: str) -> list[dict]:
        """Chat messages (system + few-shot + question) asking the teacher for this form."""

    def student_input(self, question: str) -> str:
        """'Question: ' + question + '\\n' + instruction + '\\n'."""

    def student_target(self, completion: str) -> str:
        """The training target made from a verified teacher completion."""

    def extract_many(self, completions: Sequence[str], *, timeout: float = 5.0,
                     strict: bool = False) -> list[Extraction]:
        """Answers of many completions (programs and systems run outside our process)."""

    def verify_many(self, completions: Sequence[str], golds: Sequence[float], *, timeout: float = 5.0,
                    strict: bool = False) -> list[Verdict]:
        """Verdicts against gold answers."""


def student_input(question: str, instruction: str) -> str:
    """The student's input, exactly as the authors' released ETD model card builds it (METHOD.md)."""
    return "Question: " + question + "\n" + instruction + "\n"


FORM_NAMES = ("cot", "pot", "eot")
MIXES = {"cot": ("cot",), "pot": ("pot",), "eot": ("eot",), "etd": FORM_NAMES}


def get_form(name: str) -> Form:
    if name not in FORM_NAMES:
        raise ValueError(f"unknown thought form {name!r}; valid forms: {', '.join(FORM_NAMES)}")
    from importlib import import_module

    return import_module(f"distill.thoughts.{name}").FORM


def parse_mix(mix: str) -> tuple[str, ...]:
    """'etd' -> all three; 'cot+eot' -> ('cot', 'eot'); a bad name lists the valid ones."""
    if mix in MIXES:
        return MIXES[mix]
    parts = tuple(p.strip() for p in mix.split("+") if p.strip())
    bad = [p for p in parts if p not in FORM_NAMES]
    if not parts or bad:
        from distill.config import ConfigError  # a mix is a config value: say so the CLI way

        raise ConfigError(f"unknown mix {mix!r}; valid: {', '.join(MIXES)} or forms joined by '+' (e.g. cot+eot)")
    return tuple(f for f in FORM_NAMES if f in parts)


def verdict_from(extraction: Extraction, gold: float, form: str, version: int) -> Verdict:
    """The one place an extraction becomes a verdict, so every form scores alike."""
    from distill.answers import answers_match

    if extraction.status != "ok":
        return Verdict(extraction.status, None, extraction.reason, form, version)
    if answers_match(extraction.answer, gold):
        return Verdict("correct", extraction.answer, "", form, version)
    return Verdict("wrong_answer", extraction.answer, f"answer {extraction.answer:g} != gold {gold:g}", form, version)
