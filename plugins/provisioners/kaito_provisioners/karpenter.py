"""``karpenter``: generic Karpenter-core v1, one NodePool per Workspace.

Works with any Karpenter cloud provider (AKS node auto-provisioning, AWS EKS, kwok): the
NodePool points at a NodeClass the cluster admin created (group/kind/name from
``KAITO_KARPENTER__NODE_CLASS__{GROUP,KIND,NAME}``, default ``karpenter.azure.com``
``AKSNodeClass`` ``default``; the Helm chart's ``karpenter.nodeClass`` values), and Karpenter's
cloud provider turns the NodeClaims it creates into machines.

How the NodePool makes exactly the needed nodes come up and stay:

* ``spec.replicas = count`` (a *static* NodePool, Karpenter's StaticCapacity feature gate):
  Karpenter keeps ``count`` NodeClaims whether or not pods are pending. A dynamic NodePool would
  only launch nodes for pending pods, but the operator creates the workload only once the nodes
  are ready, so nothing would ever come up. ``limits.nodes = count`` caps the pool too.
* ``disruption``: ``budgets: [{nodes: "0"}]`` lets Karpenter voluntarily disrupt no node at all
  (no drift replacement, no expiry, no consolidation) under a running model;
  ``consolidationPolicy: WhenEmpty`` + ``consolidateAfter: Never`` say the same for a dynamic
  reading of the pool, ``expireAfter: Never`` keeps nodes from ageing out, and the template
  annotation ``karpenter.sh/do-not-disrupt: "true"`` lands on every NodeClaim and Node.
* the template carries the instance-type requirement, ``kubernetes.io/os=linux``, the
  ``sku=gpu:NoSchedule`` taint (GPU workspaces) and the labels ``kaito.sh/workspace`` /
  ``kaito.sh/workspacenamespace`` plus the Workspace's matchLabels, so the NodeClaims and Nodes
  Karpenter creates are the operator's (its watch caches select NodeClaims by those labels).

Readiness comes from the NodeClaims labelled ``karpenter.sh/nodepool=<pool>``: the first
lifecycle condition that is not True (e.g. ``Launched=False (InsufficientCapacity): ...``) is
what the Workspace reports. The NodePool is read only while the NodeClaims are not all ready, so
a ready Workspace costs no API request. Deletion deletes the NodePool and reports done only
when its NodeClaims and Nodes are gone too (Karpenter terminates them).
"""

from __future__ import annotations

from typing import Any

