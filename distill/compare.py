"""The four students side by side: one table (student x test set x form, with n and a 95% interval),
the headline (one number per student and test set), and the MLflow UI link that opens the same runs.

Reads the store through ``distill.results.collect`` (the parent run ``reproduce-<preset>`` and
the step runs its tags name). Used at the end of ``distill reproduce`` (printed, and logged on the
parent run as ``comparison/accuracy.json``, ``comparison/accuracy.md`` and ``comparison/accuracy.png``)
and by ``distill compare`` / ``make compare``.

The headline's number per student is the form chosen on the validation split (the evaluate run's
``<test_set>/selected/*`` metrics and ``distill.selected_form`` tag), else the student's only form, else
eot (the default of a student without a validation choice); never the best form on a test set.
"""
from __future__ import annotations

from pathlib import Path
from urllib.parse import quote, urlencode

from distill import plots
from distill.results import FORM_ORDER, STUDENT_NAMES, TEST_SET_ORDER, Results, in_order
from distill.thoughts import MIXES

UI_URL = "http://127.0.0.1:5000"
"""Where `make ui` serves the MLflow UI."""


def comparison_rows(results: Results) -> list[dict]:
    """One row per (student, form, test set): {"student", "mix", "form", "test_set", "n", "accuracy",
    "ci_low", "ci_high", "ci"} with fractions; "ci" says whether the interval was logged by evaluate
    or computed here (Wilson); sorted by student, form, test set."""
    cells = plots.accuracy_cells(results)
    rows = [{"student": STUDENT_NAMES.get(mix, mix), "mix": mix, "form": form, "test_set": ts, **cell}
            for (mix, form, ts), cell in cells.items()]
    mixes, forms = list(MIXES), list(FORM_ORDER)
    sets = list(TEST_SET_ORDER)

    def key(row):
        return (mixes.index(row["mix"]) if row["mix"] in mixes else 99, row["mix"],
                forms.index(row["form"]) if row["form"] in forms else 99, row["form"],
                sets.index(row["test_set"]) if row["test_set"] in sets else 99, row["test_set"])

    return sorted(rows, key=key)


def primary_form(results: Results, mix: str) -> tuple[str, str] | None:
    """(metric form, label) of the student's one headline number, chosen without a test set."""
    run = results.evaluations().get(mix)
    if run is None:
        return None
    forms = {k.split("/")[1] for k in run.metrics if k.count("/") == 2 and k.endswith("/accuracy")}
    selected = run.tags.get("distill.selected_form")
    trained = sorted(forms & {"cot", "pot", "eot"})
    if len(trained) == 1:  # a one-form student: its "selected" is that form again (the report shows it once)
        return trained[0], trained[0]
    if "selected" in forms:
        return "selected", f"{selected or '?'} (chosen on validation)"
    if selected in forms:
        return selected, f"{selected} (chosen on validation)"
    if "eot" in forms:
        return "eot", "eot (no validation choice logged)"
    return (trained[0], trained[0]) if trained else None


def _cell(cell: dict | None) -> str:
    if cell is None:
        return "n/a"
    text = f"{100 * cell['accuracy']:.1f}%"
    if cell.get("ci_low") is not None:
        text += f" [{100 * cell['ci_low']:.1f}, {100 * cell['ci_high']:.1f}]"
    return text


def headline(results: Results) -> list[str]:
    """A plain-text table: a row per student (its primary form), a column per test set with
    accuracy and its 95% interval, n in the header; the constant-answer row last."""
    cells = plots.accuracy_cells(results)
    sets = in_order({ts for (_, _, ts) in cells} | set(results.baseline.get("accuracy", {})), TEST_SET_ORDER)
    if not cells:
        return ["no evaluation runs in the store yet: run `make reproduce` (or `distill evaluate`) first"]
    ns = {}
    for (_, _, ts), cell in cells.items():
        if cell["n"]:
            ns.setdefault(ts, set()).add(cell["n"])
    header = ["student", "form"] + [f"{ts} (n={'/'.join(str(n) for n in sorted(ns.get(ts, ()))) or '?'})"
                                    for ts in sets]
    table = [header]
    for mix in in_order(results.evaluations(), MIXES):
        chosen = primary_form(results, mix)
        if chosen is None:
            continue
        form, label = chosen
        table.append([STUDENT_NAMES.get(mix, mix), label] + [_cell(cells.get((mix, form, ts))) for ts in sets])
    base = results.baseline.get("accuracy", {})
    if base:
        table.append([f"constant {results.baseline.get('answer', '?')}", "-"]
                     + [f"{100 * base[ts]:.1f}%" if ts in base else "n/a" for ts in sets])
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in table]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines.append("accuracy on the test sets, [95% confidence interval]; the form is chosen without a test set")
    return lines


def markdown(rows: list[dict]) -> str:
    """The comparison rows as a Markdown table (percentages)."""
    out = ["| student | form | test set | n | accuracy (%) | 95% CI (%) | CI from |", "|---|---|---|---:|---:|---|---|"]
    for r in rows:
        ci = f"{100 * r['ci_low']:.1f}-{100 * r['ci_high']:.1f}" if r["ci_low"] is not None else "n/a"
        out.append(f"| {r['student']} | {r['form']} | {r['test_set']} | {r['n'] if r['n'] is not None else 'n/a'} | "
                   f"{100 * r['accuracy']:.1f} | {ci} | {r['ci'] or 'n/a'} |")
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
