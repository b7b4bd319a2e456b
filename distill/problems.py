"""The four benchmarks as one ``Problem`` record.

Data contract: reads the original files under the data directory (``<data_dir>/gsm8k/train.jsonl``,
``test.jsonl``; ``svamp/SVAMP.json``; ``asdiv/asdiv.jsonl`` and ``asdiv/ASDiv.xml``;
``multiarith/MultiArith.json``; see each folder's SOURCE.md). When a file is missing and the hub
is allowed (``hub=True`` and ``HF_HUB_OFFLINE`` unset), the same set is loaded from the Hugging Face
hub through ``datasets``.

Ids are stable: ``gsm8k-<split>-<line index>``, ``svamp-<ID>``, ``asdiv-<line index>``, the XML
``ID`` for ``asdiv-full`` (``nluds-0001``), ``multiarith-<iIndex>``. The hub copies give the same ids
except MultiArith, whose hub copy has no ``iIndex`` (``multiarith-hf-<row>`` there).

ASDiv: ``asdiv`` is the 2,096-problem integer subset (PAL's ``asdiv.jsonl``) and is the default
test set, because the PoT/PAL/EoT line of work reports on it and every answer is one number that
our verifiers can compare. ``asdiv-full`` is the original 2,305-problem XML: 2,093 one-number
problems, and 90 multi-answer and 122 non-numeric ones (names, yes/no, clock times, ratios,
ordinals) returned as ``Excluded`` records with a reason, never dropped silently.
SOURCE.md says PAL dropped the 90 multi-answer, 147 non-numeric, 61 non-integer and 1 more; checked
one by one, PAL dropped 209 (2,305 - 2,096): the 147 are our 122, ``-(1/3)``, 8 bare fractions (``5/2``)
and the 16 multi-answer problems without units; the 61 are the decimals (65.0 included); the one
more is nluds-1008 ``14  (seats)`` (two spaces). PAL keeps the other 74 multi-answer problems with
their first answer. ``PAL_SUBSET`` restates that rule, and a test checks it against the file.
"""
from __future__ import annotations

import json
import os
import re
import socket
import threading
import xml.etree.ElementTree as ET
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator
from urllib.parse import urlparse

from distill.answers import parse_number
from distill.files import DataError, iter_jsonl

if TYPE_CHECKING:
    from distill.config import Config

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
    """multi_answer or non_numeric."""
    raw_answer: str


@dataclass
class Loaded:
    problems: list[Problem]
    excluded: list[Excluded] = field(default_factory=list)
    source: str = ""


def _need(path: Path) -> Path:
    if not path.exists():
        raise FileNotFoundError(2, "file not found", str(path))
    return path


def _line_of(text: str, index: int) -> int:
    return text.count("\n", 0, index) + 1


def _json_records(path: Path) -> Iterator[tuple[int, int, dict]]:
    """(record index, line number, record) of a file holding one JSON array of objects.

    Decodes record by record so that an error can name the line the record starts on.
    """
    text = _need(path).read_text(encoding="utf-8")
    decoder = json.JSONDecoder()
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}:{exc.lineno}: not valid JSON ({exc.msg}); is the file truncated? {HINT}") from None
    if not isinstance(data, list):
        raise DataError(f"{path}:1: expected a JSON array of records, got {type(data).__name__}. {HINT}")
    pos = text.index("[") + 1
    for i in range(len(data)):
        while text[pos] in " \t\r\n,":
            pos += 1
        record, end = decoder.raw_decode(text, pos)
        if not isinstance(record, dict):
            raise DataError(f"{path}:{_line_of(text, pos)}: record {i} is not a JSON object. {HINT}")
        yield i, _line_of(text, pos), record
        pos = end


def _jsonl(path: Path) -> Iterator[tuple[int, dict]]:
    return iter_jsonl(_need(path), HINT)


def _field(row: dict, key: str, src, where) -> object:
    if key not in row:
        raise DataError(f"{src}:{where}: missing field {key!r}. {HINT}")
    return row[key]


def _gold(value, src, where) -> float:
    number = parse_number(value)
    if number is None:
        raise DataError(f"{src}:{where}: gold answer {value!r} is not a number. {HINT}")
    return number


