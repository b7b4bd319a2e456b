"""benchmarks/gpu_bundle.py: what an offline GPU machine whose Python has torch needs to run the benchmark and the
stages, decided from this environment's metadata; its run.sh checks the target before any GPU time is spent."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from benchmark_script import load_script

REPO = Path(__file__).resolve().parent.parent


def freeze() -> str:
    return "\n".join(f"{d.metadata['Name']}=={d.version}" for d in metadata.distributions())


def test_the_target_list_is_read_from_pip_freeze_pip_list_or_plain_names():
    bundle = load_script("gpu_bundle")
    assert bundle.target_packages("torch==2.11.0\nTransformers==5.17.0\n# a comment\nmylib @ file:///src/mylib\n") == {
        "torch": "2.11.0", "transformers": "5.17.0", "mylib": None}
    assert bundle.target_packages("Packages: absl-py, accelerate, Huggingface_Hub, zipp.") == {
        "absl-py": None, "accelerate": None, "huggingface-hub": None, "zipp": None}
    assert bundle.target_packages("Package    Version\n---------- -------\ntorch      2.11.0+cu130\n") == {
        "torch": "2.11.0+cu130"}


def test_the_closure_follows_the_projects_requirements_but_never_torch_and_mlflow_only_through_its_client():
    bundle = load_script("gpu_bundle")
    full, missing = bundle.closure(bundle.project_requirements(), lighter={})
    light, _ = bundle.closure(bundle.project_requirements())
    assert missing == []
    assert {"transformers", "huggingface-hub", "tokenizers", "accelerate", "peft", "trl", "mlflow", "mlflow-skinny",
            "sympy", "openai", "click"} <= set(light)
    assert "torch" not in light and "torch" not in full
    assert full["transformers"][0] == metadata.version("transformers")
    # the tracking server's dependencies come with the full mlflow only
    assert {"flask", "alembic", "sqlalchemy"} <= set(full)
    assert not {"flask", "alembic", "sqlalchemy"} & set(light)


def test_a_target_with_an_older_transformers_gets_ours_and_keeps_what_it_has_of_the_rest():
    bundle = load_script("gpu_bundle")
    needed, _ = bundle.closure(bundle.project_requirements())
    target = bundle.target_packages("transformers==5.17.0\nnumpy==2.3.0\npyyaml==6.0\nclick==8.1.0\n")
    carry = bundle.to_carry(needed, target)
    assert carry["transformers"] == metadata.version("transformers")  # pinned: carried although the target has one
    assert "numpy" not in carry and "pyyaml" not in carry and "click" not in carry  # the target's own
    assert carry["trl"] == metadata.version("trl")  # the target lacks it
    assert "mlflow" not in carry and carry["mlflow-skinny"] == metadata.version("mlflow-skinny")
    assert set(bundle.to_carry(needed, None)) == set(needed) - {"mlflow"}  # no list: everything it needs


def test_check_names_a_carried_distribution_that_python_does_not_import_at_its_version(tmp_path, capsys):
    bundle = load_script("gpu_bundle")
    manifest = tmp_path / "manifest.json"
    manifest.write_text(json.dumps({"transformers": metadata.version("transformers"),
                                    "lighter": {"mlflow": ["mlflow-skinny", "mlflow-tracing"]}}))
    assert bundle.check(manifest) == 0
    assert "every requirement met" in capsys.readouterr().out
    manifest.write_text(json.dumps({"transformers": "0.0.1"}))
    assert bundle.check(manifest) == 2
    assert f"transformers: {metadata.version('transformers')} is imported, not the carried 0.0.1" in \
        capsys.readouterr().err


def test_the_cli_with_mlflows_client_only_is_refused_unless_it_logs_to_a_server(tmp_path, monkeypatch, capsys):
    bundle = load_script("gpu_bundle")
    manifest = tmp_path / "manifest.json"
    manifest.write_text(json.dumps({"lighter": {"mlflow": ["mlflow-skinny", "mlflow-tracing"]}}))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert bundle.check(manifest, cli=True) == 2
    assert "export MLFLOW_TRACKING_URI=http://" in capsys.readouterr().err
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5001")
    assert bundle.check(manifest, cli=True) == 0
    assert bundle.check(manifest) == 0  # the benchmark itself logs nothing


def test_a_bundle_for_a_target_that_has_everything_runs_the_benchmark_through_its_run_sh(tmp_path, data_dir):
    """The whole path a GPU session takes, on this machine: the bundle (nothing to download: the target is this
    environment and nothing is pinned), its data, manifest and run.sh; run.sh checks and runs gpu.py."""
    target = tmp_path / "freeze.txt"
    target.write_text(freeze())
    out = tmp_path / "bundle"
    made = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu_bundle.py"), "--out", str(out),
                           "--target-packages", str(target), "--pin", "", "--data-dir", str(data_dir)],
                          cwd=REPO, capture_output=True, text=True)
    assert made.returncode == 0, made.stderr
    assert "0 wheels" in made.stdout and (out / "data" / "gsm8k" / "test.jsonl").exists()
    assert json.loads((out / "manifest.json").read_text()) == {"lighter": {"mlflow": ["mlflow-skinny",
                                                                                     "mlflow-tracing"]}}
    env = {**os.environ, "PYTHON": sys.executable, "DISTILL_SITE": str(tmp_path / "site")}
    env.pop("DISTILL_DATA_DIR", None)
    ran = subprocess.run(["bash", str(out / "run.sh"), "--tiny", "--presets", "codet5-small", "--steps", "3",
                          "--problems", "4", "--static-cache-only", "--out", str(tmp_path / "gpu.json")],
                         cwd=REPO, env=env, capture_output=True, text=True)
    assert ran.returncode == 0, ran.stdout[-2000:] + ran.stderr[-2000:]
    assert "gpu_bundle --check: every requirement met" in ran.stdout
    (result,) = json.loads((tmp_path / "gpu.json").read_text())
    assert result["complete"] is True and set(result["evals"]) == {"auto", "auto + static cache"}
    refused = subprocess.run(["bash", str(out / "run.sh"), "--cli", "generate", "--help"], cwd=REPO,
                             env={**env, "MLFLOW_TRACKING_URI": "sqlite:///x.db"}, capture_output=True, text=True)
    assert refused.returncode == 2 and "--full-mlflow" in refused.stderr
