"""RL stage: reinforcement learning after SFT, with the forms' own verifiers as the reward (GRPO).

Reads  ``<run_dir>/mix/<mix>/train.jsonl`` and ``val.jsonl`` (the mix stage) and the starting policy:
       ``<run_dir>/students/<mix>/`` (the train stage's student: ``model/`` and ``card.json``, which
       gives the forms, their versions and whether prompts use the chat template), or ``rl.start``
       (a hub name or a model folder; then ``train.chat_template`` says whether they do).
Writes ``<run_dir>/students/<mix>-grpo/`` (distill.thoughts.student_name), a student like any other:
  - ``model/``        the policy after RL (save_student; a LoRA policy merged), swapped in atomically
  - ``card.json``     the parent's card fields (mix, forms, kind, architecture, chat_template,
                      data_digest, ...) plus "variant": "grpo", "train_run_id" (the rl run: register
                      reads it), "best_form" (by validation accuracy after RL), "parent" {"folder" or
                      "start", "train_run_id", "best_form", "val_accuracy"}, "reward" {its rule and
                      settings}, "rl" {the settings as chosen, "steps", "stopped"}
  - ``checkpoints/``  GRPOTrainer checkpoints (``checkpoint-<step>/``) and ``resume.json``
                      {"resume_digest","config_digest","run_id","finished"}
  - ``summary.json``  {"run_id","mix","name","variant","steps","stopped","val_accuracy_before",
                      "val_accuracy","rewards" (mean reward per optimizer step),"wall_s","step_s" (median
                      seconds per optimizer step after 2 warm-up steps, distill.callbacks.StepTimer; null
                      under 3 timed steps),"step_s_steps","completions_per_step","config_digest",
                      "outputs" (fingerprints of card.json and model/),"model_logged","model_uri"}

The prompts are exactly the SFT student's input (question + the form's instruction, the chat
template when the card says so; cut from the left to ``rl.max_prompt_length`` tokens as
distill.decoding.encode_prompts cuts them), ONE PROMPT PER TRAINING PROBLEM PER FORM of the mix: every
form is asked equally often, also on the problems where the teacher's sample of that form was
dropped by the verifier (the question and gold come from the mix's rows; validation and test
problems never appear). Training is TRL's ``GRPOTrainer``: ``rl.num_generations`` completions per
prompt at ``rl.temperature``, advantages within each group, KL coefficient ``rl.beta`` against the
starting policy, LoRA when ``rl.lora_r``. The reward is distill.rewards.VerifierReward (the sandbox's
worker pool; verify.timeout and verify.strict). ``_run`` reads as the stage's table of contents, one
named function per step; the callbacks (time budget, MLflow logging of the rewards and completions,
step timer) are in distill/callbacks.py (``RLTracking`` renames TRL's logs: ``TRL_METRICS``).

MLflow run ``rl-<mix>`` (tags distill.stage=rl, distill.mix=<mix>, distill.variant=grpo,
distill.parent_run_id; params the config), metrics on the optimizer-step axis:
``rl/<form>/reward``, ``rl/<form>/correct``, ``rl/<form>/parsed``, ``rl/<form>/timeout``,
``rl/timeouts``, and TRL's own logs renamed (``rl/reward``, ``rl/reward_std``, ``rl/kl`` when
rl.beta > 0, ``rl/completion_length``, ``rl/clipped_ratio``, ``rl/entropy``, ``rl/loss``, ``rl/lr``,
``rl/grad_norm``); ``val/<form>/accuracy`` before RL (step 0) and after (the last step), greedy on
the train stage's validation sample (distill.training.validation_rows: ``train.val_generate_limit``
rows, seed ``train.seed``), which register tags as ``val/selected/accuracy`` and promote ranks on;
every ``rl.log_completions_every`` steps a table ``rl/completions/step-<step>.json`` (form, gold,
completion, answer, status, reason, reward); the card; the student as a pyfunc model (``model``).

Skip and resume as the train stage: a summary with this config digest (rl section, mix data, the
parent's card and weights, the verifier's settings) whose outputs still match is skipped; an
interrupted run resumes from its newest complete checkpoint in its own MLflow run; budget fields
(max_steps, max_minutes, ...) may change between the two. One writer per run folder.

A seq2seq student (tiny, CodeT5) is refused: TRL's GRPOTrainer samples from causal LMs only.

Over 450 lines: this docstring (the stage's contract) and one short function per step of ``_run``.
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from distill.config import SCHEDULERS, Config, ConfigError, RLConfig, flatten
from distill.files import (DataError, check_input, file_digest, fingerprints, mismatch, read_json, read_jsonl,
                           read_record, settings_digest, write_json)
from distill.layout import RunFolder
from distill.tracking import NullTracker, tracker_or_null, writing
from distill.training import (quiet_transformers, replace_dir, resolve_precision, validation_accuracy,
                              validation_rows)

VARIANT = "grpo"
BUDGET_FIELDS = ("max_steps", "max_minutes", "checkpoint_every", "log_completions_every", "log_completions_rows",
                 "val_generate_limit")
"""Fields a resumed run may change: they say how long to train and what to log, not what a step does."""
SEQ2SEQ_REFUSED = ("distill rl: TRL's GRPOTrainer supports causal (decoder-only) students only, and {what} is "
                   "seq2seq; train a causal student first (e.g. --set train.student=tiny-causal, or "
                   "Qwen/Qwen2.5-0.5B-Instruct) or start from one with --set rl.start=NAME")


def say(message: str) -> None:
    if os.environ.get("RANK", "0") == "0":
        print(f"[rl] {message}", file=sys.stderr, flush=True)


def question_of(row: dict) -> str:
    """The question inside a mix row's student input ('Question: ' + question + '\\n' + instruction + '\\n')."""
    from distill.thoughts import get_form

    text, suffix = row["input"], "\n" + get_form(row["form"]).instruction + "\n"
    if not (text.startswith("Question: ") and text.endswith(suffix)):
        raise DataError(f"mix row {row.get('id')}: its input is not 'Question: ...' + the {row['form']} instruction; "
                        "rebuild the mix with this version of distill (`distill mix`)")
    return text[len("Question: "):-len(suffix)]


