"""The student logged as an MLflow model: ``log_student(student_dir)`` logs, inside the active MLflow
run (the train run), a pyfunc model whose artifacts hold ``student/`` = a copy of ``student_dir``'s
``model/`` (save_pretrained model and tokenizer) and ``card.json``. Other parts rely on that layout
(evaluate downloads it).

The logged model is a three-line script (``MODEL_CODE``, MLflow's models-from-code, no pickle) that
imports ``StudentModel`` from ``distill.serving``, so loading it needs ``distill`` importable, and
that import path must keep working for every model already logged. Also logged: the signature, an
input example, the pip requirements, the model_config (distill.serving.model.DEFAULTS and the
overrides) and metadata ``distill`` {"mix", "default_thought", "forms", "data_digest", "train_run_id"}.

Reads ``<student_dir>/card.json`` and ``<student_dir>/model/``; writes only to the MLflow run.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Mapping

import mlflow

from distill.files import read_json
from distill.serving.inputs import default_thought
from distill.serving.model import DEFAULTS, STUDENT_ARTIFACT


def input_example(card: Mapping[str, Any]) -> list[dict]:
    """One request in the student's default thought (MLflow checks it against the signature when logging)."""
    return [{"question": "Tom has 3 apples and buys 4 more. How many apples does he have now?",
             "thought": default_thought(card)}]


def signature():
    from mlflow.models import ModelSignature
    from mlflow.types.schema import ColSpec, Schema

    # No input schema: MLflow 3.17's schema check drops every column the schema does not name before
    # predict sees the request, so a request with `text` instead of `question` arrived as an empty
    # table ("got columns: none") and an extra column was ignored without a word. The request's
    # contract (question, optional thought; nothing else) is checked by serving.inputs.parse_requests,
    # whose messages name the columns it got and the ones it expects; the input example shows it.
    inputs = None
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
    card = read_json(card_path)
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
