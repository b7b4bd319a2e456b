"""The student as an MLflow pyfunc model (``StudentModel``): question in, reasoning and a
solver-checked answer out. Owns loading the logged student, batching concurrent calls and answering.

Reads the pyfunc artifact ``student/`` (``model/``: the student as distill.student saves it;
``card.json``: its mix, forms and their versions, best_form) and the model_config (``DEFAULTS``
and the overrides given to distill.serving.logged_model.log_student). Writes nothing: each request
gets one output row per question (the columns ``OUTPUT_COLUMNS``, described in distill/serving/__init__.py).

Where it runs: ``device: auto`` puts the student on the first GPU when there is one, else on the
CPU (distill.student.resolve_device, the evaluate stage's rule), and every row says which device
answered (``device``) in which form (``thought``, ``versions``). Concurrent calls are answered
together in batches of up to ``max_batch`` questions (``auto``: what the device's free memory holds,
distill.serving.batching.batch_rows).

Served equals evaluated: the text comes from distill.decoding.decode_batches and the answer from the
form's ``extract_many``, the two calls the evaluate stage makes (its ``verify_many`` is
``extract_many`` plus the gold), with the settings the train stage logs from the evaluate and
verify config (logged_model.serving_settings); tests/test_served_equals_evaluated.py checks it.

The answer is taken by the same form module that verified the training data (``get_form(f)
.extract_many``): programs and equation systems run in the sandbox, outside the server's process,
with a timeout, so a looping program ends as a ``timeout`` row and never hangs the server. Model
output is never evaluated here.
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Mapping, Sequence

import mlflow
import pandas as pd
from mlflow.exceptions import MlflowException

from distill.files import read_json
from distill.serving.batching import BatchQueue
from distill.serving.inputs import VOTE, Request, default_thought, parse_requests

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

STUDENT_ARTIFACT = "student"
"""Name of the pyfunc artifact (a folder holding model/ and card.json)."""
OUTPUT_COLUMNS = ("answer", "thought", "versions", "reasoning", "status", "reason", "device")

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
    # like VerifyConfig.strict: True refuses a CoT text whose answer is only its last number
    "strict": False,
    # the paper's decoding: greedy, 256 tokens in and out (METHOD.md); the train stage logs the
    # evaluate stage's values instead (logged_model.serving_settings)
    "max_new_tokens": 256,
    "max_source_len": 256,
    # questions decoded per generate call; auto: the whole batch (max_batch)
    "batch_size": "auto",
    # questions answered together across concurrent calls; auto: what the device's free memory holds
    # for greedy decoding, capped by what the sandbox checks in 40 s (distill.serving.batching.batch_rows)
    "max_batch": "auto",
    # auto: the first GPU when there is one, else the CPU
    "device": "auto",
}
"""The model_config of a logged student; log_student(..., **overrides) changes them."""


class StudentModel(mlflow.pyfunc.PythonModel):
    """The pyfunc model: a student (seq2seq or causal), its tokenizer and its forms' extractors.

    ``predict``'s input carries the hint ``pd.DataFrame`` (parse_requests also takes the records and
    columns the scoring server passes): MLflow wraps the ``predict`` of a PythonModel subclass and
    warns at import when it has no type hint, and a DataFrame hint is the one from which it infers no
    schema and validates nothing. The logged signature has no input schema either
    (distill.serving.logged_model.signature says why), so parse_requests is the request's one contract.
    """

    def load_context(self, context) -> None:
        # everything is in the artifacts: never let transformers or the hub try the network
        os.environ["HF_HUB_OFFLINE"] = "1"
        os.environ["TRANSFORMERS_OFFLINE"] = "1"
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        from distill.student import load_student, resolve_device, stale_form
        from distill.thoughts import get_form

        root = Path(context.artifacts[STUDENT_ARTIFACT])
        self.card = read_json(root / "card.json")
        self.settings = {**DEFAULTS, **(getattr(context, "model_config", None) or {})}
        # any kind of student (seq2seq, causal, a LoRA adapter): distill.student reads its folder
        self.model, self.tokenizer = load_student(root / "model", local_files_only=True)
        self.model.to(resolve_device(str(self.settings["device"]))).eval()
        self.device = str(next(self.model.parameters()).device)
        self.forms = {name: get_form(name) for name in self.card.get("forms") or {}}
        stale = stale_form(self.card)
        if stale:
            # the card travels with the model; a changed form would parse output it never learned
            name, trained, current = stale
            raise MlflowException(f"student learned {name} version {trained}, but this code has version "
                                  f"{current}; serve it with the distill version it was trained with")
        self.default = default_thought(self.card)
        self.start_batching()

    def start_batching(self) -> None:
        """Concurrent predict calls are answered together (distill.serving.batching), up to max_batch questions."""
        self.max_batch = self._max_batch()
        self.batches = BatchQueue(self.answer, self.max_batch)

    def _max_batch(self) -> int:
        """The setting ``max_batch`` when it is a number, else what memory and the sandbox allow (batching.batch_rows)."""
        max_rows = int(self.settings["max_rows"])
        if str(self.settings.get("max_batch", "auto")) != "auto":
            return max(max_rows, int(self.settings["max_batch"]))
        model = getattr(self, "model", None)
        if model is None:  # no model loaded (a test's stand-in generator): one request's rows
            return max_rows
        import torch

        from distill.sandbox import default_workers
        from distill.serving.batching import batch_rows

        param = next(model.parameters())
        config = getattr(model, "config", None)
        if hasattr(model, "get_base_model"):  # a LoRA student: the base model's shape
            config = model.get_base_model().config
        return batch_rows(config, param.device, max_source_len=int(self.settings["max_source_len"]),
                          max_new_tokens=int(self.settings["max_new_tokens"]),
                          dtype_bytes=torch.finfo(param.dtype).bits // 8 if param.dtype.is_floating_point else 4,
                          timeout=float(self.settings["timeout"]), workers=default_workers(), at_least=max_rows)

    def predict(self, context, model_input: pd.DataFrame, params=None):
        requests = parse_requests(model_input, list(self.forms), self.default,
                                  max_chars=int(self.settings["max_question_chars"]),
                                  max_rows=int(self.settings["max_rows"]))
        rows = self.batches.submit(requests)
        return pd.DataFrame({col: pd.Series([r[col] for r in rows], dtype=object) for col in OUTPUT_COLUMNS})

    def generate(self, inputs: list[str]) -> list[str]:
        """Greedy outputs of the student for ``inputs`` (the paper's decoding, distill/decoding.py)."""
        from distill.decoding import decode

        size = self.settings.get("batch_size", "auto")
        batch_size = self.max_batch if str(size) == "auto" else int(size)
        return decode(self.model, self.tokenizer, inputs, batch_size=batch_size,
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
        timeout, strict = float(self.settings["timeout"]), bool(self.settings.get("strict", False))

        def extract(form: str) -> list:
            return self.forms[form].extract_many([texts[i] for i in by_form[form]], timeout=timeout, strict=strict)

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
                "status": ext.status, "reason": self._why(text, ext), "device": self._device_name()}

    def _why(self, text: str, ext) -> str:
        """The form's reason for a failed extraction, plus the likely cause when the output ran to the
        token limit: a student that never learned to stop writes until max_new_tokens, and the form
        then finds no complete answer in what it wrote (the reproduced tiny students do this)."""
        if ext.status == "ok":
            return ext.reason
        limit = int(self.settings["max_new_tokens"])
        tokenizer = getattr(self, "tokenizer", None)
        if tokenizer is None or not text:
            return ext.reason
        written = len(tokenizer(text, add_special_tokens=False)["input_ids"])
        if written < limit - 1:  # decoded text re-tokenizes to about the tokens generated
            return ext.reason
        return ((f"{ext.reason}; " if ext.reason else "") + f"the output ran to the max_new_tokens limit ({limit}) "
                "without ending: this student has not learned to stop, so no complete answer was written")

    def _vote(self, by_form: Mapping[str, tuple]) -> dict:
        """The majority answer over the forms (distill.scoring.vote_answer: ties go to the form ranked
        first, EoT, then PoT)."""
        from distill.answers import answers_match
        from distill.scoring import vote_answer
        from distill.thoughts import combine_order, get_form

        answer, votes = vote_answer({f: ext.answer if ext.status == "ok" else None for f, (_, ext) in by_form.items()})
        failed = sorted({ext.status for _, ext in by_form.values() if ext.status != "ok"})
        failures = "; ".join(f"{f}: {ext.status} {self._why(text, ext)}".strip()
                             for f, (text, ext) in by_form.items() if ext.status != "ok")
        answered = [f for f, (_, ext) in by_form.items() if ext.status == "ok"]
        n = len(by_form)
        if answer is not None:
            status = "ok"
            agree = [f for f in answered if answers_match(by_form[f][1].answer, answer)]
            if votes > 1:
                reason = f"{votes} of {n} forms agree ({', '.join(agree)})"
            elif len(answered) == 1:
                reason = (f"only {agree[0]} gave an answer (1 of {n} forms): no agreement, "
                          f"this is {agree[0]}'s answer alone")
            else:
                given = ", ".join(f"{f} {by_form[f][1].answer:g}" for f in answered)
                order = ", then ".join(get_form(f).title for f in combine_order())
                reason = f"no two forms agree ({given}): {agree[0]}'s answer by the tie rule ({order}), not a majority"
            reason += f"; {failures}" if failures else ""
        else:
            status = failed[0] if len(failed) == 1 else "no_answer"
            reason = failures
        return {"answer": _number(answer), "thought": VOTE,
                "versions": ",".join(f"{f}={self.forms[f].version}" for f in by_form),
                "reasoning": "\n\n".join(f"[{f}]\n{text}" for f, (text, _) in by_form.items()),
                "status": status, "reason": reason, "device": self._device_name()}

    def _device_name(self) -> str:
        """Where the student runs: ``cuda:0``, ``cpu`` (set when it is loaded)."""
        return getattr(self, "device", "cpu")


def _number(value: float | None) -> float | int | None:
    """JSON-friendly answer: whole numbers as int (42, not 42.0), others as float, None stays None."""
    if value is None:
        return None
    value = float(value)
    return int(value) if value.is_integer() and abs(value) < 2**53 else value
