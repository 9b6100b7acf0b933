"""``gpu-provisioner``: Karpenter NodeClaims served by Azure's gpu-provisioner (KAITO's default).

The operator creates one NodeClaim per node (shape: :mod:`kaito_provisioners.nodeclaim`);
gpu-provisioner creates a one-node AKS agent pool for each, and walks the NodeClaim's
conditions Launched -> Registered -> Initialized -> Ready. Everything is found again by the
labels ``kaito.sh/workspace`` / ``kaito.sh/workspacenamespace``, never from memory, so an
operator restart at any point neither duplicates nor orphans NodeClaims.
"""

from __future__ import annotations

from typing import Any

from kaito_core.api.reasons import Reason
from kaito_core.api.workspace import ConditionType
from kaito_core.errors import ProvisioningError
from kaito_core.provisioners import (
    NODECLAIM_CRD,
    ApiConflict,
    ApiRefused,
    NodeClient,
    NodeCondition,
    NodeProvisioner,
    NodeRequest,
    ProvisionerCapabilities,
    ProvisionResult,
    ResourceNotServed,
)
from kaito_provisioners.nodeclaim import (
    build_nodeclaim,
    first_failing_condition,
    is_deleting,
    nodeclaim_name,
    owner_labels,
)
from kaito_provisioners.nodes import NodeFacts, condition

NODECLAIM_READY = ConditionType.NODE_CLAIM_READY
CRD_MISSING = (
    "the Karpenter NodeClaim CRD (nodeclaims.karpenter.sh, version v1) is not installed; install "
    "charts/kaito/crds/karpenter.sh_nodeclaims.yaml and Azure's gpu-provisioner, or run the operator "
    "with --node-provisioner byo for bring-your-own nodes"
)


