"""Train stage: fine-tune a student (seq2seq or causal, full or LoRA) on one mix of verified thoughts.

Reads  ``<run_dir>/mix/<mix>/train.jsonl`` and ``val.jsonl``
       (rows {"id","problem_id","form","version","input","target","gold"}, written by the mix stage).
Writes ``<run_dir>/students/<mix>/``
  - ``model/``            the student with the lowest validation loss (save_pretrained model + tokenizer
                          + student.json; a LoRA student merged, or its adapter: distill/student.py)
  - ``card.json``         {"mix","forms":{form:{"version","instruction"}},"best_form","student","kind",
                          "architecture","chat_template","lora","base_model","tokenizer","data_digest",
                          "train_run_id","preset","best_val_loss","best_step","n_params","trainable_params",
                          "training":{hyper-parameters as chosen, "steps", "epochs_run" (fractional:
                          what ran, not train.epochs), "stopped" (max_minutes | max_steps | epochs)}}
  - ``checkpoints/``      transformers Trainer checkpoints (``checkpoint-<step>/``: weights, optimizer,
                          scheduler, RNG, trainer_state.json), the best and the last kept, plus
                          ``resume.json`` {"resume_digest","run_id"} saying which config and MLflow run they belong to
  - ``summary.json``      {"run_id","mix","steps","epochs_done","stopped","best_val_loss","val_accuracy",
                          "step_s" (median seconds per optimizer step after 2 warm-up steps; null under 3
                          timed steps), "step_s_steps" (the steps it was measured over),...}

The stage itself lives here: ``_run`` reads as its table of contents, one named function per step
(read the mix, skip or resume, build the student, plan the batch and schedule, train, write the student
and its card, log to MLflow: params, datasets, ``card.json``, the pyfunc model through
distill.serving.logged_model). The pieces it puts together are in distill/training.py (encoding, the
schedule, precision, LoRA, the Trainer's arguments) and distill/callbacks.py (the Trainer's callbacks).

Skip and resume (one writer per run folder: distill.tracking.writing, main process only):
  - the mix is refused when ``train.jsonl`` / ``val.jsonl`` is empty or shorter than the mix stage
    recorded (``mix/<mix>/summary.json`` "outputs"), naming `distill mix`, which then rebuilds it;
  - skip only when ``summary.json`` has this ``config_digest`` (config and data) and its "outputs"
    (fingerprints of ``card.json`` and every file of ``model/``) still match; a damaged student is
    trained again from scratch, in a new MLflow run, saying why;
  - an interrupted training (``resume.json`` "finished": false) resumes from its newest complete
    checkpoint in its own MLflow run (budget fields may change); a checkpoint is written at every
    epoch end and every ``train.checkpoint_minutes``, so a kill loses minutes;
  - a finished run is never reopened: another config is a new run, continuing the finished
    checkpoints only when the same config asks for more steps, else training afresh.

Training is transformers' ``Seq2SeqTrainer`` (seq2seq students) or ``Trainer`` (causal students):
length-grouped batches (``group_by_length``), dynamic padding (``DataCollatorForSeq2Seq``, which
pads labels with -100 for both kinds), AdamW with a linear/cosine/constant schedule after warm-up,
evaluation and a checkpoint at every epoch end, the best checkpoint by validation loss loaded at the
end, and resume from the last checkpoint. benchmarks/train.py compares it with a hand-written loop.
What the stage adds lives in callbacks: the time budget (``train.max_minutes``), validation
generation accuracy per form, and MLflow logging through distill.tracking (``train/loss``,
``train/lr``, ``val/loss``, ``val/<form>/accuracy``, all on the optimizer-step axis; at the end
``train/steps_run``, ``train/epochs_run``, ``train/step_s`` (distill.callbacks.StepTimer) and the tag
``distill.stopped``).

A causal student sees the same student input as a seq2seq one (question + form instruction; the
chat template when ``train.chat_template``); its loss covers the completion only (labels -100 on
the prompt) and every target ends with EOS. Under ``torchrun`` or ``accelerate launch`` every
process runs this same code (the Trainer runs DDP, or DeepSpeed / FSDP from an accelerate config);
only the main process logs and writes the student.

Over 450 lines: the stage's steps are small named functions with the records they pass (``MixData``,
``Checkpoints``, ``Student``, ``Plan``, ``Trained``), and the untrained starting point (``base_student``)
builds the very model training starts from, so it stays beside it; the reusable pieces live in
distill/training.py and distill/callbacks.py.
"""
from __future__ import annotations

import dataclasses
import math
import os
import shutil
import time
from pathlib import Path
from typing import Any, Sequence

from distill.config import Config, ConfigError, TrainConfig, flatten
from distill.files import (DataError, check_input, file_digest, fingerprints, folder_files, mismatch, read_json,
                           read_jsonl, read_record, write_json)
