"""Evaluate stage: accuracy of a student on the test sets, per thought form, plus our own combinations.

The student writes reasoning in each form it was trained on (greedy, at most ``evaluate.max_new_tokens``
new tokens, batched and sorted by input length: distill/decoding.py), and the answer is taken by the
same form module that verified the training data (``get_form(form).verify_many``: same sandbox,
same solver, same number normaliser), so a number means the same thing in training and evaluation.

The student (``student=``): a folder, an MLflow model URI or a training run id, found by
``distill.student.resolve_student``; the default is ``<run_dir>/students/<mix>/``. ``run_untrained``
evaluates ``train.student`` as it comes, before any training (``distill evaluate --untrained``): it
writes ``students/<mix>-base/`` (distill.stages.train.base_student) and evaluates that.

A student's name is its mix, or its mix and the card's ``variant`` (``etd-base``, ``etd-grpo``;
distill.thoughts.student_name); ``<mix>`` below stands for that name: eval/etd-grpo/, evaluate-etd-grpo.

Data contract, under ``<run_dir>/eval/<mix>/``:
  - ``<test_set>/<form>.jsonl``: append log, one record per answered problem, written per batch:
    {"problem_id", "question", "gold", "form", "version", "input", "output", "answer" (float|null),
    "status" (a Verdict status), "reason", "student" (digest of the weights and decoding settings)}, and
    for a form with repair rules (``Form.rules``) while ``verify.strict`` is off, "strict": {"status",
    "answer", "reason"}: the verdict without those rules (verified again only where a rule may have applied).
    A rerun skips problems already answered by the same student digest (resume); records of another
    student or form version are dropped from the log before new ones are appended.
  - ``<test_set>/<form>.samples.jsonl`` (``evaluate.samples`` = k > 1): the same records plus "sample"
    (0..k-1), one per sampled output, "student" being the digest of the student and the sampling settings
    (``sampling_digest``: temperature, top_p, seed), so greedy and sampled records never mix; a rerun
    skips answered (problem, sample) pairs. The greedy output is still made (and reused): with k > 1,
    ``<test_set>/<form>/accuracy`` keeps meaning greedy accuracy, and the samples add their own scores.
  - ``summary.json``: {"mix", "variant" ("" or the card's), "student_name", "forms": {form: {"version", "instruction"}}, "student": {"source", "digest",
    "card"}, "train_run_id", "data_digest", "preset", "run_id", "limit", "selected_form", "decoding" (greedy, chat_template, max_new_tokens, ...), "test_sets":
    {test_set: scores (see distill.scoring.score_test_set)}, "metrics": {metric name: value}, "time": where the
    greedy pass spent its seconds (probe_s, generate_s, verify_s, generated, verify_share, by test set/form:
    ``time_split``)}; it
    describes the latest invocation (its test sets, forms and limit), which registration reads.

MLflow run ``evaluate-<mix>`` (``<mix>`` is the student's name: ``etd``, or ``etd-grpo`` for the rl
stage's student, whose card says mix etd and variant grpo; eval/<name>/ likewise): params evaluate.*
and student; tags distill.stage=evaluate, distill.preset, distill.mix (the mix alone, etd), distill.variant
(only for a variant: grpo), distill.forms, distill.form_versions ("eot=1,pot=1"), distill.train_run_id (card, else the
run the artifacts came from), distill.data_digest, distill.student_source, distill.student_digest,
distill.selected_form (the card's ``best_form``: the form chosen on the validation split, never on a
test set); metrics ``<test_set>/n``, ``<test_set>/<name>/accuracy`` with its 95% Wilson interval
``<test_set>/<name>/ci_low`` and ``ci_high`` for every form and for vote, fallback (this project's
own combinations, see distill/scoring.py) and selected (the selected form's answers again, under one
name for every student), ``<test_set>/<form>/failures/<status>``; tables ``eval/<test_set>/<form>.json``
(question, output, extracted answer, gold, status, reason), for several forms ``eval/<test_set>/combined.json``
with the forms side by side, and ``eval/<test_set>/correct.json`` {"problem_ids": [...], "correct":
{name: [0/1 per problem]}, "answers": {name: [answer or null per problem]}, "gold": [...]} (names as in
the metrics), which the report's paired tests and answer profiles read; per name the answer profile
(distill.scoring.answer_profile) ``<test_set>/<name>/{distinct_answers,top_answer_share,own_constant_accuracy}``
and the tag ``distill.degenerate`` ("no", or which names give one answer to more than 90% of which test
sets, e.g. "selected: 2 on gsm8k, svamp (99-100%)").

Strict and lenient: for every form with repair rules, ``<test_set>/<form>/strict/{accuracy,ci_low,ci_high}``
(Wilson) beside the usual accuracy (which follows ``verify.strict``), and correct.json's "strict": {form:
[0/1]}: the gap is what the repair rules (format) account for.

Sampling (``evaluate.samples`` = k > 1; distill.scoring.score_samples): per form ``<test_set>/<form>/maj_at_<k>``
(majority vote on the k answers; unparsed answers do not vote; ties: distill.scoring.TIE_RULE, logged as
the param ``evaluate.tie_rule``), ``.../pass_at_<k>`` (Chen et al.'s unbiased estimator, per problem,
averaged) and ``.../mean_at_<k>`` (the share of right samples, averaged), each ``/{accuracy,ci_low,ci_high}``
with n = ``<test_set>/n``; with several forms ``<test_set>/vote/maj_at_<k>``, a vote over all forms' k
samples; the tag ``distill.samples``; tables ``eval/<test_set>/<form>.samples.json``; correct.json's
"sampled": {"k", "tie_rule", "correct": {name: [0/1]} (maj), "answers": {name: [answer]}, "values":
{name: [per-problem pass@k or mean]}}, apart from "correct" so the paired tests keep reading greedy answers.

Sharded (``evaluate --shard i/n``, then ``--merge``: ``merge_evaluation``): the merge lives here, beside the
records it joins and the digests that tell a student's records apart; with the greedy and sampled loops and
the MLflow tables that is why this module is over 450 lines.
"""
from __future__ import annotations

