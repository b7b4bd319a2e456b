"""The thought forms. Each form is one module that owns everything about it: its teacher prompt and
exemplar solutions, its student instruction, its answer extraction and verifier, its derivation from
GSM8K's annotated solutions (``from_gold``), its dataset name, its rank in the vote and fallback and
whether it runs in the sandbox; every stage calls the same object.

The shared contract lives here: ``Verdict`` and ``Extraction`` (typed results, never silent
defaults), the ``Form`` base class, and ``FORMS``, the one ordered registry of forms, read through
``form_names``, ``get_form`` (name -> form), ``named_mixes``, ``parse_mix`` and ``combine_order``.
Adding a form is one module and one line in ``FORMS`` (README "Adding a thought form"). Reads and
writes no files; programs and equation systems run only in distill/sandbox/.
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

    A form sets ``name``, ``version``, ``title``, ``rank``, ``instruction`` (the student instruction,
    character for character as in METHOD.md), ``system`` (the teacher's system prompt) and ``exemplars``
    (its solutions of the shared exemplar questions), and defines ``student_target`` and
    ``extract_many`` (and ``from_gold`` for the gold teacher); asking, extracting one answer and scoring
    against gold are the same for every form, so they live here and every form scores alike.
    """

    name: str
    version: int
    title: str
    """How tables and sentences name the form: the paper's abbreviation (``EoT``)."""
    rank: int
    """Its place in the combinations of several forms (distill.scoring): the fallback takes the first
    form in rank order that answered, the vote gives a tie to the earliest; lower goes first, and forms
    of equal rank keep the registry's order (``combine_order``)."""
    instruction: str
    system: str
    exemplars: tuple[str, ...]
    """Its solution of every exemplar question of distill/thoughts/exemplars.py, in their order: the
    teacher's few-shot examples (each checked by this form's verifier in the tests)."""
    sandboxed: bool = False
    """Whether its verifier runs the completion (a program, an equation system) in distill/sandbox/."""
    gold_derivation: str = ""
    """What the gold teacher writes for this form, in a sentence (the report shows it above a verified
    example); empty when ``from_gold`` is not defined."""
    rules: tuple[str, ...] = ()
    """The named repair rules and fallbacks of flexible mode, which ``strict=True`` switches off; empty
    when the form reads a completion alike in both modes."""

    @property
    def dataset(self) -> str:
        """The name of its verified set (an MLflow dataset) and of its one-form student, as the paper
        names them: the title and D for distillation (``EoTD``)."""
        return f"{self.title}D"

    def teacher_messages(self, question: str) -> list[dict]:
        """Chat messages (system + few-shot + question) asking the teacher for this form."""
        from distill.thoughts.exemplars import messages

        return messages(self.system, self.exemplars, question)

    def from_gold(self, solution) -> str:
        """The completion the gold teacher writes for this form from a GSM8K solution, read by
        distill.teachers.gold (``Solution``: its text, its steps as named lines, the target, the
        question's sentences); raises that module's StepError when the solution cannot give one."""
        raise NotImplementedError(f"the gold teacher cannot write {self.name}: its form defines no from_gold")

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


FORMS: dict[str, str] = {
    "cot": "distill.thoughts.cot",
    "pot": "distill.thoughts.pot",
    "eot": "distill.thoughts.eot",
}
"""The registry of thought forms: name -> the module that defines its ``FORM``, in the order every
table, step list, CLI choice and default shows them. Adding a form is one module and one line here.
Everything else reads it through the functions below, when called, so a form registered while the
program runs (tests/test_adding_a_form.py) reaches every stage."""


def form_names() -> tuple[str, ...]:
    """The registered forms, in the registry's order."""
    return tuple(FORMS)


def named_mixes() -> dict[str, tuple[str, ...]]:
    """The named mixes, mix -> its forms: one per form (the paper's CoTD, PoTD, EoTD) and ``etd``, every
    form (the paper's ETD), in the order every table and step list shows them."""
    return {**{name: (name,) for name in FORMS}, "etd": form_names()}


def combine_order() -> tuple[str, ...]:
    """The forms by their ``rank`` (the registry's order among equals): the order of the fallback and the
    vote's tie-break (earlier wins), distill.scoring."""
    return tuple(sorted(FORMS, key=lambda name: get_form(name).rank))


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
    """The registered form ``name``; a bad name lists the valid ones."""
    if name not in FORMS:
        raise ValueError(f"unknown thought form {name!r}; valid forms: {', '.join(FORMS)}")
    from importlib import import_module

    form = import_module(FORMS[name]).FORM
    if form.name != name:
        raise ValueError(f"the registry names {FORMS[name]}'s form {name!r}, but it calls itself {form.name!r}")
    return form


def parse_mix(mix: str) -> tuple[str, ...]:
    """'etd' -> every form; 'cot+eot' -> ('cot', 'eot'); a bad name lists the valid ones."""
    named = named_mixes()
    if mix in named:
        return named[mix]
    parts = tuple(p.strip() for p in mix.split("+") if p.strip())
    bad = [p for p in parts if p not in FORMS]
    if not parts or bad:
        from distill.errors import ConfigError  # a mix is a config value: say so the CLI way

        raise ConfigError(f"unknown mix {mix!r}; valid: {', '.join(named)} or forms joined by '+' (e.g. cot+eot)")
    return tuple(f for f in FORMS if f in parts)


def verdict_from(extraction: Extraction, gold: float, form: str, version: int) -> Verdict:
    """The one place an extraction becomes a verdict, so every form scores alike."""
    from distill.answers import answers_match

    if extraction.status != "ok":
        return Verdict(extraction.status, None, extraction.reason, form, version)
    if answers_match(extraction.answer, gold):
        return Verdict("correct", extraction.answer, "", form, version)
    return Verdict("wrong_answer", extraction.answer, f"answer {extraction.answer:g} != gold {gold:g}", form, version)
