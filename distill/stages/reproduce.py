"""The whole study as one MLflow run tree: generate -> verify -> mix x4 -> train x4 -> evaluate x4
-> register x4 -> promote -> report. For a causal student (tiny-causal, a hub decoder) the untrained
student is evaluated too, after the evaluate steps (``evaluate-etd-base``: the study's starting point,
distill.stages.evaluate.run_untrained); never for a seq2seq one (the default tiny preset).

Data contract (everything under ``run_dir``, beside the stages' own outputs):
  - ``reproduce/parent.json``: {"run_id", "preset", "config_digest"}: the parent run a rerun resumes.
  - ``reproduce/done/<step>.json``: one done-marker per finished step, written atomically after the
    step returns: {"step", "stage", "mix", "run_id" (the step's MLflow run or null), "parent_run_id",
    "config_digest", "seconds", "summary" (what the stage returned)}.
  - ``reproduce/timings.json``: {step: {"seconds", "skipped"}} of the latest invocation.

MLflow: a parent run ``reproduce-<preset>`` (tags distill.stage=reproduce, distill.preset,
distill.teacher, distill.student, distill.config_digest) holds every stage's run as a nested run.
For each step it records the tag ``distill.step.<step>.run_id`` and the metric
``wall_seconds/<step>``; ``wall_seconds/total`` is their sum (earlier invocations included). It also carries the
constant-answer baseline (``baseline/<test_set>/accuracy``, param ``baseline.answer``) so that the
students can be compared with it in the MLflow UI, and the four students side by side as artifacts
``comparison/accuracy.{md,json,png}`` (student x test set x form with n and a 95% interval; also
written to ``<run_dir>/reproduce/comparison/``). ``distill report`` reads these tags to find the runs
that produced the results. The run ends by printing where the report is, the headline table and
the commands to run next (``make ui`` with the link to the evaluate runs, ``make serve``, curl).

Resume (our choice, documented in the README): a rerun with the same preset and the same config
resumes the *same* parent run, so the tree stays one tree, and skips every step whose marker was
written with this config digest, whose runs (the step's and its parent's) still exist in the
store and whose output files are still what the marker recorded (distill.files.fingerprints of
``step_outputs``; a damaged output runs the step again, saying why); the report step also runs
again when its results.md is missing. A step killed midway continues its unfinished child run
(distill.tracking.Tracker.run), never a second one; the runs a killed invocation left RUNNING are
ended as KILLED first (Tracker.claim). The whole invocation holds the run folder's lock (one
writer; a second reproduce or stage on the folder stops at once, naming this one). A changed config (another
digest), a wiped or different store, or ``fresh=True`` starts a new parent; steps then run again,
and each stage's own resume skips the work its files already hold. Under ``mlflow run`` the parent
is the run that ``mlflow run`` created (MLFLOW_RUN_ID); markers of an earlier parent in the same
store still count there, and the reused runs are named in the new parent's step tags.
"""
from __future__ import annotations

import importlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

from distill.config import Config, flatten, replace
from distill.files import DataError, fingerprints, folder_files, mismatch, read_json, settings_digest, write_json
from distill.layout import RunFolder
from distill.results import constant_baseline
from distill.stages import pipeline
from distill.thoughts import named_mixes
from distill.tracking import Tracker, writing

StageFn = Callable[..., dict]


@dataclass(frozen=True)
class Step:
    name: str
    """Step name: the stage's MLflow run name (generate, mix-cot, train-etd, register-eot...)."""
    stage: str
    """Module in distill/stages/."""
    mix: str | None = None
    entry: str = "run"
    """The stage module's function the step calls: ``run``, or evaluate's ``run_untrained`` (the base)."""


BASE_MIX = "etd"
"""The mix whose untrained base a causal preset's reproduce evaluates: its forms are all three, so one
evaluation gives the starting point of every form (the others: `distill evaluate --untrained --mix cot`)."""


