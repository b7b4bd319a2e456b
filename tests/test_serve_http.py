"""The real `mlflow models serve` on 127.0.0.1 with a tiny student registered and promoted in a temp store.

The student is overfitted to write one looping program for every question, so the answers are
known: CoT reads the last number of that text (1), PoT runs the program in the sandbox until the
timeout (1 s here), and the vote takes CoT's answer.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from distill.thoughts import get_form
from serving_fakes import make_student

LOOP = "while True:\n    pass\nans = 1"
REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(uri: str, model_uri: str, log_path: Path, *, env_manager: str = "local", wait_s: float = 120,
                 env: dict | None = None, cwd: Path = REPO) -> tuple[subprocess.Popen, str]:
    """`mlflow models serve` as a subprocess (its own process group); returns it and its URL once /ping answers.
    ``env`` replaces the environment the server inherits (then MLFLOW_TRACKING_URI and PATH are added)."""
    import requests

    port = free_port()
    bin_dir = str(Path(sys.executable).parent)  # the venv's bin: the server calls uvicorn from PATH
    base = dict(os.environ if env is None else env)
    env = {**base, "MLFLOW_TRACKING_URI": uri, "PATH": bin_dir + os.pathsep + base.get("PATH", ""),
           "HF_HUB_OFFLINE": "1", "MLFLOW_DISABLE_TELEMETRY": "true"}
    log = open(log_path, "w")
    proc = subprocess.Popen([os.path.join(bin_dir, "mlflow"), "models", "serve", "-m", model_uri, "--env-manager",
                             env_manager, "--host", "127.0.0.1", "--port", str(port)],
                            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=cwd)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}:\n{log_path.read_text()[-3000:]}")
        try:
            if requests.get(url + "/ping", timeout=2).status_code == 200:
                return proc, url
        except requests.RequestException:
            pass
        time.sleep(0.3)
    stop_server(proc)
    raise RuntimeError(f"server did not answer /ping within {wait_s:.0f} s:\n{log_path.read_text()[-3000:]}")


def stop_server(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)


def publish_student(tmp: Path, uri: str, *, best: float = 0.25, **student) -> dict:
    """Train-run + log + evaluate summary + register + promote, as the pipeline does; returns promote's result."""
    import mlflow

    from distill.config import load_config
    from distill.serving.logged_model import log_student
    from distill.stages import promote, register
    from distill.tracking import Tracker

    folder = make_student(tmp / f"student{best}", **student)
    cfg = load_config(None, [])
    tracker = Tracker(uri, cfg.tracking.experiment)
    card = json.loads((folder / "card.json").read_text())
    selected = card.get("best_form") or next(iter(card["forms"]))
    with tracker.run("train-etd", {"distill.stage": "train", "distill.teacher": "gold"}):
        log_student(folder, timeout=1.0, max_new_tokens=48)
        tracker.log_metrics({f"val/{selected}/accuracy": best})  # promote ranks on validation accuracy
        run_id = tracker.run_id
    summary = {"mix": card["mix"], "forms": card["forms"], "train_run_id": run_id, "data_digest": "d",
               "selected_form": selected,
               "metrics": {f"{t}/selected/accuracy": best for t in cfg.data.test_sets}}
    register.run(cfg, tmp / "runs", tracker, train_run_id=run_id, eval_summary=summary, log=lambda _: None)
    result = promote.run(cfg, tmp / "runs", tracker, log=lambda _: None)
    mlflow.set_tracking_uri(None)  # back to MLFLOW_TRACKING_URI for the tests that follow
    return result


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("serve")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        promoted = publish_student(tmp, uri, target=LOOP, best_form="cot")
        assert promoted["decision"] == "promoted"
        proc, url = start_server(uri, "models:/distill-student@champion", tmp / "server.log")
    try:
        yield url
    finally:
        stop_server(proc)


def post(url: str, payload) -> tuple[int, dict]:
    import requests

    response = requests.post(url + "/invocations", data=json.dumps(payload),
                             headers={"Content-Type": "application/json"}, timeout=60)
    return response.status_code, response.json()


