"""The train stage: batching, the loop's guarantees (learns, reproducible, resumable, budgets), files and MLflow.

Fixture task (made here, no benchmark data): "Question: There are 13 black cows. How many?" ->
"13 black cows. The answer is 13." in two phrasings, so the student must copy content by kind, not
by position; 20 held-back combinations check that greedy output becomes exact.
"""
from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from distill.config import ConfigError, TrainConfig, load_config
from distill.files import DataError, write_jsonl
from distill.stages import train as T

COLORS = "red blue green black white pink".split()
ANIMALS = "cat dog cow hen fox owl".split()


def counting_rows(n_train: int, n_val: int = 20, seed: int = 0) -> tuple[list[dict], list[dict]]:
    combos = [(n, c, a, t) for n in range(1, 21) for c in COLORS for a in ANIMALS for t in (0, 1)]
    random.Random(seed).shuffle(combos)
    rows = []
    for i, (n, c, a, t) in enumerate(combos[:n_train + n_val]):
        question = f"There are {n} {c} {a}s. How many?" if t == 0 else f"How many {a}s? {n} are {c}."
        rows.append({"id": f"r{i}", "problem_id": f"p{i}", "form": "cot", "version": 1,
                     "input": f"Question: {question}\nLet's think step by step.\n",
                     "target": f"{n} {c} {a}s. The answer is {n}.", "gold": float(n)})
    return rows[n_val:], rows[:n_val]


def write_mix(run_dir: Path, train: list[dict], val: list[dict], mix: str = "cot") -> Path:
    write_jsonl(run_dir / "mix" / mix / "train.jsonl", train)
    write_jsonl(run_dir / "mix" / mix / "val.jsonl", val)
    return run_dir


def tiny_cfg(run_dir: Path, *overrides: str):
    return load_config("tiny", [f"run_dir={run_dir}", "train.max_minutes=null", *overrides])


# --- batching ---------------------------------------------------------------------------------------

def test_make_batches_puts_similar_lengths_together_and_reshuffles_each_epoch():
    rng = random.Random(1)
    lengths = [rng.randint(5, 200) for _ in range(512)]
    epoch0 = T.make_batches(lengths, 16, seed=3, epoch=0)
    assert sorted(i for b in epoch0 for i in b) == list(range(512))
    spread = sum(max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in epoch0) / len(epoch0)
    random_spread = sum(max(lengths[i] for i in b) - min(lengths[i] for i in b)
                        for b in T.make_batches(lengths, 16, 3, 0, group_by_length=False)) / len(epoch0)
    assert spread < random_spread / 4
    assert T.make_batches(lengths, 16, seed=3, epoch=0) == epoch0
    assert T.make_batches(lengths, 16, seed=3, epoch=1) != epoch0


def test_shard_gives_every_rank_the_same_number_of_different_batches():
    batches = [[i] for i in range(7)]
    ranks = [T.shard(batches, r, 2) for r in range(2)]
    assert len(ranks[0]) == len(ranks[1]) == 3
    assert not set(map(tuple, ranks[0])) & set(map(tuple, ranks[1]))
    assert [len(T.shard([[0]], r, 2)) for r in range(2)] == [1, 1]


def test_collate_pads_only_to_the_longest_row_of_the_batch():
    batch = T.collate([([5, 6, 1], [7, 1]), ([5, 1], [7, 8, 9, 1])], pad_id=0)
    assert batch["input_ids"].tolist() == [[5, 6, 1], [5, 1, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 1, 0]]
    assert batch["labels"].tolist() == [[7, 1, -100, -100], [7, 8, 9, 1]]


