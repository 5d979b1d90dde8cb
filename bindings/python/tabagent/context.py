"""Contexts and sequences: generation, chat, streaming, embeddings, state files."""

from __future__ import annotations

import ctypes
import os
import queue
import threading
from ctypes import byref, c_char_p, c_int32, c_size_t, c_void_p
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, List, Optional, Sequence as Seq, Tuple, Union

from . import _ffi
from ._handle import Handle
from ._params import Message, PathLike, gen_params, messages
from .errors import BusyError, CancelledError, make_error, check
from .model import Model
from .stream import AsyncStream, OnText, Stream

__all__ = ["Context", "Sequence", "GenResult", "POOLING"]

#: Pooling names for ``Context(embeddings=True, pooling=...)`` (from TA_POOLING_*).
POOLING = dict(_ffi.POOLING)

#: What :meth:`Context.embed` returns: a NumPy array (n, dim) or lists of floats.
Vectors = Any


@dataclass(frozen=True)
class GenResult:
    """What a generation did: the text, why it stopped ("eog", "max_tokens",
    "stop_string", "cancelled", "context_full"), token counts and timings."""

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
        """Generation speed (generated tokens / generation time)."""
        return self.n_generated_tokens * 1000.0 / self.gen_ms if self.gen_ms > 0 else 0.0

    @property
    def prompt_tokens_per_second(self) -> float:
        """Prompt speed (evaluated prompt tokens, not reused ones / prompt time)."""
        n = self.n_prompt_tokens - self.n_reused_tokens
        return n * 1000.0 / self.prompt_ms if self.prompt_ms > 0 else 0.0


def _vectors(buf: Any, n: int, dim: int, as_numpy: Optional[bool]) -> Vectors:
    if as_numpy is not False:
        try:
            import numpy as np  # type: ignore[import-not-found,unused-ignore]
        except ImportError:
            if as_numpy:
                raise
        else:
            return np.frombuffer(buf, dtype=np.float32).reshape(n, dim).copy()
    return [list(buf[i * dim:(i + 1) * dim]) for i in range(n)]


#: A C generation call given its params, text callback, user data and result struct.
Call = Callable[[_ffi.GenParams, Any, Any, _ffi.GenResultC], int]
#: What a call left: its status, its result struct, the exception for a failure.
Raw = Tuple[int, _ffi.GenResultC, Optional[BaseException]]


class _Conversation(Handle):
    """Generation calls shared by :class:`Context` (on its own sequence) and
    :class:`Sequence`: one call at a time per object (a concurrent one raises
    :class:`BusyError`); :meth:`cancel` works from any thread.

    Text handed to ``on_text`` and yielded by streams is the caller's (plain str)."""

    def _c_generate(self, h: c_void_p, prompt: bytes, p: Any, cb: Any, ud: Any, r: Any) -> int:
        raise NotImplementedError

    def _c_chat(self, h: c_void_p, arr: Any, n: int, p: Any, cb: Any, ud: Any, r: Any) -> int:
        raise NotImplementedError

    def _c_cancel(self, h: c_void_p) -> None:
        raise NotImplementedError

    def cancel(self) -> None:
        """Stop the call running on this object (safe from any thread; a no-op when none runs)."""
        h = self._h
        if h:
            self._c_cancel(h)

    def _raw(self, call: Call, cb: Any, ud: Any, kw: Any) -> Raw:
        """Run one C generation call with text callback ``cb(ud, ...)``: its status, its
        result struct, and the exception for a failed status — made here, on the
        calling thread, where the library's last error message is."""
        p, keep = gen_params(kw)
        r = _ffi.GenResultC()
        st = call(p, cb, ud, r)
        del keep
        return st, r, (make_error(st) if st != _ffi.TA_OK else None)

    @staticmethod
    def _result(text: str, raw: Raw) -> GenResult:
        """The GenResult of a finished call; raises its error (a CancelledError carries
        the result)."""
        st, r, err = raw
        res = GenResult(text, _ffi.STOP_REASONS.get(r.stop_reason, str(r.stop_reason)),
                        r.n_prompt_tokens, r.n_reused_tokens, r.n_generated_tokens, r.prompt_ms, r.gen_ms,
                        r.n_shifts, r.n_shifted_tokens)
        if err is not None:
            if isinstance(err, CancelledError):
                err.result = res
            raise err
        return res

    def _run(self, call: Call, on_text: Optional[OnText], kw: Any) -> GenResult:
        parts: List[str] = []
        err: List[BaseException] = []

        def trampoline(_ud: Any, text: Any, n: int) -> bool:
            s = ctypes.string_at(text, n).decode("utf-8")
            parts.append(s)
            if on_text is None:
                return True
            try:
                return on_text(s) is not False
            except BaseException as e:  # re-raised after the call returns
                err.append(e)
                return False

        cb = _ffi.TEXT_CB(trampoline)  # referenced until the call returns
        raw = self._raw(call, cb, None, kw)
        del cb
        if err:
            raise err[0]
        return self._result("".join(parts), raw)

    def _generate_call(self, prompt: str) -> Call:
        b = prompt.encode()
        return lambda p, cb, ud, r: self._c_generate(self._handle(), b, byref(p), cb, ud, byref(r))

    def _chat_call(self, messages_: Iterable[Message]) -> Call:
        arr, keep = messages(messages_)

        def call(p: Any, cb: Any, ud: Any, r: Any) -> int:
            _ = keep  # the messages' buffers live as long as the call
            return self._c_chat(self._handle(), arr, len(arr), byref(p), cb, ud, byref(r))
        return call

    def generate(self, prompt: str, *, on_text: Optional[OnText] = None, **params: Any) -> GenResult:
        """Continue ``prompt`` (raw text, no template). ``on_text(piece)`` receives the text
        as it is generated; returning False stops (:class:`CancelledError`, whose
        ``result`` has the counts so far). ``params``: temperature (0 = greedy), top_k,
        top_p, min_p, repeat_penalty, frequency_penalty, presence_penalty,
        penalty_last_n, seed, max_tokens, stop (str or list), grammar (GBNF),
        context_shift, n_keep."""
        return self._run(self._generate_call(prompt), on_text, params)

    def chat(self, messages_: Iterable[Message], *, on_text: Optional[OnText] = None, **params: Any) -> GenResult:
        """Reply to ``messages_`` ([{"role": ..., "content": ...}]) using the model's chat
        template (or ``chat_template=``; ``chat_tools=``, ``chat_vars=`` reach it). Only the
        part of the rendered conversation not already in the KV cache is evaluated."""
        return self._run(self._chat_call(messages_), on_text, params)

    def stream(self, prompt: str, **params: Any) -> Stream:
        """Iterate over the text pieces of :meth:`generate`; ``.result`` afterwards."""
        return Stream(self, self._generate_call(prompt), params)

    def chat_stream(self, messages_: Iterable[Message], **params: Any) -> Stream:
        """Iterate over the text pieces of :meth:`chat`; ``.result`` afterwards."""
        return Stream(self, self._chat_call(messages_), params)

    def astream(self, prompt: str, **params: Any) -> AsyncStream:
        """``async for`` over the pieces of :meth:`generate` (runs on a worker thread;
        cancelling the consuming task cancels the generation)."""
        return AsyncStream(self, self._generate_call(prompt), params)

    def achat_stream(self, messages_: Iterable[Message], **params: Any) -> AsyncStream:
        """``async for`` over the pieces of :meth:`chat`."""
        return AsyncStream(self, self._chat_call(messages_), params)


