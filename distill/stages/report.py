"""Report stage: ``results.md`` and the plots in ``reports/``, from the study's results as the MLflow
store holds them (never from run_dir), so it describes exactly the runs that are tracked.

Reads: a ``distill.results.Results`` (``distill.results.collect``: the parent run ``reproduce-<preset>``
and its step runs, or the newest run of each stage of the preset; see that module for every metric,
param, tag and artifact it reads). An empty store gives a results.md that says so.

What a student learned comes first: which students are degenerate (one answer to more than 90% of
a test set; distill.scoring.DEGENERATE_SHARE) and whose constant they are, and, per student, form and
test set, the distinct answers, the share of the most common one and its own constant's accuracy.
Every accuracy table shows two constants: the training prior (always the most common training
answer) and the oracle (the best single answer of each test set, chosen on its labels: a bound for
any constant predictor, never a model).

Significance: a difference between two paired sets of answers (distill.results.paired_tests, the
exact McNemar test) is called significant at p < 0.05, with no correction for the number of
comparisons (the table shows every p-value, so a reader can apply one); a cell with a degenerate side
is marked as such, never significant, and each student is also tested against its own constant.

The starting point: where a mix has an untrained base (``distill evaluate --untrained``) or an RL
student, the section *From the starting point* shows base, SFT and GRPO side by side (n, 95% intervals)
and what each step added on the same problems with its McNemar p-value (distill.results.gains).

Writes (``output_dir``, default reports/): ``results.md`` and the plots ``accuracy.png``,
``drop_rates.png``, ``training_curves.png`` (drawn by distill/plots.py). Every table is sorted and no
clock time is printed, so regenerating from the same store gives the same results.md byte for byte.
Inside ``distill reproduce`` it also logs those files as artifacts of a nested run ``report``.

One module over 450 lines on purpose: results.md is read top to bottom, and each of its sections is
a small function here in the order the file shows them; the numbers come from distill.results.
"""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from distill import plots
from distill.config import Config
from distill.files import atomic_write_text
from distill.results import (FORM_ORDER, SAMPLED_KINDS, STUDENT_NAMES, STUDENTS, TEST_SET_ORDER, Results,
                             baseline_cells, collect, drop_rates, gains, headline_name, in_order, intervals,
                             oracle_cells, paired_tests, primary_form, profiles, sampled_cells, score_label,
                             selected_forms, sets_of, strict_cells, validation_choice)
from distill.scoring import DEGENERATE_SHARE, TIE_RULE, by_name, format_answer, parsed_metrics
from distill.stages import pipeline
from distill.teachers.gold import GoldTeacher
from distill.thoughts import combine_order, form_names, get_form, named_mixes
from distill.tracking import tracker_or_null

OURS_NOTE = {"vote": "majority vote of the forms (ours)", "fallback": "first form that gives an answer (ours)",
             "selected": "the form chosen on the validation split"}
ALPHA = 0.05
"""Significance level of the paired tests."""

PAPER_CITATION = ("Zhu, Li, Liu, Ma, Wang: Distilling Mathematical Reasoning Capabilities into Small Language "
                  "Models, arXiv 2401.11864 (2024; Neural Networks 2024), headline GSM8K results "
                  "(CodeT5 students, gpt-3.5-turbo teacher)")
# GSM8K test accuracy (%) as reported in PAPER_CITATION; keys: none = the student without distillation.
PAPER_GSM8K = {
    "CodeT5-Small (60M)": {"none": 1.1, "eot": 18.87, "etd": 33.58},
    "CodeT5-Base (220M)": {"etd": 40.63},
    "CodeT5-Large (770M)": {"etd": 42.45},
}
PLOTS = ("accuracy.png", "drop_rates.png", "training_curves.png")
PAPER_SCOPE = ("What a small CPU study can show: that the pipeline runs end to end and is tracked, and how "
               "each student's answers compare with a constant on the same problems. What it cannot show: the "
               "paper's findings. Neither the level nor the ordering of our columns says anything about the "
               "paper's claims, and a degenerate student's number (marked) is a constant's, not a measure of "
               "what it learned. The comparison between CoTD, PoTD, EoTD and ETD needs pre-trained students on a GPU.")
"""One voice with the README's "What the embedded default can and cannot show"."""


def _millions(n: int) -> str:
    return f"{n / 1e6:.1f}M" if n >= 1e5 else f"{n / 1e3:.0f}k"


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.2f}"


def _cell(cell: dict | None) -> str:
    """"acc [lo, hi]" in percent; the bounds are left out when the run logged none."""
    if cell is None:
        return "–"
    if cell.get("ci_low") is None or cell.get("ci_high") is None:
        return _pct(cell["accuracy"])
    return f"{_pct(cell['accuracy'])} [{100 * cell['ci_low']:.1f}, {100 * cell['ci_high']:.1f}]"


def _marked(cell: dict | None, profile: dict | None) -> str:
    """_cell, plus "(degenerate: always A)" when the answers behind it are (almost) one value A."""
    text = _cell(cell)
    if cell is not None and profile and profile["degenerate"]:
        text += f" (degenerate: {format_answer(profile['top_answer'])})"
    return text


def _share_range(shares: list[float]) -> str:
    low, high = 100 * min(shares), 100 * max(shares)
    return f"{low:.1f}%" if f"{low:.1f}" == f"{high:.1f}" else f"{low:.1f}-{high:.1f}%"


def _gives(answer: float | None) -> str:
    return "gives no answer" if answer is None else f"answers {format_answer(answer)}"


