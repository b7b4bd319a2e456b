"""A secret in the parent's environment reaches no output: not a verdict, a log line, an MLflow
param/tag/metric/table/artifact, nor a served response.

Each test puts a fake API key (and another variable) in our environment *before* the sandbox's
workers start (``sandbox.close_all()`` first), then sends programs that try to read the environment
and push what they find into the verdict text (an exception message, a print, ``ans``), as teacher
or student output, through the real entry points: ``distill verify FILE`` in a subprocess, the
verify stage with an MLflow store, and the served model's ``predict``.
"""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pandas as pd
import pytest

from distill import sandbox
from distill.config import load_config
from distill.files import write_jsonl
from distill.serving.model import DEFAULTS, StudentModel
from distill.stages import verify
from distill.thoughts import get_form

SECRET = "sk-test-SECRET123-" + uuid.uuid4().hex
OTHER = "tok-" + uuid.uuid4().hex

HOSTILE_POT = [
    "import os\nans = os.environ['OPENAI_API_KEY']",
    "import os\nraise ValueError(os.environ.get('OPENAI_API_KEY'))",
    "print(__import__('os').environ)",
    "ans = print.__globals__['os'].environ['OPENAI_API_KEY']",
    "ans = '{0.__globals__[os].environ}'.format(print)",
    "ans = '{a.__globals__}'.format_map({'a': print})",
    "match print:\n    case str(format=f):\n        ans = f('{0.__globals__[os].environ}', print)",
    "match print:\n    case object(__globals__=g):\n        raise ValueError(str(g['os'].environ))",
    "ans = open('/proc/self/environ').read()",
    "raise ValueError(''.join(open('/proc/%d/environ' % 1)))",
    "e = ValueError()\nans = str(e.__traceback__.tb_frame.f_globals)",
    "ans = f'{print.__globals__}'",
    "ans = 6 * 7",  # an honest program: the run goes on around the hostile ones
]
HOSTILE_EOT = [
    "ans = __import__('os').environ",
    "key = OPENAI_API_KEY\nans = key",
    "x**3 = 8\nans = x",
]


@pytest.fixture
def secret_env(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    monkeypatch.setenv("DISTILL_TEST_TOKEN", OTHER)
    sandbox.close_all()  # the workers start again, with the secret in our environment
    yield
    sandbox.close_all()


def assert_no_secret(text: str, where: str) -> None:
    assert SECRET not in text and OTHER not in text, f"the secret reached {where}"


def test_file_mode_verify_writes_and_prints_no_secret(tmp_path, secret_env):
    inp, out = tmp_path / "in.jsonl", tmp_path / "verdicts.jsonl"
    write_jsonl(inp, [{"id": f"p{i}", "question": "q", "completion": c, "answer": 42}
                      for i, c in enumerate(HOSTILE_POT)])
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "MLFLOW_DISABLE_TELEMETRY": "true"}
    assert env["OPENAI_API_KEY"] == SECRET
    cli = Path(sys.executable).with_name("distill")
    done = subprocess.run([str(cli), "verify", str(inp), "--thought", "pot", "--output", str(out), "--json",
                           "--set", "verify.timeout=2"], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout)
    assert report["n"] == len(HOSTILE_POT) and report["correct"] == 1
    assert report["reasons"] == {"correct": 1, "unsafe": len(HOSTILE_POT) - 1}
    for name, text in (("stdout", done.stdout), ("stderr", done.stderr), ("--output", out.read_text())):
        assert_no_secret(text, name)


def test_the_verify_stage_logs_no_secret_to_files_mlflow_or_the_log(tmp_path, mlflow_uri, secret_env, capfd,
                                                                      caplog):
    from distill.tracking import Tracker

    caplog.set_level(logging.DEBUG)
    rows = [{"problem_id": f"p{i}", "question": "q", "gold": 42.0 if form == "pot" else 2.0, "form": form,
             "version": 1, "teacher": "replay", "model": "m", "sample_index": 0, "completion": text,
             "status": "ok", "reason": "", "request_hash": f"h{form}{i}"}
            for form, texts in (("pot", HOSTILE_POT), ("eot", HOSTILE_EOT)) for i, text in enumerate(texts)]
    write_jsonl(tmp_path / "samples.jsonl", rows)
    tracker = Tracker(mlflow_uri, "distill")
    summary = verify.run(load_config(None, []), tmp_path, tracker)
    assert summary["pot"]["kept"] == 1 and summary["eot"]["kept"] == 1  # 6 * 7 and x**3 = 8
    assert summary["pot"]["reasons"] == {"unsafe": len(HOSTILE_POT) - 1}

    client = tracker.mlflow.tracking.MlflowClient()
    runs = tracker.mlflow.search_runs(experiment_names=["distill"], output_format="list")
    assert runs
    for run in runs:
        data = run.data
        for kind, items in (("param", data.params), ("tag", data.tags), ("metric", data.metrics)):
            for key, value in items.items():
                assert_no_secret(f"{key}={value}", f"MLflow {kind} {key}")
        tables = [a.path for a in client.list_artifacts(run.info.run_id, "verify")]
        assert "verify/dropped.json" in tables
    # every file the stage and MLflow wrote: verified/, the SQLite store, artifacts (tables included)
    files = [p for p in tmp_path.rglob("*") if p.is_file() and p.name != "samples.jsonl"]
    assert any(p.name == "dropped.json" for p in files) and any(p.suffix == ".db" for p in files)
    for path in files:
        assert_no_secret(path.read_bytes().decode("utf-8", "replace"), str(path.relative_to(tmp_path)))
    captured = capfd.readouterr()
    assert_no_secret(captured.out + captured.err, "the output streams")
    assert_no_secret("\n".join(r.getMessage() for r in caplog.records), "the log")


def served_model(outputs: dict[str, str]):
    """The pyfunc StudentModel with the real forms and a generator that writes ``outputs[form]``.

    The model's weights are not what is tested here (the sandbox is): its output is set directly.
    """
    model = StudentModel()
    model.card = {"forms": {f: {"version": get_form(f).version} for f in ("cot", "pot", "eot")}}
    model.forms = {f: get_form(f) for f in ("cot", "pot", "eot")}
    model.default = "pot"
    model.settings = {**DEFAULTS, "timeout": 2.0}
    model.start_batching()

    def generate(inputs):
        return [next(text for f, text in outputs.items() if i.endswith(model.forms[f].instruction + "\n"))
                for i in inputs]

    model.generate = generate
    return model


@pytest.mark.parametrize("program", HOSTILE_POT[:-1])
def test_a_served_response_carries_no_secret(program, secret_env, capfd, caplog):
    caplog.set_level(logging.DEBUG)
    model = served_model({"pot": program, "eot": HOSTILE_EOT[0], "cot": "The key is unknown."})
    frame = model.predict(None, pd.DataFrame({"question": ["q", "q"], "thought": ["pot", "vote"]}))
    rows = frame.to_dict("records")
    assert rows[0]["status"] == "unsafe" and rows[0]["answer"] is None and rows[0]["reason"]
    assert_no_secret(frame.to_json(orient="records"), "the served response")
    captured = capfd.readouterr()
    assert_no_secret(captured.out + captured.err + "\n".join(r.getMessage() for r in caplog.records), "the log")
