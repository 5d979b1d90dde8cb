"""The base of every class that owns a library handle."""

from __future__ import annotations

from ctypes import c_void_p
from types import TracebackType
from typing import Optional, Type, TypeVar

from . import _ffi
from .errors import NullArgumentError

H = TypeVar("H", bound="Handle")


class Handle:
    """An owned library handle, freed exactly once: by :meth:`close`, the end of a
    ``with`` block or the garbage collector. Closing again is a no-op; any other use
    after that raises :class:`~tabagent.NullArgumentError` ("the model is closed")."""

    _what = "handle"
    _h: Optional[c_void_p] = None

    def _release(self, h: c_void_p) -> None:  # the ta_*_free call
        raise NotImplementedError

    def _handle(self) -> c_void_p:
        h = self._h
        if not h:
            raise NullArgumentError(_ffi.ERR["NULL_ARG"], f"the {self._what} is closed")
        return h

    @property
    def closed(self) -> bool:
        return not self._h

    def close(self) -> None:
        """Free the handle now (idempotent)."""
        h, self._h = self._h, None
        if h:
            self._release(h)

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # interpreter shutdown: the library may be gone already
            pass

    def __enter__(self: H) -> H:
        return self

    def __exit__(self, exc_type: Optional[Type[BaseException]], exc: Optional[BaseException],
                 tb: Optional[TracebackType]) -> None:
        self.close()