def _oracle_label(oracle: dict) -> str:
    return ("best constant per test set, **oracle** (chosen on the test labels: a bound for any constant "
            "predictor, not a model)")


def _oracle_cell(cell: dict | None) -> str:
    return "–" if cell is None else f"{_cell(cell)} (always {cell['answer']})"


def _profile_name(results: Results, mix: str, name: str, ts: str) -> str:
    """The name under which correct.json holds a (mix, form) cell: a one-form student's "selected" is its form."""
    data = results.correct.get(mix, {}).get(ts) or {}
    if name == "selected" and "selected" not in (data.get("answers") or {}) and len(data.get("answers") or {}) == 1:
        return next(iter(data["answers"]))
    return name


def _what_was_learned(results: Results, sets: list[str]) -> list[str]:
    """The first lines of the report: which students give (almost) one answer to everything, whose
    constant it is, and what that makes of their accuracy; when every student does, that comes first."""
    prof = profiles(results)
    if not prof:
        return []
    mixes = in_order(results.evaluations(), STUDENTS)
    oracle = oracle_cells(results)
    lines, degenerate_students = [], []
    for mix in mixes:
        name = headline_name(results, mix)
        if name is None:
            continue
        cells = {ts: prof.get((mix, _profile_name(results, mix, name, ts), ts)) for ts in sets}
        cells = {ts: p for ts, p in cells.items() if p}
        if not cells:
            continue
        form = selected_forms(results).get(mix, name)
        who = f"**{STUDENT_NAMES.get(mix, mix)}** ({form})"
        bad = {ts: p for ts, p in cells.items() if p["degenerate"]}
        if len(bad) == len(cells):
            degenerate_students.append(mix)
            groups: dict = {}
            for ts, p in bad.items():
                groups.setdefault(p["top_answer"], []).append((ts, p["top_share"]))
            lines.append(f"- {who} is **degenerate**: it " + "; ".join(
                f"{_gives(answer)} to {_share_range([sh for _, sh in items])} of the problems of "
                + ", ".join(ts for ts, _ in items) for answer, items in groups.items())
                + ". Its accuracy is that constant's: " + ", ".join(
                    f"{ts} {_pct(p['own_constant_accuracy'])}%" for ts, p in bad.items())
                + " by always giving its most common answer.")
        elif bad:
            lines.append(f"- {who} is degenerate on " + ", ".join(
                f"{ts} ({_gives(p['top_answer'])} to {100 * p['top_share']:.1f}%)" for ts, p in bad.items())
                + "; elsewhere it gives " + ", ".join(f"{p['distinct']} distinct answers on {ts}"
                                                     for ts, p in cells.items() if ts not in bad) + ".")
        else:
            lines.append(f"- {who} is not degenerate: " + ", ".join(
                f"{p['distinct']} distinct answers on {ts} (the most common, {format_answer(p['top_answer'])}, "
                f"{100 * p['top_share']:.1f}%)" for ts, p in cells.items()) + ".")
        if len(bad) < len(cells):
            acc = intervals(results).get((mix, name), {})
            below = [ts for ts in cells if ts in oracle and ts in acc and acc[ts]["accuracy"] <= oracle[ts]["accuracy"]]
            if below:
                lines[-1] += (" At or below the best constant (oracle) on " + ", ".join(
                    f"{ts} ({_pct(acc[ts]['accuracy'])}% vs {_pct(oracle[ts]['accuracy'])}%)" for ts in below)
                    + ": no sign there of more than a constant could score.")
    if not lines:
        return []
    share = f"{100 * DEGENERATE_SHARE:.0f}%"
    if degenerate_students and len(degenerate_students) == len(lines):
        first = (f"**Every student is degenerate**: each gives one answer to more than {share} of the problems "
                 "of every test set, so the accuracies below measure how often that constant is the gold "
                 "answer, not what a student learned about the problems, and no difference between students "
                 "is a finding about distillation.")
    elif degenerate_students:
        verb = "is" if len(degenerate_students) == 1 else "are"
        first = (f"**{len(degenerate_students)} of {len(lines)} students {verb} degenerate** (one answer to more "
                 f"than {share} of every test set): " + ("its accuracy is its constant's." if verb == "is"
                                                        else "their accuracy is their constants'."))
    else:
        first = f"No student is degenerate (none gives one answer to more than {share} of a test set)."
    return ["## What the students learned", "", first, "", *lines, "",
            "Each student is judged by its headline answers (the form chosen on the validation split, or its "
            f"only form). *Degenerate*: the most common answer covers more than {share} of a test set's "
            "problems (a missing answer counts as one value). Per form and test set: see the section "
            "*What each student answers* below.", ""]


