"""distill --help and the CLI's first checks: what a user reads before anything runs."""
from __future__ import annotations

import subprocess
import sys

import pytest
from click.testing import CliRunner

from distill.cli import main
from distill.config import load_config


def test_every_command_summary_in_help_is_a_whole_sentence():
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0
    commands = result.output.split("Commands:")[1].strip().splitlines()
    assert len(commands) == len(main.commands)
    for line in commands:
        summary = line.split(None, 1)[1]
        assert summary.endswith(".") and not summary.endswith("..."), line


def test_help_names_the_teachers_and_students_that_exist():
    text = CliRunner().invoke(main, ["--help"]).output
    assert "seq2seq student" not in text and "teacher LLM" not in text
    assert "gold teacher" in text and "causal" in text


def test_the_lr_help_shows_the_presets_default_not_the_papers():
    text = " ".join(CliRunner().invoke(main, ["train", "--help"]).output.split())
    assert f"the preset's train.lr: {load_config('tiny').train.lr:g} in tiny" in text
    assert "default: train.lr, 5e-4" not in text


@pytest.mark.parametrize("command", ["evaluate", "train", "mix", "rl", "register", "promote"])
def test_an_unknown_mix_is_refused_with_the_valid_names_not_with_advice_that_fails(command):
    result = CliRunner().invoke(main, [command, "--mix", "xyz"])
    assert result.exit_code == 2
    assert "unknown mix 'xyz'; valid: cot, pot, eot, etd or forms joined by '+'" in result.output
    assert "distill train --mix xyz" not in result.output


def test_an_unknown_mix_is_refused_before_torch_mlflow_or_transformers_are_imported():
    code = ("import sys\nfrom distill.cli import main\n"
            "try:\n    main(['evaluate', '--mix', 'xyz'])\nexcept SystemExit as e:\n    code = e.code\n"
            "heavy = sorted(m for m in ('torch', 'mlflow', 'transformers') if m in sys.modules)\n"
            "print(code, heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip().splitlines()[-1] == "2 []", out.stdout + out.stderr


@pytest.mark.parametrize("command", ["evaluate", "register", "promote"])
def test_the_stages_that_take_any_student_accept_a_variant_name(command):
    # the name passes the --mix check; the command then stops at the next one, the unknown preset
    result = CliRunner().invoke(main, [command, "--mix", "etd-grpo", "--preset", "no-such-preset"])
    assert "unknown preset 'no-such-preset'" in result.output and "unknown mix" not in result.output


@pytest.mark.parametrize("command", ["mix", "train", "rl"])
def test_the_stages_that_build_a_mix_refuse_a_variant_name(command):
    result = CliRunner().invoke(main, [command, "--mix", "etd-grpo"])
    assert result.exit_code == 2 and "unknown mix 'etd-grpo'" in result.output
