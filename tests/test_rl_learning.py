"""The rl stage learns: on one-step additions ("What is 3 + 4?") a tiny causal student, warm-started
by a short SFT run of the train stage, earns a higher reward after GRPO than before (slow: about two
minutes on two CPU cores). The figures go to the issue's note. Settings as STYLE.md's GRPO notes
(temperature 1.0, beta 0, a warm start), the learning rate lower: measured here (2026-12-04, 600
steps), 3e-4 raised the sampled reward only 0.193 -> 0.213 (first vs last quarter) while greedy
validation accuracy fell 0.50 -> 0.06; 1e-4 raised it 0.273 -> 0.353 by deciles, validation 0.50 -> 0.47
(n = 32)."""
from __future__ import annotations

import json
import random
import time

import pytest

from distill.config import load_config, replace
from distill.files import write_jsonl
from distill.thoughts import get_form


def addition_rows(n: int, seed: int, prefix: str) -> list[dict]:
    cot, rng = get_form("cot"), random.Random(seed)
    rows = []
    for i in range(n):
        a, b = rng.randint(0, 9), rng.randint(0, 9)
        rows.append({"id": f"{prefix}-{i}-cot", "problem_id": f"{prefix}-{i}", "form": "cot", "version": cot.version,
                     "input": cot.student_input(f"What is {a} + {b}?"), "target": f"{a} + {b} = {a + b}. The answer is {a + b}.",
                     "gold": float(a + b)})
    return rows


@pytest.mark.slow
def test_grpo_raises_the_reward_of_a_warm_started_tiny_student_on_additions(tmp_path):
    from distill.stages import rl, train

    write_jsonl(tmp_path / "mix" / "cot" / "train.jsonl", addition_rows(400, 0, "train"))
    write_jsonl(tmp_path / "mix" / "cot" / "val.jsonl", addition_rows(32, 1, "val"))
    cfg = load_config("smoke", [
        "train.student=tiny-causal", "train.tiny_d_model=96", "train.tiny_layers=1", "train.tiny_heads=2",
        "train.tiny_d_ff=192", "train.tiny_vocab=300", "train.max_steps=300", "train.epochs=100",
        "train.batch_size=16", "train.lr=1e-3", "train.max_source_len=48", "train.max_target_len=24",
        "train.val_generate_limit=32", "train.threads=1", "train.dropout=0.0",
        "rl.num_generations=8", "rl.batch_size=16", "rl.max_steps=600", "rl.lr=1e-4", "rl.temperature=1.0",
        "rl.beta=0.0", "rl.max_completion_length=16", "rl.max_prompt_length=48", "rl.checkpoint_every=1000"])
    t0 = time.monotonic()
    train.run(replace(cfg, mix={"mix": "cot"}), tmp_path, None)
    sft_s = time.monotonic() - t0
    summary = rl.run(replace(cfg, mix={"mix": "cot"}), tmp_path, None)
    rewards = summary["rewards"]
    quarter = len(rewards) // 4
    start, end = sum(rewards[:quarter]) / quarter, sum(rewards[-quarter:]) / quarter
    tenth = len(rewards) // 10
    print(json.dumps({"deciles": [round(sum(rewards[i * tenth:(i + 1) * tenth]) / tenth, 3) for i in range(10)],
                      "sft_s": round(sft_s, 1), "rl_s": summary["wall_s"], "steps": summary["steps"],
                      "reward_first_quarter": round(start, 3), "reward_last_quarter": round(end, 3),
                      "val_before": summary["val_accuracy_before"], "val_after": summary["val_accuracy"]}))
    assert summary["steps"] == 600
    assert end > start
