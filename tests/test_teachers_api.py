"""The openai teacher against a real HTTP server on 127.0.0.1 with injected faults."""
from __future__ import annotations

import pytest

from distill.teachers import BudgetReached, Job, TeacherError, get_teacher
from distill.teachers.api import OpenAITeacher, parse_raw, retry_after
from distill.teachers.ledger import Ledger
from distill.teachers.store import CompletionStore
from fake_openai_server import FakeOpenAI


def jobs(n: int, form: str = "cot") -> list[Job]:
    return [Job(f"p{i}", form, 1, f"question {i}", float(i), ({"role": "user", "content": f"question {i}"},))
            for i in range(n)]


@pytest.fixture
def server():
    with FakeOpenAI() as fake:
        yield fake


def teacher(server, tmp_path, **kw) -> OpenAITeacher:
    options = dict(model="teacher-model", base_url=server.url, api_key="sk-test", store=CompletionStore(tmp_path / "store"),
                   concurrency=4, timeout=2.0, max_retries=3, backoff_base=0.01, backoff_cap=0.05)
    options.update(kw)
    return OpenAITeacher(**options)


def answers(t: OpenAITeacher, js) -> dict[str, object]:
    return {job.problem_id: answer for job, answer in t.answer(js)}


def test_every_job_gets_its_completion_and_the_raw_response_is_stored(server, tmp_path):
    t = teacher(server, tmp_path)
    got = answers(t, jobs(10))
    assert len(got) == 10 and all(a.completions[0].startswith("Reply 0 to: question") for a in got.values())
    assert len(t.store) == 10 and t.stats["calls"] == 10
    assert all(t.store.get(a.request_hash)["usage"]["prompt_tokens"] == 2 for a in got.values())


def test_a_429_is_retried_after_the_wait_the_server_asks_for(server, tmp_path):
    server.inject("429", retry_after=1)
    t = teacher(server, tmp_path, concurrency=1)
    got = answers(t, jobs(2))
    assert all(a.completions[0] for a in got.values())
    assert t.waits == [1.0]  # Retry-After honoured, not the (much shorter) backoff
    assert [r["fault"] for r in server.requests] == ["429", None, None]


def test_a_500_is_retried_with_jittered_exponential_backoff(server, tmp_path):
    server.inject("500", times=3)
    t = teacher(server, tmp_path, concurrency=1, max_retries=3, backoff_base=0.01, backoff_cap=1.0)
    got = answers(t, jobs(1))
    assert got["p0"].completions[0]
    assert len(t.waits) == 3
    for attempt, wait in enumerate(t.waits):
        assert 0.5 * 0.01 * 2 ** attempt <= wait <= 0.01 * 2 ** attempt


def test_a_response_slower_than_the_client_timeout_is_retried(server, tmp_path):
    server.inject("slow", delay=1.5)
    t = teacher(server, tmp_path, concurrency=1, timeout=0.5)
    got = answers(t, jobs(1))
    assert got["p0"].completions[0]
    assert t.stats["error/timeout"] == 1 and len(server.requests) == 2


def test_malformed_json_becomes_a_failed_sample_with_its_reason_and_is_not_retried(server, tmp_path):
    server.inject("malformed")
    t = teacher(server, tmp_path, concurrency=1)
    got = answers(t, jobs(1))
    assert got["p0"].completions == [None] and got["p0"].reasons[0].startswith("malformed_json")
    assert len(server.requests) == 1
    assert "this is not json" in t.store.get(got["p0"].request_hash)["raw"]  # stored raw, before use


def test_empty_choices_becomes_a_failed_sample_and_is_not_retried(server, tmp_path):
    server.inject("empty")
    t = teacher(server, tmp_path, concurrency=1)
    got = answers(t, jobs(1))
    assert got["p0"].reasons == ["empty_choices"] and len(server.requests) == 1


def test_a_job_that_outlives_its_retries_is_left_unanswered_for_a_rerun(server, tmp_path):
    server.inject("500", times=3)
    t = teacher(server, tmp_path, concurrency=1, max_retries=2)
    assert answers(t, jobs(1)) == {}
    assert t.stats["gave_up"] == 1 and t.last_error == "http_500"
    again = teacher(server, tmp_path, concurrency=1)
    assert answers(again, jobs(1))["p0"].completions[0]


def test_a_stored_request_is_answered_from_the_store_without_a_call(server, tmp_path):
    answers(teacher(server, tmp_path), jobs(5))
    second = teacher(server, tmp_path)
    got = answers(second, jobs(5))
    assert len(server.requests) == 5 and second.stats["store_hits"] == 5
    assert all(a.cached for a in got.values())


def test_several_samples_per_question_come_back_as_one_answer(server, tmp_path):
    t = teacher(server, tmp_path, n=3, temperature=0.7)
    got = answers(t, jobs(2))
    assert [len(a.completions) for a in got.values()] == [3, 3]
    assert server.requests[0]["body"]["n"] == 3 and server.requests[0]["body"]["temperature"] == 0.7