from distill.layout import RunFolder
from distill.thoughts import parse_mix
from distill.training import (agree_on_micro_batch, apply_lora, collator_for, config_digest, encode,
                              probe_train_memory, quiet_tied_keys, quiet_transformers, replace_dir, resolve_batch,
                              resolve_precision, say, schedule, stop_reason, trainer_for, training_arguments,
                              validation_history, validation_rows, weights_digest)
from distill.tracking import NullTracker, tracker_or_null, writing

ROW_FIELDS = ("id", "form", "input", "target", "gold")
BUDGET_FIELDS = ("epochs", "max_steps", "max_minutes", "val_generate_limit", "log_every")
"""Fields a resumed run may change: they say how long to train, not what a step does."""


def form_cards(forms: Sequence[str]) -> dict:
    """{form: {"version", "instruction"}} from the form modules."""
    from distill.thoughts import get_form

    return {form: {"version": get_form(form).version, "instruction": get_form(form).instruction} for form in forms}


# --- the stage ---------------------------------------------------------------------------------------

def student_files(out: Path) -> dict[str, Path]:
    """What a finished training leaves and its summary records (fingerprints): the card and every
    file of the model folder."""
    return {"card.json": out / "card.json", **folder_files(out / "model", "model/")}


def starting_student(tcfg: TrainConfig, train_rows: Sequence[dict]):
    """(model, tokenizer) as training starts from them: ``train.student`` built (tiny, tiny-causal: seed
    ``train.seed``, tokenizer trained on the rows' inputs and targets) or loaded (a hub name or a
    folder), in fp32. The train stage and the untrained base (``base_student``) both call this, so the
    base is the very model the first optimizer step would change."""
    from distill.student import build_student

    texts = [r["input"] for r in train_rows] + [r["target"] for r in train_rows]
    model, tokenizer = build_student(tcfg.student, texts, train_cfg=tcfg, seed=tcfg.seed)
    return model.float(), tokenizer  # fp32 master weights even if a hub checkpoint is stored in half precision


def run(cfg: Config, run_dir: Path, tracker=None) -> dict:
    """Train a student on ``<run_dir>/mix/<mix>`` (``mix.mix`` of cfg); see the module docstring.

    Skips when summary.json was written by the same config on the same data and the card and model
    folder are still what it recorded; resumes from the last Trainer checkpoint after an interruption,
    in the same MLflow run; a finished run is never reopened: another config, or a damaged student,
    is a new training in a new run. Only the main process takes the run folder's lock (the others of
    a torchrun write nothing). Returns the summary dict.
    """
    tracker = tracker_or_null(tracker)
    if os.environ.get("RANK", "0") != "0":
        return _run(cfg, Path(run_dir), tracker)
    with writing(run_dir, tracker, "train"):
        return _run(cfg, Path(run_dir), tracker)


def _run(cfg: Config, run_dir: Path, tracker) -> dict:
    """The stage, step by step (each step is a function below, in this order)."""
    run_dir = Path(run_dir)
    mix = cfg.mix.mix
    forms = parse_mix(mix)
    tcfg = cfg.train
    data = read_mix(cfg, RunFolder(run_dir).mix(mix), mix)
    digest = config_digest(tcfg, mix, data.digest)
    resume_digest = config_digest(tcfg, mix, data.digest, exclude=BUDGET_FIELDS)
    out = RunFolder(run_dir).student(mix)
    done, damaged = finished_student(out, digest)
    if done.get("config_digest") == digest and damaged is None:
        return {**done, "skipped": True}

    main = os.environ.get("RANK", "0") == "0"
    tracker = tracker if main else NullTracker()  # only the main process logs
    cuda = use_device(tcfg)
    ckpts = checkpoints_to_resume(out / "checkpoints", resume_digest, done, damaged)
    student = prepare_student(tcfg, data.train_rows, cuda)
    plan = plan_training(tcfg, student, data, cuda=cuda, world=int(os.environ.get("WORLD_SIZE", "1")))
    ckpts = continue_or_afresh(ckpts, plan.steps)
    training_args = training_arguments(plan.tcfg, ckpts.dir, plan.steps, student.precision, cuda=cuda,
                                       has_val=bool(plan.val_features))
    # the other processes wait here until the main one has cleared what is stale
    with training_args.main_process_first(local=False):
        if main and not ckpts.last:  # a stale checkpoint must not become the student or be resumed
            shutil.rmtree(ckpts.dir, ignore_errors=True)

    tags = {"distill.stage": "train", "distill.mix": mix, "distill.forms": ",".join(forms),
            "distill.preset": cfg.preset, "distill.student": tcfg.student, "distill.student_kind": student.kind}
    with tracker.run(f"train-{mix}", tags, nested=True, run_id=run_to_resume(tracker, ckpts)):
        record = {"resume_digest": resume_digest, "config_digest": digest, "run_id": tracker.run_id}
        if main:
            ckpts.dir.mkdir(parents=True, exist_ok=True)
            write_json(ckpts.file, {**record, "finished": False})
        log_start(tracker, cfg, mix, tags, data, student, plan, resumed=bool(ckpts.last))
        trained = fit(student, plan, training_args, data.val_rows, tracker, ckpts, record, main=main)
        summary = training_summary(cfg, mix, forms, student, plan, trained, ckpts.last, digest)
        if not trained.trainer.is_world_process_zero():
            return summary
        card = write_student(cfg, out, mix, forms, student, plan, trained, data.digest, record["run_id"])
        summary.update({"run_id": record["run_id"], "initial_val_loss": trained.initial_val_loss,
                        "best_val_loss": card["best_val_loss"], "best_step": trained.best_step,
                        "val_loss": trained.val_losses[max(trained.val_losses)] if trained.val_losses else None,
                        "val_accuracy": trained.val_accuracy, "model_dir": str(out / "model"), "model_logged": False})
        log_end(tracker, card, summary, trained)
        summary.update(log_model(tracker, out, cfg))
        # the checkpoints now belong to a finished training: a rerun with a longer budget continues them
        # in a new run, never in this one
        write_json(ckpts.file, {**read_record(ckpts.file), "finished": True})
        summary["outputs"] = fingerprints(student_files(out))  # what a rerun checks before it skips
        write_json(out / "summary.json", summary)
    say(f"student written to {out / 'model'} ({trained.stopped}, {trained.trainer.state.global_step} steps, "
        f"{trained.wall_s:.0f} s)")
    return summary