def prompt_rows(rows: list[dict], forms, limit: int | None = None) -> list[dict]:
    """One row {"problem_id","form","input","gold"} per training problem (in the mix's order, the first
    ``limit``) per form, the input being that form's student input."""
    from distill.thoughts import get_form

    problems: dict[str, dict] = {}
    for row in rows:
        problems.setdefault(row["problem_id"], {"question": question_of(row), "gold": float(row["gold"])})
    picked = list(problems.items())[:limit] if limit else list(problems.items())
    return [{"problem_id": pid, "form": form, "input": get_form(form).student_input(p["question"]), "gold": p["gold"]}
            for pid, p in picked for form in forms]


def prompt_texts(tokenizer, inputs: list[str], *, chat_template: bool, max_len: int) -> list[str]:
    """The prompt strings GRPOTrainer tokenizes: the SFT token ids (encode_prompts: chat template, cut
    from the left) written back as text, without a leading BOS that the tokenizer adds again."""
    from distill.decoding import encode_prompts

    ids = encode_prompts(tokenizer, inputs, causal=True, max_len=max_len, chat_template=chat_template)
    bos = tokenizer.bos_token_id
    adds_bos = bos is not None and not chat_template and tokenizer("x")["input_ids"][:1] == [bos]
    return [tokenizer.decode(x[1:] if adds_bos and x[:1] == [bos] else x) for x in ids]


def rl_digest(rcfg: RLConfig, cfg: Config, mix: str, data_digest: str, parent: str, exclude=()) -> str:
    fields = {k: v for k, v in dataclasses.asdict(rcfg).items() if k not in exclude}
    return settings_digest({"rl": fields, "mix": mix, "data": data_digest, "parent": parent,
                            "verify": [cfg.verify.timeout, cfg.verify.strict], "precision": cfg.train.precision,
                            "val": [cfg.train.val_generate_limit, cfg.train.seed] if "val_generate_limit" not in exclude
                            else None})


