"""Nothing lost, nothing mixed up: one writer per run folder, a stage skips only what it verified, a
kill leaves no trace (issue 21). Every test runs the real stages on the smoke preset (40 training
problems, a 3-step tiny student, 3 problems per test set) and asserts what is on disk and in MLflow
afterwards; the concurrency and kill rows use real `distill` processes.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pytest

from distill.config import load_config, replace
from distill.files import DataError, fingerprints, mismatch
from distill.stages import evaluate, generate, mix, register, train, verify
from distill.stages.train import student_files
from distill.tracking import Tracker

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def built(tmp_path_factory, data_dir):
    """generate -> verify -> mix etd -> train etd on the smoke preset, once: a run folder and its store."""
    root = tmp_path_factory.mktemp("built")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    saved = os.environ.get("MLFLOW_TRACKING_URI")
    os.environ["MLFLOW_TRACKING_URI"] = uri
    try:
        cfg = load_config("smoke", [f"run_dir={root / 'run'}", f"data.data_dir={data_dir}"])
        tracker = Tracker(uri, "distill")
        generate.run(cfg, cfg.run_path, tracker)
        verify.run(cfg, cfg.run_path, tracker)
        mix.run(cfg, cfg.run_path, tracker)
        train.run(cfg, cfg.run_path, tracker)
    finally:
        if saved is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = saved
    return root


class Copy:
    """A copy of the built run folder and store for one test."""

    def __init__(self, built: Path, tmp_path: Path, uri: str, data_dir: Path):
        shutil.copytree(built / "run", tmp_path / "run")
        shutil.copy(built / "mlflow.db", tmp_path / "mlflow.db")
        self.run_dir, self.uri, self.data_dir = tmp_path / "run", uri, data_dir
        self.cfg = load_config("smoke", [f"run_dir={self.run_dir}", f"data.data_dir={data_dir}"])
        self.tracker = Tracker(uri, "distill")
        self.client = mlflow.MlflowClient(uri, registry_uri=uri)
        self.student = self.run_dir / "students" / "etd"

    def runs(self, name: str | None = None) -> list:
        experiment = self.client.get_experiment_by_name("distill").experiment_id
        found = self.client.search_runs([experiment], max_results=1000)
        return [r for r in found if name is None or r.info.run_name == name]

    def cli(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "distill.cli", *args, "--preset", "smoke", "--set", f"run_dir={self.run_dir}"]

    @property
    def env(self) -> dict:
        return {**os.environ, "PYTHONPATH": str(REPO), "MLFLOW_TRACKING_URI": self.uri,
                "DISTILL_DATA_DIR": str(self.data_dir), "HF_HUB_OFFLINE": "1"}

    def start(self, *args: str) -> subprocess.Popen:
        return subprocess.Popen(self.cli(*args), env=self.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)

    def wait_for_holder(self, proc: subprocess.Popen, timeout: float = 180) -> None:
        """Until ``proc`` holds the run folder's lock (its line is in the lock file)."""
        lock = self.run_dir / ".distill.lock"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert proc.poll() is None, proc.communicate()
            try:
                if json.loads(lock.read_text() or "{}").get("pid") == proc.pid:
                    return
            except (OSError, json.JSONDecodeError):
                pass
            time.sleep(0.2)
        raise AssertionError("the process never took the run folder's lock")


@pytest.fixture
def copy(built, tmp_path, mlflow_uri, data_dir, monkeypatch):
    monkeypatch.setenv("DISTILL_DATA_DIR", str(data_dir))
    return Copy(built, tmp_path, mlflow_uri, data_dir)


def _answered(eval_dir: Path) -> dict[str, list[str]]:
    return {str(p.relative_to(eval_dir)): [json.loads(line)["problem_id"] for line in p.read_text().splitlines()]
            for p in sorted(eval_dir.rglob("*.jsonl"))}


# --- one writer -------------------------------------------------------------------------------------

