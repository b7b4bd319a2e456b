"""The generate stage: problems x forms -> samples.jsonl, resumable, also after kill -9."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from distill.config import load_config
from distill.files import DataError, read_log
from distill.stages import generate
from fake_openai_server import FakeOpenAI

TESTS = Path(__file__).resolve().parent


def config(tmp_path, data_dir, *overrides):
    return load_config(None, [f"run_dir={tmp_path / 'run'}", f"data.data_dir={data_dir}", "data.hub=false",
                              f"teacher.store_dir={tmp_path / 'store'}", *overrides])


def test_gold_samples_every_problem_in_every_form_and_logs_the_run(tmp_path, data_dir, mlflow_uri):
    from distill.tracking import Tracker

    cfg = config(tmp_path, data_dir, "data.limit_train=12")
    tracker = Tracker(mlflow_uri, "distill")
    summary = generate.run(cfg, cfg.run_path, tracker)
    rows = list(read_log(cfg.run_path / "samples.jsonl"))
    assert summary["items"] == summary["answered"] == 36 and len(rows) == 36
    assert set(rows[0]) >= {"problem_id", "question", "gold", "form", "version", "teacher", "sample_index",
                            "completion", "status", "reason", "request_hash"}
    run = tracker.mlflow.search_runs(experiment_names=["distill"], output_format="list")[0]
    assert run.info.run_name == "generate"
    assert run.data.tags["distill.stage"] == "generate" and run.data.tags["distill.teacher"] == "gold"
    assert run.data.metrics["generate/answered"] == 36


def test_a_rerun_skips_every_item_that_has_a_sample(tmp_path, data_dir):
    cfg = config(tmp_path, data_dir, "data.limit_train=5")
    generate.run(cfg, cfg.run_path)
    generate.run(cfg, cfg.run_path)
    assert len(list(read_log(cfg.run_path / "samples.jsonl"))) == 15


def test_gold_samples_of_an_earlier_derivation_are_derived_again(tmp_path, data_dir):
    import json

    from distill.stages.generate import latest_samples
    from distill.teachers.gold import GoldTeacher

    cfg = config(tmp_path, data_dir, "data.limit_train=3")
    generate.run(cfg, cfg.run_path)
    path = cfg.run_path / "samples.jsonl"
    # a run folder written by the gold teacher before its EoT comments restated the question only
    rows = [{**json.loads(line), "model": "gsm8k-annotations", "completion": "stale"}
            for line in path.read_text().splitlines()]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    summary = generate.run(cfg, cfg.run_path)
    assert summary["answered"] == 9
    latest = latest_samples(path).values()
    assert {r["model"] for r in latest} == {GoldTeacher.model} and "stale" not in {r["completion"] for r in latest}


def test_samples_of_another_teacher_in_the_run_folder_are_refused(tmp_path, data_dir):
    cfg = config(tmp_path, data_dir, "data.limit_train=2")
    generate.run(cfg, cfg.run_path)
    other = config(tmp_path, data_dir, "data.limit_train=2", "teacher.name=replay",
                   f"teacher.replay_file={cfg.run_path / 'samples.jsonl'}")
    with pytest.raises(DataError, match="teacher 'gold'"):
        generate.run(other, other.run_path)


def test_the_openai_teacher_writes_samples_and_counts_tokens(tmp_path, data_dir):
    with FakeOpenAI() as server:
        server.inject("malformed")
        cfg = config(tmp_path, data_dir, "data.limit_train=4", "teacher.name=openai", f"teacher.base_url={server.url}",
                     "generate.forms=[cot,eot]", "teacher.n=2", "teacher.temperature=0.7", "teacher.concurrency=1")
        summary = generate.run(cfg, cfg.run_path)
    assert summary["answered"] == 8 and summary["samples_ok"] == 14 and summary["failed_reasons"] == {"malformed_json": 1}
    assert summary["teacher_stats"]["calls"] == 8 and summary["teacher_stats"]["output_tokens"] > 0
    rows = list(read_log(cfg.run_path / "samples.jsonl"))
    assert sorted({r["sample_index"] for r in rows}) == [0, 1]


def test_batch_submit_then_collect_fills_the_store_and_the_samples(tmp_path, data_dir):
    with FakeOpenAI(batch_polls=1) as server:
        cfg = config(tmp_path, data_dir, "data.limit_train=3", "teacher.name=openai", f"teacher.base_url={server.url}",
                     "generate.forms=[pot]", "generate.batch_poll=0.05", "generate.batch_wait=5")
        submitted = generate.run(cfg, cfg.run_path, batch="submit")
        assert submitted["batch"]["requests"] == 3 and submitted["answered"] == 0
        again = generate.run(cfg, cfg.run_path, batch="submit")  # nothing is submitted twice
        assert again["batch"]["requests"] == 0
        collected = generate.run(cfg, cfg.run_path, batch="collect")
        assert collected["batch"]["stored"] == 3 and collected["answered"] == 3
        assert server.requests == []  # never a live chat call
        assert len(server.batches) == 1


@pytest.mark.slow  # kill -9 of a generate process, then a rerun: ~10 s
def test_kill_9_mid_run_then_rerun_finishes_without_asking_twice_for_what_was_stored(tmp_path, data_dir):
    store = tmp_path / "store"
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}", "DISTILL_DATA_DIR": str(data_dir),
           "PYTHONPATH": str(TESTS.parent)}
    with FakeOpenAI(latency=0.1) as server:
        cmd = [sys.executable, "-m", "distill.cli", "generate", "--preset", "tiny", "--teacher", "openai",
               "--set", f"teacher.base_url={server.url}", "--set", "data.limit_train=40", "--set", "generate.forms=pot",
               "--set", "teacher.concurrency=2",
               "--set", f"run_dir={tmp_path / 'run'}", "--set", f"teacher.store_dir={tmp_path / 'store'}",
               "--set", "data.hub=false"]
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        deadline = time.time() + 60
        while time.time() < deadline and proc.poll() is None:
            if len(_stored(store)) >= 6:
                break
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        out = proc.communicate()[0].decode()
        assert proc.returncode == -signal.SIGKILL, out
        stored_at_kill = _stored(store)
        seen_first = len(server.requests)
        assert 0 < len(stored_at_kill) < 40

        rerun = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
        assert rerun.returncode == 0, rerun.stdout + rerun.stderr
        second = server.chat_hashes()[seen_first:]

    samples = list(read_log(tmp_path / "run" / "samples.jsonl"))
    assert len({r["problem_id"] for r in samples}) == 40 and all(r["status"] == "ok" for r in samples)
    assert not set(second) & stored_at_kill
    assert len(second) == len(set(second)) == 40 - len(stored_at_kill)


def _stored(store_dir: Path) -> set[str]:
    from distill.teachers.store import CompletionStore

    if not (store_dir / CompletionStore.DB).exists():
        return set()
    store = CompletionStore(store_dir)
    try:
        return set(store.hashes())
    finally:
        store.close()


def test_the_cli_lists_the_valid_teachers_for_a_bad_name(tmp_path, data_dir):
    from click.testing import CliRunner

    from distill.cli import main

    result = CliRunner().invoke(main, ["generate", "--teacher", "gpt4", "--data-dir", str(data_dir),
                                       "--set", f"run_dir={tmp_path}", "--set", "data.limit_train=1"])
    assert result.exit_code == 2 and "valid teachers: gold, replay, openai" in result.output


def test_a_budget_stops_the_run_cleanly_and_a_rerun_with_more_budget_finishes_without_paying_twice(tmp_path, data_dir):
    with FakeOpenAI() as server:
        base = ["data.limit_train=10", "teacher.name=openai", f"teacher.base_url={server.url}", "generate.forms=[cot]",
                "teacher.concurrency=1", "teacher.max_tokens=20", "teacher.model=m",
                "teacher.prices={m: {input: 0, output: 1000000}}"]  # 1 per output token; replies are < 20 words
        stopped = generate.run(config(tmp_path, data_dir, *base, "teacher.budget=60"), tmp_path / "run")
        assert stopped["stopped"] and 0 < stopped["answered"] < 10
        assert stopped["teacher_stats"]["total_cost"] <= 60
        first = set(server.chat_hashes())
        done = generate.run(config(tmp_path, data_dir, *base, "teacher.budget=100000"), tmp_path / "run")
        assert done["answered"] == 10 and not done["stopped"]
        assert not set(server.chat_hashes()[len(first):]) & first


# --- shards ----------------------------------------------------------------------------------

def _gold_responder(data_dir, limit: int):
    """Replies that cot and pot both read ('ans = N  # The answer is N.'): right for some problems,
    wrong for others, so the verified sets and the dropped ones are both non-empty."""
    from distill.problems import load_problems

    golds = {p.question: p.answer for p in load_problems("gsm8k", "train", data_dir, hub=False)[:limit]}

    def respond(body: dict) -> list[str]:
        question = next(m["content"] for m in reversed(body["messages"]) if m["role"] == "user")
        gold = next(g for q, g in golds.items() if q in question)
        value = gold if len(question) % 3 else gold + 1
        return [f"ans = {value:g}  # The answer is {value:g}."]

    return respond


def _generate_cmd(url: str, run_dir: Path, store: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "distill.cli", "generate", "--preset", "tiny", "--teacher", "openai",
            "--set", f"teacher.base_url={url}", "--set", "data.limit_train=30", "--set", "generate.forms=cot,pot",
            "--set", "teacher.concurrency=2",
            "--set", f"run_dir={run_dir}", "--set", f"teacher.store_dir={store}", "--set", "data.hub=false", *extra]


def _env(tmp_path, data_dir, name: str) -> dict:
    return {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / (name + '.db')}",
            "DISTILL_DATA_DIR": str(data_dir), "PYTHONPATH": os.pathsep.join([str(TESTS.parent), str(TESTS)])}


def _verified(run_dir: Path) -> dict:
    from distill.stages import verify

    cfg = load_config(None, [f"run_dir={run_dir}", "data.hub=false"])
    verify.run(cfg, run_dir)
    return {form: (run_dir / "verified" / f"{form}.jsonl").read_text() for form in ("cot", "pot")}


@pytest.mark.slow  # two shard processes, then verify: ~12 s
def test_two_shard_processes_at_once_then_verify_give_the_unsharded_sets_and_send_no_request_twice(tmp_path, data_dir):
    store = tmp_path / "store"
    with FakeOpenAI(latency=0.05, responder=_gold_responder(data_dir, 30)) as server:
        shards = [subprocess.Popen(_generate_cmd(server.url, tmp_path / "sharded", store, "--shard", f"{k}/2"),
                                   env=_env(tmp_path, data_dir, f"shard{k}"), stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT) for k in range(2)]
        outputs = [p.communicate(timeout=180)[0].decode() for p in shards]
        assert [p.returncode for p in shards] == [0, 0], outputs
        sharded_hashes = server.chat_hashes()
        single = subprocess.run(_generate_cmd(server.url, tmp_path / "single", tmp_path / "store-single"),
                                env=_env(tmp_path, data_dir, "single"), capture_output=True, text=True, timeout=180)
        assert single.returncode == 0, single.stdout + single.stderr
    assert len(sharded_hashes) == len(set(sharded_hashes)) == 60  # 30 problems x 2 forms, each asked once
    files = sorted(p.name for p in (tmp_path / "sharded").glob("samples*.jsonl"))
    assert files == ["samples.shard-0-of-2.jsonl", "samples.shard-1-of-2.jsonl"]
    per_shard = [{(r["problem_id"], r["form"]) for r in read_log(tmp_path / "sharded" / f)} for f in files]
    assert per_shard[0] and per_shard[1] and not per_shard[0] & per_shard[1]
    sharded, unsharded = _verified(tmp_path / "sharded"), _verified(tmp_path / "single")
    assert sharded == unsharded and all(sharded[f].count("\n") > 0 for f in sharded)
    assert any(r["status"] == "ok" for r in read_log(tmp_path / "single" / "samples.jsonl"))


@pytest.mark.slow  # kills and reruns shard processes: ~15 s
def test_a_killed_shard_resumes_alone_without_asking_twice_for_what_was_stored(tmp_path, data_dir):
    store = tmp_path / "store"
    with FakeOpenAI(latency=0.1) as server:
        other = subprocess.run(_generate_cmd(server.url, tmp_path / "run", store, "--shard", "1/2"),
                               env=_env(tmp_path, data_dir, "a"), capture_output=True, text=True, timeout=180)
        assert other.returncode == 0, other.stdout + other.stderr
        other_rows = (tmp_path / "run" / "samples.shard-1-of-2.jsonl").read_text()
        before = len(server.requests)
        cmd = _generate_cmd(server.url, tmp_path / "run", store, "--shard", "0/2")
        proc = subprocess.Popen(cmd, env=_env(tmp_path, data_dir, "b"), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        deadline = time.time() + 60
        while time.time() < deadline and proc.poll() is None and len(server.completed) < before + 6:
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
        stored_at_kill = _stored(store)
        seen_first = len(server.requests)
        rerun = subprocess.run(cmd, env=_env(tmp_path, data_dir, "b"), capture_output=True, text=True, timeout=180)
        assert rerun.returncode == 0, rerun.stdout + rerun.stderr
        second = server.chat_hashes()[seen_first:]
    assert not set(second) & stored_at_kill and len(second) == len(set(second))
    assert (tmp_path / "run" / "samples.shard-1-of-2.jsonl").read_text() == other_rows  # the other shard untouched
    keys = {(r["problem_id"], r["form"]) for f in (tmp_path / "run").glob("samples*.jsonl") for r in read_log(f)}
    assert len(keys) == 60


def test_shard_i_asks_endpoint_i_mod_the_number_of_endpoints(tmp_path, data_dir):
    from distill.shards import parse_shard

    with FakeOpenAI() as a, FakeOpenAI() as b:
        cfg = config(tmp_path, data_dir, "data.limit_train=8", "teacher.name=openai", "generate.forms=[cot]",
                     f"teacher.base_url=[{a.url},{b.url}]")
        asked = []
        for k in range(3):
            before = (len(a.requests), len(b.requests))
            summary = generate.run(cfg, cfg.run_path, shard=parse_shard(f"{k}/3"))
            assert summary["pending"] == 0
            asked.append((len(a.requests) - before[0], len(b.requests) - before[1]))
    assert asked[0][1] == asked[1][0] == asked[2][1] == 0  # shards 0 and 2 ask a, shard 1 asks b
    assert asked[0][0] + asked[1][1] + asked[2][0] == 8 and all(sum(n) > 0 for n in asked)


def test_a_bad_shard_spec_is_one_line_that_gives_the_format(tmp_path, data_dir):
    from click.testing import CliRunner

    from distill.cli import main

    for spec in ("3/2", "a/b", "2", "-1/2", "0/0"):
        result = CliRunner().invoke(main, ["generate", "--shard", spec, "--data-dir", str(data_dir),
                                           "--set", f"run_dir={tmp_path}", "--set", "data.limit_train=1"])
        assert result.exit_code == 2, result.output
        assert result.output.strip().count("\n") == 0 and "i/n with 0 <= i < n" in result.output
    assert not (tmp_path / "samples.jsonl").exists()
