"""verify: raw samples -> kept and dropped per form, through each form's own verifier.

Data contract:
- reads ``<run_dir>/samples.jsonl`` (the last record of each problem, form and sample index).
- writes ``<run_dir>/verified/{form}.jsonl``: the kept samples (verdict ``correct``) with a
  ``"verdict"`` dict and ``"repaired"`` (true when only the form's named repair rules made it correct:
  strict mode would have dropped it); ``verified/dropped.jsonl``: every other sample with its verdict (a sample the
  teacher failed to give has status ``teacher_failed`` and the teacher's reason);
  ``verified/summary.json``: ``{form: {"n", "kept", "repaired", "drop_rate", "reasons": {status: count},
  "digest", "mlflow_digest"}}``; ``verified/state/{form}.json`` records what was verified.
- MLflow run ``verify``: params ``verify.strict`` (whether the repair rules were off), ``verify.timeout``;
  metrics ``verify/<form>/drop_rate``, ``verify/<form>/kept``, ``verify/<form>/n``,
  ``verify/<form>/repaired`` (kept samples the repair rules rescued; 0 in strict mode),
  ``verify/<form>/dropped/<reason>``, ``verify/<form>/computed_numbers_in_text`` (kept targets whose text
  outside equations or code holds a number the question does not: arithmetic done in text, see
  distill/thoughts/numbers.py; expected for CoT, 0 for the gold teacher's PoT and EoT); tags
  ``distill.example.<form>`` (one kept target per form, of the first question kept in every form, and
  ``distill.example.question``) for the report; the dropped samples as a table artifact
  (``verify/dropped.json``); the verified sets as MLflow datasets ``CoTD``, ``PoTD``, ``EoTD``.

File mode (``verify_file``, ``distill verify FILE --thought FORM``): reads a JSONL file of
completions from anywhere, writes one verdict record per line to ``--output``.

Resume: a form whose samples, form version and verifier settings are unchanged since its last
verification, and whose output files are still what that verification wrote, is not verified again
(``state/{form}.json`` holds the digest of its input and the fingerprints of ``{form}.jsonl`` and
``state/{form}.dropped.jsonl``, distill.files.fingerprints); a changed, cut or deleted output is
verified again, saying why. The mix stage reads the same record to refuse a damaged ``{form}.jsonl``.
One writer per run folder (distill.tracking.writing).
"""
from __future__ import annotations

import os
from collections import Counter, defaultdict
from pathlib import Path

from distill import sandbox
from distill.config import Config
from distill.files import (DataError, file_digest, fingerprints, mismatch, read_jsonl, read_record, settings_digest,
                           write_json, write_jsonl)
from distill.shards import shard_files
from distill.layout import RunFolder
from distill.stages.generate import latest_samples
from distill.thoughts import form_names, get_form
from distill.thoughts.numbers import computed_in_text
from distill.tracking import say, tracker_or_null, writing

TABLE_COMPLETION_CHARS = 600  # the dropped table is for reading in the UI; full text stays in dropped.jsonl




def _input_digest(rows: list[dict], version: int, cfg: Config) -> str:
    # "stats" names the summary's schema: a state written before "repaired" was counted is verified again
    return settings_digest({"version": version, "strict": cfg.verify.strict, "timeout": cfg.verify.timeout, "stats": 2},
                           *([r["problem_id"], r.get("sample_index", 0), r["completion"], r["gold"], r["status"]]
                             for r in rows), ensure_ascii=False)


def verify_form(form_name: str, rows: list[dict], cfg: Config) -> tuple[list[dict], list[dict]]:
    """(kept, dropped) for one form's samples; every dropped row carries a verdict with a reason, every
    kept row ``"repaired"``: whether strict mode (every repair rule off) would have dropped it."""
    form = get_form(form_name)
    answered = [r for r in rows if r["status"] == "ok" and r.get("completion")]
    verdicts = form.verify_many([r["completion"] for r in answered], [float(r["gold"]) for r in answered],
                                timeout=cfg.verify.timeout, strict=cfg.verify.strict) if answered else []
    kept, dropped = [], []
    for row, verdict in zip(answered, verdicts):
        (kept if verdict.correct else dropped).append({**row, "verdict": verdict.to_dict()})
    # The repair rules' share of the kept set (reported beside the paper, which states no such rules):
    # the kept samples verified again with the rules off; in strict mode nothing was repaired.
    strict_ok = [True] * len(kept)
    if kept and not cfg.verify.strict:
        again = form.verify_many([r["completion"] for r in kept], [float(r["gold"]) for r in kept],
                                 timeout=cfg.verify.timeout, strict=True)
        strict_ok = [v.correct for v in again]
    kept = [{**row, "repaired": not ok} for row, ok in zip(kept, strict_ok)]
    for row in rows:
        if not (row["status"] == "ok" and row.get("completion")):
            dropped.append({**row, "verdict": {"status": "teacher_failed", "answer": None,
                                               "reason": row.get("reason") or "empty_content",
                                               "form": form_name, "version": form.version}})
    return kept, dropped


