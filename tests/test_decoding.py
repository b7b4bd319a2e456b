"""Decoding as the evaluate stage does it (batched, length-sorted, auto batch, optional static KV cache)
writes exactly the greedy outputs of plain one-problem-at-a-time ``model.generate``, for a seq2seq and
a causal student; and the auto batch of evaluation follows the device's memory."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from distill.config import load_config, replace
from distill.decoding import (CPU_EVAL_BATCH, MAX_EVAL_BATCH, choose_eval_batch, encode_prompts, is_causal,
                              resolve_eval_batch)
from distill.files import read_log

GIB = 1024 ** 3
FORMS = ("eot", "pot")


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def seq2seq_student():
    """A random T5 whose weights are large enough that it writes varied tokens (byte tokenizer, no download)."""
    import torch
    from transformers import ByT5Tokenizer, T5Config, T5ForConditionalGeneration

    tokenizer = ByT5Tokenizer()
    config = T5Config(vocab_size=len(tokenizer), d_model=32, d_kv=8, d_ff=64, num_layers=1, num_decoder_layers=1,
                      num_heads=4, pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
                      decoder_start_token_id=tokenizer.pad_token_id, initializer_factor=5.0)
    torch.manual_seed(0)
    return T5ForConditionalGeneration(config), tokenizer


def causal_student(texts):
    import torch

    from distill.student import build_tiny_causal

    model, tokenizer = build_tiny_causal(texts, d_model=32, layers=1, heads=2, d_ff=64, vocab=400, max_positions=512)
    torch.manual_seed(0)
    with torch.no_grad():  # at the default scale a random decoder repeats one token; larger weights vary
        for name, param in model.named_parameters():
            if "norm" not in name:
                param.normal_(0.0, 0.5)
    return model, tokenizer


def reference(model, tokenizer, inputs, *, max_new_tokens, max_source_len):
    """Today's protocol without any of the levers: one problem per ``generate`` call, no padding."""
    import torch

    causal = is_causal(model)
    out = []
    for ids in encode_prompts(tokenizer, inputs, causal=causal, max_len=max_source_len):
        ids_t = torch.tensor([ids])
        with torch.inference_mode():
            gen = model.generate(input_ids=ids_t, attention_mask=torch.ones_like(ids_t), do_sample=False,
                                 num_beams=1, max_new_tokens=max_new_tokens,
                                 pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
        out.append(tokenizer.decode(gen[0, len(ids):] if causal else gen[0], skip_special_tokens=True))
    return out


def save(model, tokenizer, folder: Path) -> Path:
    from distill.student import save_student
    from distill.thoughts import get_form

    save_student(model, tokenizer, folder / "model")
    card = {"mix": "eot+pot", "forms": {f: {"version": get_form(f).version, "instruction": get_form(f).instruction}
                                        for f in FORMS}, "student": "test", "best_form": "eot"}
    (folder / "card.json").write_text(json.dumps(card))
    return folder


@pytest.mark.parametrize("kind", ["seq2seq", "causal"])
@pytest.mark.parametrize("static_cache", [False, True])
def test_the_evaluate_stage_writes_the_greedy_outputs_of_one_problem_at_a_time_generate(
        tmp_path, data_dir, kind, static_cache):
    from distill.problems import load_problems
    from distill.stages import evaluate as stage
    from distill.student import load_student
    from distill.thoughts import get_form

    problems = load_problems("svamp", "test", data_dir, hub=False)[:10]
    texts = [get_form(f).student_input(p.question) for f in FORMS for p in problems]
    model, tokenizer = seq2seq_student() if kind == "seq2seq" else causal_student(texts)
    save(model, tokenizer, tmp_path / "students" / "eot+pot")
    cfg = load_config(None, [f"data.data_dir={data_dir}", "data.hub=false"])
    cfg = replace(cfg, data={"test_sets": ("svamp",)},
                  evaluate={"limit": 10, "batch_size": "auto", "max_new_tokens": 20, "static_cache": static_cache})
    summary = stage.run(cfg, tmp_path, mix="eot+pot")
    assert summary["decoding"]["batch_size"] == CPU_EVAL_BATCH  # auto on the CPU: the former default

    loaded, loaded_tok = load_student(tmp_path / "students" / "eot+pot" / "model")
    for form in FORMS:
        by_id = {r["problem_id"]: r for r in read_log(tmp_path / "eval" / "eot+pot" / "svamp" / f"{form}.jsonl")}
        records = [by_id[p.id] for p in problems]
        inputs = [get_form(form).student_input(p.question) for p in problems]
        expected = reference(loaded, loaded_tok, inputs, max_new_tokens=20, max_source_len=cfg.evaluate.max_source_len)
        assert [r["output"] for r in records] == expected
        assert len({r["output"] for r in records}) > 1  # the random student writes varied text: the check bites


def test_a_24_gb_card_and_an_h200_get_different_evaluation_batches():
    # CodeT5-large at 256 + 256 tokens (issue 19: 10.4 GiB at batch 64 on an H200): ~3 GiB weights in fp32
    fixed, per_row = 3.0 * GIB, (10.4 - 3.0) / 64 * GIB
    small, why = choose_eval_batch(24e9, fixed, per_row)
    large, _ = choose_eval_batch(139 * GIB, fixed, per_row)
    assert 64 <= small < large == MAX_EVAL_BATCH
    assert f"batch {small}" in why
    assert choose_eval_batch(139 * GIB, fixed, per_row, n_inputs=10)[0] == 10  # never more rows than inputs
    assert choose_eval_batch(3 * GIB, fixed, per_row)[0] == 1  # at least one row, even when none fits


def test_an_explicit_evaluation_batch_wins_and_auto_keeps_the_cpu_default():
    model, _ = seq2seq_student()
    assert resolve_eval_batch(7, model)[0] == 7
    assert resolve_eval_batch("auto", model) == (CPU_EVAL_BATCH, f"auto on the CPU: {CPU_EVAL_BATCH}")
    measured = resolve_eval_batch("auto", model, probe=lambda: (24e9, 3.0 * GIB, 0.1 * GIB))
    assert measured[0] == int((24e9 * 0.9 - 3.0 * GIB) // (0.1 * GIB))
    with pytest.raises(ValueError, match="auto"):
        resolve_eval_batch("big", model)


def test_the_generation_probe_decodes_full_length_rows_of_the_longest_input():
    import torch

    class ScriptedMemory:
        device = torch.device("cpu")

        def __init__(self):
            self.peaks = [2 * GIB, 2.3 * GIB]

        def reset(self):
            pass

        def peak(self):
            return self.peaks.pop(0)

        def budget(self):
            return 24e9

    from distill.decoding import probe_generation_memory

    model, _ = seq2seq_student()
    lengths = []
    model.register_forward_hook(lambda module, args, kwargs, out: lengths.append(out.logits.shape), with_kwargs=True)
    budget, fixed, per_row = probe_generation_memory(model, max_new_tokens=12, max_source_len=40,
                                                     memory=ScriptedMemory())
    assert budget == 24e9 and per_row == pytest.approx(0.1 * GIB) and fixed == pytest.approx(1.9 * GIB)
    assert [shape[0] for shape in lengths].count(1) == 12 and [shape[0] for shape in lengths].count(4) == 12
    assert choose_eval_batch(budget, fixed, per_row)[0] == int((24e9 * 0.9 - 1.9 * GIB) // (0.1 * GIB))
