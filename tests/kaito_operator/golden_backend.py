"""A test double of the ``transformers`` backend's operator half, for manifest-shape tests.

The manifest builders need some ServerSpec; the real one comes from kaito-servers. This
double is registered only in the registries these tests build (never via entry points), so it
never meets the real plugin.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from kaito_core.backends import InferenceBackend, ServerSpec, ServingContext
from kaito_core.plugins import hookimpl
from kaito_core.presets import Preset


class GoldenTransformers(InferenceBackend):
    """Fixed, readable server command so golden files show what the operator adds around it."""

    name = "transformers"
    weight_formats = frozenset({"safetensors"})
    supports_adapters = True
    supports_multi_node = True

    def server_spec(self, preset: Preset, ctx: ServingContext) -> ServerSpec:
        args = [f"--model={preset.source_repo}", f"--served-model-name={ctx.workspace}", f"--nodes={ctx.node_count}"]
        return ServerSpec(command=("python3", "-m", "kaito_servers"), args=tuple(args), env={"HF_HOME": "/tmp/hf"}, shm_gib=2)

    def create_engine(self, preset: Preset | None, settings: Any) -> Any:
        raise NotImplementedError("operator-side test double: it never serves")


@hookimpl
def register_backends(register: Callable[[InferenceBackend], None]) -> None:
    """Register the double."""
    register(GoldenTransformers())