# --- the steps of the stage, in the order _run takes them ---------------------------------------------

@dataclasses.dataclass(frozen=True)
class MixData:
    """The mix a student is trained on: its rows and the digest of ``train.jsonl`` (the card's data_digest)."""
    dir: Path
    train_rows: list[dict]
    val_rows: list[dict]
    digest: str


def read_mix(cfg: Config, mix_dir: Path, mix: str) -> MixData:
    """``mix/<mix>/train.jsonl`` and ``val.jsonl``, refused when empty or shorter than the mix stage
    recorded (it would train on less), naming the command that writes them again."""
    hint = f"Write it with `distill mix --preset {cfg.preset} --mix {mix}`."
    written = read_record(mix_dir / "summary.json").get("outputs") or {}
    for name in ("train.jsonl",) + (("val.jsonl",) if (mix_dir / "val.jsonl").exists() or "val.jsonl" in written else ()):
        check_input(mix_dir / name, written.get(name), f"distill mix --preset {cfg.preset} --mix {mix}")
    train_rows = read_jsonl(mix_dir / "train.jsonl", ROW_FIELDS, hint)
    val_rows = read_jsonl(mix_dir / "val.jsonl", ROW_FIELDS, hint) if (mix_dir / "val.jsonl").exists() else []
    if not train_rows:
        raise DataError(f"{mix_dir / 'train.jsonl'}: no training rows. {hint}")
    return MixData(mix_dir, train_rows, val_rows, file_digest(mix_dir / "train.jsonl"))


def finished_student(out: Path, digest: str) -> tuple[dict, str | None]:
    """(``summary.json`` of a finished student, of any config ({} when none or unreadable); what changed
    in its card or model since, when it is of this config (``digest``), else None). Intact and of this
    config: the stage skips."""
    summary_path = out / "summary.json"
    done = read_record(summary_path)
    damaged = None
    if done.get("config_digest") == digest:
        damaged = mismatch(done.get("outputs"), student_files(out))
        if damaged is None:
            say(f"{summary_path} is complete for this config and data, and its card and model are what it "
                "recorded; skipping (delete it to retrain)")
        else:
            say(f"{out}: {damaged} since the student was written; training it again (a new MLflow run)")
    elif done:
        say(f"{out} holds a student finished with another config or data (digest {done.get('config_digest')}, "
            f"now {digest}): this is a new training, in a new MLflow run")
    return done, damaged


def use_device(tcfg: TrainConfig) -> bool:
    """Whether a GPU trains; on a CPU, ``train.threads`` torch threads (0: torch's default)."""
    import torch

    cuda = torch.cuda.is_available()
    if not cuda and tcfg.threads:
        torch.set_num_threads(tcfg.threads)
    return cuda


@dataclasses.dataclass(frozen=True)
class Checkpoints:
    """``students/<mix>/checkpoints/``: its ``resume.json`` record and the checkpoint training starts
    from (``last``, None: from scratch), of an interrupted training or of a finished one."""
    dir: Path
    resume: dict
    last: str | None
    interrupted: bool

    @property
    def file(self) -> Path:
        return self.dir / "resume.json"


