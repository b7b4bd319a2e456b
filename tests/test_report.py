"""distill report: results.md and plots from an MLflow store built here by hand."""
from __future__ import annotations

import pytest
from click.testing import CliRunner

from distill.cli import main
from distill.config import load_config
from distill.files import read_jsonl
from distill.stages import report
from distill.tracking import Tracker


def _store(uri: str, with_parent: bool = True) -> dict:
    """A store holding what reproduce would log for two students (eot and etd)."""
    tracker = Tracker(uri, "distill")
    ids = {}

    def stage(name, stage_name, metrics, mix=None, history=None, params=None, tags=None, correct=None):
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
            for ts, table in (correct or {}).items():  # as the evaluate stage logs it
                tracker.log_dict({"problem_ids": [f"{ts}-{i}" for i in range(10)], "correct": table},
                                 f"eval/{ts}/correct.json")
            ids[name] = run.info.run_id

    def all_stages():
        stage("verify", "verify", {"verify/eot/kept": 30, "verify/eot/drop_rate": 0.25,
                                   "verify/eot/dropped/wrong_answer": 6, "verify/eot/dropped/timeout": 4,
                                   "verify/cot/kept": 40, "verify/cot/drop_rate": 0.0})
        for mix, loss in (("eot", 2.0), ("etd", 1.5)):
            stage(f"train-{mix}", "train", {"val/cot/accuracy": 0.25, "val/eot/accuracy": 0.125}, mix,
                  history={"train/loss": [(1, loss + 1), (2, loss)], "val/loss": [(1, loss + 0.5)]},
                  params={"train.lr": "0.001", "train.epochs": "1", "train.max_steps": "2",
                          "train.n_params": "1412352"})
        stage("mix-etd", "mix", {"mix/overlap/gsm8k": 2, "mix/overlap/svamp": 0, "mix/removed_overlap": 6}, "etd",
              params={"mix.val_fraction": "0.1", "mix.decontaminate": "True", "mix.overlap_n": "13", "mix.seed": "0"})
        stage("evaluate-eot", "evaluate", {"gsm8k/eot/accuracy": 0.1, "svamp/eot/accuracy": 0.2, "gsm8k/n": 10,
                                           "svamp/n": 10, "gsm8k/eot/ci_low": 0.0179, "gsm8k/eot/ci_high": 0.4042,
                                           "gsm8k/eot/failures/parse_error": 2},
              "eot", params={"evaluate.limit": "10"}, tags={"distill.selected_form": "eot"},
              correct={"gsm8k": {"eot": [1] + [0] * 9}})
        stage("evaluate-etd", "evaluate", {"gsm8k/cot/accuracy": 0.0, "gsm8k/eot/accuracy": 0.9,
                                           "gsm8k/vote/accuracy": 0.5, "gsm8k/selected/accuracy": 0.0,
                                           "gsm8k/selected/ci_low": 0.0, "gsm8k/selected/ci_high": 0.2775,
                                           "svamp/eot/accuracy": 0.0, "svamp/selected/accuracy": 0.0,
                                           "gsm8k/n": 10, "svamp/n": 10},
              "etd", params={"evaluate.limit": "10"}, tags={"distill.selected_form": "cot"},
              correct={"gsm8k": {"cot": [0] * 10, "eot": [1] * 9 + [0], "vote": [1] * 5 + [0] * 5,
                                 "selected": [0] * 10}})

    if with_parent:
        with tracker.run("reproduce-smoke", {"distill.stage": "reproduce", "distill.preset": "smoke",
                                             "distill.teacher": "gold", "distill.student": "tiny"}) as parent:
            all_stages()
            tracker.set_tags({f"distill.step.{name}.run_id": rid for name, rid in ids.items()})
            tracker.log_metrics({"baseline/gsm8k/accuracy": 0.0, "baseline/svamp/accuracy": 0.3,
                                 "baseline/gsm8k/n": 10, "baseline/svamp/n": 10,
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
    assert "| ETD (`etd`) | eot | 90.00 | 0.00 |" in text  # no interval logged: the number alone
    assert "| ETD (`etd`) | selected = cot — the form chosen on the validation split | 0.00 [0.0, 27.8] | 0.00 |" in text
    assert "| EoTD (`eot`) | eot | 10.00 [1.8, 40.4] | 20.00 |" in text
    assert "gsm8k (n=10)" in text and "n per test set: gsm8k 10, svamp 10" in text
    assert "| always 4 (training prior) | — | 0.00 [0.0, 27.8] | 30.00 [10.8, 60.3] |" in text
    assert "the first 10 problems of each test set" in text
    # nothing is the best of anything on a test set, except the oracle constant, labelled as one
    assert "best" not in text.lower().replace("best val/loss", "").replace(
        "best constant per test set, **oracle** (chosen on the test labels", "").replace(
        "the **oracle** row is the best single answer of each test set", "")
    assert "| CodeT5-Small (60M), paper | 1.10 | – | – | 18.87 | 33.58 |" in text
    assert "arXiv 2401.11864" in text and "METHOD.md" not in text
    assert ("| ours: `tiny` (1.4M params), preset `smoke` | 0.00 [0.0, 27.8] (always 4) | – | – | "
            "10.00 [1.8, 40.4] | 0.00 [0.0, 27.8] (cot) |") in text
    # paired tests: EoTD's eot (1/10) vs ETD's selected cot (0/10): 1 discordant -> p = 1;
    # ETD eot (9/10) vs cot (0/10): 9 discordant, all one way -> p = 2/2**9
    assert "| students | EoTD (eot) | ETD (cot) | +10.0 (1/0) p 1 |" in text
    assert "| ETD forms | cot | eot | -90.0 (0/9) p 0.0039 **sig** |" in text
    assert "| ETD forms | eot | vote | +40.0 (4/0) p 0.12 |" in text
    # choices of ours
    assert "training questions overlapping a test set, per test set: gsm8k 2, svamp 0; 6 training rows removed" in text
    assert "`mix.val_fraction=0.1` of the training *questions*" in text
    assert "kept samples that strict mode would have dropped, per form: not recorded" in text
    assert "lose tokens on the left" in text and "lowest validation loss" in text
    assert "here cot 25.00%, eot 12.50% (train run of ETD), selected cot." in text
    assert "| eot | 40 | 30 | 25.00 | 4 | 6 |" in text  # samples, kept, drop rate, timeout, wrong_answer
    assert "| EoTD | eot | 2 parse_error | 0 |" in text
    assert f"| train-etd | train-etd | `{ids['train-etd']}` | 12.0 |" in text
    assert "| ETD | 2 | not logged (1) | not logged | 1.5000 | 2.0000 | 0.001 | 2 | – |" in text
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


def test_report_on_an_empty_store_says_there_is_nothing_to_report_yet(tmp_path, mlflow_uri):
    summary = report.run(load_config("smoke"), output_dir=tmp_path)
    text = (tmp_path / "results.md").read_text()
    assert summary["files"] == ["results.md"]
    assert "Nothing to report yet" in text and "make reproduce" in text
    assert "evaluated on" not in text and "limit" not in text  # no claim about a protocol nothing ran under


def test_report_command_writes_to_the_output_dir_it_is_given(tmp_path, mlflow_uri):
    _store(mlflow_uri)
    result = CliRunner().invoke(main, ["report", "--preset", "smoke", "--output-dir", str(tmp_path / "r")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "r" / "results.md").exists()
    assert "results.md" in result.output


def test_the_choices_section_shows_what_the_gold_teacher_writes_per_form_from_its_verified_targets(
        tmp_path, mlflow_uri, data_dir, monkeypatch):
    from distill.stages import generate, verify
    from distill.thoughts import get_form

    monkeypatch.setenv("DISTILL_DATA_DIR", str(data_dir))
    cfg = load_config("smoke", ["teacher.name=gold", "data.limit_train=5"])
    tracker = Tracker(mlflow_uri, "distill")
    generate.run(cfg, tmp_path / "run", tracker)
    kept = {f: read_jsonl(tmp_path / "run" / "verified" / f"{f}.jsonl")
            for f in verify.run(cfg, tmp_path / "run", tracker)}
    report.run(cfg, output_dir=tmp_path / "out")
    text = (tmp_path / "out" / "results.md").read_text()
    choices = text[text.index("## Choices of ours"):text.index("## Verified data")]
    assert "### What the teacher (`gold`) writes per form" in choices
    assert f"cot {len(kept['cot'])} of {len(kept['cot'])}, pot 0 of {len(kept['pot'])}, eot 0 of {len(kept['eot'])}." in choices
    first = kept["eot"][0]  # the first question is kept in every form
    assert f"all for the question: {first['question']}" in choices
    for form in ("cot", "pot", "eot"):
        example = next(r for r in kept[form] if r["problem_id"] == first["problem_id"])["completion"]
        assert f"- **{form}**: {get_form(form).gold_derivation}" in choices
        assert "\n".join(f"  {line}" for line in example.splitlines()) in choices


def _answered(answers, golds, form):
    """Verdicts as a form's verifier gives them: correct within 1e-3, wrong, or no answer."""
    from distill.answers import answers_match
    from distill.thoughts import Verdict

    return [Verdict("no_answer", None, "", form, 1) if a is None else
            Verdict("correct" if answers_match(a, g) else "wrong_answer", a, "", form, 1)
            for a, g in zip(answers, golds)]


def _two_student_store(uri: str) -> dict:
    """A store as reproduce leaves it, with per-problem answers logged as the evaluate stage logs them:
    EoTD answers many different numbers (3 of 20 right); ETD answers 2 to 19 of 20 problems in every
    form (degenerate) and was chosen on a three-way validation tie at 0; it stopped at its time budget."""
    from distill.scoring import answers_of, correctness, metrics_of, profile_metrics, answer_profile, score_test_set

    tracker = Tracker(uri, "distill")
    golds = [2, 2, 2, 5, 7, 8, 10, 12, 3, 4, 4, 4, 6, 9, 11, 13, 14, 15, 16, 17]  # 4 is the most common (3 of 20)
    eot = [2, 2, 2] + [1000 + i for i in range(17)]
    etd = [2.0] * 19 + [None]
    ids = {}

    def evaluate(mix, forms, selected):
        verdicts = {form: _answered(answers, golds, form) for form, answers in forms.items()}
        scores = score_test_set(verdicts, golds, selected=selected)
        answers = answers_of(verdicts, golds, selected)
        metrics = {**metrics_of("gsm8k", scores),
                   **profile_metrics("gsm8k", {n: answer_profile(a, golds) for n, a in answers.items()})}
        with tracker.run(f"evaluate-{mix}", {"distill.stage": "evaluate", "distill.preset": "smoke", "distill.mix": mix,
                                             "distill.selected_form": selected}, nested=True) as run:
            tracker.log_metrics(metrics)
            tracker.log_params({"evaluate.limit": "20"})
            tracker.log_dict({"problem_ids": [f"gsm8k-{i}" for i in range(20)], "gold": golds, "answers": answers,
                              "correct": correctness(verdicts, golds, selected)}, "eval/gsm8k/correct.json")
            ids[f"evaluate-{mix}"] = run.info.run_id

    with tracker.run("reproduce-smoke", {"distill.stage": "reproduce", "distill.preset": "smoke"}) as parent:
        for mix, val, stopped in (("eot", {"val/eot/accuracy": 0.25}, "epochs"),
                                  ("etd", {f"val/{f}/accuracy": 0.0 for f in ("cot", "pot", "eot")}, "max_minutes")):
            with tracker.run(f"train-{mix}", {"distill.stage": "train", "distill.preset": "smoke", "distill.mix": mix,
                                              "distill.stopped": stopped}, nested=True) as run:
                tracker.log_metrics({**val, "train/steps_run": 30, "train/epochs_run": 0.3 if mix == "etd" else 2.0})
                for step, loss in ((10, 3.0), (20, 2.5), (30, 2.2)):
                    tracker.log_metrics({"train/loss": loss}, step=step)
                for step, loss in ((0, 4.0), (30, 2.4)):
                    tracker.log_metrics({"val/loss": loss}, step=step)
                tracker.log_params({"train.epochs": "10", "train.max_steps": "1200", "train.max_minutes": "1",
                                    "train.steps_per_epoch": "100", "train.lr": "0.001"})
                ids[f"train-{mix}"] = run.info.run_id
        evaluate("eot", {"eot": eot}, "eot")
        evaluate("etd", {"cot": etd, "pot": etd, "eot": [None] * 20}, "eot")
        tracker.set_tags({f"distill.step.{name}.run_id": rid for name, rid in ids.items()})
        tracker.log_metrics({"baseline/gsm8k/accuracy": 0.0, "baseline/gsm8k/n": 20})
        tracker.log_params({"baseline.answer": "1", "baseline.train_n": 40})
        ids["parent"] = parent.info.run_id
    return ids


def test_the_report_names_a_degenerate_student_its_constant_the_oracle_and_the_validation_tie(tmp_path, mlflow_uri):
    _two_student_store(mlflow_uri)
    summary = report.run(load_config("smoke"), output_dir=tmp_path)
    text = (tmp_path / "results.md").read_text()
    head = text.split("## Accuracy")[0]
    # the first lines: which student is degenerate, whose constant it is, and what its accuracy is
    assert "**1 of 2 students is degenerate**" in head
    assert ("**ETD** (eot) is **degenerate**: it gives no answer to 100.0% of the problems of gsm8k. Its accuracy "
            "is that constant's: gsm8k 0.00%") in head
    assert "**EoTD** (eot) is not degenerate: 18 distinct answers on gsm8k (the most common, 2, 15.0%)" in head
    # per student, form and test set: distinct answers, the most common one's share, its own constant
    assert "| ETD | cot | 2 distinct; 2 95.0%; own constant 15.00% **degenerate** |" in text
    assert "| EoTD | eot | 18 distinct; 2 15.0%; own constant 15.00% |" in text
    # the accuracy table: the degenerate cell says so; the training prior and the oracle beside it
    assert "| ETD (`etd`) | cot | 15.00 [5.2, 36.0] (degenerate: 2) |" in text
    assert "| EoTD (`eot`) | eot | 15.00 [5.2, 36.0] |" in text
    assert "| always 1 (training prior) | — | 0.00 [0.0, 16.1] |" in text
    assert ("| best constant per test set, **oracle** (chosen on the test labels: a bound for any constant "
            "predictor, not a model) | — | 15.00 [5.2, 36.0] (always 2) |") in text
    assert "| best constant per test set, **oracle**" in text.split("## Beside the paper")[1]
    # paired tests: a degenerate side is marked, never "sig"; each student against its own constant
    significance = text.split("## Which differences are significant")[1].split("\n## ")[0]
    assert "| ETD forms | cot | eot | +15.0 (3/0) p 0.25 *degenerate: both* |" in significance
    assert "| ETD forms | pot | eot |" in significance and "**sig**" not in significance.split("|---|")[1]
    assert "| student vs its own constant | EoTD (eot) | always 2 | +0.0 (0/0) p 1 |" in significance
    assert "| student vs its own constant | ETD (eot) | always no answer | +0.0 (0/0) p 1 (the student is degenerate) |" \
        in significance
    # the tie on the validation split is called a tie, with its rule
    assert ("selected eot by the tie rule: a three-way **tie** at 0.00% between eot, pot, cot, broken by the fixed "
            "order EoT, then PoT, then CoT") in text
    # what ran: steps, epochs of the configured ones, and what stopped it
    assert "| ETD | 30 | 0.30 (10) | max_minutes | 2.2000 | 2.4000 | 0.001 | 1200 | 1 |" in text
    assert summary["students"] == ["eot", "etd"]


def test_distill_compare_names_the_degenerate_student_first_and_shows_both_constants(tmp_path, mlflow_uri):
    _two_student_store(mlflow_uri)
    result = CliRunner().invoke(main, ["compare", "--preset", "smoke"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == ("DEGENERATE (one answer to more than 90% of every test set): ETD; its accuracy is its "
                        "constant's, not what was learned")
    assert "Downloading artifacts" not in result.output  # no progress bar per downloaded file
    etd = next(line for line in lines if line.startswith("ETD"))
    assert "0.0% [0.0, 16.1] DEGENERATE: no answer" in etd
    eot = next(line for line in lines if line.startswith("EoTD"))
    assert "DEGENERATE" not in eot
    assert any(line.startswith("always 1") and "training prior" in line for line in lines)
    assert any(line.startswith("oracle (bound)") and "15.0% [5.2, 36.0] always 2" in line for line in lines)


def test_when_every_student_is_degenerate_the_report_says_so_first():
    from distill.results import Results, RunView

    golds = [2, 3, 4, 5, 6, 7, 8, 9, 10, 2]
    steps, correct = {}, {}
    for mix, answer in (("cot", 2.0), ("pot", 32.0)):
        steps[f"evaluate-{mix}"] = RunView(f"r-{mix}", f"evaluate-{mix}", {"distill.selected_form": mix},
                                           {"evaluate.limit": "10"},
                                           {"gsm8k/n": 10, f"gsm8k/{mix}/accuracy": 0.2 if answer == 2 else 0.0})
        correct[mix] = {"gsm8k": {"problem_ids": list(range(10)), "gold": golds, "answers": {mix: [answer] * 10},
                                  "correct": {mix: [int(g == answer) for g in golds]}}}
    results = Results("smoke", "distill", None, steps, "distill-student", [], {}, correct)
    text = report.render(results)
    learned = text.split("## What the students learned\n\n")[1]
    assert learned.startswith("**Every student is degenerate**: each gives one answer to more than 90% of the "
                              "problems of every test set")
    assert "- **PoTD** (pot) is **degenerate**: it answers 32 to 100.0% of the problems of gsm8k." in learned
    # the section comes before any accuracy table
    assert text.index("## What the students learned") < text.index("## Accuracy")
