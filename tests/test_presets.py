"""Every preset in mlprojects/ loads and passes the train stage's checks; the paper sizes carry its settings."""
from __future__ import annotations

import pytest

from distill.config import load_config, presets
from distill.stages.train import check_config

PAPER_STUDENTS = {"codet5-small": "Salesforce/codet5-small", "codet5-base": "Salesforce/codet5-base",
                  "codet5-large": "Salesforce/codet5-large"}


@pytest.mark.parametrize("preset", presets())
def test_every_preset_loads_and_its_train_section_validates(preset):
    cfg = load_config(preset)
    assert cfg.preset == preset
    check_config(cfg.train)


def test_the_tiny_and_paper_presets_are_shipped():
    assert {"tiny", *PAPER_STUDENTS} <= set(presets())


@pytest.mark.parametrize("preset,student", PAPER_STUDENTS.items())
def test_codet5_presets_carry_the_papers_settings_with_the_same_effective_batch(preset, student):
    train = load_config(preset).train
    # METHOD.md: lr 5e-4, 10 epochs, 256 tokens in and out
    assert (train.student, train.lr, train.epochs, train.max_source_len, train.max_target_len) == (
        student, 5e-4, 10, 256, 256)
    assert train.batch_size * train.grad_accum == 32
    assert train.precision == "auto" and train.max_steps is None and train.max_minutes is None


def test_tiny_preset_is_a_small_cpu_student_with_a_time_budget():
    train = load_config("tiny").train
    assert train.student == "tiny" and (train.tiny_d_model, train.tiny_layers) == (128, 2)
    assert train.max_minutes is not None and train.epochs == 10
