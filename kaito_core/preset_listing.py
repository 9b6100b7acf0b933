"""What ``kaito presets`` shows: one record per preset, grouped by family, optionally with the
node count and GPUs it needs on an instance type. Pure: presets, backends and an instance type
in, records out (the CLI renders them)."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

from kaito_core.backends import InferenceBackend
from kaito_core.fit import DEFAULT_CONTEXT_TOKENS, GPU_MEMORY_UTILIZATION, RUNTIME_GIB_PER_GPU, WEIGHT_OVERHEAD, plan_nodes
from pydantic import ConfigDict
from pydantic.alias_generators import to_camel

from kaito_core.presets import FrozenModel, Preset
from kaito_core.sku import InstanceType


class PresetFit(FrozenModel):
    """How a preset lands on one instance type (camelCase in JSON)."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)

    instance_type: str
    """The instance type asked about."""
    nodes: int
    """Nodes needed when the model may be split across nodes (0: does not fit at all)."""
    gpus: int
    """GPUs the model needs in all (0 for CPU serving or when nothing fits)."""
    gpus_per_node: int
    """GPUs on one node of this instance type."""
    verdict: str
    """``fits``, ``multi-node`` (the preset's default backend cannot split it), or ``no``."""
    note: str = ""
    """Why, when it is not a plain fit."""


class PresetSummary(FrozenModel):
    """One line of ``kaito presets``."""

    name: str
    family: str
    distribution: str
    backends: tuple[str, ...]
    weights_gib: float
    context: int
    min_gpu_gib: float | None
    """Memory one GPU must have to serve the preset alone (None: no GPU needed)."""
    tuning: tuple[str, ...]
    gated: bool
    deprecated: bool
    fit: PresetFit | None = None


def min_gpu_gib(preset: Preset) -> float | None:
    """GPU memory that serves ``preset`` on one GPU: (weights ×1.02 + 2.3 GiB + KV for 2048 tokens) / 84 %."""
    if not preset.requires_gpu:
        return None
    need = preset.weights_gib * WEIGHT_OVERHEAD + RUNTIME_GIB_PER_GPU + preset.kv_cache_gib(min(DEFAULT_CONTEXT_TOKENS, preset.context_length))
    return round(need / GPU_MEMORY_UTILIZATION, 2)


def fit_on(preset: Preset, instance: InstanceType, backend: InferenceBackend | None) -> PresetFit:
    """Nodes and GPUs for ``preset`` on ``instance``: as if the model may be split across nodes
    (upstream's vLLM estimator), with the verdict of the preset's default ``backend``."""
    plan = plan_nodes(preset, instance, backend=backend, suggest=False)
    if plan.fits:
        return PresetFit(instance_type=instance.sku, nodes=plan.nodes, gpus=plan.gpus_needed, gpus_per_node=plan.gpus_per_node, verdict="fits")
    if plan.memory == "gpu" and plan.gpus_needed and instance.gpu_count:
        nodes = math.ceil(plan.gpus_needed / instance.gpu_count)
        who = backend.name if backend is not None else preset.default_backend
        return PresetFit(
            instance_type=instance.sku,
            nodes=nodes,
            gpus=plan.gpus_needed,
            gpus_per_node=instance.gpu_count,
            verdict="multi-node",
            note=f"needs {nodes} nodes; backend {who} cannot split a model across nodes",
        )
    return PresetFit(instance_type=instance.sku, nodes=0, gpus=0, gpus_per_node=instance.gpu_count, verdict="no", note=plan.explanation)


def summarize(
    presets: Mapping[str, Preset],
    distribution_of: Callable[[str], str],
    backend_of: Callable[[str], InferenceBackend | None],
    instance: InstanceType | None = None,
) -> dict[str, list[PresetSummary]]:
    """Presets grouped by family (families and names sorted), each with its fit on ``instance``."""
    groups: dict[str, list[PresetSummary]] = {}
    for name in sorted(presets):
        preset = presets[name]
        fit = fit_on(preset, instance, backend_of(preset.default_backend)) if instance is not None else None
        groups.setdefault(preset.family, []).append(
            PresetSummary(
                name=name,
                family=preset.family,
                distribution=distribution_of(name),
                backends=tuple(preset.backends),
                weights_gib=preset.weights_gib,
                context=preset.context_length,
                min_gpu_gib=min_gpu_gib(preset),
                tuning=tuple(preset.tuning.methods) if preset.tuning else (),
                gated=preset.download_auth_required,
                deprecated=preset.deprecated,
                fit=fit,
            )
        )
    return dict(sorted(groups.items()))
