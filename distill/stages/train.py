"""Train stage: fine-tune a seq2seq student on one mix of verified thoughts.

Reads  ``<run_dir>/mix/<mix>/train.jsonl`` and ``val.jsonl``
       (rows {"id","problem_id","form","version","input","target","gold"}, written by the mix stage).
Writes ``<run_dir>/students/<mix>/``
  - ``model/``            the student with the lowest validation loss (save_pretrained model + tokenizer)
  - ``card.json``         {"mix","forms":{form:{"version","instruction"}},"student","tokenizer","data_digest",
                          "train_run_id","preset","best_val_loss","training":{hyper-parameters as chosen}}
  - ``checkpoints/last/`` resume point, replaced atomically after every epoch (and at a budget stop):
                          model + tokenizer + ``state.pt`` (optimizer, schedule, scaler, RNG, position)
  - ``checkpoints/best/`` the weights with the lowest validation loss so far
  - ``summary.json``      {"run_id","mix","steps","epochs_done","stopped","best_val_loss","val_accuracy",...}

The loop (``train_loop``) reads top to bottom like nanoGPT's: batches of similar length, padded only
to their own longest row, gradient accumulation, autocast in bf16/fp16 on CUDA only (fp32 on CPU,
where bf16 is slower, STYLE.md). Validation, checkpoints and logging live in the stage's callbacks,
not in the loop. Under ``torchrun`` (or ``accelerate launch``) every process runs this same code;
each takes its share of the length-grouped batches, DDP averages gradients, and only rank 0 logs
and writes files.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import random
import shutil
import sys
import time
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Sequence

from distill.config import Config, ConfigError, TrainConfig, flatten
from distill.files import DataError, read_jsonl, write_json

ROW_FIELDS = ("id", "form", "input", "target", "gold")
BUDGET_FIELDS = ("epochs", "max_steps", "max_minutes", "val_generate_limit", "log_every")
"""Fields a resumed run may change: they say how long to train, not what a step does."""
SCHEDULERS = {
    "linear": lambda done: 1.0 - done,
    "cosine": lambda done: 0.5 * (1.0 + math.cos(math.pi * done)),
    "constant": lambda done: 1.0,
}
"""Learning-rate factor after warm-up, as a function of the share of the budget used (0 -> 1)."""


# --- data: encode, group by length, shard, pad ---------------------------------------------------

def encode(tokenizer, rows: Sequence[dict], max_source_len: int, max_target_len: int) -> list[tuple[list, list]]:
    """(input ids, label ids) per row. Inputs are cut from the left so the form's instruction at the
    end survives (as distill.decoding does at test time); targets are cut from the right."""
    side = tokenizer.truncation_side
    tokenizer.truncation_side = "left"
    try:
        sources = tokenizer([r["input"] for r in rows], truncation=True, max_length=max_source_len)["input_ids"]
    finally:
        tokenizer.truncation_side = side
    targets = tokenizer(text_target=[r["target"] for r in rows], truncation=True,
                        max_length=max_target_len)["input_ids"]
    return list(zip(sources, targets))


def make_batches(lengths: Sequence[int], batch_size: int, seed: int, epoch: int,
                 group_by_length: bool = True, window: int = 64) -> list[list[int]]:
    """One epoch's batches of indices: shuffled, then sorted by length inside windows of
    ``window`` batches, then the batches shuffled. Similar lengths share a batch (little padding)
    while every epoch sees a different order. Depends only on (seed, epoch), so every DDP rank and
    a resumed run compute the same list."""
    rng = random.Random(seed * 1_000_003 + epoch)
    order = list(range(len(lengths)))
    rng.shuffle(order)
    if group_by_length:
        chunk = batch_size * window
        order = [i for s in range(0, len(order), chunk)
                 for i in sorted(order[s:s + chunk], key=lambda i: -lengths[i])]
    batches = [order[s:s + batch_size] for s in range(0, len(order), batch_size)]
    rng.shuffle(batches)
    return batches


def shard(batches: list[list[int]], rank: int, world: int) -> list[list[int]]:
    """This rank's batches. Every rank gets the same count (DDP needs equal steps): the remainder
    is dropped, or, with fewer batches than ranks, batches are repeated."""
    if world == 1:
        return batches
    while len(batches) < world:
        batches = batches + batches
    usable = len(batches) // world * world
    return batches[rank:usable:world]


def collate(pairs: Sequence[tuple[list, list]], pad_id: int):
    """Dynamic padding: tensors as wide as this batch's longest input and target; labels pad with -100."""
    import torch

    n = len(pairs)
    src_w = max(len(s) for s, _ in pairs)
    tgt_w = max(len(t) for _, t in pairs)
    input_ids = torch.full((n, src_w), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((n, src_w), dtype=torch.long)
    labels = torch.full((n, tgt_w), -100, dtype=torch.long)
    for row, (s, t) in enumerate(pairs):
        input_ids[row, :len(s)] = torch.tensor(s)
        attention_mask[row, :len(s)] = 1
        labels[row, :len(t)] = torch.tensor(t)
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


# --- devices, precision, processes -----------------------------------------------------------------

@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    started_here: bool = False

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed() -> Dist:
    """Join the process group when launched by torchrun / accelerate (WORLD_SIZE > 1): gloo on CPU, nccl on GPU."""
    import torch
    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    started = False
    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
        started = True
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
    return Dist(rank, world, local_rank, started)


def pick_device(d: Dist):
    import torch

    return torch.device(f"cuda:{d.local_rank}") if torch.cuda.is_available() else torch.device("cpu")


def resolve_precision(requested: str, device) -> str:
    """auto -> bf16 on CUDA GPUs that have it, fp16 on older ones, fp32 on CPU (bf16 is 2x slower there)."""
    import torch

    if requested not in ("auto", "fp32", "bf16", "fp16"):
        raise ConfigError(f"train.precision: unknown {requested!r}; valid: auto, fp32, bf16, fp16")
    if device.type != "cuda":
        if requested in ("bf16", "fp16"):
            _say(f"train.precision={requested} needs a CUDA GPU; training in fp32 on {device.type}")
        return "fp32"
    if requested == "auto":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return requested


def autocast(precision: str, device):
    import torch

    if precision == "fp32":
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16 if precision == "bf16" else torch.float16)


