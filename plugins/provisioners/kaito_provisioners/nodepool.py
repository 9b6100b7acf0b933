"""Karpenter ``karpenter.sh/v1`` NodePools, one per Workspace (the ``karpenter`` provisioner).

Pure functions: the NodePool's name, its settings (the NodeClass it points at) and its shape.
Why the spec looks the way it does is explained in :mod:`kaito_provisioners.karpenter`.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from pydantic import BaseModel, ConfigDict
from pydantic_settings import BaseSettings, SettingsConfigDict

from kaito_core.api.labels import ANNOTATION_NODE_IMAGE_FAMILY, LABEL_INSTANCE_TYPE
from kaito_core.provisioners import NodeRequest
from kaito_provisioners.nodeclaim import ANNOTATION_DO_NOT_DISRUPT, GPU_TAINT, LABEL_OS, owner_labels

KIND = "NodePool"
API_VERSION = "karpenter.sh/v1"
ANNOTATION_SPEC_HASH = "kaito.sh/nodepool-spec-hash"
"""On the NodePool: hash of the spec the operator wrote, so an unchanged spec is never re-sent."""
MAX_NAME = 50
"""Longest NodePool name: its NodeClaims' names (``<pool>-<5 chars>``) stay valid label values."""
RESERVED_LABEL_DOMAINS = ("karpenter.sh", "kubernetes.io/hostname")
"""Label keys a NodePool template may not carry (the NodePool CRD's CEL rules refuse them)."""


class NodeClassRef(BaseModel):
    """The cloud-specific NodeClass every NodePool points at (AKSNodeClass, EC2NodeClass, ...)."""

    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)

    group: str = "karpenter.azure.com"
    """API group of the NodeClass (karpenter.azure.com for AKS node auto-provisioning, karpenter.k8s.aws for EKS)."""
    kind: str = "AKSNodeClass"
    """Kind of the NodeClass (AKSNodeClass, EC2NodeClass, KWOKNodeClass, ...)."""
    name: str = "default"
    """Name of the NodeClass object, which the cluster admin creates."""


class KarpenterSettings(BaseSettings):
    """Settings of the karpenter provisioner, read from KAITO_KARPENTER__* environment variables when
    the plugin is built (e.g. KAITO_KARPENTER__NODE_CLASS__KIND=EC2NodeClass)."""

    model_config = SettingsConfigDict(env_prefix="KAITO_KARPENTER__", env_nested_delimiter="__", extra="ignore", use_attribute_docstrings=True)

    node_class: NodeClassRef = NodeClassRef()
    """The NodeClass the NodePools point at."""


def nodepool_name(workspace: str, namespace: str) -> str:
    """``kaito-<namespace>-<workspace>``, shortened with a hash to 50 characters; stable, so found
    again after a restart. Karpenter names NodeClaims (and often their Nodes) ``<pool>-<5 chars>``,
    and a Node name is also its ``kubernetes.io/hostname`` label value (63 characters at most)."""
    full = f"kaito-{namespace}-{workspace}"
    if len(full) <= MAX_NAME:
        return full
    digest = hashlib.sha256(f"{namespace}/{workspace}".encode()).hexdigest()[:10]
    return f"{full[: MAX_NAME - 11].rstrip('-.')}-{digest}"


def _template_labels(request: NodeRequest) -> dict[str, str]:
    labels = dict(owner_labels(request.workspace, request.namespace))
    for key, value in request.match_labels.items():
        if key not in labels and not key.split("/")[0].endswith(RESERVED_LABEL_DOMAINS[0]) and key != RESERVED_LABEL_DOMAINS[1]:
            labels[key] = value
    return labels


def build_nodepool(request: NodeRequest, node_class: NodeClassRef) -> dict[str, Any]:
    """The NodePool for ``request``.

    Raises:
        ValueError: the request has no instance type (bring-your-own requests have none).
    """
    if not request.instance_type:
        raise ValueError("a NodePool needs an instance type; resource.instanceType is empty")
    spec: dict[str, Any] = {
        "replicas": request.count,
        "limits": {"nodes": str(request.count)},
        "disruption": {"consolidationPolicy": "WhenEmpty", "consolidateAfter": "Never", "budgets": [{"nodes": "0"}]},
        "template": {
            "metadata": {
                "labels": _template_labels(request),
                "annotations": {ANNOTATION_DO_NOT_DISRUPT: "true", ANNOTATION_NODE_IMAGE_FAMILY: request.node_image_family},
            },
            "spec": {
                "nodeClassRef": node_class.model_dump(),
                "requirements": [
                    {"key": LABEL_INSTANCE_TYPE, "operator": "In", "values": [request.instance_type]},
                    {"key": LABEL_OS, "operator": "In", "values": ["linux"]},
                ],
                "expireAfter": "Never",
                **({"taints": [dict(GPU_TAINT)]} if request.gpu else {}),
            },
        },
    }
    spec_hash = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {
            "name": nodepool_name(request.workspace, request.namespace),
            "labels": owner_labels(request.workspace, request.namespace),
            "annotations": {ANNOTATION_SPEC_HASH: spec_hash},
        },
        "spec": spec,
    }
