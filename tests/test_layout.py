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


def _runtime_imports(path: Path) -> set[str]:
    """The distill modules a file imports when it runs, at the top or inside a function; an import
    under ``if TYPE_CHECKING:`` (an annotation only) is not one."""
    tree = ast.parse(path.read_text(), str(path))
    typing_only = {id(n) for block in ast.walk(tree) if isinstance(block, ast.If)
                   and getattr(block.test, "id", None) == "TYPE_CHECKING" for n in ast.walk(block)}
    names = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
    return {n for n in names if n.startswith("distill")}


def test_the_package_s_rooms_import_each_other_in_one_direction_only():
    """Between the package's rooms (a top-level module, or a subpackage such as distill.thoughts), the
    imports that run form no circle: each room can be read knowing only the rooms below it."""
    package = REPO / "distill"

    def room(module: str) -> str:
        return ".".join(module.split(".")[:2])

    modules = {".".join(p.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__"): p
               for p in package.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for module, path in modules.items():
        for name in _runtime_imports(path):
            while name not in modules and "." in name:
                name = name.rsplit(".", 1)[0]
            if name in modules and room(name) != room(module):
                graph.setdefault(room(module), set()).add(room(name))

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        return any(nxt == goal or (nxt not in seen and not seen.add(nxt) and reaches(nxt, goal, seen))
                   for nxt in graph.get(start, ()))

    circles = sorted(f"{a} -> {b} -> ... -> {a}" for a, targets in graph.items() for b in targets
                     if reaches(b, a, set()))
    assert len(graph) > 15 and circles == []
