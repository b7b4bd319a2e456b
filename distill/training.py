"""Fine-tuning a student with transformers' Trainer: the pieces the train stage (distill/stages/train.py)
puts together, each usable alone (tests/test_train.py, benchmarks/train.py).

Owns: encoding mix rows into features (``encode``), the step schedule as the Trainer counts it
(``schedule``), the precision (``resolve_precision``), LoRA adapters (``apply_lora``), the
Trainer's arguments (``training_arguments``), the callbacks the stage adds to it (time budget,
MLflow logging, validation accuracy per form), reading its state at the end (``stop_reason``,
``validation_history``), and the files of a training run: digests of config and weights,
and the atomic swap of a written folder (``replace_dir``).

Reads rows {"input","target","form","gold"} handed to it; writes only through ``replace_dir`` (a
folder the caller wrote) and stderr lines (``say``).
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import random
import shutil
import sys
import time
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Sequence

from distill.config import ConfigError, TrainConfig

SCHEDULERS = {"linear": "linear", "cosine": "cosine", "constant": "constant_with_warmup"}
"""train.scheduler -> transformers' lr_scheduler_type (each after a linear warm-up)."""


# --- data: encode, schedule ------------------------------------------------------------------

def encode(tokenizer, rows: Sequence[dict], tcfg: TrainConfig, *, causal: bool,
           chat_template: bool = False) -> list[dict]:
    """One feature dict per row: {"input_ids", "labels"} (+ "attention_mask" for seq2seq).

    Inputs are cut from the left so the form's instruction at the end survives (distill.decoding
    encodes test-time prompts with the same function); targets are cut from the right.
    Seq2seq: input ids as the tokenizer writes them, labels = target ids (the tokenizer ends them
    with ``</s>``). Causal: input_ids = prompt + target + EOS, labels = -100 on the prompt, so the
    loss covers the completion only; the EOS teaches the student to stop.
    """
    from distill.decoding import encode_prompts

    if not rows:
        return []
    sources = encode_prompts(tokenizer, [r["input"] for r in rows], causal=causal, max_len=tcfg.max_source_len,
                             chat_template=chat_template)
    if not causal:
        targets = tokenizer(text_target=[r["target"] for r in rows], truncation=True,
                            max_length=tcfg.max_target_len)["input_ids"]
        return [{"input_ids": s, "attention_mask": [1] * len(s), "labels": list(t)}
                for s, t in zip(sources, targets)]
    if tokenizer.eos_token_id is None:
        raise ConfigError(f"train.student={tcfg.student}: its tokenizer has no EOS token, so a causal student "
                          "could never learn to stop; pick a model whose tokenizer defines eos_token")
    eos = tokenizer.eos_token_id
    completions = tokenizer([r["target"] for r in rows], add_special_tokens=False)["input_ids"]
    features = []
    for s, c in zip(sources, completions):
        c = list(c)[:tcfg.max_target_len - 1] + [eos]
        features.append({"input_ids": s + c, "attention_mask": [1] * (len(s) + len(c)),
                         "labels": [-100] * len(s) + c})
    return features


def schedule(n_examples: int, tcfg: TrainConfig, world: int) -> dict:
    """Steps per epoch, total steps, warm-up steps, as the Trainer counts them: each process gets
    ceil(n / world) examples (the distributed sampler repeats a few to even the shares), in batches
    of batch_size, grad_accum batches per optimizer step (a shorter last step ends each epoch)."""
    per_rank = math.ceil(n_examples / world)
    batches = math.ceil(per_rank / tcfg.batch_size)
    steps_per_epoch = max(math.ceil(batches / tcfg.grad_accum), 1)
    total = steps_per_epoch * tcfg.epochs
    if tcfg.max_steps is not None:
        total = min(total, tcfg.max_steps)
    return {"steps_per_epoch": steps_per_epoch, "total_steps": total,
            "warmup_steps": math.ceil(tcfg.warmup_ratio * total),
            "effective_batch_size": tcfg.batch_size * tcfg.grad_accum * world}


