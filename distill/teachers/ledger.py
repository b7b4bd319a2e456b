"""The cost ledger: tokens per API call, totals per run, and the budget that stops a run cleanly.

Data contract: ``<run_dir>/ledger.jsonl``, one record per paid call
``{"hash", "model", "input_tokens", "output_tokens", "cost", "source"}`` (fsynced), so the totals
and the budget survive a crash and a rerun. A response served from the completion store costs
nothing and is not in the ledger.

Budget: before each call the ledger reserves that call's worst case (prompt tokens estimated at
4 characters per token, plus ``n * max_tokens`` output tokens); a call whose reservation would take
spent + reserved past the budget is not sent. So the run never spends more than the budget,
and everything already paid for is stored.
"""
from __future__ import annotations

import threading
from pathlib import Path

from distill.files import append_log, read_log


class Ledger:
    def __init__(self, path: str | Path | None = None, prices: dict | None = None, budget: float | None = None,
                 model: str = ""):
        self.path = Path(path) if path else None
        self.prices = prices or {}
        self.budget = budget
        self.model = model
        self.calls = self.input_tokens = self.output_tokens = 0
        self.cost = 0.0
        self.run_calls = self.run_input_tokens = self.run_output_tokens = 0
        self.run_cost = 0.0
        self.reserved = 0.0
        self._lock = threading.Lock()
        if budget is not None and model not in self.prices:
            from distill.errors import ConfigError

            raise ConfigError(f"teacher.budget needs a price for model {model!r}: set teacher.prices, e.g. "
                              f"--set 'teacher.prices={{{model}: {{input: 0.5, output: 1.5}}}}' (per million tokens)")
        if self.path:
            for record in read_log(self.path):
                self.calls += 1
                self.input_tokens += int(record.get("input_tokens", 0))
                self.output_tokens += int(record.get("output_tokens", 0))
                self.cost += float(record.get("cost", 0.0))

    def price(self, input_tokens: float, output_tokens: float, model: str | None = None) -> float:
        table = self.prices.get(model or self.model) or {}
        return (input_tokens * float(table.get("input", 0.0)) + output_tokens * float(table.get("output", 0.0))) / 1e6

    def estimate(self, request: dict) -> float:
        chars = sum(len(str(m.get("content", ""))) + 8 for m in request.get("messages", []))
        return self.price(chars / 4 + 16, int(request.get("n", 1)) * int(request.get("max_tokens", 0)),
                          request.get("model"))

    def reserve(self, amount: float) -> bool:
        """Hold ``amount`` for a call about to be sent; False when it would pass the budget."""
        with self._lock:
            if self.budget is not None and self.cost + self.reserved + amount > self.budget:
                return False
            self.reserved += amount
            return True

    def record(self, request_hash: str, usage: dict, model: str, reserved: float = 0.0, source: str = "api") -> dict:
        """Add one paid call (releasing its reservation) and append it to the ledger file."""
        return self.record_many([(request_hash, usage, model, reserved, source)])[0]

    def record_many(self, items: list[tuple]) -> list[dict]:
        """Add ``(hash, usage, model, reserved, source)`` calls with one append and fsync."""
        entries = []
        with self._lock:
            for request_hash, usage, model, reserved, source in items:
                inp = int((usage or {}).get("prompt_tokens") or 0)
                out = int((usage or {}).get("completion_tokens") or 0)
                cost = self.price(inp, out, model)
                entries.append({"hash": request_hash, "model": model, "input_tokens": inp, "output_tokens": out,
                                "cost": cost, "source": source})
                self.reserved = max(0.0, self.reserved - reserved)
                self.calls += 1
                self.input_tokens += inp
                self.output_tokens += out
                self.cost += cost
                self.run_calls += 1
                self.run_input_tokens += inp
                self.run_output_tokens += out
                self.run_cost += cost
            if self.path:
                self._append(entries)
        return entries

    def _append(self, entries: list[dict]) -> None:
        # one write and one fsync per group of calls; the ledger has always been written ASCII-escaped
        with append_log(self.path, ensure_ascii=True) as log:
            log.write_all(entries)

    def release(self, amount: float) -> None:
        with self._lock:
            self.reserved = max(0.0, self.reserved - amount)

    def totals(self) -> dict:
        """This invocation's figures and the run directory's running totals."""
        return {"calls": self.run_calls, "input_tokens": self.run_input_tokens,
                "output_tokens": self.run_output_tokens, "cost": round(self.run_cost, 6),
                "total_calls": self.calls, "total_input_tokens": self.input_tokens,
                "total_output_tokens": self.output_tokens, "total_cost": round(self.cost, 6),
                "budget": self.budget}
