"""The classic KAITO ``POST /chat`` contract (text-generation pipeline options) and its errors."""

from __future__ import annotations

import httpx

from kaito_servers.testing import RunningServer


def chat(server: RunningServer, body: object, **kwargs: object) -> httpx.Response:
    return httpx.post(server.base_url + "/chat", json=body, timeout=120, **kwargs)  # type: ignore[arg-type]


def test_prompt_without_generate_kwargs_returns_full_text(any_server: RunningServer) -> None:
    r = chat(any_server, {"prompt": "What is Kubernetes?", "generate_kwargs": {"max_length": 24}})
    assert r.status_code == 200, r.text
    result = r.json()["Result"]
    assert result.startswith("What is Kubernetes?")
    assert len(result) > len("What is Kubernetes?")


def test_plain_prompt_uses_upstream_defaults(llama_server: RunningServer) -> None:
    r = chat(llama_server, {"prompt": "What is Kubernetes?"})
    assert r.status_code == 200, r.text
    assert set(r.json()) == {"Result"}
    assert r.json()["Result"].startswith("What is Kubernetes?")


def test_generate_kwargs_greedy_is_deterministic(any_server: RunningServer) -> None:
    body = {"prompt": "Kubernetes is", "return_full_text": False,
            "generate_kwargs": {"do_sample": False, "max_new_tokens": 12}}
    first = chat(any_server, body).json()["Result"]
    second = chat(any_server, body).json()["Result"]
    assert first == second
    assert not first.startswith("Kubernetes is")


def test_generate_kwargs_sampling_options(any_server: RunningServer) -> None:
    body = {"prompt": "Once upon a time", "return_full_text": False,
            "generate_kwargs": {"do_sample": True, "temperature": 0.8, "top_k": 20, "top_p": 0.9, "typical_p": 0.95,
                                "repetition_penalty": 1.2, "max_new_tokens": 10, "seed": 7, "early_stopping": True,
                                "some_future_option": 1}}
    r = chat(any_server, body)
    assert r.status_code == 200, r.text
    assert r.json()["Result"] == chat(any_server, body).json()["Result"]


def test_prefix_and_max_length_semantics(any_server: RunningServer) -> None:
    r = chat(any_server, {"prompt": "Pods", "prefix": "Kubernetes: ", "generate_kwargs": {"max_new_tokens": 5, "do_sample": False}})
    assert r.status_code == 200
    assert r.json()["Result"].startswith("Pods")


def test_messages_give_the_assistant_reply(llama_server: RunningServer) -> None:
    r = chat(llama_server, {"messages": [{"role": "user", "content": "What is Kubernetes?"}],
                            "generate_kwargs": {"max_new_tokens": 12, "do_sample": False}})
    assert r.status_code == 200, r.text
    assert isinstance(r.json()["Result"], str)


def test_clean_up_tokenization_spaces() -> None:
    from kaito_servers.app import clean_up_tokenization

    assert clean_up_tokenization("Hello , world . It 's fine !") == "Hello, world. It's fine!"


def test_missing_prompt_is_the_upstream_400(any_server: RunningServer) -> None:
    r = chat(any_server, {"generate_kwargs": {"max_length": 10}})
    assert r.status_code == 400
    assert r.json()["detail"] == "Text generation parameter prompt required"
    assert r.json()["error"]["param"] == "prompt"


def test_bad_inputs_are_4xx_with_clear_messages(any_server: RunningServer) -> None:
    cases: list[tuple[bytes, str]] = [
        (b"{not json", "JSON"),
        (b'{"prompt": 42}', "prompt"),
        (b'{"prompt": "x", "generate_kwargs": {"max_length": "long"}}', "generate_kwargs.max_length"),
        (b'{"prompt": "x", "generate_kwargs": {"num_beams": 4}}', "num_beams"),
        (b'{"prompt": "x", "handle_long_generation": "cut"}', "handle_long_generation"),
        (b'{"messages": []}', "prompt"),
        (b'{"prompt": "one two three four five six", "generate_kwargs": {"max_length": 2}}', "max_length"),
    ]
    for body, needle in cases:
        r = httpx.post(any_server.base_url + "/chat", content=body, headers={"Content-Type": "application/json"})
        assert 400 <= r.status_code < 500, (body, r.status_code, r.text)
        assert needle in r.json()["detail"], (body, r.json())
    assert chat(any_server, {"prompt": "ok", "generate_kwargs": {"max_new_tokens": 2}}).status_code == 200


def test_oversized_prompt_names_the_limit_and_hole_keeps_the_end(any_server: RunningServer) -> None:
    limit = httpx.get(any_server.base_url + "/health").json()["context_length"]
    long_prompt = "kubernetes pod " * limit
    r = chat(any_server, {"prompt": long_prompt, "generate_kwargs": {"max_new_tokens": 4}})
    assert r.status_code == 400
    assert str(limit) in r.json()["detail"]
    r = chat(any_server, {"prompt": long_prompt, "handle_long_generation": "hole", "return_full_text": False,
                          "generate_kwargs": {"max_new_tokens": 4, "do_sample": False}})
    assert r.status_code == 200, r.text