def test_a_refused_key_stops_the_run_and_names_the_variable(tmp_path):
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Refuse(BaseHTTPRequestHandler):
        def do_POST(self):
            body = b'{"error": {"message": "bad key"}}'
            self.send_response(401)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Refuse)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        t = OpenAITeacher(model="m", base_url=f"http://127.0.0.1:{httpd.server_address[1]}/v1", api_key="k",
                          store=CompletionStore(tmp_path), api_key_env="MY_TEACHER_KEY")
        with pytest.raises(TeacherError, match="MY_TEACHER_KEY"):
            list(t.answer(jobs(3)))
    finally:
        httpd.shutdown()


def test_the_budget_stops_before_it_is_exceeded_and_keeps_what_was_paid(server, tmp_path):
    prices = {"teacher-model": {"input": 1_000_000.0, "output": 1_000_000.0}}  # 1 per token: easy arithmetic
    ledger = Ledger(tmp_path / "ledger.jsonl", prices, budget=30.0, model="teacher-model")
    t = teacher(server, tmp_path, concurrency=1, max_tokens=8, ledger=ledger)
    got = {}
    with pytest.raises(BudgetReached, match="raise teacher.budget"):
        for job, answer in t.answer(jobs(10)):
            got[job.problem_id] = answer
    assert 0 < len(got) < 10 and ledger.cost <= 30.0
    assert len(t.store) == len(got) == len(server.requests)
    assert Ledger(tmp_path / "ledger.jsonl", prices, 30.0, "teacher-model").cost == ledger.cost  # survives a rerun


def test_a_budget_without_a_price_for_the_model_is_refused():
    from distill.config import ConfigError

    with pytest.raises(ConfigError, match="teacher.prices"):
        Ledger(None, {}, budget=1.0, model="gpt-x")


def test_the_api_key_comes_from_the_named_variable_and_is_never_in_the_config(monkeypatch, tmp_path):
    from distill.config import flatten, load_config

    monkeypatch.setenv("SECRET_KEY_VAR", "sk-very-secret")
    cfg = load_config(None, ["teacher.name=openai", "teacher.api_key_env=SECRET_KEY_VAR",
                             f"teacher.store_dir={tmp_path}"])
    t = get_teacher(cfg, tmp_path)
    assert t._api_key == "sk-very-secret"
    assert "sk-very-secret" not in repr(flatten(cfg))


def test_no_key_and_no_base_url_is_an_error_that_names_the_variable(monkeypatch, tmp_path):
    from distill.config import load_config

    monkeypatch.delenv("NO_SUCH_KEY_VAR", raising=False)
    cfg = load_config(None, ["teacher.name=openai", "teacher.api_key_env=NO_SUCH_KEY_VAR"])
    with pytest.raises(TeacherError, match="NO_SUCH_KEY_VAR"):
        get_teacher(cfg, tmp_path)


def test_a_bad_teacher_name_lists_the_valid_ones(tmp_path):
    from distill.config import ConfigError, load_config

    with pytest.raises(ConfigError, match="gold, replay, openai"):
        get_teacher(load_config(None, ["teacher.name=gpt"]), tmp_path)


def test_retry_after_reads_seconds_milliseconds_and_dates():
    import email.utils
    import time

    assert retry_after({"retry-after": "3"}) == 3.0
    assert retry_after({"retry-after-ms": "250"}) == 0.25
    assert 8 <= retry_after({"retry-after": email.utils.formatdate(time.time() + 10, usegmt=True)}) <= 10
    assert retry_after({}) is None


def test_parse_raw_marks_an_empty_message_as_a_failed_sample():
    answer = parse_raw('{"choices": [{"index": 0, "message": {"content": ""}}, '
                       '{"index": 1, "message": {"content": "ok"}}]}', "h")
    assert answer.completions == [None, "ok"] and answer.reasons == ["empty_content", ""]



def test_abandoning_the_answers_midway_cancels_the_requests_in_flight(server, tmp_path):
    server.inject("slow", times=3, delay=2.0)  # three of the four first requests hang; one answers at once
    t = teacher(server, tmp_path, concurrency=4, timeout=10.0)
    answers_iter = t.answer(jobs(4))
    next(answers_iter)
    answers_iter.close()  # as on Ctrl-C: the hanging requests are cancelled, not awaited and stored
    assert len(t.store) == 1 and t.stats["calls"] == 1


def test_from_config_gives_shard_i_endpoint_i_mod_n_its_own_ledger_and_a_share_of_the_budget(tmp_path):
    from distill.config import load_config
    from distill.shards import parse_shard

    cfg = load_config(None, ["teacher.name=openai", "teacher.base_url=[http://a:1/v1,http://b:2/v1]",
                             f"teacher.store_dir={tmp_path / 'store'}", "teacher.model=m", "teacher.budget=9",
                             "teacher.prices={m: {input: 1, output: 1}}"])
    whole = OpenAITeacher.from_config(cfg, tmp_path)
    assert whole.base_url == "http://a:1/v1" and whole.ledger.budget == 9 and whole.ledger.path == tmp_path / "ledger.jsonl"
    shard = OpenAITeacher.from_config(cfg, tmp_path, shard=parse_shard("1/3"))
    assert shard.base_url == "http://b:2/v1" and shard.ledger.budget == 3
    assert shard.ledger.path == tmp_path / "ledger.shard-1-of-3.jsonl"
    assert OpenAITeacher.from_config(cfg, tmp_path, shard=parse_shard("2/3")).base_url == "http://a:1/v1"
