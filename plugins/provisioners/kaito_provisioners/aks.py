"""``azure-agentpool``: AKS agent pools created directly through azure-mgmt-containerservice.

One pool per Workspace (:mod:`kaito_provisioners.agentpool` says why), named from the
Workspace alone. Level-based: each reconcile GETs the pool and acts on its provisioningState;
a create or delete is begun (``polling=False``) and never waited on, so a 10-minute AKS
operation holds no worker thread and survives an operator restart: the next round reads where
ARM got to. Killing the operator at any point leaves at most the one pool of that name, which
the next round adopts (or the finalizer deletes).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any

from pydantic.alias_generators import to_camel

from kaito_core.api.reasons import Reason
from kaito_core.errors import PluginError, ProvisioningError
from kaito_core.provisioners import (
    AzureSettings,
    NeedStatus,
    NodeClient,
    NodeProvisioner,
    NodeRequest,
    ProvisionerCapabilities,
    ProvisionResult,
)
from kaito_provisioners.agentpool import AGENTPOOL_LABEL, MANAGED_BY, MANAGED_BY_LABEL, build_agent_pool, explain, pool_name
from kaito_provisioners.azure_client import REQUIRED, arm_errors, check_settings, make_agent_pools, require_azure_packages
from kaito_provisioners.nodeclaim import owner_labels
from kaito_provisioners.nodes import NodeFacts

log = logging.getLogger("kaito.provisioners.aks")


class AksProvisioner(NodeProvisioner):
    """Provisions a Workspace's nodes as one AKS agent pool."""

    name = "azure-agentpool"
    description = "AKS agent pools created directly (azure-mgmt-containerservice + azure-identity), one pool per Workspace"
    capabilities = ProvisionerCapabilities(creates_nodes=True)

    def __init__(self, settings: AzureSettings | None = None) -> None:
        self._settings = settings
        self._ops: Any = None
        self._lock = threading.Lock()
        self._next_gc = 0.0

    def needs(self) -> list[str]:
        """For `kaito plugins`: the azure extra, the cluster's coordinates and an Azure identity."""
        fields = ", ".join(f"nodeProvisioner.azure.{to_camel(f)}" for f in REQUIRED)
        return [*super().needs(), "kaito-provisioners[azure]", fields, "an Azure identity (workload or managed identity)"]

    def need_status(
        self, *, crd_installed: Callable[[str], bool] | None = None, azure: AzureSettings | None = None, **_: Any
    ) -> list[NeedStatus]:
        """The azure extra (importable here), the cluster's coordinates (in ``azure``, the operator's
        settings) and an identity (a client ID or workload-identity token in the settings or
        environment; otherwise DefaultAzureCredential decides at run time)."""
        package, fields, identity = self.needs()[-3:]
        found = list(super().need_status(crd_installed=crd_installed, azure=azure))[:-3]
        try:
            require_azure_packages()
            found.append(NeedStatus(need=package, present=True))
        except PluginError as exc:
            found.append(NeedStatus(need=package, present=False, detail=str(exc)))
        try:
            check_settings(azure)
            found.append(NeedStatus(need=fields, present=True))
        except ProvisioningError as exc:
            found.append(NeedStatus(need=fields, present=False, detail=str(exc)))
        explicit = azure is not None and bool(azure.client_id or azure.federated_token_file)
        if explicit or os.environ.get("AZURE_CLIENT_ID") or os.environ.get("AZURE_FEDERATED_TOKEN_FILE"):
            found.append(NeedStatus(need=identity, present=True))
        else:
            found.append(NeedStatus(need=identity, present=None, detail="no client ID or federated token set; "
                                    "DefaultAzureCredential looks for one when the operator runs"))
        return found

    def configure(self, *, azure: AzureSettings | None = None, **_: Any) -> None:
        """Take nodeProvisioner.azure (the client is built on first use).

        Raises (so the operator refuses to start with the message):
            ProvisioningError: subscriptionId, resourceGroup or clusterName is missing.
            PluginError: the azure extra is not installed.
        """
        if azure is not None:
            check_settings(azure)
            require_azure_packages()
            with self._lock:
                self._settings, self._ops = azure, None

    # -- the interface -------------------------------------------------------------------------

    def ensure_nodes(self, nodes: NodeClient, request: NodeRequest) -> ProvisionResult:
        """Create or scale the Workspace's pool and report its nodes."""
        ops, settings = self._client()
        self._collect_garbage(nodes, ops, settings)
        name = pool_name(request.namespace, request.workspace)
        where = {"pool": name, "vm_size": request.instance_type or "", "location": settings.location}
        with arm_errors(**where):
            pool = _get(ops, settings, name)
            state = getattr(pool, "provisioning_state", None) if pool is not None else None
            if pool is None:
                self._put(ops, settings, name, request)
                return _waiting(f"agent pool {name} ({request.count} x {request.instance_type}) is being created", 2.0)
            if state == "Failed":
                ops.begin_delete(settings.resource_group, settings.cluster_name, name, polling=False)  # nothing half-made stays
                raise _failure(settings, pool, name, request)
            if state == "Deleting":
                if _provisioning_error(pool) is not None:  # our clean-up of a failed pool: keep saying why
                    raise _failure(settings, pool, name, request)
                return _waiting(f"agent pool {name} is being deleted; it is created again once it is gone", 2.0)
            if state != "Succeeded":
                return _waiting(f"agent pool {name} is {str(state).lower()} (provisioningState {state})", 2.0)
            if str(pool.vm_size).lower() != str(request.instance_type).lower():
                ops.begin_delete(settings.resource_group, settings.cluster_name, name, polling=False)
                return _waiting(f"agent pool {name} has VM size {pool.vm_size}, not {request.instance_type}: replacing it", 2.0)
            if pool.count != request.count:
                self._put(ops, settings, name, request)
                return _waiting(f"agent pool {name} is being scaled from {pool.count} to {request.count} nodes", 2.0)
        return _nodes_result(nodes, request, name)

    def delete_nodes(self, nodes: NodeClient, *, workspace: str, namespace: str) -> bool:
        """Begin deleting the pool; True once the pool and its nodes are gone."""
        ops, settings = self._client()
        name = pool_name(namespace, workspace)
        with arm_errors(pool=name, vm_size="", location=settings.location):
            pool = _get(ops, settings, name)
            if pool is not None and pool.provisioning_state != "Deleting":
                ops.begin_delete(settings.resource_group, settings.cluster_name, name, polling=False)
                log.info("agent pool %s of workspace %s/%s: delete begun", name, namespace, workspace)
        return pool is None and not nodes.list_nodes({AGENTPOOL_LABEL: name})

    def node_affinity_terms(self, request: NodeRequest) -> list[dict[str, Any]]:
        """Pin pods to the pool's nodes: the Workspace labels the pool puts on them, and the matchLabels."""
        labels = {**owner_labels(request.workspace, request.namespace), **request.match_labels}
        return [{"key": k, "operator": "In", "values": [v]} for k, v in sorted(labels.items())]

    # -- helpers -------------------------------------------------------------------------------

    def _client(self) -> tuple[Any, AzureSettings]:
        with self._lock:
            settings = check_settings(self._settings)
            if self._ops is None:
                self._ops = make_agent_pools(settings)
            return self._ops, settings

    @staticmethod
    def _put(ops: Any, settings: AzureSettings, name: str, request: NodeRequest) -> None:
        from azure.mgmt.containerservice.models import AgentPool

        ops.begin_create_or_update(settings.resource_group, settings.cluster_name, name, AgentPool(**build_agent_pool(request)), polling=False)
        log.info("agent pool %s for workspace %s/%s: PUT accepted (%d x %s)", name, request.namespace, request.workspace,
                 request.count, request.instance_type)

    def _collect_garbage(self, nodes: NodeClient, ops: Any, settings: AzureSettings) -> None:
        """Every ``gc_interval_s``: delete the pools this provisioner made whose Workspace is gone."""
        with self._lock:
            if time.monotonic() < self._next_gc:
                return
            self._next_gc = time.monotonic() + settings.gc_interval_s
        with arm_errors(pool="(all)", vm_size="", location=settings.location):
            for pool in ops.list(settings.resource_group, settings.cluster_name):
                labels = pool.node_labels or {}
                if labels.get(MANAGED_BY_LABEL) != MANAGED_BY or pool.provisioning_state == "Deleting":
                    continue
                ws, ns = labels.get("kaito.sh/workspace", ""), labels.get("kaito.sh/workspacenamespace", "")
                if ws and ns and pool.name == pool_name(ns, ws) and not nodes.workspace_exists(ns, ws):
                    log.info("agent pool %s: workspace %s/%s is gone, deleting the pool", pool.name, ns, ws)
                    ops.begin_delete(settings.resource_group, settings.cluster_name, pool.name, polling=False)