def plan(mixes: tuple[str, ...] = tuple(named_mixes()), *, base: bool = False) -> list[Step]:
    """The steps in order: each stage for every mix before the next stage starts (distill.stages.pipeline);
    with ``base``, the untrained student's evaluation (``evaluate-etd-base``) right after the evaluate steps."""
    steps = [Step(name, stage, mix) for name, stage, mix in pipeline(mixes)]
    if base and BASE_MIX in mixes:
        at = max(i for i, step in enumerate(steps) if step.stage == "evaluate") + 1
        steps.insert(at, Step(f"evaluate-{BASE_MIX}-base", "evaluate", BASE_MIX, entry="run_untrained"))
    return steps


def measures_base(cfg: Config, log: Callable[[str], None] = print) -> bool:
    """Whether reproduce evaluates the untrained student too: for causal students (tiny-causal, Qwen2.5,
    SmolLM2: the starting point that SFT and RL are measured from), not for seq2seq ones, so the default
    tiny preset's run time does not grow. A hub student whose config cannot be read says so and gets none."""
    from distill.student import is_causal_student

    try:
        return is_causal_student(cfg.train.student)
    except ValueError as exc:
        log(f"reproduce: no untrained-student step ({str(exc).splitlines()[0]})")
        return False


def config_digest(cfg: Config) -> str:
    """What a result depends on; where files and runs are kept (tracking, paths) does not count."""
    items = {k: v for k, v in flatten(cfg).items()
             if not k.startswith("tracking.") and k not in ("run_dir", "data.data_dir")}
    return settings_digest(items)


def offline_env(cfg: Config) -> None:
    """The embedded default needs no network: a tiny student is built locally and the data is on disk,
    so stop huggingface_hub from trying to reach the hub (it would otherwise, quietly)."""
    train_file = cfg.data_path / cfg.data.train_set
    if cfg.train.student == "tiny" and train_file.exists():
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")


def _stage_fn(stage: str, entry: str = "run") -> StageFn:
    try:
        module = importlib.import_module(f"distill.stages.{stage}")
    except ModuleNotFoundError as exc:
        raise RuntimeError(f"stage module distill/stages/{stage}.py is missing ({exc}); "
                           "reproduce needs every stage of the pipeline") from None
    return getattr(module, entry)


def step_config(cfg: Config, step: Step) -> Config:
    """The config a step's stage runs with: the study's, with the step's mix as ``mix.mix``."""
    return replace(cfg, mix={"mix": step.mix}) if step.mix else cfg


def _call(fn: StageFn, cfg: Config, run_dir: Path, tracker, step: Step, report_dir: str | Path,
          parent_id: str) -> dict:
    """Run a step's stage as ``fn(cfg, run_dir, tracker)`` with the step's config; the report step
    also gets where to write and which reproduce run to read (not settings: they come with the call)."""
    if step.stage == "report":
        return fn(step_config(cfg, step), run_dir, tracker, output_dir=report_dir, parent_run_id=parent_id) or {}
    return fn(step_config(cfg, step), run_dir, tracker) or {}


class _Store:
    """The few read queries reproduce needs (the Tracker only logs)."""

    def __init__(self, tracker):
        self.client = tracker.mlflow.MlflowClient()
        self.experiment_id = tracker.mlflow.get_experiment_by_name(tracker.experiment).experiment_id

    def run(self, run_id: str | None):
        if not run_id:
            return None
        try:
            run = self.client.get_run(run_id)
        except Exception:  # not in this store (wiped, or another store): treated as absent
            return None
        return run if run.info.lifecycle_stage == "active" else None

    def children(self, parent_id: str) -> dict[str, str]:
        runs = self.client.search_runs([self.experiment_id], f"tags.mlflow.parentRunId = '{parent_id}'",
                                       max_results=10000)
        return {r.info.run_id: r.info.run_name for r in runs}


def _marker_path(run_dir: Path, step: Step) -> Path:
    return RunFolder(run_dir).done(step.name)


