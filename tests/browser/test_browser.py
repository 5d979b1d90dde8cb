"""End to end in a real browser: Debian's Chromium, headless, with the example
extension (examples/browser-extension) loaded and tabagent-host registered in the
profile's NativeMessagingHosts folder, driven by Playwright. The page pulls a model
from the hub imitation (progress bar), loads it, streams an answer, and stops a
second one. A screenshot is kept in build/browser/page.png."""

import json
import os
import shutil
import sys
import time

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "tests", "hub"))
from fake_hub import FakeHub  # noqa: E402

playwright = pytest.importorskip("playwright.sync_api")

EXT = os.path.join(ROOT, "examples", "browser-extension")
HOST = os.path.join(ROOT, "target", "release", "tabagent-host")
MODEL = os.environ.get(
    "TABAGENT_TEST_MODEL", os.path.expanduser("~/.cache/tabagent/models/SmolLM2-135M-Instruct.Q4_1.gguf"))
ARTIFACTS = os.path.join(ROOT, "build", "browser")


def extension_id():
    import base64
    import hashlib
    key = json.load(open(os.path.join(EXT, "manifest.json")))["key"]
    h = hashlib.sha256(base64.b64decode(key)).hexdigest()[:32]
    return "".join(chr(ord("a") + int(c, 16)) for c in h)


def chromium():
    for name in ("chromium", "chromium-browser"):
        p = shutil.which(name)
        if p:
            return p
    pytest.fail("Chromium is not installed (apt-get install chromium)")


def test_pull_ask_stream_and_stop_in_chromium(tmp_path):
    ext_id = extension_id()
    hub = FakeHub(repos={"org/smol-GGUF": {"smol-Q4_1.gguf": open(MODEL, "rb").read()}})
    hub.start()
    profile = tmp_path / "profile"
    hosts = profile / "NativeMessagingHosts"
    hosts.mkdir(parents=True)
    (hosts / "com.tabagent.host.json").write_text(json.dumps({
        "name": "com.tabagent.host", "description": "tabagent test host", "path": HOST, "type": "stdio",
        "allowed_origins": [f"chrome-extension://{ext_id}/"]}))
    cfg = tmp_path / "host.json"
    cfg.write_text(json.dumps({"cache_dir": str(tmp_path / "cache"), "endpoint": hub.url, "n_ctx": 1024,
                               "n_threads": 2, "allowed_origins": [f"chrome-extension://{ext_id}/"],
                               "log_file": str(tmp_path / "host.log")}))
    os.makedirs(ARTIFACTS, exist_ok=True)
    args = ["--headless=new", f"--disable-extensions-except={EXT}", f"--load-extension={EXT}",
            "--no-first-run", "--disable-gpu"]
    if os.geteuid() == 0:
        args.append("--no-sandbox")
    try:
        with playwright.sync_playwright() as pw:
            ctx = pw.chromium.launch_persistent_context(
                str(profile), executable_path=chromium(), headless=False, args=args,
                env={**os.environ, "TABAGENT_HOST_CONFIG": str(cfg)})
            try:
                page = ctx.new_page()
                page.goto(f"chrome-extension://{ext_id}/page.html")
                status = page.locator("#status")
                playwright.expect(status).to_contain_text("Connected to tabagent", timeout=30_000)
                page.click("#pull")
                playwright.expect(status).to_have_text("Pulled.", timeout=120_000)
                assert page.eval_on_selector("#progress", "p => p.value") == 1
                assert "MB" in page.inner_text("#progress-text")
                page.click("#load")
                playwright.expect(status).to_contain_text("Loaded org/smol-GGUF:Q4_1", timeout=60_000)
                # Ask: text appears while the answer streams, then the result.
                page.fill("#max-tokens", "24")
                page.click("#ask")
                playwright.expect(page.locator("#answer")).not_to_be_empty(timeout=60_000)
                playwright.expect(status).to_contain_text("Done:", timeout=120_000)
                answer = page.inner_text("#answer")
                assert answer.strip(), answer
                page.screenshot(path=os.path.join(ARTIFACTS, "page.png"), full_page=True)
                # A second, long answer stopped while it streams.
                page.fill("#question", "Write a very long essay about the history of bridges.")
                page.fill("#max-tokens", "2000")
                page.click("#ask")
                playwright.expect(page.locator("#answer")).not_to_be_empty(timeout=60_000)
                page.click("#stop")
                playwright.expect(status).to_have_text("Stopped.", timeout=30_000)
                assert page.is_enabled("#ask")
                page.screenshot(path=os.path.join(ARTIFACTS, "page-stopped.png"), full_page=True)
            finally:
                ctx.close()
    finally:
        hub.stop()
        if (tmp_path / "host.log").exists():
            shutil.copy(tmp_path / "host.log", os.path.join(ARTIFACTS, "host.log"))