def checkpoints_to_resume(ckpt_dir: Path, resume_digest: str, done: dict, damaged: str | None) -> Checkpoints:
    """The last checkpoint, if it was written by this config (budget fields aside) on this data.
    Checkpoints of an interrupted training are resumed (in its MLflow run); those of a finished one
    (resume.json says so; an older one without the flag counts as finished when summary.json exists)
    are only continued by a longer budget, in a new run, and never when the student is damaged."""
    resume = read_json(ckpt_dir / "resume.json", default={})
    last = last_complete_checkpoint(ckpt_dir)
    if last and resume.get("resume_digest") != resume_digest:
        say(f"{ckpt_dir} was trained with another config or data; starting afresh")
        last = None
    interrupted = bool(last) and not resume.get("finished", bool(done))
    if last and not interrupted and damaged:
        last = None
    return Checkpoints(ckpt_dir, resume, last, interrupted)


@dataclasses.dataclass(frozen=True)
class Student:
    """The model as training starts from it (LoRA adapters added), with what the card says about it."""
    model: Any
    tokenizer: Any
    kind: str  # seq2seq | causal
    chat: bool  # prompts go through the tokenizer's chat template
    precision: str
    architecture: str
    n_params: int
    trainable: int
    tokenizer_desc: str

    @property
    def causal(self) -> bool:
        return self.kind == "causal"


def prepare_student(tcfg: TrainConfig, train_rows: Sequence[dict], cuda: bool) -> Student:
    """``starting_student`` with its precision (bf16 where the GPU has it; never fp16 for a T5, it
    overflows: distill.training.resolve_precision), its chat template checked, and LoRA applied."""
    from distill.student import TINY_STUDENTS, count_parameters, student_kind

    model, tokenizer = starting_student(tcfg, train_rows)
    precision = resolve_precision(tcfg.precision, cuda, model_type=getattr(model.config, "model_type", ""))
    kind = student_kind(model)
    chat = kind == "causal" and tcfg.chat_template
    if tcfg.chat_template and kind != "causal":
        say("train.chat_template applies to causal students only; ignored for this seq2seq student")
    if chat and not getattr(tokenizer, "chat_template", None):
        raise ConfigError(f"train.chat_template: {tcfg.student}'s tokenizer has no chat template; "
                          "set train.chat_template=false (base models) or pick an instruct model")
    model.config.distill_chat_template = chat
    architecture = (getattr(model.config, "architectures", None) or [type(model).__name__])[0]
    n_params = count_parameters(model)
    model = apply_lora(model, tcfg, kind)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    tokenizer_desc = (f"byte-level BPE, {len(tokenizer)} tokens, trained on the training texts"
                      if tcfg.student in TINY_STUDENTS else tcfg.student)
    return Student(model, tokenizer, kind, chat, precision, architecture, n_params, trainable, tokenizer_desc)


@dataclasses.dataclass(frozen=True)
class Plan:
    """What this invocation trains: the settings with the micro-batch and accumulation resolved, the step
    schedule (distill.training.schedule), the encoded rows, and where."""
    tcfg: TrainConfig
    steps: dict
    batch_reason: str
    features: list[dict]
    val_features: list[dict]
    cuda: bool
    world: int


def plan_training(tcfg: TrainConfig, student: Student, data: MixData, *, cuda: bool, world: int) -> Plan:
    """Encode the rows, then choose the micro-batch: the config's number, or ``auto`` sized to this device
    (a probe on a GPU), agreed on by every process."""
    tokenizer = student.tokenizer
    features = encode(tokenizer, data.train_rows, tcfg, causal=student.causal, chat_template=student.chat)
    val_features = encode(tokenizer, data.val_rows, tcfg, causal=student.causal, chat_template=student.chat)

    def probe():
        padding_side, tokenizer.padding_side = tokenizer.padding_side, "right"
        try:
            return probe_train_memory(student.model, features, collator_for(student.model, tokenizer,
                                                                            causal=student.causal), student.precision)
        finally:
            tokenizer.padding_side = padding_side

    micro, accum, batch_reason = resolve_batch(tcfg, cuda=cuda, world=world, probe=probe)
    if tcfg.batch_size == "auto":
        micro, accum = agree_on_micro_batch(micro, accum, tcfg.effective_batch_size, world)
        say(f"train.batch_size=auto -> {micro} x {accum} accumulation ({batch_reason})")
    tcfg = dataclasses.replace(tcfg, batch_size=micro, grad_accum=accum)
    return Plan(tcfg, schedule(len(features), tcfg, world), batch_reason, features, val_features, cuda, world)


def continue_or_afresh(ckpts: Checkpoints, steps: dict) -> Checkpoints:
    """A finished training's checkpoint is continued only when this budget has more steps than it."""
    last = ckpts.last
    if last and not ckpts.interrupted:
        done_steps = int(last.rsplit("-", 1)[1])
        if done_steps >= steps["total_steps"]:
            say(f"the finished student's checkpoint has {done_steps} steps, as many as or more than this budget's "
                f"{steps['total_steps']}; training afresh")
            last = None
        else:
            say(f"continuing the finished student's {done_steps} steps to {steps['total_steps']} (a new MLflow run)")
    if last and ckpts.interrupted:
        say(f"resuming from {last}")
    return dataclasses.replace(ckpts, last=last)


