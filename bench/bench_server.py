#!/usr/bin/env python3
"""`tabagent serve` against llama-cpp-python's server, and against the library called
directly, on the same GGUF, threads and greedy sampling.

    python3 bench/bench_server.py [--model M.gguf] [--tokens 128] [--clients 4] [--rounds 3]
        [--threads 2] [--llama-python build/bench-venv/bin/python] [--skip-llama]

1. Aggregate tokens/s of --clients concurrent streaming chat clients (distinct prompts,
   temperature 0, max_tokens --tokens) against `tabagent serve --parallel N` and against
   `python -m llama_cpp.server --n_threads T` (which answers one request at a time):
   sum of streamed tokens / (last token of any client - first request). Goal ≥ 1.3×.
2. One streaming request's generation tokens/s through the server against the same call
   on the library in-process (the Python package, `tabagent.Context.chat_stream`):
   (tokens - 1) / (time from the first piece to the last). Goal ≥ 0.95×.

Tokens are counted as streamed content chunks (one per token on both servers; the
library assembles UTF-8 across tokens, so a chunk may rarely hold two). Servers run one
at a time, on loopback; each round runs every measurement in turn. Prints JSON lines
per measurement, then the medians and ratios.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from typing import Dict, List, Optional

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_MODEL = os.environ.get(
    "TABAGENT_TEST_MODEL", os.path.expanduser("~/.cache/tabagent/models/SmolLM2-135M-Instruct.Q4_1.gguf"))
TOPICS = ["the history of computing", "the life of honey bees", "how rivers shape valleys",
          "the rules and strategy of chess", "the water cycle", "medieval castles", "volcanoes",
          "the invention of printing"]


def prompt(i: int) -> List[Dict[str, str]]:
    return [{"role": "user", "content": f"Write a long, detailed essay about {TOPICS[i % len(TOPICS)]}."}]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_up(port: int, proc: subprocess.Popen, path: str, timeout: float = 180) -> None:
    t0 = time.time()
    while time.time() - t0 < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            c.request("GET", path)
            if c.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError("server did not come up")


def stream_chat(port: int, model: str, msgs, tokens: int) -> Dict[str, float]:
    """One streaming chat request; times of the request, first and last token."""
    body = json.dumps({"model": model, "messages": msgs, "max_tokens": tokens, "temperature": 0,
                       "repeat_penalty": 1.0, "stream": True})
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    t0 = time.perf_counter()
    c.request("POST", "/v1/chat/completions", body, {"Content-Type": "application/json"})
    r = c.getresponse()
    if r.status != 200:
        raise RuntimeError(f"HTTP {r.status}: {r.read()[:300]!r}")
    n, first, last = 0, None, t0
    for raw in r:
        line = raw.strip()
        if not line.startswith(b"data: ") or line == b"data: [DONE]":
            continue
        ch = json.loads(line[6:])
        for choice in ch.get("choices", []):
            if (choice.get("delta") or {}).get("content"):
                n += 1
                last = time.perf_counter()
                first = first or last
    c.close()
    return {"t0": t0, "first": first or last, "last": last, "n": n}


def concurrent(port: int, model: str, clients: int, tokens: int) -> Dict[str, float]:
    out: List[Optional[Dict[str, float]]] = [None] * clients
    errs: List[str] = []

    def go(i: int) -> None:
        try:
            out[i] = stream_chat(port, model, prompt(i), tokens)
        except Exception as e:  # noqa: BLE001
            errs.append(repr(e))

    ts = [threading.Thread(target=go, args=(i,)) for i in range(clients)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    if errs:
        raise RuntimeError(errs[0])
    runs = [r for r in out if r]
    total = sum(r["n"] for r in runs)
    wall = max(r["last"] for r in runs) - min(r["t0"] for r in runs)
    return {"tokens": total, "wall_s": wall, "agg_tok_s": total / wall}


def single(port: int, model: str, tokens: int) -> Dict[str, float]:
    r = stream_chat(port, model, prompt(0), tokens)
    return {"tokens": r["n"], "gen_tok_s": (r["n"] - 1) / max(r["last"] - r["first"], 1e-9)}


class Proc:
    def __init__(self, argv: List[str], port: int, health: str):
        self.p = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_up(port, self.p, health)
        except Exception:
            self.stop()
            raise

    def stop(self) -> None:
        if self.p.poll() is None:
            self.p.terminate()
            try:
                self.p.wait(15)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()


def tabagent_server(a, port: int) -> Proc:
    return Proc([a.tabagent, "serve", "--model", a.model, "--port", str(port), "--parallel", str(a.clients),
                 "--threads", str(a.threads), "--ctx-size", str(a.n_ctx * a.clients)], port, "/health")


def llama_server(a, port: int) -> Proc:
    return Proc([a.llama_python, "-m", "llama_cpp.server", "--model", a.model, "--port", str(port),
                 "--host", "127.0.0.1", "--n_threads", str(a.threads), "--n_threads_batch", str(a.threads),
                 "--n_ctx", str(a.n_ctx), "--model_alias", "m",
                 # By default it cuts a streaming answer short when another request arrives.
                 "--interrupt_requests", "False"], port, "/v1/models")


LIB_CHILD = r"""
import json, sys, time, tabagent
model, tokens, threads, n_ctx, msgs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), json.loads(sys.argv[5])
with tabagent.Model(model) as m, tabagent.Context(m, n_ctx=n_ctx, n_threads=threads, n_threads_batch=threads) as ctx:
    ctx.chat([{"role": "user", "content": "Say hello."}], temperature=0, max_tokens=4)
    ctx.reset()
    s = ctx.chat_stream(msgs, temperature=0, repeat_penalty=1.0, max_tokens=tokens)
    n, first, last = 0, None, None
    for piece in s:
        if piece:
            n += 1
            last = time.perf_counter()
            first = first or last
    print(json.dumps({"tokens": n, "gen_tok_s": (n - 1) / max(last - first, 1e-9)}))
