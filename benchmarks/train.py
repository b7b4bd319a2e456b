"""Training examples per second: our loop (dynamic padding, length-grouped batches) vs transformers'
Seq2SeqTrainer with every batch padded to 256 tokens (padding="max_length", as the authors' released
model card does). Same model (one initial state copied into both), same rows, same batch size and
optimizer settings, one epoch each, in the same process.

    python benchmarks/train.py                                   # runs/tiny/mix/etd/train.jsonl if present
    python benchmarks/train.py --data runs/tiny/mix/etd/train.jsonl --rows 512

Without mix data it uses GSM8K training questions with their gold rationales as CoT-style targets
(inputs "Question: ...\\nLet's think step by step.\\n"), which are longer than EoT targets, so the
ratio is if anything conservative. Prints both rates and the ratio (target: at least 1.5 on CPU).
"""
from __future__ import annotations

import argparse
import copy
import os
import random
import re
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from distill.config import load_config, replace  # noqa: E402
from distill.files import read_jsonl  # noqa: E402
from distill.stages import train as T  # noqa: E402
from distill.student import build_student  # noqa: E402


def gsm8k_rows(data_dir: str, n: int) -> list[dict]:
    from distill.problems import load_problems

    rows = []
    for p in load_problems("gsm8k", "train", data_dir, hub=False)[:n]:
        steps = re.sub(r"<<[^>]*>>", "", p.rationale or "")
        rows.append({"input": f"Question: {p.question}\nLet's think step by step.\n",
                     "target": f"{steps}\nThe answer is {p.answer:g}.", "form": "cot"})
    return rows


def time_ours(model, pairs, tcfg, pad_id) -> float:
    start = time.perf_counter()
    T.train_loop(model, pairs, tcfg, pad_id=pad_id, device=__import__("torch").device("cpu"), precision="fp32",
                 dist=T.Dist())
    return time.perf_counter() - start


def time_trainer(model, tokenizer, rows, tcfg, max_len: int) -> float:
    from transformers import Seq2SeqTrainer, Seq2SeqTrainingArguments

    src = tokenizer([r["input"] for r in rows], padding="max_length", truncation=True, max_length=max_len)
    tgt = tokenizer(text_target=[r["target"] for r in rows], padding="max_length", truncation=True,
                    max_length=max_len)["input_ids"]
    import torch

    data = [{"input_ids": torch.tensor(src["input_ids"][i]), "attention_mask": torch.tensor(src["attention_mask"][i]),
             "labels": torch.tensor([t if t != tokenizer.pad_token_id else -100 for t in tgt[i]])}
            for i in range(len(rows))]
    with tempfile.TemporaryDirectory() as out:
        args = Seq2SeqTrainingArguments(
            output_dir=out, per_device_train_batch_size=tcfg.batch_size, num_train_epochs=1,
            learning_rate=tcfg.lr, weight_decay=tcfg.weight_decay,
            warmup_steps=T.plan(len(rows), tcfg, 1)["warmup_steps"],
            lr_scheduler_type=tcfg.scheduler, max_grad_norm=tcfg.max_grad_norm, seed=tcfg.seed,
            report_to=[], save_strategy="no", logging_strategy="no", use_cpu=True, disable_tqdm=True,
            dataloader_num_workers=0, remove_unused_columns=False)
        trainer = Seq2SeqTrainer(model=model, args=args, train_dataset=data)
        start = time.perf_counter()
        trainer.train()
        return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="runs/tiny/mix/etd/train.jsonl", help="mix rows (input, target)")
    parser.add_argument("--rows", type=int, default=256, help="training rows (one epoch each way)")
    parser.add_argument("--preset", default="tiny", help="preset whose student and train settings are used")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-len", type=int, default=256, help="the Trainer's fixed padding length")
    parser.add_argument("--data-dir", default=os.environ.get("DISTILL_DATA_DIR", "../shared/data"))
    parser.add_argument("--threads", type=int, default=-1,
                        help="torch threads for both loops (default: the preset's train.threads; 0: torch's default)")
    args = parser.parse_args()

    import torch

    if Path(args.data).exists():
        every = read_jsonl(args.data, ("input", "target"))
        # a seeded sample: mix files are ordered by form, and the forms differ in length
        rows, source = random.Random(0).sample(every, min(args.rows, len(every))), args.data
    else:
        rows, source = gsm8k_rows(args.data_dir, args.rows), "GSM8K train, gold rationales as targets"
    tcfg = replace(load_config(args.preset), train={"batch_size": args.batch_size, "epochs": 1, "max_steps": None,
                                                    "max_minutes": None, "max_source_len": args.max_len,
                                                    "max_target_len": args.max_len}).train
    threads = tcfg.threads if args.threads < 0 else args.threads
    if threads:
        torch.set_num_threads(threads)
    model, tokenizer = build_student(tcfg.student, [r["input"] for r in rows] + [r["target"] for r in rows],
                                     train_cfg=tcfg, seed=tcfg.seed)
    pairs = T.encode(tokenizer, rows, args.max_len, args.max_len)
    real = sum(len(s) + len(t) for s, t in pairs) / len(pairs)
    print(f"data: {len(rows)} rows from {source}; {real:.0f} tokens per row (input + target), "
          f"the Trainer pads every row to {2 * args.max_len}")
    print(f"student: {tcfg.student}, {sum(p.numel() for p in model.parameters()):,} params; batch {args.batch_size}, "
          f"1 epoch, {torch.get_num_threads()} threads")

    # warm up kernels and allocators once, on a throwaway copy
    T.train_loop(copy.deepcopy(model), pairs[: args.batch_size * 2], tcfg, pad_id=tokenizer.pad_token_id,
                 device=torch.device("cpu"), precision="fp32", dist=T.Dist())
    ours = len(rows) / time_ours(copy.deepcopy(model), pairs, tcfg, tokenizer.pad_token_id)
    print(f"our loop (dynamic padding, length-grouped):  {ours:8.1f} examples/s")
    theirs = len(rows) / time_trainer(copy.deepcopy(model), tokenizer, rows, tcfg, args.max_len)
    print(f"Seq2SeqTrainer (padded to {args.max_len}):            {theirs:8.1f} examples/s")
    print(f"ratio: {ours / theirs:.2f}x (target >= 1.5 on CPU)")


if __name__ == "__main__":
    main()
