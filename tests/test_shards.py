"""Shards: the spec, the split, the files, and a sharded evaluation merged into the unsharded metrics."""
from __future__ import annotations

from pathlib import Path

import pytest

from distill.config import ConfigError, load_config
from distill.shards import Shard, parse_shard, pick, shard_files, shard_of
from distill.stages.evaluate import merge_evaluation
from test_evaluate import save_student


@pytest.mark.parametrize("spec", ["3/2", "2/2", "a/b", "1", "1/0", "-1/2", "1/2/3", "0.5/2"])
def test_a_bad_shard_spec_names_the_format(spec):
    with pytest.raises(ConfigError, match=r"i/n with 0 <= i < n"):
        parse_shard(spec)


def test_a_shard_spec_reads_as_zero_based_index_of_count():
    assert parse_shard("1/4") == Shard(1, 4) and parse_shard(" 0 / 1 ") == Shard(0, 1)
    assert parse_shard("") is None and parse_shard(None) is None


def test_the_shards_of_n_cover_every_key_exactly_once_and_do_not_depend_on_order():
    keys = [(f"gsm8k-train-{i}", form) for i in range(300) for form in ("cot", "pot", "eot")]
    for n in (1, 2, 3, 7):
        parts = [Shard(i, n).select(keys, key=lambda k: k) for i in range(n)]
        assert sorted(k for part in parts for k in part) == sorted(keys)
        assert all(len(part) > len(keys) / n / 2 for part in parts)  # a fair share each
    assert Shard(1, 3).select(list(reversed(keys)), key=lambda k: k) == list(reversed(Shard(1, 3).select(keys, key=lambda k: k)))
    assert shard_of(("a", "cot"), 5) == shard_of("a\x00cot", 5)


def test_shard_files_lists_the_unsharded_file_then_the_shards_in_order(tmp_path):
    for name in ("samples.jsonl", "samples.shard-1-of-2.jsonl", "samples.shard-0-of-2.jsonl", "samples_x.jsonl",
                 "other.shard-0-of-2.jsonl"):
        (tmp_path / name).write_text("")
    assert [p.name for p in shard_files(tmp_path / "samples.jsonl")] == [
        "samples.jsonl", "samples.shard-0-of-2.jsonl", "samples.shard-1-of-2.jsonl"]
    assert Shard(1, 2).path(tmp_path / "ledger.jsonl").name == "ledger.shard-1-of-2.jsonl"


def test_pick_gives_shard_i_the_endpoint_i_mod_their_number():
    urls = ("http://a/v1", "http://b/v1")
    assert [pick(urls, Shard(i, 3)) for i in range(3)] == ["http://a/v1", "http://b/v1", "http://a/v1"]
    assert pick(urls, None) == "http://a/v1" and pick("http://a/v1,http://b/v1", Shard(1, 2)) == "http://b/v1"
    assert pick(None, Shard(0, 2)) is None and pick("http://a/v1", Shard(1, 2)) == "http://a/v1"


def _cfg(tmp_path: Path, data_dir: Path, run: str):
    return load_config("smoke", [f"run_dir={tmp_path / run}", f"data.data_dir={data_dir}", "evaluate.limit=7",
                                 "evaluate.forms=[eot,pot]"])


