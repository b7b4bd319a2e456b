"""The train stage on transformers' trainers: encoding of both student kinds, the guarantees (learns,
reproducible, resumable, budgets, best checkpoint), files and MLflow, causal and LoRA students.

Fixture task (made here, no benchmark data): "Question: There are 13 black cows. How many?" ->
"13 black cows. The answer is 13." in two phrasings, so the student must copy content by kind, not
by position; 20 held-back combinations check that greedy output becomes exact.
"""
from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from distill import training
from distill.config import Config, ConfigError, TrainConfig, check, load_config
from distill.files import DataError, write_jsonl
from distill.stages import train as T
from device_memory import ScriptedMemory

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


# --- data: encoding, plan --------------------------------------------------------------------------

def test_causal_features_mask_the_prompt_and_end_every_target_with_eos():
    from distill.student import build_student

    train, _ = counting_rows(8, 0)
    tcfg = TrainConfig(student="tiny-causal", max_target_len=64)
    model, tokenizer = build_student("tiny-causal", [r["input"] + r["target"] for r in train], train_cfg=tcfg)
    features = training.encode(tokenizer, train, tcfg, causal=True)
    for row, f in zip(train, features):
        prompt = tokenizer(row["input"], add_special_tokens=False)["input_ids"]
        target = tokenizer(row["target"], add_special_tokens=False)["input_ids"]
        assert f["input_ids"] == prompt + target + [tokenizer.eos_token_id]
        assert f["labels"] == [-100] * len(prompt) + target + [tokenizer.eos_token_id]
        assert tokenizer.eos_token_id not in prompt  # a prompt never ends the sequence early


def test_seq2seq_features_keep_the_instruction_when_the_input_is_cut():
    from distill.student import build_student

    train, _ = counting_rows(4, 0)
    tcfg = TrainConfig(max_source_len=8, max_target_len=64)
    _, tokenizer = build_student("tiny", [r["input"] + r["target"] for r in train], train_cfg=tcfg)
    f = training.encode(tokenizer, train[:1], tcfg, causal=False)[0]
    assert len(f["input_ids"]) == 8 and f["input_ids"][-1] == tokenizer.eos_token_id
    assert tokenizer.decode(f["input_ids"], skip_special_tokens=True).endswith("step by step.\n")
    assert tokenizer.decode(f["labels"], skip_special_tokens=True) == train[0]["target"]


def test_plan_counts_steps_with_accumulation_processes_and_max_steps():
    tcfg = TrainConfig(batch_size=4, grad_accum=2, epochs=3, warmup_ratio=0.1)
    assert training.schedule(40, tcfg, 1) == {"steps_per_epoch": 5, "total_steps": 15, "warmup_steps": 2,
                                   "effective_batch_size": 8}
    assert training.schedule(40, tcfg, 2)["steps_per_epoch"] == 3
    assert training.schedule(40, TrainConfig(batch_size=4, max_steps=4), 1)["total_steps"] == 4


def test_precision_is_fp32_on_cpu_whatever_is_asked():
    assert [training.resolve_precision(p, cuda=False) for p in ("auto", "bf16", "fp16", "fp32")] == ["fp32"] * 4
    with pytest.raises(ConfigError, match="train.precision"):
        load_config(None, ["train.precision=fp8"])


# --- the tiny student learns (one run shared by the tests below) --------------------------------------

