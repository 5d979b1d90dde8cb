"""Typed ctypes wrapper over libtabagent.

    from tabagent import Model, Context

    with Model("model.gguf") as model, Context(model, n_ctx=2048) as ctx:
        for piece in ctx.chat_stream([{"role": "user", "content": "Hi!"}], max_tokens=64):
            print(piece, end="", flush=True)

The library is found through $TABAGENT_LIB, then next to this file's repository
(target/release), then the system loader path. Every failure raises
:class:`TabagentError` (or a subclass per status) carrying ``status`` and the
library's ``message``.
"""

from __future__ import annotations

import ctypes
import json
import os
import queue
import sys
import threading
from ctypes import (
    CFUNCTYPE,
    POINTER,
    Structure,
    byref,
    c_bool,
    c_char,
    c_char_p,
    c_double,
    c_float,
    c_int32,
    c_size_t,
    c_uint8,
    c_uint32,
    c_uint64,
    c_void_p,
)
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, List, Mapping, Optional, Tuple, Union
from typing import Sequence as Sequence_

__all__ = [
    "Hardware",
    "CpuInfo",
    "MemoryInfo",
    "GpuInfo",
    "BuildInfo",
    "Fit",
    "Model",
    "Context",
    "ModelInfo",
    "GenResult",
    "TabagentError",
    "CancelledError",
    "BadModelError",
    "NotFoundError",
    "ContextFullError",
    "BusyError",
    "InvalidArgumentError",
    "set_log_callback",
    "version",
    "llama_version",
    "system_info",
]

# ----------------------------------------------------------------------------- loading


def _find_library() -> str:
    env = os.environ.get("TABAGENT_LIB")
    if env:
        return env
    name = {"darwin": "libtabagent.dylib", "win32": "tabagent.dll"}.get(sys.platform, "libtabagent.so")
    here = os.path.dirname(os.path.abspath(__file__))
    for cand in (
        os.path.join(here, "..", "..", "target", "release", name),
        os.path.join(here, name),
    ):
        if os.path.exists(cand):
            return os.path.normpath(cand)
    return name  # let the system loader search


_lib = ctypes.CDLL(_find_library())

TA_OK = 0
_STATUS_NAMES = {
    0: "OK",
    1: "NULL_ARG",
    2: "INVALID_ARG",
    3: "IO",
    4: "NOT_FOUND",
    5: "BAD_MODEL",
    6: "NETWORK",
    7: "CHECKSUM",
    8: "CANCELLED",
    9: "CONTEXT_FULL",
    10: "BUSY",
    11: "UNSUPPORTED",
    12: "OUT_OF_MEMORY",
    13: "PANIC",
    14: "BUFFER_TOO_SMALL",
    15: "UNAUTHORIZED",
    16: "OFFLINE",
    17: "BACKEND",
}
STOP_REASONS = {0: "eog", 1: "max_tokens", 2: "stop_string", 3: "cancelled", 4: "context_full"}


class _ModelParams(Structure):
    _fields_ = [
        ("n_gpu_layers", c_int32),
        ("use_mmap", c_bool),
        ("use_mlock", c_bool),
        ("vocab_only", c_bool),
        ("progress_callback", c_void_p),
        ("progress_user_data", c_void_p),
        ("check_in_child", c_bool),
        ("check_timeout_ms", c_uint32),
        ("check_memory_limit", c_uint64),
    ]


class _CheckReport(Structure):
    _fields_ = [("elapsed_ms", c_double), ("peak_rss_bytes", c_uint64)]


class _ModelInfo(Structure):
    _fields_ = [
        ("architecture", c_char_p),
        ("name", c_char_p),
        ("description", c_char_p),
        ("quantization", c_char_p),
        ("chat_template", c_char_p),
        ("n_vocab", c_int32),
        ("n_ctx_train", c_int32),
        ("n_embd", c_int32),
        ("n_layer", c_int32),
        ("n_head", c_int32),
        ("n_head_kv", c_int32),
        ("n_params", c_uint64),
        ("size_bytes", c_uint64),
        ("file_size", c_uint64),
        ("bos_token", c_int32),
        ("eos_token", c_int32),
        ("eot_token", c_int32),
        ("nl_token", c_int32),
    ]


class _ContextParams(Structure):
    _fields_ = [
        ("n_ctx", c_uint32),
        ("n_batch", c_uint32),
        ("n_ubatch", c_uint32),
        ("n_threads", c_int32),
        ("n_threads_batch", c_int32),
        ("flash_attn", c_int32),
        ("seed", c_uint32),
        ("n_seq_max", c_uint32),
        ("kv_unified", c_bool),
        ("embeddings", c_bool),
        ("pooling", c_int32),
    ]


class _EmbedParams(Structure):
    _fields_ = [("normalize", c_bool), ("truncate", c_bool)]


class _GenParams(Structure):
    _fields_ = [
        ("temperature", c_float),
        ("top_k", c_int32),
        ("top_p", c_float),
        ("min_p", c_float),
        ("repeat_penalty", c_float),
        ("frequency_penalty", c_float),
        ("presence_penalty", c_float),
        ("penalty_last_n", c_int32),
        ("seed", c_uint32),
        ("max_tokens", c_int32),
        ("stop", POINTER(c_char_p)),
        ("n_stop", c_size_t),
        ("grammar", c_char_p),
        ("chat_template", c_char_p),
        ("chat_tools", c_char_p),
        ("chat_vars", c_char_p),
        ("context_shift", c_bool),
        ("n_keep", c_uint32),
    ]


class _GenResult(Structure):
    _fields_ = [
        ("stop_reason", c_int32),
        ("n_prompt_tokens", c_uint32),
        ("n_reused_tokens", c_uint32),
        ("n_generated_tokens", c_uint32),
        ("prompt_ms", c_double),
        ("gen_ms", c_double),
        ("n_shifts", c_uint32),
        ("n_shifted_tokens", c_uint32),
    ]


class _ChatMessage(Structure):
    _fields_ = [("role", c_char_p), ("content", c_char_p), ("name", c_char_p), ("tool_call_id", c_char_p),
                ("tool_calls", c_char_p), ("reasoning_content", c_char_p)]


_TEXT_CB = CFUNCTYPE(c_bool, c_void_p, POINTER(c_char), c_size_t)
_HOST_CB = CFUNCTYPE(None, c_void_p, POINTER(c_char), c_size_t)
_PROGRESS_CB = CFUNCTYPE(c_bool, c_void_p, c_float)
_LOG_CB = CFUNCTYPE(None, c_void_p, c_int32, POINTER(c_char), c_size_t)


