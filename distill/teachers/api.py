"""The ``openai`` teacher: any OpenAI-compatible chat-completions endpoint (OpenAI, vLLM, Ollama,
llama.cpp server), called asynchronously and cached in the completion store.

Behaviour, all of it explicit here (the client's own retries are off, ``max_retries=0``):

- At most ``teacher.concurrency`` requests in flight (a fixed pool of asyncio workers).
- 429, 408 and 5xx answers, timeouts and connection errors are retried up to ``teacher.max_retries``
  times. The wait is the server's ``Retry-After`` (or ``retry-after-ms``) when it sends one, else
  exponential backoff ``min(cap, base * 2**attempt)`` with jitter (a uniform 50-100% of it).
  A job that still fails is not answered: it is counted (``gave_up``) and a rerun asks again.
- A 200 response is appended raw to the store (fsynced) before it is parsed. Malformed JSON, empty
  ``choices`` or an empty message become a failed answer with that reason, never a retry loop;
  other 4xx answers fail the job with ``http_<code>``; 401, 403 and 404 stop the run (key, model or URL).
- The API key is read from the environment variable named ``teacher.api_key_env``; only the name is
  ever stored or logged.
"""
from __future__ import annotations

import asyncio
import email.utils
import json
import os
import queue
import random
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from distill.layout import RunFolder
from distill.teachers import Answer, BudgetReached, Job, TeacherError, canonical_request, request_hash
from distill.teachers.ledger import Ledger
from distill.teachers.store import CompletionStore

RETRY_STATUSES = {408, 409, 429}
FATAL_STATUSES = {401: "the API key was refused", 403: "the API key has no access",
                  404: "the model or URL was not found"}


def parse_raw(raw: str, h: str, cached: bool = False) -> Answer:
    """An Answer from a raw chat-completions body; malformed or empty bodies are failed answers."""
    try:
        body = json.loads(raw)
    except (json.JSONDecodeError, TypeError):
        return Answer.failed(f"malformed_json: {str(raw)[:60]!r}", h, cached)
    choices = body.get("choices") if isinstance(body, dict) else None
    if not isinstance(choices, list) or not choices:
        return Answer.failed("empty_choices", h, cached)
    texts, reasons = [], []
    for choice in sorted(choices, key=lambda c: c.get("index", 0) if isinstance(c, dict) else 0):
        message = choice.get("message") if isinstance(choice, dict) else None
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, str) and content.strip():
            texts.append(content)
            reasons.append("")
        else:
            texts.append(None)
            reasons.append("empty_content")
    usage = body.get("usage") if isinstance(body.get("usage"), dict) else {}
    return Answer(texts, reasons, h, cached, usage)


def retry_after(headers: Any) -> float | None:
    """Seconds the server asked us to wait (``retry-after-ms``, ``retry-after`` seconds or HTTP date)."""
    if headers is None:
        return None
    for name, scale in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is None:
            continue
        try:
            return max(0.0, float(value) / scale)
        except ValueError:
            pass
        try:
            when = email.utils.parsedate_to_datetime(value)
            return max(0.0, when.timestamp() - time.time())
        except (TypeError, ValueError):
            continue
    return None