# --- one converter per data set, shared by the local files and the hub copies ---------------

GSM8K_FINAL = re.compile(r"\n####\s*(.+?)\s*$")


def _gsm8k_problem(row: dict, split: str, index: int, src, where) -> Problem:
    question = _field(row, "question", src, where)
    solution = str(_field(row, "answer", src, where))
    m = GSM8K_FINAL.search(solution)
    if m is None:
        raise DataError(f"{src}:{where}: answer has no '#### N' line. {HINT}")
    # The rationale keeps the <<a*b=c>> calculator annotations: the gold teacher derives from them.
    return Problem(id=f"gsm8k-{split}-{index:05d}", dataset="gsm8k", split=split,
                   question=str(question).strip(), answer=_gold(m.group(1), src, where),
                   rationale=solution[: m.start()].strip())


def _svamp_problem(row: dict, src, where) -> Problem:
    body = str(_field(row, "Body", src, where)).strip()
    question = str(_field(row, "Question", src, where)).strip()
    # Body often lacks its final period (SOURCE.md); add one so the two sentences stay two.
    text = f"{body} {question}" if body.endswith((".", "?", "!", ",")) else f"{body}. {question}"
    return Problem(id=f"svamp-{_field(row, 'ID', src, where)}", dataset="svamp", split="test",
                   question=text, answer=_gold(_field(row, "Answer", src, where), src, where),
                   rationale=row.get("Equation"))


def _asdiv_full_item(pid: str, body: str, question: str, answer: str, formula: str | None) -> Problem | Excluded:
    number = parse_number(answer)
    if number is None:
        reason = "multi_answer" if ";" in answer else "non_numeric"
        return Excluded(pid, "asdiv-full", reason, answer)
    return Problem(id=pid, dataset="asdiv-full", split="test",
                   question=f"{body.strip()} {question.strip()}", answer=number, rationale=formula)


# PAL's asdiv.jsonl is exactly the XML problems (in XML order) whose answer starts with an integer
# followed by " (" or is a bare integer; a multi-answer problem keeps its first answer.
# Checked: this rule rebuilds all 2,096 inputs and targets of the local file.
PAL_SUBSET = re.compile(r"^(\d+) \(|^(\d+)$")


def _multiarith_problem(row: dict, pid: str, question_key: str, answer, src, where) -> Problem:
    question = " ".join(str(_field(row, question_key, src, where)).split())
    equations = row.get("lEquations") or [None]
    return Problem(id=pid, dataset="multiarith", split="test", question=question,
                   answer=_gold(answer, src, where), rationale=equations[0])


# --- local files -----------------------------------------------------------------------------

def load_gsm8k(data_dir: Path, split: str) -> Loaded:
    if split not in ("train", "test"):
        raise ValueError(f"gsm8k has splits train and test, not {split!r}")
    path = data_dir / "gsm8k" / f"{split}.jsonl"
    problems = [_gsm8k_problem(row, split, i, path, lineno) for i, (lineno, row) in enumerate(_jsonl(path))]
    return Loaded(problems, source=str(path))


def load_svamp(data_dir: Path, split: str = "test") -> Loaded:
    path = data_dir / "svamp" / "SVAMP.json"
    problems = [_svamp_problem(row, path, f"{line} (record {i})") for i, line, row in _json_records(path)]
    return Loaded(problems, source=str(path))


def load_asdiv(data_dir: Path, split: str = "test") -> Loaded:
    path = data_dir / "asdiv" / "asdiv.jsonl"
    problems = [
        Problem(id=f"asdiv-{i:04d}", dataset="asdiv", split="test",
                question=str(_field(row, "input", path, lineno)).strip(),
                answer=_gold(_field(row, "target", path, lineno), path, lineno))
        for i, (lineno, row) in enumerate(_jsonl(path))
    ]
    return Loaded(problems, source=str(path))