@pytest.fixture(scope="module")
def learned(tmp_path_factory):
    from distill.tracking import Tracker

    root = tmp_path_factory.mktemp("learned")
    train, val = counting_rows(600)
    run_dir = write_mix(root / "run", train, val)
    tracker = Tracker(f"sqlite:///{root / 'mlflow.db'}", "distill")
    cfg = tiny_cfg(run_dir, "mix.mix=cot", "train.epochs=4", "train.batch_size=16", "train.dropout=0.0",
                   "train.val_generate_limit=8")
    summary = T.run(cfg, run_dir, tracker)
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
    assert card["training"]["trainer"] == "transformers.Seq2SeqTrainer"
    # what ran beside what was configured: the report's training table reads these
    assert (card["training"]["epochs_run"], card["training"]["steps"], card["training"]["stopped"]) == (4.0, 4 * 38, "epochs")
    import mlflow

    run = mlflow.MlflowClient(learned["tracker"].uri).get_run(learned["summary"]["run_id"])
    assert run.data.metrics["train/epochs_run"] == 4.0 and run.data.metrics["train/steps_run"] == 4 * 38
    assert run.data.tags["distill.stopped"] == "epochs"
    assert (card["kind"], card["architecture"], card["chat_template"], card["lora"]) == (
        "seq2seq", "T5ForConditionalGeneration", False, None)
    assert card["best_step"] == 4 * 38  # the loss fell every epoch: the last checkpoint is the best
    assert json.loads((out / "model" / "student.json").read_text())["kind"] == "seq2seq"
    # the Trainer's checkpoints (best and last are one here), with optimizer state to resume from
    assert [p.name for p in (out / "checkpoints").glob("checkpoint-*")] == [f"checkpoint-{4 * 38}"]
    assert (out / "checkpoints" / f"checkpoint-{4 * 38}" / "optimizer.pt").exists()
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
    assert int(params["train.total_steps"]) == 4 * 38 and params["train.kind"] == "seq2seq"
    assert len(client.get_metric_history(run_id, "train/loss")) == 4 * 38
    # validation on the same axis as train/loss (optimizer steps), from the untrained model on
    val_loss = client.get_metric_history(run_id, "val/loss")
    assert sorted(m.step for m in val_loss) == [0, 38, 76, 114, 152]
    assert sorted(m.step for m in client.get_metric_history(run_id, "val/cot/accuracy")) == [38, 76, 114, 152]
    # the learning rate warms up (5 steps: 3% of 152) and then decays linearly towards 0
    lr = [m.value for m in sorted(client.get_metric_history(run_id, "train/lr"), key=lambda m: m.step)]
    assert lr[0] < lr[4] < lr[5] == pytest.approx(max(lr)) == pytest.approx(1e-3)
    assert all(a > b for a, b in zip(lr[5:], lr[6:])) and lr[-1] < 1e-4
    contexts = {d.dataset.name: d.tags[0].value for d in run.inputs.dataset_inputs}
    assert contexts == {"mix-cot-train": "training", "mix-cot-val": "validation"}
    assert "card.json" in {a.path for a in client.list_artifacts(run_id)}


def test_a_complete_student_is_skipped_when_run_again(learned):
    again = T.run(learned["cfg"], learned["run_dir"], None)
    assert again["skipped"] is True and again["run_id"] == learned["summary"]["run_id"]


# --- reproducible, resumable, budgets -----------------------------------------------------------------

def small_run(run_dir: Path, *overrides: str) -> dict:
    write_mix(run_dir, *counting_rows(120, 10))
    cfg = tiny_cfg(run_dir, "mix.mix=cot", "train.epochs=3", "train.batch_size=16", "train.val_generate_limit=0",
                   *overrides)
    return T.run(cfg, run_dir, None)


def last_weights(run_dir: Path) -> str:
    """Digest of the newest Trainer checkpoint's weights."""
    from safetensors.torch import load_file

    ckpts = sorted((run_dir / "students" / "cot" / "checkpoints").glob("checkpoint-*"),
                   key=lambda p: int(p.name.split("-")[1]))
    return training.weights_digest(load_file(ckpts[-1] / "model.safetensors"))


def crash_at_evaluation(monkeypatch, n: int) -> None:
    """Make the n-th validation-accuracy pass raise, as a kill would: after epoch n's loss, before its checkpoint."""
    real, calls = training.validation_accuracy, []

    def crash(*args, **kwargs):
        calls.append(1)
        if len(calls) == n:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(training, "validation_accuracy", crash)


