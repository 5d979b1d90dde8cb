"""Fixtures for the `tabagent` command line tests: the binary, the test models, and a
`tabagent serve` subprocess on a free loopback port (one at a time: the test machine
has two cores)."""

import os
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BIN = os.environ.get("TABAGENT_CLI", os.path.join(ROOT, "target", "release", "tabagent"))
MODEL = os.environ.get(
    "TABAGENT_TEST_MODEL", os.path.expanduser("~/.cache/tabagent/models/SmolLM2-135M-Instruct.Q4_1.gguf")
)
EMBED_MODEL = os.environ.get(
    "TABAGENT_EMBED_MODEL_PATH",
    os.path.expanduser("~/.cache/tabagent/models/all-MiniLM-L6-v2/all-MiniLM-L6-v2.F32.gguf"),
)
CHAT_NAME = os.path.splitext(os.path.basename(MODEL))[0]
EMBED_NAME = os.path.splitext(os.path.basename(EMBED_MODEL))[0]
API_KEY = "test-key-123"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, *args, env=None):
        if not os.path.exists(BIN):
            pytest.skip(f"{BIN} is not built (cargo build --release -p tabagent-cli)")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        e = dict(os.environ)
        for k in list(e):
            if k.startswith("TABAGENT_") and k not in ("TABAGENT_TEST_MODEL",):
                del e[k]
        e.update(env or {})
        self.proc = subprocess.Popen(
            [BIN, "serve", "--port", str(self.port), "--threads", "2", *args],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=e,
        )
        deadline = time.time() + 60
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("tabagent serve exited: " + self.proc.stderr.read().decode(errors="replace"))
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=1) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError("tabagent serve did not come up")

    def health(self):
        import json

        with urllib.request.urlopen(self.url + "/health", timeout=5) as r:
            return json.loads(r.read())

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture(scope="session")
def server():
    """One server for the client tests: the chat model, the embedding model, an API key."""
    if not os.path.exists(MODEL):
        pytest.skip(f"test model {MODEL} is missing")
    args = ["--model", MODEL, "--parallel", "4", "--api-key", API_KEY]
    if os.path.exists(EMBED_MODEL):
        args += ["--embed-model", EMBED_MODEL]
    s = Server(*args)
    yield s
    s.stop()