def _computed_numbers_in_text(form_name: str, kept: list[dict]) -> int:
    """How many kept targets hold, outside their equations or code, a number their question does not."""
    form = get_form(form_name)
    return sum(bool(computed_in_text(form, r["completion"], r["question"])) for r in kept)


EXAMPLE_CHARS = 1500  # a tag holds at most 8,000 characters; an example is for reading in the report


def _examples(kept: dict[str, dict[str, dict]]) -> dict[str, str]:
    """Tags with one kept target per form, all of the first question (in sample order) kept in every
    form: what the teacher writes, shown in the report's choices section."""
    forms = [f for f in form_names() if f in kept]
    common = [pid for pid in kept[forms[0]] if all(pid in kept[f] for f in forms)] if forms else []
    if not common:
        return {}
    rows = {f: kept[f][common[0]] for f in forms}
    question = next(iter(rows.values()))["question"]
    return {"distill.example.question": question[:EXAMPLE_CHARS],
            **{f"distill.example.{f}": get_form(f).student_target(r["completion"])[:EXAMPLE_CHARS]
               for f, r in rows.items()}}


def outputs(folder: RunFolder, name: str) -> dict[str, Path]:
    """The files the verification of one form writes, by the names its state records them under."""
    return {f"{name}.jsonl": folder.verified(name), f"state/{name}.dropped.jsonl": folder.verify_dropped(name)}


def run(cfg: Config, run_dir: Path, tracker=None) -> dict:
    tracker = tracker_or_null(tracker)
    with writing(run_dir, tracker, "verify"):
        return _run(cfg, Path(run_dir), tracker)


def _run(cfg: Config, run_dir: Path, tracker=None) -> dict:
    folder = RunFolder(run_dir)
    samples_path = folder.samples
    if not shard_files(samples_path):  # samples.jsonl or the files of `generate --shard`
        raise DataError(f"{samples_path}: file not found. Run `distill generate --preset {cfg.preset}` first.")
    by_form: dict[str, list[dict]] = defaultdict(list)
    for key in sorted(latest := latest_samples(samples_path)):
        by_form[key[1]].append(latest[key])
    known = form_names()
    unknown = sorted(set(by_form) - set(known))
    if unknown:
        raise DataError(f"{samples_path}: unknown form {unknown[0]!r}; valid forms: {', '.join(known)}")
    forms = [f for f in known if f in by_form]
    sandbox.configure(workers=cfg.verify.workers)
    teacher = next(iter(latest.values()), {}).get("teacher", "")
    tags = {"distill.stage": "verify", "distill.preset": cfg.preset, "distill.forms": ",".join(forms),
            "distill.teacher": teacher}
    summary: dict = {}
    all_dropped: list[dict] = []
    first_kept: dict[str, dict[str, dict]] = {}
    with tracker.run("verify", tags, nested=True):
        tracker.log_params({"verify.strict": cfg.verify.strict, "verify.timeout": cfg.verify.timeout,
                            "verify.forms": ",".join(forms)})
        for name in forms:
            rows = by_form[name]
            version = get_form(name).version
            digest_in = _input_digest(rows, version, cfg)
            state_path = folder.verify_state(name)
            dropped_path = folder.verify_dropped(name)
            state = read_record(state_path)
            files = outputs(folder, name)
            damaged = mismatch(state.get("outputs"), files) if state.get("input_digest") == digest_in else None
            if state.get("input_digest") == digest_in and damaged is None:
                dropped = read_jsonl(dropped_path)
                stats = state["summary"]
            else:
                if damaged:
                    say(f"verify {name}: the samples are unchanged but {damaged} since it was verified; verifying again")
                kept, dropped = verify_form(name, rows, cfg)
                write_jsonl(folder.verified(name), kept)
                write_jsonl(dropped_path, dropped)
                reasons = Counter(d["verdict"]["status"] for d in dropped)
                stats = {"n": len(rows), "kept": len(kept), "repaired": sum(r["repaired"] for r in kept),
                         "drop_rate": round(len(dropped) / max(1, len(rows)), 6),
                         "reasons": dict(sorted(reasons.items())), "digest": file_digest(folder.verified(name)),
                         "version": version}
                write_json(state_path, {"input_digest": digest_in, "summary": stats, "outputs": fingerprints(files)})
            all_dropped.extend(dropped)
            summary[name] = dict(stats)
            kept_rows = read_jsonl(folder.verified(name))
            summary[name]["computed_numbers_in_text"] = _computed_numbers_in_text(name, kept_rows)
            for r in kept_rows:
                first_kept.setdefault(name, {}).setdefault(r["problem_id"], r)
            tracker.log_metrics({f"verify/{name}/drop_rate": stats["drop_rate"], f"verify/{name}/kept": stats["kept"],
                                 f"verify/{name}/n": stats["n"], f"verify/{name}/repaired": stats["repaired"],
                                 f"verify/{name}/computed_numbers_in_text": summary[name]["computed_numbers_in_text"],
                                 **{f"verify/{name}/dropped/{r}": c for r, c in stats["reasons"].items()}})
            if kept_rows:
                mlflow_digest = tracker.log_dataset(
                    [{"problem_id": r["problem_id"], "question": r["question"], "gold": r["gold"],
                      "completion": r["completion"], "form": name, "version": r["version"]} for r in kept_rows],
                    get_form(name).dataset, source=str(folder.verified(name).resolve()), context="verified")
                if mlflow_digest is not None:  # None without tracking: nothing was logged
                    summary[name]["mlflow_digest"] = mlflow_digest
        write_jsonl(folder.dropped, all_dropped)
        write_json(folder.verified_summary, summary)
        tracker.set_tags({f"distill.digest.{name}": s["digest"] for name, s in summary.items()})
        tracker.set_tags(_examples(first_kept))
        if all_dropped:
            tracker.log_table([{"problem_id": d["problem_id"], "form": d["form"], "status": d["verdict"]["status"],
                                "reason": str(d["verdict"]["reason"])[:300],
                                "completion": (d.get("completion") or "")[:TABLE_COMPLETION_CHARS]}
                               for d in all_dropped], "verify/dropped.json")
        tracker.log_artifact(folder.verified_summary, "verify")
    return summary


