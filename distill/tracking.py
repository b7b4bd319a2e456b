"""The one module that talks to MLflow for logging. mlflow is imported lazily.

A stage receives a ``Tracker`` and never imports mlflow itself, so stages run in tests
against a throwaway SQLite store and the import cost is paid only when logging happens.

Writes runs, params, metrics, tags, datasets, tables and artifacts to the store at the tracking URI
it is given; reads back only the experiment of a run `mlflow run` started, the runs a killed
process left RUNNING (``Tracker.claim`` ends them as KILLED) and the unfinished child run a
resumed step continues (distill.results and the registry stages read the store).

A stage run without tracking gets the ``NullTracker`` (``tracker_or_null``): the same methods, doing
nothing, so a stage never asks whether it may log.

``writing(run_dir, tracker, stage)`` is how a stage starts: it takes the run folder's lock
(distill.files.run_folder_lock: one writer per folder) and then claims the folder's runs in the
store. ``registry_lock(uri)`` serialises registration and promotion against one store.
"""
from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

from distill.files import command_line, folder_lock, run_folder_lock

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
        self.run_dir: str | None = None  # set by claim(): every run is tagged with the folder it writes
        self._experiment_name = experiment
        self._experiment: str | None = None
        mlflow.set_tracking_uri(uri)
        # Nothing is read from or written to the store here: a command builds its tracker before it
        # takes the run folder's lock, and a second writer must be refused by that lock (exit 2, naming
        # the holder) without waiting on a database the holder may have locked mid-commit.

    @property
    def experiment(self) -> str:
        """The experiment this tracker logs to, created (and made MLflow's active one) on first use."""
        if self._experiment is None:
            self._experiment = self._open_experiment(self._experiment_name)
        return self._experiment

    def _open_experiment(self, experiment: str) -> str:
        mlflow = self.mlflow
        launched = os.environ.get("MLFLOW_RUN_ID")
        if launched:
            # `mlflow run` created our run in the experiment it was given (Default unless
            # --experiment-name); log there, or MLflow refuses the mismatched run id.
            experiment_id = mlflow.get_run(launched).info.experiment_id
            mlflow.set_experiment(experiment_id=experiment_id)
            return mlflow.get_experiment(experiment_id).name
        if mlflow.get_experiment_by_name(experiment) is None:
            artifact_root = None
            if self.uri.startswith("sqlite:"):
                # keep artifacts beside the database, not wherever the process happens to start
                db = Path(self.uri.split(":///", 1)[-1])
                artifact_root = (db.resolve().parent / "mlruns").as_uri()
            mlflow.create_experiment(experiment, artifact_location=artifact_root)
        mlflow.set_experiment(experiment)
        return experiment

    @contextmanager
    def run(self, name: str, tags: Mapping[str, str] | None = None, nested: bool = False,
            run_id: str | None = None) -> Iterator[Any]:
        """Start (or resume, with run_id) a run; nested runs hang under the active one. A nested run
        whose parent already has an unfinished child of the same name (left by a killed or failed
        invocation of that step) continues that child instead of starting a second one."""
        self.experiment  # the experiment exists and is MLflow's active one
        if nested and self.mlflow.active_run() is None:
            nested = False
        if nested and run_id is None:
            run_id = self._unfinished_child(name)
        if run_id is None and self.mlflow.active_run() is None and os.environ.get("MLFLOW_RUN_ID"):
            # launched by `mlflow run`: log into the run it created, and give it our name
            # pop it: a nested start_run would otherwise pick the same id up again
            run_id = os.environ.pop("MLFLOW_RUN_ID")
            tags = {"mlflow.runName": name, **(tags or {})}
        own = {"distill.pid": str(os.getpid()), "distill.host": socket.gethostname()}
        if self.run_dir:
            own["distill.run_dir"] = self.run_dir
        with self.mlflow.start_run(run_id=run_id, run_name=None if run_id else name, nested=nested,
                                   tags={"distill.commit": git_commit(), **own, **(tags or {})}) as run:
            if run_id:  # a resumed run: its pid is ours now (tags given to start_run apply to new runs only)
                self.mlflow.set_tags(own)
            yield run

    def _unfinished_child(self, name: str) -> str | None:
        parent = self.mlflow.active_run().info.run_id
        client = self.mlflow.MlflowClient()
        found = client.search_runs([self.mlflow.active_run().info.experiment_id],
                                   f"tags.mlflow.parentRunId = '{parent}' and attributes.run_name = '{name}' "
                                   "and attributes.status != 'FINISHED'", max_results=10,
                                   order_by=["attributes.start_time DESC"])
        if not found:
            return None
        say(f"tracking: continuing run {found[0].info.run_id} ({name}, {found[0].info.status}) of an earlier "
            "invocation instead of starting a second one")
        return found[0].info.run_id

    def claim(self, run_dir: str | Path, *, exclusive: bool = True) -> list[str]:
        """Tag this tracker's runs with ``run_dir`` and end as KILLED the runs of that folder that a
        process which is gone left RUNNING (``kill -9`` never lets MLflow end a run). Called with the
        folder's lock held: under the exclusive lock no other live process writes the folder, so every
        RUNNING run of it that is not this process's is an orphan; under a shard's shared lock only
        the runs whose process is gone are. Returns the ids it ended."""
        self.run_dir = str(Path(run_dir).resolve())
        client = self.mlflow.MlflowClient()
        experiment = self.mlflow.get_experiment_by_name(self.experiment)
        if experiment is None:
            return []
        where = self.run_dir.replace("'", "\\'")
        runs = client.search_runs([experiment.experiment_id],
                                  f"attributes.status = 'RUNNING' and tags.`distill.run_dir` = '{where}'",
                                  max_results=1000)
        ended = []
        host = socket.gethostname()
        for run in runs:
            tags = run.data.tags
            pid = int(tags.get("distill.pid", "0") or 0)
            if tags.get("distill.host") == host and (pid == os.getpid() or (not exclusive and _alive(pid))):
                continue
            if tags.get("distill.host") != host and not exclusive:
                continue
            client.set_terminated(run.info.run_id, status="KILLED")
            ended.append(run.info.run_id)
            say(f"tracking: run {run.info.run_id} ({run.info.run_name}) was left RUNNING by pid {pid or '?'}, "
                "which is gone; marked KILLED")
        return ended

    def status(self, run_id: str | None) -> str | None:
        """RUNNING, FINISHED, FAILED or KILLED; None for a run that is not in this store."""
        if not run_id:
            return None
        try:
            return self.mlflow.MlflowClient().get_run(run_id).info.status
        except Exception:  # noqa: BLE001 - a wiped or another store: the run is not here
            return None

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

    def log_model(self, log: Callable[[], None], artifact_path: str = "model") -> str:
        """Run ``log`` (which logs a model under ``artifact_path`` of the active run, e.g.
        distill.serving.logged_model.log_student), tag the run with the model's URI and return it."""
        log()
        uri = f"runs:/{self.run_id}/{artifact_path}"
        self.set_tags({"distill.model_uri": uri})
        return uri


