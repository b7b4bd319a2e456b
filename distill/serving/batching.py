"""Batching of concurrent calls: the scoring server calls predict from several threads at once. One
call at a time uses the model and the sandbox (``busy``); calls that arrive meanwhile wait in
``waiting`` and the next one to run answers them all in one batch, which decodes faster than one
question at a time (benchmarks/serve.py measures what that buys). One call's failure never fails
the calls it was batched with.

How many questions one batch may hold (``batch_rows``): as many as the device's free memory holds
(``memory_rows``: the key/value cache and encoder states of greedy decoding, per question, from the
model's config), and no more than the sandbox can check in ``SANDBOX_BUDGET_S`` when every program
loops (``sandbox_rows``), so a batch stays inside the scoring server's request limit.

Reads and writes nothing: it holds parsed requests (distill.serving.inputs.Request) until the
``answer`` function it was given has answered them.
"""
from __future__ import annotations

import threading
from typing import Callable, Sequence

from distill.serving.inputs import Request

SANDBOX_BUDGET_S = 40.0
"""Seconds a batch may spend in the sandbox if every program loops until its timeout: inside the
scoring server's 60 s request limit (MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT), with room for decoding."""
MEMORY_SHARE = 0.5
"""Share of the free device memory (after loading the model) that one batch's decoding may use: the
estimate below counts the cache, not every temporary buffer of attention and sampling."""
MAX_ROWS_CAP = 512


def row_bytes(config, *, max_source_len: int, max_new_tokens: int, dtype_bytes: int = 4) -> int:
    """Bytes one question needs while it is decoded greedily: the key/value cache of every layer over
    the prompt and the new tokens (a causal model), or the encoder states, the cross-attention cache
    over the source and the self-attention cache over the new tokens (seq2seq); plus the logits of
    one step. Read from a transformers config (T5/CodeT5 or Llama/Qwen names)."""
    from distill.decoding import kv_cache_layout

    def get(*names, default=None):
        for name in names:
            value = getattr(config, name, None)
            if value is not None:
                return int(value)
        return default

    d_model = get("d_model", "hidden_size", "n_embd", default=512)
    vocab = get("vocab_size", default=32000)
    encoder_decoder = getattr(config, "is_encoder_decoder", False)
    # the cache's layers, key/value heads and head size as the evaluate stage's probe reads them;
    # typical sizes when the config does not say
    layers, kv_heads, head_dim = kv_cache_layout(config) or (6 if encoder_decoder else 12, 8, max(1, d_model // 8))
    kv_width = kv_heads * head_dim
    if encoder_decoder:
        values = (d_model * max_source_len                              # encoder output
                  + 2 * layers * kv_width * max_source_len              # cross-attention keys and values
                  + 2 * layers * kv_width * max_new_tokens)             # self-attention cache
    else:
        values = 2 * layers * kv_width * (max_source_len + max_new_tokens)
    return int((values + 2 * vocab) * dtype_bytes)


def memory_rows(config, free_bytes: int, *, max_source_len: int, max_new_tokens: int, dtype_bytes: int = 4) -> int:
    """How many questions fit in MEMORY_SHARE of ``free_bytes`` (at least 1, at most MAX_ROWS_CAP)."""
    per_row = row_bytes(config, max_source_len=max_source_len, max_new_tokens=max_new_tokens,
                        dtype_bytes=dtype_bytes)
    return max(1, min(MAX_ROWS_CAP, int(free_bytes * MEMORY_SHARE) // max(1, per_row)))


def sandbox_rows(timeout: float, workers: int, *, at_least: int = 1) -> int:
    """How many looping programs the sandbox's ``workers`` end within SANDBOX_BUDGET_S (``timeout`` s each)."""
    return max(at_least, int(SANDBOX_BUDGET_S * max(1, workers) / max(timeout, 1e-3)))


def free_memory(device) -> int:
    """Free bytes where the model runs: the GPU's free memory (torch.cuda.mem_get_info), else the
    machine's available memory."""
    import os

    import torch

    device = torch.device(device)
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):  # not POSIX: assume 4 GiB
        return 4 << 30


def batch_rows(config, device, *, free_bytes: int | None = None, max_source_len: int, max_new_tokens: int,
               dtype_bytes: int, timeout: float, workers: int, at_least: int) -> int:
    """Questions per batch: what memory holds and the sandbox can check in time, never below ``at_least``
    (one request's rows must fit one batch)."""
    free = free_memory(device) if free_bytes is None else free_bytes
    rows = min(memory_rows(config, free, max_source_len=max_source_len, max_new_tokens=max_new_tokens,
                           dtype_bytes=dtype_bytes),
               sandbox_rows(timeout, workers))
    return max(at_least, rows)


class _Call:
    """One predict call's requests, waiting to be answered (maybe in another call's batch)."""

    def __init__(self, requests: list[Request]):
        self.requests = requests
        self.rows: list[dict] = []
        self.error: Exception | None = None
        self.done = False


class BatchQueue:
    """Calls waiting to be answered, at most ``max_rows`` questions per batch; ``answer`` maps a list
    of requests to one output row per request."""

    def __init__(self, answer: Callable[[Sequence[Request]], list[dict]], max_rows: int):
        self.answer, self.max_rows = answer, max_rows
        self.busy = threading.Lock()
        self.queue = threading.Lock()
        self.waiting: list[_Call] = []

    def submit(self, requests: list[Request]) -> list[dict]:
        """The rows of ``requests``, answered in this call's batch or in another's; raises what answering raised."""
        call = _Call(requests)
        with self.queue:
            self.waiting.append(call)
        with self.busy:
            while not call.done:
                self._answer_waiting()
        if call.error is not None:
            raise call.error
        return call.rows

    def _answer_waiting(self) -> None:
        """Answer the oldest waiting calls, up to max_rows questions (at least one call), in one batch."""
        limit = self.max_rows
        with self.queue:
            taken, rows = [], 0
            while self.waiting and (not taken or rows + len(self.waiting[0].requests) <= limit):
                taken.append(self.waiting.pop(0))
                rows += len(taken[-1].requests)
        try:
            answers = self.answer([r for call in taken for r in call.requests])
        except Exception as exc:  # noqa: BLE001 - raised in the caller's own thread
            if len(taken) == 1:
                taken[0].error, taken[0].done = exc, True
                return
            # one call's failure must not fail the others it was batched with: answer each alone
            for call in taken:
                try:
                    call.rows = self.answer(call.requests)
                except Exception as alone:  # noqa: BLE001
                    call.error = alone
                call.done = True
            return
        for call in taken:
            call.rows, answers = answers[:len(call.requests)], answers[len(call.requests):]
            call.done = True
