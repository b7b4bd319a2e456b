"""`distill train` unchanged under `accelerate launch`: two CPU processes (DDP over gloo) train one
student that matches a single-process run with the same effective batch, and only the main process
writes files and logs to MLflow."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_train import counting_rows, write_mix

ARGS = ["-m", "distill.cli", "train", "--preset", "tiny", "--mix", "cot", "--set", "train.student=tiny-causal",
        "--set", "train.max_minutes=null", "--set", "train.lr=5e-3", "--set", "train.max_steps=null", "--set", "train.epochs=2",
        "--set", "train.val_generate_limit=2", "--set", "train.dropout=0.0", "--set", "train.tiny_d_model=32",
        "--set", "train.tiny_heads=2", "--set", "train.tiny_d_ff=64", "--set", "train.tiny_layers=1",
        "--set", "train.tiny_vocab=400", "--set", "train.max_source_len=64", "--set", "train.max_target_len=32"]


def train(run_dir: Path, launcher: list[str], batch_size: int | str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.getcwd(), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
           "MLFLOW_TRACKING_URI": f"sqlite:///{run_dir / 'mlflow.db'}", "MLFLOW_DISABLE_TELEMETRY": "true"}
    proc = subprocess.run([*launcher, *ARGS, "--set", f"run_dir={run_dir}", "--set", f"train.batch_size={batch_size}",
                           "--set", "train.effective_batch_size=16"],
                          capture_output=True, text=True, timeout=600, env=env, cwd=run_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def free_port() -> int:
    """A port nothing listens on now, for the ranks' rendezvous (not the fixed 29500 another run may hold)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def val_loss(run_dir: Path, val: list[dict]) -> float:
    """The student's validation loss, computed here (not by the Trainer) the same way for both runs."""
    import torch
    from transformers import DataCollatorForSeq2Seq

    from distill.config import load_config
    from distill.student import load_student
    from distill.training import encode

    model, tokenizer = load_student(run_dir / "students" / "cot" / "model")
    tcfg = load_config("tiny", ["train.max_source_len=64", "train.max_target_len=32"]).train
    tokenizer.padding_side = "right"
    batch = DataCollatorForSeq2Seq(tokenizer, label_pad_token_id=-100)(encode(tokenizer, val, tcfg, causal=True))
    model.eval()
    with torch.no_grad():
        return float(model(**batch).loss)


@pytest.mark.slow  # two torchrun processes: ~30 s
@pytest.mark.timeout(900)
def test_two_processes_train_one_student_that_matches_a_single_process_run(tmp_path):
    train_rows, val = counting_rows(64, 8)
    single, double = tmp_path / "single", tmp_path / "double"
    for run_dir in (single, double):
        write_mix(run_dir, train_rows, val)
    # the same effective batch: 1 x 16 and 2 x 8 (auto: the two processes agree on 8 x 1 each)
    train(single, [sys.executable], 16)
    proc = train(double, [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
                          "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
                          "--main_process_port", str(free_port())], "auto")

    summaries = {name: json.loads((d / "students" / "cot" / "summary.json").read_text())
                 for name, d in (("single", single), ("double", double))}
    assert summaries["single"]["steps"] == summaries["double"]["steps"] == 8  # 64 rows / 16 per step x 2 epochs
    card = json.loads((double / "students" / "cot" / "card.json").read_text())
    assert card["training"]["effective_batch_size"] == 16
    assert (card["training"]["batch_size"], card["training"]["grad_accum"]) == (8, 1)
    assert "auto on the CPU" in card["training"]["batch_size_reason"]
    # only the main process printed the summary, wrote the student and logged one MLflow run
    assert proc.stdout.count('"run_id"') == 1
    assert len(list((double / "students").iterdir())) == 1
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{double / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("distill").experiment_id])
    assert [r.info.run_name for r in runs] == ["train-cot"]
    assert runs[0].data.params["train.world_size"] == "2"
    assert len(client.get_metric_history(runs[0].info.run_id, "train/loss")) == 8  # logged once per step

    # the data order differs (each process takes its share of the length-grouped batches), so the
    # weights differ a little; the learned loss must agree closely and be far below the untrained one
    one, two = val_loss(single, val), val_loss(double, val)
    initial = summaries["single"]["initial_val_loss"]
    assert one < 0.9 * initial, (one, two, initial)
    assert two == pytest.approx(one, rel=0.03), (one, two, initial)
