"""Well-known labels, annotations and finalizers used by KAITO (values as upstream where they exist)."""

from __future__ import annotations

LABEL_WORKSPACE = "kaito.sh/workspace"
"""On NodeClaims, Nodes and workload pods: the owning workspace's name."""
LABEL_WORKSPACE_NAMESPACE = "kaito.sh/workspacenamespace"
"""On NodeClaims and Nodes: the owning workspace's namespace."""
LABEL_NODEPOOL = "karpenter.sh/nodepool"
"""Karpenter's nodepool label; KAITO sets the fake pool ``kaito`` so Karpenter does not scale it."""
NODEPOOL_KAITO = "kaito"
LABEL_INSTANCE_TYPE = "node.kubernetes.io/instance-type"
LABEL_MACHINE_TYPE = "kaito.sh/machine-type"

ANNOTATION_RUNTIME = "kaito.sh/runtime"
"""Which inference backend serves the preset (e.g. ``transformers``, ``llamacpp``); default: the preset's first."""
ANNOTATION_BYPASS_RESOURCE_CHECKS = "kaito.sh/bypass-resource-checks"
"""Present: a GPU-memory misfit is a warning, not an error."""
ANNOTATION_NODE_IMAGE_FAMILY = "kaito.sh/node-image-family"
"""ubuntu or azurelinux: the OS image of provisioned nodes."""
ANNOTATION_ENABLE_LB = "kaito.sh/enablelb"
"""``"True"``: the Service is a LoadBalancer instead of ClusterIP."""
ANNOTATION_REVISION = "workspace.kaito.io/revision"
ANNOTATION_HASH = "workspace.kaito.io/hash"

FINALIZER = "workspace.finalizer.kaito.sh"

RESERVED_SELECTOR_KEYS = frozenset(
    {
        "kaito.sh/workspace",
        "kaito.sh/ragengine",
        "kaito.sh/workspacenamespace",
        "kaito.sh/ragenginenamespace",
        "karpenter.kaito.sh/workspace-name",
        "karpenter.kaito.sh/workspace-namespace",
        "karpenter.kaito.sh/inferenceset",
        "karpenter.kaito.sh/inferenceset-namespace",
    }
)
"""Label keys KAITO sets itself; they are dropped from a workspace's labelSelector.matchLabels."""

NODE_IMAGE_FAMILIES = ("ubuntu", "azurelinux")