class OpenAITeacher:
    name = "openai"

    def __init__(self, *, model: str, base_url: str | None, api_key: str, store: CompletionStore,
                 ledger: Ledger | None = None, temperature: float = 0.0, n: int = 1, max_tokens: int = 512,
                 concurrency: int = 8, timeout: float = 60.0, max_retries: int = 6, backoff_base: float = 1.0,
                 backoff_cap: float = 60.0, retry_after_cap: float = 600.0, offline: bool = False,
                 api_key_env: str = "OPENAI_API_KEY", rng: Callable[[], float] = random.random):
        self.model, self.base_url, self._api_key = model, base_url, api_key
        self.store, self.ledger = store, ledger or Ledger(model=model)
        self.temperature, self.n, self.max_tokens = temperature, n, max_tokens
        self.concurrency, self.timeout, self.max_retries = max(1, concurrency), timeout, max_retries
        self.backoff_base, self.backoff_cap, self.retry_after_cap = backoff_base, backoff_cap, retry_after_cap
        self.api_key_env = api_key_env
        self.offline = offline
        """Serve only what the store holds (``--batch collect``); never send a request."""
        self.rng = rng
        self.stats: Counter = Counter()
        self.waits: list[float] = []
        self.last_error = ""
        self._budget_hit = False
        self._running: tuple = (None, [])

    @classmethod
    def from_config(cls, cfg, run_dir: Path, offline: bool = False, shard=None) -> "OpenAITeacher":
        """The teacher of ``cfg.teacher``; with a list of ``base_url``s, shard i asks base_url[i % len]."""
        from distill.shards import pick

        t = cfg.teacher
        base_url = pick(t.base_url, shard)
        key = os.environ.get(t.api_key_env, "")
        if not key:
            if not base_url and not offline:
                raise TeacherError(f"no API key: set the environment variable {t.api_key_env} (teacher.api_key_env "
                                   "names it), or point --base-url at a server that needs none")
            key = "not-needed"  # local servers (vLLM, Ollama, llama.cpp) accept any key
        ledger_path = RunFolder(run_dir).ledger
        budget = t.budget
        if shard is not None:
            # each shard keeps its own ledger (one writer per file) and a 1/n share of the budget, so
            # shards running at once never spend more than teacher.budget together
            ledger_path = shard.path(ledger_path)
            budget = None if budget is None else budget / shard.count
        return cls(model=t.model, base_url=base_url, api_key=key, store=CompletionStore(t.store_dir),
                   ledger=Ledger(ledger_path, t.prices, budget, t.model),
                   temperature=t.temperature, n=t.n, max_tokens=t.max_tokens, concurrency=t.concurrency,
                   timeout=t.timeout, max_retries=t.max_retries, backoff_base=t.backoff_base,
                   backoff_cap=t.backoff_cap, offline=offline, api_key_env=t.api_key_env)

    def request_for(self, job: Job) -> dict:
        return canonical_request(self.model, job.messages, self.temperature, self.n, self.max_tokens)

    def client(self):
        from openai import AsyncOpenAI

        return AsyncOpenAI(api_key=self._api_key, base_url=self.base_url, max_retries=0, timeout=self.timeout)

    def sync_client(self):
        """A blocking client for the few file and batch calls (the client's own retries are on there)."""
        from openai import OpenAI

        return OpenAI(api_key=self._api_key, base_url=self.base_url, timeout=self.timeout)

    # -- answering ------------------------------------------------------------------------------

    def answer(self, jobs: Sequence[Job]) -> Iterator[tuple[Job, Answer]]:
        """Stored answers first (free), then live calls as they complete."""
        pending = []
        for job in jobs:
            request = self.request_for(job)
            h = request_hash(request)
            record = self.store.get(h)
            if record is not None:
                self.stats["store_hits"] += 1
                yield job, parse_raw(record["raw"], h, cached=True)
            elif self.offline:
                self.stats["missing"] += 1
            else:
                pending.append((job, request, h))
        if pending:
            yield from self._live(pending)
        if self._budget_hit:
            t = self.ledger.totals()
            raise BudgetReached(f"budget {self.ledger.budget} reached: spent {t['total_cost']:.4f}, "
                                f"{self.stats['not_sent']} requests not sent; raise teacher.budget "
                                "(--set teacher.budget=AMOUNT) and rerun to go on")

    def _live(self, pending: list) -> Iterator[tuple[Job, Answer]]:
        out: queue.Queue = queue.Queue()
        stop = threading.Event()

        def target():
            try:
                asyncio.run(self._main(pending, out, stop))
            except BaseException as exc:  # handed to the consuming thread, which raises it
                out.put(("error", exc))
            else:
                out.put(("done", None))

        self._running = (None, [])
        thread = threading.Thread(target=target, name="openai-teacher", daemon=True)
        thread.start()
        try:
            while True:
                kind, item = out.get()
                if kind == "answer":
                    yield item
                elif kind == "error":
                    raise item
                else:
                    return
        finally:
            stop.set()
            loop, tasks = self._running
            if thread.is_alive() and loop is not None:  # Ctrl-C or an abandoned generator: stop the requests in flight
                try:
                    loop.call_soon_threadsafe(lambda: [t.cancel() for t in tasks])
                except RuntimeError:
                    pass  # the loop closed meanwhile
            thread.join()

    async def _main(self, pending: list, out: queue.Queue, stop: threading.Event) -> None:
        client = self.client()
        self._commit = _GroupCommit(self.store, self.ledger)
        jobs = iter(pending)

        async def worker():
            for job, request, h in jobs:  # one shared iterator: each job goes to exactly one worker
                if stop.is_set():
                    return
                estimate = self.ledger.estimate(request)
                if self._budget_hit or not self.ledger.reserve(estimate):
                    self._budget_hit = True
                    self.stats["not_sent"] += 1
                    continue
                answer = await self._call(client, request, h, estimate)
                if answer is not None:
                    out.put(("answer", (job, answer)))

        tasks = [asyncio.create_task(worker()) for _ in range(min(self.concurrency, len(pending)))]
        self._running = (asyncio.get_running_loop(), tasks)
        try:
            await asyncio.gather(*tasks)
        except BaseException:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise
        finally:
            await client.close()

    def _delay(self, attempt: int, headers: Any = None) -> float:
        asked = retry_after(headers)
        if asked is not None:
            return min(asked, self.retry_after_cap)
        ceiling = min(self.backoff_cap, self.backoff_base * 2 ** attempt)
        return ceiling * (0.5 + 0.5 * self.rng())

    async def _call(self, client, request: dict, h: str, reserved: float) -> Answer | None:
        import openai

        for attempt in range(self.max_retries + 1):
            headers = None
            try:
                self.stats["sent"] += 1
                response = await client.chat.completions.with_raw_response.create(**request, timeout=self.timeout)
                raw = response.http_response.text
            except openai.APIStatusError as exc:
                status = exc.status_code
                if status in FATAL_STATUSES:
                    raise TeacherError(f"{self.base_url or 'api.openai.com'} answered {status}: {FATAL_STATUSES[status]} "
                                       f"(model {self.model!r}, key from ${self.api_key_env}); check --model, --base-url and the key") from None
                if status not in RETRY_STATUSES and status < 500:
                    self.ledger.release(reserved)
                    return Answer.failed(f"http_{status}: {str(exc.message)[:120]}", h)
                self.last_error, headers = f"http_{status}", exc.response.headers
            except openai.APITimeoutError:
                self.last_error = "timeout"
            except openai.APIConnectionError as exc:
                self.last_error = f"connection_error: {exc.__cause__ or exc}"
            else:
                answer = parse_raw(raw, h)
                await self._commit.put((h, request, raw, answer.usage), (h, answer.usage, self.model, reserved, "api"))
                self.stats["calls"] += 1
                return answer  # durable in the store (and ledger) before anyone uses it
            self.stats[f"error/{self.last_error.split(':')[0]}"] += 1
            if attempt < self.max_retries:
                delay = self._delay(attempt, headers)
                self.waits.append(delay)
                self.stats["retries"] += 1
                await asyncio.sleep(delay)
        self.ledger.release(reserved)
        self.stats["gave_up"] += 1
        return None


class _GroupCommit:
    """Coalesce the store and ledger appends of responses that arrive together into one write and one
    fsync each, done off the event loop (a database's group commit). Each caller resumes only after
    its record is on disk, so "stored before used" holds, and a slow disk does not stall the loop."""

    def __init__(self, store: CompletionStore, ledger: Ledger):
        self.store, self.ledger = store, ledger
        self.pending: list = []
        self.task: asyncio.Task | None = None

    async def put(self, store_item: tuple, ledger_item: tuple) -> None:
        future = asyncio.get_running_loop().create_future()
        self.pending.append((store_item, ledger_item, future))
        if self.task is None or self.task.done():
            self.task = asyncio.create_task(self._flush())
        await future

    def _write(self, batch: list) -> None:
        self.store.put_many([b[0] for b in batch])
        self.ledger.record_many([b[1] for b in batch])

    async def _flush(self) -> None:
        while self.pending:
            batch, self.pending = self.pending, []
            try:
                await asyncio.to_thread(self._write, batch)
            except BaseException as exc:  # a full disk: every waiter sees the error
                for *_, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for *_, future in batch:
                if not future.done():
                    future.set_result(None)
