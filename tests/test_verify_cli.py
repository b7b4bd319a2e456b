"""`distill verify`: file mode for every form (table, --json, --output) and the stage mode without FILE."""
from __future__ import annotations

import json
import os

import pytest
from click.testing import CliRunner

from distill.cli import main

LINES = {
    "cot": [("The answer is 72.", 72), ("The answer is 24.", 72), ("No idea.", 72)],
    "pot": [("ans = 48 + 48 / 2", 72), ("ans = 48 * 2", 72), ("import os\nans = 72", 72)],
    "eot": [("april = 48\nmay = april / 2\nans = april + may", 72), ("ans = 24", 72), ("ans = x", 72)],
}
EXPECTED = {"cot": {"correct": 1, "wrong_answer": 1, "no_answer": 1},
            "pot": {"correct": 1, "wrong_answer": 1, "unsafe": 1},
            "eot": {"correct": 1, "wrong_answer": 1, "no_answer": 1}}


def _file(tmp_path, form: str):
    path = tmp_path / f"{form}.jsonl"
    path.write_text("".join(json.dumps({"id": f"q{i}", "question": "Natalia sold clips...", "completion": c,
                                        "answer": str(g)}) + "\n" for i, (c, g) in enumerate(LINES[form])))
    return path


@pytest.mark.parametrize("form", ["cot", "pot", "eot"])
def test_file_mode_prints_one_json_object_with_counts_and_reasons(tmp_path, form):
    result = CliRunner().invoke(main, ["verify", "--thought", form, str(_file(tmp_path, form)), "--json",
                                       "--set", "verify.timeout=2"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["n"] == 3 and report["correct"] == 1 and report["accuracy"] == pytest.approx(1 / 3)
    assert report["reasons"] == EXPECTED[form]


def test_file_mode_writes_verdicts_and_prints_a_reasons_table(tmp_path):
    out = tmp_path / "verdicts.jsonl"
    result = CliRunner().invoke(main, ["verify", "--thought", "pot", str(_file(tmp_path, "pot")), "--output", str(out),
                                       "--set", "verify.strict=true", "--set", "verify.timeout=2"])
    assert result.exit_code == 0, result.output
    assert "1/3 correct" in result.output and "unsafe" in result.output and "import of 'os'" in result.output
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in rows] == ["q0", "q1", "q2"]
    assert [r["status"] for r in rows] == ["correct", "wrong_answer", "unsafe"]
    assert rows[0]["form"] == "pot" and rows[0]["version"] == 1 and rows[0]["gold"] == 72


def test_file_mode_needs_thought_and_says_so(tmp_path):
    result = CliRunner().invoke(main, ["verify", str(_file(tmp_path, "cot"))])
    assert result.exit_code == 2 and "--thought" in result.output


def test_a_bad_line_names_the_file_and_record(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps({"question": "q", "completion": "The answer is 3."}) + "\n")
    result = CliRunner().invoke(main, ["verify", "--thought", "cot", str(path)])
    assert result.exit_code == 2 and "missing field 'answer'" in result.output
    path.write_text(json.dumps({"question": "q", "completion": "The answer is 3.", "answer": "Yes"}) + "\n")
    result = CliRunner().invoke(main, ["verify", "--thought", "cot", str(path)])
    assert result.exit_code == 2 and "record 1" in result.output


def test_without_file_it_runs_the_pipeline_stage_with_the_preset(monkeypatch, tmp_path):
    from distill.stages import verify as stage

    calls = []

    def fake_run(cfg, run_dir, tracker=None):
        calls.append((cfg, run_dir))
        return {"eot": {"n": 2, "kept": 1, "drop_rate": 0.5, "reasons": {"no_answer": 1}}}

    monkeypatch.setattr(stage, "run", fake_run)
    monkeypatch.setattr("distill.cli.tracker_for", lambda cfg: None)
    result = CliRunner().invoke(main, ["verify", "--preset", "tiny", "--overrides", "verify.timeout=3",
                                       "--set", "verify.strict=true"])
    assert result.exit_code == 0, result.output
    cfg, run_dir = calls[0]
    assert cfg.verify.timeout == 3 and cfg.verify.strict is True and run_dir == cfg.run_path
    assert "eot: kept 1/2" in result.output and "sandbox: " in result.output


def test_stage_mode_refuses_file_mode_flags():
    result = CliRunner().invoke(main, ["verify", "--thought", "cot"])
    assert result.exit_code == 2 and "need a FILE" in result.output


def test_a_samples_file_of_the_pipeline_reads_as_is(tmp_path):
    path = tmp_path / "samples.jsonl"
    path.write_text(json.dumps({"problem_id": "gsm8k-train-0", "question": "q", "gold": 72.0, "form": "eot",
                                "completion": "april = 48\nans = april + april / 2"}) + "\n")
    out = tmp_path / "v.jsonl"
    result = CliRunner().invoke(main, ["verify", "--thought", "eot", str(path), "--output", str(out)])
    assert result.exit_code == 0, result.output
    assert json.loads(out.read_text())["id"] == "gsm8k-train-0"


@pytest.mark.parametrize("content, message", [
    (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "a binary file (it contains NUL bytes)"),
    ('{"completion": "caf\u00e9 = 1", "answer": 1}\n'.encode("latin-1"), "not UTF-8 text (byte 0xe9 at offset"),
    (b"", "no records (the file is empty)"),
    (b"\n  \n", "no records (the file is empty)"),
])
def test_an_unreadable_or_empty_file_gets_one_line_and_a_non_zero_exit(tmp_path, content, message):
    path = tmp_path / "in.jsonl"
    path.write_bytes(content)
    out = tmp_path / "out.jsonl"
    result = CliRunner().invoke(main, ["verify", "--thought", "pot", str(path), "--output", str(out)])
    assert result.exit_code == 2 and message in result.output
    assert len(result.output.strip().splitlines()) == 1 and "Traceback" not in result.output
    assert not out.exists() and path.read_bytes() == content


def test_output_equal_to_the_input_is_refused_and_the_input_is_kept(tmp_path, monkeypatch):
    path = _file(tmp_path, "pot")
    before = path.read_bytes()
    monkeypatch.chdir(tmp_path)
    link = tmp_path / "link.jsonl"
    link.symlink_to(path)
    for output in (str(path), "./pot.jsonl", f"{tmp_path}/../{tmp_path.name}/pot.jsonl", str(link)):
        result = CliRunner().invoke(main, ["verify", "--thought", "pot", str(path), "--output", output])
        assert result.exit_code == 2 and "is the input file" in result.output, output
        assert len(result.output.strip().splitlines()) == 1
    assert path.read_bytes() == before


def test_file_mode_says_which_sandbox_isolation_is_in_force(tmp_path):
    from distill import sandbox

    table = CliRunner().invoke(main, ["verify", "--thought", "pot", str(_file(tmp_path, "pot")), "--set", "verify.timeout=2"])
    assert table.exit_code == 0 and f"sandbox: {sandbox.isolation()}" in table.output
    report = json.loads(CliRunner().invoke(main, ["verify", "--thought", "eot", str(_file(tmp_path, "eot")),
                                                  "--json"]).output)
    assert report["sandbox"] == sandbox.isolation() and "rlimits" in report["sandbox"]
    cot = json.loads(CliRunner().invoke(main, ["verify", "--thought", "cot", str(_file(tmp_path, "cot")),
                                               "--json"]).output)
    assert cot["sandbox"] == "not used (cot runs no program)"


def test_verify_workers_sets_the_sandbox_parallelism(tmp_path):
    from distill.config import ConfigError, load_config
    from distill import sandbox

    try:
        result = CliRunner().invoke(main, ["verify", "--thought", "pot", str(_file(tmp_path, "pot")),
                                           "--set", "verify.workers=1", "--json"])
        assert result.exit_code == 0, result.output
        assert sandbox.worker("pot").parallel == 1 and sandbox.default_workers() == 1
    finally:
        sandbox.configure(workers=0)
    assert sandbox.worker("pot").parallel == min(4, os.cpu_count() or 1)
    with pytest.raises(ConfigError, match="verify.workers"):
        load_config(None, ["verify.workers=-1"])