from kaito_core.api.reasons import Reason
from kaito_core.api.workspace import ConditionType
from kaito_core.errors import ProvisioningError
from kaito_core.provisioners import (
    NODECLAIM_CRD,
    NODEPOOL_CRD,
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
from kaito_provisioners.nodeclaim import first_failing_condition, is_deleting, owner_labels
from kaito_provisioners.nodepool import ANNOTATION_SPEC_HASH, KIND, KarpenterSettings, build_nodepool, nodepool_name
from kaito_provisioners.nodes import NodeFacts, condition

LABEL_NODEPOOL = "karpenter.sh/nodepool"
CRD_MISSING = (
    "the Karpenter NodePool/NodeClaim CRDs (nodepools.karpenter.sh, nodeclaims.karpenter.sh, version v1) "
    "are not served; install Karpenter (v1, StaticCapacity feature gate on) in the cluster, or choose "
    "another node provisioner (nodeProvisioner.name)"
)


class KarpenterProvisioner(NodeProvisioner):
    """One static Karpenter NodePool per Workspace."""

    name = "karpenter"
    description = "generic Karpenter-core v1: one NodePool per workspace (static replicas, no voluntary disruption)"
    capabilities = ProvisionerCapabilities(creates_nodes=True, required_crds=(NODEPOOL_CRD, NODECLAIM_CRD), watches_nodeclaims=True)
    install_hint = "install Karpenter v1 (with the StaticCapacity feature gate) and its cloud provider, or its CRDs from charts/kaito/crds"
    settings_model = KarpenterSettings

    def __init__(self, settings: KarpenterSettings | None = None) -> None:
        self.settings = settings or KarpenterSettings()

    def ensure_nodes(self, nodes: NodeClient, request: NodeRequest) -> ProvisionResult:
        """Create or update the NodePool while its NodeClaims are not all ready; report readiness."""
        pool = nodepool_name(request.workspace, request.namespace)
        try:
            claims = [c for c in nodes.list_nodeclaims({LABEL_NODEPOOL: pool}) if not is_deleting(c)]
        except ResourceNotServed as exc:
            raise ProvisioningError(CRD_MISSING, reason=Reason.KARPENTER_CRD_MISSING) from exc
        ready_claims = [c for c in claims if (condition(c, "Ready") or {}).get("status") == "True"]
        if len(claims) != request.count or len(ready_claims) < request.count:
            self._apply_nodepool(nodes, request)
        problems: list[str] = []
        ready_nodes: list[str] = []
        node_facts = {f.name: f for f in (NodeFacts.of(n) for n in nodes.list_nodes({LABEL_NODEPOOL: pool}))}
        for claim in sorted(claims, key=lambda c: c["metadata"]["name"]):
            name = claim["metadata"]["name"]
            if claim not in ready_claims:
                problems.append(f"NodeClaim {name} is not ready: {first_failing_condition(claim) or 'Ready is not True'}")
                continue
            facts = node_facts.get((claim.get("status") or {}).get("nodeName") or "")
            if facts is None:
                problems.append(f"NodeClaim {name} is Ready but its node is not found")
            elif not facts.usable(gpu=request.gpu):
                problems.append(f"NodeClaim {name}: {facts.why_unusable(gpu=request.gpu)}")
            else:
                ready_nodes.append(facts.name)
        if len(claims) < request.count:
            problems.append(f"NodePool {pool} has {len(claims)}/{request.count} NodeClaims; waiting for Karpenter to create them")
        claims_ok = len(ready_claims) >= request.count
        ready = claims_ok and len(ready_nodes) >= request.count
        summary = f"{len(ready_nodes)}/{request.count} nodes of NodePool {pool} ready" + (f"; {'; '.join(problems)}" if problems else "")
        return ProvisionResult(
            ready_nodes=tuple(sorted(ready_nodes)[: request.count]),
            ready=ready,
            reason="" if ready else (Reason.NODECLAIM_NOT_READY if not claims_ok else Reason.NODE_NOT_READY),
            message="" if ready else summary[:1024],
            conditions=(
                NodeCondition(
                    type=ConditionType.NODE_CLAIM_READY,
                    status="True" if claims_ok else "False",
                    reason=Reason.NODECLAIMS_READY if claims_ok else Reason.NODECLAIM_NOT_READY,
                    message=f"Enough NodeClaims of NodePool {pool} are ready" if claims_ok else summary[:1024],
                ),
            ),
            retry_after_s=5.0,
        )

    def delete_nodes(self, nodes: NodeClient, *, workspace: str, namespace: str) -> bool:
        """Delete the NodePool; True once it, its NodeClaims and its Nodes are gone."""
        pool = nodepool_name(workspace, namespace)
        try:
            pools = nodes.list_objects(KIND, owner_labels(workspace, namespace))
            claims = nodes.list_nodeclaims({LABEL_NODEPOOL: pool})
        except ResourceNotServed:
            return True  # no Karpenter CRDs: nothing of ours can exist
        for obj in pools:
            if not is_deleting(obj):
                nodes.delete_object(KIND, obj["metadata"]["name"])
        return not pools and not claims and not nodes.list_nodes({LABEL_NODEPOOL: pool})

    def node_affinity_terms(self, request: NodeRequest) -> list[dict[str, Any]]:
        """Pin pods to the workspace's NodePool."""
        return [{"key": LABEL_NODEPOOL, "operator": "In", "values": [nodepool_name(request.workspace, request.namespace)]}]

    def _apply_nodepool(self, nodes: NodeClient, request: NodeRequest) -> None:
        """Create the NodePool, or merge-patch it when the spec the operator wrote has changed."""
        desired = build_nodepool(request, self.settings.node_class)
        name = desired["metadata"]["name"]
        try:
            found = [p for p in nodes.list_objects(KIND, owner_labels(request.workspace, request.namespace)) if p["metadata"]["name"] == name]
            if not found:
                nodes.create_object(desired)
                return
            have = (found[0]["metadata"].get("annotations") or {}).get(ANNOTATION_SPEC_HASH)
            if have != desired["metadata"]["annotations"][ANNOTATION_SPEC_HASH] and not is_deleting(found[0]):
                nodes.patch_object(KIND, name, {"metadata": {"annotations": desired["metadata"]["annotations"]}, "spec": desired["spec"]})
        except ApiConflict:
            return  # created meanwhile; the next round reads it
        except ResourceNotServed as exc:
            raise ProvisioningError(CRD_MISSING, reason=Reason.KARPENTER_CRD_MISSING) from exc
        except ApiRefused as exc:
            raise ProvisioningError(
                f"the API server refused NodePool {name}: {exc}; check the NodeClass settings "
                f"(KAITO_KARPENTER__NODE_CLASS__*) and the Karpenter version (v1 with static NodePools)",
                reason=Reason.NODEPOOL_INVALID, retryable=False,
            ) from exc
