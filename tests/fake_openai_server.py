"""A real HTTP server on 127.0.0.1 that speaks enough of the OpenAI API for the teacher tests.

Endpoints: ``POST /v1/chat/completions``, ``POST /v1/files`` (multipart), ``GET /v1/files/{id}/content``,
``POST /v1/batches``, ``GET /v1/batches/{id}``. Faults are injected into the next chat requests in
order: ``429`` (with ``Retry-After``), ``500``, ``slow`` (answers after ``delay`` seconds, beyond the
client's timeout), ``malformed`` (200 with a body that is not JSON), ``empty`` (200 with no choices).
Every chat request is recorded (``requests``) with the hash of its canonical request, and
``completed`` lists the hashes answered with a good 200.

Run it alone for manual tries and the benchmark: ``python tests/fake_openai_server.py --latency 0.2``.
"""
from __future__ import annotations

import argparse
import email.parser
import email.policy
import itertools
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable

from distill.teachers import canonical_request, request_hash


def default_responder(body: dict) -> list[str]:
    last = next((m["content"] for m in reversed(body.get("messages", [])) if m.get("role") == "user"), "")
    return [f"Reply {i} to: {last[-60:]}" for i in range(int(body.get("n") or 1))]


def hash_of(body: dict) -> str:
    return request_hash(canonical_request(body.get("model", ""), body.get("messages", []),
                                          body.get("temperature", 0.0) or 0.0, body.get("n") or 1,
                                          body.get("max_tokens") or 0))


