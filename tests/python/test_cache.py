"""The model cache against a hub imitation on 127.0.0.1, cross-checked with the real
huggingface_hub package in both directions."""

import contextlib
import hashlib
import os
import subprocess
import sys
import time

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "hub"))
import tabagent  # noqa: E402
from fake_hub import FakeHub, commit_for  # noqa: E402

MODEL = os.environ.get(
    "TABAGENT_TEST_MODEL", os.path.expanduser("~/.cache/tabagent/models/SmolLM2-135M-Instruct.Q4_1.gguf")
)
REPO = "tabagent-test/tiny-GGUF"
TOKEN = "hf_test_token"


def blob(n, seed):
    return hashlib.sha256(seed.encode()).digest() * (n // 32) + b"x" * (n % 32)


FILES = {
    "README.md": b"# tiny\n",
    "tiny-Q4_K_M.gguf": blob(300_000, "q4km"),
    "tiny-Q8_0.gguf": blob(500_000, "q8"),
    "tiny-F16-00001-of-00002.gguf": blob(200_000, "f16a"),
    "tiny-F16-00002-of-00002.gguf": blob(150_000, "f16b"),
    "mmproj-tiny-f16.gguf": blob(50_000, "proj"),
}


@pytest.fixture
def hub():
    h = FakeHub(repos={REPO: dict(FILES), "org/gated": {"m-Q4_0.gguf": blob(4096, "g")}},
                gated={"org/gated"}, token=TOKEN)
    h.start()
    yield h
    h.stop()


@pytest.fixture
def cache_dir(tmp_path):
    d = tmp_path / "hub-cache"
    yield d
    # Whatever a test did, huggingface_hub must not find the cache corrupt.
    if d.exists():
        assert hf_warnings(d) == []


def open_cache(hub, cache_dir, **kw):
    kw.setdefault("retries", 3)
    return tabagent.Cache(cache_dir, endpoint=hub.url, **kw)


@contextlib.contextmanager
def captured_log(min_level):
    """The library's log lines at or above min_level while the block runs."""
    lines = []
    tabagent.set_log_callback(lambda lvl, text: lines.append(text), min_level)
    try:
        yield lines
    finally:
        tabagent.set_log_callback(None)


def sha(b):
    return hashlib.sha256(b).hexdigest()


def blobs_dir(cache_dir, repo=REPO):
    return cache_dir / ("models--" + repo.replace("/", "--")) / "blobs"


def test_layout_matches_huggingface_hub(hub, cache_dir):
    with open_cache(hub, cache_dir) as c:
        p = c.download(REPO, "tiny-Q4_K_M.gguf")
    commit = commit_for(REPO)
    repo_dir = cache_dir / "models--tabagent-test--tiny-GGUF"
    assert p == str(repo_dir / "snapshots" / commit / "tiny-Q4_K_M.gguf")
    assert os.path.islink(p) and not os.path.isabs(os.readlink(p))
    assert os.path.realpath(p) == str(repo_dir / "blobs" / sha(FILES["tiny-Q4_K_M.gguf"]))
    assert (repo_dir / "refs" / "main").read_text() == commit
    assert open(p, "rb").read() == FILES["tiny-Q4_K_M.gguf"]


def run_hf(hub, cache_dir, code):
    """Run huggingface_hub in a subprocess pointed at the imitation and the cache."""
    env = dict(os.environ, HF_ENDPOINT=hub.url, HF_HUB_CACHE=str(cache_dir), HF_HUB_DISABLE_TELEMETRY="1",
               HF_HUB_DISABLE_XET="1", HF_HUB_ENABLE_HF_TRANSFER="0", HF_TOKEN=TOKEN)
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


def test_huggingface_hub_finds_what_tabagent_downloaded(hub, cache_dir):
    pytest.importorskip("huggingface_hub")
    with open_cache(hub, cache_dir) as c:
        p = c.download(REPO, "tiny-Q8_0.gguf")
        c.download(REPO, "README.md")
    hub.clear_log()
    out = run_hf(hub, cache_dir, f"""
import huggingface_hub as h
p = h.hf_hub_download({REPO!r}, "tiny-Q8_0.gguf", local_files_only=True)
r = h.hf_hub_download({REPO!r}, "README.md", local_files_only=True)
info = h.scan_cache_dir()
repo = [x for x in info.repos if x.repo_id == {REPO!r}][0]
print(p); print(repo.size_on_disk); print(sorted(f.file_name for r in repo.revisions for f in r.files))
""").splitlines()
    assert out[0] == p
    assert int(out[1]) == len(FILES["tiny-Q8_0.gguf"]) + len(FILES["README.md"])
    assert "tiny-Q8_0.gguf" in out[2] and "README.md" in out[2]
    assert not hub.requests  # local_files_only: no network at all


def test_tabagent_reuses_what_huggingface_hub_downloaded(hub, cache_dir):
    pytest.importorskip("huggingface_hub")
    p = run_hf(hub, cache_dir, f"""
import huggingface_hub as h
print(h.hf_hub_download({REPO!r}, "tiny-Q4_K_M.gguf"))
""")
    hub.clear_log()
    with open_cache(hub, cache_dir, offline=True) as c:
        assert c.has_file(REPO, "tiny-Q4_K_M.gguf")
        assert c.download(REPO, "tiny-Q4_K_M.gguf") == p
    assert not hub.requests


def test_scan_groups_quantisations_and_status_works_offline(hub, cache_dir):
    with open_cache(hub, cache_dir) as c:
        m = c.scan(REPO)
        v = {x["quant"]: x for x in m["variants"]}
        assert set(v) >= {"Q4_K_M", "Q8_0", "F16"}
        assert len(v["F16"]["files"]) == 2
        assert v["F16"]["size"] == len(FILES["tiny-F16-00001-of-00002.gguf"]) + len(FILES["tiny-F16-00002-of-00002.gguf"])
        assert all("mmproj" not in f for x in m["variants"] for f in x["files"])
        assert any("mmproj" in f for p in m["projectors"] for f in p["files"])
        assert all(x["status"] == "available" for x in m["variants"])
        c.download_variant(REPO, "F16")
    hub.stop()  # the manifest must now come from disk
    with open_cache(hub, cache_dir, offline=True) as c:
        v = {x["quant"]: x for x in c.manifest(REPO)["variants"]}
        assert v["F16"]["status"] == "downloaded"
        assert v["Q8_0"]["status"] == "available"
        with pytest.raises(tabagent.TabagentError) as ei:
            c.download(REPO, "tiny-Q8_0.gguf")
        assert ei.value.status_name == "OFFLINE"


def hf_warnings(cache_dir):
    """What huggingface_hub's scan_cache_dir() finds wrong with the cache."""
    h = pytest.importorskip("huggingface_hub")
    return [str(w) for w in h.scan_cache_dir(cache_dir).warnings]


def test_huggingface_hub_finds_nothing_corrupt_after_any_operation(hub, cache_dir):
    def clean():
        assert hf_warnings(cache_dir) == []

    repo_dir = cache_dir / "models--tabagent-test--tiny-GGUF"
    with open_cache(hub, cache_dir, retries=0) as c:
        c.scan(REPO)
        clean()
        assert not repo_dir.exists(), "a scan must not write into models--*"
        with pytest.raises(tabagent.NotFoundError):
            c.manifest("org/gated")
        clean()
        hub.add_fault("tiny-Q8_0.gguf", "wrong_bytes")
        with pytest.raises(tabagent.TabagentError) as ei:
            c.download(REPO, "tiny-Q8_0.gguf")
        assert ei.value.status_name == "CHECKSUM"
        clean()
        hub.add_fault("tiny-Q8_0.gguf", "drop_after:1000")
        with pytest.raises(tabagent.TabagentError):
            c.download(REPO, "tiny-Q8_0.gguf")
        clean()
        with pytest.raises(tabagent.NotFoundError):
            c.download(REPO, "missing.gguf")
        clean()
        with pytest.raises(tabagent.TabagentError):
            c.download("org/gated", "m-Q4_0.gguf")
        clean()
        c.download_variant(REPO, "F16")
        c.download(REPO, "README.md")
        clean()
        assert c.verify() == []
        c.stats(), c.list_repos(), c.manifest(REPO), c.snapshot_path(REPO, "README.md")
        clean()
        with pytest.raises(tabagent.CancelledError):
            c.download(REPO, "tiny-Q4_K_M.gguf", progress=lambda f, d, t: False)
        clean()
    with open_cache(hub, cache_dir, offline=True) as c:
        c.scan(REPO), c.manifest(REPO), c.has_file(REPO, "README.md"), c.download(REPO, "README.md")
        c.download_variant(REPO, "F16")
        with pytest.raises(tabagent.TabagentError):
            c.download(REPO, "tiny-Q8_0.gguf")
        with pytest.raises(tabagent.TabagentError):
            c.download_variant(REPO, "Q4_K_M")
        clean()
    with open_cache(hub, cache_dir) as c:
        c.delete_revision(REPO, "main")
        clean()
        c.download(REPO, "README.md")
        c.delete_repo(REPO)
        clean()


def test_main_moving_on_the_hub_then_a_scan_keeps_the_cached_file_reachable(hub, cache_dir):
    pytest.importorskip("huggingface_hub")
    name = "tiny-Q4_K_M.gguf"
    with open_cache(hub, cache_dir) as c:
        p = c.download(REPO, name)
    new = hub.add_repo(REPO, dict(FILES, **{name: FILES[name] + b"more"}), commit="c" * 40)
    with open_cache(hub, cache_dir) as c:
        assert c.scan(REPO)["commit"] == new
    assert hf_warnings(cache_dir) == []
    with open_cache(hub, cache_dir, offline=True) as c:
        assert c.download(REPO, name) == p
        assert c.manifest(REPO)["commit"] == commit_for(REPO)
    hub.clear_log()
    out = run_hf(hub, cache_dir, f"""
import huggingface_hub as h
print(h.hf_hub_download({REPO!r}, {name!r}, local_files_only=True))
""")
    assert out == p and open(p, "rb").read() == FILES[name]
    assert not hub.requests
    # Online, a download after the scan fetches what main is now; then both tools
    # resolve main to the new commit.
    with open_cache(hub, cache_dir) as c:
        p2 = c.download(REPO, name)
    assert new in p2 and open(p2, "rb").read() == FILES[name] + b"more"
    assert hf_warnings(cache_dir) == []
    with open_cache(hub, cache_dir, offline=True) as c:
        assert c.download(REPO, name) == p2


def test_one_hostile_name_refuses_only_that_entry(cache_dir):
    long_name = "a" * 300 + "-Q4_0.gguf"
    h = FakeHub(repos={"org/mixed": {"../../evil.gguf": b"evil", "ok-Q8_0.gguf": blob(4096, "ok"),
                                     long_name: blob(1 << 20, "long")}})
    h.start()
    try:
        with captured_log(tabagent.LOG_WARN) as warnings:
            with tabagent.Cache(cache_dir, endpoint=h.url) as c:
                m = c.scan("org/mixed")
                assert [v["quant"] for v in m["variants"]] == ["Q8_0"]
                assert [r["path"] for r in m["refused"]] == ["../../evil.gguf", long_name]
                assert "255 bytes" in m["refused"][1]["reason"]
                p = c.download_variant("org/mixed", "Q8_0")
                assert open(p, "rb").read() == blob(4096, "ok")
                # Too long for the file system: refused before a byte is fetched.
                h.clear_log()
                with pytest.raises(tabagent.InvalidArgumentError):
                    c.download("org/mixed", long_name)
                assert not h.requests
                assert c.stats()["files"] == 1
        assert any("evil.gguf" in w for w in warnings), warnings
        assert hf_warnings(cache_dir) == []
    finally:
        h.stop()


def test_variant_downloaded_by_huggingface_hub_works_offline(hub, cache_dir):
    pytest.importorskip("huggingface_hub")
    shards = ["tiny-F16-00001-of-00002.gguf", "tiny-F16-00002-of-00002.gguf"]
    paths = run_hf(hub, cache_dir, f"""
import huggingface_hub as h
for f in {shards!r}:
    print(h.hf_hub_download({REPO!r}, f))
""").splitlines()
    hub.clear_log()
    with open_cache(hub, cache_dir, offline=True) as c:
        assert all(c.has_file(REPO, f) for f in shards)
        assert c.manifest(REPO)["source"] == "snapshot"
        assert c.download_variant(REPO, "F16") == paths[0]
        os.unlink(paths[1])
        with pytest.raises(tabagent.TabagentError) as ei:
            c.download_variant(REPO, "F16")
        assert ei.value.status_name == "OFFLINE"
        assert shards[1] in str(ei.value) and shards[0] not in str(ei.value), str(ei.value)
    assert not hub.requests


def test_variant_downloaded_by_huggingface_hub_after_main_moved_works_offline(hub, cache_dir):
    # tabagent scanned an older commit of main; huggingface_hub then fetched a variant
    # at the newer one. The older manifest must not hide it.
    pytest.importorskip("huggingface_hub")
    with open_cache(hub, cache_dir) as c:
        c.download_variant(REPO, "Q4_K_M")
    new = hub.add_repo(REPO, dict(FILES, **{"tiny-Q8_0.gguf": FILES["tiny-Q8_0.gguf"] + b"v2"}), commit="d" * 40)
    p = run_hf(hub, cache_dir, f"""
import huggingface_hub as h
print(h.hf_hub_download({REPO!r}, "tiny-Q8_0.gguf"))
""")
    assert new in p
    with open_cache(hub, cache_dir, offline=True) as c:
        m = c.manifest(REPO)
        assert m["commit"] == new and m["source"] == "snapshot"
        assert c.download_variant(REPO, "Q8_0") == p


@pytest.mark.parametrize("offline", [False, True])
def test_manifest_of_a_never_scanned_repo_is_not_found(hub, cache_dir, offline):
    with open_cache(hub, cache_dir, offline=offline) as c:
        with pytest.raises(tabagent.NotFoundError):
            c.manifest(REPO)
    assert not hub.requests


def test_dropped_connection_resumes_with_range(hub, cache_dir):
    name = "tiny-Q8_0.gguf"
    hub.add_fault(name, "drop_after:100000")
    with open_cache(hub, cache_dir, retries=0) as c:
        with pytest.raises(tabagent.TabagentError) as ei:
            c.download(REPO, name)
        assert ei.value.status_name == "NETWORK"
        inc = list(blobs_dir(cache_dir).glob("*.incomplete"))
        assert len(inc) == 1 and inc[0].stat().st_size >= 100000
        hub.clear_log()
        p = c.download(REPO, name)
    assert open(p, "rb").read() == FILES[name]
    ranges = [r.headers.get("range") for r in hub.requests if r.headers.get("range")]
    assert ranges and ranges[0].startswith("bytes=100000-") or ranges[0].startswith("bytes=1")
    assert not list(blobs_dir(cache_dir).glob("*.incomplete"))


def test_durable_download_and_cut_short_blob_is_fetched_again(hub, cache_dir):
    name = "tiny-Q8_0.gguf"
    with captured_log(tabagent.LOG_INFO) as lines:
        with open_cache(hub, cache_dir) as c:
            c.download(REPO, "tiny-Q4_K_M.gguf")
        with open_cache(hub, cache_dir, durable=True) as c:
            p = c.download(REPO, name)
    assert open(p, "rb").read() == FILES[name]
    done = [t for t in lines if "verified" in t]
    assert len(done) == 2 and done[0].endswith(f"sha256 {sha(FILES['tiny-Q4_K_M.gguf'])} verified"), lines
    assert done[1].endswith("verified, fsynced") and sha(FILES[name]) in done[1], lines
    # What a power failure can leave without durable=True: the blob cut short.
    os.truncate(os.path.realpath(p), 4096)
    with open_cache(hub, cache_dir, offline=True) as c:
        with pytest.raises(tabagent.TabagentError) as ei:
            c.download(REPO, name)
        assert ei.value.status_name == "CHECKSUM" and "damaged" in str(ei.value)
    with open_cache(hub, cache_dir) as c:
        assert c.download(REPO, name) == p
    assert open(p, "rb").read() == FILES[name]


def test_length_check_uses_the_cached_commit(hub, cache_dir):
    # main moves to a commit where the file is longer, and huggingface_hub fetches it
    # there: refs/main now differs from tabagent's saved manifest of main. The new copy
    # is whole, not "damaged" against the old commit's length.
    pytest.importorskip("huggingface_hub")
    name = "tiny-Q4_K_M.gguf"
    with open_cache(hub, cache_dir) as c:
        c.download(REPO, name)
    longer = FILES[name] + b"more"
    hub.add_repo(REPO, dict(FILES, **{name: longer}), commit="b" * 40)
    p = run_hf(hub, cache_dir, f"""
import huggingface_hub as h
print(h.hf_hub_download({REPO!r}, {name!r}))
""")
    assert "b" * 40 in p
    with open_cache(hub, cache_dir, offline=True) as c:
        assert c.download(REPO, name) == p
    assert open(p, "rb").read() == longer


def test_retries_5xx_and_drops_within_one_call(hub, cache_dir):
    name = "tiny-Q4_K_M.gguf"
    hub.add_fault(name, "status:503", "drop_after:1000")
    with captured_log(tabagent.LOG_WARN) as warnings:
        with open_cache(hub, cache_dir) as c:
            p = c.download(REPO, name)
    assert open(p, "rb").read() == FILES[name]
    # Each transient failure is logged with its cause as a warning.
    assert len(warnings) == 2, warnings
    assert "503" in warnings[0] and warnings[0].endswith("retry 1 of 3 in 200 ms"), warnings
    assert "connection dropped after 1000 bytes" in warnings[1] and "retry 2 of 3" in warnings[1], warnings


def test_200_answer_to_range_restarts_and_verifies(hub, cache_dir):
    name = "tiny-Q8_0.gguf"
    hub.add_fault(name, "drop_after:50000", "ignore_range")
    with open_cache(hub, cache_dir) as c:
        p = c.download(REPO, name)
    assert open(p, "rb").read() == FILES[name]


def test_checksum_mismatch_leaves_nothing(hub, cache_dir):
    name = "tiny-Q4_K_M.gguf"
    hub.add_fault(name, "wrong_bytes")
    with open_cache(hub, cache_dir, retries=0) as c:
        with pytest.raises(tabagent.TabagentError) as ei:
            c.download(REPO, name)
        assert ei.value.status_name == "CHECKSUM"
        assert not c.has_file(REPO, name)
    b = blobs_dir(cache_dir)
    assert not b.exists() or not [x for x in b.iterdir() if not x.name.endswith(".lock")]
    snap = cache_dir / "models--tabagent-test--tiny-GGUF" / "snapshots" / commit_for(REPO) / name
    assert not os.path.lexists(snap)


def test_flipped_bytes_of_a_plain_git_file_are_refused_and_verified(hub, cache_dir):
    # Issue 10, item 1: same length, wrong bytes, for a non-LFS file: the git blob id
    # (ETag / blobId) catches it, while downloading and in verify.
    from fake_hub import git_blob_sha1

    hub.add_fault("README.md", "wrong_bytes")
    with open_cache(hub, cache_dir, retries=0) as c:
        with pytest.raises(tabagent.TabagentError) as ei:
            c.download(REPO, "README.md")
        assert ei.value.status_name == "CHECKSUM"
        assert not c.has_file(REPO, "README.md")
        b = blobs_dir(cache_dir)
        assert not b.exists() or not list(b.iterdir())
        p = c.download(REPO, "README.md")
        assert c.verify() == []
        real = os.path.realpath(p)
        os.chmod(real, 0o644)
        with open(real, "r+b") as f:
            f.write(b"!")
        bad = c.verify(REPO)
        assert len(bad) == 1 and bad[0]["expected"] == git_blob_sha1(FILES["README.md"])


def test_gated_needs_token_and_token_stays_on_the_hub(hub, cache_dir):
    with open_cache(hub, cache_dir, token="") as c:
        with pytest.raises(tabagent.TabagentError) as ei:
            c.download("org/gated", "m-Q4_0.gguf")
        assert ei.value.status_name == "UNAUTHORIZED" and "token" in ei.value.message.lower()
    hub.clear_log()
    with open_cache(hub, cache_dir, token=TOKEN) as c:
        c.download("org/gated", "m-Q4_0.gguf")
    cdn = [r for r in hub.requests if r.server == "cdn"]
    assert cdn, "the LFS file should come from the CDN host"
    assert all("authorization" not in r.headers for r in cdn)


def test_cdn_refusal_is_not_blamed_on_the_token(hub, cache_dir):
    # Issue 10, item 6: the token never goes to the CDN, so its 403 is not a token problem,
    # and the failed attempt leaves no empty .incomplete behind.
    hub.add_fault("tiny-Q4_K_M.gguf", "cdn GET status:403")
    with open_cache(hub, cache_dir, token=TOKEN, retries=0) as c:
        with pytest.raises(tabagent.TabagentError) as ei:
            c.download(REPO, "tiny-Q4_K_M.gguf")
        assert ei.value.status_name != "UNAUTHORIZED"
        assert "HF_TOKEN" not in ei.value.message and "403" in ei.value.message
    b = blobs_dir(cache_dir)
    assert not b.exists() or not list(b.iterdir())


def test_planted_incomplete_symlink_is_not_followed(hub, cache_dir, tmp_path):
    # Issue 10, item 3: a link at blobs/<sha>.incomplete must not receive the download.
    victim = tmp_path / "victim"
    victim.write_bytes(b"keep")
    b = blobs_dir(cache_dir)
    b.mkdir(parents=True)
    os.symlink(victim, b / (sha(FILES["tiny-Q4_K_M.gguf"]) + ".incomplete"))
    with open_cache(hub, cache_dir) as c:
        p = c.download(REPO, "tiny-Q4_K_M.gguf")
        assert open(p, "rb").read() == FILES["tiny-Q4_K_M.gguf"]
    assert victim.read_bytes() == b"keep"
    assert not os.path.islink(b / sha(FILES["tiny-Q4_K_M.gguf"]))


def test_not_found_errors_are_clear(hub, cache_dir):
    with open_cache(hub, cache_dir) as c:
        with pytest.raises(tabagent.NotFoundError, match="no/such"):
            c.download("no/such", "x.gguf")
        with pytest.raises(tabagent.NotFoundError, match="missing.gguf"):
            c.download(REPO, "missing.gguf")


@pytest.mark.parametrize("bad", ["../evil.gguf", "/etc/passwd", "a/../../b.gguf", "a\nb.gguf", "a\\b.gguf"])
def test_hostile_file_names_are_refused(hub, cache_dir, bad):
    with open_cache(hub, cache_dir) as c:
        with pytest.raises(tabagent.InvalidArgumentError):
            c.download(REPO, bad)


@pytest.mark.parametrize("bad", ["../x", "a/b/c", "", "a b", "-x/y"])
def test_bad_repo_ids_are_refused(hub, cache_dir, bad):
    with open_cache(hub, cache_dir) as c:
        with pytest.raises(tabagent.InvalidArgumentError):
            c.download(bad, "x.gguf")


def test_progress_can_cancel_and_the_next_call_resumes(hub, cache_dir):
    name = "tiny-Q8_0.gguf"
    seen = []
    with open_cache(hub, cache_dir) as c:
        with pytest.raises(tabagent.CancelledError):
            c.download(REPO, name, progress=lambda f, d, t: seen.append((f, d, t)) or d < 100000)
        assert seen and seen[-1][2] == len(FILES[name])
        p = c.download(REPO, name, progress=lambda f, d, t: True)
    assert open(p, "rb").read() == FILES[name]


def test_killed_process_resumes(hub, cache_dir):
    name = "tiny-Q8_0.gguf"
    hub.add_fault(name, "slow:100000")
    code = f"""
import sys; sys.path.insert(0, {os.path.dirname(os.path.dirname(tabagent.__file__))!r})
import tabagent
tabagent.Cache({str(cache_dir)!r}, endpoint={hub.url!r}).download({REPO!r}, {name!r})
"""
    proc = subprocess.Popen([sys.executable, "-c", code])
    deadline = time.time() + 30
    inc = []
    while time.time() < deadline:
        inc = [p for p in blobs_dir(cache_dir).glob("*.incomplete")] if blobs_dir(cache_dir).exists() else []
        if inc and inc[0].stat().st_size > 50000:
            break
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    assert inc, "download never started"
    hub.clear_faults()
    hub.clear_log()
    with open_cache(hub, cache_dir) as c:
        p = c.download(REPO, name)
    assert open(p, "rb").read() == FILES[name]
    assert any(r.headers.get("range") for r in hub.requests)


def test_two_processes_download_the_same_file(hub, cache_dir):
    name = "tiny-Q8_0.gguf"
    hub.add_fault(name, "slow:400000")
    code = f"""
import sys; sys.path.insert(0, {os.path.dirname(os.path.dirname(tabagent.__file__))!r})
import tabagent
print(tabagent.Cache({str(cache_dir)!r}, endpoint={hub.url!r}).download({REPO!r}, {name!r}))
"""
    procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=60)[0].strip() for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert outs[0] == outs[1]
    assert open(outs[0], "rb").read() == FILES[name]
    assert len([b for b in blobs_dir(cache_dir).iterdir() if len(b.name) == 64]) == 1


