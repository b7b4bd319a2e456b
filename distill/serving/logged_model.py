"""The student logged as an MLflow model: ``log_student(student_dir)`` logs, inside the active MLflow
run (the train run), a pyfunc model whose artifacts hold ``student/`` = a copy of ``student_dir``'s
``model/`` (save_pretrained model and tokenizer) and ``card.json``. Other parts rely on that layout
(evaluate downloads it).

The logged model is self-contained: it runs wherever MLflow builds an environment from it
(``mlflow models serve --env-manager virtualenv``, ``mlflow models build-docker`` /
``generate-dockerfile``, a managed endpoint), not only inside the project's venv:

  - the ``distill`` package travels with the model as ``code/distill/`` (MLflow's ``code_paths``,
    put on ``sys.path`` when the model loads; ``package_copy`` says why not a wheel);
  - ``requirements.txt`` names what serving imports, pinned to the versions it was logged with,
    each without a local build label (``torch==2.13.0``, never ``torch==2.13.0+cpu``): see
    ``pip_requirements`` for the rule that chooses torch's CPU or CUDA build on the serving host.

The model itself is a three-line script (``MODEL_CODE``, MLflow's models-from-code, no pickle) that
imports ``StudentModel`` from ``distill.serving``; that import path must keep working for every
model already logged. Also logged: the signature, an input example, the model_config
(distill.serving.model.DEFAULTS and the overrides) and metadata ``distill`` {"mix",
"default_thought", "forms" (form -> version), "data_digest", "train_run_id", "package" (the distill
version it carries)}.

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
                      ColSpec("string", "reason", required=False), ColSpec("string", "device")])
    return ModelSignature(inputs=inputs, outputs=outputs)


SERVING_PACKAGES = ("mlflow-skinny", "torch", "transformers", "tokenizers", "peft", "pandas", "sympy")
"""What the served model imports (besides the standard library and the distill code it carries):
mlflow-skinny has the pyfunc loader and the scoring server (FastAPI, uvicorn) without the tracking
server's dependencies; peft loads a LoRA student; sympy solves equation systems in the sandbox."""


def serving_settings(cfg) -> dict[str, Any]:
    """The model_config that makes the served answer the evaluated one: the evaluate stage's decoding
    (max_new_tokens, max_source_len) and the verify stage's sandbox limit and strictness (timeout,
    strict), from a distill.config.Config. The train stage logs the student with these."""
    return {"max_new_tokens": int(cfg.evaluate.max_new_tokens), "max_source_len": int(cfg.evaluate.max_source_len),
            "timeout": float(cfg.verify.timeout), "strict": bool(cfg.verify.strict)}


def public_version(version: str) -> str:
    """``2.13.0+cpu`` -> ``2.13.0``: the version without its local build label (PEP 440)."""
    from packaging.version import Version

    return Version(version).public


def pip_requirements() -> list[str]:
    """``name==version`` of SERVING_PACKAGES as installed here, without local build labels.

    The torch rule: the model names torch's public version (``torch==2.13.0``) and the serving host's
    pip chooses the build. PyPI's Linux wheel of that version is the CUDA build, so a GPU host gets
    CUDA by default; a CPU host points pip at the CPU wheel (``PIP_EXTRA_INDEX_URL=
    https://download.pytorch.org/whl/cpu``, or a find-links folder holding ``torch-2.13.0+cpu``, as
    this project's machines do) and pip takes it, because ``==2.13.0`` matches ``2.13.0+cpu`` and a
    local label sorts above the bare version. A label written into the model (``2.13.0+cpu``) would
    exist only on PyTorch's CPU index: a GPU host could not resolve it, or would get a CPU torch.
    """
    from importlib.metadata import PackageNotFoundError, version

    out = []
    for name in SERVING_PACKAGES:
        try:
            out.append(f"{name}=={public_version(version(name))}")
        except PackageNotFoundError:
            out.append(name)
    return out


def package_copy(dst: Path) -> Path:
    """A copy of the imported ``distill`` package (sources only, no ``__pycache__``) at ``dst/distill``.

    Why ``code_paths`` and not a wheel built at logging time and named in the requirements: the
    copy is the very code that trained and evaluated the student, taken from wherever ``distill`` is
    imported (an editable checkout or an installed wheel alike, no build tool or source tree needed
    when logging); MLflow puts it on ``sys.path`` in every environment it builds from the model (a
    virtualenv, a Docker image, a managed endpoint) without reaching a package index for it; and
    the environment installs only what serving imports (SERVING_PACKAGES), not distill's
    training-time dependencies (datasets, openai, accelerate, matplotlib, psycopg2), so it builds
    faster and smaller. A wheel would need ``distill`` on an index or inside the model, and pip
    would pull those dependencies.
    """
    import distill

    source = Path(distill.__file__).resolve().parent
    target = Path(dst) / "distill"
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.pyo"))
    return target


MODEL_CODE = """\
# The pyfunc model of a distill student (models-from-code). distill travels with the model in
# code/distill/, which MLflow puts on sys.path before running this file.
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
        # loading it runs no pickled bytes; its StudentModel is the one of the distill it carries
        code = Path(tmp) / "student_model.py"
        code.write_text(MODEL_CODE)
        package = package_copy(Path(tmp) / "package")
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
                code_paths=[str(package)],
                metadata={"distill": {"mix": card.get("mix"), "variant": card.get("variant", ""),
                                      "default_thought": default_thought(card),
                                      "forms": {f: (c or {}).get("version") for f, c in (card.get("forms") or {}).items()},
                                      "data_digest": card.get("data_digest"), "train_run_id": card.get("train_run_id"),
                                      "package": f"distill=={_distill_version()}"}},
            )


def _distill_version() -> str:
    import distill

    return str(getattr(distill, "__version__", "unknown"))
