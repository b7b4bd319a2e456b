"""The rl stage on the smoke preset with the tiny causal student, offline: GRPO after `train` writes
the student etd-grpo, which evaluate, register, promote and the pyfunc model take like any other;
its MLflow run has per-form rewards over steps and completions tables; an interrupted run resumes
in its own MLflow run; a seq2seq student is refused with one line."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from smoke_cli import smoke_cli

from distill.cli import main


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory, data_dir):
    """Data stages and an SFT ETD student, then rl interrupted at its third step and run again
    (it resumes), then evaluate, register (SFT and GRPO) and promote."""
    from distill import rewards

    root = tmp_path_factory.mktemp("rl")
    with smoke_cli(root, data_dir, "train.student=tiny-causal") as (cli, mp, uri):
        cli("generate")
        cli("verify")
        cli("mix", "--mix", "etd")
        cli("train", "--mix", "etd")
        # a kill during step 3's rewards: checkpoint-2 is the last one written
        real, calls = rewards.VerifierReward.__call__, []

        def crash(self, *args, **kwargs):
            calls.append(1)
            if len(calls) == 3:
                raise KeyboardInterrupt
            return real(self, *args, **kwargs)

        mp.setattr(rewards.VerifierReward, "__call__", crash)
        cli("rl", "--mix", "etd", code=1)
        resume = json.loads((root / "run" / "students" / "etd-grpo" / "checkpoints" / "resume.json").read_text())
        mp.setattr(rewards.VerifierReward, "__call__", real)
        summary = json.loads(cli("rl", "--mix", "etd").stdout)
        again = json.loads(cli("rl", "--mix", "etd").stdout)
        evaluated = {mix: cli("evaluate", "--mix", mix).output for mix in ("etd", "etd-grpo")}
        registered = {mix: cli("register", "--mix", mix).output for mix in ("etd", "etd-grpo")}
        cli("promote")
        yield {"root": root, "run": root / "run", "summary": summary, "again": again, "resume": resume,
               "evaluated": evaluated, "registered": registered, "uri": uri, "cli": cli}


@pytest.fixture
def client(pipeline, monkeypatch):
    import mlflow

    monkeypatch.setenv("MLFLOW_TRACKING_URI", pipeline["uri"])
    mlflow.set_tracking_uri(pipeline["uri"])  # reset by the pipeline fixture's teardown
    return mlflow.MlflowClient()


def test_the_grpo_student_card_names_its_parent_its_rl_run_and_its_reward(pipeline):
    card = json.loads((pipeline["run"] / "students" / "etd-grpo" / "card.json").read_text())
    parent = json.loads((pipeline["run"] / "students" / "etd" / "card.json").read_text())
    assert card["variant"] == "grpo" and card["mix"] == "etd" and set(card["forms"]) == {"cot", "pot", "eot"}
    assert card["train_run_id"] == pipeline["summary"]["run_id"] != parent["train_run_id"]
    assert card["parent"]["train_run_id"] == parent["train_run_id"]
    assert card["parent"]["folder"].endswith("students/etd")
    assert card["reward"]["wrong_answer"] == 0.1 and card["rl"]["trainer"] == "trl.GRPOTrainer"
    assert card["kind"] == "causal" and card["best_form"] in card["forms"]


def test_an_interrupted_rl_run_resumes_in_its_own_mlflow_run_and_a_finished_one_is_skipped(pipeline):
    assert pipeline["resume"]["finished"] is False
    assert pipeline["summary"]["run_id"] == pipeline["resume"]["run_id"]
    assert pipeline["summary"]["steps"] == 3
    assert pipeline["again"]["skipped"] is True


def test_the_rl_run_logs_rewards_per_form_over_steps_and_completions_tables(pipeline, client):
    run_id = pipeline["summary"]["run_id"]
    run = client.get_run(run_id)
    assert run.info.run_name == "rl-etd"
    assert (run.data.tags["distill.mix"], run.data.tags["distill.variant"]) == ("etd", "grpo")
    steps = {m.step for f in ("cot", "pot", "eot") for m in client.get_metric_history(run_id, f"rl/{f}/reward")}
    assert steps <= {1, 2, 3} and len(steps) >= 2
    for name in ("rl/reward", "rl/completion_length", "rl/timeouts", "val/eot/accuracy"):
        assert name in run.data.metrics, name
    tables = [a.path for a in client.list_artifacts(run_id, "rl/completions")]
    assert "rl/completions/step-000002.json" in tables
    with open(client.download_artifacts(run_id, "rl/completions/step-000002.json", str(pipeline["root"]))) as fh:
        table = json.load(fh)
    assert {"form", "gold", "completion", "answer", "status", "reward"} <= set(table["columns"])


def test_evaluate_writes_the_grpo_student_under_its_own_name_tagged_with_its_mix(pipeline, client):
    summary = json.loads((pipeline["run"] / "eval" / "etd-grpo" / "summary.json").read_text())
    assert summary["train_run_id"] == pipeline["summary"]["run_id"] and summary["variant"] == "grpo"
    run = client.get_run(summary["run_id"])
    assert run.info.run_name == "evaluate-etd-grpo"
    assert (run.data.tags["distill.mix"], run.data.tags["distill.variant"]) == ("etd", "grpo")
    sft = json.loads((pipeline["run"] / "eval" / "etd" / "summary.json").read_text())  # the SFT student's, apart
    assert sft["train_run_id"] != summary["train_run_id"] and sft["variant"] == ""


def test_register_tags_the_grpo_version_from_the_rl_run_and_promote_counts_it_among_etds(pipeline, client):
    versions = {v.tags.get("distill.variant", ""): v for v in client.search_model_versions("name = 'distill-student'")}
    grpo, sft = versions["grpo"], versions[""]
    assert grpo.tags["distill.mix"] == sft.tags["distill.mix"] == "etd"
    assert grpo.tags["distill.train_run_id"] == pipeline["summary"]["run_id"] == grpo.run_id
    assert sft.tags["distill.train_run_id"] != grpo.tags["distill.train_run_id"]
    rl_run = client.get_run(pipeline["summary"]["run_id"])
    selected = grpo.tags["distill.selected_form"]
    assert float(grpo.tags["val/selected/accuracy"]) == rl_run.data.metrics[f"val/{selected}/accuracy"]
    decision = json.loads((pipeline["run"] / "promote" / "decision.json").read_text())
    assert {c["version"] for c in decision["candidates"]} == {int(grpo.version), int(sft.version)}


def test_the_grpo_version_answers_through_its_pyfunc_model(pipeline, client):
    import mlflow

    grpo = next(v for v in client.search_model_versions("name = 'distill-student'")
                if v.tags.get("distill.variant") == "grpo")
    model = mlflow.pyfunc.load_model(f"models:/distill-student/{grpo.version}")
    assert model.metadata.metadata["distill"]["mix"] == "etd" and model.metadata.metadata["distill"]["variant"] == "grpo"
    out = model.predict([{"question": "Tom has 3 boxes of 12 pencils and gives away 7. How many are left?"}])
    assert len(out) == 1 and out["status"][0] in {"ok", "no_answer", "parse_error", "exec_error", "timeout", "unsafe"}
    assert isinstance(out["reasoning"][0], str)


def test_a_seq2seq_student_is_refused_with_one_line(tmp_path, monkeypatch):
    from transformers import T5Config

    T5Config(vocab_size=64, d_model=8, d_kv=4, d_ff=16, num_layers=1, num_heads=2).save_pretrained(tmp_path / "t5")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    result = CliRunner().invoke(main, ["rl", "--preset", "smoke", "--set", f"run_dir={tmp_path / 'run'}",
                                       "--set", f"rl.start={tmp_path / 't5'}"])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "supports causal (decoder-only) students only" in lines[0]
    assert "train.student=tiny-causal" in lines[0]


def test_rl_batch_size_must_hold_whole_groups(tmp_path):
    from distill.config import ConfigError, load_config

    with pytest.raises(ConfigError, match=r"rl.batch_size \(6\) must be a multiple of rl.num_generations \(4\)"):
        load_config("smoke", ["rl.batch_size=6", "rl.num_generations=4"])


def test_the_store_reader_keeps_the_grpo_evaluation_apart_from_the_sft_one(pipeline, client):
    from distill.config import load_config
    from distill.results import collect

    results = collect(load_config("smoke", [f"run_dir={pipeline['run']}"]), None)
    sft = json.loads((pipeline["run"] / "eval" / "etd" / "summary.json").read_text())
    grpo = json.loads((pipeline["run"] / "eval" / "etd-grpo" / "summary.json").read_text())
    assert results.steps["evaluate-etd"].run_id == sft["run_id"]
    assert results.steps["evaluate-etd-grpo"].run_id == grpo["run_id"]


def test_rl_can_start_from_a_named_model_folder_instead_of_the_mix_student(pipeline, tmp_path):
    import shutil

    from distill.config import load_config
    from distill.stages import rl

    shutil.copytree(pipeline["run"] / "mix" / "etd", tmp_path / "mix" / "etd")
    start = pipeline["run"] / "students" / "etd" / "model"
    cfg = load_config("smoke", [f"run_dir={tmp_path}", f"rl.start={start}", "rl.max_steps=2"])
    summary = rl.run(cfg, tmp_path, None)
    card = json.loads((tmp_path / "students" / "etd-grpo" / "card.json").read_text())
    assert summary["steps"] == 2 and card["parent"]["start"] == str(start) and card["parent"]["folder"] is None
    assert card["rl"]["start"] == str(start) and card["variant"] == "grpo" and set(card["forms"]) == {"cot", "pot", "eot"}
    assert not (tmp_path / "students" / "etd").exists()
