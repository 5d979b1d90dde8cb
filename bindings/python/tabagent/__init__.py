"""tabagent: local LLM inference on GGUF models (Python bindings of libtabagent).

    from tabagent import Model, Context

    with Model("model.gguf") as model, Context(model, n_ctx=2048) as ctx:
        stream = ctx.chat_stream([{"role": "user", "content": "Hi!"}], max_tokens=64)
        for piece in stream:
            print(piece, end="", flush=True)
        print(stream.result.tokens_per_second)

Handles (:class:`Model`, :class:`Context`, :class:`Sequence`, :class:`Cache`,
:class:`Host`) are owned by the Python object and freed by ``close()``, a ``with``
block or the garbage collector. Every failure raises a subclass of
:class:`TabagentError` chosen by the library's status (``BusyError``,
``ContextFullError``, ``NotFoundError``…) carrying ``status``, ``status_name`` and
the library's ``message``.

The wheel carries the library (``tabagent/_lib``); from a source checkout the
package uses ``target/release``; ``$TABAGENT_LIB`` overrides both.
"""

from __future__ import annotations

from . import errors
from .cache import Cache, DownloadProgress
from .context import POOLING, Context, GenResult, Sequence
from .errors import (
    BackendError,
    BadModelError,
    BufferTooSmallError,
    BusyError,
    CancelledError,
    ChecksumError,
    ContextFullError,
    InvalidArgumentError,
    IoError,
    NetworkError,
    NotFoundError,
    NullArgumentError,
    OfflineError,
    OutOfMemoryError,
    PanicError,
    TabagentError,
    UnauthorizedError,
    UnsupportedError,
)
from .hardware import BuildInfo, CpuInfo, Fit, GpuInfo, Hardware, MemoryInfo
from .host import Host
from .library import (
    LOG_DEBUG,
    LOG_ERROR,
    LOG_INFO,
    LOG_WARN,
    get_include,
    library_path,
    llama_version,
    set_log_callback,
    system_info,
    version,
)
from .model import Model, ModelInfo, check_model
from .stream import AsyncStream, Stream

__version__ = version()

__all__ = [
    "Model", "ModelInfo", "check_model",
    "Context", "Sequence", "GenResult", "POOLING", "Stream", "AsyncStream",
    "Cache", "DownloadProgress",
    "Hardware", "CpuInfo", "MemoryInfo", "GpuInfo", "BuildInfo", "Fit",
    "Host",
    "version", "llama_version", "system_info", "library_path", "get_include", "set_log_callback",
    "LOG_DEBUG", "LOG_INFO", "LOG_WARN", "LOG_ERROR",
    "errors", "TabagentError", "NullArgumentError", "InvalidArgumentError", "IoError", "NotFoundError",
    "BadModelError", "NetworkError", "ChecksumError", "CancelledError", "ContextFullError", "BusyError",
    "UnsupportedError", "OutOfMemoryError", "PanicError", "BufferTooSmallError", "UnauthorizedError",
    "OfflineError", "BackendError",
]
