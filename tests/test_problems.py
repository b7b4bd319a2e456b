"""The four benchmarks as one Problem record: counts against the real files, ids, the hub path, bad files."""
from __future__ import annotations

import functools
import json
import socket
import sys
import types
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path

import pytest

from distill import problems
from distill.files import DataError
from distill.problems import LOADERS, load


def _ws(text: str) -> str:
    return " ".join(text.split())


# --- the real files ----------------------------------------------------------------------------

@pytest.mark.parametrize("name, split, count", [
    ("gsm8k", "train", 7473), ("gsm8k", "test", 1319), ("svamp", "test", 1000),
    ("asdiv", "test", 2096), ("multiarith", "test", 600),
])
def test_each_benchmark_loads_the_count_of_its_source_file(data_dir, name, split, count):
    loaded = load(name, split, data_dir, hub=False)
    assert len(loaded.problems) == count == LOADERS[name].expected[split]
    assert loaded.excluded == []
    assert len({p.id for p in loaded.problems}) == count
    assert all(p.dataset == name and p.split == split and p.question for p in loaded.problems)


def test_full_asdiv_accounts_for_all_2305_problems_with_the_excluded_ones_reported(data_dir):
    loaded = load("asdiv-full", "test", data_dir, hub=False)
    assert len(loaded.problems) + len(loaded.excluded) == 2305 == LOADERS["asdiv-full"].expected["test"]
    assert len(loaded.problems) == 2093
    assert Counter(e.reason for e in loaded.excluded) == {"multi_answer": 90, "non_numeric": 122}
    by_id = {e.id: e for e in loaded.excluded}
    assert by_id["nluds-0851"].raw_answer == "3:4" and by_id["nluds-0851"].reason == "non_numeric"
    assert by_id["nluds-0175"].raw_answer == "5:45"
    assert by_id["nluds-1295"].reason == "multi_answer"
    numeric = {p.id: p for p in loaded.problems}
    assert numeric["nluds-1352"].answer == 65.0  # "65.0 (dollars)"
    assert numeric["nluds-0176"].answer == 0.46
    assert numeric["nluds-1331"].answer == pytest.approx(-1 / 3)  # "-(1/3)"
    assert numeric["nluds-0001"].question == ("Seven red apples and two green apples are in the basket. "
                                              "How many apples are in the basket?")


def test_the_integer_subset_is_the_pal_rule_applied_to_the_xml(data_dir):
    root = ET.parse(data_dir / "asdiv" / "ASDiv.xml").getroot()
    rebuilt = []
    for node in root.iter("Problem"):
        m = problems.PAL_SUBSET.match(node.findtext("Answer"))
        if m:
            rebuilt.append((_ws(node.findtext("Body") + " " + node.findtext("Question")), float(m.group(1) or m.group(2))))
    subset = load("asdiv", "test", data_dir, hub=False).problems
    assert rebuilt == [(_ws(p.question), p.answer) for p in subset]


def test_gsm8k_keeps_the_annotated_solution_as_the_rationale(data_dir):
    first = load("gsm8k", "train", data_dir, hub=False).problems[0]
    assert first.id == "gsm8k-train-00000"
    assert first.question.startswith("Natalia sold clips to 48 of her friends in April")
    assert first.answer == 72
    assert first.rationale == ("Natalia sold 48/2 = <<48/2=24>>24 clips in May.\n"
                               "Natalia sold 48+24 = <<48+24=72>>72 clips altogether in April and May.")
    train = load("gsm8k", "train", data_dir, hub=False).problems
    assert sum("<<" in p.rationale for p in train) == 7378  # SOURCE.md: annotations in 7378/7473
    assert train[345].answer == 1080  # "#### 1,080"
    assert min(p.answer for p in load("gsm8k", "test", data_dir, hub=False).problems) == -10


def test_ids_are_stable_and_name_the_source_record(data_dir):
    first = {name: load(name, "test", data_dir, hub=False).problems[0] for name in LOADERS}
    assert {name: p.id for name, p in first.items()} == {
        "gsm8k": "gsm8k-test-00000", "svamp": "svamp-chal-1", "asdiv": "asdiv-0000",
        "asdiv-full": "nluds-0001", "multiarith": "multiarith-0",
    }
    again = [p.id for p in load("svamp", "test", data_dir, hub=False).problems]
    assert again == [p.id for p in load("svamp", "test", data_dir, hub=False).problems]


