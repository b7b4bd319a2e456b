"""Greedy, batched, length-sorted decoding of a seq2seq student.

Why sorted: a batch is padded to its longest input and runs until its longest output ends, so
batching inputs of similar length wastes the least compute on padding. Inputs are sorted longest
first (a batch that runs out of memory does so at once, not at the end) and each batch reports the
original indices, so callers can store results as they come and restore the original order.

Decoding follows the paper's protocol (METHOD.md): greedy, at most 256 new tokens by default.
"""
from __future__ import annotations

from typing import Iterator, Sequence


def length_order(lengths: Sequence[int]) -> list[int]:
    """Indices sorted by length, longest first; equal lengths keep their original order."""
    return sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))


def decode_batches(model, tokenizer, inputs: Sequence[str], *, batch_size: int = 32, max_new_tokens: int = 256,
                   max_source_len: int = 256, sort: bool = True) -> Iterator[tuple[list[int], list[str]]]:
    """Yield (indices into ``inputs``, decoded outputs) one batch at a time, batches sorted by input length
    (``sort=False`` keeps the given order; benchmarks/evaluate.py measures what sorting buys).

    Inputs longer than ``max_source_len`` tokens are cut from the left, so the instruction at the
    end of a student input ("Question: ...\\n<instruction>\\n") always survives; a question that
    long loses its first words instead.
    """
    import torch

    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    if not inputs:
        return
    side = tokenizer.truncation_side
    tokenizer.truncation_side = "left"
    try:
        encoded = tokenizer(list(inputs), truncation=True, max_length=max_source_len)["input_ids"]
    finally:
        tokenizer.truncation_side = side
    device = next(model.parameters()).device
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    model.eval()
    order = length_order([len(ids) for ids in encoded]) if sort else list(range(len(encoded)))
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        width = max(len(encoded[i]) for i in idx)
        # right padding, as the encoder was trained with; the attention mask hides it
        ids = torch.full((len(idx), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(idx), width), dtype=torch.long)
        for row, i in enumerate(idx):
            ids[row, :len(encoded[i])] = torch.tensor(encoded[i], dtype=torch.long)
            mask[row, :len(encoded[i])] = 1
        with torch.inference_mode():
            out = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), do_sample=False,
                                 num_beams=1, max_new_tokens=max_new_tokens)
        yield idx, tokenizer.batch_decode(out, skip_special_tokens=True)


def decode(model, tokenizer, inputs: Sequence[str], **kwargs) -> list[str]:
    """All outputs of ``decode_batches`` in the order of ``inputs``."""
    outputs: list[str | None] = [None] * len(inputs)
    for idx, texts in decode_batches(model, tokenizer, inputs, **kwargs):
        for i, text in zip(idx, texts):
            outputs[i] = text
    return outputs  # type: ignore[return-value]
