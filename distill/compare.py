"""The four students side by side: one table (student x test set x form, with n and a 95% interval),
the headline (one number per student and test set), and the MLflow UI link that opens the same runs.

Reads the store through ``distill.results.collect`` (the parent run ``reproduce-<preset>`` and
the step runs its tags name). Used at the end of ``distill reproduce`` (printed, and logged on the
parent run as ``comparison/accuracy.json``, ``comparison/accuracy.md`` and ``comparison/accuracy.png``)
and by ``distill compare`` / ``make compare``.

The headline's number per student is the form chosen on the validation split (the evaluate run's
``<test_set>/selected/*`` metrics and ``distill.selected_form`` tag), else the student's only form, else
eot (the default of a student without a validation choice); never the best form on a test set. An
untrained base student (``<mix>-base``) is shown in the form its trained student chose, and below the
table ``gain_lines`` states SFT over base and RL over SFT with their paired p-values.
"""
from __future__ import annotations

from pathlib import Path
from urllib.parse import quote, urlencode

from distill import plots
from distill.results import (FORM_ORDER, SAMPLED_KINDS, STUDENT_NAMES, STUDENTS, TEST_SET_ORDER, Results,
                             baseline_cells, gains, in_order, oracle_cells, primary_form, profiles, sampled_cells,
                             score_label)
from distill.scoring import DEGENERATE_SHARE, format_answer, parse_sample_name

__all__ = ["comparison_rows", "headline", "markdown", "primary_form", "sampled_lines", "ui_link", "write"]

UI_URL = "http://127.0.0.1:5000"
"""Where `make ui` serves the MLflow UI."""


def comparison_rows(results: Results) -> list[dict]:
    """One row per (student, form, test set): {"student", "mix", "form", "test_set", "n", "accuracy",
    "ci_low", "ci_high", "ci", "distinct_answers", "top_answer", "top_answer_share", "own_constant_accuracy",
    "degenerate"} with fractions; "ci" says whether the interval was logged by evaluate or computed
    here (Wilson); the answer profile is None where the evaluate run logged no answers; sorted by
    student, form, test set. Then the two constants, student "always <answer> (training prior)" and
    "oracle: best constant" (mix "baseline", form "prior" / "oracle")."""
    cells = plots.accuracy_cells(results)
    prof = profiles(results)
    rows = [{"student": STUDENT_NAMES.get(mix, mix), "mix": mix, "form": form, "test_set": ts, **cell,
             **_profile_fields(prof.get((mix, _answers_name(results, mix, form, ts), ts)))}
            for (mix, form, ts), cell in cells.items()]
    mixes, forms = list(STUDENTS), list(FORM_ORDER)
    sets = list(TEST_SET_ORDER)

    def key(row):
        return (mixes.index(row["mix"]) if row["mix"] in mixes else 99, row["mix"],
                forms.index(row["form"]) if row["form"] in forms else 99, row["form"],
                sets.index(row["test_set"]) if row["test_set"] in sets else 99, row["test_set"])

    rows = sorted(rows, key=key)
    b = results.baseline
    for ts, cell in baseline_cells(results).items():
        rows.append({"student": f"always {b.get('answer', '?')} (training prior)", "mix": "baseline", "form": "prior",
                     "test_set": ts, "n": cell["n"], "accuracy": cell["accuracy"], "ci_low": cell["ci_low"],
                     "ci_high": cell["ci_high"], "ci": "wilson" if cell["ci_low"] is not None else None,
                     **_profile_fields(None)})
    for ts, cell in oracle_cells(results).items():
        rows.append({"student": f"oracle: always {cell['answer']} (best constant on the test labels)",
                     "mix": "baseline", "form": "oracle", "test_set": ts, "n": cell["n"], "accuracy": cell["accuracy"],
                     "ci_low": cell["ci_low"], "ci_high": cell["ci_high"],
                     "ci": "wilson" if cell["ci_low"] is not None else None, **_profile_fields(None)})
    return rows


def _answers_name(results: Results, mix: str, form: str, ts: str) -> str:
    data = results.correct.get(mix, {}).get(ts) or {}
    answers = data.get("answers") or {}
    return next(iter(answers)) if form == "selected" and "selected" not in answers and len(answers) == 1 else form


def _profile_fields(p: dict | None) -> dict:
    if p is None:
        return {"distinct_answers": None, "top_answer": None, "top_answer_share": None,
                "own_constant_accuracy": None, "degenerate": None}
    return {"distinct_answers": p["distinct"], "top_answer": format_answer(p["top_answer"]),
            "top_answer_share": p["top_share"], "own_constant_accuracy": p["own_constant_accuracy"],
            "degenerate": p["degenerate"]}


def _cell(cell: dict | None) -> str:
    if cell is None:
        return "n/a"
    text = f"{100 * cell['accuracy']:.1f}%"
    if cell.get("ci_low") is not None:
        text += f" [{100 * cell['ci_low']:.1f}, {100 * cell['ci_high']:.1f}]"
    return text


