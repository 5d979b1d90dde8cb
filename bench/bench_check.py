"""The cost of the out-of-process model check against loading in-process: the
median of 5 runs each of tabagent.check_model(MODEL) (a child loads the file and
decodes one token) and of an in-process load + context + one token.

    .venv/bin/python bench/bench_check.py MODEL.gguf
"""
import sys, time, statistics
import tabagent
M = sys.argv[1]
chk, load = [], []
for _ in range(5):
    t = time.perf_counter(); r = tabagent.check_model(M); chk.append((time.perf_counter() - t) * 1000)
    t = time.perf_counter()
    with tabagent.Model(M) as m:
        with tabagent.Context(m, n_ctx=256) as c:
            c.generate("Hello", max_tokens=1, temperature=0)
    load.append((time.perf_counter() - t) * 1000)
print(f"check_model: median {statistics.median(chk):.0f} ms (child peak RSS {r['peak_rss_bytes']/2**20:.0f} MiB); "
      f"in-process load+context+1 token: median {statistics.median(load):.0f} ms; ratio {statistics.median(chk)/statistics.median(load):.2f}")
