"""Training and evaluation speed of the GPU presets, at the students' real shapes, through the project's
own train and evaluate stages; the ratio against each preset's former fixed batch.

For each preset (default: codet5-large and qwen2.5-0.5b, the shapes issue 19 measured):

1. the student is built from a config at its real shape (CodeT5-large: T5 with d_model 1024, 24+24
   layers, 32,100 tokens; Qwen2.5-0.5B: Qwen2 with hidden 896, 24 layers, 151,936 tokens, ...) with
   random weights, and a byte-level BPE tokenizer trained here on the mix's texts (up to 32,000 tokens;
   the model keeps its real vocabulary, which sets the cost of its embeddings and logits). Nothing
   is downloaded. A causal student gets a ChatML-style chat template, as the presets use one.
2. the data stages (gold teacher, verify, mix) write an ETD mix of ``--limit-train`` GSM8K problems;
3. the train stage (``distill.stages.train.run``, the preset's own settings, no validation rows)
   runs ``--steps`` optimizer steps once with ``train.batch_size: auto`` and once with the preset's
   former fixed micro-batch x accumulation (``FIXED``, the same effective batch 32). The seconds per
   step are the stage's own measurement (summary ``step_s``, distill.callbacks.StepTimer: the median
   gap between optimizer-step ends after 2 warm-up steps), so loading, the memory probe and the
   checkpoint save are not in it; with fewer than 3 timed steps it prints n/a. (The first version took
   the difference of a short and a long run's wall times: on an H200 the save and load noise swamped
   it, 0.000 s/step.)
4. the evaluate stage (``distill.stages.evaluate.run``) answers ``--problems`` GSM8K test problems in
   the EoT form with 256 new tokens: at the fixed ``--eval-baseline`` batch (64, as measured in the
   issue) in the fp32 the student was saved in (the evaluation before issue 19), with
   ``evaluate.batch_size: auto`` in fp32, auto in the preset's ``evaluate.dtype`` (bf16 on a GPU), and
   that with ``evaluate.static_cache``. The auto batch's memory probe is timed by the stage
   (summary ``decoding.batch_probe_s``) and printed apart: problems/s of the whole stage (loading and
   probe included) and of the stage less the probe (the full evaluation adds one probe per student), and
   where the stage spent its time: decoding (the generate calls) and verifying (the solver, the sandbox),
   from the stage's own summary ("time"). A random student's outputs fail to parse quickly, so a trained
   student verifies more slowly than this: the split bounds decoding, not verification.

Prints per preset: micro-batch x accumulation, s/step (and the steps it was timed over), examples/s,
peak GPU memory, the estimated time of the preset's full training (``--full-rows`` ETD rows, 20,351 in
the issue, x the preset's epochs) and of one student's full evaluation (one probe + 5,015 test problems
x 3 forms at the decoding rate), problems/s, and the ratios against the fixed batches. Figures are in
the same process and session, so the ratios are fair.
Each measurement is also printed on one line as soon as it is taken (``# <preset>, <what>: ...``) and,
with ``--out``, the results so far are written there atomically after each one (``complete: false`` for a
preset cut short): a GPU call stopped by its time limit keeps every figure it measured.

    python benchmarks/gpu.py                       # on a GPU: codet5-large and qwen2.5-0.5b
    python benchmarks/gpu.py --presets all         # every GPU preset
    python benchmarks/gpu.py --static-cache-only   # auto training only; evaluation: auto vs auto + static cache
    python benchmarks/gpu.py --tiny                # the same code at toy size on a CPU (tests/test_gpu_benchmark.py)

``--grpo`` measures the rl stage instead (causal presets only): it trains the auto student for
``--steps`` steps (the SFT parent; no fixed batch, no evaluation), then runs ``distill.stages.rl.run``
on it for ``--grpo-steps`` GRPO steps with the rl settings of ``<preset>-grpo`` where one is shipped
(qwen2.5-0.5b-grpo), else the preset's; it prints s/step (the stage's own step timer), completions/s,
peak GPU memory, the estimated time of the preset's ``rl.max_steps``, and the ratio of the GRPO
update's completions/s to the SFT step's examples/s on the same student and device (how much
sampling costs on top of an update of the same number of sequences).

    python benchmarks/gpu.py --grpo --presets qwen2.5-0.5b    # on a GPU: GRPO at the real shape

``--static-cache-only`` skips the fixed-batch training and the fp32 evaluations: it trains the auto
student (the evaluate stage needs one) and evaluates it in the preset's dtype with and without the
static cache, so the static cache's first-batch compilation can be measured within one short call.
Without a GPU it runs at --tiny size (so `make bench` stays short); --full-size forces the real shapes.
Needs the benchmark data (DISTILL_DATA_DIR). On CPU, peak GPU memory prints as n/a.
"""
from __future__ import annotations

