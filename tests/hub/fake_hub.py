#!/usr/bin/env python3
"""A small imitation of the Hugging Face Hub, for tests.

Standard library only.  Two HTTP servers are started by one ``FakeHub``:

* the *hub* (``FakeHub.url``): ``/api/models/...`` and ``/{repo}/resolve/{rev}/{path}``;
* the *CDN* (``FakeHub.cdn_url``): serves the bytes of "LFS" files, to which the hub
  answers ``/resolve`` with a 302, like huggingface.co redirects to cdn-lfs.

Module use::

    hub = FakeHub(repos={"org/name": {"model.gguf": b"...", "config.json": b"{}"}},
                  gated={"org/secret"}, token="hf_test_token",
                  faults={"model.gguf": ["drop_after:1000"]})
    url = hub.start()            # "http://127.0.0.1:PORT"
    ...
    hub.add_fault("model.gguf", "status:503")
    hub.requests                 # [LoggedRequest(method, path, headers, ...), ...]
    hub.stop()

CLI use (for C / Rust tests)::

    python fake_hub.py --port 0 --repo org/name=DIR [--repo ...] [--gated org/name]
                       [--token TOK] [--fault PATH=SPEC ...] [--cdn-port 0]

prints the hub URL on the first line of stdout (then ``CDN <url>`` on the second) and
serves until killed.  An out-of-process server is driven with ``POST /_fault`` (JSON, see
``_control_fault``), read with ``GET /_log`` and cleared with ``POST /_log/clear``.

Fault spec (string): ``[hub|cdn] [GET|HEAD] KIND[:ARG]`` where KIND is one of

* ``status:CODE``   answer CODE once (any request for that path unless filtered), then normal;
* ``drop_after:N``  send the headers and N bytes of the body, then close the socket;
* ``wrong_bytes``   serve bytes of the right length whose sha256 differs from the advertised one;
* ``ignore_range``  answer a Range request with 200 and the full body;
* ``slow:BPS``      send the body at about BPS bytes per second.

A dict ``{"fault": "status:503", "method": "GET", "server": "cdn"}`` is accepted too.
Faults are kept per *key*, a list consumed in order, one fault per matching request.
A key is either a file path in a repo (``model.gguf``), ``org/name/model.gguf``, or a
URL path starting with ``/`` (matched exactly, e.g. ``/api/models/org/name``).
Body faults (all but ``status``) are only consumed by a GET answered with file bytes
(the CDN for LFS files, ``/resolve`` for small files); ``status`` by any request.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import signal
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, quote, unquote, urlsplit

__all__ = ["FakeHub", "LoggedRequest", "Fault", "git_blob_sha1", "commit_for", "lfs_pointer"]

LFS_SUFFIXES = (".gguf", ".bin", ".safetensors")
LFS_THRESHOLD = 1024
BODY_FAULTS = ("drop_after", "wrong_bytes", "ignore_range", "slow")
FAULT_KINDS = ("status",) + BODY_FAULTS
DATE = "2024-01-01T00:00:00.000Z"


def git_blob_sha1(data: bytes) -> str:
    """The git blob id of ``data`` (what the hub uses as ETag for non-LFS files)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def commit_for(repo_id: str) -> str:
    """The fixed 40-hex commit of a repo: sha1 of its id."""
    return hashlib.sha1(repo_id.encode()).hexdigest()


def lfs_pointer(sha256: str, size: int) -> bytes:
    return ("version https://git-lfs.github.com/spec/v1\noid sha256:%s\nsize %d\n" % (sha256, size)).encode()


class _File:
    def __init__(self, path: str, data: bytes, lfs: bool):
        self.path = path
        self.data = data
        self.size = len(data)
        self.sha256 = hashlib.sha256(data).hexdigest()
        self.lfs = lfs
        if lfs:
            self.pointer = lfs_pointer(self.sha256, self.size)
            self.blob_id = git_blob_sha1(self.pointer)  # git stores the pointer file
            self.etag = self.sha256
        else:
            self.pointer = None
            self.blob_id = git_blob_sha1(data)
            self.etag = self.blob_id

    def lfs_info(self, sha_key: str) -> dict:
        return {sha_key: self.sha256, "size": self.size, "pointerSize": len(self.pointer)}


