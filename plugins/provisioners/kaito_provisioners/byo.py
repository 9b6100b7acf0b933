"""``byo``: bring-your-own nodes. Provisions nothing; uses Ready nodes that match the selector.

The nodes are the user's: this provisioner only reads them, it never creates, deletes, labels or
taints a node. It picks ``count`` usable nodes (Ready, schedulable, with ``nvidia.com/gpu``
capacity for GPU models) matching ``resource.labelSelector``, ``resource.preferredNodes``
first. The picked nodes must be uniform (same GPU model, count and memory per the GPU Feature
Discovery labels ``nvidia.com/gpu.product`` / ``.count`` / ``.memory``); when GFD labels are
there, their GPU memory together must hold the model. Every "not yet" says what to do.
"""

from __future__ import annotations

from itertools import groupby
from typing import Any

from kaito_core.api.reasons import Reason
from kaito_core.provisioners import NodeClient, NodeProvisioner, NodeRequest, ProvisionerCapabilities, ProvisionResult
from kaito_provisioners.nodes import NodeFacts, matches_expressions, selector_string


class ByoProvisioner(NodeProvisioner):
    """Uses existing nodes that match the workspace's labelSelector."""

    name = "byo"
    description = "bring-your-own nodes: no provisioning; uses Ready nodes matching resource.labelSelector (preferredNodes first)"
    capabilities = ProvisionerCapabilities(creates_nodes=False)

    def ensure_nodes(self, nodes: NodeClient, request: NodeRequest) -> ProvisionResult:
        """Pick ``count`` uniform usable matching nodes, preferred first; say what is missing."""
        if not request.match_labels:
            return ProvisionResult(
                reason=Reason.NO_NODE_SELECTOR,
                message="resource.labelSelector.matchLabels is empty; label your nodes and select them there",
                retry_after_s=30.0,
            )
        selector = selector_string(request.match_labels)
        matching = [
            NodeFacts.of(n) for n in nodes.list_nodes(request.match_labels)
            if matches_expressions((n.get("metadata") or {}).get("labels") or {}, request.match_expressions)
        ]
        preferred = {name: i for i, name in enumerate(request.preferred_nodes)}
        usable = sorted((f for f in matching if f.usable(gpu=request.gpu)), key=lambda f: (preferred.get(f.name, len(preferred)), f.name))
        kind = "Ready GPU node(s)" if request.gpu else "Ready node(s)"
        if len(usable) < request.count:
            if not matching:
                message = f"not enough matching nodes: no nodes match the label selector {selector}; label {request.count} {kind} with it"
            else:
                why = "; ".join(f.why_unusable(gpu=request.gpu) for f in matching if not f.usable(gpu=request.gpu))
                message = (f"not enough matching nodes: {len(usable)}/{request.count} nodes matching {selector} are usable"
                           + (f" ({why})" if why else "") + f"; label {request.count - len(usable)} more {kind} with {selector}")
            return ProvisionResult(ready_nodes=tuple(f.name for f in usable), reason=Reason.NOT_ENOUGH_NODES, message=message, retry_after_s=10.0)
        groups = [list(g) for _, g in groupby(sorted(usable, key=NodeFacts.gpu_shape), key=NodeFacts.gpu_shape)] if request.gpu else [usable]
        big = [g for g in groups if len(g) >= request.count]
        if not big:
            shapes = "; ".join(f"{len(g)} with {g[0].gpu_shape()} ({', '.join(f.name for f in g)})" for g in groups)
            return ProvisionResult(
                reason=Reason.NODES_NOT_UNIFORM,
                message=(f"the {len(usable)} usable nodes matching {selector} are not uniform: {shapes}; the workload needs "
                         f"{request.count} nodes with the same GPUs: narrow the label selector or label other nodes"),
                retry_after_s=30.0,
            )
        # The group holding the most preferred node wins; sorted() kept preference order within groups.
        chosen = min(big, key=lambda g: min(preferred.get(f.name, len(preferred)) for f in g))
        chosen = sorted(chosen, key=lambda f: (preferred.get(f.name, len(preferred)), f.name))[: request.count]
        if request.gpu and request.gpu_memory_gib and chosen[0].gpu_count and chosen[0].gpu_memory_mib:
            have = sum(f.gpu_memory_gib() for f in chosen)
            if have < request.gpu_memory_gib:
                return ProvisionResult(
                    reason=Reason.NODES_TOO_SMALL,
                    message=(f"the model needs {request.gpu_memory_gib:g} GiB of GPU memory but {request.count} node(s) with "
                             f"{chosen[0].gpu_shape()} have {have:g} GiB; select nodes with larger GPUs or raise resource.count"),
                    retry_after_s=30.0,
                )
        return ProvisionResult(ready_nodes=tuple(sorted(f.name for f in chosen)), ready=True)

    def delete_nodes(self, nodes: NodeClient, *, workspace: str, namespace: str) -> bool:
        """Nothing was provisioned, so nothing to delete (the user's nodes are never touched)."""
        return True

    def node_affinity_terms(self, request: NodeRequest) -> list[dict[str, Any]]:
        """The workspace's matchLabels (In) and matchExpressions."""
        terms: list[dict[str, Any]] = [{"key": k, "operator": "In", "values": [v]} for k, v in sorted(request.match_labels.items())]
        terms += [dict(e) for e in request.match_expressions]
        return terms