def _fn(name, restype, *argtypes):
    f = getattr(_lib, name)
    f.restype = restype
    f.argtypes = list(argtypes)
    return f


_status_str = _fn("ta_status_str", c_char_p, c_int32)
_last_error = _fn("ta_last_error", c_char_p)
_string_free = _fn("ta_string_free", None, c_void_p)
_version = _fn("ta_version", c_char_p)
_abi_version = _fn("ta_abi_version", c_uint32)
_llama_version = _fn("ta_llama_version", c_char_p)
_system_info = _fn("ta_system_info", c_char_p)
_set_log_callback = _fn("ta_set_log_callback", c_int32, _LOG_CB, c_void_p, c_int32)
_model_default_params = _fn("ta_model_default_params", _ModelParams)
_model_load = _fn("ta_model_load", c_int32, c_char_p, POINTER(_ModelParams), POINTER(c_void_p))
_model_check = _fn("ta_model_check", c_int32, c_char_p, POINTER(_ModelParams), POINTER(_CheckReport))
_model_load_from_buffer = _fn(
    "ta_model_load_from_buffer", c_int32, POINTER(c_uint8), c_size_t, POINTER(_ModelParams), POINTER(c_void_p)
)
_model_free = _fn("ta_model_free", None, c_void_p)
_model_get_info = _fn("ta_model_get_info", c_int32, c_void_p, POINTER(_ModelInfo))
_model_meta = _fn("ta_model_meta", c_int32, c_void_p, c_char_p, POINTER(c_void_p))
_model_json = _fn("ta_model_json", c_int32, c_void_p, POINTER(c_void_p))
_model_tokenize = _fn(
    "ta_model_tokenize", c_int32, c_void_p, c_char_p, c_size_t, c_bool, c_bool, POINTER(c_int32), c_size_t,
    POINTER(c_size_t),
)
_model_detokenize = _fn(
    "ta_model_detokenize", c_int32, c_void_p, POINTER(c_int32), c_size_t, c_bool, c_bool, c_char_p, c_size_t,
    POINTER(c_size_t),
)
_model_token_to_piece = _fn(
    "ta_model_token_to_piece", c_int32, c_void_p, c_int32, c_bool, c_char_p, c_size_t, POINTER(c_size_t)
)
_model_apply_chat_template = _fn(
    "ta_model_apply_chat_template", c_int32, c_void_p, POINTER(_ChatMessage), c_size_t, c_bool, c_char_p,
    c_char_p, c_char_p, POINTER(c_void_p),
)
_context_default_params = _fn("ta_context_default_params", _ContextParams)
_gen_default_params = _fn("ta_gen_default_params", _GenParams)
_context_new = _fn("ta_context_new", c_int32, c_void_p, POINTER(_ContextParams), POINTER(c_void_p))
_context_free = _fn("ta_context_free", None, c_void_p)
_context_generate = _fn(
    "ta_context_generate", c_int32, c_void_p, c_char_p, POINTER(_GenParams), _TEXT_CB, c_void_p, POINTER(_GenResult)
)
_context_chat = _fn(
    "ta_context_chat", c_int32, c_void_p, POINTER(_ChatMessage), c_size_t, POINTER(_GenParams), _TEXT_CB, c_void_p,
    POINTER(_GenResult),
)
_context_cancel = _fn("ta_context_cancel", None, c_void_p)
_context_reset = _fn("ta_context_reset", c_int32, c_void_p)
_context_n_ctx = _fn("ta_context_n_ctx", c_uint32, c_void_p)
_context_n_ctx_seq = _fn("ta_context_n_ctx_seq", c_uint32, c_void_p)
_context_n_seq_max = _fn("ta_context_n_seq_max", c_uint32, c_void_p)
_host_new = _fn("ta_host_new", c_int32, c_char_p, _HOST_CB, c_void_p, POINTER(c_void_p))
_host_post = _fn("ta_host_post", c_int32, c_void_p, c_char_p, c_size_t)
_host_free = _fn("ta_host_free", None, c_void_p)
_embed_default_params = _fn("ta_embed_default_params", _EmbedParams)
_context_embed = _fn("ta_context_embed", c_int32, c_void_p, POINTER(c_char_p), c_size_t, POINTER(_EmbedParams),
                     POINTER(ctypes.c_float), c_size_t, POINTER(c_size_t))
_context_embed_dim = _fn("ta_context_embed_dim", c_int32, c_void_p, POINTER(c_size_t))
_context_pooling = _fn("ta_context_pooling", c_int32, c_void_p, POINTER(c_int32))
_context_state_save = _fn("ta_context_state_save", c_int32, c_void_p, c_char_p, POINTER(c_size_t))
_context_state_load = _fn("ta_context_state_load", c_int32, c_void_p, c_char_p, POINTER(c_size_t))
_sequence_new = _fn("ta_sequence_new", c_int32, c_void_p, POINTER(c_void_p))
_sequence_free = _fn("ta_sequence_free", None, c_void_p)
_sequence_generate = _fn(
    "ta_sequence_generate", c_int32, c_void_p, c_char_p, POINTER(_GenParams), _TEXT_CB, c_void_p, POINTER(_GenResult)
)
_sequence_chat = _fn(
    "ta_sequence_chat", c_int32, c_void_p, POINTER(_ChatMessage), c_size_t, POINTER(_GenParams), _TEXT_CB, c_void_p,
    POINTER(_GenResult),
)
_sequence_cancel = _fn("ta_sequence_cancel", None, c_void_p)
_sequence_reset = _fn("ta_sequence_reset", c_int32, c_void_p)
_sequence_id = _fn("ta_sequence_id", c_int32, c_void_p)
_sequence_n_cached = _fn("ta_sequence_n_cached", c_int32, c_void_p, POINTER(c_size_t))
_sequence_state_save = _fn("ta_sequence_state_save", c_int32, c_void_p, c_char_p, POINTER(c_size_t))
_sequence_state_load = _fn("ta_sequence_state_load", c_int32, c_void_p, c_char_p, POINTER(c_size_t))

# ----------------------------------------------------------------------------- errors


class TabagentError(Exception):
    """A failed library call: ``status`` (int), ``status_name`` and ``message``."""

    def __init__(self, status: int, message: str):
        self.status = status
        self.status_name = _STATUS_NAMES.get(status, str(status))
        self.message = message
        super().__init__(f"[{self.status_name}] {message}")


class InvalidArgumentError(TabagentError, ValueError):
    pass


class NotFoundError(TabagentError, FileNotFoundError):
    pass


class BadModelError(TabagentError):
    pass


class CancelledError(TabagentError):
    """Generation was stopped; ``result`` holds the counts so far."""

    result: Optional["GenResult"] = None


