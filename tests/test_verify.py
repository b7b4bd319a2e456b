"""The verify stage: samples -> kept and dropped per form through the real verifiers (the PoT ones run in
the sandbox), drop rates, repaired counts and datasets in MLflow."""
from __future__ import annotations

import json

import pytest

from distill.config import load_config
from distill.files import DataError, read_jsonl, write_jsonl
from distill.stages import verify


def sample(pid, form, completion, gold=3.0, status="ok", reason="", index=0):
    return {"problem_id": pid, "question": f"What is {pid}?", "gold": gold, "form": form, "version": 1,
            "teacher": "replay", "model": "m", "sample_index": index, "completion": completion, "status": status,
            "reason": reason, "request_hash": f"h-{pid}-{form}-{index}"}


# right and wrong (gold 3) under each form's real verifier, in both modes
GOOD = {"cot": "1 + 2 = 3\nThe answer is 3.", "pot": "x = 1\nans = x + 2", "eot": "x = 1\nans = x + 2"}
BAD = {"cot": "1 + 2 = 4\nThe answer is 4.", "pot": "x = 1\nans = x + 3", "eot": "x = 1\nans = x + 3"}
# right (gold 3) only through a named repair rule of the form: cot's last-number fallback, pot's
# printed_answer, eot's reassignment_as_update; strict mode gives each no answer
REPAIRED = {"cot": "She had 1 + 2 = 3 apples.", "pot": "print(1 + 2)", "eot": "total = 5\ntotal = total - 2\nans = total"}


def samples(run_dir, *extra):
    rows = []
    for form, good in GOOD.items():
        rows += [sample("p1", form, good), sample("p2", form, BAD[form]),
                 sample("p3", form, None, status="failed", reason="empty_choices")]
    write_jsonl(run_dir / "samples.jsonl", rows + list(extra))


def test_kept_and_dropped_samples_are_written_per_form_with_their_reasons(tmp_path):
    samples(tmp_path)
    cfg = load_config(None, [f"run_dir={tmp_path}"])
    summary = verify.run(cfg, tmp_path)
    for form in GOOD:
        kept = read_jsonl(tmp_path / "verified" / f"{form}.jsonl")
        assert [r["problem_id"] for r in kept] == ["p1"] and kept[0]["verdict"]["status"] == "correct"
        assert summary[form]["n"] == 3 and summary[form]["kept"] == 1
        assert summary[form]["reasons"]["teacher_failed"] == 1
        assert summary[form]["drop_rate"] == pytest.approx(2 / 3, abs=1e-5)
    dropped = read_jsonl(tmp_path / "verified" / "dropped.jsonl")
    assert len(dropped) == 6 and {d["verdict"]["reason"] for d in dropped if d["problem_id"] == "p3"} == {"empty_choices"}
    assert json.loads((tmp_path / "verified" / "summary.json").read_text()) == summary


def test_kept_samples_that_only_the_repair_rules_rescued_are_counted_per_form(tmp_path):
    rows = []
    for form in GOOD:
        rows += [sample("p1", form, GOOD[form]), sample("p2", form, REPAIRED[form]), sample("p3", form, BAD[form])]
    write_jsonl(tmp_path / "samples.jsonl", rows)
    summary = verify.run(load_config(None, []), tmp_path)
    for form in GOOD:
        kept = read_jsonl(tmp_path / "verified" / f"{form}.jsonl")
        assert {r["problem_id"]: r["repaired"] for r in kept} == {"p1": False, "p2": True}, form
        assert summary[form]["kept"] == 2 and summary[form]["repaired"] == 1, form
    assert json.loads((tmp_path / "verified" / "summary.json").read_text())["eot"]["repaired"] == 1


def test_in_strict_mode_the_rescued_samples_are_dropped_and_nothing_counts_as_repaired(tmp_path):
    rows = []
    for form in GOOD:
        rows += [sample("p1", form, GOOD[form]), sample("p2", form, REPAIRED[form])]
    write_jsonl(tmp_path / "samples.jsonl", rows)
    summary = verify.run(load_config(None, ["verify.strict=true"]), tmp_path)
    for form in GOOD:
        assert summary[form]["kept"] == 1 and summary[form]["repaired"] == 0, form
        assert summary[form]["reasons"] == {"no_answer": 1}, form


