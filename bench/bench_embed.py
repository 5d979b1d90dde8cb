"""Embedding throughput (issue 12): 256 short sentences embedded in batches vs one
call per sentence on the same context (embed_batch_ratio), and against the NumPy
reference implementation of the same model (tests/embed/reference.py, float32, one
sentence at a time as sentence-transformers' reference loop would) on this machine.
Prints name=value lines; medians of 3 runs.

    bench_embed.py [MODEL_DIR] [THREADS]
"""
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "embed"))
import tabagent  # noqa: E402

# NumPy is imported only after the library's timings: its BLAS threads spin after
# each call and would take the cores the library's threads run on.


def fast_gelu(x):
    """Exact GELU with a vectorised erf (Abramowitz-Stegun 7.1.26, error < 2e-7): the
    reference's own erf is a Python call per element, too slow to be a fair timing."""
    z = np.abs(x) / np.sqrt(2.0)
    t = 1.0 / (1.0 + 0.3275911 * z)
    poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))))
    erf = np.sign(x) * (1.0 - poly * np.exp(-z * z))
    return (0.5 * x * (1.0 + erf)).astype(x.dtype)



model_dir = Path(sys.argv[1] if len(sys.argv) > 1 and sys.argv[1] else
                 os.path.join(os.environ.get("TABAGENT_MODEL_DIR", os.path.expanduser("~/.cache/tabagent/models")),
                              "all-MiniLM-L6-v2"))
threads = int(sys.argv[2]) if len(sys.argv) > 2 else int(os.environ.get("BENCH_THREADS", os.cpu_count() or 1))
subjects = ["The cat", "A developer", "My neighbour", "The old train", "A small bird", "The committee",
            "Her brother", "The new phone"]
verbs = ["sleeps on", "writes about", "looks at", "waits near", "talks to", "moves past", "dreams of",
         "forgets"]
objects = ["the warm window.", "a long report.", "the quiet river.", "an empty station."]
texts = [f"{s} {v} {o}" for s in subjects for v in verbs for o in objects][:256]
assert len(texts) == 256


def median_rate(fn, runs=3):
    rates = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        rates.append(len(texts) / (time.perf_counter() - t))
    return statistics.median(rates)


with tabagent.Model(str(model_dir / "all-MiniLM-L6-v2.F32.gguf")) as m, \
        tabagent.Context(m, n_threads=threads, embeddings=True) as ctx:
    ctx.embed(texts[:8], as_numpy=False)  # warm up
    batch = median_rate(lambda: ctx.embed(texts, as_numpy=False))
    single = median_rate(lambda: [ctx.embed([t], as_numpy=False) for t in texts])
    lib = ctx.embed(texts, as_numpy=False)

import numpy as np  # noqa: E402
import reference  # noqa: E402

reference.gelu = fast_gelu
enc = reference.SentenceEncoder(model_dir, np.float32)
ref_rate = median_rate(lambda: [enc.encode(t) for t in texts], runs=1)
ref = np.stack([enc.encode(t)[0] for t in texts[:16]])
cos = float(np.min(np.sum(ref * np.array(lib[:16], dtype=np.float32), axis=1)))

print(f"embed_threads={threads}")
print(f"embed_batch_texts_per_s={batch:.1f}")
print(f"embed_single_texts_per_s={single:.1f}")
print(f"embed_batch_ratio={batch / single:.2f}")
print(f"embed_numpy_ref_texts_per_s={ref_rate:.1f}")
print(f"embed_batch_vs_numpy_ref={batch / ref_rate:.2f}")
print(f"embed_min_cosine_vs_ref={cos:.6f}")
