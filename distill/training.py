"""Fine-tuning a student with transformers' Trainer: the pieces the train stage (distill/stages/train.py)
puts together, each usable alone (tests/test_train.py, benchmarks/train.py).

Owns: encoding mix rows into features (``encode``), the step schedule as the Trainer counts it
(``schedule``), the micro-batch (``resolve_batch``: a number, or ``auto`` sized to the GPU by a
memory probe), the precision (``resolve_precision``), LoRA adapters (``apply_lora``), the
Trainer's arguments (``training_arguments``), what the callbacks the stage adds to it use (the slowest
clock of the processes, the median step time, validation accuracy per form; the callbacks themselves
are in distill/callbacks.py, which imports transformers), the filter that keeps the tied-embedding
"missing keys" warning out of the log (``quiet_tied_keys``), reading its state at the end
(``stop_reason``, ``validation_history``), and the files of a training run: digests of config and
weights, and the atomic swap of a written folder (``replace_dir``).

Reads rows {"input","target","form","gold"} handed to it; writes only through ``replace_dir`` (a
folder the caller wrote) and stderr lines (``say``).

Over 450 lines: each piece is a short function with the measurement or rule it follows in its
docstring (the batch probe's memory model, the precision rules, the epoch-seeded sampler).
"""
from __future__ import annotations

import hashlib
import math
import os
import random
import shutil
import sys
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Sequence

from distill.config import SCHEDULERS, ConfigError, TrainConfig
from distill.decoding import FP16_OVERFLOWS
from distill.files import settings_digest


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


def resolve_precision(requested: str, cuda: bool | None = None, *, bf16: bool | None = None,
                      model_type: str = "") -> str:
    """auto -> bf16 on CUDA GPUs that have it, fp16 on older ones, fp32 on CPU (bf16 is 2x slower there).
    A T5-family student (``model_type`` in FP16_OVERFLOWS) never gets fp16: auto gives fp32 on a GPU
    without bf16, and an explicit fp16 is refused. ``bf16``: whether the GPU has it (default: asks torch).
    ``requested`` is one of distill.config.PRECISIONS (distill.config.check refuses any other)."""
    import torch

    cuda = torch.cuda.is_available() if cuda is None else cuda
    if not cuda:
        if requested in ("bf16", "fp16"):
            say(f"train.precision={requested} needs a CUDA GPU; training in fp32 on the CPU")
        return "fp32"
    overflows = model_type in FP16_OVERFLOWS
    if requested == "fp16" and overflows:
        raise ConfigError(f"train.precision=fp16: a {model_type} student overflows fp16 (NaN losses); "
                          "use bf16 (A100, H100, RTX 30xx and newer) or fp32")
    if requested == "auto":
        bf16 = torch.cuda.is_bf16_supported() if bf16 is None else bf16
        if bf16:
            return "bf16"
        if overflows:
            say(f"this GPU has no bf16 and a {model_type} student overflows fp16: training in fp32")
            return "fp32"
        return "fp16"
    return requested


# --- batch size: a number, or ``auto`` sized to the device ------------------------------------------

CPU_AUTO_BATCH = 16
"""``train.batch_size: auto`` on the CPU: the micro-batch the CPU presets have always used."""
HEADROOM = 0.9
"""Share of the device's memory the auto micro-batch may plan for: the rest absorbs the allocator's
fragmentation, the evaluation batches (twice the micro-batch, forward only) and the CUDA context."""
GIB = 1024 ** 3