class _Repo:
    def __init__(self, repo_id: str, files: dict, lfs_threshold: int, commit: str | None = None):
        self.id = repo_id
        self.commit = commit or commit_for(repo_id)
        self.files = {}
        for path, data in sorted(files.items()):
            path = path.replace(os.sep, "/").lstrip("/")
            if isinstance(data, str):
                data = data.encode()
            lfs = path.endswith(LFS_SUFFIXES) or len(data) > lfs_threshold
            self.files[path] = _File(path, bytes(data), lfs)

    def dirs(self) -> set:
        out = set()
        for p in self.files:
            parts = p.split("/")[:-1]
            for i in range(1, len(parts) + 1):
                out.add("/".join(parts[:i]))
        return out


def _load_dir(directory: str) -> dict:
    files = {}
    for root, dirnames, names in os.walk(directory):
        dirnames[:] = [d for d in dirnames if d != ".git"]
        for n in names:
            full = os.path.join(root, n)
            rel = os.path.relpath(full, directory).replace(os.sep, "/")
            with open(full, "rb") as f:
                files[rel] = f.read()
    return files


class Fault:
    """One parsed fault.  ``kind`` in FAULT_KINDS, ``arg`` int or None, optional filters."""

    def __init__(self, kind: str, arg: int | None = None, method: str | None = None, server: str | None = None):
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r} (expected one of {FAULT_KINDS})")
        if kind in ("status", "drop_after", "slow") and arg is None:
            raise ValueError(f"fault {kind!r} needs an argument, e.g. {kind}:100")
        self.kind, self.arg = kind, arg
        self.method = method.upper() if method else None
        self.server = server
        if server not in (None, "hub", "cdn"):
            raise ValueError(f"fault server must be 'hub' or 'cdn', not {server!r}")

    @classmethod
    def parse(cls, spec) -> "Fault":
        if isinstance(spec, Fault):
            return spec
        if isinstance(spec, dict):
            f = cls.parse(spec["fault"])
            return cls(f.kind, f.arg, spec.get("method", f.method), spec.get("server", f.server))
        method = server = None
        tokens = str(spec).split()
        if not tokens:
            raise ValueError("empty fault spec")
        for tok in tokens[:-1]:
            if tok.upper() in ("GET", "HEAD", "POST"):
                method = tok.upper()
            elif tok.lower() in ("hub", "cdn"):
                server = tok.lower()
            else:
                raise ValueError(f"bad fault qualifier {tok!r} in {spec!r}")
        kind, _, arg = tokens[-1].partition(":")
        return cls(kind, int(arg) if arg else None, method, server)

    def to_json(self) -> dict:
        return {"kind": self.kind, "arg": self.arg, "method": self.method, "server": self.server}

    def __repr__(self) -> str:
        q = " ".join(x for x in (self.server, self.method) if x)
        return f"Fault({(q + ' ') if q else ''}{self.kind}{'' if self.arg is None else ':%d' % self.arg})"


