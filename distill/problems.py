"""The four benchmarks as one ``Problem`` record.

Data contract: reads the original files under the data directory (``<data_dir>/gsm8k/train.jsonl``,
``test.jsonl``; ``svamp/SVAMP.json``; ``asdiv/asdiv.jsonl`` and ``asdiv/ASDiv.xml``;
``multiarith/MultiArith.json``; see each folder's SOURCE.md). When a file is missing and the hub
is allowed, the same set is loaded from the Hugging Face hub through ``datasets``.

ASDiv: ``asdiv`` is the 2,096-problem integer subset (PAL's ``asdiv.jsonl``) and is the default
test set, because the PoT/PAL/EoT line of work reports on it and every answer is one number that
our verifiers can compare. ``asdiv-full`` is the original 2,305-problem XML; its 90 multi-answer
and 147 non-numeric problems are returned as ``Excluded`` records with a reason, never dropped
silently.
"""
from __future__ import annotations

import json
import os
import re
import xml.etree.ElementTree as ET
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from distill.answers import parse_number
from distill.files import DataError

HINT = (
    "Put the benchmark files under the data directory (see README 'Data'): "
    "pass --data-dir, set DISTILL_DATA_DIR, or set data.data_dir in the preset."
)


@dataclass(frozen=True)
class Problem:
    id: str
    dataset: str
    split: str
    question: str
    answer: float
    rationale: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Excluded:
    """A problem we cannot score with one number, kept for the report."""

    id: str
    dataset: str
    reason: str
    raw_answer: str


@dataclass
class Loaded:
    problems: list[Problem]
    excluded: list[Excluded] = field(default_factory=list)
    source: str = ""


def _need(path: Path) -> Path:
    if not path.exists():
        raise FileNotFoundError(path)
    return path


def _read_json(path: Path):
    try:
        return json.loads(_need(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}:{exc.lineno}: not valid JSON ({exc.msg}). {HINT}") from None


def _gold(value, path: Path, where: str) -> float:
    number = parse_number(value)
    if number is None:
        raise DataError(f"{path}:{where}: gold answer {value!r} is not a number. {HINT}")
    return number


def _jsonl(path: Path):
    with _need(path).open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}:{lineno}: not valid JSON ({exc.msg}); is the file truncated? {HINT}") from None
            if not isinstance(row, dict):
                raise DataError(f"{path}:{lineno}: expected a JSON object. {HINT}")
            yield lineno, row


def _field(row: dict, key: str, path: Path, where) -> object:
    if key not in row:
        raise DataError(f"{path}:{where}: missing field {key!r}. {HINT}")
    return row[key]


GSM8K_FINAL = re.compile(r"\n####\s*(.+?)\s*$")


def load_gsm8k(data_dir: Path, split: str) -> Loaded:
    if split not in ("train", "test"):
        raise ValueError(f"gsm8k has splits train and test, not {split!r}")
    path = data_dir / "gsm8k" / f"{split}.jsonl"
    problems = []
    for lineno, row in _jsonl(path):
        question = _field(row, "question", path, lineno)
        solution = _field(row, "answer", path, lineno)
        m = GSM8K_FINAL.search(str(solution))
        if m is None:
            raise DataError(f"{path}:{lineno}: answer has no '#### N' line. {HINT}")
        problems.append(Problem(
            id=f"gsm8k-{split}-{len(problems):05d}", dataset="gsm8k", split=split,
            question=str(question).strip(), answer=_gold(m.group(1), path, lineno),
            rationale=str(solution)[: m.start()].strip(),
        ))
    return Loaded(problems, source=str(path))


def load_svamp(data_dir: Path, split: str = "test") -> Loaded:
    path = data_dir / "svamp" / "SVAMP.json"
    problems = []
    for i, row in enumerate(_read_json(path)):
        where = f"record {i}"
        body = str(_field(row, "Body", path, where)).strip()
        question = str(_field(row, "Question", path, where)).strip()
        problems.append(Problem(
            id=f"svamp-{_field(row, 'ID', path, where)}", dataset="svamp", split="test",
            question=f"{body} {question}" if body.endswith((".", "?", "!", ",")) else f"{body}. {question}",
            answer=_gold(_field(row, "Answer", path, where), path, where),
            rationale=row.get("Equation"),
        ))
    return Loaded(problems, source=str(path))


def load_asdiv(data_dir: Path, split: str = "test") -> Loaded:
    path = data_dir / "asdiv" / "asdiv.jsonl"
    problems = [
        Problem(id=f"asdiv-{lineno - 1:04d}", dataset="asdiv", split="test",
                question=str(_field(row, "input", path, lineno)).strip(),
                answer=_gold(_field(row, "target", path, lineno), path, lineno))
        for lineno, row in _jsonl(path)
    ]
    return Loaded(problems, source=str(path))


