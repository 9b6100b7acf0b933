"""The operator's :class:`~kaito_core.provisioners.NodeClient`: what provisioners may do, over
:class:`~kaito_core.operator.kube.Kube` (watch caches for reads, counted requests for writes)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kubernetes import client

from kaito_core.operator.kube import Kube
from kaito_core.provisioners import ApiConflict, ApiRefused, NodeClient, ResourceNotServed


class KubeNodeClient(NodeClient):
    """Nodes and NodeClaims through the operator's :class:`Kube`."""

    def __init__(self, kube: Kube) -> None:
        self.kube = kube

    def list_nodes(self, match_labels: Mapping[str, str]) -> list[dict[str, Any]]:
        """Nodes carrying all of ``match_labels``."""
        return self.kube.find("Node", match_labels)

    def list_nodeclaims(self, match_labels: Mapping[str, str]) -> list[dict[str, Any]]:
        """NodeClaims carrying all of ``match_labels`` (ResourceNotServed without the CRD)."""
        try:
            return self.kube.find("NodeClaim", match_labels)
        except client.ApiException as exc:
            if exc.status == 404:
                raise ResourceNotServed("the API server does not serve karpenter.sh/v1 nodeclaims") from exc
            raise

    def create_nodeclaim(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """Create a NodeClaim, translating the API server's refusals into typed errors."""
        try:
            return self.kube.create(dict(body))
        except client.ApiException as exc:
            if exc.status == 409:
                raise ApiConflict(f"NodeClaim {body['metadata']['name']} already exists") from exc
            if exc.status == 404:
                raise ResourceNotServed("the API server does not serve karpenter.sh/v1 nodeclaims") from exc
            if exc.status in (400, 422):
                raise ApiRefused(str(exc.body or exc.reason)) from exc
            raise

    def delete_nodeclaim(self, name: str) -> None:
        """Delete a NodeClaim (already gone is fine)."""
        self.kube.delete("NodeClaim", "", name)

    def workspace_exists(self, namespace: str, name: str) -> bool:
        """Whether the Workspace exists (from the watch cache)."""
        return self.kube.get("Workspace", namespace, name) is not None
