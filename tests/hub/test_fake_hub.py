"""Prove fake_hub.FakeHub faithful with the real `huggingface_hub` client.

The hub is started at import time so that HF_ENDPOINT can be set before huggingface_hub is
imported (its constants read the environment at import).  Every call also passes
`endpoint=` explicitly, so the tests still hold if another module imported huggingface_hub first.

Observed client behaviour (huggingface_hub 2.4.0, httpx2 transport, no Xet since we send no
X-Xet-* headers) is asserted below and summarised in each fault test's docstring.
"""

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fake_hub import FakeHub, commit_for, git_blob_sha1  # noqa: E402

TOKEN = "hf_test_token_123"
REPO = "org/name"
GATED = "org/gated"
BIG = bytes((i * 7 + (i >> 8)) & 0xFF for i in range(1 << 20))  # ~1 MiB, LFS (size)
WEIGHTS = bytes(range(256)) * 12  # 3 KiB, LFS (suffix)
CONFIG = b'{"model_type": "llama", "n": 1}\n'
README = b"# tiny\n"
NESTED = b"nested text\n"
FILES = {
    "model.gguf": WEIGHTS,
    "config.json": CONFIG,
    "README.md": README,
    "sub/dir/nested.txt": NESTED,
    "big.bin": BIG,
}
GATED_FILES = {"weights.safetensors": WEIGHTS[:2048], "config.json": CONFIG}

_HF_HOME = tempfile.mkdtemp(prefix="fakehub-hfhome-")
HUB = FakeHub(repos={REPO: FILES, GATED: GATED_FILES}, gated={GATED}, token=TOKEN)
ENDPOINT = HUB.start()

os.environ["HF_ENDPOINT"] = ENDPOINT
os.environ["HF_HOME"] = _HF_HOME  # no stored token from the developer's machine
os.environ["HF_HUB_CACHE"] = os.path.join(_HF_HOME, "hub")
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
os.environ["HF_HUB_ENABLE_HF_TRANSFER"] = "0"
os.environ["HF_HUB_DISABLE_XET"] = "1"  # exists in huggingface_hub >= 0.32 (constants.HF_HUB_DISABLE_XET)
os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
os.environ.pop("HF_TOKEN", None)
os.environ.pop("HUGGING_FACE_HUB_TOKEN", None)
os.environ.pop("HF_HUB_OFFLINE", None)

