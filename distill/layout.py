"""The run folder's layout: where every stage reads and writes under ``run_dir`` (runs/<preset>/).

One home for the paths, so a stage, the shards' merge and the reproduce markers spell a file the
same way. What the files hold is each stage's data contract (its module docstring)::

    samples.jsonl, generate_summary.json     generate (shards: samples.shard-<i>-of-<n>.jsonl, ...)
    ledger.jsonl, batches/                   generate: paid calls, batch jobs (distill/teachers)
    overlap.json                             distill overlap (train/test n-gram overlap)
    verified/<form>.jsonl, summary.json, dropped.jsonl      verify
    verified/state/<form>.json, <form>.dropped.jsonl
    mix/<mix>/train.jsonl, val.jsonl, summary.json            mix
    students/<name>/model/, card.json, summary.json           train, rl, evaluate --untrained
    eval/<name>/<test_set>/<form>.jsonl, summary.json         evaluate (shards: eval/<name>/shard-<i>-of-<n>/)
    register/<mix>.json                      register
    promote/decision.json                    promote
    reproduce/done/<step>.json               reproduce

``<name>`` is a student's name: its mix, or its mix and variant (etd-grpo, distill.thoughts.student_name).
"""
from __future__ import annotations

from pathlib import Path

SAMPLES = "samples.jsonl"
GENERATE_SUMMARY = "generate_summary.json"


class RunFolder:
    """The paths under one run folder; ``RunFolder(run_dir).student("etd")`` is ``run_dir/students/etd``."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"RunFolder({str(self.root)!r})"

    # --- generate ---
    @property
    def samples(self) -> Path:
        return self.root / SAMPLES

    @property
    def generate_summary(self) -> Path:
        return self.root / GENERATE_SUMMARY

    @property
    def ledger(self) -> Path:
        return self.root / "ledger.jsonl"

    @property
    def batches(self) -> Path:
        return self.root / "batches"

    @property
    def overlap(self) -> Path:
        """``overlap.json``: `distill overlap`'s report when no --output is given."""
        return self.root / "overlap.json"

    # --- verify ---
    @property
    def verified_dir(self) -> Path:
        return self.root / "verified"

    def verified(self, form: str) -> Path:
        """``verified/<form>.jsonl``: the kept samples of one form."""
        return self.verified_dir / f"{form}.jsonl"

    @property
    def verified_summary(self) -> Path:
        """``verified/summary.json``: per form n, kept, drop rate, reasons, digest."""
        return self.verified_dir / "summary.json"

    @property
    def dropped(self) -> Path:
        """``verified/dropped.jsonl``: every form's dropped samples."""
        return self.verified_dir / "dropped.jsonl"

    def verify_state(self, form: str) -> Path:
        """``verified/state/<form>.json``: what verify recorded about one form's input and outputs."""
        return self.verified_dir / "state" / f"{form}.json"

    def verify_dropped(self, form: str) -> Path:
        """``verified/state/<form>.dropped.jsonl``: the dropped samples of one form, with their verdicts."""
        return self.verified_dir / "state" / f"{form}.dropped.jsonl"

    # --- per mix and per student ---
    def mix(self, mix: str) -> Path:
        """``mix/<mix>/``: train.jsonl, val.jsonl, summary.json."""
        return self.root / "mix" / str(mix)

    def student(self, name: str) -> Path:
        """``students/<name>/``: model/, card.json, summary.json (name: mix or mix-variant)."""
        return self.root / "students" / str(name)

    def eval(self, name: str) -> Path:
        """``eval/<name>/``: <test_set>/<form>.jsonl, summary.json (name: the student's)."""
        return self.root / "eval" / str(name)

    def registered(self, mix: str) -> Path:
        """``register/<mix>.json``: what the register stage did for one student."""
        return self.root / "register" / f"{mix}.json"

    # --- promote, reproduce ---
    @property
    def decision(self) -> Path:
        """``promote/decision.json``."""
        return self.root / "promote" / "decision.json"

    @property
    def reproduce(self) -> Path:
        """``reproduce/``: parent.json and the done markers."""
        return self.root / "reproduce"

    def done(self, step: str) -> Path:
        """``reproduce/done/<step>.json``: a finished step of distill reproduce."""
        return self.reproduce / "done" / f"{step}.json"
