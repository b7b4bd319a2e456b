"""The promote stage on registered versions made here (no models needed: promote reads tags only)."""
from __future__ import annotations

import json

import pytest

from distill.config import ConfigError, load_config, replace
from distill.stages import promote
from distill.tracking import Tracker
from serving_fakes import store  # noqa: F401 (a fixture)

@pytest.fixture
def env(tmp_path, store, request):
    import mlflow

    name = "student-" + str(abs(hash(request.node.name)))
    cfg = load_config(None, [f"promote.model_name={name}"])
    tracker = Tracker(cfg.tracking_uri, cfg.tracking.experiment)
    client = mlflow.MlflowClient(tracking_uri=store, registry_uri=store)
    client.create_registered_model(name)
    client.model_name = name
    return cfg, tmp_path / "runs", tracker, client


TEST_SETS = ("gsm8k", "asdiv", "svamp", "multiarith")


def add_version(client, mix: str, preset: str = "default", eval_limit: str = "all", coverage=TEST_SETS,
                **accuracies: float) -> int:
    """A version tagged as register tags it: protocol, the selected test accuracies and the given metrics."""
    tags = {"distill.mix": mix, "distill.preset": preset, "distill.eval_limit": eval_limit,
            **{f"{t}/selected/accuracy": "0.1" for t in coverage},
            **{k.replace("__", "/"): repr(v) for k, v in accuracies.items()}}
    return int(client.create_model_version(client.model_name, source="/nowhere/model", tags=tags).version)


def champion(client) -> int:
    return int(client.get_model_version_by_alias(client.model_name, "champion").version)


def quiet(_line):
    pass


def test_the_best_etd_version_becomes_champion_and_other_mixes_do_not_compete(env):
    cfg, run_dir, tracker, client = env
    add_version(client, "etd", val__selected__accuracy=0.20)
    best = add_version(client, "etd", val__selected__accuracy=0.30)
    add_version(client, "eot", val__selected__accuracy=0.90)
    result = promote.run(cfg, run_dir, tracker, log=quiet)
    assert result["decision"] == "promoted" and result["version"] == best == champion(client)
    assert "no champion yet" in result["reason"]
    assert [c["version"] for c in result["candidates"]] == [1, 2]
    assert json.loads((run_dir / "promote" / "decision.json").read_text())["version"] == best


def test_a_better_version_replaces_the_champion_and_a_worse_one_does_not(env):
    cfg, run_dir, tracker, client = env
    first = add_version(client, "etd", val__selected__accuracy=0.30)
    promote.run(cfg, run_dir, tracker, log=quiet)
    add_version(client, "etd", val__selected__accuracy=0.10)
    kept = promote.run(cfg, run_dir, tracker, log=quiet)
    assert kept["decision"] == "kept" and champion(client) == first
    assert "already champion" in kept["reason"]
    better = add_version(client, "etd", val__selected__accuracy=0.35)
    moved = promote.run(cfg, run_dir, tracker, log=quiet)
    assert moved["decision"] == "promoted" and champion(client) == better
    assert moved["previous"]["version"] == first and "beats champion version 1" in moved["reason"]


def test_an_equal_score_does_not_move_the_alias(env):
    cfg, run_dir, tracker, client = env
    add_version(client, "etd", val__selected__accuracy=0.30)
    client.set_registered_model_alias(client.model_name, "champion", "1")
    client.delete_model_version(client.model_name, "1")  # the champion is gone: the alias goes with it
    first = add_version(client, "etd", val__selected__accuracy=0.30)
    promote.run(cfg, run_dir, tracker, log=quiet)
    add_version(client, "etd", val__selected__accuracy=0.30)
    result = promote.run(cfg, run_dir, tracker, log=quiet)
    assert result["decision"] == "kept" and champion(client) == first