# --- the loop ----------------------------------------------------------------------------------------

@dataclass
class Position:
    """Where training stands: ``group`` optimizer steps done inside ``epoch`` (0-based), ``step`` in all."""

    epoch: int = 0
    group: int = 0
    step: int = 0
    elapsed_s: float = 0.0


def plan(n_examples: int, tcfg: TrainConfig, world: int) -> dict:
    """Steps per epoch, total steps, warm-up steps: fixed by the data size and config, before training."""
    batches = math.ceil(n_examples / tcfg.batch_size)
    per_rank = max(batches // world, 1) if world > 1 else batches
    steps_per_epoch = math.ceil(per_rank / tcfg.grad_accum)
    total = steps_per_epoch * tcfg.epochs
    if tcfg.max_steps is not None:
        total = min(total, tcfg.max_steps)
    return {"steps_per_epoch": steps_per_epoch, "total_steps": total,
            "warmup_steps": math.ceil(tcfg.warmup_ratio * total),
            "effective_batch_size": tcfg.batch_size * tcfg.grad_accum * world}


def make_optimizer(model, tcfg: TrainConfig, device):
    """AdamW; weight decay only on matrices (norm weights and biases are left alone, as is usual)."""
    import torch

    if tcfg.optimizer != "adamw":
        raise ConfigError(f"train.optimizer: unknown {tcfg.optimizer!r}; valid: adamw")
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.ndim >= 2], "weight_decay": tcfg.weight_decay},
              {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=tcfg.lr, betas=(0.9, 0.999), eps=1e-8, fused=device.type == "cuda")