def _read_state(path: Path) -> dict | None:
    """A state file of an earlier invocation, or None when it is missing or unreadable (start afresh)."""
    try:
        return read_json(path, default=None)
    except DataError:
        return None


def step_outputs(run_dir: Path, step: Step) -> dict[str, Path]:
    """The files a step leaves in the run folder, which its done-marker fingerprints."""
    folder = RunFolder(run_dir)
    # the keys are the paths relative to the run folder, as the markers have always recorded them
    files = {"generate": {"samples.jsonl": folder.samples, "generate_summary.json": folder.generate_summary},
             "verify": {"verified/summary.json": folder.verified_summary},
             "mix": {f"mix/{step.mix}/{n}": folder.mix(step.mix) / n
                     for n in ("train.jsonl", "val.jsonl", "summary.json")},
             "train": {f"students/{step.mix}/{n}": folder.student(step.mix) / n
                       for n in ("summary.json", "card.json")},
             "evaluate": {f"eval/{_student(step)}/summary.json": folder.eval(_student(step)) / "summary.json"},
             "register": {f"register/{step.mix}.json": folder.registered(step.mix)},
             "promote": {"promote/decision.json": folder.decision}}.get(step.stage, {})
    if step.stage == "verify":
        files |= {f"verified/{p.name}": p for p in sorted(folder.verified_dir.glob("*.jsonl"))}
    if step.stage == "train":
        files |= folder_files(folder.student(step.mix) / "model", f"students/{step.mix}/model/")
    if step.entry == "run_untrained":
        files[f"students/{_student(step)}/card.json"] = folder.student(_student(step)) / "card.json"
    return files


def _student(step: Step) -> str:
    """The student a per-mix step is about: ``etd``, or ``etd-base`` for evaluate-etd-base."""
    return step.name[len(step.stage) + 1:] if step.mix else ""


def run(cfg: Config, run_dir: Path, tracker=None, *, fresh: bool = False,
        stages: Mapping[str, StageFn] | None = None, report_dir: str | Path = "reports",
        log: Callable[[str], None] = print) -> dict:
    """Run every step under one parent run; return {"parent_run_id", "steps": {step: {...}}, "seconds"}.

    ``stages`` maps a stage name to its run function ``fn(cfg, run_dir, tracker)``, the step's mix in
    ``cfg.mix.mix`` (tests pass fakes); missing names are imported
    from distill/stages/. ``report_dir`` is where the report step writes results.md and the plots.
    The run folder's lock is held throughout (the stages it calls enter it again).
    """
    if not isinstance(tracker, Tracker):
        raise ValueError("reproduce needs a Tracker: its whole output is an MLflow run tree")
    with writing(run_dir, tracker, "reproduce"):
        return _run(cfg, Path(run_dir), tracker, fresh=fresh, stages=stages, report_dir=report_dir, log=log)


