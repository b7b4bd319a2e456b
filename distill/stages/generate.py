"""generate: training problems x thought forms -> raw teacher samples.

Data contract:
- reads the training set (``cfg.data.train_set``, split train, first ``cfg.data.limit_train``).
- appends ``<run_dir>/samples.jsonl``, one record per sample:
  ``{"problem_id", "question", "gold", "form", "version", "teacher", "model", "sample_index",
  "completion" (str | None), "status" ("ok" | "failed"), "reason", "request_hash"}``.
- writes ``<run_dir>/generate_summary.json`` (counts, store hits, tokens, cost, why it stopped).
- with ``shard`` i/n (``distill generate --shard i/n``, see ``distill.shards``): only the (problem, form)
  pairs of that shard, appended to ``<run_dir>/samples.shard-<i>-of-<n>.jsonl`` (one writer per
  file, so shards in several processes or hosts share the run folder), with its own
  ``generate_summary.shard-<i>-of-<n>.json`` and ``ledger.shard-<i>-of-<n>.jsonl``. Readers
  (``latest_samples``, so ``verify``) take the union of samples.jsonl and every shard file.
- MLflow run ``generate`` (tags distill.stage, distill.preset, distill.forms, distill.teacher):
  params, metrics ``generate/*`` and ``teacher/*`` (calls, store hits, retries, tokens, cost).

Resume: an item (problem, form) with a record in any of these sample files is done; a rerun asks only for the
rest, and the completion store answers any request already paid for. Items that outlived the
retries have no record, so a rerun retries them.
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path

from distill.config import Config, flatten, replace
from distill.files import DataError, append_log, read_log, write_json
from distill.layout import RunFolder
from distill.problems import load_problems
from distill.shards import Shard, pick, shard_files
from distill.teachers import BudgetReached, Job, get_teacher
from distill.thoughts import get_form
from distill.tracking import tracker_or_null, writing


def build_jobs(cfg: Config, shard: Shard | None = None) -> list[Job]:
    """Every (problem, form) job, or only those of ``shard`` (by a hash of the pair, see distill.shards)."""
    problems = load_problems(cfg.data.train_set, "train", cfg.data_path, cfg.data.hub)
    if cfg.data.limit_train is not None:
        problems = problems[: cfg.data.limit_train]
    forms = [get_form(name) for name in cfg.generate.forms]
    jobs = [Job(p.id, form.name, form.version, p.question, p.answer, tuple(form.teacher_messages(p.question)),
                p.rationale)
            for p in problems for form in forms]
    return shard.select(jobs, key=lambda j: j.key) if shard else jobs


def latest_samples(path: Path) -> dict[tuple[str, str, int], dict]:
    """The last record of every (problem_id, form, sample_index) in a samples log and its shard files
    (``samples.shard-*-of-*.jsonl`` beside it; the union, in a fixed file order)."""
    return {(r["problem_id"], r["form"], int(r.get("sample_index", 0))): r
            for file in shard_files(path) for r in read_log(file)}


def _check_teacher(samples: dict, teacher_name: str, path: Path) -> None:
    others = {r.get("teacher") for r in samples.values()} - {teacher_name}
    if others:
        raise DataError(f"{path} holds samples of teacher {sorted(others)[0]!r}, not {teacher_name!r}: "
                        "use another run_dir (--set run_dir=...) or remove the file")


# Samples are fsynced at most once a second, not per answer (each answer's rows are still flushed at
# once, so they survive ``kill -9``): an OS crash can lose the last second of samples, and the
# completion store gives those back for free (gold and replay cost nothing anyway). Measured on this
# project's ext4 disk, 2026-12: an fsync per answer caps the log at about 3,700 answers/s, once a
# second at about 110,000/s.
SAMPLES_SYNC_EVERY = 1.0


def _rows(job: Job, answer, teacher) -> list[dict]:
    rows = []
    for i, (text, reason) in enumerate(zip(answer.completions, answer.reasons)):
        rows.append({"problem_id": job.problem_id, "question": job.question, "gold": job.gold, "form": job.form,
                     "version": job.version, "teacher": teacher.name, "model": teacher.model, "sample_index": i,
                     "completion": text, "status": "ok" if text is not None else "failed",
                     "reason": reason, "request_hash": answer.request_hash})
    return rows


def run(cfg: Config, run_dir: Path, tracker=None, *, batch: str | None = None, shard: Shard | None = None) -> dict:
    """Ask the teacher for every (problem, form) without a sample yet; ``batch`` is submit or collect;
    ``shard`` restricts the run to its share of the pairs. One writer per run folder (the shards of
    one generation share it, each the only writer of its own files)."""
    tracker = tracker_or_null(tracker)
    with writing(run_dir, tracker, "generate", shard=shard):
        return _run(cfg, Path(run_dir), tracker, batch=batch, shard=shard)


def _run(cfg: Config, run_dir: Path, tracker=None, *, batch: str | None = None, shard: Shard | None = None) -> dict:
    from tqdm import tqdm

    run_dir = Path(run_dir)
    folder = RunFolder(run_dir)
    samples_path = folder.samples
    jobs = build_jobs(cfg, shard)
    if batch not in (None, "", "submit", "collect"):
        raise ValueError(f"--batch must be submit or collect, not {batch!r}")
    if batch and cfg.teacher.name != "openai":
        raise DataError(f"--batch needs --teacher openai (the Batch API), not {cfg.teacher.name!r}")
    if batch and shard:
        raise DataError("--batch and --shard do not go together: one batch already holds every request; drop --shard")
    if cfg.teacher.name == "openai":
        from distill.teachers.api import OpenAITeacher

        teacher = OpenAITeacher.from_config(cfg, run_dir, shard=shard)
    else:
        teacher = get_teacher(replace(cfg, teacher={"base_url": pick(cfg.teacher.base_url, shard)}), run_dir)
    existing = latest_samples(samples_path)  # every shard's samples: what any shard answered is done
    _check_teacher(existing, teacher.name, samples_path)
    done = {(pid, form) for pid, form, _ in existing}
    versions = {(r["problem_id"], r["form"]): r.get("version") for r in existing.values()}
    # the gold teacher's answers cost nothing and change with its derivation (its model string says
    # which, e.g. gsm8k-annotations-v2): samples of another derivation are derived again. A paid
    # teacher's samples are kept whatever its model string; its form versions decide, as above.
    models = {(r["problem_id"], r["form"]): r.get("model") for r in existing.values()}
    stale_model = teacher.name == "gold"
    todo = [j for j in jobs if j.key not in done or versions.get(j.key) != j.version
            or (stale_model and models.get(j.key) != teacher.model)]
    tags = {"distill.stage": "generate", "distill.preset": cfg.preset, "distill.forms": ",".join(cfg.generate.forms),
            "distill.teacher": teacher.name, **({"distill.shard": str(shard)} if shard else {})}
    out_path = shard.path(samples_path) if shard else samples_path
    summary_path = shard.path(folder.generate_summary) if shard else folder.generate_summary
    summary: dict = {}
    with tracker.run("generate", tags, nested=True):
        tracker.log_params({k: v for k, v in flatten(cfg).items() if k.split(".")[0] in ("data", "teacher", "generate")})
        if batch == "submit":
            from distill.teachers import batch as batch_api

            summary["batch"] = batch_api.submit(teacher, run_dir, todo, {"distill.preset": cfg.preset})
            todo = []
        elif batch == "collect":
            from distill.teachers import batch as batch_api

            summary["batch"] = batch_api.collect(teacher, run_dir, cfg.generate.batch_poll, cfg.generate.batch_wait)
            teacher.offline = True  # only what the batches brought back; never a live call here
        stopped = ""
        with append_log(out_path, sync_every=SAMPLES_SYNC_EVERY) as log, \
                tqdm(total=len(jobs), initial=len(jobs) - len(todo), unit="item", desc=f"generate ({teacher.name})",
                     disable=None) as bar:
            try:
                for job, answer in teacher.answer(todo):
                    log.write_all(_rows(job, answer, teacher))
                    bar.update(1)
            except BudgetReached as exc:
                stopped = str(exc)
        summary.update(_summarise(cfg, jobs, samples_path, teacher, stopped))
        if shard:
            summary["shard"] = str(shard)
        write_json(summary_path, summary)
        tracker.log_metrics({f"generate/{k}": summary[k] for k in ("items", "answered", "pending",
                                                                    "samples_ok", "samples_failed")})
        tracker.log_metrics({f"teacher/{k}": v for k, v in summary["teacher_stats"].items()
                             if isinstance(v, (int, float)) and v is not None})
        tracker.log_artifact(summary_path)
    return summary


def _summarise(cfg: Config, jobs: list[Job], samples_path: Path, teacher, stopped: str) -> dict:
    samples = latest_samples(samples_path)
    wanted = {j.key for j in jobs}
    answered = {(pid, form) for pid, form, _ in samples} & wanted
    rows = [r for (pid, form, _), r in samples.items() if (pid, form) in wanted]
    reasons = Counter(r["reason"].split(":")[0] for r in rows if r["status"] != "ok")
    per_form = Counter(r["form"] for r in rows if r["status"] == "ok")
    stats = dict(getattr(teacher, "stats", {}))
    ledger = getattr(teacher, "ledger", None)
    if ledger is not None:
        stats.update(ledger.totals())
    stats = {k.replace("error/", "errors/"): v for k, v in stats.items() if v is not None}
    pending = len(wanted) - len(answered)
    return {"teacher": teacher.name, "model": teacher.model, "forms": list(cfg.generate.forms),
            "items": len(wanted), "answered": len(answered), "pending": pending,
            "samples_ok": sum(per_form.values()), "samples_failed": sum(reasons.values()),
            "ok_by_form": dict(per_form), "failed_reasons": dict(reasons), "teacher_stats": stats,
            "last_error": getattr(teacher, "last_error", ""), "stopped": stopped}
