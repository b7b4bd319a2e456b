"""Accuracy arithmetic of the evaluate stage: per-form scores and this project's own combinations.

Pure functions over ``Verdict``s (no model, no files), so the numbers can be checked by hand.

Per form (the paper's protocol, METHOD.md): a prediction is correct when its extracted answer is
within 1e-3 of the gold answer; a missing or unparseable answer is wrong. ``failures`` counts every
verdict that is not correct by its status (``wrong_answer``, ``no_answer``, ``parse_error``,
``exec_error``, ``timeout``, ``unsafe``), so the counts plus the correct ones add up to ``n``.

Combinations for students asked in several forms are OUR OWN variants (the paper does not say how
its ETD numbers were obtained) and carry their own metric names (``vote``, ``fallback``):

- **fallback**: take the answer of the first form in the combination order (distill.thoughts
  ``combine_order``, the forms by their ``rank``: EoT, then PoT, then CoT) that produced an answer at
  all; a form whose solver, program or parser failed passes the turn on. The order puts EoT first
  because it is the paper's best single form for small students, and the two tool-checked forms
  before free text.
- **vote**: majority over the forms that produced an answer, two answers being the same when they
  match within the 1e-3 tolerance. Ties are broken by the same order: among the answers with the
  most votes, the one given by the earliest form in EoT > PoT > CoT wins. So with all three forms
  answering differently the vote equals EoT's answer, and with only failures there is no answer.
  Both take plain answers (a number, or None for a form that gave none), so a caller without a gold
  answer (the served student) votes with the same rule.

Both are fixed rules, decided before any test set was seen; nothing here looks at a test label to
choose. **selected** is the form chosen on the validation split (the train stage's card,
``best_form``): its test accuracy is reported under its own name, so a multi-form student has one
headline number that no test set helped to pick.

What a student learned: ``answer_profile`` counts a set of answers' distinct values, the share of
the most common one and the accuracy of always giving that one answer (the student's *own constant*);
a student whose most common answer covers more than ``DEGENERATE_SHARE`` of a test set is
*degenerate* there: its accuracy is (almost) its constant's, whatever the constant is. The best
single constant on a test set (``oracle_constant``) is chosen on that set's labels: a bound for
every constant predictor, never a model.

Uncertainty: every accuracy comes with its 95% Wilson score interval (``wilson``), and two sets of
answers to the same problems are compared with the exact McNemar test on the discordant pairs
(``mcnemar``).

Metric names: ``metrics_of`` (and ``sample_metrics``, ``strict_metrics``, ``profile_metrics``) write them;
``parse_metric`` reads one back into its parts (``MetricKey``) for every reader (results, report, compare,
register), so the names have one home. That and the sampled scores are why the module is over 450 lines:
the arithmetic and the names it is logged under belong together.
"""
from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass
from typing import Iterator, Mapping, Sequence

from distill.answers import answers_match
from distill.thoughts import STATUSES, Verdict, combine_order

FAILURE_STATUSES = tuple(s for s in STATUSES if s != "correct")
Z95 = 1.959963984540054
"""The two-sided 95% normal quantile used by ``wilson``."""
DEGENERATE_SHARE = 0.9
"""A set of answers whose most common value (a missing answer counts as one value) covers more than
this share of the problems is called degenerate: the student gives (almost) one answer to everything."""


def wilson(correct: int, n: int, z: float = Z95) -> tuple[float, float]:
    """95% Wilson score interval (low, high) of a proportion ``correct / n``.

    Unlike the normal ("Wald") interval it stays inside [0, 1] and is not empty at 0 or n correct,
    which matters for small students that get few problems right. ``n == 0`` gives (0.0, 1.0):
    nothing observed, nothing known.
    """
    if n < 0 or not 0 <= correct <= n:
        raise ValueError(f"wilson needs 0 <= correct <= n, got correct={correct}, n={n}")
    if n == 0:
        return 0.0, 1.0
    p = correct / n
    denom = 1 + z * z / n
    center = (p + z * z / (2 * n)) / denom
    half = z / denom * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    # at 0 (or n) correct the bound is exactly 0 (or 1); rounding would leave 4.3e-19, which the MLflow
    # UI shows as such
    low = 0.0 if correct == 0 else max(0.0, center - half)
    high = 1.0 if correct == n else min(1.0, center + half)
    return low, high


