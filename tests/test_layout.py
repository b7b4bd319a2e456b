"""The run folder's layout: one RunFolder spells every path under run_dir, the same paths as always."""
from __future__ import annotations

import ast
from pathlib import Path

from distill.layout import RunFolder

REPO = Path(__file__).resolve().parent.parent


def test_the_run_folder_spells_each_stage_s_files_where_they_have_always_been(tmp_path):
    run = RunFolder(tmp_path)
    assert run.samples == tmp_path / "samples.jsonl"
    assert run.generate_summary == tmp_path / "generate_summary.json"
    assert run.ledger == tmp_path / "ledger.jsonl" and run.batches == tmp_path / "batches"
    assert run.verified("eot") == tmp_path / "verified" / "eot.jsonl"
    assert run.verified_summary == tmp_path / "verified" / "summary.json"
    assert run.verify_state("pot") == tmp_path / "verified" / "state" / "pot.json"
    assert run.verify_dropped("pot") == tmp_path / "verified" / "state" / "pot.dropped.jsonl"
    assert run.mix("etd") == tmp_path / "mix" / "etd"
    assert run.student("etd-grpo") == tmp_path / "students" / "etd-grpo"
    assert run.eval("etd-base") == tmp_path / "eval" / "etd-base"
    assert run.registered("etd") == tmp_path / "register" / "etd.json"
    assert run.decision == tmp_path / "promote" / "decision.json"
    assert run.done("train-etd") == tmp_path / "reproduce" / "done" / "train-etd.json"


def test_no_module_below_the_stages_imports_a_stage():
    """The one import that ran back up the layers (shards -> the evaluate stage, inside a function) is
    gone: no module of distill/ outside stages/ and cli.py imports distill.stages, at the top or inside
    a function (read from the source, so a lazy import counts too)."""
    package = REPO / "distill"
    below = [p for p in sorted(package.rglob("*.py")) if "stages" not in p.relative_to(package).parts
             and p.name != "cli.py"]
    found = []
    for path in below:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [f"{node.module}." + a.name for a in node.names] if isinstance(node, ast.ImportFrom)
                     and node.module else [])
            found += [f"{path.relative_to(REPO)}: {n}" for n in names
                      if n.startswith("distill.stages") or n == "distill.stages"]
    assert len(below) > 30 and found == []