def run(cfg: Config, run_dir: Path, tracker=None) -> dict:
    """RL on the student of ``mix.mix``; see the module docstring. Returns the summary."""
    if os.environ.get("RANK", "0") != "0":
        return _run(cfg, Path(run_dir), NullTracker())
    tracker = tracker_or_null(tracker)
    with writing(run_dir, tracker, "rl"):
        return _run(cfg, Path(run_dir), tracker)


def starting_point(cfg: Config, run_dir: Path) -> tuple[str, dict, bool, str]:
    """(model path or name, parent card, chat template, parent digest) of the starting policy (the
    student of ``mix.mix``, or ``rl.start``); a seq2seq one is refused here, before anything is loaded."""
    rcfg, mix = cfg.rl, cfg.mix.mix
    if rcfg.start:
        from transformers import AutoConfig

        try:
            config = AutoConfig.from_pretrained(rcfg.start)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"rl.start={rcfg.start!r}: {str(exc).splitlines()[0]}; give a hub name (with internet) "
                              "or a model folder, or leave rl.start empty to start from the trained student") from None
        if config.is_encoder_decoder:
            raise ConfigError(SEQ2SEQ_REFUSED.format(what=rcfg.start))
        return rcfg.start, {}, cfg.train.chat_template, hashlib.sha256(rcfg.start.encode()).hexdigest()[:16]
    from distill.stages.evaluate import check_default_student
    from distill.stages.train import student_files

    parent = RunFolder(run_dir).student(mix)
    if not (parent / "card.json").is_file() or not (parent / "model").is_dir():
        raise DataError(f"{parent}: no trained student of mix {mix!r} to start from; train one first "
                        f"(`distill train --preset {cfg.preset} --mix {mix} --set train.student=tiny-causal`) "
                        "or name a model with --set rl.start=NAME")
    check_default_student(cfg, run_dir, mix)  # its files are what `distill train` recorded
    card = read_json(parent / "card.json", "the parent student's card cannot be read: retrain it")
    if card.get("kind") == "seq2seq":
        raise ConfigError(SEQ2SEQ_REFUSED.format(what=f"the {mix} student ({card.get('student')})"))
    from distill.student import stale_form

    stale = stale_form(card)
    if stale:
        form, trained, current = stale
        raise DataError(f"{parent}: trained on {form} version {trained}, but this code has version "
                        f"{current}: its rewards would check another format; retrain it "
                        f"(`distill train --preset {cfg.preset} --mix {mix}`)")
    digest = settings_digest(fingerprints(student_files(parent)))
    return str(parent / "model"), card, bool(card.get("chat_template")), digest