import argparse
import gc
import json
import math
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

# The real shapes (from each model's config.json on the hub, copied here so nothing is downloaded).
SHAPES = {
    "codet5-small": ("t5", dict(d_model=512, d_kv=64, d_ff=2048, num_layers=6, num_decoder_layers=6, num_heads=8,
                                vocab_size=32100)),
    "codet5-base": ("t5", dict(d_model=768, d_kv=64, d_ff=3072, num_layers=12, num_decoder_layers=12, num_heads=12,
                               vocab_size=32100)),
    "codet5-large": ("t5", dict(d_model=1024, d_kv=64, d_ff=4096, num_layers=24, num_decoder_layers=24,
                                num_heads=16, vocab_size=32100)),
    "qwen2.5-0.5b": ("qwen2", dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                                   num_attention_heads=14, num_key_value_heads=2, vocab_size=151936,
                                   max_position_embeddings=32768, rms_norm_eps=1e-6)),
    "smollm2-360m": ("llama", dict(hidden_size=960, intermediate_size=2560, num_hidden_layers=32,
                                   num_attention_heads=15, num_key_value_heads=5, vocab_size=49152,
                                   max_position_embeddings=8192, rms_norm_eps=1e-5)),
}
SHAPES["qwen2.5-0.5b-lora"] = SHAPES["qwen2.5-0.5b"]
TINY_SHAPES = {
    "t5": dict(d_model=32, d_kv=16, d_ff=64, num_layers=1, num_decoder_layers=1, num_heads=2, vocab_size=600),
    "qwen2": dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                  num_key_value_heads=1, vocab_size=600, max_position_embeddings=1024, rms_norm_eps=1e-6),
    "llama": dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                  num_key_value_heads=1, vocab_size=600, max_position_embeddings=1024, rms_norm_eps=1e-5),
}
FIXED = {"codet5-small": (32, 1), "codet5-base": (16, 2), "codet5-large": (4, 8), "qwen2.5-0.5b": (8, 4),
         "qwen2.5-0.5b-lora": (8, 4), "smollm2-360m": (16, 2)}
"""Each preset's micro-batch x accumulation before ``batch_size: auto`` (mlprojects/ at d748637)."""
DEFAULT_PRESETS = ("codet5-large", "qwen2.5-0.5b")
CHAT_TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
                 "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
FULL_TEST_PROBLEMS = 5015  # gsm8k 1319 + asdiv 2096 + svamp 1000 + multiarith 600


def cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def reset_peak() -> None:
    import torch

    gc.collect()
    if cuda():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def peak_gib() -> float | None:
    import torch

    return torch.cuda.max_memory_allocated() / 1024 ** 3 if cuda() else None


