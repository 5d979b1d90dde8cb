#!/usr/bin/env python3
"""Chat tokens/s through the installed tabagent package against llama-cpp-python, on
the same GGUF, threads, prompt and greedy sampling. Each measurement runs in a child
process of its own, one engine at a time, in alternating order over the rounds.

    python3 bench/bench_python_pkg.py [--model M.gguf] [--tokens 128] [--rounds 5] [--threads 2]
        [--tabagent-python build/py-pkg-venv/bin/python] [--llama-python build/bench-venv/bin/python]

Both are timed the same way from Python, around a streaming chat call: prompt tok/s =
prompt tokens / time to the first piece; generation tok/s = (generated tokens - 1) /
(time from the first piece to the last). Token counts are each engine's own
(tabagent's GenResult; llama-cpp-python's llama_perf_context counters). Each child
first runs a short warm-up chat, then resets its KV cache, so nothing is reused.
Prints each round, the medians and the ratio tabagent / llama-cpp-python per metric.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Any, Dict, List

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_MODEL = os.environ.get(
    "TABAGENT_TEST_MODEL", os.path.expanduser("~/.cache/tabagent/models/SmolLM2-135M-Instruct.Q4_1.gguf"))
QUESTION = (
    "Here are some notes on the history of computing. Early machines such as the Analytical Engine were "
    "mechanical designs; the twentieth century brought relays, vacuum tubes, transistors and finally "
    "integrated circuits, each making computers smaller, faster and cheaper. Programming moved from "
    "plugboards to machine code, assembly, and high-level languages such as FORTRAN, COBOL, Lisp and C. "
    "Personal computers arrived in the late 1970s, networks joined them in the 1980s and the web in the "
    "1990s. Write a long, detailed essay that retells this history in your own words, with examples."
)
MESSAGES = [{"role": "user", "content": QUESTION}]
WARMUP = [{"role": "user", "content": "Say hello."}]


# ----------------------------------------------------------------------------- children


def child_tabagent(a: argparse.Namespace) -> Dict[str, Any]:
    import tabagent

    with tabagent.Model(a.model) as m, tabagent.Context(m, n_ctx=a.n_ctx, n_threads=a.threads,
                                                        n_threads_batch=a.threads) as ctx:
        ctx.chat(WARMUP, temperature=0, max_tokens=4)
        ctx.reset()
        s = ctx.chat_stream(MESSAGES, temperature=0, repeat_penalty=1.0, max_tokens=a.tokens)
        t0 = time.perf_counter()
        first = last = t0
        for _piece in s:
            last = time.perf_counter()
            if first == t0:
                first = last
        r = s.result
        assert r is not None
        return {"engine": "tabagent", "n_prompt": r.n_prompt_tokens - r.n_reused_tokens,
                "n_gen": r.n_generated_tokens, "ttft_s": first - t0, "gen_s": last - first,
                "engine_prompt_ms": r.prompt_ms, "engine_gen_ms": r.gen_ms,
                "where": os.path.dirname(tabagent.__file__), "lib": tabagent.library_path()}


def child_llama(a: argparse.Namespace) -> Dict[str, Any]:
    import llama_cpp
    from llama_cpp import Llama

    llm = Llama(model_path=a.model, n_ctx=a.n_ctx, n_threads=a.threads, n_threads_batch=a.threads,
                n_gpu_layers=0, verbose=False)
    llm.create_chat_completion(WARMUP, temperature=0, max_tokens=4)
    llm.reset()
    ctx = llm._ctx.ctx
    if not hasattr(llama_cpp, "llama_perf_context"):
        sys.exit("llama-cpp-python >= 0.3 is needed (llama_perf_context)")
    llama_cpp.llama_perf_context_reset(ctx)
    t0 = time.perf_counter()
    first = last = t0
    chunks = 0
    for chunk in llm.create_chat_completion(MESSAGES, temperature=0.0, top_k=1, top_p=1.0, min_p=0.0,
                                            repeat_penalty=1.0, max_tokens=a.tokens, stream=True):
        if chunk["choices"][0]["delta"].get("content"):
            last = time.perf_counter()
            chunks += 1
            if first == t0:
                first = last
    p = llama_cpp.llama_perf_context(ctx)
    # n_eval counts the decode of each generated token but the last (sampled, never decoded).
    out: Dict[str, Any] = {"engine": "llama-cpp-python", "n_prompt": p.n_p_eval, "n_gen": p.n_eval + 1,
                           "ttft_s": first - t0, "gen_s": last - first, "engine_prompt_ms": p.t_p_eval_ms,
                           "engine_gen_ms": p.t_eval_ms, "version": llama_cpp.__version__}
    out["chunks"] = chunks
    return out


# ----------------------------------------------------------------------------- parent


def rates(r: Dict[str, Any]) -> Dict[str, float]:
    return {"prompt_tps": r["n_prompt"] / r["ttft_s"] if r["ttft_s"] > 0 else 0.0,
            "gen_tps": (r["n_gen"] - 1) / r["gen_s"] if r["gen_s"] > 0 else 0.0}


def run_child(python: str, engine: str, a: argparse.Namespace) -> Dict[str, Any]:
    cmd = [python, os.path.abspath(__file__), "--child", engine, "--model", a.model, "--tokens", str(a.tokens),
           "--threads", str(a.threads), "--n-ctx", str(a.n_ctx)]
    # Run outside the source tree so `import tabagent` is the installed package.
    p = subprocess.run(cmd, capture_output=True, text=True, cwd="/", env={**os.environ, "PYTHONPATH": ""})
    if p.returncode != 0:
        sys.exit(f"{engine} child failed ({p.returncode}):\n{p.stderr[-4000:]}")
    return dict(json.loads(p.stdout.strip().splitlines()[-1]))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=DEFAULT_MODEL)
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--n-ctx", type=int, default=2048)
    ap.add_argument("--tabagent-python", default=os.path.join(ROOT, "build", "py-pkg-venv", "bin", "python"))
    ap.add_argument("--llama-python", default=os.path.join(ROOT, "build", "bench-venv", "bin", "python"))
    ap.add_argument("--child", choices=["tabagent", "llama"], help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        print(json.dumps((child_tabagent if a.child == "tabagent" else child_llama)(a)))
        return 0

    for what, py in (("tabagent", a.tabagent_python), ("llama-cpp-python", a.llama_python)):
        if not os.path.exists(py):
            sys.exit(f"{what}: no interpreter at {py} (see the docstring)")
    print(f"model {a.model}, {a.tokens} tokens, {a.threads} threads, greedy, {a.rounds} rounds")
    rows: List[Dict[str, Dict[str, float]]] = []
    for i in range(a.rounds):
        order = ["tabagent", "llama"] if i % 2 == 0 else ["llama", "tabagent"]
        got: Dict[str, Dict[str, Any]] = {}
        for e in order:
            got[e] = run_child(a.tabagent_python if e == "tabagent" else a.llama_python, e, a)
        if i == 0:
            print(f"tabagent from {got['tabagent']['where']} (library {got['tabagent']['lib']}); "
                  f"llama-cpp-python {got['llama'].get('version')}")
        t, l = rates(got["tabagent"]), rates(got["llama"])
        rows.append({"tabagent": t, "llama": l})
        print(f"round {i + 1}: tabagent prompt {t['prompt_tps']:7.1f} tok/s gen {t['gen_tps']:6.1f} tok/s "
              f"({got['tabagent']['n_prompt']}+{got['tabagent']['n_gen']} tokens) | "
              f"llama-cpp-python prompt {l['prompt_tps']:7.1f} tok/s gen {l['gen_tps']:6.1f} tok/s "
              f"({got['llama']['n_prompt']}+{got['llama']['n_gen']} tokens) | "
              f"ratio prompt {t['prompt_tps'] / l['prompt_tps']:.2f} gen {t['gen_tps'] / l['gen_tps']:.2f}",
              flush=True)
    for metric, name in (("prompt_tps", "prompt tok/s"), ("gen_tps", "generation tok/s")):
        mt = statistics.median(r["tabagent"][metric] for r in rows)
        ml = statistics.median(r["llama"][metric] for r in rows)
        mr = statistics.median(r["tabagent"][metric] / r["llama"][metric] for r in rows)
        print(f"median {name}: tabagent {mt:.1f}, llama-cpp-python {ml:.1f}; "
              f"ratio tabagent/llama-cpp-python {mr:.2f} (median of per-round ratios)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