def choose_micro_batch(device_bytes: float, fixed_bytes: float, per_sequence_bytes: float, *, effective: int,
                       world: int = 1, headroom: float = HEADROOM) -> tuple[int, int, str]:
    """(micro-batch, grad_accum, reason): the largest micro-batch whose memory, ``fixed_bytes`` (weights,
    gradients, optimizer states) plus ``per_sequence_bytes`` per sequence at the data's longest length,
    fits ``headroom`` of ``device_bytes``, among the divisors of the per-process share of ``effective``,
    so micro x grad_accum x world stays the effective batch. At least 1 (then accumulation carries it)."""
    per_rank = max(math.ceil(effective / world), 1)
    room = device_bytes * headroom - fixed_bytes
    fits = int(room // per_sequence_bytes) if per_sequence_bytes > 0 else per_rank
    micro = max([d for d in range(1, per_rank + 1) if per_rank % d == 0 and d <= fits] or [1])
    accum = per_rank // micro
    reason = (f"auto: {device_bytes / GIB:.1f} GiB device x {headroom:.0%} headroom, {fixed_bytes / GIB:.1f} GiB fixed "
              f"(weights, gradients, AdamW states), {per_sequence_bytes / GIB:.3f} GiB per sequence at the longest "
              f"training sequences -> room for {max(fits, 0)}; micro-batch {micro} x {accum} accumulation"
              f"{f' x {world} processes' if world > 1 else ''} = effective batch {micro * accum * world}")
    if fits < 1:
        reason += " (not even one sequence fits the plan: expect out-of-memory; use LoRA or shorter sequences)"
    return micro, accum, reason


def resolve_batch(tcfg: TrainConfig, *, cuda: bool, world: int = 1, probe=None) -> tuple[int, int, str]:
    """(micro-batch, grad_accum, reason) for ``tcfg``: an explicit number as given; ``auto`` on the CPU
    ``CPU_AUTO_BATCH`` (today's choice) with the accumulation that keeps ``effective_batch_size``; ``auto``
    on a GPU from ``probe()`` = (device bytes, fixed bytes, bytes per sequence) (``probe_train_memory``)."""
    if tcfg.batch_size != "auto":
        return int(tcfg.batch_size), tcfg.grad_accum, "train.batch_size set in the config"
    if not cuda or probe is None:
        per_rank = max(math.ceil(tcfg.effective_batch_size / world), 1)
        micro = max(d for d in range(1, min(CPU_AUTO_BATCH, per_rank) + 1) if per_rank % d == 0)
        return micro, per_rank // micro, (f"auto on the CPU: micro-batch {micro} (at most {CPU_AUTO_BATCH}) x "
                                          f"{per_rank // micro} accumulation = effective batch {micro * (per_rank // micro) * world}")
    device_bytes, fixed, per_sequence = probe()
    return choose_micro_batch(device_bytes, fixed, per_sequence, effective=tcfg.effective_batch_size, world=world)


def probe_train_memory(model, features: Sequence[dict], collator, precision: str, sizes: tuple[int, int] = (1, 2),
                       memory=None):
    """(device bytes, fixed bytes, bytes per sequence), measured on this process's CUDA device: one
    forward and backward pass on the ``sizes`` longest training examples each; the per-sequence cost
    is the slope of the peak memory, the fixed cost its intercept plus AdamW's two fp32 states per
    trained parameter (not yet allocated before the first optimizer step). ``memory``: the device's
    counters (default ``distill.decoding.CudaMemory``; tests pass others to run this on a CPU)."""
    import torch

    from distill.decoding import CudaMemory

    if memory is None:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))  # each process probes its own GPU
        memory = CudaMemory(torch.device("cuda", torch.cuda.current_device()))
    device = memory.device
    model.to(device)
    was_training = model.training
    model.train()
    longest = sorted(features, key=lambda f: len(f["input_ids"]) + len(f["labels"]), reverse=True)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    peaks = []
    for size in sizes:
        rows = [longest[i % len(longest)] for i in range(size)]
        batch = {k: v.to(device) for k, v in collator([dict(r) for r in rows]).items() if hasattr(v, "to")}
        memory.reset()
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            loss = model(**batch).loss
        loss.backward()
        peaks.append(memory.peak())
        model.zero_grad(set_to_none=True)
        del loss, batch
    memory.reset()
    model.train(was_training)
    per_sequence = max(peaks[1] - peaks[0], 1) / (sizes[1] - sizes[0])
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    fixed = peaks[0] - per_sequence * sizes[0] + 8 * trainable
    return memory.budget(), fixed, per_sequence