def mcnemar(a: Sequence[int | bool], b: Sequence[int | bool]) -> dict:
    """Exact McNemar test of two paired 0/1 correctness lists over the same problems.

    Only discordant problems carry information: ``a_only`` (a right, b wrong) and ``b_only``.
    Under the null (both equally accurate) each discordant problem is a fair coin, so the two-sided
    p-value is ``min(1, 2 * P(X <= min(a_only, b_only)))`` for X ~ Binomial(a_only + b_only, 1/2);
    no discordant pair gives p = 1. Exact integer arithmetic, so large n does not overflow.
    Returns {"n", "a_only", "b_only", "p_value"}.
    """
    if len(a) != len(b):
        raise ValueError(f"paired lists differ in length ({len(a)} vs {len(b)}); pair the same problems")
    a_only = sum(1 for x, y in zip(a, b) if x and not y)
    b_only = sum(1 for x, y in zip(a, b) if y and not x)
    m = a_only + b_only
    tail = sum(math.comb(m, i) for i in range(min(a_only, b_only) + 1))
    p_value = min(1.0, 2 * tail / 2 ** m) if m else 1.0
    return {"n": len(a), "a_only": a_only, "b_only": b_only, "p_value": p_value}


def interval(correct: int, n: int) -> dict:
    """{"accuracy", "correct", "n", "ci_low", "ci_high"} of ``correct`` out of ``n``."""
    low, high = wilson(correct, n)
    return {"accuracy": correct / n if n else 0.0, "correct": correct, "n": n, "ci_low": low, "ci_high": high}


def ordered(forms: Sequence[str]) -> list[str]:
    """The forms in the combination order (unknown names keep their given order, after the known ones)."""
    order = combine_order()
    known = [f for f in order if f in forms]
    return known + [f for f in forms if f not in order]


def answered(verdict: Verdict) -> bool:
    """True when the form produced a number (right or wrong), False for every failure."""
    return verdict.status in ("correct", "wrong_answer") and verdict.answer is not None


def answer_of(verdict: Verdict) -> float | None:
    """The number a verdict's form answered, or None when it gave none: what the vote counts."""
    return verdict.answer if answered(verdict) else None


def accuracy(verdicts: Sequence[Verdict]) -> float:
    """Share of correct verdicts; 0.0 for an empty list (nothing evaluated counts as nothing right)."""
    return sum(v.correct for v in verdicts) / len(verdicts) if verdicts else 0.0


def failures(verdicts: Sequence[Verdict]) -> dict[str, int]:
    """Count of non-correct verdicts for every failure status, zeros included, so that the metric
    names are the same in every run and the MLflow UI can compare them column by column."""
    counts = Counter(v.status for v in verdicts if not v.correct)
    return {status: counts.get(status, 0) for status in [*FAILURE_STATUSES, *sorted(set(counts) - set(FAILURE_STATUSES))]}


def fallback_answer(by_form: Mapping[str, float | None]) -> tuple[float | None, str | None]:
    """(answer, form it came from) of the first form in the combination order that answered (``by_form``:
    form -> its answer, None when it gave none); (None, None) if none did."""
    for form in ordered(list(by_form)):
        if by_form[form] is not None:
            return by_form[form], form
    return None, None


