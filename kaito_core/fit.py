"""Does a preset fit an instance type, and on how many nodes?

The memory model (documented, deliberately simple, the same numbers in every message):

Inference on GPUs follows upstream KAITO's node estimator
(``pkg/workspace/estimator/nodesestimator``, ``generator/model-sku-calculation.md``)::

    need   = weights × 1.02  +  2.3 GiB runtime per GPU  +  KV cache for T tokens
    usable = GPU memory × 0.84                       (the share the server may allocate)
    T      = min(max_model_len or 2048, the model's context length)
    KV     = T × 2 (K and V) × kv_heads × head_dim × layers × 2 bytes

The model (weights and KV) is split evenly over the GPUs it uses, each GPU also pays the
2.3 GiB runtime (CUDA context, activations). The smallest number of GPUs ``g`` with
``(weights × 1.02 + KV) / g + 2.3 <= per-GPU memory × 0.84`` is needed; nodes =
``ceil(g / GPUs per node)``. A backend that cannot split a model across nodes
(``InferenceBackend.supports_multi_node`` false, e.g. transformers) needs one node that holds
it; the node count is then ``resource.count`` (replicas). A backend that can split uses
``max(count, nodes needed)``.

Fine-tuning (LoRA/QLoRA, one process per GPU as ``accelerate launch`` does, so every GPU holds
the whole model)::

    need = base weights + 2.3 GiB runtime + 0.15 × bf16 weights (adapter, optimizer, activations)
    base weights = bf16 weights × 1.02 (LoRA) or × 0.28 (QLoRA: 4-bit NF4 plus quantization
                   constants and the layers kept in 16 bit)

CPU inference (presets with ``requires_gpu`` false on a size without GPUs) checks system
memory instead: ``weights × 1.02 + 1 GiB runtime + KV <= RAM × 0.80``.
"""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import Field

from kaito_core.backends import InferenceBackend
from kaito_core.presets import FrozenModel, Preset
from kaito_core.sku import InstanceType, instance_types

GPU_MEMORY_UTILIZATION = 0.84
"""Share of each GPU's memory the server may allocate (vLLM's --gpu-memory-utilization in upstream)."""
WEIGHT_OVERHEAD = 1.02
"""Loaded weights are ~2 % larger than the safetensors files."""
RUNTIME_GIB_PER_GPU = 2.3
"""CUDA context, non-torch memory and activations per GPU (0.6 + 1.7 GiB upstream)."""
DEFAULT_CONTEXT_TOKENS = 2048
"""Tokens of KV cache planned for when no max_model_len is given (upstream's default)."""
QLORA_WEIGHT_FACTOR = 0.28
"""4-bit NF4 weights relative to bf16 (0.25, plus quantization constants and 16-bit layers)."""
TUNING_WORKING_SET_FACTOR = 0.15
"""LoRA adapter, its optimizer state and activations (batch 1, gradient checkpointing), as a
share of the bf16 weights."""
CPU_MEMORY_UTILIZATION = 0.80
"""Share of a node's RAM a CPU inference server may use (the rest: OS, kubelet, page cache)."""
CPU_RUNTIME_GIB = 1.0
"""Runtime memory of a CPU inference server besides weights and KV cache."""
SUGGESTION_MIN_CUDA_CC = 8.0
"""Suggested replacement sizes are current NVIDIA generations (as upstream v0.12 supports)."""


