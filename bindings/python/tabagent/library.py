"""Library-wide calls: versions, where the library is, and its log."""

from __future__ import annotations

import ctypes
from typing import Any, Callable, Optional

from . import _ffi
from .errors import check

__all__ = ["version", "llama_version", "system_info", "library_path", "get_include", "set_log_callback",
           "LOG_DEBUG", "LOG_INFO", "LOG_WARN", "LOG_ERROR"]

LOG_DEBUG: int = _ffi.LOG_LEVELS["DEBUG"]
LOG_INFO: int = _ffi.LOG_LEVELS["INFO"]
LOG_WARN: int = _ffi.LOG_LEVELS["WARN"]
LOG_ERROR: int = _ffi.LOG_LEVELS["ERROR"]


def version() -> str:
    """The library's "MAJOR.MINOR.PATCH"."""
    return str(_ffi.version().decode())


def llama_version() -> str:
    """The bundled llama.cpp's version and build info."""
    return str(_ffi.llama_version().decode())


def system_info() -> str:
    """llama.cpp's system info: the CPU features this build of ggml uses."""
    return str(_ffi.system_info().decode())


def library_path() -> str:
    """The path of the loaded ``libtabagent`` (see :mod:`tabagent._ffi` for the search order)."""
    return _ffi.LIBRARY_PATH


def get_include() -> str:
    """The folder holding ``tabagent.h`` that matches the loaded library (for C code)."""
    return str(_ffi.header_path().parent)


_log_keepalive: Any = None


def set_log_callback(fn: Optional[Callable[[int, str], None]], min_level: int = LOG_WARN) -> None:
    """Receive library and llama.cpp log lines as ``fn(level, text)`` (from any thread),
    one whole line per call, without its newline. ``None`` restores silence (the
    default). An exception ``fn`` raises is swallowed."""
    global _log_keepalive
    if fn is None:
        check(_ffi.set_log_callback(_ffi.LOG_CB(), None, min_level))
        _log_keepalive = None
        return
    user = fn

    def trampoline(_ud: Any, level: int, text: Any, n: int) -> None:
        try:
            user(level, ctypes.string_at(text, n).decode("utf-8", "replace").rstrip("\n"))
        except Exception:  # a raising logger must not break the library
            pass

    cb = _ffi.LOG_CB(trampoline)
    check(_ffi.set_log_callback(cb, None, min_level))
    _log_keepalive = cb  # the library calls it until replaced
