"""The pyfunc student: input checks, answers per form and by vote, logging and loading the MLflow model."""
from __future__ import annotations

import json
import threading
from pathlib import Path

import pandas as pd
import pytest
from mlflow.exceptions import MlflowException

from distill.serving.inputs import default_thought, parse_requests
from distill.serving.logged_model import log_student
from distill.serving.model import DEFAULTS, OUTPUT_COLUMNS, StudentModel
from distill.thoughts import Extraction
from distill.tracking import Tracker
from serving_fakes import make_student, store  # noqa: F401 (a fixture)

FORMS = ["cot", "pot", "eot"]


def parse(records, forms=FORMS, default="eot"):
    return parse_requests(records, forms, default, max_chars=100, max_rows=4)


# --- input checks -----------------------------------------------------------------------------

def test_requests_default_to_the_given_thought_and_keep_a_named_one():
    frame = pd.DataFrame({"question": ["a?", "b?"], "thought": [None, "pot"]})
    assert [(r.question, r.thought) for r in parse(frame)] == [("a?", "eot"), ("b?", "pot")]
    assert parse({"question": "c?"})[0].thought == "eot"
    assert parse([{"question": "d?", "thought": "vote"}])[0].thought == "vote"


def test_the_scoring_servers_inputs_and_instances_formats_are_read_as_records_and_columns():
    import numpy as np

    # {"inputs": [{"question": "a?"}]} and {"instances": {"question": ["a?", "b?"]}} as MLflow parses them
    assert [r.question for r in parse([{"question": np.array("a?")}])] == ["a?"]
    assert [r.question for r in parse({"question": np.array(["a?", "b?"]), "thought": np.array(["cot", "pot"])})] \
        == ["a?", "b?"]


@pytest.mark.parametrize("records, message", [
    ([{"text": "a?"}], "missing column 'question' (got columns: text); expected 'question' and optionally 'thought'"),
    ([{"question": 7}], "row 0: 'question' must be a string, got int 7"),
    ([{"question": "ok"}, {"question": None}], "row 1: 'question' must be a string, got null"),
    ([{"question": "  "}], "row 0: 'question' is empty"),
    ([{"question": "x" * 101}], "row 0: 'question' has 101 characters; at most 100 are accepted"),
    ([{"question": "a?", "thought": "tot"}], "row 0: unknown thought 'tot'; valid: cot, pot, eot, vote"),
    ([{"question": "a?", "extra": 1}], "unknown column 'extra'; valid columns: question, thought; remove the others"),
    ([{"question": "a?", "b": 1, "c": 2}], "unknown column 'b' (and 1 more)"),
    ([{"question": "a?"}] * 5, "5 rows in one request; send at most 4"),
    ([], "no rows: the request holds no record"),
    (pd.DataFrame(), "no rows: the request holds no record"),
    ("a?", "input must be a DataFrame or JSON records"),
])
def test_bad_input_is_refused_with_a_message_that_says_what_is_wrong(records, message):
    with pytest.raises(MlflowException) as caught:
        parse(records)
    assert message in caught.value.message
    assert caught.value.error_code == "INVALID_PARAMETER_VALUE"


def test_vote_is_offered_only_to_students_of_several_forms():
    with pytest.raises(MlflowException, match="valid: eot "):
        parse([{"question": "a?", "thought": "vote"}], forms=["eot"])


def test_default_thought_is_the_cards_best_form_else_eot_else_the_first_form():
    assert default_thought({"forms": {"cot": {}, "pot": {}, "eot": {}}, "best_form": "pot"}) == "pot"
    assert default_thought({"forms": {"cot": {}, "pot": {}, "eot": {}}}) == "eot"
    assert default_thought({"forms": {"cot": {}, "pot": {}}, "best_form": "eot"}) == "cot"
    with pytest.raises(ValueError, match="lists no forms"):
        default_thought({"forms": {}})


# --- answering, with stub forms and a stub generator --------------------------------------------

class StubForm:
    version = 2

    def __init__(self, name):
        self.name = name

    def student_input(self, question):
        return f"{self.name}|{question}"

    def extract_many(self, completions, *, timeout=5.0, strict=False):
        out = []
        for text in completions:
            if text.startswith("loop"):
                out.append(Extraction(None, "timeout", f"ran longer than {timeout:g} s"))
            elif text.startswith("none"):
                out.append(Extraction(None, "no_answer", "no number"))
            else:
                out.append(Extraction(float(text.split()[-1]), "ok"))
        return out


