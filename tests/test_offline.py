"""No stage reaches the hub unless the config asks: the smoke stages (a seq2seq student trained and
evaluated, a causal LoRA student saved as an adapter, trained and evaluated) run with the hub
"online" (HF_HUB_OFFLINE unset) but pointed at a local HTTP server that records every request,
and the server must see none. The same server does see a request from a hub download, so the
test could fail; and with train.hub_kernels on, transformers is let fetch kernels again."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

STAGES = """
import sys
from distill.cli import main
common = ["--preset", "smoke", "--set", "run_dir=" + sys.argv[1]]
def cli(*args):
    main([*args, *common], standalone_mode=False)
cli("generate")
cli("verify")
cli("mix", "--mix", "etd")
cli("mix", "--mix", "eot")
cli("train", "--mix", "etd")
cli("evaluate", "--mix", "etd")
causal = ["--set", "train.student=tiny-causal", "--set", "train.lora_r=8", "--set", "train.lora_merge=false"]
cli("train", "--mix", "eot", *causal)
cli("evaluate", "--mix", "eot", *causal)
from transformers.integrations.hub_kernels import _kernels_enabled
print("hub kernels enabled:", _kernels_enabled())
"""


class Recorder(BaseHTTPRequestHandler):
    seen: list[str] = []

    def _record(self):
        self.seen.append(f"{self.command} {self.path}")
        self.send_response(404)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_GET = do_HEAD = do_POST = _record

    def log_message(self, *args):
        pass


@pytest.fixture
def hub(tmp_path):
    """A fake hub on 127.0.0.1 and an environment that points every HF library at it, online."""
    Recorder.seen = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    env = {k: v for k, v in os.environ.items()
           if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE", "USE_HUB_KERNELS")}
    env.update({"HF_ENDPOINT": f"http://127.0.0.1:{server.server_port}", "HF_HOME": str(tmp_path / "hf"),
                "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}", "MLFLOW_DISABLE_TELEMETRY": "true",
                "PYTHONPATH": str(REPO), "NO_PROXY": "127.0.0.1", "no_proxy": "127.0.0.1"})
    try:
        yield env, Recorder.seen
    finally:
        server.shutdown()


def python(code: str, env: dict, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code, *args], env=env, cwd=cwd, capture_output=True, text=True,
                          timeout=900)


@pytest.mark.slow  # every stage in a subprocess against the recording hub: ~20 s
def test_no_stage_reaches_the_hub_with_the_hub_online(hub, tmp_path, data_dir):
    env, seen = hub
    env["DISTILL_DATA_DIR"] = str(data_dir)
    done = python(STAGES, env, str(tmp_path / "run"), cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-4000:]
    # on CUDA transformers would fetch kernels-community/rotary for these students; the stages said no
    assert "hub kernels enabled: False" in done.stdout
    for mix in ("etd", "eot"):
        summary = json.loads((tmp_path / "run" / "eval" / mix / "summary.json").read_text())
        assert summary["test_sets"], mix
    assert seen == []


def test_the_recording_hub_sees_a_download_so_the_check_can_fail(hub, tmp_path):
    env, seen = hub
    code = ("from huggingface_hub import hf_hub_download\n"
            "try:\n    hf_hub_download('someone/model', 'config.json')\nexcept Exception:\n    pass\n")
    assert python(code, env, cwd=tmp_path).returncode == 0
    assert any("someone/model" in request for request in seen)


KERNELS = """
import sys
from distill.config import load_config
from distill.student import hold_hub_kernels
hold_hub_kernels(load_config("smoke", sys.argv[1:]).train.hub_kernels)
from transformers.integrations import hub_kernels
try:
    hub_kernels.lazy_load_kernel("nvfp4")
except Exception:
    pass
"""


def test_hub_kernels_are_fetched_only_when_the_config_turns_them_on(hub, tmp_path):
    env, seen = hub
    assert python(KERNELS, env, cwd=tmp_path).returncode == 0
    assert seen == []
    assert python(KERNELS, env, "train.hub_kernels=true", cwd=tmp_path).returncode == 0
    assert any("kernels-community" in request for request in seen)
