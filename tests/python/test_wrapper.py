"""pytest suite driving libtabagent through the tabagent package (bindings/python)."""

import os
import sys
import threading
import time

import pytest

import tabagent

MODEL = os.environ.get(
    "TABAGENT_TEST_MODEL", os.path.expanduser("~/.cache/tabagent/models/SmolLM2-135M-Instruct.Q4_1.gguf")
)


@pytest.fixture(scope="module")
def model():
    assert os.path.exists(MODEL), f"test model missing at {MODEL}: run scripts/fetch-model.sh"
    with tabagent.Model(MODEL) as m:
        yield m


@pytest.fixture
def ctx(model):
    with tabagent.Context(model, n_ctx=1024, n_threads=2) as c:
        yield c


def test_versions():
    assert tabagent.version().count(".") == 2
    assert tabagent.llama_version()
    assert "CPU" in tabagent.system_info()


def test_info_and_metadata(model):
    info = model.info
    assert info.architecture == "llama"
    assert info.quantization == "Q4_1"
    assert (info.n_vocab, info.n_layer, info.n_embd, info.n_ctx_train) == (49152, 30, 576, 8192)
    assert info.file_size == os.path.getsize(MODEL)
    assert "im_start" in info.chat_template
    assert model.meta("llama.block_count") == "30"
    assert model.meta("no.such.key") is None
    doc = model.json()
    assert doc["n_layer"] == 30 and doc["gguf"]["metadata"]["general.architecture"] == "llama"


def test_tokenize_round_trip(model):
    text = "Hello, wörld! 你好 🙂"
    toks = model.tokenize(text, add_special=False)
    assert model.detokenize(toks) == text
    assert b"".join(model.token_to_piece(t) for t in toks).decode() == text
    assert len(model.tokenize("<|im_start|>", add_special=False, parse_special=True)) == 1


def test_generate_is_deterministic_when_greedy(ctx):
    a = ctx.generate("The capital of France is", temperature=0, max_tokens=12)
    b = ctx.generate("The capital of France is", temperature=0, max_tokens=12)
    assert a.text and a.text == b.text
    assert b.n_reused_tokens == b.n_prompt_tokens - 1
    assert a.stop_reason in ("max_tokens", "eog")


def test_seeded_sampling_repeats(ctx):
    a = ctx.generate("Once upon a time", temperature=1.0, seed=42, max_tokens=20)
    b = ctx.generate("Once upon a time", temperature=1.0, seed=42, max_tokens=20)
    assert a.text == b.text


def test_stream_yields_the_same_text(ctx):
    full = ctx.generate("The capital of France is", temperature=0, max_tokens=16).text
    pieces = list(ctx.stream("The capital of France is", temperature=0, max_tokens=16))
    assert len(pieces) > 1
    assert "".join(pieces) == full


def test_breaking_out_of_a_stream_stops_generation(ctx):
    it = ctx.stream("Once upon a time, in a land far away,", temperature=0, max_tokens=200)
    first = next(it)
    assert first
    it.close()  # stops generation and joins the worker
    r = ctx.generate("Hi", temperature=0, max_tokens=2)  # context usable again
    assert r.n_generated_tokens >= 1


def test_on_text_false_raises_cancelled_with_result(ctx):
    seen = []
    with pytest.raises(tabagent.CancelledError) as ei:
        ctx.generate("Once upon a time, in a land far away,", temperature=0, max_tokens=64,
                     on_text=lambda s: seen.append(s) or len(seen) < 2)
    assert len(seen) == 2
    assert ei.value.result.stop_reason == "cancelled"
    assert ei.value.status == 8 and ei.value.message


def test_exception_in_callback_propagates(ctx):
    def boom(_s):
        raise RuntimeError("from callback")

    with pytest.raises(RuntimeError, match="from callback"):
        ctx.generate("Hello", max_tokens=4, on_text=boom)


def test_stop_strings(ctx):
    full = ctx.generate("Count: 1, 2, 3, 4,", temperature=0, max_tokens=20).text
    stop = full.strip()[2:5]
    r = ctx.generate("Count: 1, 2, 3, 4,", temperature=0, max_tokens=20, stop=[stop])
    assert r.stop_reason == "stop_string"
    assert stop not in r.text and full.startswith(r.text)


