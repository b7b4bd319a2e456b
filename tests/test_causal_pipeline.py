"""A decoder-only student through the whole pipeline on the smoke preset, offline: the CLI's train
(tiny-causal, full and LoRA), evaluate, register and promote, then the champion answers a question
through its MLflow pyfunc model (what `mlflow models serve` loads)."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from smoke_cli import smoke_cli

from distill.cli import main


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory, data_dir):
    """Data stages once, then a full causal ETD student and a LoRA one (adapter kept) on EoT."""
    root = tmp_path_factory.mktemp("causal")
    with smoke_cli(root, data_dir, "train.student=tiny-causal") as (cli, _, uri):
        cli("generate")
        cli("verify")
        for mix in ("etd", "eot"):
            cli("mix", "--mix", mix)
        full = json.loads(cli("train", "--mix", "etd").stdout)
        lora = json.loads(cli("train", "--mix", "eot", "--set", "train.lora_r=8",
                              "--set", "train.lora_merge=false").stdout)
        evaluated = {mix: cli("evaluate", "--mix", mix).output for mix in ("etd", "eot")}
        registered = {mix: cli("register", "--mix", mix).output for mix in ("etd", "eot")}
        promoted = cli("promote").output
        yield {"root": root, "run": root / "run", "full": full, "lora": lora, "evaluated": evaluated,
               "registered": registered, "promoted": promoted, "uri": uri}


def test_the_causal_student_is_trained_and_its_card_says_what_it_is(pipeline):
    card = json.loads((pipeline["run"] / "students" / "etd" / "card.json").read_text())
    assert (card["kind"], card["architecture"], card["chat_template"], card["lora"]) == (
        "causal", "LlamaForCausalLM", False, None)
    assert card["training"]["trainer"] == "transformers.Trainer"
    assert pipeline["full"]["steps"] == 3 and pipeline["full"]["model_logged"] is True


def test_a_lora_student_trains_only_its_adapter_and_saves_it_beside_its_base(pipeline):
    lora, out = pipeline["lora"], pipeline["run"] / "students" / "eot"
    assert 0 < lora["trainable_params"] < lora["n_params"] / 2
    card = json.loads((out / "card.json").read_text())
    assert card["lora"]["r"] == 8 and card["lora"]["merged"] is False and card["base_model"].startswith("base/")
    assert (out / "model" / "adapter_config.json").is_file() and (out / "model" / "base" / "config.json").is_file()


def test_both_causal_students_are_evaluated_on_every_test_set(pipeline):
    for mix in ("etd", "eot"):
        summary = json.loads((pipeline["run"] / "eval" / mix / "summary.json").read_text())
        assert set(summary["test_sets"]) == {"gsm8k", "asdiv", "svamp", "multiarith"}
        assert summary["student"]["card"]["kind"] == "causal"


def test_the_promoted_causal_champion_and_the_lora_version_answer_through_pyfunc(pipeline, monkeypatch):
    import mlflow

    monkeypatch.setenv("MLFLOW_TRACKING_URI", pipeline["uri"])
    mlflow.set_tracking_uri(pipeline["uri"])  # reset by the pipeline fixture's teardown
    client = mlflow.MlflowClient()
    champion = client.get_model_version_by_alias("distill-student", "champion")
    versions = client.search_model_versions("name = 'distill-student'")
    lora_version = next(v for v in versions if v.tags.get("distill.mix") == "eot")
    question = "Tom has 3 boxes of 12 pencils and gives away 7 pencils. How many pencils does he have left?"
    for uri in ("models:/distill-student@champion", f"models:/distill-student/{lora_version.version}"):
        model = mlflow.pyfunc.load_model(uri)
        out = model.predict([{"question": question}])
        assert list(out.columns)[:2] == ["answer", "thought"] and len(out) == 1
        # an untrained student's text is whatever it is, but the row is a verdict, never an exception
        assert out["status"][0] in {"ok", "no_answer", "parse_error", "exec_error", "timeout", "unsafe",
                                    "wrong_answer"}
        assert isinstance(out["reasoning"][0], str)
    assert champion.tags.get("distill.mix") == "etd"


def test_evaluate_with_four_samples_logs_maj_and_pass_at_4_for_every_form_and_results_md_shows_them(pipeline):
    import mlflow

    env = {"MLFLOW_TRACKING_URI": pipeline["uri"], "HF_HUB_OFFLINE": "1", "MLFLOW_DISABLE_TELEMETRY": "true"}
    common = ["--preset", "smoke", "--set", f"run_dir={pipeline['run']}", "--set", "train.student=tiny-causal"]
    runner = CliRunner()
    greedy_run = json.loads((pipeline["run"] / "eval" / "etd" / "summary.json").read_text())["run_id"]
    result = runner.invoke(main, ["evaluate", "--mix", "etd", "--set", "evaluate.samples=4", *common], env=env,
                           catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "eot/maj@4" in result.output and "vote/maj@4" in result.output
    client = mlflow.MlflowClient(pipeline["uri"])
    sampled = client.get_run(json.loads((pipeline["run"] / "eval" / "etd" / "summary.json").read_text())["run_id"])
    greedy = client.get_run(greedy_run)
    m = sampled.data.metrics
    for ts in ("gsm8k", "asdiv", "svamp", "multiarith"):
        for name in ("cot", "pot", "eot"):
            for score in ("maj_at_4", "pass_at_4", "mean_at_4"):
                cell = [m[f"{ts}/{name}/{score}/{key}"] for key in ("ci_low", "accuracy", "ci_high")]
                assert 0.0 <= cell[0] <= cell[1] <= cell[2] <= 1.0
            # strict beside lenient for every form (each has repair rules or fallbacks)
            assert m[f"{ts}/{name}/strict/accuracy"] <= m[f"{ts}/{name}/accuracy"] + 1e-9
        assert f"{ts}/vote/maj_at_4/accuracy" in m
    # the greedy run (samples = 1, the default) has no sampled metric; the sampled one adds only those
    assert not any("_at_" in name for name in greedy.data.metrics)
    assert {k for k in m if "_at_" not in k} == set(greedy.data.metrics)
    report = runner.invoke(main, ["report", "--output-dir", str(pipeline["root"] / "report"), *common], env=env,
                           catch_exceptions=False)
    assert report.exit_code == 0, report.output
    text = (pipeline["root"] / "report" / "results.md").read_text()
    assert "## Sampling: maj@k, pass@k" in text and "## Strict and lenient accuracy" in text
    for name in ("cot", "pot", "eot", "vote"):
        assert f"| ETD (`etd`) | {name} | maj@4 |" in text
    for name in ("cot", "pot", "eot"):
        assert f"| ETD (`etd`) | {name} | pass@4 |" in text and f"| ETD (`etd`) | {name} | mean@4 |" in text
    compare = runner.invoke(main, ["compare", *common], env=env, catch_exceptions=False)
    assert compare.exit_code == 0 and "pass@4" in compare.output and "maj@4" in compare.output
