"""Karpenter ``karpenter.sh/v1`` NodeClaims shaped exactly like upstream KAITO's.

Upstream: ``pkg/utils/nodeclaim/nodeclaim.go`` (GenerateNodeClaimManifest). Azure's
gpu-provisioner turns each NodeClaim into a one-node AKS agent pool named after the NodeClaim,
so the name must match ``^[a-z][a-z0-9]{0,11}$``: ``"ws"`` + 9 hex digits.
"""

from __future__ import annotations

import hashlib
import time
from typing import Any

from kaito_core.api.labels import (
    ANNOTATION_NODE_IMAGE_FAMILY,
    LABEL_INSTANCE_TYPE,
    LABEL_NODEPOOL,
    LABEL_WORKSPACE,
    LABEL_WORKSPACE_NAMESPACE,
    NODEPOOL_KAITO,
)
from kaito_core.provisioners import NodeRequest

GROUP = "karpenter.sh"
VERSION = "v1"
PLURAL = "nodeclaims"
KIND = "NodeClaim"
ANNOTATION_DO_NOT_DISRUPT = "karpenter.sh/do-not-disrupt"
LABEL_OS = "kubernetes.io/os"
LABEL_AZURE_SKU = "karpenter.azure.com/sku-name"
LABEL_AWS_GPU_COUNT = "karpenter.k8s.aws/instance-gpu-count"
GPU_TAINT = {"key": "sku", "value": "gpu", "effect": "NoSchedule"}
LIFECYCLE = ("Launched", "Registered", "Initialized")
"""Karpenter's lifecycle conditions, in order; Ready is True when all three are."""

NODE_CLASS_REFS: dict[str, dict[str, str]] = {
    "azure": {"group": "kaito.sh", "kind": "KaitoNodeClass", "name": "default"},
    "arc": {"group": "kaito.sh", "kind": "KaitoNodeClass", "name": "default"},
    "aws": {"group": "karpenter.k8s.aws", "kind": "EC2NodeClass", "name": "default"},
}


def nodeclaim_name(namespace: str, workspace: str, *, now: float | None = None) -> str:
    """``"ws"`` + the first 9 hex digits of sha256(namespace + name + time), as upstream."""
    stamp = str(time.time_ns() if now is None else int(now * 1e9))
    return "ws" + hashlib.sha256(f"{namespace}{workspace}{stamp}".encode()).hexdigest()[:9]


def owner_labels(workspace: str, namespace: str) -> dict[str, str]:
    """The labels that tie a NodeClaim (and its Node) to its workspace."""
    return {LABEL_WORKSPACE: workspace, LABEL_WORKSPACE_NAMESPACE: namespace}


def build_nodeclaim(request: NodeRequest, name: str) -> dict[str, Any]:
    """The NodeClaim for one node of ``request``.

    Raises:
        ValueError: the request has no instance type (bring-your-own requests have none).
    """
    if not request.instance_type:
        raise ValueError("a NodeClaim needs an instance type; resource.instanceType is empty")
    sku = request.instance_type
    labels = {LABEL_NODEPOOL: NODEPOOL_KAITO, **owner_labels(request.workspace, request.namespace)}
    labels.update({k: v for k, v in request.match_labels.items() if k not in labels})
    requirements: list[dict[str, Any]] = [
        {"key": LABEL_NODEPOOL, "operator": "In", "values": [NODEPOOL_KAITO]},
        {"key": LABEL_INSTANCE_TYPE, "operator": "In", "values": [sku]},
        {"key": LABEL_OS, "operator": "In", "values": ["linux"]},
    ]
    if request.cloud in ("azure", "arc"):
        requirements.append({"key": LABEL_AZURE_SKU, "operator": "In", "values": [sku]})
    elif request.cloud == "aws":
        requirements.append({"key": LABEL_AWS_GPU_COUNT, "operator": "Gt", "values": ["0"]})
    spec: dict[str, Any] = {
        "nodeClassRef": dict(NODE_CLASS_REFS.get(request.cloud, NODE_CLASS_REFS["azure"])),
        "requirements": requirements,
        "resources": {"requests": {"storage": f"{request.disk_gib}Gi"}},
    }
    if request.gpu:
        spec["taints"] = [dict(GPU_TAINT)]
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": KIND,
        "metadata": {
            "name": name,
            "namespace": request.namespace,
            "labels": labels,
            "annotations": {
                ANNOTATION_DO_NOT_DISRUPT: "true",
                ANNOTATION_NODE_IMAGE_FAMILY: request.node_image_family,
            },
        },
        "spec": spec,
    }


def is_deleting(nodeclaim: dict[str, Any]) -> bool:
    """Whether the NodeClaim has a deletionTimestamp."""
    return bool((nodeclaim.get("metadata") or {}).get("deletionTimestamp"))


def first_failing_condition(nodeclaim: dict[str, Any]) -> str:
    """The first lifecycle condition (Launched, Registered, Initialized) that is not True, as
    ``"Launched=False (LaunchFailed): <message>"``; empty when all are True."""
    conds = {c.get("type"): c for c in (nodeclaim.get("status") or {}).get("conditions") or []}
    for type_ in LIFECYCLE:
        cond = conds.get(type_)
        if cond is None:
            return f"{type_}=Unknown (AwaitingReconciliation): the node provisioner has not reported on it yet"
        if cond.get("status") != "True":
            their_reason = cond.get("reason") or "Unknown"  # the NodeClaim's, quoted in the message
            message = (cond.get("message") or "").strip()
            text = f"{type_}={cond.get('status')} ({their_reason})"
            return f"{text}: {message}"[:256] if message else text
    ready = conds.get("Ready")
    if ready is not None and ready.get("status") != "True":
        return f"Ready={ready.get('status')} ({ready.get('reason') or 'Unknown'}): {ready.get('message') or ''}".strip()[:256]
    return ""