def test_queries_delete_stats_verify(hub, cache_dir):
    with open_cache(hub, cache_dir) as c:
        c.download(REPO, "tiny-Q4_K_M.gguf")
        c.download(REPO, "README.md")
        s = c.stats()
        assert s["repos"] == 1 and s["files"] == 2
        assert s["bytes"] == len(FILES["tiny-Q4_K_M.gguf"]) + len(FILES["README.md"])
        repos = c.list_repos()
        assert repos[0]["repo_id"] == REPO
        assert c.verify() == []
        blob_path = blobs_dir(cache_dir) / sha(FILES["tiny-Q4_K_M.gguf"])
        os.chmod(blob_path, 0o644)
        with open(blob_path, "r+b") as f:
            f.write(b"corrupt")
        bad = c.verify(REPO)
        assert len(bad) == 1 and bad[0]["expected"] == sha(FILES["tiny-Q4_K_M.gguf"])
        c.delete_repo(REPO)
        assert c.stats()["repos"] == 0
        assert not c.has_file(REPO, "README.md")


def test_from_pretrained_downloads_and_loads(tmp_path):
    with open(MODEL, "rb") as f:
        data = f.read()
    h = FakeHub(repos={"HuggingFaceTB/SmolLM2-135M-Instruct-GGUF": {"smollm2-135m-instruct-q4_1.gguf": data}})
    h.start()
    try:
        cache = tabagent.Cache(tmp_path / "c", endpoint=h.url)
        with tabagent.Model.from_pretrained("HuggingFaceTB/SmolLM2-135M-Instruct-GGUF", "Q4_1", cache=cache) as m:
            assert m.info.quantization == "Q4_1"
        h.clear_log()
        tabagent.Model.from_pretrained("HuggingFaceTB/SmolLM2-135M-Instruct-GGUF", "Q4_1", cache=cache).close()
        assert not [r for r in h.requests if r.server == "cdn"], "second load must not download again"
        cache.close()
    finally:
        h.stop()
