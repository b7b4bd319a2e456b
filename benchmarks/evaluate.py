"""Problems per second of the evaluate stage's decoding: batched and length-sorted vs one generate
call per problem, same model, same problems, same greedy settings; seq2seq or causal students.

    python benchmarks/evaluate.py                       # tiny-preset-shaped random T5, 200 GSM8K test questions
    python benchmarks/evaluate.py --kind causal         # the tiny-causal shape (Llama), left-padded batches
    python benchmarks/evaluate.py --student runs/tiny/students/etd --problems 100

Default model: the tiny preset's student shape (d_model 128, 2+2 layers, BPE tokenizer trained on the
GSM8K training questions; distill.student.build_tiny) with random weights. A random model hardly
ever writes </s>, so every problem runs the full --max-new-tokens in both modes: the ratio then
measures batching alone. A trained student (--student) stops early, and a batch runs until its
longest output ends; that is the case length sorting helps with, shown by the extra "unsorted" line.
Prints the outputs-identical check and the ratios (target: at least 5 on CPU) by wall time and by
this process's CPU time; on a shared machine the CPU-time ratio with --threads 1 is the steadier one.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from distill.config import load_config  # noqa: E402
from distill.decoding import decode  # noqa: E402
from distill.problems import load_problems  # noqa: E402

# the EoT instruction (METHOD.md); the form module is not needed to time decoding
EOT_INSTRUCTION = "System of linear equations: (Do not simplify)"


def student_inputs(questions: list[str]) -> list[str]:
    try:
        from distill.thoughts import get_form

        return [get_form("eot").student_input(q) for q in questions]
    except ImportError:
        return ["Question: " + q + "\n" + EOT_INSTRUCTION + "\n" for q in questions]


def random_tiny(data_dir: str):
    """The tiny preset's student shape (as distill.student.build_tiny builds it) with larger random
    weights: at T5's default initialisation a random model writes only <pad>, which would make the
    outputs-identical check trivial; at 5x it writes varied tokens (and, like any random model,
    rarely </s>)."""
    import torch
    from transformers import T5Config, T5ForConditionalGeneration

    from distill.student import train_tokenizer

    t = load_config("tiny").train
    train = [p.question for p in load_problems("gsm8k", "train", data_dir, hub=False)[:2000]]
    tokenizer = train_tokenizer(train, t.tiny_vocab)
    config = T5Config(vocab_size=len(tokenizer), d_model=t.tiny_d_model, d_kv=t.tiny_d_model // t.tiny_heads,
                      d_ff=t.tiny_d_ff, num_layers=t.tiny_layers, num_decoder_layers=t.tiny_layers,
                      num_heads=t.tiny_heads, pad_token_id=tokenizer.pad_token_id,
                      eos_token_id=tokenizer.eos_token_id, decoder_start_token_id=tokenizer.pad_token_id,
                      initializer_factor=5.0)
    torch.manual_seed(0)
    return T5ForConditionalGeneration(config), tokenizer


def random_tiny_causal(data_dir: str):
    """The tiny-causal student's shape (distill.student.build_tiny_causal: a Llama decoder, 2 x tiny_layers
    layers) with 5x the default initialisation range, for the same reason as random_tiny."""
    import torch
    from transformers import LlamaForCausalLM

    from distill.student import build_tiny_causal

    t = load_config("tiny").train
    train = [p.question for p in load_problems("gsm8k", "train", data_dir, hub=False)[:2000]]
    model, tokenizer = build_tiny_causal(train, d_model=t.tiny_d_model, layers=t.tiny_layers, heads=t.tiny_heads,
                                         d_ff=t.tiny_d_ff, vocab=t.tiny_vocab, max_positions=1024)
    config = model.config
    config.initializer_range = 0.1
    torch.manual_seed(0)
    return LlamaForCausalLM(config), tokenizer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--problems", type=int, default=200, help="GSM8K test questions to decode")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument("--student", default="", help="a trained student folder (default: random tiny T5)")
    parser.add_argument("--kind", choices=("seq2seq", "causal"), default="seq2seq",
                        help="the random default student: tiny T5 (seq2seq) or tiny Llama (causal, left padding)")
    parser.add_argument("--data-dir", default=os.environ.get("DISTILL_DATA_DIR", "../shared/data"))
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    questions = [p.question for p in load_problems("gsm8k", "test", args.data_dir, hub=False)[: args.problems]]
    inputs = student_inputs(questions)
    if args.student:
        from distill.student import find_student_dir
        from distill.student import load_student

        found = find_student_dir(Path(args.student))
        if found is None:
            sys.exit(f"no student folder under {args.student}")
        model, tokenizer = load_student(found[0])
        label = f"student {args.student}"
    elif args.kind == "causal":
        model, tokenizer = random_tiny_causal(args.data_dir)
        t = load_config("tiny").train
        label = (f"random tiny Llama (d_model {t.tiny_d_model}, {2 * t.tiny_layers} layers, BPE {len(tokenizer)}; "
                 "batches padded on the left, prompts cut off the outputs)")
    else:
        model, tokenizer = random_tiny(args.data_dir)
        t = load_config("tiny").train
        label = f"random tiny T5 (d_model {t.tiny_d_model}, {t.tiny_layers}+{t.tiny_layers} layers, BPE {len(tokenizer)})"
    model.eval()
    params = sum(p.numel() for p in model.parameters())
    print(f"model: {label}, {params / 1e6:.2f}M parameters; {len(inputs)} GSM8K test questions (EoT input); "
          f"greedy, max_new_tokens {args.max_new_tokens}; torch threads {torch.get_num_threads()}")

    kwargs = dict(max_new_tokens=args.max_new_tokens, max_source_len=256)
    decode(model, tokenizer, inputs[:2], batch_size=2, **kwargs)  # warm-up (first-call allocations)

    def timed(fn):
        """(result, (wall seconds, CPU seconds of this process)). On a shared machine other processes
        stretch wall time unevenly between the modes; CPU time of one thread does not count them."""
        wall, cpu = time.perf_counter(), time.process_time()
        out = fn()
        return out, (time.perf_counter() - wall, time.process_time() - cpu)

    batched, t_batched = timed(lambda: decode(model, tokenizer, inputs, batch_size=args.batch_size, **kwargs))
    unsorted, t_unsorted = timed(lambda: decode(model, tokenizer, inputs, batch_size=args.batch_size, sort=False,
                                                **kwargs))

    def one_by_one():
        # one generate call per problem, no padding at all: the baseline, and for a causal student the
        # check that left padding changes no output
        return [decode(model, tokenizer, [text], batch_size=1, **kwargs)[0] for text in inputs]

    single, t_single = timed(one_by_one)
    n = len(inputs)
    same = sum(a == b for a, b in zip(batched, single))
    lengths = [len(tokenizer(o, add_special_tokens=False)["input_ids"]) for o in batched]
    print(f"outputs: {sum(1 for o in batched if o)}/{n} non-empty, mean {sum(lengths) / n:.0f} tokens "
          f"(re-tokenized), e.g. {batched[0][:60]!r}")
    rows = [("one generate per problem", t_single), (f"batched {args.batch_size}, unsorted", t_unsorted),
            (f"batched {args.batch_size}, length-sorted", t_batched)]
    print(f"{'':<34}{'problems/s (wall)':>18}{'problems/s (CPU)':>18}")
    for name, (wall, cpu) in rows:
        print(f"{name:<34}{n / wall:18.2f}{n / cpu:18.2f}   ({wall:.1f} s wall, {cpu:.1f} s CPU)")
    print(f"identical outputs (batched vs one by one): {same}/{n}")
    print(f"ratio batched+sorted / one-by-one: {t_single[0] / t_batched[0]:.1f}x wall, "
          f"{t_single[1] / t_batched[1]:.1f}x CPU (target >= 5)")
    print(f"ratio sorted / unsorted batches:   {t_unsorted[0] / t_batched[0]:.2f}x wall, "
          f"{t_unsorted[1] / t_batched[1]:.2f}x CPU")


if __name__ == "__main__":
    main()
