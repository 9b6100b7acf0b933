"""Inference backends: the interface a backend plugin implements.

A backend has two halves that must agree, so they live in one plugin object:

* the operator half (:meth:`InferenceBackend.server_spec`): the container command, port,
  health endpoint and environment of the inference pod, computed from a preset and the
  workspace; it must not import any ML library, because the operator image has none;
* the server half (:meth:`InferenceBackend.create_engine`): builds the engine inside the
  inference pod (or on a developer's machine); it imports torch / llama_cpp lazily, inside the
  method.
"""

from __future__ import annotations

import abc
from typing import Any

from pydantic import Field

from kaito_core.presets import FrozenModel, Preset
from kaito_core.serving import ADAPTERS_DIR, HEALTH_PATH, SERVER_PORT

__all__ = ["AdapterRef", "InferenceBackend", "ServerSpec", "ServingContext", "ADAPTERS_DIR", "SERVER_PORT"]



class AdapterRef(FrozenModel):
    """An adapter as the server sees it: a directory name under ADAPTERS_DIR and a strength."""

    name: str
    """The adapter's name (inference.adapters[].source.name); also its directory name."""
    strength: float = Field(default=1.0, ge=0.0, le=1.0)
    """Weight of the adapter in [0, 1]; 0 reproduces the base model."""


class ServingContext(FrozenModel):
    """What the operator knows about a deployment when it asks a backend for its server spec."""

    workspace: str
    """The workspace name (also the served model name unless the backend says otherwise)."""
    namespace: str
    """The workspace namespace."""
    gpus_per_node: int = 0
    """GPUs on each node; 0 for CPU nodes."""
    node_count: int = 1
    """How many nodes (pods) the model spans."""
    adapters: tuple[AdapterRef, ...] = ()
    """Adapters to apply, with their strengths."""


class ServerSpec(FrozenModel):
    """How to run the inference server container for one preset on one backend."""

    command: tuple[str, ...]
    """The container command (entrypoint)."""
    args: tuple[str, ...] = ()
    """The container arguments."""
    env: dict[str, str] = Field(default_factory=dict)
    """Environment variables."""
    port: int = SERVER_PORT
    """The port the server listens on."""
    health_path: str = HEALTH_PATH
    """HTTP path that answers 200 once the model is loaded (readiness/liveness/startup probes)."""
    image: str | None = None
    """The container image, when the backend needs a specific one (else the operator's default)."""
    shm_gib: float | None = None
    """Size of /dev/shm to mount; None lets the operator choose."""


class InferenceBackend(abc.ABC):
    """An inference backend (transformers, llama.cpp, ...), registered by a plugin."""

    name: str
    """Unique backend name, e.g. ``transformers``; users pick it with annotation kaito.sh/runtime."""
    description: str = ""
    """One line for `kaito plugins`."""
    weight_formats: frozenset[str] = frozenset()
    """Weight formats the backend loads (safetensors, gguf)."""
    supports_adapters: bool = False
    """Whether LoRA adapters (with strength) can be applied."""
    supports_multi_node: bool = False
    """Whether one model can span several nodes."""
    supports_cpu: bool = False
    """Whether the backend can serve on nodes without a GPU."""

    def unsupported_reasons(self, preset: Preset, *, adapters: int = 0, nodes: int = 1, gpu: bool = True) -> list[str]:
        """Why this backend cannot serve ``preset`` in the given setting; empty when it can."""
        reasons: list[str] = []
        if self.name not in preset.backends:
            offered = ", ".join(preset.backends) or "none"
            reasons.append(f"preset {preset.name} does not list backend {self.name} (it offers: {offered})")
        if preset.weight_format not in self.weight_formats:
            reasons.append(f"backend {self.name} cannot load {preset.weight_format} weights")
        if adapters and not self.supports_adapters:
            reasons.append(f"backend {self.name} does not support LoRA adapters")
        if nodes > 1 and not self.supports_multi_node:
            reasons.append(f"backend {self.name} cannot split a model across {nodes} nodes")
        if not gpu and not self.supports_cpu:
            reasons.append(f"backend {self.name} needs GPU nodes")
        return reasons

    @abc.abstractmethod
    def server_spec(self, preset: Preset, ctx: ServingContext) -> ServerSpec:
        """The container command, args, env and port that serve ``preset`` (operator half)."""

    @abc.abstractmethod
    def create_engine(self, preset: Preset | None, settings: Any) -> Any:
        """Build the inference engine in this process (server half; imports ML libraries lazily)."""
