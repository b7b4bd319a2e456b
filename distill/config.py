"""Typed configuration: one frozen dataclass per stage, YAML presets, dotted overrides.

A preset is a named experiment in ``mlprojects/<name>.yaml`` whose keys mirror the
dataclasses below (``train.lr: 5e-4``). Overrides use the same dotted names
(``train.epochs=2``). An unknown key or a value of the wrong type stops with an error
that names the key, so a typo never silently falls back to a default; a number outside its
range (``RANGES``: every numeric setting has one) stops the same way, before any stage starts.
Every check of a section lives here (``check``: types, ranges, choices, the rules between keys)
and a config with several problems names them all in one error. What only a loaded model can
tell (a tokenizer without EOS, fp16 on a T5 GPU, LoRA target names) is checked where it is loaded.

Stages read every setting from the Config they are given: the mix from ``mix.mix``, the student
from ``train.student``; a CLI flag is only a short way to write an override.

It stays one module, long as it is, because a setting is added in one place: its field and docstring,
its range (RANGES) and its rules (``section_problems``) read side by side.

Reads the preset's YAML file and ``DISTILL_DATA_DIR`` (the default of ``data.data_dir`` above the
preset's, below explicit overrides such as ``--data-dir``); writes nothing (stages log the
flattened config as MLflow params).
"""
from __future__ import annotations

import dataclasses
import math
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

import yaml

from distill.errors import ConfigError  # also distill.config.ConfigError, as before
from distill.thoughts import form_names

PRESET_DIR = Path(__file__).resolve().parent.parent / "mlprojects"
DATA_DIR_ENV = "DISTILL_DATA_DIR"


@dataclass(frozen=True)
class DataConfig:
    """Where the benchmark files live and which sets a run uses."""

    data_dir: str = "data"
    """Folder with gsm8k/, svamp/, asdiv/, multiarith/ (see README "Data"). DISTILL_DATA_DIR, when set,
    replaces the preset's value; an override (``--data-dir``, ``--set data.data_dir=``) replaces both."""
    train_set: str = "gsm8k"
    test_sets: tuple[str, ...] = ("gsm8k", "asdiv", "svamp", "multiarith")
    """The benchmarks a run reports on: the mix stage checks each for overlap with the training
    problems and the evaluate stage scores each (``evaluate --test-sets`` narrows one evaluation)."""
    limit_train: int | None = None
    """Use only the first N training problems (smoke runs); None means all."""
    hub: bool = True
    """Fall back to the Hugging Face hub when a local file is missing (needs internet)."""


@dataclass(frozen=True)
class TeacherConfig:
    """Which teacher writes the reasoning, and how it is called and paid for."""

    name: str = "gold"
    """gold (derived from GSM8K annotations, offline), replay (from a JSONL file), openai (any compatible API)."""
    model: str = "gpt-3.5-turbo"
    """The paper's teacher; any model name the endpoint serves."""
    base_url: str | tuple[str, ...] | None = None
    """OpenAI-compatible endpoint (vLLM, Ollama, llama.cpp: http://host:port/v1); None means OpenAI.
    A list of endpoints spreads shards over them: `generate --shard i/n` uses base_url[i % len]
    (an unsharded run the first), e.g. --set 'teacher.base_url=[http://a:8000/v1,http://b:8000/v1]'."""
    api_key_env: str = "OPENAI_API_KEY"
    """Name of the environment variable that holds the key; the key itself is never stored."""
    temperature: float = 0.0
    """METHOD.md: 0 for one sample per question; higher with n > 1 to grow the data."""
    n: int = 1
    """Samples per question (one request asks for all of them)."""
    max_tokens: int = 512
    concurrency: int = 8
    """Requests in flight at once."""
    timeout: float = 60.0
    """Seconds before a request counts as failed and is retried."""
    max_retries: int = 6
    """Retries of a request after 429, 5xx, a timeout or a connection error; then it is left for a rerun."""
    replay_file: str | None = None
    """JSONL for the replay teacher: an earlier samples.jsonl or completions.jsonl."""
    store_dir: str = ".cache/completions"
    """Completion store shared by every run, so a repeated request costs nothing."""
    budget: float | None = None
    """Stop cleanly before spending more than this (currency of `prices`)."""
    prices: dict = field(default_factory=dict)
    """Price per million tokens by model: {model: {input: 0.5, output: 1.5}}."""
    backoff_base: float = 1.0
    """Seconds of the first retry wait (doubled per attempt, with jitter) when no Retry-After is sent."""
    backoff_cap: float = 60.0
    """Longest retry wait in seconds (without Retry-After)."""