def resolve_precision(requested: str, cuda: bool | None = None) -> str:
    """auto -> bf16 on CUDA GPUs that have it, fp16 on older ones, fp32 on CPU (bf16 is 2x slower there)."""
    import torch

    if requested not in ("auto", "fp32", "bf16", "fp16"):
        raise ConfigError(f"train.precision: unknown {requested!r}; valid: auto, fp32, bf16, fp16")
    cuda = torch.cuda.is_available() if cuda is None else cuda
    if not cuda:
        if requested in ("bf16", "fp16"):
            say(f"train.precision={requested} needs a CUDA GPU; training in fp32 on the CPU")
        return "fp32"
    if requested == "auto":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return requested


# --- LoRA --------------------------------------------------------------------------------------------

def apply_lora(model, tcfg: TrainConfig, kind: str):
    """The model wrapped by peft with LoRA adapters (only they train); the model itself when lora_r is 0."""
    if not tcfg.lora_r:
        return model
    from peft import LoraConfig, TaskType, get_peft_model

    targets = list(tcfg.lora_targets) or "all-linear"  # peft: every linear layer except the output head
    config = LoraConfig(r=tcfg.lora_r, lora_alpha=tcfg.lora_alpha, lora_dropout=tcfg.lora_dropout,
                        target_modules=targets,
                        task_type=TaskType.SEQ_2_SEQ_LM if kind == "seq2seq" else TaskType.CAUSAL_LM)
    try:
        return get_peft_model(model, config)
    except ValueError as exc:
        raise ConfigError(f"train.lora_targets: {str(exc).splitlines()[0]}; name modules of "
                          f"{type(model).__name__} (e.g. q_proj,v_proj) or leave it empty for every linear layer") from exc


# --- the Trainer: its arguments, the callbacks the stage adds, its state at the end -------------------

def training_arguments(tcfg: TrainConfig, output_dir: Path, steps: dict, precision: str, *, cuda: bool,
                       has_val: bool):
    """The Trainer's arguments for either kind of student: AdamW and ``tcfg.scheduler`` after ``steps``'
    warm-up (``schedule``), length-grouped batches, evaluation and a checkpoint at every epoch end
    (when there is a validation split), checkpoints in ``output_dir``."""
    from transformers import Seq2SeqTrainingArguments

    return Seq2SeqTrainingArguments(
        output_dir=str(output_dir), per_device_train_batch_size=tcfg.batch_size,
        per_device_eval_batch_size=tcfg.batch_size * 2, gradient_accumulation_steps=tcfg.grad_accum,
        learning_rate=tcfg.lr, weight_decay=tcfg.weight_decay, adam_beta1=0.9, adam_beta2=0.999, adam_epsilon=1e-8,
        max_grad_norm=tcfg.max_grad_norm, lr_scheduler_type=SCHEDULERS[tcfg.scheduler],
        warmup_steps=steps["warmup_steps"], num_train_epochs=tcfg.epochs, max_steps=steps["total_steps"],
        optim="adamw_torch", seed=tcfg.seed, data_seed=tcfg.seed,
        train_sampling_strategy="group_by_length" if tcfg.group_by_length else "random", bf16=precision == "bf16", fp16=precision == "fp16",
        use_cpu=not cuda, eval_strategy="epoch" if has_val else "no", save_strategy="epoch",
        # the best checkpoint (lowest validation loss) and the last one are kept; the best becomes the student
        save_total_limit=1, load_best_model_at_end=has_val, metric_for_best_model="eval_loss",
        greater_is_better=False, prediction_loss_only=True, logging_strategy="steps",
        logging_steps=tcfg.log_every, report_to="none", disable_tqdm=True, dataloader_num_workers=0,
        remove_unused_columns=False, save_only_model=False, ddp_find_unused_parameters=False,
        # measured (2 CPU processes, transformers 5.24): with token averaging across devices the
        # evaluation loss of an untrained model came out 7.28 instead of 6.39 (each process's loss is
        # scaled by its share of the tokens, then only the first process's samples are kept); plain DDP
        # (each process averages its own tokens, gradients averaged) gives 6.40 and the same training
        average_tokens_across_devices=False)


