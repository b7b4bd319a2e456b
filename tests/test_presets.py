"""Every preset in mlprojects/ loads and passes the config's checks; the paper sizes carry its settings."""
from __future__ import annotations

import pytest

from distill.config import PRESET_DIR, check, load_config, presets

PAPER_STUDENTS = {"codet5-small": "Salesforce/codet5-small", "codet5-base": "Salesforce/codet5-base",
                  "codet5-large": "Salesforce/codet5-large"}


@pytest.mark.parametrize("preset", presets())
def test_every_preset_loads_names_itself_and_its_train_section_validates(preset):
    cfg = load_config(preset)
    assert cfg.preset == preset
    assert str(cfg.run_path) == f"runs/{preset}"
    check(cfg)


def test_the_tiny_smoke_and_paper_presets_are_shipped():
    assert {"tiny", "smoke", *PAPER_STUDENTS} <= set(presets())


@pytest.mark.parametrize("preset,student", PAPER_STUDENTS.items())
def test_codet5_presets_carry_the_papers_settings_with_the_same_effective_batch(preset, student):
    train = load_config(preset).train
    # METHOD.md: lr 5e-4, 10 epochs, 256 tokens in and out
    assert (train.student, train.lr, train.epochs, train.max_source_len, train.max_target_len) == (
        student, 5e-4, 10, 256, 256)
    assert train.batch_size == "auto" and train.effective_batch_size == 32  # sized to the GPU, same effective batch
    assert load_config(preset).evaluate.batch_size == "auto"
    assert train.precision == "auto" and train.max_steps is None and train.max_minutes is None


def test_tiny_preset_is_a_small_cpu_student_with_a_time_budget():
    train = load_config("tiny").train
    assert train.student == "tiny" and (train.tiny_d_model, train.tiny_layers) == (128, 2)
    assert train.max_minutes is not None and train.epochs == 10


DECODER_STUDENTS = {"qwen2.5-0.5b": ("Qwen/Qwen2.5-0.5B-Instruct", 0), "qwen2.5-0.5b-lora": ("Qwen/Qwen2.5-0.5B-Instruct", 16),
                    "smollm2-360m": ("HuggingFaceTB/SmolLM2-360M-Instruct", 0)}


@pytest.mark.parametrize("preset,expected", DECODER_STUDENTS.items())
def test_decoder_presets_use_the_chat_template_the_papers_lengths_and_note_their_gpu_memory(preset, expected):
    train = load_config(preset).train
    assert (train.student, train.lora_r) == expected
    assert train.chat_template and (train.max_source_len, train.max_target_len) == (256, 256)
    assert train.batch_size == "auto" and train.effective_batch_size == 32 and train.max_steps is None
    assert "GPU memory" in (PRESET_DIR / f"{preset}.yaml").read_text()
    assert not train.hub_kernels


def test_the_lora_preset_keeps_a_merged_student_so_it_serves_like_any_other():
    train = load_config("qwen2.5-0.5b-lora").train
    assert train.lora_merge and train.lora_alpha == 2 * train.lora_r and train.lr > load_config("qwen2.5-0.5b").train.lr


GPU_PRESETS = (*PAPER_STUDENTS, *DECODER_STUDENTS)


@pytest.mark.parametrize("preset", GPU_PRESETS)
def test_gpu_presets_decode_in_bf16_and_the_cpu_presets_keep_the_saved_fp32(preset):
    assert load_config(preset).evaluate.dtype == "bf16"


@pytest.mark.parametrize("preset", ["tiny", "smoke"])
def test_cpu_presets_evaluate_in_the_dtype_the_student_was_saved_in(preset):
    assert load_config(preset).evaluate.dtype == "auto"


@pytest.mark.parametrize("preset", presets())
def test_every_preset_has_an_rl_section_that_validates(preset):
    check(load_config(preset))


def test_the_grpo_preset_records_its_choices_memory_arithmetic_and_an_estimated_time():
    cfg = load_config("qwen2.5-0.5b-grpo")
    text = (PRESET_DIR / "qwen2.5-0.5b-grpo.yaml").read_text()
    assert cfg.train.student == "Qwen/Qwen2.5-0.5B-Instruct" and cfg.train.chat_template
    assert cfg.rl.start == "" and cfg.rl.use_vllm is False and cfg.rl.batch_size % cfg.rl.num_generations == 0
    assert "GPU memory" in text and "ESTIMATE" in text and "rl.start=Qwen/Qwen2.5-0.5B-Instruct" in text