@dataclass(frozen=True)
class GenerateConfig:
    """Which forms the teacher writes for every training problem (samples.jsonl)."""

    forms: tuple[str, ...] = field(default_factory=form_names)
    """Every registered form (distill.thoughts.FORMS) unless a preset names some."""
    batch_poll: float = 10.0
    """Seconds between status checks in `generate --batch collect`."""
    batch_wait: float = 0.0
    """How long `--batch collect` keeps polling for unfinished batches (0: check once)."""


@dataclass(frozen=True)
class VerifyConfig:
    """How the forms' verifiers read teacher and student output (distill/thoughts/, `distill verify`)."""

    strict: bool = False
    """Switch off the named EoT repair rules (see distill/thoughts/eot.py)."""
    timeout: float = 5.0
    """Seconds per program or equation system."""
    workers: int = 0
    """Programs or systems the sandbox runs side by side (forked children per worker); 0 = auto: one
    per CPU, at most 4 (distill/sandbox/, ``configure``)."""


@dataclass(frozen=True)
class MixConfig:
    """How verified samples become a training set (mix/<mix>/train.jsonl, val.jsonl)."""

    mix: str = "etd"
    """cot, pot, eot, etd (all three) or forms joined by '+' (cot+eot)."""
    val_fraction: float = 0.05
    """Share of training *questions* (all their forms) held out for validation, never test questions."""
    decontaminate: bool = True
    """Remove training questions that overlap a test set (distill.overlap, n-gram overlap)."""
    overlap_n: int = 8
    """n of the word n-grams that count as overlap."""
    seed: int = 0