def _answers_table(results: Results, sets: list[str]) -> list[str]:
    """Per student, form and test set: distinct answers, the most common one and its share, and the
    accuracy of always giving it (the student's own constant)."""
    prof = profiles(results)
    out = ["## What each student answers", "",
           "Per student, form and test set: the number of distinct answers (a missing answer counts as one), "
           "the most common answer and its share of the problems, and the accuracy of always giving that answer "
           f"(the student's own constant). **degenerate**: the most common answer covers more than "
           f"{100 * DEGENERATE_SHARE:.0f}% of the problems; the student's accuracy there is (almost) its "
           "constant's.", ""]
    if not prof:
        return out + ["No answers logged (eval/<test_set>/correct.json has no `answers`: the evaluate runs "
                      "predate them); rerun `distill evaluate` to characterise them.", ""]
    out += ["| student | answers of | " + " | ".join(sets) + " |", "|---|---|" + "---|" * len(sets)]
    for mix in in_order({m for m, _, _ in prof}, STUDENTS):
        names = in_order({n for m, n, _ in prof if m == mix}, FORM_ORDER)
        if len([n for n in names if n in form_names()]) <= 1:
            names = [n for n in names if n != "selected"]
        for name in names:
            cells = []
            for ts in sets:
                p = prof.get((mix, name, ts))
                if p is None:
                    cells.append("–")
                    continue
                cells.append(f"{p['distinct']} distinct; {format_answer(p['top_answer'])} {100 * p['top_share']:.1f}%; "
                             f"own constant {_pct(p['own_constant_accuracy'])}%"
                             + (" **degenerate**" if p["degenerate"] else ""))
            label = f"selected = {selected_forms(results).get(mix, '?')}" if name == "selected" else name
            out.append(f"| {STUDENT_NAMES.get(mix, mix)} | {label} | " + " | ".join(cells) + " |")
    return out + [""]


def _limit(results: Results) -> str | None:
    """What the evaluate runs scored, or None when there is no evaluate run (nothing to claim)."""
    runs = results.evaluations().values()
    if not runs:
        return None
    limits = sorted({run.params.get("evaluate.limit", "") for run in runs})
    limits = [x for x in limits if x not in ("", "None")]
    if not limits:
        return "every problem of each test set (`evaluate.limit` unset)"
    return f"the first {', '.join(limits)} problems of each test set (`evaluate.limit`)"


def _ns(results: Results, sets: list[str]) -> dict[str, str]:
    """test_set -> its n as logged by the evaluate runs ("500", or "500/3" when students differ)."""
    out = {}
    for ts in sets:
        ns = sorted({int(run.metrics[f"{ts}/n"]) for run in results.evaluations().values() if f"{ts}/n" in run.metrics})
        out[ts] = "/".join(str(n) for n in ns) if ns else "?"
    return out


def _empty(results: Results) -> str:
    return "\n".join([
        f"# Results: preset `{results.preset}`", "",
        f"Nothing to report yet: the tracking store holds no run of preset `{results.preset}` in experiment "
        f"`{results.experiment}`. Run `make reproduce` (or `distill reproduce --preset {results.preset}`), or point "
        "MLFLOW_TRACKING_URI at the store that holds the runs, then `distill report` again.", ""])


def render(results: Results) -> str:
    """results.md as text; deterministic for a given store."""
    # over 80 lines: the header and the main accuracy table inline, then the other sections of results.md
    # in the order it shows them, each its own function
    if results.empty:
        return _empty(results)
    cells = intervals(results)
    sets = sets_of(results)
    ns = _ns(results, sets)
    chosen = selected_forms(results)
    prof = profiles(results)
    p = results.parent
    out = [f"# Results: preset `{results.preset}`", ""]
    out.append("Generated by `distill report` from the MLflow store "
               f"(experiment `{results.experiment}`). Regenerating it from the same store gives this file.")
    out.append("")
    if p is not None:
        out += [f"- reproduce run: `{p.run_id}` ({p.name})",
                f"- teacher: `{p.tags.get('distill.teacher', '?')}`, student: `{p.tags.get('distill.student', '?')}`, "
                f"config digest `{p.tags.get('distill.config_digest', '?')}`"]
    else:
        out.append("- no `reproduce` run in the store: the newest run of each stage of this preset is shown")
    limit = _limit(results)
    if limit:
        out.append(f"- evaluated on {limit}; n per test set: "
                   + ", ".join(f"{ts} {ns[ts]}" for ts in sets))
    out.append("")
    out += _what_was_learned(results, sets)

    out += ["## Accuracy (%), with 95% Wilson intervals", "",
            "Each student is asked for every form it was trained on; a prediction is correct when it is "
            "within 1e-3 of the gold answer, and a missing or unparseable answer is wrong. Each cell is "
            "accuracy [95% Wilson interval]; n is in the column head. `selected` is the form chosen on the "
            "validation split (the train stage's validation accuracy per form), named in the row; no number "
            "here was chosen on a test set.", ""]
    out.append("| student | form | " + " | ".join(f"{ts} (n={ns[ts]})" for ts in sets) + " |")
    out.append("|---|---|" + "---:|" * len(sets))
    for mix in in_order({m for m, _ in cells}, STUDENTS):
        for form in in_order({f for m, f in cells if m == mix}, FORM_ORDER):
            if form == "selected":
                label = f"selected = {chosen.get(mix, '?')} — {OURS_NOTE['selected']}"
            else:
                label = f"{form} — {OURS_NOTE[form]}" if form in OURS_NOTE else form
            row = cells[(mix, form)]
            out.append(f"| {STUDENT_NAMES.get(mix, mix)} (`{mix}`) | {label} | " + " | ".join(
                _marked(row.get(ts), prof.get((mix, _profile_name(results, mix, form, ts), ts))) for ts in sets) + " |")
    base = baseline_cells(results)
    oracle = oracle_cells(results)
    if base:
        b = results.baseline
        out.append(f"| always {b['answer']} (training prior) | — | "
                   + " | ".join(_cell(base.get(ts)) for ts in sets) + " |")
    if oracle:
        out.append(f"| {_oracle_label(oracle)} | — | " + " | ".join(_oracle_cell(oracle.get(ts)) for ts in sets) + " |")
    if base:
        out += ["", f"*always {b['answer']} (training prior)* answers {b['answer']}, the most common answer of the "
                f"training problems ({b.get('source', '')}), on the same problems "
                "(n: " + ", ".join(f"{ts} {c['n']}" for ts, c in base.items()) + "): a student at or below it has "
                "learned only the prior."]
    if oracle:
        out += ["", "The **oracle** row is the best single answer of each test set (its most common gold answer), "
                "chosen on that test set's labels: no constant predictor can score above it, so a student at or "
                "below it has shown nothing a constant could not; it is a bound, never a model to compare with."]
    if prof:
        out += ["", "*(degenerate: A)*: on that test set the student answers A to more than "
                f"{100 * DEGENERATE_SHARE:.0f}% of the problems; its accuracy is (almost) that of always answering A."]
    if not cells:
        out += ["", "No evaluation runs found yet."]
    out.append("")

    out += _starting_point(results, sets)
    out += _sampled_table(results, sets)
    out += _strict_table(results, sets)
    out += _answers_table(results, sets)
    out += _paper_table(results, cells, chosen)
    out += _significance(results, sets)
    out += _choices(results)
    out += _teacher_targets(results)
    out += _drop_table(results)
    out += _failure_table(results, sets)
    out += _training_table(results)
    out += _runs_table(results)
    out += ["## Plots", ""] + [f"![{name[:-4]}]({name})" for name in PLOTS]
    return "\n".join(out) + "\n"