def _run(cfg: Config, run_dir: Path, tracker, *, fresh: bool, stages: Mapping[str, StageFn] | None,
         report_dir: str | Path, log: Callable[[str], None]) -> dict:
    # over 80 lines: the one loop over the steps, with its resume markers, under one parent run; the
    # steps themselves are the stages' run functions
    offline_env(cfg)
    store = _Store(tracker)
    digest = config_digest(cfg)
    steps = plan(base=measures_base(cfg, log))
    state_dir = RunFolder(run_dir).reproduce

    resume_id = None
    previous = _read_state(state_dir / "parent.json")
    if fresh:
        log("reproduce: --fresh: a new parent run; every step runs again")
    elif previous and not os.environ.get("MLFLOW_RUN_ID"):
        if previous.get("config_digest") != digest:
            log(f"reproduce: the config changed since parent run {previous.get('run_id')} "
                f"(digest {previous.get('config_digest')} -> {digest}); starting a new parent run")
        elif store.run(previous.get("run_id")) is None:
            log(f"reproduce: parent run {previous.get('run_id')} is not in {tracker.uri}; starting a new one")
        else:
            resume_id = previous["run_id"]
            log(f"reproduce: resuming parent run {resume_id}")

    tags = {"distill.stage": "reproduce", "distill.preset": cfg.preset, "distill.teacher": cfg.teacher.name,
            "distill.student": cfg.train.student, "distill.config_digest": digest}
    timings: dict[str, dict] = {}
    results: dict[str, dict] = {}
    start_all = time.perf_counter()
    with tracker.run(f"reproduce-{cfg.preset}", tags, nested=False, run_id=resume_id) as parent:
        parent_id = parent.info.run_id
        write_json(state_dir / "parent.json", {"run_id": parent_id, "preset": cfg.preset,
                                               "config_digest": digest})
        if resume_id is None:
            tracker.log_params(flatten(cfg))
        baseline = constant_baseline(cfg)
        tracker.log_params({"baseline.answer": f"{baseline['answer']:g}", "baseline.train_n": baseline["train_n"]})
        tracker.log_metrics({f"baseline/{t}/accuracy": a for t, a in baseline["accuracy"].items()})
        tracker.log_metrics({f"baseline/{t}/n": n for t, n in baseline["n"].items()})
        log(f"reproduce: preset {cfg.preset}, teacher {cfg.teacher.name}, student {cfg.train.student}, "
            f"run dir {run_dir}, parent run {parent_id}, store {tracker.uri}")

        for i, step in enumerate(steps, 1):
            marker = _read_state(_marker_path(run_dir, step))
            report_missing = step.stage == "report" and not (Path(report_dir) / "results.md").exists()
            damaged = mismatch(marker.get("outputs"), step_outputs(run_dir, step)) \
                if marker and marker.get("outputs") is not None else None
            if damaged and not fresh:
                log(f"[{i:2d}/{len(steps)}] {step.name:<16} {damaged} since it was done; running it again")
            if not fresh and not report_missing and not damaged and _marker_valid(marker, digest, store):
                timings[step.name] = {"seconds": marker.get("seconds", 0.0), "skipped": True}
                results[step.name] = marker
                if marker.get("run_id"):
                    tracker.set_tags({f"distill.step.{step.name}.run_id": marker["run_id"]})
                if marker.get("parent_run_id") != parent_id:  # reused by a new parent: keep its time beside it
                    tracker.log_metrics({f"wall_seconds/{step.name}": marker.get("seconds", 0.0)})
                log(f"[{i:2d}/{len(steps)}] {step.name:<16} skipped (done in {marker.get('seconds', 0):.1f} s, "
                    f"run {marker.get('run_id') or '-'})")
                continue

            log(f"[{i:2d}/{len(steps)}] {step.name:<16} ...")
            before = store.children(parent_id)
            key = step.stage if step.entry == "run" else f"{step.stage}.{step.entry}"
            fn = (stages or {}).get(key) or _stage_fn(step.stage, step.entry)
            t0 = time.perf_counter()
            try:
                summary = _call(fn, cfg, run_dir, tracker, step, report_dir, parent_id)
            except BaseException:
                log(f"[{i:2d}/{len(steps)}] {step.name:<16} FAILED after {time.perf_counter() - t0:.1f} s; "
                    "rerun the same command to resume from this step")
                raise
            seconds = time.perf_counter() - t0
            step_run = _step_run_id(summary, step, before, store.children(parent_id))
            record = {"step": step.name, "stage": step.stage, "mix": step.mix, "run_id": step_run,
                      "parent_run_id": parent_id, "config_digest": digest, "seconds": round(seconds, 3),
                      "summary": _jsonable(summary), "outputs": fingerprints(step_outputs(run_dir, step))}
            write_json(_marker_path(run_dir, step), record)
            results[step.name] = record
            timings[step.name] = {"seconds": round(seconds, 3), "skipped": False}
            tracker.log_metrics({f"wall_seconds/{step.name}": seconds})
            if step_run:
                tracker.set_tags({f"distill.step.{step.name}.run_id": step_run})
            log(f"[{i:2d}/{len(steps)}] {step.name:<16} done in {seconds:.1f} s (run {step_run or '-'})")

        total = time.perf_counter() - start_all
        # the study's cost: every step's time, whether it ran now or in an earlier invocation
        study = sum(t["seconds"] for t in timings.values())
        tracker.log_metrics({"wall_seconds/total": study})
        write_json(state_dir / "timings.json", {"study_seconds": round(study, 3),
                                                "invocation_seconds": round(total, 3), "steps": timings})
        headline = _log_comparison(cfg, tracker, parent_id, state_dir / "comparison")
    log(f"reproduce: done in {total:.1f} s (all steps together: {study:.1f} s); parent run {parent_id}")
    log("reproduce: wall time per step (s): " + ", ".join(
        f"{name} {t['seconds']:.1f}{' (skipped)' if t['skipped'] else ''}" for name, t in timings.items()))
    for line in next_steps(Path(report_dir), headline, store.experiment_id, parent_id):
        log(line)
    return {"parent_run_id": parent_id, "seconds": round(total, 3), "study_seconds": round(study, 3),
            "steps": results, "timings": timings}