def test_plan_counts_steps_with_accumulation_processes_and_max_steps():
    tcfg = TrainConfig(batch_size=4, grad_accum=2, epochs=3, warmup_ratio=0.1)
    assert T.plan(40, tcfg, 1) == {"steps_per_epoch": 5, "total_steps": 15, "warmup_steps": 2,
                                   "effective_batch_size": 8}
    assert T.plan(40, tcfg, 2)["steps_per_epoch"] == 3
    assert T.plan(40, TrainConfig(batch_size=4, max_steps=4), 1)["total_steps"] == 4


def test_learning_rate_warms_up_then_decays_to_zero_at_the_step_budget():
    import torch
    from transformers import T5Config, T5ForConditionalGeneration

    model = T5ForConditionalGeneration(T5Config(vocab_size=16, d_model=8, d_kv=4, d_ff=8, num_layers=1, num_heads=2,
                                                decoder_start_token_id=0))
    pairs = [([3, 4, 1], [5, 1])] * 40
    tcfg = TrainConfig(batch_size=4, epochs=1, lr=1e-3, warmup_ratio=0.2, scheduler="linear")
    rates = []
    position, stopped = T.train_loop(model, pairs, tcfg, pad_id=0, device=torch.device("cpu"), precision="fp32",
                                     dist=T.Dist(), on_step=lambda step, loss, lr: rates.append(lr))
    assert (position.step, position.epoch, stopped) == (10, 1, "epochs")
    assert rates[0] < rates[1] < rates[2] == pytest.approx(1e-3)  # 2 warm-up steps
    assert all(a > b for a, b in zip(rates[2:], rates[3:])) and rates[-1] < 2e-4


def test_precision_is_fp32_on_cpu_whatever_is_asked():
    import torch

    cpu = torch.device("cpu")
    assert [T.resolve_precision(p, cpu) for p in ("auto", "bf16", "fp16", "fp32")] == ["fp32"] * 4
    with pytest.raises(ConfigError, match="train.precision"):
        T.resolve_precision("fp8", cpu)


# --- the tiny student learns (one run shared by the tests below) --------------------------------------

@pytest.fixture(scope="module")
def learned(tmp_path_factory):
    from distill.tracking import Tracker

    root = tmp_path_factory.mktemp("learned")
    train, val = counting_rows(600)
    run_dir = write_mix(root / "run", train, val)
    tracker = Tracker(f"sqlite:///{root / 'mlflow.db'}", "distill")
    cfg = tiny_cfg(run_dir, "train.epochs=4", "train.batch_size=16", "train.dropout=0.0",
                   "train.val_generate_limit=8")
    summary = T.run(cfg, run_dir, tracker, mix="cot")
    return {"cfg": cfg, "run_dir": run_dir, "summary": summary, "val": val, "tracker": tracker}


def test_tiny_student_learns_to_answer_held_back_questions(learned):
    from distill.decoding import decode
    from distill.student import load_student

    summary = learned["summary"]
    assert summary["stopped"] == "epochs" and summary["epochs_done"] == 4
    assert summary["best_val_loss"] < summary["initial_val_loss"] / 20
    model, tokenizer = load_student(learned["run_dir"] / "students" / "cot" / "model")
    val = learned["val"]
    outputs = decode(model, tokenizer, [r["input"] for r in val], max_new_tokens=32)
    assert outputs == [r["target"] for r in val]


def test_train_writes_model_card_checkpoints_and_summary(learned):
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    out = learned["run_dir"] / "students" / "cot"
    assert AutoModelForSeq2SeqLM.from_pretrained(out / "model") is not None
    assert AutoTokenizer.from_pretrained(out / "model").eos_token == "</s>"
    card = json.loads((out / "card.json").read_text())
    assert card["mix"] == "cot" and card["preset"] == "tiny" and card["student"] == "tiny"
    assert card["forms"]["cot"]["instruction"] == "Let's think step by step."
    assert card["train_run_id"] == learned["summary"]["run_id"]
    assert card["best_val_loss"] == pytest.approx(learned["summary"]["best_val_loss"])
    assert card["best_form"] == "cot"
    assert len(card["data_digest"]) == 16 and "byte-level BPE" in card["tokenizer"]
    assert card["training"]["optimizer"].startswith("AdamW") and card["training"]["precision"] == "fp32"
    for name in ("last", "best"):
        assert (out / "checkpoints" / name / "model.safetensors").exists()
    assert (out / "checkpoints" / "last" / "state.pt").exists()
    assert json.loads((out / "summary.json").read_text())["run_id"] == learned["summary"]["run_id"]


