"""Seconds per sampled output of the evaluate stage's sampling (distill.decoding.Sampling: one draw per
row and step keyed by the row, reproducible in any batch) against transformers' own sampling
(``generate(do_sample=True)``, torch's one global generator), same model, same padded batches, same
temperature and top_p; greedy decoding of the same rows for reference.

    python benchmarks/sampling.py                     # tiny-causal shape, random weights, 32 GSM8K questions x 4 samples
    python benchmarks/sampling.py --vocab 32000 --questions 16

Why our own sampler at all: transformers draws every row from the global generator, so a row's sample
depends on the rows beside it and on the batch order; resuming, sharding or another batch size would
change the samples. The ratio printed is ours / transformers' (wall time and this process's CPU time);
a ratio near 1 means reproducibility costs little. A random model rarely writes EOS, so each row
runs the full --max-new-tokens in every mode.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from distill.decoding import Sampling, decode_batches, encode_prompts, length_order, sample_key  # noqa: E402
from distill.problems import load_problems  # noqa: E402
from distill.thoughts import get_form  # noqa: E402


def transformers_sampling(model, tokenizer, inputs, *, batch_size, max_new_tokens, temperature, top_p):
    """The same left-padded, length-sorted batches as decode_batches, sampled by generate(do_sample=True)."""
    import torch

    encoded = encode_prompts(tokenizer, inputs, causal=True, max_len=256)
    order = length_order([len(ids) for ids in encoded])
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        width = max(len(encoded[i]) for i in idx)
        ids = torch.full((len(idx), width), tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for row, i in enumerate(idx):
            ids[row, width - len(encoded[i]):] = torch.tensor(encoded[i])
            mask[row, width - len(encoded[i]):] = 1
        with torch.inference_mode():
            model.generate(input_ids=ids, attention_mask=mask, do_sample=True, temperature=temperature, top_p=top_p,
                           top_k=0, num_beams=1, max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id,
                           eos_token_id=tokenizer.eos_token_id)


def timed(fn) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", default=os.environ.get("DISTILL_DATA_DIR", "data"))
    parser.add_argument("--questions", type=int, default=32)
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--vocab", type=int, default=2000)
    parser.add_argument("--temperature", type=float, default=0.7)
    parser.add_argument("--top-p", type=float, default=0.95)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()

    import torch

    from distill.student import build_tiny_causal

    torch.set_num_threads(args.threads)
    problems = load_problems("gsm8k", "test", args.data_dir, hub=False)[: args.questions]
    texts = [p.question for p in load_problems("gsm8k", "train", args.data_dir, hub=False)[:2000]]
    model, tokenizer = build_tiny_causal(texts, vocab=args.vocab)
    with torch.no_grad():  # at the default scale a random decoder repeats one token; larger weights vary
        for name, param in model.named_parameters():
            if "norm" not in name:
                param.normal_(0.0, 0.2)
    model.eval()
    form = get_form("eot")
    inputs = [form.student_input(p.question) for p in problems for _ in range(args.samples)]
    keys = [sample_key(0, p.id, "eot", j) for p in problems for j in range(args.samples)]
    common = {"batch_size": args.batch_size, "max_new_tokens": args.max_new_tokens}
    sampling = Sampling(args.temperature, args.top_p, keys)
    ours = timed(lambda: list(decode_batches(model, tokenizer, inputs, sampling=sampling, **common)))
    theirs = timed(lambda: transformers_sampling(model, tokenizer, inputs, temperature=args.temperature,
                                                 top_p=args.top_p, **common))
    greedy = timed(lambda: list(decode_batches(model, tokenizer, inputs, **common)))
    rows = len(inputs)
    print(f"{rows} rows ({args.questions} questions x {args.samples} samples), vocab {len(tokenizer)}, "
          f"batch {args.batch_size}, {args.max_new_tokens} new tokens, {args.threads} thread(s)")
    for name, (wall, cpu) in (("ours (row-keyed)", ours), ("transformers do_sample", theirs), ("greedy", greedy)):
        print(f"  {name:<24}{wall:8.2f} s wall {cpu:8.2f} s CPU  {1000 * wall / rows:7.1f} ms/row")
    print(f"ratio ours / transformers: {ours[0] / theirs[0]:.2f} (wall), {ours[1] / theirs[1]:.2f} (CPU)")


if __name__ == "__main__":
    main()