import hashlib
import json
import re
import sys
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Mapping, Sequence

from distill.config import Config
from distill.files import (DataError, append_log, mismatch, read_log, read_record, settings_digest, write_json,
                           write_jsonl)
from distill.layout import RunFolder
from distill.scoring import (TIE_RULE, answer_profile, answers_of, combine, correctness, degenerate_tag, interval,
                             metrics_of, per_problem_samples, profile_metrics, sample_metrics, score_samples,
                             score_test_set, strict_metrics)
from distill.shards import shard_of
from distill.student import WEIGHT_SUFFIXES, StudentFolder, resolve_student, stale_form
from distill.thoughts import VARIANTS, Verdict, form_names, get_form, parse_student, student_name
from distill.tracking import tracker_or_null, writing

def run(cfg: Config, run_dir: Path, tracker=None, *, student: str | None = None, log=None, shard=None) -> dict:
    """Evaluate one student on ``cfg.data.test_sets``; return the summary dict (also in summary.json).

    The student is the run folder's student of ``mix.mix`` (``etd``, ``etd-grpo``), or ``student``:
    a folder, a training run id or an MLflow model URI (distill.student.resolve_student).

    ``shard`` (a distill.shards.Shard): only that share of each test set's problems, written under
    ``eval/<mix>/shard-<i>-of-<n>/``; ``merge_evaluation`` joins the shards. One writer
    per run folder (the shards of one evaluation share it, each the only writer of its shard)."""
    tracker = tracker_or_null(tracker)
    with writing(run_dir, tracker, "evaluate", shard=shard):
        return _run(cfg, Path(run_dir), tracker, student=student, log=log, shard=shard)


def evaluated_name(card: Mapping, found: StudentFolder, requested: str) -> tuple[str, str, str]:
    """(mix, variant, name) of the student: its card's mix and ``variant`` (``etd``, ``grpo`` ->
    ``etd-grpo``: eval/<name>/, the run evaluate-<name>, distill.thoughts.student_name); the requested
    name's when the card names no mix. The one rule the stage and the shards' merge share."""
    if not card.get("mix"):
        mix, variant = parse_student(requested)
        return mix, variant, student_name(mix, variant)
    mix, variant = card["mix"], card_variant(card, found)
    return mix, variant, student_name(mix, variant)


def check_default_student(cfg: Config, run_dir: Path, mix: str) -> None:
    """Refuse the run folder's student when its card or model files are no longer what the train stage
    recorded (a deleted weight file, a broken card): `distill train` then rebuilds it."""
    from distill.stages.train import student_files

    folder = RunFolder(run_dir).student(mix)
    recorded = read_record(folder / "summary.json").get("outputs")
    damaged = mismatch(recorded, student_files(folder)) if recorded else None
    if damaged:
        base, variant = parse_student(mix)
        stage = "rl" if variant == "grpo" else "train"
        raise DataError(f"{folder}: {damaged} since `distill {stage}` wrote the student; rebuild it with "
                        f"`distill {stage} --preset {cfg.preset} --mix {base}`")