def agree_on_micro_batch(micro: int, accum: int, effective: int, world: int) -> tuple[int, int]:
    """Under several processes all must step together: the smallest micro-batch any of them chose."""
    if world <= 1:
        return micro, accum
    import torch
    import torch.distributed as tdist
    from accelerate import PartialState

    state = PartialState()  # initialises the process group as the Trainer would
    value = torch.tensor([micro], device=state.device if state.device.type == "cuda" else "cpu")
    tdist.all_reduce(value, op=tdist.ReduceOp.MIN)
    smallest = int(value.item())
    if smallest == micro:
        return micro, accum
    return smallest, max(math.ceil(effective / world), 1) // smallest


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


def collator_for(model, tokenizer, *, causal: bool):
    """Dynamic padding: ``DataCollatorForSeq2Seq`` pads labels with -100 for both kinds."""
    from transformers import DataCollatorForSeq2Seq

    return DataCollatorForSeq2Seq(tokenizer, model=None if causal else model, label_pad_token_id=-100, padding=True)


def trainer_for(model, tokenizer, args, features: list[dict], val_features: list[dict], *, causal: bool,
                callbacks: list):
    """``Seq2SeqTrainer`` (seq2seq) or ``Trainer`` (causal) on the encoded features, with dynamic
    padding (``collator_for``) and ``callbacks``."""
    from transformers import Seq2SeqTrainer, Trainer
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    collator = collator_for(model, tokenizer, causal=causal)
    trainer_cls = _epoch_seeded(Trainer if causal else Seq2SeqTrainer)
    trainer = trainer_cls(
        model=model, args=args, data_collator=collator, train_dataset=features,
        eval_dataset=val_features or None, processing_class=tokenizer, callbacks=callbacks)
    trainer.remove_callback(PrinterCallback)  # it prints log dicts to stdout, where the CLI writes JSON
    trainer.remove_callback(ProgressCallback)
    return trainer


class EpochSeededSampler:
    """The Trainer's training sampler with an order that is a function of (seed, epoch) only.

    transformers' samplers (``LengthGroupedSampler`` for group_by_length, ``RandomSampler``) draw
    their order from torch's global generator when an epoch's iterator starts, so the order of epoch
    2 depends on every random number drawn before it (dropout, the first evaluation). A run resumed
    inside epoch 2 starts that iterator from another state and sees other batches: measured, the
    resumed weights differed from an uninterrupted run's. The Trainer calls ``set_epoch`` before each
    epoch's iterator (accelerate forwards it), so seeding a generator there makes the order the same
    in a fresh and in a resumed run."""

    def __init__(self, sampler, seed: int):
        self.sampler, self.seed = sampler, seed
        self.set_epoch(0)

    def set_epoch(self, epoch) -> None:
        import torch

        self.sampler.generator = torch.Generator().manual_seed(self.seed + int(epoch))

    def __iter__(self):
        return iter(self.sampler)

    def __len__(self) -> int:
        return len(self.sampler)


def _epoch_seeded(trainer_cls):
    """``trainer_cls`` whose training sampler is an ``EpochSeededSampler`` (see there why)."""

    class EpochSeeded(trainer_cls):
        def _get_train_sampler(self, train_dataset=None):
            sampler = super()._get_train_sampler(train_dataset)
            if sampler is None or not hasattr(sampler, "generator"):
                return sampler
            seed = self.args.data_seed if self.args.data_seed is not None else self.args.seed
            return EpochSeededSampler(sampler, seed)

    EpochSeeded.__name__ = EpochSeeded.__qualname__ = trainer_cls.__name__
    return EpochSeeded