def build_student(preset: str, texts: list[str], folder: Path, tiny: bool) -> dict:
    """A student of ``preset``'s shape with random weights and a local tokenizer, saved in ``folder``."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM, T5Config, \
        T5ForConditionalGeneration

    from distill.student import count_parameters, save_student, train_tokenizer

    family, dims = SHAPES[preset]
    dims = dict(TINY_SHAPES[family] if tiny else dims)
    causal = family != "t5"
    tokenizer = train_tokenizer(texts, vocab_size=min(dims["vocab_size"], 32000), append_eos=not causal)
    ids = dict(pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    torch.manual_seed(0)
    if family == "t5":
        # CodeT5 is a T5 v1.0: ReLU feed-forward, embeddings tied with the output head
        model = T5ForConditionalGeneration(T5Config(**dims, **ids, decoder_start_token_id=tokenizer.pad_token_id,
                                                    feed_forward_proj="relu", tie_word_embeddings=True))
    else:
        config_cls, model_cls = (Qwen2Config, Qwen2ForCausalLM) if family == "qwen2" else (LlamaConfig,
                                                                                          LlamaForCausalLM)
        model = model_cls(config_cls(**dims, **ids, bos_token_id=None, tie_word_embeddings=True))
        tokenizer.chat_template = CHAT_TEMPLATE
        tokenizer.padding_side = "left"
    save_student(model, tokenizer, folder, {"chat_template": causal})
    return {"params": count_parameters(model), "vocab": dims["vocab_size"], "tokenizer": len(tokenizer)}


def data_stages(root: Path, data_dir: Path, limit_train: int) -> Path:
    """An ETD mix of ``limit_train`` GSM8K problems through the project's own data stages."""
    from distill.config import load_config
    from distill.stages import generate, mix, verify

    cfg = load_config("smoke", [f"run_dir={root}", f"data.data_dir={data_dir}", f"data.limit_train={limit_train}",
                                "data.hub=false", "teacher.name=gold"])
    for stage in (generate, verify):
        stage.run(cfg, root)
    mix.run(cfg, root)
    return root / "mix" / "etd" / "train.jsonl"


def train_variant(preset: str, student: Path, train_file: Path, run_dir: Path, steps: int, batch: tuple | None,
                  overrides: list[str]) -> dict:
    """The train stage on ``train_file`` only (no validation rows), fresh, for ``steps`` optimizer steps; its
    s/step as the stage measured it (summary ``step_s``: None when too few steps were timed)."""
    from distill.config import load_config
    from distill.stages import train

    shutil.rmtree(run_dir, ignore_errors=True)
    (run_dir / "mix" / "etd").mkdir(parents=True)
    shutil.copy(train_file, run_dir / "mix" / "etd" / "train.jsonl")
    sizes = ["train.batch_size=auto"] if batch is None else [f"train.batch_size={batch[0]}",
                                                             f"train.grad_accum={batch[1]}"]
    cfg = load_config(preset, [f"run_dir={run_dir}", f"train.student={student}", f"train.max_steps={steps}",
                               "train.max_minutes=null", "train.val_generate_limit=0", *sizes, *overrides])
    reset_peak()
    t0 = time.monotonic()
    summary = train.run(cfg, run_dir, None)
    wall_s = time.monotonic() - t0
    card = json.loads((run_dir / "students" / "etd" / "card.json").read_text())
    effective = card["training"]["effective_batch_size"]
    step_s = summary.get("step_s")
    return {"wall_s": wall_s, "steps": summary["steps"], "peak_gib": peak_gib(), "s_per_step": step_s,
            "timed_steps": summary.get("step_s_steps", 0),
            "examples_per_s": effective / step_s if step_s else None,
            "micro": card["training"]["batch_size"], "accum": card["training"]["grad_accum"],
            "effective": effective, "epochs": cfg.train.epochs, "run_dir": run_dir}