def _run(cfg: Config, run_dir: Path, tracker) -> dict:
    """The stage, step by step (each step is a function below, in this order)."""
    from distill.stages.train import log_model, log_params, student_files, use_device
    from distill.thoughts import parse_mix, student_name

    mix = cfg.mix.mix
    forms = parse_mix(mix)
    rcfg = cfg.rl
    name = student_name(mix, VARIANT)
    start, parent_card, chat, parent_digest = starting_point(cfg, run_dir)
    train_rows, val_rows, data_digest = read_mix(cfg, RunFolder(run_dir).mix(mix), mix)
    digest = rl_digest(rcfg, cfg, mix, data_digest, parent_digest)
    resume_digest = rl_digest(rcfg, cfg, mix, data_digest, parent_digest, exclude=BUDGET_FIELDS)
    out = RunFolder(run_dir).student(name)
    done = finished_student(out, digest)
    if done is not None:
        return {**done, "skipped": True}

    main = os.environ.get("RANK", "0") == "0"  # under torchrun only the main process writes files
    resume, last = checkpoint_to_resume(out / "checkpoints", resume_digest, main=main)
    cuda = use_device(cfg.train)
    precision = resolve_precision(cfg.train.precision, cuda)
    model, tokenizer = _load_policy(start, cfg)
    model.config.distill_chat_template = chat
    architecture = (getattr(model.config, "architectures", None) or [type(model).__name__])[0]
    dataset = prompt_dataset(tokenizer, train_rows, forms, rcfg, chat)
    validate = Validation(tokenizer, val_rows, cfg)
    args = _grpo_config(rcfg, out / "checkpoints", precision, cuda)
    chosen = {"trainer": "trl.GRPOTrainer", "start": start if rcfg.start else f"students/{mix}/model",
              "prompts": "one per training problem per form", "n_prompts": len(dataset), **dataclasses.asdict(rcfg),
              "precision": precision, "effective_batch_size": rcfg.batch_size * rcfg.grad_accum}
    tags = run_tags(cfg, mix, forms, parent_card, start)
    with tracker.run(f"rl-{mix}", tags, nested=True, run_id=run_to_resume(tracker, resume, last)):
        record = {"resume_digest": resume_digest, "config_digest": digest, "run_id": tracker.run_id}
        (out / "checkpoints").mkdir(parents=True, exist_ok=True)
        log_params(tracker, {**flatten(cfg), "mix.mix": mix, "rl.start_resolved": chosen["start"],
                             "rl.n_prompts": len(dataset), "rl.precision_resolved": precision,
                             "rl.device": "cuda" if cuda else "cpu"}, tags, resumed=bool(last), say=say)
        before = validation_before(tracker, validate, model, resume if last else {}, main=main)
        if main:
            write_json(out / "checkpoints" / "resume.json", {**record, "val_accuracy_before": before, "finished": False})
        say(f"{name}: GRPO from {chosen['start']} ({architecture}), {len(dataset)} prompts "
            f"({len(dataset) // len(forms)} problems x {len(forms)} forms), {rcfg.num_generations} completions each, "
            f"{rcfg.max_steps} steps, {'cuda' if cuda else 'cpu'} {precision}; validation before: "
            + (", ".join(f"{f} {v:.3f}" for f, v in before.items()) or "none"))
        trained = grpo(model, tokenizer, dataset, args, cfg, tracker, last)
        if not trained.trainer.is_world_process_zero():
            return {"steps": trained.trainer.state.global_step}
        final, after = save_policy(trained.trainer, tokenizer, chat, architecture, out, validate, tracker)
        card = policy_card(cfg, run_dir, mix, forms, parent_card, final, chat, architecture, after, before,
                           record["run_id"], data_digest, chosen, trained)
        write_json(out / "card.json", card)
        summary = rl_summary(record, mix, name, len(dataset), before, after, trained, rcfg, out)
        tracker.log_dict(card, "card.json")
        tracker.set_tags({"distill.stopped": trained.stopped})
        summary.update(log_model(tracker, out, cfg))
        write_json(out / "checkpoints" / "resume.json",
                   {**read_record(out / "checkpoints" / "resume.json"), "finished": True})
        summary["outputs"] = fingerprints(student_files(out))
        write_json(out / "summary.json", summary)
    say(f"student written to {out / 'model'} ({trained.stopped}, {trained.trainer.state.global_step} steps, "
        f"{trained.wall_s:.0f} s); validation " + ", ".join(f"{f} {before.get(f, 0):.3f} -> {v:.3f}"
                                                          for f, v in after.items()))
    return summary


# --- the steps of the stage, in the order _run takes them ---------------------------------------------

def read_mix(cfg: Config, mix_dir: Path, mix: str) -> tuple[list[dict], list[dict], str]:
    """(training rows, validation rows, digest of ``train.jsonl``) of ``mix/<mix>/``; a training set
    that is empty or shorter than the mix stage recorded is refused, naming the command that rewrites it."""
    written = read_record(mix_dir / "summary.json").get("outputs") or {}
    check_input(mix_dir / "train.jsonl", written.get("train.jsonl"), f"distill mix --preset {cfg.preset} --mix {mix}")
    hint = f"Write it with `distill mix --preset {cfg.preset} --mix {mix}`."
    fields = ("id", "problem_id", "form", "input", "gold")
    train_rows = read_jsonl(mix_dir / "train.jsonl", fields, hint)
    val_rows = read_jsonl(mix_dir / "val.jsonl", fields, hint) if (mix_dir / "val.jsonl").exists() else []
    if not train_rows:
        raise DataError(f"{mix_dir / 'train.jsonl'}: no training rows. {hint}")
    return train_rows, val_rows, file_digest(mix_dir / "train.jsonl")


