"""Overlap between the training questions and the test sets: exact duplicates and shared n-grams.

A problem counts as overlapping another set when its normalised text equals one there (exact
duplicate) or when it shares at least one word n-gram (default 8, the usual contamination
window, as in the GPT-3 and Llama 2 reports) with any problem there. Normalisation: Unicode NFKC,
lower case, words are runs of letters and digits (so ``Janet’s`` and ``Janet's`` agree).

Tokens are interned to ints and each n-gram is hashed as a tuple of ints: the hash of an int
tuple does not depend on PYTHONHASHSEED, so a report is the same on every run, and the whole
report over the five sets (about 12,500 problems) takes about a second on a 2-core CPU.

Data contract: ``overlap_report`` returns, and ``distill overlap`` writes to
``runs/<preset>/overlap.json``::

    {"n": 8, "normalisation": str,
     "sets": {name: {"problems": int, "internal_duplicates": int}},
     "pairs": [{"a": name, "b": name, "a_size": int, "b_size": int,
                "exact": {"a": int, "b": int}, "ngram": {"a": int, "b": int},
                "any": {"a": int, "b": int}, "b_rate": float,
                "examples": [{"kind": "exact"|"ngram", "a_id", "b_id", "ngram": str|None}]}]}

``"a"``/``"b"`` counts are the problems of that side that overlap the other side. The pairs are
train vs every test set, then every two test sets. ``contaminated_ids`` gives the mix stage the
training ids to hold out per test set; it removes nothing itself.
"""
from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from itertools import combinations
from typing import Iterable, Mapping

from distill.problems import Problem

NORMALISATION = "NFKC, lower case, words = runs of letters/digits"
_WORD = re.compile(r"\w+")


def tokens(text: str) -> list[str]:
    return _WORD.findall(unicodedata.normalize("NFKC", text).lower())


@dataclass
class _Index:
    """One set of problems, ready to be compared: normalised texts and hashed n-grams."""

    name: str
    ids: list[str]
    keys: list[str]
    """Normalised text per problem (the exact-duplicate key)."""
    grams: list[list[int]]
    """Hashed n-grams per problem, in text order (so the first shared one can be shown)."""
    token_lists: list[list[str]]
    first_key: dict[str, int]
    first_gram: dict[int, int]
    """Hash -> index of the first problem holding it."""


class _Interner(dict):
    def __missing__(self, token: str) -> int:
        self[token] = value = len(self)
        return value


def _index(name: str, problems: Iterable[Problem], n: int, interner: _Interner) -> _Index:
    idx = _Index(name, [], [], [], [], {}, {})
    for i, p in enumerate(problems):
        toks = tokens(p.question)
        ints = [interner[t] for t in toks]
        grams = [hash(tuple(ints[j:j + n])) for j in range(len(ints) - n + 1)]
        key = " ".join(toks)
        idx.ids.append(p.id)
        idx.keys.append(key)
        idx.grams.append(grams)
        idx.token_lists.append(toks)
        idx.first_key.setdefault(key, i)
        for g in grams:
            idx.first_gram.setdefault(g, i)
    return idx


def _hits(a: _Index, b: _Index) -> tuple[list[int], list[tuple[int, int, int | None]]]:
    """Problems of ``a`` that overlap ``b``: (exact indices, [(a index, b index, gram position)])."""
    exact, any_hit = [], []
    for i, (key, grams) in enumerate(zip(a.keys, a.grams)):
        if key in b.first_key:
            exact.append(i)
            any_hit.append((i, b.first_key[key], None))
            continue
        for pos, g in enumerate(grams):
            if g in b.first_gram:
                any_hit.append((i, b.first_gram[g], pos))
                break
    return exact, any_hit


def _compare(a: _Index, b: _Index, n: int, max_examples: int) -> dict:
    a_exact, a_any = _hits(a, b)
    b_exact, b_any = _hits(b, a)
    a_ngram = sum(1 for _, _, pos in a_any if pos is not None) + _ngram_also(a, b, a_exact)
    b_ngram = sum(1 for _, _, pos in b_any if pos is not None) + _ngram_also(b, a, b_exact)
    examples = []
    # exact duplicates first: they are the clearest cases for a reader to check
    for i, j, pos in sorted(a_any, key=lambda hit: hit[2] is not None)[:max_examples]:
        gram = None if pos is None else " ".join(a.token_lists[i][pos:pos + n])
        examples.append({"kind": "exact" if pos is None else "ngram", "a_id": a.ids[i], "b_id": b.ids[j], "ngram": gram})
    return {
        "a": a.name, "b": b.name, "a_size": len(a.ids), "b_size": len(b.ids),
        "exact": {"a": len(a_exact), "b": len(b_exact)},
        "ngram": {"a": a_ngram, "b": b_ngram},
        "any": {"a": len(a_any), "b": len(b_any)},
        "b_rate": round(len(b_any) / len(b.ids), 4) if b.ids else 0.0,
        "examples": examples,
    }