class ContextFullError(TabagentError):
    pass


class BusyError(TabagentError):
    pass


_ERRORS = {2: InvalidArgumentError, 4: NotFoundError, 5: BadModelError, 8: CancelledError, 9: ContextFullError,
           10: BusyError}


def _error(status: int) -> TabagentError:
    msg = (_last_error() or b"").decode("utf-8", "replace")
    return _ERRORS.get(status, TabagentError)(status, msg or _status_str(status).decode())


def _check(status: int) -> None:
    if status != TA_OK:
        raise _error(status)


def _take_string(p: c_void_p) -> str:
    try:
        return ctypes.string_at(p.value).decode("utf-8", "replace")
    finally:
        _string_free(p)


def version() -> str:
    return _version().decode()


def llama_version() -> str:
    return _llama_version().decode()


def system_info() -> str:
    return _system_info().decode()


LOG_DEBUG, LOG_INFO, LOG_WARN, LOG_ERROR = 1, 2, 3, 4
_log_keepalive = None


def set_log_callback(fn: Optional[Callable[[int, str], None]], min_level: int = LOG_WARN) -> None:
    """Receive library and llama.cpp log lines as ``fn(level, text)`` (any thread),
    one whole line per call, without its newline. ``None`` restores silence."""
    global _log_keepalive
    if fn is None:
        _check(_set_log_callback(_LOG_CB(), None, min_level))
        _log_keepalive = None
        return

    def trampoline(_ud, level, text, n):
        try:
            fn(level, ctypes.string_at(text, n).decode("utf-8", "replace").rstrip("\n"))
        except Exception:  # a raising logger must not break the library
            pass

    cb = _LOG_CB(trampoline)
    _check(_set_log_callback(cb, None, min_level))
    _log_keepalive = cb


_ABI = 5
if _abi_version() != _ABI:
    raise ImportError(f"libtabagent ABI {_abi_version()} does not match this wrapper ({_ABI})")

# ----------------------------------------------------------------------------- model


class _Handle:
    """An owned library handle: freed once by close(), the garbage collector or the end
    of a ``with`` block; using it after that raises."""

    _free = None  # the ta_*_free function (a ctypes function: not bound as a method)
    _what = "handle"
    _h = None

    def _handle(self):
        if not self._h:
            raise TabagentError(1, f"the {self._what} is closed")
        return self._h

    def close(self) -> None:
        if self._h:
            self._free(self._h)
            self._h = None

    __del__ = close

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


@dataclass(frozen=True)
class ModelInfo:
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


def _model_params(n_gpu_layers, use_mmap, use_mlock, vocab_only, progress, check_in_child=False,
                  check_timeout_ms=0, check_memory_limit=0):
    p = _model_default_params()
    if n_gpu_layers is not None:
        p.n_gpu_layers = n_gpu_layers
    p.use_mmap, p.use_mlock, p.vocab_only = use_mmap, use_mlock, vocab_only
    p.check_in_child, p.check_timeout_ms, p.check_memory_limit = check_in_child, check_timeout_ms, check_memory_limit
    keep = None
    if progress is not None:
        def trampoline(_ud, frac):
            try:
                return progress(frac) is not False
            except Exception:
                return False

        keep = _PROGRESS_CB(trampoline)
        p.progress_callback = ctypes.cast(keep, c_void_p)
    return p, keep


def check_model(path: Union[str, os.PathLike], *, vocab_only: bool = False, timeout_ms: int = 0,
                memory_limit: int = 0) -> dict:
    """Load `path` and decode one token in a child process under a time and memory
    limit (0 = defaults). Returns {"elapsed_ms", "peak_rss_bytes"}; raises
    BadModelError (with the child's reason) when it fails, crashes or hangs."""
    p, _ = _model_params(None, True, False, vocab_only, None, False, timeout_ms, memory_limit)
    r = _CheckReport()
    _check(_model_check(os.fsencode(path), byref(p), byref(r)))
    return {"elapsed_ms": r.elapsed_ms, "peak_rss_bytes": r.peak_rss_bytes}


