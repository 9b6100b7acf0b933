"""Test doubles for what other packages provide: an inference backend plugin shaped like the
servers package's transformers backend (operator half only; no ML library)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from kaito_core.backends import InferenceBackend, ServerSpec, ServingContext
from kaito_core.plugins import hookimpl
from kaito_core.presets import Preset


class FakeTransformers(InferenceBackend):
    """Serves safetensors models with adapters on one node, like the transformers backend."""

    name = "transformers"
    description = "fake transformers backend (tests)"
    weight_formats = frozenset({"safetensors"})
    supports_adapters = True
    supports_multi_node = False

    def server_spec(self, preset: Preset, ctx: ServingContext) -> ServerSpec:
        return ServerSpec(command=("python", "-m", "fake_server"), args=(f"--model={preset.source_repo}",))

    def create_engine(self, preset: Preset | None, settings: Any) -> Any:
        raise RuntimeError("FakeBackend only feeds validation tests; nothing here serves a model")


class FakeMultiNode(FakeTransformers):
    """A backend that can split a model across nodes (like vLLM with Ray)."""

    name = "multinode"
    supports_multi_node = True
    supports_adapters = False


class BackendsPlugin:
    """A plugin object registering the fake backends."""

    def __init__(self, *backends: InferenceBackend) -> None:
        self.backends = backends or (FakeTransformers(),)

    @hookimpl
    def register_backends(self, register: Callable[[InferenceBackend], None]) -> None:
        for backend in self.backends:
            register(backend)