@dataclass(frozen=True)
class TrainConfig:
    student: str = "tiny"
    """`tiny` (a T5 built from a config, local tokenizer), `tiny-causal` (a Llama-shaped decoder built
    the same way), or a hub name / local folder of a seq2seq model (Salesforce/codet5-small) or a
    causal LM (Qwen/Qwen2.5-0.5B-Instruct); the kind is read from the model's config."""
    chat_template: bool = False
    """Causal students: wrap each input in the tokenizer's chat template (instruct models)."""
    # Paper: lr 5e-4, 10 epochs, 256 tokens in and out. The rest are our choices.
    lr: float = 5e-4
    epochs: int = 10
    max_source_len: int = 256
    max_target_len: int = 256
    batch_size: int | str = 16
    """Examples per micro-batch on each process; the optimizer sees batch_size * grad_accum * processes.
    ``auto``: on a GPU the largest micro-batch that fits its memory at the data's longest sequences
    (measured by a short probe), with grad_accum chosen to keep ``effective_batch_size``; on the CPU
    16 (distill.training.resolve_batch). An explicit number wins."""
    grad_accum: int = 1
    """Micro-batches per optimizer step; with ``batch_size: auto`` it is chosen, and this is ignored."""
    effective_batch_size: int = 32
    """With ``batch_size: auto`` only: examples per optimizer step, across processes (the paper: 32)."""
    hub_kernels: bool = False
    """Let transformers fetch compute kernels from the hub (its ``kernels`` integration, e.g.
    kernels-community/rotary on CUDA) when training and evaluating. Off: no stage downloads code that
    no config names (distill.student.hold_hub_kernels)."""
    optimizer: str = "adamw"
    """Our choice (the paper does not say): torch AdamW, betas (0.9, 0.999), no decay on biases and norms."""
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0
    """Clip the global gradient norm to this; 0 switches clipping off."""
    warmup_ratio: float = 0.03
    scheduler: str = "linear"
    """linear, cosine or constant (after warm-up), as in transformers.get_scheduler."""
    precision: str = "auto"
    """auto: bf16 on GPUs that have it, fp16 on older GPUs, fp32 on CPU (bf16 autocast is slower on CPU)."""
    group_by_length: bool = True
    """Batch examples of similar length together (shuffled in windows) so padding stays small."""
    max_steps: int | None = None
    """Stop after this many optimizer steps (a CPU budget); None trains all epochs."""
    max_minutes: float | None = None
    """Stop cleanly after this many minutes of training (a CPU budget); None means no limit."""
    checkpoint_minutes: float | None = 15.0
    """Also write a checkpoint whenever this many minutes passed since the last one (besides every
    epoch end), so a kill loses at most these minutes of training; null: epoch ends only. 15 minutes
    costs a GPU preset one save of weights and optimizer state (seconds) per quarter hour, against up
    to an epoch lost (31 minutes for CodeT5-large at the paper's preset on an H200)."""
    seed: int = 42
    log_every: int = 1
    """Log train/loss (mean over the window) every N optimizer steps."""
    val_generate_limit: int = 64
    """Validation problems decoded per epoch for generation accuracy."""
    dropout: float = 0.1
    """Dropout of the tiny student (hub students keep their own)."""
    threads: int = 0
    """torch CPU threads (0: torch's default). 1 suits tiny students on a small or busy CPU."""
    lora_r: int = 0
    """LoRA rank through peft; 0 trains every weight (full fine-tuning)."""
    lora_alpha: int = 16
    """LoRA scaling numerator (the update is scaled by lora_alpha / lora_r)."""
    lora_dropout: float = 0.05
    lora_targets: tuple[str, ...] = ()
    """Module names LoRA wraps (q_proj,v_proj); empty means every linear layer but the output head."""
    lora_merge: bool = True
    """Save the LoRA student merged into its base (a plain model); false saves the adapter only,
    with its base model named in the card (a base built here is saved beside it, under base/)."""
    # tiny students' shape (tiny-causal: a decoder of 2 x tiny_layers layers)
    tiny_d_model: int = 128
    tiny_layers: int = 2
    tiny_heads: int = 4
    tiny_d_ff: int = 512
    tiny_vocab: int = 2000


@dataclass(frozen=True)
class RLConfig:
    """Reinforcement learning after SFT (`distill rl`): TRL's GRPOTrainer with the forms' verifiers as
    the reward (distill/rewards.py), writing ``students/<mix>-grpo/``."""

    start: str = ""
    """Where the policy starts: empty = the trained student of the mix (``students/<mix>/``, its card
    gives forms and chat template); else a hub name (Qwen/Qwen2.5-0.5B-Instruct) or a local model
    folder (then ``train.chat_template`` says whether prompts use its chat template)."""
    limit: int | None = None
    """Use only the first N training problems of the mix; each problem gives one prompt per form of the
    mix (every form equally often, whichever forms the teacher got right); None: all."""
    num_generations: int = 8
    """Completions sampled per prompt (GRPO's group; the advantage is the reward minus the group mean)."""
    temperature: float = 1.0
    """Sampling temperature of the completions (STYLE.md: 1.0 worked on CPU, 0.7 barely moved)."""
    top_p: float = 1.0
    beta: float = 0.0
    """KL coefficient against the starting policy; 0 (TRL's default) keeps no reference model."""
    lr: float = 1e-6
    """AdamW learning rate (1e-6 is TRL's default for a pre-trained LM; a tiny CPU student needs ~3e-4, STYLE.md)."""
    scheduler: str = "constant"
    """linear, cosine or constant (transformers' names, as train.scheduler)."""
    warmup_ratio: float = 0.0
    lora_r: int = 0
    """LoRA rank through peft (merged into the student at the end); 0 = every weight trains."""
    lora_alpha: int = 32
    max_completion_length: int = 256
    """New tokens per sampled completion (a longer one is cut: usually no answer, reward 0)."""
    max_prompt_length: int = 256
    """Prompt tokens kept (cut from the left, so the form's instruction survives, as in training)."""
    batch_size: int = 8
    """Completions per micro-batch on each process (per_device_train_batch_size): a multiple of
    num_generations (TRL needs whole groups)."""
    grad_accum: int = 1
    max_steps: int = 100
    """Optimizer steps (each samples batch_size x grad_accum / num_generations prompts' groups)."""
    max_minutes: float | None = None
    """Stop cleanly after this many minutes of RL (checkpoint and student still written); None: no limit."""
    checkpoint_every: int = 50
    """Write a resumable checkpoint every N optimizer steps (and at the end)."""
    wrong_answer_reward: float = 0.1
    """Reward of a completion whose answer was parsed but is wrong; correct 1.0; no answer, unsafe,
    exec_error, timeout 0.0."""
    use_vllm: bool = False
    """Generate with vLLM (TRL's ``use_vllm``, colocated on the training GPU); needs vllm installed and a GPU."""
    log_completions_every: int = 10
    """Every N optimizer steps, an MLflow table of the last step's completions (form, gold, answer,
    status, reward) under rl/completions/."""
    log_completions_rows: int = 32
    """Rows of each completions table (the first completions of the step)."""
    val_generate_limit: int | None = None
    """Validation problems decoded (greedy) before and after RL for val/<form>/accuracy, the number
    register tags and promote ranks on; None: train.val_generate_limit, the train stage's protocol."""
    seed: int = 42


