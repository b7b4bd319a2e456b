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


def test_kill_9_mid_run_then_rerun_finishes_without_asking_twice_for_what_was_stored(tmp_path, data_dir):
    store = tmp_path / "store" / "completions.jsonl"
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}", "DISTILL_DATA_DIR": str(data_dir),
           "PYTHONPATH": str(TESTS.parent)}
    with FakeOpenAI(latency=0.1) as server:
        cmd = [sys.executable, "-m", "distill.cli", "generate", "--preset", "tiny", "--teacher", "openai",
               "--base-url", server.url, "--limit", "40", "--forms", "pot", "--concurrency", "2",
               "--set", f"run_dir={tmp_path / 'run'}", "--set", f"teacher.store_dir={tmp_path / 'store'}",
               "--set", "data.hub=false"]
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        deadline = time.time() + 60
        while time.time() < deadline and proc.poll() is None:
            if store.exists() and store.read_text().count("\n") >= 6:
                break
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        out = proc.communicate()[0].decode()
        assert proc.returncode == -signal.SIGKILL, out
        stored_at_kill = {r["hash"] for r in read_log(store)}
        seen_first = len(server.requests)
        assert 0 < len(stored_at_kill) < 40

        rerun = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
        assert rerun.returncode == 0, rerun.stdout + rerun.stderr
        second = server.chat_hashes()[seen_first:]

    samples = list(read_log(tmp_path / "run" / "samples.jsonl"))
    assert len({r["problem_id"] for r in samples}) == 40 and all(r["status"] == "ok" for r in samples)
    assert not set(second) & stored_at_kill
    assert len(second) == len(set(second)) == 40 - len(stored_at_kill)


def test_the_cli_lists_the_valid_teachers_for_a_bad_name(tmp_path, data_dir):
    from click.testing import CliRunner

    from distill.cli import main

    result = CliRunner().invoke(main, ["generate", "--teacher", "gpt4", "--data-dir", str(data_dir),
                                       "--set", f"run_dir={tmp_path}", "--limit", "1"])
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
