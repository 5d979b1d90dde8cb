"""The `ollama` Python client against `tabagent serve`."""

import os

import ollama
import pytest
from conftest import API_KEY, CHAT_NAME, EMBED_MODEL, EMBED_NAME

MSG = [{"role": "user", "content": "What is the capital of France? Answer in one word."}]
OPTS = {"temperature": 0, "num_predict": 12}


@pytest.fixture(scope="module")
def client(server):
    return ollama.Client(host=server.url, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=60)


def test_tags(client):
    names = [m.model for m in client.list().models]
    assert CHAT_NAME in names


def test_show(client):
    r = client.show(CHAT_NAME)
    assert "im_start" in r.template
    assert r.details.format == "gguf" and r.details.quantization_level
    assert r.modelinfo["general.architecture"] == "llama"


def test_chat_not_streaming_and_streaming(client):
    r = client.chat(model=CHAT_NAME, messages=MSG, options=OPTS, stream=False)
    assert r.done and "Paris" in r.message.content
    assert r.prompt_eval_count > 5 and 1 <= r.eval_count <= 12
    parts = list(client.chat(model=CHAT_NAME, messages=MSG, options=OPTS, stream=True))
    assert parts[-1].done and not any(p.done for p in parts[:-1])
    assert "".join(p.message.content for p in parts) == r.message.content
    assert parts[-1].done_reason == r.done_reason


def test_generate_not_streaming_and_streaming(client):
    r = client.generate(model=CHAT_NAME, prompt="What is the capital of France? Answer in one word.",
                        options=OPTS, stream=False)
    assert r.done and "Paris" in r.response
    parts = list(client.generate(model=CHAT_NAME, prompt="What is the capital of France? Answer in one word.",
                                 options=OPTS, stream=True))
    assert "".join(p.response for p in parts) == r.response
    raw = client.generate(model=CHAT_NAME, prompt="The capital of France is", raw=True,
                          options={"temperature": 0, "num_predict": 3})
    assert raw.eval_count == 3 and raw.done_reason == "length"


@pytest.mark.skipif(not os.path.exists(EMBED_MODEL), reason="embedding model missing")
def test_embed(client):
    r = client.embed(model=EMBED_NAME, input=["A cat sits on the mat.", "Stock markets fell."])
    assert len(r.embeddings) == 2 and len(r.embeddings[0]) == 384
    one = client.embeddings(model=EMBED_NAME, prompt="A cat sits on the mat.")
    assert max(abs(a - b) for a, b in zip(one.embedding, r.embeddings[0])) < 1e-6


def test_unknown_model(client):
    with pytest.raises(ollama.ResponseError) as ei:
        client.chat(model="no-such-model", messages=MSG)
    assert ei.value.status_code == 404


def test_bad_key(server):
    c = ollama.Client(host=server.url, headers={"Authorization": "Bearer nope"})
    with pytest.raises(ollama.ResponseError) as ei:
        c.list()
    assert ei.value.status_code == 401
