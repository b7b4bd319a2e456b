"""The student as an MLflow pyfunc model: question in, reasoning and a solver-checked answer out.

``log_student(student_dir)`` logs, inside the active MLflow run (the train run), a pyfunc model whose
artifacts hold ``student/`` = a copy of ``student_dir``'s ``model/`` (save_pretrained model and
tokenizer) and ``card.json``. Other parts rely on that layout (evaluate downloads it).

The logged model is a three-line script (MLflow's models-from-code, no pickle) that imports
``StudentModel`` from this package, so loading it needs ``distill`` importable: serve with
``--env-manager local`` from the project's venv (its ``bin`` on PATH, because the scoring server
calls ``uvicorn``)::

    mlflow models serve -m models:/distill-student@champion --env-manager local --host 127.0.0.1 --port 5005

Request (``/invocations``, JSON): ``{"dataframe_records": [{"question": "...", "thought": "eot"}]}``,
``thought`` optional: ``cot``, ``pot``, ``eot`` (one of the student's forms) or ``vote`` (every form,
majority answer; distill.scoring.vote_answer). The default is the card's ``best_form`` when it has
one, else ``eot`` when the student learned it (the paper's best single form for small students),
else its first form.

Response, one row per question: ``answer`` (number or null), ``thought`` (the form asked for),
``versions`` ("eot=1"; every form for vote), ``reasoning`` (the generated text; for vote each form's
text under a ``[form]`` header), ``status`` (``ok``, ``no_answer``, ``parse_error``, ``exec_error``,
``timeout``, ``unsafe``) and ``reason`` (why, for a failure).

The answer is taken by the same form module that verified the training data (``get_form(f)
.extract_many``): programs and equation systems run in the sandbox, outside the server's process,
with a timeout, so a looping program ends as a ``timeout`` row and never hangs the server. Model
output is never evaluated here.

Bad input raises ``BadRequest`` (an ``MlflowException(INVALID_PARAMETER_VALUE)``), which the scoring
server answers with HTTP 400 and just our message: what is wrong and how to fix it, no echo of the input. Calls that arrive while the model is busy are answered together in
one batch (``Student.start_batching``); benchmarks/serve.py measures what that buys.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import mlflow
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

STUDENT_ARTIFACT = "student"
"""Name of the pyfunc artifact (a folder holding model/ and card.json)."""
VOTE = "vote"
OUTPUT_COLUMNS = ("answer", "thought", "versions", "reasoning", "status", "reason")

DEFAULTS = {
    # GSM8K's longest question is about 1,000 characters; twice that still fits the 256-token input,
    # cut from the left so the instruction survives (distill/decoding.py)
    "max_question_chars": 2000,
    # questions per request, and per batch of requests answered together: with every program looping,
    # a batch takes max_rows * timeout / sandbox workers (2 to 4) seconds, 40 s at most on 2 cores
    # (the forms are extracted side by side), inside the scoring server's 60 s request limit
    # (MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT)
    "max_rows": 16,
    # seconds per program or equation system: the same limit as verify and evaluate
    # (VerifyConfig.timeout), so a served answer is the evaluated answer
    "timeout": 5.0,
    # the paper's decoding: greedy, 256 tokens in and out (METHOD.md)
    "max_new_tokens": 256,
    "max_source_len": 256,
    "batch_size": 16,
    # auto: the first GPU when there is one, else the CPU
    "device": "auto",
}
"""The model_config of a logged student; log_student(..., **overrides) changes them."""


@dataclass(frozen=True)
class Request:
    question: str
    thought: str


def default_thought(card: Mapping[str, Any]) -> str:
    """The form asked for when a request names none: card["best_form"], else eot if trained, else the first."""
    forms = list(card.get("forms") or {})
    best = card.get("best_form")
    if best in forms or (best == VOTE and len(forms) > 1):
        return best
    if "eot" in forms:
        return "eot"
    if not forms:
        raise ValueError("card.json lists no forms; the student cannot be asked for any thought")
    return forms[0]


class BadRequest(MlflowException):
    """A bad request: the scoring server answers HTTP 400 with exactly ``message``.

    MLflow 3.17's scoring server rewrites the message of an MlflowException raised in predict to
    "Failed to predict data '<the whole input table>'. Error: <message>" (pyfunc/scoring_server,
    ``invocations``): the sentence that says what is wrong and how to fix it came last, after every
    row of the request (17 of them for a request that was too long). The message here ignores that
    rewrite, so the answer starts with what is wrong and echoes no input.
    """

    def __init__(self, message: str):
        self._text = str(message)
        super().__init__(message, error_code=INVALID_PARAMETER_VALUE)

    @property
    def message(self) -> str:
        return self._text

    @message.setter
    def message(self, value: str) -> None:  # MlflowException.__init__ and the server's rewrite
        pass


def bad_input(message: str) -> MlflowException:
    """The error the scoring server turns into HTTP 400 with ``message`` (and nothing else)."""
    return BadRequest(message)


def parse_requests(model_input: Any, forms: Sequence[str], default: str, *, max_chars: int,
                   max_rows: int) -> list[Request]:
    """Validated requests from a DataFrame, a list of records or one record; raises bad_input naming the problem."""
    import pandas as pd

    if isinstance(model_input, Mapping):
        model_input = [model_input]
    if isinstance(model_input, list):
        if not all(isinstance(r, Mapping) for r in model_input):
            raise bad_input("input must be records (objects) with a 'question' field")
        model_input = pd.DataFrame(model_input)
    if not isinstance(model_input, pd.DataFrame):
        raise bad_input(f"input must be a DataFrame or JSON records with a 'question' field, "
                        f"got {type(model_input).__name__}")
    if "question" not in model_input.columns:  # first: MLflow's schema check drops unknown columns, rows and all
        names = [str(c)[:40] for c in model_input.columns]
        columns = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "") or "none"
        raise bad_input(f"missing column 'question' (got columns: {columns}); send records like "
                        '{"question": "...", "thought": "eot"}')
    if len(model_input) == 0:
        raise bad_input("no rows: send at least one record with a 'question'")
    if len(model_input) > max_rows:
        raise bad_input(f"{len(model_input)} rows in one request; send at most {max_rows} rows per request "
                        "(split the rest into further requests)")
    unknown = sorted(set(map(str, model_input.columns)) - {"question", "thought"})
    if unknown:
        raise bad_input(f"unknown column {unknown[0][:40]!r}; valid columns: question, thought")
    valid = list(forms) + ([VOTE] if len(forms) > 1 else [])
    thoughts = model_input["thought"] if "thought" in model_input.columns else [None] * len(model_input)
    requests = []
    for i, (question, thought) in enumerate(zip(model_input["question"], thoughts)):
        if not isinstance(question, str):
            raise bad_input(f"row {i}: 'question' must be a string, got {_describe(question)}; send the question as text")
        if not question.strip():
            raise bad_input(f"row {i}: 'question' is empty; send the text of the question")
        if len(question) > max_chars:
            raise bad_input(f"row {i}: 'question' has {len(question)} characters; at most {max_chars} are accepted, "
                            "shorten it")
        if _missing(thought):
            thought = default
        elif not isinstance(thought, str) or thought not in valid:
            raise bad_input(f"row {i}: unknown thought {_describe(thought)}; valid: {', '.join(valid)} "
                            f"(or leave it out for {default})")
        requests.append(Request(question, thought))
    return requests


def _missing(value: Any) -> bool:
    if value is None:
        return True
    try:
        return bool(value != value)  # NaN, which pandas puts in a missing optional column
    except (TypeError, ValueError):
        return False


def _describe(value: Any) -> str:
    if value is None or _missing(value):
        return "null"
    if isinstance(value, str):
        return repr(value[:40])
    return f"{type(value).__name__} {str(value)[:40]}"


class _Call:
    """One predict call's requests, waiting to be answered (maybe in another call's batch)."""

    def __init__(self, requests: list[Request]):
        self.requests = requests
        self.rows: list[dict] = []
        self.error: Exception | None = None
        self.done = False


class Student:
    """The logic of the pyfunc model: a student (seq2seq or causal), its tokenizer and its forms' extractors."""

    def load_context(self, context) -> None:
        # everything is in the artifacts: never let transformers or the hub try the network
        os.environ["HF_HUB_OFFLINE"] = "1"
        os.environ["TRANSFORMERS_OFFLINE"] = "1"
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        from distill.student import load_student
        from distill.thoughts import get_form

        root = Path(context.artifacts[STUDENT_ARTIFACT])
        self.card = json.loads((root / "card.json").read_text())
        self.settings = {**DEFAULTS, **(getattr(context, "model_config", None) or {})}
        # any kind of student (seq2seq, causal, a LoRA adapter): distill.student reads its folder
        self.model, self.tokenizer = load_student(root / "model", local_files_only=True)
        device = str(self.settings["device"])
        if device == "auto":
            import torch

            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.model.to(device).eval()
        self.forms = {name: get_form(name) for name in self.card.get("forms") or {}}
        for name, form in self.forms.items():
            trained = (self.card["forms"][name] or {}).get("version")
            if trained is not None and trained != form.version:
                # the card travels with the model; a changed form would parse output it never learned
                raise MlflowException(f"student learned {name} version {trained}, but this code has version "
                                      f"{form.version}; serve it with the distill version it was trained with")
        self.default = default_thought(self.card)
        self.start_batching()

    def start_batching(self) -> None:
        """The scoring server calls predict from several threads at once. One call at a time uses the
        model and the sandbox (``busy``); calls that arrive meanwhile wait in ``waiting`` and the next
        one to run answers them all in one batch, which decodes faster than one question at a time."""
        self.busy = threading.Lock()
        self.queue = threading.Lock()
        self.waiting: list[_Call] = []

    def predict(self, context, model_input, params=None):
        import pandas as pd

        requests = parse_requests(model_input, list(self.forms), self.default,
                                  max_chars=int(self.settings["max_question_chars"]),
                                  max_rows=int(self.settings["max_rows"]))
        call = _Call(requests)
        with self.queue:
            self.waiting.append(call)
        with self.busy:
            while not call.done:
                self._answer_waiting()
        if call.error is not None:
            raise call.error
        return pd.DataFrame({col: pd.Series([r[col] for r in call.rows], dtype=object) for col in OUTPUT_COLUMNS})

    def _answer_waiting(self) -> None:
        """Answer the oldest waiting calls, up to max_rows questions (at least one call), in one batch."""
        limit = int(self.settings["max_rows"])
        with self.queue:
            taken, rows = [], 0
            while self.waiting and (not taken or rows + len(self.waiting[0].requests) <= limit):
                taken.append(self.waiting.pop(0))
                rows += len(taken[-1].requests)
        try:
            answers = self.answer([r for call in taken for r in call.requests])
        except Exception as exc:  # noqa: BLE001 - raised in the caller's own thread
            if len(taken) == 1:
                taken[0].error, taken[0].done = exc, True
                return
            # one call's failure must not fail the others it was batched with: answer each alone
            for call in taken:
                try:
                    call.rows = self.answer(call.requests)
                except Exception as alone:  # noqa: BLE001
                    call.error = alone
                call.done = True
            return
        for call in taken:
            call.rows, answers = answers[:len(call.requests)], answers[len(call.requests):]
            call.done = True

    def generate(self, inputs: list[str]) -> list[str]:
        """Greedy outputs of the student for ``inputs`` (the paper's decoding, distill/decoding.py)."""
        from distill.decoding import decode

        return decode(self.model, self.tokenizer, inputs, batch_size=int(self.settings["batch_size"]),
                      max_new_tokens=int(self.settings["max_new_tokens"]),
                      max_source_len=int(self.settings["max_source_len"]))

    def answer(self, requests: Sequence[Request]) -> list[dict]:
        """One output row per request; every (question, form) pair is generated once, in one batch."""
        asked = {(r.question, f) for r in requests for f in (self.forms if r.thought == VOTE else [r.thought])}
        pairs = sorted(asked, key=lambda p: (p[1], p[0]))
        texts = self.generate([self.forms[f].student_input(q) for q, f in pairs])
        by_form: dict[str, list[int]] = {}
        for i, (_, f) in enumerate(pairs):
            by_form.setdefault(f, []).append(i)
        timeout = float(self.settings["timeout"])

        def extract(form: str) -> list:
            return self.forms[form].extract_many([texts[i] for i in by_form[form]], timeout=timeout)

        # each form's programs or systems run in the sandbox's own workers (one kind per form), so the
        # forms are extracted side by side: a vote whose program and system both time out waits once
        extractions: list = [None] * len(pairs)
        with ThreadPoolExecutor(max_workers=len(by_form) or 1) as pool:
            for f, found_f in zip(by_form, pool.map(extract, by_form)):
                for i, ext in zip(by_form[f], found_f):
                    extractions[i] = ext
        found = {pair: (texts[i], extractions[i]) for i, pair in enumerate(pairs)}

        return [self._single(r.thought, *found[(r.question, r.thought)]) if r.thought != VOTE
                else self._vote({f: found[(r.question, f)] for f in self.forms}) for r in requests]

    def _single(self, form: str, text: str, ext) -> dict:
        return {"answer": _number(ext.answer) if ext.status == "ok" else None, "thought": form,
                "versions": f"{form}={self.forms[form].version}", "reasoning": text,
                "status": ext.status, "reason": ext.reason}

    def _vote(self, by_form: Mapping[str, tuple]) -> dict:
        """The majority answer over the forms (distill.scoring.vote_answer: ties go to EoT, then PoT)."""
        from distill.scoring import vote_answer
        from distill.thoughts import Verdict

        # vote_answer counts verdicts that answered; with no gold here an extracted answer is recorded
        # as "wrong_answer" (answered, unjudged) only to reuse the project's one voting rule
        verdicts = {f: Verdict("wrong_answer" if ext.status == "ok" else ext.status, ext.answer, "", f,
                               self.forms[f].version) for f, (_, ext) in by_form.items()}
        answer, votes = vote_answer(verdicts)
        failed = sorted({ext.status for _, ext in by_form.values() if ext.status != "ok"})
        if answer is not None:
            status, reason = "ok", f"{votes} of {len(by_form)} forms agree"
        else:
            status = failed[0] if len(failed) == 1 else "no_answer"
            reason = "; ".join(f"{f}: {ext.status} {ext.reason}".strip() for f, (_, ext) in by_form.items())
        return {"answer": _number(answer), "thought": VOTE,
                "versions": ",".join(f"{f}={self.forms[f].version}" for f in by_form),
                "reasoning": "\n\n".join(f"[{f}]\n{text}" for f, (text, _) in by_form.items()),
                "status": status, "reason": reason}


