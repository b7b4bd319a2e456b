"""Overlap report: exact duplicates and n-gram overlap between training questions and test sets."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from distill.cli import main
from distill.overlap import column_notes, contaminated_ids, format_table, overlap_report, tokens
from distill.problems import Problem, load


def P(pid: str, question: str) -> Problem:
    return Problem(id=pid, dataset=pid.split("-")[0], split="test", question=question, answer=1.0)


TRAIN = [
    P("train-0", "Janet’s ducks lay 16 eggs per day. How many eggs does she sell?"),
    P("train-1", "A farmer has 3 cows and buys 4 more cows at the market on Monday. How many cows?"),
    P("train-2", "Tom reads 5 pages."),
    P("train-3", "Nothing here is shared with any of the test questions at all, really."),
]
TESTS = {
    # exact duplicate after normalisation (case, punctuation, curly apostrophe, spacing)
    "alpha": [P("alpha-0", "janet's ducks  lay 16 eggs per day how many eggs does she sell"),
              P("alpha-1", "An unrelated question about trains and stations?")],
    # shares the 8-gram "buys 4 more cows at the market on" with train-1, and a short exact duplicate
    "beta": [P("beta-0", "Sue buys 4 more cows at the market on Tuesday. How many now?"),
             P("beta-1", "Tom reads 5 pages!")],
    # shares only 7 words in a row with train-1 ("4 more cows at the market on")
    "gamma": [P("gamma-0", "Bill sells 4 more cows at the market on Friday to a neighbour.")],
}


def test_tokens_normalise_case_punctuation_and_unicode():
    assert tokens("Janet’s  DUCKS, lay 1,080 eggs!") == tokens("janet's ducks lay 1 080 eggs")


def test_contaminated_ids_name_the_training_problems_that_overlap_each_test_set():
    assert contaminated_ids(TRAIN, TESTS) == {"alpha": {"train-0"}, "beta": {"train-1", "train-2"}, "gamma": set()}


def test_a_shorter_n_catches_the_seven_word_overlap():
    assert contaminated_ids(TRAIN, TESTS, n=7)["gamma"] == {"train-1"}


def test_the_report_counts_both_sides_of_every_pair():
    report = overlap_report(TRAIN, TESTS, n=8, train_name="toy-train")
    assert report["n"] == 8
    assert [(p["a"], p["b"]) for p in report["pairs"]] == [
        ("toy-train", "alpha"), ("toy-train", "beta"), ("toy-train", "gamma"),
        ("alpha", "beta"), ("alpha", "gamma"), ("beta", "gamma"),
    ]
    alpha, beta, gamma = report["pairs"][:3]
    assert alpha["exact"] == {"a": 1, "b": 1} and alpha["any"] == {"a": 1, "b": 1} and alpha["b_rate"] == 0.5
    assert alpha["examples"] == [{"kind": "exact", "a_id": "train-0", "b_id": "alpha-0", "ngram": None}]
    # "Tom reads 5 pages" is shorter than 8 words: only the exact test can see it
    assert beta["exact"] == {"a": 1, "b": 1} and beta["ngram"] == {"a": 1, "b": 1} and beta["any"] == {"a": 2, "b": 2}
    assert {"kind": "ngram", "a_id": "train-1", "b_id": "beta-0",
            "ngram": "buys 4 more cows at the market on"} in beta["examples"]
    assert beta["examples"][0]["kind"] == "exact"
    assert gamma["any"] == {"a": 0, "b": 0} and gamma["examples"] == []
    assert report["sets"]["toy-train"] == {"problems": 4, "internal_duplicates": 0}


def test_duplicates_inside_a_set_are_counted():
    report = overlap_report(TRAIN, {"dup": [P("dup-0", "Same text."), P("dup-1", "same  text")]})
    assert report["sets"]["dup"]["internal_duplicates"] == 1


def test_the_report_is_the_same_on_every_run_and_prints_as_a_table():
    first = overlap_report(TRAIN, TESTS)
    assert first == overlap_report(TRAIN, TESTS)
    table = format_table(first)
    assert "8-gram A/B" in table and "toy" not in table and "train" in table
    assert len(table.splitlines()) == 2 + 6 + 1 + 1 + len(column_notes())


def test_the_table_explains_every_column_it_prints():
    table = format_table(overlap_report(TRAIN, TESTS, n=5))
    header = table.splitlines()[0]
    notes = "\n".join(column_notes(5))
    for column in ("set A", "set B", "|A|", "|B|", "exact A/B", "5-gram A/B", "any A/B", "B %"):
        assert column in header and column in notes.split("\n", 1)[1]


def test_n_below_one_is_refused():
    with pytest.raises(ValueError, match="n must be at least 1"):
        overlap_report(TRAIN, TESTS, n=0)


# --- the real files: the measured figures --------------------------------------------------------

@pytest.fixture(scope="module")
def real(data_dir):
    train = load("gsm8k", "train", data_dir, hub=False).problems
    tests = {name: load(name, "test", data_dir, hub=False).problems for name in ("gsm8k", "asdiv", "svamp", "multiarith")}
    return train, tests


def test_real_overlap_figures(real):
    train, tests = real
    report = overlap_report(train, tests, train_name="gsm8k-train")
    got = {(p["a"], p["b"]): (p["exact"]["a"], p["exact"]["b"], p["any"]["a"], p["any"]["b"]) for p in report["pairs"]}
    assert got == {
        ("gsm8k-train", "gsm8k"): (0, 0, 94, 80),
        ("gsm8k-train", "asdiv"): (0, 0, 46, 36),
        ("gsm8k-train", "svamp"): (0, 0, 5, 11),
        ("gsm8k-train", "multiarith"): (0, 0, 6, 15),
        ("gsm8k", "asdiv"): (0, 0, 4, 4),
        ("gsm8k", "svamp"): (0, 0, 0, 0),
        ("gsm8k", "multiarith"): (0, 0, 0, 0),
        # SVAMP was built by varying ASDiv-A problems; ASDiv contains MAWPS, which contains MultiArith
        ("asdiv", "svamp"): (0, 0, 99, 487),
        ("asdiv", "multiarith"): (60, 64, 121, 564),
        ("svamp", "multiarith"): (0, 0, 1, 2),
    }
    assert {k: v["internal_duplicates"] for k, v in report["sets"].items()} == {
        "gsm8k-train": 0, "gsm8k": 0, "asdiv": 1, "svamp": 0, "multiarith": 20}  # SOURCE.md: 20 pairs


def test_real_contaminated_ids_match_the_report(real):
    train, tests = real
    found = contaminated_ids(train, tests)
    assert {k: len(v) for k, v in found.items()} == {"gsm8k": 94, "asdiv": 46, "svamp": 5, "multiarith": 6}
    assert "gsm8k-train-00020" in found["gsm8k"] and "gsm8k-train-00020" in found["asdiv"]


# --- distill overlap ------------------------------------------------------------------------------

@pytest.fixture(autouse=True)
def _restore_data_dir_env(monkeypatch):
    """`--data-dir` sets DISTILL_DATA_DIR in-process; monkeypatch puts the old value back afterwards."""
    monkeypatch.setenv("DISTILL_DATA_DIR", "unset-by-test")
    monkeypatch.delenv("DISTILL_DATA_DIR")


def test_distill_overlap_prints_the_table_and_saves_json(data_dir, tmp_path):
    out = tmp_path / "o" / "overlap.json"
    result = CliRunner().invoke(main, ["overlap", "--data-dir", str(data_dir), "--output", str(out),
                                       "--set", "data.test_sets=svamp+multiarith"])
    assert result.exit_code == 0, result.output
    assert "gsm8k-train  svamp" in result.output and f"saved {out}" in result.output
    report = json.loads(out.read_text())
    assert [(p["a"], p["b"]) for p in report["pairs"]] == [
        ("gsm8k-train", "svamp"), ("gsm8k-train", "multiarith"), ("svamp", "multiarith")]


def test_distill_overlap_writes_under_the_presets_run_folder_by_default(data_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["overlap", "--preset", "smoke", "--data-dir", str(data_dir),
                                       "--set", "mix.overlap_n=12", "--set", "data.test_sets=svamp"])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "runs" / "smoke" / "overlap.json").read_text())
    assert report["n"] == 12


def test_distill_overlap_on_a_missing_data_dir_says_how_to_fix_it(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    (tmp_path / "empty").mkdir()  # an existing folder without the files (a missing one is refused by click)
    result = CliRunner().invoke(main, ["overlap", "--data-dir", str(tmp_path / "empty"), "--output", str(tmp_path / "o.json")])
    assert result.exit_code == 2
    assert "file not found" in result.output and "--data-dir" in result.output