def test_a_champion_that_beats_every_candidate_is_kept_with_the_reason(env):
    cfg, run_dir, tracker, client = env
    old = add_version(client, "etd", val__selected__accuracy=0.50)
    client.set_registered_model_alias(client.model_name, "champion", str(old))
    client.set_model_version_tag(client.model_name, str(old), "distill.mix", "eot")  # no longer a candidate itself
    add_version(client, "etd", val__selected__accuracy=0.40)
    result = promote.run(cfg, run_dir, tracker, log=quiet)
    assert result["decision"] == "kept" and champion(client) == old
    assert "does not beat champion version 1 (0.5000)" in result["reason"]


def test_metric_and_mix_options_choose_what_competes(env):
    cfg, run_dir, tracker, client = env
    add_version(client, "etd", val__selected__accuracy=0.5, val__pot__accuracy=0.1)
    second = add_version(client, "etd", val__selected__accuracy=0.4, val__pot__accuracy=0.2)
    assert promote.run(replace(cfg, promote={"metric": "val/pot/accuracy"}), run_dir, tracker, log=quiet)["version"] == second
    cot = add_version(client, "cot", val__selected__accuracy=0.9)
    result = promote.run(replace(cfg, promote={"mix": "cot"}), run_dir, tracker, log=quiet)
    assert result["decision"] == "promoted" and champion(client) == cot


def test_no_candidate_means_no_alias_and_a_reason_that_says_what_to_do(env):
    cfg, run_dir, tracker, client = env
    add_version(client, "eot", val__selected__accuracy=0.3)
    add_version(client, "etd")  # registered without accuracies
    result = promote.run(cfg, run_dir, tracker, log=quiet)
    assert result["decision"] == "none" and result["version"] is None
    assert "register an evaluated etd student first" in result["reason"]
    assert "version 2: no val/selected/accuracy tag" in result["reason"]
    assert client.get_registered_model(client.model_name).aliases == {}


def test_the_decision_is_logged_in_an_mlflow_run_named_promote(env):
    import mlflow

    cfg, run_dir, tracker, client = env
    add_version(client, "etd", val__selected__accuracy=0.25)
    result = promote.run(cfg, run_dir, tracker, log=quiet)
    run = mlflow.get_run(result["run_id"])
    assert run.info.run_name == "promote"
    assert run.data.tags["distill.stage"] == "promote"
    assert run.data.tags["distill.promote.decision"] == "promoted"
    assert run.data.tags["distill.promote.reason"] == result["reason"]
    assert run.data.tags["distill.champion.version"] == "1"
    assert run.data.params["promote.metric"] == "val/selected/accuracy"
    assert run.data.metrics["promote/best"] == pytest.approx(0.25)


def test_cli_promote_prints_the_decision(env, monkeypatch):
    from click.testing import CliRunner

    from distill.cli import main

    cfg, run_dir, tracker, client = env
    monkeypatch.chdir(run_dir.parent)
    add_version(client, "etd", preset="tiny", eval_limit=str(load_config("tiny").evaluate.limit or "all"),
                val__selected__accuracy=0.25)
    result = CliRunner().invoke(main, ["promote", "--preset", "tiny", "--mix", "etd",
                                       "--set", f"promote.model_name={client.model_name}"])
    assert result.exit_code == 0, result.output
    assert "promoted: no champion yet" in result.output
    assert f"models:/{client.model_name}@champion -> version 1" in result.output


def test_cli_promote_refuses_a_test_metric_with_one_line(env, monkeypatch):
    from click.testing import CliRunner

    from distill.cli import main

    cfg, run_dir, tracker, client = env
    monkeypatch.chdir(run_dir.parent)
    add_version(client, "etd", preset="tiny", eval_limit="500", gsm8k__eot__accuracy=0.9, val__selected__accuracy=0.1)
    result = CliRunner().invoke(main, ["promote", "--preset", "tiny", "--set", "promote.metric=gsm8k/eot/accuracy",
                                       "--set", f"promote.model_name={client.model_name}"])
    assert result.exit_code == 2
    assert "error: promote.metric 'gsm8k/eot/accuracy' is not a validation accuracy" in result.output
    assert client.get_registered_model(client.model_name).aliases == {}


