"""Facts about Nodes shared by the provisioners: readiness, GPU capacity, label selectors."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from kaito_core.serving import GPU_RESOURCE

INSTANCE_TYPE_LABEL = "node.kubernetes.io/instance-type"
GFD_PRODUCT = "nvidia.com/gpu.product"
"""GPU Feature Discovery: the GPU model, e.g. ``NVIDIA-A100-SXM4-80GB``."""
GFD_COUNT = "nvidia.com/gpu.count"
"""GPU Feature Discovery: GPUs on the node."""
GFD_MEMORY = "nvidia.com/gpu.memory"
"""GPU Feature Discovery: memory of one GPU in MiB."""


def selector_string(labels: Mapping[str, str]) -> str:
    """A label selector query string (``k=v,k2=v2``) for list calls."""
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items()))


def condition(obj: Mapping[str, Any], type_: str) -> Mapping[str, Any] | None:
    """The status condition of ``type_`` of a wire object (Node, NodeClaim), if present."""
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if cond.get("type") == type_:
            return dict(cond)
    return None


def _int(value: Any) -> int:
    try:
        return int(str(value))
    except ValueError:
        return 0


def _quantity_positive(value: Any) -> bool:
    try:
        return int(str(value)) > 0
    except ValueError:
        return False


@dataclass(frozen=True)
class NodeFacts:
    """What a provisioner needs to know about one Node."""

    name: str
    ready: bool
    gpus: bool
    instance_type: str | None
    unschedulable: bool
    not_ready_reason: str = ""
    gpu_product: str = ""
    """GPU model from the GPU Feature Discovery label (empty without GFD)."""
    gpu_count: int = 0
    """GPUs from the GFD label (0 without GFD)."""
    gpu_memory_mib: int = 0
    """Memory of one GPU in MiB from the GFD label (0 without GFD)."""

    @classmethod
    def of(cls, node: Mapping[str, Any]) -> NodeFacts:
        """Facts of a Node given as a wire dict."""
        meta = node.get("metadata") or {}
        status = node.get("status") or {}
        ready_cond = condition(node, "Ready")
        ready = bool(ready_cond and ready_cond.get("status") == "True")
        why_not_ready = ""
        if not ready:
            if ready_cond is None:
                why_not_ready = "has no Ready condition yet"
            else:
                why_not_ready = f"Ready={ready_cond.get('status')} ({ready_cond.get('reason', '')}: {ready_cond.get('message', '')})"
        capacity = status.get("capacity") or {}
        labels = meta.get("labels") or {}
        return cls(
            name=str(meta.get("name", "")),
            ready=ready,
            gpus=_quantity_positive(capacity.get(GPU_RESOURCE, "0")),
            instance_type=(meta.get("labels") or {}).get(INSTANCE_TYPE_LABEL),
            unschedulable=bool((node.get("spec") or {}).get("unschedulable")),
            not_ready_reason=why_not_ready,
            gpu_product=str(labels.get(GFD_PRODUCT, "")),
            gpu_count=_int(labels.get(GFD_COUNT)),
            gpu_memory_mib=_int(labels.get(GFD_MEMORY)),
        )

    def gpu_shape(self) -> str:
        """The node's GPUs as GFD labels describe them, e.g. ``1x NVIDIA-A100-SXM4-80GB (80 GiB each)``."""
        if not (self.gpu_product or self.gpu_count or self.gpu_memory_mib):
            return "GPUs unknown (no GPU Feature Discovery labels)"
        return f"{self.gpu_count}x {self.gpu_product or 'unknown GPU'} ({self.gpu_memory_mib / 1024:g} GiB each)"

    def gpu_memory_gib(self) -> float:
        """All GPUs' memory together in GiB from the GFD labels (0 without them)."""
        return self.gpu_count * self.gpu_memory_mib / 1024

    def usable(self, *, gpu: bool) -> bool:
        """Ready, schedulable and (when ``gpu``) advertising nvidia.com/gpu capacity."""
        return self.ready and not self.unschedulable and (self.gpus or not gpu)

    def why_unusable(self, *, gpu: bool) -> str:
        """Why the node cannot take the workload yet, for status messages."""
        if not self.ready:
            return f"node {self.name} is not Ready: {self.not_ready_reason}"
        if self.unschedulable:
            return f"node {self.name} is cordoned (spec.unschedulable)"
        if gpu and not self.gpus:
            return f"node {self.name} has no {GPU_RESOURCE} capacity yet (is the NVIDIA device plugin running on it?)"
        return ""


def matches_expressions(labels: Mapping[str, str], expressions: Iterable[Mapping[str, Any]]) -> bool:
    """Whether node ``labels`` satisfy label-selector matchExpressions (In, NotIn, Exists, DoesNotExist)."""
    for expr in expressions:
        key, op, values = expr.get("key", ""), expr.get("operator", ""), list(expr.get("values") or [])
        present = key in labels
        if op == "In" and not (present and labels[key] in values):
            return False
        if op == "NotIn" and present and labels[key] in values:
            return False
        if op == "Exists" and not present:
            return False
        if op == "DoesNotExist" and present:
            return False
    return True
