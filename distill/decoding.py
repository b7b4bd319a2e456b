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
``sampling`` (a ``Sampling``: ``evaluate.samples > 1``) draws samples instead, on the same batched path:
each row's next token is drawn by inverse-CDF sampling from the temperature-scaled, nucleus-filtered
distribution with a uniform number that depends only on that row's key and the step (a counter-based
hash, ``uniforms``), not on torch's global generator, so a row's sample is the same whatever the batch
around it; greedy decoding (``sampling=None``) is untouched.
On a GPU, ``evaluate.batch_size: auto`` sizes the batch to the memory (``resolve_eval_batch``: a
probe that decodes a few tokens and adds the rest of the KV cache by arithmetic) and ``static_cache``
lets transformers compile the decoding step; both keep the greedy outputs of one ``generate`` call
per problem (tests/test_decoding.py). ``evaluate.dtype`` (``resolve_eval_dtype``) may cast the
student to bf16 on a GPU; its default keeps the dtype it was saved in. Reads and writes no files.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Iterator, Sequence


STATIC_WIDTH = 64
"""With a static KV cache, inputs are padded to a multiple of this many tokens (see decode_batches)."""


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
                   max_source_len: int = 256, sort: bool = True, static_cache: bool = False,
                   sampling: "Sampling | None" = None) -> Iterator[tuple[list[int], list[str]]]:
    """Yield (indices into ``inputs``, decoded outputs) one batch at a time, batches sorted by input length
    (``sort=False`` keeps the given order; benchmarks/evaluate.py measures what sorting buys).

    Works for both kinds of student (see the module docstring); a causal student's outputs hold only
    its completion. Whether the chat template applies is read from ``model.config.distill_chat_template``
    (set by distill.student.load_student from the student's folder). A batch stops as soon as all its
    rows have written EOS (transformers' greedy search stops when no row is unfinished), so one long
    answer costs only its own batch. ``static_cache``: a KV cache of fixed size, which lets
    transformers compile the decoding step on a GPU (``cache_implementation="static"``); the greedy
    outputs are the same (tests/test_decoding.py). ``sampling``: draw a sample per input instead of the
    greedy output (``Sampling``; its ``keys`` align with ``inputs``).
    """
    import torch

    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    if not inputs:
        return
    if sampling is not None and len(sampling.keys) != len(inputs):
        raise ValueError(f"sampling has {len(sampling.keys)} keys for {len(inputs)} inputs; give one key per input")
    causal = is_causal(model)
    chat = bool(getattr(getattr(model, "config", None), "distill_chat_template", False))
    encoded = encode_prompts(tokenizer, inputs, causal=causal, max_len=max_source_len, chat_template=chat)
    device = next(model.parameters()).device
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    extra = {"pad_token_id": pad_id}
    if causal and tokenizer.eos_token_id is not None:
        extra["eos_token_id"] = tokenizer.eos_token_id
    if static_cache:
        extra["cache_implementation"] = "static"
    model.eval()
    order = length_order([len(ids) for ids in encoded]) if sort else list(range(len(encoded)))
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        width = max(len(encoded[i]) for i in idx)
        if static_cache:
            # a compiled step is specialised to its shapes: pad to a few widths (multiples of 64), or
            # every length-sorted batch would compile anew; the mask hides the extra padding
            width = max(width, min(-(-width // STATIC_WIDTH) * STATIC_WIDTH, max_source_len))
        ids = torch.full((len(idx), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(idx), width), dtype=torch.long)
        for row, i in enumerate(idx):
            n = len(encoded[i])
            # causal: left padding, so the last prompt token of every row sits at the same column
            cols = slice(width - n, width) if causal else slice(0, n)
            ids[row, cols] = torch.tensor(encoded[i], dtype=torch.long)
            mask[row, cols] = 1
        step = dict(extra)
        if sampling is not None:
            step["logits_processor"] = sampling.processor([sampling.keys[i] for i in idx])
        with torch.inference_mode():
            out = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), do_sample=False,
                                 num_beams=1, max_new_tokens=max_new_tokens, **step)
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


# --- sampling (evaluate.samples > 1) ---------------------------------------------------------------

_M32 = 0xFFFFFFFF


def _mul32(x, c: int):
    """(x * c) mod 2**32 for an int64 tensor x in [0, 2**32): in 16-bit halves, so no product leaves int64."""
    return ((((x >> 16) * c) & 0xFFFF) << 16) + (x & 0xFFFF) * c & _M32


def _hash32(x):
    """A bijective 32-bit integer hash (Wellons' "lowbias32"), elementwise on an int64 tensor."""
    x = x ^ (x >> 16)
    x = _mul32(x, 0x7FEB352D)
    x = x ^ (x >> 15)
    x = _mul32(x, 0x846CA68B)
    return x ^ (x >> 16)


def uniforms(keys, step: int):
    """One number in (0, 1) per key for decoding step ``step``: a hash of (key, step) alone, the same on
    every device and in every batch (float64, 32 random bits)."""
    import torch

    keys = torch.as_tensor(keys, dtype=torch.long) & _M32
    bits = _hash32(_hash32(keys) ^ ((step * 0x9E3779B9 + 0x632BE5AB) & _M32))
    return (bits.double() + 0.5) / 2.0 ** 32


def sample_key(seed: int, *parts) -> int:
    """The 32-bit key of one sampled row, from the seed and what the row is (e.g. problem id, form,
    sample index): the same parts give the same samples in every run."""
    digest = hashlib.sha256(json.dumps([seed, *parts]).encode()).digest()
    return int.from_bytes(digest[:4], "big")


@dataclass(frozen=True)
class Sampling:
    """Sampling settings and one key per input row (``sample_key``).

    Each step a row's token is the inverse CDF, at that row's ``uniforms`` number, of the softmax of its
    logits divided by ``temperature`` and restricted to the ``top_p`` nucleus (transformers'
    TopPLogitsWarper): an exact draw from that distribution, made reproducible per row. The chosen token
    is handed to transformers' greedy search as the only finite score, so batching, padding, EOS handling
    and caches are the greedy path's. Limit: logits that differ in the last bits (another batch's
    padding, another device or dtype) can move a draw that falls on a boundary between two tokens.

    Why not transformers' ``do_sample=True``: it draws every row from torch's one global generator, so a
    row's sample depends on the rows beside it and on the batch order, and resuming, sharding or another
    batch size would change the samples. Cost: benchmarks/sampling.py measured 0.99x (vocab 2000) and
    0.89x (vocab 11812) transformers' CPU time for the same rows (tiny-causal, random weights, 1 thread)."""

    temperature: float
    top_p: float
    keys: Sequence[int]

    def processor(self, keys: Sequence[int]):
        from transformers import LogitsProcessorList

        return LogitsProcessorList([_RowSampler(keys, self.temperature, self.top_p)])


class _RowSampler:
    """The logits processor of one generate call (transformers calls it with the ids and the scores of
    each step, after its own processors): see Sampling."""

    def __init__(self, keys: Sequence[int], temperature: float, top_p: float):
        from transformers import TopPLogitsWarper

        if temperature <= 0 or not 0 < top_p <= 1:
            raise ValueError(f"sampling needs temperature > 0 and 0 < top_p <= 1, got {temperature}, {top_p}")
        self.keys, self.temperature, self.step = list(keys), temperature, 0
        self.top_p = TopPLogitsWarper(top_p) if top_p < 1 else None

    def __call__(self, input_ids, scores):
        import torch

        scores = scores.float() / self.temperature
        if self.top_p is not None:
            scores = self.top_p(input_ids, scores)
        cdf = torch.softmax(scores.double(), dim=-1).cumsum(dim=-1)
        u = uniforms(self.keys, self.step).to(cdf.device) * cdf[:, -1]
        self.step += 1
        token = torch.searchsorted(cdf, u[:, None]).clamp(max=scores.shape[-1] - 1)
        return torch.full_like(scores, float("-inf")).scatter_(1, token, 0.0)


# --- evaluate.batch_size: auto ---------------------------------------------------------------------

CPU_EVAL_BATCH = 32
"""``evaluate.batch_size: auto`` on the CPU: the default batch of the evaluate stage before auto."""
MAX_EVAL_BATCH = 256
"""Upper bound of the auto batch: beyond it a batch waits longer for its slowest row than it gains."""


def choose_eval_batch(device_bytes: float, fixed_bytes: float, per_row_bytes: float, *, n_inputs: int | None = None,
                      cap: int = MAX_EVAL_BATCH, headroom: float = 0.9) -> tuple[int, str]:
    """(batch, reason): as many rows as ``headroom`` of ``device_bytes`` holds past ``fixed_bytes``
    (the weights) at ``per_row_bytes`` each (the KV cache and logits of one row at the longest input
    plus max_new_tokens), at most ``cap`` and never more than there are inputs."""
    fits = int((device_bytes * headroom - fixed_bytes) // per_row_bytes) if per_row_bytes > 0 else cap
    batch = max(1, min(fits, cap, n_inputs or cap))
    return batch, (f"auto: {device_bytes / 1024 ** 3:.1f} GiB device x {headroom:.0%}, {fixed_bytes / 1024 ** 3:.1f} "
                   f"GiB fixed, {per_row_bytes / 1024 ** 2:.1f} MiB per row at the longest input and every new "
                   f"token -> room for {max(fits, 0)}, at most {cap}: batch {batch}")


class CudaMemory:
    """The memory counters of one CUDA device, as the probes read them (tests pass others, with the same
    methods, to run the probes on a CPU)."""

    def __init__(self, device):
        self.device = device

    def reset(self) -> None:
        import torch

        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(self.device)

    def peak(self) -> int:
        import torch

        return torch.cuda.max_memory_allocated(self.device)

    def budget(self) -> int:
        """What this process may plan with: the free memory plus what torch holds already (other
        processes' memory is not ours)."""
        import torch

        free, _total = torch.cuda.mem_get_info(self.device)
        return free + torch.cuda.memory_reserved(self.device)


PROBE_TOKENS = 16
"""New tokens the generation probe writes: enough for the prefill and a few decode steps; the KV cache of
the remaining new tokens is added by arithmetic (``kv_cache_bytes_per_token``)."""


def kv_cache_layout(model) -> tuple[int, int, int] | None:
    """(layers, key/value heads, head dim) of the cache that grows with every new token: a T5's decoder
    self-attention (its cross-attention cache is fixed by the input length), a decoder-only model's
    attention (grouped-query: its key/value heads). ``model``: a model or its transformers config.
    None when the config does not say (then the probe decodes every new token, as before; serving's
    batch sizing falls back to typical sizes)."""
    config = getattr(model, "config", model)
    if config is None:
        return None
    if getattr(config, "is_encoder_decoder", False):
        layers = (getattr(config, "num_decoder_layers", None) or getattr(config, "decoder_layers", None)
                  or getattr(config, "num_layers", None))
        heads, head_dim = getattr(config, "num_heads", None), getattr(config, "d_kv", None)
    else:
        layers = getattr(config, "num_hidden_layers", None) or getattr(config, "n_layer", None)
        attention_heads = getattr(config, "num_attention_heads", None) or getattr(config, "n_head", None)
        heads = getattr(config, "num_key_value_heads", None) or attention_heads
        head_dim = getattr(config, "head_dim", None)
        if not head_dim and attention_heads and getattr(config, "hidden_size", None):
            head_dim = config.hidden_size // attention_heads
    if not all(isinstance(v, int) and v > 0 for v in (layers, heads, head_dim)):
        return None
    return layers, heads, head_dim


def kv_cache_bytes_per_token(model) -> int | None:
    """Bytes the growing KV cache takes per row and new token: 2 (keys and values) x layers x key/value
    heads x head dim x bytes of the model's dtype (``kv_cache_layout``); None when unknown."""
    layout = kv_cache_layout(model)
    if layout is None:
        return None
    layers, heads, head_dim = layout
    return 2 * layers * heads * head_dim * next(model.parameters()).element_size()


def probe_generation_memory(model, *, max_new_tokens: int, max_source_len: int, sizes: tuple[int, int] = (1, 4),
                            memory=None, probe_tokens: int = PROBE_TOKENS):
    """(device bytes, fixed bytes, bytes per row) on the model's CUDA device, an upper bound for greedy
    decoding of rows of ``max_source_len`` tokens that write all ``max_new_tokens`` (the worst case of the
    evaluate stage). Measured: greedy decoding of ``sizes`` rows forced to write ``probe_tokens`` new tokens
    (the prefill, the cross-attention or prompt cache, the logits: the slope of the peak memory is the
    per-row cost, its intercept the fixed cost). Added by arithmetic: the KV cache of the remaining
    new tokens per row (``kv_cache_bytes_per_token``), plus one layer's share for the copy a growing
    cache makes of a layer when it appends. A model whose cache layout is unknown decodes all
    ``max_new_tokens`` instead (the old probe: ~2 x 256 decode steps). ``memory``: as in CudaMemory."""
    import torch

    device = next(model.parameters()).device
    memory = memory or CudaMemory(device)
    model.eval()
    per_token, layout = kv_cache_bytes_per_token(model), kv_cache_layout(model)
    steps = max_new_tokens if per_token is None else min(probe_tokens, max_new_tokens)
    eos = getattr(model.config, "eos_token_id", None)
    token = int((eos[0] if isinstance(eos, (list, tuple)) else eos) or 1) + 1  # any ordinary token id
    peaks = []
    for size in sizes:
        ids = torch.full((size, max_source_len), token, dtype=torch.long, device=device)
        memory.reset()
        with torch.inference_mode():
            model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False, num_beams=1,
                           max_new_tokens=steps, min_new_tokens=steps,
                           pad_token_id=getattr(model.config, "pad_token_id", None) or 0)
        peaks.append(memory.peak())
    memory.reset()
    measured = max(peaks[1] - peaks[0], 1) / (sizes[1] - sizes[0])
    remaining = max_new_tokens - steps
    added = remaining * per_token * (1 + 1 / layout[0]) if remaining and per_token else 0.0
    return memory.budget(), peaks[0] - measured * sizes[0], measured + added


def resolve_eval_batch(requested: int | str, model=None, *, max_new_tokens: int = 256, max_source_len: int = 256,
                       n_inputs: int | None = None, probe=None) -> tuple[int, str]:
    """(batch, reason) for ``evaluate.batch_size``: a number as given; ``auto`` on the CPU ``CPU_EVAL_BATCH``,
    on a GPU from ``probe()`` (default ``probe_generation_memory``) through ``choose_eval_batch``."""
    if requested != "auto":
        if isinstance(requested, str) or requested < 1:
            raise ValueError(f"evaluate.batch_size: expected a positive number or auto, got {requested!r}")
        return int(requested), "evaluate.batch_size set in the config"
    on_gpu = model is not None and next(model.parameters()).device.type == "cuda"
    if probe is None and not on_gpu:
        return CPU_EVAL_BATCH, f"auto on the CPU: {CPU_EVAL_BATCH}"
    if probe is None:
        def probe():
            return probe_generation_memory(model, max_new_tokens=max_new_tokens, max_source_len=max_source_len)
    device_bytes, fixed, per_row = probe()
    return choose_eval_batch(device_bytes, fixed, per_row, n_inputs=n_inputs)


# --- evaluate.dtype ----------------------------------------------------------------------------------

FP16_OVERFLOWS = ("t5", "mt5", "umt5", "longt5")
"""model_type of students whose activations overflow fp16's range (T5 and CodeT5: NaN losses under
fp16 autocast, a known trap of T5); bf16 has fp32's range, so they train in bf16 or fp32 and are never
decoded in fp16."""
EVAL_DTYPES = ("auto", "fp32", "bf16", "fp16")


def resolve_eval_dtype(requested: str, model, *, cuda: bool, bf16: bool | None = None) -> tuple[str | None, str]:
    """(torch dtype name to cast the student to, or None to keep it; the reason) for ``evaluate.dtype``.

    ``auto``: the dtype the student was saved in, as transformers loads it (fp32 for a student of the
    train stage, which keeps fp32 master weights under bf16 autocast): today's decoding, unchanged.
    ``fp32``: cast to fp32. ``bf16`` / ``fp16``: cast on a CUDA GPU (half the bytes read per decode step;
    greedy outputs can differ slightly from fp32); on the CPU the student keeps its dtype, as
    train.precision does, and bf16 on a GPU without it (``bf16``: whether it has it; default asks torch)
    keeps the saved dtype too. A T5-family student is never cast to fp16 (it overflows)."""

    if requested not in EVAL_DTYPES:
        raise ValueError(f"evaluate.dtype: unknown {requested!r}; valid: {', '.join(EVAL_DTYPES)}")
    loaded = str(next(model.parameters()).dtype).removeprefix("torch.")
    if requested == "auto":
        return None, f"auto: {loaded}, as the student was saved"
    if requested in ("bf16", "fp16") and not cuda:
        return None, f"{requested} applies on a CUDA GPU only; the CPU keeps {loaded}"
    if requested == "bf16":
        import torch

        if not (torch.cuda.is_bf16_supported() if bf16 is None else bf16):
            return None, f"bf16: this GPU has no bf16; the student keeps {loaded}"
    model_type = getattr(getattr(model, "config", None), "model_type", "")
    if requested == "fp16" and model_type in FP16_OVERFLOWS:
        raise ValueError(f"evaluate.dtype=fp16: a {model_type} student overflows fp16; use bf16 or fp32")
    target = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}[requested]
    if target == loaded:
        return None, f"{requested}: the student is already {loaded}"
    return target, f"{requested}: cast from {loaded}"


def cast_for_evaluation(model, requested: str, *, cuda: bool, bf16: bool | None = None):
    """(model, dtype name it decodes in, whether it was cast, reason): ``resolve_eval_dtype`` applied."""
    import torch

    target, reason = resolve_eval_dtype(requested, model, cuda=cuda, bf16=bf16)
    if target is not None:
        model = model.to(getattr(torch, target))
    return model, str(next(model.parameters()).dtype).removeprefix("torch."), target is not None, reason