def slowest(args, elapsed: float) -> float:
    """The largest ``elapsed`` over the processes of a distributed run (every process must take the
    same decision to stop or save, or they wait for each other for ever); ``elapsed`` itself in one process."""
    if args.world_size <= 1:
        return elapsed
    import torch
    import torch.distributed as tdist

    seconds = torch.tensor([elapsed], dtype=torch.float64, device=args.device if args.device.type == "cuda" else "cpu")
    tdist.all_reduce(seconds, op=tdist.ReduceOp.MAX)
    return float(seconds.item())


MISSING_KEYS = "There were missing keys in the checkpoint model loaded:"


def tied_names(model) -> list[set[str]]:
    """Groups of parameter names that are one tensor (tied embeddings: T5's shared / encoder / decoder
    embeddings and lm_head, a causal LM's embed_tokens and lm_head)."""
    groups: dict[int, set[str]] = {}
    for name, param in model.named_parameters(remove_duplicate=False):
        groups.setdefault(id(param), set()).add(name)
    return [names for names in groups.values() if len(names) > 1]


class TiedKeysFilter:
    """Keeps the Trainer's warning about missing keys, when it loads the best checkpoint, out of the log
    when every missing key is a tied copy of a parameter that was loaded: a checkpoint stores one tensor
    per tie (safetensors drops the aliases), and loading it fills every name of the tie, because they
    are one tensor (tests/test_train.py checks that the student equals its best checkpoint). Any other
    missing key, or a tie of which nothing was loaded, still reaches the log."""

    def __init__(self, model):
        self.ties = tied_names(model)

    def filter(self, record) -> bool:
        import ast

        message = record.getMessage()
        if not message.startswith(MISSING_KEYS):
            return True
        try:
            missing = set(ast.literal_eval(message[len(MISSING_KEYS):].strip().rstrip(".")))
        except (ValueError, SyntaxError):
            return True
        covered = set()
        for names in self.ties:
            if names & missing and names - missing:  # some aliases missing, the tensor itself loaded
                covered |= names & missing
        return not (missing and missing <= covered)


@contextmanager
def quiet_tied_keys(model):
    """``TiedKeysFilter`` on transformers' Trainer logger while the block runs."""
    import logging

    logger = logging.getLogger("transformers.trainer")
    quiet = TiedKeysFilter(model)
    logger.addFilter(quiet)
    try:
        yield
    finally:
        logger.removeFilter(quiet)


WARMUP_STEPS = 2
"""Optimizer steps left out of the step time: the first ones allocate memory, build kernels and fill caches."""
MIN_TIMED_STEPS = 3
"""Fewer timed steps than this after the warm-up: no step time (n/a), rather than a number from noise."""


def median_step_seconds(step_ends: Sequence[float], warmup: int = WARMUP_STEPS,
                        min_steps: int = MIN_TIMED_STEPS) -> tuple[float | None, int]:
    """(median seconds per optimizer step, steps it was measured over) from the monotonic times at which
    consecutive steps ended: the gaps after the first ``warmup`` steps. (None, n) when fewer than
    ``min_steps`` gaps remain. A median, so the odd step that also evaluated or saved a checkpoint
    (done between two step ends) does not move it."""
    gaps = [b - a for a, b in zip(step_ends[warmup:], step_ends[warmup + 1:])]
    if len(gaps) < min_steps:
        return None, len(gaps)
    gaps.sort()
    mid = len(gaps) // 2
    return (gaps[mid] if len(gaps) % 2 else (gaps[mid - 1] + gaps[mid]) / 2), len(gaps)


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
    from distill.scoring import by_name

    val_losses = {h["step"]: h["eval_loss"] for h in history if "eval_loss" in h}
    accuracies = {h["step"]: by_name(h, "val", "accuracy") for h in history if by_name(h, "val", "accuracy")}
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
    return settings_digest({"train": fields, "mix": mix, "data": data_digest})


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