def _sampled_table(results: Results, sets: list[str]) -> list[str]:
    """maj@k, pass@k and the mean over k samples per student, form and test set (evaluate.samples > 1)."""
    cells = sampled_cells(results)
    if not cells:
        return []
    ns = {ts: sorted({c["n"] for row in cells.values() for t, c in row.items() if t == ts and c["n"] is not None})
          for ts in sets}
    out = ["## Sampling: maj@k, pass@k and the mean over k samples (%), with 95% intervals", "",
           "Besides its greedy output (the accuracy above), each student wrote k sampled outputs per problem and "
           "form (`evaluate.samples`, `evaluate.temperature`, `evaluate.top_p`). **maj@k**: the majority answer of "
           f"the k samples is right (unparsed answers do not vote; a tie goes to {TIE_RULE}); `vote` pools every "
           "form's k samples. **pass@k**: some sample is right (Chen et al. 2021's unbiased estimator per "
           "problem, averaged). **mean@k**: the share of right samples, averaged (the expected accuracy of one "
           "sample). Intervals: Wilson for maj@k; for pass@k and mean@k the Wilson interval of the mean of "
           "per-problem values in [0, 1], which is conservative for them (distill.scoring.mean_interval).", "",
           "| student | form | score | " + " | ".join(
               f"{ts} (n={'/'.join(str(n) for n in ns[ts]) or '?'})" for ts in sets) + " |",
           "|---|---|---|" + "---:|" * len(sets)]
    kinds = {kind: i for i, kind in enumerate(SAMPLED_KINDS)}

    def order(score: str) -> tuple:
        kind, _, k = score.partition("_at_")
        return kinds.get(kind, 99), int(k) if k.isdigit() else 0

    for mix in in_order({m for m, _, _ in cells}, STUDENTS):
        for form in in_order({f for m, f, _ in cells if m == mix}, FORM_ORDER):
            for score in sorted({sc for m, f, sc in cells if (m, f) == (mix, form)}, key=order):
                row = cells[(mix, form, score)]
                out.append(f"| {STUDENT_NAMES.get(mix, mix)} (`{mix}`) | {form} | {score_label(score)} | "
                           + " | ".join(_cell(row.get(ts)) for ts in sets) + " |")
    return out + [""]


def _strict_table(results: Results, sets: list[str]) -> list[str]:
    """Per form with repair rules: the accuracy as scored (lenient, unless verify.strict) beside the
    accuracy without any repair rule (strict): the gap is format, the rest reasoning."""
    cells = strict_cells(results)
    if not cells:
        return []
    out = ["## Strict and lenient accuracy (%), greedy outputs", "",
           "*lenient*: the accuracy above (the forms' named repair rules and fallbacks on, unless `verify.strict`); "
           "*strict*: the same outputs without any of them (EoT: unicode operators, currency and thousands, "
           "percent, caret, reassignment as update, rounding functions; PoT: `solution()` and the printed number; "
           "CoT: `#### N` and the last number). What strict loses is format; what both miss is reasoning.", "",
           "| student | form | " + " | ".join(f"{ts}{_n_of(cells, ts)}: lenient | {ts}: strict" for ts in sets) + " |",
           "|---|---|" + "---:|---:|" * len(sets)]
    for mix in in_order({m for m, _ in cells}, STUDENTS):
        for form in in_order({f for m, f in cells if m == mix}, FORM_ORDER):
            row = cells[(mix, form)]
            out.append(f"| {STUDENT_NAMES.get(mix, mix)} (`{mix}`) | {form} | " + " | ".join(
                f"{_cell((row.get(ts) or {}).get('lenient'))} | {_cell((row.get(ts) or {}).get('strict'))}"
                for ts in sets) + " |")
    return out + [""]


def _n_of(cells: dict, ts: str) -> str:
    """" (n=N)" of a test set in strict_cells (n values joined by '/' if students differ), "" if unknown."""
    ns = sorted({c["lenient"]["n"] for row in cells.values() for t, c in row.items()
                 if t == ts and c["lenient"]["n"] is not None})
    return f" (n={'/'.join(map(str, ns))})" if ns else ""


