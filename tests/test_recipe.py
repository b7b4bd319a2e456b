"""The README's stage-by-stage recipe, run as written (smoke preset, temp store and run_dir), ends in a
served answer.

The commands are read from the README block after ``<!-- recipe -->``, so the README cannot drift from
what is tested: each ``distill`` line runs as a subprocess with ``--preset tiny`` swapped for
``--preset smoke`` and ``--set run_dir=<tmp>`` added; ``make serve`` starts the server the way the
Makefile does (``mlflow models serve -m models:/distill-student@champion --env-manager local``, as
tests/test_serve_http.py starts it); the ``curl`` line's payload is posted to that server.
"""
from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from test_serve_http import start_server, stop_server

REPO = Path(__file__).resolve().parent.parent
STATUSES = {"ok", "no_answer", "parse_error", "exec_error", "timeout", "unsafe"}


def recipe() -> list[str]:
    """The shell lines of the README recipe block, continuation lines joined, comments dropped."""
    text = (REPO / "README.md").read_text()
    block = re.search(r"<!-- recipe -->\s*```sh\n(.*?)```", text, re.S)
    assert block, "README.md has no <!-- recipe --> block"
    lines, current = [], ""
    for raw in block.group(1).splitlines():
        current += raw.rstrip("\\").rstrip() + " " if raw.endswith("\\") else raw
        if raw.endswith("\\"):
            continue
        line = re.sub(r"\s+#.*$", "", current).strip() if not current.lstrip().startswith("curl") else current.strip()
        current = ""
        if line:
            lines.append(line)
    return lines


def test_the_readme_recipe_lists_every_stage_in_order_and_ends_in_serve_and_curl():
    stages = [shlex.split(line)[1] for line in recipe() if line.startswith("distill ")]
    assert stages == ["generate", "verify", "mix", "train", "evaluate", "register", "promote"]
    assert recipe()[-2:][0] == "make serve" and recipe()[-1].startswith("curl ")


@pytest.mark.slow
def test_the_readme_recipe_run_as_written_on_the_smoke_preset_ends_in_a_served_answer(tmp_path, data_dir):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "DISTILL_DATA_DIR": str(data_dir), "HF_HUB_OFFLINE": "1",
           "MLFLOW_DISABLE_TELEMETRY": "true", "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
    run_dir = tmp_path / "run"
    server = None
    answered = False
    try:
        for line in recipe():
            words = shlex.split(line)
            if words[0] in (".", "export"):
                continue  # the environment: set above, pointing at this test's store and data
            if words[0] == "distill":
                args = ["smoke" if w == "tiny" and prev == "--preset" else w for prev, w in zip([""] + words, words)]
                done = subprocess.run([str(bin_dir / "distill"), *args[1:], "--set", f"run_dir={run_dir}"],
                                      env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)
                assert done.returncode == 0, f"{line}\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
                if words[1] == "promote":
                    decision = json.loads((run_dir / "promote" / "decision.json").read_text())
                    assert decision["decision"] == "promoted" and decision["metric"].startswith("val/")
            elif words[:2] == ["make", "serve"]:
                makefile = (REPO / "Makefile").read_text()
                assert "models serve -m models:/distill-student@champion --env-manager local" in makefile
                server, url = start_server(uri, "models:/distill-student@champion", tmp_path / "server.log")
            elif words[0] == "curl":
                import requests

                assert server is not None, "the recipe asks before it serves"
                payload = json.loads(words[words.index("-d") + 1])
                path = re.sub(r"^https?://[^/]+", "", next(w for w in words if w.startswith("http")))
                response = requests.post(url + path, data=json.dumps(payload),
                                         headers={"Content-Type": "application/json"}, timeout=120)
                assert response.status_code == 200, response.text
                row = response.json()["predictions"][0]
                assert row["thought"] == payload["dataframe_records"][0]["thought"]
                assert row["status"] in STATUSES and isinstance(row["reasoning"], str)
                assert row["answer"] is None or isinstance(row["answer"], (int, float))
                answered = True
            else:
                pytest.fail(f"the recipe has a line this test does not know how to run: {line}")
    finally:
        if server is not None:
            stop_server(server)
    assert answered