def headline(results: Results) -> list[str]:
    """A plain-text table: a row per student (its primary form), a column per test set with
    accuracy and its 95% interval, n in the header, "DEGENERATE: always A" where the student gives one
    answer A to more than 90% of the set; the two constants last (the training prior, the oracle).
    Degenerate students are named above the table, and when every student is, that comes first."""
    cells = plots.accuracy_cells(results)
    prof = profiles(results)
    sets = in_order({ts for (_, _, ts) in cells} | set(results.baseline.get("accuracy", {})), TEST_SET_ORDER)
    if not cells:
        return ["no evaluation runs in the store yet: run `make reproduce` (or `distill evaluate`) first"]
    degenerate: list[str] = []
    ns = {}
    for (_, _, ts), cell in cells.items():
        if cell["n"]:
            ns.setdefault(ts, set()).add(cell["n"])
    header = ["student", "form"] + [f"{ts} (n={'/'.join(str(n) for n in sorted(ns.get(ts, ()))) or '?'})"
                                    for ts in sets]
    table = [header]
    for mix in in_order(results.evaluations(), STUDENTS):
        chosen = primary_form(results, mix)
        if chosen is None:
            continue
        form, label = chosen
        row = [STUDENT_NAMES.get(mix, mix), label]
        marks = []
        for ts in sets:
            p = prof.get((mix, _answers_name(results, mix, form, ts), ts))
            text = _cell(cells.get((mix, form, ts)))
            if p and p["degenerate"]:
                text += f" DEGENERATE: {format_answer(p['top_answer'])}"
                marks.append(ts)
            row.append(text)
        table.append(row)
        if marks and len(marks) == len([ts for ts in sets if (mix, _answers_name(results, mix, form, ts), ts) in prof]):
            degenerate.append(STUDENT_NAMES.get(mix, mix))
    base = baseline_cells(results)
    if base:
        table.append([f"always {results.baseline.get('answer', '?')}", "training prior"]
                     + [_cell(base.get(ts)) for ts in sets])
    oracle = oracle_cells(results)
    if oracle:
        table.append(["oracle (bound)", "best constant on test labels"]
                     + [_cell(oracle[ts]) + f" always {oracle[ts]['answer']}" if ts in oracle else "n/a"
                        for ts in sets])
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in table]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines.append("accuracy on the test sets, [95% confidence interval]; the form is chosen without a test set")
    lines.append(f"DEGENERATE: A: the student gives answer A to more than {100 * DEGENERATE_SHARE:.0f}% of the set; "
                 "its accuracy is that constant's")
    lines.append("oracle: the best single answer of each test set, chosen on its labels: a bound for any constant "
                 "predictor, not a model")
    lines += gain_lines(results)
    students = len(table) - 1 - bool(base) - bool(oracle)
    if degenerate:
        rule = f"one answer to more than {100 * DEGENERATE_SHARE:.0f}% of every test set"
        first = (f"EVERY STUDENT IS DEGENERATE ({rule}): " if len(degenerate) == students
                 else f"DEGENERATE ({rule}): ") + ", ".join(degenerate) + (
            "; its accuracy is its constant's" if len(degenerate) == 1 else "; their accuracy is their constants'"
        ) + ", not what was learned"
        lines.insert(0, first)
    return lines


def sampled_lines(results: Results) -> list[str]:
    """A plain-text table of the sampled scores (evaluate.samples > 1): a row per student, form and score
    (maj@k, pass@k, mean@k), a column per test set with the score and its 95% interval, n in the header;
    no lines when no evaluate run sampled."""
    cells = sampled_cells(results)
    if not cells:
        return []
    sets = in_order({ts for row in cells.values() for ts in row}, TEST_SET_ORDER)
    ns = {ts: sorted({c["n"] for row in cells.values() for t, c in row.items() if t == ts and c["n"]}) for ts in sets}
    table = [["student", "form", "score"] + [f"{ts} (n={'/'.join(map(str, ns[ts])) or '?'})" for ts in sets]]
    kinds = list(SAMPLED_KINDS)
    for mix in in_order({m for m, _, _ in cells}, STUDENTS):
        for form in in_order({f for m, f, _ in cells if m == mix}, FORM_ORDER):
            scores = sorted({sc for m, f, sc in cells if (m, f) == (mix, form)},
                            key=lambda sc: (kinds.index(parse_sample_name(sc)[0]), sc))
            for score in scores:
                row = cells[(mix, form, score)]
                table.append([STUDENT_NAMES.get(mix, mix), form, score_label(score)]
                             + [_cell(row.get(ts)) for ts in sets])
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in table]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return ["", "sampled outputs (evaluate.samples): maj@k = majority vote of k samples, pass@k = some sample right "
            "(unbiased estimator), mean@k = share of right samples; [95% interval]", *lines]