def vote_answer(by_form: Mapping[str, float | None]) -> tuple[float | None, int]:
    """(majority answer, its number of votes) over the forms that answered (``by_form``: form -> its
    answer, None when it gave none); ties go to the earlier form.

    Answers are grouped with ``answers_match`` (1e-3), the group keeping the value of its earliest
    form, so 12 and 12.0004 count as one answer.
    """
    return majority_answer([by_form[form] for form in ordered(list(by_form))])


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
        by_form = {form: answer_of(items[i]) for form, items in verdicts.items()}
        answer, votes = vote_answer(by_form)
        out["vote"].append({"answer": answer, "correct": answers_match(answer, gold), "votes": votes})
        answer, source = fallback_answer(by_form)
        out["fallback"].append({"answer": answer, "correct": answers_match(answer, gold), "form": source})
    return out


def correctness(verdicts: Mapping[str, Sequence[Verdict]], golds: Sequence[float],
                selected: str | None = None) -> dict[str, list[int]]:
    """Per problem 0/1 for every form, for vote and fallback (two or more forms) and for the
    selected form (when it is one of ``verdicts``): the data of the paired tests (``mcnemar``)."""
    out = {form: [int(v.correct) for v in items] for form, items in verdicts.items()}
    if len(verdicts) > 1:
        for name, rows in combine(verdicts, golds).items():
            out[name] = [int(r["correct"]) for r in rows]
    if selected in verdicts:
        out["selected"] = list(out[selected])
    return out


def score_test_set(verdicts: Mapping[str, Sequence[Verdict]], golds: Sequence[float],
                   selected: str | None = None) -> dict:
    """Every number of one test set.

    Returns {"n", "forms": {form: {"accuracy", "correct", "n", "ci_low", "ci_high", "failures": {status: count}}},
    with two or more forms "vote"/"fallback": {"accuracy", "correct", "n", "ci_low", "ci_high"}, and,
    when ``selected`` (the form chosen on the validation split) is one of the forms,
    "selected": {"form", "accuracy", "correct", "n", "ci_low", "ci_high"}}.
    Nothing here is chosen by its accuracy on this test set.
    """
    forms = {form: {**interval(sum(v.correct for v in items), len(items)), "failures": failures(items)}
             for form, items in verdicts.items()}
    result: dict = {"n": len(golds), "forms": forms}
    if len(verdicts) > 1:
        for name, rows in combine(verdicts, golds).items():
            result[name] = interval(sum(r["correct"] for r in rows), len(rows))
    if selected in forms:
        result["selected"] = {"form": selected, **{k: v for k, v in forms[selected].items() if k != "failures"}}
    return result


def metrics_of(test_set: str, scores: Mapping) -> dict[str, float]:
    """The MLflow metric names of one test set's scores (contract: ``<test_set>/n``,
    ``<test_set>/<form|vote|fallback|selected>/{accuracy,ci_low,ci_high}`` (fractions) and the same
    ``..._pct`` (percent, 2 decimals, for the MLflow UI),
    ``<test_set>/<form>/failures/<status>``)."""
    out: dict[str, float] = {f"{test_set}/n": scores["n"]}
    named = dict(scores["forms"])
    for name in ("vote", "fallback", "selected"):
        if name in scores:
            named[name] = scores[name]
    for name, s in named.items():
        for key in ("accuracy", "ci_low", "ci_high"):
            out[f"{test_set}/{name}/{key}"] = s[key]
        # the same three in percent, rounded as the report prints them: what the MLflow UI shows beside
        # the report without a reader converting fractions
        for key in ("accuracy", "ci_low", "ci_high"):
            out[f"{test_set}/{name}/{key}_pct"] = round(100 * s[key], 2)
        for reason, count in s.get("failures", {}).items():
            out[f"{test_set}/{name}/failures/{reason}"] = count
    return out


