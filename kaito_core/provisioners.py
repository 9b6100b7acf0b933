"""Node provisioners: the interface a provisioner plugin implements.

A provisioner turns "this workspace needs N nodes of instance type X" into nodes: Karpenter
NodeClaims served by Azure's gpu-provisioner, NodePools for generic Karpenter, AKS agent pools
created directly, or nothing at all for bring-your-own nodes. The operator calls it level-based
on every reconcile: it must be idempotent (calling ``ensure_nodes`` twice creates nothing
twice) and must find its own objects again after an operator restart.

Provisioners never see the raw Kubernetes client: the operator hands them a :class:`NodeClient`,
a small typed facade whose reads are served from the operator's watch caches and whose requests
are counted in its metrics. Tests hand them an in-memory fake of the same interface.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel
from pydantic_settings import BaseSettings

from kaito_core.api.workspace import ConditionStatus, ConditionType
from kaito_core.errors import KaitoError
from kaito_core.presets import FrozenModel

NODECLAIM_CRD = "nodeclaims.karpenter.sh"
"""The Karpenter NodeClaim CRD (version v1) that NodeClaim-based provisioners need."""
NODEPOOL_CRD = "nodepools.karpenter.sh"
"""The Karpenter NodePool CRD (version v1) that the karpenter provisioner needs."""


class AzureSettings(BaseModel):
    """values.yaml ``nodeProvisioner.azure``: where and as whom the ``azure-agentpool`` provisioner
    creates AKS agent pools (other provisioners ignore it)."""

    # camelCase keys as in values.yaml (the chart passes the section as JSON); field names work too.
    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True, frozen=True, alias_generator=to_camel, populate_by_name=True)

    subscription_id: str = ""
    """Azure subscription of the AKS cluster (ARM_SUBSCRIPTION_ID in gpu-provisioner)."""
    resource_group: str = ""
    """Resource group of the AKS cluster (not the MC_ node resource group)."""
    cluster_name: str = ""
    """Name of the AKS managed cluster the agent pools are added to."""
    location: str = ""
    """Azure region of the cluster, e.g. eastus; named in quota and capacity messages."""
    tenant_id: str = ""
    """Entra tenant of the identity (AZURE_TENANT_ID); empty: taken from the environment."""
    client_id: str = ""
    """Client ID of the user-assigned managed identity / workload identity (AZURE_CLIENT_ID);
    empty: taken from the environment (or the system-assigned identity)."""
    credential: str = "auto"
    """auto (workload identity when a federated token file is present, else managed identity when
    clientId is set, else DefaultAzureCredential), workload, managed or default."""
    federated_token_file: str = ""
    """Workload-identity token file; empty: AZURE_FEDERATED_TOKEN_FILE (set by the AKS webhook)."""
    authority_host: str = "https://login.microsoftonline.com"
    """Entra ID authority (change for sovereign clouds)."""
    resource_manager_endpoint: str = "https://management.azure.com"
    """Azure Resource Manager endpoint (change for sovereign clouds)."""
    ca_bundle: str = ""
    """PEM file to verify the ARM and Entra endpoints with instead of the system store (private clouds, tests)."""
    request_timeout_s: float = 30.0
    """Connect/read timeout of one ARM or Entra request; long operations are never waited on."""
    gc_interval_s: float = 120.0
    """How often agent pools whose Workspace is gone are looked for and deleted."""


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
    preferred_nodes: tuple[str, ...] = ()
    """resource.preferredNodes: existing nodes to use first (bring-your-own)."""
    gpu_memory_gib: float = Field(default=0.0, ge=0)
    """GPU memory (GiB, as GPU Feature Discovery reports it: all GPUs of all ``count`` nodes
    together) the model needs, the planner's usable fraction and per-GPU runtime included (counted
    for one GPU per node); 0: not checked. Bring-your-own provisioners compare it with the nodes'
    GFD labels."""


class NodeCondition(FrozenModel):
    """A condition the provisioner contributes to the workspace status (e.g. NodeClaimReady)."""

    type: ConditionType
    """One of the Workspace CRD's condition types (NodeClaimReady, NodesReady)."""
    status: ConditionStatus
    """True, False or Unknown."""
    reason: str
    """CamelCase reason."""
    message: str
    """What is going on, for people."""


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


