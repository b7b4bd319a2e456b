"""The `distill` CLI on the smoke preset inside a test folder, offline, with its own SQLite store:
what the pipeline tests (tests/test_causal_pipeline.py, tests/test_rl.py) drive the stages through."""
from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

import pytest
from click.testing import CliRunner

from distill.cli import main


@contextmanager
def smoke_cli(root: Path, data_dir: Path, *settings: str) -> Iterator[tuple[Callable, pytest.MonkeyPatch, str]]:
    """Yield ``(cli, monkeypatch, tracking_uri)``: ``cli(*args, code=0)`` runs one command with
    ``--preset smoke``, ``run_dir=<root>/run`` and every ``--set`` of ``settings``, and asserts its exit
    code. Inside, the working folder is ``root`` and the environment points at the store; at exit both
    are undone, and so is the store the stages set process-wide (register sets the registry URI)."""
    uri = f"sqlite:///{root / 'mlflow.db'}"
    env = {"MLFLOW_TRACKING_URI": uri, "MLFLOW_REGISTRY_URI": uri, "DISTILL_DATA_DIR": str(data_dir),
           "HF_HUB_OFFLINE": "1", "MLFLOW_DISABLE_TELEMETRY": "true"}
    common = ["--preset", "smoke", "--set", f"run_dir={root / 'run'}"]
    for setting in settings:
        common += ["--set", setting]
    runner = CliRunner()

    def cli(*args: str, code: int = 0):
        result = runner.invoke(main, [*args, *common], env=env, catch_exceptions=False)
        assert result.exit_code == code, result.output
        return result

    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        for key, value in env.items():
            mp.setenv(key, value)
        try:
            yield cli, mp, uri
        finally:
            import mlflow

            mlflow.set_tracking_uri(None)
            mlflow.set_registry_uri(None)