def test_the_last_record_of_a_sample_is_the_one_verified(tmp_path):
    write_jsonl(tmp_path / "samples.jsonl", [sample("p1", "cot", None, status="failed", reason="x"),
                                             sample("p1", "cot", GOOD["cot"])])
    summary = verify.run(load_config(None, []), tmp_path)
    assert summary["cot"] == {**summary["cot"], "n": 1, "kept": 1}


def test_an_unchanged_form_is_not_verified_again(tmp_path, monkeypatch):
    samples(tmp_path)
    cfg = load_config(None, [])
    first = verify.run(cfg, tmp_path)
    monkeypatch.setattr(verify, "verify_form", lambda *a: pytest.fail("verified again"))
    assert verify.run(cfg, tmp_path) == first


def test_without_samples_the_error_says_to_run_generate(tmp_path):
    with pytest.raises(DataError, match="distill generate"):
        verify.run(load_config(None, []), tmp_path)


def test_drop_rates_reasons_the_dropped_table_and_the_datasets_go_to_mlflow(tmp_path, mlflow_uri):
    from distill.tracking import Tracker

    samples(tmp_path, sample("p4", "eot", REPAIRED["eot"]))
    tracker = Tracker(mlflow_uri, "distill")
    summary = verify.run(load_config(None, []), tmp_path, tracker)
    client = tracker.mlflow.tracking.MlflowClient()
    run = tracker.mlflow.search_runs(experiment_names=["distill"], output_format="list")[0]
    assert run.info.run_name == "verify" and run.data.tags["distill.stage"] == "verify"
    assert run.data.metrics["verify/eot/drop_rate"] == pytest.approx(2 / 4, abs=1e-5)
    assert run.data.metrics["verify/cot/dropped/teacher_failed"] == 1
    assert run.data.metrics["verify/eot/repaired"] == 1 and run.data.metrics["verify/pot/repaired"] == 0
    assert run.data.params["verify.strict"] == "False"
    names = {d.dataset.name: d.dataset.digest for d in run.inputs.dataset_inputs}
    assert set(names) == {"CoTD", "PoTD", "EoTD"} and names["EoTD"] == summary["eot"]["mlflow_digest"]
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "verify")}
    assert "verify/dropped.json" in artifacts


def test_kept_targets_with_numbers_outside_equations_or_code_that_the_question_lacks_are_counted_per_form(
        tmp_path, mlflow_uri):
    from distill.tracking import Tracker

    q = "Ana has 4 apples and buys 3 more. How many apples does she have?"
    rows = [{**sample("a", "cot", "4 + 3 = 7\nThe answer is 7.", gold=7.0), "question": q},
            {**sample("a", "pot", "apples = 4 + 3\nans = apples", gold=7.0), "question": q},
            {**sample("a", "eot", "% Ana has 4 apples and buys 3 more:\napples = 4 + 3\nans = apples", gold=7.0),
             "question": q},
            {**sample("b", "pot", "apples = 4 + 3  # 7 apples\nans = apples", gold=7.0), "question": q},
            {**sample("b", "eot", "% Ana has 7 apples:\napples = 4 + 3\nans = apples", gold=7.0), "question": q}]
    write_jsonl(tmp_path / "samples.jsonl", rows)
    tracker = Tracker(mlflow_uri, "distill")
    summary = verify.run(load_config(None, []), tmp_path, tracker)
    assert {f: (s["kept"], s["computed_numbers_in_text"]) for f, s in summary.items()} == {
        "cot": (1, 1), "pot": (2, 1), "eot": (2, 1)}
    run = tracker.mlflow.search_runs(experiment_names=["distill"], output_format="list")[0]
    assert {f: run.data.metrics[f"verify/{f}/computed_numbers_in_text"] for f in summary} == {
        "cot": 1, "pot": 1, "eot": 1}
    # one example per form, all of the first question kept in every form, for the report
    assert run.data.tags["distill.example.question"] == q
    assert run.data.tags["distill.example.eot"] == rows[2]["completion"]
    assert run.data.tags["distill.example.pot"] == rows[1]["completion"]