class ProvisionerCapabilities(FrozenModel):
    """What a provisioner does, so the core decides by capability instead of by name."""

    creates_nodes: bool = True
    """True: nodes are created from resource.instanceType (node auto-provisioning). False: the
    provisioner uses existing nodes matching resource.labelSelector (bring-your-own), so
    validation requires no instance type and checks no cloud catalogue."""
    required_crds: tuple[str, ...] = ()
    """CustomResourceDefinitions that must be installed (e.g. ``nodeclaims.karpenter.sh``); the
    operator checks them at start-up and watches their objects."""
    watches_nodeclaims: bool = False
    """Whether the provisioner reads NodeClaims (the operator then caches them from a watch)."""


class NeedStatus(FrozenModel):
    """One of a provisioner's needs and whether it is there, for `kaito plugins`."""

    need: str
    """What it needs, as :meth:`NodeProvisioner.needs` says it (e.g. ``CRD nodepools.karpenter.sh``)."""
    present: bool | None
    """True: installed or configured; False: missing; None: cannot be checked here (e.g. no cluster)."""
    detail: str = ""
    """Why it is missing or unknown, and what to do."""


class ApiConflict(KaitoError):
    """An object of that name already exists (HTTP 409)."""


class ApiRefused(KaitoError):
    """The API server refused the object as invalid (HTTP 400/422); the message has its answer."""


class ResourceNotServed(KaitoError):
    """The API server does not serve the resource: its CRD is not installed (HTTP 404 on create or list)."""


