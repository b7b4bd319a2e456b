"""benchmarks/gpu.py runs unchanged on a CPU at toy size (--tiny): it builds each preset's student from a
config, runs the project's train stage with the auto and the preset's former fixed batch and its
evaluate stage, and reports rates with the ratio against the fixed batch at the same effective batch."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def load_benchmark():
    spec = importlib.util.spec_from_file_location("gpu_benchmark", REPO / "benchmarks" / "gpu.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_gpu_benchmark_runs_a_seq2seq_and_a_causal_preset_at_tiny_size_on_the_cpu(tmp_path, data_dir, capsys):
    bench = load_benchmark()
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
        assert auto["s_per_step"] > 0 and fixed["examples_per_s"] > 0
        evals = result["evals"]
        assert [e["batch"] for e in evals.values()] == [64, 32, 32]
        assert all(e["n"] == 8 and e["problems_per_s"] > 0 for e in evals.values())
        assert f"## {preset}" in printed
    assert printed.count("ratio auto / fixed (examples/s)") == 2 and "problems/s" in printed