class NodePlan(FrozenModel):
    """The outcome of fitting a preset onto an instance type."""

    instance_type: str
    """The instance type (or BYO node) planned for."""
    fits: bool
    """Whether the preset fits at all on this instance type."""
    nodes: int = Field(ge=0)
    """How many nodes to run (0 when it does not fit)."""
    gpus_per_node: int = Field(ge=0)
    """GPUs on each node (0 for CPU nodes)."""
    gpus_needed: int = Field(ge=0)
    """The fewest GPUs that hold the model (0 for CPU nodes)."""
    memory: Literal["gpu", "cpu"]
    """Which memory was checked: GPU memory, or the node's RAM for CPU inference."""
    weights_gib: float
    """Memory for the weights as loaded (after ×1.02, or the QLoRA factor)."""
    runtime_gib: float
    """Runtime memory per GPU (or per CPU node)."""
    kv_gib: float
    """KV cache (inference) or adapter/optimizer/activation working set (tuning)."""
    kv_tokens: int
    """Tokens the KV cache was sized for (0 for tuning)."""
    per_gpu_need_gib: float
    """Memory each GPU needs when the model is split over ``gpus_needed`` GPUs (RAM for CPU)."""
    per_gpu_usable_gib: float
    """Usable memory of one GPU (or of the node's RAM for CPU)."""
    explanation: str
    """The decision with its numbers, in one or two sentences."""
    suggestions: tuple[str, ...] = ()
    """Instance types of the same cloud on which one node would hold the model."""

    def describe_suggestions(self) -> str:
        """The suggestions as text, e.g. "Standard_NC24ads_A100_v4 (1× NVIDIA A100 80 GiB)"."""
        return ", ".join(self.suggestions)


def _gib(value: float) -> str:
    return f"{value:.2f}"


def _tokens(preset: Preset, max_model_len: int | None) -> int:
    wanted = max_model_len if max_model_len and max_model_len > 0 else DEFAULT_CONTEXT_TOKENS
    return min(wanted, preset.context_length)


def plan_nodes(
    preset: Preset,
    instance: InstanceType,
    *,
    count: int = 1,
    backend: InferenceBackend | None = None,
    max_model_len: int | None = None,
    tuning_method: str | None = None,
    suggest: bool = True,
) -> NodePlan:
    """Decide whether ``preset`` fits ``instance`` and how many nodes it needs.

    Args:
        preset: the model.
        instance: the instance type (or a BYO node described as one).
        count: ``resource.count`` (NAP) or the number of matching BYO nodes.
        backend: the inference backend; None when it is not installed here, which is treated as
            a backend that cannot split a model across nodes.
        max_model_len: tokens of context to plan the KV cache for (default 2048).
        tuning_method: ``lora`` or ``qlora`` to plan a fine-tuning job instead of inference.
        suggest: compute instance types that would fit when this one does not.
    """
    if tuning_method is not None:
        plan = _plan_tuning(preset, instance, tuning_method)
    elif not instance.has_gpu and not preset.requires_gpu:
        plan = _plan_cpu(preset, instance, count, max_model_len)
    else:
        plan = _plan_gpu_inference(preset, instance, count, backend, max_model_len)
    if plan.fits or not suggest:
        return plan
    return plan.model_copy(
        update={"suggestions": suggest_instance_types(preset, instance, backend=backend, max_model_len=max_model_len, tuning_method=tuning_method)}
    )


def _no_gpu(preset: Preset, instance: InstanceType, what: str) -> NodePlan:
    return NodePlan(
        instance_type=instance.sku,
        fits=False,
        nodes=0,
        gpus_per_node=0,
        gpus_needed=0,
        memory="gpu",
        weights_gib=0.0,
        runtime_gib=0.0,
        kv_gib=0.0,
        kv_tokens=0,
        per_gpu_need_gib=0.0,
        per_gpu_usable_gib=0.0,
        explanation=f"{what} {preset.name} needs a GPU, but {instance.sku} has none ({instance.describe()})",
    )


