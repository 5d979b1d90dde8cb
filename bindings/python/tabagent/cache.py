"""The model cache: a Hugging Face–compatible store with verified, resumable downloads."""

from __future__ import annotations

import json
from ctypes import byref, c_bool, c_void_p
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

from . import _ffi
from ._handle import Handle
from ._params import PathLike
from .errors import check

__all__ = ["Cache", "DownloadProgress"]

#: ``progress(file, done_bytes, total_bytes)``; returning False cancels the download.
DownloadProgress = Callable[[str, int, int], Optional[bool]]


def download_callback(progress: Union[DownloadProgress, None, bool]
                      ) -> Tuple[Any, List[BaseException], Callable[[], None]]:
    """The ctypes download callback for ``progress``, the list that collects an exception
    the user's function raised (re-raise it after the call), and a function that closes
    what the callback opened (tqdm bars). ``None``: tqdm bars on stderr when tqdm is
    importable, else nothing; ``False``: nothing."""
    errors: List[BaseException] = []
    if progress is None:
        try:
            from tqdm import tqdm  # type: ignore[import-untyped,unused-ignore]  # optional
        except ImportError:
            progress = False
        else:
            bars: Dict[str, Any] = {}

            def bar_cb(_ud: Any, f: bytes, done: int, total: int) -> bool:
                try:
                    name = f.decode("utf-8", "replace")
                    bar = bars.get(name)
                    if bar is None:
                        bar = bars[name] = tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024,
                                                desc=name, leave=False)
                    bar.update(done - bar.n)
                except Exception:  # a broken terminal must not stop a download
                    pass
                return True

            def close_bars() -> None:
                for b in bars.values():
                    b.close()
                bars.clear()

            return _ffi.DOWNLOAD_CB(bar_cb), errors, close_bars
    if progress is False or progress is True:
        return _ffi.DOWNLOAD_CB(lambda _ud, _f, _d, _t: True), errors, lambda: None
    user = progress

    def tramp(_ud: Any, f: bytes, done: int, total: int) -> bool:
        try:
            return user(f.decode("utf-8", "replace"), done, total) is not False
        except BaseException as e:  # re-raised by the caller after the library returns
            errors.append(e)
            return False

    return _ffi.DOWNLOAD_CB(tramp), errors, lambda: None


class Cache(Handle):
    """A Hugging Face–compatible model store (same layout as huggingface_hub, so files
    are shared). Root, endpoint, token and offline mode default from
    HF_HUB_CACHE/HF_HOME, HF_ENDPOINT, HF_TOKEN and HF_HUB_OFFLINE. ``durable=True``
    fsyncs each download before it counts as cached. Safe to use from many threads.
    Paths it returns are the caller's (plain strings); the handle is freed by
    :meth:`close` or the end of a ``with`` block."""

    _what = "cache"

    def __init__(self, root: Optional[PathLike] = None, *, endpoint: Optional[str] = None,
                 token: Optional[str] = None, offline: Optional[bool] = None, retries: Optional[int] = None,
                 timeout: Optional[float] = None, user_agent: Optional[str] = None, durable: bool = False) -> None:
        o = _ffi.cache_default_options()
        keep = [_ffi.enc(root), _ffi.enc(endpoint), _ffi.enc(token), _ffi.enc(user_agent)]
        o.root, o.endpoint, o.token, o.user_agent = keep
        o.offline = -1 if offline is None else int(bool(offline))
        if retries is not None:
            o.retries = retries
        if timeout is not None:
            o.connect_timeout_ms = o.read_timeout_ms = int(timeout * 1000)
        o.durable = bool(durable)
        h = c_void_p()
        check(_ffi.cache_open(byref(o), byref(h)))
        self._h = h

    def _release(self, h: c_void_p) -> None:
        _ffi.cache_free(h)

    def _json(self, fn: Any, *args: Any) -> Any:
        out = c_void_p()
        check(fn(self._handle(), *args, byref(out)))
        return json.loads(_ffi.take_string(out))

    @property
    def root(self) -> str:
        out = c_void_p()
        check(_ffi.cache_root(self._handle(), byref(out)))
        return _ffi.take_string(out)

    def scan(self, repo: str, revision: str = "main") -> Dict[str, Any]:
        """List the repo's files and group GGUFs by quantisation (network). Names that
        cannot be used safely are left out and listed in ``refused``."""
        doc: Dict[str, Any] = self._json(_ffi.cache_scan, repo.encode(), revision.encode())
        return doc

    def manifest(self, repo: str, revision: str = "main") -> Dict[str, Any]:
        """The manifest with current statuses (no network): the last scan, or derived from
        the cached snapshot (``source == "snapshot"``); NotFoundError if neither."""
        doc: Dict[str, Any] = self._json(_ffi.cache_manifest, repo.encode(), revision.encode())
        return doc

    def _download(self, fn: Any, args: Tuple[bytes, ...], progress: Union[DownloadProgress, None, bool]) -> str:
        cb, errors, finish = download_callback(progress)
        out = c_void_p()
        st = fn(self._handle(), *args, cb, None, byref(out))
        finish()
        if errors:
            if st == _ffi.TA_OK:
                _ffi.string_free(out)
            raise errors[0]
        check(st)
        return _ffi.take_string(out)

    def download(self, repo: str, filename: str, revision: str = "main",
                 progress: Union[DownloadProgress, None, bool] = None) -> str:
        """Download one file (resumable, verified); returns its snapshot path.
        ``progress`` as in :meth:`Model.from_pretrained`."""
        return self._download(_ffi.cache_download_file, (repo.encode(), revision.encode(), filename.encode()),
                              progress)

    def download_variant(self, repo: str, quant: str, revision: str = "main",
                         progress: Union[DownloadProgress, None, bool] = None) -> str:
        """Download every shard of a quantisation; returns the first shard's path."""
        return self._download(_ffi.cache_download_variant, (repo.encode(), revision.encode(), quant.encode()),
                              progress)

    def has_file(self, repo: str, filename: str, revision: str = "main") -> bool:
        b = c_bool()
        check(_ffi.cache_has_file(self._handle(), repo.encode(), revision.encode(), filename.encode(), byref(b)))
        return bool(b.value)

    def snapshot_path(self, repo: str, filename: str, revision: str = "main") -> str:
        out = c_void_p()
        check(_ffi.cache_snapshot_path(self._handle(), repo.encode(), revision.encode(), filename.encode(),
                                       byref(out)))
        return _ffi.take_string(out)

    def list_repos(self) -> List[Dict[str, Any]]:
        doc: List[Dict[str, Any]] = self._json(_ffi.cache_list_repos)
        return doc

    def delete_repo(self, repo: str) -> None:
        check(_ffi.cache_delete_repo(self._handle(), repo.encode()))

    def delete_revision(self, repo: str, commit: str) -> None:
        check(_ffi.cache_delete_revision(self._handle(), repo.encode(), commit.encode()))

    def stats(self) -> Dict[str, int]:
        s = _ffi.CacheStats()
        check(_ffi.cache_stats(self._handle(), byref(s)))
        return {"repos": s.repos, "files": s.files, "bytes": s.bytes}

    def verify(self, repo: Optional[str] = None) -> List[Dict[str, Any]]:
        """Re-hash blobs; returns the mismatches ([] when all are intact)."""
        doc: List[Dict[str, Any]] = self._json(_ffi.cache_verify, _ffi.enc(repo))
        return doc