def _ngram_also(a: _Index, b: _Index, exact: list[int]) -> int:
    """Exact duplicates that also share an n-gram (texts of n words or more), so "ngram" counts them too."""
    return sum(1 for i in exact if any(g in b.first_gram for g in a.grams[i]))


def _internal_duplicates(idx: _Index) -> int:
    """Problems whose normalised text already occurred earlier in the same set."""
    return len(idx.keys) - len(idx.first_key)


def overlap_report(train_problems: list[Problem], test_sets: Mapping[str, list[Problem]], n: int = 8,
                   train_name: str = "train", max_examples: int = 5) -> dict:
    """Exact and n-gram overlap: train vs each test set, then every two test sets (see module doc)."""
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    interner = _Interner()
    train = _index(train_name, train_problems, n, interner)
    tests = [_index(name, problems, n, interner) for name, problems in test_sets.items()]
    pairs = [_compare(train, t, n, max_examples) for t in tests]
    pairs += [_compare(x, y, n, max_examples) for x, y in combinations(tests, 2)]
    return {
        "n": n,
        "normalisation": NORMALISATION,
        "sets": {idx.name: {"problems": len(idx.ids), "internal_duplicates": _internal_duplicates(idx)}
                 for idx in [train, *tests]},
        "pairs": pairs,
    }


def contaminated_ids(train_problems: list[Problem], test_sets: dict[str, list[Problem]], n: int = 8) -> dict[str, set[str]]:
    """Test-set name -> ids of the training problems that share an exact duplicate or an n-gram with it."""
    interner = _Interner()
    train = _index("train", train_problems, n, interner)
    out = {}
    for name, problems in test_sets.items():
        _, hits = _hits(train, _index(name, problems, n, interner))
        out[name] = {train.ids[i] for i, _, _ in hits}
    return out


def format_table(report: dict) -> str:
    """The report as a fixed-width table, one row per pair (what ``distill overlap`` prints)."""
    n = report["n"]
    head = f"{'set A':<13}{'set B':<12}{'|A|':>6}{'|B|':>6}{'exact A/B':>11}{f'{n}-gram A/B':>13}{'any A/B':>12}{'B %':>7}"
    lines = [head, "-" * len(head)]
    for p in report["pairs"]:
        lines.append(
            f"{p['a']:<13}{p['b']:<12}{p['a_size']:>6}{p['b_size']:>6}"
            f"{p['exact']['a']:>6}/{p['exact']['b']:<4}{p['ngram']['a']:>8}/{p['ngram']['b']:<4}"
            f"{p['any']['a']:>7}/{p['any']['b']:<4}{100 * p['b_rate']:>6.1f}"
        )
    dups = ", ".join(f"{name} {s['internal_duplicates']}" for name, s in report["sets"].items())
    lines.append(f"duplicates inside a set (exact, normalised): {dups}")
    lines += ["", *column_notes(n)]
    return "\n".join(lines)


def column_notes(n: int = 8) -> list[str]:
    """What each column of format_table means (printed under the table, and quoted in the README)."""
    return ["columns:",
            "  set A, set B   the two sets compared (gsm8k-train is the training set; the others are test sets)",
            "  |A|, |B|       problems in each set",
            "  exact A/B      problems of A whose normalised text is also in B / problems of B whose text is in A",
            f"  {n}-gram A/B     problems of A sharing at least one {n}-word sequence with a problem of B / the same for B",
            "  any A/B        problems of A (/ of B) that overlap the other set either way (exact or n-gram)",
            "  B %            any B / |B| in percent: the share of B's problems that overlap A",
            "  (the mix stage holds the overlapping training problems out of training, with n = mix.overlap_n)",
            f"  normalised = {NORMALISATION}"]