def _run(cfg: Config, run_dir: Path, tracker=None, *, student: str | None = None, log=None, shard=None) -> dict:
    # over 80 lines: the student is resolved, loaded and its batch probed once, then ``body`` (below)
    # scores every test set inside the evaluate run; each scoring rule it calls is in distill.scoring
    from distill.problems import LOADERS, evaluated_problems

    log = log or (lambda msg: print(msg, file=sys.stderr))
    unknown = [t for t in cfg.data.test_sets if t not in LOADERS]
    if unknown:
        raise DataError(f"unknown test set {unknown[0]!r} in data.test_sets; valid: {', '.join(LOADERS)}")
    requested_mix = cfg.mix.mix
    if not student:
        check_default_student(cfg, run_dir, requested_mix)
    with ExitStack() as stack:
        found = resolve_student(student or None, run_dir, requested_mix, cfg.tracking_uri, stack)
        card = found.card
        mix, variant, name = evaluated_name(card, found, requested_mix)
        if mix != requested_mix and student:
            log(f"evaluate: the student's card says mix {mix!r}; results go to eval/{name}/ (not {requested_mix!r})")
        forms = choose_forms(cfg.evaluate.forms, card, found)
        selected = selected_form(card, forms)
        model, tokenizer = _load(found.model_dir, cfg)
        if found.chat_template is not None:  # weights named by reference: the card says how they are asked
            model.config.distill_chat_template = found.chat_template
        model, dtype, _cast_done, dtype_reason = _cast(model, cfg)
        digest = student_digest(found.model_dir, cfg)
    if cfg.evaluate.dtype != "auto":
        log(f"evaluate: dtype={cfg.evaluate.dtype} -> {dtype} ({dtype_reason})")
    # one probe per evaluate run (every test set and form decodes at this batch), timed
    probe_t0 = time.monotonic()
    batch_size, batch_reason = _batch_size(model, cfg)
    probe_s = round(time.monotonic() - probe_t0, 2)
    if cfg.evaluate.batch_size == "auto":
        log(f"evaluate: batch_size=auto -> {batch_size} ({batch_reason}; {probe_s:.1f} s)")

    out_dir = RunFolder(run_dir).eval(name)
    if shard is not None:
        out_dir = out_dir / shard.tag  # one writer per folder; merged by `distill evaluate --merge`
    train_run_id = card.get("train_run_id") or found.run_id
    versions = {name: get_form(name).version for name in forms}
    # distill.mix is the mix (etd), so every variant of it (etd-grpo) competes for the same champion
    tags = {"distill.stage": "evaluate", "distill.preset": cfg.preset, "distill.mix": mix,
            "distill.forms": ",".join(forms),
            "distill.form_versions": ",".join(f"{f}={v}" for f, v in versions.items()),
            "distill.student_source": found.source, "distill.student_digest": digest}
    if variant:
        tags["distill.variant"] = variant
    if train_run_id:
        tags["distill.train_run_id"] = train_run_id
    if selected:
        tags["distill.selected_form"] = selected
    elif variant == "base":
        log(f"evaluate: {name} is untrained: no form was chosen on validation for it; <test_set>/selected/* is not "
            "logged (the report pairs it with its trained students' forms)")
    else:
        log(f"evaluate: no selected form (the card's best_form {card.get('best_form')!r} is not among the forms "
            f"asked for, {', '.join(forms)}); <test_set>/selected/* is not logged")
    if card.get("data_digest"):
        tags["distill.data_digest"] = card["data_digest"]
    if cfg.evaluate.samples > 1:
        tags["distill.samples"] = str(cfg.evaluate.samples)

    def body(run_id: str | None) -> dict:
        results: dict[str, dict] = {}
        metrics: dict[str, float] = {}
        profiles: dict[str, dict] = {}
        timings: dict[str, dict] = {}  # "<test set>/<form>": where the greedy pass spent its time
        for test_set in cfg.data.test_sets:
            problems = evaluated_problems(cfg, test_set)
            if shard is not None:
                problems = shard.select(problems, key=lambda p: p.id)
            rows = {form: answer_all(model, tokenizer, form, problems, out_dir / test_set / f"{form}.jsonl",
                                     digest, cfg, desc=f"{test_set}/{form}", batch_size=batch_size,
                                     timing=timings.setdefault(f"{test_set}/{form}", new_timing()))
                    for form in forms}
            verdicts = {form: [_verdict(r) for r in rows[form]] for form in forms}
            golds = [p.answer for p in problems]
            scores = score_test_set(verdicts, golds, selected=selected)
            results[test_set] = scores
            metrics.update(metrics_of(test_set, scores))
            answers = answers_of(verdicts, golds, selected)
            profiles[test_set] = {name: answer_profile(values, golds) for name, values in answers.items()}
            metrics.update(profile_metrics(test_set, profiles[test_set]))
            log(f"evaluate {name}: {test_set} ({len(problems)} problems) " + ", ".join(
                f"{f} {s['accuracy']:.1%}" for f, s in scores["forms"].items())
                + "".join(f", {k} {scores[k]['accuracy']:.1%}" for k in ("vote", "fallback") if k in scores)
                + (f", selected ({selected}) {scores['selected']['accuracy']:.1%} "
                   f"[{scores['selected']['ci_low']:.1%}, {scores['selected']['ci_high']:.1%}]"
                   if "selected" in scores else ""))
            extra: dict = {}  # correct.json's "strict" and "sampled"
            strict = {form: strict_verdicts(form, rows[form], cfg) for form in forms}
            strict = {form: items for form, items in strict.items() if items is not None}
            if strict:
                scores["strict"] = {form: interval(sum(v.correct for v in items), len(items))
                                    for form, items in strict.items()}
                metrics.update(strict_metrics(test_set, scores["strict"]))
                extra["strict"] = {form: [int(v.correct) for v in items] for form, items in strict.items()}
                log(f"evaluate {mix}: {test_set} strict (no repair rules) " + ", ".join(
                    f"{f} {s['accuracy']:.1%}" for f, s in scores["strict"].items()))
            if cfg.evaluate.samples > 1:
                sampled_rows = {form: sample_all(model, tokenizer, form, problems,
                                                 out_dir / test_set / f"{form}.samples.jsonl", sampling_digest(digest, cfg),
                                                 cfg, desc=f"{test_set}/{form} samples", batch_size=batch_size)
                                for form in forms}
                sampled = {form: [[_verdict(r) for r in per] for per in sampled_rows[form]] for form in forms}
                scores["sampled"] = score_samples(sampled, golds)
                metrics.update(sample_metrics(test_set, scores["sampled"]))
                table = per_problem_samples(sampled, golds)
                extra["sampled"] = {"k": table["k"], "tie_rule": TIE_RULE, "correct": table["correct"],
                                    "answers": table["answers"], "values": table["values"]}
                log(f"evaluate {mix}: {test_set} k={cfg.evaluate.samples} samples: " + ", ".join(
                    f"{name.replace('_at_', '@')} {s['accuracy']:.1%}" for name, s in scores["sampled"]["scores"].items()))
                _log_sample_tables(tracker, test_set, sampled_rows)
            _log_tables(tracker, test_set, rows, verdicts, golds)
            tracker.log_dict({"problem_ids": [p.id for p in problems],
                              "correct": correctness(verdicts, golds, selected),
                              "answers": answers, "gold": golds, **extra},
                             f"eval/{test_set}/correct.json")
        summary = {
            "mix": mix, "variant": variant, "student_name": name, "preset": cfg.preset, "run_id": run_id,
            "limit": cfg.evaluate.limit,
            "selected_form": selected,
            "forms": {f: {"version": versions[f], "instruction": get_form(f).instruction} for f in forms},
            "student": {"source": found.source, "digest": digest, "card": card},
            "train_run_id": train_run_id, "data_digest": card.get("data_digest"),
            "decoding": {"greedy": True, "chat_template": bool(getattr(model.config, "distill_chat_template", False)),
                         "max_new_tokens": cfg.evaluate.max_new_tokens,
                         "max_source_len": cfg.evaluate.max_source_len, "batch_size": batch_size,
                         "batch_size_reason": batch_reason, "batch_probe_s": probe_s,
                         "static_cache": cfg.evaluate.static_cache, "dtype": dtype, "dtype_reason": dtype_reason,
                         **({"sampling": sampling_settings(cfg)} if cfg.evaluate.samples > 1 else {})},
            "test_sets": results, "metrics": metrics, "time": time_split(probe_s, timings),
        }
        spent = summary["time"]
        if spent["generated"]:
            log(f"evaluate {name}: {spent['generated']} problems answered in {spent['generate_s']:.1f} s of decoding "
                f"and {spent['verify_s']:.1f} s of verifying ({spent['verify_share']:.0%}), after a "
                f"{probe_s:.1f} s batch probe")
        write_json(out_dir / "summary.json", summary)
        tracker.log_metrics(metrics)
        # the runs table of the MLflow UI says which answers are (almost) one constant
        tracker.set_tags({"distill.degenerate": degenerate_tag(profiles)})
        tracker.log_dict(summary, "eval/summary.json")
        return summary

    with tracker.run(f"evaluate-{name}", tags, nested=True):
        tracker.log_params({f"evaluate.{k}": v for k, v in _evaluate_params(cfg).items()}
                           | {"student": found.source, "evaluate.batch_size_resolved": batch_size,
                              "evaluate.batch_size_reason": batch_reason, "evaluate.batch_probe_s": probe_s,
                              "evaluate.dtype_resolved": dtype}
                           | ({"evaluate.tie_rule": TIE_RULE} if cfg.evaluate.samples > 1 else {}))
        return body(tracker.run_id)