@pytest.mark.slow  # three trainings: ~13 s
def test_training_is_reproducible_and_resumes_after_an_interruption_to_the_same_weights(tmp_path, monkeypatch):
    first = small_run(tmp_path / "a", "train.val_generate_limit=2")
    second = small_run(tmp_path / "b", "train.val_generate_limit=2")
    assert last_weights(tmp_path / "a") == last_weights(tmp_path / "b")
    assert first["best_val_loss"] == second["best_val_loss"]

    crash_at_evaluation(monkeypatch, 2)  # killed while validating epoch 2: epoch 1's checkpoint is the last
    with pytest.raises(KeyboardInterrupt):
        small_run(tmp_path / "c", "train.val_generate_limit=2")
    monkeypatch.undo()
    assert not (tmp_path / "c" / "students" / "cot" / "summary.json").exists()
    assert [p.name for p in (tmp_path / "c" / "students" / "cot" / "checkpoints").glob("checkpoint-*")] == [
        "checkpoint-8"]
    resumed = small_run(tmp_path / "c", "train.val_generate_limit=2")
    assert resumed["steps"] == first["steps"] == 24
    assert resumed["best_val_loss"] == pytest.approx(first["best_val_loss"], rel=1e-4)
    assert last_weights(tmp_path / "c") == last_weights(tmp_path / "a")


def test_max_steps_stops_early_and_a_larger_budget_continues_from_the_checkpoint(tmp_path):
    stopped = small_run(tmp_path, "train.max_steps=5")
    assert (stopped["stopped"], stopped["steps"]) == ("max_steps", 5)
    assert stopped["epochs_done"] == 1 and stopped["best_val_loss"] is not None
    continued = small_run(tmp_path, "train.max_steps=9")
    assert "skipped" not in continued
    assert (continued["stopped"], continued["steps"]) == ("max_steps", 9)


def test_a_time_budget_spent_at_the_first_step_still_writes_a_scored_student(tmp_path):
    summary = small_run(tmp_path, "train.max_minutes=0.000001")
    assert (summary["stopped"], summary["steps"]) == ("max_minutes", 1)
    assert summary["best_val_loss"] is not None and summary["best_step"] == 1
    assert (tmp_path / "students" / "cot" / "model" / "model.safetensors").exists()


def test_a_resumed_run_logs_into_the_same_mlflow_run(tmp_path, mlflow_uri, monkeypatch):
    from mlflow.tracking import MlflowClient

    from distill.tracking import Tracker

    write_mix(tmp_path, *counting_rows(120, 10))
    cfg = tiny_cfg(tmp_path, "mix.mix=cot", "train.epochs=2", "train.batch_size=16", "train.val_generate_limit=2")
    crash_at_evaluation(monkeypatch, 2)
    with pytest.raises(KeyboardInterrupt):
        T.run(cfg, tmp_path, Tracker(mlflow_uri, "distill"))
    monkeypatch.undo()
    summary = T.run(cfg, tmp_path, Tracker(mlflow_uri, "distill"))
    client = MlflowClient(mlflow_uri)
    runs = client.search_runs([client.get_experiment_by_name("distill").experiment_id])
    assert [r.info.run_id for r in runs] == [summary["run_id"]]
    # epoch 2's val/loss was logged before the crash and again after the resume, at the same step
    assert sorted(set(m.step for m in client.get_metric_history(summary["run_id"], "val/loss"))) == [0, 8, 16]


def test_a_checkpoint_of_another_config_is_not_resumed(tmp_path):
    small_run(tmp_path, "train.max_steps=5")
    again = small_run(tmp_path, "train.max_steps=5", "train.lr=2e-3")
    assert again["steps"] == 5 and again["initial_val_loss"] is not None  # a fresh start measures step 0


# --- errors and the command line ------------------------------------------------------------------------

def test_missing_mix_data_names_the_command_that_writes_it(tmp_path):
    with pytest.raises(DataError, match="distill mix --preset tiny --mix etd"):
        T.run(tiny_cfg(tmp_path), tmp_path, None)


def test_an_unknown_mix_lists_the_valid_ones(tmp_path):
    with pytest.raises(ConfigError, match="valid"):
        T.run(tiny_cfg(tmp_path, "mix.mix=xot"), tmp_path, None)