def _plan_gpu_inference(
    preset: Preset, instance: InstanceType, count: int, backend: InferenceBackend | None, max_model_len: int | None
) -> NodePlan:
    if not instance.has_gpu:
        return _no_gpu(preset, instance, "preset")
    tokens = _tokens(preset, max_model_len)
    weights = preset.weights_gib * WEIGHT_OVERHEAD
    kv = preset.kv_cache_gib(tokens)
    per_gpu_usable = instance.per_gpu_mem_gib * GPU_MEMORY_UTILIZATION
    room = per_gpu_usable - RUNTIME_GIB_PER_GPU
    gpus_needed = max(1, math.ceil((weights + kv) / room - 1e-9)) if room > 0 else 0
    nodes_needed = math.ceil(gpus_needed / instance.gpu_count) if gpus_needed else 0
    splits = backend is not None and backend.supports_multi_node
    per_node = instance.gpu_count
    node_need = weights + kv + RUNTIME_GIB_PER_GPU * per_node
    node_usable = instance.gpu_mem_gib * GPU_MEMORY_UTILIZATION
    runtime_text = f"{RUNTIME_GIB_PER_GPU} GiB runtime" + (f" per GPU ×{per_node}" if per_node > 1 else "")
    breakdown = (
        f"{_gib(preset.weights_gib)} GiB weights ×{WEIGHT_OVERHEAD} + {runtime_text} + "
        f"{_gib(kv)} GiB KV cache for {tokens} tokens"
    )
    capacity = (
        f"{instance.sku} has {instance.gpu_mem_gib:g} GiB ({instance.describe()}), of which "
        f"{int(GPU_MEMORY_UTILIZATION * 100)}% ({_gib(node_usable)} GiB) is usable"
    )
    common: dict[str, Any] = {
        "instance_type": instance.sku,
        "gpus_per_node": per_node,
        "gpus_needed": gpus_needed,
        "memory": "gpu",
        "weights_gib": round(weights, 4),
        "runtime_gib": RUNTIME_GIB_PER_GPU,
        "kv_gib": round(kv, 4),
        "kv_tokens": tokens,
        "per_gpu_need_gib": round((weights + kv) / max(gpus_needed, 1) + RUNTIME_GIB_PER_GPU, 4),
        "per_gpu_usable_gib": round(per_gpu_usable, 4),
    }
    if gpus_needed == 0:
        return NodePlan(
            fits=False,
            nodes=0,
            explanation=(
                f"{instance.sku}'s GPUs have {instance.per_gpu_mem_gib:g} GiB each, of which "
                f"{_gib(per_gpu_usable)} GiB is usable: not even the {RUNTIME_GIB_PER_GPU} GiB runtime fits"
            ),
            **common,
        )
    if nodes_needed > 1 and not splits:
        who = f"backend {backend.name}" if backend is not None else "the backend"
        return NodePlan(
            fits=False,
            nodes=0,
            explanation=(
                f"preset {preset.name} needs ≥ {_gib(node_need)} GiB of GPU memory on one node ({breakdown}), "
                f"but {capacity}; {who} cannot split a model across nodes"
            ),
            **common,
        )
    nodes = max(count, nodes_needed) if splits else count
    if nodes_needed > 1:
        explanation = (
            f"preset {preset.name} needs {gpus_needed} GPUs ({_gib(weights + kv + RUNTIME_GIB_PER_GPU * gpus_needed)} GiB: "
            f"{breakdown}); {instance.sku} has {per_node} per node, so {nodes_needed} nodes are needed"
        )
    else:
        explanation = (
            f"preset {preset.name} needs {_gib(weights + kv + RUNTIME_GIB_PER_GPU * gpus_needed)} GiB on "
            f"{gpus_needed} GPU{'s' if gpus_needed > 1 else ''} ({breakdown}); {capacity}: it fits on one node"
        )
    return NodePlan(fits=True, nodes=nodes, explanation=explanation, **common)


