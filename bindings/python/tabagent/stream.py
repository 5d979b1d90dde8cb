"""Streaming generation: an iterator and an async iterator over text pieces.

The library call runs on a worker thread with the library's own text queue as its
callback (``ta_text_queue_push``): the generating thread never enters Python, so the
next token decodes while Python handles the last one. :class:`Stream` takes the text
from the queue on the consuming thread; :class:`AsyncStream` has a second thread take
it and hand it to the event loop (``loop.call_soon_threadsafe``). Stopping early
(``break``, :meth:`close`, cancelling the asyncio task) stops the queue and cancels
the generation through the library's cancel call, then waits until the worker thread
has ended, so the context can be used again right away."""

from __future__ import annotations

import asyncio
import ctypes
import threading
from ctypes import byref, c_bool, c_size_t, c_void_p
from types import TracebackType
from typing import TYPE_CHECKING, Any, AsyncIterator, Callable, Generator, Iterator, List, Optional, Type, Union

from . import _ffi
from .errors import CancelledError, check

if TYPE_CHECKING:
    from .context import Call, GenResult, Raw, _Conversation

__all__ = ["Stream", "AsyncStream"]

#: ``on_text(piece)``: return False to stop.
OnText = Callable[[str], Optional[bool]]

#: How long one wait for text lasts before Python gets the thread back (signals,
#: a stop asked from another thread).
_POLL_MS = 100
_TOO_SMALL = _ffi.DEFINES["TA_ERR_BUFFER_TOO_SMALL"]


class _Done:
    __slots__ = ("result",)

    def __init__(self, result: Optional["GenResult"]) -> None:
        self.result = result


class _State:
    __slots__ = ("result", "parts")

    def __init__(self) -> None:
        self.result: Optional["GenResult"] = None
        self.parts: List[str] = []


class _End:
    """What :meth:`_Run.pop` returns once the generation has ended and all text is taken."""


_END = _End()


class _Run:
    """One generation on a worker thread, its text in a library text queue."""

    def __init__(self, conv: "_Conversation", call: "Call", params: Any) -> None:
        self._conv = conv
        q = c_void_p()
        check(_ffi.text_queue_new(byref(q)))
        self._q = q
        self._buf = ctypes.create_string_buffer(4096)
        self._raw: Optional["Raw"] = None
        self._exc: Optional[BaseException] = None
        self._thread = threading.Thread(target=self._work, args=(call, params), name="tabagent-stream",
                                        daemon=True)
        self._thread.start()

    def _work(self, call: "Call", params: Any) -> None:
        try:
            self._raw = self._conv._raw(call, _ffi.TEXT_QUEUE_PUSH, self._q, params)
        except BaseException as e:  # handed to the consumer
            self._exc = e
        finally:
            _ffi.text_queue_end(self._q)

    def pop(self, timeout_ms: int = _POLL_MS) -> Union[str, None, _End]:
        """The text queued so far (waiting up to ``timeout_ms`` for some), None on a
        timeout, or _END."""
        n, ended = c_size_t(), c_bool()
        while True:
            st = _ffi.text_queue_pop(self._q, self._buf, len(self._buf), timeout_ms, byref(n), byref(ended))
            if st != _TOO_SMALL:
                check(st)
                break
            self._buf = ctypes.create_string_buffer(n.value)
        if ended.value:
            return _END
        return ctypes.string_at(self._buf, n.value).decode("utf-8") if n.value else None

    def result(self, text: str) -> "GenResult":
        """After _END: the call's result (raises its error)."""
        self._thread.join()
        if self._exc is not None:
            raise self._exc
        assert self._raw is not None
        return self._conv._result(text, self._raw)

    def stop(self) -> None:
        """Ask the generation to end (from any thread): no more text is taken, and
        the call is cancelled in case it is still reading its prompt."""
        _ffi.text_queue_stop(self._q)
        self._conv.cancel()

    def close(self, state: _State) -> None:
        """Stop the generation if it runs, wait for its thread, free the queue; a
        result left by a stopped call goes to ``state``."""
        if self._thread.is_alive():
            self.stop()
            while self._thread.is_alive():
                self._conv.cancel()  # repeated: the call may not have reached the library yet
                self._thread.join(0.02)
            if state.result is None and self._raw is not None:
                try:
                    state.result = self._conv._result("".join(state.parts), self._raw)
                except CancelledError as e:
                    state.result = e.result
                except BaseException:
                    pass
        if self._q:
            _ffi.text_queue_free(self._q)
            self._q = c_void_p()


