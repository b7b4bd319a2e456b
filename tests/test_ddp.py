"""Training runs unchanged under torchrun: two CPU processes (gloo) end with the same weights."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

from tests.test_train import counting_rows, write_mix

WORKER = textwrap.dedent("""
    import json, os, sys
    from pathlib import Path
    from distill.config import load_config
    from distill.stages import train as T

    run_dir = Path(sys.argv[1])
    cfg = load_config("tiny", [f"run_dir={run_dir}", "train.max_minutes=null", "train.epochs=2",
                               "train.batch_size=8", "train.val_generate_limit=2", "train.grad_accum=2"])
    summary = T.run(cfg, run_dir, None, mix="cot")
    (run_dir / f"rank{os.environ['RANK']}.json").write_text(json.dumps(summary))
""")


def test_two_processes_train_with_ddp_and_end_with_identical_weights(tmp_path):
    write_mix(tmp_path, *counting_rows(64, 4))
    (tmp_path / "worker.py").write_text(WORKER)
    env = {**os.environ, "PYTHONPATH": os.getcwd(), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           str(tmp_path / "worker.py"), str(tmp_path)],
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0]["weights_sha256"] == ranks[1]["weights_sha256"]
    # 64 rows / 8 per batch = 8 batches, 4 per rank, 2 per step (accumulation): 2 steps an epoch
    assert ranks[0]["steps"] == ranks[1]["steps"] == 4
    assert "run_id" in ranks[0] and "run_id" not in ranks[1]  # only rank 0 finishes the files
    assert (tmp_path / "students" / "cot" / "model" / "model.safetensors").exists()
    card = json.loads((tmp_path / "students" / "cot" / "card.json").read_text())
    assert card["training"]["effective_batch_size"] == 32
