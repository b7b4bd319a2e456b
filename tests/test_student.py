"""Students: the tiny one is built offline and round-trips through save_pretrained like a hub model; a
student is found by folder, run id, runs: or models: URI, and a wrong name says what is accepted."""
from __future__ import annotations

from contextlib import ExitStack

import pytest

from distill.config import ConfigError, load_config
from distill.files import DataError
from distill.student import (build_student, build_tiny, count_parameters, load_student, resolve_student, save_student,
                             tiny_parameters, train_tokenizer)
from test_evaluate import make_cfg, stub_forms  # noqa: F401 (a fixture)
from test_evaluate import save_student as saved_test_student  # a tiny T5 and its card, as the train stage saves them

TEXTS = [f"Question: Tom has {a} apples and buys {b}.\nSystem of linear equations: (Do not simplify)\n"
         f"% Tom has {a} apples\napples = {a}\nans = apples + {b}" for a in range(40) for b in range(5)]


def test_tiny_tokenizer_round_trips_newlines_spaces_and_unseen_characters():
    tokenizer = train_tokenizer(TEXTS, vocab_size=300)
    for text in ("apples = 12\nans = apples", "Let’s break down the code step by step", "  two  spaces", "é ∑ 😀"):
        assert tokenizer.decode(tokenizer(text).input_ids, skip_special_tokens=True) == text


def test_tiny_tokenizer_ends_every_sequence_with_eos_and_pads_with_id_zero():
    tokenizer = train_tokenizer(TEXTS, vocab_size=300)
    assert tokenizer("ans = 3").input_ids[-1] == tokenizer.eos_token_id == 1
    assert tokenizer.pad_token_id == 0


def test_tiny_tokenizer_training_is_deterministic():
    assert train_tokenizer(TEXTS, 300).get_vocab() == train_tokenizer(TEXTS, 300).get_vocab()


def test_tiny_preset_student_is_about_a_million_parameters():
    model, tokenizer = build_student("tiny", TEXTS, train_cfg=load_config("tiny").train)
    assert 0.5e6 < count_parameters(model) < 2e6
    assert model.config.vocab_size == len(tokenizer)
    assert model.config.decoder_start_token_id == tokenizer.pad_token_id


def test_a_saved_tiny_student_loads_back_with_the_auto_classes_and_gives_the_same_output(tmp_path):
    import torch
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    model, tokenizer = build_tiny(TEXTS, d_model=32, layers=1, heads=2, d_ff=64, vocab=300, seed=1)
    save_student(model, tokenizer, tmp_path / "student")
    loaded, loaded_tok = load_student(tmp_path / "student")
    ids = loaded_tok(TEXTS[0], return_tensors="pt").input_ids
    assert ids.tolist() == tokenizer(TEXTS[0], return_tensors="pt").input_ids.tolist()
    model.eval(), loaded.eval()
    with torch.no_grad():
        expect = model.generate(ids, max_new_tokens=5, do_sample=False)
        assert torch.equal(loaded.generate(ids, max_new_tokens=5, do_sample=False), expect)
    assert AutoModelForSeq2SeqLM.from_pretrained(tmp_path / "student").config.d_model == 32
    assert AutoTokenizer.from_pretrained(tmp_path / "student").get_vocab() == tokenizer.get_vocab()


