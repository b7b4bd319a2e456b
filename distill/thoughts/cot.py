"""Chain-of-Thought: natural-language steps ending in "The answer is N".

Extraction (METHOD.md): the number after the last "The answer is" (case-insensitive). A number is read
by distill.answers, so ``$1,080``, ``25%`` (25, as GSM8K's gold answers keep it), ``3/4``, ``-3`` and
``−3`` work. When the sentence after the phrase holds a calculation (``The answer is 3 + 4 = 7``),
the number after its last ``=`` is the answer.

- strict: only "The answer is" counts; without it the verdict is ``no_answer``.
- flexible (default), the documented fallback in this order: GSM8K's ``#### N``; then the last
  number in the text. A text with no number at all is ``no_answer``; a phrase followed by no number
  ("The answer is eighteen") is ``parse_error`` in both modes.
"""
from __future__ import annotations

import re
from typing import Sequence

from distill.answers import NUMBER_RE, last_number, parse_number
from distill.thoughts import Extraction, Form

INSTRUCTION = "Let's think step by step."
SYSTEM = ("You solve grade-school math word problems. Reason step by step in plain sentences, doing one "
          "calculation per step, and end with a final line of the form 'The answer is N.' where N is a "
          "single number without units.")
SOLUTIONS = (  # the exemplars' solutions, in the order of distill.thoughts.exemplars.EXEMPLARS
    # A baker makes 36 muffins ...
    "The baker makes 36 + 24 = 60 muffins.\nEach box holds 6 muffins, so she fills 60 / 6 = 10 boxes.\n"
    "The answer is 10.",
    # Tom has 3 times as ...
    "Let Ana have some stickers; Tom has 3 times as many, so together they have 4 times Ana's stickers.\n"
    "Ana has 48 / 4 = 12 stickers.\nTom has 3 * 12 = 36 stickers.\nThe answer is 36.",
    # A shirt costs $25. During ...
    "The discount on one shirt is 25 * 20 / 100 = $5.\nOne shirt costs 25 - 5 = $20 during the sale.\n"
    "Three shirts cost 3 * 20 = $60.\nThe answer is 60.",
    # Liam reads 15 pages on ...
    "On Tuesday Liam reads 2 * 15 = 30 pages.\nOn Wednesday he reads 30 - 10 = 20 pages.\n"
    "In the three days he reads 15 + 30 + 20 = 65 pages.\nThe answer is 65.",
    # A farmer keeps chickens and ...
    "If all 20 animals were chickens, they would have 20 * 2 = 40 legs.\n"
    "There are 56 - 40 = 16 extra legs, and each cow adds 2 extra legs.\n"
    "So there are 16 / 2 = 8 cows.\nThe answer is 8.",
    # Sara earns $12 an hour. ...
    "Sara earns 12 * 8 = $96 a day.\nIn 5 days she earns 96 * 5 = $480.\n"
    "After groceries she has 480 - 150 = $330 left.\nThe answer is 330.",
    # A water tank holds 400 ...
    "The tank holds 400 * 3 / 4 = 300 liters.\nAfter 120 liters are used, 300 - 120 = 180 liters are left.\n"
    "The answer is 180.",
    # Jake is 4 years older ...
    "In 6 years both are 6 years older, so the sum of their ages now is 40 - 6 - 6 = 28.\n"
    "Without Jake's extra 4 years the sum would be 28 - 4 = 24, so his sister is 24 / 2 = 12.\n"
    "Jake is 12 + 4 = 16 years old.\nThe answer is 16.",
)
_PHRASE = re.compile(r"the\s+(?:final\s+)?answer\s+is\s*:?", re.IGNORECASE)
_HASHES = re.compile(r"####\s*([^\n]*)")
_SENTENCE_END = re.compile(r"\n|\.(?=\s|$)")


def _number_after(text: str) -> float | None:
    """The answer stated in the sentence that starts ``text``."""
    end = _SENTENCE_END.search(text)
    sentence = text[: end.start()] if end else text
    if "=" in sentence:
        sentence = sentence.rsplit("=", 1)[1]
    m = NUMBER_RE.search(sentence)
    if m is None:
        return None
    return parse_number(m.group(0))


class CoT(Form):
    name = "cot"
    version = 1
    title = "CoT"
    rank = 3  # after the two tool-checked forms: free text is the least checked (distill.scoring)
    instruction = INSTRUCTION
    system = SYSTEM
    exemplars = SOLUTIONS
    gold_derivation = "GSM8K's annotated solution without its `<<expr=result>>` annotations, then `The answer is N.`"
    rules = ("hashes_answer", "last_number")
    """The flexible fallbacks (module docstring): GSM8K's ``#### N``, then the last number in the text."""

    def from_gold(self, solution) -> str:
        """The solution's text without its annotations, then ``The answer is N.``"""
        return f"{solution.text}\nThe answer is {solution.answer}."

    def strict_may_differ(self, completion: str | None, flexible) -> bool:
        """Only a text without "The answer is": with it both modes read the same number."""
        return _PHRASE.search((completion or "").replace("\u00a0", " ")) is None

    def student_target(self, completion: str) -> str:
        """The completion with blank lines and trailing spaces removed (the reasoning is kept whole)."""
        return "\n".join(line.rstrip() for line in completion.strip().splitlines() if line.strip())

    def extract(self, completion: str | None, *, timeout: float = 5.0, strict: bool = False) -> Extraction:
        """The stated answer (a CoT runs nothing, so ``timeout`` is unused)."""
        text = (completion or "").replace("\u00a0", " ")
        if not text.strip():
            return Extraction(None, "no_answer", "empty completion")
        phrases = list(_PHRASE.finditer(text))
        if phrases:
            value = _number_after(text[phrases[-1].end():])
            if value is None:
                return Extraction(None, "parse_error", "no number after the last 'The answer is'")
            return Extraction(value, "ok", "")
        if strict:
            return Extraction(None, "no_answer", "no 'The answer is' (strict mode)")
        hashes = _HASHES.findall(text)
        if hashes:
            value = parse_number(hashes[-1].strip()) or last_number(hashes[-1])
            if value is not None:
                return Extraction(value, "ok", "fallback: '#### N'")
        value = last_number(text)
        if value is None:
            return Extraction(None, "no_answer", "no 'The answer is' and no number in the text")
        return Extraction(value, "ok", "fallback: last number in the text")

    def extract_many(self, completions: Sequence[str], *, timeout: float = 5.0,
                     strict: bool = False) -> list[Extraction]:
        return [self.extract(c, strict=strict) for c in completions]



FORM = CoT()