def load_asdiv_full(data_dir: Path, split: str = "test") -> Loaded:
    path = _need(data_dir / "asdiv" / "ASDiv.xml")
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as exc:
        raise DataError(f"{path}:{exc.position[0]}: malformed XML ({exc}); is the file truncated? {HINT}") from None
    problems, excluded = [], []
    for node in root.iter("Problem"):
        pid = node.get("ID", "?")
        body, question, answer = (node.findtext(t) for t in ("Body", "Question", "Answer"))
        if body is None or question is None or answer is None:
            missing = [t for t, v in (("Body", body), ("Question", question), ("Answer", answer)) if v is None]
            raise DataError(f"{path}:{_xml_line(path, pid)}: problem {pid} lacks <{missing[0]}>. {HINT}")
        item = _asdiv_full_item(pid, body, question, answer, node.findtext("Formula"))
        (problems if isinstance(item, Problem) else excluded).append(item)
    return Loaded(problems, excluded, source=str(path))


def _xml_line(path: Path, pid: str) -> int | str:
    """The line where problem ``pid`` starts (only computed for an error message)."""
    text = path.read_text(encoding="utf-8", errors="replace")
    index = text.find(f'ID="{pid}"')
    return _line_of(text, index) if index >= 0 else "?"


def load_multiarith(data_dir: Path, split: str = "test") -> Loaded:
    path = data_dir / "multiarith" / "MultiArith.json"
    problems = []
    for i, line, row in _json_records(path):
        where = f"{line} (record {i})"
        solutions = _field(row, "lSolutions", path, where)
        if not isinstance(solutions, list) or not solutions:
            raise DataError(f"{path}:{where}: lSolutions must be a non-empty list. {HINT}")
        pid = f"multiarith-{_field(row, 'iIndex', path, where)}"
        problems.append(_multiarith_problem(row, pid, "sQuestion", solutions[0], path, where))
    return Loaded(problems, source=str(path))


# --- the hub ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class HubSource:
    """Where the same set lives on the Hugging Face hub and which fields we read there."""

    repo: str
    config: str | None
    splits: dict
    """Our split -> the hub splits that together make it (SVAMP and MultiArith are cut in two there)."""
    fields: tuple[str, ...]


@dataclass(frozen=True)
class Benchmark:
    loader: Callable[[Path, str], Loaded]
    splits: tuple[str, ...]
    expected: dict
    hub: HubSource
    description: str


_ASDIV_HUB = HubSource("EleutherAI/asdiv", None, {"test": ("validation",)}, ("body", "question", "answer", "formula"))

LOADERS: dict[str, Benchmark] = {
    "gsm8k": Benchmark(load_gsm8k, ("train", "test"), {"train": 7473, "test": 1319},
                       HubSource("openai/gsm8k", "main", {"train": ("train",), "test": ("test",)},
                                 ("question", "answer")),
                       "grade-school word problems with <<a*b=c>> annotated solutions"),
    "svamp": Benchmark(load_svamp, ("test",), {"test": 1000},
                       HubSource("ChilleD/SVAMP", None, {"test": ("train", "test")},
                                 ("ID", "Body", "Question", "Equation", "Answer")),
                       "varied one-step problems (Body + Question)"),
    "asdiv": Benchmark(load_asdiv, ("test",), {"test": 2096}, _ASDIV_HUB,
                       "ASDiv integer subset used by most papers (default)"),
    "asdiv-full": Benchmark(load_asdiv_full, ("test",), {"test": 2305}, _ASDIV_HUB,
                            "the full ASDiv.xml; multi-answer and non-numeric problems reported"),
    "multiarith": Benchmark(load_multiarith, ("test",), {"test": 600},
                            HubSource("ChilleD/MultiArith", None, {"test": ("train", "test")},
                                      ("question", "final_ans")),
                            "multi-step arithmetic (MAWPS)"),
}


def _hub_allowed() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").strip() in ("0", "", "false", "False", "no")