def load_asdiv_full(data_dir: Path, split: str = "test") -> Loaded:
    path = _need(data_dir / "asdiv" / "ASDiv.xml")
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as exc:
        raise DataError(f"{path}:{exc.position[0]}: malformed XML ({exc}). {HINT}") from None
    problems, excluded = [], []
    for node in root.iter("Problem"):
        pid = node.get("ID", "?")
        body, question, answer = (node.findtext(t) for t in ("Body", "Question", "Answer"))
        if body is None or question is None or answer is None:
            raise DataError(f"{path}: problem {pid} lacks Body, Question or Answer. {HINT}")
        number = parse_number(answer)
        if number is None:
            reason = "multi_answer" if ";" in answer else "non_numeric"
            excluded.append(Excluded(pid, "asdiv-full", reason, answer))
            continue
        problems.append(Problem(id=pid, dataset="asdiv-full", split="test",
                                question=f"{body.strip()} {question.strip()}", answer=number,
                                rationale=node.findtext("Formula")))
    return Loaded(problems, excluded, source=str(path))


def load_multiarith(data_dir: Path, split: str = "test") -> Loaded:
    path = data_dir / "multiarith" / "MultiArith.json"
    problems = []
    for i, row in enumerate(_read_json(path)):
        where = f"record {i}"
        solutions = _field(row, "lSolutions", path, where)
        if not isinstance(solutions, list) or not solutions:
            raise DataError(f"{path}:{where}: lSolutions must be a non-empty list. {HINT}")
        problems.append(Problem(
            id=f"multiarith-{_field(row, 'iIndex', path, where)}", dataset="multiarith", split="test",
            question=" ".join(str(_field(row, "sQuestion", path, where)).split()),
            answer=_gold(solutions[0], path, where), rationale=(row.get("lEquations") or [None])[0],
        ))
    return Loaded(problems, source=str(path))


@dataclass(frozen=True)
class Benchmark:
    loader: Callable[[Path, str], Loaded]
    splits: tuple[str, ...]
    expected: dict
    hub: tuple  # (path, config, question field(s), answer field) on the Hugging Face hub
    description: str


LOADERS: dict[str, Benchmark] = {
    "gsm8k": Benchmark(load_gsm8k, ("train", "test"), {"train": 7473, "test": 1319},
                       ("openai/gsm8k", "main", "question", "answer"),
                       "grade-school word problems with <<a*b=c>> annotated solutions"),
    "svamp": Benchmark(load_svamp, ("test",), {"test": 1000},
                       ("ChilleD/SVAMP", None, ("Body", "Question"), "Answer"),
                       "varied one-step problems (Body + Question)"),
    "asdiv": Benchmark(load_asdiv, ("test",), {"test": 2096},
                       ("EleutherAI/asdiv", None, ("body", "question"), "answer"),
                       "ASDiv integer subset used by most papers (default)"),
    "asdiv-full": Benchmark(load_asdiv_full, ("test",), {"test": 2305},
                            ("EleutherAI/asdiv", None, ("body", "question"), "answer"),
                            "the full ASDiv.xml; multi-answer and non-numeric problems reported"),
    "multiarith": Benchmark(load_multiarith, ("test",), {"test": 600},
                            ("ChilleD/MultiArith", None, "question", "final_ans"),
                            "multi-step arithmetic (MAWPS)"),
}


def _hub_allowed() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0") in ("0", "", "false", "False")


def load_from_hub(name: str, split: str) -> Loaded:
    """The same set from the Hugging Face hub (used only when the local file is missing)."""
    import datasets  # heavy; only needed on this path

    repo, config, question_keys, answer_key = LOADERS[name].hub
    hub_split = "train" if (name != "gsm8k" and repo != "EleutherAI/asdiv") else split
    if repo == "EleutherAI/asdiv":
        hub_split = "validation"
    rows = datasets.load_dataset(repo, config, split=hub_split) if config else datasets.load_dataset(repo, split=hub_split)
    keys = question_keys if isinstance(question_keys, tuple) else (question_keys,)
    problems, excluded = [], []
    for i, row in enumerate(rows):
        question = " ".join(str(row[k]).strip() for k in keys)
        raw = str(row[answer_key])
        m = GSM8K_FINAL.search(raw) if name == "gsm8k" else None
        number = parse_number(m.group(1) if m else raw)
        pid = f"{name}-{split}-{i:05d}" if name == "gsm8k" else f"{name}-{i:04d}"
        if number is None:
            excluded.append(Excluded(pid, name, "non_numeric", raw))
            continue
        problems.append(Problem(pid, name, split, question, number, raw[: m.start()].strip() if m else None))
    return Loaded(problems, excluded, source=f"hf://{repo}")


def load(name: str, split: str = "test", data_dir: str | Path = "data", hub: bool = True) -> Loaded:
    """Problems of one benchmark split, from the data directory or else the hub."""
    if name not in LOADERS:
        raise ValueError(f"unknown data set {name!r}; valid: {', '.join(LOADERS)}")
    bench = LOADERS[name]
    if split not in bench.splits:
        raise ValueError(f"{name} has split(s) {', '.join(bench.splits)}, not {split!r}")
    try:
        return bench.loader(Path(data_dir), split)
    except FileNotFoundError as exc:
        if hub and _hub_allowed():
            try:
                return load_from_hub(name, split)
            except Exception as hub_exc:  # network, auth or schema: say both what and how
                raise DataError(f"{exc.filename}: file not found, and the hub copy failed ({hub_exc}). {HINT}") from None
        raise DataError(f"{exc.filename}: file not found (hub fallback is off). {HINT}") from None


def load_problems(name: str, split: str = "test", data_dir: str | Path = "data", hub: bool = True) -> list[Problem]:
    return load(name, split, data_dir, hub).problems