@dataclass(frozen=True)
class MetricKey:
    """A metric name split into its parts, the way this package writes them (``metrics_of``,
    ``sample_metrics``, ``strict_metrics``, ``profile_metrics``; ``val/<form>/accuracy`` of the train and
    rl stages, ``verify/<form>/<count>``, ``baseline/<test_set>/<stat>`` of reproduce):

    - ``<scope>/<stat>``: ``gsm8k/n``, ``wall_seconds/train-etd``
    - ``<scope>/<name>/<stat>``: ``gsm8k/eot/accuracy``, ``gsm8k/vote/ci_low``, ``val/eot/accuracy``,
      ``verify/eot/kept``, ``gsm8k/selected/top_answer_share``
    - ``<scope>/<name>/<score>/<stat>``: ``gsm8k/eot/maj_at_4/accuracy``, ``gsm8k/eot/strict/ci_high``,
      ``gsm8k/eot/failures/timeout`` (the stat is then a status), ``verify/eot/dropped/no_answer``
    """

    scope: str
    """A test set, or what the numbers are of: val, verify, baseline, mix, wall_seconds."""
    name: str
    """A form, vote, fallback or selected ("" in ``<scope>/<stat>``)."""
    score: str
    """"" for the plain (greedy) score; strict, maj_at_4 (``sample_name``), failures, dropped."""
    stat: str
    """accuracy, ci_low, ci_high, their ``_pct``, n, a count or a status."""

    def __str__(self) -> str:
        return "/".join(part for part in (self.scope, self.name, self.score, self.stat) if part)

    @property
    def plain(self) -> bool:
        """Whether this is ``<scope>/<name>/<stat>``: a plain score of a form or a combination."""
        return bool(self.name) and not self.score


def parse_metric(key: str) -> MetricKey | None:
    """The parts of a metric name (see MetricKey), or None for a name of another shape."""
    parts = key.split("/")
    if len(parts) == 2:
        return MetricKey(parts[0], "", "", parts[1])
    if len(parts) == 3:
        return MetricKey(parts[0], parts[1], "", parts[2])
    if len(parts) == 4:
        return MetricKey(parts[0], parts[1], parts[2], parts[3])
    return None


def parsed_metrics(metrics: Mapping[str, float]) -> Iterator[tuple[MetricKey, float]]:
    """(parts, value) of every metric whose name parse_metric reads, in the mapping's order."""
    for key, value in metrics.items():
        parsed = parse_metric(key)
        if parsed is not None:
            yield parsed, value


def by_name(metrics: Mapping[str, float], scope: str | None, stat: str) -> dict[str, float]:
    """{name: value} of the plain metrics ``<scope>/<name>/<stat>`` (any scope when ``scope`` is None):
    ``by_name(run.metrics, "val", "accuracy")`` is {form: validation accuracy}."""
    return {k.name: v for k, v in parsed_metrics(metrics) if k.plain and k.stat == stat and scope in (None, k.scope)}


def answer_key(answer: float | None) -> float | None:
    """The value two answers share when they are the same number (rounded to the 1e-3 tolerance's
    grid), or None for a missing answer; used to count distinct answers."""
    return None if answer is None else round(float(answer), 3) + 0.0


def answers_of(verdicts: Mapping[str, Sequence[Verdict]], golds: Sequence[float],
               selected: str | None = None) -> dict[str, list[float | None]]:
    """Per problem the answer of every form (None when it gave none), of vote and fallback (two or
    more forms) and of the selected form: what ``answer_profile`` characterises."""
    out = {form: [answer_of(v) for v in items] for form, items in verdicts.items()}
    if len(verdicts) > 1:
        for name, rows in combine(verdicts, golds).items():
            out[name] = [r["answer"] for r in rows]
    if selected in verdicts:
        out["selected"] = list(out[selected])
    return out


