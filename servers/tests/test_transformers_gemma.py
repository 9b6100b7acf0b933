"""The transformers backend on the real Gemma 3 270M weights (dequantised from the GGUF; ~1 min to load)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from kaito_servers.testing import RunningServer


@pytest.fixture(scope="module")
def gemma_hf_server(start_server: Any, gemma_gguf: Path, empty_dir: Path) -> Iterator[RunningServer]:
    """Gemma 3 270M through the transformers backend (GGUF dequantised to fp32); stopped after this module."""
    server: RunningServer = start_server(
        backend="transformers", preset="gemma-3-270m", model=str(gemma_gguf), adapters_dir=empty_dir,
        max_batch_size=4, context_length=512, threads=2,
    )
    yield server
    server.stop()


def test_gemma_on_transformers_chat_and_completion(gemma_hf_server: RunningServer, llama_server: RunningServer) -> None:
    health = httpx.get(gemma_hf_server.base_url + "/health").json()
    assert health["backend"] == "transformers" and health["model"] == "gemma-3-270m"
    r = httpx.post(gemma_hf_server.base_url + "/chat", timeout=120,
                   json={"prompt": "What is Kubernetes?", "generate_kwargs": {"max_new_tokens": 8, "do_sample": False}})
    assert r.status_code == 200, r.text
    assert r.json()["Result"].startswith("What is Kubernetes?")
    client = openai.OpenAI(base_url=gemma_hf_server.base_url + "/v1", api_key="unused", max_retries=0, timeout=120)
    chat = client.chat.completions.create(model="gemma-3-270m", messages=[{"role": "user", "content": "Hi"}], max_tokens=8, temperature=0)
    assert chat.usage is not None and chat.usage.prompt_tokens > 5 and chat.usage.completion_tokens >= 1
    # The same prompt is tokenised identically by the GGUF tokenizer in llama.cpp and in transformers.
    llama_chat = openai.OpenAI(base_url=llama_server.base_url + "/v1", api_key="unused", max_retries=0).chat.completions.create(
        model="gemma-3-270m", messages=[{"role": "user", "content": "Hi"}], max_tokens=8, temperature=0)
    assert llama_chat.usage is not None and llama_chat.usage.prompt_tokens == chat.usage.prompt_tokens