class Model(_Handle):
    """A loaded GGUF model, shareable by many contexts and threads. close() drops
    this reference; contexts keep the model alive."""

    _free = _model_free
    _what = "model"

    def __init__(self, path: Union[str, os.PathLike], *, n_gpu_layers: Optional[int] = None, use_mmap: bool = True,
                 use_mlock: bool = False, vocab_only: bool = False,
                 progress: Optional[Callable[[float], bool]] = None, check_in_child: bool = False,
                 check_timeout_ms: int = 0, check_memory_limit: int = 0, _handle=None):
        """check_in_child=True first loads the file in a child process (see
        check_model), for files that may be hostile."""
        if _handle is not None:
            self._h = _handle
            return
        p, keep = _model_params(n_gpu_layers, use_mmap, use_mlock, vocab_only, progress, check_in_child,
                                check_timeout_ms, check_memory_limit)
        h = c_void_p()
        st = _model_load(os.fsencode(path), byref(p), byref(h))
        del keep
        _check(st)
        self._h = h

    def embed(self, texts: Iterable[str], *, pooling: Optional[str] = None, normalize: bool = True,
              truncate: bool = False, n_ctx: int = 0, n_threads: int = 0, as_numpy: Optional[bool] = None):
        """Embed ``texts`` (one vector each) on an embedding context this model keeps
        for these settings; see :meth:`Context.embed`."""
        key = (pooling, n_ctx, n_threads)
        cache = self.__dict__.setdefault("_embed_contexts", {})
        ctx = cache.get(key)
        if ctx is None:
            ctx = cache[key] = Context(self, n_ctx=n_ctx, n_threads=n_threads, embeddings=True, pooling=pooling)
        return ctx.embed(texts, normalize=normalize, truncate=truncate, as_numpy=as_numpy)

    @classmethod
    def from_buffer(cls, data: bytes, **kw) -> "Model":
        """Load from bytes in memory (no temporary file; Linux memfd)."""
        p, keep = _model_params(kw.get("n_gpu_layers"), True, False, kw.get("vocab_only", False), kw.get("progress"))
        buf = (c_uint8 * len(data)).from_buffer_copy(data) if not isinstance(data, bytearray) else \
            (c_uint8 * len(data)).from_buffer(data)
        h = c_void_p()
        st = _model_load_from_buffer(buf, len(data), byref(p), byref(h))
        del keep
        _check(st)
        return cls("", _handle=h)


    @property
    def info(self) -> ModelInfo:
        i = _ModelInfo()
        _check(_model_get_info(self._handle(), byref(i)))
        d = {}
        for name, _t in _ModelInfo._fields_:
            v = getattr(i, name)
            d[name] = v.decode("utf-8", "replace") if isinstance(v, bytes) else v
        return ModelInfo(**d)

    def meta(self, key: str) -> Optional[str]:
        """A GGUF metadata value as text, or None when the key is absent."""
        out = c_void_p()
        st = _model_meta(self._handle(), key.encode(), byref(out))
        if st == 4:
            return None
        _check(st)
        return _take_string(out)

    def json(self) -> dict:
        import json

        out = c_void_p()
        _check(_model_json(self._handle(), byref(out)))
        return json.loads(_take_string(out))

    def tokenize(self, text: str, add_special: bool = True, parse_special: bool = False) -> List[int]:
        b = text.encode()
        n = c_size_t()
        cap = len(b) + 8
        while True:
            buf = (c_int32 * cap)()
            st = _model_tokenize(self._handle(), b, len(b), add_special, parse_special, buf, cap, byref(n))
            if st == 14:
                cap = n.value
                continue
            _check(st)
            return list(buf[: n.value])

    def detokenize(self, tokens: Sequence_[int], remove_special: bool = False, unparse_special: bool = False) -> str:
        arr = (c_int32 * len(tokens))(*tokens)
        n = c_size_t()
        cap = len(tokens) * 8 + 16
        while True:
            buf = ctypes.create_string_buffer(cap)
            st = _model_detokenize(self._handle(), arr, len(tokens), remove_special, unparse_special, buf, cap,
                                   byref(n))
            if st == 14:
                cap = n.value + 1
                continue
            _check(st)
            return buf.raw[: n.value].decode("utf-8", "replace")

    def token_to_piece(self, token: int, special: bool = False) -> bytes:
        """A token's bytes (possibly part of a UTF-8 character)."""
        n = c_size_t()
        buf = ctypes.create_string_buffer(256)
        _check(_model_token_to_piece(self._handle(), token, special, buf, 256, byref(n)))
        return buf.raw[: n.value]

    def apply_chat_template(self, messages: Iterable[Mapping[str, Any]], add_assistant: bool = True,
                            template: Optional[str] = None, tools: Any = None,
                            variables: Optional[Mapping[str, Any]] = None) -> str:
        """Format ``messages`` with the model's template (or ``template``: a template text or a built-in
        name such as "chatml"). ``tools`` (a list of tool definitions) and ``variables`` (extra template
        variables, e.g. ``{"enable_thinking": False}``) reach the template; JSON strings work too."""
        arr, keep = _messages(messages)
        out = c_void_p()
        _check(_model_apply_chat_template(self._handle(), arr, len(arr), add_assistant,
                                          template.encode() if template else None, _json_arg(tools),
                                          _json_arg(variables), byref(out)))
        del keep
        return _take_string(out)


POOLING = {"model": -1, "none": 0, "mean": 1, "cls": 2, "last": 3, "rank": 4}


def _vectors(buf, n: int, dim: int, as_numpy: Optional[bool]):
    """The (n, dim) floats of an embed call: a NumPy array when asked or available."""
    if as_numpy is not False:
        try:
            import numpy as np
        except ImportError:
            if as_numpy:
                raise
        else:
            return np.frombuffer(buf, dtype=np.float32).reshape(n, dim).copy()
    return [list(buf[i * dim:(i + 1) * dim]) for i in range(n)]


def _json_arg(v: Any) -> Optional[bytes]:
    """None, a JSON text, or a Python value to serialise."""
    if v is None:
        return None
    return (v if isinstance(v, str) else json.dumps(v, ensure_ascii=False)).encode()


def _messages(messages):
    """A ctypes array of messages: role and content, plus name, tool_call_id and tool_calls when given
    (tool_calls as a list, or its JSON text)."""
    msgs = list(messages)
    keep = []
    arr = (_ChatMessage * len(msgs))()
    for i, m in enumerate(msgs):
        content = m.get("content")
        fields = {"role": m["role"].encode(), "content": ("" if content is None else content).encode()}
        for k in ("name", "tool_call_id", "reasoning_content"):
            if m.get(k) is not None:
                fields[k] = m[k].encode()
        if m.get("tool_calls") is not None:
            fields["tool_calls"] = _json_arg(m["tool_calls"])
        for k, v in fields.items():
            keep.append(v)
            setattr(arr[i], k, v)
    return arr, keep

# ----------------------------------------------------------------------------- context


@dataclass(frozen=True)
class GenResult:
    text: str
    stop_reason: str
    n_prompt_tokens: int
    n_reused_tokens: int
    n_generated_tokens: int
    prompt_ms: float
    gen_ms: float
    n_shifts: int = 0
    n_shifted_tokens: int = 0

    @property
    def tokens_per_second(self) -> float:
        return self.n_generated_tokens * 1000.0 / self.gen_ms if self.gen_ms > 0 else 0.0


_GEN_KEYS = {"temperature", "top_k", "top_p", "min_p", "repeat_penalty", "frequency_penalty", "presence_penalty",
             "penalty_last_n", "seed", "max_tokens", "stop", "grammar", "chat_template", "chat_tools", "chat_vars", "context_shift",
             "n_keep"}


def _gen_params(kw):
    unknown = set(kw) - _GEN_KEYS
    if unknown:
        raise TypeError(f"unknown generation parameter(s): {', '.join(sorted(unknown))}")
    p = _gen_default_params()
    keep = []
    for k, v in kw.items():
        if v is None:
            continue
        if k == "stop":
            stops = [v] if isinstance(v, str) else list(v)
            enc = [s.encode() for s in stops]
            keep.append(enc)
            arr = (c_char_p * len(enc))(*enc)
            keep.append(arr)
            p.stop, p.n_stop = ctypes.cast(arr, POINTER(c_char_p)), len(enc)
        elif k in ("chat_tools", "chat_vars"):
            g = _json_arg(v)
            keep.append(g)
            setattr(p, k, g)
        elif k in ("grammar", "chat_template"):
            g = v.encode()
            keep.append(g)
            setattr(p, k, g)
        else:
            setattr(p, k, v)
    return p, keep