def card_variant(card: Mapping, found: StudentFolder) -> str:
    """The student's variant from its card ("" for the train stage's students, whose cards predate the
    field; "base", "grpo"): results go to eval/<mix>-<variant>/ and the run is evaluate-<mix>-<variant>."""
    variant = card.get("variant") or ""
    if variant not in VARIANTS:
        raise DataError(f"{found.source}: card.json says variant {variant!r}; valid: "
                        + ", ".join(repr(v) for v in VARIANTS))
    return variant


def run_untrained(cfg: Config, run_dir: Path, tracker=None, *, log=None) -> dict:
    """Evaluate ``train.student`` as it comes, before any training (the study's starting point): write
    it as students/<mix>-base/ (distill.stages.train.base_student), then evaluate it like any student,
    into eval/<mix>-base/ and an MLflow run evaluate-<mix>-base (tag distill.variant=base)."""
    from distill.stages.train import base_student

    tracker = tracker_or_null(tracker)
    with writing(run_dir, tracker, "evaluate"):
        folder = base_student(cfg, Path(run_dir))
        return _run(cfg, Path(run_dir), tracker, student=str(folder), log=log)


def selected_form(card: Mapping, forms: Sequence[str]) -> str | None:
    """The form chosen on the validation split: the card's ``best_form`` (distill/stages/train.py),
    or the only form of a one-form student whose card predates ``best_form``; None when the chosen
    form is not among ``forms`` (never a pick by test accuracy)."""
    chosen = card.get("best_form") or (forms[0] if len(forms) == 1 else None)
    return chosen if chosen in forms else None


