"""The native host binary (target/release/tabagent-host) spoken to as a browser
speaks to it: 32-bit native-endian length + UTF-8 JSON on stdin/stdout."""

import json
import os
import shutil
import struct
import subprocess
import sys
import threading
import time

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.join(HERE, "..", "..")
sys.path.insert(0, os.path.join(HERE, "..", "hub"))
from fake_hub import FakeHub  # noqa: E402

HOST = os.path.join(ROOT, "target", "release", "tabagent-host")
MODEL = os.environ.get(
    "TABAGENT_TEST_MODEL", os.path.expanduser("~/.cache/tabagent/models/SmolLM2-135M-Instruct.Q4_1.gguf"))
EMBED_MODEL = os.path.join(os.path.dirname(MODEL), "all-MiniLM-L6-v2", "all-MiniLM-L6-v2.F32.gguf")


class Conn:
    """One running host: send requests, read every message it sends."""

    def __init__(self, tmp_path, args=(), **cfg):
        cfg.setdefault("cache_dir", str(tmp_path / "cache"))
        cfg.setdefault("model_dirs", [os.path.dirname(MODEL)])
        cfg.setdefault("n_ctx", 512)
        cfg.setdefault("n_threads", 2)
        cfg.setdefault("log_file", str(tmp_path / "host.log"))
        self.cfg_path = tmp_path / "host.json"
        self.cfg_path.write_text(json.dumps(cfg))
        self.p = subprocess.Popen([HOST, *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, env={**os.environ, "TABAGENT_HOST_CONFIG": str(self.cfg_path)})
        self.msgs = []
        self.cv = threading.Condition()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        out = self.p.stdout
        while True:
            head = out.read(4)
            if len(head) < 4:
                break
            n = struct.unpack("=I", head)[0]
            body = out.read(n)
            assert n < 1 << 20, f"message of {n} bytes: browsers refuse 1 MiB or more"
            with self.cv:
                self.msgs.append(json.loads(body))
                self.cv.notify_all()
        with self.cv:
            self.msgs.append(None)  # EOF marker
            self.cv.notify_all()

    def raw(self, data: bytes):
        self.p.stdin.write(data)
        self.p.stdin.flush()

    def send(self, obj):
        body = obj if isinstance(obj, bytes) else json.dumps(obj).encode()
        self.raw(struct.pack("=I", len(body)) + body)

    def final(self, id, timeout=60):
        """Every message of request `id` up to its result or error (chunks joined)."""
        deadline = time.time() + timeout
        with self.cv:
            while True:
                mine = [m for m in self.msgs if m is not None and m.get("id") == id]
                chunks = [m for m in mine if m["type"] == "chunk"]
                if chunks and len(chunks) == chunks[0]["count"]:
                    whole = json.loads("".join(c["data"] for c in sorted(chunks, key=lambda c: c["index"])))
                    return [m for m in mine if m["type"] != "chunk"] + [whole]
                if any(m["type"] in ("result", "error") for m in mine):
                    return mine
                left = deadline - time.time()
                assert left > 0, f"no final message for {id}: {mine[-3:]}"
                assert None not in self.msgs, f"host exited: {self.p.stderr.read().decode()}"
                self.cv.wait(left)

    def first_token(self, id, timeout=60):
        """Wait until request `id` has streamed its first token."""
        deadline = time.time() + timeout
        with self.cv:
            while not any(m and m.get("id") == id and m["type"] == "token" for m in self.msgs):
                left = deadline - time.time()
                assert left > 0, f"no token for {id}"
                self.cv.wait(left)

    def ask(self, obj, timeout=60):
        self.send(obj)
        return self.final(obj["id"], timeout)[-1]

    def close(self, timeout=10):
        try:
            self.p.stdin.close()
        except BrokenPipeError:
            pass
        return self.p.wait(timeout)


@pytest.fixture
def host(tmp_path):
    c = Conn(tmp_path)
    yield c
    c.close()


def load(host, key="m"):
    r = host.ask({"id": "load-" + key, "action": "LOAD_MODEL", "path": MODEL, "key": key})
    assert r["type"] == "result", r
    return r


def test_ping_hardware_and_state(host):
    r = host.ask({"id": 1, "action": "PING"})
    assert r == {"id": 1, "type": "result", "result": {"pong": True, "version": r["result"]["version"],
                                                       "abi": r["result"]["abi"]}}
    hw = host.ask({"id": "hw", "action": "hardware"})["result"]
    assert hw["hardware"]["cpu"]
    load(host)
    st = host.ask({"id": 2, "action": "GET_MODEL_STATE"})["result"]
    assert [m["model"] for m in st["loaded"]] == ["m"] and st["loaded"][0]["architecture"] == "llama"
    fit = host.ask({"id": 3, "action": "HARDWARE", "model": "m", "n_ctx": 2048})["result"]["fit"]
    assert fit["weights_bytes"] > 0
    by_path = host.ask({"id": "3p", "action": "HARDWARE", "path": MODEL, "n_ctx": 2048})["result"]["fit"]
    assert by_path["weights_bytes"] == fit["weights_bytes"] and by_path["kv_bytes"] == fit["kv_bytes"]
    r = host.ask({"id": "3x", "action": "HARDWARE", "path": "/etc/passwd"})
    assert r["type"] == "error" and r["code"] == "FORBIDDEN"
    lst = host.ask({"id": 4, "action": "LIST_MODELS"})["result"]
    assert lst["cached"] == [] and lst["loaded"][0]["model"] == "m"
    assert host.ask({"id": 5, "action": "UNLOAD_MODEL", "model": "m"})["type"] == "result"
    r = host.ask({"id": 6, "action": "UNLOAD_MODEL", "model": "m"})
    assert r["type"] == "error" and r["code"] == "NOT_FOUND"


def test_generate_streams_tokens_then_one_result(host):
    load(host)
    host.send({"id": "g", "action": "GENERATE", "model": "m",
               "messages": [{"role": "user", "content": "What is 2+2?"}],
               "params": {"temperature": 0, "max_tokens": 12}})
    msgs = host.final("g")
    tokens = [m for m in msgs if m["type"] == "token"]
    final = msgs[-1]
    assert final["type"] == "result" and [m["type"] for m in msgs[:-1]] == ["token"] * len(tokens)
    assert "".join(t["text"] for t in tokens) == final["result"]["text"]
    assert final["result"]["n_generated_tokens"] >= len(tokens) > 0
    assert final["result"]["stop_reason"] in ("eog", "max_tokens")
    # A raw prompt, and a second reply to the same question is the same (greedy).
    again = host.ask({"id": "g2", "action": "GENERATE", "model": "m",
                      "messages": [{"role": "user", "content": "What is 2+2?"}],
                      "params": {"temperature": 0, "max_tokens": 12}})
    assert again["result"]["text"] == final["result"]["text"]
    p = host.ask({"id": "g3", "action": "GENERATE", "model": "m", "prompt": "Once upon a time",
                  "params": {"max_tokens": 4, "seed": 1}})
    assert p["type"] == "result" and p["result"]["n_generated_tokens"] <= 4


def test_two_generations_at_once_and_cancel(host):
    load(host)
    q = lambda id, n: {"id": id, "action": "GENERATE", "model": "m",
                       "messages": [{"role": "user", "content": "Tell me a long story about a dragon."}],
                       "params": {"temperature": 0, "max_tokens": n}}
    host.send(q("a", 24))
    host.send(q("b", 24))
    ra, rb = host.final("a")[-1], host.final("b")[-1]
    assert ra["type"] == rb["type"] == "result"
    assert ra["result"]["text"] and rb["result"]["text"]
    # They ran at the same time: each streamed a token before either finished.
    with host.cv:
        seen = [(m["id"], m["type"]) for m in host.msgs if m and m.get("id") in ("a", "b")]
    first_final = min(seen.index((i, "result")) for i in ("a", "b"))
    assert all(seen.index((i, "token")) < first_final for i in ("a", "b")), seen
    # Cancel mid-generation: after the first token.
    host.send(q("c", 2000))
    host.first_token("c")
    c = host.ask({"id": "x", "action": "CANCEL", "target": "c"})
    assert c["result"] == {"cancelled": True}
    rc = host.final("c")[-1]
    # A cancelled generation still ends in a result: the text so far.
    assert rc["type"] == "result" and rc["result"]["stop_reason"] == "cancelled", rc
    assert rc["result"]["text"] and rc["result"]["n_generated_tokens"] < 2000
    # Cancel mid-prompt: a long prompt, cancelled at once.
    host.send({"id": "d", "action": "GENERATE", "model": "m", "prompt": "word " * 400,
               "params": {"max_tokens": 100}})
    time.sleep(0.05)
    host.ask({"id": "y", "action": "CANCEL", "target": "d"})
    rd = host.final("d")[-1]
    assert rd["type"] == "result" and rd["result"]["stop_reason"] == "cancelled", rd
    assert rd["result"]["n_generated_tokens"] == 0
    assert host.ask({"id": "z", "action": "CANCEL", "target": "nope"})["result"] == {"cancelled": False}
    # The host still serves.
    assert host.ask({"id": "p", "action": "PING"})["type"] == "result"


BAD = [
    (b"not json", None),
    (b"[1,2]", None),
    (b"\xff\xfe\x00garbage", None),
    (b'{"action": "PING"}', None),
    (b'{"id": {"x": 1}, "action": "PING"}', None),
    (b'{"id": 7}', 7),
    (b'{"id": 8, "action": 5}', 8),
    (b'{"id": 9, "action": "FLY"}', 9),
    (b'{"id": 10, "action": "GENERATE"}', 10),
    (b'{"id": 11, "action": "GENERATE", "model": "nope", "prompt": "x"}', 11),
    (b'{"id": 12, "action": "LOAD_MODEL", "path": "/etc/passwd"}', 12),
    (b'{"id": 13, "action": "LOAD_MODEL", "path": 42}', 13),
    (b'{"id": 14, "action": "PULL_MODEL", "repo": "a/b"}', 14),
    (b'{"id": 15, "action": "CANCEL"}', 15),
    (b'{"id": 16, "action": "DELETE_MODEL", "repo": "../../etc"}', 16),
    (b'{"id": 17, "action": "LOAD_MODEL", "path": "/nonexistent/x.gguf"}', 17),
    (b'{"id": 18, "action": "EMBED", "model": "m", "texts": "x"}', 18),
    (json.dumps({"id": "x" * 300, "action": "PING"}).encode(), None),
    (b'{"id": 19, "action": "LOAD_MODEL", "path": "x.gguf", "n_ctx": 100000000}', 19),
]


def check_load_progress(msgs, path, file=None):
    """A LOAD_MODEL's messages: load progress (monotone, ending complete), then the result."""
    assert msgs[-1]["type"] == "result", msgs[-1]
    prog = [m for m in msgs if m["type"] == "progress" and m.get("stage") == "load"]
    assert prog, msgs
    assert msgs[-1 - len(prog):-1] == prog, "load progress comes last, before the result"
    size = os.path.getsize(path)
    file = file or os.path.basename(os.path.realpath(path))
    assert all(m["file"] == file and m["total"] == size for m in prog), prog[-1]
    assert all(a["done"] <= b["done"] for a, b in zip(prog, prog[1:]))
    assert prog[-1]["done"] == size
    assert len(prog) <= 102, "at most one message per percent"


def test_load_model_sends_progress(host):
    host.send({"id": "l", "action": "LOAD_MODEL", "path": MODEL, "key": "m"})
    check_load_progress(host.final("l"), MODEL)
    # Already loaded: no load, no progress.
    host.send({"id": "l2", "action": "LOAD_MODEL", "path": MODEL, "key": "m"})
    msgs = host.final("l2")
    assert [m["type"] for m in msgs] == ["result"] and msgs[0]["result"]["already_loaded"]


def test_limits_busy_and_oversized(tmp_path):
    c = Conn(tmp_path, max_running=1, max_models=1, max_request_bytes=2000)
    # max_request_bytes: refused before it is read (so with id null); the host serves on.
    c.send({"id": "big", "action": "PING", "pad": "x" * 3000})
    deadline = time.time() + 10
    while not any(m and m["id"] is None and m["type"] == "error" for m in c.msgs):
        assert time.time() < deadline
        time.sleep(0.01)
    err = next(m for m in c.msgs if m and m["id"] is None)
    assert err["code"] == "INVALID_REQUEST" and "over the limit" in err["message"]
    assert not any(m and m.get("id") == "big" for m in c.msgs)
    assert c.ask({"id": "small", "action": "PING", "pad": "x" * 1000})["type"] == "result"
    # max_models: a second model is BUSY until the first is unloaded.
    load(c, "m")
    r = c.ask({"id": "l2", "action": "LOAD_MODEL", "path": MODEL, "key": "m2"})
    assert r["type"] == "error" and r["code"] == "BUSY", r
    assert c.ask({"id": "st", "action": "GET_MODEL_STATE"})["result"]["max_models"] == 1
    # max_running: while one GENERATE runs, the next long request is BUSY.
    c.send({"id": "g1", "action": "GENERATE", "model": "m", "prompt": "Count to a thousand:",
            "params": {"max_tokens": 2000}})
    c.first_token("g1")
    r = c.ask({"id": "g2", "action": "GENERATE", "model": "m", "prompt": "Hi", "params": {"max_tokens": 2}})
    assert r["type"] == "error" and r["code"] == "BUSY", r
    # Quick actions are not counted; CANCEL frees the slot.
    assert c.ask({"id": "x", "action": "CANCEL", "target": "g1"})["result"] == {"cancelled": True}
    assert c.final("g1")[-1]["result"]["stop_reason"] == "cancelled"
    r = c.ask({"id": "g3", "action": "GENERATE", "model": "m", "prompt": "Hi", "params": {"max_tokens": 2}})
    assert r["type"] == "result", r
    assert c.ask({"id": "u", "action": "UNLOAD_MODEL", "model": "m"})["type"] == "result"
    assert c.ask({"id": "l3", "action": "LOAD_MODEL", "path": MODEL, "key": "m2"})["type"] == "result"
    assert c.close() == 0


def test_bad_requests_get_errors_and_the_host_keeps_serving(host, tmp_path):
    for body, id in BAD:
        host.send(body)
        deadline = time.time() + 10
        while True:
            errs = [m for m in host.msgs if m and m["type"] == "error" and m["id"] == id]
            if errs:
                assert errs[0]["code"] and errs[0]["message"], errs
                break
            assert time.time() < deadline, body
            time.sleep(0.01)
        assert host.ask({"id": "alive", "action": "PING"})["type"] == "result", body
        with host.cv:
            host.msgs.clear()
    # Paths outside the allowed folders, also through a symlink.
    link = tmp_path / "evil.gguf"
    os.symlink("/etc/passwd", link)
    r = host.ask({"id": "s", "action": "LOAD_MODEL", "path": str(link)})
    assert r["type"] == "error" and r["code"] == "FORBIDDEN"
    # A folder, and a missing file: the same answer as outside (nothing learnt).
    r = host.ask({"id": "t", "action": "LOAD_MODEL", "path": os.path.join(os.path.dirname(MODEL), "..")})
    assert r["type"] == "error" and r["code"] == "FORBIDDEN"
    r = host.ask({"id": "t2", "action": "LOAD_MODEL", "path": os.path.join(os.path.dirname(MODEL), "nope.gguf")})
    assert r["type"] == "error" and r["code"] == "FORBIDDEN"
    r = host.ask({"id": "t3", "action": "LOAD_MODEL", "path": MODEL, "n_ctx": 10 ** 6})
    assert r["type"] == "error" and r["code"] == "INVALID_REQUEST"
    # A duplicate id while the first runs.
    load(host)
    host.send({"id": "dup", "action": "GENERATE", "model": "m", "prompt": "x", "params": {"max_tokens": 64}})
    host.send({"id": "dup", "action": "GENERATE", "model": "m", "prompt": "x", "params": {"max_tokens": 1}})
    msgs = host.final("dup")
    assert msgs[-1]["type"] in ("error", "result")


def test_broken_frames_end_the_host_cleanly(tmp_path):
    for data in (struct.pack("=I", 0xFFFFFFF0) + b"{}", struct.pack("=I", 100) + b"{\"id\":1", b"\x01\x00"):
        c = Conn(tmp_path)
        assert c.ask({"id": 1, "action": "PING"})["type"] == "result"
        c.raw(data)
        c.p.stdin.close()
        assert c.p.wait(10) == 0
        assert c.p.stdout.read() == b""


def test_eof_with_work_running_exits_within_a_second(tmp_path):
    c = Conn(tmp_path)
    load(c)
    c.send({"id": "long", "action": "GENERATE", "model": "m", "prompt": "Count to a thousand:",
            "params": {"max_tokens": 5000}})
    c.first_token("long")
    t = time.time()
    assert c.close(10) == 0
    assert time.time() - t < 1.5
    assert any(m and m.get("id") == "long" and m["type"] == "result" and m["result"]["stop_reason"] == "cancelled"
               for m in c.msgs)


def test_origin_is_checked(tmp_path):
    c = Conn(tmp_path, args=["chrome-extension://notallowed/"], allowed_origins=["chrome-extension://good/"])
    assert c.close() != 0
    assert b"not in allowed_origins" in c.p.stderr.read()
    c = Conn(tmp_path, args=["chrome-extension://good/"], allowed_origins=["chrome-extension://good/"])
    assert c.ask({"id": 1, "action": "PING"})["type"] == "result"
    assert c.close() == 0
    # Firefox passes the manifest's path, then the extension's id.
    manifest = str(tmp_path / "com.tabagent.host.json")
    ff = ["tabagent@example.org"]
    c = Conn(tmp_path, args=[manifest, "tabagent@example.org"], allowed_origins=ff)
    assert c.ask({"id": 1, "action": "PING"})["type"] == "result"
    assert c.close() == 0
    c = Conn(tmp_path, args=[manifest, "evil@example.org"], allowed_origins=ff)
    assert c.close() != 0
    assert b"evil@example.org is not in allowed_origins" in c.p.stderr.read()


def test_pull_with_progress_then_load_and_delete(tmp_path):
    hub = FakeHub(repos={"org/smol-GGUF": {"smol-Q4_1.gguf": open(MODEL, "rb").read()}})
    hub.start()
    try:
        c = Conn(tmp_path, endpoint=hub.url)
        scan = c.ask({"id": "s", "action": "SCAN_REPO", "repo": "org/smol-GGUF"})["result"]
        assert [v["quant"] for v in scan["variants"]] == ["Q4_1"]
        c.send({"id": "p", "action": "PULL_MODEL", "repo": "org/smol-GGUF", "variant": "Q4_1"})
        msgs = c.final("p", 120)
        prog = [m for m in msgs if m["type"] == "progress"]
        assert prog and prog[-1]["done"] == prog[-1]["total"] == os.path.getsize(MODEL)
        assert all(m["stage"] == "download" and m["file"] == "smol-Q4_1.gguf" for m in prog)
        assert all(a["done"] <= b["done"] for a, b in zip(prog, prog[1:]))
        assert msgs[-1]["type"] == "result"
        r = c.ask({"id": "l", "action": "LOAD_MODEL", "repo": "org/smol-GGUF", "variant": "Q4_1"})
        assert r["result"]["model"] == "org/smol-GGUF:Q4_1"
        g = c.ask({"id": "g", "action": "GENERATE", "model": "org/smol-GGUF:Q4_1", "prompt": "Hi",
                   "params": {"max_tokens": 3}})
        assert g["type"] == "result"
        lst = c.ask({"id": "ls", "action": "LIST_MODELS"})["result"]
        assert [r["repo"] for r in lst["cached"]] == ["org/smol-GGUF"]
        assert [(v["quant"], v["status"]) for v in lst["cached"][0]["variants"]] == [("Q4_1", "downloaded")]
        assert c.ask({"id": "d", "action": "DELETE_MODEL", "repo": "org/smol-GGUF"})["type"] == "result"
        assert c.ask({"id": "ls2", "action": "LIST_MODELS"})["result"]["cached"] == []
        c.close()
    finally:
        hub.stop()


def test_load_model_with_pull(tmp_path):
    hub = FakeHub(repos={"org/smol-GGUF": {"smol-Q4_1.gguf": open(MODEL, "rb").read()}})
    hub.start()
    try:
        c = Conn(tmp_path, endpoint=hub.url)
        # Not cached and no "pull": NOT_FOUND, nothing downloaded.
        r = c.ask({"id": "l0", "action": "LOAD_MODEL", "repo": "org/smol-GGUF", "variant": "Q4_1"})
        assert r["type"] == "error" and r["code"] == "NOT_FOUND", r
        c.send({"id": "l", "action": "LOAD_MODEL", "repo": "org/smol-GGUF", "variant": "Q4_1", "pull": True})
        msgs = c.final("l", 120)
        down = [m for m in msgs if m["type"] == "progress" and m["stage"] == "download"]
        assert down and down[-1]["done"] == down[-1]["total"] == os.path.getsize(MODEL)
        assert msgs.index(down[-1]) < min(i for i, m in enumerate(msgs) if m.get("stage") == "load")
        path = next(r for r in c.ask({"id": "ls", "action": "LIST_MODELS"})["result"]["cached"])
        assert path["repo"] == "org/smol-GGUF"
        assert [(v["quant"], v["status"]) for v in path["variants"]] == [("Q4_1", "downloaded")]
        check_load_progress(msgs, MODEL, "smol-Q4_1.gguf")
        assert msgs[-1]["result"]["model"] == "org/smol-GGUF:Q4_1"
        g = c.ask({"id": "g", "action": "GENERATE", "model": "org/smol-GGUF:Q4_1", "prompt": "Hi",
                   "params": {"max_tokens": 3}})
        assert g["type"] == "result" and g["result"]["n_generated_tokens"] > 0
        c.close()
    finally:
        hub.stop()


def test_embed_and_a_result_over_1_mib_is_split(tmp_path):
    c = Conn(tmp_path, model_dirs=[os.path.dirname(EMBED_MODEL)])
    assert c.ask({"id": 1, "action": "LOAD_MODEL", "path": EMBED_MODEL, "key": "e"})["type"] == "result"
    r = c.ask({"id": 2, "action": "EMBED", "model": "e", "texts": ["a cat", "a kitten", "stocks fell"]})["result"]
    assert r["dim"] == 384 and len(r["vectors"]) == 3
    dot = lambda a, b: sum(x * y for x, y in zip(a, b))
    assert dot(r["vectors"][0], r["vectors"][1]) > dot(r["vectors"][0], r["vectors"][2])
    # CANCEL stops a long EMBED between its groups.
    c.send({"id": "long", "action": "EMBED", "model": "e", "texts": ["a long sentence " * 20] * 1024})
    time.sleep(0.2)
    assert c.ask({"id": "cx", "action": "CANCEL", "target": "long"})["result"] == {"cancelled": True}
    r = c.final("long")[-1]
    assert r["type"] == "error" and r["code"] == "CANCELLED", r
    texts = [f"sentence number {i}" for i in range(1000)]
    c.send({"id": 3, "action": "EMBED", "model": "e", "texts": texts})
    msgs = c.final(3, 120)
    chunks = [m for m in c.msgs if m and m.get("id") == 3 and m["type"] == "chunk"]
    assert len(chunks) > 1
    big = msgs[-1]
    assert big["type"] == "result" and len(big["result"]["vectors"]) == 1000
    assert c.close() == 0


def test_install_writes_manifests_and_config(tmp_path):
    env = {**os.environ, "HOME": str(tmp_path), "TABAGENT_HOST_CONFIG": str(tmp_path / "cfg.json")}
    out = subprocess.run([HOST, "install", "--extension-id", "abcdefghijklmnopabcdefghijklmnop"], env=env,
                         capture_output=True, text=True, check=True).stdout
    m = json.loads((tmp_path / ".config/chromium/NativeMessagingHosts/com.tabagent.host.json").read_text())
    assert m["allowed_origins"] == ["chrome-extension://abcdefghijklmnopabcdefghijklmnop/"]
    assert m["type"] == "stdio" and os.path.samefile(m["path"], HOST)
    ff = json.loads((tmp_path / ".mozilla/native-messaging-hosts/com.tabagent.host.json").read_text())
    assert ff["allowed_extensions"] == ["abcdefghijklmnopabcdefghijklmnop"]
    assert (tmp_path / ".config/google-chrome/NativeMessagingHosts/com.tabagent.host.json").exists()
    assert (tmp_path / ".config/microsoft-edge/NativeMessagingHosts/com.tabagent.host.json").exists()
    assert "HKEY_CURRENT_USER" in out and "Library/Application Support" in out
    cfg = json.loads((tmp_path / "cfg.json").read_text())
    assert "chrome-extension://abcdefghijklmnopabcdefghijklmnop/" in cfg["allowed_origins"]
    printed = subprocess.run([HOST, "manifest", "--extension-id", "x", "--browser", "edge"], env=env,
                             capture_output=True, text=True, check=True).stdout
    assert '"chrome-extension://x/"' in printed


def test_python_host_over_the_c_dispatcher(tmp_path):
    """examples/python-ctypes/native_host.py: the same protocol through ta_host_*."""
    c = Conn.__new__(Conn)
    cfg = tmp_path / "py.json"
    cfg.write_text(json.dumps({"cache_dir": str(tmp_path / "cache"), "model_dirs": [os.path.dirname(MODEL)],
                               "n_ctx": 256, "n_threads": 2}))
    c.p = subprocess.Popen([sys.executable, os.path.join(ROOT, "examples", "python-ctypes", "native_host.py")],
                           stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           env={**os.environ, "TABAGENT_HOST_CONFIG": str(cfg)})
    c.msgs, c.cv = [], threading.Condition()
    threading.Thread(target=c._read, daemon=True).start()
    assert c.ask({"id": 1, "action": "PING"})["type"] == "result"
    c.send(b"{oops")
    load(c)
    c.send({"id": "g", "action": "GENERATE", "model": "m", "messages": [{"role": "user", "content": "Hi"}],
            "params": {"max_tokens": 5, "temperature": 0}})
    msgs = c.final("g")
    assert msgs[-1]["type"] == "result"
    assert "".join(m["text"] for m in msgs if m["type"] == "token") == msgs[-1]["result"]["text"]
    assert any(m and m["id"] is None and m["type"] == "error" for m in c.msgs)
    assert c.close() == 0
