"""`distill problems`: the data sets with their counts, and records of one."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from distill.cli import main


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch):
    """Commands may set DISTILL_DATA_DIR in-process; monkeypatch restores it afterwards."""
    monkeypatch.setenv("DISTILL_DATA_DIR", "unset-by-test")
    monkeypatch.delenv("DISTILL_DATA_DIR")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def test_distill_problems_lists_every_data_set_with_its_count(data_dir):
    result = CliRunner().invoke(main, ["problems", "--data-dir", str(data_dir)])
    assert result.exit_code == 0, result.output
    rows = {tuple(line.split()[:4]) for line in result.output.splitlines()[2:]}
    assert {("gsm8k", "train", "7,473", "0"), ("gsm8k", "test", "1,319", "0"), ("svamp", "test", "1,000", "0"),
            ("asdiv", "test", "2,096", "0"), ("asdiv-full", "test", "2,093", "212"),
            ("multiarith", "test", "600", "0")} == rows
    assert "(90 multi_answer, 122 non_numeric)" in result.output


def test_distill_problems_reads_the_data_dir_from_the_environment(data_dir, monkeypatch):
    monkeypatch.setenv("DISTILL_DATA_DIR", str(data_dir))
    result = CliRunner().invoke(main, ["problems"])
    assert result.exit_code == 0 and f"data directory: {data_dir}" in result.output


def test_distill_problems_gsm8k_test_head_3_shows_three_records(data_dir):
    result = CliRunner().invoke(main, ["problems", "gsm8k", "--split", "test", "--head", "3", "--data-dir", str(data_dir)])
    assert result.exit_code == 0, result.output
    assert [line.split("]")[0] for line in result.output.splitlines() if line.startswith("[")] == [
        "[gsm8k-test-00000", "[gsm8k-test-00001", "[gsm8k-test-00002"]
    assert "[gsm8k-test-00000] answer=18" in result.output
    assert "Janet’s ducks lay 16 eggs per day" in result.output
    assert "rationale: Janet sells 16 - 3 - 4 = <<16-3-4=9>>9 duck eggs a day." in result.output


def test_distill_problems_json_prints_one_record_per_line(data_dir):
    result = CliRunner().invoke(main, ["problems", "asdiv", "--head", "2", "--json", "--data-dir", str(data_dir)])
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in result.output.splitlines()]
    assert [r["id"] for r in records] == ["asdiv-0000", "asdiv-0001"]
    assert records[0]["answer"] == 9.0 and set(records[0]) == {"id", "dataset", "split", "question", "answer", "rationale"}


def test_distill_problems_rejects_an_unknown_data_set_or_split(data_dir):
    result = CliRunner().invoke(main, ["problems", "gsm9k", "--data-dir", str(data_dir)])
    assert result.exit_code == 2 and "valid: gsm8k, svamp, asdiv, asdiv-full, multiarith" in result.output
    result = CliRunner().invoke(main, ["problems", "svamp", "--split", "train", "--data-dir", str(data_dir)])
    assert result.exit_code == 2 and "svamp has split(s) test" in result.output


def test_distill_problems_on_a_missing_data_dir_says_how_to_provide_the_data(tmp_path):
    result = CliRunner().invoke(main, ["problems", "--data-dir", str(tmp_path)])
    assert result.exit_code == 2
    assert f"error: {tmp_path / 'gsm8k' / 'train.jsonl'}: file not found" in result.output
    assert "--data-dir" in result.output and "DISTILL_DATA_DIR" in result.output


def test_a_data_dir_that_does_not_exist_is_refused_before_anything_runs(tmp_path):
    for args in (["problems"], ["overlap", "--preset", "smoke"]):
        result = CliRunner().invoke(main, [*args, "--data-dir", str(tmp_path / "nope")])
        assert result.exit_code == 2
        assert result.output.strip().splitlines() == [
            f"error: --data-dir {tmp_path / 'nope'}: no such directory; give the folder that holds gsm8k/, svamp/, "
            "asdiv/ and multiarith/ (README \"Data\"), or set DISTILL_DATA_DIR"]


def test_every_command_has_help_text():
    result = CliRunner().invoke(main, ["problems", "--help"])
    assert result.exit_code == 0 and "--head" in result.output and "Show the first N records" in result.output
    result = CliRunner().invoke(main, ["overlap", "--help"])
    assert result.exit_code == 0 and "--output" in result.output and "n-gram" in result.output
