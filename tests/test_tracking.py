"""distill.tracking: the runs a killed process left RUNNING are ended, an unfinished step's run is
continued (never a second one), and every run names the folder it writes."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import mlflow

from distill.tracking import Tracker, writing

REPO = Path(__file__).resolve().parent.parent

KILLED_WRITER = """
import os, sys
from distill.tracking import Tracker, writing
tracker = Tracker(sys.argv[1], "distill")
with writing(sys.argv[2], tracker, "evaluate"):
    with tracker.run("evaluate-etd", {"distill.stage": "evaluate"}) as run:
        print(run.info.run_id, flush=True)
        os.kill(os.getpid(), 9)
"""


def _killed_run(mlflow_uri, run_dir) -> str:
    """A run started by a process that then died of kill -9, as MLflow keeps it: RUNNING."""
    proc = subprocess.run([sys.executable, "-c", KILLED_WRITER, mlflow_uri, str(run_dir)], capture_output=True,
                          text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == -9
    return proc.stdout.strip()


def test_a_run_left_running_by_a_killed_process_is_ended_as_killed_by_the_next_writer(tmp_path, mlflow_uri):
    orphan = _killed_run(mlflow_uri, tmp_path / "run")
    client = mlflow.MlflowClient(mlflow_uri)
    assert client.get_run(orphan).info.status == "RUNNING"
    elsewhere = _killed_run(mlflow_uri, tmp_path / "other")  # another run folder's: not this writer's business
    tracker = Tracker(mlflow_uri, "distill")
    with writing(tmp_path / "run", tracker, "evaluate"):
        with tracker.run("evaluate-etd", {}) as run:
            live = run.info.run_id
            assert client.get_run(orphan).info.status == "KILLED"
            with writing(tmp_path / "run", tracker, "register"):  # nested: its own live run is not an orphan
                assert client.get_run(live).info.status == "RUNNING"
    assert client.get_run(elsewhere).info.status == "RUNNING"
    assert client.get_run(live).data.tags["distill.run_dir"] == str((tmp_path / "run").resolve())


def test_a_nested_step_continues_its_unfinished_run_instead_of_starting_a_second(tmp_path, mlflow_uri):
    tracker = Tracker(mlflow_uri, "distill")
    with tracker.run("reproduce-smoke", {}) as parent:
        try:
            with tracker.run("train-etd", {}, nested=True) as first:
                raise KeyboardInterrupt  # a step interrupted: its run ends KILLED
        except KeyboardInterrupt:
            pass
        with tracker.run("train-etd", {}, nested=True) as again:
            assert again.info.run_id == first.info.run_id
        with tracker.run("evaluate-etd", {}, nested=True) as other:
            assert other.info.run_id != first.info.run_id
    client = mlflow.MlflowClient(mlflow_uri)
    children = client.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert sorted(r.info.run_name for r in children) == ["evaluate-etd", "train-etd"]
    assert {r.info.status for r in children} == {"FINISHED"}


def test_the_null_tracker_has_every_method_of_the_tracker_with_the_same_parameters():
    import inspect

    from distill.tracking import NullTracker

    methods = {name for name, member in vars(Tracker).items() if callable(member) and not name.startswith("_")}
    assert methods >= {"run", "claim", "status", "log_params", "log_metrics", "set_tags", "log_artifact", "log_dict",
                       "log_table", "log_dataset", "log_model"}
    for name in sorted(methods):
        assert list(inspect.signature(getattr(NullTracker, name)).parameters) == \
            list(inspect.signature(getattr(Tracker, name)).parameters), name
    assert NullTracker.run_id is None and NullTracker.uri is None


def test_without_tracking_nothing_is_logged_and_the_model_logger_is_never_called(tmp_path, mlflow_uri):
    from distill.tracking import NullTracker, tracker_or_null

    tracker, called = tracker_or_null(None), []
    assert isinstance(tracker, NullTracker)
    with writing(tmp_path / "run", tracker, "train"):
        with tracker.run("train-etd", {"distill.stage": "train"}, nested=True, run_id="abc") as run:
            assert run is None and tracker.run_id is None and tracker.status("abc") is None
            tracker.log_params({"train.lr": 1e-3})
            tracker.log_metrics({"train/loss": 1.0}, step=1)
            assert tracker.log_dataset([{"a": 1}], "mix-etd-train", "train.jsonl") is None
            assert tracker.log_model(lambda: called.append("logged")) is None
    client = mlflow.MlflowClient(mlflow_uri)
    assert called == [] and client.search_runs([e.experiment_id for e in client.search_experiments()]) == []

    real = Tracker(mlflow_uri, "distill")
    assert tracker_or_null(real) is real
    with real.run("train-etd", {"distill.stage": "train"}):
        uri = real.log_model(lambda: called.append("logged"), "model")
        assert uri == f"runs:/{real.run_id}/model"
        run_id = real.run_id
    assert called == ["logged"]
    assert mlflow.MlflowClient(mlflow_uri).get_run(run_id).data.tags["distill.model_uri"] == uri


def test_a_tracker_opens_its_store_only_when_first_used_so_a_second_writer_meets_the_folder_lock_first(tmp_path):
    """A command builds its tracker before it takes the run folder's lock; a holder stopped mid-commit
    keeps the SQLite file locked, so a tracker that read the store on construction made the second
    writer fail on the database instead of being told who holds the folder."""
    db = tmp_path / "store" / "mlflow.db"
    db.parent.mkdir()
    tracker = Tracker(f"sqlite:///{db}", "distill")
    assert not db.exists()
    assert tracker.claim(tmp_path / "run") == []
    assert db.exists() and tracker.experiment == "distill"
    assert mlflow.MlflowClient(f"sqlite:///{db}").get_experiment_by_name("distill") is not None
