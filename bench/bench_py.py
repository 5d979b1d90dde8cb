"""Per-token cost of streaming text into a Python callback through the tabagent
package: the library's text path plus the ctypes crossing and the wrapper's
trampoline (decode to str, call the user's function), measured with
ta_debug_stream so no model time is mixed in."""
import ctypes
import time

from tabagent import _ffi

lib = _ffi.lib
f = lib.ta_debug_stream
f.restype = ctypes.c_int32
f.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_size_t, ctypes.c_void_p, ctypes.c_size_t,
              _ffi.TEXT_CB, ctypes.c_void_p, ctypes.POINTER(ctypes.c_size_t)]

parts = []


def on_text(s):  # what a typical consumer does with a piece
    parts.append(s)


def trampoline(_ud, text, n):  # the same work Context._run's trampoline does
    s = ctypes.string_at(text, n).decode("utf-8")
    return on_text(s) is not False


cb = _ffi.TEXT_CB(trampoline)
n = 200_000
text = b"abc " * n
calls = ctypes.c_size_t()
best = float("inf")
for _ in range(3):
    parts.clear()
    t0 = time.perf_counter()
    st = f(text, len(text), 4, None, 0, cb, None, ctypes.byref(calls))
    best = min(best, time.perf_counter() - t0)
    assert st == 0 and calls.value == n and "".join(parts) == text.decode()
print(f"cb_overhead_py_us={best * 1e6 / n:.3f}")