def finished_student(out: Path, digest: str) -> dict | None:
    """``summary.json`` of a finished RL student of this config, data and parent whose card and model are
    still what it recorded (the stage skips); None otherwise."""
    from distill.stages.train import student_files

    summary_path = out / "summary.json"
    done = read_record(summary_path)
    if done.get("config_digest") != digest:
        return None
    damaged = mismatch(done.get("outputs"), student_files(out))
    if damaged is None:
        say(f"{summary_path} is complete for this config, data and parent student; skipping (delete it to rerun)")
        return done
    say(f"{out}: {damaged} since the student was written; running RL again (a new MLflow run)")
    return None


def checkpoint_to_resume(ckpt_dir: Path, resume_digest: str, *, main: bool) -> tuple[dict, str | None]:
    """(``resume.json``, the checkpoint an interrupted run of this config resumes from, or None). Another
    config's checkpoints, or a finished run's, are never reopened: the main process clears them."""
    from distill.stages.train import last_complete_checkpoint

    resume = read_json(ckpt_dir / "resume.json", default={})
    last = last_complete_checkpoint(ckpt_dir)
    if last and (resume.get("resume_digest") != resume_digest or resume.get("finished", True)):
        last = None  # another config's, or a finished run's: never reopened, start afresh
    if not last and main:
        shutil.rmtree(ckpt_dir, ignore_errors=True)
    elif last:
        say(f"resuming from {last}")
    return resume, last


def prompt_dataset(tokenizer, train_rows: list[dict], forms, rcfg: RLConfig, chat: bool):
    """The GRPO prompts: one per training problem per form (``prompt_rows``), as the student is asked,
    with the columns the reward reads (form, gold)."""
    from datasets import Dataset

    prompts = prompt_rows(train_rows, forms, rcfg.limit)
    texts = prompt_texts(tokenizer, [p["input"] for p in prompts], chat_template=chat, max_len=rcfg.max_prompt_length)
    return Dataset.from_list([{"prompt": t, "form": p["form"], "gold": p["gold"], "problem_id": p["problem_id"]}
                              for t, p in zip(texts, prompts)])


class Validation:
    """{form: accuracy} of a policy on the train stage's validation sample (``rl.val_generate_limit``,
    default ``train.val_generate_limit``), greedy, checked by each form's verifier; the policy's
    train/eval mode is left as it was."""

    def __init__(self, tokenizer, val_rows: list[dict], cfg: Config):
        rcfg = cfg.rl
        limit = rcfg.val_generate_limit if rcfg.val_generate_limit is not None else cfg.train.val_generate_limit
        self.tokenizer, self.rows = tokenizer, validation_rows(val_rows, limit, cfg.train.seed)
        self.batch_size = max(rcfg.batch_size, 8)
        self.max_source_len, self.max_new_tokens = rcfg.max_prompt_length, rcfg.max_completion_length

    def __call__(self, policy) -> dict[str, float]:
        was = policy.training
        scores = validation_accuracy(policy, self.tokenizer, self.rows, batch_size=self.batch_size,
                                     max_source_len=self.max_source_len, max_new_tokens=self.max_new_tokens)
        policy.train(was)
        return scores


def run_tags(cfg: Config, mix: str, forms, parent_card: dict, start: str) -> dict:
    tags = {"distill.stage": "rl", "distill.mix": mix, "distill.variant": VARIANT, "distill.forms": ",".join(forms),
            "distill.preset": cfg.preset, "distill.student": parent_card.get("student") or start,
            "distill.student_kind": "causal"}
    if parent_card.get("train_run_id"):
        tags["distill.parent_run_id"] = parent_card["train_run_id"]
    return tags


