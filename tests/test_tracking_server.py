"""The team's tracking server (distill/tracking_server.py, `make server`): a real PostgreSQL and a real MLflow
server, the smoke pipeline logged to it over HTTP, two trainings at once, checks through the REST
API, and the one-line errors for an unreachable server and a PostgreSQL that does not start.

These tests need PostgreSQL's server binaries (Debian: apt-get install -y postgresql; .ci/run
installs them); without them they fail with the install command, they do not skip.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from distill import tracking_server as server_mod

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def server_cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """The script `make server` runs, run the same way."""
    return subprocess.run([sys.executable, "-m", "distill.tracking_server", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO)


def cleanup(server_dir: Path) -> None:
    server_cli("stop", "--dir", str(server_dir))
    link = server_dir / "pg"
    if link.is_symlink():  # the cluster of a root run in a private TMPDIR folder (see distill/tracking_server.py)
        shutil.rmtree(os.readlink(link), ignore_errors=True)


@pytest.fixture
def tracking_server(tmp_path):
    server_dir, port = tmp_path / "server", free_port()
    started = server_cli("start", "--dir", str(server_dir), "--port", str(port))
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        yield {"dir": server_dir, "url": f"http://127.0.0.1:{port}", "port": port}
    finally:
        cleanup(server_dir)


def test_an_unreachable_tracking_server_is_one_line_naming_the_uri_and_the_fix(tmp_path, data_dir):
    uri = f"http://127.0.0.1:{free_port()}"
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "DISTILL_DATA_DIR": str(data_dir)}
    done = subprocess.run([sys.executable, "-m", "distill.cli", "verify", "--preset", "smoke",
                           "--set", f"run_dir={tmp_path / 'run'}"], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and uri in lines[0] and "/health" in lines[0] and "make server" in lines[0]
    assert not (tmp_path / "run").exists()


def test_a_postgresql_that_fails_to_start_is_one_line_with_its_log_and_keeps_the_data(tmp_path):
    server_dir = tmp_path / "server"
    try:
        data = server_mod.start_postgres(server_dir)  # a real cluster, created and started
        server_mod.stop_postgres(server_dir)
        conf = data / "postgresql.conf"
        conf.write_text(conf.read_text() + "\nshared_buffers = 'not a size'\n")
        before = sorted(p.name for p in data.iterdir())
        failed = server_cli("start", "--dir", str(server_dir), "--port", str(free_port()))
        assert failed.returncode == 2
        lines = failed.stderr.strip().splitlines()
        assert len(lines) == 1 and "PostgreSQL start failed" in lines[0] and str(server_dir / "postgres.log") in lines[0]
        assert "shared_buffers" in (server_dir / "postgres.log").read_text()
        assert (data / "PG_VERSION").exists() and set(before) <= {p.name for p in data.iterdir()}
    finally:
        cleanup(server_dir)


def test_a_taken_port_is_refused_with_the_variable_that_changes_it(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        failed = server_cli("start", "--dir", str(tmp_path / "server"), "--port", str(port))
    assert failed.returncode == 2 and f"SERVER_PORT={port + 1}" in failed.stderr
    assert not (tmp_path / "server" / "pg").exists()  # refused before anything was started


def api(url: str, path: str, body: dict | None = None, **params) -> dict:
    full = f"{url}/api/2.0/mlflow/{path}"
    response = requests.post(full, json=body, timeout=30) if body is not None else requests.get(full, params=params,
                                                                                                timeout=30)
    assert response.status_code == 200, (path, response.status_code, response.text[:300])
    return response.json()


def distill(env: dict, *args: str, background: bool = False):
    cmd = [sys.executable, "-m", "distill.cli", *args]
    if background:
        return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"{' '.join(args)}\n{done.stdout}\n{done.stderr}"
    return done


@pytest.mark.slow
def test_the_smoke_pipeline_logs_to_the_server_on_postgresql_with_two_trainings_at_once(tmp_path, data_dir,
                                                                                          tracking_server):
    url = tracking_server["url"]
    run_dir = tmp_path / "run"
    env = {**os.environ, "MLFLOW_TRACKING_URI": url, "DISTILL_DATA_DIR": str(data_dir), "HF_HUB_OFFLINE": "1",
           "MLFLOW_EXPERIMENT_NAME": "distill"}
    env.pop("MLFLOW_RUN_ID", None)
    common = ["--preset", "smoke", "--set", f"run_dir={run_dir}", "--set", f"teacher.store_dir={tmp_path / 'store'}"]
    distill(env, "generate", *common)
    distill(env, "verify", *common)
    distill(env, "mix", *common, "--mix", "etd")
    distill(env, "mix", *common, "--mix", "cot")
    # two trainings at once, as two machines of a team run them: each in its own run folder (a run folder
    # has one writer at a time), both logging to the one server
    shutil.copytree(run_dir, tmp_path / "run-cot", ignore=shutil.ignore_patterns(".distill.lock*"))
    other = ["--preset", "smoke", "--set", f"run_dir={tmp_path / 'run-cot'}",
             "--set", f"teacher.store_dir={tmp_path / 'store'}"]
    trains = [distill(env, "train", *args, "--mix", mix, background=True)
              for args, mix in ((common, "etd"), (other, "cot"))]
    outputs = [p.communicate(timeout=600)[0] for p in trains]
    assert [p.returncode for p in trains] == [0, 0], outputs
    distill(env, "evaluate", *common, "--mix", "etd")
    distill(env, "register", *common, "--mix", "etd")
    distill(env, "promote", *common)

    experiment = api(url, "experiments/get-by-name", experiment_name="distill")["experiment"]
    runs = api(url, "runs/search", {"experiment_ids": [experiment["experiment_id"]], "max_results": 100})["runs"]
    by_name = {r["info"]["run_name"]: r for r in runs}
    assert {"generate", "verify", "mix-etd", "mix-cot", "train-etd", "train-cot", "evaluate-etd",
            "promote"} <= set(by_name)
    assert all(r["info"]["status"] == "FINISHED" for r in runs)
    for mix in ("etd", "cot"):  # the two trainings at once: each its own params, metrics, datasets, model
        train = api(url, "runs/get", run_id=by_name[f"train-{mix}"]["info"]["run_id"])["run"]
        tags = {t["key"]: t["value"] for t in train["data"]["tags"]}
        assert tags["distill.mix"] == mix and tags["distill.stage"] == "train"
        assert any(m["key"] == "train/loss" for m in train["data"]["metrics"])
        datasets = train["inputs"]["dataset_inputs"]
        assert all(d["dataset"]["digest"] for d in datasets)
        assert {d["dataset"]["name"] for d in datasets} == {f"mix-{mix}-train", f"mix-{mix}-val"}
    models = api(url, "logged-models/search", {"experiment_ids": [experiment["experiment_id"]]})["models"]
    sources = {m["info"]["source_run_id"] for m in models}
    assert {by_name["train-etd"]["info"]["run_id"], by_name["train-cot"]["info"]["run_id"]} <= sources
    champion = api(url, "registered-models/alias", name="distill-student", alias="champion")["model_version"]
    assert champion["run_id"] == by_name["train-etd"]["info"]["run_id"]
    metrics = {m["key"] for m in api(url, "runs/get", run_id=by_name["evaluate-etd"]["info"]["run_id"])
               ["run"]["data"]["metrics"]}
    assert "gsm8k/eot/accuracy" in metrics

    # the runs are rows of PostgreSQL (not a file store beside it), and the artifacts went through the proxy
    import psycopg2

    state = json.loads((tracking_server["dir"] / "server.json").read_text())
    socket_dir = state["backend"].split("host=", 1)[1]
    with psycopg2.connect(host=socket_dir, user="mlflow", dbname="mlflow") as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM runs WHERE experiment_id = %s", (int(experiment["experiment_id"]),))
        assert cur.fetchone()[0] == len(runs)
        cur.execute("SELECT mv.run_id FROM registered_model_aliases a JOIN model_versions mv "
                    "ON mv.name = a.name AND mv.version = a.version WHERE a.alias = 'champion'")
        assert cur.fetchone()[0] == champion["run_id"]
    assert any((tracking_server["dir"] / "artifacts").rglob("MLmodel"))

    stopped = server_cli("stop", "--dir", str(tracking_server["dir"]))
    assert stopped.returncode == 0 and "postgresql" in stopped.stdout
    assert server_mod.health(url, timeout=2.0) is not None
    assert not (Path(socket_dir) / "postmaster.pid").exists()
    # and started again, everything is still there
    again = server_cli("start", "--dir", str(tracking_server["dir"]), "--port", str(tracking_server["port"]))
    assert again.returncode == 0, again.stderr
    assert api(url, "registered-models/alias", name="distill-student", alias="champion")["model_version"]["run_id"] \
        == champion["run_id"]
