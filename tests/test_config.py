"""Typed config: presets, dotted overrides, and errors that name the key (every shipped preset: test_presets.py)."""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest

from distill.config import Config, ConfigError, flatten, load_config, replace


def test_no_preset_gives_the_documented_defaults(monkeypatch):
    monkeypatch.delenv("DISTILL_DATA_DIR", raising=False)  # `make test` exports it: it would set data.data_dir
    cfg = load_config()
    assert cfg == Config()
    assert cfg.train.lr == 5e-4 and cfg.train.epochs == 10  # the paper's figures (METHOD.md)
    assert cfg.data.test_sets == ("gsm8k", "asdiv", "svamp", "multiarith")


def test_a_preset_can_be_a_yaml_path(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("train:\n  epochs: 3\n")
    cfg = load_config(path)
    assert cfg.preset == "mine" and cfg.train.epochs == 3


def test_overrides_are_typed_by_the_schema():
    cfg = load_config("tiny", ["train.epochs=2", "train.lr=0.01", "teacher.model=gpt-4o-mini",
                               "data.test_sets=gsm8k+svamp", "generate.forms=[cot, eot]", "train.max_steps=",
                               "teacher.base_url=null", "verify.strict=true"])
    assert cfg.train.epochs == 2 and isinstance(cfg.train.epochs, int)
    assert cfg.train.lr == 0.01
    assert cfg.teacher.model == "gpt-4o-mini"
    assert cfg.data.test_sets == ("gsm8k", "svamp")
    assert cfg.generate.forms == ("cot", "eot")
    assert cfg.train.max_steps is None and cfg.teacher.base_url is None
    assert cfg.verify.strict is True


@pytest.mark.parametrize("text", ["1e-4", "1e-05", "5.0e-4", " 2E-3 "])
def test_a_float_written_without_a_dot_is_still_a_float(text):
    # YAML 1.1 reads "1e-4" as a string; json.dumps(1e-05) from a CLI flag gives "1e-05"
    assert load_config("tiny", [f"train.lr={text}"]).train.lr == pytest.approx(float(text))


def test_an_int_is_accepted_where_a_float_is_expected_and_becomes_one():
    lr = load_config("tiny", ["train.lr=1"]).train.lr
    assert lr == 1.0 and isinstance(lr, float)


def test_a_later_override_wins_and_the_preset_beats_the_default():
    cfg = load_config("tiny", ["train.epochs=2", "train.epochs=4"])
    assert cfg.train.epochs == 4
    assert cfg.train.lr == 1e-3  # tiny.yaml, not the dataclass default


@pytest.mark.parametrize("override, message", [
    ("train.lrr=1", "unknown key 'train.lrr'; valid keys in train: "),
    ("trian.lr=1", "unknown key 'trian'; valid keys in config: "),
    ("train.epochs=abc", "train.epochs: expected int, got 'abc'"),
    ("train.epochs=2.5", "train.epochs: expected int, got 2.5"),
    ("train.epochs=true", "train.epochs: expected int, got True"),
    ("train.lr=fast", "train.lr: expected float, got 'fast'"),
    ("train.lr=.nan", "train.lr: expected a finite number"),
    ("train.max_steps=many", "train.max_steps: expected int | None, got 'many'"),
    ("data.test_sets=3", "data.test_sets: expected a list, got 3"),
    ("teacher.prices=cheap", "teacher.prices: expected a mapping"),
    ("train=3", "train must be a mapping"),
    ("train.epochs", "override 'train.epochs' must look like section.key=value"),
    ("train.epochs.x=1", "train.epochs.x: epochs is not a section"),
    ("evaluate.dtype=half", "evaluate.dtype: unknown 'half'; valid: auto, fp32, bf16, fp16"),
])
def test_a_bad_override_names_the_key(override, message):
    with pytest.raises(ConfigError) as err:
        load_config("tiny", [override])
    assert message in str(err.value)


def test_an_unknown_preset_lists_the_valid_ones():
    with pytest.raises(ConfigError, match="unknown preset 'tinny'; valid presets: .*tiny"):
        load_config("tinny")


def test_a_preset_with_an_unknown_key_names_the_key(tmp_path):
    path = tmp_path / "typo.yaml"
    path.write_text("train:\n  epochz: 3\n")
    with pytest.raises(ConfigError, match="unknown key 'train.epochz'"):
        load_config(path)


def test_a_preset_that_is_not_a_mapping_says_so(tmp_path):
    path = tmp_path / "list.yaml"
    path.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="must be a mapping of sections"):
        load_config(path)