def test_svamp_joins_body_and_question_into_two_sentences(data_dir):
    svamp = load("svamp", "test", data_dir, hub=False).problems
    assert svamp[0].question == ("Each pack of dvds costs 76 dollars. If there is a discount of 25 dollars on "
                                 "each pack. How much do you have to pay to buy each pack?")
    assert svamp[0].answer == 51 and svamp[0].rationale == "( 76.0 - 25.0 )"


def test_multiarith_strips_the_padding_of_its_questions(data_dir):
    first = load("multiarith", "test", data_dir, hub=False).problems[0]
    assert first.question.startswith("For Halloween Debby") and first.question.endswith("do they have left?")
    assert first.answer == 39 and first.rationale == "X=((32.0+42.0)-35.0)"


def test_unknown_data_set_or_split_lists_the_valid_ones(data_dir):
    with pytest.raises(ValueError, match="valid: gsm8k, svamp, asdiv, asdiv-full, multiarith"):
        load("gsm9k", "test", data_dir)
    with pytest.raises(ValueError, match="svamp has split"):
        load("svamp", "train", data_dir)


# --- the hub path, with datasets.load_dataset replaced by a fake --------------------------------

@functools.lru_cache(maxsize=1)
def _hub_rows(data_dir: Path) -> dict:
    """What the hub repos serve, rebuilt from the local files in the hub's own field names and splits."""
    gsm = {s: [json.loads(x) for x in (data_dir / "gsm8k" / f"{s}.jsonl").read_text().splitlines()]
           for s in ("train", "test")}
    svamp = json.loads((data_dir / "svamp" / "SVAMP.json").read_text())
    asdiv = [{"body": n.findtext("Body"), "question": n.findtext("Question"), "answer": n.findtext("Answer"),
              "formula": n.findtext("Formula"), "solution_type": n.findtext("Solution-Type")}
             for n in ET.parse(data_dir / "asdiv" / "ASDiv.xml").getroot().iter("Problem")]
    multi = [{"question": r["sQuestion"].strip(), "final_ans": str(int(r["lSolutions"][0]))}
             for r in json.loads((data_dir / "multiarith" / "MultiArith.json").read_text())]
    return {
        ("openai/gsm8k", "main", "train"): gsm["train"], ("openai/gsm8k", "main", "test"): gsm["test"],
        ("ChilleD/SVAMP", None, "train"): svamp[:700], ("ChilleD/SVAMP", None, "test"): svamp[700:],
        ("EleutherAI/asdiv", None, "validation"): asdiv,
        ("ChilleD/MultiArith", None, "train"): multi[:420], ("ChilleD/MultiArith", None, "test"): multi[420:],
    }


@pytest.fixture
def fake_hub(monkeypatch, data_dir, hub_endpoint):
    """A fake `datasets` module whose load_dataset serves _hub_rows and records its calls."""
    rows, calls = _hub_rows(data_dir), []

    def load_dataset(path, name=None, split=None, **kwargs):
        calls.append((path, name, split))
        if (path, name, split) not in rows:
            raise ValueError(f"fake hub: no {path} {name} {split}")
        return rows[(path, name, split)]

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    return calls