class StudentModel(Student, mlflow.pyfunc.PythonModel):
    """The pyfunc model. Its methods come from ``Student``: MLflow wraps and warns about a ``predict``
    defined on a PythonModel subclass without type hints, and our signature is logged explicitly."""


def _number(value: float | None) -> float | int | None:
    """JSON-friendly answer: whole numbers as int (42, not 42.0), others as float, None stays None."""
    if value is None:
        return None
    value = float(value)
    return int(value) if value.is_integer() and abs(value) < 2**53 else value


def input_example(card: Mapping[str, Any]) -> list[dict]:
    """One request in the student's default thought (MLflow checks it against the signature when logging)."""
    return [{"question": "Tom has 3 apples and buys 4 more. How many apples does he have now?",
             "thought": default_thought(card)}]


def signature():
    from mlflow.models import ModelSignature
    from mlflow.types.schema import ColSpec, Schema

    # `question` is required by parse_requests, not by the schema: MLflow's schema check would answer a
    # missing column with its own message in front of ours (issue 14), so ours names it and the fix
    inputs = Schema([ColSpec("string", "question", required=False), ColSpec("string", "thought", required=False)])
    outputs = Schema([ColSpec("double", "answer", required=False), ColSpec("string", "thought"),
                      ColSpec("string", "versions"), ColSpec("string", "reasoning"), ColSpec("string", "status"),
                      ColSpec("string", "reason", required=False)])
    return ModelSignature(inputs=inputs, outputs=outputs)