@pytest.mark.parametrize("metric", ["gsm8k/selected/accuracy", "val/loss", "svamp/vote/accuracy", "selected"])
def test_only_validation_accuracies_may_rank(env, metric):
    cfg, run_dir, tracker, client = env
    with pytest.raises(ConfigError, match="never on a test set"):
        promote.run(replace(cfg, promote={"metric": metric}), run_dir, tracker, log=quiet)


def test_a_smoke_run_never_outranks_a_full_run(env):
    """The smoke version has the higher validation accuracy, but it was evaluated under another
    preset and on a few problems: promoting under the full protocol ignores it, and promoting under
    the smoke protocol does not take the alias from the full-protocol champion."""
    cfg, run_dir, tracker, client = env
    full_cfg = load_config("tiny", [f"promote.model_name={client.model_name}"])
    smoke_cfg = load_config("smoke", [f"promote.model_name={client.model_name}"])
    limit = str(full_cfg.evaluate.limit or "all")
    full = add_version(client, "etd", preset="tiny", eval_limit=limit, val__selected__accuracy=0.30)
    smoke = add_version(client, "etd", preset="smoke", eval_limit=str(smoke_cfg.evaluate.limit or "all"),
                        coverage=smoke_cfg.data.test_sets, val__selected__accuracy=0.90)
    partial = add_version(client, "etd", preset="tiny", eval_limit=limit, coverage=("gsm8k",),
                          val__selected__accuracy=0.95)
    result = promote.run(full_cfg, run_dir, tracker, log=quiet)
    assert result["decision"] == "promoted" and champion(client) == full
    assert [c["version"] for c in result["candidates"]] == [full]
    why = {e["version"]: e["why"] for e in result["excluded"]}
    assert "distill.preset='smoke'" in why[smoke] and "evaluation incomplete" in why[partial]

    after_smoke = promote.run(smoke_cfg, run_dir, tracker, log=quiet)
    assert after_smoke["decision"] == "kept" and champion(client) == full
    assert "does not replace it" in after_smoke["reason"]


def test_a_larger_protocol_replaces_a_champion_evaluated_on_fewer_problems(env):
    cfg, run_dir, tracker, client = env
    small_cfg = load_config(None, [f"promote.model_name={client.model_name}", "evaluate.limit=50"])
    small = add_version(client, "etd", eval_limit="50", val__selected__accuracy=0.9)
    assert promote.run(small_cfg, run_dir, tracker, log=quiet)["version"] == small
    full = add_version(client, "etd", eval_limit="all", val__selected__accuracy=0.2)
    result = promote.run(cfg, run_dir, tracker, log=quiet)  # default config: no limit
    assert result["decision"] == "promoted" and champion(client) == full
    assert "smaller protocol" in result["reason"]


def test_a_promotion_waits_for_the_registry_lock_so_two_cannot_interleave(tmp_path, mlflow_uri):
    import os
    import subprocess
    import sys
    from pathlib import Path

    from distill.tracking import registry_lock

    repo = Path(__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONPATH": str(repo), "MLFLOW_TRACKING_URI": mlflow_uri}
    with registry_lock(mlflow_uri):  # another promotion in the middle of its read-decide-move
        proc = subprocess.Popen([sys.executable, "-m", "distill.cli", "promote", "--preset", "smoke", "--set",
                                 f"run_dir={tmp_path / 'run'}"], env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        line = next(line for line in proc.stderr if line.startswith("waiting for ") or proc.poll() is not None)
        assert line.startswith(f"waiting for pid {os.getpid()} (") and "registry-" in line
        assert proc.poll() is None and not (tmp_path / "run" / "promote" / "decision.json").exists()
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert out.startswith("none: ") and (tmp_path / "run" / "promote" / "decision.json").exists()
