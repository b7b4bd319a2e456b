"""The rl stage's reward: the forms' own verifiers through the sandbox. A hostile completion gets 0
and changes nothing outside; one that hangs gets 0 within its limit and the reward call returns."""
from __future__ import annotations

import uuid
from pathlib import Path

from distill.rewards import VerifierReward, reward_of

OUTSIDE = Path("/tmp") / f"distill-reward-{uuid.uuid4().hex[:8]}"


def test_a_correct_answer_earns_one_a_wrong_one_the_small_reward_and_no_answer_nothing():
    reward = VerifierReward(wrong_answer_reward=0.1, timeout=2.0)
    completions = ["def solution():\n    return 3 + 4", "def solution():\n    return 3 + 5",
                   "I do not know", "The answer is 7."]
    got = reward(["p"] * 4, completions, form=["pot", "pot", "cot", "cot"], gold=[7.0, 7.0, 7.0, 7.0])
    assert got[0] == 1.0 and got[1] == 0.1 and got[2] == 0.0
    metrics, records = reward.drain()
    assert metrics["rl/pot/correct"] == 0.5 and metrics["rl/pot/parsed"] == 1.0
    assert metrics["rl/pot/reward"] == (1.0 + 0.1) / 2
    assert [r["status"] for r in records][:2] == ["correct", "wrong_answer"]
    assert reward.drain() == ({}, [])  # drained: the next step starts afresh


def test_the_reward_of_every_failure_status_is_zero():
    for status in ("no_answer", "parse_error", "exec_error", "timeout", "unsafe"):
        assert reward_of(status, 0.3) == 0.0
    assert reward_of("wrong_answer", 0.3) == 0.3 and reward_of("correct", 0.3) == 1.0


def test_a_hostile_completion_gets_zero_and_nothing_escapes_the_sandbox():
    hostile = [f"import os\nos.system('touch {OUTSIDE}')\ndef solution():\n    return 7",
               f"def solution():\n    open('{OUTSIDE}', 'w').write('pwned')\n    return 7",
               "import socket\ndef solution():\n    socket.socket().connect(('127.0.0.1', 80))\n    return 7",
               f"def solution():\n    __import__('os').system('touch {OUTSIDE}')\n    return 7",
               "def solution():\n    return 3 + 4"]  # an honest one after them still scores
    reward = VerifierReward(timeout=2.0)
    got = reward(["p"] * len(hostile), hostile, form=["pot"] * len(hostile), gold=[7.0] * len(hostile))
    assert got == [0.0, 0.0, 0.0, 0.0, 1.0]
    assert not OUTSIDE.exists()
    _, records = reward.drain()
    assert {r["status"] for r in records[:4]} == {"unsafe"}


def test_a_completion_that_hangs_gets_zero_within_its_limit_and_the_call_returns():
    reward = VerifierReward(timeout=1.0)
    completions = ["def solution():\n    while True:\n        pass", "def solution():\n    return 2 * 21"]
    got = reward(["p", "p"], completions, form=["pot", "pot"], gold=[42.0, 42.0])
    assert got == [0.0, 1.0]
    metrics, records = reward.drain()
    assert records[0]["status"] == "timeout" and metrics["rl/timeouts"] == 1.0