def evaluate_variant(preset: str, run_dir: Path, data_dir: Path, problems: int, max_new_tokens: int,
                     batch, static_cache: bool, dtype: str | None, overrides: list[str]) -> dict:
    """The evaluate stage on the first ``problems`` GSM8K test problems, EoT form, fresh; ``dtype``:
    evaluate.dtype (None: the preset's)."""
    from distill.config import load_config
    from distill.stages import evaluate

    shutil.rmtree(run_dir / "eval", ignore_errors=True)
    cfg = load_config(preset, [f"run_dir={run_dir}", f"data.data_dir={data_dir}", "data.hub=false",
                               "data.test_sets=[gsm8k]", "evaluate.forms=[eot]", f"evaluate.limit={problems}",
                               f"evaluate.max_new_tokens={max_new_tokens}", f"evaluate.batch_size={batch}",
                               f"evaluate.static_cache={str(static_cache).lower()}",
                               *([f"evaluate.dtype={dtype}"] if dtype else []), *overrides])
    reset_peak()
    t0 = time.monotonic()
    summary = evaluate.run(cfg, run_dir, None, log=lambda msg: None)
    seconds = time.monotonic() - t0
    n = summary["test_sets"]["gsm8k"]["n"]
    probe_s = summary["decoding"].get("batch_probe_s") or 0.0
    decoding_s = max(seconds - probe_s, 1e-9)
    spent = summary["time"]
    return {"n": n, "seconds": seconds, "probe_s": probe_s, "problems_per_s": n / seconds,
            "decoding_problems_per_s": n / decoding_s, "peak_gib": peak_gib(),
            "generate_s": spent["generate_s"], "verify_s": spent["verify_s"], "verify_share": spent["verify_share"],
            "batch": summary["decoding"]["batch_size"], "dtype": summary["decoding"].get("dtype")}


def grpo_variant(preset: str, run_dir: Path, steps: int, tiny: bool) -> dict:
    """The rl stage for ``steps`` GRPO steps on the SFT student in ``run_dir`` (train_variant's output),
    with ``<preset>-grpo``'s rl settings when that preset exists; its s/step as the stage timed it."""
    from distill.config import PRESET_DIR, load_config
    from distill.stages import rl

    name = f"{preset}-grpo" if (PRESET_DIR / f"{preset}-grpo.yaml").exists() else preset
    # tiny: toy lengths and groups, the same code path
    small = ["rl.num_generations=4", "rl.batch_size=8", "rl.grad_accum=1", "rl.max_completion_length=16",
             "rl.max_prompt_length=64"] if tiny else []
    cfg = load_config(name, [f"run_dir={run_dir}", f"rl.max_steps={steps}", "rl.checkpoint_every=1000000",
                             "rl.max_minutes=null", "rl.val_generate_limit=0", *small])
    full_steps = load_config(name).rl.max_steps
    reset_peak()
    t0 = time.monotonic()
    summary = rl.run(cfg, run_dir, None)
    step_s, per_step = summary.get("step_s"), summary["completions_per_step"]
    return {"preset": name, "wall_s": time.monotonic() - t0, "steps": summary["steps"], "s_per_step": step_s,
            "timed_steps": summary.get("step_s_steps", 0), "completions_per_step": per_step,
            "completions_per_s": per_step / step_s if step_s else None, "peak_gib": peak_gib(),
            "num_generations": cfg.rl.num_generations, "max_completion_length": cfg.rl.max_completion_length,
            "full_steps": full_steps, "full_min": full_steps * step_s / 60 if step_s else None}


