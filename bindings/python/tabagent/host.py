"""The native-messaging dispatcher (the protocol of ``tabagent-host``) inside this process."""

from __future__ import annotations

import ctypes
import json
from ctypes import byref, c_void_p
from typing import Any, Callable, Dict, Mapping, Optional, Union

from . import _ffi
from ._handle import Handle
from .errors import check

__all__ = ["Host"]


class Host(Handle):
    """``post(request)`` takes a dict (or JSON bytes); ``on_message(dict)`` receives every
    message sent back, from the library's threads (an exception it raises is
    swallowed). :meth:`close` cancels what runs and returns once every request has
    sent its final message."""

    _what = "host"

    def __init__(self, on_message: Callable[[Dict[str, Any]], None],
                 config: Optional[Mapping[str, Any]] = None) -> None:
        def trampoline(_ud: Any, data: Any, n: int) -> None:
            try:
                on_message(json.loads(ctypes.string_at(data, n)))
            except Exception:  # an exception must not cross back into the library
                pass

        self._cb = _ffi.HOST_CB(trampoline)  # referenced as long as the host lives
        h = c_void_p()
        cfg = json.dumps(config).encode() if config is not None else None
        check(_ffi.host_new(cfg, self._cb, None, byref(h)))
        self._h = h

    def _release(self, h: c_void_p) -> None:
        _ffi.host_free(h)

    def post(self, request: Union[Mapping[str, Any], bytes, bytearray]) -> None:
        body = bytes(request) if isinstance(request, (bytes, bytearray)) else json.dumps(request).encode()
        check(_ffi.host_post(self._handle(), body, len(body)))