def test_two_evaluate_shards_merged_log_the_metrics_of_one_unsharded_run(tmp_path, data_dir, monkeypatch,
                                                                          count_generations):
    import mlflow
    from click.testing import CliRunner

    from distill.cli import main
    from distill.stages import evaluate

    monkeypatch.setenv("DISTILL_DATA_DIR", str(data_dir))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)  # an earlier test in this process may have set another store
    student = save_student(tmp_path / "student", seed=3)
    whole = evaluate.run(_cfg(tmp_path, data_dir, "whole"), tmp_path / "whole", student=str(student))

    def cli(*args):
        result = CliRunner().invoke(main, ["evaluate", "--preset", "smoke", "--student", str(student),
                                           "--set", f"run_dir={tmp_path / 'sharded'}", "--set", "evaluate.limit=7",
                                           "--set", "evaluate.forms=eot,pot", *args])
        return result

    early = cli("--merge")
    assert early.exit_code == 2 and "no shard folders" in early.output
    for k in range(2):
        result = cli("--shard", f"{k}/2")
        assert result.exit_code == 0, result.output
    shard_dirs = sorted(p.name for p in (tmp_path / "sharded" / "eval" / "etd").iterdir() if p.name.startswith("shard"))
    assert shard_dirs == ["shard-0-of-2", "shard-1-of-2"]
    assert mlflow.search_runs(experiment_names=["distill"], output_format="list") == []  # a share is not a result
    decoded = count_generations
    decoded.clear()  # from here on: what the merge generates
    merged = cli("--merge")
    assert merged.exit_code == 0, merged.output
    assert decoded == []  # the merge generates nothing: every answer came from a shard
    assert "merged 2 shards" in merged.output
    run = mlflow.search_runs(experiment_names=["distill"], output_format="list")[0]
    assert run.info.run_name == "evaluate-etd"
    assert any("/failures/" in k for k in whole["metrics"])
    assert run.data.metrics == pytest.approx(whole["metrics"])
    for test_set in ("gsm8k", "multiarith"):
        for form in ("eot", "pot"):
            one = (tmp_path / "whole" / "eval" / "etd" / test_set / f"{form}.jsonl").read_text().splitlines()
            joined = (tmp_path / "sharded" / "eval" / "etd" / test_set / f"{form}.jsonl").read_text().splitlines()
            assert len(one) == 7 and sorted(one) == sorted(joined)  # the same answers, written in another order


def test_a_merge_with_a_shard_missing_names_the_command_that_fills_it(tmp_path, data_dir, monkeypatch):
    from distill.files import DataError
    from distill.stages import evaluate

    monkeypatch.setenv("DISTILL_DATA_DIR", str(data_dir))
    student = save_student(tmp_path / "student", seed=3)
    cfg = _cfg(tmp_path, data_dir, "sharded")
    evaluate.run(cfg, cfg.run_path, student=str(student), shard=parse_shard("1/3"))
    evaluate.run(cfg, cfg.run_path, student=str(student), shard=parse_shard("2/3"))
    with pytest.raises(DataError, match=r"shard 0/3 has not run: `distill evaluate --shard 0/3`"):
        merge_evaluation(cfg, cfg.run_path, str(student))


def test_sampled_shards_merge_into_the_samples_of_one_unsharded_run(tmp_path, data_dir, monkeypatch,
                                                                   count_generations):
    import dataclasses

    from distill.config import replace
    from distill.stages import evaluate

    monkeypatch.setenv("DISTILL_DATA_DIR", str(data_dir))
    student = save_student(tmp_path / "student", seed=3)
    whole_cfg = replace(_cfg(tmp_path, data_dir, "whole"), data={"test_sets": ("multiarith",)},
                        evaluate={"samples": 2, "limit": 5})
    whole = evaluate.run(whole_cfg, whole_cfg.run_path, student=str(student))
    cfg = dataclasses.replace(whole_cfg, run_dir=str(tmp_path / "sharded"))
    for k in range(2):  # other batches than the unsharded run's: the samples are the same draws
        evaluate.run(cfg, cfg.run_path, student=str(student), shard=parse_shard(f"{k}/2"))
    count_generations.clear()
    merge_evaluation(cfg, cfg.run_path, str(student))
    merged = evaluate.run(cfg, cfg.run_path, student=str(student))
    assert count_generations == []  # every greedy answer and every sample came from a shard
    assert any("maj_at_2" in k for k in merged["metrics"]) and merged["metrics"] == pytest.approx(whole["metrics"])
    for form in ("eot", "pot"):
        one = (whole_cfg.run_path / "eval" / "etd" / "multiarith" / f"{form}.samples.jsonl").read_text().splitlines()
        joined = (cfg.run_path / "eval" / "etd" / "multiarith" / f"{form}.samples.jsonl").read_text().splitlines()
        assert len(one) == 10 and sorted(one) == sorted(joined)
