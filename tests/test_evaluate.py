"""The evaluate stage on a tiny random student: refusals, metrics, tables, tags, resume (decoding itself:
test_decoding.py; finding the student: test_student.py)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from distill.config import load_config, replace
from distill.files import DataError, read_log
from distill.thoughts import Verdict, form_names

TEST_SETS = ("gsm8k", "asdiv", "svamp", "multiarith")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


# --- fixtures: a tiny random T5 saved like the train stage saves a student ---------------------

def tiny_model(seed: int = 0):
    import torch
    from transformers import ByT5Tokenizer, T5Config, T5ForConditionalGeneration

    tokenizer = ByT5Tokenizer()  # byte-level, needs no download
    config = T5Config(vocab_size=len(tokenizer), d_model=32, d_kv=8, d_ff=64, num_layers=1, num_decoder_layers=1,
                      num_heads=4, pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
                      decoder_start_token_id=tokenizer.pad_token_id,
                      # at the default scale a random T5 only ever writes <pad>; larger weights write bytes
                      initializer_factor=5.0)
    torch.manual_seed(seed)
    return T5ForConditionalGeneration(config), tokenizer


def save_student(folder: Path, forms=form_names(), seed: int = 0, versions: dict | None = None,
                 best_form: str | None = None) -> Path:
    from distill.thoughts import get_form

    model, tokenizer = tiny_model(seed)
    model.save_pretrained(folder / "model")
    tokenizer.save_pretrained(folder / "model")
    card = {"mix": "etd" if len(forms) == 3 else "+".join(forms),
            "forms": {f: {"version": (versions or {}).get(f, get_form(f).version),
                          "instruction": get_form(f).instruction} for f in forms},
            "student": "tiny-test", "tokenizer": "byt5", "data_digest": "d1g3st", "train_run_id": None,
            "preset": "test", "best_val_loss": 9.9}
    if best_form:
        card["best_form"] = best_form  # the train stage's choice on the validation split
    (folder / "card.json").write_text(json.dumps(card))
    return folder


def make_cfg(data_dir: Path, limit: int = 2, test_sets: tuple[str, ...] | None = None, **evaluate):
    cfg = load_config(None, [f"data.data_dir={data_dir}", "data.hub=false"])
    data = {"test_sets": test_sets} if test_sets else {}
    return replace(cfg, data=data, evaluate={"limit": limit, "batch_size": 4, "max_new_tokens": 12, **evaluate})


class StubForm:
    """A form whose verdicts do not depend on the output: eot right, pot's program fails, cot off by one."""

    def __init__(self, name):
        from distill.thoughts import get_form

        self.name = name
        self.version = get_form(name).version  # as on the cards save_student writes
        self.instruction = f"instruction of {name}"

    def student_input(self, question):
        return "Question: " + question + "\n" + self.instruction + "\n"

    def verify_many(self, completions, golds, *, timeout=5.0, strict=False):
        assert len(completions) == len(golds)
        if self.name == "eot":
            return [Verdict("correct", g, "", "eot", self.version) for g in golds]
        if self.name == "pot":
            return [Verdict("exec_error", None, "NameError", "pot", self.version) for _ in golds]
        return [Verdict("wrong_answer", g + 1, "off by one", "cot", self.version) for g in golds]


@pytest.fixture
def stub_forms(monkeypatch):
    from distill.stages import evaluate as stage

    monkeypatch.setattr(stage, "get_form", StubForm)


# --- finding the student -----------------------------------------------------------------------

def test_asking_for_a_form_the_student_was_not_trained_on_is_refused(tmp_path, data_dir, stub_forms):
    from distill.stages import evaluate as stage

    save_student(tmp_path / "students" / "eot", forms=("eot",))
    with pytest.raises(DataError, match="trained on eot, not 'pot'"):
        stage.run(replace(make_cfg(data_dir, forms=("pot",)), mix={"mix": "eot"}), tmp_path)


def test_an_unknown_form_name_lists_the_valid_ones(tmp_path, data_dir):
    from distill.stages import evaluate as stage

    save_student(tmp_path / "students" / "etd", forms=("eot",))
    with pytest.raises(DataError, match="valid forms: cot, pot, eot"):
        stage.run(make_cfg(data_dir, forms=("tot",)), tmp_path)


def test_a_card_with_another_form_version_is_refused(tmp_path, data_dir, stub_forms):
    from distill.stages import evaluate as stage

    save_student(tmp_path / "students" / "eot", forms=("eot",), versions={"eot": 7})
    with pytest.raises(DataError, match="eot version 7"):
        stage.run(replace(make_cfg(data_dir), mix={"mix": "eot"}), tmp_path)


def test_an_unknown_test_set_lists_the_valid_ones(tmp_path, data_dir):
    from distill.stages import evaluate as stage

    with pytest.raises(DataError, match="valid: gsm8k"):
        stage.run(make_cfg(data_dir, test_sets=("gsm9k",)), tmp_path)