def stub_model(outputs: dict[str, str], timeout: float = 0.5) -> StudentModel:
    """A StudentModel whose generator answers from ``outputs`` ("form|question" -> text)."""
    model = StudentModel()
    model.card = {"forms": {f: {"version": 2} for f in FORMS}}
    model.forms = {f: StubForm(f) for f in FORMS}
    model.default = "eot"
    model.settings = {**DEFAULTS, "timeout": timeout}
    model.generated = []
    model.start_batching()

    def generate(inputs):
        model.generated.append(list(inputs))
        return [outputs[i] for i in inputs]

    model.generate = generate
    return model


def test_each_row_gets_answer_thought_versions_reasoning_status_and_reason():
    model = stub_model({"eot|q1": "ans = 12", "pot|q2": "loop forever", "cot|q3": "none here"})
    frame = model.predict(None, pd.DataFrame({"question": ["q1", "q2", "q3"], "thought": [None, "pot", "cot"]}))
    assert list(frame.columns) == list(OUTPUT_COLUMNS)
    rows = frame.to_dict("records")
    assert rows[0] == {"answer": 12, "thought": "eot", "versions": "eot=2", "reasoning": "ans = 12",
                       "status": "ok", "reason": "", "device": "cpu"}
    assert rows[1]["answer"] is None and rows[1]["status"] == "timeout" and "0.5 s" in rows[1]["reason"]
    assert rows[2]["answer"] is None and rows[2]["status"] == "no_answer"


def test_answers_are_json_numbers_and_a_failed_row_is_null_not_nan():
    model = stub_model({"eot|q1": "ans = 2.5", "eot|q2": "none"})
    frame = model.predict(None, [{"question": "q1"}, {"question": "q2"}])
    assert json.loads(frame.to_json(orient="records"))[0]["answer"] == 2.5
    assert frame["answer"].tolist() == [2.5, None]


def test_vote_takes_the_majority_of_the_forms_that_answered():
    model = stub_model({"cot|q": "so 7", "pot|q": "ans = 7", "eot|q": "ans = 9"})
    row = model.predict(None, [{"question": "q", "thought": "vote"}]).to_dict("records")[0]
    assert row["answer"] == 7 and row["status"] == "ok" and row["reason"] == "2 of 3 forms agree (cot, pot)"
    assert row["versions"] == "cot=2,pot=2,eot=2"
    assert row["reasoning"] == "[cot]\nso 7\n\n[pot]\nans = 7\n\n[eot]\nans = 9"


def test_a_vote_that_only_one_form_answered_says_it_is_that_forms_answer_alone():
    model = stub_model({"cot|q": "so 2", "pot|q": "none", "eot|q": "none"})
    row = model.predict(None, [{"question": "q", "thought": "vote"}]).to_dict("records")[0]
    assert row["answer"] == 2 and row["status"] == "ok"
    assert row["reason"].startswith("only cot gave an answer (1 of 3 forms): no agreement, this is cot's answer alone")
    assert "pot: no_answer no number" in row["reason"] and "eot: no_answer" in row["reason"]


def test_a_vote_where_no_two_forms_agree_names_the_tie_rule():
    model = stub_model({"cot|q": "so 2", "pot|q": "ans = 3", "eot|q": "ans = 4"})
    row = model.predict(None, [{"question": "q", "thought": "vote"}]).to_dict("records")[0]
    assert row["answer"] == 4
    assert row["reason"] == ("no two forms agree (cot 2, pot 3, eot 4): eot's answer by the tie rule "
                             "(EoT, then PoT, then CoT), not a majority")


class WordTokenizer:
    """Counts a word as a token, as a stand-in for the student's tokenizer in the length check."""

    def __call__(self, text, add_special_tokens=True):
        return {"input_ids": text.split()}


def test_no_answer_from_an_output_that_ran_to_the_token_limit_says_the_student_never_stopped():
    model = stub_model({"eot|q": "none x x x x x x x", "eot|short": "none here"})
    model.tokenizer = WordTokenizer()
    model.settings["max_new_tokens"] = 8
    rows = model.predict(None, [{"question": "q"}, {"question": "short"}]).to_dict("records")
    assert rows[0]["status"] == "no_answer"
    assert rows[0]["reason"] == ("no number; the output ran to the max_new_tokens limit (8) without ending: "
                                 "this student has not learned to stop, so no complete answer was written")
    assert rows[1]["reason"] == "no number"  # a short output: the form's reason alone


def test_a_vote_where_no_form_answers_has_no_answer_and_names_each_failure():
    model = stub_model({"cot|q": "none", "pot|q": "loop", "eot|q": "none"})
    row = model.predict(None, [{"question": "q", "thought": "vote"}]).to_dict("records")[0]
    assert row["answer"] is None and row["status"] == "no_answer"
    assert "pot: timeout" in row["reason"] and "cot: no_answer" in row["reason"]


