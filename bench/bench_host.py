"""GENERATE through the native host (framing, JSON, a pipe, another process) against
the same generation through the library directly (the ctypes wrapper, in process):
same model, greedy, same prompt, context size and threads; timed at the client as a
browser would see it. RUNS pairs, each a direct run and a host run back to back in
alternating order (so a steady drift of the machine's speed favours neither side);
each figure is the median over the pairs of that pair's ratio or difference, which
cancels the slower drift between pairs.

    host_tg_ratio      tokens/s between first and last token, host ÷ direct
    host_added_ttft_ms time to first token, host − direct

    bench_host.py [MODEL] [THREADS]
"""
import json
import os
import statistics
import struct
import subprocess
import sys
import tempfile
import time

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
import tabagent  # noqa: E402

MODEL = sys.argv[1] if len(sys.argv) > 1 and sys.argv[1] else os.environ.get(
    "TABAGENT_TEST_MODEL", os.path.expanduser("~/.cache/tabagent/models/SmolLM2-135M-Instruct.Q4_1.gguf"))
THREADS = int(sys.argv[2]) if len(sys.argv) > 2 else int(os.environ.get("BENCH_THREADS", os.cpu_count() or 1))
N_CTX, TOKENS, RUNS = 1024, 128, 9
MESSAGES = [{"role": "user", "content": "Write a long story about a lighthouse keeper and a storm."}]
PARAMS = {"temperature": 0, "max_tokens": TOKENS}


def direct(ctx):
    times = []
    t0 = time.perf_counter()
    r = ctx.chat(MESSAGES, on_text=lambda s: times.append(time.perf_counter()), **PARAMS)
    return t0, times, r.n_generated_tokens


class HostProc:
    def __init__(self):
        self.cfg = tempfile.NamedTemporaryFile("w", suffix=".json", delete=False)
        json.dump({"model_dirs": [os.path.dirname(os.path.abspath(MODEL))], "n_ctx": N_CTX, "n_seq_max": 1,
                   "n_threads": THREADS, "offline": True}, self.cfg)
        self.cfg.close()
        self.p = subprocess.Popen([os.path.join(ROOT, "target", "release", "tabagent-host")], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, env={**os.environ, "TABAGENT_HOST_CONFIG": self.cfg.name})

    def send(self, obj):
        b = json.dumps(obj).encode()
        self.p.stdin.write(struct.pack("=I", len(b)) + b)
        self.p.stdin.flush()

    def recv(self):
        n = struct.unpack("=I", self.p.stdout.read(4))[0]
        return json.loads(self.p.stdout.read(n))

    def until_final(self, id):
        while True:
            m = self.recv()
            if m["id"] == id and m["type"] in ("result", "error"):
                return m

    def generate(self, id):
        times = []
        t0 = time.perf_counter()
        self.send({"id": id, "action": "GENERATE", "model": "m", "messages": MESSAGES, "params": PARAMS})
        while True:
            m = self.recv()
            if m["type"] == "token":
                times.append(time.perf_counter())
            elif m["type"] in ("result", "error"):
                assert m["type"] == "result", m
                return t0, times, m["result"]["n_generated_tokens"]

    def close(self):
        self.p.stdin.close()
        self.p.wait(10)
        os.unlink(self.cfg.name)


def rates(t0, times, n):
    # Tokens after the first over the time they took; the first token's wait is TTFT.
    return (len(times) - 1) / (times[-1] - times[0]), (times[0] - t0) * 1000.0


def main():
    host = HostProc()
    host.send({"id": "load", "action": "LOAD_MODEL", "path": os.path.abspath(MODEL), "key": "m"})
    assert host.until_final("load")["type"] == "result"
    with tabagent.Model(MODEL) as model, tabagent.Context(model, n_ctx=N_CTX, n_threads=THREADS) as ctx:
        d_tps, h_tps, d_ttft, h_ttft, ratio, added = [], [], [], [], [], []
        direct(ctx)  # warm both
        host.generate("warm")
        for i in range(RUNS):
            # No prefix reuse on either side: the host's sequence is fresh each call.
            def run_direct():
                ctx.reset()
                return rates(*direct(ctx))

            def run_host():
                return rates(*host.generate(f"g{i}"))

            if i % 2 == 0:
                d, h = run_direct(), run_host()
            else:
                h, d = run_host(), run_direct()
            d_tps.append(d[0])
            d_ttft.append(d[1])
            h_tps.append(h[0])
            h_ttft.append(h[1])
            ratio.append(h[0] / d[0])
            added.append(h[1] - d[1])
            print(f"pair {i}: direct {d[0]:.1f} tok/s ttft {d[1]:.1f} ms, host {h[0]:.1f} tok/s "
                  f"ttft {h[1]:.1f} ms -> {ratio[-1]:.3f}", file=sys.stderr)
    host.close()
    med = statistics.median
    print(f"host_threads={THREADS}")
    print(f"direct_tg_tps={med(d_tps):.1f}")
    print(f"host_tg_tps={med(h_tps):.1f}")
    print(f"host_tg_ratio={med(ratio):.3f}")
    print(f"host_tg_ratio_min={min(ratio):.3f}")
    print(f"host_tg_ratio_max={max(ratio):.3f}")
    print(f"direct_ttft_ms={med(d_ttft):.1f}")
    print(f"host_ttft_ms={med(h_ttft):.1f}")
    print(f"host_added_ttft_ms={med(added):.2f}")


if __name__ == "__main__":
    main()
