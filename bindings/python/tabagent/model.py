"""Models: a loaded GGUF file and what can be asked of it without a context."""

from __future__ import annotations

import ctypes
import json
import os
from ctypes import byref, c_int32, c_size_t, c_uint8, c_void_p
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

from . import _ffi
from ._handle import Handle
from ._params import Message, PathLike, json_arg, messages, model_params
from .errors import InvalidArgumentError, NotFoundError, NetworkError, OfflineError, check

if TYPE_CHECKING:
    from .cache import Cache, DownloadProgress
    from .context import Vectors

__all__ = ["Model", "ModelInfo", "check_model"]

LoadProgress = Callable[[float], Optional[bool]]


@dataclass(frozen=True)
class ModelInfo:
    """A model's header facts (``ta_model_info``); strings are copies."""

    architecture: str
    name: str
    description: str
    quantization: str
    chat_template: Optional[str]
    n_vocab: int
    n_ctx_train: int
    n_embd: int
    n_layer: int
    n_head: int
    n_head_kv: int
    n_params: int
    size_bytes: int
    file_size: int
    bos_token: int
    eos_token: int
    eot_token: int
    nl_token: int


def check_model(path: PathLike, *, vocab_only: bool = False, timeout_ms: int = 0,
                memory_limit: int = 0) -> Dict[str, float]:
    """Load ``path`` and decode one token in a child process (``tabagent-probe``, beside
    the library) under a time and memory limit (0 = defaults). Returns
    ``{"elapsed_ms", "peak_rss_bytes"}``; raises :class:`BadModelError` (with the
    child's reason) when it fails, crashes or hangs."""
    p, _keep = model_params(vocab_only=vocab_only, check_timeout_ms=timeout_ms, check_memory_limit=memory_limit)
    r = _ffi.CheckReport()
    check(_ffi.model_check(os.fsencode(path), byref(p), byref(r)))
    return {"elapsed_ms": r.elapsed_ms, "peak_rss_bytes": r.peak_rss_bytes}


# Variant picked by Model.from_pretrained(repo) when the repo has several.
_DEFAULT_QUANTS = ("Q4_K_M",)