def test_train_run_in_mlflow_has_params_loss_curve_validation_dataset_and_tags(learned):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(learned["tracker"].uri)
    run_id = learned["summary"]["run_id"]
    run = client.get_run(run_id)
    assert run.info.run_name == "train-cot"
    assert {k: run.data.tags[k] for k in ("distill.stage", "distill.mix", "distill.forms", "distill.preset",
                                         "distill.student")} == {
        "distill.stage": "train", "distill.mix": "cot", "distill.forms": "cot", "distill.preset": "tiny",
        "distill.student": "tiny"}
    params = run.data.params
    assert params["train.lr"] == "0.001" and params["train.optimizer"] == "adamw"
    assert int(params["train.total_steps"]) == 4 * 38
    assert len(client.get_metric_history(run_id, "train/loss")) == 4 * 38
    val_loss = client.get_metric_history(run_id, "val/loss")
    assert sorted(m.step for m in val_loss) == [0, 1, 2, 3, 4]
    contexts = {d.dataset.name: d.tags[0].value for d in run.inputs.dataset_inputs}
    assert contexts == {"mix-cot-train": "training", "mix-cot-val": "validation"}
    assert "card.json" in {a.path for a in client.list_artifacts(run_id)}


def test_a_complete_student_is_skipped_when_run_again(learned):
    again = T.run(learned["cfg"], learned["run_dir"], None, mix="cot")
    assert again["skipped"] is True and again["run_id"] == learned["summary"]["run_id"]


# --- reproducible, resumable, budgets -----------------------------------------------------------------

def small_run(run_dir: Path, *overrides: str) -> dict:
    write_mix(run_dir, *counting_rows(120, 10))
    cfg = tiny_cfg(run_dir, "train.epochs=3", "train.batch_size=16", "train.val_generate_limit=0", *overrides)
    return T.run(cfg, run_dir, None, mix="cot")


def last_weights(run_dir: Path) -> str:
    from distill.student import load_student

    return T.weights_digest(load_student(run_dir / "students" / "cot" / "checkpoints" / "last")[0])


