"""The study's starting point: `distill evaluate --untrained` measures the configured student as it comes,
and the report and `distill compare` put it beside the trained students with paired tests.

One smoke pipeline with the tiny causal student, offline, through the CLI: the data stages, the train
stage (a spy records the weights the trainer starts from), the SFT student's evaluation, the untrained
base's, and the evaluation of a student folder whose card says variant grpo (the rl stage's output
layout; its weights are the SFT student's, so RL over SFT is +0 here); then the report reads the store.
"""
from __future__ import annotations

import json
import shutil

import pytest
from click.testing import CliRunner

from distill.cli import main


@pytest.fixture(scope="module")
def study(tmp_path_factory, data_dir):
    root = tmp_path_factory.mktemp("untrained")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    env = {"MLFLOW_TRACKING_URI": uri, "DISTILL_DATA_DIR": str(data_dir), "HF_HUB_OFFLINE": "1",
           "MLFLOW_DISABLE_TELEMETRY": "true"}
    common = ["--preset", "smoke", "--set", f"run_dir={root / 'run'}", "--set", "train.student=tiny-causal"]
    runner = CliRunner()

    def cli(*args, ok=True):
        result = runner.invoke(main, [*args, *common], env=env, catch_exceptions=False)
        if ok:
            assert result.exit_code == 0, result.output
        return result

    from distill.stages import train as train_stage
    from distill.training import weights_digest

    started_from = []
    real_trainer_for = train_stage.trainer_for

    def recording_trainer_for(model, *args, **kwargs):  # the real Trainer, after noting its first weights
        started_from.append(weights_digest(model))
        return real_trainer_for(model, *args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        mp.setenv("MLFLOW_REGISTRY_URI", uri)
        for key, value in env.items():
            mp.setenv(key, value)
        cli("generate")
        cli("verify")
        cli("mix", "--mix", "etd")
        mp.setattr(train_stage, "trainer_for", recording_trainer_for)
        cli("train", "--mix", "etd")
        mp.undo()
        mp.chdir(root)
        for key, value in env.items():
            mp.setenv(key, value)
        mp.setenv("MLFLOW_REGISTRY_URI", uri)
        cli("evaluate", "--mix", "etd")
        untrained = cli("evaluate", "--untrained", "--mix", "etd").output
        grpo = root / "etd-grpo"
        shutil.copytree(root / "run" / "students" / "etd", grpo, ignore=shutil.ignore_patterns("checkpoints"))
        card = json.loads((grpo / "card.json").read_text())
        (grpo / "card.json").write_text(json.dumps({**card, "variant": "grpo"}))
        cli("evaluate", "--student", str(grpo))
        refused = cli("register", "--mix", "etd-base", ok=False)
        try:
            yield {"root": root, "run": root / "run", "uri": uri, "started_from": started_from,
                   "untrained": untrained, "refused": refused, "cli": cli}
        finally:
            import mlflow

            mlflow.set_tracking_uri(None)
            mlflow.set_registry_uri(None)


def _runs(uri: str) -> dict:
    import mlflow

    client = mlflow.MlflowClient(uri)
    experiment = client.get_experiment_by_name("distill")
    return {r.info.run_name: r for r in client.search_runs([experiment.experiment_id], "tags.`distill.stage` = 'evaluate'")}


def test_evaluate_untrained_writes_eval_mix_base_and_a_run_tagged_with_the_mix_and_variant_base(study):
    summary = json.loads((study["run"] / "eval" / "etd-base" / "summary.json").read_text())
    assert (summary["mix"], summary["variant"], summary["student_name"]) == ("etd", "base", "etd-base")
    assert set(summary["forms"]) == {"cot", "pot", "eot"}
    assert {ts: s["n"] for ts, s in summary["test_sets"].items()} == {
        "gsm8k": 3, "asdiv": 3, "svamp": 3, "multiarith": 3}
    assert summary["train_run_id"] is None and summary["selected_form"] is None
    run = _runs(study["uri"])["evaluate-etd-base"]
    tags = run.data.tags
    assert (tags["distill.mix"], tags["distill.variant"], tags["distill.forms"]) == ("etd", "base", "cot,pot,eot")
    assert "distill.train_run_id" not in tags
    assert run.data.metrics["gsm8k/n"] == 3 and "gsm8k/eot/ci_high" in run.data.metrics
    # the same student input as the trained student's: question plus the form's instruction
    first = json.loads((study["run"] / "eval" / "etd-base" / "gsm8k" / "eot.jsonl").read_text().splitlines()[0])
    trained = json.loads((study["run"] / "eval" / "etd" / "gsm8k" / "eot.jsonl").read_text().splitlines()[0])
    assert first["input"] == trained["input"] and first["input"].endswith("System of linear equations: (Do not simplify)\n")
    assert "untrained: tiny-causal as it comes" in study["untrained"]


def test_the_untrained_student_is_the_model_the_train_stage_starts_from(study):
    from distill.student import load_student
    from distill.training import weights_digest

    card = json.loads((study["run"] / "students" / "etd-base" / "card.json").read_text())
    assert (card["variant"], card["mix"], card["student"], card["train_run_id"]) == ("base", "etd", "tiny-causal", None)
    from distill.config import load_config

    seed = load_config("smoke").train.seed
    assert card["weights"]["source"] == f"built from a config (seed {seed}), untrained"
    model, _ = load_student(study["run"] / "students" / "etd-base" / "model")
    assert study["started_from"] and weights_digest(model) == study["started_from"][0]
    # and the trained student moved away from it
    trained, _ = load_student(study["run"] / "students" / "etd" / "model")
    assert weights_digest(trained) != study["started_from"][0]


def test_a_plain_students_evaluation_keeps_its_name_and_has_no_variant_tag(study):
    runs = _runs(study["uri"])
    assert {"evaluate-etd", "evaluate-etd-base", "evaluate-etd-grpo"} <= set(runs)
    assert "distill.variant" not in runs["evaluate-etd"].data.tags
    assert runs["evaluate-etd-grpo"].data.tags["distill.variant"] == "grpo"
    assert (study["run"] / "eval" / "etd-grpo" / "summary.json").is_file()


def test_a_base_student_is_refused_by_register_with_one_line(study):
    refused = study["refused"]
    assert refused.exit_code != 0
    lines = [line for line in refused.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "starting point, not a candidate" in lines[0]


def test_register_refuses_an_evaluation_whose_card_says_base_under_any_name(study):
    from distill.config import load_config
    from distill.files import DataError, read_json
    from distill.stages import register

    cfg = load_config("smoke", [f"run_dir={study['run']}"])
    summary = read_json(study["run"] / "eval" / "etd-base" / "summary.json")
    with pytest.raises(DataError, match="untrained base student"):
        register.run(cfg, study["run"], None, eval_summary=summary, log=lambda line: None)


def test_the_report_puts_base_sft_and_grpo_side_by_side_with_paired_tests(study, tmp_path, monkeypatch):
    from distill.config import load_config
    from distill.results import collect, gains
    from distill.stages import report

    monkeypatch.setenv("MLFLOW_TRACKING_URI", study["uri"])
    cfg = load_config("smoke")
    results = collect(cfg)
    assert list(results.evaluations()) == ["etd-base", "etd", "etd-grpo"]
    rows = gains(results)
    sft = {r["test_set"]: r for r in rows if r["what"] == "SFT over base"}
    assert set(sft) == {"gsm8k", "asdiv", "svamp", "multiarith"}
    selected = results.evaluations()["etd"].tags["distill.selected_form"]
    for r in sft.values():
        # the base answers in the form its SFT student chose on validation; same problems, n 3
        assert (r["a"], r["b"], r["a_form"], r["b_form"], r["n"]) == ("etd", "etd-base", selected, selected, 3)
        assert 0.0 <= r["p_value"] <= 1.0 and r["a_only"] + r["b_only"] <= 3
    rl = [r for r in rows if r["what"] == "RL over SFT"]
    # the grpo folder holds the SFT weights: the same answers, no discordant problem, p = 1
    assert rl and all((r["a_only"], r["b_only"], r["p_value"]) == (0, 0, 1.0) for r in rl)

    report.run(cfg, output_dir=tmp_path)
    text = (tmp_path / "results.md").read_text()
    section = text.split("## From the starting point")[1].split("\n## ")[0]
    assert "| ETD (`etd`) | ETD base (untrained) (`etd-base`) |" in section
    assert "| ETD (`etd`) | ETD (`etd`) | selected = " in section
    assert "| ETD (`etd`) | ETD+GRPO (`etd-grpo`) |" in section
    assert ", n=3 |" in section and "[" in section
    assert f"| ETD (`etd`) | SFT over base | ETD ({selected}) | ETD base (untrained) ({selected}) |" in section
    assert "| ETD (`etd`) | RL over SFT | ETD+GRPO (" in section and "+0.0 (0/0) p 1" in section
    # beside the paper's "no distillation" column: the same student untrained
    assert f"| ours: the same student untrained (`etd-base`, {selected}) | " in text
    for name in report.PLOTS:
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_compare_prints_each_students_row_and_the_gains_with_p_values(study):
    result = study["cli"]("compare")
    out = result.output
    assert "ETD base (untrained)" in out and "ETD+GRPO" in out
    assert "SFT over base, gsm8k (n=3): ETD (" in out and "RL over SFT, gsm8k (n=3)" in out
    assert " p 1" in out or " p 0." in out


def test_a_hub_or_folder_student_is_evaluated_as_it_comes_without_copying_its_weights(study, tmp_path):
    from distill.config import load_config
    from distill.stages import evaluate

    folder = study["run"] / "students" / "etd" / "model"  # a local folder stands for a hub model offline
    cfg = load_config("smoke", overrides=[f"train.student={folder}", f"run_dir={tmp_path}",
                                          "data.test_sets=gsm8k", "evaluate.limit=2"])
    summary = evaluate.run_untrained(cfg, tmp_path, None, log=lambda line: None)
    base = tmp_path / "students" / "etd-base"
    assert sorted(p.name for p in base.iterdir()) == ["card.json"]  # the card names the weights
    card = json.loads((base / "card.json").read_text())
    assert card["weights"]["source"] == str(folder) and card["weights"]["folder"] == str(folder.resolve())
    assert summary["student_name"] == "etd-base" and summary["test_sets"]["gsm8k"]["n"] == 2
    # the same weights as the folder's: the evaluation's digest is that of the folder's files
    assert summary["student"]["digest"] == evaluate.student_digest(folder, cfg)


def test_a_causal_students_base_is_a_reproduce_step_and_a_seq2seq_ones_is_not(study):
    from distill.config import load_config
    from distill.stages import reproduce
    from distill.student import is_causal_student

    assert reproduce.measures_base(load_config("smoke")) is False  # tiny (seq2seq): the default run does not grow
    assert reproduce.measures_base(load_config("smoke", ["train.student=tiny-causal"])) is True
    assert is_causal_student(str(study["run"] / "students" / "etd" / "model")) is True  # a folder: its config
    names = [s.name for s in reproduce.plan(base=True)]
    assert names.index("evaluate-etd") < names.index("evaluate-etd-base") < names.index("register-cot")
    assert [s.name for s in reproduce.plan()] == [n for n in names if n != "evaluate-etd-base"]


def test_reproduce_of_a_causal_preset_runs_the_base_step_under_its_parent(tmp_path, mlflow_uri, data_dir,
                                                                        monkeypatch):
    from test_reproduce import FakeStages

    from distill.config import load_config
    from distill.stages import reproduce
    from distill.tracking import Tracker

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DISTILL_DATA_DIR", str(data_dir))
    cfg = load_config("smoke", [f"run_dir={tmp_path / 'run'}", "train.student=tiny-causal"])
    stages = FakeStages()
    seen = []

    def untrained(cfg, run_dir, tracker):  # logs what the real run_untrained logs, and the call
        mix = cfg.mix.mix
        seen.append(mix)
        tags = {"distill.stage": "evaluate", "distill.preset": cfg.preset, "distill.mix": mix, "distill.variant": "base"}
        with tracker.run(f"evaluate-{mix}-base", tags, nested=True) as run:
            tracker.log_metrics({"gsm8k/eot/accuracy": 0.25})
        (run_dir / "eval" / f"{mix}-base").mkdir(parents=True, exist_ok=True)
        (run_dir / "eval" / f"{mix}-base" / "summary.json").write_text("{}")
        return {"run_id": run.info.run_id}

    stages["evaluate.run_untrained"] = untrained
    tracker = Tracker(cfg.tracking_uri, cfg.tracking.experiment)
    out = reproduce.run(cfg, cfg.run_path, tracker, stages=stages, report_dir=tmp_path / "reports",
                        log=lambda line: None)
    assert seen == ["etd"] and "evaluate-etd-base" not in stages.calls
    parent = mlflow_run(out["parent_run_id"])
    assert parent.data.tags["distill.step.evaluate-etd-base.run_id"] == out["steps"]["evaluate-etd-base"]["run_id"]
    assert "| ETD base (untrained) (`etd-base`) |" in (tmp_path / "reports" / "results.md").read_text()
    again = reproduce.run(cfg, cfg.run_path, tracker, stages=FakeStages(), report_dir=tmp_path / "reports",
                          log=lambda line: None)
    assert again["timings"]["evaluate-etd-base"]["skipped"] is True  # resumes like every step


def mlflow_run(run_id: str):
    import mlflow

    return mlflow.get_run(run_id)


def test_a_base_with_the_chat_template_is_asked_through_it_as_its_card_says(study, tmp_path):
    from transformers import AutoTokenizer

    from distill.config import load_config
    from distill.stages import evaluate

    instruct = tmp_path / "instruct"  # a local instruct model: the trained tiny student plus a chat template
    shutil.copytree(study["run"] / "students" / "etd" / "model", instruct)
    tokenizer = AutoTokenizer.from_pretrained(instruct)
    tokenizer.chat_template = "{% for m in messages %}<user>{{ m['content'] }}{% endfor %}<assistant>"
    tokenizer.save_pretrained(instruct)
    cfg = load_config("smoke", [f"train.student={instruct}", "train.chat_template=true", f"run_dir={tmp_path}",
                                "data.test_sets=gsm8k", "evaluate.limit=1", "evaluate.forms=eot"])
    summary = evaluate.run_untrained(cfg, tmp_path, None, log=lambda line: None)
    card = json.loads((tmp_path / "students" / "etd-base" / "card.json").read_text())
    assert card["chat_template"] is True and summary["decoding"]["chat_template"] is True
    assert list(summary["forms"]) == ["eot"]
