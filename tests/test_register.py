"""The register stage: a trained, evaluated tiny student becomes a tagged version of distill-student."""
from __future__ import annotations

import json

import pytest

from distill.config import load_config
from distill.files import DataError, write_json
from distill.stages import register
from distill.tracking import Tracker, git_commit
from serving_fakes import make_student, store  # noqa: F401 (a fixture)

@pytest.fixture(scope="module")
def student(tmp_path_factory):
    return make_student(tmp_path_factory.mktemp("student") / "etd", steps=0)


@pytest.fixture
def env(tmp_path, store, request):
    cfg = load_config(None, [f"promote.model_name=student-{abs(hash(request.node.name))}"])
    return cfg, tmp_path / "runs", Tracker(cfg.tracking_uri, cfg.tracking.experiment)


def train_run(tracker, student, log_model: bool = True, val_eot: float | None = 0.375) -> str:
    """A train run as the train stage leaves it: the logged student and its validation accuracies."""
    from distill.serving.logged_model import log_student

    with tracker.run("train-etd", {"distill.stage": "train", "distill.teacher": "gold"}):
        if log_model:
            log_student(student, max_new_tokens=32)
        if val_eot is not None:
            tracker.log_metrics({"val/eot/accuracy": val_eot, "val/pot/accuracy": 0.5, "val/loss": 1.5})
        return tracker.run_id


TEST_SETS = ("gsm8k", "asdiv", "svamp", "multiarith")


def eval_summary(train_run_id: str, gsm8k_selected: float = 0.25) -> dict:
    forms = {f: {"version": 1, "instruction": "..."} for f in ("cot", "pot", "eot")}
    metrics = {"gsm8k/eot/accuracy": gsm8k_selected, "gsm8k/pot/accuracy": 0.125, "gsm8k/cot/accuracy": 0.0,
               "gsm8k/vote/accuracy": 0.125, "gsm8k/eot/failures/timeout": 1.0, "gsm8k/n": 8,
               "gsm8k/selected/ci_low": 0.05}
    metrics |= {f"{t}/selected/accuracy": gsm8k_selected if t == "gsm8k" else 0.0 for t in TEST_SETS}
    return {"mix": "etd", "preset": "tiny", "run_id": "e" * 32, "limit": 8, "forms": forms, "selected_form": "eot",
            "student": {"source": "x", "digest": "abc",
                        "card": {"student": "tiny", "data_digest": "mixdigest", "best_form": "eot"}},
            "train_run_id": train_run_id, "data_digest": "mixdigest",
            "test_sets": {"gsm8k": {"n": 8, "selected": {"form": "eot", "accuracy": gsm8k_selected}}},
            "metrics": metrics}


def quiet(_line):
    pass


def test_register_tags_the_version_with_mix_forms_digests_teacher_accuracies_and_commit(env, student):
    import mlflow

    cfg, run_dir, tracker = env
    write_json(run_dir / "verified" / "summary.json", {"eot": {"n": 3, "kept": 2, "digest": "eotdigest"}})
    run_id = train_run(tracker, student)
    result = register.run(cfg, run_dir, tracker, train_run_id=run_id, eval_summary=eval_summary(run_id),
                          log=quiet)
    name = cfg.promote.model_name
    assert result["version"] == 1 and result["model_uri"] == f"models:/{name}/1"
    mv = mlflow.MlflowClient().get_model_version(name, "1")
    assert mv.run_id == run_id
    tags = mv.tags
    assert tags["distill.mix"] == "etd" and tags["distill.forms"] == "cot,pot,eot"
    assert tags["distill.form_versions"] == "cot=1,eot=1,pot=1"
    assert tags["distill.data_digest"] == "mixdigest" and "distill.data_digest.eot" not in tags
    assert tags["distill.teacher"] == "gold" and tags["distill.train_run_id"] == run_id
    assert tags["distill.commit"] == git_commit()
    assert tags["distill.preset"] == "tiny" and tags["distill.eval_limit"] == "8"
    # the validation choice and its validation accuracy (from the train run), which promote ranks on
    assert tags["distill.selected_form"] == "eot" and float(tags["val/selected/accuracy"]) == 0.375
    # the four test sets' selected accuracies are reported; per-form, CI and failure metrics are not tags
    assert {k for k in tags if "/" in k and not k.startswith("val/")} == {f"{t}/selected/accuracy" for t in TEST_SETS}
    assert float(tags["gsm8k/selected/accuracy"]) == 0.25
    assert not any("best" in k for k in tags)
    assert json.loads((run_dir / "register" / "etd.json").read_text())["version"] == 1