def test_chat_second_turn_reuses_history(ctx):
    msgs = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Name a colour."}]
    r1 = ctx.chat(msgs, temperature=0, max_tokens=16)
    msgs += [{"role": "assistant", "content": r1.text}, {"role": "user", "content": "Another one?"}]
    r2 = ctx.chat(msgs, temperature=0, max_tokens=8)
    assert r2.n_reused_tokens >= r1.n_prompt_tokens
    assert r2.n_prompt_tokens - r2.n_reused_tokens < 40


def test_grammar(ctx):
    r = ctx.generate("Is water wet? Answer:", temperature=0, max_tokens=8, grammar='root ::= "yes" | "no"')
    assert r.text in ("yes", "no")


def test_cancel_from_another_thread(model):
    with tabagent.Context(model, n_ctx=4096, n_threads=2) as c:
        long = "The quick brown fox jumps over the lazy dog. " * 300
        threading.Timer(0.15, c.cancel).start()
        with pytest.raises(tabagent.CancelledError):
            c.generate(long, temperature=0, max_tokens=100)


def test_busy_when_used_from_two_threads(model):
    with tabagent.Context(model, n_ctx=512, n_threads=1) as c:
        started, release = threading.Event(), threading.Event()

        def slow(_s):
            started.set()
            release.wait(10)
            return False

        t = threading.Thread(target=lambda: pytest.raises(tabagent.CancelledError, c.generate, "Hi",
                                                          max_tokens=50, on_text=slow))
        t.start()
        assert started.wait(10)
        with pytest.raises(tabagent.BusyError):
            c.generate("x", max_tokens=1)
        release.set()
        t.join()


def test_context_full(model):
    with tabagent.Context(model, n_ctx=256) as c:
        with pytest.raises(tabagent.ContextFullError, match="n_ctx"):
            c.generate("word " * 1000, max_tokens=4)


def test_bad_files_raise_with_path(tmp_path):
    p = tmp_path / "junk.gguf"
    p.write_bytes(b"not a model at all")
    with pytest.raises(tabagent.BadModelError) as ei:
        tabagent.Model(p)
    assert str(p) in ei.value.message and "GGUF" in ei.value.message
    with pytest.raises(tabagent.NotFoundError):
        tabagent.Model(tmp_path / "missing.gguf")
    with open(MODEL, "rb") as f:
        head = f.read(50000)
    t = tmp_path / "truncated.gguf"
    t.write_bytes(head)
    with pytest.raises(tabagent.BadModelError, match="truncated"):
        tabagent.Model(t)


def test_from_buffer_and_model_outlives_handle():
    with open(MODEL, "rb") as f:
        data = f.read()
    m = tabagent.Model.from_buffer(data)
    del data
    c = tabagent.Context(m, n_ctx=256, n_threads=2)
    m.close()  # the context keeps the model alive
    assert c.generate("Hello", temperature=0, max_tokens=3).n_generated_tokens >= 1
    c.close()


def test_progress_callback_cancels_load():
    calls = []
    with pytest.raises(tabagent.CancelledError):
        tabagent.Model(MODEL, progress=lambda f: calls.append(f) or False)
    assert calls


def test_log_callback_receives_lines():
    lines = []
    tabagent.set_log_callback(lambda lvl, text: lines.append((lvl, text)), tabagent.LOG_INFO)
    try:
        tabagent.Model(MODEL, vocab_only=True).close()
    finally:
        tabagent.set_log_callback(None)
    assert lines and all(lvl >= tabagent.LOG_INFO for lvl, _ in lines)


def test_two_contexts_two_threads(model):
    out = {}

    def run(i):
        with tabagent.Context(model, n_ctx=256, n_threads=1) as c:
            out[i] = c.generate("The three primary colours are", temperature=0, max_tokens=10).text

    ts = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    [t.start() for t in ts]
    [t.join() for t in ts]
    assert out[0] and out[0] == out[1]