def train_loop(model, pairs: Sequence[tuple[list, list]], tcfg: TrainConfig, *, pad_id: int, device, precision: str,
               dist: Dist, start: Position | None = None, resume_state: dict | None = None,
               on_step: Callable[[int, float, float], None] = lambda step, loss, lr: None,
               on_epoch: Callable[..., None] = lambda **kw: None) -> tuple[Position, str]:
    """Train ``model`` on ``pairs``; returns (where it stopped, why: "epochs" | "max_steps" | "max_minutes").

    ``on_step(step, loss, lr)`` after every optimizer step; ``on_epoch(position=, model=, state=)``
    at the end of every epoch and at a budget stop (``state()`` gives the optimizer, schedule and
    scaler states for a checkpoint). Both run on every rank; they decide themselves what rank 0 does.
    """
    import torch
    import torch.distributed as tdist
    from torch.nn.parallel import DistributedDataParallel
    from tqdm.auto import tqdm

    pos = start or Position()
    steps = plan(len(pairs), tcfg, dist.world)
    lengths = [len(s) + len(t) for s, t in pairs]
    model.to(device)
    raw_model = model
    if dist.world > 1:
        model = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    optimizer = make_optimizer(raw_model, tcfg, device)
    warmup, total = steps["warmup_steps"], max(steps["total_steps"], 1)
    budget_s = tcfg.max_minutes * 60 if tcfg.max_minutes else None
    clock = {"s": pos.elapsed_s}
    """Training seconds at the last budget check; the same number on every rank."""

    def lr_factor(_: int) -> float:
        """Linear warm-up, then decay over whichever budget ends first: the steps, or the clock
        (max_minutes), so a CPU run cut by time still ends at a low learning rate."""
        if pos.step < warmup:
            return (pos.step + 1) / (warmup + 1)
        done = (pos.step - warmup) / max(total - warmup, 1)
        if budget_s:
            done = max(done, clock["s"] / budget_s)
        return max(SCHEDULERS[tcfg.scheduler](min(done, 1.0)), 0.0)

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor)
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    if resume_state:
        optimizer.load_state_dict(resume_state["optimizer"])
        scheduler.load_state_dict(resume_state["scheduler"])
        scaler.load_state_dict(resume_state["scaler"])

    def state() -> dict:
        return {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict()}

    def out_of_budget() -> str | None:
        if tcfg.max_steps is not None and pos.step >= tcfg.max_steps:
            return "max_steps"
        if budget_s is None:
            return None
        clock["s"] = pos.elapsed_s + time.monotonic() - t0
        if dist.world > 1:
            # clocks differ between ranks; all must stop at the same step (or DDP hangs) and
            # follow the same learning rate (or the weights part), so they agree on the slowest
            seconds = torch.tensor([clock["s"]], dtype=torch.float64, device=device)
            tdist.all_reduce(seconds, op=tdist.ReduceOp.MAX)
            clock["s"] = float(seconds.item())
        return "max_minutes" if clock["s"] >= budget_s else None

    bar = tqdm(total=steps["total_steps"], initial=pos.step, desc="train", unit="step",
               disable=not dist.main or not sys.stderr.isatty())
    t0 = time.monotonic()
    stopped = "epochs"
    while pos.epoch < tcfg.epochs:
        batches = shard(make_batches(lengths, tcfg.batch_size, tcfg.seed, pos.epoch, tcfg.group_by_length),
                        dist.rank, dist.world)
        groups = [batches[i:i + tcfg.grad_accum] for i in range(0, len(batches), tcfg.grad_accum)]
        model.train()
        while pos.group < len(groups):
            stopped = out_of_budget() or stopped
            if stopped != "epochs":
                break
            group = groups[pos.group]
            step_loss = 0.0
            for k, ids in enumerate(group):
                batch = {key: v.to(device, non_blocking=True) for key, v in collate([pairs[i] for i in ids], pad_id).items()}
                # gradients are averaged across ranks only on the last micro-batch of a step
                sync = dist.world == 1 or k == len(group) - 1
                with (nullcontext() if sync else model.no_sync()):
                    with autocast(precision, device):
                        loss = model(**batch).loss / len(group)
                    scaler.scale(loss).backward()
                step_loss += loss.item()
            if tcfg.max_grad_norm:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(raw_model.parameters(), tcfg.max_grad_norm)
            lr = optimizer.param_groups[0]["lr"]
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            pos.group += 1
            pos.step += 1
            scheduler.step()
            bar.update(1)
            bar.set_postfix(epoch=pos.epoch + 1, loss=f"{step_loss:.3f}")
            on_step(pos.step, step_loss, lr)
        pos.elapsed_s += time.monotonic() - t0
        if pos.group == 0 and stopped != "epochs":
            break  # the budget ran out on an epoch boundary, whose checkpoint is already written
        if pos.group >= len(groups):
            pos.epoch, pos.group = pos.epoch + 1, 0
        on_epoch(position=pos, model=raw_model, state=state, stopped=stopped)
        if dist.world > 1:
            tdist.barrier()  # rank 0 may still be validating and writing the checkpoint
        if stopped != "epochs":
            break
        t0 = time.monotonic()  # validation and checkpoints do not count as training time
    bar.close()
    return pos, stopped