def answer_profile(answers: Sequence[float | None], golds: Sequence[float]) -> dict:
    """How varied a set of answers is, and what its own constant scores.

    Returns {"n", "distinct" (distinct values, a missing answer counting as one), "top_answer" (the most
    common value, None when that is "no answer"; ties go to the smaller number), "top_share",
    "own_constant_accuracy" (accuracy of always answering top_answer on these golds; 0 when it is None),
    "own_constant_correct" (0/1 per problem, for the paired test against it), "degenerate"
    (top_share > DEGENERATE_SHARE)}.
    """
    if len(answers) != len(golds):
        raise ValueError(f"{len(answers)} answers for {len(golds)} problems; align them first")
    counts = Counter(answer_key(a) for a in answers)
    if not counts:
        return {"n": 0, "distinct": 0, "top_answer": None, "top_share": 0.0, "own_constant_accuracy": 0.0,
                "own_constant_correct": [], "degenerate": False}
    top = min(counts, key=lambda a: (-counts[a], a is None, a if a is not None else 0.0))
    share = counts[top] / len(answers)
    correct = [int(top is not None and answers_match(top, g)) for g in golds]
    return {"n": len(answers), "distinct": len(counts), "top_answer": top, "top_share": share,
            "own_constant_accuracy": sum(correct) / len(golds), "own_constant_correct": correct,
            "degenerate": share > DEGENERATE_SHARE}


def oracle_constant(golds: Sequence[float]) -> dict:
    """The single answer that scores best on these golds (the most common gold; ties to the smaller
    number) and its {"answer", "accuracy", "correct", "n"}. It is chosen on the test labels: a bound
    for any constant predictor, never a model to compare as an equal."""
    counts = Counter(answer_key(g) for g in golds if g is not None)
    if not counts:
        return {"answer": None, "accuracy": 0.0, "correct": 0, "n": len(golds)}
    best = min(counts, key=lambda a: (-counts[a], a))
    correct = sum(answers_match(best, g) for g in golds)
    return {"answer": best, "accuracy": correct / len(golds), "correct": correct, "n": len(golds)}


def profile_metrics(test_set: str, profiles: Mapping[str, Mapping]) -> dict[str, float]:
    """MLflow metric names of the answer profiles: ``<test_set>/<name>/distinct_answers``,
    ``.../top_answer_share`` and ``.../own_constant_accuracy``."""
    out: dict[str, float] = {}
    for name, p in profiles.items():
        out[f"{test_set}/{name}/distinct_answers"] = p["distinct"]
        out[f"{test_set}/{name}/top_answer_share"] = p["top_share"]
        out[f"{test_set}/{name}/own_constant_accuracy"] = p["own_constant_accuracy"]
    return out


def format_answer(answer: float | None) -> str:
    """An answer as a reader writes it: 2, 0.5, or "no answer"."""
    return "no answer" if answer is None else f"{answer:g}"


def degenerate_tag(profiles: Mapping[str, Mapping[str, Mapping]]) -> str:
    """``profiles`` (test_set -> name -> answer_profile) as one line: "no" when no set of answers is
    degenerate, else per name its constant and the test sets where it covers > DEGENERATE_SHARE."""
    found: dict[str, dict] = {}  # name -> answer -> [(test_set, share)]
    for test_set, by_name in profiles.items():
        for name, p in by_name.items():
            if p["degenerate"]:
                found.setdefault(name, {}).setdefault(p["top_answer"], []).append((test_set, p["top_share"]))
    if not found:
        return "no"

    def shares(items) -> str:
        low, high = (f"{100 * f(s for _, s in items):.0f}" for f in (min, max))
        return f"{low}%" if low == high else f"{low}-{high}%"

    return "; ".join(f"{name}: " + ", ".join(
        f"{format_answer(answer)} on {', '.join(ts for ts, _ in items)} ({shares(items)})" for answer, items in by.items())
        for name, by in found.items())


# --- sampled outputs: maj@k, pass@k, mean over samples (evaluate.samples > 1) -----------------------

TIE_RULE = ("the tied answer that appeared first among the samples (each form's samples in sample order; "
            f"over several forms, the forms in the order {', '.join(combine_order())})")
