"""``byo``: bring-your-own nodes. Provisions nothing; ready when enough labelled nodes are ready."""

from __future__ import annotations

from typing import Any

from kaito_core.provisioners import NodeClient, NodeProvisioner, NodeRequest, ProvisionerCapabilities, ProvisionResult
from kaito_provisioners.nodes import NodeFacts, matches_expressions, selector_string


class ByoProvisioner(NodeProvisioner):
    """Uses existing nodes that match the workspace's labelSelector."""

    name = "byo"
    description = "bring-your-own nodes: no provisioning; uses Ready nodes matching resource.labelSelector"
    capabilities = ProvisionerCapabilities(creates_nodes=False)

    def ensure_nodes(self, nodes: NodeClient, request: NodeRequest) -> ProvisionResult:
        """Count the Ready (GPU) nodes that match the selector."""
        if not request.match_labels:
            return ProvisionResult(
                reason="NoNodeSelector",
                message="resource.labelSelector.matchLabels is empty; label your nodes and select them there",
                retry_after_s=30.0,
            )
        matching = [
            n for n in nodes.list_nodes(request.match_labels)
            if matches_expressions((n.get("metadata") or {}).get("labels") or {}, request.match_expressions)
        ]
        facts = [NodeFacts.of(n) for n in matching]
        usable = sorted(f.name for f in facts if f.usable(gpu=request.gpu))
        if len(usable) >= request.count:
            return ProvisionResult(ready_nodes=tuple(usable[: request.count]), ready=True)
        selector = selector_string(request.match_labels)
        if not facts:
            message = f"no nodes match the label selector {selector}; label {request.count} node(s) with it"
        else:
            why = "; ".join(f.why_unusable(gpu=request.gpu) for f in facts if not f.usable(gpu=request.gpu))
            message = f"{len(usable)}/{request.count} nodes matching {selector} are ready" + (f": {why}" if why else "")
        return ProvisionResult(ready_nodes=tuple(usable), ready=False, reason="NodeNotReady", message=message, retry_after_s=10.0)

    def delete_nodes(self, nodes: NodeClient, *, workspace: str, namespace: str) -> bool:
        """Nothing was provisioned, so nothing to delete."""
        return True

    def node_affinity_terms(self, request: NodeRequest) -> list[dict[str, Any]]:
        """The workspace's matchLabels (In) and matchExpressions."""
        terms: list[dict[str, Any]] = [{"key": k, "operator": "In", "values": [v]} for k, v in sorted(request.match_labels.items())]
        terms += [dict(e) for e in request.match_expressions]
        return terms
