"""The installed package: where it and its library are, tables read from C, handles as
context managers, streaming, one exception class per status."""

import os
import pickle
import stat
import sysconfig
import threading
from pathlib import Path

import pytest

import tabagent
from tabagent import errors

PROMPT = "The capital of France is"


def test_imported_from_the_installed_wheel():
    """bindings/python/test.sh: tabagent comes from the venv's site-packages and the
    library from the package's _lib folder, not from the source tree."""
    if os.environ.get("TABAGENT_EXPECT_INSTALLED") != "1":
        pytest.skip("not run by bindings/python/test.sh")
    pkg = Path(tabagent.__file__).resolve().parent
    site = {Path(sysconfig.get_paths()[k]).resolve() for k in ("purelib", "platlib")}
    assert pkg.parent in site, (pkg, site)
    lib = Path(tabagent.library_path()).resolve()
    assert lib == pkg / "_lib" / "libtabagent.so"
    probe = pkg / "_lib" / "tabagent-probe"
    assert probe.is_file() and os.stat(probe).st_mode & stat.S_IXUSR, "tabagent-probe must stay executable"
    assert sorted(p.name for p in (pkg / "_lib").glob("libggml-cpu-*.so")), "CPU variants missing"
    assert (Path(tabagent.get_include()) / "tabagent.h").resolve().parent == pkg / "include"
    # The CPU variant was chosen among the package's own copies.
    build = tabagent.Hardware.detect().json["build"]
    assert build["backend_dir"] == str((pkg / "_lib").resolve()), build
    assert build["cpu_variant"], build["cpu_variant_reason"]


def test_versions_and_cpu_variant():
    assert tabagent.__version__ == tabagent.version()
    assert tabagent.llama_version()
    hw = tabagent.Hardware.detect()
    # The library found the CPU variants beside itself and loaded one.
    assert hw.build.cpu_variant, hw.build.cpu_variant_reason


def test_status_tables_come_from_c():
    codes = sorted(errors.ERROR_CLASSES)
    assert codes == list(range(1, codes[-1] + 1))
    for code in codes:
        assert errors.status_text(code) != "unknown status", code
        cls = errors.ERROR_CLASSES[code]
        assert issubclass(cls, tabagent.TabagentError) and cls.STATUS_NAME == errors.status_name(code)
    assert errors.status_text(codes[-1] + 1) == "unknown status"
    assert errors.ERROR_CLASSES[10] is tabagent.BusyError
    # Every class the package declares stands for a status the header knows.
    declared = {c.STATUS_NAME for c in tabagent.TabagentError.__subclasses__()}
    assert declared == {errors.status_name(c) for c in codes}
    e = tabagent.BusyError(10, "x")
    assert pickle.loads(pickle.dumps(e)).status_name == "BUSY"


# ----------------------------------------------------------------------------- handles


def test_context_managers_free_and_closed_handles_raise(model_path, tmp_path):
    with tabagent.Model(model_path, vocab_only=True) as m:
        assert m.info.n_vocab > 1000
    assert m.closed
    m.close()  # a second free is harmless
    with pytest.raises(tabagent.NullArgumentError, match="model is closed"):
        m.info

    with tabagent.Model(model_path) as m, tabagent.Context(m, n_ctx=256, n_threads=2, n_seq_max=2) as c:
        with c.sequence() as s:
            assert s.id in (0, 1)
        assert s.closed
        with pytest.raises(tabagent.NullArgumentError, match="sequence is closed"):
            s.generate("x", max_tokens=1)
        # The slot went back: two can be taken again.
        a, b = c.sequence(), c.sequence()
        a.close(), b.close()
    assert c.closed and m.closed
    with pytest.raises(tabagent.TabagentError) as ei:
        c.generate("x")
    assert ei.value.status_name == "NULL_ARG"

    with tabagent.Cache(tmp_path / "cache") as cache:
        assert cache.stats()["repos"] == 0
    with pytest.raises(tabagent.NullArgumentError):
        cache.stats()


# ----------------------------------------------------------------------------- streaming