# --- the stage with stub forms: numbers checked by hand ------------------------------------------

def test_stage_scores_forms_vote_fallback_and_selected_as_computed_by_hand(tmp_path, data_dir, stub_forms):
    from distill.scoring import wilson
    from distill.stages import evaluate as stage

    # chosen on validation: cot, although eot is the best form on these test sets
    save_student(tmp_path / "students" / "etd", best_form="cot")
    cfg = make_cfg(data_dir, limit=3, test_sets=("svamp", "multiarith"))
    summary = stage.run(cfg, tmp_path)

    # eot always right, pot's program always fails, cot always off by one:
    # vote = eot vs cot (one vote each) -> tie -> eot -> right; fallback -> eot -> right
    m = summary["metrics"]  # the end-to-end test checks that these are the logged metrics
    for t in ("svamp", "multiarith"):
        assert m[f"{t}/eot/accuracy"] == 1.0 and m[f"{t}/pot/accuracy"] == 0.0 and m[f"{t}/cot/accuracy"] == 0.0
        assert m[f"{t}/pot/failures/exec_error"] == 3 and m[f"{t}/cot/failures/wrong_answer"] == 3
        assert m[f"{t}/vote/accuracy"] == 1.0 and m[f"{t}/fallback/accuracy"] == 1.0
        assert m[f"{t}/selected/accuracy"] == 0.0 and summary["test_sets"][t]["selected"]["form"] == "cot"
        assert (m[f"{t}/selected/ci_low"], m[f"{t}/selected/ci_high"]) == pytest.approx(wilson(0, 3))
        assert (m[f"{t}/eot/ci_low"], m[f"{t}/eot/ci_high"]) == pytest.approx(wilson(3, 3))
        assert m[f"{t}/n"] == 3 and summary["test_sets"][t]["n"] == 3
        assert not any("/best/" in k for k in m)
    assert summary["selected_form"] == "cot"
    saved = json.loads((tmp_path / "eval" / "etd" / "summary.json").read_text())
    assert saved["metrics"] == m and saved["train_run_id"] is None and saved["data_digest"] == "d1g3st"


# --- the stage end to end with the real forms ----------------------------------------------------

def test_evaluate_end_to_end_logs_metrics_tables_and_tags_on_all_four_test_sets(
        tmp_path, data_dir, mlflow_uri, count_generations):
    import mlflow

    from distill.stages import evaluate as stage
    from distill.tracking import Tracker

    save_student(tmp_path / "students" / "etd", best_form="pot")
    cfg = make_cfg(data_dir, limit=2)
    summary = stage.run(cfg, tmp_path, Tracker(mlflow_uri, "distill"))
    assert count_generations == [2] * 12  # 4 test sets x 3 forms, 2 problems each

    client = mlflow.MlflowClient()
    run = client.get_run(summary["run_id"])
    assert run.info.run_name == "evaluate-etd"
    tags = run.data.tags
    assert tags["distill.stage"] == "evaluate" and tags["distill.mix"] == "etd"
    assert tags["distill.forms"] == "cot,pot,eot" and tags["distill.data_digest"] == "d1g3st"
    m = run.data.metrics
    for t in TEST_SETS:
        for f in form_names():
            assert 0.0 <= m[f"{t}/{f}/accuracy"] <= 1.0
            assert sum(v for k, v in m.items() if k.startswith(f"{t}/{f}/failures/")) == \
                2 - round(2 * m[f"{t}/{f}/accuracy"])
        for name in (*form_names(), "vote", "fallback", "selected"):
            assert m[f"{t}/{name}/ci_low"] <= m[f"{t}/{name}/accuracy"] <= m[f"{t}/{name}/ci_high"]
        assert m[f"{t}/selected/accuracy"] == m[f"{t}/pot/accuracy"] and m[f"{t}/n"] == 2
    assert tags["distill.selected_form"] == "pot" and not any("best" in k for k in [*tags, *m])

    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "eval/gsm8k")}
    assert {"eval/gsm8k/eot.json", "eval/gsm8k/pot.json", "eval/gsm8k/cot.json", "eval/gsm8k/combined.json"} <= artifacts
    table = json.loads(Path(mlflow.artifacts.download_artifacts(
        run_id=run.info.run_id, artifact_path="eval/gsm8k/eot.json", dst_path=str(tmp_path / "dl"))).read_text())
    assert {"question", "output", "answer", "gold", "status", "reason"} <= set(table["columns"])
    assert len(table["data"]) == 2
    correct = json.loads(Path(mlflow.artifacts.download_artifacts(
        run_id=run.info.run_id, artifact_path="eval/gsm8k/correct.json", dst_path=str(tmp_path / "dl"))).read_text())
    assert correct["problem_ids"] == [r[table["columns"].index("problem_id")] for r in table["data"]]
    assert set(correct["correct"]) == {*form_names(), "vote", "fallback", "selected"}
    assert sum(correct["correct"]["eot"]) == round(2 * m["gsm8k/eot/accuracy"])
    assert correct["correct"]["selected"] == correct["correct"]["pot"]
    # the answers themselves and the golds, for the report's answer profiles and oracle constant
    assert correct["gold"] == [r[table["columns"].index("gold")] for r in table["data"]]
    assert set(correct["answers"]) == set(correct["correct"]) and len(correct["answers"]["eot"]) == 2
    assert 1 <= m["gsm8k/eot/distinct_answers"] <= 2 and m["gsm8k/eot/top_answer_share"] >= 0.5
    # two problems: one answer to both is more than 90%, so some name is degenerate, and the tag says which
    assert tags["distill.degenerate"] == "no" or "(100%)" in tags["distill.degenerate"]
    assert (tags["distill.degenerate"] == "no") == all(m[f"{t}/{n}/top_answer_share"] <= 0.9 for t in TEST_SETS
                                                       for n in (*form_names(), "vote", "fallback", "selected"))

    saved = json.loads((tmp_path / "eval" / "etd" / "summary.json").read_text())
    assert saved["metrics"] == pytest.approx({k: v for k, v in m.items()})
    assert saved["forms"]["eot"]["version"] >= 1 and saved["data_digest"] == "d1g3st"
    records = list(read_log(tmp_path / "eval" / "etd" / "svamp" / "pot.jsonl"))
    from distill.problems import load_problems

    assert [r["problem_id"] for r in records] == [p.id for p in load_problems("svamp", "test", data_dir)[:2]]
    assert all(r["status"] in ("correct", "wrong_answer", "no_answer", "parse_error", "exec_error", "timeout",
                               "unsafe") for r in records)


