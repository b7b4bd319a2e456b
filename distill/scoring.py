"""Accuracy arithmetic of the evaluate stage: per-form scores and this project's own combinations.

Pure functions over ``Verdict``s (no model, no files), so the numbers can be checked by hand.

Per form (the paper's protocol, METHOD.md): a prediction is correct when its extracted answer is
within 1e-3 of the gold answer; a missing or unparseable answer is wrong. ``failures`` counts every
verdict that is not correct by its status (``wrong_answer``, ``no_answer``, ``parse_error``,
``exec_error``, ``timeout``, ``unsafe``), so the counts plus the correct ones add up to ``n``.

Combinations for students asked in several forms are OUR OWN variants (the paper does not say how
its ETD numbers were obtained) and carry their own metric names (``vote``, ``fallback``):

- **fallback**: take the answer of the first form in ``COMBINE_ORDER`` (EoT, then PoT, then CoT)
  that produced an answer at all; a form whose solver, program or parser failed passes the turn on.
  The order puts EoT first because it is the paper's best single form for small students, and the
  two tool-checked forms before free text.
- **vote**: majority over the forms that produced an answer, two answers being the same when they
  match within the 1e-3 tolerance. Ties are broken by ``COMBINE_ORDER``: among the answers with the
  most votes, the one given by the earliest form in EoT > PoT > CoT wins. So with all three forms
  answering differently the vote equals EoT's answer, and with only failures there is no answer.
"""
from __future__ import annotations

from collections import Counter
from typing import Mapping, Sequence

from distill.answers import answers_match
from distill.thoughts import STATUSES, Verdict

COMBINE_ORDER = ("eot", "pot", "cot")
"""Fixed order of the fallback, and the tie-break of the vote (earlier wins)."""
FAILURE_STATUSES = tuple(s for s in STATUSES if s != "correct")


def ordered(forms: Sequence[str]) -> list[str]:
    """The forms in COMBINE_ORDER (unknown names keep their given order, after the known ones)."""
    known = [f for f in COMBINE_ORDER if f in forms]
    return known + [f for f in forms if f not in COMBINE_ORDER]


def answered(verdict: Verdict) -> bool:
    """True when the form produced a number (right or wrong), False for every failure."""
    return verdict.status in ("correct", "wrong_answer") and verdict.answer is not None


def accuracy(verdicts: Sequence[Verdict]) -> float:
    """Share of correct verdicts; 0.0 for an empty list (nothing evaluated counts as nothing right)."""
    return sum(v.correct for v in verdicts) / len(verdicts) if verdicts else 0.0


def failures(verdicts: Sequence[Verdict]) -> dict[str, int]:
    """Count of non-correct verdicts for every failure status, zeros included, so that the metric
    names are the same in every run and the MLflow UI can compare them column by column."""
    counts = Counter(v.status for v in verdicts if not v.correct)
    return {status: counts.get(status, 0) for status in [*FAILURE_STATUSES, *sorted(set(counts) - set(FAILURE_STATUSES))]}


def fallback_answer(by_form: Mapping[str, Verdict]) -> tuple[float | None, str | None]:
    """(answer, form it came from) of the first form in COMBINE_ORDER that answered; (None, None) if none did."""
    for form in ordered(list(by_form)):
        if answered(by_form[form]):
            return by_form[form].answer, form
    return None, None


def vote_answer(by_form: Mapping[str, Verdict]) -> tuple[float | None, int]:
    """(majority answer, its number of votes) over the forms that answered; ties go to the earlier form.

    Answers are grouped with ``answers_match`` (1e-3), the group keeping the value of its earliest
    form, so 12 and 12.0004 count as one answer.
    """
    groups: list[list] = []  # [value, votes] in COMBINE_ORDER of their first voter
    for form in ordered(list(by_form)):
        verdict = by_form[form]
        if not answered(verdict):
            continue
        for group in groups:
            if answers_match(verdict.answer, group[0]):
                group[1] += 1
                break
        else:
            groups.append([verdict.answer, 1])
    if not groups:
        return None, 0
    # max() returns the first maximal group, i.e. the one whose first voter comes earliest
    best = max(groups, key=lambda g: g[1])
    return best[0], best[1]


def combine(verdicts: Mapping[str, Sequence[Verdict]], golds: Sequence[float]) -> dict[str, list[dict]]:
    """Per problem, the vote and fallback answers and whether they are right.

    ``verdicts`` maps form -> verdicts aligned with ``golds`` (same problems, same order).
    Returns {"vote": [{"answer", "correct", "votes"}], "fallback": [{"answer", "correct", "form"}]}.
    """
    for form, items in verdicts.items():
        if len(items) != len(golds):
            raise ValueError(f"{form}: {len(items)} verdicts for {len(golds)} problems; align them first")
    out: dict[str, list[dict]] = {"vote": [], "fallback": []}
    for i, gold in enumerate(golds):
        by_form = {form: items[i] for form, items in verdicts.items()}
        answer, votes = vote_answer(by_form)
        out["vote"].append({"answer": answer, "correct": answers_match(answer, gold), "votes": votes})
        answer, source = fallback_answer(by_form)
        out["fallback"].append({"answer": answer, "correct": answers_match(answer, gold), "form": source})
    return out


def score_test_set(verdicts: Mapping[str, Sequence[Verdict]], golds: Sequence[float]) -> dict:
    """Every number of one test set.

    Returns {"n", "forms": {form: {"accuracy", "correct", "n", "failures": {status: count}}},
    "best": {"form", "accuracy"}, and, with two or more forms, "vote"/"fallback": {"accuracy", "correct"}}.
    ``best`` is the highest single-form accuracy; a tie goes to the earlier form in COMBINE_ORDER.
    """
    forms = {
        form: {"accuracy": accuracy(items), "correct": sum(v.correct for v in items), "n": len(items),
               "failures": failures(items)}
        for form, items in verdicts.items()
    }
    result: dict = {"n": len(golds), "forms": forms}
    if forms:
        best = max(ordered(list(forms)), key=lambda f: forms[f]["accuracy"])
        result["best"] = {"form": best, "accuracy": forms[best]["accuracy"]}
    if len(verdicts) > 1:
        for name, rows in combine(verdicts, golds).items():
            correct = sum(r["correct"] for r in rows)
            result[name] = {"accuracy": correct / len(rows) if rows else 0.0, "correct": correct}
    return result


def metrics_of(test_set: str, scores: Mapping) -> dict[str, float]:
    """The MLflow metric names of one test set's scores (contract: <test_set>/<form>/accuracy, ...)."""
    out: dict[str, float] = {}
    for form, s in scores["forms"].items():
        out[f"{test_set}/{form}/accuracy"] = s["accuracy"]
        for reason, count in s["failures"].items():
            out[f"{test_set}/{form}/failures/{reason}"] = count
    for name in ("vote", "fallback", "best"):
        if name in scores:
            out[f"{test_set}/{name}/accuracy"] = scores[name]["accuracy"]
    return out