def _starting_point(results: Results, sets: list[str]) -> list[str]:
    """Per mix that has an untrained base or an RL student: the base, SFT and GRPO students side by side
    (headline answers, n and 95% intervals per test set), then what each training step added on the
    same problems with its exact McNemar p-value (distill.results.gains). Nothing without such a student."""
    from distill.thoughts import parse_student

    students = [s for s in results.evaluations() if parse_student(s)[1]]
    if not students:
        return []
    cells = intervals(results)
    mixes = in_order({parse_student(s)[0] for s in students}, named_mixes())
    out = ["## From the starting point: the untrained student, after SFT, after RL", "",
           "The configured student as it comes (`distill evaluate --untrained`: the same forms, instructions and "
           "decoding, before any training), the student after supervised fine-tuning on the verified thoughts "
           "(the train stage) and after reinforcement learning with the verifiers as reward (GRPO, the rl stage). "
           "Each by its headline answers: the form chosen on the validation split (a one-form student's only "
           "form); the untrained student in the form its trained student chose, since nothing is chosen for it. "
           "Each cell: accuracy (%) [95% Wilson interval], n. A tiny student built from a config starts as a "
           "random model (its base row is that, honestly); a hub student starts from its pre-trained weights.", "",
           "| mix | student | answers of | " + " | ".join(sets) + " |", "|---|---|---|" + "---:|" * len(sets)]
    for mix in mixes:
        for name in [s for s in STUDENTS if parse_student(s)[0] == mix and s in results.evaluations()]:
            chosen = primary_form(results, name)
            if chosen is None:
                continue
            form, label = chosen
            if form == "selected":
                label = f"selected = {selected_forms(results).get(name, '?')}"
            row = cells.get((name, form), {})
            shown = []
            for ts in sets:
                cell = row.get(ts)
                shown.append("–" if cell is None else _cell(cell) + (f", n={cell['n']}" if cell.get("n") else ""))
            out.append(f"| {_mix_label(mix)} | {STUDENT_NAMES.get(name, name)} (`{name}`) | {label} | "
                       + " | ".join(shown) + " |")
    rows = gains(results)
    out += ["", "What each step added, on the same problems (a − b in percentage points, (a only / b only) "
            "discordant problems, exact McNemar p-value, **sig** when p < "
            f"{ALPHA}; a degenerate side is marked and never **sig**):", ""]
    if not rows:
        return out + ["No pair of a mix's students with per-problem results on the same problems yet.", ""]
    cols = [ts for ts in sets if any(r["test_set"] == ts for r in rows)]
    out += ["| mix | gain | a | b | " + " | ".join(cols) + " |", "|---|---|---|---|" + "---|" * len(cols)]
    pairs: dict[tuple, dict[str, dict]] = {}
    for r in rows:
        pairs.setdefault((r["mix"], r["what"], r["a"], r["b"]), {})[r["test_set"]] = r
    for (mix, what, a, b), by_set in pairs.items():
        shown = [_paired_cell(by_set[ts]) if ts in by_set else "–" for ts in cols]
        first = next(iter(by_set.values()))
        out.append(f"| {_mix_label(mix)} | {what} | {STUDENT_NAMES.get(a, a)} ({first['a_form']}) | "
                   f"{STUDENT_NAMES.get(b, b)} ({first['b_form']}) | " + " | ".join(shown) + " |")
    return out + [""]


def _paired_cell(r: dict, against_own_constant: bool = False) -> str:
    """One paired test as a table cell: "a − b (a only/b only) p", then **sig** when p < ALPHA unless a
    side is degenerate (marked instead). Against the student's own constant only the student (a) can be."""
    text = f"{100 * (r['a_acc'] - r['b_acc']):+.1f} ({r['a_only']}/{r['b_only']}) p {r['p_value']:.2g}"
    sides = [side for side, flag in (("a", r["a_degenerate"]), ("b", r["b_degenerate"])) if flag]
    if against_own_constant:
        if r["a_degenerate"]:
            return text + " (the student is degenerate)"
    elif sides:
        return text + f" *degenerate: {'both' if len(sides) == 2 else sides[0]}*"
    return text + " **sig**" if r["p_value"] < ALPHA else text


def _mix_label(mix: str) -> str:
    """"ETD (`etd`)"."""
    return f"{STUDENT_NAMES.get(mix, mix)} (`{mix}`)"


def _paper_table(results: Results, cells, chosen: dict[str, str]) -> list[str]:
    out = ["## Beside the paper (GSM8K test accuracy, %)", "",
           f"The paper's numbers: {PAPER_CITATION}; – means not reported. Which form the paper's ETD figure "
           "uses is not known; ours is the ETD student's form chosen on the validation split (named), with "
           "its 95% interval. The paper's students are 60M-770M pre-trained CodeT5 models fine-tuned on a GPU; "
           "ours is the student of this preset. " + PAPER_SCOPE, ""]
    out.append("| student | no distillation | CoTD | PoTD | EoTD | ETD |")
    out.append("|---|---:|---:|---:|---:|---:|")
    for student, nums in PAPER_GSM8K.items():
        out.append(f"| {student}, paper | " + " | ".join(
            "–" if k not in nums else f"{nums[k]:.2f}" for k in ("none", "cot", "pot", "eot", "etd")) + " |")
    prof = profiles(results)
    ours = [_marked(cells.get((mix, mix), {}).get("gsm8k"), prof.get((mix, mix, "gsm8k")))
            for mix in ("cot", "pot", "eot")]
    etd = cells.get(("etd", "selected"), {}).get("gsm8k")
    etd_cell = _marked(etd, prof.get(("etd", "selected", "gsm8k"))) + (
        f" ({chosen['etd']})" if etd is not None and chosen.get("etd") else "")
    p = results.parent
    student = p.tags.get("distill.student", "?") if p else "?"
    sizes = sorted({int(run.params["train.n_params"]) for name, run in results.steps.items()
                    if name.startswith("train-") and run.params.get("train.n_params", "").isdigit()})
    student += f"` ({'/'.join(_millions(n) for n in sizes)} params)" if sizes else "`"
    base = baseline_cells(results).get("gsm8k")
    prior = f"{_cell(base)} (always {results.baseline.get('answer', '?')})" if base else "–"
    out.append(f"| ours: `{student}, preset `{results.preset}` | {prior} | " + " | ".join(ours) + f" | {etd_cell} |")
    untrained = primary_form(results, "etd-base")
    if untrained is not None:  # the paper's "no distillation": our student as it comes, in ETD's chosen form
        cell = cells.get(("etd-base", untrained[0]), {}).get("gsm8k")
        if cell is not None:
            out.append(f"| ours: the same student untrained (`etd-base`, {untrained[0]}) | "
                       f"{_marked(cell, prof.get(('etd-base', untrained[0], 'gsm8k')))} | – | – | – | – |")
    oracle = oracle_cells(results).get("gsm8k")
    if oracle:
        out.append(f"| {_oracle_label(oracle)} | {_oracle_cell(oracle)} | – | – | – | – |")
    return out + [""]