# --- validation --------------------------------------------------------------------------------------

def validation_loss(model, pairs: Sequence[tuple[list, list]], *, batch_size: int, pad_id: int, device,
                    precision: str) -> float:
    """Mean token loss over the validation pairs (teacher forcing), weighted by target tokens."""
    import torch

    model.eval()
    total, tokens = 0.0, 0
    order = sorted(range(len(pairs)), key=lambda i: len(pairs[i][0]) + len(pairs[i][1]))
    with torch.inference_mode():
        for s in range(0, len(order), batch_size):
            batch = collate([pairs[i] for i in order[s:s + batch_size]], pad_id)
            n = int((batch["labels"] != -100).sum())
            with autocast(precision, device):
                loss = model(**{k: v.to(device) for k, v in batch.items()}).loss
            total += float(loss) * n
            tokens += n
    return total / max(tokens, 1)


def validation_rows(rows: Sequence[dict], limit: int, seed: int) -> list[dict]:
    """Up to ``limit`` validation rows, a seeded sample so every form of the mix is represented."""
    picked = list(rows)
    random.Random(seed).shuffle(picked)
    return picked[:limit]


def validation_accuracy(model, tokenizer, rows: Sequence[dict], *, batch_size: int, max_source_len: int,
                        max_new_tokens: int) -> dict[str, float]:
    """{form: accuracy}: greedy outputs checked by each form's verifier against the gold answers.

    Forms whose module is not importable are left out (and reported once), so training does not
    depend on every verifier being present.
    """
    from distill.decoding import decode
    from distill.thoughts import get_form

    if not rows:
        return {}
    outputs = decode(model, tokenizer, [r["input"] for r in rows], batch_size=batch_size,
                     max_new_tokens=max_new_tokens, max_source_len=max_source_len)
    scores = {}
    for form in sorted({r["form"] for r in rows}):
        idx = [i for i, r in enumerate(rows) if r["form"] == form]
        try:
            verifier = get_form(form)
        except (ImportError, AttributeError) as exc:
            _say(f"val/{form}/accuracy skipped: form module not available ({exc})")
            continue
        verdicts = verifier.verify_many([outputs[i] for i in idx], [float(rows[i]["gold"]) for i in idx])
        scores[form] = sum(v.correct for v in verdicts) / len(verdicts)
    return scores


# --- files: checkpoints, digests ---------------------------------------------------------------------

