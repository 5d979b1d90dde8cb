"""The official `openai` Python SDK against `tabagent serve`."""

import os

import openai
import pytest
from conftest import API_KEY, CHAT_NAME, EMBED_MODEL, EMBED_NAME

MSG = [{"role": "user", "content": "What is the capital of France? Answer in one word."}]


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key=API_KEY, max_retries=0, timeout=60)


def test_models_list(client):
    ids = [m.id for m in client.models.list()]
    assert CHAT_NAME in ids


def test_chat_not_streaming(client):
    r = client.chat.completions.create(model=CHAT_NAME, messages=MSG, max_tokens=12, temperature=0)
    assert r.object == "chat.completion"
    assert r.choices[0].message.role == "assistant"
    assert "Paris" in r.choices[0].message.content
    assert r.choices[0].finish_reason in ("stop", "length")
    assert r.usage.prompt_tokens > 5 and 1 <= r.usage.completion_tokens <= 12
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens


def test_chat_streaming_equals_not_streaming(client):
    whole = client.chat.completions.create(model=CHAT_NAME, messages=MSG, max_tokens=12, temperature=0)
    stream = client.chat.completions.create(
        model=CHAT_NAME, messages=MSG, max_tokens=12, temperature=0, stream=True,
        stream_options={"include_usage": True},
    )
    text, finish, usage = "", None, None
    for chunk in stream:
        if chunk.usage:
            usage = chunk.usage
        for c in chunk.choices:
            text += c.delta.content or ""
            finish = c.finish_reason or finish
    assert text == whole.choices[0].message.content
    assert finish == whole.choices[0].finish_reason
    assert usage.completion_tokens == whole.usage.completion_tokens


def test_max_tokens_gives_length(client):
    r = client.chat.completions.create(
        model=CHAT_NAME, messages=[{"role": "user", "content": "Write a long story about a dragon."}],
        max_tokens=3, temperature=0,
    )
    assert r.choices[0].finish_reason == "length"
    assert r.usage.completion_tokens == 3


def test_stop_string(client):
    r = client.chat.completions.create(model=CHAT_NAME, messages=MSG, max_tokens=12, temperature=0, stop=["Paris"])
    assert "Paris" not in r.choices[0].message.content
    assert r.choices[0].finish_reason == "stop"


def test_seeded_sampling_repeats(client):
    kw = dict(model=CHAT_NAME, messages=MSG, max_tokens=8, temperature=1.0, seed=42)
    a = client.chat.completions.create(**kw).choices[0].message.content
    b = client.chat.completions.create(**kw).choices[0].message.content
    assert a == b


def test_completions(client):
    r = client.completions.create(model=CHAT_NAME, prompt="The capital of France is", max_tokens=5, temperature=0)
    assert r.object == "text_completion"
    assert len(r.choices[0].text) > 0
    s = client.completions.create(model=CHAT_NAME, prompt="The capital of France is", max_tokens=5, temperature=0,
                                  stream=True)
    assert "".join(c.choices[0].text for c in s) == r.choices[0].text


@pytest.mark.skipif(not os.path.exists(EMBED_MODEL), reason="embedding model missing")
def test_embeddings(client):
    r = client.embeddings.create(model=EMBED_NAME, input=["A cat sits on the mat.", "A kitten rests on a rug.",
                                                         "Stock markets fell sharply today."])
    vs = [d.embedding for d in r.data]
    assert len(vs) == 3 and len(vs[0]) == 384
    dot = lambda a, b: sum(x * y for x, y in zip(a, b))  # noqa: E731
    assert abs(dot(vs[0], vs[0]) - 1) < 1e-3
    assert dot(vs[0], vs[1]) > dot(vs[0], vs[2])
    assert r.usage.prompt_tokens > 0
    f = client.embeddings.create(model=EMBED_NAME, input="A cat sits on the mat.", encoding_format="float")
    assert max(abs(a - b) for a, b in zip(f.data[0].embedding, vs[0])) < 1e-6


def test_unknown_model_is_not_found(client):
    with pytest.raises(openai.NotFoundError) as ei:
        client.chat.completions.create(model="no-such-model", messages=MSG, max_tokens=2)
    assert ei.value.body["code"] == "model_not_found"


def test_bad_key_is_authentication_error(server):
    bad = openai.OpenAI(base_url=server.url + "/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.models.list()


@pytest.mark.parametrize("kw,param", [
    (dict(messages=[]), "messages"),
    (dict(messages=MSG, temperature=5), "temperature"),
    (dict(messages=MSG, max_tokens=0), "max_tokens"),
    (dict(messages=[{"role": "wizard", "content": "hi"}]), "messages[0].role"),
    (dict(messages=MSG, stop=[""]), "stop"),
])
def test_invalid_body_is_bad_request(client, kw, param):
    with pytest.raises(openai.BadRequestError) as ei:
        client.chat.completions.create(model=CHAT_NAME, **kw)
    err = ei.value.body
    assert err["param"] == param and err["type"] == "invalid_request_error" and err["message"]


def test_raw_error_bodies(server):
    import json
    import urllib.error
    import urllib.request

    def post(path, data, key=API_KEY):
        req = urllib.request.Request(server.url + path, data=data, method="POST",
                                     headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

    st, body = post("/v1/chat/completions", b"{not json")
    assert st == 400 and set(body["error"]) == {"message", "type", "param", "code"}
    st, body = post("/v1/chat/completions", b"x" * (5 * 1024 * 1024))
    assert st == 413 and "error" in body
    st, body = post("/api/chat", b"{}", key="wrong")
    assert st == 401 and isinstance(body["error"], str)
    st, body = post("/v1/nope", b"{}")
    assert st == 404