# --- the student's forms and model ------------------------------------------------------

def choose_forms(requested: Sequence[str], card: Mapping, found: StudentFolder) -> tuple[str, ...]:
    """The forms to ask for: ``requested`` or, if empty, every form on the card; checked against the
    card's versions, because a student answers only the instruction (and format) it was trained on."""
    card_forms = card.get("forms") or {}
    forms = tuple(requested) or tuple(f for f in form_names() if f in card_forms)
    if not forms:
        raise DataError(f"{found.source}: the student has no card.json listing its forms; "
                        "pass the forms to ask for with --forms eot,pot")
    for name in forms:
        try:
            get_form(name)
        except ValueError as exc:  # a bad name; the message lists the valid ones
            raise DataError(f"evaluate.forms: {exc}") from None
        if card_forms and name not in card_forms:
            raise DataError(f"{found.source}: the student was trained on {', '.join(card_forms)}, not {name!r}; "
                            f"choose --forms among those")
    stale = stale_form(card, forms)
    if stale:
        name, trained, current = stale
        raise DataError(f"{found.source}: trained on {name} version {trained}, but this code has "
                        f"{name} version {current}; evaluate with the distill version it was trained with")
    return tuple(f for f in form_names() if f in forms)


def _load(model_dir: Path, cfg: Config):
    from distill.student import load_student, resolve_device

    try:
        model, tokenizer = load_student(model_dir, hub_kernels=cfg.train.hub_kernels)
    except ValueError as exc:
        raise DataError(str(exc)) from None
    import torch

    if cfg.evaluate.threads:
        torch.set_num_threads(cfg.evaluate.threads)
    return model.to(resolve_device(cfg.evaluate.device)), tokenizer


def _cast(model, cfg: Config):
    """(model, dtype name, whether it was cast, reason) for evaluate.dtype (distill.decoding.cast_for_evaluation)."""
    from distill.decoding import cast_for_evaluation

    try:
        return cast_for_evaluation(model, cfg.evaluate.dtype, cuda=next(model.parameters()).device.type == "cuda")
    except ValueError as exc:
        raise DataError(str(exc)) from None


def _batch_size(model, cfg: Config) -> tuple[int, str]:
    """evaluate.batch_size, or with ``auto`` what the device holds (distill.decoding.resolve_eval_batch)."""
    from distill.decoding import resolve_eval_batch

    try:
        return resolve_eval_batch(cfg.evaluate.batch_size, model, max_new_tokens=cfg.evaluate.max_new_tokens,
                                  max_source_len=cfg.evaluate.max_source_len)
    except ValueError as exc:
        raise DataError(str(exc)) from None


def student_digest(model_dir: Path, cfg: Config) -> str:
    """Digest of the weights and the decoding settings: predictions of the same digest can be reused.
    An ``evaluate.dtype`` other than auto is a setting of its own (a cast can change the answers), so
    records of one dtype are never reused for another; with auto the digest is what it always was. So is
    ``verify.strict`` (records hold verdicts): on, it is in the digest; off (the default), nothing changes."""
    h = hashlib.sha256()
    for path in sorted(p for p in model_dir.iterdir() if p.suffix in WEIGHT_SUFFIXES or p.name == "config.json"):
        h.update(path.name.encode())
        with path.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    settings = {"max_new_tokens": cfg.evaluate.max_new_tokens, "max_source_len": cfg.evaluate.max_source_len}
    if cfg.evaluate.dtype != "auto":
        settings["dtype"] = cfg.evaluate.dtype
    if cfg.verify.strict:  # the records hold verdicts, and strict ones differ: never reuse lenient ones
        settings["verify_strict"] = True
    h.update(json.dumps(settings).encode())
    return h.hexdigest()[:16]


# --- answering -------------------------------------------------------------------------------

def new_timing() -> dict:
    return {"generated": 0, "generate_s": 0.0, "verify_s": 0.0}


def time_split(probe_s: float, timings: Mapping[str, Mapping]) -> dict:
    """Where the greedy pass of an evaluate run spent its time (summary.json "time"): the batch probe, decoding
    (the model's generate calls) and verifying (the sandbox and solver, and writing the records), in all and
    per "<test set>/<form>"; answers reused from an earlier run cost neither and are not counted."""
    generate_s = sum(t["generate_s"] for t in timings.values())
    verify_s = sum(t["verify_s"] for t in timings.values())
    return {"probe_s": probe_s, "generate_s": round(generate_s, 3), "verify_s": round(verify_s, 3),
            "generated": sum(t["generated"] for t in timings.values()),
            "verify_share": verify_s / (generate_s + verify_s) if generate_s + verify_s else 0.0,
            "by": {key: {**t, "generate_s": round(t["generate_s"], 3), "verify_s": round(t["verify_s"], 3)}
                   for key, t in timings.items()}}