def _plan_tuning(preset: Preset, instance: InstanceType, method: str) -> NodePlan:
    if not instance.has_gpu:
        return _no_gpu(preset, instance, f"{method} tuning of")
    factor = QLORA_WEIGHT_FACTOR if method.lower() == "qlora" else WEIGHT_OVERHEAD
    weights = preset.weights_gib * factor
    working = preset.weights_gib * TUNING_WORKING_SET_FACTOR
    need = weights + RUNTIME_GIB_PER_GPU + working
    usable = instance.per_gpu_mem_gib * GPU_MEMORY_UTILIZATION
    fits = need <= usable
    breakdown = (
        f"{_gib(preset.weights_gib)} GiB weights ×{factor} ({method}) + {RUNTIME_GIB_PER_GPU} GiB runtime + "
        f"{_gib(working)} GiB adapter, optimizer and activations"
    )
    verdict = "it fits" if fits else "it does not fit"
    explanation = (
        f"{method} tuning of {preset.name} needs ≥ {_gib(need)} GiB of GPU memory on each GPU ({breakdown}), "
        f"and {instance.sku} has {instance.per_gpu_mem_gib:g} GiB per GPU ({instance.describe()}), of which "
        f"{int(GPU_MEMORY_UTILIZATION * 100)}% ({_gib(usable)} GiB) is usable: {verdict}"
    )
    return NodePlan(
        instance_type=instance.sku,
        fits=fits,
        nodes=1 if fits else 0,
        gpus_per_node=instance.gpu_count,
        gpus_needed=1,
        memory="gpu",
        weights_gib=round(weights, 4),
        runtime_gib=RUNTIME_GIB_PER_GPU,
        kv_gib=round(working, 4),
        kv_tokens=0,
        per_gpu_need_gib=round(need, 4),
        per_gpu_usable_gib=round(usable, 4),
        explanation=explanation,
    )


def _plan_cpu(preset: Preset, instance: InstanceType, count: int, max_model_len: int | None) -> NodePlan:
    tokens = _tokens(preset, max_model_len)
    weights = preset.weights_gib * WEIGHT_OVERHEAD
    kv = preset.kv_cache_gib(tokens)
    need = weights + CPU_RUNTIME_GIB + kv
    usable = instance.memory_gib * CPU_MEMORY_UTILIZATION
    fits = need <= usable
    explanation = (
        f"preset {preset.name} needs ≥ {_gib(need)} GiB of RAM ({_gib(preset.weights_gib)} GiB weights ×{WEIGHT_OVERHEAD} + "
        f"{CPU_RUNTIME_GIB} GiB runtime + {_gib(kv)} GiB KV cache for {tokens} tokens), and {instance.sku} has "
        f"{instance.memory_gib:g} GiB RAM, of which {int(CPU_MEMORY_UTILIZATION * 100)}% ({_gib(usable)} GiB) is usable: "
        + ("it fits" if fits else "it does not fit")
    )
    return NodePlan(
        instance_type=instance.sku,
        fits=fits,
        nodes=count if fits else 0,
        gpus_per_node=0,
        gpus_needed=0,
        memory="cpu",
        weights_gib=round(weights, 4),
        runtime_gib=CPU_RUNTIME_GIB,
        kv_gib=round(kv, 4),
        kv_tokens=tokens,
        per_gpu_need_gib=round(need, 4),
        per_gpu_usable_gib=round(usable, 4),
        explanation=explanation,
    )


def suggest_instance_types(
    preset: Preset,
    instance: InstanceType,
    *,
    backend: InferenceBackend | None = None,
    max_model_len: int | None = None,
    tuning_method: str | None = None,
    limit: int = 3,
) -> tuple[str, ...]:
    """Instance types of ``instance``'s cloud on which one node holds the model, smallest first.

    Only current NVIDIA GPUs (compute capability >= 8.0) are suggested, plus CPU sizes for
    presets that do not need a GPU. Each entry reads "SKU (1× NVIDIA A100 80 GiB)".
    """
    candidates = [
        t
        for t in instance_types(instance.cloud)
        if (t.vendor == "nvidia" and t.cuda_cc_value >= SUGGESTION_MIN_CUDA_CC)
        or (not t.has_gpu and not preset.requires_gpu and tuning_method is None)
    ]
    candidates.sort(key=lambda t: (t.has_gpu, t.gpu_mem_gib, t.gpu_count, t.memory_gib))
    found: list[str] = []
    for candidate in candidates:
        if candidate.sku.lower() == instance.sku.lower():
            continue
        plan = plan_nodes(
            preset,
            candidate,
            count=1,
            backend=backend,
            max_model_len=max_model_len,
            tuning_method=tuning_method,
            suggest=False,
        )
        if plan.fits and plan.gpus_needed <= max(candidate.gpu_count, 0) or (plan.fits and plan.memory == "cpu"):
            found.append(f"{candidate.sku} ({candidate.describe()})")
        if len(found) >= limit:
            break
    return tuple(found)
