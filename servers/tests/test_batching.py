"""Concurrency: batched greedy outputs equal sequential ones, back-pressure, cancellation."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from kaito_servers.engine.base import SamplingParams
from kaito_servers.testing import RunningServer, model_of

PROMPTS = [
    "What is Kubernetes?",
    "Explain what a Pod is.",
    "The capital of France is",
    "def fibonacci(n):",
    "Once upon a time, in a cluster far away,",
    "KAITO automates",
    "Hello, world! How are you today?",
    "A list of container runtimes:",
]


async def _complete(client: httpx.AsyncClient, model: str, prompt: str, max_tokens: int) -> str:
    r = await client.post("/v1/completions", json={"model": model, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0})
    assert r.status_code == 200, r.text
    return str(r.json()["choices"][0]["text"])


def _mean_batch(server: RunningServer, before: tuple[float, float]) -> float:
    steps = _metric(server, "kaito_server_engine_steps") - before[0]
    seqs = _metric(server, "kaito_server_engine_sequence_steps") - before[1]
    return seqs / steps if steps else 0.0


def _counters(server: RunningServer) -> tuple[float, float]:
    return _metric(server, "kaito_server_engine_steps"), _metric(server, "kaito_server_engine_sequence_steps")


def _sequential_and_concurrent(server: RunningServer, max_tokens: int) -> tuple[list[str], list[str], float, float]:
    """Outputs of the 8 prompts one at a time and all at once, and the mean batch of each phase."""
    model = model_of(server)

    async def run() -> tuple[list[str], list[str], float, float]:
        async with httpx.AsyncClient(base_url=server.base_url, timeout=300) as client:
            c0 = _counters(server)
            sequential = [await _complete(client, model, p, max_tokens) for p in PROMPTS]
            batch_seq = _mean_batch(server, c0)
            c1 = _counters(server)
            concurrent = await asyncio.gather(*(_complete(client, model, p, max_tokens) for p in PROMPTS))
            batch_conc = _mean_batch(server, c1)
        return sequential, list(concurrent), batch_seq, batch_conc

    return asyncio.run(run())


def test_llamacpp_deterministic_8_concurrent_greedy_equal_8_sequential(llama_deterministic_server: RunningServer) -> None:
    sequential, concurrent, batch_seq, batch_conc = _sequential_and_concurrent(llama_deterministic_server, 24)
    assert concurrent == sequential
    assert all(sequential)
    assert batch_seq == 1.0 and batch_conc > 3, (batch_seq, batch_conc)


def test_llamacpp_batches_every_step_and_every_stream_completes(llama_server: RunningServer) -> None:
    """Default (batched) mode: one llama_decode per step for all streams (the mean batch shows it).
    Outputs are valid continuations; they may differ from lone runs at near-ties (see
    engine/llamacpp.py), so only structure is checked here. Speed is measured in bench/serving."""
    model = model_of(llama_server)

    async def run() -> tuple[float, list[dict[str, Any]]]:
        async with httpx.AsyncClient(base_url=llama_server.base_url, timeout=300) as client:
            body = {"model": model, "max_tokens": 32, "temperature": 0, "min_tokens": 32}
            c0 = _counters(llama_server)
            rs = await asyncio.gather(*(client.post("/v1/completions", json=body | {"prompt": p}) for p in PROMPTS))
            return _mean_batch(llama_server, c0), [r.json() for r in rs]

    mean_batch, bodies = asyncio.run(run())
    for body in bodies:
        assert body["usage"]["completion_tokens"] == 32, body
        assert body["choices"][0]["text"]
    assert mean_batch > 5, mean_batch


def test_transformers_8_concurrent_greedy_equal_8_sequential(phi3_server: RunningServer) -> None:
    sequential, concurrent, batch_seq, batch_conc = _sequential_and_concurrent(phi3_server, 32)
    assert concurrent == sequential
    assert batch_seq == 1.0 and batch_conc > 3, (batch_seq, batch_conc)


def _metric(server: RunningServer, name: str, labels: str = "") -> float:
    text = httpx.get(server.base_url + "/metrics").text
    for line in text.splitlines():
        if line.startswith(name + labels + " ") or (not labels and line.startswith(name + " ")):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_full_queue_answers_429_with_retry_after(start_server: Any, tiny_phi3: Path, empty_dir: Path) -> None:
    server = start_server(backend="transformers", model=str(tiny_phi3), served_model_name="tiny", adapters_dir=empty_dir,
                          max_batch_size=1, max_queue=0, threads=1)
    body = {"prompt": "hello", "return_full_text": False,
            "generate_kwargs": {"do_sample": False, "min_new_tokens": 400, "max_new_tokens": 400}}

    async def run() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=server.base_url, timeout=120) as client:
            first = asyncio.create_task(client.post("/chat", json=body))
            while _metric(server, "kaito_server_running_sequences") < 1:
                await asyncio.sleep(0.005)
            second = await client.post("/v1/completions", json={"model": "tiny", "prompt": "hi", "max_tokens": 2})
            return [await first, second]

    first, second = asyncio.run(run())
    assert first.status_code == 200
    assert second.status_code == 429
    assert int(second.headers["Retry-After"]) >= 1
    assert second.json()["error"]["type"] == "rate_limit_error"
    assert "queue" in second.json()["error"]["message"]
    assert _metric(server, "kaito_server_requests_rejected_total") >= 1
    ok = httpx.post(server.base_url + "/v1/completions", json={"model": "tiny", "prompt": "hi", "max_tokens": 2})
    assert ok.status_code == 200


def test_client_disconnect_stops_generation(llama_server: RunningServer) -> None:
    before = _metric(llama_server, "kaito_server_generations_finished_total", '{reason="cancelled"}')
    model = model_of(llama_server)
    with httpx.Client(base_url=llama_server.base_url, timeout=60) as client:
        with client.stream("POST", "/v1/completions", json={"model": model, "prompt": "Write a long story:", "max_tokens": 400,
                                                            "temperature": 0, "stream": True}) as response:
            assert response.status_code == 200
            for line in response.iter_lines():
                if line.startswith("data: {"):
                    break
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if _metric(llama_server, "kaito_server_generations_finished_total", '{reason="cancelled"}') > before and \
                _metric(llama_server, "kaito_server_running_sequences") == 0:
            break
        time.sleep(0.05)
    assert _metric(llama_server, "kaito_server_generations_finished_total", '{reason="cancelled"}') > before
    assert _metric(llama_server, "kaito_server_running_sequences") == 0


def test_non_streaming_disconnect_stops_generation(llama_server: RunningServer) -> None:
    before = _metric(llama_server, "kaito_server_generations_finished_total", '{reason="cancelled"}')
    model = model_of(llama_server)
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(llama_server.base_url + "/v1/completions",
                   json={"model": model, "prompt": "Write a long story:", "max_tokens": 450, "temperature": 0}, timeout=0.5)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and _metric(llama_server, "kaito_server_running_sequences") > 0:
        time.sleep(0.05)
    assert _metric(llama_server, "kaito_server_running_sequences") == 0
    assert _metric(llama_server, "kaito_server_generations_finished_total", '{reason="cancelled"}') > before


def test_min_tokens_suppresses_eos(phi3_server: RunningServer) -> None:
    engine = phi3_server.app.state.server.engine

    async def run() -> int:
        params = SamplingParams(max_tokens=30, temperature=0.0, min_tokens=30)
        last = None
        async for event in engine.generate(engine.tokenize("hi"), params, request_id="t"):
            last = event
        assert last is not None and last.finish_reason == "length"
        return int(last.completion_tokens)

    assert asyncio.run(run()) == 30


def test_metrics_exposes_the_serving_counters(llama_server: RunningServer) -> None:
    httpx.post(llama_server.base_url + "/chat", json={"prompt": "hi", "generate_kwargs": {"max_new_tokens": 3}})
    text = httpx.get(llama_server.base_url + "/metrics").text
    for name in ("kaito_server_requests_total", "kaito_server_request_errors_total", "kaito_server_request_duration_seconds",
                 "kaito_server_time_to_first_token_seconds", "kaito_server_generated_tokens_total",
                 "kaito_server_generation_tokens_per_second", "kaito_server_request_tokens_per_second",
                 "kaito_server_queue_depth", "kaito_server_running_sequences", "kaito_server_adapters_loaded",
                 "kaito_server_ready"):
        assert name in text, name
    assert _metric(llama_server, "kaito_server_ready") == 1.0
    assert _metric(llama_server, "kaito_server_generated_tokens_total") > 0
