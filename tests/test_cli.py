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


# --- one way in for config: flags are short overrides; the stages read the config only ----------------

def _captured_config(monkeypatch, module: str, args: list[str]):
    """The Config a command hands its stage (the stage replaced by a recorder)."""
    import importlib

    seen = []
    stage = importlib.import_module(f"distill.stages.{module}")
    monkeypatch.setattr(stage, "run", lambda cfg, run_dir, tracker=None, **kw: seen.append(cfg) or {})
    monkeypatch.setattr("distill.cli.tracker_for", lambda cfg: None)
    result = CliRunner().invoke(main, args)
    return result, (seen[0] if seen else None)


def test_train_mix_defaults_to_the_presets_mix_like_every_other_command(monkeypatch, tmp_path):
    preset = tmp_path / "cot-study.yaml"
    preset.write_text("mix:\n  mix: cot\n")
    _, cfg = _captured_config(monkeypatch, "train", ["train", "--preset", str(preset)])
    assert cfg.mix.mix == "cot"
    _, cfg = _captured_config(monkeypatch, "train", ["train", "--preset", str(preset), "--mix", "eot"])
    assert cfg.mix.mix == "eot"


def test_data_dir_travels_as_data_data_dir_not_through_the_environment(monkeypatch, tmp_path):
    import os

    monkeypatch.delenv("DISTILL_DATA_DIR", raising=False)
    result, cfg = _captured_config(monkeypatch, "verify", ["verify", "--preset", "tiny", "--data-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert cfg.data.data_dir == str(tmp_path) and cfg.data_path == tmp_path
    assert "DISTILL_DATA_DIR" not in os.environ


def test_the_mlproject_overrides_join_list_values_and_leave_empty_parameters_unset(monkeypatch):
    args = ["verify", "--preset", "tiny", "--overrides", "data.test_sets=svamp,multiarith,verify.timeout=,verify.strict=true"]
    result, cfg = _captured_config(monkeypatch, "verify", args)
    assert result.exit_code == 0, result.output
    assert cfg.data.test_sets == ("svamp", "multiarith") and cfg.verify.strict is True
    assert cfg.verify.timeout == load_config("tiny").verify.timeout


@pytest.mark.parametrize("command", ["generate", "verify", "train", "rl", "evaluate", "promote", "overlap"])
def test_the_duplicated_config_flags_are_gone_and_help_points_to_set(command):
    text = " ".join(CliRunner().invoke(main, [command, "--help"]).output.split())
    for flag in ("--lr ", "--epochs", "--batch-size", "--max-steps", "--limit", "--forms", "--test-sets",
                 "--max-new-tokens", "--metric", "--strict", "--timeout", "--base-url", "--concurrency", "--budget",
                 "--model", "--api-key-env", "--replay-file", "--n "):
        assert flag not in text, (command, flag)
    assert "--set KEY=VALUE" in text and "Other settings: --set key=value" in text


def test_a_removed_flag_is_refused_by_click_not_silently_ignored():
    result = CliRunner().invoke(main, ["evaluate", "--limit", "3"])
    assert result.exit_code == 2
    assert "No such option '--limit'. It is a config setting: --set evaluate.limit=VALUE" in result.output
    result = CliRunner().invoke(main, ["generate", "--limit", "3"])
    assert result.exit_code == 2 and "--set data.limit_train=VALUE" in result.output


def test_no_stage_takes_a_keyword_that_repeats_a_config_value():
    import importlib
    import inspect

    for name in ("generate", "verify", "mix", "train", "rl", "evaluate", "register", "promote", "report"):
        module = importlib.import_module(f"distill.stages.{name}")
        for fn in (module.run, getattr(module, "run_untrained", module.run)):
            params = list(inspect.signature(fn).parameters)
            assert params[:3] == ["cfg", "run_dir", "tracker"], (name, params)
            assert not {"mix", "metric"} & set(params), (name, params)


def test_every_moved_flag_names_a_real_setting_and_is_no_longer_an_option():
    from distill.cli import MOVED_FLAGS
    from distill.config import Config, flatten

    keys = set(flatten(Config()))
    for command, flags in MOVED_FLAGS.items():
        options = {o for p in main.commands[command].params for o in p.opts}
        assert not set(flags) & options, command
        assert set(flags.values()) <= keys, command
    assert sum(len(flags) for flags in MOVED_FLAGS.values()) == 23


def test_every_mlproject_entry_point_parses_and_its_parameters_reach_the_config():
    import shlex
    from pathlib import Path

    import yaml

    from distill.cli import _split_overrides

    project = yaml.safe_load((Path(__file__).resolve().parent.parent / "MLproject").read_text())
    given = {"lr": "5e-4", "epochs": "2", "max_steps": "3", "limit": "7", "forms": "eot,pot", "metric": "val/eot/accuracy"}
    checked = 0
    for name, entry in project["entry_points"].items():
        params = {k: given.get(k, v.get("default")) for k, v in (entry.get("parameters") or {}).items()}
        args = shlex.split(entry["command"].format(**params))
        assert args[0] == "distill"
        ctx = main.commands[args[1]].make_context(args[1], args[2:])  # an unknown flag raises here
        cfg = load_config(ctx.params.get("preset"), _split_overrides(ctx.params.get("override_list", "")))
        if args[1] == "train":
            assert (cfg.train.lr, cfg.train.epochs, cfg.train.max_steps, cfg.train.student) == (5e-4, 2, 3, "tiny")
        if args[1] == "evaluate" and "--untrained" not in args:
            assert cfg.evaluate.forms == ("eot", "pot") and cfg.evaluate.limit == 7
        if args[1] == "promote":
            assert cfg.promote.metric == "val/eot/accuracy"
        checked += 1
    assert checked == len(project["entry_points"]) >= 12
