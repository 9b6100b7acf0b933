"""AKS agent pools for Workspaces, as pure functions: the pool's name, its body, and what an
ARM error means for the user.

One agent pool per Workspace, ``count`` nodes in it: a pool is AKS's unit of scaling, one PUT
scales it, and its name is derived from the Workspace alone, so the operator finds it again
after a restart without any record of its own (a pool per node would need one name per node and
one long operation per node). gpu-provisioner uses a pool per NodeClaim because Karpenter thinks
in single machines; we do not go through Karpenter here.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any

from kaito_core.api.reasons import Reason
from kaito_core.api.labels import LABEL_MACHINE_TYPE
from kaito_core.provisioners import NodeRequest
from kaito_provisioners.nodeclaim import owner_labels

POOL_NAME = re.compile(r"^[a-z][a-z0-9]{0,11}$")
"""What AKS accepts as a Linux agent-pool name."""
AGENTPOOL_LABEL = "kubernetes.azure.com/agentpool"
"""The label AKS puts on every node of a pool (value: the pool name)."""
MANAGED_BY_LABEL = "kaito.sh/provisioner"
"""Marks pools (and so their nodes) as created by this provisioner: only those are ever deleted."""
MANAGED_BY = "azure-agentpool"
GPU_TAINT = "sku=gpu:NoSchedule"
IN_PROGRESS = "in progress"


def pool_name(namespace: str, workspace: str) -> str:
    """``ws`` + 10 hex digits of sha256("namespace/workspace"): valid for AKS and the same after a restart."""
    return "ws" + hashlib.sha256(f"{namespace}/{workspace}".encode()).hexdigest()[:10]


def build_agent_pool(request: NodeRequest) -> dict[str, Any]:
    """The keyword arguments of ``azure.mgmt.containerservice.models.AgentPool`` for ``request``.

    Shape as gpu-provisioner's (VirtualMachineScaleSets, Linux, osSKU from the image family, OS
    disk from the preset's disk need, the ``sku=gpu:NoSchedule`` taint), with ``count`` nodes
    and User mode.
    """
    if not request.instance_type:
        raise ValueError("an AKS agent pool needs resource.instanceType (the VM size)")
    labels = {
        **request.match_labels,
        **owner_labels(request.workspace, request.namespace),
        MANAGED_BY_LABEL: MANAGED_BY,
        LABEL_MACHINE_TYPE: "gpu" if "Standard_N" in request.instance_type else "cpu",
    }
    return {
        "vm_size": request.instance_type,
        "count": request.count,
        "mode": "User",
        "os_type": "Linux",
        "os_sku": "AzureLinux" if request.node_image_family.lower() == "azurelinux" else "Ubuntu",
        "os_disk_size_gb": request.disk_gib,
        "type_properties_type": "VirtualMachineScaleSets",
        "node_labels": dict(sorted(labels.items())),
        "node_taints": [GPU_TAINT] if request.gpu else [],
    }


@dataclass(frozen=True)
class CloudProblem:
    """What an ARM error means: a CamelCase reason, whether waiting can help, and what to do."""

    reason: str
    message: str
    retryable: bool = True


QUOTA_CODES = frozenset({"QuotaExceeded", "OperationNotAllowed/quota", "InsufficientQuota"})
CAPACITY_CODES = frozenset({
    "OverconstrainedAllocationRequest", "OverconstrainedZonalAllocationRequest", "AllocationFailed",
    "ZonalAllocationFailed", "SkuNotAvailable",
})


def explain(*, status: int | None, code: str, message: str, pool: str, vm_size: str, location: str,
            retry_after: float | None = None) -> CloudProblem:
    """The user-facing meaning of an ARM answer (HTTP ``status``, error ``code`` and ``message``)."""
    where = f"agent pool {pool} ({vm_size} in {location or 'the cluster region'})"
    said = f"Azure said {code or status}: {message}".strip()
    if status in (401, 403) or code in ("AuthenticationFailed", "AuthorizationFailed", "InvalidAuthenticationToken"):
        return CloudProblem(
            Reason.AZURE_AUTH_FAILED,
            f"Azure refused the operator's identity for {where}: {said}. Check nodeProvisioner.azure.tenantId/clientId, "
            "that the identity has a federated credential for the kaito-operator ServiceAccount (workload identity), "
            "and that it holds Contributor on the cluster's resource group",
        )
    if status == 429:
        wait = f"{retry_after:.0f}s" if retry_after is not None else "a while"
        return CloudProblem(
            Reason.AZURE_THROTTLED,
            f"Azure Resource Manager throttled the requests for {where} (HTTP 429); the operator retries after {wait}. "
            "Nothing to do unless it persists: then reduce other automation hitting this subscription",
        )
    if code == "OperationNotAllowed" and IN_PROGRESS in message:
        return CloudProblem(
            Reason.AGENTPOOL_OPERATION_IN_PROGRESS,
            f"another operation on {where} is still running ({said}); the operator looks again shortly. "
            "If it stays, check it with `az aks nodepool show` or cancel it with `az aks nodepool operation-abort`",
        )
    if code in QUOTA_CODES or "quota" in message.lower():
        return CloudProblem(
            Reason.QUOTA_EXCEEDED,
            f"not enough vCPU quota for {where}: {said}. Request a quota increase for this VM family in "
            f"{location or 'the region'} (Azure portal > Quotas), or choose another resource.instanceType",
        )
    if code in CAPACITY_CODES:
        return CloudProblem(
            Reason.CAPACITY_UNAVAILABLE,
            f"Azure has no capacity for {where} right now: {said}. Choose another resource.instanceType or region, "
            "or wait: the operator retries",
        )
    if status in (400, 422) or code in ("InvalidParameter", "BadRequest"):
        return CloudProblem(Reason.AGENTPOOL_INVALID, f"Azure refused {where}: {said}. Fix the Workspace's resource fields", retryable=False)
    return CloudProblem(Reason.AGENTPOOL_FAILED, f"{where} failed: {said}; the operator retries")