def grpo_report(result: dict) -> list[str]:
    auto, grpo = result["auto"], result["grpo"]
    return [f"\n## {result['preset']}: GRPO ({grpo['preset']}'s rl settings), {result['shape']['params']:,} params",
            "| step | sequences per step | s / step (timed steps) | sequences/s | peak GiB | full run (min) |",
            "|---|---|---|---|---|---|",
            f"| SFT (train stage, auto) | {auto['effective']} examples | {fmt(auto['s_per_step'], '.3f')} "
            f"({auto['timed_steps']}) | {fmt(auto['examples_per_s'], '.1f')} | {fmt(auto['peak_gib'], '.1f')} | |",
            f"| GRPO (rl stage) | {grpo['completions_per_step']} completions ({grpo['num_generations']} per prompt, "
            f"<= {grpo['max_completion_length']} tokens) | {fmt(grpo['s_per_step'], '.3f')} ({grpo['timed_steps']}) | "
            f"{fmt(grpo['completions_per_s'], '.1f')} | {fmt(grpo['peak_gib'], '.1f')} | "
            f"{fmt(grpo['full_min'], '.1f')} ({grpo['full_steps']} steps) |",
            f"ratio GRPO completions/s / SFT examples/s: {ratio(grpo['completions_per_s'], auto['examples_per_s'])}"]