class Context(_Conversation):
    """A KV cache on a model for up to ``n_seq_max`` conversations. Its own
    generate/chat calls run on a sequence of its own; :meth:`sequence` gives more, to
    drive from other threads at once (their decodes share batches).

    Owns the library context (freed by :meth:`close`, ``with`` or the garbage
    collector) and keeps the model alive."""

    _what = "context"

    def __init__(self, model: Model, *, n_ctx: int = 4096, n_batch: Optional[int] = None,
                 n_ubatch: Optional[int] = None, n_threads: int = 0, n_threads_batch: int = 0,
                 flash_attn: Optional[bool] = None, seed: Optional[int] = None, n_seq_max: int = 1,
                 kv_unified: bool = False, embeddings: bool = False, pooling: Optional[str] = None) -> None:
        """``n_threads`` 0 = the library's choice. ``embeddings=True`` makes a context for
        :meth:`embed` only; ``pooling`` is one of :data:`POOLING` ("model" = the file's)."""
        p = _ffi.context_default_params()
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
        check(_ffi.context_new(model._handle(), byref(p), byref(h)))
        self._h = h
        self.model = model

    def _release(self, h: c_void_p) -> None:
        _ffi.context_free(h)

    def _c_generate(self, h: c_void_p, prompt: bytes, p: Any, cb: Any, ud: Any, r: Any) -> int:
        return int(_ffi.context_generate(h, prompt, p, cb, ud, r))

    def _c_chat(self, h: c_void_p, arr: Any, n: int, p: Any, cb: Any, ud: Any, r: Any) -> int:
        return int(_ffi.context_chat(h, arr, n, p, cb, ud, r))

    def _c_cancel(self, h: c_void_p) -> None:
        _ffi.context_cancel(h)

    @property
    def n_ctx(self) -> int:
        return int(_ffi.context_n_ctx(self._handle()))

    @property
    def n_ctx_seq(self) -> int:
        """The window of one sequence (n_ctx / n_seq_max unless kv_unified)."""
        return int(_ffi.context_n_ctx_seq(self._handle()))

    @property
    def n_seq_max(self) -> int:
        return int(_ffi.context_n_seq_max(self._handle()))

    @property
    def embed_dim(self) -> int:
        """Length of each vector :meth:`embed` returns (embedding contexts only)."""
        n = c_size_t()
        check(_ffi.context_embed_dim(self._handle(), byref(n)))
        return n.value

    @property
    def pooling(self) -> str:
        """The pooling an embedding context uses, the model's default resolved."""
        v = c_int32()
        check(_ffi.context_pooling(self._handle(), byref(v)))
        return {c: n for n, c in POOLING.items()}[v.value]

    def embed(self, texts: Iterable[str], *, normalize: bool = True, truncate: bool = False,
              as_numpy: Optional[bool] = None) -> Vectors:
        """One vector per text (the context must have ``embeddings=True``). Returns a NumPy
        array (n, dim) when NumPy is installed (or ``as_numpy=True``), else lists."""
        encoded = [t.encode() for t in texts]
        dim = self.embed_dim
        arr = (c_char_p * len(encoded))(*encoded)
        out = (ctypes.c_float * (len(encoded) * dim))()
        n = c_size_t()
        p = _ffi.embed_default_params()
        p.normalize, p.truncate = normalize, truncate
        check(_ffi.context_embed(self._handle(), arr, len(encoded), byref(p), out, len(out), byref(n)))
        return _vectors(out, len(encoded), dim, as_numpy)

    def sequence(self) -> "Sequence":
        """A new sequence of this context (:class:`BusyError` when all are taken)."""
        return Sequence(self)

    def save_state(self, path: PathLike) -> int:
        """Save the context's own sequence (tokens and KV cells) to ``path``; returns the token count."""
        n = c_size_t()
        check(_ffi.context_state_save(self._handle(), os.fsencode(path), byref(n)))
        return n.value

    def load_state(self, path: PathLike) -> int:
        """Restore a state file into the context's own sequence; returns the token count."""
        n = c_size_t()
        check(_ffi.context_state_load(self._handle(), os.fsencode(path), byref(n)))
        return n.value

    def generate_many(self, prompts: Iterable[Union[str, Seq[Message]]], **params: Any
                      ) -> Iterator[Tuple[int, GenResult]]:
        """Answer several prompts at once on sequences of this context, one thread each,
        yielding ``(index, result)`` as each completes. A prompt is a string (raw text)
        or a list of chat messages. At most as many run at once as the context has free
        sequences; the rest wait for one."""
        todo = list(enumerate(prompts))
        seqs: List[Sequence] = []
        try:
            while len(seqs) < len(todo):
                seqs.append(self.sequence())
        except BusyError:
            if not seqs:
                raise
        work: "queue.SimpleQueue[Tuple[int, Union[str, Seq[Message]]]]" = queue.SimpleQueue()
        for item in todo:
            work.put(item)
        results: "queue.SimpleQueue[Tuple[int, Union[GenResult, BaseException]]]" = queue.SimpleQueue()

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
            while True:
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
        """Forget the context's own sequence (its KV cells and history)."""
        check(_ffi.context_reset(self._handle()))

    def tokenize(self, text: str, add_special: bool = True, parse_special: bool = False) -> List[int]:
        return self.model.tokenize(text, add_special, parse_special)

    def detokenize(self, tokens: Seq[int], remove_special: bool = False, unparse_special: bool = False) -> str:
        return self.model.detokenize(tokens, remove_special, unparse_special)


