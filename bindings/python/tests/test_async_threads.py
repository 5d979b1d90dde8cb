"""asyncio streaming and cancellation; sequences of one context from several threads."""

import asyncio
import threading
import time

import pytest

import tabagent

PROMPT = "The capital of France is"
LONG = "Once upon a time, in a land far away,"


def stream_threads():
    return [t for t in threading.enumerate() if t.name.startswith("tabagent-")]


def test_astream_yields_the_greedy_text(ctx):
    want = ctx.generate(PROMPT, temperature=0, max_tokens=12).text

    async def main():
        ticks = 0
        done = asyncio.Event()

        async def ticker():  # the loop keeps running while the library generates
            nonlocal ticks
            while not done.is_set():
                ticks += 1
                await asyncio.sleep(0.001)

        t = asyncio.ensure_future(ticker())
        s = ctx.astream(PROMPT, temperature=0, max_tokens=12)
        pieces = [p async for p in s]
        done.set()
        await t
        return pieces, s.result, ticks

    pieces, result, ticks = asyncio.run(main())
    assert len(pieces) > 1 and "".join(pieces) == want == result.text
    assert ticks > 1


def test_achat_stream(ctx):
    msgs = [{"role": "user", "content": "Say hello."}]
    want = ctx.chat(msgs, temperature=0, max_tokens=8).text

    async def main():
        s = ctx.achat_stream(msgs, temperature=0, max_tokens=8)
        return "".join([p async for p in s]), s.result

    text, result = asyncio.run(main())
    assert text == want and result.n_generated_tokens > 0


def test_cancelling_the_task_cancels_the_generation(ctx):
    async def main():
        s = ctx.astream(LONG, temperature=0, max_tokens=400)
        got = []
        two = asyncio.Event()

        async def consume():
            async for p in s:
                got.append(p)
                if len(got) == 2:
                    two.set()

        task = asyncio.ensure_future(consume())
        await asyncio.wait_for(two.wait(), 60)
        t0 = time.monotonic()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        # The task ended only once the generation had stopped, within a decode step or so.
        return s, got, time.monotonic() - t0

    s, got, waited = asyncio.run(main())
    assert waited < 5
    assert s.result is not None and s.result.stop_reason == "cancelled"
    assert len(got) >= 2 and s.result.n_generated_tokens < 400
    assert not stream_threads()
    # The context is free right away.
    assert ctx.generate("Hi", temperature=0, max_tokens=2).n_generated_tokens >= 1


def test_leaving_async_with_cancels(ctx):
    async def main():
        async with ctx.astream(LONG, temperature=0, max_tokens=400) as s:
            async for _p in s:
                break
        return s

    s = asyncio.run(main())
    assert s.result.stop_reason == "cancelled"
    assert not stream_threads()
    assert ctx.generate("Hi", temperature=0, max_tokens=2).n_generated_tokens >= 1


def test_astream_raises_the_call_error(model):
    async def main():
        with tabagent.Context(model, n_ctx=256, n_threads=2) as c:
            async for _p in c.astream("word " * 1000, max_tokens=4):
                pass

    with pytest.raises(tabagent.ContextFullError):
        asyncio.run(main())


def test_sequences_from_several_threads_at_once(model):
    """Three Python threads drive three sequences of one context at the same time: the
    GIL is released during the library calls, so their generations overlap (the
    library batches their decodes)."""
    n = 3
    # Raw continuations (no chat turn that could end after a few tokens).
    prompts = ["Once upon a time, a fox", "The history of Rome began", "In the year 2050, cities"]
    with tabagent.Context(model, n_ctx=256 * n, n_seq_max=n, n_threads=2) as ctx:
        seqs = [ctx.sequence() for _ in range(n)]
        assert len({s.id for s in seqs}) == n
        barrier = threading.Barrier(n)
        spans = {}
        results = {}
        errors = []

        def run(i):
            try:
                barrier.wait(30)
                times = []
                s = seqs[i].stream(prompts[i], temperature=0, max_tokens=24)
                for _piece in s:
                    times.append(time.monotonic())
                spans[i] = (times[0], times[-1])
                results[i] = s.result
            except BaseException as e:
                errors.append(e)

        threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert not errors, errors
        assert all(results[i].text and results[i].n_generated_tokens > 1 for i in range(n))
        # Every generation produced its first piece before any other had finished.
        assert max(a for a, _ in spans.values()) < min(b for _, b in spans.values()), spans
        # A sequence still runs one call at a time.
        release = threading.Event()
        started = threading.Event()

        def hold(_p):
            started.set()
            release.wait(10)
            return False

        t = threading.Thread(target=lambda: pytest.raises(tabagent.CancelledError, seqs[0].generate, "Hi",
                                                          max_tokens=20, on_text=hold))
        t.start()
        assert started.wait(30)
        with pytest.raises(tabagent.BusyError):
            seqs[0].generate("x", max_tokens=1)
        assert seqs[1].generate("Hello", temperature=0, max_tokens=3).n_generated_tokens > 0
        release.set()
        t.join()
        for s in seqs:
            s.close()