def answer_all(model, tokenizer, form_name: str, problems: Sequence, log_path: Path, digest: str, cfg: Config,
               desc: str = "", batch_size: int | None = None, timing: dict | None = None) -> list[dict]:
    """Records (see the module docstring) for ``problems`` in their order, generating only the missing ones,
    ``batch_size`` problems per generate call (default: evaluate.batch_size, which must then be a number).
    ``timing`` (new_timing()) accumulates the seconds spent decoding and verifying, and the problems generated."""
    from tqdm.auto import tqdm

    from distill.decoding import decode_batches

    timing = new_timing() if timing is None else timing

    form = get_form(form_name)
    done = _reusable(log_path, digest, form.version)
    todo = [p for p in problems if p.id not in done]
    if todo:
        inputs = [form.student_input(p.question) for p in todo]
        with append_log(log_path) as out, tqdm(total=len(todo), desc=desc, unit="problem", disable=None) as bar:
            mark = time.monotonic()
            for idx, outputs in decode_batches(model, tokenizer, inputs,
                                               batch_size=batch_size or int(cfg.evaluate.batch_size),
                                               max_new_tokens=cfg.evaluate.max_new_tokens,
                                               max_source_len=cfg.evaluate.max_source_len,
                                               static_cache=cfg.evaluate.static_cache):
                decoded = time.monotonic()
                timing["generate_s"] += decoded - mark
                batch = [todo[i] for i in idx]
                golds = [p.answer for p in batch]
                verdicts = form.verify_many(outputs, golds, timeout=cfg.verify.timeout, strict=cfg.verify.strict)
                # the strict verdict too (how much of the score is format), where the form has repair rules
                # that verify.strict leaves on; only outputs a rule may have changed are verified again
                strict = (form.verify_strict_many(outputs, golds, verdicts, timeout=cfg.verify.timeout)
                          if getattr(form, "rules", ()) and not cfg.verify.strict else [None] * len(batch))
                for p, i, output, verdict, exact in zip(batch, idx, outputs, verdicts, strict):
                    record = {"problem_id": p.id, "question": p.question, "gold": p.answer, "form": form_name,
                              "version": form.version, "input": inputs[i], "output": output,
                              "answer": verdict.answer, "status": verdict.status, "reason": verdict.reason,
                              "student": digest}
                    if exact is not None:
                        record["strict"] = {"status": exact.status, "answer": exact.answer, "reason": exact.reason}
                    out.write(record)
                    done[p.id] = record
                bar.update(len(batch))
                mark = time.monotonic()
                timing["verify_s"] += mark - decoded
                timing["generated"] += len(batch)
    return [done[p.id] for p in problems]


def _reusable(log_path: Path, digest: str, version: int, key=lambda r: r["problem_id"]) -> dict:
    """key(record) (default the problem_id) -> record of earlier answers by this student; other students'
    records are dropped."""
    records = list(read_log(log_path))
    keep = [r for r in records if r.get("student") == digest and r.get("version") == version
            and "problem_id" in r and "status" in r]
    if len(keep) != len(records):
        write_jsonl(log_path, keep)  # atomic: a crash leaves the old log or the cleaned one
    return {key(r): r for r in keep}


def strict_verdicts(form_name: str, records: Sequence[Mapping], cfg: Config) -> list[Verdict] | None:
    """The verdicts of ``records`` without the form's repair rules (``strict=True``), or None for a form
    that has none. With ``verify.strict`` the records' verdicts are strict already; otherwise a record's
    ``strict`` verdict (written by answer_all) is used, and a record without one (written before it was
    recorded) is verified again here, where a rule may have applied (Form.verify_strict_many)."""
    form = get_form(form_name)
    if not getattr(form, "rules", ()):
        return None
    flexible = [_verdict(r) for r in records]
    if cfg.verify.strict:
        return flexible
    out = [_verdict({**r, **r["strict"]}) if "strict" in r else None for r in records]
    missing = [i for i, v in enumerate(out) if v is None]
    if missing:
        again = form.verify_strict_many([records[i]["output"] for i in missing], [records[i]["gold"] for i in missing],
                                        [flexible[i] for i in missing], timeout=cfg.verify.timeout)
        for i, verdict in zip(missing, again):
            out[i] = verdict
    return out  # type: ignore[return-value]


# --- sampling (evaluate.samples > 1) ------------------------------------------------------------

def sampling_settings(cfg: Config) -> dict:
    """What decides the samples besides the student: they are part of the sampled records' digest."""
    e = cfg.evaluate
    return {"samples": e.samples, "temperature": e.temperature, "top_p": e.top_p, "seed": e.seed,
            "method": "inverse-CDF draw per row and step, keyed by (seed, problem id, form, sample index)"}


def sampling_digest(digest: str, cfg: Config) -> str:
    """The digest of sampled records: the student's (weights and decoding settings) and the sampling
    settings, so greedy and sampled records, or samples of another temperature, never mix."""
    settings = {k: v for k, v in sampling_settings(cfg).items() if k != "samples"}
    return settings_digest([digest, settings])


