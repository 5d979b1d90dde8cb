"""`tabagent pull/list/rm/search/verify` against the hub imitation (tests/hub/fake_hub.py)."""

import hashlib
import os
import subprocess
import sys

import pytest
from conftest import BIN, MODEL

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "hub"))
from fake_hub import FakeHub  # noqa: E402

REPO = "tabagent-test/tiny-GGUF"


def blob(n, seed):
    return hashlib.sha256(seed.encode()).digest() * (n // 32) + b"x" * (n % 32)


@pytest.fixture
def hub():
    files = {"README.md": b"# tiny\n", "tiny-Q4_K_M.gguf": blob(300_000, "q4km"), "tiny-Q8_0.gguf": blob(500_000, "q8")}
    h = FakeHub(repos={REPO: files, "other/plain-model": {"config.json": b"{}"}}, token=None)
    h.start()
    yield h
    h.stop()


@pytest.fixture
def env(hub, tmp_path):
    e = dict(os.environ, HF_ENDPOINT=hub.url, HF_HOME=str(tmp_path / "hf"), HF_HUB_DISABLE_TELEMETRY="1")
    for k in ("HF_HUB_CACHE", "HF_TOKEN", "HF_HUB_OFFLINE"):
        e.pop(k, None)
    return e


def run(env, *args, ok=True):
    if not os.path.exists(BIN):
        pytest.skip(f"{BIN} is not built")
    r = subprocess.run([BIN, *args], env=env, capture_output=True, text=True, timeout=120)
    if ok:
        assert r.returncode == 0, r.stderr
    return r


def test_pull_list_verify_rm(env, tmp_path):
    r = run(env, "pull", f"{REPO}:Q8_0")
    path = r.stdout.strip()
    assert path.endswith("tiny-Q8_0.gguf") and os.path.exists(path)
    assert open(path, "rb").read() == blob(500_000, "q8")
    # Without a variant: Q4_K_M.
    assert run(env, "pull", REPO).stdout.strip().endswith("tiny-Q4_K_M.gguf")
    listed = run(env, "list", "--variants").stdout
    assert REPO in listed and "Q8_0" in listed and "downloaded" in listed
    assert "all files intact" in run(env, "verify").stdout
    # A damaged blob is found.
    real = os.path.realpath(path)
    os.chmod(real, 0o644)
    with open(real, "r+b") as f:
        f.write(b"XX")
    v = run(env, "verify", ok=False)
    assert v.returncode != 0 and "MISMATCH" in v.stdout
    run(env, "rm", REPO)
    assert REPO not in run(env, "list").stdout


def test_pull_errors_are_clear(env):
    r = run(env, "pull", "tabagent-test/no-such-repo", ok=False)
    assert r.returncode != 0 and "no-such-repo" in r.stderr
    r = run(env, "pull", f"{REPO}:Q2_K", ok=False)
    assert r.returncode != 0 and "Q2_K" in r.stderr


def test_search(env):
    out = run(env, "search", "tiny").stdout
    assert REPO in out
    # filter=gguf: a repo without GGUF files is not listed.
    assert "other/plain-model" not in run(env, "search", "plain").stdout


def test_show_and_hardware(env):
    if not os.path.exists(MODEL):
        pytest.skip("test model missing")
    out = run(env, "show", MODEL).stdout
    assert "Q4_1" in out and "im_start" in out and "fit" in out
    assert "cores" in run(env, "hardware").stdout


def test_api_pull_streams_progress(env):
    """Ollama's `/api/pull` (the ollama client) downloads into the server's cache."""
    import ollama
    from conftest import Server

    if not os.path.exists(MODEL):
        pytest.skip("test model missing")
    s = Server("--model", MODEL, "--parallel", "1", env={k: env[k] for k in ("HF_ENDPOINT", "HF_HOME")})
    try:
        c = ollama.Client(host=s.url)
        parts = list(c.pull(f"{REPO}:Q8_0", stream=True))
        assert parts[0].status == "pulling manifest" and parts[-1].status == "success"
        done = [p for p in parts if p.total]
        assert done and done[-1].completed == done[-1].total == 500_000
        assert c.pull(f"{REPO}:Q8_0").status == "success"  # cached: no download
        with pytest.raises(ollama.ResponseError):
            c.pull("tabagent-test/no-such-repo", stream=False)
    finally:
        s.stop()
    assert REPO in run(env, "list").stdout