class _Conversation(_Handle):
    """Generation calls shared by :class:`Context` (on its own sequence) and
    :class:`Sequence`: one call at a time per object (a concurrent one raises
    :class:`BusyError`); :meth:`cancel` works from any thread."""

    _generate = _chat = _cancel_fn = None  # ta_*_generate / _chat / _cancel

    def cancel(self) -> None:
        """Stop the call running on this object (safe from any thread)."""
        if self._h:
            self._cancel_fn(self._h)

    def _run(self, call, on_text: Optional[Callable[[str], Optional[bool]]], kw) -> GenResult:
        p, keep = _gen_params(kw)
        parts: List[str] = []
        err: List[BaseException] = []

        def trampoline(_ud, text, n):
            s = ctypes.string_at(text, n).decode("utf-8")
            parts.append(s)
            if on_text is None:
                return True
            try:
                return on_text(s) is not False
            except BaseException as e:  # re-raised after the call returns
                err.append(e)
                return False

        cb = _TEXT_CB(trampoline)
        r = _GenResult()
        st = call(p, cb, r)
        del keep
        if err:
            raise err[0]
        res = GenResult("".join(parts), STOP_REASONS.get(r.stop_reason, str(r.stop_reason)), r.n_prompt_tokens,
                        r.n_reused_tokens, r.n_generated_tokens, r.prompt_ms, r.gen_ms, r.n_shifts,
                        r.n_shifted_tokens)
        if st != TA_OK:
            e = _error(st)
            if isinstance(e, CancelledError):
                e.result = res
            raise e
        return res

    def generate(self, prompt: str, *, on_text: Optional[Callable[[str], Optional[bool]]] = None,
                 **params) -> GenResult:
        """Continue ``prompt``; ``on_text(piece)`` returning False stops (CancelledError)."""
        b = prompt.encode()
        return self._run(lambda p, cb, r: self._generate(self._handle(), b, byref(p), cb, None, byref(r)),
                         on_text, params)

    def chat(self, messages: Iterable[Mapping[str, str]], *,
             on_text: Optional[Callable[[str], Optional[bool]]] = None, **params) -> GenResult:
        """Reply to ``messages`` ([{"role": ..., "content": ...}]) using the model's template."""
        arr, keep = _messages(messages)
        return self._run(lambda p, cb, r: self._chat(self._handle(), arr, len(arr), byref(p), cb, None,
                                                     byref(r)), on_text, params)

    def _stream(self, start) -> Iterator[str]:
        q: "queue.Queue" = queue.Queue()
        stop = threading.Event()
        done = object()

        def on_text(s):
            q.put(s)
            return not stop.is_set()

        def worker():
            try:
                start(on_text)
                q.put(done)
            except CancelledError as e:
                q.put(done if stop.is_set() else e)
            except BaseException as e:
                q.put(e)

        t = threading.Thread(target=worker, daemon=True)
        t.start()
        try:
            while True:
                item = q.get()
                if item is done:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            # Consumer stopped early (break / close): stop generation, wait for it.
            stop.set()
            self.cancel()
            t.join()

    def stream(self, prompt: str, **params) -> Iterator[str]:
        """Yield text pieces as they are generated; breaking out stops generation."""
        return self._stream(lambda cb: self.generate(prompt, on_text=cb, **params))

    def chat_stream(self, messages: Iterable[Mapping[str, str]], **params) -> Iterator[str]:
        msgs = list(messages)
        return self._stream(lambda cb: self.chat(msgs, on_text=cb, **params))


class Context(_Conversation):
    """A KV cache on a model for up to ``n_seq_max`` conversations. Its own
    generate/chat calls run on a sequence of its own; :meth:`sequence` gives more,
    to drive from other threads at once (their decodes share batches)."""

    _free = _context_free
    _what = "context"
    _generate, _chat, _cancel_fn = _context_generate, _context_chat, _context_cancel

    def __init__(self, model: Model, *, n_ctx: int = 4096, n_batch: Optional[int] = None,
                 n_ubatch: Optional[int] = None, n_threads: int = 0, n_threads_batch: int = 0,
                 flash_attn: Optional[bool] = None, seed: Optional[int] = None, n_seq_max: int = 1,
                 kv_unified: bool = False, embeddings: bool = False, pooling: Optional[str] = None):
        """``embeddings=True`` makes a context for :meth:`embed` only; ``pooling`` is one of
        "model" (default), "none", "mean", "cls", "last", "rank"."""
        p = _context_default_params()
        p.n_ctx = n_ctx
        p.n_seq_max, p.kv_unified = n_seq_max, kv_unified
        p.embeddings = embeddings
        if pooling is not None:
            if pooling not in POOLING:
                raise ValueError(f"pooling must be one of {', '.join(POOLING)}")
            p.pooling = POOLING[pooling]
        if n_batch is not None:
            p.n_batch = n_batch
        if n_ubatch is not None:
            p.n_ubatch = n_ubatch
        p.n_threads, p.n_threads_batch = n_threads, n_threads_batch
        p.flash_attn = -1 if flash_attn is None else int(bool(flash_attn))
        if seed is not None:
            p.seed = seed
        h = c_void_p()
        _check(_context_new(model._handle(), byref(p), byref(h)))
        self._h = h
        self.model = model


    @property
    def n_ctx(self) -> int:
        return _context_n_ctx(self._handle())

    @property
    def embed_dim(self) -> int:
        """Length of each vector :meth:`embed` returns (embedding contexts only)."""
        n = c_size_t()
        _check(_context_embed_dim(self._handle(), byref(n)))
        return n.value

    @property
    def pooling(self) -> str:
        """The pooling an embedding context uses, the model's default resolved."""
        v = c_int32()
        _check(_context_pooling(self._handle(), byref(v)))
        return {c: n for n, c in POOLING.items()}[v.value]

    def embed(self, texts: Iterable[str], *, normalize: bool = True, truncate: bool = False,
              as_numpy: Optional[bool] = None):
        """One vector per text (the context must have ``embeddings=True``). Returns a
        NumPy array (n, dim) when NumPy is installed (or ``as_numpy=True``), else lists."""
        enc = [t.encode() for t in texts]
        dim = self.embed_dim
        arr = (c_char_p * len(enc))(*enc)
        out = (ctypes.c_float * (len(enc) * dim))()
        n = c_size_t()
        p = _embed_default_params()
        p.normalize, p.truncate = normalize, truncate
        _check(_context_embed(self._handle(), arr, len(enc), byref(p), out, len(out), byref(n)))
        return _vectors(out, len(enc), dim, as_numpy)

    @property
    def n_ctx_seq(self) -> int:
        """The window of one sequence (n_ctx / n_seq_max unless kv_unified)."""
        return _context_n_ctx_seq(self._handle())

    @property
    def n_seq_max(self) -> int:
        return _context_n_seq_max(self._handle())

    def sequence(self) -> "Sequence":
        """A new sequence of this context (:class:`BusyError` when all are taken)."""
        return Sequence(self)

    def save_state(self, path: str) -> int:
        """Save the context's own sequence (tokens and KV cells) to ``path``."""
        n = c_size_t()
        _check(_context_state_save(self._handle(), os.fsencode(path), byref(n)))
        return n.value

    def load_state(self, path: str) -> int:
        """Restore a state file into the context's own sequence."""
        n = c_size_t()
        _check(_context_state_load(self._handle(), os.fsencode(path), byref(n)))
        return n.value

    def generate_many(self, prompts: Iterable[Union[str, Sequence_[Mapping[str, str]]]], **params
                      ) -> Iterator[Tuple[int, GenResult]]:
        """Answer several prompts at once on sequences of this context, one thread
        each, yielding ``(index, result)`` as each completes. A prompt is a string
        (raw text) or a list of chat messages. At most as many run at once as the
        context has free sequences; the rest wait for one."""
        todo = list(enumerate(prompts))
        seqs: List[Sequence] = []
        try:
            while len(seqs) < len(todo):
                seqs.append(self.sequence())
        except BusyError:
            if not seqs:
                raise
        work: "queue.Queue" = queue.Queue()
        for item in todo:
            work.put(item)
        results: "queue.Queue" = queue.Queue()

        def run(seq: Sequence) -> None:
            while True:
                try:
                    i, prompt = work.get_nowait()
                except queue.Empty:
                    return
                try:
                    seq.reset()
                    r = seq.generate(prompt, **params) if isinstance(prompt, str) else seq.chat(prompt, **params)
                    results.put((i, r))
                except BaseException as e:  # handed to the caller's thread
                    results.put((i, e))

        threads = [threading.Thread(target=run, args=(s,), daemon=True) for s in seqs]
        for t in threads:
            t.start()
        try:
            for _ in todo:
                i, r = results.get()
                if isinstance(r, BaseException):
                    raise r
                yield i, r
        finally:
            # Stopped early (break, an error): cancel what still runs.
            while not work.empty():
                try:
                    work.get_nowait()
                except queue.Empty:
                    break
            for s in seqs:
                s.cancel()
            for t in threads:
                t.join()
            for s in seqs:
                s.close()

    def reset(self) -> None:
        _check(_context_reset(self._handle()))

    def tokenize(self, text: str, add_special: bool = True, parse_special: bool = False) -> List[int]:
        return self.model.tokenize(text, add_special, parse_special)

    def detokenize(self, tokens: Sequence_[int], **kw) -> str:
        return self.model.detokenize(tokens, **kw)


