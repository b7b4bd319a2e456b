"""distill reproduce: one parent run with a nested run per step, done-markers, resume.

The first tests drive the orchestration with stand-in stages (fast, and they pin down the run
tree and the resume rules); the last one runs the real pipeline on the smoke preset.
"""
from __future__ import annotations

import json

import mlflow
import pytest
from click.testing import CliRunner

from distill.cli import main
from distill.config import load_config
from distill.stages import reproduce
from distill.thoughts import named_mixes
from distill.tracking import Tracker

STEP_RUNS = {"generate", "verify", "promote", "report"} | {
    f"{stage}-{mix}" for stage in ("mix", "train", "evaluate") for mix in named_mixes()}


class FakeStages(dict):
    """Stand-in stages that log what the real ones log, and remember every call."""

    def __init__(self, fail_on: str | None = None):
        super().__init__()
        self.calls: list[str] = []
        self.fail_on = fail_on
        for stage in ("generate", "verify", "mix", "train", "evaluate", "register", "promote"):
            self[stage] = self._make(stage)

    def _make(self, stage):
        def run(cfg, run_dir, tracker):
            mix = cfg.mix.mix if stage in ("mix", "train", "evaluate", "register") else None  # the per-mix stages
            name = f"{stage}-{mix}" if mix else stage
            self.calls.append(name)
            if name == self.fail_on:
                raise RuntimeError(f"{name} broke")
            if stage == "register":  # the real register step opens no run of its own
                return {"version": 1}
            tags = {"distill.stage": stage, "distill.preset": cfg.preset, **({"distill.mix": mix} if mix else {})}
            with tracker.run(name, tags, nested=True) as run:
                if stage == "verify":
                    tracker.log_metrics({"verify/eot/kept": 3, "verify/eot/drop_rate": 0.25,
                                         "verify/eot/dropped/wrong_answer": 1})
                if stage == "evaluate":
                    tracker.log_metrics({f"gsm8k/{mix}/accuracy": 0.5} if mix != "etd" else
                                        {"gsm8k/eot/accuracy": 0.5, "gsm8k/best/accuracy": 0.5})
                if stage == "train":
                    tracker.log_metrics({"train/loss": 2.0}, step=1)
            # generate returns no run id: reproduce finds its run among the parent's children
            return {"rows": 1} if stage == "generate" else {"run_id": run.info.run_id}
        return run


def _children(parent_id):
    runs = mlflow.MlflowClient().search_runs(
        [mlflow.get_experiment_by_name("distill").experiment_id], f"tags.mlflow.parentRunId = '{parent_id}'")
    return sorted(r.info.run_name for r in runs)


