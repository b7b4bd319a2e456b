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
    instruction = INSTRUCTION
    system = SYSTEM
    rules = ("hashes_answer", "last_number")
    """The flexible fallbacks (module docstring): GSM8K's ``#### N``, then the last number in the text."""

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