class Model(Handle):
    """A loaded GGUF model (memory-mapped), shareable by many contexts and threads.

    The object owns one reference to the library's model: :meth:`close` (or the end of
    a ``with`` block) drops it; contexts made from the model keep it alive, so closing
    the model while contexts exist is safe."""

    _what = "model"

    def __init__(self, path: PathLike, *, n_gpu_layers: Optional[int] = None, use_mmap: bool = True,
                 use_mlock: bool = False, vocab_only: bool = False, progress: Optional[LoadProgress] = None,
                 check_in_child: bool = False, check_timeout_ms: int = 0, check_memory_limit: int = 0) -> None:
        """Load ``path`` (split files: the first ``-00001-of-0000N`` shard). ``progress(fraction)``
        returning False cancels the load (:class:`CancelledError`). ``check_in_child=True``
        first loads the file in a child process (see :func:`check_model`), for files that may
        be hostile."""
        p, keep = model_params(n_gpu_layers, use_mmap, use_mlock, vocab_only, progress, check_in_child,
                               check_timeout_ms, check_memory_limit)
        h = c_void_p()
        st = _ffi.model_load(os.fsencode(path), byref(p), byref(h))
        del keep
        check(st)
        self._h = h

    def _release(self, h: c_void_p) -> None:
        _ffi.model_free(h)

    @classmethod
    def _adopt(cls, h: c_void_p) -> "Model":
        m = cls.__new__(cls)
        m._h = h
        return m

    @classmethod
    def from_buffer(cls, data: Union[bytes, bytearray, memoryview], *, n_gpu_layers: Optional[int] = None,
                    vocab_only: bool = False, progress: Optional[LoadProgress] = None) -> "Model":
        """Load from bytes in memory (no temporary file; Linux memfd). The bytes are copied
        by the library; ``data`` may be dropped afterwards."""
        p, keep = model_params(n_gpu_layers, True, False, vocab_only, progress)
        n = len(data)
        if isinstance(data, bytearray):
            buf = (c_uint8 * n).from_buffer(data)
        else:
            buf = (c_uint8 * n).from_buffer_copy(data)
        h = c_void_p()
        st = _ffi.model_load_from_buffer(buf, n, byref(p), byref(h))
        del keep
        check(st)
        return cls._adopt(h)

    @classmethod
    def from_pretrained(cls, repo: str, variant: Optional[str] = None, *, revision: str = "main",
                        cache_dir: Optional[PathLike] = None, cache: Optional["Cache"] = None,
                        progress: Union["DownloadProgress", None, bool] = None, n_gpu_layers: Optional[int] = None,
                        use_mmap: bool = True, use_mlock: bool = False, vocab_only: bool = False,
                        check_in_child: bool = False) -> "Model":
        """Download ``repo``'s GGUF ``variant`` ("Q4_K_M", "Q8_0", …; every shard of a split
        model) into the Hugging Face–compatible cache unless it is there already, verify
        it, and load it.

        ``variant=None`` picks the repo's only variant, else the one variant already
        downloaded, else Q4_K_M; otherwise :class:`InvalidArgumentError` lists them.
        ``cache_dir`` is the cache root (default: HF_HUB_CACHE / HF_HOME as
        huggingface_hub; HF_ENDPOINT, HF_TOKEN, HF_HUB_OFFLINE apply); ``cache`` an open
        :class:`Cache` to use instead (borrowed, not closed).
        ``progress``: a function ``(file, done_bytes, total_bytes)`` (returning False
        cancels; the download resumes next time); None = a tqdm bar on stderr when tqdm
        is installed, else silent; False = silent."""
        from .cache import Cache, download_callback

        own = cache is None
        c = Cache(cache_dir) if cache is None else cache
        try:
            quant = variant if variant is not None else _pick_variant(c, repo, revision)
            p, keep = model_params(n_gpu_layers, use_mmap, use_mlock, vocab_only, None, check_in_child)
            cb, errors, finish = download_callback(progress)
            h = c_void_p()
            st = _ffi.model_load_from_cache(c._handle(), repo.encode(), revision.encode(), quant.encode(), byref(p),
                                            cb, None, byref(h))
            finish()
            del keep, cb
            if errors:
                raise errors[0]
            check(st)
            return cls._adopt(h)
        finally:
            if own:
                c.close()

    @property
    def info(self) -> ModelInfo:
        i = _ffi.ModelInfoC()
        check(_ffi.model_get_info(self._handle(), byref(i)))
        d: Dict[str, Any] = {}
        for name, *_ in _ffi.ModelInfoC._fields_:
            v = getattr(i, name)
            d[name] = v.decode("utf-8", "replace") if isinstance(v, bytes) else v
        return ModelInfo(**d)

    def meta(self, key: str) -> Optional[str]:
        """A GGUF metadata value as text, or None when the key is absent."""
        out = c_void_p()
        st = _ffi.model_meta(self._handle(), key.encode(), byref(out))
        if st == _ffi.ERR["NOT_FOUND"]:
            return None
        check(st)
        return _ffi.take_string(out)

    def json(self) -> Dict[str, Any]:
        """Everything about the model as one document (``ta_model_json``)."""
        out = c_void_p()
        check(_ffi.model_json(self._handle(), byref(out)))
        doc: Dict[str, Any] = json.loads(_ffi.take_string(out))
        return doc

    def tokenize(self, text: str, add_special: bool = True, parse_special: bool = False) -> List[int]:
        b = text.encode()
        n = c_size_t()
        cap = len(b) + 8
        while True:
            buf = (c_int32 * cap)()
            st = _ffi.model_tokenize(self._handle(), b, len(b), add_special, parse_special, buf, cap, byref(n))
            if st == _ffi.ERR["BUFFER_TOO_SMALL"]:
                cap = n.value
                continue
            check(st)
            return list(buf[: n.value])

    def detokenize(self, tokens: Sequence[int], remove_special: bool = False, unparse_special: bool = False) -> str:
        arr = (c_int32 * len(tokens))(*tokens)
        n = c_size_t()
        cap = len(tokens) * 8 + 16
        while True:
            buf = ctypes.create_string_buffer(cap)
            st = _ffi.model_detokenize(self._handle(), arr, len(tokens), remove_special, unparse_special, buf, cap,
                                       byref(n))
            if st == _ffi.ERR["BUFFER_TOO_SMALL"]:
                cap = n.value + 1
                continue
            check(st)
            return buf.raw[: n.value].decode("utf-8", "replace")

    def token_to_piece(self, token: int, special: bool = False) -> bytes:
        """A token's bytes (possibly part of a UTF-8 character)."""
        n = c_size_t()
        cap = 256
        while True:
            buf = ctypes.create_string_buffer(cap)
            st = _ffi.model_token_to_piece(self._handle(), token, special, buf, cap, byref(n))
            if st == _ffi.ERR["BUFFER_TOO_SMALL"]:
                cap = n.value
                continue
            check(st)
            return buf.raw[: n.value]

    def apply_chat_template(self, messages_: Iterable[Message], add_assistant: bool = True,
                            template: Optional[str] = None, tools: Any = None,
                            variables: Optional[Mapping[str, Any]] = None) -> str:
        """Format messages with the model's template (or ``template``: a template text or a
        built-in name such as "chatml"). ``tools`` (a list of tool definitions) and
        ``variables`` (extra template variables, e.g. ``{"enable_thinking": False}``) reach
        the template; JSON strings work too."""
        arr, keep = messages(messages_)
        out = c_void_p()
        check(_ffi.model_apply_chat_template(self._handle(), arr, len(arr), add_assistant,
                                             template.encode() if template else None, json_arg(tools),
                                             json_arg(variables), byref(out)))
        del keep
        return _ffi.take_string(out)

    def embed(self, texts: Iterable[str], *, pooling: Optional[str] = None, normalize: bool = True,
              truncate: bool = False, n_ctx: int = 0, n_threads: int = 0,
              as_numpy: Optional[bool] = None) -> "Vectors":
        """Embed ``texts`` (one vector each) on an embedding context this model keeps for
        these settings (freed with the model object); see :meth:`Context.embed`."""
        from .context import Context

        key = (pooling, n_ctx, n_threads)
        contexts: Dict[Tuple[Optional[str], int, int], Context] = self.__dict__.setdefault("_embed_contexts", {})
        ctx = contexts.get(key)
        if ctx is None:
            ctx = contexts[key] = Context(self, n_ctx=n_ctx, n_threads=n_threads, embeddings=True, pooling=pooling)
        return ctx.embed(texts, normalize=normalize, truncate=truncate, as_numpy=as_numpy)

    def close(self) -> None:
        for c in self.__dict__.pop("_embed_contexts", {}).values():
            c.close()
        super().close()


def _pick_variant(cache: "Cache", repo: str, revision: str) -> str:
    try:
        manifest = cache.scan(repo, revision)
    except (OfflineError, NetworkError):
        manifest = cache.manifest(repo, revision)  # what is cached, without the network
    variants = manifest.get("variants", [])
    if not variants:
        raise NotFoundError(_ffi.ERR["NOT_FOUND"], f"{repo}@{revision}: no GGUF model files")
    if len(variants) == 1:
        return str(variants[0]["name"])
    have = [v for v in variants if v.get("status") == "downloaded"]
    if len(have) == 1:
        return str(have[0]["name"])
    for q in _DEFAULT_QUANTS:
        hits = [v for v in variants if str(v.get("quant", "")).upper() == q]
        if len(hits) == 1:
            return str(hits[0]["name"])
    names = ", ".join(str(v["name"]) for v in variants)
    raise InvalidArgumentError(_ffi.ERR["INVALID_ARG"], f"{repo} has several variants; name one of: {names}")


