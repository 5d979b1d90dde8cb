"""download_ratio: tabagent's download speed ÷ curl's for the same ~500 MB file
from the same loopback hub imitation (hub → 302 → CDN, as the real hub does), both
writing into the page cache as they do by default.
download_durable_ratio: the same with `durable=True` (fsync before the file counts as
cached) ÷ curl followed by an fsync of its output: both then wait for the disk.
sha256_gbps: the cache's hashing path (ta_cache_verify re-hashes the blob)."""
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "hub"))
import tabagent  # noqa: E402
from fake_hub import FakeHub  # noqa: E402

SIZE = int(os.environ.get("BENCH_DOWNLOAD_MB", "500")) * 1024 * 1024
RUNS = int(os.environ.get("BENCH_DOWNLOAD_RUNS", "3"))
REPO = "bench/big-GGUF"
NAME = "big-Q8_0.gguf"


def curl(url, out, durable):
    t0 = time.perf_counter()
    subprocess.run(["curl", "-sSfL", "-o", out, url], check=True)
    if durable:
        fd = os.open(out, os.O_RDONLY)
        os.fsync(fd)
        os.close(fd)
    dt = time.perf_counter() - t0
    os.remove(out)
    return dt


def tabagent_dl(hub, root, durable, verify=False):
    with tabagent.Cache(root, endpoint=hub.url, durable=durable) as c:
        t0 = time.perf_counter()
        c.download(REPO, NAME, progress=lambda f, d, t: True)
        dt = time.perf_counter() - t0
        gbps = None
        if verify:
            t0 = time.perf_counter()
            assert c.verify() == []
            gbps = SIZE / (time.perf_counter() - t0) / 1e9
    shutil.rmtree(root)
    return dt, gbps


def flush_dirty():
    # Start each run with no dirty pages from the previous one waiting for the disk.
    os.sync()


data = (hashlib.sha256(b"seed").digest() * 32) * (SIZE // 1024)
hub = FakeHub(repos={REPO: {NAME: data}})
hub.start()
tmp = tempfile.mkdtemp(prefix="ta-bench-")
try:
    url = f"{hub.url}/{REPO}/resolve/main/{NAME}"
    out = os.path.join(tmp, "curl.out")
    best = {}
    gbps = []

    def ta(durable):
        # The first default-mode run also measures re-hashing the downloaded blob.
        dt, g = tabagent_dl(hub, os.path.join(tmp, "cache"), durable, not durable and not gbps)
        gbps.extend([g] if g else [])
        return dt

    for i in range(RUNS):
        for durable in (False, True):
            sides = [("curl", lambda: curl(url, out, durable)), ("ta", lambda: ta(durable))]
            if i % 2:
                sides.reverse()  # neither side always runs second
            for name, run in sides:
                flush_dirty()
                dt = run()
                best[(name, durable)] = min(best.get((name, durable), float("inf")), dt)
    gbps = gbps[0]
    mb = SIZE / 1e6
    print(f"sha256_gbps={gbps:.2f}")
    print(f"download_mb={mb:.0f}")
    print(f"download_curl_mb_s={mb / best[('curl', False)]:.0f}")
    print(f"download_tabagent_mb_s={mb / best[('ta', False)]:.0f}")
    print(f"download_ratio={best[('curl', False)] / best[('ta', False)]:.3f}")
    print(f"download_curl_fsync_mb_s={mb / best[('curl', True)]:.0f}")
    print(f"download_tabagent_durable_mb_s={mb / best[('ta', True)]:.0f}")
    print(f"download_durable_ratio={best[('curl', True)] / best[('ta', True)]:.3f}")
finally:
    hub.stop()
    shutil.rmtree(tmp, ignore_errors=True)
