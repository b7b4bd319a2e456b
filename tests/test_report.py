"""distill report: results.md and plots from an MLflow store built here by hand."""
from __future__ import annotations

import pytest
from click.testing import CliRunner

from distill.cli import main
from distill.config import load_config
from distill.files import DataError
from distill.stages import report
from distill.tracking import Tracker


def _store(uri: str, with_parent: bool = True) -> dict:
    """A store holding what reproduce would log for two students (eot and etd)."""
    tracker = Tracker(uri, "distill")
    ids = {}

    def stage(name, stage_name, metrics, mix=None, history=None, params=None, tags=None):
        run_tags = {"distill.stage": stage_name, "distill.preset": "smoke", **(tags or {})}
        if mix:
            run_tags["distill.mix"] = mix
        with tracker.run(name, run_tags, nested=True) as run:
            tracker.log_metrics(metrics)
            for key, points in (history or {}).items():
                for step, value in points:
                    tracker.log_metrics({key: value}, step=step)
            if params:
                tracker.log_params(params)
            ids[name] = run.info.run_id

    def all_stages():
        stage("verify", "verify", {"verify/eot/kept": 30, "verify/eot/drop_rate": 0.25,
                                   "verify/eot/dropped/wrong_answer": 6, "verify/eot/dropped/timeout": 4,
                                   "verify/cot/kept": 40, "verify/cot/drop_rate": 0.0})
        for mix, loss in (("eot", 2.0), ("etd", 1.5)):
            stage(f"train-{mix}", "train", {}, mix,
                  history={"train/loss": [(1, loss + 1), (2, loss)], "val/loss": [(1, loss + 0.5)]},
                  params={"train.lr": "0.001", "train.epochs": "1", "train.max_steps": "2",
                          "train.n_params": "1412352"})
        stage("evaluate-eot", "evaluate", {"gsm8k/eot/accuracy": 0.1, "svamp/eot/accuracy": 0.2,
                                           "gsm8k/eot/failures/parse_error": 2, "gsm8k/best/accuracy": 0.1},
              "eot", params={"evaluate.limit": "3"})
        stage("evaluate-etd", "evaluate", {"gsm8k/cot/accuracy": 0.0, "gsm8k/eot/accuracy": 1 / 3,
                                           "gsm8k/vote/accuracy": 1 / 3, "gsm8k/best/accuracy": 1 / 3,
                                           "svamp/eot/accuracy": 0.0, "svamp/best/accuracy": 0.0},
              "etd", params={"evaluate.limit": "3"}, tags={"distill.best_form.gsm8k": "eot"})

    if with_parent:
        with tracker.run("reproduce-smoke", {"distill.stage": "reproduce", "distill.preset": "smoke",
                                             "distill.teacher": "gold", "distill.student": "tiny"}) as parent:
            all_stages()
            tracker.set_tags({f"distill.step.{name}.run_id": rid for name, rid in ids.items()})
            tracker.log_metrics({"baseline/gsm8k/accuracy": 0.0, "baseline/svamp/accuracy": 1 / 3,
                                 "baseline/gsm8k/n": 3, "baseline/svamp/n": 3,
                                 "wall_seconds/verify": 1.25, "wall_seconds/train-etd": 12.0})
            tracker.log_params({"baseline.answer": "4", "baseline.train_n": 40, "evaluate.limit": 3})
            ids["parent"] = parent.info.run_id
    else:
        all_stages()
    return ids


def test_report_writes_the_tables_and_plots_from_the_store(tmp_path, mlflow_uri):
    ids = _store(mlflow_uri)
    cfg = load_config("smoke")
    summary = report.run(cfg, output_dir=tmp_path / "out")
    text = (tmp_path / "out" / "results.md").read_text()
    assert summary["parent_run_id"] == ids["parent"]
    assert summary["students"] == ["eot", "etd"]
    assert f"reproduce run: `{ids['parent']}`" in text
    assert "| ETD (`etd`) | eot | 33.33 | 0.00 |" in text
    assert "| EoTD (`eot`) | eot | 10.00 | 20.00 |" in text
    assert "| constant answer 4 | — | 0.00 | 33.33 |" in text
    assert "the first 3 problems of each test set" in text
    assert "| CodeT5-Small (60M), paper | 1.10 | – | – | 18.87 | 33.58 |" in text
    assert "| ours: `tiny` (1.4M params), preset `smoke` | 0.00 (constant answer) | – | – | 10.00 | 33.33 (eot) |" in text
    assert "| eot | 40 | 30 | 25.00 | 4 | 6 |" in text  # samples, kept, drop rate, timeout, wrong_answer
    assert "| EoTD | eot | 2 parse_error | 0 |" in text
    assert f"| train-etd | train-etd | `{ids['train-etd']}` | 12.0 |" in text
    assert "| ETD | 2 | 1.5000 | 2.0000 |" in text
    for name in report.PLOTS:
        assert (tmp_path / "out" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_regenerating_the_report_from_the_same_store_gives_the_same_file(tmp_path, mlflow_uri):
    _store(mlflow_uri)
    cfg = load_config("smoke")
    report.run(cfg, output_dir=tmp_path / "a")
    report.run(cfg, output_dir=tmp_path / "b")
    assert (tmp_path / "a" / "results.md").read_bytes() == (tmp_path / "b" / "results.md").read_bytes()


def test_report_without_a_reproduce_run_uses_the_newest_run_of_each_stage(tmp_path, mlflow_uri, data_dir,
                                                                          monkeypatch):
    monkeypatch.setenv("DISTILL_DATA_DIR", str(data_dir))
    ids = _store(mlflow_uri, with_parent=False)
    text = report.run(load_config("smoke"), output_dir=tmp_path)["files"] and (tmp_path / "results.md").read_text()
    assert "no `reproduce` run in the store" in text
    assert f"`{ids['evaluate-etd']}`" in text
    assert "computed from the data files" in text


def test_report_on_an_empty_store_says_to_run_reproduce_first(tmp_path, mlflow_uri):
    with pytest.raises(DataError, match="make reproduce"):
        report.run(load_config("smoke"), output_dir=tmp_path)


def test_report_command_writes_to_the_output_dir_it_is_given(tmp_path, mlflow_uri):
    _store(mlflow_uri)
    result = CliRunner().invoke(main, ["report", "--preset", "smoke", "--output-dir", str(tmp_path / "r")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "r" / "results.md").exists()
    assert "results.md" in result.output