def test_tiny_students_built_with_the_same_seed_are_identical():
    a, _ = build_tiny(TEXTS, d_model=32, layers=1, heads=2, d_ff=64, vocab=300, seed=3)
    b, _ = build_tiny(TEXTS, d_model=32, layers=1, heads=2, d_ff=64, vocab=300, seed=3)
    assert all((x == y).all() for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_a_student_that_cannot_be_loaded_says_what_to_give_instead(tmp_path):
    with pytest.raises(ConfigError, match="train.student=tiny"):
        load_student(tmp_path / "no-such-model")


def test_tiny_parameters_counts_the_student_that_build_student_makes(data_dir):
    from distill.problems import load

    cfg = load_config("smoke", []).train
    texts = [p.question + " " + (p.rationale or "") for p in load("gsm8k", "train", data_dir, hub=False).problems[:200]]
    model, tokenizer = build_student("tiny", texts, train_cfg=cfg)
    assert len(tokenizer) == cfg.tiny_vocab  # the vocabulary fills up on GSM8K text
    assert count_parameters(model) == tiny_parameters(cfg)


def test_the_readme_and_the_tiny_preset_state_the_size_the_code_computes():
    from pathlib import Path

    n = tiny_parameters(load_config("tiny", []).train)
    root = Path(__file__).resolve().parent.parent
    readme, preset = (root / "README.md").read_text(), (root / "mlprojects" / "tiny.yaml").read_text()
    assert f"{n:,} parameters ({n / 1e6:.1f}M" in readme
    assert f"{n:,} params" in preset


# --- causal students -------------------------------------------------------------------------------

def test_tiny_causal_student_is_a_llama_decoder_about_the_size_of_the_tiny_t5():
    from distill.student import student_kind

    model, tokenizer = build_student("tiny-causal", TEXTS, train_cfg=load_config("tiny").train)
    assert student_kind(model) == "causal" and type(model).__name__ == "LlamaForCausalLM"
    assert 0.5e6 < count_parameters(model) < 2e6
    assert model.config.vocab_size == len(tokenizer) and tokenizer.padding_side == "left"
    # a causal prompt must not end the sequence: this tokenizer appends no </s>
    assert tokenizer.eos_token_id not in tokenizer("ans = 3").input_ids


def test_a_saved_causal_student_loads_back_by_its_config_and_gives_the_same_output(tmp_path):
    import torch

    from distill.student import build_tiny_causal, read_student_info

    model, tokenizer = build_tiny_causal(TEXTS, d_model=32, layers=1, heads=2, d_ff=64, vocab=300, seed=1)
    save_student(model, tokenizer, tmp_path / "student")
    loaded, loaded_tok = load_student(tmp_path / "student")
    assert type(loaded).__name__ == "LlamaForCausalLM" and loaded_tok.padding_side == "left"
    assert read_student_info(tmp_path / "student") == {"kind": "causal", "architecture": "LlamaForCausalLM",
                                                       "chat_template": False, "adapter": False, "base_model": None}
    ids = tokenizer(TEXTS[0], return_tensors="pt").input_ids
    model.eval(), loaded.eval()
    with torch.no_grad():
        assert torch.equal(loaded(ids).logits, model(ids).logits)


def test_causal_decoding_pads_on_the_left_and_returns_only_the_completion():
    import torch

    from distill.decoding import decode
    from distill.student import build_tiny_causal

    model, tokenizer = build_tiny_causal(TEXTS, d_model=32, layers=1, heads=2, d_ff=64, vocab=300, seed=2)
    with torch.no_grad():  # larger random weights, so the random model writes varied tokens
        for p in model.parameters():
            p.mul_(8)
    inputs = ["Question: Tom has 3 apples.\nSystem:\n", "Question: 2?\n", "Question: Tom has 12 apples and buys 4.\n"]
    batched = decode(model, tokenizer, inputs, batch_size=3, max_new_tokens=8)
    single = [decode(model, tokenizer, [x], batch_size=1, max_new_tokens=8)[0] for x in inputs]
    assert batched == single and any(batched)
    assert not any(out.startswith("Question") for out in batched)  # the prompt is cut off


def test_a_lora_adapter_folder_loads_onto_its_base_with_the_trained_weights(tmp_path):
    import torch
    from peft import LoraConfig, get_peft_model

    from distill.student import build_tiny_causal

    base, tokenizer = build_tiny_causal(TEXTS, d_model=32, layers=1, heads=2, d_ff=64, vocab=300, seed=1)
    save_student(base, tokenizer, tmp_path / "student" / "base")
    model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                            task_type="CAUSAL_LM"))
    with torch.no_grad():  # a trained adapter: B is no longer zero
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_()
    save_student(model, tokenizer, tmp_path / "student")
    loaded, _ = load_student(tmp_path / "student")
    ids = tokenizer(TEXTS[0], return_tensors="pt").input_ids
    model.eval(), loaded.eval()
    with torch.no_grad():
        assert torch.allclose(loaded(ids).logits, model(ids).logits)
        plain_base = load_student(tmp_path / "student" / "base")[0].eval()
        assert not torch.allclose(loaded(ids).logits, plain_base(ids).logits)  # the adapter is applied