def test_every_question_and_form_is_generated_once_per_request_in_one_batch():
    model = stub_model({"eot|q": "ans = 1", "cot|q": "1", "pot|q": "ans = 1"})
    model.predict(None, [{"question": "q"}, {"question": "q", "thought": "vote"}, {"question": "q"}])
    assert len(model.generated) == 1 and sorted(model.generated[0]) == ["cot|q", "eot|q", "pot|q"]


def ask_while_busy(model, first: str, others: list[str]) -> dict:
    """predict(first) in one thread and, while it is generating, predict(q) for each of ``others`` in
    their own threads; returns {question: answers or the exception}."""
    plain = model.generate
    first_started, others_waiting = threading.Event(), threading.Event()

    def generate(inputs):
        if not first_started.is_set():
            first_started.set()
            assert others_waiting.wait(10)
        return plain(inputs)

    model.generate = generate
    results = {}

    def ask(q):
        try:
            results[q] = model.predict(None, [{"question": q}])["answer"].tolist()
        except Exception as exc:  # noqa: BLE001 - the test looks at it
            results[q] = exc

    threads = [threading.Thread(target=ask, args=(first,))]
    threads[0].start()
    assert first_started.wait(10)
    threads += [threading.Thread(target=ask, args=(q,)) for q in others]
    for t in threads[1:]:
        t.start()
    while len(model.batches.waiting) < len(others):
        threading.Event().wait(0.01)
    others_waiting.set()
    for t in threads:
        t.join(10)
    return results


def test_calls_that_arrive_while_the_model_is_busy_are_answered_together_in_one_batch():
    model = stub_model({f"eot|q{i}": f"ans = {i}" for i in range(4)})
    results = ask_while_busy(model, "q0", ["q1", "q2", "q3"])
    assert results == {"q0": [0], "q1": [1], "q2": [2], "q3": [3]}
    assert model.generated == [["eot|q0"], ["eot|q1", "eot|q2", "eot|q3"]]


def test_a_call_that_fails_inside_a_batch_does_not_fail_the_calls_batched_with_it():
    model = stub_model({f"eot|q{i}": f"ans = {i}" for i in range(3)})
    results = ask_while_busy(model, "q0", ["q1", "bad", "q2"])
    assert isinstance(results.pop("bad"), KeyError)
    assert results == {"q0": [0], "q1": [1], "q2": [2]}


def test_a_failure_while_answering_reaches_the_caller_and_the_model_keeps_working():
    model = stub_model({"eot|ok": "ans = 5"})
    with pytest.raises(KeyError):
        model.predict(None, [{"question": "unknown"}])
    assert model.predict(None, [{"question": "ok"}])["answer"].tolist() == [5]


# --- logging and loading the MLflow model -------------------------------------------------------

@pytest.fixture(scope="module")
def student(tmp_path_factory):
    return make_student(tmp_path_factory.mktemp("student") / "etd", steps=0)


def test_log_student_needs_an_active_run_and_a_complete_student(tmp_path, student, store):
    import mlflow

    with pytest.raises(ValueError, match="inside an active MLflow run"):
        log_student(student)
    with Tracker(store, "distill").run("train"):
        with pytest.raises(ValueError, match="must hold model/ .* and card.json"):
            log_student(tmp_path)
        with pytest.raises(ValueError, match="unknown serving setting 'timeot'"):
            log_student(student, timeot=1)


def test_logged_model_holds_the_student_folder_a_signature_an_example_and_its_settings(tmp_path, student, store):
    import mlflow

    with Tracker(store, "distill").run("train"):
        info = log_student(student, timeout=2.0, max_new_tokens=32)
    local = Path(mlflow.artifacts.download_artifacts(info.model_uri, dst_path=str(tmp_path / "dl")))
    files = {p.relative_to(local).as_posix() for p in local.rglob("*") if p.is_file()}
    assert {"artifacts/student/card.json", "artifacts/student/model/config.json",
            "artifacts/student/model/model.safetensors"} <= files
    assert not any("checkpoints" in f for f in files)
    # no input schema: MLflow's check would drop unknown columns before parse_requests could name them
    assert info.signature.inputs is None
    assert "answer" in info.signature.outputs.input_names()
    assert info.saved_input_example_info is not None
    mlmodel = (local / "MLmodel").read_text()
    assert "timeout: 2.0" in mlmodel and "default_thought: eot" in mlmodel