def test_a_single_question_gets_the_champions_default_thought_and_a_solver_checked_answer(server):
    status, body = post(server, {"dataframe_records": [{"question": "Tom has 3 apples and buys 4. How many?"}]})
    assert status == 200
    assert body["predictions"] == [{"answer": 1, "thought": "cot", "versions": "cot=1", "reasoning": LOOP,
                                    "status": "ok", "reason": "fallback: last number in the text",
                                    "device": "cpu"}]


def test_a_program_that_loops_ends_in_a_timeout_row_and_the_server_keeps_answering(server):
    started = time.monotonic()
    status, body = post(server, {"dataframe_records": [{"question": "How many?", "thought": "pot"}]})
    assert status == 200
    row = body["predictions"][0]
    assert row["status"] == "timeout" and row["answer"] is None and row["reasoning"] == LOOP
    assert time.monotonic() - started < 30  # ended by the sandbox's 1 s limit, not by a hung request
    assert post(server, {"inputs": [{"question": "And now?"}]})[1]["predictions"][0]["status"] == "ok"


def test_a_batch_keeps_its_order_and_answers_each_row_in_its_own_thought(server):
    records = [{"question": "A?", "thought": "pot"}, {"question": "B?", "thought": "vote"},
               {"question": "C?"}, {"question": "D?", "thought": "eot"}]
    status, body = post(server, {"dataframe_records": records})
    assert status == 200
    rows = body["predictions"]
    assert [r["thought"] for r in rows] == ["pot", "vote", "cot", "eot"]
    assert rows[0]["status"] == "timeout"
    assert rows[1]["answer"] == 1 and rows[1]["status"] == "ok" and rows[1]["versions"].count("=") == 3
    assert rows[2]["answer"] == 1
    # EoT reads only the equation lines of the text: "ans = 1" (the loop's lines are prose to it)
    assert rows[3] == {"answer": 1, "thought": "eot", "versions": f"eot={get_form('eot').version}",
                       "reasoning": LOOP, "status": "ok", "reason": "", "device": "cpu"}


def test_the_split_dataframe_format_is_accepted_too(server):
    status, body = post(server, {"dataframe_split": {"columns": ["question", "thought"], "data": [["Q?", "cot"]]}})
    assert status == 200 and body["predictions"][0]["answer"] == 1


@pytest.mark.parametrize("records, message", [
    ([{"text": "How many?"}], "missing column 'question' (got columns: text); expected 'question'"),
    ([{"question": 5}], "'question' must be a string, got int 5"),
    ([{"question": "fine"}, {"question": None}], "row 1: 'question' must be a string, got null"),
    ([{"question": ""}], "'question' is empty"),
    ([{"question": "x" * 2001}], "'question' has 2001 characters; at most 2000 are accepted"),
    ([{"question": "How many?", "thought": "tot"}], "unknown thought 'tot'; valid: cot, pot, eot, vote"),
    ([{"question": "How many?"}] * 17, "17 rows in one request; send at most 16"),
    ([], "no rows: the request holds no record"),
    ([{"question": "How many?", "extra": 1}], "unknown column 'extra'; valid columns: question, thought"),
])
def test_bad_input_gets_a_400_that_says_what_is_wrong(server, records, message):
    status, body = post(server, {"dataframe_records": records})
    assert status == 400
    assert message in body["message"]


@pytest.mark.parametrize("records, start", [
    ([{"question": "How many?"}] * 17, "17 rows in one request; send at most 16 rows per request"),
    ([{"question": "How many?", "thought": "tot"}], "row 0: unknown thought 'tot'"),
    ([{"question": "   "}], "row 0: 'question' is empty; send the text of the question"),
    ([{"text": "How many?"}], "missing column 'question' (got columns: text)"),
])
def test_our_bad_input_message_comes_first_and_does_not_echo_the_request(server, records, start):
    status, body = post(server, {"dataframe_records": records})
    assert status == 400
    # MLflow's scoring server would prefix "Failed to predict data '<every row>'"; serving.inputs.BadRequest keeps it out
    assert body["message"].startswith(start)
    assert "How many?" not in body["message"] and len(body["message"]) < 200
