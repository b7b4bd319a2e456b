"""Served equals evaluated: the same validation problems asked of the served student (its logged MLflow
pyfunc model, what `mlflow models serve` loads) and answered by the evaluate stage (answer_all, on the
model the stage loads) get the same reasoning text, the same answer and the same status, for the same
student and form: a seq2seq and a causal tiny student, every form.

The problems are GSM8K training problems, where the mix stage draws the validation split from. The
students are the tiny presets' shapes with weights scaled up (an untrained tiny model at its
initial scale writes nothing but padding), so they write varied text: numbers, programs that do not
parse, equations that do not solve, as an untrained student does. The model is logged as the train
stage logs it (serving_settings of the config: the evaluate stage's decoding, the verify stage's
timeout), so a difference would be one in the code paths, not in the settings.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from distill.config import load_config
from distill.problems import load_problems
from distill.serving.logged_model import log_student, serving_settings
from distill.stages import evaluate
from distill.student import build_student, save_student
from distill.thoughts import form_names, get_form
from distill.tracking import Tracker
from serving_fakes import form_card, store  # noqa: F401 (a fixture)

N_PROBLEMS = 6


def tiny_student(folder: Path, kind: str, cfg, problems) -> Path:
    """A tiny student of ``kind`` (tiny or tiny-causal) in the train stage's layout, weights scaled x4."""
    import torch

    texts = [get_form(f).student_input(p.question) for p in problems for f in form_names()]
    texts += ["ans = 3 + 4\nx = 12 * 5\nprint(ans)\nThe answer is 42."] * 5
    model, tokenizer = build_student(kind, texts, train_cfg=cfg.train, seed=1)
    with torch.no_grad():
        for param in model.parameters():
            param.mul_(4.0)
    save_student(model, tokenizer, folder / "model")
    card = {"mix": "etd", "forms": {f: form_card(f) for f in form_names()}, "student": kind, "best_form": "eot",
            "data_digest": "d" * 16, "train_run_id": None, "preset": "smoke"}
    (folder / "card.json").write_text(json.dumps(card))
    return folder


@pytest.mark.parametrize("kind", ["tiny", "tiny-causal"])
def test_the_served_student_answers_validation_problems_as_the_evaluate_stage_does(kind, tmp_path, store, data_dir):
    import mlflow

    cfg = load_config("smoke", ["evaluate.max_new_tokens=40", "evaluate.batch_size=3"])
    problems = load_problems("gsm8k", "train", data_dir)[:N_PROBLEMS]
    folder = tiny_student(tmp_path / kind, kind, cfg, problems)

    with Tracker(store, "distill").run(f"train-{kind}"):
        info = log_student(folder, **serving_settings(cfg))  # as the train stage logs it
    served = mlflow.pyfunc.load_model(info.model_uri)
    rows = [row for f in form_names()  # one request per form (at most max_rows questions per request)
            for row in served.predict([{"question": p.question, "thought": f} for p in problems]).to_dict("records")]

    model, tokenizer = evaluate._load(folder / "model", cfg)
    digest = evaluate.student_digest(folder / "model", cfg)
    evaluated = {f: evaluate.answer_all(model, tokenizer, f, problems, tmp_path / "eval" / f"{f}.jsonl", digest, cfg)
                 for f in form_names()}

    statuses = set()
    for row, (form, i) in zip(rows, [(f, i) for f in form_names() for i in range(len(problems))]):
        record = evaluated[form][i]
        assert row["thought"] == form and row["reasoning"] == record["output"], (form, i)
        # the evaluate stage judges against the gold answer: correct / wrong_answer is served as ok
        status = "ok" if record["status"] in ("correct", "wrong_answer") else record["status"]
        assert row["status"] == status, (form, i)
        if status != "ok":  # a failure's reason; an answered one's is the comparison with the gold
            # serving may add why (an output that ran to max_new_tokens), after the verifier's own reason
            served, cause = row["reason"].partition("; the output ran to the max_new_tokens limit")[::2]
            assert served == record["reason"], (form, i)
            assert not cause or len(row["reasoning"]) > 0, (form, i)
        assert (row["answer"] is None) == (record["answer"] is None or status != "ok"), (form, i)
        if row["answer"] is not None:
            assert float(row["answer"]) == pytest.approx(record["answer"], rel=1e-12)
        statuses.add((form, row["status"]))
    # the comparison saw real text in every form, and rows that ended differently
    for form in form_names():
        assert any(r["reasoning"].strip() for r in rows if r["thought"] == form), form
    assert len({s for _, s in statuses}) >= 2, statuses
