"""The OpenAI-compatible API, driven by the official ``openai`` client, on both backends."""

from __future__ import annotations

import httpx
import openai
import pytest

from kaito_servers.testing import RunningServer, model_of


def client_for(server: RunningServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url + "/v1", api_key="unused", max_retries=0, timeout=120)


def test_models_lists_the_served_model(any_server: RunningServer) -> None:
    models = client_for(any_server).models.list()
    assert len(models.data) == 1
    assert models.data[0].object == "model"
    assert models.data[0].owned_by == "kaito"


def test_chat_completion(any_server: RunningServer) -> None:
    client = client_for(any_server)
    model = model_of(any_server)
    resp = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "What is Kubernetes?"}], max_tokens=12, temperature=0
    )
    assert resp.object == "chat.completion"
    assert resp.model == model
    choice = resp.choices[0]
    assert choice.message.role == "assistant"
    assert isinstance(choice.message.content, str)
    assert choice.finish_reason in ("stop", "length")
    assert resp.usage is not None
    assert resp.usage.prompt_tokens > 3
    assert 1 <= resp.usage.completion_tokens <= 12
    assert resp.usage.total_tokens == resp.usage.prompt_tokens + resp.usage.completion_tokens
    if choice.finish_reason == "length":
        assert resp.usage.completion_tokens == 12


def test_chat_streaming_matches_non_streaming(any_server: RunningServer) -> None:
    client = client_for(any_server)
    model = model_of(any_server)
    messages = [{"role": "user", "content": "Tell me about pods."}]
    whole = client.chat.completions.create(model=model, messages=messages, max_tokens=16, temperature=0)
    stream = client.chat.completions.create(
        model=model, messages=messages, max_tokens=16, temperature=0, stream=True, stream_options={"include_usage": True}
    )
    pieces: list[str] = []
    finish = None
    usage = None
    chunks = 0
    for chunk in stream:
        chunks += 1
        assert chunk.object == "chat.completion.chunk"
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            if choice.delta.content:
                pieces.append(choice.delta.content)
            if choice.finish_reason:
                finish = choice.finish_reason
    assert chunks >= 3
    assert "".join(pieces) == whole.choices[0].message.content
    assert finish == whole.choices[0].finish_reason
    assert usage is not None and whole.usage is not None
    assert usage.completion_tokens == whole.usage.completion_tokens


def test_text_completion_and_echo(any_server: RunningServer) -> None:
    client = client_for(any_server)
    model = model_of(any_server)
    plain = client.completions.create(model=model, prompt="Kubernetes is", max_tokens=8, temperature=0)
    assert plain.object == "text_completion"
    assert plain.usage is not None and 1 <= plain.usage.completion_tokens <= 8
    echoed = client.completions.create(model=model, prompt="Kubernetes is", max_tokens=8, temperature=0, echo=True)
    assert echoed.choices[0].text == "Kubernetes is" + plain.choices[0].text


def test_completion_streaming(any_server: RunningServer) -> None:
    client = client_for(any_server)
    model = model_of(any_server)
    whole = client.completions.create(model=model, prompt="The quick brown fox", max_tokens=10, temperature=0)
    text = "".join(c.choices[0].text for c in client.completions.create(
        model=model, prompt="The quick brown fox", max_tokens=10, temperature=0, stream=True) if c.choices)
    assert text == whole.choices[0].text


def test_stop_sequence_cuts_the_text(any_server: RunningServer) -> None:
    client = client_for(any_server)
    model = model_of(any_server)
    base = client.completions.create(model=model, prompt="Hello, world!", max_tokens=24, temperature=0).choices[0].text
    assert len(base.strip()) >= 4, base
    stop = base.strip()[2:4]
    cut = client.completions.create(model=model, prompt="Hello, world!", max_tokens=24, temperature=0, stop=[stop])
    assert cut.choices[0].finish_reason == "stop"
    assert stop not in cut.choices[0].text
    assert base.startswith(cut.choices[0].text)


def test_seeded_sampling_is_reproducible(any_server: RunningServer) -> None:
    client = client_for(any_server)
    model = model_of(any_server)
    args = dict(model=model, prompt="Once upon a time", max_tokens=16, temperature=1.0, top_p=0.9, seed=1234)
    first = client.completions.create(**args).choices[0].text  # type: ignore[call-overload]
    second = client.completions.create(**args).choices[0].text  # type: ignore[call-overload]
    assert first == second


def test_unknown_model_is_404_in_openai_envelope(any_server: RunningServer) -> None:
    client = client_for(any_server)
    with pytest.raises(openai.NotFoundError) as info:
        client.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "hi"}], max_tokens=4)
    body = info.value.body
    assert isinstance(body, dict)
    assert body["code"] == "model_not_found"
    assert "no-such-model" in body["message"]


def test_empty_messages_is_400(any_server: RunningServer) -> None:
    client = client_for(any_server)
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model=model_of(any_server), messages=[], max_tokens=4)
    assert "messages" in str(info.value)


def test_wrong_types_are_400_naming_the_field(any_server: RunningServer) -> None:
    r = httpx.post(any_server.base_url + "/v1/chat/completions",
                   json={"model": model_of(any_server), "messages": [{"role": "user", "content": "hi"}], "max_tokens": "many"})
    assert r.status_code == 400
    err = r.json()["error"]
    assert err["type"] == "invalid_request_error"
    assert "max_tokens" in err["message"]


def test_malformed_json_is_400(any_server: RunningServer) -> None:
    r = httpx.post(any_server.base_url + "/v1/chat/completions", content=b'{"model": "x", "messages": [',
                   headers={"Content-Type": "application/json"})
    assert r.status_code == 400
    assert "JSON" in r.json()["error"]["message"]


def test_oversized_prompt_is_400_naming_the_limit(any_server: RunningServer) -> None:
    client = client_for(any_server)
    limit = httpx.get(any_server.base_url + "/health").json()["context_length"]
    with pytest.raises(openai.BadRequestError) as info:
        client.completions.create(model=model_of(any_server), prompt="word " * (limit * 2), max_tokens=4)
    body = info.value.body
    assert isinstance(body, dict)
    assert body["code"] == "context_length_exceeded"
    assert str(limit) in body["message"]
    with pytest.raises(openai.BadRequestError) as info:
        client.completions.create(model=model_of(any_server), prompt="hello", max_tokens=limit + 10)
    assert "max_tokens" in str(info.value) or str(limit) in str(info.value)


def test_unsupported_options_are_400(any_server: RunningServer) -> None:
    client = client_for(any_server)
    model = model_of(any_server)
    with pytest.raises(openai.BadRequestError, match="n > 1"):
        client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}], n=2, max_tokens=4)
    with pytest.raises(openai.BadRequestError, match="tool"):
        client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}], max_tokens=4,
                                       tools=[{"type": "function", "function": {"name": "f", "parameters": {}}}])


def test_server_keeps_serving_after_errors(any_server: RunningServer) -> None:
    for body in (b"not json", b"[]", b'{"messages": 3}', b"{}"):
        r = httpx.post(any_server.base_url + "/v1/chat/completions", content=body, headers={"Content-Type": "application/json"})
        assert 400 <= r.status_code < 500, (body, r.status_code, r.text)
    resp = client_for(any_server).completions.create(model=model_of(any_server), prompt="still there?", max_tokens=3)
    assert resp.usage is not None and resp.usage.completion_tokens >= 1
