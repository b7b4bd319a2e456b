"""The mix stage: verified samples of some forms -> train and validation sets, nothing dropped silently."""
from __future__ import annotations

import json

import pytest

from distill.config import ConfigError, load_config, replace
from distill.files import DataError, read_jsonl, write_jsonl
from distill.problems import Problem
from distill.stages import mix
from distill.thoughts import get_form

QUESTIONS = {f"p{i:02d}": f"Tom has {i} apples, Ann {i + 1}: how many?"  # under 8 words: only exact overlap
             for i in range(20)}
LEAKED = "p07"


@pytest.fixture(autouse=True)
def test_sets(monkeypatch):
    test_set = [Problem("t1", "gsm8k", "test", QUESTIONS[LEAKED], 15.0)]
    monkeypatch.setattr(mix, "load_problems", lambda name, split, data_dir, hub: test_set if name == "gsm8k" else [])


def completion(form: str, i: int) -> str:
    """A correct completion of question i (gold 2i + 1) in the form, as the verify stage keeps it."""
    return {"cot": f"Tom has {i} and Ann {i + 1}: {i} + {i + 1} = {2 * i + 1}.\nThe answer is {2 * i + 1}.",
            "pot": f"```python\ntom = {i}\nann = {i + 1}\nans = tom + ann\n```",
            "eot": f"% Tom has {i} apples:\ntom = {i}\n% Ann has {i + 1}:\nann = {i + 1}\nans = tom + ann"}[form]


def verified(run_dir, forms=("cot", "pot", "eot"), duplicate=True):
    for form in forms:
        rows = [{"problem_id": pid, "question": q, "gold": 2.0 * i + 1, "form": form, "version": 1, "sample_index": 0,
                 "completion": completion(form, i), "verdict": {"status": "correct"}}
                for i, (pid, q) in enumerate(QUESTIONS.items())]
        if duplicate:
            rows.append({**rows[0], "sample_index": 1})  # a second sample with the same text
        write_jsonl(run_dir / "verified" / f"{form}.jsonl", rows)


def cfg(*overrides):
    return load_config(None, ["mix.val_fraction=0.1", *overrides])


def test_etd_holds_every_form_with_its_instruction_and_counts_what_it_removed(tmp_path):
    verified(tmp_path)
    summary = mix.run(cfg(), tmp_path)
    train = read_jsonl(tmp_path / "mix" / "etd" / "train.jsonl")
    val = read_jsonl(tmp_path / "mix" / "etd" / "val.jsonl")
    assert summary["removed_duplicates"] == 3 and summary["removed_overlap"] == 3
    assert summary["overlap_by_test_set"]["gsm8k"] == 1
    assert len(train) + len(val) == 3 * 19 == summary["train"] + summary["val"]
    assert summary["counts"] == {f: sum(r["form"] == f for r in train) for f in ("cot", "pot", "eot")}
    row = train[0]
    assert set(row) == {"id", "problem_id", "form", "version", "input", "target", "gold"}
    assert row["input"] == get_form(row["form"]).student_input(QUESTIONS[row["problem_id"]])
    pot = next(r for r in train if r["form"] == "pot")
    assert pot["target"].startswith("tom = ") and "```" not in pot["target"]  # the form's own target: the code
    assert LEAKED not in {r["problem_id"] for r in train + val}


def test_validation_takes_whole_training_questions_chosen_by_the_seed(tmp_path):
    verified(tmp_path)
    mix.run(cfg(), tmp_path)
    train = {r["problem_id"] for r in read_jsonl(tmp_path / "mix" / "etd" / "train.jsonl")}
    val_rows = read_jsonl(tmp_path / "mix" / "etd" / "val.jsonl")
    val = {r["problem_id"] for r in val_rows}
    assert len(val) == 2 and not train & val and len(val_rows) == 3 * len(val)
    assert mix.split_ids(sorted(QUESTIONS), 0.1, 0) == mix.split_ids(sorted(QUESTIONS), 0.1, 0)
    assert mix.split_ids(sorted(QUESTIONS), 0.1, 0) != mix.split_ids(sorted(QUESTIONS), 0.1, 1)


def test_a_pair_of_forms_mixes_only_those_forms(tmp_path):
    verified(tmp_path)
    summary = mix.run(replace(cfg("mix.decontaminate=false"), mix={"mix": "cot+eot"}), tmp_path)
    assert summary["forms"] == ["cot", "eot"] and set(summary["counts"]) == {"cot", "eot"}
    assert summary["removed_overlap"] == 0 and summary["decontaminated"] is False
    assert (tmp_path / "mix" / "cot+eot" / "train.jsonl").exists()


def test_a_single_form_needs_only_its_own_verified_set(tmp_path):
    verified(tmp_path, forms=("eot",))
    assert set(mix.run(replace(cfg(), mix={"mix": "eot"}), tmp_path)["counts"]) == {"eot"}
    with pytest.raises(DataError, match="distill verify"):
        mix.run(replace(cfg(), mix={"mix": "pot"}), tmp_path)


def test_a_bad_mix_name_lists_the_valid_ones(tmp_path):
    with pytest.raises(ConfigError, match="etd"):
        mix.run(replace(cfg(), mix={"mix": "cot+xot"}), tmp_path)


def test_an_unchanged_mix_is_not_built_again_and_a_changed_seed_rebuilds_it(tmp_path):
    verified(tmp_path)
    first = mix.run(cfg(), tmp_path)
    path = tmp_path / "mix" / "etd" / "train.jsonl"
    stamp = path.stat().st_mtime_ns
    assert mix.run(cfg(), tmp_path) == first and path.stat().st_mtime_ns == stamp
    assert mix.run(cfg("mix.seed=3"), tmp_path)["fingerprint"] != first["fingerprint"]


def test_the_train_and_validation_sets_are_logged_as_mlflow_datasets(tmp_path, mlflow_uri):
    from distill.tracking import Tracker

    verified(tmp_path)
    tracker = Tracker(mlflow_uri, "distill")
    summary = mix.run(cfg(), tmp_path, tracker)
    run = tracker.mlflow.search_runs(experiment_names=["distill"], output_format="list")[0]
    assert run.info.run_name == "mix-etd" and run.data.tags["distill.mix"] == "etd"
    assert {d.dataset.name for d in run.inputs.dataset_inputs} == {"etd-train", "etd-val"}
    assert run.data.metrics["mix/removed_overlap"] == 3 and run.data.metrics["mix/train/eot"] == summary["counts"]["eot"]
    assert json.loads((tmp_path / "mix" / "etd" / "summary.json").read_text())["digest"] == summary["digest"]


def test_without_tracking_the_summary_records_no_mlflow_digests(tmp_path):
    verified(tmp_path)
    summary = mix.run(cfg("mix.mix=etd"), tmp_path)
    assert summary["train"] and summary["val"]  # both sets were written, so with a tracker both would be logged
    assert "mlflow_digest" not in summary and "mlflow_val_digest" not in summary
    assert "mlflow_digest" not in json.loads((tmp_path / "mix" / "etd" / "summary.json").read_text())