@pytest.fixture
def smoke(tmp_path, mlflow_uri, data_dir, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DISTILL_DATA_DIR", str(data_dir))
    return load_config("smoke", [f"run_dir={tmp_path / 'run'}"])


def _reproduce(cfg, stages, tmp_path, **kw):
    tracker = Tracker(cfg.tracking_uri, cfg.tracking.experiment)
    return reproduce.run(cfg, cfg.run_path, tracker, stages=stages, report_dir=tmp_path / "reports",
                         log=lambda line: None, **kw)


def test_plan_runs_every_stage_for_the_four_students_in_order():
    names = [s.name for s in reproduce.plan()]
    assert names[:2] == ["generate", "verify"]
    assert names[-2:] == ["promote", "report"]
    assert names.index("mix-etd") < names.index("train-cot") < names.index("evaluate-cot") < names.index("register-cot")
    assert len(names) == 2 + 4 * 4 + 2


def test_constant_baseline_answers_the_most_common_training_answer_on_the_evaluated_problems(smoke):
    from collections import Counter

    from distill.problems import load
    from distill.results import constant_baseline

    baseline = constant_baseline(smoke)
    train = load("gsm8k", "train", smoke.data_path).problems[:40]
    top = Counter(p.answer for p in train).most_common(1)[0][1]
    assert Counter(p.answer for p in train)[baseline["answer"]] == top
    assert baseline["train_n"] == 40
    assert baseline["n"] == {name: 3 for name in smoke.data.test_sets}
    gsm8k = load("gsm8k", "test", smoke.data_path).problems[:3]
    assert baseline["accuracy"]["gsm8k"] == sum(p.answer == baseline["answer"] for p in gsm8k) / 3


def test_reproduce_makes_one_parent_run_with_a_nested_run_per_step(smoke, tmp_path):
    stages = FakeStages()
    out = _reproduce(smoke, stages, tmp_path)
    parent = mlflow.get_run(out["parent_run_id"])
    assert parent.info.run_name == "reproduce-smoke"
    assert parent.data.tags["distill.stage"] == "reproduce"
    assert parent.data.tags["distill.preset"] == "smoke"
    assert _children(out["parent_run_id"]) == sorted(STEP_RUNS)
    assert parent.data.tags["distill.step.generate.run_id"] == out["steps"]["generate"]["run_id"]
    assert "distill.step.register-etd.run_id" not in parent.data.tags
    assert {f"wall_seconds/{s}" for s in STEP_RUNS} <= set(parent.data.metrics)
    assert "baseline/gsm8k/accuracy" in parent.data.metrics
    timings = json.loads((smoke.run_path / "reproduce" / "timings.json").read_text())
    assert set(timings["steps"]) == {s.name for s in reproduce.plan()}
    marker = json.loads((smoke.run_path / "reproduce" / "done" / "train-etd.json").read_text())
    assert marker["parent_run_id"] == out["parent_run_id"] and marker["mix"] == "etd"
    assert (tmp_path / "reports" / "results.md").exists()


def test_a_rerun_skips_every_finished_step_and_resumes_the_same_parent(smoke, tmp_path):
    first = _reproduce(smoke, FakeStages(), tmp_path)
    again = FakeStages()
    second = _reproduce(smoke, again, tmp_path)
    assert again.calls == []
    assert second["parent_run_id"] == first["parent_run_id"]
    assert all(t["skipped"] for t in second["timings"].values())
    assert _children(first["parent_run_id"]) == sorted(STEP_RUNS)


def test_the_report_written_by_reproduce_equals_one_regenerated_later_from_the_store(smoke, tmp_path):
    from distill.stages import report

    _reproduce(smoke, FakeStages(), tmp_path)
    report.run(smoke, output_dir=tmp_path / "later")
    assert (tmp_path / "later" / "results.md").read_text() == (tmp_path / "reports" / "results.md").read_text()


def test_a_rerun_writes_the_report_again_when_it_was_deleted(smoke, tmp_path):
    _reproduce(smoke, FakeStages(), tmp_path)
    (tmp_path / "reports" / "results.md").unlink()
    out = _reproduce(smoke, FakeStages(), tmp_path)
    assert not out["timings"]["report"]["skipped"] and out["timings"]["promote"]["skipped"]
    assert (tmp_path / "reports" / "results.md").exists()


def test_a_failed_step_is_resumed_from_where_it_stopped(smoke, tmp_path):
    broken = FakeStages(fail_on="train-pot")
    with pytest.raises(RuntimeError, match="train-pot broke"):
        _reproduce(smoke, broken, tmp_path)
    fixed = FakeStages()
    out = _reproduce(smoke, fixed, tmp_path)
    assert fixed.calls[0] == "train-pot"
    assert "generate" not in fixed.calls and "train-cot" not in fixed.calls
    assert mlflow.get_run(out["parent_run_id"]).info.status == "FINISHED"


@pytest.mark.slow  # two reproduce runs: ~9 s
def test_a_changed_config_or_fresh_starts_a_new_parent_and_runs_every_step(smoke, tmp_path):
    first = _reproduce(smoke, FakeStages(), tmp_path)
    changed = load_config("smoke", [f"run_dir={smoke.run_dir}", "evaluate.limit=2"])
    stages = FakeStages()
    second = _reproduce(changed, stages, tmp_path)
    assert second["parent_run_id"] != first["parent_run_id"]
    assert len(stages.calls) == len(reproduce.plan()) - 1  # every stage but the report (ours, not faked)
    third = FakeStages()
    assert _reproduce(changed, third, tmp_path, fresh=True)["parent_run_id"] != second["parent_run_id"]
    assert len(third.calls) == len(stages.calls)


def test_under_mlflow_run_the_launched_run_is_the_parent_and_earlier_steps_are_reused(smoke, tmp_path, monkeypatch):
    first = _reproduce(smoke, FakeStages(), tmp_path)
    client = mlflow.MlflowClient()
    launched = client.create_run(client.get_experiment_by_name("Default").experiment_id
                                 if client.get_experiment_by_name("Default") else "0").info.run_id
    monkeypatch.setenv("MLFLOW_RUN_ID", launched)
    (tmp_path / "reports" / "results.md").unlink()
    stages = FakeStages()
    out = _reproduce(smoke, stages, tmp_path)
    assert out["parent_run_id"] == launched != first["parent_run_id"]
    assert stages.calls == []  # the earlier parent's steps count: same store, same config
    # the report follows the launched run (in the Default experiment) to the reused step runs
    text = (tmp_path / "reports" / "results.md").read_text()
    assert f"reproduce run: `{launched}`" in text and first["steps"]["evaluate-etd"]["run_id"] in text
    tags = mlflow.get_run(launched).data.tags
    assert tags["distill.step.train-etd.run_id"] == first["steps"]["train-etd"]["run_id"]
    assert tags["mlflow.runName"] == "reproduce-smoke"


def test_a_wiped_store_makes_the_steps_log_again(smoke, tmp_path, monkeypatch):
    _reproduce(smoke, FakeStages(), tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'other.db'}")
    stages = FakeStages()
    _reproduce(load_config("smoke", [f"run_dir={smoke.run_dir}"]), stages, tmp_path)
    assert "generate" in stages.calls and "promote" in stages.calls


@pytest.mark.slow  # `make reproduce` on the smoke preset in a subprocess: ~19 s
def test_make_reproduce_on_the_smoke_preset_builds_the_run_tree_champion_and_report(smoke, tmp_path):
    args = ["reproduce", "--preset", "smoke", "--set", f"run_dir={smoke.run_dir}",
            "--output-dir", str(tmp_path / "reports")]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output + repr(result.exception)
    parent_id = json.loads((smoke.run_path / "reproduce" / "parent.json").read_text())["run_id"]
    assert STEP_RUNS <= set(_children(parent_id))
    client = mlflow.MlflowClient()
    champion = client.get_model_version_by_alias("distill-student", "champion")
    assert champion.run_id in {mlflow.get_run(parent_id).data.tags[f"distill.step.train-{m}.run_id"]
                               for m in named_mixes()}
    assert mlflow.models.get_model_info("models:/distill-student@champion").artifact_path
    text = (tmp_path / "reports" / "results.md").read_text()
    assert f"reproduce run: `{parent_id}`" in text and "ETD (`etd`)" in text and "(training prior)" in text
    assert "**oracle**" in text and "## What the students learned" in text  # from the answers evaluate logged
    assert all((tmp_path / "reports" / name).stat().st_size > 0 for name in ("accuracy.png", "drop_rates.png",
                                                                                  "training_curves.png"))
    # the parent carries the four students side by side, and the run ends saying what to open next
    artifacts = {f.path for f in client.list_artifacts(parent_id, "comparison")}
    assert artifacts == {"comparison/accuracy.md", "comparison/accuracy.json", "comparison/accuracy.png"}
    rows = json.loads((smoke.run_path / "reproduce" / "comparison" / "accuracy.json").read_text())
    assert {r["student"] for r in rows if r["mix"] != "baseline"} == {"CoTD", "PoTD", "EoTD", "ETD"}
    assert {r["form"] for r in rows if r["mix"] == "baseline"} == {"prior", "oracle"}
    assert all(r["n"] == 3 and r["ci_low"] is not None for r in rows)
    assert all(r["distinct_answers"] is not None for r in rows if r["mix"] != "baseline")
    closing = result.output[result.output.index("report: "):]
    assert f"report: {(tmp_path / 'reports' / 'results.md').resolve()}" in closing
    assert "gsm8k (n=3)" in closing and "ETD" in closing and "constant" in closing
    assert "make ui" in closing and f"parentRunId%20%3D%20%27{parent_id}%27" in closing
    assert "make serve" in closing and "curl -s http://127.0.0.1:5005/invocations" in closing
    assert "UserWarning" not in result.output  # the expected MLflow warnings are silenced at their calls
    again = CliRunner().invoke(main, args)
    assert again.exit_code == 0, again.output
    step_lines = [line for line in again.output.splitlines() if line.startswith("[")]
    assert len(step_lines) == len(reproduce.plan()) and all("skipped" in line for line in step_lines)
    assert len(_children(parent_id)) == len(set(_children(parent_id)))