class Sequence(_Conversation):
    """One conversation in a :class:`Context`: its own KV cells, history and sampler.
    Different sequences may be used from different Python threads at once (the
    library releases the GIL while it works and batches their decodes); one sequence
    runs one call at a time. Owns its slot (freed by :meth:`close`) and keeps the
    context alive."""

    _what = "sequence"

    def __init__(self, context: Context) -> None:
        h = c_void_p()
        check(_ffi.sequence_new(context._handle(), byref(h)))
        self._h = h
        self.context = context
        self.model = context.model

    def _release(self, h: c_void_p) -> None:
        _ffi.sequence_free(h)

    def _c_generate(self, h: c_void_p, prompt: bytes, p: Any, cb: Any, ud: Any, r: Any) -> int:
        return int(_ffi.sequence_generate(h, prompt, p, cb, ud, r))

    def _c_chat(self, h: c_void_p, arr: Any, n: int, p: Any, cb: Any, ud: Any, r: Any) -> int:
        return int(_ffi.sequence_chat(h, arr, n, p, cb, ud, r))

    def _c_cancel(self, h: c_void_p) -> None:
        _ffi.sequence_cancel(h)

    @property
    def id(self) -> int:
        return int(_ffi.sequence_id(self._handle()))

    @property
    def n_cached(self) -> int:
        """Tokens this sequence holds in the KV cache."""
        n = c_size_t()
        check(_ffi.sequence_n_cached(self._handle(), byref(n)))
        return n.value

    def reset(self) -> None:
        check(_ffi.sequence_reset(self._handle()))

    def save_state(self, path: PathLike) -> int:
        """Save this sequence's tokens and KV cells to ``path``; returns the token count."""
        n = c_size_t()
        check(_ffi.sequence_state_save(self._handle(), os.fsencode(path), byref(n)))
        return n.value

    def load_state(self, path: PathLike) -> int:
        """Restore a state file (same model, this or another process); returns the token
        count. A file from another model or a damaged one raises and leaves the sequence
        empty."""
        n = c_size_t()
        check(_ffi.sequence_state_load(self._handle(), os.fsencode(path), byref(n)))
        return n.value
