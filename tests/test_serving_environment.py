"""The registered champion runs outside the project's venv: from an environment MLflow builds from the
model alone (`mlflow models serve --env-manager virtualenv`), and from the Dockerfile that
`mlflow models generate-dockerfile` writes for it.

The champion is a tiny student registered and promoted in a throwaway store (tests/test_serve_http.py's
publish_student), overfitted to write one looping program, so its rows differ by form (a CoT answer,
a PoT timeout, an EoT answer, a vote).

Why virtualenv and not uv: MLflow's virtualenv manager installs the requirements with the new
environment's own pip, which reads this machine's pip configuration (its package index and the
folder holding the CPU wheel of torch); uv reads none of it and would take torch from PyPI, whose
Linux wheel is the CUDA build. The fresh environment gets torch's CPU build through a pip
constraint naming this venv's torch build (the host's choice; the model names only ``torch==2.13.0``,
see distill.serving.logged_model.pip_requirements): without that wheel pip fails at once instead
of downloading the CUDA build.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from test_serve_http import LOOP, post, publish_student, start_server, stop_server

CHAMPION = "models:/distill-student@champion"
RECORDS = [{"question": "Tom has 3 apples and buys 4 more. How many apples does he have?"},
           {"question": "A train goes 60 miles an hour for 3 hours. How far?", "thought": "pot"},
           {"question": "Sara reads 15 pages a day. How many days for 120 pages?", "thought": "eot"},
           {"question": "Jack had 50 dollars and spent 12. How much is left?", "thought": "vote"},
           {"question": "How many legs do 4 cats have?", "thought": "cot"}]


@pytest.fixture(scope="module")
def champion(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("champion")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        assert publish_student(tmp, uri, target=LOOP, best_form="cot")["decision"] == "promoted"
    return tmp, uri


def mlflow_cli(*args: str, uri: str, cwd: Path) -> subprocess.CompletedProcess:
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "MLFLOW_DISABLE_TELEMETRY": "true"}
    return subprocess.run([str(bin_dir / "mlflow"), *args], env=env, cwd=cwd, capture_output=True, text=True,
                          timeout=300)


def test_the_champions_requirements_carry_no_local_build_label_and_its_code_carries_the_package(champion, tmp_path):
    import mlflow

    _, uri = champion
    mlflow.set_tracking_uri(uri)
    try:
        local = Path(mlflow.artifacts.download_artifacts(CHAMPION, dst_path=str(tmp_path / "model")))
    finally:
        mlflow.set_tracking_uri(None)
    requirements = (local / "requirements.txt").read_text().split()
    assert requirements and not [r for r in requirements if "+" in r]
    torch_pin = next(r for r in requirements if r.startswith("torch=="))
    import torch

    assert torch_pin == "torch==" + torch.__version__.split("+")[0]
    assert {r.split("==")[0] for r in requirements} >= {"mlflow-skinny", "torch", "transformers", "pandas", "sympy"}
    assert "code: code" in (local / "MLmodel").read_text()
    assert (local / "code" / "distill" / "serving" / "model.py").is_file()
    assert (local / "code" / "distill" / "sandbox" / "worker.py").is_file()
    assert not list((local / "code").rglob("__pycache__"))
    meta = (local / "MLmodel").read_text()
    assert "mix: etd" in meta and "package: distill==" in meta and re.search(r"forms:\n\s+cot: 1", meta)


def test_the_generated_dockerfile_copies_the_model_with_its_package_and_installs_its_requirements(champion, tmp_path):
    _, uri = champion
    out = tmp_path / "docker"
    done = mlflow_cli("models", "generate-dockerfile", "-m", CHAMPION, "-d", str(out), uri=uri, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    dockerfile = (out / "Dockerfile").read_text()
    steps = [line for line in dockerfile.splitlines() if line.startswith(("COPY", "RUN", "ENTRYPOINT"))]
    copy = steps.index("COPY model_dir /opt/ml/model")
    install = next(i for i, s in enumerate(steps) if "_install_pyfunc_deps('/opt/ml/model'" in s)
    assert copy < install  # the model, package included, is in the image before its requirements install
    assert "serve" in steps[-1]
    # what COPY takes into the image: the package on the model's code path, and requirements.txt,
    # which _install_pyfunc_deps installs (python_env.yaml: -r requirements.txt)
    model_dir = out / "model_dir"
    assert (model_dir / "code" / "distill" / "serving" / "__init__.py").is_file()
    assert "code: code" in (model_dir / "MLmodel").read_text()
    assert "-r requirements.txt" in (model_dir / "python_env.yaml").read_text()
    assert "torch==" in (model_dir / "requirements.txt").read_text()


@pytest.mark.slow
def test_the_champion_served_from_a_fresh_virtualenv_answers_as_the_local_server_does(champion, tmp_path):
    import torch

    tmp, uri = champion
    answers = {}
    proc, url = start_server(uri, CHAMPION, tmp_path / "local.log")
    try:
        status, body = post(url, {"dataframe_records": RECORDS})
        assert status == 200, body
        answers["local"] = body["predictions"]
    finally:
        stop_server(proc)

    # the fresh environment: MLflow's own folder for it, nothing of this venv or checkout on its path
    env_root = tmp_path / "envs"
    constraint = tmp_path / "constraints.txt"
    constraint.write_text(f"torch=={torch.__version__}\n")  # this host's build (+cpu): never the CUDA wheel
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env |= {"MLFLOW_ENV_ROOT": str(env_root), "PIP_CONSTRAINT": str(constraint)}
    started = time.monotonic()
    proc, url = start_server(uri, CHAMPION, tmp_path / "virtualenv.log", env_manager="virtualenv", wait_s=540,
                             env=env, cwd=tmp_path)
    try:
        built_s = time.monotonic() - started
        status, body = post(url, {"dataframe_records": RECORDS})
        assert status == 200, body
        answers["virtualenv"] = body["predictions"]
    finally:
        stop_server(proc)
    print(f"virtualenv: built and serving in {built_s:.0f} s")

    assert answers["virtualenv"] == answers["local"]
    assert [r["status"] for r in answers["local"]] == ["ok", "timeout", "ok", "ok", "ok"]
    assert {r["device"] for r in answers["local"]} == {"cpu"}

    envs = [p for p in env_root.iterdir() if (p / "bin" / "python").exists()]
    assert len(envs) == 1
    probe = ("import importlib.util, json, torch; from importlib.metadata import distributions; "
             "print(json.dumps({'torch': torch.__version__, 'cuda': torch.version.cuda, "
             "'distill': importlib.util.find_spec('distill') is not None, "
             "'nvidia': sorted(d.metadata['Name'] for d in distributions() if d.metadata['Name'].startswith('nvidia'))}))")
    found = json.loads(subprocess.run([str(envs[0] / "bin" / "python"), "-c", probe], env=env, cwd=tmp_path,
                                      capture_output=True, text=True, timeout=120, check=True).stdout)
    # the CPU build of the version the model names, no CUDA libraries, and no distill installed: the
    # package that answered came with the model
    assert found == {"torch": torch.__version__, "cuda": None, "distill": False, "nvidia": []}