def file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def config_digest(tcfg: TrainConfig, mix: str, data_digest: str, exclude: Sequence[str] = ()) -> str:
    fields = {k: v for k, v in asdict(tcfg).items() if k not in exclude}
    blob = json.dumps({"train": fields, "mix": mix, "data": data_digest}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def replace_dir(tmp: Path, final: Path) -> None:
    """Swap a fully written folder into place: the old one is renamed aside first, so at every moment
    either ``final`` or ``.final.old`` is complete (``read_dir`` falls back to the latter)."""
    old = final.with_name(f".{final.name}.old")
    if old.exists():
        shutil.rmtree(old)
    if final.exists():
        final.rename(old)
    tmp.rename(final)
    shutil.rmtree(old, ignore_errors=True)


def existing_dir(final: Path) -> Path | None:
    old = final.with_name(f".{final.name}.old")
    return final if final.exists() else old if old.exists() else None


def save_checkpoint(folder: Path, model, tokenizer, state: dict) -> None:
    import torch

    from distill.student import save_student

    tmp = folder.with_name(f".{folder.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    with quiet_transformers():
        save_student(model, tokenizer, tmp)
    if state:
        torch.save(state, tmp / "state.pt")
    replace_dir(tmp, folder)


@contextmanager
def quiet_transformers():
    """No "Writing model shards" bars in the middle of the training log."""
    from transformers.utils import logging as hf_logging

    was = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was:
            hf_logging.enable_progress_bar()


def weights_digest(model) -> str:
    """sha256 of the weights, to check that DDP ranks end identical."""
    import torch

    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def form_cards(forms: Sequence[str], rows: Sequence[dict]) -> dict:
    """{form: {"version", "instruction"}} from the form modules, else from the training rows."""
    from distill.thoughts import get_form

    cards = {}
    for form in forms:
        try:
            f = get_form(form)
            cards[form] = {"version": f.version, "instruction": f.instruction}
        except (ImportError, AttributeError):
            row = next((r for r in rows if r["form"] == form), None)
            if row is not None:
                # the instruction is the input's last line ("Question: ...\n<instruction>\n")
                cards[form] = {"version": row.get("version"), "instruction": row["input"].rstrip("\n").rsplit("\n", 1)[-1]}
    return cards


def _say(message: str) -> None:
    if os.environ.get("RANK", "0") == "0":
        print(f"[train] {message}", file=sys.stderr, flush=True)


def check_config(tcfg: TrainConfig) -> TrainConfig:
    """The train section's values that the schema's types cannot check; the error names the key."""
    choices = {"scheduler": tuple(SCHEDULERS), "optimizer": ("adamw",), "precision": ("auto", "fp32", "bf16", "fp16")}
    for key, valid in choices.items():
        if getattr(tcfg, key) not in valid:
            raise ConfigError(f"train.{key}: unknown {getattr(tcfg, key)!r}; valid: {', '.join(valid)}")
    if tcfg.threads < 0:
        raise ConfigError(f"train.threads must be 0 (torch's default) or more, got {tcfg.threads}")
    for key in ("epochs", "batch_size", "grad_accum", "max_source_len", "max_target_len", "log_every"):
        if getattr(tcfg, key) < 1:
            raise ConfigError(f"train.{key} must be at least 1, got {getattr(tcfg, key)}")
    if not tcfg.lr > 0 or not 0 <= tcfg.warmup_ratio < 1 or not 0 <= tcfg.dropout < 1:
        raise ConfigError("train.lr must be positive, train.warmup_ratio and train.dropout in [0, 1)")
    if tcfg.max_steps is not None and tcfg.max_steps < 1:
        raise ConfigError(f"train.max_steps must be at least 1 (or null), got {tcfg.max_steps}")
    if tcfg.student == "tiny" and tcfg.tiny_d_model % tcfg.tiny_heads:
        raise ConfigError(f"train.tiny_d_model ({tcfg.tiny_d_model}) must be a multiple of train.tiny_heads "
                          f"({tcfg.tiny_heads})")
    return tcfg


# --- the stage ---------------------------------------------------------------------------------------

def run(cfg: Config, run_dir: Path, tracker=None, mix: str | None = None) -> dict:
    """Train a student on ``<run_dir>/mix/<mix>`` (mix defaults to cfg.mix.mix); see the module docstring.

    Skips when summary.json was written by the same config on the same data; resumes from
    checkpoints/last after an interruption. Returns the summary dict.
    """
    import torch

    from distill.student import build_student, count_parameters, load_student
    from distill.thoughts import parse_mix

    run_dir = Path(run_dir)
    mix = mix or cfg.mix.mix
    forms = parse_mix(mix)
    tcfg = check_config(cfg.train)

    mix_dir = run_dir / "mix" / mix
    hint = f"Write it with `distill mix --preset {cfg.preset} --mix {mix}`."
    train_rows = read_jsonl(mix_dir / "train.jsonl", ROW_FIELDS, hint)
    val_rows = read_jsonl(mix_dir / "val.jsonl", ROW_FIELDS, hint) if (mix_dir / "val.jsonl").exists() else []
    if not train_rows:
        raise DataError(f"{mix_dir / 'train.jsonl'}: no training rows. {hint}")
    data_digest = file_digest(mix_dir / "train.jsonl")
    digest = config_digest(tcfg, mix, data_digest)
    resume_digest = config_digest(tcfg, mix, data_digest, exclude=BUDGET_FIELDS)

    out = run_dir / "students" / mix
    summary_path = out / "summary.json"
    if summary_path.exists():
        done = json.loads(summary_path.read_text())
        if done.get("config_digest") == digest:
            _say(f"{summary_path} is complete for this config and data; skipping (delete it to retrain)")
            return {**done, "skipped": True}

    dist = init_distributed()
    tracker = tracker if dist.main else None
    device = pick_device(dist)
    precision = resolve_precision(tcfg.precision, device)
    if device.type == "cpu" and tcfg.threads:
        torch.set_num_threads(tcfg.threads)

    last = existing_dir(out / "checkpoints" / "last")
    resume_state, start = None, None
    if last is not None and (last / "state.pt").exists():
        resume_state = torch.load(last / "state.pt", map_location="cpu", weights_only=False)
        if resume_state.get("resume_digest") != resume_digest:
            _say(f"{last} was trained with another config or data; starting afresh")
            resume_state = None
    if resume_state:
        with quiet_transformers():
            model, tokenizer = load_student(last)
        start = Position(**resume_state["position"])
        torch.set_rng_state(resume_state["rng"])
        _say(f"resuming from {last}: epoch {start.epoch + 1}, step {start.step}")
    else:
        if dist.world > 1:
            torch.distributed.barrier()  # every rank has decided before rank 0 clears old checkpoints
        if dist.main:
            shutil.rmtree(out / "checkpoints", ignore_errors=True)  # a stale best/ must not become the student
        texts = [r["input"] for r in train_rows] + [r["target"] for r in train_rows]
        model, tokenizer = build_student(tcfg.student, texts, train_cfg=tcfg, seed=tcfg.seed)
        torch.manual_seed(tcfg.seed)  # dropout draws from here; resumed runs restore it instead
    model = model.float()  # fp32 master weights even if a hub checkpoint is stored in half precision
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    pairs = encode(tokenizer, train_rows, tcfg.max_source_len, tcfg.max_target_len)
    val_pairs = encode(tokenizer, val_rows, tcfg.max_source_len, tcfg.max_target_len)
    gen_rows = validation_rows(val_rows, tcfg.val_generate_limit, tcfg.seed)
    # validation decoding stops a little past the longest training target: an untrained student
    # that never says </s> would otherwise run all 256 steps every epoch (evaluate uses the full 256)
    gen_tokens = min(tcfg.max_target_len, max(len(t) for _, t in pairs) + 16)
    steps = plan(len(pairs), tcfg, dist.world)
    n_params = count_parameters(model)
    tokenizer_desc = (f"byte-level BPE, {len(tokenizer)} tokens, trained on the training texts"
                      if tcfg.student == "tiny" else tcfg.student)
    chosen = {"optimizer": "AdamW(betas=(0.9, 0.999), eps=1e-8)", "lr": tcfg.lr, "weight_decay": tcfg.weight_decay,
              "max_grad_norm": tcfg.max_grad_norm, "scheduler": tcfg.scheduler, "warmup_steps": steps["warmup_steps"],
              "batch_size": tcfg.batch_size, "grad_accum": tcfg.grad_accum,
              "effective_batch_size": steps["effective_batch_size"], "epochs": tcfg.epochs,
              "max_source_len": tcfg.max_source_len, "max_target_len": tcfg.max_target_len,
              "precision": precision, "group_by_length": tcfg.group_by_length, "seed": tcfg.seed,
              "max_steps": tcfg.max_steps, "max_minutes": tcfg.max_minutes}
    history = dict(resume_state.get("history", {})) if resume_state else {}
    best = {"val_loss": history.get("best_val_loss", math.inf)}
    window: list[float] = []

    tags = {"distill.stage": "train", "distill.mix": mix, "distill.forms": ",".join(forms),
            "distill.preset": cfg.preset, "distill.student": tcfg.student}
    resume_run = resume_state.get("run_id") if resume_state and not os.environ.get("MLFLOW_RUN_ID") else None
    if tracker is not None and tracker.mlflow.active_run() is not None:
        resume_run = None  # nested under a parent (reproduce): a new child run
    run_ctx = tracker.run(f"train-{mix}", tags, nested=True, run_id=resume_run) if tracker else nullcontext()
    with run_ctx:
        run_id = tracker.run_id if tracker else None
        if tracker:
            params = {**flatten(cfg), "mix.mix": mix, "train.n_params": n_params, "train.device": device.type,
                      "train.world_size": dist.world, "train.torch_threads": torch.get_num_threads(),
                      "train.train_examples": len(pairs),
                      "train.val_examples": len(val_pairs), "train.precision_resolved": precision,
                      **{f"train.{k}": v for k, v in steps.items()}}
            try:
                tracker.log_params(params)
            except Exception as exc:  # a resumed run whose budget changed: MLflow params are immutable
                if not resume_state:
                    raise
                _say(f"kept the params logged before the interruption ({type(exc).__name__})")
            tracker.set_tags(tags)
            if not resume_state:
                tracker.log_dataset(train_rows, f"mix-{mix}-train", str(mix_dir / "train.jsonl"), "training")
                if val_rows:
                    tracker.log_dataset(val_rows, f"mix-{mix}-val", str(mix_dir / "val.jsonl"), "validation")
        _say(f"{tcfg.student}: {n_params:,} params, {len(pairs)} train / {len(val_pairs)} val rows, "
             f"{steps['total_steps']} steps, {device.type} {precision}, {dist.world} process(es), "
             f"{torch.get_num_threads()} thread(s)")

        def on_step(step: int, loss: float, lr: float) -> None:
            window.append(loss)
            if tracker and (step % tcfg.log_every == 0):
                tracker.log_metrics({"train/loss": sum(window) / len(window), "train/lr": lr}, step=step)
                window.clear()

        def on_epoch(position: Position, model, state, stopped: str) -> None:
            if not dist.main:
                return
            epoch = position.epoch if position.group == 0 else position.epoch + 1
            metrics = {}
            if val_pairs:
                metrics["val/loss"] = validation_loss(model, val_pairs, batch_size=tcfg.batch_size * 2, pad_id=pad_id,
                                                      device=device, precision=precision)
            accuracy = validation_accuracy(model, tokenizer, gen_rows, batch_size=tcfg.batch_size * 2,
                                           max_source_len=tcfg.max_source_len, max_new_tokens=gen_tokens)
            metrics.update({f"val/{form}/accuracy": acc for form, acc in accuracy.items()})
            history.update({"epoch": epoch, "step": position.step, **metrics})
            improved = not val_pairs or metrics["val/loss"] < best["val_loss"]
            if improved:
                best["val_loss"] = metrics.get("val/loss")
                history["best_val_loss"] = best["val_loss"]
                history["best_epoch"] = epoch
                save_checkpoint(out / "checkpoints" / "best", model, tokenizer, {})
            save_checkpoint(out / "checkpoints" / "last", model, tokenizer, {
                **state(), "position": asdict(position), "rng": torch.get_rng_state(), "history": dict(history),
                "run_id": run_id, "resume_digest": resume_digest})
            if tracker:
                tracker.log_metrics(metrics, step=epoch)
            shown = ", ".join(f"{k} {v:.4f}" for k, v in metrics.items())
            _say(f"epoch {epoch} (step {position.step}): {shown}{' (best)' if improved else ''}")

        if val_pairs and not resume_state and dist.main:
            # the untrained model's loss: where the validation curve starts (step 0)
            history["initial_val_loss"] = validation_loss(model.to(device), val_pairs, batch_size=tcfg.batch_size * 2,
                                                          pad_id=pad_id, device=device, precision=precision)
            if tracker:
                tracker.log_metrics({"val/loss": history["initial_val_loss"]}, step=0)
        t0 = time.monotonic()
        position, stopped = train_loop(model, pairs, tcfg, pad_id=pad_id, device=device, precision=precision,
                                       dist=dist, start=start, resume_state=resume_state,
                                       on_step=on_step, on_epoch=on_epoch)
        wall_s = time.monotonic() - t0
        if window and tracker:
            tracker.log_metrics({"train/loss": sum(window) / len(window)}, step=position.step)
        summary = {"mix": mix, "forms": list(forms), "student": tcfg.student, "preset": cfg.preset,
                   "steps": position.step, "epochs_done": position.epoch + (position.group > 0),
                   "stopped": stopped, "train_examples": len(pairs), "n_params": n_params,
                   "wall_s": round(wall_s, 1), "train_s": round(position.elapsed_s, 1),
                   "examples_per_s": round(position.step * steps["effective_batch_size"] / max(position.elapsed_s, 1e-9), 1),
                   "config_digest": digest}
        if dist.world > 1:
            summary["weights_sha256"] = weights_digest(model)
        if not dist.main:
            _finish(dist)
            return summary

        # the student is the checkpoint with the lowest validation loss
        best_dir = existing_dir(out / "checkpoints" / "best") or existing_dir(out / "checkpoints" / "last")
        if best_dir is None:  # no epoch ended (a budget of zero steps): the student is the model as it is
            best_dir = out / "checkpoints" / "best"
            save_checkpoint(best_dir, model, tokenizer, {})
        tmp = out / ".model.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(best_dir, tmp, ignore=shutil.ignore_patterns("state.pt"))
        replace_dir(tmp, out / "model")
        val_accuracy = {k.split("/")[1]: v for k, v in history.items()
                        if k.startswith("val/") and k.endswith("/accuracy")}
        card = {"mix": mix, "forms": form_cards(forms, train_rows), "student": tcfg.student,
                "best_form": best_form(forms, val_accuracy),
                "tokenizer": tokenizer_desc, "data_digest": data_digest, "train_run_id": run_id,
                "preset": cfg.preset, "best_val_loss": history.get("best_val_loss"),
                "best_epoch": history.get("best_epoch"), "n_params": n_params,
                "training": {**chosen, "steps": position.step, "stopped": stopped}}
        write_json(out / "card.json", card)
        summary.update({"run_id": run_id, "initial_val_loss": history.get("initial_val_loss"),
                        "best_val_loss": history.get("best_val_loss"),
                        "val_loss": history.get("val/loss"),
                        "val_accuracy": val_accuracy,
                        "model_dir": str(out / "model"), "model_logged": False})
        if tracker:
            tracker.log_dict(card, "card.json")
            tracker.log_metrics({"train/examples_per_s": summary["examples_per_s"]}, step=position.step)
            summary.update(_log_model(tracker, out, run_id))
        write_json(summary_path, summary)
    _say(f"student written to {out / 'model'} ({stopped}, {position.step} steps, {wall_s:.0f} s)")
    _finish(dist)
    return summary


def best_form(forms, val_accuracy: dict) -> str:
    """The form the served student answers in by default: the highest validation accuracy (never a
    test set), ties to EoT, then PoT, then CoT, the order of the evaluate stage's fallback."""
    order = ("eot", "pot", "cot")
    return max(forms, key=lambda f: (val_accuracy.get(f, 0.0), -order.index(f) if f in order else -len(order)))


def _log_model(tracker, student_dir: Path, run_id: str | None) -> dict:
    """Log the student as an MLflow model through distill.serving (owned by the serving part)."""
    try:
        from distill.serving import log_student
    except ImportError as exc:
        _say(f"MLflow model NOT logged: distill.serving.log_student is not available ({exc})")
        return {"model_logged": False, "model_log_skipped": f"distill.serving unavailable: {exc}"}
    log_student(student_dir, artifact_path="model")
    uri = f"runs:/{run_id}/model"
    tracker.set_tags({"distill.model_uri": uri})
    return {"model_logged": True, "model_uri": uri}


def _finish(dist: Dist) -> None:
    if dist.started_here:
        import torch.distributed as tdist

        tdist.destroy_process_group()