class NodeClient(abc.ABC):
    """The cluster operations a provisioner may make (all objects as wire dicts).

    The operator's implementation reads from its watch caches and counts every request in its
    metrics; tests use an in-memory fake.
    """

    @abc.abstractmethod
    def list_nodes(self, match_labels: Mapping[str, str]) -> list[dict[str, Any]]:
        """Nodes carrying all of ``match_labels`` (every node when empty)."""

    @abc.abstractmethod
    def list_nodeclaims(self, match_labels: Mapping[str, str]) -> list[dict[str, Any]]:
        """NodeClaims carrying all of ``match_labels``.

        Raises:
            ResourceNotServed: the NodeClaim CRD is not installed.
        """

    @abc.abstractmethod
    def create_nodeclaim(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """Create a NodeClaim; returns it as stored.

        Raises:
            ApiConflict: the name is taken.
            ApiRefused: the API server refused the object (its answer is in the message).
            ResourceNotServed: the NodeClaim CRD is not installed.
        """

    @abc.abstractmethod
    def delete_nodeclaim(self, name: str) -> None:
        """Delete a NodeClaim (already gone is fine)."""

    def workspace_exists(self, namespace: str, name: str) -> bool:
        """Whether the Workspace still exists (for garbage-collecting cloud objects left behind).

        The default answers True (collect nothing); the operator's client reads its watch cache."""
        return True

    # Generic cluster-scoped objects of the kinds the operator knows (e.g. ``NodePool``). Not
    # abstract, so a client that serves only Nodes and NodeClaims keeps working.

    def list_objects(self, kind: str, match_labels: Mapping[str, str]) -> list[dict[str, Any]]:
        """Cluster-scoped objects of ``kind`` carrying all of ``match_labels``.

        Raises:
            ResourceNotServed: the kind's CRD is not installed (or this client does not serve it).
        """
        raise ResourceNotServed(f"this node client does not serve {kind} objects")

    def create_object(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """Create a cluster-scoped object (its ``kind`` says which); returns it as stored.

        Raises:
            ApiConflict: the name is taken.
            ApiRefused: the API server refused the object (its answer is in the message).
            ResourceNotServed: the kind's CRD is not installed.
        """
        raise ResourceNotServed(f"this node client does not serve {body.get('kind')} objects")

    def patch_object(self, kind: str, name: str, merge_patch: Mapping[str, Any]) -> dict[str, Any]:
        """JSON-merge-patch a cluster-scoped object; returns it as stored.

        Raises:
            ApiRefused: the API server refused the change.
            ResourceNotServed: the kind's CRD is not installed.
        """
        raise ResourceNotServed(f"this node client does not serve {kind} objects")

    def delete_object(self, kind: str, name: str) -> None:
        """Delete a cluster-scoped object (already gone is fine)."""
        raise ResourceNotServed(f"this node client does not serve {kind} objects")


class NodeProvisioner(abc.ABC):
    """A node provisioner, registered by a plugin."""

    name: str
    """Unique name, e.g. ``gpu-provisioner``, ``karpenter``, ``azure-agentpool``, ``byo``."""
    description: str = ""
    """One line for `kaito plugins`."""
    capabilities: ProvisionerCapabilities = ProvisionerCapabilities()
    """What it does (creates nodes or uses existing ones, which CRDs it needs)."""
    install_hint: str = ""
    """What to install when its prerequisites are missing (one sentence, for start-up errors)."""
    settings_model: ClassVar[type[BaseSettings] | None] = None
    """The provisioner's own settings, when it has any: a pydantic-settings model with
    ``env_prefix="KAITO_<SECTION>__"`` and ``env_nested_delimiter="__"`` that the provisioner reads
    from the operator's environment when it is built. The Helm chart offers the settings of the
    provisioners the operator image ships as the values section ``<section>`` (camelCase) and sets
    them as ``KAITO_<SECTION>__<FIELD>`` (nested models as JSON with camelCase keys) only when
    ``nodeProvisioner.name`` is this provisioner (:func:`kaito_core.chart.values.provisioner_sections`)."""

    def needs(self) -> list[str]:
        """What it needs where the operator runs, for `kaito plugins` (e.g. ``CRD nodepools.karpenter.sh``).

        A provisioner with credentials adds them here (override, calling ``super().needs()``)."""
        return [f"CRD {crd}" for crd in self.capabilities.required_crds]

    def need_status(
        self, *, crd_installed: Callable[[str], bool] | None = None, azure: AzureSettings | None = None, **_: Any
    ) -> list[NeedStatus]:
        """Each of :meth:`needs` with whether it is there, for `kaito plugins` (keyword-only and
        additive, like :meth:`configure`). CRDs are asked of ``crd_installed`` (None: no cluster to
        ask); other needs are reported as not checked unless a provisioner overrides this."""
        crd_needs = {f"CRD {crd}": crd for crd in self.capabilities.required_crds}
        found = []
        for need in self.needs():
            crd = crd_needs.get(need)
            if crd is None:
                found.append(NeedStatus(need=need, present=None, detail="not checked by this provisioner"))
            elif crd_installed is None:
                found.append(NeedStatus(need=need, present=None, detail="no cluster to ask (set KUBECONFIG)"))
            else:
                present = crd_installed(crd)
                hint = f": {self.install_hint}" if self.install_hint else ""
                found.append(NeedStatus(need=need, present=present, detail="" if present else f"the cluster does not serve it{hint}"))
        return found

    def missing_prerequisites(self, crd_installed: Callable[[str], bool]) -> list[str]:
        """What is missing for it to work, each an actionable sentence; empty when all is there.

        The operator calls this at start-up (``crd_installed`` asks the API server) and refuses
        to start when anything is missing. A provisioner with credentials also checks them here
        (override, calling ``super().missing_prerequisites()``)."""
        hint = f": {self.install_hint}" if self.install_hint else ""
        return [
            f"node provisioner {self.name} needs the CRD {crd}, which the cluster does not serve{hint}"
            for crd in self.capabilities.required_crds
            if not crd_installed(crd)
        ]

    def configure(self, *, azure: AzureSettings | None = None, **_: Any) -> None:  # noqa: B027 - optional hook
        """Take the operator's settings for provisioners (keyword-only and additive: new sections
        arrive as new keywords). Called once at operator start, for the chosen provisioner only;
        the default ignores them.

        Raises:
            KaitoError: the settings (or the installed packages) cannot work; the operator refuses
                to start with this message.
        """

    @abc.abstractmethod
    def ensure_nodes(self, nodes: NodeClient, request: NodeRequest) -> ProvisionResult:
        """Create what is missing for ``request`` and report readiness (idempotent)."""

    @abc.abstractmethod
    def delete_nodes(self, nodes: NodeClient, *, workspace: str, namespace: str) -> bool:
        """Start deleting everything provisioned for the workspace; True once all of it is gone.

        Idempotent: called again on every retry until it returns True; must find what to delete
        from the cluster (labels), never from memory.
        """

    @abc.abstractmethod
    def node_affinity_terms(self, request: NodeRequest) -> list[dict[str, Any]]:
        """nodeSelectorTerms matchExpressions that pin the workload to this provisioner's nodes."""