"""How maj@k breaks a tie between equally common answers: logged as the evaluate run's param
``evaluate.tie_rule``. A missing or unparsed answer never votes."""


def pass_at_k(n: int, c: int, k: int) -> float:
    """The unbiased estimator of pass@k (Chen et al. 2021, arXiv 2107.03374, eq. 1) from ``n`` samples of
    which ``c`` are correct: 1 - C(n-c, k) / C(n, k), the chance that k of the n samples drawn without
    replacement hold a correct one; 1.0 when n - c < k (every draw of k holds one). With n == k it is
    1 when any sample is correct, else 0; with k == 1 it is c / n."""
    if not 1 <= k <= n or not 0 <= c <= n:
        raise ValueError(f"pass_at_k needs 1 <= k <= n and 0 <= c <= n, got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def majority_answer(answers: Sequence[float | None]) -> tuple[float | None, int]:
    """(most common answer, its votes) among ``answers`` in their order; None answers do not vote, and a
    tie goes to the tied answer that appeared first (``TIE_RULE``). Answers are grouped with
    ``answers_match`` (1e-3), a group keeping the value of its first member, as ``vote_answer`` does."""
    groups: list[list] = []  # [value, votes] in the order of their first appearance
    for answer in answers:
        if answer is None:
            continue
        for group in groups:
            if answers_match(answer, group[0]):
                group[1] += 1
                break
        else:
            groups.append([answer, 1])
    if not groups:
        return None, 0
    best = max(groups, key=lambda g: g[1])  # max() keeps the first of equal counts: the earliest answer
    return best[0], best[1]


def mean_interval(values: Sequence[float]) -> dict:
    """{"accuracy" (the mean), "n", "ci_low", "ci_high"} of per-problem values in [0, 1] (pass@k, the share
    of a problem's samples that are right). The interval is the Wilson score interval of ``wilson`` with
    n = the number of problems, applied to the mean: a value in [0, 1] with mean p has variance at most
    p(1 - p), the variance Wilson assumes, so the interval is conservative for such values (never
    narrower than the normal-theory one) and is exactly the usual Wilson interval when every value is
    0 or 1. Unlike a bootstrap or a t-interval it stays inside [0, 1] and is not empty at a mean of 0."""
    if any(not 0.0 <= v <= 1.0 for v in values):
        raise ValueError("mean_interval takes per-problem values in [0, 1]")
    n = len(values)
    total = min(float(sum(values)), float(n))
    low, high = wilson(total, n)
    return {"accuracy": total / n if n else 0.0, "n": n, "ci_low": low, "ci_high": high}


def sample_name(kind: str, k: int) -> str:
    """The metric segment of a sampled score: ``maj_at_4``, ``pass_at_4``, ``mean_at_4`` (MLflow metric
    names cannot hold '@'; human text says maj@4)."""
    return f"{kind}_at_{k}"


SAMPLE_NAME = re.compile(r"(maj|pass|mean)_at_(\d+)")


def parse_sample_name(score: str) -> tuple[str, int] | None:
    """(kind, k) of a ``sample_name`` (``maj_at_4`` -> ("maj", 4)); None for any other score."""
    match = SAMPLE_NAME.fullmatch(score)
    return (match.group(1), int(match.group(2))) if match else None


def per_problem_samples(samples: Mapping[str, Sequence[Sequence[Verdict]]], golds: Sequence[float]) -> dict:
    """Per problem, from ``samples`` (form -> per problem the verdicts of its k samples, in sample order):
    {"k", "correct": {"<form>/maj_at_k": [0/1], "vote/maj_at_k" (two or more forms): [0/1]},
    "answers": {same names: [majority answer or None]}, "values": {"<form>/pass_at_k": [float],
    "<form>/mean_at_k": [float]}}. The vote over forms takes every form's k answers (k x forms votes),
    forms in the combination order."""
    ks = {len(items) for per_form in samples.values() for items in per_form}
    if len(ks) > 1:
        raise ValueError(f"every problem needs the same number of samples, got {sorted(ks)}")
    k = ks.pop() if ks else 0
    out: dict = {"k": k, "correct": {}, "answers": {}, "values": {}}
    for form, per_problem in samples.items():
        if len(per_problem) != len(golds):
            raise ValueError(f"{form}: samples of {len(per_problem)} problems for {len(golds)} golds; align them first")
        maj, right = sample_name("maj", k), []
        answers = []
        for verdicts, gold in zip(per_problem, golds):
            answer, _ = majority_answer([answer_of(v) for v in verdicts])
            answers.append(answer)
            right.append(int(answers_match(answer, gold)))
        out["correct"][f"{form}/{maj}"] = right
        out["answers"][f"{form}/{maj}"] = answers
        counts = [sum(v.correct for v in verdicts) for verdicts in per_problem]
        out["values"][f"{form}/{sample_name('pass', k)}"] = [pass_at_k(k, c, k) for c in counts]
        out["values"][f"{form}/{sample_name('mean', k)}"] = [c / k for c in counts]
    if len(samples) > 1:
        name = f"vote/{sample_name('maj', k)}"
        answers = []
        for i in range(len(golds)):
            pooled = [answer_of(v) for form in ordered(list(samples)) for v in samples[form][i]]
            answers.append(majority_answer(pooled)[0])
        out["answers"][name] = answers
        out["correct"][name] = [int(answers_match(a, g)) for a, g in zip(answers, golds)]
    return out


def score_samples(samples: Mapping[str, Sequence[Sequence[Verdict]]], golds: Sequence[float]) -> dict:
    """{"k", "n", "scores": {"<form>/maj_at_k" | "<form>/pass_at_k" | "<form>/mean_at_k" | "vote/maj_at_k":
    {"accuracy", "n", "ci_low", "ci_high"}}}: maj@k with its Wilson interval (0/1 per problem), pass@k and
    the mean over samples with ``mean_interval``; n is the number of problems."""
    table = per_problem_samples(samples, golds)
    k, scores = table["k"], {}
    for name in [*samples, "vote"]:  # form by form: maj, pass, mean; the vote over forms last
        for kind in ("maj", "pass", "mean"):
            key = f"{name}/{sample_name(kind, k)}"
            if key in table["correct"]:
                scores[key] = interval(sum(table["correct"][key]), len(golds))
            elif key in table["values"]:
                scores[key] = mean_interval(table["values"][key])
    return {"k": k, "n": len(golds), "scores": scores}


def sample_metrics(test_set: str, sampled: Mapping) -> dict[str, float]:
    """MLflow names of ``score_samples``: ``<test_set>/<form|vote>/<maj|pass|mean>_at_<k>/{accuracy,ci_low,
    ci_high}`` and the same ``..._pct`` (percent, 2 decimals), as metrics_of names the greedy ones."""
    out: dict[str, float] = {}
    for name, s in sampled["scores"].items():
        out |= _interval_metrics(f"{test_set}/{name}", s)
    return out


def strict_metrics(test_set: str, strict: Mapping[str, Mapping]) -> dict[str, float]:
    """MLflow names of the strict scores (form -> ``interval``): ``<test_set>/<form>/strict/{accuracy,
    ci_low,ci_high}`` and ``..._pct``."""
    out: dict[str, float] = {}
    for form, s in strict.items():
        out |= _interval_metrics(f"{test_set}/{form}/strict", s)
    return out


def _interval_metrics(prefix: str, s: Mapping) -> dict[str, float]:
    out = {f"{prefix}/{key}": s[key] for key in ("accuracy", "ci_low", "ci_high")}
    return out | {f"{prefix}/{key}_pct": round(100 * s[key], 2) for key in ("accuracy", "ci_low", "ci_high")}