def test_stream_greedy_pieces_and_result(ctx):
    want = ctx.generate(PROMPT, temperature=0, max_tokens=12)
    s = ctx.stream(PROMPT, temperature=0, max_tokens=12)
    assert s.result is None
    pieces = list(s)
    assert len(pieces) > 1 and all(pieces)
    assert "".join(pieces) == want.text == s.result.text == s.text
    assert s.result.stop_reason in ("max_tokens", "eog")
    assert s.result.n_generated_tokens == want.n_generated_tokens


def test_chat_stream_result(ctx):
    msgs = [{"role": "user", "content": "Name a colour."}]
    with ctx.chat_stream(msgs, temperature=0, max_tokens=8) as s:
        text = "".join(s)
    assert text and s.result.text == text and s.result.n_prompt_tokens > 5


def test_break_cancels_the_generation(ctx):
    for piece in ctx.stream("Once upon a time, in a land far away,", temperature=0, max_tokens=400):
        assert piece
        break
    # The abandoned stream cancelled and joined its worker: the context is free now.
    assert ctx.generate("Hi", temperature=0, max_tokens=2).n_generated_tokens >= 1

    s = ctx.stream("Once upon a time, in a land far away,", temperature=0, max_tokens=400)
    next(s), next(s)
    s.close()
    assert s.result.stop_reason == "cancelled" and 2 <= s.result.n_generated_tokens < 400


def test_stream_raises_the_call_error(model):
    with tabagent.Context(model, n_ctx=256, n_threads=2) as c:
        with pytest.raises(tabagent.ContextFullError):
            list(c.stream("word " * 1000, max_tokens=4))


# ----------------------------------------------------------------------------- errors


def test_errors_by_status(model, model_path, tmp_path):
    missing = tmp_path / "missing.gguf"
    with pytest.raises(tabagent.NotFoundError) as ei:
        tabagent.Model(missing)
    e = ei.value
    assert isinstance(e, tabagent.TabagentError) and isinstance(e, FileNotFoundError)
    assert (e.status, e.status_name) == (4, "NOT_FOUND") and str(missing) in e.message

    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"not a model at all")
    with pytest.raises(tabagent.BadModelError, match="GGUF") as ei:
        tabagent.Model(junk)
    assert ei.value.status_name == "BAD_MODEL"

    with tabagent.Context(model, n_ctx=256, n_threads=2) as c:
        with pytest.raises(tabagent.ContextFullError, match="n_ctx") as ei:
            c.generate("word " * 1000, max_tokens=4)
        assert ei.value.status_name == "CONTEXT_FULL"
        with pytest.raises(tabagent.InvalidArgumentError, match="top_p") as ei:
            c.generate("x", top_p=0.0)
        assert isinstance(ei.value, ValueError) and ei.value.status_name == "INVALID_ARG"


def test_busy_and_cancelled(model):
    with tabagent.Context(model, n_ctx=256, n_threads=2) as c:
        started, release = threading.Event(), threading.Event()
        caught = []

        def hold(_piece):
            started.set()
            release.wait(10)
            return False

        def run():
            try:
                c.generate("Hi", max_tokens=50, on_text=hold)
            except tabagent.CancelledError as e:
                caught.append(e)

        t = threading.Thread(target=run)
        t.start()
        assert started.wait(30)
        with pytest.raises(tabagent.BusyError) as ei:
            c.generate("x", max_tokens=1)
        assert ei.value.status_name == "BUSY" and ei.value.message
        release.set()
        t.join()
        assert caught and caught[0].status_name == "CANCELLED"
        assert caught[0].result.stop_reason == "cancelled"


def test_check_model_runs_the_probe_beside_the_library(model_path, tmp_path):
    assert tabagent.check_model(model_path)["peak_rss_bytes"] > 1_000_000
    broken = tmp_path / "broken.gguf"
    with open(model_path, "rb") as f:
        broken.write_bytes(f.read(6000))
    with pytest.raises(tabagent.BadModelError):
        tabagent.check_model(broken)