class Sequence(_Conversation):
    """One conversation in a :class:`Context`: its own KV cells, history and
    sampler. Different sequences may be used from different threads at once; the
    context batches their decodes. Keeps the context alive."""

    _free = _sequence_free
    _what = "sequence"
    _generate, _chat, _cancel_fn = _sequence_generate, _sequence_chat, _sequence_cancel

    def __init__(self, context: Context):
        h = c_void_p()
        _check(_sequence_new(context._handle(), byref(h)))
        self._h = h
        self.context = context
        self.model = context.model

    @property
    def id(self) -> int:
        return _sequence_id(self._handle())

    @property
    def n_cached(self) -> int:
        """Tokens this sequence holds in the KV cache."""
        n = c_size_t()
        _check(_sequence_n_cached(self._handle(), byref(n)))
        return n.value

    def reset(self) -> None:
        _check(_sequence_reset(self._handle()))

    def save_state(self, path: str) -> int:
        """Save this sequence's tokens and KV cells to ``path``; returns the token count."""
        n = c_size_t()
        _check(_sequence_state_save(self._handle(), os.fsencode(path), byref(n)))
        return n.value

    def load_state(self, path: str) -> int:
        """Restore a state file (same model, this or another process); returns the
        token count. A file from another model or a damaged one raises and leaves
        the sequence empty."""
        n = c_size_t()
        _check(_sequence_state_load(self._handle(), os.fsencode(path), byref(n)))
        return n.value


# ----------------------------------------------------------------------------- hardware


class _CpuInfo(Structure):
    _fields_ = [("vendor", c_char_p), ("brand", c_char_p), ("uarch", c_char_p), ("features", c_char_p),
                ("family", c_uint32), ("model", c_uint32), ("stepping", c_uint32), ("x86_64_level", c_uint32),
                ("physical_cores", c_uint32), ("logical_cores", c_uint32), ("l1d_kb", c_uint32),
                ("l2_kb", c_uint32), ("l3_kb", c_uint32), ("recommended_threads", c_uint32)]


class _MemoryInfo(Structure):
    _fields_ = [("total_bytes", c_uint64), ("available_bytes", c_uint64), ("host_total_bytes", c_uint64),
                ("host_available_bytes", c_uint64), ("cgroup_limit_bytes", c_uint64),
                ("swap_total_bytes", c_uint64)]


class _GpuInfo(Structure):
    _fields_ = [("backend", c_char_p), ("name", c_char_p), ("compute_capability", c_char_p),
                ("device_type", c_char_p), ("driver", c_char_p), ("index", c_uint32), ("total_bytes", c_uint64),
                ("free_bytes", c_uint64), ("has_free_bytes", c_bool)]


class _BuildInfo(Structure):
    _fields_ = [("features", c_char_p), ("best_variant", c_char_p), ("warning", c_char_p),
                ("gpu_backends", c_char_p), ("gpu_offload", c_bool),
                ("cpu_variant", c_char_p), ("cpu_variant_reason", c_char_p)]


class _Fit(Structure):
    _fields_ = [("n_ctx", c_uint32), ("weights_bytes", c_uint64), ("kv_bytes", c_uint64),
                ("compute_bytes", c_uint64), ("total_bytes", c_uint64), ("fits_ram", c_bool),
                ("fits_vram", c_bool), ("recommended_gpu_layers", c_int32), ("recommended_threads", c_uint32)]


_hw_detect = _fn("ta_hardware_detect", c_int32, POINTER(c_void_p))
_hw_free = _fn("ta_hardware_free", None, c_void_p)
_hw_cpu = _fn("ta_hardware_cpu", c_int32, c_void_p, POINTER(_CpuInfo))
_hw_memory = _fn("ta_hardware_memory", c_int32, c_void_p, POINTER(_MemoryInfo))
_hw_gpu_count = _fn("ta_hardware_gpu_count", c_size_t, c_void_p)
_hw_gpu = _fn("ta_hardware_gpu", c_int32, c_void_p, c_size_t, POINTER(_GpuInfo))
_hw_build = _fn("ta_hardware_build", c_int32, c_void_p, POINTER(_BuildInfo))
_hw_json = _fn("ta_hardware_json", c_int32, c_void_p, POINTER(c_void_p))
_hw_fit_file = _fn("ta_hardware_fit_file", c_int32, c_void_p, c_char_p, c_uint32, POINTER(_Fit))
_hw_fit_model = _fn("ta_hardware_fit_model", c_int32, c_void_p, c_void_p, c_uint32, POINTER(_Fit))


