"""What a request to the served student may hold: ``Request`` rows parsed from a DataFrame or JSON
records, the form used when a row names none, and ``BadRequest``, the error the scoring server turns
into HTTP 400 with just our message (what is wrong and how to fix it, no echo of the input).

Reads the request's ``question`` and optional ``thought`` columns and the student's card
(``forms``, ``best_form``); writes nothing.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

VOTE = "vote"


@dataclass(frozen=True)
class Request:
    question: str
    thought: str


def default_thought(card: Mapping[str, Any]) -> str:
    """The form asked for when a request names none: card["best_form"], else the form ranked first in the
    combinations (eot, distill.thoughts.combine_order) if trained, else the first."""
    from distill.thoughts import combine_order

    forms = list(card.get("forms") or {})
    best = card.get("best_form")
    if best in forms or (best == VOTE and len(forms) > 1):
        return best
    first = combine_order()[0]
    if first in forms:
        return first
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
    import numpy as np
    import pandas as pd

    # without an input schema (logged_model.signature) the scoring server passes the "inputs" and
    # "instances" formats as parsed: records whose values are 0-d arrays, or columns as 1-d arrays
    if isinstance(model_input, Mapping):
        values = list(model_input.values())
        if values and all(isinstance(v, (list, tuple, np.ndarray)) and np.ndim(v) == 1 for v in values):
            if len({len(v) for v in values}) != 1:
                raise bad_input("columns of different lengths; send one value per row in every column")
            model_input = pd.DataFrame({str(k): [_plain(x) for x in v] for k, v in model_input.items()})
        else:
            model_input = [model_input]
    if isinstance(model_input, list):
        if not all(isinstance(r, Mapping) for r in model_input):
            raise bad_input("input must be records (objects) with a 'question' field")
        model_input = pd.DataFrame([{str(k): _plain(v) for k, v in r.items()} for r in model_input])
    if not isinstance(model_input, pd.DataFrame):
        raise bad_input(f"input must be a DataFrame or JSON records with a 'question' field, "
                        f"got {type(model_input).__name__}")
    if len(model_input) == 0:
        raise bad_input("no rows: the request holds no record; send at least one, like "
                        '{"question": "...", "thought": "eot"}')
    if "question" not in model_input.columns:
        names = [str(c)[:40] for c in model_input.columns]
        columns = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "") or "none"
        raise bad_input(f"missing column 'question' (got columns: {columns}); expected 'question' and optionally "
                        '\'thought\', e.g. {"question": "...", "thought": "eot"}')
    if len(model_input) > max_rows:
        raise bad_input(f"{len(model_input)} rows in one request; send at most {max_rows} rows per request "
                        "(split the rest into further requests)")
    unknown = sorted(set(map(str, model_input.columns)) - {"question", "thought"})
    if unknown:
        more = f" (and {len(unknown) - 1} more)" if len(unknown) > 1 else ""
        raise bad_input(f"unknown column {unknown[0][:40]!r}{more}; valid columns: question, thought; "
                        "remove the others (nothing is ignored silently)")
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


def _plain(value: Any) -> Any:
    """A 0-d numpy array (how the scoring server parses a JSON scalar without a schema) as its Python value."""
    import numpy as np

    if isinstance(value, np.ndarray) and value.ndim == 0:
        return value.item()
    if isinstance(value, np.generic):
        return value.item()
    return value


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