def sample_all(model, tokenizer, form_name: str, problems: Sequence, log_path: Path, digest: str, cfg: Config,
               desc: str = "", batch_size: int | None = None) -> list[list[dict]]:
    """Per problem (in order) its ``evaluate.samples`` sampled records, each verified by the form's
    verifier; records as answer_all's plus "sample" (the index, 0..k-1), appended to ``log_path``
    (``<test_set>/<form>.samples.jsonl``) as they come. A rerun draws only the (problem, sample) pairs
    the log lacks for this digest (``sampling_digest``): sample j of a problem is the same draw in
    every run (distill.decoding.Sampling), so resuming does not change the samples. Since the
    settings other than k are in the digest, a larger k adds samples and a smaller k reuses the first."""
    from tqdm.auto import tqdm

    from distill.decoding import Sampling, decode_batches, sample_key

    form = get_form(form_name)
    k = cfg.evaluate.samples
    done = _reusable(log_path, digest, form.version, key=lambda r: (r["problem_id"], r.get("sample")))
    todo = [(p, j) for p in problems for j in range(k) if (p.id, j) not in done]
    if todo:
        inputs = [form.student_input(p.question) for p, _ in todo]
        sampling = Sampling(cfg.evaluate.temperature, cfg.evaluate.top_p,
                            [sample_key(cfg.evaluate.seed, p.id, form_name, j) for p, j in todo])
        with append_log(log_path) as out, tqdm(total=len(todo), desc=desc, unit="sample", disable=None) as bar:
            for idx, outputs in decode_batches(model, tokenizer, inputs,
                                               batch_size=batch_size or int(cfg.evaluate.batch_size),
                                               max_new_tokens=cfg.evaluate.max_new_tokens,
                                               max_source_len=cfg.evaluate.max_source_len,
                                               static_cache=cfg.evaluate.static_cache, sampling=sampling):
                batch = [todo[i] for i in idx]
                verdicts = form.verify_many(outputs, [p.answer for p, _ in batch], timeout=cfg.verify.timeout,
                                            strict=cfg.verify.strict)
                for (p, j), i, output, verdict in zip(batch, idx, outputs, verdicts):
                    record = {"problem_id": p.id, "sample": j, "question": p.question, "gold": p.answer,
                              "form": form_name, "version": form.version, "input": inputs[i], "output": output,
                              "answer": verdict.answer, "status": verdict.status, "reason": verdict.reason,
                              "student": digest}
                    out.write(record)
                    done[(p.id, j)] = record
                bar.update(len(batch))
    return [[done[(p.id, j)] for j in range(k)] for p in problems]


def _verdict(record: Mapping) -> Verdict:
    return Verdict(record["status"], record.get("answer"), record.get("reason", ""), record["form"],
                   record["version"])


# --- evaluate --shard: the merge ----------------------------------------------------------------

def merge_evaluation(cfg: Config, run_dir: Path, student: str | None = None) -> dict:
    """Join the shards of ``<run_dir>/eval/<mix>/shard-<i>-of-<n>/`` into the unsharded logs
    ``<run_dir>/eval/<mix>/<test_set>/<form>.jsonl``, after checking that all n shards scored every
    problem of ``cfg.data.test_sets`` (first ``evaluate.limit``) with this very student (same weight
    and decoding digest). The evaluate stage run after it finds every problem answered, so it logs
    the metrics one process would have logged, computed by the same code, without generating again.
    With ``evaluate.samples`` > 1 the shards' ``<form>.samples.jsonl`` are joined the same way (every
    (problem, sample) pair needed; a sample is the same draw in any shard, distill.decoding.Sampling).

    Returns ``{"shards": n, "records": records imported}``; a missing shard or problem is a DataError
    naming the command that fills it.
    """
    from distill.problems import evaluated_problems

    mix = cfg.mix.mix
    with ExitStack() as stack:
        found_student = resolve_student(student, Path(run_dir), mix, cfg.tracking_uri, stack)
        digest = student_digest(found_student.model_dir, cfg)
    name = evaluated_name(found_student.card, found_student, mix)[2]  # as the evaluate stage names the folder
    out = RunFolder(run_dir).eval(name)
    found = sorted((int(m.group(2)), int(m.group(1)), d) for d in (out.glob("shard-*-of-*") if out.exists() else [])
                   if (m := re.fullmatch(r"shard-(\d+)-of-(\d+)", d.name)))
    if not found:
        raise DataError(f"{out}: no shard folders (shard-I-of-N/): run `distill evaluate --shard I/N` for each I first")
    counts = sorted({n for n, _, _ in found})
    if len(counts) > 1:
        raise DataError(f"{out}: shards of {counts[0]} and of {counts[1]} are mixed: remove the folders of the count "
                        "you do not want to merge")
    count = counts[0]
    missing = sorted(set(range(count)) - {i for _, i, _ in found})
    if missing:
        raise DataError(f"{out}: shard {missing[0]}/{count} has not run: `distill evaluate --shard {missing[0]}/{count}`")

    forms = choose_forms(cfg.evaluate.forms, found_student.card, found_student)
    imported = 0
    for test_set in cfg.data.test_sets:
        problems = evaluated_problems(cfg, test_set)
        for form in forms:
            records: dict[str, dict] = {}
            target = out / test_set / f"{form}.jsonl"
            for record in read_log(target):
                if record.get("student") == digest:
                    records[record["problem_id"]] = record
            for _, index, folder in found:
                for record in read_log(folder / test_set / f"{form}.jsonl"):
                    if record.get("student") == digest and record.get("problem_id") not in records:
                        records[record["problem_id"]] = record
                        imported += 1
            absent = [p.id for p in problems if p.id not in records]
            if absent:
                shard = shard_of(absent[0], count)
                raise DataError(f"{out}: {len(absent)} problems of {test_set}/{form} have no answer by this student "
                                f"(first: {absent[0]}, shard {shard}/{count}): run `distill evaluate --shard "
                                f"{shard}/{count}` with the same student and settings, then merge again")
            ids = {p.id for p in problems}
            write_jsonl(target, [records[p.id] for p in problems] + [r for pid, r in records.items() if pid not in ids])
            if cfg.evaluate.samples > 1:
                imported += _merge_samples(cfg, out / test_set / f"{form}.samples.jsonl", found, test_set, form,
                                           problems, digest, count)
    return {"shards": count, "records": imported}


