"""Model.from_pretrained through the library's cache, against the hub imitation on
127.0.0.1 (tests/hub/fake_hub.py)."""

import pytest

import tabagent
from fake_hub import FakeHub

REPO = "test/SmolLM2-135M-Instruct-GGUF"
FILE = "smollm2-135m-instruct-q4_1.gguf"


@pytest.fixture(scope="module")
def hub(model_path):
    with open(model_path, "rb") as f:
        data = f.read()
    h = FakeHub(repos={REPO: {FILE: data, "README.md": b"# test\n"},
                       "test/two-variants": {"m-Q4_0.gguf": data[:4096], "m-Q8_0.gguf": data[:8192]}})
    h.start()
    yield h, len(data)
    h.stop()


@pytest.fixture
def env(hub, monkeypatch):
    h, _ = hub
    monkeypatch.setenv("HF_ENDPOINT", h.url)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    return h


def test_downloads_with_progress_then_loads_from_the_cache(hub, env, tmp_path):
    _, size = hub
    seen = []
    with tabagent.Model.from_pretrained(REPO, cache_dir=tmp_path, progress=lambda f, d, t: seen.append((f, d, t))) as m:
        assert m.info.quantization == "Q4_1"
    assert seen and seen[-1] == (FILE, size, size)
    assert all(b[1] >= a[1] for a, b in zip(seen, seen[1:]))
    assert (tmp_path / "models--test--SmolLM2-135M-Instruct-GGUF").is_dir()
    env.clear_log()
    with tabagent.Model.from_pretrained(REPO, "Q4_1", cache_dir=tmp_path, progress=False) as m:
        with tabagent.Context(m, n_ctx=256, n_threads=2) as c:
            assert c.generate("Hi", temperature=0, max_tokens=2).n_generated_tokens >= 1
    assert not [r for r in env.requests if r.server == "cdn"], "the second load must not download again"


def test_tqdm_bar_by_default(hub, env, tmp_path, capfd):
    pytest.importorskip("tqdm")
    tabagent.Model.from_pretrained(REPO, cache_dir=tmp_path, vocab_only=True).close()
    err = capfd.readouterr().err
    assert FILE in err, err  # the bar names the file (on stderr)


def test_cancel_and_errors(hub, env, tmp_path):
    with pytest.raises(tabagent.CancelledError):
        tabagent.Model.from_pretrained(REPO, cache_dir=tmp_path, progress=lambda f, d, t: d < 1_000_000)
    with pytest.raises(tabagent.NotFoundError):
        tabagent.Model.from_pretrained(REPO, "Q8_0", cache_dir=tmp_path, progress=False)
    with pytest.raises(tabagent.InvalidArgumentError, match="Q4_0.*Q8_0|Q8_0.*Q4_0"):
        tabagent.Model.from_pretrained("test/two-variants", cache_dir=tmp_path, progress=False)
    # An exception raised by the progress function comes back as itself.
    with pytest.raises(KeyError):
        tabagent.Model.from_pretrained(REPO, cache_dir=tmp_path, progress=lambda f, d, t: {}["boom"])