def run_to_resume(tracker, ckpts: Checkpoints) -> str | None:
    """The MLflow run an interrupted training continues in; None (a new run) otherwise."""
    resume_run = ckpts.resume.get("run_id") if ckpts.last and ckpts.interrupted and not os.environ.get(
        "MLFLOW_RUN_ID") else None
    if resume_run and tracker.status(resume_run) in (None, "FINISHED"):
        return None  # a finished run is never reopened (nor one that is not in this store)
    if tracker.run_id is not None:
        return None  # nested under a parent (reproduce): its unfinished child of this name, or a new one
    return resume_run


def log_params(tracker, params: dict, tags: dict, *, resumed: bool, say=say) -> None:
    """The run's params and tags; a resumed run keeps the params it logged before the interruption
    (MLflow params are immutable, and a resumed run may have changed its budget). The rl stage's too."""
    try:
        tracker.log_params(params)
    except Exception as exc:
        if not resumed:
            raise
        say(f"kept the params logged before the interruption ({type(exc).__name__})")
    tracker.set_tags(tags)


def log_start(tracker, cfg: Config, mix: str, tags: dict, data: MixData, student: Student, plan: Plan, *,
              resumed: bool) -> None:
    """The run's params (the config and what was resolved), its tags and, for a new run, the datasets."""
    import torch

    params = {**flatten(cfg), "mix.mix": mix, "train.n_params": student.n_params,
              "train.trainable_params": student.trainable, "train.kind": student.kind,
              "train.architecture": student.architecture, "train.device": "cuda" if plan.cuda else "cpu",
              "train.world_size": plan.world, "train.torch_threads": torch.get_num_threads(),
              "train.train_examples": len(plan.features), "train.val_examples": len(plan.val_features),
              "train.precision_resolved": student.precision, "train.batch_size_resolved": plan.tcfg.batch_size,
              "train.grad_accum_resolved": plan.tcfg.grad_accum, "train.batch_size_reason": plan.batch_reason,
              **{f"train.{k}": v for k, v in plan.steps.items()}}
    log_params(tracker, params, tags, resumed=resumed)
    if not resumed:
        tracker.log_dataset(data.train_rows, f"mix-{mix}-train", str(data.dir / "train.jsonl"), "training")
        if data.val_rows:
            tracker.log_dataset(data.val_rows, f"mix-{mix}-val", str(data.dir / "val.jsonl"), "validation")


@dataclasses.dataclass(frozen=True)
class Trained:
    """What ``fit`` leaves: the Trainer (its model is the best checkpoint's) and what was measured."""
    trainer: Any
    stopped: str  # max_minutes | max_steps | epochs
    initial_val_loss: float | None
    best_step: int | None
    val_losses: dict
    val_accuracy: dict
    wall_s: float
    train_s: float
    step_s: float | None
    step_s_steps: int