class LoggedRequest:
    """One request seen by the hub or CDN.  Unpacks as ``(method, path, headers)``.

    ``path`` is the raw request path without the query string, ``query`` the raw query,
    ``headers`` a dict with lower-cased names, ``server`` is "hub" or "cdn", ``status`` the
    status answered (None if the connection died first), ``fault`` the fault applied or None.
    """

    __slots__ = ("method", "path", "headers", "server", "query", "status", "fault")

    def __init__(self, method, path, headers, server, query):
        self.method, self.path, self.headers, self.server, self.query = method, path, headers, server, query
        self.status = None
        self.fault = None

    def __iter__(self):
        return iter((self.method, self.path, self.headers))

    def to_json(self) -> dict:
        return {k: (repr(getattr(self, k)) if k == "fault" and self.fault else getattr(self, k)) for k in self.__slots__}

    def __repr__(self) -> str:
        return f"<{self.server} {self.method} {self.path}{'?' + self.query if self.query else ''} -> {self.status}>"


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "FakeHub/1.0"
    timeout = 60
    hub: "FakeHub" = None  # set on subclass
    kind = "hub"

    def log_message(self, *args):  # quiet
        pass

    # ------------------------------------------------------------------ plumbing
    def _begin(self):
        split = urlsplit(self.path)
        self.url_path, self.query = split.path, split.query
        self.params = {k: v[-1] for k, v in parse_qs(split.query).items()}
        self.entry = None
        if not self.url_path.startswith("/_"):
            self.entry = LoggedRequest(
                self.command, self.url_path, {k.lower(): v for k, v in self.headers.items()}, self.kind, self.query
            )
            self.hub._log(self.entry)

    def send_response(self, code, message=None):
        if self.entry is not None:
            self.entry.status = code
        super().send_response(code, message)

    def _send(self, status: int, body: bytes = b"", headers: dict | None = None, content_type="application/json"):
        self.send_response(status)
        if content_type:
            self.send_header("Content-Type", content_type)
        for k, v in (headers or {}).items():
            self.send_header(k, str(v))
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD" and body:
            self.wfile.write(body)

    def _json(self, obj, status=200, headers=None):
        self._send(status, json.dumps(obj).encode(), headers)

    def _error(self, status: int, code: str | None, message: str, headers: dict | None = None):
        h = dict(headers or {})
        if code:
            h["X-Error-Code"] = code
        h["X-Error-Message"] = message
        self._json({"error": message}, status, h)

    def _take_fault(self, repo_id=None, file_path=None, body=False):
        f = self.hub._take_fault(self.kind, self.command, self.url_path, repo_id, file_path, body)
        if f is not None and self.entry is not None:
            self.entry.fault = f
        return f

    def _status_fault(self, repo_id=None, file_path=None) -> bool:
        f = self._take_fault(repo_id, file_path, body=False)
        if f is None:
            return False
        self._error(f.arg, None, f"Injected fault: status {f.arg}")
        return True

    # ------------------------------------------------------------------ verbs
    def do_GET(self):
        self._dispatch()

    def do_HEAD(self):
        self._dispatch()

    def do_POST(self):
        self._dispatch()

    def _dispatch(self):
        try:
            self._begin()
            if self.url_path.startswith("/_"):
                return self._control()
            if self.kind == "cdn":
                return self._cdn()
            return self._hub()
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    # ------------------------------------------------------------------ control
    def _control(self):
        if self.url_path == "/_health":
            return self._json({"ok": True})
        if self.url_path == "/_log" and self.command == "GET":
            return self._json([e.to_json() for e in self.hub.requests])
        if self.url_path == "/_log/clear" and self.command == "POST":
            self.hub.clear_log()
            return self._json({"ok": True})
        if self.url_path == "/_fault" and self.command == "POST":
            n = int(self.headers.get("Content-Length") or 0)
            try:
                payload = json.loads(self.rfile.read(n) or b"{}")
                self.hub._control_fault(payload)
            except (ValueError, KeyError, TypeError) as e:
                return self._json({"error": str(e)}, 400)
            return self._json(self.hub.faults_json())
        if self.url_path == "/_fault" and self.command == "GET":
            return self._json(self.hub.faults_json())
        return self._error(404, None, "unknown control endpoint")

    # ------------------------------------------------------------------ hub
    def _split_repo(self, segs: list) -> tuple:
        """Split path segments into (repo_id, rest), preferring known repos."""
        for n in (2, 1):
            if len(segs) >= n and "/".join(segs[:n]) in self.hub.repos:
                return "/".join(segs[:n]), segs[n:]
        return "/".join(segs[:2]), segs[2:]

    def _authorized(self, repo_id: str) -> bool:
        if repo_id not in self.hub.gated and repo_id not in self.hub.private:
            return True
        auth = self.headers.get("Authorization") or ""
        return self.hub.token is not None and auth == f"Bearer {self.hub.token}"

    def _repo_not_found(self):
        self._error(404, "RepoNotFound", "Repository not found")

    def _resolve_rev(self, repo, rev: str) -> bool:
        return rev in ("main", repo.commit)

    def _hub(self):
        if self._status_fault():  # URL-path keyed status faults (e.g. /api/models/org/name)
            return
        raw_segs = [s for s in self.url_path.split("/") if s != ""]
        if raw_segs[:2] == ["api", "models"] and self.command in ("GET", "HEAD"):
            return self._api_models(raw_segs[2:])
        if "resolve" in raw_segs and self.command in ("GET", "HEAD"):
            i = raw_segs.index("resolve")
            repo_id = "/".join(unquote(s) for s in raw_segs[:i])
            if len(raw_segs) >= i + 3:
                rev = unquote(raw_segs[i + 1])
                path = unquote("/".join(raw_segs[i + 2 :]))
                return self._resolve(repo_id, rev, path)
        return self._error(404, None, "Not Found")

    def _api_models(self, segs: list):
        segs = [unquote(s) for s in segs]
        if not segs:
            return self._search()
        repo_id, rest = self._split_repo(segs)
        repo = self.hub.repos.get(repo_id)
        if repo is None or (repo_id in self.hub.private and not self._authorized(repo_id)):
            return self._repo_not_found()
        if self._status_fault(repo_id, None):
            return
        if not rest:
            return self._model_info(repo, "main")
        if rest[0] == "revision" and len(rest) >= 2:
            rev = "/".join(rest[1:])  # quote(rev, safe="") => "refs/pr/1" arrives as one segment
            if not self._resolve_rev(repo, rev):
                return self._error(404, "RevisionNotFound", f"Invalid rev id: {rev}")
            return self._model_info(repo, rev)
        if rest[0] == "tree" and len(rest) >= 2:
            rev = rest[1]
            if not self._resolve_rev(repo, rev):
                return self._error(404, "RevisionNotFound", f"Invalid rev id: {rev}")
            return self._tree(repo, "/".join(rest[2:]).strip("/"))
        return self._error(404, None, "Not Found")

    def _search(self):
        """``GET /api/models?search=Q&filter=TAG&author=A&limit=N`` as the hub answers it: a
        JSON list of model summaries (``id``, ``modelId``, ``tags``, ``downloads``, ``likes``,
        ...), matching ``search`` case-insensitively in the id; private repos are left out."""
        q = self.params.get("search", "").lower()
        tag = self.params.get("filter")
        author = self.params.get("author")
        try:
            limit = max(0, int(self.params.get("limit", "1000")))
        except ValueError:
            return self._error(400, None, "Invalid limit")
        out = []
        for rid in sorted(self.hub.repos):
            if rid in self.hub.private or q not in rid.lower():
                continue
            if author and rid.split("/")[0] != author:
                continue
            tags = sorted({"gguf" for f in self.hub.repos[rid].files if f.endswith(".gguf")})
            if tag and tag not in tags:
                continue
            out.append({"_id": hashlib.sha1(rid.encode()).hexdigest()[:24], "id": rid, "modelId": rid,
                        "likes": 0, "downloads": 0, "trendingScore": 0, "private": False, "tags": tags,
                        "library_name": "gguf" if "gguf" in tags else None,
                        "createdAt": "2024-01-01T00:00:00.000Z"})
        return self._json(out[:limit])

    def _model_info(self, repo, rev):
        blobs = self.params.get("blobs", "").lower() in ("1", "true")
        siblings = []
        for f in repo.files.values():
            s = {"rfilename": f.path}
            if blobs:
                s.update(size=f.size, blobId=f.blob_id)
                if f.lfs:
                    s["lfs"] = f.lfs_info("sha256")
            siblings.append(s)
        gated = repo.id in self.hub.gated
        org = repo.id.split("/")[0] if "/" in repo.id else None
        info = {
            "_id": repo.commit[:24],
            "id": repo.id,
            "modelId": repo.id,
            "author": org,
            "sha": repo.commit,
            "lastModified": DATE,
            "createdAt": DATE,
            "private": repo.id in self.hub.private,
            "gated": "manual" if gated else False,
            "disabled": False,
            "downloads": 0,
            "likes": 0,
            "tags": [],
            "library_name": None,
            "siblings": siblings,
            "usedStorage": sum(f.size for f in repo.files.values()),
        }
        self._json(info, headers={"X-Repo-Commit": repo.commit})

    def _tree(self, repo, sub: str):
        recursive = self.params.get("recursive", "").lower() in ("1", "true")
        dirs = repo.dirs()
        if sub and sub not in dirs:
            if sub in repo.files:
                return self._error(400, None, f"{sub} is a file, not a directory")
            return self._error(404, "EntryNotFound", f"{sub} does not exist on \"{repo.commit}\"")
        prefix = sub + "/" if sub else ""
        out = []

        def wanted(p):
            if not p.startswith(prefix):
                return False
            return recursive or "/" not in p[len(prefix) :]

        for d in sorted(dirs):
            if wanted(d):
                oid = hashlib.sha1(f"tree {repo.id} {d}".encode()).hexdigest()
                out.append({"type": "directory", "oid": oid, "size": 0, "path": d})
        for f in repo.files.values():
            if wanted(f.path):
                e = {"type": "file", "oid": f.blob_id, "size": f.size, "path": f.path}
                if f.lfs:
                    e["lfs"] = f.lfs_info("oid")
                out.append(e)
        out.sort(key=lambda e: (e["path"].count("/"), e["type"] != "directory", e["path"]))
        self._json(out)

    def _resolve(self, repo_id, rev, path):
        repo = self.hub.repos.get(repo_id)
        if repo is None or (repo_id in self.hub.private and not self._authorized(repo_id)):
            return self._repo_not_found()
        if repo_id in self.hub.gated and not self._authorized(repo_id):
            return self._error(
                401,
                "GatedRepo",
                f"Access to model {repo_id} is restricted. You must have access to it and be authenticated "
                "to access it. Please log in.",
            )
        if not self._resolve_rev(repo, rev):
            return self._error(404, "RevisionNotFound", f"Invalid rev id: {rev}")
        f = repo.files.get(path)
        if f is None:
            return self._error(404, "EntryNotFound", "Entry not found", {"X-Repo-Commit": repo.commit})
        if self._status_fault(repo_id, path):
            return
        common = {"X-Repo-Commit": repo.commit, "Accept-Ranges": "bytes"}
        if f.lfs:
            loc = f"{self.hub.cdn_url}/lfs/{quote(repo.id)}/{repo.commit}/{quote(f.path)}?sha256={f.sha256}"
            body = f"Found. Redirecting to {loc}".encode()
            headers = dict(common)
            headers.update(
                {
                    "Location": loc,
                    "X-Linked-Etag": f'"{f.sha256}"',
                    "X-Linked-Size": f.size,
                    "ETag": f'"{f.sha256}"',
                }
            )
            return self._send(302, body, headers, content_type="text/plain; charset=utf-8")
        headers = dict(common)
        headers["ETag"] = f'"{f.etag}"'
        self._serve_bytes(repo.id, f, headers)

    # ------------------------------------------------------------------ cdn
    def _cdn(self):
        if self._status_fault():
            return
        segs = [unquote(s) for s in self.url_path.split("/") if s != ""]
        if self.command not in ("GET", "HEAD") or len(segs) < 4 or segs[0] != "lfs":
            return self._send(404, b"<Error><Code>NoSuchKey</Code></Error>", content_type="application/xml")
        repo_id, rest = self._split_repo(segs[1:])
        repo = self.hub.repos.get(repo_id)
        f = repo.files.get("/".join(rest[1:])) if repo is not None and rest and rest[0] == repo.commit else None
        if f is None or not f.lfs:
            return self._send(404, b"<Error><Code>NoSuchKey</Code></Error>", content_type="application/xml")
        if self._status_fault(repo_id, f.path):
            return
        name = f.path.rsplit("/", 1)[-1]
        headers = {
            "ETag": f'"{f.sha256}"',
            "Content-Disposition": f"inline; filename*=UTF-8''{quote(name)}; filename=\"{name}\";",
            "Cache-Control": "public, max-age=604800, immutable",
        }
        self._serve_bytes(repo.id, f, headers)

    # ------------------------------------------------------------------ bytes + body faults
    def _serve_bytes(self, repo_id, f: _File, headers: dict):
        data = f.data
        total = len(data)
        fault = self._take_fault(repo_id, f.path, body=self.command == "GET") if self.command == "GET" else None
        if fault is not None and fault.kind == "status":
            return self._error(fault.arg, None, f"Injected fault: status {fault.arg}")
        rng = self.headers.get("Range")
        status, start, end = 200, 0, total - 1
        if rng and not (fault is not None and fault.kind == "ignore_range"):
            parsed = _parse_range(rng, total)
            if parsed is None:
                return self._send(416, b"", {"Content-Range": f"bytes */{total}"}, content_type=None)
            start, end = parsed
            status = 206
        body = data[start : end + 1]
        if fault is not None and fault.kind == "wrong_bytes":
            body = bytes(b ^ 0x5A for b in body)
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        for k, v in headers.items():
            self.send_header(k, str(v))
        self.send_header("Accept-Ranges", "bytes")
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end}/{total}")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command == "HEAD":
            return
        if fault is not None and fault.kind == "drop_after":
            self.wfile.write(body[: fault.arg])
            self.wfile.flush()
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        if fault is not None and fault.kind == "slow":
            rate = max(1, fault.arg)
            chunk = max(1, rate // 20)
            for i in range(0, len(body), chunk):
                piece = body[i : i + chunk]
                self.wfile.write(piece)
                self.wfile.flush()
                time.sleep(len(piece) / rate)
            return
        self.wfile.write(body)


def _parse_range(value: str, total: int):
    """Parse a single ``bytes=`` range.  Returns (start, end) inclusive, or None if unsatisfiable."""
    unit, _, spec = value.strip().partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return (0, total - 1)  # unsupported => whole body (as 206 of everything)
    first, _, last = spec.strip().partition("-")
    try:
        if first == "":
            n = int(last)
            if n <= 0:
                return None
            return (max(0, total - n), total - 1)
        start = int(first)
        end = int(last) if last else total - 1
    except ValueError:
        return (0, total - 1)
    if start >= total or start > end:
        return None
    return (start, min(end, total - 1))


class FakeHub:
    """Imitation Hugging Face Hub (hub + CDN servers).

    Args:
        repos: ``{repo_id: {path: bytes} | directory}``.
        faults: ``{key: [spec, ...]}`` (see module docstring).
        gated: repo ids answering ``/resolve`` with 401 ``X-Error-Code: GatedRepo`` unless
            ``Authorization: Bearer <token>`` is sent (``/api`` stays public, like the Hub).
        private: repo ids answering 404 ``RepoNotFound`` everywhere unless the token is sent.
        token: the one accepted token.
        host, port, cdn_port: where to listen (0 = any free port).
        lfs_threshold: files above this size (or ending in .gguf/.bin/.safetensors) are LFS.
    """

    def __init__(
        self,
        repos: dict | None = None,
        faults: dict | None = None,
        gated=(),
        private=(),
        token: str | None = "hf_fake_token",
        host: str = "127.0.0.1",
        port: int = 0,
        cdn_port: int = 0,
        lfs_threshold: int = LFS_THRESHOLD,
    ):
        self.host, self.port, self.cdn_port = host, port, cdn_port
        self.lfs_threshold = lfs_threshold
        self.token = token
        self.gated = set(gated)
        self.private = set(private)
        self.repos: dict[str, _Repo] = {}
        self._lock = threading.Lock()
        self._faults: dict[str, list[Fault]] = {}
        self._log_entries: list[LoggedRequest] = []
        self._servers: list = []
        self._threads: list = []
        self.url = self.cdn_url = None
        for rid, files in (repos or {}).items():
            self.add_repo(rid, files)
        for key, specs in (faults or {}).items():
            self.add_fault(key, *([specs] if isinstance(specs, (str, dict, Fault)) else specs))

    # ---------------------------------------------------------------- repos
    def add_repo(self, repo_id: str, files, commit: str | None = None) -> str:
        """Add or replace a repo (``{path: bytes}`` or a directory).  Returns its commit."""
        if isinstance(files, (str, os.PathLike)):
            files = _load_dir(os.fspath(files))
        repo = _Repo(repo_id, files, self.lfs_threshold, commit)
        self.repos[repo_id] = repo
        return repo.commit

    def commit(self, repo_id: str) -> str:
        return self.repos[repo_id].commit if repo_id in self.repos else commit_for(repo_id)

    def file_info(self, repo_id: str, path: str) -> dict:
        f = self.repos[repo_id].files[path]
        return {"size": f.size, "sha256": f.sha256, "blob_id": f.blob_id, "etag": f.etag, "lfs": f.lfs}

    # ---------------------------------------------------------------- faults
    def add_fault(self, key: str, *specs) -> None:
        """Append faults (spec strings/dicts) to the queue of ``key``."""
        parsed = [Fault.parse(s) for s in specs]
        with self._lock:
            self._faults.setdefault(key, []).extend(parsed)

    def set_faults(self, faults: dict) -> None:
        """Replace all faults."""
        with self._lock:
            self._faults = {}
        for key, specs in faults.items():
            self.add_fault(key, *([specs] if isinstance(specs, (str, dict, Fault)) else specs))

    def clear_faults(self, key: str | None = None) -> None:
        with self._lock:
            if key is None:
                self._faults.clear()
            else:
                self._faults.pop(key, None)

    def pending_faults(self) -> dict:
        with self._lock:
            return {k: list(v) for k, v in self._faults.items() if v}

    def faults_json(self) -> dict:
        return {k: [f.to_json() for f in v] for k, v in self.pending_faults().items()}

    def _control_fault(self, payload: dict) -> None:
        """``POST /_fault`` body: ``{"clear": true}`` and/or ``{"path": KEY, "faults": [SPEC...]}``
        (``"fault": SPEC`` for one, ``"replace": true`` to replace KEY's queue) and/or
        ``{"faults": {KEY: [SPEC...], ...}}``."""
        if payload.get("clear"):
            self.clear_faults()
        faults = payload.get("faults")
        if "path" in payload:
            specs = faults if faults is not None else [payload["fault"]]
            if isinstance(specs, (str, dict)):
                specs = [specs]
            parsed = [Fault.parse(s) for s in specs]  # validate before mutating
            if payload.get("replace"):
                self.clear_faults(payload["path"])
            self.add_fault(payload["path"], *parsed)
        elif isinstance(faults, dict):
            for key, specs in faults.items():
                self.add_fault(key, *([specs] if isinstance(specs, (str, dict)) else specs))

    def _take_fault(self, server, method, url_path, repo_id, file_path, body):
        keys = [url_path]
        if file_path is not None:
            keys = [f"{repo_id}/{file_path}", file_path]
        with self._lock:
            for key in keys:
                q = self._faults.get(key)
                if not q:
                    continue
                f = q[0]
                if f.server and f.server != server:
                    continue
                if f.method and f.method != method:
                    continue
                if f.kind in BODY_FAULTS and not body:
                    continue  # body faults wait for a GET answered with file bytes
                q.pop(0)
                return f
        return None

    # ---------------------------------------------------------------- log
    def _log(self, entry: LoggedRequest) -> None:
        with self._lock:
            self._log_entries.append(entry)

    @property
    def requests(self) -> list:
        with self._lock:
            return list(self._log_entries)

    def clear_log(self) -> None:
        with self._lock:
            self._log_entries.clear()

    def find_requests(self, method=None, server=None, contains=None) -> list:
        return [
            r
            for r in self.requests
            if (method is None or r.method == method)
            and (server is None or r.server == server)
            and (contains is None or contains in r.path)
        ]

    # ---------------------------------------------------------------- lifecycle
    def start(self) -> str:
        """Start hub and CDN in background threads; returns the hub base URL."""
        if self.url:
            return self.url
        for kind, port in (("cdn", self.cdn_port), ("hub", self.port)):
            handler = type(f"_{kind}Handler", (_Handler,), {"hub": self, "kind": kind})
            srv = _Server((self.host, port), handler)
            base = f"http://{self.host}:{srv.server_address[1]}"
            if kind == "cdn":
                self.cdn_url = base
            else:
                self.url = base
            t = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
            t.start()
            self._servers.append(srv)
            self._threads.append(t)
        return self.url

    def stop(self) -> None:
        for srv in self._servers:
            srv.shutdown()
            srv.server_close()
        for t in self._threads:
            t.join(timeout=5)
        self._servers, self._threads = [], []
        self.url = self.cdn_url = None

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="Imitation Hugging Face Hub for tests")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--cdn-port", type=int, default=0)
    p.add_argument("--repo", action="append", default=[], metavar="ORG/NAME=DIR")
    p.add_argument("--gated", action="append", default=[], metavar="ORG/NAME")
    p.add_argument("--private", action="append", default=[], metavar="ORG/NAME")
    p.add_argument("--token", default="hf_fake_token")
    p.add_argument("--fault", action="append", default=[], metavar="KEY=SPEC")
    p.add_argument("--lfs-threshold", type=int, default=LFS_THRESHOLD)
    a = p.parse_args(argv)
    repos = {}
    for r in a.repo:
        rid, sep, d = r.partition("=")
        if not sep or not os.path.isdir(d):
            p.error(f"--repo expects ORG/NAME=DIR with an existing directory, got {r!r}")
        repos[rid] = d
    hub = FakeHub(
        repos=repos, gated=a.gated, private=a.private, token=a.token, host=a.host, port=a.port,
        cdn_port=a.cdn_port, lfs_threshold=a.lfs_threshold,
    )
    for fspec in a.fault:
        key, sep, spec = fspec.partition("=")
        if not sep:
            p.error(f"--fault expects KEY=SPEC, got {fspec!r}")
        hub.add_fault(key, spec)
    url = hub.start()
    print(url, flush=True)
    print(f"CDN {hub.cdn_url}", flush=True)
    stop = threading.Event()
    for s in (signal.SIGTERM, signal.SIGINT):
        signal.signal(s, lambda *_: stop.set())
    while not stop.wait(0.5):
        pass
    hub.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
