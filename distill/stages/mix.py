"""mix: verified samples of some forms -> one training set of (student input, target) pairs.

Data contract:
- reads ``<run_dir>/verified/{form}.jsonl`` for each form of the mix (``cot``, ``pot``, ``eot``, ``etd``
  = all three, or forms joined by '+', e.g. ``cot+eot``), and the test sets ``cfg.data.test_sets``
  for decontamination.
- writes ``<run_dir>/mix/<mix>/train.jsonl`` and ``val.jsonl``, rows
  ``{"id", "problem_id", "form", "version", "input", "target", "gold"}`` where input is
  ``form.student_input(question)`` (the question plus the form's instruction) and target is
  ``form.student_target(completion)``; and ``mix/<mix>/summary.json``:
  ``{"mix", "forms", "counts": {form: n}, "val": n, "removed_overlap": n, "removed_duplicates": n,
  "overlap_by_test_set": {name: problems}, "digest", ...}``.
- MLflow run ``mix-<mix>``: the train and validation sets as MLflow datasets, counts as metrics.

Nothing is dropped silently: duplicates (same form, input and target) and the rows of training
questions that overlap a test set (``distill.overlap.contaminated_ids``, word n-grams) are counted
per form and per test set. The validation split holds out whole training questions (all their
forms), chosen with ``mix.seed``; it never takes a test question.

Resume: the mix is not built again when its inputs (digests of the verified files) and settings are
unchanged and ``train.jsonl`` / ``val.jsonl`` are still what it wrote (``summary.json`` records
their fingerprints, distill.files.fingerprints, which the train stage also checks its input
against). A verified file that is empty or smaller than the verify stage recorded is refused,
naming `distill verify`. One writer per run folder (distill.tracking.writing).
"""
from __future__ import annotations

import math
import random
from collections import Counter
from pathlib import Path

from distill.config import Config
from distill.files import (DataError, check_input, file_digest, fingerprints, mismatch, read_json, read_jsonl, read_record,
                           settings_digest, write_json, write_jsonl)
from distill.layout import RunFolder
from distill.problems import Problem, load_problems
from distill.thoughts import get_form, parse_mix
from distill.tracking import say, tracker_or_null, writing


def _examples(run_dir: Path, forms: tuple[str, ...], preset: str) -> tuple[list[dict], dict[str, str]]:
    rows, digests = [], {}
    for name in forms:
        path = RunFolder(run_dir).verified(name)
        if not path.exists():
            raise DataError(f"{path}: file not found. Run `distill verify --preset {preset}` (after generate) "
                            f"with {name} among generate.forms.")
        state = read_record(RunFolder(run_dir).verify_state(name))
        check_input(path, (state.get("outputs") or {}).get(f"{name}.jsonl"), f"distill verify --preset {preset}")
        digests[name] = file_digest(path)
        form = get_form(name)
        for r in read_jsonl(path, required=("problem_id", "question", "completion", "gold")):
            rows.append({"id": f"{r['problem_id']}/{name}/{r.get('sample_index', 0)}", "problem_id": r["problem_id"],
                         "form": name, "version": r.get("version", form.version),
                         "input": form.student_input(r["question"]), "target": form.student_target(r["completion"]),
                         "gold": r["gold"], "_question": r["question"]})
    return rows, digests


def _dedupe(rows: list[dict]) -> tuple[list[dict], Counter]:
    seen, out, removed = set(), [], Counter()
    for r in rows:
        key = (r["form"], r["input"], r["target"])
        if key in seen:
            removed[r["form"]] += 1
            continue
        seen.add(key)
        out.append(r)
    return out, removed


def _contaminated(cfg: Config, rows: list[dict]) -> dict[str, set[str]]:
    from distill.overlap import contaminated_ids

    questions = {r["problem_id"]: r["_question"] for r in rows}
    train = [Problem(pid, cfg.data.train_set, "train", q, 0.0) for pid, q in sorted(questions.items())]
    tests = {name: load_problems(name, "test", cfg.data_path, cfg.data.hub) for name in cfg.data.test_sets}
    return {name: set(ids) for name, ids in contaminated_ids(train, tests, n=cfg.mix.overlap_n).items()}


def split_ids(problem_ids: list[str], fraction: float, seed: int) -> set[str]:
    """The validation problems: a seeded sample of ``fraction`` of the ids (at least one when fraction > 0)."""
    ids = sorted(set(problem_ids))
    if fraction <= 0 or len(ids) < 2:
        return set()
    k = min(len(ids) - 1, max(1, math.floor(fraction * len(ids) + 0.5)))
    random.Random(seed).shuffle(ids)
    return set(ids[:k])


def outputs(out: Path) -> dict[str, Path]:
    """The data files a mix writes, by the names its summary records them under."""
    return {"train.jsonl": out / "train.jsonl", "val.jsonl": out / "val.jsonl"}