def test_two_evaluations_at_once_one_runs_and_the_other_stops_naming_it(copy):
    first = copy.start("evaluate", "--mix", "etd")
    copy.wait_for_holder(first)
    os.kill(first.pid, signal.SIGSTOP)  # hold it inside its work while the second one starts
    try:
        second = subprocess.run(copy.cli("evaluate", "--mix", "etd"), env=copy.env, capture_output=True, text=True,
                                timeout=300)
    finally:
        os.kill(first.pid, signal.SIGCONT)
    assert second.returncode == 2
    assert f"is being written by pid {first.pid} (`distill evaluate --mix etd --preset smoke" in second.stderr
    assert len(second.stderr.strip().splitlines()) == 1
    out, err = first.communicate(timeout=600)
    assert first.returncode == 0, err
    answered = _answered(copy.run_dir / "eval" / "etd")
    assert len(answered) == 12  # 4 test sets x 3 forms, each problem answered once
    assert all(len(ids) == len(set(ids)) == 3 for ids in answered.values())
    runs = copy.runs("evaluate-etd")
    assert [r.info.status for r in runs] == ["FINISHED"]
    assert json.loads((copy.run_dir / "eval" / "etd" / "summary.json").read_text())["run_id"] == runs[0].info.run_id


LOCKED_STORE_HOLDER = """
import sqlite3, sys, time
from distill.files import run_folder_lock
with run_folder_lock(sys.argv[1], "distill reproduce --preset smoke"):
    db = sqlite3.connect(sys.argv[2], isolation_level=None)
    db.execute("BEGIN EXCLUSIVE")  # as a holder stopped in the middle of a commit leaves the store
    print("holding", flush=True)
    time.sleep(600)
"""