def _struct_dict(st, split=()):
    d = {}
    for name, _t in st._fields_:
        v = getattr(st, name)
        if isinstance(v, bytes):
            v = v.decode("utf-8", "replace")
        if name in split:
            v = tuple(v.split()) if v else ()
        d[name] = v
    return d


@dataclass(frozen=True)
class CpuInfo:
    vendor: str
    brand: str
    uarch: str
    features: tuple
    family: int
    model: int
    stepping: int
    x86_64_level: int
    physical_cores: int
    logical_cores: int
    l1d_kb: int
    l2_kb: int
    l3_kb: int
    recommended_threads: int


@dataclass(frozen=True)
class MemoryInfo:
    total_bytes: int
    available_bytes: int
    host_total_bytes: int
    host_available_bytes: int
    cgroup_limit_bytes: int
    swap_total_bytes: int


@dataclass(frozen=True)
class GpuInfo:
    backend: str
    name: str
    compute_capability: Optional[str]
    device_type: Optional[str]
    driver: Optional[str]
    index: int
    total_bytes: int
    free_bytes: Optional[int]


@dataclass(frozen=True)
class BuildInfo:
    features: tuple
    best_variant: str
    warning: Optional[str]
    gpu_backends: tuple
    gpu_offload: bool
    cpu_variant: str
    cpu_variant_reason: str


@dataclass(frozen=True)
class Fit:
    n_ctx: int
    weights_bytes: int
    kv_bytes: int
    compute_bytes: int
    total_bytes: int
    fits_ram: bool
    fits_vram: bool
    recommended_gpu_layers: int
    recommended_threads: int


@dataclass(frozen=True)
class Hardware:
    """What this machine can run: ``Hardware.detect()``."""

    cpu: CpuInfo
    memory: MemoryInfo
    gpus: tuple
    build: BuildInfo
    json: dict

    @classmethod
    def detect(cls) -> "Hardware":
        import json as _json

        h = c_void_p()
        _check(_hw_detect(byref(h)))
        try:
            c, m, b = _CpuInfo(), _MemoryInfo(), _BuildInfo()
            _check(_hw_cpu(h, byref(c)))
            _check(_hw_memory(h, byref(m)))
            _check(_hw_build(h, byref(b)))
            gpus = []
            for i in range(_hw_gpu_count(h)):
                g = _GpuInfo()
                _check(_hw_gpu(h, i, byref(g)))
                d = _struct_dict(g)
                has = d.pop("has_free_bytes")
                d["free_bytes"] = d["free_bytes"] if has else None
                gpus.append(GpuInfo(**d))
            out = c_void_p()
            _check(_hw_json(h, byref(out)))
            doc = _json.loads(_take_string(out))
            return cls(CpuInfo(**_struct_dict(c, split=("features",))), MemoryInfo(**_struct_dict(m)), tuple(gpus),
                       BuildInfo(**_struct_dict(b, split=("features", "gpu_backends"))), doc)
        finally:
            _hw_free(h)

    @staticmethod
    def fit(model: Union[str, os.PathLike, "Model"], n_ctx: int = 4096) -> Fit:
        """Memory a model needs at ``n_ctx`` and whether it fits, without loading it."""
        h = c_void_p()
        _check(_hw_detect(byref(h)))
        try:
            f = _Fit()
            if isinstance(model, Model):
                _check(_hw_fit_model(h, model._handle(), n_ctx, byref(f)))
            else:
                _check(_hw_fit_file(h, os.fsencode(model), n_ctx, byref(f)))
            return Fit(**_struct_dict(f))
        finally:
            _hw_free(h)


# ----------------------------------------------------------------------------- cache


class _CacheOptions(Structure):
    _fields_ = [("root", c_char_p), ("endpoint", c_char_p), ("token", c_char_p), ("offline", c_int32),
                ("retries", c_uint32), ("connect_timeout_ms", c_uint32), ("read_timeout_ms", c_uint32),
                ("user_agent", c_char_p), ("durable", c_bool)]


class _CacheStats(Structure):
    _fields_ = [("repos", c_uint64), ("files", c_uint64), ("bytes", c_uint64)]


_DOWNLOAD_CB = CFUNCTYPE(c_bool, c_void_p, c_char_p, c_uint64, c_uint64)

_cache_default_options = _fn("ta_cache_default_options", _CacheOptions)
_cache_open = _fn("ta_cache_open", c_int32, POINTER(_CacheOptions), POINTER(c_void_p))
_cache_free = _fn("ta_cache_free", None, c_void_p)
_cache_root = _fn("ta_cache_root", c_int32, c_void_p, POINTER(c_void_p))
_cache_scan = _fn("ta_cache_scan", c_int32, c_void_p, c_char_p, c_char_p, POINTER(c_void_p))
_cache_manifest = _fn("ta_cache_manifest", c_int32, c_void_p, c_char_p, c_char_p, POINTER(c_void_p))
_cache_download_file = _fn("ta_cache_download_file", c_int32, c_void_p, c_char_p, c_char_p, c_char_p, _DOWNLOAD_CB,
                           c_void_p, POINTER(c_void_p))
_cache_download_variant = _fn("ta_cache_download_variant", c_int32, c_void_p, c_char_p, c_char_p, c_char_p,
                              _DOWNLOAD_CB, c_void_p, POINTER(c_void_p))
_cache_has_file = _fn("ta_cache_has_file", c_int32, c_void_p, c_char_p, c_char_p, c_char_p, POINTER(c_bool))
_cache_snapshot_path = _fn("ta_cache_snapshot_path", c_int32, c_void_p, c_char_p, c_char_p, c_char_p,
                           POINTER(c_void_p))
_cache_list_repos = _fn("ta_cache_list_repos", c_int32, c_void_p, POINTER(c_void_p))
_cache_delete_repo = _fn("ta_cache_delete_repo", c_int32, c_void_p, c_char_p)
_cache_delete_revision = _fn("ta_cache_delete_revision", c_int32, c_void_p, c_char_p, c_char_p)
_cache_stats = _fn("ta_cache_get_stats", c_int32, c_void_p, POINTER(_CacheStats))
_cache_verify = _fn("ta_cache_verify", c_int32, c_void_p, c_char_p, POINTER(c_void_p))


def _enc(s):
    return None if s is None else os.fsencode(s) if isinstance(s, os.PathLike) else s.encode()