def fit(student: Student, plan: Plan, training_args, val_rows: Sequence[dict], tracker, ckpts: Checkpoints,
        record: dict, *, main: bool) -> Trained:
    """The Trainer with the stage's callbacks (distill/callbacks.py), the untrained model's validation loss
    (where the curve starts), then training from ``ckpts.last`` or from scratch."""
    import torch
    from transformers import set_seed

    from distill.callbacks import CheckpointClock, StepTimer, TimeBudget, Tracking, ValidationAccuracy

    tcfg, tokenizer = plan.tcfg, student.tokenizer
    say(f"{tcfg.student} ({student.kind}, {student.architecture}): {student.n_params:,} params "
        f"({student.trainable:,} trained), {len(plan.features)} train / {len(plan.val_features)} val rows, "
        f"{plan.steps['total_steps']} steps, {'cuda' if plan.cuda else 'cpu'} {student.precision}, "
        f"{plan.world} process(es), {torch.get_num_threads()} thread(s)")
    gen_rows = validation_rows(val_rows, tcfg.val_generate_limit, tcfg.seed)
    # validation decoding stops a little past the longest training target: an untrained student
    # that never says EOS would otherwise run all 256 steps at every evaluation (evaluate uses 256)
    longest = max(sum(1 for x in f["labels"] if x != -100) for f in plan.features)
    gen_tokens = min(tcfg.max_target_len, longest + 16)
    budget = TimeBudget(tcfg.max_minutes)
    timer = StepTimer()  # s per optimizer step, measured in the training (summary "step_s")
    # training pads on the right (positions start at 0 for every row); generation pads on the left
    padding_side = tokenizer.padding_side
    tokenizer.padding_side = "right"
    trainer = trainer_for(student.model, tokenizer, training_args, plan.features, plan.val_features,
                          causal=student.causal,
                          callbacks=[budget, CheckpointClock(tcfg.checkpoint_minutes),  # a kill loses minutes
                                     timer, Tracking(tracker),
                                     ValidationAccuracy(tokenizer, gen_rows, tracker, tcfg.max_source_len,
                                                        gen_tokens, tcfg.batch_size * 2)])

    initial_val_loss = ckpts.resume.get("initial_val_loss") if ckpts.last else None
    if plan.val_features and not ckpts.last:
        # the untrained model's loss: where the validation curve starts (step 0; Tracking logs it)
        initial_val_loss = trainer.evaluate()["eval_loss"]
        if main:
            write_json(ckpts.file, {**record, "initial_val_loss": initial_val_loss, "finished": False})
    # the evaluation above drew from torch's global generator in a fresh run and not in a resumed
    # one: seed it here again, so what the first steps draw (dropout) does not depend on it. The data
    # order of each epoch is distill.training.EpochSeededSampler's (seed and epoch only); a resumed
    # run restores the generator from its checkpoint, so both give the same weights (tested)
    set_seed(tcfg.seed)
    t0 = time.monotonic()
    with quiet_transformers(), quiet_tied_keys(trainer.model):
        result = trainer.train(resume_from_checkpoint=ckpts.last or None)
    wall_s = time.monotonic() - t0
    tokenizer.padding_side = padding_side
    state = trainer.state
    best_step = int(state.best_model_checkpoint.rsplit("-", 1)[1]) if state.best_model_checkpoint else None
    val_losses, val_accuracy = validation_history(state.log_history, best_step)
    step_s, step_s_steps = timer.seconds_per_step()
    return Trained(trainer, stop_reason(state, budget, tcfg, plan.steps), initial_val_loss, best_step, val_losses,
                   val_accuracy, wall_s, float(result.metrics.get("train_runtime", wall_s)), step_s, step_s_steps)


def training_summary(cfg: Config, mix: str, forms: Sequence[str], student: Student, plan: Plan, trained: Trained,
                     last: str | None, digest: str) -> dict:
    """summary.json's fields known when training ends (every process; ``weights_sha256`` under several)."""
    state = trained.trainer.state
    steps_now = state.global_step - (int(last.rsplit("-", 1)[1]) if last else 0)
    summary = {"mix": mix, "forms": list(forms), "student": plan.tcfg.student, "kind": student.kind,
               "preset": cfg.preset, "steps": state.global_step,
               "epochs_done": int(math.ceil((state.epoch or 0) - 1e-9)), "stopped": trained.stopped,
               "train_examples": len(plan.features), "n_params": student.n_params,
               "trainable_params": student.trainable, "wall_s": round(trained.wall_s, 1),
               "train_s": round(trained.train_s, 1),
               "examples_per_s": round(steps_now * plan.steps["effective_batch_size"] / max(trained.train_s, 1e-9), 1),
               "step_s": None if trained.step_s is None else round(trained.step_s, 4),
               "step_s_steps": trained.step_s_steps, "config_digest": digest}
    if plan.world > 1:
        summary["weights_sha256"] = weights_digest(trained.trainer.model)
    return summary


def lora_card(tcfg: TrainConfig) -> dict | None:
    """The card's "lora": the adapter's settings, None for full fine-tuning."""
    if not tcfg.lora_r:
        return None
    return {"r": tcfg.lora_r, "alpha": tcfg.lora_alpha, "dropout": tcfg.lora_dropout,
            "targets": list(tcfg.lora_targets) or "all-linear", "merged": tcfg.lora_merge}


def hyperparameters(plan: Plan, student: Student) -> dict:
    """The card's "training": the hyper-parameters as chosen (the resolved batch, the schedule's warm-up)."""
    tcfg, steps = plan.tcfg, plan.steps
    return {"trainer": "transformers." + ("Seq2SeqTrainer" if not student.causal else "Trainer"),
            "optimizer": "AdamW(betas=(0.9, 0.999), eps=1e-8)", "lr": tcfg.lr, "weight_decay": tcfg.weight_decay,
            "max_grad_norm": tcfg.max_grad_norm, "scheduler": tcfg.scheduler, "warmup_steps": steps["warmup_steps"],
            "batch_size": tcfg.batch_size, "grad_accum": tcfg.grad_accum, "batch_size_reason": plan.batch_reason,
            "effective_batch_size": steps["effective_batch_size"], "epochs": tcfg.epochs,
            "max_source_len": tcfg.max_source_len, "max_target_len": tcfg.max_target_len,
            "precision": student.precision, "group_by_length": tcfg.group_by_length, "seed": tcfg.seed,
            "max_steps": tcfg.max_steps, "max_minutes": tcfg.max_minutes, "lora": lora_card(tcfg),
            "loss": "completion tokens only (prompt labels -100)" if student.causal else "target tokens"}