def _merge_samples(cfg: Config, target: Path, found, test_set: str, form: str, problems, digest: str, count: int) -> int:
    """The sampled records (evaluate.samples > 1) of the shards joined into ``target`` as merge_evaluation
    joins the greedy ones, keyed by (problem id, sample index); returns how many were imported."""
    sampled = sampling_digest(digest, cfg)
    records: dict[tuple, dict] = {}
    imported = 0
    for path in [target, *(folder / test_set / target.name for _, _, folder in found)]:
        for record in read_log(path):
            key = (record.get("problem_id"), record.get("sample"))
            if record.get("student") == sampled and key not in records:
                records[key] = record
                imported += path != target
    wanted = [(p.id, j) for p in problems for j in range(cfg.evaluate.samples)]
    absent = [key for key in wanted if key not in records]
    if absent:
        shard = shard_of(absent[0][0], count)
        raise DataError(f"{target.parent.parent}: {len(absent)} samples of {test_set}/{form} are missing (first: "
                        f"{absent[0][0]} sample {absent[0][1]}, shard {shard}/{count}): run `distill evaluate --shard "
                        f"{shard}/{count}` with the same student and evaluate.samples, then merge again")
    keys = set(wanted)
    write_jsonl(target, [records[k] for k in wanted] + [r for k, r in records.items() if k not in keys])
    return imported


# --- MLflow tables -----------------------------------------------------------------------------

def _log_tables(tracker, test_set: str, rows: Mapping[str, list[dict]], verdicts: Mapping[str, list[Verdict]],
                golds: Sequence[float]) -> None:
    """One table per form, and with several forms one more with the forms and combinations side by side."""
    for form, records in rows.items():
        tracker.log_table([{"problem_id": r["problem_id"], "question": r["question"], "output": r["output"],
                            "answer": r["answer"], "gold": r["gold"], "status": r["status"], "reason": r["reason"]}
                           for r in records], f"eval/{test_set}/{form}.json")
    if len(rows) < 2:
        return
    combined = combine(verdicts, golds)
    first = next(iter(rows.values()))
    table = []
    for i, base in enumerate(first):
        row = {"problem_id": base["problem_id"], "question": base["question"], "gold": base["gold"]}
        for form, records in rows.items():
            row |= {f"{form}_output": records[i]["output"], f"{form}_answer": records[i]["answer"],
                    f"{form}_status": records[i]["status"]}
        row |= {"vote_answer": combined["vote"][i]["answer"], "vote_correct": combined["vote"][i]["correct"],
                "fallback_answer": combined["fallback"][i]["answer"],
                "fallback_form": combined["fallback"][i]["form"],
                "fallback_correct": combined["fallback"][i]["correct"]}
        table.append(row)
    tracker.log_table(table, f"eval/{test_set}/combined.json")


def _log_sample_tables(tracker, test_set: str, rows: Mapping[str, list[list[dict]]]) -> None:
    """``eval/<test_set>/<form>.samples.json``: every sample with its answer and status."""
    for form, per_problem in rows.items():
        tracker.log_table([{"problem_id": r["problem_id"], "sample": r["sample"], "question": r["question"],
                            "output": r["output"], "answer": r["answer"], "gold": r["gold"], "status": r["status"],
                            "reason": r["reason"]} for records in per_problem for r in records],
                          f"eval/{test_set}/{form}.samples.json")


def _evaluate_params(cfg: Config) -> dict:
    from dataclasses import asdict

    return {k: (",".join(v) if isinstance(v, tuple) else v) for k, v in asdict(cfg.evaluate).items()}