@dataclass(frozen=True)
class EvaluateConfig:
    forms: tuple[str, ...] = ()
    """Forms to ask for; empty means every form the student was trained on."""
    limit: int | None = None
    """Evaluate only the first N problems of each test set (quick runs); None means all."""
    batch_size: int | str = 32
    """Problems per generate call; batches are sorted by input length (distill/decoding.py).
    ``auto``: on a GPU as many as its memory holds at the longest input + max_new_tokens (a short
    probe, at most 256); on the CPU 32."""
    static_cache: bool = False
    """GPU speed switch: greedy decoding with a static KV cache, so transformers compiles the
    decoding step (``cache_implementation="static"``); same greedy outputs, off by default."""
    max_new_tokens: int = 256
    """Greedy decoding up to this many new tokens (paper: 256)."""
    max_source_len: int = 256
    """Input tokens kept (paper: 256); longer inputs lose the start of the question, never the instruction."""
    device: str = "auto"
    """auto (cuda when available, else cpu), cpu, cuda or cuda:N."""
    threads: int = 0
    """torch CPU threads (0: torch's default). 1 decodes a tiny student several times faster on a busy CPU."""
    dtype: str = "auto"
    """The student's weights while decoding: auto (the dtype it was saved in: fp32 for a student of the
    train stage; unchanged greedy outputs), fp32, bf16 or fp16. bf16 / fp16 apply on a CUDA GPU only
    (half the bytes read per decode step; greedy outputs can differ slightly from fp32); fp16 is
    refused for T5-family students (they overflow). distill.decoding.resolve_eval_dtype."""

    samples: int = 1
    """Sampled outputs per problem and form (k). 1: greedy decoding only, as the paper (today's results
    and metric names, unchanged). k > 1: the greedy output stays (``<test_set>/<form>/accuracy`` always
    means greedy accuracy) and k samples are drawn besides it, scored as maj@k (a vote on the k answers),
    pass@k and the mean accuracy over the samples (distill.scoring.sample_scores)."""
    temperature: float = 0.7
    """Sampling temperature (samples > 1 only). 0.7: the value of self-consistency's majority votes on
    GSM8K (Wang et al. 2023, arXiv 2203.11171) and of the maj@k figures reasoning students are usually
    reported with; Chen et al. 2021 (arXiv 2107.03374) find the best temperature for pass@k rises with k
    (0.2 at k=1, 0.8 at k=100), so 0.7 is a middle for the small k used here."""
    top_p: float = 1.0
    """Nucleus sampling: sample among the most likely tokens whose probabilities add up to top_p
    (1.0: the whole vocabulary, plain temperature sampling)."""
    seed: int = 0
    """Seed of the samples: sample j of problem p in form f is drawn from noise keyed by (seed, p, f, j)
    alone (distill.decoding.Sampling), so a rerun draws the same samples whatever the batch size or the
    other problems of a batch (up to floating-point differences of padding, as greedy decoding has)."""


