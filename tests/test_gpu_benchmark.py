"""benchmarks/gpu.py runs unchanged on a CPU at toy size (--tiny): it builds each preset's student from a
config, runs the project's train stage with the auto and the preset's former fixed batch and its
evaluate stage, and reports rates with the ratio against the fixed batch at the same effective batch."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from benchmark_script import load_script

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.slow  # trains and evaluates two presets' students: ~16 s
def test_the_gpu_benchmark_runs_a_seq2seq_and_a_causal_preset_at_tiny_size_on_the_cpu(tmp_path, data_dir, capsys):
    bench = load_script("gpu")
    out = tmp_path / "results.json"
    assert bench.main(["--tiny", "--presets", "codet5-large,qwen2.5-0.5b", "--data-dir", str(data_dir),
                       "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    results = {r["preset"]: r for r in json.loads(out.read_text())}
    assert set(results) == {"codet5-large", "qwen2.5-0.5b"}
    for preset, result in results.items():
        auto, fixed = result["auto"], result["fixed"]
        assert (fixed["micro"], fixed["accum"]) == bench.FIXED[preset]
        assert (auto["micro"], auto["accum"]) == (16, 2)  # auto on the CPU keeps 16, accumulation keeps 32
        assert auto["effective"] == fixed["effective"] == 32
        # one run per variant, timed by the train stage itself: 6 steps, 2 of warm-up, 3 gaps timed
        for row in (auto, fixed):
            assert row["steps"] == 6 and row["timed_steps"] == 3 and row["s_per_step"] > 0
            assert row["examples_per_s"] == 32 / row["s_per_step"]
        evals = result["evals"]
        assert [e["batch"] for e in evals.values()] == [64, 32, 32, 32]
        assert {e["dtype"] for e in evals.values()} == {"float32"}  # the preset's bf16 applies on a GPU only
        assert all(e["n"] == 8 and e["problems_per_s"] > 0 and e["probe_s"] >= 0 for e in evals.values())
        assert f"## {preset}" in printed
    assert printed.count("ratio auto / fixed (examples/s)") == 2 and "probe s" in printed
    assert "0.000" not in printed.split("| training")[1].split("| evaluation")[0]


def test_too_few_timed_steps_print_n_a_and_static_cache_only_skips_the_fixed_runs(tmp_path, data_dir, capsys):
    bench = load_script("gpu")
    out = tmp_path / "results.json"
    assert bench.main(["--tiny", "--presets", "codet5-small", "--steps", "3", "--problems", "4",
                       "--static-cache-only", "--data-dir", str(data_dir), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    (result,) = json.loads(out.read_text())
    assert result["complete"] is True and result["fixed"] is None and result["auto"]["s_per_step"] is None
    # each measurement is printed on its own line as soon as it is taken
    assert "# codet5-small, train auto: 16 x 2, n/a s/step (0 timed)" in printed
    assert "# codet5-small, evaluate auto + static cache: batch 32, float32" in printed
    assert list(result["evals"]) == ["auto", "auto + static cache"]
    assert "| n/a (0) | n/a |" in printed and "s/step n/a" in printed
    assert "ratio auto + static cache / auto" in printed
    # where each evaluation spent its time, as the evaluate stage measured it
    assert all(e["generate_s"] > 0 and e["verify_s"] > 0 for e in result["evals"].values())
    assert "| decoding s | verifying s |" in printed and "s decoding," in printed


def test_the_grpo_mode_times_the_rl_stage_on_the_trained_student_against_its_sft_step(tmp_path, data_dir, capsys):
    bench = load_script("gpu")
    out = tmp_path / "results.json"
    assert bench.main(["--tiny", "--grpo", "--presets", "qwen2.5-0.5b", "--data-dir", str(data_dir),
                       "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    (result,) = json.loads(out.read_text())
    grpo = result["grpo"]
    assert grpo["preset"] == "qwen2.5-0.5b-grpo" and grpo["steps"] == 6 and grpo["timed_steps"] == 3
    assert grpo["completions_per_step"] == 8 and grpo["completions_per_s"] == 8 / grpo["s_per_step"]
    assert grpo["full_steps"] == 200 and grpo["full_min"] == 200 * grpo["s_per_step"] / 60
    assert "ratio GRPO completions/s / SFT examples/s" in printed and "fixed" not in result


def test_the_grpo_mode_refuses_a_seq2seq_preset():
    import pytest

    with pytest.raises(SystemExit):
        load_script("gpu").main(["--tiny", "--grpo", "--presets", "codet5-small"])


def test_a_benchmark_killed_mid_preset_leaves_every_finished_measurement_in_its_results_file(tmp_path, data_dir):
    """On a GPU the call has a time limit: what was measured before the kill must be in --out, whole."""
    out = tmp_path / "results.json"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, str(REPO / "benchmarks" / "gpu.py"), "--tiny", "--presets", "codet5-small",
                             "--problems", "64", "--data-dir", str(data_dir), "--out", str(out)],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            if out.exists() and "fixed" in json.loads(out.read_text())[0]:
                break
            time.sleep(0.05)
        assert proc.poll() is None, "the benchmark ended before it could be killed:\n" + proc.stdout.read()
        proc.send_signal(signal.SIGKILL)
        printed = proc.communicate(timeout=30)[0]
    finally:
        proc.kill()
    (result,) = json.loads(out.read_text())
    assert result["complete"] is False and "full_steps" not in result
    assert result["auto"]["steps"] == 6 and result["fixed"]["steps"] == 6
    assert "# codet5-small, train auto:" in printed and "# codet5-small, train fixed:" in printed
