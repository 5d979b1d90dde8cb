"""Exceptions: one class per library status code.

Every failing library call raises a subclass of :class:`TabagentError` chosen by its
``ta_status``; the classes are matched to the codes the C header declares
(``TA_ERR_<NAME>``), and a code this package has no class for (a newer library)
gets one made at import time, so no status ever falls back to a bare error.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Dict, Optional, Type

from . import _ffi

if TYPE_CHECKING:
    from .context import GenResult

__all__ = [
    "TabagentError",
    "NullArgumentError",
    "InvalidArgumentError",
    "IoError",
    "NotFoundError",
    "BadModelError",
    "NetworkError",
    "ChecksumError",
    "CancelledError",
    "ContextFullError",
    "BusyError",
    "UnsupportedError",
    "OutOfMemoryError",
    "PanicError",
    "BufferTooSmallError",
    "UnauthorizedError",
    "OfflineError",
    "BackendError",
    "status_name",
    "status_text",
]


def status_name(status: int) -> str:
    """The header's name of a status without its prefix ("BUSY" for TA_ERR_BUSY)."""
    return _ffi.STATUS_NAMES.get(status, f"STATUS_{status}")


def status_text(status: int) -> str:
    """The library's static text for a status (``ta_status_str``)."""
    return (_ffi.status_str(status) or b"").decode("utf-8", "replace")


class TabagentError(Exception):
    """A failed library call.

    ``status`` is the ``ta_status`` code, ``status_name`` its name in the header
    ("NOT_FOUND"), ``message`` the library's message for this failure
    (``ta_last_error()``: function, file, argument, what was expected), or the
    status text when the library gave none."""

    #: The status name this class stands for ("" on the base class).
    STATUS_NAME = ""

    def __init__(self, status: int, message: str) -> None:
        self.status = status
        self.status_name = status_name(status)
        self.message = message
        super().__init__(f"[{self.status_name}] {message}")

    def __reduce__(self) -> "tuple[type, tuple[int, str]]":
        return (type(self), (self.status, self.message))


class NullArgumentError(TabagentError, ValueError):
    """A required pointer was NULL; also raised by this package for a handle used after close()."""
    STATUS_NAME = "NULL_ARG"


class InvalidArgumentError(TabagentError, ValueError):
    STATUS_NAME = "INVALID_ARG"


class IoError(TabagentError, OSError):
    STATUS_NAME = "IO"


class NotFoundError(TabagentError, FileNotFoundError):
    STATUS_NAME = "NOT_FOUND"


class BadModelError(TabagentError):
    STATUS_NAME = "BAD_MODEL"


class NetworkError(TabagentError, ConnectionError):
    STATUS_NAME = "NETWORK"


class ChecksumError(TabagentError):
    STATUS_NAME = "CHECKSUM"


class CancelledError(TabagentError):
    """The work was stopped (a callback returned False, or cancel()). For a generation,
    ``result`` holds what was done before it stopped (stop_reason "cancelled")."""
    STATUS_NAME = "CANCELLED"
    result: Optional["GenResult"] = None


class ContextFullError(TabagentError):
    STATUS_NAME = "CONTEXT_FULL"


class BusyError(TabagentError):
    """The handle is in use by another thread (a context or sequence runs one call at a time)."""
    STATUS_NAME = "BUSY"


class UnsupportedError(TabagentError):
    STATUS_NAME = "UNSUPPORTED"


class OutOfMemoryError(TabagentError, MemoryError):
    STATUS_NAME = "OUT_OF_MEMORY"


class PanicError(TabagentError):
    STATUS_NAME = "PANIC"


class BufferTooSmallError(TabagentError):
    STATUS_NAME = "BUFFER_TOO_SMALL"


class UnauthorizedError(TabagentError, PermissionError):
    STATUS_NAME = "UNAUTHORIZED"


class OfflineError(TabagentError):
    STATUS_NAME = "OFFLINE"


class BackendError(TabagentError):
    STATUS_NAME = "BACKEND"


def _build_classes() -> Dict[int, Type[TabagentError]]:
    named = {c.STATUS_NAME: c for c in TabagentError.__subclasses__() if c.STATUS_NAME}
    out: Dict[int, Type[TabagentError]] = {}
    for code, name in _ffi.STATUS_NAMES.items():
        if code == _ffi.TA_OK:
            continue
        cls = named.get(name)
        if cls is None:  # a status this package does not know yet: a class of its own
            cls_name = "".join(p.capitalize() for p in name.split("_")) + "Error"
            cls = type(cls_name, (TabagentError,), {"STATUS_NAME": name, "__module__": __name__,
                                                    "__doc__": status_text(code)})
            globals()[cls_name] = cls
            __all__.append(cls_name)
        out[code] = cls
    return out


#: Status code -> exception class, for every TA_ERR_* code of the header.
ERROR_CLASSES: Dict[int, Type[TabagentError]] = _build_classes()


def error_class(status: int) -> Type[TabagentError]:
    return ERROR_CLASSES.get(status, TabagentError)


def make_error(status: int, message: Optional[str] = None) -> TabagentError:
    """The exception for ``status``: with ``message``, or this thread's ``ta_last_error()``
    (call it right after the failing call, on the same thread)."""
    if message is None:
        message = (_ffi.last_error() or b"").decode("utf-8", "replace")
    return error_class(status)(status, message or status_text(status))


def check(status: int) -> None:
    """Raise the matching exception unless ``status`` is TA_OK."""
    if status != _ffi.TA_OK:
        raise make_error(status)