def _pieces(conv: "_Conversation", call: "Call", params: Any, state: _State) -> Generator[str, None, None]:
    # A free function, not a method: the Stream object must not be referenced from the
    # generator, so that dropping the Stream (e.g. ``break``) finalises it at once.
    run = _Run(conv, call, params)
    try:
        while True:
            item = run.pop()
            if item is None:
                continue
            if isinstance(item, _End):
                break
            state.parts.append(item)
            yield item
        try:
            state.result = run.result("".join(state.parts))
        except CancelledError as e:
            state.result = e.result
            raise
    finally:
        run.close(state)


def _pump(conv: "_Conversation", call: "Call", params: Any, stop: threading.Event,
          post: Callable[[Any], None]) -> None:
    """AsyncStream's thread: post each text taken from the queue, then a _Done (with
    the partial result when ``stop`` was set) or the call's exception."""
    state = _State()
    try:
        run = _Run(conv, call, params)
    except BaseException as e:
        post(e)
        return
    try:
        while not stop.is_set():
            item = run.pop()
            if item is None:
                continue
            if isinstance(item, _End):
                try:
                    post(_Done(run.result("".join(state.parts))))
                except CancelledError as e:
                    post(_Done(e.result) if stop.is_set() else e)
                except BaseException as e:
                    post(e)
                return
            state.parts.append(item)
            post(item)
        run.close(state)
        post(_Done(state.result))
    finally:
        run.close(state)


class _Outcome:
    """What a finished or running stream has produced so far (both stream kinds)."""
    _state: _State

    @property
    def result(self) -> Optional["GenResult"]:
        """The generation's result once it has ended, else None."""
        return self._state.result

    @property
    def text(self) -> str:
        """The text delivered so far."""
        return "".join(self._state.parts)


class Stream(_Outcome, Iterator[str]):
    """Text pieces of one generation, as they are produced: ``for piece in ctx.stream(...)``.

    The generation starts at the first ``next()``. When the iteration ends,
    :attr:`result` holds the :class:`GenResult` (``stop_reason`` "cancelled" when it
    was stopped early). Breaking out of the loop, :meth:`close` or the end of a
    ``with`` block stop the generation and wait for it. Errors of the call (e.g.
    :class:`ContextFullError`) are raised from the iteration."""

    def __init__(self, conv: "_Conversation", call: "Call", params: Any) -> None:
        self._state = _State()
        self._gen = _pieces(conv, call, params, self._state)

    def __iter__(self) -> "Stream":
        return self

    def __next__(self) -> str:
        return next(self._gen)

    def close(self) -> None:
        """Stop the generation if it runs and wait until it has ended."""
        self._gen.close()

    def __enter__(self) -> "Stream":
        return self

    def __exit__(self, exc_type: Optional[Type[BaseException]], exc: Optional[BaseException],
                 tb: Optional[TracebackType]) -> None:
        self.close()