def gain_lines(results: Results) -> list[str]:
    """What SFT added over the untrained base and RL over SFT (and over the base), one line per mix,
    pair and test set, with both accuracies, n and the exact McNemar p-value (distill.results.gains);
    nothing when no mix has a base or an RL student."""
    rows = gains(results)
    if not rows:
        return []
    out = ["", "gains on the same problems (a - b, both with [95% CI]; exact McNemar p on the discordant problems):"]
    def side(r: dict, which: str) -> str:
        low, high = r[f"{which}_ci"]
        return (f"{STUDENT_NAMES.get(r[which], r[which])} ({r[f'{which}_form']}) {100 * r[f'{which}_acc']:.1f}% "
                f"[{100 * low:.1f}, {100 * high:.1f}]")

    for r in rows:
        a, b = side(r, "a"), side(r, "b")
        flag = (" (a degenerate side: a constant's hits, not a finding)" if r["a_degenerate"] or r["b_degenerate"]
                else " significant" if r["p_value"] < 0.05 else "")
        out.append(f"  {r['what']}, {r['test_set']} (n={r['n']}): {a} vs {b}: "
                   f"{100 * (r['a_acc'] - r['b_acc']):+.1f} points, {r['a_only']}/{r['b_only']} discordant, "
                   f"p {r['p_value']:.2g}{flag}")
    return out


CI_SOURCES = {"logged": "logged by the evaluate run", "wilson": "Wilson, computed from accuracy and n"}


def markdown(rows: list[dict]) -> str:
    """The comparison rows as a Markdown table (percentages), with what each column means below it."""
    out = ["| student | form | test set | n | accuracy (%) | 95% CI (%) | interval | distinct answers | "
           "most common answer (share %) | own constant (%) |",
           "|---|---|---|---:|---:|---|---|---:|---|---:|"]
    for r in rows:
        ci = f"{100 * r['ci_low']:.1f}-{100 * r['ci_high']:.1f}" if r["ci_low"] is not None else "n/a"
        profile = (["n/a"] * 3 if r.get("distinct_answers") is None else [
            str(r["distinct_answers"]),
            f"{r['top_answer']} ({100 * r['top_answer_share']:.1f})" + (" **degenerate**" if r["degenerate"] else ""),
            f"{100 * r['own_constant_accuracy']:.1f}"])
        out.append(f"| {r['student']} | {r['form']} | {r['test_set']} | {r['n'] if r['n'] is not None else 'n/a'} | "
                   f"{100 * r['accuracy']:.1f} | {ci} | {CI_SOURCES.get(r['ci'], 'n/a')} | "
                   + " | ".join(profile) + " |")
    out += ["", "*interval*: where the 95% interval comes from (the evaluate run logs a Wilson score interval; "
            "when it logged none, one is computed here from the accuracy and n). *distinct answers*: how many "
            "different answers the student gave (a missing answer counts as one); *most common answer*: that "
            "answer and its share of the problems, **degenerate** when it is over "
            f"{100 * DEGENERATE_SHARE:.0f}% (the student's accuracy is then that constant's); *own constant*: "
            "the accuracy of always giving that answer. The last rows are constants: always the most common "
            "training answer (the training prior), and the **oracle**, the best single answer of each test set, "
            "chosen on the test labels: a bound for any constant predictor, never a model."]
    return "\n".join(out) + "\n"


def ui_link(experiment_id: str, parent_run_id: str | None = None, preset: str | None = None,
            base: str = UI_URL, charts: bool = False) -> str:
    """The MLflow 3.17 UI's runs page of the experiment, in its "Model training" mode, filtered to
    the evaluate runs of one reproduce run (or of a preset). The UI reads ``searchFilter``,
    ``compareRunsMode`` (TABLE or CHART) and ``workflowType`` from the URL; which columns show is
    kept in the browser, not in the URL."""
    if parent_run_id:
        where = f"tags.`distill.stage` = 'evaluate' and tags.mlflow.parentRunId = '{parent_run_id}'"
    else:
        where = "tags.`distill.stage` = 'evaluate'" + (f" and tags.`distill.preset` = '{preset}'" if preset else "")
    # sorted by name, not by date: sorted by date the UI also fetches the parent run and folds the
    # four runs under it; by name they show as four rows, cot, eot, etd, pot
    query = urlencode({"searchFilter": where, "orderByKey": "tags.`mlflow.runName`", "orderByAsc": "true",
                       "compareRunsMode": "CHART" if charts else "TABLE", "workflowType": "machine_learning"},
                      quote_via=quote)
    return f"{base.rstrip('/')}/#/experiments/{experiment_id}/runs?{query}"


def write(results: Results, out_dir: Path) -> list[Path]:
    """comparison rows as accuracy.md, accuracy.json and the chart accuracy.png under out_dir."""
    from distill.files import atomic_write_text, write_json

    out_dir = Path(out_dir)
    rows = comparison_rows(results)
    return [atomic_write_text(out_dir / "accuracy.md", markdown(rows)), write_json(out_dir / "accuracy.json", rows),
            plots.plot_accuracy(results, out_dir / "accuracy.png")]