class NullTracker:
    """The tracker of a stage run without tracking (tests, the other processes of a torchrun, an
    evaluation shard): ``Tracker``'s methods, each doing nothing, so a stage logs without asking
    whether it may. It has no run (``run_id`` None), no runs to claim or look up (``status`` None),
    and it logs no dataset or model (``log_dataset``, ``log_model``: None)."""

    uri = None
    experiment = None
    run_dir = None
    run_id = None

    @contextmanager
    def run(self, name: str, tags: Mapping[str, str] | None = None, nested: bool = False,
            run_id: str | None = None) -> Iterator[None]:
        yield None

    def claim(self, run_dir: str | Path, *, exclusive: bool = True) -> list[str]:
        return []

    def status(self, run_id: str | None) -> None:
        return None

    def log_params(self, params: Mapping[str, Any]) -> None:
        pass

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        pass

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        pass

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        pass

    def log_dict(self, obj: Any, name: str) -> None:
        pass

    def log_table(self, rows: list[dict] | Any, name: str) -> None:
        pass

    def log_dataset(self, rows: list[dict], name: str, source: str, context: str = "training") -> None:
        return None

    def log_model(self, log: Callable[[], None], artifact_path: str = "model") -> None:
        return None


def tracker_or_null(tracker: Tracker | NullTracker | None) -> Tracker | NullTracker:
    """The tracker a stage logs to: the one it was given, or the ``NullTracker`` for None (tracking off)."""
    return NullTracker() if tracker is None else tracker


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@contextmanager
def writing(run_dir: str | Path, tracker: "Tracker | NullTracker | None", stage: str, *,
            shard: Any = None) -> Iterator[None]:
    """A stage's hold on its run folder: the folder's lock (one writer; a shard shares it with the other
    shards), then the folder's runs claimed in the tracker's store (orphans of a killed process ended;
    nothing without tracking)."""
    with run_folder_lock(run_dir, command_line() or f"distill {stage}", shard=shard):
        tracker_or_null(tracker).claim(run_dir, exclusive=shard is None)
        yield


def registry_lock(uri: str, wait: float = 600.0):
    """One registrant or promoter at a time per tracking store: a lock file keyed by the store (a
    SQLite file by its absolute path) in ``$XDG_CACHE_HOME/distill/locks`` (default ~/.cache), so two
    registrations cannot both find no version and both add one, and two promotions cannot interleave
    their read of the champion and their move of the alias. Others wait up to ``wait`` seconds."""
    key = uri
    if uri.startswith("sqlite:///"):
        key = "sqlite:///" + str(Path(uri[len("sqlite:///"):]).resolve())
    folder = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "distill" / "locks"
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:  # a read-only home (some CI runners): every process of this machine looks here too
        import tempfile

        folder = Path(tempfile.gettempdir()) / "distill-locks"
    name = f"registry-{hashlib.sha256(key.encode()).hexdigest()[:16]}.lock"
    return folder_lock(folder, command_line() or "distill register", name=name, wait=wait)


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