def write_student(cfg: Config, out: Path, mix: str, forms: Sequence[str], student: Student, plan: Plan,
                  trained: Trained, data_digest: str, run_id: str | None) -> dict:
    """``model/`` (the best checkpoint's weights, merged or as an adapter, swapped in whole) and
    ``card.json``; returns the card."""
    from distill.student import TINY_STUDENTS, save_student

    tcfg, lora, state = plan.tcfg, lora_card(plan.tcfg), trained.trainer.state
    final, base_model = trained.trainer.model, None
    if lora:
        if tcfg.lora_merge:
            final = final.merge_and_unload()
        else:
            base_model = "base/ (built from a config, saved beside the adapter)" \
                if tcfg.student in TINY_STUDENTS else tcfg.student
    tmp = out / ".model.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    info = {"chat_template": student.chat, "architecture": student.architecture,
            "adapter": bool(lora and not tcfg.lora_merge), "base_model": base_model}
    with quiet_transformers():
        save_student(final, student.tokenizer, tmp, info)
        if lora and not tcfg.lora_merge:
            # the base's config.json beside the adapter marks the folder as a model for the stages that
            # look for one (evaluate); distill.student.load_student sees adapter_config.json first
            final.get_base_model().config.save_pretrained(tmp)
            if tcfg.student in TINY_STUDENTS:
                # no hub copy of a base built here: the adapter needs it beside
                save_student(final.unload(), student.tokenizer, tmp / "base", {**info, "adapter": False})
    replace_dir(tmp, out / "model")
    card = {"mix": mix, "forms": form_cards(forms), "student": tcfg.student,
            "best_form": best_form(forms, trained.val_accuracy), "kind": student.kind,
            "architecture": student.architecture, "chat_template": student.chat, "lora": lora,
            "base_model": base_model, "tokenizer": student.tokenizer_desc, "data_digest": data_digest,
            "train_run_id": run_id, "preset": cfg.preset,
            "best_val_loss": state.best_metric if plan.val_features else None, "best_step": trained.best_step,
            "n_params": student.n_params, "trainable_params": student.trainable,
            "training": {**hyperparameters(plan, student), "steps": state.global_step,
                         "epochs_run": round(state.epoch or 0.0, 3), "stopped": trained.stopped,
                         "step_s": None if trained.step_s is None else round(trained.step_s, 4),
                         "step_s_steps": trained.step_s_steps}}
    write_json(out / "card.json", card)
    return card


def log_end(tracker, card: dict, summary: dict, trained: Trained) -> None:
    """The card, the throughput, what ran beside what was configured (train.epochs, train.max_steps: the
    report shows both) and why it stopped."""
    state = trained.trainer.state
    tracker.log_dict(card, "card.json")
    tracker.log_metrics({"train/examples_per_s": summary["examples_per_s"]}, step=state.global_step)
    if trained.step_s is not None:
        tracker.log_metrics({"train/step_s": trained.step_s}, step=state.global_step)
    tracker.log_metrics({"train/steps_run": state.global_step, "train/epochs_run": state.epoch or 0.0})
    tracker.set_tags({"distill.stopped": trained.stopped})


