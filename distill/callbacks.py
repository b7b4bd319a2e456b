"""The callbacks the train and rl stages add to transformers' Trainer (TRL's GRPOTrainer is one too).

Each is one class: ``TimeBudget`` (stop after ``max_minutes``), ``CheckpointClock`` (a checkpoint every
``train.checkpoint_minutes``), ``StepTimer`` (seconds per optimizer step), ``Tracking`` (the Trainer's
logs -> MLflow), ``ValidationAccuracy`` (``val/<form>/accuracy`` after every evaluation) and
``RLTracking`` (GRPO's logs and the reward's figures -> MLflow). A tracker is a distill.tracking
``Tracker`` or ``NullTracker`` (tracking off: the calls do nothing).

This module imports transformers (the callbacks' base class) when it is imported: the stages import it
inside their run functions, so reading a config or refusing a bad option never pays for it. The pieces the
callbacks use (``slowest``, ``median_step_seconds``, ``validation_accuracy``, ``say``) stay in
distill/training.py and are reached through that module, so a test that replaces one there replaces it here.
"""
from __future__ import annotations

import time
from typing import Callable

from transformers import TrainerCallback

from distill import training
from distill.config import RLConfig
from distill.scoring import by_name


class TimeBudget(TrainerCallback):
    """Stops cleanly after train.max_minutes of training; the epoch-end evaluation and checkpoint
    still run, so the budget's last weights are scored and can become the student. Under several
    processes they agree on the slowest clock, or the ranks would stop at different steps (DDP hangs).
    The clock counts this invocation (evaluations included): a resumed run gets the budget afresh.
    Unlike the old hand loop, the learning-rate schedule follows the step budget (max_steps), not the
    clock, so a preset's max_steps should fit its max_minutes (tiny.yaml: 1200 steps, 6 minutes)."""

    def __init__(self, minutes: float | None):
        self.budget_s = minutes * 60 if minutes else None
        self.stopped = False

    def on_train_begin(self, args, state, control, **kwargs):
        self.t0 = time.monotonic()

    def on_step_end(self, args, state, control, **kwargs):
        if self.budget_s is None:
            return
        elapsed = time.monotonic() - self.t0
        elapsed = training.slowest(args, elapsed)
        if elapsed >= self.budget_s:
            self.stopped = True
            control.should_training_stop = True


class CheckpointClock(TrainerCallback):
    """Asks the Trainer for a checkpoint whenever ``minutes`` have passed since the last one (the
    epoch-end checkpoints still happen), so a kill loses minutes, not an epoch; None: epoch ends only.
    Under several processes they agree on the slowest clock: a checkpoint is a step every rank takes
    together. A mid-epoch checkpoint carries no validation loss, so it never becomes the best one; it
    is the last one, which a resume starts from (transformers skips the batches of the epoch already
    seen, with the data order and RNG states of the checkpoint: the same weights)."""

    def __init__(self, minutes: float | None):
        self.every_s = minutes * 60 if minutes else None
        self.last = time.monotonic()

    def on_train_begin(self, args, state, control, **kwargs):
        self.last = time.monotonic()

    def on_save(self, args, state, control, **kwargs):
        self.last = time.monotonic()

    def on_step_end(self, args, state, control, **kwargs):
        if self.every_s is None or control.should_save:
            return
        elapsed = time.monotonic() - self.last
        elapsed = training.slowest(args, elapsed)
        if elapsed >= self.every_s:
            control.should_save = True


class StepTimer(TrainerCallback):
    """Notes the monotonic time at each optimizer step's end (one float per step) for
    ``distill.training.median_step_seconds``: the stage's own s/step, measured inside the training,
    without the loading, probing and saving around it (benchmarks/gpu.py reads it from the summary).
    On a GPU it waits for the step's kernels first (one synchronisation per step, as the loss logging
    at log_every 1 does), so the gap is the step's time, not the time to queue it."""

    def __init__(self):
        self.ends: list[float] = []

    def on_step_end(self, args, state, control, **kwargs):
        import torch

        if torch.cuda.is_available() and torch.cuda.is_initialized():
            torch.cuda.synchronize()
        self.ends.append(time.monotonic())

    def seconds_per_step(self) -> tuple[float | None, int]:
        return training.median_step_seconds(self.ends)


