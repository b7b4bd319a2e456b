"""Batching of concurrent calls: the scoring server calls predict from several threads at once. One
call at a time uses the model and the sandbox (``busy``); calls that arrive meanwhile wait in
``waiting`` and the next one to run answers them all in one batch, which decodes faster than one
question at a time (benchmarks/serve.py measures what that buys). One call's failure never fails
the calls it was batched with.

Reads and writes nothing: it holds parsed requests (distill.serving.inputs.Request) until the
``answer`` function it was given has answered them.
"""
from __future__ import annotations

import threading
from typing import Callable, Sequence

from distill.serving.inputs import Request


class _Call:
    """One predict call's requests, waiting to be answered (maybe in another call's batch)."""

    def __init__(self, requests: list[Request]):
        self.requests = requests
        self.rows: list[dict] = []
        self.error: Exception | None = None
        self.done = False


class BatchQueue:
    """Calls waiting to be answered, at most ``max_rows`` questions per batch; ``answer`` maps a list
    of requests to one output row per request."""

    def __init__(self, answer: Callable[[Sequence[Request]], list[dict]], max_rows: int):
        self.answer, self.max_rows = answer, max_rows
        self.busy = threading.Lock()
        self.queue = threading.Lock()
        self.waiting: list[_Call] = []

    def submit(self, requests: list[Request]) -> list[dict]:
        """The rows of ``requests``, answered in this call's batch or in another's; raises what answering raised."""
        call = _Call(requests)
        with self.queue:
            self.waiting.append(call)
        with self.busy:
            while not call.done:
                self._answer_waiting()
        if call.error is not None:
            raise call.error
        return call.rows

    def _answer_waiting(self) -> None:
        """Answer the oldest waiting calls, up to max_rows questions (at least one call), in one batch."""
        limit = self.max_rows
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