def load_from_hub(name: str, split: str) -> Loaded:
    """The same set from the Hugging Face hub (used only when the local file is missing)."""
    import datasets  # heavy; only needed on this path

    hub = LOADERS[name].hub
    rows = []
    for hub_split in hub.splits[split]:
        part = (datasets.load_dataset(hub.repo, hub.config, split=hub_split) if hub.config
                else datasets.load_dataset(hub.repo, split=hub_split))
        rows.extend(part)
    src = f"hf://{hub.repo}"
    problems: list[Problem] = []
    excluded: list[Excluded] = []
    for i, row in enumerate(rows):
        where = f"row {i}"
        if name == "gsm8k":
            problems.append(_gsm8k_problem(row, split, i, src, where))
        elif name == "svamp":
            problems.append(_svamp_problem(row, src, where))
        elif name == "multiarith":
            answer = _field(row, "final_ans", src, where)
            problems.append(_multiarith_problem(row, f"multiarith-hf-{i:04d}", "question", answer, src, where))
        else:  # asdiv, asdiv-full: the hub holds the XML's 2,305 problems in XML order
            body, question, answer = (str(_field(row, k, src, where)) for k in ("body", "question", "answer"))
            if name == "asdiv-full":
                item = _asdiv_full_item(f"nluds-{i + 1:04d}", body, question, answer, row.get("formula"))
                (problems if isinstance(item, Problem) else excluded).append(item)
                continue
            m = PAL_SUBSET.match(answer.strip())
            if m:
                problems.append(Problem(f"asdiv-{len(problems):04d}", "asdiv", "test",
                                        f"{body.strip()} {question.strip()}", float(m.group(1) or m.group(2))))
    return Loaded(problems, excluded, source=src)


def load(name: str, split: str = "test", data_dir: str | Path = "data", hub: bool = True) -> Loaded:
    """Problems of one benchmark split, from the data directory or else the hub.

    The hub is tried only when the local file is missing, ``hub`` is true and HF_HUB_OFFLINE is unset;
    a malformed local file always stops with a DataError that names the file and line.
    """
    if name not in LOADERS:
        raise ValueError(f"unknown data set {name!r}; valid: {', '.join(LOADERS)}")
    bench = LOADERS[name]
    if split not in bench.splits:
        raise ValueError(f"{name} has split(s) {', '.join(bench.splits)}, not {split!r}")
    try:
        return bench.loader(Path(data_dir), split)
    except FileNotFoundError as exc:
        if hub and _hub_allowed():
            # the hub client retries for about 25 s offline before it gives up: ask first whether
            # the hub answers at all, so a wrong data folder on an offline machine fails at once
            reachable, why_not = hub_reachable()
            if not reachable:
                raise DataError(f"{exc.filename}: file not found, and the Hugging Face hub is not reachable "
                                f"({why_not}). {HINT} Offline, set HF_HUB_OFFLINE=1 (or data.hub=false) "
                                "to skip the hub.") from None
            try:
                return load_from_hub(name, split)
            except Exception as hub_exc:  # network, auth or schema: say both what and how
                raise DataError(f"{exc.filename}: file not found, and the hub copy failed ({hub_exc}). {HINT}") from None
        why = "hub fallback is off" if not hub else "HF_HUB_OFFLINE is set, so the hub is not tried"
        raise DataError(f"{exc.filename}: file not found ({why}). {HINT}") from None


def hub_reachable(timeout: float = 1.5) -> tuple[bool, str]:
    """Whether a TCP connection to the hub's endpoint (HF_ENDPOINT, default huggingface.co:443)
    opens within ``timeout`` seconds; (False, why) otherwise. Name lookup is bounded too: it runs
    in a daemon thread, since getaddrinfo itself takes no timeout."""
    url = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    host, port = url.hostname or "huggingface.co", url.port or (80 if url.scheme == "http" else 443)
    outcome: dict[str, str] = {}

    def probe() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            outcome["ok"] = ""
        except OSError as exc:
            outcome["error"] = f"{host}:{port}: {exc.strerror or exc}"

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout + 0.5)
    if "ok" in outcome:
        return True, ""
    return False, outcome.get("error", f"{host}:{port}: no answer within {timeout:g} s")


def load_problems(name: str, split: str = "test", data_dir: str | Path = "data", hub: bool = True) -> list[Problem]:
    return load(name, split, data_dir, hub).problems


def evaluated_problems(cfg: "Config", test_set: str) -> list[Problem]:
    """The problems of ``test_set`` the evaluate stage scores: its test split, the first
    ``evaluate.limit`` when set. One definition for the stage, the shards' merge and the baselines
    computed beside the students (distill.results.constant_baseline), so all count the same problems."""
    problems = load_problems(test_set, "test", cfg.data_path, hub=cfg.data.hub)
    return problems[: cfg.evaluate.limit] if cfg.evaluate.limit else problems