def run_to_resume(tracker, resume: dict, last: str | None) -> str | None:
    """The MLflow run an interrupted RL run continues in; None (a new run) otherwise."""
    resume_run = resume.get("run_id") if last and not os.environ.get("MLFLOW_RUN_ID") else None
    if resume_run and tracker.status(resume_run) in (None, "FINISHED"):
        return None
    if tracker.run_id is not None:
        return None  # nested under a parent (reproduce): its unfinished child of this name, or a new one
    return resume_run


def validation_before(tracker, validate: Validation, model, resume: dict, *, main: bool) -> dict:
    """The starting policy on validation, where the curve starts (step 0): measured once by the main
    process, then kept in ``resume.json`` for a resumed run."""
    before = resume.get("val_accuracy_before")
    if before is None:
        before = validate(model) if main else {}
        if before:
            tracker.log_metrics({f"val/{f}/accuracy": v for f, v in before.items()}, step=0)
    return before


@dataclasses.dataclass(frozen=True)
class Trained:
    """What ``grpo`` leaves: the trainer and what was measured."""
    trainer: Any
    stopped: str  # max_minutes | max_steps
    rewards: list[float]  # the mean reward of every step
    wall_s: float
    step_s: float | None
    step_s_steps: int


def grpo(model, tokenizer, dataset, args, cfg: Config, tracker, last: str | None) -> Trained:
    """TRL's GRPOTrainer with the forms' verifiers as the reward (distill.rewards.VerifierReward) and the
    stage's callbacks (distill/callbacks.py), from ``last`` or from the starting policy."""
    from transformers.trainer_callback import PrinterCallback
    from trl import GRPOTrainer

    from distill.callbacks import RLTracking, StepTimer, TimeBudget
    from distill.rewards import VerifierReward

    rcfg = cfg.rl
    reward = VerifierReward(rcfg.wrong_answer_reward, timeout=cfg.verify.timeout, strict=cfg.verify.strict)
    peft_config = None
    if rcfg.lora_r:
        from peft import LoraConfig, TaskType

        peft_config = LoraConfig(r=rcfg.lora_r, lora_alpha=rcfg.lora_alpha, target_modules="all-linear",
                                 task_type=TaskType.CAUSAL_LM)
    budget = TimeBudget(rcfg.max_minutes)
    logger = RLTracking(tracker, reward, rcfg, say)
    timer = StepTimer()  # s per optimizer step inside the training (summary "step_s"; benchmarks/gpu.py)
    with quiet_transformers():
        trainer = GRPOTrainer(model=model, reward_funcs=[reward], args=args, train_dataset=dataset,
                              processing_class=tokenizer, peft_config=peft_config, callbacks=[budget, logger, timer])
    trainer.remove_callback(PrinterCallback)  # its dicts would mix with the CLI's JSON on stdout
    t0 = time.monotonic()
    with quiet_transformers():
        trainer.train(resume_from_checkpoint=last or None)
    wall_s = time.monotonic() - t0
    step_s, step_s_steps = timer.seconds_per_step()
    return Trained(trainer, "max_minutes" if budget.stopped else "max_steps", logger.rewards, wall_s, step_s,
                   step_s_steps)


def save_policy(trainer, tokenizer, chat: bool, architecture: str, out: Path, validate: Validation, tracker):
    """(the final policy, merged; its validation accuracy, logged at the last step), with ``model/``
    written (swapped in whole)."""
    from distill.student import save_student

    final = trainer.model
    if hasattr(final, "merge_and_unload"):
        final = final.merge_and_unload()
    final.config.distill_chat_template = chat
    after = validate(final)
    if after:
        tracker.log_metrics({f"val/{f}/accuracy": v for f, v in after.items()}, step=trainer.state.global_step)
    tmp = out / ".model.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    with quiet_transformers():
        save_student(final, tokenizer, tmp, {"chat_template": chat, "architecture": architecture,
                                             "adapter": False, "base_model": None})
    replace_dir(tmp, out / "model")
    return final, after