def test_stale_form_names_the_first_form_trained_on_another_version_and_skips_cards_without_one():
    from distill.student import stale_form
    from distill.thoughts import get_form

    eot, pot = get_form("eot").version, get_form("pot").version
    assert stale_form({"forms": {"eot": {"version": eot}, "pot": {"version": pot}}}) is None
    assert stale_form({"forms": {"eot": {"version": eot}, "pot": {"version": pot + 7}}}) == ("pot", pot + 7, pot)
    assert stale_form({"forms": {"eot": None, "pot": {}}}) is None  # older cards record no version
    assert stale_form({"forms": {"eot": {"version": eot}, "pot": {"version": pot + 7}}}, ["eot"]) is None
    assert stale_form({}) is None


# --- finding the student (distill.student.find_student_dir, resolve_student), moved from test_evaluate.py ---

def test_find_student_dir_accepts_the_train_layout_the_model_folder_and_a_nested_artifact(tmp_path):
    from distill.student import find_student_dir

    root = saved_test_student(tmp_path / "students" / "etd", forms=("eot",))
    assert find_student_dir(root) == (root / "model", root / "card.json")
    assert find_student_dir(root / "model") == (root / "model", root / "card.json")
    assert find_student_dir(tmp_path) == (root / "model", root / "card.json")
    (tmp_path / "empty").mkdir()
    assert find_student_dir(tmp_path / "empty") is None


def test_a_missing_default_student_says_how_to_make_one(tmp_path, data_dir):
    from distill.stages import evaluate as stage

    with pytest.raises(DataError, match="distill train --mix etd"):
        stage.run(make_cfg(data_dir), tmp_path)


@pytest.fixture
def registry_here(mlflow_uri):
    """The model registry of this test's store: `distill register` (distill/stages/register.py) points the
    process-wide registry URI at its own store, and an earlier test of the session may have run it."""
    import mlflow

    mlflow.set_registry_uri(mlflow_uri)
    yield mlflow_uri
    mlflow.set_registry_uri(None)


def test_a_student_is_found_by_run_id_runs_uri_and_registered_model_uri(tmp_path, data_dir, stub_forms, mlflow_uri,
                                                                         registry_here):
    import mlflow

    from distill.serving.logged_model import log_student
    from distill.stages import evaluate as stage
    from distill.tracking import Tracker

    folder = saved_test_student(tmp_path / "somewhere" / "student", forms=("eot",))
    tracker = Tracker(mlflow_uri, "distill")
    with tracker.run("train-eot", {"distill.stage": "train"}) as train_run:
        info = log_student(folder)  # the train stage's way: a pyfunc model holding student/{model/, card.json}
    train_id = train_run.info.run_id
    mlflow.register_model(f"runs:/{train_id}/model", "distill-student")
    mlflow.MlflowClient().set_registered_model_alias("distill-student", "champion", "1")
    for spec in (train_id, f"runs:/{train_id}/model", info.model_uri, "models:/distill-student/1"):
        with ExitStack() as stack:
            found = resolve_student(spec, tmp_path, "etd", mlflow_uri, stack)
            assert found.card["mix"] == "eot" and found.run_id == train_id, spec
            assert (found.model_dir / "config.json").exists()
    cfg = make_cfg(data_dir, limit=1, test_sets=("svamp",))
    summary = stage.run(cfg, tmp_path / "runs", tracker, student="models:/distill-student@champion")
    assert summary["mix"] == "eot" and summary["train_run_id"] == train_id
    assert summary["test_sets"]["svamp"]["forms"]["eot"]["accuracy"] == 1.0
    assert mlflow.MlflowClient().get_run(summary["run_id"]).data.tags["distill.train_run_id"] == train_id


def test_an_unknown_student_spec_says_what_is_accepted(tmp_path, data_dir):
    from distill.stages import evaluate as stage

    with pytest.raises(DataError, match="models:/NAME/VERSION"):
        stage.run(make_cfg(data_dir), tmp_path, student="no-such-thing")