import huggingface_hub  # noqa: E402
from huggingface_hub import HfApi, hf_hub_download, scan_cache_dir, snapshot_download  # noqa: E402
from huggingface_hub.errors import (  # noqa: E402
    EntryNotFoundError,
    GatedRepoError,
    HfHubHTTPError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

COMMIT = commit_for(REPO)
SHA = {p: hashlib.sha256(d).hexdigest() for p, d in FILES.items()}


def teardown_module(module):
    HUB.stop()
    shutil.rmtree(_HF_HOME, ignore_errors=True)


@pytest.fixture(autouse=True)
def _fresh():
    HUB.clear_faults()
    HUB.clear_log()
    yield
    HUB.clear_faults()


@pytest.fixture
def cache(tmp_path):
    return tmp_path / "cache"


def dl(filename, cache, repo=REPO, **kw):
    kw.setdefault("token", False)
    return hf_hub_download(repo, filename, cache_dir=cache, endpoint=ENDPOINT, **kw)


def api():
    return HfApi(endpoint=ENDPOINT, token=False)


def test_env_and_version():
    from huggingface_hub import constants

    assert hasattr(constants, "HF_HUB_DISABLE_XET")
    assert constants.HF_HUB_DISABLE_XET is True
    assert constants.ENDPOINT == ENDPOINT
    assert huggingface_hub.__version__


# --------------------------------------------------------------------------- downloads / cache layout


def test_download_lfs_file_standard_layout(cache):
    path = dl("model.gguf", cache)
    repo_dir = cache / "models--org--name"
    assert Path(path) == repo_dir / "snapshots" / COMMIT / "model.gguf"
    assert Path(path).is_symlink()
    blob = repo_dir / "blobs" / SHA["model.gguf"]  # LFS blob named by sha256
    assert blob.is_file() and blob.read_bytes() == WEIGHTS
    assert Path(path).resolve() == blob.resolve()
    assert (repo_dir / "refs" / "main").read_text() == COMMIT
    # HEAD on the hub (302 not followed), then GET on the CDN
    hub_reqs = HUB.find_requests(server="hub")
    assert [(r.method, r.status) for r in hub_reqs] == [("HEAD", 302)]
    cdn = HUB.find_requests(server="cdn")
    assert [(r.method, r.status) for r in cdn] == [("GET", 200)]
    assert "range" not in cdn[0].headers


def test_download_small_file_served_directly(cache):
    path = dl("config.json", cache)
    blob = cache / "models--org--name" / "blobs" / git_blob_sha1(CONFIG)  # non-LFS blob named by git sha1
    assert blob.read_bytes() == CONFIG
    assert Path(path).resolve() == blob.resolve()
    assert HUB.find_requests(server="cdn") == []
    assert [(r.method, r.status) for r in HUB.requests] == [("HEAD", 200), ("GET", 200)]
    head = HUB.requests[0]
    assert head.headers.get("accept-encoding") == "identity"


def test_nested_file_and_commit_revision(cache):
    path = dl("sub/dir/nested.txt", cache, revision=COMMIT)
    assert Path(path) == cache / "models--org--name" / "snapshots" / COMMIT / "sub" / "dir" / "nested.txt"
    assert Path(path).read_bytes() == NESTED
    assert HUB.requests[0].path == f"/{REPO}/resolve/{COMMIT}/sub/dir/nested.txt"
    # revision given as a commit => refs/main is not written
    assert not (cache / "models--org--name" / "refs" / "main").exists()


def test_local_files_only_returns_same_path(cache):
    p1 = dl("model.gguf", cache)
    p2 = dl("config.json", cache)
    HUB.clear_log()
    assert dl("model.gguf", cache, local_files_only=True) == p1
    assert dl("config.json", cache, local_files_only=True) == p2
    assert HUB.requests == []
    # a second online call only HEADs (etag matches => no GET)
    assert dl("model.gguf", cache) == p1
    assert [r.method for r in HUB.requests] == ["HEAD"]


def test_scan_cache_dir(cache):
    dl("model.gguf", cache)
    dl("config.json", cache)
    info = scan_cache_dir(cache)
    assert len(info.repos) == 1
    repo = next(iter(info.repos))
    assert repo.repo_id == REPO and repo.repo_type == "model"
    assert repo.size_on_disk == len(WEIGHTS) + len(CONFIG)
    assert info.size_on_disk == len(WEIGHTS) + len(CONFIG)
    (rev,) = repo.revisions
    assert rev.commit_hash == COMMIT and rev.refs == frozenset({"main"})
    assert {f.file_name for f in rev.files} == {"model.gguf", "config.json"}
    assert rev.nb_files == 2


def test_snapshot_download(cache):
    folder = snapshot_download(REPO, cache_dir=cache, endpoint=ENDPOINT, token=False)
    folder = Path(folder)
    assert folder == cache / "models--org--name" / "snapshots" / COMMIT
    for p, data in FILES.items():
        assert (folder / p).read_bytes() == data
    assert (cache / "models--org--name" / "refs" / "main").read_text() == COMMIT
    paths = [(r.method, r.path) for r in HUB.find_requests(server="hub")]
    assert ("GET", f"/api/models/{REPO}/revision/main") in paths
    assert ("GET", f"/api/models/{REPO}/tree/{COMMIT}") in paths
    tree_req = next(r for r in HUB.requests if "/tree/" in r.path)
    assert "recursive=true" in tree_req.query.lower()
    # The Hub's own checksums (tree oid/lfs.oid) match what was downloaded => our blob ids are real git ids
    v = api().verify_repo_checksums(REPO, cache_dir=cache)
    assert v.checked_count == len(FILES) and v.mismatches == [] and v.missing_paths == []
    # second call from cache only
    HUB.clear_log()
    assert Path(snapshot_download(REPO, cache_dir=cache, endpoint=ENDPOINT, token=False, local_files_only=True)) == folder
    assert HUB.requests == []


def test_git_blob_sha1_matches_git(tmp_path):
    if shutil.which("git") is None:
        pytest.skip("git not installed")
    f = tmp_path / "c.json"
    f.write_bytes(CONFIG)
    out = subprocess.run(["git", "hash-object", str(f)], capture_output=True, text=True, check=True).stdout.strip()
    assert out == git_blob_sha1(CONFIG)


# --------------------------------------------------------------------------- API


def test_model_info_files_metadata():
    info = api().model_info(REPO, files_metadata=True)
    assert info.id == REPO and info.sha == COMMIT
    sib = {s.rfilename: s for s in info.siblings}
    assert set(sib) == set(FILES)
    for p, data in FILES.items():
        assert sib[p].size == len(data)
    assert sib["model.gguf"].lfs is not None
    assert sib["model.gguf"].lfs.sha256 == SHA["model.gguf"]
    assert sib["model.gguf"].lfs.size == len(WEIGHTS)
    assert sib["big.bin"].lfs.sha256 == SHA["big.bin"]
    assert sib["config.json"].lfs is None
    assert sib["config.json"].blob_id == git_blob_sha1(CONFIG)
    assert "blobs=true" in HUB.requests[-1].query.lower()
    # without files_metadata the Hub only returns names
    plain = api().model_info(REPO)
    assert all(s.size is None for s in plain.siblings)
    # revision path
    assert api().model_info(REPO, revision=COMMIT).sha == COMMIT
    assert HUB.requests[-1].path == f"/api/models/{REPO}/revision/{COMMIT}"


def test_list_repo_tree():
    from huggingface_hub.hf_api import RepoFile, RepoFolder

    top = list(api().list_repo_tree(REPO))
    assert {e.path for e in top} == {"model.gguf", "config.json", "README.md", "big.bin", "sub"}
    assert isinstance(next(e for e in top if e.path == "sub"), RepoFolder)
    rec = {e.path: e for e in api().list_repo_tree(REPO, recursive=True)}
    assert {p for p, e in rec.items() if isinstance(e, RepoFile)} == set(FILES)
    assert {p for p, e in rec.items() if isinstance(e, RepoFolder)} == {"sub", "sub/dir"}
    assert rec["model.gguf"].size == len(WEIGHTS) and rec["model.gguf"].lfs.sha256 == SHA["model.gguf"]
    assert rec["big.bin"].lfs.size == len(BIG)
    assert rec["config.json"].lfs is None and rec["config.json"].blob_id == git_blob_sha1(CONFIG)
    sub = list(api().list_repo_tree(REPO, path_in_repo="sub/dir", revision=COMMIT))
    assert [e.path for e in sub] == ["sub/dir/nested.txt"]
    assert HUB.requests[-1].path == f"/api/models/{REPO}/tree/{COMMIT}/sub%2Fdir"
    with pytest.raises(EntryNotFoundError):
        list(api().list_repo_tree(REPO, path_in_repo="nope"))


# --------------------------------------------------------------------------- errors


def test_gated_repo_without_token_raises(cache):
    with pytest.raises(GatedRepoError) as ei:
        dl("weights.safetensors", cache, repo=GATED)
    assert ei.value.response.status_code == 401
    assert isinstance(ei.value, RepositoryNotFoundError)  # GatedRepoError subclasses it
    assert HUB.requests[0].status == 401 and "authorization" not in HUB.requests[0].headers
    # metadata stays public, like the real Hub
    assert api().model_info(GATED).gated == "manual"
    with pytest.raises(GatedRepoError):
        dl("weights.safetensors", cache, repo=GATED, token="hf_wrong")


def test_gated_repo_with_token_and_no_auth_to_cdn(cache):
    path = dl("weights.safetensors", cache, repo=GATED, token=TOKEN)
    assert Path(path).read_bytes() == WEIGHTS[:2048]
    head = HUB.find_requests(server="hub")[0]
    assert head.headers["authorization"] == f"Bearer {TOKEN}"
    (cdn,) = HUB.find_requests(server="cdn")
    assert "authorization" not in cdn.headers  # stripped: CDN is another origin
    # small file of the gated repo: served by the hub itself => Authorization is sent on the GET too
    HUB.clear_log()
    dl("config.json", cache, repo=GATED, token=TOKEN)
    assert all(r.headers.get("authorization") == f"Bearer {TOKEN}" for r in HUB.requests)


def test_missing_repo(cache):
    with pytest.raises(RepositoryNotFoundError) as ei:
        dl("config.json", cache, repo="org/missing")
    assert not isinstance(ei.value, GatedRepoError)
    assert HUB.requests[0].status == 404
    with pytest.raises(RepositoryNotFoundError):
        api().model_info("org/missing")


def test_missing_file(cache):
    with pytest.raises(EntryNotFoundError):
        dl("nope.txt", cache)
    # the client caches the non-existence using X-Repo-Commit
    assert (cache / "models--org--name" / ".no_exist" / COMMIT / "nope.txt").exists()


def test_missing_revision(cache):
    with pytest.raises(RevisionNotFoundError):
        dl("config.json", cache, revision="v9")
    with pytest.raises(RevisionNotFoundError):
        api().model_info(REPO, revision="deadbeef")


# --------------------------------------------------------------------------- raw HTTP (Range etc.)


def _raw(url, headers=None, method="GET"):
    req = urllib.request.Request(url, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(req) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *a, **k):
        return None


def test_resolve_headers_and_cdn_ranges():
    opener = urllib.request.build_opener(_NoRedirect)
    try:
        opener.open(urllib.request.Request(f"{ENDPOINT}/{REPO}/resolve/main/big.bin", method="HEAD"))
        raise AssertionError("expected 302")
    except urllib.error.HTTPError as e:
        assert e.code == 302
        h = e.headers
    assert h["X-Repo-Commit"] == COMMIT
    assert h["X-Linked-Etag"] == f'"{SHA["big.bin"]}"'
    assert int(h["X-Linked-Size"]) == len(BIG)
    assert h["ETag"] and h["Content-Length"]
    loc = h["Location"]
    assert loc.startswith(HUB.cdn_url + "/")
    st, hh, body = _raw(loc)
    assert st == 200 and body == BIG and hh["Accept-Ranges"] == "bytes" and int(hh["Content-Length"]) == len(BIG)
    st, hh, body = _raw(loc, {"Range": "bytes=1000-"})
    assert st == 206 and body == BIG[1000:] and hh["Content-Range"] == f"bytes 1000-{len(BIG) - 1}/{len(BIG)}"
    st, hh, body = _raw(loc, {"Range": "bytes=10-19"})
    assert st == 206 and body == BIG[10:20] and hh["Content-Range"] == f"bytes 10-19/{len(BIG)}"
    st, hh, body = _raw(loc, {"Range": "bytes=-5"})
    assert st == 206 and body == BIG[-5:]
    st, hh, _ = _raw(loc, {"Range": f"bytes={len(BIG)}-"})
    assert st == 416 and hh["Content-Range"] == f"bytes */{len(BIG)}"
    # small file served directly with the git blob sha1 as ETag
    st, hh, body = _raw(f"{ENDPOINT}/{REPO}/resolve/main/config.json")
    assert st == 200 and body == CONFIG
    assert hh["ETag"] == f'"{git_blob_sha1(CONFIG)}"' and hh["X-Repo-Commit"] == COMMIT
    st, hh, body = _raw(f"{ENDPOINT}/{REPO}/resolve/main/config.json", {"Range": "bytes=2-"})
    assert st == 206 and body == CONFIG[2:]
    st, hh, _ = _raw(f"{ENDPOINT}/{REPO}/resolve/main/nope")
    assert st == 404 and hh["X-Error-Code"] == "EntryNotFound"
    st, hh, _ = _raw(f"{ENDPOINT}/org/none/resolve/main/x")
    assert st == 404 and hh["X-Error-Code"] == "RepoNotFound"
    st, hh, _ = _raw(f"{ENDPOINT}/{REPO}/resolve/v2/config.json")
    assert st == 404 and hh["X-Error-Code"] == "RevisionNotFound"
    st, hh, _ = _raw(f"{ENDPOINT}/{GATED}/resolve/main/config.json")
    assert st == 401 and hh["X-Error-Code"] == "GatedRepo"


# --------------------------------------------------------------------------- faults


def test_faults_consumed_in_order_and_filtered():
    HUB.add_fault("config.json", "status:503", "status:500")
    HUB.add_fault("/api/models/org/name", "GET status:502")
    url = f"{ENDPOINT}/{REPO}/resolve/main/config.json"
    assert _raw(url)[0] == 503
    assert _raw(url)[0] == 500
    assert _raw(url)[0] == 200
    assert _raw(f"{ENDPOINT}/api/models/{REPO}", method="HEAD")[0] == 200  # method filter: not consumed
    assert _raw(f"{ENDPOINT}/api/models/{REPO}")[0] == 502
    assert _raw(f"{ENDPOINT}/api/models/{REPO}")[0] == 200
    assert HUB.pending_faults() == {}
    with pytest.raises(ValueError):
        HUB.add_fault("x", "explode")


def test_fault_503_on_head_is_retried(cache):
    """status:503 on the metadata HEAD: the first HEAD is made without retries (fast fallback to
    the cache); with no cached file, hf_hub_download retries the HEAD with retry_on_errors=True
    (backoff, 1 s), gets the 302 and downloads normally."""
    HUB.add_fault("model.gguf", "HEAD status:503")
    path = dl("model.gguf", cache)
    assert Path(path).read_bytes() == WEIGHTS
    assert [(r.server, r.method, r.status) for r in HUB.requests] == [
        ("hub", "HEAD", 503),
        ("hub", "HEAD", 302),
        ("cdn", "GET", 200),
    ]


def test_fault_503_on_head_with_cached_file_falls_back(cache):
    """With the file already cached, a 503 on the HEAD makes hf_hub_download return the cached
    file (warning, no retry)."""
    p = dl("model.gguf", cache)
    HUB.clear_log()
    HUB.add_fault("model.gguf", "HEAD status:503")
    assert dl("model.gguf", cache) == p
    assert [(r.method, r.status) for r in HUB.requests] == [("HEAD", 503)]


def test_fault_503_on_cdn_get_surfaces(cache):
    """status:503 on the CDN GET: http_get only retries 408/429, so the 503 surfaces as
    HfHubHTTPError; nothing is left in blobs/ (the temp file is removed). A retry succeeds."""
    HUB.add_fault("model.gguf", "cdn GET status:503")
    with pytest.raises(HfHubHTTPError) as ei:
        dl("model.gguf", cache)
    assert ei.value.response.status_code == 503
    blobs = cache / "models--org--name" / "blobs"
    assert not any(p.name == SHA["model.gguf"] for p in blobs.iterdir())
    assert not any(p.name.endswith(".incomplete") for p in blobs.iterdir())
    assert Path(dl("model.gguf", cache)).read_bytes() == WEIGHTS


def test_fault_503_on_api_surfaces():
    """status:503 on /api/models: model_info does not retry, HfHubHTTPError(503)."""
    HUB.add_fault(f"/api/models/{REPO}", "status:503")
    with pytest.raises(HfHubHTTPError) as ei:
        api().model_info(REPO)
    assert ei.value.response.status_code == 503
    assert api().model_info(REPO).sha == COMMIT


def test_fault_drop_after_restarts_without_range_by_default(cache):
    """drop_after with the default DOWNLOAD_CHUNK_SIZE (10 MiB): httpx2's iter_bytes(chunk_size=10 MiB)
    never yields the partial data before raising RemoteProtocolError, so the client's resume_size
    stays 0: it logs "Trying to resume download...", sleeps 1 s and re-issues a plain GET (no Range)
    for the whole file, which succeeds."""
    HUB.add_fault("big.bin", "drop_after:100000")
    path = dl("big.bin", cache)
    assert hashlib.sha256(Path(path).read_bytes()).hexdigest() == SHA["big.bin"]
    cdn = HUB.find_requests(server="cdn")
    assert [(r.method, r.status, r.headers.get("range")) for r in cdn] == [("GET", 200, None), ("GET", 200, None)]
    assert cdn[0].fault.kind == "drop_after"


@pytest.fixture
def small_chunks(monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "DOWNLOAD_CHUNK_SIZE", 64 * 1024)
    return 64 * 1024


def test_fault_drop_after_resumes_with_range(cache, small_chunks):
    """drop_after once at least one chunk was written: the retry GET carries
    `Range: bytes=<bytes written>-` (a multiple of the chunk size: the partial chunk is lost),
    the 206 body is appended and the file is right."""
    HUB.add_fault("big.bin", "drop_after:150000")
    path = dl("big.bin", cache)
    assert hashlib.sha256(Path(path).read_bytes()).hexdigest() == SHA["big.bin"]
    cdn = HUB.find_requests(server="cdn")
    assert [(r.method, r.status) for r in cdn] == [("GET", 200), ("GET", 206)]
    assert "range" not in cdn[0].headers
    assert cdn[1].headers["range"] == f"bytes={2 * small_chunks}-"


def test_fault_drop_after_then_ignore_range_restarts(cache, small_chunks):
    """drop_after then ignore_range: the resume request gets 200 + full body; the client notices
    (status 200 to a Range request), truncates its temp file and keeps the full body."""
    HUB.add_fault("big.bin", "drop_after:100000", "ignore_range")
    path = dl("big.bin", cache)
    assert Path(path).read_bytes() == BIG
    cdn = HUB.find_requests(server="cdn")
    assert [(r.status, r.headers.get("range")) for r in cdn] == [(200, None), (200, f"bytes={small_chunks}-")]
    assert cdn[1].fault.kind == "ignore_range"


@pytest.fixture
def no_retry_sleep(monkeypatch):
    """Skip http_get's 1 s pause between resume attempts (only inside huggingface_hub.file_download)."""
    import time as _time
    import types

    from huggingface_hub import file_download

    shim = types.SimpleNamespace(**{k: getattr(_time, k) for k in dir(_time) if not k.startswith("__")})
    shim.sleep = lambda s: None
    monkeypatch.setattr(file_download, "time", shim)


def test_fault_drop_after_every_time_gives_up(cache, no_retry_sleep):
    """drop_after repeated with 0 bytes: no progress, so after the initial try + 5 retries the
    error propagates (httpx2.RemoteProtocolError) and no blob is written."""
    HUB.add_fault("model.gguf", *(["drop_after:0"] * 6))
    with pytest.raises(Exception) as ei:
        dl("model.gguf", cache)
    assert type(ei.value).__name__ == "RemoteProtocolError"
    assert len(HUB.find_requests(server="cdn")) == 6
    assert not (cache / "models--org--name" / "blobs" / SHA["model.gguf"]).exists()


def test_fault_wrong_bytes_not_detected_by_download(cache):
    """wrong_bytes: huggingface_hub 2.4.0 only checks the size (http_get's consistency check),
    not the sha256: the corrupt bytes are stored under blobs/<advertised sha256>.
    `HfApi.verify_repo_checksums` does detect it afterwards."""
    HUB.add_fault("model.gguf", "wrong_bytes")
    path = dl("model.gguf", cache)
    data = Path(path).read_bytes()
    assert len(data) == len(WEIGHTS) and data != WEIGHTS
    assert (cache / "models--org--name" / "blobs" / SHA["model.gguf"]).read_bytes() == data
    v = api().verify_repo_checksums(REPO, cache_dir=cache)
    assert [m["path"] for m in v.mismatches] == ["model.gguf"]


def test_fault_wrong_bytes_small_file(cache):
    HUB.add_fault("config.json", "wrong_bytes")
    data = Path(dl("config.json", cache)).read_bytes()
    assert len(data) == len(CONFIG) and data != CONFIG


def test_fault_slow(cache):
    """slow: the body arrives at ~BPS; the client just waits (no read timeout hit at this rate)."""
    import time

    HUB.add_fault("model.gguf", f"slow:{len(WEIGHTS) * 4}")  # ~0.25 s
    t = time.monotonic()
    assert Path(dl("model.gguf", cache)).read_bytes() == WEIGHTS
    assert time.monotonic() - t >= 0.2


# --------------------------------------------------------------------------- CLI + control endpoint


def test_cli_process_with_control_endpoint(tmp_path, cache, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "DOWNLOAD_CHUNK_SIZE", 1024)
    d = tmp_path / "repo"
    (d / "sub").mkdir(parents=True)
    (d / "w.gguf").write_bytes(WEIGHTS)
    (d / "sub" / "t.txt").write_bytes(b"hello\n")
    proc = subprocess.Popen(
        [sys.executable, os.path.join(os.path.dirname(os.path.abspath(__file__)), "fake_hub.py"),
         "--port", "0", "--repo", f"cli/repo={d}", "--fault", "w.gguf=HEAD status:503"],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:")
        kw = dict(cache_dir=cache, endpoint=url, token=False)
        req = urllib.request.Request(
            f"{url}/_fault", data=json.dumps({"path": "w.gguf", "faults": ["drop_after:1500"]}).encode(),
            headers={"Content-Type": "application/json"}, method="POST",
        )
        with urllib.request.urlopen(req) as r:
            state = json.load(r)
        assert [f["kind"] for f in state["w.gguf"]] == ["status", "drop_after"]
        p = hf_hub_download("cli/repo", "w.gguf", **kw)
        assert Path(p).read_bytes() == WEIGHTS
        assert Path(hf_hub_download("cli/repo", "sub/t.txt", **kw)).read_bytes() == b"hello\n"
        assert Path(p).parent.name == commit_for("cli/repo")
        with urllib.request.urlopen(f"{url}/_log") as r:
            log = json.load(r)
        seen = [(e["server"], e["method"], e["status"], e["headers"].get("range")) for e in log]
        assert seen[:4] == [
            ("hub", "HEAD", 503, None),
            ("hub", "HEAD", 302, None),
            ("cdn", "GET", 200, None),
            ("cdn", "GET", 206, "bytes=1024-"),
        ]
        bad = urllib.request.Request(f"{url}/_fault", data=b'{"path": "x", "fault": "bogus"}', method="POST")
        with pytest.raises(urllib.error.HTTPError) as ei:
            urllib.request.urlopen(bad)
        assert ei.value.code == 400
    finally:
        proc.terminate()
        assert proc.wait(timeout=10) == 0
