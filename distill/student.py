"""Students: a seq2seq or decoder-only (causal) model and its tokenizer, built from a config or loaded.

- ``tiny``: a T5-shaped seq2seq model built from ``T5Config`` (d_model 128, 2+2 layers by default)
  with a byte-level BPE tokenizer trained here on the training texts, so nothing is downloaded.
  Byte-level BPE gives sequences several times shorter than raw bytes (STYLE.md), and being
  byte-level it can still spell any character the student meets at test time.
- ``tiny-causal``: a Llama-shaped decoder-only model built from ``LlamaConfig`` with the same kind
  of locally trained tokenizer (without the appended ``</s>``: a causal prompt must not end in EOS;
  the train stage appends EOS to every target itself).
- anything else: a hub name (``Salesforce/codet5-small``, ``Qwen/Qwen2.5-0.5B-Instruct``) or a local
  folder. The kind is read from the model's config (``is_encoder_decoder``), never from a flag:
  ``AutoModelForSeq2SeqLM`` for encoder-decoders, ``AutoModelForCausalLM`` for the rest.

Every student folder is written with ``save_pretrained`` (model and tokenizer in one folder) plus
``student.json`` = {"kind": "seq2seq"|"causal", "architecture", "chat_template": bool,
"adapter": bool, "base_model"}; a LoRA student saved unmerged holds the peft adapter
(``adapter_config.json``) and, for a base built here (tiny-*), the base model under ``base/``.
``load_student(path)`` loads any of them.

``resolve_student(spec, ...)`` finds the student a user names for evaluation: a folder
(``students/<mix>/`` with ``model/`` and ``card.json``, or the model folder itself), an MLflow model
URI (``models:/distill-student/3``, ``models:/distill-student@champion``, ``runs:/<id>/model``) or a
training run id; MLflow artifacts are downloaded into a temporary folder and searched for a
``card.json`` beside a ``model/`` folder.

One module over 450 lines on purpose: building, saving, loading and finding a student share one
folder contract (``student.json``, ``card.json``, ``model/``), which lives only here.
"""
from __future__ import annotations

import json
import re
import tempfile
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping

from distill.decoding import is_causal
from distill.files import DataError, read_json
from distill.layout import RunFolder

TINY = "tiny"
TINY_CAUSAL = "tiny-causal"
TINY_STUDENTS = (TINY, TINY_CAUSAL)
SPECIAL_TOKENS = ("<pad>", "</s>", "<unk>")
"""T5's conventions: pad id 0 (also the decoder start), eos id 1, unk id 2."""
STUDENT_FILE = "student.json"
"""Beside config.json in a student folder: kind, architecture, chat template, adapter (see module doc)."""


def train_tokenizer(texts: Iterable[str], vocab_size: int = 2000, append_eos: bool = True):
    """A byte-level BPE tokenizer trained on ``texts``; appends ``</s>`` like T5's tokenizer unless
    ``append_eos`` is False (causal students: the prompt continues into the completion).

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
    if append_eos:
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


def build_tiny_causal(texts: Iterable[str], *, d_model: int = 128, layers: int = 2, heads: int = 4,
                      d_ff: int = 512, vocab: int = 2000, dropout: float = 0.1, max_positions: int = 512,
                      seed: int = 0):
    """(model, tokenizer): a Llama-shaped decoder built from a config, its tokenizer trained on ``texts``.

    ``layers`` is the tiny T5's layers per stack; the decoder gets twice as many, so the two tiny
    students have about the same depth and parameter count.
    """
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = train_tokenizer(texts, vocab, append_eos=False)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=d_model, intermediate_size=d_ff, num_hidden_layers=2 * layers,
        num_attention_heads=heads, num_key_value_heads=heads, max_position_embeddings=max_positions,
        attention_dropout=dropout, tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id, bos_token_id=None,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    tokenizer.padding_side = "left"  # generation pads on the left (distill/decoding.py)
    return model, tokenizer


def student_kind(model) -> str:
    """seq2seq or causal, from the model's config (``is_encoder_decoder``)."""
    return "causal" if is_causal(model) else "seq2seq"


def read_student_info(path: str | Path) -> dict:
    """student.json of a folder, {} for a hub name or a folder written before it existed."""
    file = Path(path) / STUDENT_FILE
    if file.is_file():
        return read_json(file)
    return {}


def _load_error(path, exc):
    from distill.errors import ConfigError

    return ConfigError(
        f"cannot load student {str(path)!r}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}. "
        "Give a folder written by save_pretrained, a hub name with internet access (unset HF_HUB_OFFLINE), "
        f"or train.student={TINY} / {TINY_CAUSAL} to build one from a config.")