def last_complete_checkpoint(ckpt_dir: Path) -> str | None:
    """The newest Trainer checkpoint that was written to the end, or None. The Trainer writes
    ``trainer_state.json`` last, straight into the folder: a kill while saving leaves a newer folder
    without it (or with it cut), which is removed here, so the resume starts from the one before."""
    import json

    if not ckpt_dir.is_dir():
        return None
    found = sorted((p for p in ckpt_dir.glob("checkpoint-*") if p.is_dir() and p.name.split("-")[-1].isdigit()),
                   key=lambda p: int(p.name.split("-")[-1]), reverse=True)
    for path in found:
        try:
            json.loads((path / "trainer_state.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            say(f"{path} was not written to the end (killed while saving); removed, resuming from the one before")
            shutil.rmtree(path, ignore_errors=True)
            continue
        return str(path)
    return None


def best_form(forms, val_accuracy: dict) -> str:
    """The form the served student answers in by default: the highest validation accuracy (never a
    test set), ties to EoT, then PoT, then CoT, the order of the evaluate stage's fallback."""
    from distill.thoughts import combine_order

    order = combine_order()
    return max(forms, key=lambda f: (val_accuracy.get(f, 0.0), -order.index(f) if f in order else -len(order)))


def log_model(tracker, student_dir: Path, cfg: Config) -> dict:
    """Log the student as an MLflow pyfunc model of the tracker's run through distill.serving, decoding and
    checking answers as the evaluate stage does (serving_settings), so the served answer is the evaluated
    one; the train and rl stages' summary fields ``model_logged`` and ``model_uri`` ({} without tracking)."""
    def log() -> None:
        from distill.serving.logged_model import log_student, serving_settings

        log_student(student_dir, artifact_path="model", **serving_settings(cfg))

    uri = tracker.log_model(log, "model")
    return {} if uri is None else {"model_logged": True, "model_uri": uri}


# --- the untrained starting point ----------------------------------------------------------------

def base_student(cfg: Config, run_dir: Path) -> Path:
    """Write ``<run_dir>/students/<mix>-base/``: the configured student as it comes, before any training,
    asked with the mix's forms; return the folder. ``distill evaluate --untrained`` evaluates it.

    - ``train.student`` tiny / tiny-causal: ``model/`` is what the train stage starts from
      (``starting_student``: same seed, the tokenizer trained on ``mix/<mix>/train.jsonl``), an
      untrained random model; so the mix must have been written (`distill mix`).
    - a hub name or a local folder: no weights are copied (about 1 GB for Qwen2.5-0.5B, and nothing
      in them changes); the card names them under ``weights`` {"source", "folder", "revision"} and
      distill.student.resolve_student loads them from there (offline: the HF cache).

    ``card.json``: {"mix", "variant": "base", "forms", "best_form": null (no validation choice is made
    for an untrained model), "student", "kind", "architecture", "chat_template", "lora": null,
    "train_run_id": null, "preset", "n_params", "tokenizer", "data_digest": null, "tokenizer_data_digest"
    (tiny students: the training texts their tokenizer was trained on), "weights", "config_digest"}.
    A folder written by the same train settings (and data, for a tiny student) is kept as it is.
    """
    from distill.student import TINY_STUDENTS, count_parameters, save_student, student_kind
    from distill.thoughts import parse_mix, student_name
    from distill.training import config_digest

    run_dir = Path(run_dir)
    mix = cfg.mix.mix
    forms = parse_mix(mix)
    tcfg = cfg.train
    out = RunFolder(run_dir).student(student_name(mix, "base"))
    tiny = tcfg.student in TINY_STUDENTS
    rows, data_digest = [], None
    if tiny:  # the tokenizer of a student built here is trained on the mix's texts, as in training
        mix_dir = RunFolder(run_dir).mix(mix)
        hint = (f"{tcfg.student} builds its tokenizer from the mix's training texts: write it with "
                f"`distill mix --preset {cfg.preset} --mix {mix}`.")
        rows = read_jsonl(mix_dir / "train.jsonl", ROW_FIELDS, hint)
        if not rows:
            raise DataError(f"{mix_dir / 'train.jsonl'}: no training rows. {hint}")
        data_digest = file_digest(mix_dir / "train.jsonl")
    digest = config_digest(tcfg, mix, data_digest or "")
    card_path = out / "card.json"
    if read_record(card_path).get("config_digest") == digest and (not tiny or (out / "model" / "config.json").is_file()):
        say(f"{out}: the untrained {tcfg.student} for these settings is already there; kept")
        return out
    model, tokenizer = starting_student(tcfg, rows)
    kind = student_kind(model)
    chat = kind == "causal" and tcfg.chat_template
    if chat and not getattr(tokenizer, "chat_template", None):
        raise ConfigError(f"train.chat_template: {tcfg.student}'s tokenizer has no chat template; "
                          "set train.chat_template=false (base models) or pick an instruct model")
    model.config.distill_chat_template = chat
    architecture = (getattr(model.config, "architectures", None) or [type(model).__name__])[0]
    card = {"mix": mix, "variant": "base", "forms": form_cards(forms), "best_form": None, "student": tcfg.student,
            "kind": kind, "architecture": architecture, "chat_template": chat, "lora": None, "base_model": None,
            "train_run_id": None, "preset": cfg.preset, "n_params": count_parameters(model), "data_digest": None,
            "tokenizer_data_digest": data_digest, "config_digest": digest,
            "tokenizer": (f"byte-level BPE, {len(tokenizer)} tokens, trained on the training texts" if tiny
                          else tcfg.student)}
    out.mkdir(parents=True, exist_ok=True)
    if tiny:
        card["weights"] = {"source": f"built from a config (seed {tcfg.seed}), untrained", "folder": "model/",
                           "revision": None}
        tmp = out / ".model.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        with quiet_transformers():
            save_student(model, tokenizer, tmp, {"chat_template": chat, "architecture": architecture})
        replace_dir(tmp, out / "model")
    else:
        from distill.student import referenced_weights

        folder = referenced_weights(tcfg.student)
        # a hub cache snapshot folder is named by the hub commit it holds
        revision = folder.name if folder.parent.name == "snapshots" else None
        card["weights"] = {"source": tcfg.student, "folder": str(folder), "revision": revision}
        shutil.rmtree(out / "model", ignore_errors=True)  # an earlier tiny base: not this student
    write_json(card_path, card)
    say(f"{out}: {tcfg.student} as it comes, untrained ({card['n_params']:,} params, "
        f"{'weights in model/' if tiny else 'weights from ' + card['weights']['folder']})")
    return out