# --- file mode: `distill verify FILE --thought FORM`, for teacher outputs produced anywhere else ----------

FILE_HINT = 'Each line needs {"question", "completion", "answer"} and optionally "id".'
FILE_BATCH = 512  # batches keep the sandbox's workers busy and the progress bar moving


def verify_file(cfg: Config, file: str | Path, thought: str, output: str | Path | None = None):
    """Verify the completions of a JSONL file with ``thought``'s own verifier (the pipeline's code);
    write one verdict record per line to ``output`` when given. Returns (form, verdicts, isolation)."""
    from tqdm.auto import tqdm

    from distill.answers import parse_number

    _check_file(file, output)
    rows = read_jsonl(file, required=("completion",), hint=FILE_HINT)
    golds = []
    for lineno, row in enumerate(rows, 1):
        raw = row.get("answer", row.get("gold"))  # "gold": a samples.jsonl of the pipeline reads as is
        if raw is None:
            raise DataError(f"{file}: record {lineno}: missing field 'answer'. {FILE_HINT}")
        gold = parse_number(raw)
        if gold is None:
            raise DataError(f"{file}: record {lineno}: answer {raw!r} is not a number")
        golds.append(gold)
    form = get_form(thought)
    sandbox.configure(workers=cfg.verify.workers)
    # a form that runs programs or equations runs them in the sandbox, whose isolation the reader should know
    isolation = sandbox.isolation() if form.sandboxed else f"not used ({thought} runs no program)"
    verdicts = []
    with tqdm(total=len(rows), desc=f"verify {thought}", unit="line", disable=None) as bar:
        for k in range(0, len(rows), FILE_BATCH):
            batch = [str(r["completion"] or "") for r in rows[k:k + FILE_BATCH]]
            verdicts += form.verify_many(batch, golds[k:k + FILE_BATCH], timeout=cfg.verify.timeout,
                                         strict=cfg.verify.strict)
            bar.update(len(batch))
    if output:
        write_jsonl(output, [{"id": r.get("id", r.get("problem_id", k)), "gold": g, **v.to_dict()}
                             for k, (r, g, v) in enumerate(zip(rows, golds, verdicts))])
    return form, verdicts, isolation


def _check_file(file: str | Path, output: str | Path | None) -> None:
    """The input must be UTF-8 JSONL text with a record, and ``output`` must not be the input;
    otherwise one DataError line (exit 2) before anything is read further or written."""
    src = Path(file)
    if output and (Path(output).resolve() == src.resolve()
                   or (Path(output).exists() and os.path.samefile(output, src))):
        raise DataError(f"--output {output} is the input file; verdicts would replace the completions. "
                        "Give another path, e.g. --output verdicts.jsonl")
    data = src.read_bytes()
    if b"\x00" in data:
        raise DataError(f"{file}: a binary file (it contains NUL bytes), not JSONL text. {FILE_HINT}")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"{file}: not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start}); "
                        "save it as UTF-8 JSONL") from None
    if not text.strip():
        raise DataError(f"{file}: no records (the file is empty). {FILE_HINT}")
