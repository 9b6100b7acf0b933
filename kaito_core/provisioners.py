"""Node provisioners: the interface a provisioner plugin implements.

A provisioner turns "this workspace needs N nodes of instance type X" into nodes: Karpenter
NodeClaims served by Azure's gpu-provisioner, NodePools for generic Karpenter, AKS agent pools
created directly, or nothing at all for bring-your-own nodes. The operator calls it level-based
on every reconcile: it must be idempotent (calling ``ensure_nodes`` twice creates nothing
twice) and must find its own objects again after an operator restart.
"""

from __future__ import annotations

import abc
from typing import Any

from pydantic import Field

from kaito_core.presets import FrozenModel


class NodeRequest(FrozenModel):
    """What a workspace needs from a provisioner."""

    workspace: str
    """Workspace name."""
    namespace: str
    """Workspace namespace."""
    instance_type: str | None
    """Instance type (VM size) to provision; None for bring-your-own nodes."""
    count: int = Field(ge=1)
    """How many ready nodes the workspace needs."""
    match_labels: dict[str, str] = Field(default_factory=dict)
    """The workspace's labelSelector.matchLabels without reserved keys: put on provisioned nodes."""
    disk_gib: int = Field(default=100, gt=0)
    """OS disk per node in GiB."""
    node_image_family: str = "ubuntu"
    """OS image family (ubuntu or azurelinux)."""
    match_expressions: tuple[dict[str, Any], ...] = ()
    """The workspace's labelSelector.matchExpressions (wire shape: key, operator, values)."""
    gpu: bool = True
    """Whether the nodes must have GPUs (adds the sku=gpu taint and waits for nvidia.com/gpu)."""
    cloud: str = "azure"
    """Cloud provider (azure, aws, arc): decides cloud-specific fields such as a NodeClaim's nodeClassRef."""


class NodeCondition(FrozenModel):
    """A condition the provisioner contributes to the workspace status (e.g. NodeClaimReady)."""

    type: str
    status: str
    reason: str
    message: str


class ProvisionResult(FrozenModel):
    """Where provisioning stands after one ``ensure_nodes`` call."""

    ready_nodes: tuple[str, ...] = ()
    """Names of the nodes that are ready for the workload, sorted."""
    ready: bool = False
    """True when at least ``count`` nodes are ready."""
    reason: str = ""
    """CamelCase reason when not ready (e.g. NodeClaimNotReady, LaunchFailed)."""
    message: str = ""
    """What is going on, for people; names the NodeClaim/pool and the cloud's error when there is one."""
    conditions: tuple[NodeCondition, ...] = ()
    """Extra workspace conditions (NodeClaimReady, ...)."""
    retry_after_s: float = 5.0
    """When to look again if not ready."""


class NodeProvisioner(abc.ABC):
    """A node provisioner, registered by a plugin."""

    name: str
    """Unique name, e.g. ``gpu-provisioner``, ``karpenter``, ``azure-agentpool``, ``byo``."""
    description: str = ""
    """One line for `kaito plugins`."""

    @abc.abstractmethod
    def ensure_nodes(self, api: Any, request: NodeRequest) -> ProvisionResult:
        """Create what is missing for ``request`` and report readiness (idempotent).

        ``api`` is a ``kubernetes.client.ApiClient`` connected to the cluster.
        """

    @abc.abstractmethod
    def delete_nodes(self, api: Any, *, workspace: str, namespace: str) -> bool:
        """Start deleting everything provisioned for the workspace; True once all of it is gone.

        Idempotent: called again on every retry until it returns True; must find what to delete
        from the cluster (labels), never from memory.
        """

    @abc.abstractmethod
    def node_affinity_terms(self, request: NodeRequest) -> list[dict[str, Any]]:
        """nodeSelectorTerms matchExpressions that pin the workload to this provisioner's nodes."""