def pip_requirements() -> list[str]:
    """What the served model imports; distill itself must be installed (serve with --env-manager local)."""
    from importlib.metadata import PackageNotFoundError, version

    out = []
    for name in ("mlflow", "torch", "transformers", "tokenizers", "peft", "pandas", "sympy"):
        try:
            out.append(f"{name}=={version(name)}")
        except PackageNotFoundError:
            out.append(name)
    return out


MODEL_CODE = """\
# The pyfunc model of a distill student (models-from-code); needs the distill package installed.
import mlflow

from distill.serving import StudentModel

mlflow.models.set_model(StudentModel())
"""


@contextmanager
def _no_progress_bars() -> Iterator[None]:
    """MLflow's artifact-download bar and transformers' weight-loading bar off inside the block."""
    from transformers.utils import logging as hf_logging

    name = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"
    before, bars = os.environ.get(name), hf_logging.is_progress_bar_enabled()
    os.environ[name] = "false"
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = before
        if bars:
            hf_logging.enable_progress_bar()


def log_student(student_dir: Path, artifact_path: str = "model", **settings: Any):
    """Log ``student_dir`` (model/ + card.json) as a pyfunc model in the active MLflow run; returns ModelInfo.

    ``settings`` override DEFAULTS (timeout, max_new_tokens, max_question_chars, ...), stored as the
    model's model_config. Raises ValueError when no run is active or the folder is incomplete.
    """
    student_dir = Path(student_dir)
    if mlflow.active_run() is None:
        raise ValueError("log_student must be called inside an active MLflow run (the train run)")
    card_path, model_dir = student_dir / "card.json", student_dir / "model"
    if not card_path.is_file() or not model_dir.is_dir():
        raise ValueError(f"{student_dir} must hold model/ (save_pretrained) and card.json; train the student first")
    unknown = sorted(set(settings) - set(DEFAULTS))
    if unknown:
        raise ValueError(f"unknown serving setting {unknown[0]!r}; valid: {', '.join(DEFAULTS)}")
    card = json.loads(card_path.read_text())
    default_thought(card)  # fail now, not at serving time, on a card without forms
    with tempfile.TemporaryDirectory() as tmp:
        # copy only model/ and card.json: checkpoints/ (optimizer state) stay out of the registry
        staged = Path(tmp) / STUDENT_ARTIFACT
        shutil.copytree(model_dir, staged / "model")
        shutil.copy2(card_path, staged / "card.json")
        # models-from-code: the logged model is this short script, not a pickle of the class, so
        # loading it runs no pickled bytes and always uses the installed distill's StudentModel
        code = Path(tmp) / "student_model.py"
        code.write_text(MODEL_CODE)
        from distill.tracking import INTEGER_SCHEMA_HINT, expected_warnings

        # the input example's int columns are never missing; and the two progress bars of loading
        # back the copy just written (to check the input example) are noise in `make reproduce`
        with expected_warnings(INTEGER_SCHEMA_HINT), _no_progress_bars():
            return mlflow.pyfunc.log_model(
                name=artifact_path,
                python_model=str(code),
                artifacts={STUDENT_ARTIFACT: str(staged)},
                signature=signature(),
                input_example=input_example(card),
                model_config={**DEFAULTS, **settings},
                pip_requirements=pip_requirements(),
                metadata={"distill": {"mix": card.get("mix"), "default_thought": default_thought(card),
                                      "forms": {f: (c or {}).get("version") for f, c in (card.get("forms") or {}).items()},
                                      "data_digest": card.get("data_digest"), "train_run_id": card.get("train_run_id")}},
            )
