"""Latency and throughput of the served student at 1, 8 and 32 concurrent clients, with the batching of
concurrent calls on and off (the baseline), on CPU and, where there is one, on the GPU.

    python benchmarks/serve.py                         # tiny student over HTTP; + GPU-shaped students on a GPU
    python benchmarks/serve.py --students tiny --clients 1,8,32 --requests-per-client 4
    python benchmarks/serve.py --students codet5-large,qwen2.5-0.5b --transport inprocess   # needs a GPU

Students:
  - ``tiny``: the tiny preset's shape (d_model 128, 2+2 layers, byte-level BPE tokenizer;
    distill.student.build_tiny) overfitted for a few seconds to write one short EoT system for every
    question, so each request does what a real one does (greedy decoding until </s>, about 30
    tokens, then the equation solver in the sandbox). Served by the real `mlflow models serve`
    (``--env-manager local``) on 127.0.0.1.
  - ``codet5-large`` (T5, d_model 1024, 24+24 layers, vocabulary 32,100) and ``qwen2.5-0.5b``
    (Qwen2, hidden 896, 24 layers, 14 query and 2 key/value heads, vocabulary 151,936): the shapes of
    the paper's largest student and of our decoder-only preset, random weights (speed does not
    depend on them; a random student writes until ``--gpu-new-tokens``). Only where CUDA is
    available, answered in this process by the served model's own code (StudentModel.predict called
    from client threads, as the scoring server calls it), so no 3 GB model is copied into a store.

Scenarios: for each student and client count, ``requests-per-client * clients`` one-question
requests (at least 8), first with batching on (the served default: ``max_batch: auto``, calls that
arrive while the model is busy answered together, up to what memory holds) and then off
(``max_rows: 1, max_batch: 1``: each call decoded alone, the strongest fair baseline: the same model,
server and decoding, no merging). Printed: p50/p95 latency (ms), throughput (requests/s) and the
ratios batched / unbatched. Every row the model returns names the device that answered; the table
shows it.
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
from types import SimpleNamespace

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
UNBATCHED = {"max_rows": 1, "max_batch": 1, "batch_size": 1}


def write_card(folder: Path, student: str) -> None:
    from distill.thoughts import form_names, get_form

    card = {"mix": "etd", "forms": {f: {"version": get_form(f).version, "instruction": get_form(f).instruction}
                                    for f in form_names()},
            "student": student, "data_digest": "benchmark", "train_run_id": None, "preset": "benchmark",
            "best_form": "eot"}
    (folder / "card.json").write_text(json.dumps(card))


def tiny_student(folder: Path, steps: int) -> Path:
    """The tiny preset's student shape, overfitted to write EOT_TARGET; saved in the train stage's layout."""
    import torch

    from distill.config import load_config
    from distill.student import build_tiny
    from distill.thoughts import form_names, get_form

    t = load_config("tiny").train
    texts = [get_form(f).student_input(q) for q in QUESTIONS for f in form_names()] + [EOT_TARGET] * 20
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
    write_card(folder, "tiny (benchmark, overfitted)")
    return folder


def shaped_student(folder: Path, name: str) -> Path:
    """A random-weight student of the named shape (see the module docstring), saved in the train stage's layout."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM, T5Config, T5ForConditionalGeneration

    from distill.student import save_student, train_tokenizer
    from distill.thoughts import form_names, get_form

    texts = [get_form(f).student_input(q) for q in QUESTIONS for f in form_names()] + [EOT_TARGET] * 20
    if name == "codet5-large":
        tokenizer = train_tokenizer(texts, 500)
        config = T5Config(vocab_size=32100, d_model=1024, d_kv=64, d_ff=4096, num_layers=24, num_decoder_layers=24,
                          num_heads=16, dropout_rate=0.0, pad_token_id=tokenizer.pad_token_id,
                          eos_token_id=tokenizer.eos_token_id, decoder_start_token_id=tokenizer.pad_token_id)
        cls = T5ForConditionalGeneration
    elif name == "qwen2.5-0.5b":
        tokenizer = train_tokenizer(texts, 500, append_eos=False)
        tokenizer.padding_side = "left"
        config = Qwen2Config(vocab_size=151936, hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                             num_attention_heads=14, num_key_value_heads=2, max_position_embeddings=32768,
                             tie_word_embeddings=True, pad_token_id=tokenizer.pad_token_id,
                             eos_token_id=tokenizer.eos_token_id, bos_token_id=None)
        cls = Qwen2ForCausalLM
    else:
        raise SystemExit(f"unknown student {name!r}; valid: tiny, codet5-large, qwen2.5-0.5b")
    torch.manual_seed(0)
    with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
        model = cls(config)
    save_student(model.cpu(), tokenizer, folder / "model")
    write_card(folder, f"{name} shape, random weights (benchmark)")
    return folder


