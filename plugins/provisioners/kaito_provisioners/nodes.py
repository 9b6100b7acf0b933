"""Facts about Nodes shared by the provisioners: readiness, GPU capacity, label selectors."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from kaito_core.serving import GPU_RESOURCE

INSTANCE_TYPE_LABEL = "node.kubernetes.io/instance-type"


def selector_string(labels: Mapping[str, str]) -> str:
    """A label selector query string (``k=v,k2=v2``) for list calls."""
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items()))


def condition(obj: Mapping[str, Any], type_: str) -> Mapping[str, Any] | None:
    """The status condition of ``type_`` of a wire object (Node, NodeClaim), if present."""
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if cond.get("type") == type_:
            return dict(cond)
    return None


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

    @classmethod
    def of(cls, node: Mapping[str, Any]) -> NodeFacts:
        """Facts of a Node given as a wire dict."""
        meta = node.get("metadata") or {}
        status = node.get("status") or {}
        ready_cond = condition(node, "Ready")
        ready = bool(ready_cond and ready_cond.get("status") == "True")
        reason = ""
        if not ready:
            if ready_cond is None:
                reason = "has no Ready condition yet"
            else:
                reason = f"Ready={ready_cond.get('status')} ({ready_cond.get('reason', '')}: {ready_cond.get('message', '')})"
        capacity = status.get("capacity") or {}
        return cls(
            name=str(meta.get("name", "")),
            ready=ready,
            gpus=_quantity_positive(capacity.get(GPU_RESOURCE, "0")),
            instance_type=(meta.get("labels") or {}).get(INSTANCE_TYPE_LABEL),
            unschedulable=bool((node.get("spec") or {}).get("unschedulable")),
            not_ready_reason=reason,
        )

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