class GpuProvisioner(NodeProvisioner):
    """Provisions nodes through Karpenter NodeClaims (Azure gpu-provisioner)."""

    name = "gpu-provisioner"
    description = "Karpenter karpenter.sh/v1 NodeClaims, served by Azure's gpu-provisioner (one AKS agent pool per node)"
    capabilities = ProvisionerCapabilities(creates_nodes=True, required_crds=(NODECLAIM_CRD,), watches_nodeclaims=True)
    install_hint = "install charts/kaito/crds/karpenter.sh_nodeclaims.yaml and Azure's gpu-provisioner"

    # -- reads ---------------------------------------------------------------------------------

    @staticmethod
    def list_nodeclaims(nodes: NodeClient, *, workspace: str, namespace: str) -> list[dict[str, Any]]:
        """The workspace's NodeClaims (found by labels), sorted by name.

        Raises:
            ProvisioningError: the NodeClaim CRD is not installed.
        """
        try:
            items = nodes.list_nodeclaims(owner_labels(workspace, namespace))
        except ResourceNotServed as exc:
            raise ProvisioningError(CRD_MISSING, reason=Reason.NODECLAIM_CRD_MISSING) from exc
        return sorted(items, key=lambda c: c["metadata"]["name"])

    # -- the interface -------------------------------------------------------------------------

    def ensure_nodes(self, nodes: NodeClient, request: NodeRequest) -> ProvisionResult:
        """Create missing NodeClaims, delete surplus ones, and report readiness."""
        claims = self.list_nodeclaims(nodes, workspace=request.workspace, namespace=request.namespace)
        live = [c for c in claims if not is_deleting(c)]

        created: list[str] = []
        for _ in range(request.count - len(live)):
            created.append(self._create(nodes, request))
        surplus = self._surplus(live, request.count)
        for claim in surplus:
            nodes.delete_nodeclaim(claim["metadata"]["name"])
        live = [c for c in live if c not in surplus]

        node_facts = {
            n["metadata"]["name"]: NodeFacts.of(n) for n in nodes.list_nodes(owner_labels(request.workspace, request.namespace))
        }
        ready_nodes: list[str] = []
        problems: list[str] = []
        ready_claims = 0
        for claim in live:
            name = claim["metadata"]["name"]
            ready_cond = condition(claim, "Ready")
            if not (ready_cond and ready_cond.get("status") == "True"):
                problems.append(f"NodeClaim {name} is not ready: {first_failing_condition(claim) or 'Ready is not True'}")
                continue
            ready_claims += 1
            node_name = (claim.get("status") or {}).get("nodeName")
            facts = node_facts.get(node_name or "")
            if facts is None:
                problems.append(f"NodeClaim {name} is Ready but its node {node_name or '(status.nodeName empty)'} is not found")
            elif request.instance_type and facts.instance_type not in (None, request.instance_type):
                problems.append(f"node {facts.name} of NodeClaim {name} has instance type {facts.instance_type}, expected {request.instance_type}")
            elif not facts.usable(gpu=request.gpu):
                problems.append(f"NodeClaim {name}: {facts.why_unusable(gpu=request.gpu)}")
            else:
                ready_nodes.append(facts.name)
        for name in created:
            problems.append(f"NodeClaim {name} created; waiting for the node provisioner to launch it")

        claims_ok = ready_claims >= request.count and not created
        claim_cond = NodeCondition(
            type=NODECLAIM_READY,
            status="True" if claims_ok else "False",
            reason=Reason.NODECLAIMS_READY if claims_ok else Reason.NODECLAIM_NOT_READY,
            message="Enough NodeClaims are ready" if claims_ok else self._summary(problems, ready_claims, request.count),
        )
        ready = len(ready_nodes) >= request.count
        return ProvisionResult(
            ready_nodes=tuple(sorted(ready_nodes)),
            ready=ready,
            reason="" if ready else (Reason.NODECLAIM_NOT_READY if not claims_ok else Reason.NODE_NOT_READY),
            message="" if ready else self._summary(problems, len(ready_nodes), request.count),
            conditions=(claim_cond,),
            retry_after_s=2.0 if created else 5.0,
        )

    def delete_nodes(self, nodes: NodeClient, *, workspace: str, namespace: str) -> bool:
        """Delete the workspace's NodeClaims (gpu-provisioner then deletes the agent pools)."""
        try:
            claims = self.list_nodeclaims(nodes, workspace=workspace, namespace=namespace)
        except ProvisioningError:
            return True  # no NodeClaim CRD: nothing of ours can exist (upstream issue #1899)
        for claim in claims:
            if not is_deleting(claim):
                nodes.delete_nodeclaim(claim["metadata"]["name"])
        return not claims

    def node_affinity_terms(self, request: NodeRequest) -> list[dict[str, Any]]:
        """Pin pods to this workspace's nodes: kaito.sh/workspace(+namespace) and the matchLabels."""
        terms = [{"key": k, "operator": "In", "values": [v]} for k, v in owner_labels(request.workspace, request.namespace).items()]
        terms += [{"key": k, "operator": "In", "values": [v]} for k, v in sorted(request.match_labels.items())]
        return terms

    # -- helpers -------------------------------------------------------------------------------

    @staticmethod
    def _create(nodes: NodeClient, request: NodeRequest) -> str:
        for _attempt in range(5):
            name = nodeclaim_name(request.namespace, request.workspace)
            try:
                nodes.create_nodeclaim(build_nodeclaim(request, name))
                return name
            except ApiConflict:
                continue  # name collision: draw another
            except ResourceNotServed as exc:
                raise ProvisioningError(CRD_MISSING, reason=Reason.NODECLAIM_CRD_MISSING) from exc
            except ApiRefused as exc:
                raise ProvisioningError(
                    f"the API server refused NodeClaim {name}: {exc}", reason=Reason.NODECLAIM_INVALID, retryable=False
                ) from exc
        raise ProvisioningError("could not find a free NodeClaim name in 5 tries", reason=Reason.NODECLAIM_NAME_COLLISION)

    @staticmethod
    def _surplus(live: list[dict[str, Any]], count: int) -> list[dict[str, Any]]:
        """NodeClaims beyond ``count`` (only after a bug or a race): the least advanced, newest first."""
        if len(live) <= count:
            return []

        def progress(c: dict[str, Any]) -> int:
            conds = {x.get("type"): x.get("status") for x in (c.get("status") or {}).get("conditions") or []}
            return sum(conds.get(t) == "True" for t in ("Launched", "Registered", "Initialized", "Ready"))

        newest_first = sorted(live, key=lambda c: c["metadata"].get("creationTimestamp", ""), reverse=True)
        least_advanced = sorted(newest_first, key=progress)  # stable: newest first within a level
        return least_advanced[: len(live) - count]

    @staticmethod
    def _summary(problems: list[str], ready: int, count: int) -> str:
        head = f"{ready}/{count} nodes ready"
        return f"{head}; " + "; ".join(problems) if problems else head