def test_registering_the_same_student_again_refreshes_tags_instead_of_adding_a_version(env, student):
    import mlflow

    cfg, run_dir, tracker = env
    run_id = train_run(tracker, student)
    register.run(cfg, run_dir, tracker, train_run_id=run_id, eval_summary=eval_summary(run_id, 0.25), log=quiet)
    again = register.run(cfg, run_dir, tracker, train_run_id=run_id, eval_summary=eval_summary(run_id, 0.5), log=quiet)
    assert again["version"] == 1
    client, name = mlflow.MlflowClient(), cfg.promote.model_name
    assert len(client.search_model_versions(f"name='{name}'")) == 1
    assert float(client.get_model_version(name, "1").tags["gsm8k/selected/accuracy"]) == 0.5
    other = train_run(tracker, student)
    assert register.run(cfg, run_dir, tracker, eval_summary=eval_summary(other), log=quiet)["version"] == 2


def test_a_train_run_without_validation_accuracy_gives_no_val_tag_so_promote_cannot_rank_it(env, student):
    import mlflow

    cfg, run_dir, tracker = env
    run_id = train_run(tracker, student, val_eot=None)
    register.run(cfg, run_dir, tracker, train_run_id=run_id, eval_summary=eval_summary(run_id), log=quiet)
    tags = mlflow.MlflowClient().get_model_version(cfg.promote.model_name, "1").tags
    assert tags["distill.selected_form"] == "eot" and "val/selected/accuracy" not in tags


def test_register_without_an_evaluation_says_to_evaluate_first(env):
    cfg, run_dir, tracker = env
    with pytest.raises(DataError, match="distill evaluate --preset default --mix etd"):
        register.run(cfg, run_dir, tracker, log=quiet)


def test_a_train_run_that_logged_no_model_is_refused_with_the_reason(env, student):
    cfg, run_dir, tracker = env
    run_id = train_run(tracker, student, log_model=False)
    with pytest.raises(DataError, match="must log the student"):
        register.run(cfg, run_dir, tracker, eval_summary=eval_summary(run_id), log=quiet)


def test_a_run_id_from_another_store_is_refused_with_the_reason(env):
    cfg, run_dir, tracker = env
    with pytest.raises(DataError, match="not in the tracking store"):
        register.run(cfg, run_dir, tracker, eval_summary=eval_summary("0" * 32), log=quiet)


def test_cli_register_reads_the_evaluation_summary_of_the_mix(env, student, monkeypatch):
    from click.testing import CliRunner

    from distill.cli import main

    cfg, run_dir, tracker = env
    run_id = train_run(tracker, student)
    monkeypatch.chdir(run_dir.parent)
    write_json(run_dir.parent / "runs" / "tiny" / "eval" / "etd" / "summary.json", eval_summary(run_id))
    name = cfg.promote.model_name
    result = CliRunner().invoke(main, ["register", "--preset", "tiny", "--mix", "etd",
                                       "--set", f"promote.model_name={name}"])
    assert result.exit_code == 0, result.output
    assert f"models:/{name}/1 ({name} version 1, train run {run_id})" in result.output


def test_cli_register_without_an_evaluation_prints_one_line_and_exits_2(env, monkeypatch):
    from click.testing import CliRunner

    from distill.cli import main

    cfg, run_dir, tracker = env
    monkeypatch.chdir(run_dir.parent)
    result = CliRunner().invoke(main, ["register", "--preset", "tiny", "--mix", "pot"])
    assert result.exit_code == 2
    assert "error: runs/tiny/eval/pot/summary.json not found; evaluate the student first" in result.output


def test_the_versions_description_is_a_model_card_with_form_accuracies_teacher_digest_and_the_curl_line(env, student):
    import mlflow

    cfg, run_dir, tracker = env
    run_id = train_run(tracker, student)
    summary = eval_summary(run_id)
    summary["metrics"] |= {"gsm8k/selected/ci_low": 0.05, "gsm8k/selected/ci_high": 0.6, "gsm8k/n": 8}
    summary["student"]["card"] |= {"kind": "seq2seq", "n_params": 1234567}
    register.run(cfg, run_dir, tracker, train_run_id=run_id, eval_summary=summary, log=quiet)
    name = cfg.promote.model_name
    text = mlflow.MlflowClient().get_model_version(name, "1").description
    assert "**etd student** `tiny`: a seq2seq model, 1,234,567 parameters" in text
    assert "**Selected form: eot**, chosen on the validation split (validation accuracy 37.5%)" in text
    assert "Other forms on validation: pot 50.0%" in text
    assert "gsm8k 25.0% [5.0%, 60.0%] (n = 8); asdiv 0.0%" in text and "First 8 problems of each test set." in text
    assert "**Teacher**: gold. **Data digest** (the training mix): `mixdigest`" in text
    assert f"mlflow models serve -m models:/{name}/1 --env-manager virtualenv" in text
    curl = next(line for line in text.splitlines() if line.startswith("  -d '"))
    payload = json.loads(curl[len("  -d '"):-1])
    assert payload["dataframe_records"][0]["thought"] == "eot"
    # registering again (new accuracies) rewrites the card with the version
    summary["metrics"]["gsm8k/selected/accuracy"] = 0.5
    register.run(cfg, run_dir, tracker, train_run_id=run_id, eval_summary=summary, log=quiet)
    assert "gsm8k 50.0% [5.0%, 60.0%]" in mlflow.MlflowClient().get_model_version(name, "1").description