def run(cfg: Config, run_dir: Path, tracker=None) -> dict:
    """Build the mix ``mix.mix`` of cfg; see the module docstring."""
    tracker = tracker_or_null(tracker)
    with writing(run_dir, tracker, "mix"):
        return _run(cfg, Path(run_dir), tracker)


def _run(cfg: Config, run_dir: Path, tracker=None) -> dict:
    mix = cfg.mix.mix
    forms = parse_mix(mix)
    out = RunFolder(run_dir).mix(mix)
    rows, inputs = _examples(run_dir, forms, cfg.preset)
    fingerprint = settings_digest({"inputs": inputs, "mix": [cfg.mix.val_fraction, cfg.mix.decontaminate,
                                                             cfg.mix.overlap_n, cfg.mix.seed],
                                   "test_sets": cfg.data.test_sets})
    summary_path = out / "summary.json"
    if summary_path.exists():
        previous = read_record(summary_path)  # unreadable: built again below
        if previous.get("fingerprint") == fingerprint:
            damaged = mismatch(previous.get("outputs"), outputs(out))
            if damaged is None:
                return previous  # same inputs and settings, and the files on disk are what this mix wrote
            say(f"mix {mix}: {damaged} since the mix was built; building it again")
    n_rows = len(rows)
    rows, duplicates = _dedupe(rows)
    overlap: dict[str, set[str]] = {}
    removed_overlap: Counter = Counter()
    if cfg.mix.decontaminate:
        overlap = _contaminated(cfg, rows)
        bad = set().union(*overlap.values()) if overlap else set()
        kept = []
        for r in rows:
            if r["problem_id"] in bad:
                removed_overlap[r["form"]] += 1
            else:
                kept.append(r)
        rows = kept
    val_ids = split_ids([r["problem_id"] for r in rows], cfg.mix.val_fraction, cfg.mix.seed)
    for r in rows:
        del r["_question"]
    train = [r for r in rows if r["problem_id"] not in val_ids]
    val = [r for r in rows if r["problem_id"] in val_ids]
    write_jsonl(out / "train.jsonl", train)
    write_jsonl(out / "val.jsonl", val)
    counts = Counter(r["form"] for r in train)
    summary = {"mix": mix, "forms": list(forms), "counts": {f: counts.get(f, 0) for f in forms}, "train": len(train),
               "val": len(val), "val_counts": dict(Counter(r["form"] for r in val)),
               "problems": len({r["problem_id"] for r in train}), "val_problems": len(val_ids),
               "rows_in": n_rows, "removed_duplicates": sum(duplicates.values()),
               "removed_duplicates_by_form": dict(duplicates), "decontaminated": cfg.mix.decontaminate,
               "removed_overlap": sum(removed_overlap.values()), "removed_overlap_by_form": dict(removed_overlap),
               "overlap_by_test_set": {name: len(ids) for name, ids in overlap.items()},
               "overlap_n": cfg.mix.overlap_n, "seed": cfg.mix.seed, "val_fraction": cfg.mix.val_fraction,
               "inputs": inputs, "digest": file_digest(out / "train.jsonl"),
               "val_digest": file_digest(out / "val.jsonl"), "fingerprint": fingerprint,
               "outputs": fingerprints(outputs(out))}
    teacher = ""
    gen_summary = RunFolder(run_dir).generate_summary
    if gen_summary.exists():
        teacher = read_json(gen_summary).get("teacher", "")
    tags = {"distill.stage": "mix", "distill.preset": cfg.preset, "distill.mix": mix, "distill.forms": ",".join(forms),
            "distill.teacher": teacher}
    with tracker.run(f"mix-{mix}", tags, nested=True):
        tracker.log_params({"mix.mix": mix, "mix.val_fraction": cfg.mix.val_fraction, "mix.seed": cfg.mix.seed,
                            "mix.decontaminate": cfg.mix.decontaminate, "mix.overlap_n": cfg.mix.overlap_n,
                            "data.test_sets": ",".join(cfg.data.test_sets)})
        tracker.log_metrics({"mix/train": len(train), "mix/val": len(val),
                             "mix/removed_duplicates": summary["removed_duplicates"],
                             "mix/removed_overlap": summary["removed_overlap"],
                             **{f"mix/train/{f}": n for f, n in summary["counts"].items()},
                             **{f"mix/overlap/{name}": n for name, n in summary["overlap_by_test_set"].items()}})
        source = str(out.resolve())
        logged = {"mlflow_digest": tracker.log_dataset(train, f"{mix}-train", f"{source}/train.jsonl", "training")
                  if train else None,
                  "mlflow_val_digest": tracker.log_dataset(val, f"{mix}-val", f"{source}/val.jsonl", "validation")
                  if val else None}
        summary.update({key: digest for key, digest in logged.items() if digest is not None})  # None: not logged
        tracker.set_tags({"distill.data_digest": summary["digest"]})
        write_json(summary_path, summary)
        tracker.log_artifact(summary_path, "mix")
    return summary
