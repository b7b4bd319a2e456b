"""Project files: atomic writes, JSONL with line-numbered errors, append logs that survive a torn line."""
from __future__ import annotations

import json
import os

import pytest

from distill.files import DataError, append_log, atomic_write_text, read_jsonl, read_log, write_json, write_jsonl


def test_atomic_write_creates_folders_and_leaves_no_temporary_file(tmp_path):
    path = atomic_write_text(tmp_path / "a" / "b" / "out.txt", "hello")
    assert path.read_text() == "hello"
    assert os.listdir(path.parent) == ["out.txt"]


def test_a_failed_atomic_write_keeps_the_old_file(tmp_path):
    path = tmp_path / "out.json"
    write_json(path, {"old": 1})
    with pytest.raises(TypeError):
        write_json(path, {"new": object()})  # not serialisable: fails before the rename
    assert json.loads(path.read_text()) == {"old": 1}
    assert os.listdir(tmp_path) == ["out.json"]


def test_a_crash_at_the_rename_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    path = atomic_write_text(tmp_path / "out.txt", "old")

    def crash(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        atomic_write_text(path, "new")
    assert path.read_text() == "old"
    assert os.listdir(tmp_path) == ["out.txt"]


def test_write_json_is_sorted_and_keeps_unicode(tmp_path):
    path = write_json(tmp_path / "x.json", {"b": "Janet’s", "a": 1})
    text = path.read_text(encoding="utf-8")
    assert text.index('"a"') < text.index('"b"') and "Janet’s" in text and text.endswith("\n")


def test_jsonl_round_trips(tmp_path):
    rows = [{"id": 1, "q": "−3"}, {"id": 2, "q": "x"}]
    assert read_jsonl(write_jsonl(tmp_path / "r.jsonl", rows)) == rows


def test_read_jsonl_names_file_and_line_of_a_truncated_record(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text('{"id": 1}\n\n{"id": 2, "q": "tru\n')
    with pytest.raises(DataError, match=rf"{path}:3: not valid JSON .*Run distill verify") as err:
        read_jsonl(path, hint="Run distill verify first.")
    assert "Run distill verify first." in str(err.value)


def test_read_jsonl_names_the_missing_field_and_its_line(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text('{"id": 1, "gold": 3}\n{"id": 2}\n')
    with pytest.raises(DataError, match=rf"{path}:2: missing field 'gold'"):
        read_jsonl(path, required=("id", "gold"))


def test_read_jsonl_refuses_a_line_that_is_not_an_object(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text("[1, 2]\n")
    with pytest.raises(DataError, match=rf"{path}:1: expected a JSON object, got list"):
        read_jsonl(path)


def test_read_jsonl_of_a_missing_file_says_how_to_make_it(tmp_path):
    with pytest.raises(DataError, match="file not found. Run distill mix first."):
        read_jsonl(tmp_path / "nope.jsonl", hint="Run distill mix first.")


def test_an_append_log_survives_a_torn_last_line_and_resumes_cleanly(tmp_path):
    path = tmp_path / "log.jsonl"
    with append_log(path) as log:
        log.write({"i": 1})
        log.write({"i": 2})
    with path.open("a") as fh:
        fh.write('{"i": 3, "half')  # a crash mid-write
    assert [r["i"] for r in read_log(path)] == [1, 2]
    with append_log(path) as log:
        log.write({"i": 3})
    assert [r["i"] for r in read_log(path)] == [1, 2, 3]
    assert path.read_text().count("\n") == 3


def test_read_log_of_a_missing_file_is_empty(tmp_path):
    assert list(read_log(tmp_path / "none.jsonl")) == []