def resolve_device(device: str) -> str:
    """``auto``: the first GPU when there is one, else the CPU; any other name (cpu, cuda, cuda:1) as given."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def hold_hub_kernels(allowed: bool = False) -> None:
    """Keep transformers from fetching compute kernels from the hub unless ``allowed`` (train.hub_kernels).

    transformers (with its ``kernels`` dependency installed) swaps layers such as Qwen's rotary
    embedding for kernels it downloads from the hub (kernels-community/rotary) on CUDA, at load or at
    the first switch between training and evaluation: offline that is an error, online it runs code
    that no config of ours names or pins. transformers reads ``USE_HUB_KERNELS`` at each of those
    points (integrations/hub_kernels.py), so setting it here covers loading, kernelize and the lazy
    per-function kernels. Allowed: a user's own ``USE_HUB_KERNELS=NO`` still wins.
    """
    import os

    if not allowed:
        os.environ["USE_HUB_KERNELS"] = "NO"


def load_student(path: str | Path, *, local_files_only: bool = False, hub_kernels: bool = False):
    """(model, tokenizer) from a hub name or a folder written by save_pretrained (any kind, or a LoRA adapter).

    Hub kernels stay off unless ``hub_kernels`` (see ``hold_hub_kernels``). Raises ConfigError (a
    ValueError) naming the path and the fix when it cannot be loaded (e.g. a hub name offline).
    """
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

    hold_hub_kernels(hub_kernels)
    info = read_student_info(path) if Path(str(path)).is_dir() else {}
    kwargs = {"local_files_only": True} if local_files_only else {}
    model_kwargs = {**kwargs, "use_kernels": hub_kernels}
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path), **kwargs)
        adapter = Path(str(path)) / "adapter_config.json"
        if adapter.is_file():
            from peft import PeftModel

            local_base = Path(str(path)) / "base"
            base_name = str(local_base) if local_base.is_dir() else read_json(adapter)["base_model_name_or_path"]
            base_config = AutoConfig.from_pretrained(base_name, **kwargs)
            auto = AutoModelForSeq2SeqLM if base_config.is_encoder_decoder else AutoModelForCausalLM
            model = PeftModel.from_pretrained(auto.from_pretrained(base_name, **model_kwargs), str(path), **kwargs)
        else:
            config = AutoConfig.from_pretrained(str(path), **kwargs)
            auto = AutoModelForSeq2SeqLM if config.is_encoder_decoder else AutoModelForCausalLM
            model = auto.from_pretrained(str(path), **model_kwargs)
    except (OSError, ValueError, KeyError) as exc:
        raise _load_error(path, exc) from exc
    prepare_tokenizer(model, tokenizer)
    model.config.distill_chat_template = bool(info.get("chat_template", False))
    return model, tokenizer


def prepare_tokenizer(model, tokenizer) -> None:
    """Fill what a student needs and a hub checkpoint may lack: a pad token (the EOS for many causal
    LMs, harmless: padded positions are masked and labelled -100), left padding for causal
    generation, T5's decoder start."""
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    if student_kind(model) == "causal":
        tokenizer.padding_side = "left"
        if getattr(model.config, "pad_token_id", None) is None:
            model.config.pad_token_id = tokenizer.pad_token_id
    elif model.config.decoder_start_token_id is None:
        model.config.decoder_start_token_id = tokenizer.pad_token_id


def build_student(name: str, texts: Iterable[str] = (), *, train_cfg=None, seed: int = 0):
    """(model, tokenizer) for ``train.student``: ``tiny``/``tiny-causal`` built from train_cfg's tiny_* fields, else loaded."""
    hub_kernels = bool(getattr(train_cfg, "hub_kernels", False))
    hold_hub_kernels(hub_kernels)
    if name in TINY_STUDENTS:
        t = train_cfg
        shape = {} if t is None else dict(d_model=t.tiny_d_model, layers=t.tiny_layers, heads=t.tiny_heads,
                                          d_ff=t.tiny_d_ff, vocab=t.tiny_vocab, dropout=t.dropout)
        if name == TINY:
            return build_tiny(texts, seed=seed, **shape)
        if t is not None:
            # room for the evaluate stage's 256 new tokens (the paper's decoding) past the longest prompt
            shape["max_positions"] = t.max_source_len + max(t.max_target_len, 256)
        model, tokenizer = build_tiny_causal(texts, seed=seed, **shape)
        model.config.distill_chat_template = False
        return model, tokenizer
    model, tokenizer = load_student(name, hub_kernels=hub_kernels)
    model.config.distill_chat_template = bool(getattr(train_cfg, "chat_template", False))
    return model, tokenizer


