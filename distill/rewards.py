"""The rl stage's reward: each sampled completion checked by its form's own verifier, the one that
filtered the training data and scores the evaluation (``get_form(form).verify_many``: PoT programs
and EoT systems run in the sandbox's worker pool, distill/sandbox/, never in this process and never
under a signal-based timeout; a program that hangs is killed by the pool and gets ``timeout``).

``VerifierReward`` is a reward function as TRL's GRPOTrainer calls it: ``prompts``, ``completions``
and the dataset's columns as keyword arguments (here ``form`` and ``gold``), one float per
completion:

  - ``correct``                                              1.0
  - ``wrong_answer`` (an answer was parsed, it is not gold)  ``wrong_answer_reward`` (rl.wrong_answer_reward, 0.1)
  - ``no_answer``, ``parse_error``, ``exec_error``, ``timeout``, ``unsafe``   0.0

It also keeps what it saw since the stage last asked (``drain``): per form the mean reward, the
correct rate and the parse rate (an answer extracted, right or wrong), the timeouts, and the records
(form, gold, completion, answer, status, reward) that the stage logs as a completions table.
Reads and writes no files.
"""
from __future__ import annotations

from collections import defaultdict
from typing import Sequence

PARSED = ("correct", "wrong_answer")
"""Statuses whose completion stated an answer (distill.thoughts.STATUSES)."""


def reward_of(status: str, wrong_answer_reward: float) -> float:
    """The reward of one verdict status (see the module docstring)."""
    if status == "correct":
        return 1.0
    if status == "wrong_answer":
        return float(wrong_answer_reward)
    return 0.0


def completion_text(completion) -> str:
    """A completion as text: TRL gives a string for plain prompts and a list of messages for
    conversational ones (the assistant's last message is the answer)."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, list) and completion and isinstance(completion[-1], dict):
        return str(completion[-1].get("content") or "")
    return "" if completion is None else str(completion)


class VerifierReward:
    """The reward function (see the module docstring). ``timeout`` and ``strict`` are the verify
    stage's (verify.timeout, verify.strict), so a reward means what a verified training sample means."""

    def __init__(self, wrong_answer_reward: float = 0.1, *, timeout: float = 5.0, strict: bool = False):
        self.wrong_answer_reward = float(wrong_answer_reward)
        self.timeout, self.strict = float(timeout), bool(strict)
        self.__name__ = "verifier"  # TRL names the reward's metrics after the function
        self.records: list[dict] = []

    def __call__(self, prompts: Sequence, completions: Sequence, *, form: Sequence[str], gold: Sequence[float],
                 **columns) -> list[float]:
        from distill.thoughts import get_form

        texts = [completion_text(c) for c in completions]
        rewards = [0.0] * len(texts)
        for name in dict.fromkeys(form):
            idx = [i for i, f in enumerate(form) if f == name]
            verdicts = get_form(name).verify_many([texts[i] for i in idx], [float(gold[i]) for i in idx],
                                                  timeout=self.timeout, strict=self.strict)
            for i, verdict in zip(idx, verdicts):
                rewards[i] = reward_of(verdict.status, self.wrong_answer_reward)
                self.records.append({"form": name, "gold": float(gold[i]), "completion": texts[i],
                                     "answer": verdict.answer, "status": verdict.status, "reason": verdict.reason,
                                     "reward": rewards[i]})
        return rewards

    def drain(self) -> tuple[dict[str, float], list[dict]]:
        """(metrics, records) of every completion scored since the last drain, and forget them.
        Metrics: ``rl/<form>/reward``, ``rl/<form>/correct``, ``rl/<form>/parsed``, ``rl/<form>/timeout``
        (rates over that form's completions), ``rl/timeouts`` (a count) and ``rl/completions``."""
        records, self.records = self.records, []
        by_form: dict[str, list[dict]] = defaultdict(list)
        for r in records:
            by_form[r["form"]].append(r)
        metrics: dict[str, float] = {}
        for name, rows in by_form.items():
            n = len(rows)
            metrics[f"rl/{name}/reward"] = sum(r["reward"] for r in rows) / n
            metrics[f"rl/{name}/correct"] = sum(r["status"] == "correct" for r in rows) / n
            metrics[f"rl/{name}/parsed"] = sum(r["status"] in PARSED for r in rows) / n
            metrics[f"rl/{name}/timeout"] = sum(r["status"] == "timeout" for r in rows) / n
        if records:
            metrics["rl/timeouts"] = float(sum(r["status"] == "timeout" for r in records))
            metrics["rl/completions"] = float(len(records))
        return metrics, records