def test_the_loaded_model_names_the_columns_it_got_and_refuses_extra_ones(tmp_path, student, store):
    import mlflow

    with Tracker(store, "distill").run("train"):
        info = log_student(student, max_new_tokens=8)
    model = mlflow.pyfunc.load_model(info.model_uri)
    for frame, message in ((pd.DataFrame({"text": ["How many?"]}), "missing column 'question' (got columns: text)"),
                           (pd.DataFrame({"question": ["How many?"], "extra": [1]}), "unknown column 'extra'"),
                           (pd.DataFrame({"question": []}), "no rows")):
        with pytest.raises(MlflowException) as caught:
            model.predict(frame)
        assert message in caught.value.message


def test_a_student_whose_form_version_differs_from_the_code_is_refused_at_load(tmp_path, store):
    import mlflow

    folder = make_student(tmp_path / "old", steps=0)
    card = json.loads((folder / "card.json").read_text())
    card["forms"]["eot"]["version"] = 999
    (folder / "card.json").write_text(json.dumps(card))
    with Tracker(store, "distill").run("train"):
        info = log_student(folder, max_new_tokens=32)
    with pytest.raises(MlflowException, match="learned eot version 999"):
        mlflow.pyfunc.load_model(info.model_uri)


# --- batch size: what the device's memory holds, what the sandbox checks in time ----------------

def test_a_batch_holds_what_free_memory_allows_so_a_gpu_with_more_memory_batches_more():
    from transformers import Qwen2Config, T5Config

    from distill.serving.batching import MAX_ROWS_CAP, memory_rows, row_bytes

    t5_large = T5Config(vocab_size=32100, d_model=1024, d_kv=64, d_ff=4096, num_layers=24, num_decoder_layers=24,
                        num_heads=16)
    qwen = Qwen2Config(vocab_size=151936, hidden_size=896, num_hidden_layers=24, num_attention_heads=14,
                       num_key_value_heads=2)
    shape = {"max_source_len": 256, "max_new_tokens": 256}
    # CodeT5-large: encoder states + 2 x 24 layers x 1024 x (256 + 256) cache values, fp32, plus one step's logits
    assert row_bytes(t5_large, **shape) == (1024 * 256 + 2 * 24 * 1024 * 512 + 2 * 32100) * 4
    # Qwen2.5-0.5B keeps 2 key/value heads of 64: a far smaller cache per question
    assert row_bytes(qwen, **shape) == (2 * 24 * 128 * 512 + 2 * 151936) * 4
    gib = 1 << 30
    small, large = (memory_rows(t5_large, free, **shape) for free in (2 * gib, 40 * gib))
    assert 1 <= small < large <= MAX_ROWS_CAP
    assert small == int(2 * gib * 0.5) // row_bytes(t5_large, **shape)
    assert memory_rows(t5_large, 1, **shape) == 1  # never below one question
    assert memory_rows(qwen, 140 * gib, **shape) == MAX_ROWS_CAP
    assert memory_rows(t5_large, 40 * gib, dtype_bytes=2, **shape) > large  # half precision, twice the rows


def test_a_batch_is_no_larger_than_the_sandbox_checks_in_time_and_never_smaller_than_one_request():
    from transformers import T5Config

    from distill.serving.batching import SANDBOX_BUDGET_S, batch_rows, sandbox_rows

    assert sandbox_rows(5.0, 4) == int(SANDBOX_BUDGET_S * 4 / 5.0) == 32
    config = T5Config(d_model=64, d_kv=16, num_layers=2, num_heads=4, vocab_size=500)
    common = {"max_source_len": 256, "max_new_tokens": 256, "dtype_bytes": 4, "at_least": 16}
    assert batch_rows(config, "cpu", free_bytes=100 << 30, timeout=5.0, workers=4, **common) == 32
    assert batch_rows(config, "cpu", free_bytes=100 << 30, timeout=0.5, workers=4, **common) > 32
    assert batch_rows(config, "cpu", free_bytes=1 << 10, timeout=5.0, workers=4, **common) == 16


def test_a_served_student_reports_its_device_and_sizes_its_batch_from_its_settings(student):
    from types import SimpleNamespace

    from distill.serving.model import STUDENT_ARTIFACT

    def loaded(**settings):
        model = StudentModel()
        model.load_context(SimpleNamespace(artifacts={STUDENT_ARTIFACT: str(student)},
                                           model_config={**DEFAULTS, "max_new_tokens": 8, **settings}))
        return model

    auto = loaded()
    assert auto.device == "cpu" and auto.max_batch >= DEFAULTS["max_rows"]
    assert loaded(max_batch=40).max_batch == 40
    assert loaded(max_batch=1, max_rows=1).max_batch == 1
    rows = auto.predict(None, [{"question": "How many?", "thought": "cot"}]).to_dict("records")
    assert rows[0]["device"] == "cpu" and rows[0]["thought"] == "cot"
