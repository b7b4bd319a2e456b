"""The teacher's few-shot exemplars: eight word problems written by this project in the style of
GSM8K's training set (never taken from a test set), shared by every form; each form module solves
them in its own form (its ``exemplars``, in the order of ``EXEMPLARS`` here).

METHOD.md: "few-shot prompts (about 8 exemplars per form, written by this project)". Every solution
is checked by its own form's verifier in the tests, so a prompt never teaches a wrong answer.
Data and one function (``messages``); reads and writes nothing.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence


@dataclass(frozen=True)
class Exemplar:
    """A few-shot question and its gold answer; each form writes its own solution of it (its
    ``exemplars``, in this order)."""

    question: str
    answer: float


EXEMPLARS: tuple[Exemplar, ...] = (
    Exemplar(
        "A baker makes 36 muffins in the morning and 24 muffins in the afternoon. She packs them in boxes "
        "of 6. How many boxes does she fill?",
        10,
    ),
    Exemplar(
        "Tom has 3 times as many stickers as Ana. Together they have 48 stickers. How many stickers does "
        "Tom have?",
        36,
    ),
    Exemplar(
        "A shirt costs $25. During a sale every shirt is 20% off. Maria buys 3 shirts during the sale. "
        "How much does she pay?",
        60,
    ),
    Exemplar(
        "Liam reads 15 pages on Monday. On Tuesday he reads twice as many pages as on Monday, and on "
        "Wednesday he reads 10 fewer pages than on Tuesday. How many pages does he read in the three days?",
        65,
    ),
    Exemplar(
        "A farmer keeps chickens and cows. The animals have 20 heads and 56 legs in total. How many cows "
        "does the farmer keep?",
        8,
    ),
    Exemplar(
        "Sara earns $12 an hour. She works 8 hours a day for 5 days and then spends $150 on groceries. "
        "How much of her earnings does she have left?",
        330,
    ),
    Exemplar(
        "A water tank holds 400 liters when full. It is 3/4 full, and then 120 liters are used. How many "
        "liters are left in the tank?",
        180,
    ),
    Exemplar(
        "Jake is 4 years older than his sister. In 6 years the sum of their ages will be 40. How old is "
        "Jake now?",
        16,
    ),
)


def messages(system: str, solutions: Sequence[str], question: str) -> list[dict]:
    """system + (question, solution) pairs of every exemplar, ``solutions`` being one form's, in the order
    of EXEMPLARS + the question."""
    if len(solutions) != len(EXEMPLARS):
        raise ValueError(f"{len(solutions)} exemplar solutions for {len(EXEMPLARS)} exemplar questions")
    out = [{"role": "system", "content": system}]
    for ex, solution in zip(EXEMPLARS, solutions):
        out.append({"role": "user", "content": f"Question: {ex.question}"})
        out.append({"role": "assistant", "content": solution})
    out.append({"role": "user", "content": f"Question: {question}"})
    return out
