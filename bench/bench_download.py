"""download_ratio: tabagent's download speed ÷ curl's for the same ~500 MB file
from the same loopback hub imitation (hub → 302 → CDN, as the real hub does);
sha256_gbps: the cache's hashing path (ta_cache_verify re-hashes the blob)."""
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "examples", "python-ctypes"))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "hub"))
import tabagent  # noqa: E402
from fake_hub import FakeHub  # noqa: E402

SIZE = int(os.environ.get("BENCH_DOWNLOAD_MB", "500")) * 1024 * 1024
REPO = "bench/big-GGUF"
NAME = "big-Q8_0.gguf"

data = (hashlib.sha256(b"seed").digest() * 32) * (SIZE // 1024)
hub = FakeHub(repos={REPO: {NAME: data}})
hub.start()
tmp = tempfile.mkdtemp(prefix="ta-bench-")
try:
    url = f"{hub.url}/{REPO}/resolve/main/{NAME}"
    best_curl = best_ta = float("inf")
    for i in range(3):
        out = os.path.join(tmp, "curl.out")
        t0 = time.perf_counter()
        subprocess.run(["curl", "-sSfL", "-o", out, url], check=True)
        best_curl = min(best_curl, time.perf_counter() - t0)
        os.remove(out)
        root = os.path.join(tmp, f"cache{i}")
        with tabagent.Cache(root, endpoint=hub.url) as c:
            t0 = time.perf_counter()
            c.download(REPO, NAME, progress=lambda f, d, t: True)
            best_ta = min(best_ta, time.perf_counter() - t0)
            if i == 2:
                t0 = time.perf_counter()
                assert c.verify() == []
                dt = time.perf_counter() - t0
                print(f"sha256_gbps={SIZE / dt / 1e9:.2f}")
        if i < 2:
            shutil.rmtree(root)
    mb = SIZE / 1e6
    print(f"download_mb={mb:.0f}")
    print(f"download_curl_mb_s={mb / best_curl:.0f}")
    print(f"download_tabagent_mb_s={mb / best_ta:.0f}")
    print(f"download_ratio={best_curl / best_ta:.3f}")
finally:
    hub.stop()
    shutil.rmtree(tmp, ignore_errors=True)