class AsyncStream(_Outcome, AsyncIterator[str]):
    """Text pieces of one generation for asyncio: ``async for piece in ctx.astream(...)``.

    The generation runs on a worker thread started at the first ``__anext__``; pieces
    reach the event loop through ``loop.call_soon_threadsafe``, so the loop never
    blocks. Cancelling the consuming task cancels the generation (through the
    library's cancel call) and waits — without blocking the loop — until the worker
    thread has ended, so the context is free again when the task has finished.
    Breaking out of ``async for`` cancels too; ``await stream.aclose()`` (or
    ``async with``) also waits for the end. :attr:`result` holds the
    :class:`GenResult` once it has ended."""

    def __init__(self, conv: "_Conversation", call: "Call", params: Any) -> None:
        self._conv = conv
        self._call = call
        self._params = params
        self._stop = threading.Event()
        self._q: Optional["asyncio.Queue[Any]"] = None
        self._ended: Optional["asyncio.Future[None]"] = None
        self._thread: Optional[threading.Thread] = None
        self._done = False
        self._state = _State()

    def __aiter__(self) -> "AsyncStream":
        return self

    def _begin(self) -> None:
        loop = asyncio.get_running_loop()
        q: "asyncio.Queue[Any]" = asyncio.Queue()
        ended: "asyncio.Future[None]" = loop.create_future()
        self._q, self._ended = q, ended

        def post(item: Any) -> None:
            try:
                loop.call_soon_threadsafe(q.put_nowait, item)
            except RuntimeError:  # the loop is closed: nobody is listening any more
                pass

        def mark_ended() -> None:
            if not ended.done():
                ended.set_result(None)

        def run() -> None:
            try:
                _pump(self._conv, self._call, self._params, self._stop, post)
            finally:
                try:
                    loop.call_soon_threadsafe(mark_ended)
                except RuntimeError:
                    pass

        self._thread = threading.Thread(target=run, name="tabagent-astream", daemon=True)
        self._thread.start()

    async def __anext__(self) -> str:
        if self._done:
            raise StopAsyncIteration
        if self._q is None:
            self._begin()
        assert self._q is not None
        try:
            item = await self._q.get()
        except BaseException:  # asyncio.CancelledError: the consuming task is being cancelled
            try:
                await self._finish()
            except BaseException:  # cancelled again while waiting: the cancel is under way anyway
                pass
            raise
        if isinstance(item, (_Done, BaseException)):  # the worker's last post: it is returning
            self._done = True
            if self._thread is not None:
                self._thread.join()
            if isinstance(item, BaseException):
                raise item
            self._state.result = item.result
            raise StopAsyncIteration
        self._state.parts.append(item)
        return str(item)

    async def _finish(self) -> None:
        """Cancel the generation if it still runs and wait until its thread has ended."""
        self._done = True
        ended, q = self._ended, self._q
        if ended is None or q is None:
            return
        self._stop.set()
        while not ended.done():
            self._conv.cancel()  # repeated: the call may not have reached the library yet
            try:
                await asyncio.wait_for(asyncio.shield(ended), 0.02)
            except asyncio.TimeoutError:
                pass
        if self._thread is not None:
            self._thread.join()  # it has posted its end: only its return is left
        await asyncio.sleep(0)  # let the posts queued before the end arrive
        while not q.empty():
            item = q.get_nowait()
            if isinstance(item, _Done):
                self._state.result = item.result

    async def aclose(self) -> None:
        """Stop the generation if it runs and wait (without blocking the loop) until it has ended."""
        await self._finish()

    async def wait(self) -> Optional["GenResult"]:
        """Consume the remaining pieces and return the result."""
        async for _ in self:
            pass
        return self._state.result

    async def __aenter__(self) -> "AsyncStream":
        return self

    async def __aexit__(self, exc_type: Optional[Type[BaseException]], exc: Optional[BaseException],
                        tb: Optional[TracebackType]) -> None:
        await self._finish()

    def __del__(self) -> None:
        # Dropped while running (e.g. ``break`` out of ``async for``): ask it to stop.
        # The thread ends on its own within a decode step; nothing to wait for here.
        try:
            if self._ended is not None and not self._ended.done():
                self._stop.set()
                self._conv.cancel()
        except Exception:
            pass


