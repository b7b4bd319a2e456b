"""Adding a thought form is one module and one registry line (README "Adding a thought form").

This file is that module: it defines a throwaway form, "answer only" (the student writes the number
and nothing else), and the fixture adds its one line to the registry, ``distill.thoughts.FORMS``,
for the test alone. The form then goes through generate (the gold teacher), verify, mix, train (a
tiny student, a few steps) and evaluate like the paper's three, by the CLI people type.
"""
from __future__ import annotations

import json
from typing import Sequence

import pytest
from click.testing import CliRunner

from distill.answers import parse_number
from distill.thoughts import FORMS, Extraction, Form, form_names, get_form
from distill.thoughts.exemplars import EXEMPLARS


class AnswerOnly(Form):
    """The answer alone: no reasoning, only the number."""

    name = "answer"
    version = 1
    title = "Ans"
    rank = 4  # after EoT, PoT and CoT: it checks nothing but the number
    instruction = "The answer only:"
    system = "You solve grade-school math word problems. Reply with the final number only, without units."
    exemplars = tuple(f"{ex.answer:g}" for ex in EXEMPLARS)
    gold_derivation = "the gold answer alone"

    def from_gold(self, solution) -> str:
        return solution.answer

    def student_target(self, completion: str) -> str:
        return completion.strip()

    def extract_many(self, completions: Sequence[str | None], *, timeout: float = 5.0,
                     strict: bool = False) -> list[Extraction]:
        out = []
        for completion in completions:
            text = (completion or "").strip()
            value = parse_number(text)
            if not text:
                out.append(Extraction(None, "no_answer", "empty completion"))
            elif value is None:
                out.append(Extraction(None, "parse_error", f"{text[:40]!r} is not a number"))
            else:
                out.append(Extraction(value, "ok", ""))
        return out


FORM = AnswerOnly()


@pytest.fixture
def answer_form(monkeypatch):
    """The registry line ``"answer": "<this module>"``, removed again when the test ends."""
    monkeypatch.setitem(FORMS, "answer", __name__)
    yield FORM
    monkeypatch.undo()
    assert "answer" not in form_names()  # nothing leaks into the other tests


def test_a_registered_form_is_known_everywhere_the_registry_is_read(answer_form):
    from distill.scoring import ordered
    from distill.thoughts import combine_order, named_mixes, parse_mix

    assert get_form("answer") is answer_form and form_names() == ("cot", "pot", "eot", "answer")
    assert parse_mix("answer") == ("answer",) and parse_mix("eot+answer") == ("eot", "answer")
    assert named_mixes()["answer"] == ("answer",)
    assert combine_order() == ("eot", "pot", "cot", "answer") and ordered(["answer", "cot"]) == ["cot", "answer"]
    assert answer_form.dataset == "AnsD" and len(answer_form.teacher_messages("Q?")) == 2 + 2 * len(EXEMPLARS)
    assert [v.status for v in answer_form.verify_many(list(answer_form.exemplars), [e.answer for e in EXEMPLARS],
                                                      strict=True)] == ["correct"] * len(EXEMPLARS)


def test_a_new_form_goes_through_generate_verify_mix_train_and_evaluate(answer_form, tmp_path, data_dir,
                                                                        monkeypatch):
    from distill.cli import main

    run = tmp_path / "run"
    env = {"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}", "DISTILL_DATA_DIR": str(data_dir),
           "HF_HUB_OFFLINE": "1", "MLFLOW_DISABLE_TELEMETRY": "true"}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.chdir(tmp_path)
    common = ["--preset", "smoke", "--set", f"run_dir={run}", "--set", "generate.forms=answer"]

    def cli(*args):
        result = CliRunner().invoke(main, [*args, *common], env=env, catch_exceptions=False)
        assert result.exit_code == 0, result.output
        return result

    cli("generate")  # the gold teacher: the form's from_gold
    samples = [json.loads(line) for line in (run / "samples.jsonl").read_text().splitlines()]
    assert {s["form"] for s in samples} == {"answer"} and len(samples) == 40  # smoke: 40 training problems
    assert all(s["status"] == "ok" and s["completion"] == f"{s['gold']:g}" for s in samples)

    cli("verify")  # the form's own verifier
    summary = json.loads((run / "verified" / "summary.json").read_text())
    assert set(summary) == {"answer"} and summary["answer"]["kept"] == summary["answer"]["n"] == 40

    cli("mix", "--mix", "answer")
    rows = [json.loads(line) for line in (run / "mix" / "answer" / "train.jsonl").read_text().splitlines()]
    assert rows and {r["form"] for r in rows} == {"answer"}
    assert all(r["input"].endswith("\nThe answer only:\n") for r in rows)

    cli("train", "--mix", "answer")  # smoke: a tiny student, 3 steps
    card = json.loads((run / "students" / "answer" / "card.json").read_text())
    assert card["forms"] == {"answer": {"version": 1, "instruction": "The answer only:"}}
    assert card["best_form"] == "answer"

    cli("evaluate", "--mix", "answer")
    evaluated = json.loads((run / "eval" / "answer" / "summary.json").read_text())
    assert set(evaluated["test_sets"]) == {"gsm8k", "asdiv", "svamp", "multiarith"}
    for test_set, scores in evaluated["test_sets"].items():
        assert set(scores["forms"]) == {"answer"} and scores["forms"]["answer"]["n"] == 3  # smoke: 3 per set
        assert f"{test_set}/answer/accuracy" in evaluated["metrics"]

    import mlflow

    try:
        client = mlflow.MlflowClient(env["MLFLOW_TRACKING_URI"])
        runs = {r.info.run_name: r for r in client.search_runs([e.experiment_id for e in client.search_experiments()])}
        assert {"generate", "verify", "mix-answer", "train-answer", "evaluate-answer"} <= set(runs)
        assert [d.dataset.name for d in runs["verify"].inputs.dataset_inputs] == ["AnsD"]  # the form's dataset name
        assert "gsm8k/answer/accuracy" in runs["evaluate-answer"].data.metrics
    finally:
        mlflow.set_tracking_uri(None)  # the stages set this store process-wide; later tests use their own