def policy_card(cfg: Config, run_dir: Path, mix: str, forms, parent_card: dict, final, chat: bool,
                architecture: str, after: dict, before: dict, run_id: str | None, data_digest: str, chosen: dict,
                trained: Trained) -> dict:
    """``card.json``: the parent's card fields, then what RL changed (see the module docstring)."""
    from distill.stages.train import best_form, form_cards
    from distill.student import count_parameters

    rcfg = cfg.rl
    inherited = ("student", "kind", "architecture", "tokenizer", "data_digest", "n_params")
    return {**{k: parent_card[k] for k in inherited if k in parent_card},
            "mix": mix, "variant": VARIANT, "forms": form_cards(forms), "kind": "causal",
            "architecture": architecture, "chat_template": chat, "lora": None, "base_model": None,
            "best_form": best_form(forms, after), "train_run_id": run_id, "preset": cfg.preset,
            "n_params": count_parameters(final), "data_digest": parent_card.get("data_digest") or data_digest,
            "parent": {"folder": None if rcfg.start else str(RunFolder(run_dir).student(mix)),
                       "start": rcfg.start or None, "train_run_id": parent_card.get("train_run_id"),
                       "best_form": parent_card.get("best_form"), "val_accuracy": before},
            "reward": {"function": "distill.rewards.VerifierReward (each form's verifier, sandboxed)",
                       "correct": 1.0, "wrong_answer": rcfg.wrong_answer_reward,
                       "no_answer_parse_error_exec_error_timeout_unsafe": 0.0,
                       "timeout_s": cfg.verify.timeout, "strict": cfg.verify.strict},
            "rl": {**chosen, "steps": trained.trainer.state.global_step, "stopped": trained.stopped}}


def rl_summary(record: dict, mix: str, name: str, n_prompts: int, before: dict, after: dict, trained: Trained,
               rcfg: RLConfig, out: Path) -> dict:
    return {"run_id": record["run_id"], "mix": mix, "name": name, "variant": VARIANT,
            "steps": trained.trainer.state.global_step, "stopped": trained.stopped, "n_prompts": n_prompts,
            "val_accuracy_before": before, "val_accuracy": after, "rewards": trained.rewards,
            "wall_s": round(trained.wall_s, 1), "step_s": None if trained.step_s is None else round(trained.step_s, 4),
            "step_s_steps": trained.step_s_steps, "completions_per_step": rcfg.batch_size * rcfg.grad_accum,
            "config_digest": record["config_digest"], "model_dir": str(out / "model"), "model_logged": False}


def _load_policy(start: str, cfg: Config):
    """(model, tokenizer) of the starting policy in fp32 (the trainer's autocast gives bf16 on a GPU);
    an unmerged LoRA student is merged first, so RL trains one plain model."""
    from distill.student import load_student, student_kind

    model, tokenizer = load_student(start, hub_kernels=cfg.train.hub_kernels)
    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    if student_kind(model) != "causal":
        raise ConfigError(SEQ2SEQ_REFUSED.format(what=start))
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model.float(), tokenizer


def _grpo_config(rcfg: RLConfig, ckpt_dir: Path, precision: str, cuda: bool):
    from trl import GRPOConfig

    return GRPOConfig(
        output_dir=str(ckpt_dir), per_device_train_batch_size=rcfg.batch_size,
        gradient_accumulation_steps=rcfg.grad_accum, num_generations=rcfg.num_generations,
        max_completion_length=rcfg.max_completion_length, temperature=rcfg.temperature, top_p=rcfg.top_p,
        beta=rcfg.beta, learning_rate=rcfg.lr, lr_scheduler_type=SCHEDULERS[rcfg.scheduler],
        warmup_steps=int(rcfg.warmup_ratio * rcfg.max_steps), max_steps=rcfg.max_steps, seed=rcfg.seed,
        data_seed=rcfg.seed, logging_steps=1, save_strategy="steps", save_steps=rcfg.checkpoint_every,
        save_total_limit=1, report_to="none", disable_tqdm=True, use_cpu=not cuda, bf16=precision == "bf16",
        fp16=precision == "fp16", use_vllm=rcfg.use_vllm, vllm_mode="colocate", log_completions=False,
        dataloader_num_workers=0)