def is_causal_student(name: str) -> bool:
    """Whether ``train.student`` is a decoder-only model, without building or loading its weights:
    tiny-causal yes, tiny no, else its config's ``is_encoder_decoder`` (a folder, or the hub / HF cache).
    Raises ConfigError (a ValueError) when the config cannot be read."""
    if name in TINY_STUDENTS:
        return name == TINY_CAUSAL
    from transformers import AutoConfig

    try:
        return not AutoConfig.from_pretrained(name).is_encoder_decoder
    except (OSError, ValueError, KeyError) as exc:
        raise _load_error(name, exc) from exc


def count_parameters(model) -> int:
    return sum(p.numel() for p in model.parameters())


def save_student(model, tokenizer, path: str | Path, info: dict | None = None) -> Path:
    """save_pretrained of model and tokenizer into one folder, plus student.json (``info`` overrides
    what is read from the model). Not atomic; callers write to a temp dir."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    # a peft adapter: the embeddings are never resized here, so peft need not ask the hub whether the
    # base model's vocabulary differs (it would, for a hub base, with HF_HUB_OFFLINE unset)
    extra = {"save_embedding_layers": False} if hasattr(model, "peft_config") else {}
    model.save_pretrained(path, **extra)
    tokenizer.save_pretrained(path)
    config = model.config
    described = {"kind": student_kind(model), "architecture": (getattr(config, "architectures", None) or
                                                              [type(model).__name__])[0],
                 "chat_template": bool(getattr(config, "distill_chat_template", False)),
                 "adapter": (path / "adapter_config.json").is_file(), "base_model": None,
                 **(info or {})}
    (path / STUDENT_FILE).write_text(json.dumps(described, indent=2, sort_keys=True) + "\n")
    return path


# --- finding a student: a folder, an MLflow model URI or a training run id -------------------------

RUN_ID_RE = re.compile(r"^[0-9a-f]{32}$")
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")


@dataclass(frozen=True)
class StudentFolder:
    """A student model folder found on disk (maybe just downloaded) and what its card says."""

    model_dir: Path
    card: dict
    source: str
    """What the user gave (a path, a models:/ or runs:/ URI, a run id)."""
    run_id: str | None = None
    """The MLflow run the artifacts came from, when known from the source."""
    chat_template: bool | None = None
    """Whether to wrap inputs in the chat template, when the card decides it (a student whose weights
    are named by reference, ``weights``; its folder has no student.json of ours); None: student.json."""


def stale_form(card: Mapping, forms: Iterable[str] | None = None) -> tuple[str, object, int] | None:
    """The first form on a student's card (of ``forms``; default every form on it) trained on another
    version than this code's: (form, the card's version, this code's version); None when all match, a
    card that records no version (an older one) matching. Every reader of a student (evaluate, rl,
    serving) refuses such a student, each with its own fix: it learned a prompt and output format
    that this code no longer asks for or parses (STYLE.md: forms are versioned and travel with the model)."""
    from distill.thoughts import get_form

    card_forms = card.get("forms") or {}
    for name in card_forms if forms is None else forms:
        trained, current = (card_forms.get(name) or {}).get("version"), get_form(name).version
        if trained not in (None, current):
            return name, trained, current
    return None


def resolve_student(spec: str | None, run_dir: Path, mix: str, tracking_uri: str, stack: ExitStack) -> StudentFolder:
    """The student folder for ``spec``; MLflow artifacts are downloaded into a temporary folder
    that lives as long as ``stack``."""
    if not spec:
        default = RunFolder(run_dir).student(mix)
        if not default.exists():
            raise DataError(f"{default}: no trained student for mix {mix!r}. Run `distill train --mix {mix}` first, "
                            "or pass --student PATH|RUN_ID|models:/NAME/VERSION")
        return _local(default, str(default))
    path = Path(spec)
    if path.exists():
        return _local(path, spec)
    if "://" in spec or spec.startswith(("models:/", "runs:/")) or RUN_ID_RE.match(spec):
        return _from_mlflow(spec, tracking_uri, stack)
    raise DataError(f"student {spec!r} is neither an existing folder, an MLflow URI (models:/NAME/VERSION, "
                    "models:/NAME@ALIAS, runs:/RUN_ID/model) nor a 32-character run id")


def find_student_dir(root: Path) -> tuple[Path, Path | None] | None:
    """(model folder, card.json or None) inside ``root``, or None.

    Accepts ``root/model/`` + ``root/card.json`` (the train stage's layout), a model folder with its
    card inside or one level up, or such a layout anywhere below ``root`` (a logged MLflow model).
    """
    if (root / "model" / "config.json").exists() and (root / "card.json").exists():
        return root / "model", root / "card.json"
    if (root / "config.json").exists():
        card = next((c for c in (root / "card.json", root.parent / "card.json") if c.exists()), None)
        return root, card
    for card in sorted(root.rglob("card.json"), key=lambda p: (len(p.parts), str(p))):
        if (card.parent / "model" / "config.json").exists():
            return card.parent / "model", card
    for config in sorted(root.rglob("config.json"), key=lambda p: (len(p.parts), str(p))):
        if any(config.parent.glob(f"*{s}") for s in WEIGHT_SUFFIXES):
            card = config.parent / "card.json"
            return config.parent, card if card.exists() else None
    return None


def referenced_weights(source: str) -> Path:
    """The local folder of weights a card names by reference (an untrained base student:
    distill.stages.train.base_student): the folder itself, or the hub model's snapshot in the Hugging
    Face cache (downloaded with internet; offline, HF_HUB_OFFLINE=1, only what the cache holds)."""
    if Path(source).is_dir():
        return Path(source).resolve()
    from huggingface_hub import snapshot_download

    try:
        # what from_pretrained reads: configs, tokenizer files and safetensors weights, not every format
        return Path(snapshot_download(source, allow_patterns=["*.json", "*.safetensors", "*.txt", "*.model",
                                                               "*.tiktoken"]))
    except Exception as exc:  # offline and not cached, or no such repository: say which and how to fix it
        raise _load_error(source, exc) from None


def _by_reference(path: Path, source: str, run_id: str | None) -> StudentFolder | None:
    """A student folder holding only a card whose ``weights`` name them elsewhere (a hub model or a
    folder, as it comes), or None when ``path`` is not one."""
    card_path = path / "card.json"
    if not card_path.is_file():
        return None
    card = read_json(card_path, "the student's card cannot be read: rewrite it (distill evaluate --untrained)")
    weights = card.get("weights") or {}
    if not weights.get("source") or weights.get("folder") == "model/":
        return None
    return StudentFolder(referenced_weights(weights["source"]), card, source, run_id,
                         chat_template=bool(card.get("chat_template", False)))


def _local(path: Path, source: str, run_id: str | None = None) -> StudentFolder:
    found = find_student_dir(path)
    if found is None and path.is_dir():
        referenced = _by_reference(path, source, run_id)
        if referenced is not None:
            return referenced
    if found is None:
        raise DataError(f"{path}: no student found (expected model/ with config.json and card.json beside it, "
                        "as the train stage writes under runs/<preset>/students/<mix>/)")
    model_dir, card_path = found
    card: dict = {}
    if card_path is not None:
        card = read_json(card_path, "the student's card cannot be read: retrain or fix the file")
    return StudentFolder(model_dir, card, source, run_id)


def _from_mlflow(spec: str, tracking_uri: str, stack: ExitStack) -> StudentFolder:
    # downloading artifacts is not logging, so this reads mlflow directly (tracking.py only logs)
    import mlflow

    mlflow.set_tracking_uri(tracking_uri)
    tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="distill-student-")))
    run_id = None
    if RUN_ID_RE.match(spec):
        run_id = spec
        uris = [f"runs:/{spec}/model", f"runs:/{spec}/student", f"runs:/{spec}/"]
    else:
        uris = [spec]
        m = re.match(r"^runs:/([0-9a-f]{32})", spec)
        run_id = m.group(1) if m else _model_version_run(mlflow, spec)
    errors = []
    for uri in uris:
        try:
            local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(tmp / str(len(errors)))))
        except Exception as exc:  # MlflowException, missing run or artifact: try the next layout, then report all
            errors.append(f"{uri}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}")
            continue
        if find_student_dir(local) is not None:
            return _local(local, spec, run_id)
        errors.append(f"{uri}: downloaded, but holds no model folder with card.json")
    raise DataError(f"cannot get student {spec!r} from {tracking_uri}: " + "; ".join(errors)
                    + ". Check the id/URI with `mlflow ui`, or pass a local folder")


def _model_version_run(mlflow, spec: str) -> str | None:
    """The run a model came from (models:/NAME/VERSION, models:/NAME@ALIAS, or a logged model
    models:/m-<id>), if the store knows it."""
    client = mlflow.MlflowClient()
    logged = re.match(r"^models:/(m-[0-9a-f]+)$", spec)
    if logged:
        try:
            return client.get_logged_model(logged.group(1)).source_run_id or None
        except Exception:  # an unknown id: the download below reports it
            return None
    m = re.match(r"^models:/([^/@]+)(?:/(\d+)|@(.+))$", spec)
    if not m:
        return None
    try:
        version = (client.get_model_version(m.group(1), m.group(2)) if m.group(2)
                   else client.get_model_version_by_alias(m.group(1), m.group(3)))
    except Exception:  # unknown name/version/alias: the download below reports it with the fix
        return None
    return version.run_id or None
