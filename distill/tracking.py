"""The one module that talks to MLflow for logging. mlflow is imported lazily.

A stage receives a ``Tracker`` and never imports mlflow itself, so stages run in tests
against a throwaway SQLite store and the import cost is paid only when logging happens.

Writes runs, params, metrics, tags, datasets, tables and artifacts to the store at the tracking URI
it is given; reads back only the experiment of a run `mlflow run` started (distill.results and the
registry stages read the store).
"""
from __future__ import annotations

import os
import subprocess
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Mapping

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                              cwd=Path(__file__).resolve().parent).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


class Tracker:
    """A thin, explicit wrapper over the active MLflow run."""

    def __init__(self, uri: str = "sqlite:///mlflow.db", experiment: str = "distill"):
        import mlflow

        self.mlflow = mlflow
        self.uri = uri
        mlflow.set_tracking_uri(uri)
        launched = os.environ.get("MLFLOW_RUN_ID")
        if launched:
            # `mlflow run` created our run in the experiment it was given (Default unless
            # --experiment-name); log there, or MLflow refuses the mismatched run id.
            experiment_id = mlflow.get_run(launched).info.experiment_id
            mlflow.set_experiment(experiment_id=experiment_id)
            self.experiment = mlflow.get_experiment(experiment_id).name
            return
        if mlflow.get_experiment_by_name(experiment) is None:
            artifact_root = None
            if uri.startswith("sqlite:"):
                # keep artifacts beside the database, not wherever the process happens to start
                db = Path(uri.split(":///", 1)[-1])
                artifact_root = (db.resolve().parent / "mlruns").as_uri()
            mlflow.create_experiment(experiment, artifact_location=artifact_root)
        mlflow.set_experiment(experiment)
        self.experiment = experiment

    @contextmanager
    def run(self, name: str, tags: Mapping[str, str] | None = None, nested: bool = False,
            run_id: str | None = None) -> Iterator[Any]:
        """Start (or resume, with run_id) a run; nested runs hang under the active one."""
        if nested and self.mlflow.active_run() is None:
            nested = False
        if run_id is None and self.mlflow.active_run() is None and os.environ.get("MLFLOW_RUN_ID"):
            # launched by `mlflow run`: log into the run it created, and give it our name
            # pop it: a nested start_run would otherwise pick the same id up again
            run_id = os.environ.pop("MLFLOW_RUN_ID")
            tags = {"mlflow.runName": name, **(tags or {})}
        with self.mlflow.start_run(run_id=run_id, run_name=None if run_id else name, nested=nested,
                                   tags={"distill.commit": git_commit(), **(tags or {})}) as run:
            yield run

    @property
    def run_id(self) -> str | None:
        active = self.mlflow.active_run()
        return active.info.run_id if active else None

    def log_params(self, params: Mapping[str, Any]) -> None:
        clean = {k: ("" if v is None else str(v))[:6000] for k, v in params.items()}
        items = list(clean.items())
        for i in range(0, len(items), 100):
            self.mlflow.log_params(dict(items[i:i + 100]))

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        self.mlflow.log_metrics({_metric_name(k): float(v) for k, v in metrics.items()}, step=step)

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        self.mlflow.set_tags({k: str(v) for k, v in tags.items()})

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        self.mlflow.log_artifact(str(path), artifact_path)

    def log_dict(self, obj: Any, name: str) -> None:
        self.mlflow.log_dict(obj, name)

    def log_table(self, rows: list[dict] | Any, name: str) -> None:
        import pandas as pd

        frame = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(rows)
        with expected_warnings(INTEGER_SCHEMA_HINT):
            self.mlflow.log_table(frame, artifact_file=name)

    def log_dataset(self, rows: list[dict], name: str, source: str, context: str = "training") -> str:
        """Log rows as an MLflow dataset input of the active run; returns its digest."""
        import pandas as pd

        frame = pd.DataFrame(rows)
        with expected_warnings(DATASET_SOURCE_AMBIGUOUS, INTEGER_SCHEMA_HINT):
            dataset = self.mlflow.data.from_pandas(frame, source=source, name=name)
            self.mlflow.log_input(dataset, context=context)
        return dataset.digest


# Warnings MLflow 3.17 gives on every call of ours, each harmless here (they buried the progress
# lines of `make reproduce`). Silenced only around the calls that trigger them, by message:
DATASET_SOURCE_AMBIGUOUS = r"The specified dataset source can be interpreted in multiple ways"
"""A local path as a dataset source: MLflow's two local sources both claim it and it takes the first,
which is the one we mean (the file the rows came from)."""
INTEGER_SCHEMA_HINT = r"Hint: Inferred schema contains integer column"
"""Schema inference on a frame with int columns: a hint that a missing value would turn the column
into floats; our ids, counts and token lengths are never missing."""


@contextmanager
def expected_warnings(*messages: str) -> Iterator[None]:
    """Ignore UserWarnings whose text starts with one of ``messages`` (regexes) inside the block;
    every other warning still shows."""
    import warnings

    with warnings.catch_warnings():
        for message in messages:
            warnings.filterwarnings("ignore", message=message, category=UserWarning)
        yield


def _metric_name(key: str) -> str:
    # MLflow allows / . - _ and space; keep names stable like "gsm8k/eot/accuracy"
    return "".join(c if c.isalnum() or c in "/._- " else "_" for c in key)
