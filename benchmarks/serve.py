"""Latency and throughput of the served student: `mlflow models serve` on 127.0.0.1, a student
registered and promoted in a throwaway store, then 200 sequential and 200 concurrent (8 clients)
one-question requests. Also the time from starting `mlflow models serve` to its first answer.

    python benchmarks/serve.py                                  # tiny-preset-shaped student (see below)
    python benchmarks/serve.py --student runs/tiny/students/etd --thought eot --requests 100

Default student: the tiny preset's shape (d_model 128, 2+2 layers, byte-level BPE tokenizer;
distill.student.build_tiny) overfitted for a few seconds to write one short EoT system for every
question, so each request does what a real one does (greedy decoding until </s>, about 30 tokens,
then the equation solver in the sandbox) with a known, realistic output length.
Baseline: the same model's pyfunc predict called in-process, one question at a time; the printed
ratios say what HTTP and the server add, and what 8 clients gain over one (calls that arrive while
the model is busy are answered together in one batch; --no-combine switches that off).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

QUESTIONS = [
    "Tom has 3 apples and buys 4 more. How many apples does he have now?",
    "A baker makes 12 loaves a day for 5 days and sells 40 of them. How many loaves are left?",
    "Sara reads 15 pages a day. How many days does she need for a 120-page book?",
    "A shirt costs $20 and is on sale for 25% off. What is the sale price?",
    "There are 48 marbles, three times as many blue ones as red ones. How many blue marbles are there?",
    "A train travels 60 miles per hour for 3 hours. How far does it go?",
    "Jack had 50 dollars, spent 12 on lunch and 9 on a book. How much money does he have left?",
    "Each box holds 6 eggs. How many boxes are needed for 45 eggs if every box must be full?",
]
EOT_TARGET = "% Tom has 3 apples and buys 4 more:\ntotal_apples = 3 + 4\nans = total_apples"
# few repeated words: a 2-layer T5 has no absolute positions and loops on repetitive targets


def tiny_student(folder: Path, steps: int) -> Path:
    """The tiny preset's student shape, overfitted to write EOT_TARGET; saved in the train stage's layout."""
    import torch

    from distill.config import load_config
    from distill.student import build_tiny
    from distill.thoughts import FORM_NAMES, get_form

    t = load_config("tiny").train
    texts = [get_form(f).student_input(q) for q in QUESTIONS for f in FORM_NAMES] + [EOT_TARGET] * 20
    model, tokenizer = build_tiny(texts, d_model=t.tiny_d_model, layers=t.tiny_layers, heads=t.tiny_heads,
                                  d_ff=t.tiny_d_ff, vocab=500, dropout=0.0)
    eot = get_form("eot")
    inputs = tokenizer([eot.student_input(q) for q in QUESTIONS[:2]], return_tensors="pt", padding=True)
    labels = tokenizer([EOT_TARGET] * 2, return_tensors="pt", padding=True).input_ids
    optim = torch.optim.Adam(model.parameters(), lr=5e-3)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # faster for a model this small on a shared CPU
    model.train()
    for _ in range(steps):
        model(**inputs, labels=labels).loss.backward()
        optim.step()
        optim.zero_grad()
    model.eval()
    torch.set_num_threads(threads)
    model.save_pretrained(folder / "model")
    tokenizer.save_pretrained(folder / "model")
    card = {"mix": "etd", "forms": {f: {"version": get_form(f).version, "instruction": get_form(f).instruction}
                                    for f in FORM_NAMES},
            "student": "tiny (benchmark, overfitted)", "tokenizer": "bpe-500", "data_digest": "benchmark",
            "train_run_id": None, "preset": "benchmark"}
    (folder / "card.json").write_text(json.dumps(card))
    return folder


def start_server(uri: str, model_uri: str, log_path: Path) -> tuple[subprocess.Popen, str]:
    """`mlflow models serve` in its own process group (as `make serve` runs it); returns it and its URL."""
    import requests

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    bin_dir = str(Path(sys.executable).parent)  # the venv's bin: the server calls uvicorn from PATH
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "PATH": bin_dir + os.pathsep + os.environ.get("PATH", "")}
    proc = subprocess.Popen([os.path.join(bin_dir, "mlflow"), "models", "serve", "-m", model_uri, "--env-manager",
                             "local", "--host", "127.0.0.1", "--port", str(port)],
                            env=env, stdout=open(log_path, "w"), stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    while proc.poll() is None:
        try:
            if requests.get(url + "/ping", timeout=2).status_code == 200:
                return proc, url
        except requests.RequestException:
            time.sleep(0.1)
    raise RuntimeError(f"server exited with {proc.returncode}:\n{log_path.read_text()[-3000:]}")


def stop_server(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))]


def measure(call, n: int, clients: int) -> dict:
    """Run call(i) for i < n from ``clients`` threads; latencies in ms, throughput in requests/s."""
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    counter = iter(range(n))

    def worker():
        while True:
            with lock:
                i = next(counter, None)
            if i is None:
                return
            t0 = time.perf_counter()
            try:
                call(i)
            except Exception as exc:  # noqa: BLE001 - counted and reported, the run goes on
                with lock:
                    errors.append(str(exc)[:200])
                continue
            with lock:
                latencies.append((time.perf_counter() - t0) * 1000)

    start = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(clients)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    wall = time.perf_counter() - start
    return {"n": len(latencies), "errors": len(errors), "first_error": errors[0] if errors else None,
            "p50_ms": statistics.median(latencies) if latencies else float("nan"),
            "p95_ms": percentile(latencies, 95) if latencies else float("nan"),
            "rps": len(latencies) / wall, "wall_s": wall}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--student", default=None,
                        help="A student folder (model/ + card.json); default: tiny preset shape, overfitted.")
    parser.add_argument("--thought", default=None, help="Thought to ask for (default: the student's default).")
    parser.add_argument("--requests", type=int, default=200, help="Requests per scenario.")
    parser.add_argument("--clients", type=int, default=8, help="Concurrent clients in the second scenario.")
    parser.add_argument("--steps", type=int, default=80, help="Overfitting steps of the default student.")
    parser.add_argument("--no-combine", action="store_true",
                        help="Log the model with max_rows=1, so that calls arriving while the model is busy are "
                             "answered one by one instead of in one batch (the comparison for the combining).")
    parser.add_argument("--json", default=None, help="Also write the figures to this JSON file.")
    args = parser.parse_args()

    import mlflow
    import requests

    from distill.config import load_config
    from distill.files import read_json
    from distill.serving.logged_model import log_student
    from distill.stages import promote, register
    from distill.tracking import Tracker

    tmp = Path(tempfile.mkdtemp(prefix="distill-serve-bench-"))
    proc = None
    try:
        t0 = time.perf_counter()
        student = Path(args.student) if args.student else tiny_student(tmp / "student", args.steps)
        print(f"student: {args.student or 'tiny preset shape, overfitted'} ({time.perf_counter() - t0:.1f} s to make)")
        uri = f"sqlite:///{tmp / 'mlflow.db'}"
        os.environ["MLFLOW_TRACKING_URI"] = uri
        cfg = load_config(None, [])
        tracker = Tracker(uri, cfg.tracking.experiment)
        card = read_json(student / "card.json")
        selected = card.get("best_form") or next(iter(card["forms"]))
        with tracker.run("train-etd", {"distill.stage": "train"}):
            info = log_student(student, **({"max_rows": 1} if args.no_combine else {}))
            tracker.log_metrics({f"val/{selected}/accuracy": 0.0})  # promote ranks on validation accuracy
            run_id = tracker.run_id
        register.run(cfg, tmp / "runs", tracker, train_run_id=run_id, log=lambda _: None,
                     eval_summary={"mix": card["mix"], "forms": card["forms"], "train_run_id": run_id,
                                   "selected_form": selected,
                                   "metrics": {f"{t}/selected/accuracy": 0.0 for t in cfg.data.test_sets}})
        promote.run(cfg, tmp / "runs", tracker, mix=card["mix"], log=lambda _: None)

        def record(i: int) -> dict:
            return {"question": QUESTIONS[i % len(QUESTIONS)], **({"thought": args.thought} if args.thought else {})}

        # baseline: the pyfunc model in this process, no HTTP
        model = mlflow.pyfunc.load_model(info.model_uri)
        first = model.predict([record(0)]).to_dict("records")[0]
        print(f"answer: {first['answer']} ({first['thought']}, {first['status']}); output: {first['reasoning'][:60]!r}")
        direct = measure(lambda i: model.predict([record(i)]), args.requests, 1)
        del model

        started = time.perf_counter()
        proc, url = start_server(uri, f"models:/{cfg.promote.model_name}@{cfg.promote.alias}", tmp / "server.log")
        session = requests.Session()

        def call(i, s=session):
            r = s.post(url + "/invocations", json={"dataframe_records": [record(i)]}, timeout=120)
            r.raise_for_status()
            return r.json()

        call(0)
        to_first = time.perf_counter() - started
        sequential = measure(call, args.requests, 1)
        sessions = threading.local()

        def concurrent_call(i):
            if not hasattr(sessions, "s"):
                sessions.s = requests.Session()
            return call(i, sessions.s)

        concurrent = measure(concurrent_call, args.requests, args.clients)
    finally:
        if proc is not None:
            stop_server(proc)
        shutil.rmtree(tmp, ignore_errors=True)

    print(f"`mlflow models serve` start to first answer: {to_first:.1f} s")
    print(f"{'scenario':<28}{'n':>5}{'errors':>8}{'p50 ms':>10}{'p95 ms':>10}{'req/s':>9}")
    rows = {"in-process predict (baseline)": direct, "HTTP, sequential": sequential,
            f"HTTP, {args.clients} concurrent clients": concurrent}
    for name, m in rows.items():
        print(f"{name:<28}{m['n']:>5}{m['errors']:>8}{m['p50_ms']:>10.1f}{m['p95_ms']:>10.1f}{m['rps']:>9.2f}")
    print(f"ratio HTTP sequential / in-process p50 latency: {sequential['p50_ms'] / direct['p50_ms']:.2f}")
    print(f"ratio {args.clients} clients / 1 client throughput: {concurrent['rps'] / sequential['rps']:.2f}")
    for m in rows.values():
        if m["first_error"]:
            print(f"first error: {m['first_error']}")
    if args.json:
        Path(args.json).write_text(json.dumps({"seconds_to_first_answer": to_first, **rows}, indent=2))


if __name__ == "__main__":
    main()
