"""Streaming generation: an iterator and an async iterator over text pieces.

Both run the library call on a worker thread (ctypes releases the GIL during the call;
the text callback takes it back for each piece) and hand the pieces over: through a
queue for :class:`Stream`, through ``loop.call_soon_threadsafe`` for
:class:`AsyncStream`. Stopping early (``break``, :meth:`close`, cancelling the asyncio
task) cancels the generation through the library's cancel call and waits until the
worker thread has ended, so the context can be used again right away."""

from __future__ import annotations

import asyncio
import queue
import threading
from types import TracebackType
from typing import TYPE_CHECKING, Any, AsyncIterator, Callable, Generator, Iterator, List, Optional, Type

from .errors import CancelledError

if TYPE_CHECKING:
    from .context import GenResult, _Conversation

__all__ = ["Stream", "AsyncStream"]

#: ``on_text(piece)``: return False to stop.
OnText = Callable[[str], Optional[bool]]
#: Runs the generation with the given on_text and returns its result.
Start = Callable[[OnText], "GenResult"]


class _Done:
    __slots__ = ("result",)

    def __init__(self, result: Optional["GenResult"]) -> None:
        self.result = result


class _State:
    __slots__ = ("result", "parts")

    def __init__(self) -> None:
        self.result: Optional["GenResult"] = None
        self.parts: List[str] = []


def _worker(start: Start, stop: threading.Event, post: Callable[[Any], None]) -> None:
    """The worker thread's body: run the call, post each piece, then a _Done or the exception."""

    def on_text(s: str) -> bool:
        post(s)
        return not stop.is_set()

    try:
        post(_Done(start(on_text)))
    except CancelledError as e:
        # Stopped because the consumer asked: a normal end with the partial result.
        post(_Done(e.result) if stop.is_set() else e)
    except BaseException as e:  # handed to the consumer
        post(e)


def _pieces(conv: "_Conversation", start: Start, state: _State) -> Generator[str, None, None]:
    # A free function, not a method: the Stream object must not be referenced from the
    # generator, so that dropping the Stream (e.g. ``break``) finalises it at once.
    q: "queue.SimpleQueue[Any]" = queue.SimpleQueue()
    stop = threading.Event()
    t = threading.Thread(target=_worker, args=(start, stop, q.put), name="tabagent-stream", daemon=True)
    t.start()
    try:
        while True:
            item = q.get()
            if isinstance(item, _Done):
                state.result = item.result
                return
            if isinstance(item, BaseException):
                raise item
            state.parts.append(item)
            yield item
    finally:
        if t.is_alive():  # the consumer stopped early: cancel and wait for the thread
            stop.set()
            while t.is_alive():
                conv.cancel()  # repeated: the call may not have reached the library yet
                t.join(0.02)
            while not q.empty():
                item = q.get_nowait()
                if isinstance(item, _Done):
                    state.result = item.result


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

    def __init__(self, conv: "_Conversation", start: Start) -> None:
        self._state = _State()
        self._gen = _pieces(conv, start, self._state)

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

    def __init__(self, conv: "_Conversation", start: Start) -> None:
        self._conv = conv
        self._start = start
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
                _worker(self._start, self._stop, post)
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