class Tracking(TrainerCallback):
    """The Trainer's logs -> MLflow through distill.tracking (main process only), with the
    project's metric names, every one on the optimizer-step axis; a line to stderr per evaluation."""

    NAMES = {"loss": "train/loss", "learning_rate": "train/lr", "grad_norm": "train/grad_norm",
             "eval_loss": "val/loss"}

    def __init__(self, tracker):
        self.tracker = tracker

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        metrics = {self.NAMES[k]: v for k, v in logs.items() if k in self.NAMES and v is not None}
        if metrics:
            self.tracker.log_metrics(metrics, step=state.global_step)
        if "eval_loss" in logs:
            training.say(f"step {state.global_step} (epoch {state.epoch or 0:.2f}): val/loss {logs['eval_loss']:.4f}")


class ValidationAccuracy(TrainerCallback):
    """After every evaluation (not the untrained model's, at step 0), greedy outputs on a seeded
    sample of validation problems, checked by each form's verifier: ``val/<form>/accuracy``.
    Also kept in the Trainer's log history, so a resumed run still knows earlier values."""

    def __init__(self, tokenizer, rows, tracker, max_source_len: int, max_new_tokens: int, batch_size: int):
        self.tokenizer, self.rows, self.tracker = tokenizer, rows, tracker
        self.max_source_len, self.max_new_tokens, self.batch_size = max_source_len, max_new_tokens, batch_size

    def on_evaluate(self, args, state, control, model=None, **kwargs):
        if not state.is_world_process_zero or not self.rows or state.global_step == 0:
            return
        accuracy = training.validation_accuracy(model, self.tokenizer, self.rows, batch_size=self.batch_size,
                                                max_source_len=self.max_source_len,
                                                max_new_tokens=self.max_new_tokens)
        metrics = {f"val/{form}/accuracy": acc for form, acc in accuracy.items()}
        state.log_history.append({"step": state.global_step, **metrics})
        if metrics:
            self.tracker.log_metrics(metrics, step=state.global_step)
            training.say(f"step {state.global_step}: " + ", ".join(f"{k} {v:.3f}" for k, v in metrics.items()))
        model.train()


TRL_METRICS = {"reward": "rl/reward", "reward_std": "rl/reward_std", "kl": "rl/kl",
               "completions/mean_length": "rl/completion_length", "completions/clipped_ratio": "rl/clipped_ratio",
               "entropy": "rl/entropy", "loss": "rl/loss", "learning_rate": "rl/lr", "grad_norm": "rl/grad_norm",
               "frac_reward_zero_std": "rl/frac_reward_zero_std"}
"""TRL's log keys -> the rl stage's metric names (rl/ prefix, one word per thing)."""


class RLTracking(TrainerCallback):
    """TRL's logs and the reward's per-form figures (distill.rewards.VerifierReward.drain) -> MLflow on
    the optimizer-step axis, a line per step through ``say``, and a completions table every
    ``rl.log_completions_every`` steps. ``rewards`` keeps the mean reward of every step (the summary's)."""

    COLUMNS = ("step", "form", "status", "reward", "gold", "answer", "completion", "reason")
    """Verdict and reward first: the MLflow UI's table shows the leftmost columns without scrolling."""

    def __init__(self, tracker, reward, rcfg: RLConfig, say: Callable[[str], None]):
        self.tracker, self.reward, self.rcfg, self.say = tracker, reward, rcfg, say
        self.rewards: list[float] = []

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        metrics = {TRL_METRICS[k]: v for k, v in logs.items() if k in TRL_METRICS and v is not None}
        mine, records = self.reward.drain()
        if not mine and "rl/reward" not in metrics:
            return  # the end-of-training summary: no step to log
        metrics.update(mine)
        step = state.global_step
        if "rl/reward" in metrics:
            self.rewards.append(round(float(metrics["rl/reward"]), 4))
        if metrics:
            self.tracker.log_metrics(metrics, step=step)
        if records and (step % self.rcfg.log_completions_every == 0 or step == 1 or step >= state.max_steps):
            rows = [{k: {**r, "step": step}[k] for k in self.COLUMNS} for r in records[:self.rcfg.log_completions_rows]]
            self.tracker.log_table(rows, f"rl/completions/step-{step:06d}.json")
        forms = sorted(by_name(mine, "rl", "correct"))
        self.say(f"step {step}/{state.max_steps}: reward {metrics.get('rl/reward', float('nan')):.3f}; "
                 + ", ".join(f"{f} correct {mine[f'rl/{f}/correct']:.2f} parsed {mine[f'rl/{f}/parsed']:.2f}"
                             for f in forms))