@dataclass(frozen=True)
class PromoteConfig:
    """Which registered student is served: the registry name, the alias and how candidates compete."""

    model_name: str = "distill-student"
    """Registered model that every evaluated student becomes a version of."""
    alias: str = "champion"
    """Alias given to the best version (`mlflow models serve -m models:/distill-student@champion`)."""
    metric: str = "val/selected/accuracy"
    """Version tag compared, higher wins; must be a validation accuracy (val/.../accuracy): a
    champion is never chosen on a test set. Default: the validation accuracy of the form chosen on
    validation (the card's best_form), tagged by register from the train run's metrics."""
    mix: str = "etd"
    """Only versions tagged with this mix (and this preset and evaluate.limit) are candidates."""


@dataclass(frozen=True)
class TrackingConfig:
    uri: str = "sqlite:///mlflow.db"
    """MLFLOW_TRACKING_URI overrides it."""
    experiment: str = "distill"


@dataclass(frozen=True)
class Config:
    preset: str = "default"
    run_dir: str = "runs/{preset}"
    data: DataConfig = field(default_factory=DataConfig)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    generate: GenerateConfig = field(default_factory=GenerateConfig)
    verify: VerifyConfig = field(default_factory=VerifyConfig)
    mix: MixConfig = field(default_factory=MixConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    rl: RLConfig = field(default_factory=RLConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    promote: PromoteConfig = field(default_factory=PromoteConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)

    @property
    def run_path(self) -> Path:
        return Path(self.run_dir.format(preset=self.preset))

    @property
    def data_path(self) -> Path:
        return Path(self.data.data_dir)

    @property
    def tracking_uri(self) -> str:
        return os.environ.get("MLFLOW_TRACKING_URI") or self.tracking.uri


def presets() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def load_config(preset: str | Path | None = None, overrides: Iterable[str] = ()) -> Config:
    """Build a Config from defaults, then a preset (name or YAML path), then ``DISTILL_DATA_DIR`` (as
    ``data.data_dir``), then ``key=value`` overrides; ``check`` it. Every problem found on the way (an
    unknown key, a wrong type, a value out of range, a rule between keys) is named in one ConfigError."""
    raw: dict[str, Any] = {}
    if preset is not None:
        path = Path(preset)
        # a name, not a file: "qwen2.5-0.5b" has a dot but no .yaml/.yml suffix
        if path.suffix not in (".yaml", ".yml"):
            path = PRESET_DIR / f"{preset}.yaml"
            if not path.exists():
                raise ConfigError(f"unknown preset {preset!r}; valid presets: {', '.join(presets())}")
        try:
            raw = yaml.safe_load(path.read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"cannot read preset {path}: {exc}") from exc
        if not isinstance(raw, dict):
            raise ConfigError(f"preset {path} must be a mapping of sections, got {type(raw).__name__}")
        raw.setdefault("preset", path.stem)
    problems: list[str] = []
    if os.environ.get(DATA_DIR_ENV):  # the one place the environment chooses a setting
        _set_dotted(raw, "data.data_dir", os.environ[DATA_DIR_ENV], problems)
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep:
            problems.append(f"override {item!r} must look like section.key=value")
            continue
        _set_dotted(raw, key.strip(), yaml.safe_load(value) if value.strip() else None, problems)
    cfg = _build(Config, raw, "", problems)
    return check(cfg, problems)


def _set_dotted(raw: dict, key: str, value: Any, problems: list[str]) -> None:
    *parents, leaf = key.split(".")
    node = raw
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            problems.append(f"{key}: {part} is not a section")
            return
    node[leaf] = value


def _build(cls: type, raw: Any, prefix: str, problems: list[str]) -> Any:
    """cls from raw; a key that is unknown or of the wrong type is added to ``problems`` and keeps
    its default, so that the keys after it are checked too."""
    if not isinstance(raw, Mapping):
        problems.append(f"{prefix.rstrip('.') or 'config'} must be a mapping, got {raw!r}")
        return cls()
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for key in sorted(set(raw) - names):
        problems.append(f"unknown key {prefix + key!r}; valid keys in {prefix.rstrip('.') or 'config'}: "
                        f"{', '.join(sorted(names))}")
    kwargs = {}
    for name, value in raw.items():
        if name not in names:
            continue
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            kwargs[name] = _build(hint, value or {}, f"{prefix}{name}.", problems)
            continue
        try:
            kwargs[name] = _coerce(value, hint, f"{prefix}{name}")
        except ConfigError as exc:
            problems.append(str(exc))
    return cls(**kwargs)


def _coerce(value: Any, hint: Any, key: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(value, arg, key)
            except ConfigError:
                continue
        raise ConfigError(f"{key}: expected {hint}, got {value!r}")
    if origin is tuple:
        if isinstance(value, str):
            value = [v for v in value.replace("+", ",").split(",") if v]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        return tuple(_coerce(v, args[0], key) for v in value)
    if hint is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return value
    if hint is float and isinstance(value, str):
        # YAML 1.1 reads "1e-4" (no dot) as a string, and so do CLI flags passed through json.dumps
        # (1e-05): take any string that is a plain float literal.
        try:
            value = float(value.strip())
        except ValueError:
            raise ConfigError(f"{key}: expected float, got {value!r}") from None
    if hint is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        if not math.isfinite(value):
            raise ConfigError(f"{key}: expected a finite number, got {value!r}")
        return float(value)
    if hint is str and isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, hint) and not (hint is int and isinstance(value, bool)):
        return value
    raise ConfigError(f"{key}: expected {getattr(hint, '__name__', hint)}, got {value!r}")


def flatten(cfg: Any, prefix: str = "") -> dict[str, Any]:
    """Dotted name -> value, for MLflow params."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            out.update(flatten(value, f"{prefix}{f.name}."))
        else:
            out[f"{prefix}{f.name}"] = value
    return out


def replace(cfg: Config, **sections: Mapping[str, Any]) -> Config:
    """A copy of cfg with some fields of some sections changed, checked: replace(cfg, train={"epochs": 1})."""
    changes = {name: dataclasses.replace(getattr(cfg, name), **values) for name, values in sections.items()}
    return check(dataclasses.replace(cfg, **changes))


# --- ranges: every numeric setting, checked when a config is built ---------------------------------

@dataclass(frozen=True)
class Range:
    """Where a number may lie: ``low`` / ``high`` bounds (None: unbounded), each inclusive unless
    ``open_low`` / ``open_high``; ``null`` allows None, ``words`` some strings (``auto``)."""

    low: float | None = None
    high: float | None = None
    open_low: bool = False
    open_high: bool = False
    null: bool = False
    words: tuple[str, ...] = ()

    def admits(self, value: Any) -> bool:
        if value is None:
            return self.null
        if isinstance(value, str):
            return value in self.words
        if self.low is not None and (value < self.low or (self.open_low and value == self.low)):
            return False
        return not (self.high is not None and (value > self.high or (self.open_high and value == self.high)))

    def describe(self) -> str:
        low = None if self.low is None else (f"more than {self.low:g}" if self.open_low else f"at least {self.low:g}")
        if self.low is not None and self.high is not None:
            text = f"in {'(' if self.open_low else '['}{self.low:g}, {self.high:g}{')' if self.open_high else ']'}"
        elif self.high is not None:
            text = f"{'below' if self.open_high else 'at most'} {self.high:g}"
        else:
            text = low or "a number"
        extra = [*(f"{w!r}" for w in self.words), *(["null"] if self.null else [])]
        return text + (f" (or {' or '.join(extra)})" if extra else "")


AT_LEAST_1, AT_LEAST_0, POSITIVE = Range(1), Range(0), Range(0, open_low=True)
FRACTION, SHARE = Range(0, 1), Range(0, 1, open_high=True)  # SHARE: a fraction that cannot be all
RANGES: dict[str, Range] = {
    "data.limit_train": Range(1, null=True),
    "teacher.temperature": Range(0, 2),  # the OpenAI API's range
    "teacher.n": AT_LEAST_1, "teacher.max_tokens": AT_LEAST_1, "teacher.concurrency": AT_LEAST_1,
    "teacher.timeout": POSITIVE, "teacher.max_retries": AT_LEAST_0, "teacher.budget": Range(0, null=True),
    "teacher.backoff_base": AT_LEAST_0, "teacher.backoff_cap": AT_LEAST_0,
    "generate.batch_poll": POSITIVE, "generate.batch_wait": AT_LEAST_0,
    "verify.timeout": POSITIVE, "verify.workers": AT_LEAST_0,
    "mix.val_fraction": SHARE, "mix.overlap_n": AT_LEAST_1, "mix.seed": AT_LEAST_0,
    "train.lr": POSITIVE, "train.epochs": AT_LEAST_1, "train.max_source_len": AT_LEAST_1,
    "train.max_target_len": AT_LEAST_1, "train.batch_size": Range(1, words=("auto",)),
    "train.grad_accum": AT_LEAST_1, "train.effective_batch_size": AT_LEAST_1, "train.weight_decay": AT_LEAST_0, "train.max_grad_norm": AT_LEAST_0,
    "train.warmup_ratio": SHARE, "train.max_steps": Range(1, null=True),
    "train.max_minutes": Range(0, open_low=True, null=True), "train.checkpoint_minutes": Range(0, open_low=True, null=True),
    "train.seed": AT_LEAST_0, "train.log_every": AT_LEAST_1, "train.val_generate_limit": AT_LEAST_0,
    "train.dropout": SHARE, "train.threads": AT_LEAST_0, "train.lora_r": AT_LEAST_0, "train.lora_alpha": AT_LEAST_1,
    "train.lora_dropout": SHARE, "train.tiny_d_model": AT_LEAST_1, "train.tiny_layers": AT_LEAST_1,
    "train.tiny_heads": AT_LEAST_1, "train.tiny_d_ff": AT_LEAST_1, "train.tiny_vocab": AT_LEAST_1,
    "rl.limit": Range(1, null=True), "rl.num_generations": Range(2), "rl.temperature": POSITIVE,
    "rl.top_p": Range(0, 1, open_low=True), "rl.beta": AT_LEAST_0, "rl.lr": POSITIVE, "rl.warmup_ratio": SHARE,
    "rl.lora_r": AT_LEAST_0, "rl.lora_alpha": AT_LEAST_1, "rl.max_completion_length": AT_LEAST_1,
    "rl.max_prompt_length": AT_LEAST_1, "rl.batch_size": AT_LEAST_1, "rl.grad_accum": AT_LEAST_1,
    "rl.max_steps": AT_LEAST_1, "rl.max_minutes": Range(0, open_low=True, null=True), "rl.checkpoint_every": AT_LEAST_1,
    "rl.wrong_answer_reward": FRACTION, "rl.log_completions_every": AT_LEAST_1, "rl.log_completions_rows": AT_LEAST_1,
    "rl.val_generate_limit": Range(0, null=True), "rl.seed": AT_LEAST_0,
    "evaluate.limit": Range(1, null=True), "evaluate.batch_size": Range(1, words=("auto",)),
    "evaluate.max_new_tokens": AT_LEAST_1, "evaluate.max_source_len": AT_LEAST_1, "evaluate.threads": AT_LEAST_0,
    "evaluate.samples": AT_LEAST_1, "evaluate.temperature": Range(0, 2, open_low=True),
    "evaluate.top_p": Range(0, 1, open_low=True), "evaluate.seed": AT_LEAST_0,
}
"""The range of every numeric setting (tests/test_config.py checks that none lacks one)."""


def check_ranges(cfg: Config) -> Config:
    """cfg, or a ConfigError naming every setting outside its range, the range and the value."""
    return _raise(cfg, range_problems(cfg))


def range_problems(cfg: Config) -> list[str]:
    """One line per setting outside its range (RANGES)."""
    return [f"{key} must be {rule.describe()}, got {value!r}" for key, value in flatten(cfg).items()
            if (rule := RANGES.get(key)) is not None and not rule.admits(value)]


# --- the checks of each section: what types and ranges cannot say -----------------------------------

SCHEDULERS = {"linear": "linear", "cosine": "cosine", "constant": "constant_with_warmup"}
"""train.scheduler / rl.scheduler -> transformers' lr_scheduler_type (each after a linear warm-up)."""
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
EVAL_DTYPES = ("auto", "fp32", "bf16", "fp16")
CHOICES: dict[str, tuple[str, ...]] = {
    "train.scheduler": tuple(SCHEDULERS), "train.optimizer": ("adamw",), "train.precision": PRECISIONS,
    "rl.scheduler": tuple(SCHEDULERS), "evaluate.dtype": EVAL_DTYPES,
}
"""Settings that name one of a few values."""


def check(cfg: Config, problems: Iterable[str] = ()) -> Config:
    """cfg, or one ConfigError that names every problem: ``problems`` found while building it, then
    ranges, choices and the rules of each section (``section_problems``)."""
    return _raise(cfg, [*problems, *range_problems(cfg), *section_problems(cfg)])


def section_problems(cfg: Config) -> list[str]:
    """The checks that read a whole section, or a name the thought forms own; one line per problem."""
    flat = flatten(cfg)
    out = [f"{key}: unknown {flat[key]!r}; valid: {', '.join(valid)}"
           for key, valid in CHOICES.items() if flat[key] not in valid]
    out += _mix_problems(cfg)
    from distill.teachers import TEACHERS  # light: the teachers' modules load when one is used

    if cfg.teacher.name not in TEACHERS:
        out.append(f"teacher.name: unknown teacher {cfg.teacher.name!r}; valid teachers: {', '.join(TEACHERS)}")
    tcfg, rcfg = cfg.train, cfg.rl
    if tcfg.student in ("tiny", "tiny-causal") and tcfg.tiny_heads >= 1 and tcfg.tiny_d_model % tcfg.tiny_heads:
        out.append(f"train.tiny_d_model ({tcfg.tiny_d_model}) must be a multiple of train.tiny_heads ({tcfg.tiny_heads})")
    if rcfg.num_generations >= 1 and rcfg.batch_size % rcfg.num_generations:
        out.append(f"rl.batch_size ({rcfg.batch_size}) must be a multiple of rl.num_generations "
                   f"({rcfg.num_generations}): TRL's GRPO scores whole groups of completions per prompt; "
                   f"e.g. --set rl.batch_size={rcfg.num_generations * max(1, rcfg.batch_size // rcfg.num_generations)}")
    metric = cfg.promote.metric
    if not (metric.startswith("val/") and metric.endswith("/accuracy")):
        out.append(f"promote.metric {metric!r} is not a validation accuracy: a champion is chosen on the "
                   "validation split, never on a test set; use val/selected/accuracy (the default) or "
                   "another val/<...>/accuracy tag of the registered versions")
    return out


def _mix_problems(cfg: Config) -> list[str]:
    """mix.mix and promote.mix name a student: a mix, maybe with a variant (etd-grpo); the forms'
    registry (distill.thoughts.parse_student) knows the names. The stages that build a mix's data or
    its SFT student refuse a variant themselves (parse_mix)."""
    from distill.thoughts import parse_student  # light: no model, no sandbox

    out = []
    for key, value in (("mix.mix", cfg.mix.mix), ("promote.mix", cfg.promote.mix)):
        try:
            parse_student(value)
        except ValueError as exc:
            out.append(f"{key}: {exc}")
    return out


def _raise(cfg: Config, problems: list[str]) -> Config:
    if len(problems) == 1:
        raise ConfigError(problems[0])
    if problems:
        raise ConfigError(f"{len(problems)} problems in the config:\n" + "\n".join(f"  - {p}" for p in problems))
    return cfg
