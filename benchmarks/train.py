"""Training examples per second, fairly compared: a hand-written loop vs transformers' Trainer.

For the tiny seq2seq student (``tiny``) and the tiny causal student (``tiny-causal``), on the same
rows, the same initial weights (one state copied into each), the same batch size, optimizer settings
and torch threads, one epoch each, in the same process:

- ``hand loop``: the loop this project used to ship (nanoGPT-style: length-grouped batches in
  shuffled windows, each padded only to its own longest row, AdamW, warm-up + linear decay,
  gradient clipping, fp32 on CPU), kept here as the candidate to beat.
- ``library``: ``Seq2SeqTrainer`` / ``Trainer`` configured as their docs recommend for this job:
  ``train_sampling_strategy="group_by_length"`` and ``DataCollatorForSeq2Seq`` (dynamic padding;
  it pads labels with -100 for causal LMs too), no evaluation, no checkpoints, no reporting.
- ``distill train``: the stage itself (``distill.stages.train.run``: the library plus the stage's
  callbacks, on a mix without validation rows), its examples/s from the Trainer's own runtime.

Prints the rates and two ratios: hand loop / library (a hand loop is worth keeping over the ecosystem's
Trainer only if this is at least 1.5) and distill train / library (what the stage's callbacks cost).

    python benchmarks/train.py                                   # runs/tiny/mix/etd/train.jsonl if present
    python benchmarks/train.py --data runs/tiny/mix/etd/train.jsonl --rows 512 --students tiny

Without mix data it uses GSM8K training questions with their gold rationales as CoT-style targets.
"""
from __future__ import annotations

import argparse
import copy
import math
import os
import random
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from distill.config import load_config, replace  # noqa: E402
from distill.files import read_jsonl, write_jsonl  # noqa: E402
from distill.stages import train as T  # noqa: E402
from distill.student import build_student, student_kind  # noqa: E402
from distill.training import encode, schedule  # noqa: E402


def gsm8k_rows(data_dir: str, n: int) -> list[dict]:
    from distill.problems import load_problems

    rows = []
    for p in load_problems("gsm8k", "train", data_dir, hub=False)[:n]:
        steps = re.sub(r"<<[^>]*>>", "", p.rationale or "")
        rows.append({"input": f"Question: {p.question}\nLet's think step by step.\n",
                     "target": f"{steps}\nThe answer is {p.answer:g}.", "form": "cot", "gold": p.answer})
    return rows


def clock() -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process): on a shared machine the CPU time is the fairer
    measure (another engineer's job does not count against either loop); both are printed."""
    return Elapsed((time.perf_counter(), time.process_time()))


class Elapsed(tuple):
    def __sub__(self, other):  # clock() - start
        return (self[0] - other[0], self[1] - other[1])


def length_grouped_batches(lengths, batch_size: int, seed: int, window: int = 64) -> list[list[int]]:
    """The hand loop's batches: shuffle, sort by length inside windows of 64 batches, shuffle the batches."""
    rng = random.Random(seed)
    order = list(range(len(lengths)))
    rng.shuffle(order)
    chunk = batch_size * window
    order = [i for s in range(0, len(order), chunk) for i in sorted(order[s:s + chunk], key=lambda i: -lengths[i])]
    batches = [order[s:s + batch_size] for s in range(0, len(order), batch_size)]
    rng.shuffle(batches)
    return batches


def time_hand_loop(model, features, collator, tcfg) -> float:
    import torch

    batches = length_grouped_batches([len(f["input_ids"]) for f in features], tcfg.batch_size, tcfg.seed)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW([{"params": [p for p in params if p.ndim >= 2], "weight_decay": tcfg.weight_decay},
                                   {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}],
                                  lr=tcfg.lr, betas=(0.9, 0.999), eps=1e-8)
    total = len(batches)
    warmup = math.ceil(tcfg.warmup_ratio * total)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: (s + 1) / (warmup + 1) if s < warmup else max(1 - (s - warmup) / max(total - warmup, 1), 0))
    model.train()
    start = clock()
    for ids in batches:
        batch = collator([features[i] for i in ids])
        loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), tcfg.max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
    return clock() - start


def time_library(model, tokenizer, features, collator, tcfg, causal: bool) -> float:
    from transformers import Seq2SeqTrainer, Seq2SeqTrainingArguments, Trainer

    with tempfile.TemporaryDirectory() as out:
        args = Seq2SeqTrainingArguments(
            output_dir=out, per_device_train_batch_size=tcfg.batch_size, num_train_epochs=1,
            learning_rate=tcfg.lr, weight_decay=tcfg.weight_decay, max_grad_norm=tcfg.max_grad_norm,
            warmup_steps=schedule(len(features), tcfg, 1)["warmup_steps"], lr_scheduler_type="linear",
            optim="adamw_torch", seed=tcfg.seed, train_sampling_strategy="group_by_length",
            report_to="none", save_strategy="no", eval_strategy="no", logging_strategy="no", use_cpu=True,
            disable_tqdm=True, dataloader_num_workers=0, remove_unused_columns=False)
        cls = Trainer if causal else Seq2SeqTrainer
        trainer = cls(model=model, args=args, train_dataset=features, data_collator=collator,
                      processing_class=tokenizer)
        start = clock()
        trainer.train()
        return clock() - start