def _log_comparison(cfg: Config, tracker, parent_id: str, out_dir: Path) -> list[str]:
    """The students side by side on the parent run: comparison/accuracy.{md,json,png} as artifacts
    (students x test sets x forms with n and 95% intervals, and its chart); returns the headline."""
    from distill import compare
    from distill.results import collect

    results = collect(cfg, parent_id)
    for path in compare.write(results, out_dir):
        tracker.log_artifact(path, "comparison")
    return compare.headline(results)


SERVE_PORT = 5005
"""`make serve`'s port (the Makefile's PORT)."""


def next_steps(report_dir: Path, headline: list[str], experiment_id: str, parent_id: str) -> list[str]:
    """What a user reads last: where the report is, the headline table, and what to run next."""
    from distill import compare

    question = "Tom has 3 boxes of 12 pencils and gives away 7 pencils. How many pencils does he have left?"
    return ["", f"report: {(report_dir / 'results.md').resolve()} (plots beside it)", "", *headline, "",
            "next:",
            f"  make ui       # then open {compare.ui_link(experiment_id, parent_id)}",
            "  make compare  # this table again, and the UI link",
            f"  make serve    # serves models:/distill-student@champion on 127.0.0.1:{SERVE_PORT}; then ask it:",
            f"  curl -s http://127.0.0.1:{SERVE_PORT}/invocations -H 'Content-Type: application/json' "
            f"-d '{{\"dataframe_records\": [{{\"question\": \"{question}\"}}]}}'"]


def _marker_valid(marker: dict | None, digest: str, store: _Store) -> bool:
    """A step counts as done when it ran with this config and its runs are still in this store
    (a wiped store, or another one, means the step must log again)."""
    return (bool(marker) and marker.get("config_digest") == digest
            and store.run(marker.get("parent_run_id")) is not None
            and (marker.get("run_id") is None or store.run(marker["run_id"]) is not None))


def _step_run_id(summary: Mapping, step: Step, before: Mapping[str, str], after: Mapping[str, str]) -> str | None:
    """The MLflow run a step made: the run_id it returned, else the one new child run of the parent
    (by name when there are several), else None (a step that opens no run, e.g. register)."""
    if isinstance(summary, Mapping) and isinstance(summary.get("run_id"), str):
        return summary["run_id"]
    new = {rid: name for rid, name in after.items() if rid not in before}
    named = sorted(rid for rid, name in new.items() if name == step.name)
    if named:
        return named[0]
    if len(new) == 1:
        return next(iter(new))
    # a step that continued its unfinished child run of an earlier invocation made no new one
    resumed = sorted(rid for rid, name in after.items() if name == step.name)
    return resumed[0] if len(resumed) == 1 else None


def _jsonable(obj: Any) -> Any:
    return json.loads(json.dumps(obj, default=str))