# --- the two ways of calling the served model --------------------------------------------------------

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


class Http:
    """The student logged to a throwaway store and served by `mlflow models serve`; call(record) posts one request."""

    def __init__(self, folder: Path, settings: dict, tmp: Path):
        import mlflow

        from distill.serving.logged_model import log_student
        from distill.tracking import Tracker

        uri = f"sqlite:///{tmp / 'mlflow.db'}"
        os.environ["MLFLOW_TRACKING_URI"] = uri
        with Tracker(uri, "distill-bench").run("train-bench"):
            info = log_student(folder, **settings)
        mlflow.set_tracking_uri(uri)
        self.proc, self.url = start_server(uri, info.model_uri, tmp / f"server-{len(settings)}.log")
        self.local = threading.local()

    def call(self, record: dict) -> dict:
        import requests

        if not hasattr(self.local, "session"):
            self.local.session = requests.Session()
        r = self.local.session.post(self.url + "/invocations", json={"dataframe_records": [record]}, timeout=300)
        r.raise_for_status()
        return r.json()["predictions"][0]

    def close(self) -> None:
        stop_server(self.proc)


class InProcess:
    """The served model's own class (StudentModel), loaded from the folder as the pyfunc loader does;
    call(record) is one predict call, made from the client's thread as the scoring server makes it."""

    def __init__(self, folder: Path, settings: dict, tmp: Path):
        from distill.serving.model import DEFAULTS, STUDENT_ARTIFACT, StudentModel

        self.model = StudentModel()
        self.model.load_context(SimpleNamespace(artifacts={STUDENT_ARTIFACT: str(folder)},
                                                model_config={**DEFAULTS, **settings}))

    def call(self, record: dict) -> dict:
        return self.model.predict(None, [record]).to_dict("records")[0]

    def close(self) -> None:
        import torch

        del self.model
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


# --- measuring -----------------------------------------------------------------------------------

def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))]


def measure(call, n: int, clients: int) -> dict:
    """Run call(i) for i < n from ``clients`` threads; latencies in ms, throughput in requests/s."""
    latencies: list[float] = []
    errors: list[str] = []
    devices: set[str] = set()
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
                row = call(i)
            except Exception as exc:  # noqa: BLE001 - counted and reported, the run goes on
                with lock:
                    errors.append(str(exc)[:200])
                continue
            with lock:
                latencies.append((time.perf_counter() - t0) * 1000)
                devices.add(str(row.get("device")))

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
            "rps": len(latencies) / wall, "wall_s": wall, "device": ",".join(sorted(devices))}