def _progress_cb(progress):
    """Wrap progress(file, done, total) -> bool|None; default: tqdm bars when installed."""
    if progress is None:
        try:
            from tqdm import tqdm  # optional
        except ImportError:
            return _DOWNLOAD_CB(lambda _ud, _f, _d, _t: True), None
        bars = {}

        def tq(_ud, f, done, total):
            name = f.decode("utf-8", "replace")
            bar = bars.get(name)
            if bar is None:
                bar = bars[name] = tqdm(total=total, unit="B", unit_scale=True, desc=name, leave=False)
            bar.update(done - bar.n)
            if done >= total:
                bar.close()
            return True

        return _DOWNLOAD_CB(tq), bars
    errors = []

    def tramp(_ud, f, done, total):
        try:
            return progress(f.decode("utf-8", "replace"), done, total) is not False
        except BaseException as e:
            errors.append(e)
            return False

    return _DOWNLOAD_CB(tramp), errors


class Cache(_Handle):
    """A Hugging Face–compatible model store (same layout as huggingface_hub, so
    files are shared). Root, endpoint, token and offline mode default from
    HF_HUB_CACHE/HF_HOME, HF_ENDPOINT, HF_TOKEN and HF_HUB_OFFLINE. durable=True
    fsyncs each download before it counts as cached (safe across power failures,
    bounded by disk write speed)."""

    _free = _cache_free
    _what = "cache"

    def __init__(self, root=None, *, endpoint: Optional[str] = None, token: Optional[str] = None,
                 offline: Optional[bool] = None, retries: Optional[int] = None, timeout: Optional[float] = None,
                 user_agent: Optional[str] = None, durable: bool = False):
        o = _cache_default_options()
        self._keep = [_enc(root), _enc(endpoint), _enc(token), _enc(user_agent)]
        o.root, o.endpoint, o.token, o.user_agent = self._keep
        o.offline = -1 if offline is None else int(bool(offline))
        if retries is not None:
            o.retries = retries
        if timeout is not None:
            o.connect_timeout_ms = o.read_timeout_ms = int(timeout * 1000)
        o.durable = bool(durable)
        h = c_void_p()
        _check(_cache_open(byref(o), byref(h)))
        self._h = h


    def _json(self, fn, *args):
        import json

        out = c_void_p()
        _check(fn(self._handle(), *args, byref(out)))
        return json.loads(_take_string(out))

    @property
    def root(self) -> str:
        out = c_void_p()
        _check(_cache_root(self._handle(), byref(out)))
        return _take_string(out)

    def scan(self, repo: str, revision: str = "main") -> dict:
        """List the repo's files and group GGUFs by quantisation (network). Names that
        cannot be used safely are left out and listed in ``refused``."""
        return self._json(_cache_scan, repo.encode(), revision.encode())

    def manifest(self, repo: str, revision: str = "main") -> dict:
        """The manifest with current statuses (no network): the last scan, or derived
        from the cached snapshot (``source == "snapshot"``); NotFoundError if neither."""
        return self._json(_cache_manifest, repo.encode(), revision.encode())

    def _download(self, fn, args, progress):
        cb, errs = _progress_cb(progress)
        out = c_void_p()
        st = fn(self._handle(), *args, cb, None, byref(out))
        if isinstance(errs, list) and errs:
            raise errs[0]
        _check(st)
        return _take_string(out)

    def download(self, repo: str, filename: str, revision: str = "main",
                 progress: Optional[Callable[[str, int, int], Optional[bool]]] = None) -> str:
        """Download one file (resumable, verified); returns its snapshot path."""
        return self._download(_cache_download_file, (repo.encode(), revision.encode(), filename.encode()), progress)

    def download_variant(self, repo: str, quant: str, revision: str = "main",
                         progress: Optional[Callable[[str, int, int], Optional[bool]]] = None) -> str:
        """Download every shard of a quantisation; returns the first shard's path."""
        return self._download(_cache_download_variant, (repo.encode(), revision.encode(), quant.encode()), progress)

    def has_file(self, repo: str, filename: str, revision: str = "main") -> bool:
        b = c_bool()
        _check(_cache_has_file(self._handle(), repo.encode(), revision.encode(), filename.encode(), byref(b)))
        return b.value

    def snapshot_path(self, repo: str, filename: str, revision: str = "main") -> str:
        out = c_void_p()
        _check(_cache_snapshot_path(self._handle(), repo.encode(), revision.encode(), filename.encode(), byref(out)))
        return _take_string(out)

    def list_repos(self) -> list:
        return self._json(_cache_list_repos)

    def delete_repo(self, repo: str) -> None:
        _check(_cache_delete_repo(self._handle(), repo.encode()))

    def delete_revision(self, repo: str, commit: str) -> None:
        _check(_cache_delete_revision(self._handle(), repo.encode(), commit.encode()))

    def stats(self) -> dict:
        s = _CacheStats()
        _check(_cache_stats(self._handle(), byref(s)))
        return {"repos": s.repos, "files": s.files, "bytes": s.bytes}

    def verify(self, repo: Optional[str] = None) -> list:
        """Re-hash blobs; returns the mismatches ([] when all are intact)."""
        return self._json(_cache_verify, _enc(repo))


def _from_pretrained(cls, repo: str, quant: str, *, revision: str = "main", cache: Optional[Cache] = None,
                     progress=None, **load_kw) -> "Model":
    """Download the repo's ``quant`` variant if needed (into the shared HF cache),
    then load it."""
    own = cache is None
    cache = cache or Cache()
    try:
        path = cache.download_variant(repo, quant, revision, progress)
    finally:
        if own:
            cache.close()
    return cls(path, **load_kw)


Model.from_pretrained = classmethod(_from_pretrained)
__all__ += ["Cache"]
__all__ += ["check_model"]


# ----------------------------------------------------------------------------- native host


class Host(_Handle):
    """The native-messaging dispatcher (the protocol of ``tabagent-host``) inside this
    process: ``post(request)`` takes a dict (or JSON bytes); ``on_message(dict)`` receives
    every message sent back, from the library's threads. close() cancels what runs and
    returns once every request has sent its final message."""

    _free = _host_free
    _what = "host"

    def __init__(self, on_message: Callable[[dict], None], config: Optional[Mapping[str, Any]] = None):
        def trampoline(_ud, data, n):
            try:
                on_message(json.loads(ctypes.string_at(data, n)))
            except Exception:  # an exception must not cross back into the library
                pass

        self._cb = _HOST_CB(trampoline)
        h = c_void_p()
        cfg = json.dumps(config).encode() if config is not None else None
        _check(_host_new(cfg, self._cb, None, byref(h)))
        self._h = h

    def post(self, request: Union[Mapping[str, Any], bytes]) -> None:
        body = request if isinstance(request, (bytes, bytearray)) else json.dumps(request).encode()
        _check(_host_post(self._handle(), bytes(body), len(body)))
