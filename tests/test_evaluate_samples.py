"""The evaluate stage with k sampled outputs per problem (evaluate.samples) and with strict scoring
beside lenient: numbers by hand with stub forms, resume per (problem, sample), strict on real forms."""
from __future__ import annotations

import json

import pytest

from distill.config import replace
from distill.files import read_log
from test_evaluate import StubForm, make_cfg, save_student


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def stub_forms(monkeypatch):
    from distill.stages import evaluate as stage

    monkeypatch.setattr(stage, "get_form", StubForm)


def test_sampled_scores_are_counted_by_hand_and_a_tie_between_forms_goes_to_eot(
        tmp_path, data_dir, stub_forms, mlflow_uri):
    import mlflow

    from distill.scoring import TIE_RULE, wilson
    from distill.stages import evaluate as stage
    from distill.tracking import Tracker

    save_student(tmp_path / "students" / "etd", best_form="eot")
    cfg = make_cfg(data_dir, limit=3, test_sets=("svamp",))
    tracker = Tracker(mlflow_uri, "distill")
    greedy = stage.run(cfg, tmp_path, tracker)
    sampled = stage.run(replace(cfg, evaluate={"samples": 3}), tmp_path, tracker)
    m = sampled["metrics"]
    # stub verdicts: every eot sample right, every pot program fails, every cot answer off by one
    assert m["svamp/eot/maj_at_3/accuracy"] == m["svamp/eot/pass_at_3/accuracy"] == m["svamp/eot/mean_at_3/accuracy"] == 1.0
    assert m["svamp/pot/maj_at_3/accuracy"] == m["svamp/pot/pass_at_3/accuracy"] == 0.0
    assert m["svamp/cot/maj_at_3/accuracy"] == m["svamp/cot/mean_at_3/accuracy"] == 0.0
    # the vote over all nine answers: eot's gold 3 times, cot's gold + 1 3 times, pot none: a tie -> eot's
    assert m["svamp/vote/maj_at_3/accuracy"] == 1.0
    assert (m["svamp/cot/maj_at_3/ci_low"], m["svamp/cot/maj_at_3/ci_high"]) == pytest.approx(wilson(0, 3))
    assert (m["svamp/eot/mean_at_3/ci_low"], m["svamp/eot/mean_at_3/ci_high"]) == pytest.approx(wilson(3, 3))
    # k = 1 logs exactly today's names; k = 3 adds only its own, and the greedy numbers stay as they were
    added = set(m) - set(greedy["metrics"])
    assert set(greedy["metrics"]) <= set(m) and not any("_at_" in name for name in greedy["metrics"])
    assert added == {f"svamp/{name}/{kind}_at_3/{key}{pct}" for name in ("cot", "pot", "eot") for kind in ("maj", "pass", "mean")
                     for key in ("accuracy", "ci_low", "ci_high") for pct in ("", "_pct")} | {
        f"svamp/vote/maj_at_3/{key}{pct}" for key in ("accuracy", "ci_low", "ci_high") for pct in ("", "_pct")}
    assert {k: m[k] for k in greedy["metrics"]} == greedy["metrics"]
    run = mlflow.MlflowClient().get_run(sampled["run_id"])
    assert run.data.params["evaluate.tie_rule"] == TIE_RULE and run.data.params["evaluate.samples"] == "3"
    assert run.data.tags["distill.samples"] == "3" and run.data.metrics["svamp/vote/maj_at_3/accuracy"] == 1.0
    assert sampled["decoding"]["sampling"]["temperature"] == 0.7
    records = list(read_log(tmp_path / "eval" / "etd" / "svamp" / "eot.samples.jsonl"))
    assert sorted((r["problem_id"], r["sample"]) for r in records) == sorted(
        (pid, j) for pid in {r["problem_id"] for r in records} for j in range(3)) and len(records) == 9


def test_a_sampled_rerun_draws_only_missing_samples_and_other_sampling_settings_draw_anew(
        tmp_path, data_dir, stub_forms, count_generations):
    from distill.stages import evaluate as stage

    save_student(tmp_path / "students" / "etd")
    cfg = make_cfg(data_dir, limit=2, test_sets=("multiarith",), forms=("eot",), samples=2)
    first = stage.run(cfg, tmp_path)
    assert count_generations == [2, 4]  # greedy, then 2 problems x 2 samples
    again = stage.run(cfg, tmp_path)
    assert count_generations == [2, 4] and again["metrics"] == first["metrics"]  # nothing drawn again
    stage.run(replace(cfg, evaluate={"samples": 3}), tmp_path)
    assert count_generations == [2, 4, 2]  # only sample 2 of each problem is new
    log = tmp_path / "eval" / "etd" / "multiarith" / "eot.samples.jsonl"
    assert len(list(read_log(log))) == 6
    stage.run(replace(cfg, evaluate={"samples": 3, "temperature": 1.0}), tmp_path)
    assert count_generations == [2, 4, 2, 6]  # another temperature: other samples; greedy still reused
    assert len(list(read_log(log))) == 6 and len(list(read_log(log.with_name("eot.jsonl")))) == 2


def test_the_stage_logs_strict_accuracy_beside_lenient_for_an_output_that_needs_a_repair_rule(
        tmp_path, data_dir, count_generations):
    from distill.problems import load_problems
    from distill.stages import evaluate as stage
    from distill.thoughts import get_form

    folder = save_student(tmp_path / "students" / "eot", forms=("eot",))
    cfg = make_cfg(data_dir, limit=2, test_sets=("svamp",))
    digest = stage.student_digest(folder / "model", cfg)
    problems = load_problems("svamp", "test", data_dir)[:2]
    # answered before (the log of an earlier run of this student): one system writes a unicode minus
    # (repaired by the unicode_operators rule), one is plain
    outputs = [f"total = {problems[0].answer + 1:g} \u2212 1\nans = total", f"ans = {problems[1].answer:g}"]
    eot = get_form("eot")
    log = tmp_path / "eval" / "eot" / "svamp" / "eot.jsonl"
    log.parent.mkdir(parents=True)
    log.write_text("".join(json.dumps({"problem_id": p.id, "question": p.question, "gold": p.answer, "form": "eot",
                                       "version": eot.version, "input": eot.student_input(p.question), "output": o,
                                       "answer": p.answer, "status": "correct", "reason": "", "student": digest}) + "\n"
                           for p, o in zip(problems, outputs)))
    summary = stage.run(replace(cfg, mix={"mix": "eot"}), tmp_path)
    assert count_generations == []  # both reused: the strict verdicts need no decoding
    m = summary["metrics"]
    assert m["svamp/eot/accuracy"] == 1.0 and m["svamp/eot/strict/accuracy"] == 0.5
    assert m["svamp/eot/strict/ci_low"] < 0.5 < m["svamp/eot/strict/ci_high"]
    assert summary["test_sets"]["svamp"]["strict"]["eot"]["correct"] == 1
    # records verified leniently are not reused under verify.strict (another digest): decoded again
    strict = stage.run(replace(cfg, verify={"strict": True}, mix={"mix": "eot"}), tmp_path)["metrics"]
    assert count_generations == [2] and strict["svamp/eot/strict/accuracy"] == strict["svamp/eot/accuracy"]