"""


def library_direct(a) -> Dict[str, float]:
    out = subprocess.run([a.tabagent_python, "-c", LIB_CHILD, a.model, str(a.tokens), str(a.threads), str(a.n_ctx),
                          json.dumps(prompt(0))], capture_output=True, text=True, timeout=600)
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-500:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=DEFAULT_MODEL)
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--n-ctx", type=int, default=2048, help="tokens per sequence (llama-cpp-python: its n_ctx)")
    ap.add_argument("--tabagent", default=os.path.join(ROOT, "target", "release", "tabagent"))
    ap.add_argument("--tabagent-python", default=os.path.join(ROOT, ".venv", "bin", "python"))
    ap.add_argument("--llama-python", default=os.path.join(ROOT, "build", "bench-venv", "bin", "python"))
    ap.add_argument("--skip-llama", action="store_true")
    a = ap.parse_args()
    if not a.skip_llama and subprocess.run([a.llama_python, "-c", "import llama_cpp.server"],
                                           capture_output=True).returncode != 0:
        print(f"llama-cpp-python[server] is not importable by {a.llama_python}; --skip-llama or install it",
              file=sys.stderr)
        return 2
    res: Dict[str, List[float]] = {"tabagent_agg": [], "llama_agg": [], "server_single": [], "library_single": []}
    for rnd in range(a.rounds):
        port = free_port()
        s = tabagent_server(a, port)
        try:
            name = os.path.splitext(os.path.basename(a.model))[0]
            stream_chat(port, name, [{"role": "user", "content": "Say hello."}], 4)  # warm-up
            c = concurrent(port, name, a.clients, a.tokens)
            one = single(port, name, a.tokens)
        finally:
            s.stop()
        print(json.dumps({"round": rnd, "engine": "tabagent serve", "concurrent": c, "single": one}), flush=True)
        res["tabagent_agg"].append(c["agg_tok_s"])
        res["server_single"].append(one["gen_tok_s"])
        lib = library_direct(a)
        print(json.dumps({"round": rnd, "engine": "library (Python package)", "single": lib}), flush=True)
        res["library_single"].append(lib["gen_tok_s"])
        if not a.skip_llama:
            port = free_port()
            s = llama_server(a, port)
            try:
                stream_chat(port, "m", [{"role": "user", "content": "Say hello."}], 4)
                c = concurrent(port, "m", a.clients, a.tokens)
            finally:
                s.stop()
            print(json.dumps({"round": rnd, "engine": "llama-cpp-python server", "concurrent": c}), flush=True)
            res["llama_agg"].append(c["agg_tok_s"])
    med = {k: statistics.median(v) for k, v in res.items() if v}
    summary = {"medians_tok_s": med, "clients": a.clients, "tokens": a.tokens, "threads": a.threads}
    if "llama_agg" in med:
        summary["aggregate_ratio_tabagent_vs_llama_cpp_python"] = med["tabagent_agg"] / med["llama_agg"]
    summary["single_ratio_server_vs_library"] = med["server_single"] / med["library_single"]
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
