"""The three thought forms. Each form is one module that owns its teacher prompt, its student
instruction, its answer extraction and its verifier; every stage calls the same object.

The shared contract lives here: ``Verdict`` and ``Extraction`` (typed results, never silent
defaults), the ``Form`` base class, ``FORM_NAMES`` and ``get_form`` (name -> form), ``MIXES`` and
``parse_mix``. Reads and writes no files; programs and equation systems run only in distill/sandbox/.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Sequence

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


class Form:
    """What every thought form shares; a form module subclasses it once (``FORM = CoT()``).

    A form sets ``name``, ``version``, ``instruction`` (the student instruction, character for
    character as in METHOD.md) and ``system`` (the teacher's system prompt), and defines
    ``student_target`` and ``extract_many``; asking, extracting one answer and scoring against gold
    are the same for every form, so they live here and every form scores alike.
    """

    name: str
    version: int
    instruction: str
    system: str
    rules: tuple[str, ...] = ()
    """The named repair rules and fallbacks of flexible mode, which ``strict=True`` switches off; empty
    when the form reads a completion alike in both modes."""

    def teacher_messages(self, question: str) -> list[dict]:
        """Chat messages (system + few-shot + question) asking the teacher for this form."""
        from distill.thoughts.exemplars import messages

        return messages(self.system, self.name, question)

    def student_input(self, question: str) -> str:
        """'Question: ' + question + '\\n' + instruction + '\\n'."""
        return student_input(question, self.instruction)

    def student_target(self, completion: str) -> str:
        """The training target made from a verified teacher completion."""
        raise NotImplementedError

    def extract_many(self, completions: Sequence[str | None], *, timeout: float = 5.0,
                     strict: bool = False) -> list[Extraction]:
        """Answers of many completions (programs and systems run outside our process)."""
        raise NotImplementedError

    def text_outside(self, target: str) -> str:
        """The text of a training target that the form's tool does not compute (the words a student
        writes beside its program or equations), one piece per line. A number in it that the question
        does not state was computed in text (distill.thoughts.numbers, the metric
        ``verify/<form>/computed_numbers_in_text``). Every form's text is all of it unless it says
        otherwise."""
        return target

    def extract(self, completion: str | None, *, timeout: float = 5.0, strict: bool = False) -> Extraction:
        return self.extract_many([completion], timeout=timeout, strict=strict)[0]

    def verify(self, completion: str, gold: float, *, timeout: float = 5.0, strict: bool = False) -> Verdict:
        return self.verify_many([completion], [gold], timeout=timeout, strict=strict)[0]

    def verify_many(self, completions: Sequence[str], golds: Sequence[float], *, timeout: float = 5.0,
                    strict: bool = False) -> list[Verdict]:
        """Verdicts against gold answers."""
        if len(completions) != len(golds):
            raise ValueError(f"{len(completions)} completions but {len(golds)} gold answers")
        return [verdict_from(e, g, self.name, self.version)
                for e, g in zip(self.extract_many(completions, timeout=timeout, strict=strict), golds)]

    def strict_may_differ(self, completion: str | None, flexible: Verdict) -> bool:
        """Whether the strict verdict of ``completion`` can differ from its flexible one, ``flexible``.
        A form that can tell where its rules applied says so; by default wherever it has rules."""
        return bool(self.rules)

    def verify_strict_many(self, completions: Sequence[str], golds: Sequence[float], flexible: Sequence[Verdict],
                           *, timeout: float = 5.0) -> list[Verdict]:
        """Strict verdicts of completions whose flexible verdicts are ``flexible``: a flexible verdict that
        no rule can have changed (``strict_may_differ``) is kept, the others are verified again with
        ``strict=True`` (so programs and systems run twice only where a rule may have applied)."""
        if not len(completions) == len(golds) == len(flexible):
            raise ValueError(f"{len(completions)} completions, {len(golds)} gold answers, {len(flexible)} verdicts")
        out = list(flexible)
        todo = [i for i, (c, v) in enumerate(zip(completions, flexible)) if self.strict_may_differ(c, v)]
        if todo:
            again = self.verify_many([completions[i] for i in todo], [golds[i] for i in todo], timeout=timeout,
                                     strict=True)
            for i, verdict in zip(todo, again):
                out[i] = verdict
        return out


def student_input(question: str, instruction: str) -> str:
    """The student's input, exactly as the authors' released ETD model card builds it (METHOD.md)."""
    return "Question: " + question + "\n" + instruction + "\n"


FORM_NAMES = ("cot", "pot", "eot")
MIXES = {"cot": ("cot",), "pot": ("pot",), "eot": ("eot",), "etd": FORM_NAMES}
"""The four students of the paper, mix -> its forms: CoTD, PoTD, EoTD and ETD (all three forms), in
the order every table and step list shows them."""


VARIANTS = {
    "": "fine-tuned on the mix's verified thoughts (the train stage)",
    "base": "the configured student as it comes, before any training (`distill evaluate --untrained`)",
    "grpo": "the mix's student after reinforcement learning with the forms' verifiers as reward (the rl stage)",
}
"""A student's name is its mix, or the mix and a variant joined by '-' (``etd-grpo``, ``eot-base``):
students/<name>/ and eval/<name>/ hold it, MLflow's ``distill.mix`` tag says the mix and
``distill.variant`` the variant, so every variant of a mix competes for the same champion."""


def parse_student(name: str) -> tuple[str, str]:
    """'etd-grpo' -> ('etd', 'grpo'); 'etd' -> ('etd', ''); the mix part is checked as parse_mix does."""
    mix, sep, variant = name.rpartition("-")
    if not sep or variant not in VARIANTS or not variant:
        mix, variant = name, ""
    try:
        parse_mix(mix)
    except ValueError as exc:
        variants = ", ".join(f"-{v}" for v in VARIANTS if v)
        raise type(exc)(f"{exc}; a student of a mix may end in {variants} (etd-grpo)") from None
    return mix, variant


def student_name(mix: str, variant: str = "") -> str:
    """The inverse of parse_student: ('etd', 'grpo') -> 'etd-grpo'."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown student variant {variant!r}; valid: {', '.join(v for v in VARIANTS if v)}")
    return f"{mix}-{variant}" if variant else mix


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