def test_a_second_writer_is_told_who_holds_the_folder_even_while_the_holder_has_the_store_locked(copy):
    holder = subprocess.Popen([sys.executable, "-c", LOCKED_STORE_HOLDER, str(copy.run_dir),
                               copy.uri[len("sqlite:///"):]], env=copy.env, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "holding"
        second = subprocess.run(copy.cli("reproduce", "--output-dir", str(copy.run_dir.parent / "reports")), env=copy.env, capture_output=True, text=True,
                                timeout=300)
    finally:
        holder.kill()
        holder.wait()
    assert second.returncode == 2, second.stderr[-2000:]
    assert f"is being written by pid {holder.pid} (`distill reproduce --preset smoke" in second.stderr


def test_two_registrations_of_one_student_on_one_store_make_one_version(copy):
    evaluate.run(copy.cfg, copy.run_dir, copy.tracker)
    other = copy.run_dir.parent / "run2"
    shutil.copytree(copy.run_dir, other)
    procs = [subprocess.Popen([sys.executable, "-m", "distill.cli", "register", "--mix", "etd", "--preset", "smoke",
                               "--set", f"run_dir={folder}"], env=copy.env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for folder in (copy.run_dir, other)]
    for proc in procs:
        assert proc.wait(timeout=300) == 0, proc.communicate()
    versions = copy.client.search_model_versions("name='distill-student'")
    assert [int(v.version) for v in versions] == [1]
    assert json.loads((copy.run_dir / "register" / "etd.json").read_text())["version"] == 1
    assert json.loads((other / "register" / "etd.json").read_text())["version"] == 1


# --- skip only what is verified ------------------------------------------------------------------------

def test_an_emptied_verified_file_is_refused_by_mix_and_verify_really_rebuilds_it(copy):
    pot = copy.run_dir / "verified" / "pot.jsonl"
    good, mix_files = pot.read_bytes(), mix.outputs(copy.run_dir / "mix" / "etd")
    mix_before = fingerprints(mix_files)
    pot.write_text("")
    with pytest.raises(DataError, match=r"pot.jsonl is empty, but its producer wrote .*`distill verify --preset smoke`"):
        mix.run(copy.cfg, copy.run_dir, copy.tracker)
    assert fingerprints(mix_files) == mix_before  # the good mix is not replaced
    summary = verify.run(copy.cfg, copy.run_dir, copy.tracker)
    assert pot.read_bytes() == good
    assert summary["pot"]["kept"] == len(good.splitlines()) > 0
    latest = max(copy.runs("verify"), key=lambda r: r.info.start_time)
    assert latest.data.metrics["verify/pot/kept"] == summary["pot"]["kept"]
    again = mix.run(copy.cfg, copy.run_dir, copy.tracker)
    assert fingerprints(mix_files) == mix_before and again["counts"]["pot"] > 0


@pytest.mark.parametrize("cut", ["at a line boundary", "mid-line"])
def test_a_cut_training_set_is_refused_by_train_and_mix_really_rebuilds_it(copy, cut):
    train_file = copy.run_dir / "mix" / "etd" / "train.jsonl"
    good = train_file.read_bytes()
    lines = good.splitlines(keepends=True)
    train_file.write_bytes(b"".join(lines[:66]) + (lines[66][:20] if cut == "mid-line" else b""))
    student_before = fingerprints(student_files(copy.student))
    runs_before = len(copy.runs("train-etd"))
    with pytest.raises(DataError, match=r"train.jsonl is .* but its producer wrote .*`distill mix --preset smoke --mix etd`"):
        train.run(copy.cfg, copy.run_dir, copy.tracker)
    assert fingerprints(student_files(copy.student)) == student_before  # the good student is not replaced
    assert len(copy.runs("train-etd")) == runs_before
    mix.run(copy.cfg, copy.run_dir, copy.tracker)
    assert train_file.read_bytes() == good
    assert train.run(copy.cfg, copy.run_dir, copy.tracker)["skipped"] is True


@pytest.mark.parametrize("damage", ["card.json broken", "weight file deleted"])
def test_a_damaged_student_is_refused_by_evaluate_and_train_really_rebuilds_it(copy, damage):
    old = json.loads((copy.student / "summary.json").read_text())
    if damage == "card.json broken":
        (copy.student / "card.json").write_text('{"mix": "etd", ')
    else:
        (copy.student / "model" / "model.safetensors").unlink()
    with pytest.raises(DataError, match=r"since `distill train` wrote the student; rebuild it with "
                                        r"`distill train --preset smoke --mix etd`"):
        evaluate.run(copy.cfg, copy.run_dir, copy.tracker)
    assert not (copy.run_dir / "eval").exists()
    rebuilt = train.run(copy.cfg, copy.run_dir, copy.tracker)
    assert "skipped" not in rebuilt and rebuilt["run_id"] != old["run_id"]
    assert mismatch(rebuilt["outputs"], student_files(copy.student)) is None
    assert json.loads((copy.student / "card.json").read_text())["train_run_id"] == rebuilt["run_id"]
    statuses = {r.info.run_id: r.info.status for r in copy.runs("train-etd")}
    assert statuses == {old["run_id"]: "FINISHED", rebuilt["run_id"]: "FINISHED"}
    assert train.run(copy.cfg, copy.run_dir, copy.tracker)["skipped"] is True


# --- a changed budget is a new training ----------------------------------------------------------------

def test_a_changed_budget_is_a_new_training_in_a_new_run_and_the_finished_run_is_untouched(copy):
    old = json.loads((copy.student / "summary.json").read_text())
    old_run = copy.client.get_run(old["run_id"])
    shorter = train.run(replace(copy.cfg, train={"max_steps": 2, "val_generate_limit": 0}), copy.run_dir, copy.tracker)
    assert shorter["run_id"] != old["run_id"] and shorter["steps"] == 2 and "skipped" not in shorter
    card = json.loads((copy.student / "card.json").read_text())
    assert (card["train_run_id"], card["training"]["max_steps"], card["training"]["steps"]) == (shorter["run_id"], 2, 2)
    after = copy.client.get_run(old["run_id"])
    assert after.info.status == "FINISHED" and after.info.end_time == old_run.info.end_time
    assert after.data.params["train.max_steps"] == "3"
    assert len(after.outputs.model_outputs) == len(old_run.outputs.model_outputs) == 1
    assert copy.client.get_run(shorter["run_id"]).data.params["train.max_steps"] == "2"
    longer = train.run(replace(copy.cfg, train={"max_steps": 5, "val_generate_limit": 0}), copy.run_dir, copy.tracker)
    assert longer["steps"] == 5 and longer["run_id"] not in (old["run_id"], shorter["run_id"])
    assert {r.info.status for r in copy.runs("train-etd")} == {"FINISHED"} and len(copy.runs("train-etd")) == 3


# --- no orphans ----------------------------------------------------------------------------------------

def _kill_when_running(copy, proc, run_name: str, timeout: float = 300) -> None:
    """kill -9 ``proc`` once its MLflow run ``run_name`` is RUNNING."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        if any(r.info.status == "RUNNING" for r in copy.runs(run_name)):
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            return
        time.sleep(0.2)
    raise AssertionError(f"{run_name} never started")


@pytest.mark.slow  # kills an evaluate process: ~10 s
def test_register_after_a_killed_evaluate_refuses_the_earlier_students_evaluation(copy):
    evaluate.run(copy.cfg, copy.run_dir, copy.tracker)
    first = register.run(copy.cfg, copy.run_dir, copy.tracker, log=lambda line: None)
    retrained = train.run(replace(copy.cfg, train={"lr": 1e-3, "val_generate_limit": 0}), copy.run_dir, copy.tracker)
    proc = copy.start("evaluate", "--mix", "etd")
    _kill_when_running(copy, proc, "evaluate-etd")
    with pytest.raises(DataError, match=r"evaluation of an earlier student .* distill evaluate --preset smoke --mix etd"):
        register.run(copy.cfg, copy.run_dir, copy.tracker, log=lambda line: None)
    assert len(copy.client.search_model_versions("name='distill-student'")) == 1
    evaluate.run(copy.cfg, copy.run_dir, copy.tracker)
    second = register.run(copy.cfg, copy.run_dir, copy.tracker, log=lambda line: None)
    assert (first["version"], second["version"]) == (1, 2)
    assert second["train_run_id"] == retrained["run_id"] != first["train_run_id"]
    assert "RUNNING" not in {r.info.status for r in copy.runs()}
    assert sorted(r.info.status for r in copy.runs("evaluate-etd")) == ["FINISHED", "FINISHED", "KILLED"]


@pytest.mark.slow  # kills a training process and resumes it: ~11 s
def test_a_training_killed_mid_epoch_resumes_from_a_timed_checkpoint_to_the_same_weights_in_the_same_run(copy, tmp_path):
    from safetensors.torch import load_file

    from distill.training import weights_digest

    # one thread in every process: the thread count changes float sums, and an earlier test in this
    # process may have left torch at another count than the killed subprocess starts with
    settings = ["train.max_steps=null", "train.epochs=2", "train.batch_size=16", "train.val_generate_limit=0",
                "train.threads=1", "train.checkpoint_minutes=0.00001"]  # a checkpoint after every step, by the clock
    budget = [arg for setting in settings for arg in ("--set", setting)]
    cfg = load_config("smoke", [f"run_dir={copy.run_dir}", *settings])
    shutil.rmtree(copy.student)
    reference_dir = tmp_path / "reference"
    shutil.copytree(copy.run_dir, reference_dir)
    # when checkpoints are written changes nothing trained: the reference saves at epoch ends only
    reference = train.run(load_config("smoke", [f"run_dir={reference_dir}", *settings[:-1]]), reference_dir, None)

    proc = copy.start("train", "--mix", "etd", *budget)
    checkpoints = copy.student / "checkpoints"
    deadline = time.monotonic() + 300
    while not any(int(p.name.split("-")[1]) >= 3 for p in checkpoints.glob("checkpoint-*")):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    killed = [r for r in copy.runs("train-etd") if r.info.status == "RUNNING"]
    assert len(killed) == 1
    last = max(int(p.name.split("-")[1]) for p in checkpoints.glob("checkpoint-*"))
    assert last % 7 != 0  # a checkpoint inside an epoch (7 steps each), written by the clock

    resumed = train.run(cfg, copy.run_dir, copy.tracker)
    assert resumed["run_id"] == killed[0].info.run_id and resumed["steps"] == reference["steps"] == 14
    digest = lambda folder: weights_digest(load_file(folder / "students" / "etd" / "model" / "model.safetensors"))
    assert digest(copy.run_dir) == digest(reference_dir)
    assert resumed["best_val_loss"] == pytest.approx(reference["best_val_loss"], rel=1e-6)
    assert copy.client.get_run(resumed["run_id"]).info.status == "FINISHED"
    assert "RUNNING" not in {r.info.status for r in copy.runs()}


@pytest.mark.slow
def test_two_reproduces_at_once_and_a_kill_inside_one_leave_one_tree_and_one_version_per_student(copy):
    first = copy.start("reproduce", "--output-dir", str(copy.run_dir.parent / "reports"))
    copy.wait_for_holder(first)
    os.kill(first.pid, signal.SIGSTOP)
    try:
        second = subprocess.run(copy.cli("reproduce", "--output-dir", str(copy.run_dir.parent / "reports2")),
                                env=copy.env, capture_output=True, text=True, timeout=300)
    finally:
        os.kill(first.pid, signal.SIGCONT)
    assert second.returncode == 2 and f"pid {first.pid} (`distill reproduce" in second.stderr
    _kill_when_running(copy, first, "train-eot", timeout=600)
    again = subprocess.run(copy.cli("reproduce", "--output-dir", str(copy.run_dir.parent / "reports")),
                           env=copy.env, capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "RUNNING" not in {r.info.status for r in copy.runs()}
    parents = [r for r in copy.runs() if r.info.run_name == "reproduce-smoke"]
    assert len(parents) == 1
    children = [r.info.run_name for r in copy.runs()
                if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    assert len(children) == len(set(children))  # no step has two child runs
    versions = copy.client.search_model_versions("name='distill-student'")
    assert sorted(v.tags["distill.mix"] for v in versions) == ["cot", "eot", "etd", "pot"]
