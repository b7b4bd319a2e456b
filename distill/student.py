"""Students: a seq2seq model and its tokenizer, built from a config or loaded by name.

- ``tiny``: a T5-shaped model built from ``T5Config`` (d_model 128, 2+2 layers by default) with a
  byte-level BPE tokenizer trained here on the training texts, so nothing is downloaded.
  Byte-level BPE gives sequences several times shorter than raw bytes (STYLE.md), and being
  byte-level it can still spell any character the student meets at test time.
- anything else: a hub name (``Salesforce/codet5-small``) or a local folder, loaded with
  ``AutoModelForSeq2SeqLM`` and ``AutoTokenizer``.

Both kinds are saved with ``save_pretrained`` (model and tokenizer in one folder), so every student,
tiny or not, loads back with ``load_student(path)`` or the two Auto classes.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable

TINY = "tiny"
SPECIAL_TOKENS = ("<pad>", "</s>", "<unk>")
"""T5's conventions: pad id 0 (also the decoder start), eos id 1, unk id 2."""


def train_tokenizer(texts: Iterable[str], vocab_size: int = 2000):
    """A byte-level BPE tokenizer trained on ``texts``; appends ``</s>`` like T5's tokenizer.

    Returns a transformers fast tokenizer (saved as tokenizer.json, loads with AutoTokenizer).
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE(unk_token="<unk>"))
    # add_prefix_space=False keeps "Question:" at the start of an input one token sequence,
    # identical to the same word in the middle of a line after a newline
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    bpe.train_from_iterator(list(texts), trainer=trainer)
    eos_id = bpe.token_to_id("</s>")
    bpe.post_processor = processors.TemplateProcessing(single="$A </s>", pair="$A </s> $B </s>",
                                                       special_tokens=[("</s>", eos_id)])
    return PreTrainedTokenizerFast(tokenizer_object=bpe, pad_token="<pad>", eos_token="</s>", unk_token="<unk>",
                                   clean_up_tokenization_spaces=False)


def build_tiny(texts: Iterable[str], *, d_model: int = 128, layers: int = 2, heads: int = 4, d_ff: int = 512,
               vocab: int = 2000, dropout: float = 0.1, seed: int = 0):
    """(model, tokenizer): a T5 built from a config, its tokenizer trained on ``texts``."""
    import torch
    from transformers import T5ForConditionalGeneration

    tokenizer = train_tokenizer(texts, vocab)
    # len(tokenizer), not vocab_size: the latter undercounts added special ids (STYLE.md)
    config = tiny_config(len(tokenizer), d_model=d_model, layers=layers, heads=heads, d_ff=d_ff, dropout=dropout,
                         pad_id=tokenizer.pad_token_id, eos_id=tokenizer.eos_token_id)
    torch.manual_seed(seed)
    return T5ForConditionalGeneration(config), tokenizer


def tiny_config(vocab_size: int, *, d_model: int = 128, layers: int = 2, heads: int = 4, d_ff: int = 512,
                dropout: float = 0.1, pad_id: int = 0, eos_id: int = 1):
    """The T5Config of a tiny student (SPECIAL_TOKENS give pad 0 and eos 1)."""
    from transformers import T5Config

    return T5Config(
        vocab_size=vocab_size, d_model=d_model, d_kv=d_model // heads, d_ff=d_ff,
        num_layers=layers, num_decoder_layers=layers, num_heads=heads, dropout_rate=dropout,
        pad_token_id=pad_id, eos_token_id=eos_id,
        # a T5 built from a config has no decoder start; T5 uses the pad id (STYLE.md)
        decoder_start_token_id=pad_id,
    )


def tiny_parameters(train_cfg) -> int:
    """Parameters of the tiny student that ``train_cfg`` (a TrainConfig) builds, without training a
    tokenizer: the BPE vocabulary fills up to ``tiny_vocab`` (special tokens included) on the GSM8K
    training texts, so the model's vocabulary is ``tiny_vocab``. The README and mlprojects/tiny.yaml
    quote this number (tests/test_student.py checks that they do)."""
    import torch
    from transformers import T5ForConditionalGeneration

    config = tiny_config(train_cfg.tiny_vocab, d_model=train_cfg.tiny_d_model, layers=train_cfg.tiny_layers,
                         heads=train_cfg.tiny_heads, d_ff=train_cfg.tiny_d_ff)
    with torch.device("meta"):  # shapes only: no memory, no initialisation
        return count_parameters(T5ForConditionalGeneration(config))


def load_student(path: str | Path):
    """(model, tokenizer) from a hub name or a folder written by save_pretrained.

    Raises ConfigError (a ValueError) naming the path and the fix when it cannot be loaded (e.g. a hub name offline).
    """
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path))
        model = AutoModelForSeq2SeqLM.from_pretrained(str(path))
    except (OSError, ValueError) as exc:
        from distill.config import ConfigError

        raise ConfigError(
            f"cannot load student {str(path)!r}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}. "
            "Give a folder written by save_pretrained, a hub name with internet access (unset HF_HUB_OFFLINE), "
            f"or train.student={TINY} to build one from a config."
        ) from exc
    if model.config.decoder_start_token_id is None:
        model.config.decoder_start_token_id = tokenizer.pad_token_id
    return model, tokenizer


def build_student(name: str, texts: Iterable[str] = (), *, train_cfg=None, seed: int = 0):
    """(model, tokenizer) for ``train.student``: ``tiny`` built from train_cfg's tiny_* fields, else loaded."""
    if name == TINY:
        t = train_cfg
        shape = {} if t is None else dict(d_model=t.tiny_d_model, layers=t.tiny_layers, heads=t.tiny_heads,
                                          d_ff=t.tiny_d_ff, vocab=t.tiny_vocab, dropout=t.dropout)
        return build_tiny(texts, seed=seed, **shape)
    return load_student(name)


def count_parameters(model) -> int:
    return sum(p.numel() for p in model.parameters())


def save_student(model, tokenizer, path: str | Path) -> Path:
    """save_pretrained of model and tokenizer into one folder (not atomic; callers write to a temp dir)."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path