def _significance(results: Results, sets: list[str]) -> list[str]:
    rows = paired_tests(results)
    out = ["## Which differences are significant (paired, same problems)", "",
           "Exact McNemar test on the problems where exactly one side is right. Each cell: a − b in "
           "percentage points, (a only / b only) discordant problems, the two-sided p-value, and **sig** "
           f"when p < {ALPHA}. No correction for the number of comparisons (about 1 in 20 cells falls below "
           f"{ALPHA} by chance alone). Students are compared by their selected form (the only form of a "
           "one-form student). A cell where a side is **degenerate** (one answer to more than "
           f"{100 * DEGENERATE_SHARE:.0f}% of the problems) is marked *degenerate: a*, *b* or *both* and never "
           "**sig**: it compares how often constants hit the gold answer, not what was learned. The rows "
           "*student vs its own constant* pair each student with always giving its own most common answer: "
           "**sig** there means the student's answers differ from its constant's by more than chance.", ""]
    if not rows:
        return out + ["No per-problem results (eval/<test_set>/correct.json) in the evaluate runs.", ""]
    cols = [ts for ts in sets if any(r["test_set"] == ts for r in rows)]
    pairs: dict[tuple[str, str, str], dict[str, dict]] = {}
    for r in rows:
        pairs.setdefault((r["what"], r["a"], r["b"]), {})[r["test_set"]] = r
    out += ["| compared | a | b | " + " | ".join(cols) + " |", "|---|---|---|" + "---|" * len(cols)]
    for (what, a, b), by_set in pairs.items():
        constant = what == "student vs its own constant"
        cells = [_paired_cell(by_set[ts], against_own_constant=constant) if ts in by_set else "–" for ts in cols]
        out.append(f"| {what} | {a} | {b} | " + " | ".join(cells) + " |")
    return out + [""]


def _choices(results: Results) -> list[str]:
    """Every choice of ours that the paper does not state, with what the runs logged about it."""
    out = ["## Choices of ours the paper does not state", ""]
    mixes = {name.split("-", 1)[1]: run for name, run in results.steps.items() if name.startswith("mix-")}
    mix_run = mixes.get("etd") or next(iter(mixes.values()), None)
    if mix_run is not None:
        overlap = {k.stat: int(v) for k, v in parsed_metrics(mix_run.metrics)
                   if k.plain and (k.scope, k.name) == ("mix", "overlap")}
        on = mix_run.params.get("mix.decontaminate", "?")
        removed = mix_run.metrics.get("mix/removed_overlap")
        out.append(f"- **Decontamination** (`mix.decontaminate={on}`, word {mix_run.params.get('mix.overlap_n', '?')}"
                   "-grams): training questions overlapping a test set, per test set: "
                   + (", ".join(f"{ts} {overlap[ts]}" for ts in in_order(overlap, TEST_SET_ORDER)) or "none logged")
                   + (f"; {int(removed)} training rows removed from the {mix_run.tags.get('distill.mix', '?')} mix"
                      if removed is not None else "") + ".")
        out.append(f"- **Validation split**: `mix.val_fraction={mix_run.params.get('mix.val_fraction', '?')}` of the "
                   f"training *questions* (all forms of a question go to the same side, seed "
                   f"`{mix_run.params.get('mix.seed', '?')}`); never a test question. The forms and the champion "
                   "are chosen on it; test sets are only reported.")
    else:
        out.append("- **Decontamination** and **validation split**: no mix run found.")
    verify = results.steps.get("verify")
    if verify is not None:
        strict = verify.params.get("verify.strict", "?")
        repaired = {form: int(v) for form, v in by_name(verify.metrics, "verify", "repaired").items()}
        rescued = (", ".join(f"{f} {repaired[f]}" for f in in_order(repaired, FORM_ORDER)) if repaired
                   else "not recorded")
        out.append(f"- **Repair rules** of the verifiers: `verify.strict={strict}` "
                   f"({'off' if strict == 'True' else 'on'}); kept samples that strict mode would have "
                   f"dropped, per form: {rescued}.")
    else:
        out.append("- **Repair rules**: no verify run found.")
    out.append("- **Input truncation**: inputs longer than `max_source_len` lose tokens on the left (the start "
               "of the question), so the form's instruction at the end is always kept (training and decoding).")
    trains = {name.split("-", 1)[1]: run for name, run in results.steps.items() if name.startswith("train-")}
    if trains:
        run = trains.get("etd") or next(iter(trains.values()))
        out.append("- **Checkpoint selection**: the student is the checkpoint with the lowest validation loss "
                   f"(evaluated each epoch); budget `train.max_steps={run.params.get('train.max_steps') or 'none'}`, "
                   f"`train.max_minutes={run.params.get('train.max_minutes') or 'none'}`.")
        val = by_name(run.metrics, "val", "accuracy")
        shown = ", ".join(f"{f} {_pct(val[f])}%" for f in in_order(val, FORM_ORDER)) or "not logged"
        mix = run.tags.get("distill.mix", "etd")
        tied = (validation_choice(results, mix) or {}).get("tied", [])
        selected = selected_forms(results).get(mix, "?")
        titles = [get_form(f).title for f in combine_order()]  # the order that breaks a tie
        if len(tied) > 1:
            words = {2: "two-way", 3: "three-way"}.get(len(tied), f"{len(tied)}-way")
            how = (f"selected {selected} by the tie rule: a {words} **tie** at {_pct(val[tied[0]])}% between "
                   f"{', '.join(tied)}, broken by the fixed order {', then '.join(titles)}; the validation split "
                   "did not tell these forms apart")
        else:
            how = f"selected {selected}"
        out.append("- **Form selection**: the ETD student's `selected` form is the one with the highest "
                   f"validation accuracy on `train.val_generate_limit={run.params.get('train.val_generate_limit', '?')}` "
                   f"validation rows (ties to {', '.join(titles)}); here {shown} (train run of "
                   f"{STUDENT_NAMES.get(mix, 'the student')}), {how}. Promotion ranks on that validation accuracy.")
    evals = results.evaluations()
    if evals:
        run = evals.get("etd") or next(iter(evals.values()))
        out.append(f"- **Decoding**: greedy, at most `evaluate.max_new_tokens={run.params.get('evaluate.max_new_tokens', '?')}` "
                   f"new tokens, inputs cut to `evaluate.max_source_len={run.params.get('evaluate.max_source_len', '?')}`; "
                   "vote and fallback are our own combinations (distill/scoring.py).")
    return out + [""]