def bench(student: str, rows, args, threads: int) -> dict:
    import torch
    from transformers import DataCollatorForSeq2Seq

    cfg = load_config(args.preset, [f"train.student={student}", f"train.batch_size={args.batch_size}",
                                    "train.epochs=1", "train.max_steps=null", "train.max_minutes=null",
                                    f"train.max_source_len={args.max_len}", f"train.max_target_len={args.max_len}",
                                    "train.val_generate_limit=0", "train.log_every=1000000"])
    tcfg = cfg.train
    model, tokenizer = build_student(student, [r["input"] for r in rows] + [r["target"] for r in rows],
                                     train_cfg=tcfg, seed=tcfg.seed)
    causal = student_kind(model) == "causal"
    features = encode(tokenizer, rows, tcfg, causal=causal)
    tokenizer.padding_side = "right"
    collator = DataCollatorForSeq2Seq(tokenizer, model=None if causal else model, label_pad_token_id=-100)
    tokens = sum(len(f["input_ids"]) + (0 if causal else len(f["labels"])) for f in features) / len(features)
    print(f"\n{student} ({'causal' if causal else 'seq2seq'}): {sum(p.numel() for p in model.parameters()):,} params, "
          f"{tokens:.0f} tokens per row, batch {args.batch_size}, 1 epoch, {torch.get_num_threads()} thread(s)")
    # warm up kernels and allocators once, on a throwaway copy
    time_hand_loop(copy.deepcopy(model), features[: args.batch_size * 2], collator, tcfg)
    runs: dict[str, list] = {"hand loop": [], "library": []}
    for _ in range(args.repeats):  # interleaved, so a burst of load elsewhere hits both
        for name, fn in (("hand loop", lambda m: time_hand_loop(m, features, collator, tcfg)),
                         ("library", lambda m: time_library(m, tokenizer, features, collator, tcfg, causal))):
            runs[name].append(fn(copy.deepcopy(model)))
    rates, cpu_rates = {}, {}
    for name, times in runs.items():
        rates[name] = len(features) / statistics.median(t[0] for t in times)
        cpu_rates[name] = len(features) / statistics.median(t[1] for t in times)
        print(f"  {name:<16} {rates[name]:8.1f} examples/s wall, {cpu_rates[name]:8.1f} per CPU second "
              f"(median of {args.repeats})")
    with tempfile.TemporaryDirectory() as tmp:
        run_cfg = load_config(args.preset, [f"run_dir={tmp}", f"train.student={student}",
                                            f"train.batch_size={args.batch_size}", "train.epochs=1",
                                            "train.max_steps=null", "train.max_minutes=null",
                                            f"train.max_source_len={args.max_len}",
                                            f"train.max_target_len={args.max_len}", "train.val_generate_limit=0",
                                            f"train.threads={threads}"])
        write_jsonl(Path(tmp) / "mix" / "cot" / "train.jsonl",
                    [{"id": f"r{i}", "problem_id": f"p{i}", "version": 1, "gold": 0.0, **r}
                     for i, r in enumerate(rows)])
        rates["distill train"] = T.run(replace(run_cfg, mix={"mix": "cot"}), Path(tmp), None)["examples_per_s"]
    print(f"  {'distill train':<16} {rates['distill train']:8.1f} examples/s wall (one run)")
    print(f"  ratio hand loop / library:     {cpu_rates['hand loop'] / cpu_rates['library']:.2f}x CPU time, "
          f"{rates['hand loop'] / rates['library']:.2f}x wall (own loop kept only if >= 1.5)")
    print(f"  ratio distill train / library: {rates['distill train'] / rates['library']:.2f}x wall")
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="runs/tiny/mix/etd/train.jsonl", help="mix rows (input, target)")
    parser.add_argument("--rows", type=int, default=256, help="training rows (one epoch each way)")
    parser.add_argument("--preset", default="tiny", help="preset whose train settings are used")
    parser.add_argument("--students", default="tiny,tiny-causal", help="comma-separated train.student values")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3, help="timed epochs per loop (the median is printed)")
    parser.add_argument("--max-len", type=int, default=256, help="max_source_len and max_target_len")
    parser.add_argument("--data-dir", default=os.environ.get("DISTILL_DATA_DIR", "../shared/data"))
    parser.add_argument("--threads", type=int, default=-1,
                        help="torch threads for every loop (default: the preset's train.threads; 0: torch's default)")
    args = parser.parse_args()

    import torch

    if Path(args.data).exists():
        every = read_jsonl(args.data, ("input", "target"))
        # a seeded sample: mix files are ordered by form, and the forms differ in length
        rows, source = random.Random(0).sample(every, min(args.rows, len(every))), args.data
        rows = [{k: r[k] for k in ("input", "target", "form", "gold") if k in r} for r in rows]
    else:
        rows, source = gsm8k_rows(args.data_dir, args.rows), "GSM8K train, gold rationales as targets"
    threads = load_config(args.preset).train.threads if args.threads < 0 else args.threads
    if threads:
        torch.set_num_threads(threads)
    print(f"data: {len(rows)} rows from {source}")
    for student in args.students.split(","):
        bench(student.strip(), rows, args, threads)


if __name__ == "__main__":
    main()
