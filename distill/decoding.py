"""Greedy, batched, length-sorted decoding of a student, seq2seq or causal (decoder-only).

Why sorted: a batch is padded to its longest input and runs until its longest output ends, so
batching inputs of similar length wastes the least compute on padding. Inputs are sorted longest
first (a batch that runs out of memory does so at once, not at the end) and each batch reports the
original indices, so callers can store results as they come and restore the original order.

Seq2seq inputs are padded on the right (the encoder was trained so; the mask hides it). Causal
inputs are padded on the LEFT, so every row's prompt ends where generation starts, and the prompt
is cut off the output: only the completion is returned. ``encode_prompts`` is the one place a
student input becomes token ids; the train stage uses it too, so training and decoding see the
same prompt (the chat template when the student was trained with it, and never a trailing EOS).

Decoding follows the paper's protocol (METHOD.md): greedy, at most 256 new tokens by default.
Reads and writes no files.
"""
from __future__ import annotations

from typing import Iterator, Sequence


def length_order(lengths: Sequence[int]) -> list[int]:
    """Indices sorted by length, longest first; equal lengths keep their original order."""
    return sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))


def is_causal(model) -> bool:
    """True for a decoder-only model (its config says it is not an encoder-decoder)."""
    config = getattr(model, "config", None)
    return config is not None and not getattr(config, "is_encoder_decoder", False)


def encode_prompts(tokenizer, inputs: Sequence[str], *, causal: bool, max_len: int,
                   chat_template: bool = False) -> list[list[int]]:
    """Token ids of student inputs, cut from the LEFT to ``max_len`` so the form's instruction at the
    end ("Question: ...\\n<instruction>\\n") always survives; a question that long loses its first words.

    Seq2seq: the tokenizer's own special tokens (T5 and the tiny tokenizer end with ``</s>``).
    Causal: a prompt the completion continues, so a trailing EOS that the tokenizer appends is
    dropped (a BOS it prepends, as Llama's does, stays); with ``chat_template`` the input becomes
    the user turn of the tokenizer's chat template, followed by the assistant's turn opening.
    """
    texts = list(inputs)
    if not texts:
        return []
    add_special = True
    if causal and chat_template:
        texts = [tokenizer.apply_chat_template([{"role": "user", "content": t}], tokenize=False,
                                               add_generation_prompt=True) for t in texts]
        add_special = False  # the template holds its own special tokens
    side = tokenizer.truncation_side
    tokenizer.truncation_side = "left"
    try:
        encoded = tokenizer(texts, truncation=True, max_length=max_len, add_special_tokens=add_special)["input_ids"]
    finally:
        tokenizer.truncation_side = side
    if causal and tokenizer.eos_token_id is not None:
        encoded = [ids[:-1] if ids and ids[-1] == tokenizer.eos_token_id else ids for ids in encoded]
    return [list(ids) for ids in encoded]


def decode_batches(model, tokenizer, inputs: Sequence[str], *, batch_size: int = 32, max_new_tokens: int = 256,
                   max_source_len: int = 256, sort: bool = True) -> Iterator[tuple[list[int], list[str]]]:
    """Yield (indices into ``inputs``, decoded outputs) one batch at a time, batches sorted by input length
    (``sort=False`` keeps the given order; benchmarks/evaluate.py measures what sorting buys).

    Works for both kinds of student (see the module docstring); a causal student's outputs hold only
    its completion. Whether the chat template applies is read from ``model.config.distill_chat_template``
    (set by distill.student.load_student from the student's folder).
    """
    import torch

    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    if not inputs:
        return
    causal = is_causal(model)
    chat = bool(getattr(getattr(model, "config", None), "distill_chat_template", False))
    encoded = encode_prompts(tokenizer, inputs, causal=causal, max_len=max_source_len, chat_template=chat)
    device = next(model.parameters()).device
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    extra = {"pad_token_id": pad_id}
    if causal and tokenizer.eos_token_id is not None:
        extra["eos_token_id"] = tokenizer.eos_token_id
    model.eval()
    order = length_order([len(ids) for ids in encoded]) if sort else list(range(len(encoded)))
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        width = max(len(encoded[i]) for i in idx)
        ids = torch.full((len(idx), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(idx), width), dtype=torch.long)
        for row, i in enumerate(idx):
            n = len(encoded[i])
            # causal: left padding, so the last prompt token of every row sits at the same column
            cols = slice(width - n, width) if causal else slice(0, n)
            ids[row, cols] = torch.tensor(encoded[i], dtype=torch.long)
            mask[row, cols] = 1
        with torch.inference_mode():
            out = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), do_sample=False,
                                 num_beams=1, max_new_tokens=max_new_tokens, **extra)
        if causal:
            out = out[:, width:]  # the completion only: generate returns prompt + new tokens
        yield idx, tokenizer.batch_decode(out, skip_special_tokens=True)


def decode(model, tokenizer, inputs: Sequence[str], **kwargs) -> list[str]:
    """All outputs of ``decode_batches`` in the order of ``inputs``."""
    outputs: list[str | None] = [None] * len(inputs)
    for idx, texts in decode_batches(model, tokenizer, inputs, **kwargs):
        for i, text in zip(idx, texts):
            outputs[i] = text
    return outputs  # type: ignore[return-value]