def trainer_for(model, tokenizer, args, features: list[dict], val_features: list[dict], *, causal: bool,
                callbacks: list):
    """``Seq2SeqTrainer`` (seq2seq) or ``Trainer`` (causal) on the encoded features, with dynamic
    padding (``DataCollatorForSeq2Seq`` pads labels with -100 for both kinds) and ``callbacks``."""
    from transformers import DataCollatorForSeq2Seq, Seq2SeqTrainer, Trainer
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    collator = DataCollatorForSeq2Seq(tokenizer, model=None if causal else model, label_pad_token_id=-100,
                                      padding=True)
    trainer_cls = Trainer if causal else Seq2SeqTrainer
    trainer = trainer_cls(
        model=model, args=args, data_collator=collator, train_dataset=features,
        eval_dataset=val_features or None, processing_class=tokenizer, callbacks=callbacks)
    trainer.remove_callback(PrinterCallback)  # it prints log dicts to stdout, where the CLI writes JSON
    trainer.remove_callback(ProgressCallback)
    return trainer


def callback_classes():
    """The callback classes (defined lazily: transformers is imported only when training)."""
    from transformers import TrainerCallback

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
            if args.world_size > 1:
                import torch
                import torch.distributed as tdist

                seconds = torch.tensor([elapsed], dtype=torch.float64,
                                       device=args.device if args.device.type == "cuda" else "cpu")
                tdist.all_reduce(seconds, op=tdist.ReduceOp.MAX)
                elapsed = float(seconds.item())
            if elapsed >= self.budget_s:
                self.stopped = True
                control.should_training_stop = True

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
            if self.tracker is not None and metrics:
                self.tracker.log_metrics(metrics, step=state.global_step)
            if "eval_loss" in logs:
                say(f"step {state.global_step} (epoch {state.epoch or 0:.2f}): val/loss {logs['eval_loss']:.4f}")

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
            accuracy = validation_accuracy(model, self.tokenizer, self.rows, batch_size=self.batch_size,
                                           max_source_len=self.max_source_len, max_new_tokens=self.max_new_tokens)
            metrics = {f"val/{form}/accuracy": acc for form, acc in accuracy.items()}
            state.log_history.append({"step": state.global_step, **metrics})
            if self.tracker is not None and metrics:
                self.tracker.log_metrics(metrics, step=state.global_step)
            if metrics:
                say(f"step {state.global_step}: " + ", ".join(f"{k} {v:.3f}" for k, v in metrics.items()))
            model.train()

    return TimeBudget, Tracking, ValidationAccuracy


def checkpoint_clock(minutes: float | None):
    """A callback that asks the Trainer for a checkpoint whenever ``minutes`` have passed since the last
    one (the epoch-end checkpoints still happen), so a kill loses minutes, not an epoch; None: epoch
    ends only. Under several processes they agree on the slowest clock: a checkpoint is a step every
    rank takes together. A mid-epoch checkpoint carries no validation loss, so it never becomes the
    best one; it is the last one, which a resume starts from (transformers skips the batches of the
    epoch already seen, with the data order and RNG states of the checkpoint: the same weights)."""
    from transformers import TrainerCallback

    class CheckpointClock(TrainerCallback):
        def __init__(self):
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
            if args.world_size > 1:
                import torch
                import torch.distributed as tdist

                seconds = torch.tensor([elapsed], dtype=torch.float64,
                                       device=args.device if args.device.type == "cuda" else "cpu")
                tdist.all_reduce(seconds, op=tdist.ReduceOp.MAX)
                elapsed = float(seconds.item())
            if elapsed >= self.every_s:
                control.should_save = True

    return CheckpointClock()