@pytest.fixture
def hub_endpoint(monkeypatch):
    """HF_ENDPOINT pointed at a socket listening here, so the reachability check before the hub
    client passes without internet."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{listener.getsockname()[1]}")
        yield


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_an_unreachable_hub_fails_at_once_with_the_fix_instead_of_retrying(fake_hub, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{_closed_port()}")
    with pytest.raises(DataError) as caught:
        load("svamp", "test", tmp_path, hub=True)
    message = str(caught.value)
    assert message.startswith(f"{tmp_path / 'svamp' / 'SVAMP.json'}: file not found, and the Hugging Face hub is not reachable")
    assert "HF_HUB_OFFLINE=1" in message and "DISTILL_DATA_DIR" in message and "--data-dir" in message
    assert fake_hub == []  # the hub client was never called, so none of its retries ran


def test_hub_reachable_says_yes_to_a_listening_endpoint_and_no_to_a_closed_one(monkeypatch):
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{listener.getsockname()[1]}")
        assert problems.hub_reachable() == (True, "")
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{_closed_port()}")
    reachable, why = problems.hub_reachable(timeout=1.0)
    assert not reachable and why.startswith("127.0.0.1:")


@pytest.mark.parametrize("name, split", [("gsm8k", "train"), ("gsm8k", "test"), ("svamp", "test"),
                                         ("asdiv", "test"), ("asdiv-full", "test"), ("multiarith", "test")])
def test_a_missing_local_file_falls_back_to_the_hub_with_the_same_problems(fake_hub, data_dir, tmp_path, name, split):
    local = load(name, split, data_dir, hub=False)
    hub = load(name, split, tmp_path / "empty", hub=True)
    assert hub.source.startswith("hf://")
    assert len(hub.problems) == len(local.problems)
    assert [e.reason for e in hub.excluded] == [e.reason for e in local.excluded]
    assert [p.answer for p in hub.problems] == [p.answer for p in local.problems]
    assert [_ws(p.question) for p in hub.problems] == [_ws(p.question) for p in local.problems]
    if name != "multiarith":  # the hub copy of MultiArith has no iIndex
        assert [p.id for p in hub.problems] == [p.id for p in local.problems]
    assert {call[0] for call in fake_hub} == {LOADERS[name].hub.repo}


def test_the_hub_is_not_called_when_the_local_file_exists(fake_hub, data_dir):
    load("svamp", "test", data_dir, hub=True)
    assert fake_hub == []


def test_the_hub_is_not_called_when_hf_hub_offline_is_set(fake_hub, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DataError, match="HF_HUB_OFFLINE") as err:
        load("svamp", "test", tmp_path, hub=True)
    assert fake_hub == []
    assert str(tmp_path / "svamp" / "SVAMP.json") in str(err.value) and "--data-dir" in str(err.value)


def test_the_hub_is_not_called_when_the_config_switches_it_off(fake_hub, tmp_path):
    with pytest.raises(DataError, match="hub fallback is off"):
        load("multiarith", "test", tmp_path, hub=False)
    assert fake_hub == []


def test_a_failing_hub_says_both_what_is_missing_and_why_the_hub_failed(monkeypatch, tmp_path, hub_endpoint):
    def load_dataset(*args, **kwargs):
        raise ConnectionError("no route to huggingface.co")

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    with pytest.raises(DataError) as err:
        load("gsm8k", "test", tmp_path)
    message = str(err.value)
    assert str(tmp_path / "gsm8k" / "test.jsonl") in message
    assert "no route to huggingface.co" in message and "DISTILL_DATA_DIR" in message


# --- corrupt inputs: the message names the file, the line and how to provide the data -----------

def _write(root: Path, rel: str, text: str) -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


GOOD = json.dumps({"question": "Two plus two?", "answer": "2+2 = <<2+2=4>>4\n#### 4"})


def _assert_names(err, path: Path, line: int):
    message = str(err.value)
    assert f"{path}:{line}" in message, message
    assert "--data-dir" in message and "DISTILL_DATA_DIR" in message, message


@pytest.mark.parametrize("third_line, line, what", [
    ('{"question": "Three?", "ans', 3, "truncated"),
    (json.dumps({"question": "Three?"}), 3, "missing field 'answer'"),
    (json.dumps({"question": "Three?", "answer": "so\n#### three"}), 3, "not a number"),
    (json.dumps({"question": "Three?", "answer": "3"}), 3, "no '#### N' line"),
    ('["not", "an", "object"]', 3, "expected a JSON object"),
])
def test_a_corrupt_gsm8k_line_stops_with_file_line_and_fix(tmp_path, third_line, line, what):
    path = _write(tmp_path, "gsm8k/test.jsonl", f"{GOOD}\n{GOOD}\n{third_line}\n")
    with pytest.raises(DataError, match=what) as err:
        load("gsm8k", "test", tmp_path, hub=False)
    _assert_names(err, path, line)


def _svamp(**changes) -> dict:
    row = {"ID": "chal-9", "Body": "Tom has 3 apples", "Question": "How many?", "Equation": "3", "Answer": 3.0}
    row.update(changes)
    return {k: v for k, v in row.items() if v is not None}


def test_a_svamp_record_without_body_names_the_line_it_starts_on(tmp_path):
    path = _write(tmp_path, "svamp/SVAMP.json", json.dumps([_svamp(), _svamp(Body=None)], indent=4))
    with pytest.raises(DataError, match="missing field 'Body'") as err:
        load("svamp", "test", tmp_path, hub=False)
    _assert_names(err, path, 9)  # record 1 opens on line 9 of the indented array


def test_a_non_numeric_svamp_answer_stops(tmp_path):
    path = _write(tmp_path, "svamp/SVAMP.json", json.dumps([_svamp(Answer="three")]))
    with pytest.raises(DataError, match="gold answer 'three' is not a number") as err:
        load("svamp", "test", tmp_path, hub=False)
    _assert_names(err, path, 1)


def test_a_truncated_json_array_names_the_line(tmp_path):
    text = json.dumps([_svamp(), _svamp()], indent=4)
    path = _write(tmp_path, "multiarith/MultiArith.json", text[: len(text) // 2])
    with pytest.raises(DataError, match="not valid JSON") as err:
        load("multiarith", "test", tmp_path, hub=False)
    assert f"{path}:" in str(err.value) and "--data-dir" in str(err.value)


def test_multiarith_needs_a_solution(tmp_path):
    record = {"iIndex": 0, "sQuestion": " How many? ", "lEquations": [], "lSolutions": []}
    path = _write(tmp_path, "multiarith/MultiArith.json", json.dumps([record]))
    with pytest.raises(DataError, match="lSolutions must be a non-empty list") as err:
        load("multiarith", "test", tmp_path, hub=False)
    _assert_names(err, path, 1)


def test_a_non_numeric_asdiv_target_names_the_line(tmp_path):
    path = _write(tmp_path, "asdiv/asdiv.jsonl", '{"input": "a?", "target": 1}\n{"input": "b?", "target": "3:4"}\n')
    with pytest.raises(DataError, match="'3:4' is not a number") as err:
        load("asdiv", "test", tmp_path, hub=False)
    _assert_names(err, path, 2)


XML = """<?xml version="1.0" encoding="UTF-8"?>
<Machine-Reading-Corpus-File>
<ProblemSet>
<Problem ID="nluds-0001" Grade="1">
\t<Body>Seven red apples and two green apples are in the basket.</Body>
\t<Question>How many apples are in the basket?</Question>
\t<Answer>9 (apples)</Answer>
</Problem>
<Problem ID="nluds-0002" Grade="1">
\t<Body>Ellen has six more balls than Marin.</Body>
\t<Question>How many balls does Ellen have?</Question>
</Problem>
</ProblemSet>
</Machine-Reading-Corpus-File>
"""


def test_an_asdiv_problem_without_answer_names_its_line(tmp_path):
    path = _write(tmp_path, "asdiv/ASDiv.xml", XML)
    with pytest.raises(DataError, match="nluds-0002 lacks <Answer>") as err:
        load("asdiv-full", "test", tmp_path, hub=False)
    _assert_names(err, path, 9)


def test_a_truncated_asdiv_xml_names_the_line(tmp_path):
    path = _write(tmp_path, "asdiv/ASDiv.xml", XML[:300])
    with pytest.raises(DataError, match="malformed XML") as err:
        load("asdiv-full", "test", tmp_path, hub=False)
    assert f"{path}:" in str(err.value) and "--data-dir" in str(err.value)


@pytest.mark.parametrize("name, rel", [("gsm8k", "gsm8k/test.jsonl"), ("svamp", "svamp/SVAMP.json"),
                                       ("asdiv", "asdiv/asdiv.jsonl"), ("asdiv-full", "asdiv/ASDiv.xml"),
                                       ("multiarith", "multiarith/MultiArith.json")])
def test_a_missing_file_names_the_file_and_how_to_provide_it(tmp_path, monkeypatch, name, rel):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DataError, match="file not found") as err:
        load(name, "test", tmp_path)
    assert str(tmp_path / rel) in str(err.value)
    assert "--data-dir" in str(err.value) and "DISTILL_DATA_DIR" in str(err.value)


def test_the_evaluated_problems_are_the_first_evaluate_limit_of_the_test_split(data_dir):
    from distill.config import load_config, replace
    from distill.problems import evaluated_problems, load_problems

    cfg = load_config("smoke", [f"data.data_dir={data_dir}"])
    every = load_problems("svamp", "test", data_dir, hub=False)
    assert evaluated_problems(replace(cfg, evaluate={"limit": 3}), "svamp") == every[:3]
    assert evaluated_problems(replace(cfg, evaluate={"limit": None}), "svamp") == every
