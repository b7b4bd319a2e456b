"""distill/compare.py: the students side by side, the headline and the MLflow UI link."""
from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

from click.testing import CliRunner

from distill import compare
from distill.cli import main
from distill.results import Results, RunView

SETS = ("gsm8k", "svamp")


def _results(*, selected: bool = False) -> Results:
    def evaluate(mix, forms, acc, tags=None):
        metrics = {f"{ts}/n": 100 for ts in SETS}
        for ts in SETS:
            for form in forms:
                metrics[f"{ts}/{form}/accuracy"] = acc
            if selected:  # the evaluate stage logs `selected` for every student, one-form ones too
                metrics.update({f"{ts}/selected/accuracy": 0.04, f"{ts}/selected/ci_low": 0.016,
                                f"{ts}/selected/ci_high": 0.098})
        return RunView(f"run-{mix}", f"evaluate-{mix}", tags or {}, {}, metrics)

    steps = {"evaluate-cot": evaluate("cot", ["cot"], 0.02),
             "evaluate-etd": evaluate("etd", ["cot", "pot", "eot", "vote"], 0.01,
                                      {"distill.selected_form": "pot"} if selected else {})}
    return Results("tiny", "distill", None, steps, "distill-student", [],
                   {"answer": "4", "accuracy": {ts: 0.01 for ts in SETS}, "n": {ts: 100 for ts in SETS}})


def test_comparison_rows_carry_n_and_an_interval_for_every_student_form_and_test_set():
    rows = compare.comparison_rows(_results())
    assert [(r["student"], r["form"], r["test_set"]) for r in rows][:3] == [
        ("CoTD", "cot", "gsm8k"), ("CoTD", "cot", "svamp"), ("ETD", "cot", "gsm8k")]
    assert all(r["n"] == 100 and r["ci_low"] <= r["accuracy"] <= r["ci_high"] and r["ci"] == "wilson" for r in rows)
    table = compare.markdown(rows)
    assert "| CoTD | cot | gsm8k | 100 | 2.0 | 0.6-7.0 | Wilson, computed from accuracy and n | n/a | n/a | n/a |" in table
    assert "| always 4 (training prior) | prior | gsm8k | 100 | 1.0 | 0.2-5.4 |" in table
    assert "*interval*: where the 95% interval comes from" in table  # the column is explained


def test_the_headline_never_picks_a_form_by_its_test_score():
    # without a validation choice logged, ETD's row is eot, never the best form on a test set
    _, label = compare.primary_form(_results(), "etd")
    assert label == "eot (no validation choice logged)"
    form, label = compare.primary_form(_results(selected=True), "etd")
    assert (form, label) == ("selected", "pot (chosen on validation)")
    assert compare.primary_form(_results(), "cot") == ("cot", "cot")


def test_the_headline_has_n_in_the_header_intervals_in_the_cells_and_the_baseline_last():
    lines = compare.headline(_results(selected=True))
    assert "gsm8k (n=100)" in lines[0] and "svamp (n=100)" in lines[0]
    etd = next(line for line in lines if line.startswith("ETD"))
    assert "4.0% [1.6, 9.8]" in etd
    assert lines[-4].startswith("always 4") and "training prior" in lines[-4]
    assert lines[-2].startswith("DEGENERATE: A: the student gives answer A") and lines[-1].startswith("oracle: ")
    cot = next(line for line in lines if line.startswith("CoTD"))
    assert "2.0% [" in cot and "n/a" not in cot  # a one-form student's row is its only form


def test_the_ui_link_opens_the_model_training_runs_page_filtered_to_one_reproduce_runs_evaluations():
    url = compare.ui_link("7", "abc123", base="http://127.0.0.1:5000/")
    head, fragment = url.split("#", 1)
    assert head == "http://127.0.0.1:5000/"
    path, query = fragment.split("?", 1)
    assert path == "/experiments/7/runs"
    params = {k: v[0] for k, v in parse_qs(query).items()}
    assert params == {"searchFilter": "tags.`distill.stage` = 'evaluate' and tags.mlflow.parentRunId = 'abc123'",
                      "orderByKey": "tags.`mlflow.runName`", "orderByAsc": "true", "compareRunsMode": "TABLE",
                      "workflowType": "machine_learning"}
    charts = parse_qs(urlsplit(compare.ui_link("7", None, "tiny", charts=True)).fragment.split("?", 1)[1])
    assert charts["compareRunsMode"] == ["CHART"]
    assert charts["searchFilter"] == ["tags.`distill.stage` = 'evaluate' and tags.`distill.preset` = 'tiny'"]


def test_distill_compare_on_an_empty_store_says_what_to_run_first(mlflow_uri):
    result = CliRunner().invoke(main, ["compare", "--preset", "smoke"])
    assert result.exit_code == 2
    assert "run `make reproduce`" in result.output and "Traceback" not in result.output


def test_when_every_student_is_degenerate_the_headline_says_so_first():
    results = _results(selected=True)
    golds = [1, 2, 3, 4, 4]
    for mix, forms in (("cot", ["cot"]), ("etd", ["cot", "pot", "eot", "vote", "selected"])):
        answers = {f: [7.0] * 5 for f in forms}
        results.correct[mix] = {ts: {"problem_ids": list(range(5)), "gold": golds, "answers": answers,
                                     "correct": {f: [0] * 5 for f in forms}} for ts in SETS}
    lines = compare.headline(results)
    assert lines[0].startswith("EVERY STUDENT IS DEGENERATE (one answer to more than 90% of every test set): CoTD, ETD")
    assert "DEGENERATE: 7" in next(line for line in lines if line.startswith("ETD"))
    assert any(line.startswith("oracle (bound)") and "always 4" in line for line in lines)
