"""The replay teacher: completions from a file, never an API call; what is missing is an error."""
from __future__ import annotations

import json

import pytest

from distill.files import DataError
from distill.teachers import Job, canonical_request, request_hash
from distill.teachers.replay import ReplayTeacher

MESSAGES = ({"role": "user", "content": "q1"},)


def job(pid: str, form: str = "cot") -> Job:
    return Job(pid, form, 1, pid, 1.0, MESSAGES)


def write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_completions_are_found_by_request_hash(tmp_path):
    h = request_hash(canonical_request("m", MESSAGES, 0.0, 1, 512))
    t = ReplayTeacher(write(tmp_path / "r.jsonl", [{"request_hash": h, "completion": "The answer is 1."}]), "m")
    (got_job, answer), = t.answer([job("p1")])
    assert answer.completions == ["The answer is 1."] and answer.request_hash == h


def test_a_previous_runs_samples_replay_by_problem_and_form_with_every_sample(tmp_path):
    rows = [{"problem_id": "p1", "form": "pot", "sample_index": i, "completion": f"ans = {i}",
             "request_hash": "other"} for i in (1, 0)]
    t = ReplayTeacher(write(tmp_path / "samples.jsonl", rows), "m")
    (_, answer), = t.answer([job("p1", "pot")])
    assert answer.completions == ["ans = 0", "ans = 1"]


def test_a_store_file_replays_its_raw_responses(tmp_path):
    h = request_hash(canonical_request("m", MESSAGES, 0.0, 1, 512))
    raw = json.dumps({"choices": [{"index": 0, "message": {"content": "x = 1"}}]})
    t = ReplayTeacher(write(tmp_path / "completions.jsonl", [{"hash": h, "request": {}, "raw": raw}]), "m")
    assert next(iter(t.answer([job("p1")])))[1].completions == ["x = 1"]


def test_missing_requests_are_an_error_that_counts_them_and_shows_one(tmp_path):
    t = ReplayTeacher(write(tmp_path / "r.jsonl", [{"problem_id": "p1", "form": "cot", "completion": "1"}]), "m")
    with pytest.raises(DataError, match=r"2 of 3 requests are not in the replay file, e\.g\. problem p2 form cot"):
        list(t.answer([job("p1"), job("p2"), job("p3")]))


def test_a_line_without_a_key_names_the_file_and_line(tmp_path):
    with pytest.raises(DataError, match=r"r\.jsonl:2"):
        ReplayTeacher(write(tmp_path / "r.jsonl", [{"problem_id": "p", "form": "cot", "completion": "1"},
                                                    {"completion": "2"}]))
