"""The student served as an MLflow pyfunc model: question in, reasoning and a solver-checked answer out.

One job per module:
  - ``inputs.py``        what a request may hold (``parse_requests``, ``default_thought``) and
                         ``BadRequest``, answered with HTTP 400 and just our message
  - ``batching.py``      calls that arrive while the model is busy, answered together in one batch
  - ``model.py``         ``StudentModel``: loads the logged student and answers (the model + sandbox)
  - ``logged_model.py``  ``log_student``: logs a trained student as the pyfunc model, with its
                         signature, input example and requirements

This file only names ``StudentModel``: every logged model is a models-from-code script
(logged_model.MODEL_CODE) that runs ``from distill.serving import StudentModel``, so that import
path must keep working for the models already in a registry. The model carries the package
(``code/distill/``) and names what it imports in its requirements (logged_model), so it serves from
the project's venv or from an environment MLflow builds from the model alone::

    mlflow models serve -m models:/distill-student@champion --env-manager local --host 127.0.0.1 --port 5005
    mlflow models serve -m models:/distill-student@champion --env-manager virtualenv --host 127.0.0.1 --port 5005

Request (``/invocations``, JSON): ``{"dataframe_records": [{"question": "...", "thought": "eot"}]}``,
``thought`` optional: ``cot``, ``pot``, ``eot`` (one of the student's forms) or ``vote`` (every form,
majority answer; distill.scoring.vote_answer). The default is the card's ``best_form`` when it has
one, else ``eot`` when the student learned it (the paper's best single form for small students),
else its first form.

Response, one row per question: ``answer`` (number or null), ``thought`` (the form asked for),
``versions`` ("eot=1"; every form for vote), ``reasoning`` (the generated text; for vote each form's
text under a ``[form]`` header), ``status`` (``ok``, ``no_answer``, ``parse_error``, ``exec_error``,
``timeout``, ``unsafe``), ``reason`` (why, for a failure) and ``device`` (where the student ran:
``cpu``, ``cuda:0``).

Reads and writes nothing itself.
"""
from distill.serving.model import StudentModel

__all__ = ["StudentModel"]