def test_a_rerun_skips_answered_problems_and_a_larger_limit_answers_only_the_new_ones(
        tmp_path, data_dir, stub_forms, count_generations):
    from distill.stages import evaluate as stage

    save_student(tmp_path / "students" / "etd")
    cfg = make_cfg(data_dir, limit=2, test_sets=("svamp",))
    first = stage.run(cfg, tmp_path)
    again = stage.run(cfg, tmp_path)
    assert count_generations == [2, 2, 2]  # the rerun generated nothing
    assert again["metrics"] == first["metrics"]
    stage.run(replace(cfg, evaluate={"limit": 3}), tmp_path)
    assert count_generations == [2, 2, 2, 1, 1, 1]
    assert len(list(read_log(tmp_path / "eval" / "etd" / "svamp" / "eot.jsonl"))) == 3


def test_answers_of_another_student_are_not_reused(tmp_path, data_dir, stub_forms, count_generations):
    from distill.stages import evaluate as stage

    cfg = make_cfg(data_dir, limit=2, test_sets=("multiarith",), forms=("eot",))
    save_student(tmp_path / "students" / "etd", seed=0)
    stage.run(cfg, tmp_path)
    save_student(tmp_path / "students" / "etd", seed=1)  # retrained: other weights
    stage.run(cfg, tmp_path)
    assert count_generations == [2, 2]
    assert len(list(read_log(tmp_path / "eval" / "etd" / "multiarith" / "eot.jsonl"))) == 2


def test_cli_evaluate_prints_a_table_and_writes_the_summary(tmp_path, data_dir, stub_forms, mlflow_uri, monkeypatch):
    from click.testing import CliRunner

    from distill.cli import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DISTILL_DATA_DIR", str(data_dir))  # --data-dir sets it; restored after the test
    save_student(tmp_path / "student", forms=("eot", "pot"))
    result = CliRunner().invoke(main, [
        "evaluate", "--preset", "smoke", "--data-dir", str(data_dir), "--mix", "", "--student", str(tmp_path / "student"),
        "--set", "data.test_sets=svamp,multiarith", "--set", "evaluate.limit=2", "--overrides", "evaluate.max_new_tokens=8"])
    assert result.exit_code == 0, result.output
    assert "svamp" in result.output and "100.0%" in result.output
    summary = json.loads((tmp_path / "runs" / "smoke" / "eval" / "eot+pot" / "summary.json").read_text())
    assert summary["test_sets"]["multiarith"]["n"] == 2 and set(summary["forms"]) == {"eot", "pot"}


def test_the_selected_form_is_the_cards_validation_choice_never_a_test_pick():
    from distill.stages.evaluate import selected_form

    assert selected_form({"best_form": "pot"}, ("cot", "pot", "eot")) == "pot"
    assert selected_form({"best_form": "pot"}, ("cot", "eot")) is None  # not asked for: no selected score
    assert selected_form({}, ("cot", "pot", "eot")) is None  # no validation choice: none made here
    assert selected_form({}, ("eot",)) == "eot"  # a one-form student has nothing to choose