def test_a_preset_that_is_not_yaml_names_the_file(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("train: [1, 2\n")
    with pytest.raises(ConfigError, match="cannot read preset .*broken.yaml"):
        load_config(path)


def test_config_is_frozen_and_replace_makes_a_changed_copy():
    cfg = load_config("tiny")
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.train.epochs = 1  # type: ignore[misc]
    changed = replace(cfg, train={"epochs": 1}, mix={"mix": "eot"})
    assert changed.train.epochs == 1 and changed.mix.mix == "eot"
    assert cfg.train.epochs == 10 and changed.train.lr == cfg.train.lr


def test_flatten_gives_dotted_names_for_mlflow_params():
    flat = flatten(load_config("tiny"))
    assert flat["train.lr"] == 1e-3 and flat["preset"] == "tiny"
    assert flat["data.test_sets"] == ("gsm8k", "asdiv", "svamp", "multiarith")
    assert not any(isinstance(v, dict) and k.count(".") == 0 for k, v in flat.items())


def test_environment_variables_choose_the_data_dir_and_the_tracking_store(monkeypatch, tmp_path):
    preset = tmp_path / "from-config.yaml"  # the data folder a preset names
    preset.write_text("data:\n  data_dir: /from/config\n")
    monkeypatch.delenv("DISTILL_DATA_DIR", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    cfg = load_config(preset)
    assert str(cfg.data_path) == "/from/config"
    assert cfg.tracking_uri == "sqlite:///mlflow.db"
    monkeypatch.setenv("DISTILL_DATA_DIR", "/from/env")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:////tmp/x.db")
    cfg = load_config(preset)  # DISTILL_DATA_DIR is read when a config is loaded
    assert str(cfg.data_path) == "/from/env"
    assert cfg.tracking_uri == "sqlite:////tmp/x.db"


@pytest.mark.parametrize("override, message", [
    ("evaluate.limit=0", "evaluate.limit must be at least 1 (or null), got 0"),
    ("evaluate.limit=-1315", "evaluate.limit must be at least 1 (or null), got -1315"),
    ("train.batch_size=0", "train.batch_size must be at least 1 (or 'auto'), got 0"),
    ("mix.val_fraction=1.0", "mix.val_fraction must be in [0, 1), got 1.0"),
    ("train.lr=0", "train.lr must be more than 0, got 0.0"),
    ("teacher.temperature=-0.5", "teacher.temperature must be in [0, 2], got -0.5"),
    ("train.checkpoint_minutes=0", "train.checkpoint_minutes must be more than 0 (or null), got 0.0"),
])
def test_a_number_outside_its_range_is_refused_naming_the_key_and_the_range(override, message):
    with pytest.raises(ConfigError) as err:
        load_config("smoke", [override])
    assert str(err.value) == message


def test_every_numeric_setting_has_a_range_and_every_default_lies_in_it():
    from distill.config import RANGES, Config, check_ranges, flatten

    numeric = {k for k, v in flatten(Config()).items()
               if isinstance(v, (int, float)) and not isinstance(v, bool)}
    nullable = {"data.limit_train", "teacher.budget", "train.max_steps", "train.max_minutes", "evaluate.limit"}
    assert numeric | nullable <= set(RANGES)
    check_ranges(Config())
    assert load_config("smoke", ["evaluate.limit=null", "train.checkpoint_minutes=null"]).evaluate.limit is None


def test_replace_checks_the_ranges_too():
    from distill.config import replace

    with pytest.raises(ConfigError, match="evaluate.limit"):
        replace(load_config("smoke"), evaluate={"limit": 0})


def test_a_bad_range_on_the_command_line_is_refused_before_torch_is_imported():
    import subprocess
    import sys

    code = ("import sys\nfrom click.testing import CliRunner\nfrom distill.cli import main\n"
            "r = CliRunner().invoke(main, ['evaluate', '--preset', 'smoke', '--set', 'evaluate.limit=0'])\n"
            "print(r.exit_code, 'torch' in sys.modules, 'transformers' in sys.modules)\nprint(r.output)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}).stdout
    assert out.splitlines()[0] == "2 False False"
    assert "evaluate.limit must be at least 1 (or null), got 0" in out


# --- one way in: every problem of a config at once; DISTILL_DATA_DIR read when loading only ----------

def test_a_config_with_two_problems_names_both_in_one_error():
    with pytest.raises(ConfigError) as err:
        load_config("tiny", ["train.lr=fast", "evaluate.limit=0"])
    text = str(err.value)
    assert text.startswith("2 problems in the config:")
    assert "train.lr: expected float, got 'fast'" in text
    assert "evaluate.limit must be at least 1 (or null), got 0" in text


def test_unknown_keys_wrong_types_ranges_and_section_rules_are_all_collected():
    overrides = ["train.lrr=1", "train.epochs=abc", "mix.val_fraction=1.0", "train.scheduler=steps",
                 "rl.batch_size=6", "rl.num_generations=4", "mix.mix=xot", "promote.metric=gsm8k/eot/accuracy",
                 "train.tiny_d_model=130", "evaluate.dtype=half", "teacher.name=gpt4", "train.epochs.x=1"]
    with pytest.raises(ConfigError) as err:
        load_config("tiny", overrides)
    text = str(err.value)
    expected = ["unknown key 'train.lrr'", "train.epochs: expected int, got 'abc'",
                "mix.val_fraction must be in [0, 1), got 1.0", "train.scheduler: unknown 'steps'; valid: linear",
                "rl.batch_size (6) must be a multiple of rl.num_generations (4)",
                "mix.mix: unknown mix 'xot'; valid: cot, pot, eot, etd",
                "promote.metric 'gsm8k/eot/accuracy' is not a validation accuracy",
                "train.tiny_d_model (130) must be a multiple of train.tiny_heads (4)",
                "evaluate.dtype: unknown 'half'; valid: auto, fp32, bf16, fp16",
                "teacher.name: unknown teacher 'gpt4'; valid teachers: gold, replay, openai",
                "train.epochs.x: epochs is not a section"]
    assert text.startswith(f"{len(expected)} problems in the config:")
    assert [e for e in expected if e not in text] == []


def test_replace_names_every_problem_of_the_changed_config_too():
    with pytest.raises(ConfigError, match="2 problems in the config") as err:
        replace(load_config("tiny"), train={"precision": "fp8"}, mix={"mix": "cot+xot"})
    assert "train.precision: unknown 'fp8'" in str(err.value) and "unknown mix 'cot+xot'" in str(err.value)


def test_a_mix_with_a_variant_names_a_student_and_is_a_valid_mix_setting():
    assert load_config("tiny", ["mix.mix=etd-grpo", "promote.mix=cot-base"]).mix.mix == "etd-grpo"


def test_the_data_dir_from_the_environment_sits_between_the_preset_and_the_overrides(monkeypatch):
    monkeypatch.setenv("DISTILL_DATA_DIR", "/from/env")
    assert load_config("tiny").data.data_dir == "/from/env"
    assert load_config("tiny", ["data.data_dir=/from/override"]).data.data_dir == "/from/override"
    monkeypatch.delenv("DISTILL_DATA_DIR")
    assert load_config("tiny").data.data_dir == "data"


def test_a_config_is_not_changed_by_the_environment_after_it_is_loaded(monkeypatch):
    monkeypatch.delenv("DISTILL_DATA_DIR", raising=False)
    cfg = load_config("tiny", ["data.data_dir=/chosen"])
    monkeypatch.setenv("DISTILL_DATA_DIR", "/later")
    assert str(cfg.data_path) == "/chosen"