def fmt(value, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def eval_variants(args) -> list[tuple[str, object, bool, str | None]]:
    """(name, evaluate.batch_size, static_cache, evaluate.dtype or None for the preset's) to measure; the
    first is the baseline the ratios divide by."""
    if args.static_cache_only:
        return [("auto", "auto", False, None), ("auto + static cache", "auto", True, None)]
    variants = [(f"fixed {args.eval_baseline}, fp32 (before)", args.eval_baseline, False, "auto"),
                ("auto, fp32", "auto", False, "auto"), ("auto, preset dtype", "auto", False, None)]
    if not args.no_static_cache:
        variants.append(("auto, preset dtype + static cache", "auto", True, None))
    return variants


def bench_preset(preset: str, args, root: Path, train_file: Path, texts: list[str], result: dict, saved) -> dict:
    """Measures ``preset`` into ``result`` (in place); ``saved()`` after each measurement prints it on one line
    and writes the results so far, so a call cut by its time limit keeps every finished figure."""
    student = root / "students" / preset
    result["shape"] = build_student(preset, texts, student, args.tiny)
    # the tiny student's lengths: short enough for a CPU, the same code path
    overrides = ["train.max_source_len=64", "train.max_target_len=64"] if args.tiny else []
    eval_overrides = ["evaluate.max_source_len=64"] if args.tiny else []
    auto = result["auto"] = train_variant(preset, student, train_file, root / "train" / preset / "auto", args.steps,
                                          None, overrides)
    saved(preset, "train auto", auto)
    if args.grpo:
        result["grpo"] = grpo_variant(preset, auto["run_dir"], args.grpo_steps, args.tiny)
        saved(preset, "grpo", result["grpo"])
        return result
    result["fixed"] = None
    if not args.static_cache_only:
        result["fixed"] = train_variant(preset, student, train_file, root / "train" / preset / "fixed", args.steps,
                                        FIXED[preset], overrides)
        saved(preset, "train fixed", result["fixed"])
    result["full_steps"] = math.ceil(args.full_rows / auto["effective"]) * auto["epochs"]
    result["evals"] = {}
    for name, batch, static, dtype in eval_variants(args):
        result["evals"][name] = evaluate_variant(preset, auto["run_dir"], args.data_dir, args.problems,
                                                 args.max_new_tokens, batch, static, dtype, eval_overrides)
        saved(preset, f"evaluate {name}", result["evals"][name])
    return result


def progress_line(preset: str, what: str, row: dict) -> str:
    """One measurement on one line, printed as soon as it is taken."""
    if "problems_per_s" in row:
        figures = (f"batch {row['batch']}, {row['dtype']}, {row['problems_per_s']:.2f} problems/s "
                   f"({row['decoding_problems_per_s']:.2f} less the {row['probe_s']:.1f} s probe; "
                   f"{row['generate_s']:.2f} s decoding, {row['verify_s']:.2f} s verifying)")
    elif "completions_per_s" in row:
        figures = (f"{fmt(row['s_per_step'], '.3f')} s/step ({row['timed_steps']} timed), "
                   f"{fmt(row['completions_per_s'], '.1f')} completions/s")
    else:
        figures = (f"{row['micro']} x {row['accum']}, {fmt(row['s_per_step'], '.3f')} s/step "
                   f"({row['timed_steps']} timed), {fmt(row['examples_per_s'], '.1f')} examples/s")
    return f"# {preset}, {what}: {figures}, peak {fmt(row['peak_gib'], '.1f')} GiB"


def write_results(path: Path, results: list[dict]) -> None:
    """The results so far, atomically: a reader never sees half a file."""
    from distill.files import atomic_write_text

    atomic_write_text(path, json.dumps(results, indent=2, default=str))


def ratio(a, b) -> str:
    return "n/a" if not a or not b else f"{a / b:.2f}x"


def report(result: dict, args) -> list[str]:
    shape, auto, fixed = result["shape"], result["auto"], result["fixed"]
    lines = [f"\n## {result['preset']}: {shape['params']:,} params, vocabulary {shape['vocab']:,} "
             f"(tokenizer {shape['tokenizer']:,}), {result['full_steps']} optimizer steps in the full preset "
             f"({args.full_rows:,} rows x {auto['epochs']} epochs / {auto['effective']})",
             "| training | micro x accum | s / step (timed steps) | examples/s | peak GiB | full preset (min) |",
             "|---|---|---|---|---|---|"]
    rows = ([("fixed (the preset before auto)", fixed)] if fixed else []) + [("auto", auto)]
    for name, row in rows:
        step = row["s_per_step"]
        lines.append(f"| {name} | {row['micro']} x {row['accum']} | {fmt(step, '.3f')} ({row['timed_steps']}) | "
                     f"{fmt(row['examples_per_s'], '.1f')} | {fmt(row['peak_gib'], '.1f')} | "
                     f"{fmt(result['full_steps'] * step / 60 if step else None, '.1f')} |")
    if fixed:
        lines.append(f"ratio auto / fixed (examples/s): {ratio(auto['examples_per_s'], fixed['examples_per_s'])} "
                     f"(same effective batch: {auto['effective'] == fixed['effective']})")
    if any(row["s_per_step"] is None for _, row in rows):
        lines.append(f"s/step n/a: fewer than 3 steps timed after the 2 warm-up steps (--steps {args.steps})")
    lines += ["| evaluation (gsm8k, eot) | batch | dtype | probe s | decoding s | verifying s | problems/s (stage) "
              "| problems/s (stage less probe) | peak GiB | one student's full evaluation (min) |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for name, row in result["evals"].items():
        full_min = (row["probe_s"] + FULL_TEST_PROBLEMS * 3 / row["decoding_problems_per_s"]) / 60
        lines.append(f"| {name} | {row['batch']} | {row['dtype']} | {row['probe_s']:.1f} | {row['generate_s']:.2f} | "
                     f"{row['verify_s']:.2f} | {row['problems_per_s']:.2f} | {row['decoding_problems_per_s']:.2f} | "
                     f"{fmt(row['peak_gib'], '.1f')} | {full_min:.1f} |")
    names = list(result["evals"])
    base = result["evals"][names[0]]
    for name in names[1:]:
        row = result["evals"][name]
        lines.append(f"ratio {name} / {names[0]} (problems/s, stage): "
                     f"{ratio(row['problems_per_s'], base['problems_per_s'])}; less the probe: "
                     f"{ratio(row['decoding_problems_per_s'], base['decoding_problems_per_s'])}")
    return lines


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--presets", default=",".join(DEFAULT_PRESETS),
                        help=f"comma-separated GPU presets, or all ({', '.join(SHAPES)})")
    parser.add_argument("--tiny", action="store_true",
                        help="toy shapes, few steps and problems: runs on a CPU (the default without a GPU)")
    parser.add_argument("--full-size", action="store_true",
                        help="the real shapes even without a GPU (hours on a CPU)")
    parser.add_argument("--steps", type=int, default=None,
                        help="optimizer steps per training run (default 30; tiny 6); s/step is timed over the "
                             "steps after the first 2, n/a under 5")
    parser.add_argument("--problems", type=int, default=None, help="test problems evaluated (default 256; tiny 8)")
    parser.add_argument("--max-new-tokens", type=int, default=None, help="default 256 (the paper's); tiny 16")
    parser.add_argument("--limit-train", type=int, default=None,
                        help="GSM8K training problems in the benchmark's ETD mix (default 1000; tiny 40)")
    parser.add_argument("--no-static-cache", action="store_true",
                        help="skip the static-cache evaluation (its first batches compile the decoding step)")
    parser.add_argument("--static-cache-only", action="store_true",
                        help="train the auto student only and evaluate it with and without the static cache "
                             "(fits one short GPU call)")
    parser.add_argument("--grpo", action="store_true",
                        help="measure the rl stage (GRPO) on the trained auto student instead of the fixed batch "
                             "and the evaluations; causal presets only")
    parser.add_argument("--grpo-steps", type=int, default=None, help="GRPO steps (default 10; tiny 6)")
    parser.add_argument("--eval-baseline", type=int, default=64, help="the fixed evaluation batch compared")
    parser.add_argument("--full-rows", type=int, default=20351, help="ETD rows of the full preset (issue 19)")
    parser.add_argument("--data-dir", type=Path, default=Path(os.environ.get("DISTILL_DATA_DIR", "data")))
    parser.add_argument("--out", type=Path, default=None,
                        help="also write the results as JSON here, after each measurement (a preset cut short "
                             "says complete: false)")
    args = parser.parse_args(argv)
    if not args.tiny and not args.full_size and not cuda():
        print("no GPU: running at --tiny size (the real shapes need a GPU; --full-size forces them)", flush=True)
        args.tiny = True
    defaults = dict(steps=(6, 30), grpo_steps=(6, 10), problems=(8, 256), max_new_tokens=(16, 256), limit_train=(40, 1000))
    for key, (tiny, real) in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, tiny if args.tiny else real)
    presets = list(SHAPES) if args.presets == "all" else [p for p in args.presets.split(",") if p]
    unknown = [p for p in presets if p not in SHAPES]
    if unknown:
        parser.error(f"unknown preset {unknown[0]!r}; GPU presets: {', '.join(SHAPES)}")
    seq2seq = [p for p in presets if SHAPES[p][0] == "t5"]
    if args.grpo and seq2seq:
        parser.error(f"--grpo: {seq2seq[0]} is seq2seq; TRL's GRPO trains causal students only "
                     f"({', '.join(p for p in SHAPES if SHAPES[p][0] != 't5')})")
    import torch

    if args.tiny:
        torch.set_num_threads(1)
    device = torch.cuda.get_device_name() if cuda() else "CPU (no GPU: peak memory n/a)"
    print(f"# benchmarks/gpu.py on {device}{' (--tiny)' if args.tiny else ''}: {args.steps} steps per training run, "
          f"{args.problems} problems x {args.max_new_tokens} new tokens", flush=True)
    results = []
    with tempfile.TemporaryDirectory(prefix="distill-gpu-bench-") as tmp:
        root = Path(tmp)
        train_file = data_stages(root / "data", args.data_dir, args.limit_train)
        rows = [json.loads(line) for line in train_file.read_text().splitlines() if line.strip()]
        texts = [r["input"] for r in rows] + [r["target"] for r in rows]

        def saved(preset: str, what: str, row: dict) -> None:
            print(progress_line(preset, what, row), flush=True)
            if args.out:
                write_results(args.out, results)

        for preset in presets:
            result = {"preset": preset, "complete": False}
            results.append(result)
            bench_preset(preset, args, root, train_file, texts, result, saved)
            result["complete"] = True
            if args.out:
                write_results(args.out, results)
            print("\n".join(grpo_report(result) if args.grpo else report(result, args)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