def test_cli_train_takes_the_mlproject_flags_and_prints_the_summary(tmp_path, mlflow_uri):
    from click.testing import CliRunner

    from distill.cli import main

    write_mix(tmp_path, *counting_rows(40, 4))
    result = CliRunner().invoke(main, [
        "train", "--preset", "tiny", "--mix", "cot",
        "--overrides", "train.student=,train.lr=5e-4,train.epochs=,train.batch_size=8,train.max_steps=3,"
                       f"run_dir={tmp_path},train.val_generate_limit=0,train.max_minutes=null"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert (summary["steps"], summary["stopped"]) == (3, "max_steps")
    assert json.loads((tmp_path / "students" / "cot" / "card.json").read_text())["training"]["lr"] == 5e-4


def test_cli_train_rejects_a_bad_number_naming_the_setting():
    from click.testing import CliRunner

    from distill.cli import main

    result = CliRunner().invoke(main, ["train", "--set", "train.lr=fast"])
    assert result.exit_code == 2 and "train.lr" in result.output


def test_the_served_default_form_is_the_best_on_validation_with_ties_to_eot_then_pot():
    from distill.stages.train import best_form

    assert best_form(("cot", "pot", "eot"), {"cot": 0.5, "pot": 0.25, "eot": 0.25}) == "cot"
    assert best_form(("cot", "pot", "eot"), {"cot": 0.25, "pot": 0.25, "eot": 0.25}) == "eot"
    assert best_form(("cot", "pot"), {"cot": 0.1, "pot": 0.1}) == "pot"
    assert best_form(("cot", "pot", "eot"), {}) == "eot"


# --- any student kind: a causal LM from a local folder, with its chat template ------------------------

CHAT_TEMPLATE = ("{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}\n{% endfor %}"
                 "{% if add_generation_prompt %}<|assistant|>\n{% endif %}")


def local_causal_lm(path: Path, texts, chat: bool) -> Path:
    """A decoder-only model saved like a hub checkpoint (config.json + weights + tokenizer), no student.json."""
    from distill.student import build_tiny_causal

    model, tokenizer = build_tiny_causal(texts, d_model=32, layers=1, heads=2, d_ff=64, vocab=400, seed=0)
    if chat:
        tokenizer.chat_template = CHAT_TEMPLATE
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def test_a_causal_lm_from_a_folder_is_recognised_by_its_config_and_trained_on_its_chat_template(tmp_path):
    from distill.decoding import encode_prompts
    from distill.student import load_student

    train, val = counting_rows(48, 4)
    write_mix(tmp_path, train, val)
    folder = local_causal_lm(tmp_path / "hub-like", [r["input"] + r["target"] for r in train], chat=True)
    summary = T.run(tiny_cfg(tmp_path, f"train.student={folder}", "train.chat_template=true", "train.max_steps=2",
                             "train.val_generate_limit=2", "mix.mix=cot"), tmp_path, None)
    assert (summary["kind"], summary["steps"]) == ("causal", 2)
    out = tmp_path / "students" / "cot"
    card = json.loads((out / "card.json").read_text())
    assert (card["kind"], card["architecture"], card["chat_template"]) == ("causal", "LlamaForCausalLM", True)
    model, tokenizer = load_student(out / "model")
    assert model.config.distill_chat_template is True  # decoding applies the template to this student
    ids = encode_prompts(tokenizer, [val[0]["input"]], causal=True, max_len=256, chat_template=True)[0]
    assert tokenizer.decode(ids).startswith("<|user|>\nQuestion:") and tokenizer.decode(ids).endswith("<|assistant|>\n")


def test_the_chat_template_is_refused_for_a_tokenizer_that_has_none(tmp_path):
    train, val = counting_rows(16, 2)
    write_mix(tmp_path, train, val)
    folder = local_causal_lm(tmp_path / "base-lm", [r["input"] + r["target"] for r in train], chat=False)
    with pytest.raises(ConfigError, match="train.chat_template"):
        T.run(tiny_cfg(tmp_path, f"train.student={folder}", "train.chat_template=true", "mix.mix=cot"), tmp_path, None)


def test_a_lora_student_of_the_tiny_causal_kind_is_saved_merged_by_default(tmp_path):
    from distill.student import load_student, read_student_info

    summary = small_run(tmp_path, "train.student=tiny-causal", "train.lora_r=8", "train.max_steps=2")
    out = tmp_path / "students" / "cot"
    card = json.loads((out / "card.json").read_text())
    assert card["lora"] == {"r": 8, "alpha": 16, "dropout": 0.05, "targets": "all-linear", "merged": True}
    assert summary["trainable_params"] < summary["n_params"] / 4
    assert not (out / "model" / "adapter_config.json").exists() and not read_student_info(out / "model")["adapter"]
    model, _ = load_student(out / "model")
    assert type(model).__name__ == "LlamaForCausalLM"  # a plain model: no peft needed to serve it


@pytest.mark.slow  # trains until the causal student answers: ~16 s
def test_tiny_causal_student_learns_to_answer_held_back_questions(tmp_path):
    """The causal path end to end on a task it can learn: completion-only loss, EOS to stop, left-padded
    batched decoding that returns only the completion."""
    from distill.decoding import decode
    from distill.student import load_student

    train, val = counting_rows(600)
    write_mix(tmp_path, train, val)
    summary = T.run(tiny_cfg(tmp_path, "train.student=tiny-causal", "train.epochs=6", "train.dropout=0.0",
                             "train.val_generate_limit=8", "mix.mix=cot"), tmp_path, None)
    assert summary["best_val_loss"] < summary["initial_val_loss"] / 10, summary
    model, tokenizer = load_student(tmp_path / "students" / "cot" / "model")
    outputs = decode(model, tokenizer, [r["input"] for r in val], max_new_tokens=32, batch_size=8)
    assert sum(o == r["target"] for o, r in zip(outputs, val)) >= 18, outputs


def test_lora_targets_that_the_model_lacks_are_named_in_the_error():
    from distill.student import build_student

    tcfg = TrainConfig(student="tiny-causal", lora_r=4, lora_targets=("no_such_proj",))
    model, _ = build_student("tiny-causal", ["a b c"] * 4, train_cfg=TrainConfig(tiny_vocab=300))
    with pytest.raises(ConfigError, match="train.lora_targets"):
        training.apply_lora(model, tcfg, "causal")


# --- the best checkpoint, reloaded: tied embeddings restored, no alarming warning --------------------

def logits_of(folder: Path, texts: list[str], tokenizer_dir: Path):
    import torch
    from transformers import AutoTokenizer, T5ForConditionalGeneration

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    model = T5ForConditionalGeneration.from_pretrained(folder).eval()
    batch = tokenizer(texts, return_tensors="pt", padding=True)
    with torch.no_grad():
        return model(**batch, labels=tokenizer(texts, return_tensors="pt", padding=True)["input_ids"]).logits


def test_the_student_is_its_best_checkpoint_with_tied_embeddings_and_the_log_has_no_missing_keys_warning(
        tmp_path, capfd):
    import torch

    # lr 0.5 overshoots after epoch 2, so the best checkpoint (step 16) is not the last (24) and is reloaded
    # (the rate depends on the data order: with epoch-seeded orders, 0.3 no longer overshoots here)
    summary = small_run(tmp_path, "train.lr=0.5")
    assert (summary["best_step"], summary["steps"]) == (16, 24)
    assert "There were missing keys" not in capfd.readouterr().err
    students = tmp_path / "students" / "cot"
    texts = ["Question: There are 3 red cats. How many?\nLet's think step by step.\n"]
    student = logits_of(students / "model", texts, students / "model")
    assert torch.equal(student, logits_of(students / "checkpoints" / "checkpoint-16", texts, students / "model"))
    assert summary["val_loss"] != summary["best_val_loss"]  # the last weights were not the best: a real reload


def test_only_a_warning_about_tied_copies_of_loaded_weights_is_kept_out_of_the_log():
    import logging

    from distill.student import build_tiny

    model, _ = build_tiny(["a b c"] * 4, d_model=16, layers=1, heads=2, d_ff=32, vocab=300)
    quiet = training.TiedKeysFilter(model)

    def kept(keys):
        return quiet.filter(logging.LogRecord("transformers.trainer", logging.WARNING, "", 0,
                                              f"{training.MISSING_KEYS} {keys}.", None, None))

    assert not kept(['encoder.embed_tokens.weight', 'decoder.embed_tokens.weight', 'lm_head.weight'])
    assert kept(['encoder.block.0.layer.0.SelfAttention.q.weight'])  # a real missing weight
    assert kept(['shared.weight', 'encoder.embed_tokens.weight', 'decoder.embed_tokens.weight', 'lm_head.weight'])
    assert kept(['lm_head.weight', 'encoder.final_layer_norm.weight'])
    assert quiet.filter(logging.LogRecord("transformers.trainer", logging.WARNING, "", 0, "other", None, None))


# --- batch size: auto sized to the device, an explicit number wins ------------------------------------

GIB = 1024 ** 3
# issue 19, CodeT5-large on an H200: 15.3 GiB at micro-batch 4, 31.8 GiB at 32, same effective batch 32
CODET5_LARGE_PER_SEQ = (31.8 - 15.3) / 28 * GIB
CODET5_LARGE_FIXED = 15.3 * GIB - 4 * CODET5_LARGE_PER_SEQ


def test_a_24_gb_card_and_an_h200_get_different_micro_batches_and_the_same_effective_batch():
    small = training.choose_micro_batch(24e9, CODET5_LARGE_FIXED, CODET5_LARGE_PER_SEQ, effective=32)
    large = training.choose_micro_batch(139 * GIB, CODET5_LARGE_FIXED, CODET5_LARGE_PER_SEQ, effective=32)
    assert small[:2] == (8, 4) and large[:2] == (32, 1)
    assert "micro-batch 8 x 4 accumulation = effective batch 32" in small[2]
    two_gpus = training.choose_micro_batch(139 * GIB, CODET5_LARGE_FIXED, CODET5_LARGE_PER_SEQ, effective=32, world=2)
    assert two_gpus[:2] == (16, 1)
    # Qwen2.5-0.5B: 16.4 GiB at micro-batch 8 (issue 19), 494M x 16 bytes fixed
    qwen_fixed = 494e6 * 16
    qwen_per_seq = (16.4 * GIB - qwen_fixed) / 8
    assert training.choose_micro_batch(24e9, qwen_fixed, qwen_per_seq, effective=32)[:2] == (8, 4)
    assert training.choose_micro_batch(139 * GIB, qwen_fixed, qwen_per_seq, effective=32)[:2] == (32, 1)
    tight = training.choose_micro_batch(12 * GIB, CODET5_LARGE_FIXED, CODET5_LARGE_PER_SEQ, effective=32)
    assert tight[:2] == (1, 32) and "expect out-of-memory" in tight[2]


def test_auto_batch_probes_only_on_a_gpu_and_a_number_in_the_config_wins():
    def probe():
        return 139 * GIB, CODET5_LARGE_FIXED, CODET5_LARGE_PER_SEQ

    auto = TrainConfig(batch_size="auto", effective_batch_size=32)
    assert training.resolve_batch(auto, cuda=True, probe=probe)[:2] == (32, 1)
    assert training.resolve_batch(auto, cuda=False, probe=probe)[:2] == (16, 2)  # the CPU keeps 16
    fixed = TrainConfig(batch_size=4, grad_accum=8)
    assert training.resolve_batch(fixed, cuda=True, probe=probe) == (4, 8, "train.batch_size set in the config")


def test_the_train_stage_records_the_auto_batch_and_why(tmp_path):
    summary = small_run(tmp_path, "train.batch_size=auto", "train.effective_batch_size=32", "train.max_steps=2")
    card = json.loads((tmp_path / "students" / "cot" / "card.json").read_text())
    assert (card["training"]["batch_size"], card["training"]["grad_accum"]) == (16, 2)
    assert card["training"]["effective_batch_size"] == 32 and "auto on the CPU" in card["training"]["batch_size_reason"]
    assert summary["steps"] == 2
    with pytest.raises(ConfigError, match="train.batch_size"):
        check(Config(train=TrainConfig(batch_size="big")))


def test_a_t5_student_never_trains_in_fp16_on_a_gpu():
    assert training.resolve_precision("auto", cuda=True, bf16=True, model_type="t5") == "bf16"
    assert training.resolve_precision("auto", cuda=True, bf16=False, model_type="t5") == "fp32"
    assert training.resolve_precision("auto", cuda=True, bf16=False, model_type="qwen2") == "fp16"
    with pytest.raises(ConfigError, match="overflows fp16"):
        training.resolve_precision("fp16", cuda=True, model_type="t5")



@pytest.mark.parametrize("student,lora", [("tiny", 0), ("tiny-causal", 8)])
def test_the_memory_probe_trains_on_the_longest_examples_and_leaves_no_gradients(student, lora):
    from distill.student import build_student

    rows, _ = counting_rows(40, 0)
    tcfg = TrainConfig(student=student, tiny_d_model=32, tiny_layers=1, tiny_heads=2, tiny_d_ff=64, tiny_vocab=400,
                       lora_r=lora)
    model, tokenizer = build_student(student, [r["input"] for r in rows] + [r["target"] for r in rows],
                                     train_cfg=tcfg)
    causal = student == "tiny-causal"
    model = training.apply_lora(model, tcfg, "causal" if causal else "seq2seq")
    tokenizer.padding_side = "right"
    features = training.encode(tokenizer, rows, tcfg, causal=causal)
    seen = []
    model.register_forward_pre_hook(lambda module, args, kwargs: seen.append(tuple(kwargs["input_ids"].shape)),
                                    with_kwargs=True)
    collator = training.collator_for(model, tokenizer, causal=causal)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    model.eval()

    budget, fixed, per_sequence = training.probe_train_memory(
        model, features, collator, "fp32", memory=ScriptedMemory([3.0 * GIB, 3.5 * GIB], 24e9))
    longest = max(len(f["input_ids"]) for f in features)
    assert seen == [(1, longest), (2, longest)]
    assert (budget, per_sequence) == (24e9, 0.5 * GIB) and fixed == 2.5 * GIB + 8 * trainable
    assert all(p.grad is None for p in model.parameters()) and not model.training  # as it was before


# --- seconds per optimizer step, measured inside the training -------------------------------------

def test_the_step_time_is_the_median_gap_after_two_warm_up_steps_and_n_a_when_too_few_were_timed():
    # step ends at 0, 5 (compile), 6, 7, 9.5 (a checkpoint saved in between), 10.5, 11.5
    ends = [0.0, 5.0, 6.0, 7.0, 9.5, 10.5, 11.5]
    assert training.median_step_seconds(ends) == (1.0, 4)
    assert training.median_step_seconds(ends[:5]) == (None, 2)  # 2 gaps after warm-up: too few to say
    assert training.median_step_seconds([0.0, 1.0, 3.0, 4.0, 6.0]) == (None, 2)
    assert training.median_step_seconds([0.0, 9.0, 10.0, 11.0, 13.0, 14.0]) == (1.0, 3)
    assert training.median_step_seconds([0.0, 9.0, 10.0, 11.0, 13.0, 14.0, 16.0]) == (1.5, 4)


def test_the_train_stage_records_its_seconds_per_step_and_a_rerun_still_skips(tmp_path):
    summary = small_run(tmp_path, "train.max_steps=6")
    card = json.loads((tmp_path / "students" / "cot" / "card.json").read_text())
    assert summary["step_s_steps"] == 3 and summary["step_s"] > 0  # 6 steps: 5 gaps, 2 of them warm-up
    assert card["training"]["step_s"] == summary["step_s"] and card["training"]["step_s_steps"] == 3
    assert small_run(tmp_path, "train.max_steps=6").get("skipped")  # the timing is not part of the config digest
    short = small_run(tmp_path / "short", "train.max_steps=3")
    assert (short["step_s"], short["step_s_steps"]) == (None, 0)
