"""Shared fixtures: the real data directory, a throwaway MLflow store, offline settings."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parent.parent


def _find_data_dir() -> Path | None:
    for candidate in (os.environ.get("DISTILL_DATA_DIR"), REPO / "data", REPO.parent / "shared" / "data"):
        if candidate and (Path(candidate) / "gsm8k" / "train.jsonl").exists():
            return Path(candidate).resolve()
    return None


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The real benchmark files (../shared/data here and in CI)."""
    found = _find_data_dir()
    if found is None:
        pytest.skip("benchmark data not found: set DISTILL_DATA_DIR (see README 'Data')")
    return found


@pytest.fixture
def mlflow_uri(tmp_path, monkeypatch) -> str:
    """A fresh SQLite tracking store with its artifacts under tmp_path."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    return uri