def stop_reason(state, budget, tcfg: TrainConfig, steps: dict) -> str:
    """Why training ended: ``max_minutes`` (the TimeBudget callback stopped it), ``max_steps`` (the step
    budget cut the epochs short) or ``epochs``."""
    if budget.stopped:
        return "max_minutes"
    if tcfg.max_steps is not None and state.global_step >= tcfg.max_steps \
            and tcfg.max_steps < steps["steps_per_epoch"] * tcfg.epochs:
        return "max_steps"
    return "epochs"


def validation_history(history: list[dict], best_step: int | None) -> tuple[dict[int, float], dict[str, float]]:
    """From the Trainer's log history: {step: validation loss}, and {form: validation accuracy} of the
    checkpoint that became the student (``best_step``)."""
    val_losses = {h["step"]: h["eval_loss"] for h in history if "eval_loss" in h}
    accuracies = {h["step"]: {k.split("/")[1]: v for k, v in h.items() if k.endswith("/accuracy")}
                  for h in history if any(k.endswith("/accuracy") for k in h)}
    # the validation accuracy of the checkpoint that became the student (else the last one measured)
    val_accuracy = accuracies.get(best_step) or (accuracies[max(accuracies)] if accuracies else {})
    return val_losses, val_accuracy


# --- validation --------------------------------------------------------------------------------------

def validation_rows(rows: Sequence[dict], limit: int, seed: int) -> list[dict]:
    """Up to ``limit`` validation rows, a seeded sample so every form of the mix is represented."""
    picked = list(rows)
    random.Random(seed).shuffle(picked)
    return picked[:limit]


def validation_accuracy(model, tokenizer, rows: Sequence[dict], *, batch_size: int, max_source_len: int,
                        max_new_tokens: int) -> dict[str, float]:
    """{form: accuracy}: greedy outputs (distill.decoding, either kind) checked by each form's verifier."""
    from distill.decoding import decode
    from distill.thoughts import get_form

    if not rows:
        return {}
    outputs = decode(model, tokenizer, [r["input"] for r in rows], batch_size=batch_size,
                     max_new_tokens=max_new_tokens, max_source_len=max_source_len)
    scores = {}
    for form in sorted({r["form"] for r in rows}):
        idx = [i for i, r in enumerate(rows) if r["form"] == form]
        verdicts = get_form(form).verify_many([outputs[i] for i in idx], [float(rows[i]["gold"]) for i in idx])
        scores[form] = sum(v.correct for v in verdicts) / len(verdicts)
    return scores


# --- files: digests, atomic folders ------------------------------------------------------------------

NOT_IN_DIGEST = ("checkpoint_minutes",)
"""Settings that change when a training is saved, not what it learns (a resume is byte-identical)."""


def config_digest(tcfg: TrainConfig, mix: str, data_digest: str, exclude: Sequence[str] = ()) -> str:
    fields = {k: v for k, v in asdict(tcfg).items() if k not in exclude and k not in NOT_IN_DIGEST}
    blob = json.dumps({"train": fields, "mix": mix, "data": data_digest}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def replace_dir(tmp: Path, final: Path) -> None:
    """Swap a fully written folder into place: the old one is renamed aside first, so at every moment
    either ``final`` or ``.final.old`` is complete."""
    old = final.with_name(f".{final.name}.old")
    if old.exists():
        shutil.rmtree(old)
    if final.exists():
        final.rename(old)
    tmp.rename(final)
    shutil.rmtree(old, ignore_errors=True)


@contextmanager
def quiet_transformers():
    """No "Writing model shards" bars in the middle of the training log."""
    from transformers.utils import logging as hf_logging

    was = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was:
            hf_logging.enable_progress_bar()


def weights_digest(model) -> str:
    """sha256 of the weights (a model or a state dict), to check that processes or runs end identical."""
    import torch

    h = hashlib.sha256()
    state = model if isinstance(model, dict) else model.state_dict()
    for name, tensor in sorted(state.items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def say(message: str) -> None:
    if os.environ.get("RANK", "0") == "0":
        print(f"[train] {message}", file=sys.stderr, flush=True)