def test_unknown_parameter_is_a_type_error(ctx):
    with pytest.raises(TypeError):
        ctx.generate("x", temprature=0.1)


def test_invalid_parameter_value(ctx):
    with pytest.raises(tabagent.InvalidArgumentError, match="top_p"):
        ctx.generate("x", top_p=0.0)


def test_closed_handles_raise(model):
    c = tabagent.Context(model, n_ctx=256)
    c.close()
    with pytest.raises(tabagent.TabagentError):
        c.generate("x")
    time.sleep(0)


def test_hardware_matches_proc_cpuinfo():
    hw = tabagent.Hardware.detect()
    assert hw.cpu.logical_cores == os.cpu_count()
    assert 1 <= hw.cpu.recommended_threads <= hw.cpu.logical_cores
    try:
        flags = next(l for l in open("/proc/cpuinfo") if l.startswith("flags")).split()
    except (OSError, StopIteration):
        flags = None
    if flags is not None:
        for f in ("avx", "avx2", "fma", "sse4_2"):
            assert (f in hw.cpu.features) == (f in flags), f
    assert hw.memory.total_bytes > 0
    assert hw.build.warning is None
    assert hw.gpus == ()  # no GPU drivers on the test machines
    assert hw.json["cpu"]["vendor"] == hw.cpu.vendor


def test_fit(model):
    a = tabagent.Hardware.fit(MODEL, 512)
    b = tabagent.Hardware.fit(model, 4096)
    assert b.kv_bytes == 8 * a.kv_bytes and a.weights_bytes == b.weights_bytes
    assert a.fits_ram and a.recommended_gpu_layers == 0
    with pytest.raises(tabagent.NotFoundError):
        tabagent.Hardware.fit("/nonexistent.gguf")


def test_check_model_in_a_child(tmp_path):
    report = tabagent.check_model(MODEL)
    assert report["elapsed_ms"] > 0 and report["peak_rss_bytes"] > 1_000_000
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(open(MODEL, "rb").read(6000))
    with pytest.raises(tabagent.BadModelError) as e:
        tabagent.check_model(broken)
    assert str(broken) in str(e.value)
    with tabagent.Model(MODEL, check_in_child=True, vocab_only=True) as m:
        assert m.info.n_vocab > 1000
    with pytest.raises(tabagent.BadModelError):
        tabagent.Model(broken, check_in_child=True)


def test_chat_with_a_template_named_for_the_call(ctx):
    msgs = [{"role": "user", "content": "Hi"}]
    r = ctx.chat(msgs, temperature=0, max_tokens=3, chat_template="chatml")
    assert r.n_generated_tokens <= 3
    with pytest.raises(tabagent.InvalidArgumentError):
        ctx.generate("x", temperature=-1.0, max_tokens=1)


