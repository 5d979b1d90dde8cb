"""Python values -> the library's parameter structs. Every function returns the
struct plus a ``keep`` list: the bytes and arrays the struct points into, which the
caller holds until the library call returns."""

from __future__ import annotations

import ctypes
import json
import os
from ctypes import POINTER, c_char_p
from typing import Any, Callable, Iterable, List, Mapping, Optional, Tuple, Union

from . import _ffi

#: A chat message: {"role", "content"} plus optional "name", "tool_call_id",
#: "tool_calls" (a list or its JSON) and "reasoning_content".
Message = Mapping[str, Any]

#: Keyword arguments of the generation calls: the fields of ``ta_gen_params`` (``stop``
#: takes a str or a list; its length field is filled in).
GEN_KEYS = frozenset(f[0] for f in _ffi.GenParams._fields_) - {"n_stop"}


def json_arg(v: Any) -> Optional[bytes]:
    """None, a JSON text, or a Python value to serialise."""
    if v is None:
        return None
    return (v if isinstance(v, str) else json.dumps(v, ensure_ascii=False)).encode()


def gen_params(kw: Mapping[str, Any]) -> Tuple[_ffi.GenParams, List[Any]]:
    """``ta_gen_params`` from keyword arguments (None = the library's default)."""
    unknown = set(kw) - GEN_KEYS
    if unknown:
        raise TypeError(f"unknown generation parameter(s): {', '.join(sorted(unknown))}")
    p = _ffi.gen_default_params()
    keep: List[Any] = []
    for k, v in kw.items():
        if v is None:
            continue
        if k == "stop":
            stops = [v] if isinstance(v, str) else list(v)
            encoded = [s.encode() for s in stops]
            arr = (c_char_p * len(encoded))(*encoded)
            keep += [encoded, arr]
            p.stop, p.n_stop = ctypes.cast(arr, POINTER(c_char_p)), len(encoded)
        elif k in ("chat_tools", "chat_vars"):
            g = json_arg(v)
            keep.append(g)
            setattr(p, k, g)
        elif k in ("grammar", "chat_template"):
            g = str(v).encode()
            keep.append(g)
            setattr(p, k, g)
        else:
            setattr(p, k, v)
    return p, keep


def messages(msgs: Iterable[Message]) -> Tuple[Any, List[Any]]:
    """A ctypes array of ``ta_chat_message`` for ``msgs``."""
    items = list(msgs)
    keep: List[Any] = []
    arr = (_ffi.ChatMessage * len(items))()
    for i, m in enumerate(items):
        content = m.get("content")
        fields = {"role": str(m["role"]).encode(), "content": ("" if content is None else str(content)).encode()}
        for k in ("name", "tool_call_id", "reasoning_content"):
            if m.get(k) is not None:
                fields[k] = str(m[k]).encode()
        if m.get("tool_calls") is not None:
            tc = json_arg(m["tool_calls"])
            assert tc is not None
            fields["tool_calls"] = tc
        for k, v in fields.items():
            keep.append(v)
            setattr(arr[i], k, v)
    return arr, keep


def model_params(n_gpu_layers: Optional[int] = None, use_mmap: bool = True, use_mlock: bool = False,
                 vocab_only: bool = False, progress: Optional[Callable[[float], Optional[bool]]] = None,
                 check_in_child: bool = False, check_timeout_ms: int = 0, check_memory_limit: int = 0,
                 ) -> Tuple[_ffi.ModelParams, List[Any]]:
    p = _ffi.model_default_params()
    if n_gpu_layers is not None:
        p.n_gpu_layers = n_gpu_layers
    p.use_mmap, p.use_mlock, p.vocab_only = use_mmap, use_mlock, vocab_only
    p.check_in_child, p.check_timeout_ms, p.check_memory_limit = check_in_child, check_timeout_ms, check_memory_limit
    keep: List[Any] = []
    if progress is not None:
        user = progress

        def trampoline(_ud: Any, frac: float) -> bool:
            try:
                return user(frac) is not False
            except Exception:
                return False

        cb = _ffi.PROGRESS_CB(trampoline)
        keep.append(cb)
        p.progress_callback = ctypes.cast(cb, ctypes.c_void_p)
    return p, keep


#: A file path argument.
PathLike = Union[str, "os.PathLike[str]"]