class FakeOpenAI:
    def __init__(self, latency: float = 0.0, responder: Callable[[dict], list[str]] = default_responder,
                 batch_polls: int = 1):
        self.latency = latency
        self.responder = responder
        self.batch_polls = batch_polls
        """A batch reports in_progress this many times before it is completed."""
        self.faults: list[dict] = []
        self.requests: list[dict] = []
        self.completed: list[str] = []
        self.files: dict[str, bytes] = {}
        self.batches: dict[str, dict] = {}
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    # -- control ----------------------------------------------------------------------------------

    def inject(self, kind: str, times: int = 1, **options) -> None:
        """Make the next ``times`` chat requests fail with ``kind`` (429, 500, slow, malformed, empty)."""
        if kind not in ("429", "500", "slow", "malformed", "empty"):
            raise ValueError(f"unknown fault {kind!r}")
        with self._lock:
            self.faults.extend({"kind": kind, **options} for _ in range(times))

    def start(self) -> "FakeOpenAI":
        handler = type("Handler", (_Handler,), {"fake": self})
        self._server = _Server(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server:
            self._server.shutdown()
            self._server.server_close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def chat_hashes(self) -> list[str]:
        return [r["hash"] for r in self.requests]

    # -- behaviour --------------------------------------------------------------------------------

    def _next_id(self, prefix: str) -> str:
        with self._lock:
            return f"{prefix}-{next(self._ids)}"

    def completion(self, body: dict) -> dict:
        texts = self.responder(body)
        prompt = sum(len(str(m.get("content", "")).split()) for m in body.get("messages", []))
        return {"id": self._next_id("chatcmpl"), "object": "chat.completion", "created": int(time.time()),
                "model": body.get("model", ""),
                "choices": [{"index": i, "message": {"role": "assistant", "content": t}, "finish_reason": "stop"}
                            for i, t in enumerate(texts)],
                "usage": {"prompt_tokens": prompt, "completion_tokens": sum(len(t.split()) for t in texts),
                          "total_tokens": prompt + sum(len(t.split()) for t in texts)}}

    def run_batch(self, input_file_id: str) -> tuple[str, int]:
        lines = [json.loads(line) for line in self.files[input_file_id].decode().splitlines() if line.strip()]
        out = []
        for item in lines:
            body = self.completion(item["body"])
            out.append({"id": self._next_id("batch_req"), "custom_id": item["custom_id"],
                        "response": {"status_code": 200, "request_id": body["id"], "body": body}, "error": None})
        file_id = self._next_id("file")
        self.files[file_id] = "".join(json.dumps(o) + "\n" for o in out).encode()
        return file_id, len(out)


class _Server(ThreadingHTTPServer):
    request_queue_size = 256  # the default backlog of 5 resets connections when 32 clients connect at once
    daemon_threads = True


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as real APIs do; the benchmark depends on it
    disable_nagle_algorithm = True  # else headers and body wait on delayed ACKs: 40 ms per request
    fake: FakeOpenAI

    def log_message(self, *args):  # quiet
        pass

    def _send(self, status: int, body: bytes, headers: dict | None = None, ctype: str = "application/json"):
        try:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (timeout test)

    def _json(self, status: int, obj, headers: dict | None = None):
        self._send(status, json.dumps(obj).encode(), headers)

    def _body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def do_POST(self):
        fake = self.fake
        if self.path.endswith("/chat/completions"):
            body = json.loads(self._body())
            with fake._lock:
                fault = fake.faults.pop(0) if fake.faults else None
                fake.requests.append({"hash": hash_of(body), "body": body, "time": time.time(),
                                      "fault": fault["kind"] if fault else None})
            if fake.latency:
                time.sleep(fake.latency)
            kind = fault["kind"] if fault else None
            if kind == "429":
                return self._json(429, {"error": {"message": "rate limited", "type": "rate_limit"}},
                                  {"Retry-After": str(fault.get("retry_after", 1))})
            if kind == "500":
                return self._json(500, {"error": {"message": "boom", "type": "server_error"}})
            if kind == "slow":
                time.sleep(fault.get("delay", 5.0))
            if kind == "malformed":
                return self._send(200, b'{"id": "x", "choices": [ this is not json')
            if kind == "empty":
                return self._json(200, {"id": "x", "object": "chat.completion", "choices": [], "model": body["model"],
                                        "usage": {"prompt_tokens": 1, "completion_tokens": 0, "total_tokens": 1}})
            response = fake.completion(body)
            with fake._lock:
                fake.completed.append(hash_of(body))
            return self._json(200, response)
        if self.path.endswith("/files"):
            raw = self._body()
            msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
                b"Content-Type: " + self.headers["Content-Type"].encode() + b"\r\n\r\n" + raw)
            content, purpose, filename = b"", "", "upload.jsonl"
            for part in msg.iter_parts():
                name = part.get_param("name", header="content-disposition")
                if name == "file":
                    content = part.get_payload(decode=True)
                    filename = part.get_filename() or filename
                elif name == "purpose":
                    purpose = part.get_content().strip()
            file_id = fake._next_id("file")
            fake.files[file_id] = content
            return self._json(200, {"id": file_id, "object": "file", "bytes": len(content),
                                    "created_at": int(time.time()), "filename": filename, "purpose": purpose,
                                    "status": "processed"})
        if self.path.endswith("/batches"):
            body = json.loads(self._body())
            if body.get("input_file_id") not in fake.files:
                return self._json(404, {"error": {"message": "no such file"}})
            batch_id = fake._next_id("batch")
            fake.batches[batch_id] = {"id": batch_id, "object": "batch", "endpoint": body["endpoint"],
                                      "completion_window": body["completion_window"],
                                      "input_file_id": body["input_file_id"], "status": "validating",
                                      "created_at": int(time.time()), "output_file_id": None, "error_file_id": None,
                                      "request_counts": {"total": 0, "completed": 0, "failed": 0}, "polls": 0}
            return self._json(200, _public(fake.batches[batch_id]))
        return self._json(404, {"error": {"message": f"no route {self.path}"}})

    def do_GET(self):
        fake = self.fake
        parts = self.path.rstrip("/").split("/")
        if len(parts) >= 3 and parts[-1] == "content" and parts[-3] == "files":
            file_id = parts[-2]
            if file_id not in fake.files:
                return self._json(404, {"error": {"message": "no such file"}})
            return self._send(200, fake.files[file_id], ctype="application/octet-stream")
        if len(parts) >= 2 and parts[-2] == "batches":
            batch = fake.batches.get(parts[-1])
            if batch is None:
                return self._json(404, {"error": {"message": "no such batch"}})
            batch["polls"] += 1
            if batch["status"] != "completed":
                if batch["polls"] > fake.batch_polls:
                    out_id, count = fake.run_batch(batch["input_file_id"])
                    batch.update(status="completed", output_file_id=out_id,
                                 request_counts={"total": count, "completed": count, "failed": 0})
                else:
                    batch["status"] = "in_progress"
            return self._json(200, _public(batch))
        return self._json(404, {"error": {"message": f"no route {self.path}"}})


def _public(batch: dict) -> dict:
    return {k: v for k, v in batch.items() if k != "polls"}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency", type=float, default=0.0, help="seconds per chat request")
    args = parser.parse_args()
    with FakeOpenAI(latency=args.latency) as server:
        print(server.url, flush=True)
        threading.Event().wait()