def _get(ops: Any, settings: AzureSettings, name: str) -> Any:
    from azure.core.exceptions import ResourceNotFoundError

    try:
        return ops.get(settings.resource_group, settings.cluster_name, name)
    except ResourceNotFoundError:
        return None


def _provisioning_error(pool: Any) -> Any:
    return getattr(getattr(pool, "status", None), "provisioning_error", None)


def _failure(settings: AzureSettings, pool: Any, name: str, request: NodeRequest) -> ProvisioningError:
    """What a failed pool's status.provisioningError means for the user (the next round tries again)."""
    error = _provisioning_error(pool)
    problem = explain(status=None, code=getattr(error, "code", None) or "", message=getattr(error, "message", None) or "provisioningState Failed",
                      pool=name, vm_size=request.instance_type or "", location=settings.location)
    return ProvisioningError(problem.message, reason=problem.reason, retryable=problem.retryable)


def _waiting(message: str, retry_after_s: float) -> ProvisionResult:
    return ProvisionResult(ready=False, reason=Reason.AGENTPOOL_NOT_READY, message=message, retry_after_s=retry_after_s)


def _nodes_result(nodes: NodeClient, request: NodeRequest, name: str) -> ProvisionResult:
    """Readiness of the pool's nodes (found by the Workspace labels and the pool label)."""
    found = [n for n in nodes.list_nodes(owner_labels(request.workspace, request.namespace))
             if ((n.get("metadata") or {}).get("labels") or {}).get(AGENTPOOL_LABEL) == name]
    facts = [NodeFacts.of(n) for n in found]
    usable = sorted(f.name for f in facts if f.usable(gpu=request.gpu))
    if len(usable) >= request.count:
        return ProvisionResult(ready_nodes=tuple(usable[: request.count]), ready=True)
    why = "; ".join(f.why_unusable(gpu=request.gpu) for f in facts if not f.usable(gpu=request.gpu))
    message = f"agent pool {name} succeeded; {len(usable)}/{request.count} of its nodes are ready" + (f": {why}" if why else "")
    return ProvisionResult(ready_nodes=tuple(usable), ready=False, reason=Reason.NODE_NOT_READY, message=message, retry_after_s=3.0)