def _teacher_targets(results: Results) -> list[str]:
    """What the teacher writes per form, with one verified target of each (one question), and how many
    kept targets hold a number the question does not outside their equations or code."""
    verify = results.steps.get("verify")
    if verify is None:
        return []
    teacher = verify.tags.get("distill.teacher", "?")
    counted = {form: int(v) for form, v in by_name(verify.metrics, "verify", "computed_numbers_in_text").items()}
    kept = {form: int(v) for form, v in by_name(verify.metrics, "verify", "kept").items()}
    out = [f"### What the teacher (`{teacher}`) writes per form", "",
           "Computed numbers in text: kept targets whose text outside equations or code (CoT: all of it; "
           "PoT: comments and strings; EoT: comment lines) holds a number the question does not state "
           "(distill/thoughts/numbers.py; metric `verify/<form>/computed_numbers_in_text`). CoT writes its "
           "arithmetic in text by design; in PoT and EoT the sandbox and the solver compute, so a count "
           "there is arithmetic (or a constant from outside the question) written beside the code or "
           "equations: "
           + (", ".join(f"{f} {counted[f]:,} of {kept.get(f, 0):,}" for f in in_order(counted, FORM_ORDER))
              or "not logged") + ".", ""]
    question = verify.tags.get("distill.example.question")
    forms = [f for f in FORM_ORDER if f"distill.example.{f}" in verify.tags]
    if question and forms:
        out += [f"One verified target per form, all for the question: {question}", ""]
        for form in forms:
            writes = get_form(form).gold_derivation
            says = f": {writes}" if teacher == GoldTeacher.name and writes else ""
            out += [f"- **{form}**{says}", "", "  ```", *(f"  {line}" for line in
                                                         verify.tags[f"distill.example.{form}"].splitlines()),
                    "  ```"]
        out.append("")
    return out


def _drop_table(results: Results) -> list[str]:
    drops = drop_rates(results)
    out = ["## Verified data: drop rate per form and reason", ""]
    if not drops:
        return out + ["No verify run found.", ""]
    reasons = sorted({r for d in drops.values() for r in d["reasons"]})
    out.append("| form | samples | kept | drop rate (%) | " + " | ".join(reasons) + " |")
    out.append("|---|---:|---:|---:|" + "---:|" * len(reasons))
    for form in in_order(drops, FORM_ORDER):
        d = drops[form]
        dropped = sum(d["reasons"].values())
        n = (d["kept"] or 0) + dropped
        out.append(f"| {form} | {n} | {d['kept'] if d['kept'] is not None else '–'} | {_pct(d['drop_rate'])} | "
                   + " | ".join(str(d["reasons"].get(r, 0)) for r in reasons) + " |")
    return out + [""]