def test_chat_template_with_tools_and_variables(model, ctx):
    msgs = [
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": None,
         "tool_calls": [{"id": "c1", "type": "function",
                         "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]},
        {"role": "tool", "name": "get_weather", "tool_call_id": "c1", "content": "18°C"},
    ]
    tmpl = ("{% for m in messages %}<{{ m.role }}{{ ':' ~ m.name if m.name is defined }}>"
            "{{ m.tool_calls[0].function.arguments|tojson if m.tool_calls else m.content }}{% endfor %}"
            "|{{ tools|length }}|{{ enable_thinking }}")
    out = model.apply_chat_template(msgs, template=tmpl, tools=[{"name": "get_weather"}],
                                    variables={"enable_thinking": True})
    assert out == '<user>Weather in Paris?<assistant>{"city": "Paris"}<tool:get_weather>18°C|1|True'
    # The model's own template (ChatML with SmolLM2's default system prompt).
    own = model.apply_chat_template(msgs[:1])
    assert own.startswith("<|im_start|>system\nYou are a helpful AI assistant named SmolLM")
    assert own.endswith("<|im_start|>user\nWeather in Paris?<|im_end|>\n<|im_start|>assistant\n")
    with pytest.raises(tabagent.InvalidArgumentError, match="alternate"):
        model.apply_chat_template(msgs, template="{{ raise_exception('roles must alternate') }}")
    r = ctx.chat(msgs[:1], temperature=0, max_tokens=2, chat_template=tmpl, chat_tools=[], chat_vars={"x": 1})
    assert r.n_prompt_tokens > 0


def test_chat_on_a_file_without_a_template():
    with open(MODEL, "rb") as f:
        data = f.read()
    # Rename the key in a copy: same length, so the file stays valid.
    data = data.replace(b"tokenizer.chat_template", b"tokenizer.chat_templatX", 1)
    with tabagent.Model.from_buffer(data) as m, tabagent.Context(m, n_ctx=256, n_threads=2) as c:
        assert m.info.chat_template is None
        msgs = [{"role": "user", "content": "What is 2+2?"}]
        with pytest.raises(tabagent.TabagentError, match="no chat template"):
            c.chat(msgs, max_tokens=4)
        r = c.chat(msgs, temperature=0, max_tokens=4, chat_template="chatml")
        assert r.n_generated_tokens > 0 and r.text


# ----------------------------------------------------------------------------- sequences


def test_four_questions_at_once_on_one_context(model):
    qs = ["What is 2+2?", "Name a colour.", "What is the sun?", "Say hello."]
    chats = [[{"role": "user", "content": q}] for q in qs]
    with tabagent.Context(model, n_ctx=4096, n_seq_max=4, n_threads=2) as ctx:
        assert ctx.n_seq_max == 4 and ctx.n_ctx_seq == 1024
        got = dict(ctx.generate_many(chats, max_tokens=16, temperature=0))
        assert sorted(got) == [0, 1, 2, 3]
        assert all(r.text and r.n_generated_tokens > 0 for r in got.values())
        # The sequences were freed: all four can be claimed again.
        seqs = [ctx.sequence() for _ in range(4)]
        with pytest.raises(tabagent.BusyError):
            ctx.sequence()
        for s in seqs:
            s.close()


def test_sequences_from_threads_and_busy_per_sequence(model):
    with tabagent.Context(model, n_ctx=2048, n_seq_max=2, n_threads=2) as ctx:
        a, b = ctx.sequence(), ctx.sequence()
        assert {a.id, b.id} == {0, 1}
        started, release = threading.Event(), threading.Event()
        errors = []

        def hold(piece):
            started.set()
            release.wait(10)
            return False

        def run():
            try:
                a.generate("Once upon a time", on_text=hold, max_tokens=32, temperature=0)
            except tabagent.CancelledError:
                pass
            except BaseException as e:
                errors.append(e)

        t = threading.Thread(target=run)
        t.start()
        assert started.wait(30)
        with pytest.raises(tabagent.BusyError):
            a.generate("x", max_tokens=1)
        # The other sequence runs meanwhile.
        assert b.generate("Hello", max_tokens=4, temperature=0).n_generated_tokens > 0
        release.set()
        t.join()
        assert not errors


def test_state_round_trip_in_a_fresh_process(model, tmp_path):
    import subprocess
    path = str(tmp_path / "conv.kv")
    prompt = "<|im_start|>user\n" + "Remember the number 42. " * 30 + "<|im_end|>\n<|im_start|>assistant\n"
    with tabagent.Context(model, n_ctx=2048, n_threads=2) as ctx:
        ctx.generate(prompt, max_tokens=1, temperature=0)
        n = ctx.save_state(path)
        assert n > 100
        want = ctx.generate(prompt + "Sure.", max_tokens=8, temperature=0)
    code = (
        "import sys, tabagent\n"
        "m = tabagent.Model(sys.argv[1]); c = tabagent.Context(m, n_ctx=2048, n_threads=2)\n"
        "print(c.load_state(sys.argv[2]))\n"
        "r = c.generate(sys.argv[3], max_tokens=8, temperature=0)\n"
        "print(r.n_reused_tokens); print(repr(r.text))\n"
    )
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(tabagent.__file__)))
    out = subprocess.run([sys.executable, "-c", code, MODEL, path, prompt + "Sure."], capture_output=True,
                         text=True, env=env, check=True).stdout.splitlines()
    assert int(out[0]) == n
    assert int(out[1]) >= n - 1
    assert out[2] == repr(want.text)
    # Damaged: refused, and the sequence is left empty.
    data = open(path, "rb").read()
    open(path, "wb").write(data[: len(data) // 2])
    with tabagent.Context(model, n_ctx=2048, n_threads=2) as ctx:
        s = ctx.sequence()
        s.generate("Hi", max_tokens=2)
        with pytest.raises(tabagent.InvalidArgumentError):
            s.load_state(path)
        assert s.n_cached == 0


# ----------------------------------------------------------------------------- embeddings

EMBED_MODEL = os.path.join(
    os.environ.get("TABAGENT_MODEL_DIR", os.path.expanduser("~/.cache/tabagent/models")),
    "all-MiniLM-L6-v2", "all-MiniLM-L6-v2.F32.gguf")


def test_model_embed_returns_numpy_or_lists_and_ranks():
    import numpy as np
    assert os.path.exists(EMBED_MODEL), "run scripts/fetch-embed-model.sh"
    texts = ["A man is playing a guitar.", "Someone strums an acoustic guitar.",
             "The stock market fell sharply."]
    with tabagent.Model(EMBED_MODEL) as m:
        v = m.embed(texts, n_threads=2)
        assert isinstance(v, np.ndarray) and v.shape == (3, 384) and v.dtype == np.float32
        assert np.allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-4)
        sims = v @ v.T
        assert sims[0, 1] > sims[0, 2] + 0.2
        lists = m.embed(texts[:1], n_threads=2, as_numpy=False)
        assert isinstance(lists, list) and len(lists[0]) == 384
        assert abs(float(np.dot(lists[0], v[0])) - 1.0) < 1e-4
        with tabagent.Context(m, n_ctx=32, n_threads=2, embeddings=True) as c:
            assert c.pooling == "mean" and c.embed_dim == 384
            with pytest.raises(tabagent.ContextFullError, match=r"texts\[0\]"):
                c.embed(["word " * 100])
            assert c.embed(["word " * 100], truncate=True).shape == (1, 384)
            with pytest.raises(tabagent.InvalidArgumentError, match="embeddings"):
                c.generate("x", max_tokens=1)
        with pytest.raises(ValueError):
            tabagent.Context(m, embeddings=True, pooling="median")


def test_model_embed_cls_pooling_matches_the_reference():
    # The first token's ([CLS]) final hidden state, from the NumPy reference of
    # tests/embed/reference.py (the same forward pass the Rust tests check against).
    import importlib.util
    import numpy as np
    spec = importlib.util.spec_from_file_location(
        "embed_reference", os.path.join(os.path.dirname(__file__), "..", "embed", "reference.py"))
    reference = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(reference)
    texts = ["A man is playing a guitar.", "The stock market fell sharply."]
    enc = reference.SentenceEncoder(reference.Path(EMBED_MODEL).parent, pool="cls")
    want = np.stack([enc.encode(t)[0] for t in texts])
    with tabagent.Model(EMBED_MODEL) as m:
        cls = m.embed(texts, pooling="cls", n_threads=2)
        mean = m.embed(texts, pooling="mean", n_threads=2)
        assert cls.shape == (2, 384)
        assert np.allclose(np.linalg.norm(cls, axis=1), 1.0, atol=1e-4)
        for i in range(len(texts)):
            assert float(cls[i] @ want[i]) >= 0.99, i
            assert float(cls[i] @ mean[i]) < 0.9, i
        with tabagent.Context(m, n_threads=2, embeddings=True, pooling="cls") as c:
            assert c.pooling == "cls" and c.embed_dim == 384
        with pytest.raises(tabagent.UnsupportedError, match="classification head"):
            tabagent.Context(m, n_threads=2, embeddings=True, pooling="rank")


def test_embed_on_a_generation_context_is_refused(ctx):
    with pytest.raises(tabagent.InvalidArgumentError, match="not created for embeddings"):
        ctx.embed(["x"])