def test_training_is_reproducible_and_resumes_after_an_interruption_to_the_same_weights(tmp_path, monkeypatch):
    first = small_run(tmp_path / "a")
    second = small_run(tmp_path / "b")
    assert last_weights(tmp_path / "a") == last_weights(tmp_path / "b")
    assert first["best_val_loss"] == second["best_val_loss"]

    # a crash while validating epoch 2: epoch 1's checkpoint is the last one written
    calls = []
    real = T.validation_loss

    def crash_on_epoch_two(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:  # call 1 is the untrained model's loss, 2 is epoch 1
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(T, "validation_loss", crash_on_epoch_two)
    with pytest.raises(KeyboardInterrupt):
        small_run(tmp_path / "c")
    monkeypatch.setattr(T, "validation_loss", real)
    assert not (tmp_path / "c" / "students" / "cot" / "summary.json").exists()
    resumed = small_run(tmp_path / "c")
    assert resumed["steps"] == first["steps"]
    assert last_weights(tmp_path / "c") == last_weights(tmp_path / "a")


def test_max_steps_stops_early_and_a_larger_budget_continues_from_the_checkpoint(tmp_path):
    stopped = small_run(tmp_path, "train.max_steps=5")
    assert (stopped["stopped"], stopped["steps"]) == ("max_steps", 5)
    assert stopped["epochs_done"] == 1 and stopped["best_val_loss"] is not None
    continued = small_run(tmp_path, "train.max_steps=9")
    assert "skipped" not in continued
    assert (continued["stopped"], continued["steps"]) == ("max_steps", 9)


def test_a_time_budget_spent_before_the_first_step_still_writes_a_student(tmp_path):
    summary = small_run(tmp_path, "train.max_minutes=0.000001")
    assert (summary["stopped"], summary["steps"]) == ("max_minutes", 0)
    assert (tmp_path / "students" / "cot" / "model" / "model.safetensors").exists()


def test_a_resumed_run_logs_into_the_same_mlflow_run(tmp_path, mlflow_uri, monkeypatch):
    from mlflow.tracking import MlflowClient

    from distill.tracking import Tracker

    write_mix(tmp_path, *counting_rows(120, 10))
    cfg = tiny_cfg(tmp_path, "train.epochs=2", "train.batch_size=16", "train.val_generate_limit=0")
    real = T.validation_loss
    calls = []

    def crash_on_epoch_two(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(T, "validation_loss", crash_on_epoch_two)
    with pytest.raises(KeyboardInterrupt):
        T.run(cfg, tmp_path, Tracker(mlflow_uri, "distill"), mix="cot")
    monkeypatch.setattr(T, "validation_loss", real)
    summary = T.run(cfg, tmp_path, Tracker(mlflow_uri, "distill"), mix="cot")
    client = MlflowClient(mlflow_uri)
    runs = client.search_runs([client.get_experiment_by_name("distill").experiment_id])
    assert [r.info.run_id for r in runs] == [summary["run_id"]]
    assert sorted(m.step for m in client.get_metric_history(summary["run_id"], "val/loss")) == [0, 1, 2]


# --- errors and the command line ------------------------------------------------------------------------

def test_missing_mix_data_names_the_command_that_writes_it(tmp_path):
    with pytest.raises(DataError, match="distill mix --preset tiny --mix etd"):
        T.run(tiny_cfg(tmp_path), tmp_path, None, mix="etd")


def test_an_unknown_mix_lists_the_valid_ones(tmp_path):
    with pytest.raises(ConfigError, match="valid"):
        T.run(tiny_cfg(tmp_path), tmp_path, None, mix="xot")


def test_cli_train_takes_the_mlproject_flags_and_prints_the_summary(tmp_path, mlflow_uri):
    from click.testing import CliRunner

    from distill.cli import main

    write_mix(tmp_path, *counting_rows(40, 4))
    result = CliRunner().invoke(main, [
        "train", "--preset", "tiny", "--mix", "cot", "--student", "", "--lr", "5e-4", "--epochs", "",
        "--batch-size", "8", "--max-steps", "3",
        "--overrides", f"run_dir={tmp_path},train.val_generate_limit=0,train.max_minutes=null"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert (summary["steps"], summary["stopped"]) == (3, "max_steps")
    assert json.loads((tmp_path / "students" / "cot" / "card.json").read_text())["training"]["lr"] == 5e-4


def test_cli_train_rejects_a_bad_number_naming_the_flag():
    from click.testing import CliRunner

    from distill.cli import main

    result = CliRunner().invoke(main, ["train", "--lr", "fast"])
    assert result.exit_code == 2 and "--lr" in result.output


def test_the_served_default_form_is_the_best_on_validation_with_ties_to_eot_then_pot():
    from distill.stages.train import best_form

    assert best_form(("cot", "pot", "eot"), {"cot": 0.5, "pot": 0.25, "eot": 0.25}) == "cot"
    assert best_form(("cot", "pot", "eot"), {"cot": 0.25, "pot": 0.25, "eot": 0.25}) == "eot"
    assert best_form(("cot", "pot"), {"cot": 0.1, "pot": 0.1}) == "pot"
    assert best_form(("cot", "pot", "eot"), {}) == "eot"