def _failure_table(results: Results, sets: list[str]) -> list[str]:
    """(student, form) x test set: how many predictions were wrong or gave no usable answer, and why."""
    cells: dict[tuple[str, str], dict[str, dict[str, int]]] = defaultdict(lambda: defaultdict(dict))
    for mix, run in results.evaluations().items():
        for key, value in parsed_metrics(run.metrics):
            if key.score == "failures" and value:
                cells[(mix, key.name)][key.scope][key.stat] = int(value)
    if not cells:
        return []
    out = ["## Answers that were not correct, by status (wrong_answer, or no usable answer and why)", "",
           "| student | form | " + " | ".join(sets) + " |", "|---|---|" + "---|" * len(sets)]
    for mix in in_order({m for m, _ in cells}, STUDENTS):
        for form in in_order({f for m, f in cells if m == mix}, FORM_ORDER):
            row = cells[(mix, form)]
            out.append(f"| {STUDENT_NAMES.get(mix, mix)} | {form} | " + " | ".join(
                ", ".join(f"{n} {reason}" for reason, n in sorted(row.get(ts, {}).items())) or "0"
                for ts in sets) + " |")
    return out + [""]


def _training_table(results: Results) -> list[str]:
    trains = {name.split("-", 1)[1]: run for name, run in results.steps.items() if name.startswith("train-")}
    if not trains:
        return []
    out = ["## Training", "",
           "What ran, beside what was configured: the optimizer steps and epochs actually run and what stopped "
           "training (`max_minutes`: the time budget; `max_steps`: the step budget; `epochs`: every configured "
           "epoch ran).", "",
           "| student | steps run | epochs run (configured) | stopped by | last train/loss | best val/loss | lr | "
           "max_steps | max_minutes |",
           "|---|---:|---:|---|---:|---:|---:|---:|---:|"]
    for mix in in_order(trains, named_mixes()):
        run = trains[mix]
        loss = run.history.get("train/loss", [])
        val = [v for _, v in run.history.get("val/loss", [])]
        steps = run.metrics.get("train/steps_run")
        steps = int(steps) if steps is not None else (loss[-1][0] if loss else None)
        epochs = run.metrics.get("train/epochs_run")
        per_epoch = run.params.get("train.steps_per_epoch", "")
        if epochs is not None:
            epochs_text = f"{epochs:.2f}"
        elif steps is not None and per_epoch.isdigit() and int(per_epoch):
            epochs_text = f"≈{steps / int(per_epoch):.2f}"  # an older run: from its steps per epoch
        else:
            epochs_text = "not logged"
        out.append(f"| {STUDENT_NAMES.get(mix, mix)} | {steps if steps is not None else '–'} | "
                   f"{epochs_text} ({run.params.get('train.epochs', '?')}) | "
                   f"{run.tags.get('distill.stopped', 'not logged')} | "
                   f"{f'{loss[-1][1]:.4f}' if loss else '–'} | {f'{min(val):.4f}' if val else '–'} | "
                   f"{run.params.get('train.lr', '–')} | {run.params.get('train.max_steps', '–') or '–'} | "
                   f"{run.params.get('train.max_minutes', '–') or '–'} |")
    return out + [""]


def _runs_table(results: Results) -> list[str]:
    order = {name: i for i, (name, _, _) in enumerate(pipeline(named_mixes()))}
    wall = {k.stat: v for k, v in parsed_metrics(results.parent.metrics if results.parent else {})
            if k.scope == "wall_seconds" and not k.name}
    # the report's own step and the total are left out: both are logged after this file is written
    names = (set(results.steps) | set(wall)) - {"report", "total"}
    out = ["## Runs that produced these numbers", "", "| step | run name | run id | wall time (s) |",
           "|---|---|---|---:|"]
    for name in sorted(names, key=lambda n: (order.get(n, 99), n)):
        run = results.steps.get(name)
        seconds = wall.get(name)
        out.append(f"| {name} | {run.name if run else '–'} | {f'`{run.run_id}`' if run else '(no run of its own)'} | "
                   f"{f'{seconds:.1f}' if seconds is not None else '–'} |")
    if wall:
        out.append(f"| **all steps above** | | | {sum(wall.get(n, 0.0) for n in names):.1f} |")
    out.append("")
    if results.versions:
        champion = [v["version"] for v in results.versions if "champion" in v["aliases"]]
        out += [f"Registered model `{results.model_name}`"
                + (f" (`models:/{results.model_name}@champion` is version {champion[0]})" if champion else "")
                + ":", "", "| version | student | train run | aliases |",
                "|---:|---|---|---|"]
        for v in results.versions:
            out.append(f"| {v['version']} | {STUDENT_NAMES.get(v['mix'], v['mix'])} | `{v['run_id']}` | "
                       f"{', '.join(v['aliases']) or '–'} |")
        out.append("")
    return out


def write(results: Results, output_dir: str | Path) -> list[Path]:
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = [atomic_write_text(out / "results.md", render(results))]
    if results.empty:  # nothing to plot: results.md says so
        return paths
    for name in PLOTS:
        paths.append(plots.PLOTS[name](results, out / name))
    return paths


def run(cfg: Config, run_dir: Path | None = None, tracker=None, *, output_dir: str | Path = "reports",
        parent_run_id: str | None = None) -> dict:
    """Write results.md and the plots to output_dir from cfg's tracking store.

    With a tracker (inside `distill reproduce`) it opens a nested run "report" and logs the files
    as its artifacts (the summary's "run_id"); on its own (`distill report`) it only reads the store
    ("run_id" None).
    """
    tracker = tracker_or_null(tracker)
    results = collect(cfg, parent_run_id)
    paths = write(results, output_dir)
    summary = {"output_dir": str(output_dir), "files": [p.name for p in paths],
               "parent_run_id": results.parent.run_id if results.parent else None,
               "students": sorted(results.evaluations())}
    with tracker.run("report", {"distill.stage": "report", "distill.preset": cfg.preset}, nested=True):
        for path in paths:
            tracker.log_artifact(path, "report")
        summary["run_id"] = tracker.run_id
    return summary
