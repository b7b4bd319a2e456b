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