def run_student(name: str, folder: Path, transport: str, settings: dict, args, tmp: Path) -> list[dict]:
    rows = []
    for batched in (True, False):
        served = (Http if transport == "http" else InProcess)(
            folder, settings if batched else {**settings, **UNBATCHED}, tmp)
        try:
            def call(i):
                return served.call({"question": QUESTIONS[i % len(QUESTIONS)], "thought": "eot"})

            for i in range(len(QUESTIONS)):  # warm: every question once (the sandbox's workers, CUDA kernels)
                call(i)
            for clients in args.clients:
                n = max(8, args.requests_per_client * clients)
                m = measure(call, n, clients)
                rows.append({"student": name, "transport": transport, "batching": "on" if batched else "off",
                             "clients": clients, **m})
                print(f"  {name:<13} batching {'on ' if batched else 'off'} {clients:>3} clients: p50 {m['p50_ms']:8.1f} ms"
                      f"  p95 {m['p95_ms']:8.1f} ms  {m['rps']:8.2f} req/s  ({m['n']} requests, {m['errors']} errors,"
                      f" device {m['device']})", flush=True)
        finally:
            served.close()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--students", default="tiny,codet5-large,qwen2.5-0.5b",
                        help="Comma-separated: tiny, codet5-large, qwen2.5-0.5b (the last two only on a GPU).")
    parser.add_argument("--clients", default="1,8,32", type=lambda s: [int(c) for c in s.split(",")],
                        help="Concurrent clients per scenario (comma-separated).")
    parser.add_argument("--requests-per-client", type=int, default=4,
                        help="Requests per scenario = this x clients (at least 8).")
    parser.add_argument("--transport", default="auto", choices=("auto", "http", "inprocess"),
                        help="auto: the tiny student over HTTP (mlflow models serve), GPU shapes in-process.")
    parser.add_argument("--steps", type=int, default=80, help="Overfitting steps of the tiny student.")
    parser.add_argument("--gpu-new-tokens", type=int, default=32,
                        help="max_new_tokens of the random GPU-shaped students (they write until it).")
    parser.add_argument("--json", default=None, help="Also write the figures to this JSON file.")
    args = parser.parse_args()

    import torch

    gpu = torch.cuda.is_available()
    print(f"device: {torch.cuda.get_device_name(0) if gpu else 'cpu'} (torch {torch.__version__}, "
          f"{os.cpu_count()} CPUs)")
    tmp = Path(tempfile.mkdtemp(prefix="distill-serve-bench-"))
    rows: list[dict] = []
    try:
        for name in [s.strip() for s in args.students.split(",") if s.strip()]:
            folder = tmp / name
            t0 = time.perf_counter()
            if name == "tiny":
                tiny_student(folder, args.steps)
                transport = "http" if args.transport == "auto" else args.transport
                settings = {}
            else:
                if not gpu:
                    print(f"{name}: skipped (no GPU here; the shape runs unchanged where CUDA is available)")
                    continue
                shaped_student(folder, name)
                transport = "inprocess" if args.transport == "auto" else args.transport
                settings = {"max_new_tokens": args.gpu_new_tokens}
            print(f"{name}: student made in {time.perf_counter() - t0:.1f} s; {transport}", flush=True)
            rows += run_student(name, folder, transport, settings, args, tmp)
            shutil.rmtree(folder, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    print(f"\n{'student':<14}{'clients':>8}{'batching':>10}{'n':>5}{'p50 ms':>10}{'p95 ms':>10}{'req/s':>9}"
          f"{'device':>9}")
    for r in rows:
        print(f"{r['student']:<14}{r['clients']:>8}{r['batching']:>10}{r['n']:>5}{r['p50_ms']:>10.1f}"
              f"{r['p95_ms']:>10.1f}{r['rps']:>9.2f}{r['device']:>9}")
    print("\nratios, batching on / off (same student, server and clients):")
    for r in rows:
        if r["batching"] != "on":
            continue
        off = next(o for o in rows if o["student"] == r["student"] and o["clients"] == r["clients"]
                   and o["batching"] == "off")
        print(f"  {r['student']:<13} {r['clients']:>3} clients: throughput x{r['rps'] / off['rps']:.2f}, "
              f"p50 latency x{r['p50_ms'] / off['p50_ms']:.2f}, p95 latency x{r['p95_ms'] / off['p95_ms']:.2f}")
    for r in rows:
        if r["first_error"]:
            print(f"first error ({r['student']}, {r['clients']} clients, batching {r['batching']}): {r['first_error']}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
