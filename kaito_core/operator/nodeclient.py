"""The operator's :class:`~kaito_core.provisioners.NodeClient`: what provisioners may do, over
:class:`~kaito_core.operator.kube.Kube` (watch caches for reads, counted requests for writes)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from kubernetes import client

from kaito_core.operator.kube import Kube
from kaito_core.provisioners import ApiConflict, ApiRefused, NodeClient, ResourceNotServed

_SERVED = {"NodeClaim": "karpenter.sh/v1 nodeclaims", "NodePool": "karpenter.sh/v1 nodepools"}


@contextmanager
def _typed_errors(kind: str, name: str = "") -> Iterator[None]:
    """Translate the API server's refusals into the NodeClient's typed errors."""
    try:
        yield
    except client.ApiException as exc:
        if exc.status == 409:
            raise ApiConflict(f"{kind} {name} already exists") from exc
        if exc.status == 404:
            raise ResourceNotServed(f"the API server does not serve {_SERVED.get(kind, kind)}") from exc
        if exc.status in (400, 422):
            raise ApiRefused(str(exc.body or exc.reason)) from exc
        raise


class KubeNodeClient(NodeClient):
    """Nodes, NodeClaims and NodePools through the operator's :class:`Kube`."""

    def __init__(self, kube: Kube) -> None:
        self.kube = kube

    def list_nodes(self, match_labels: Mapping[str, str]) -> list[dict[str, Any]]:
        """Nodes carrying all of ``match_labels``."""
        return self.kube.find("Node", match_labels)

    def list_nodeclaims(self, match_labels: Mapping[str, str]) -> list[dict[str, Any]]:
        """NodeClaims carrying all of ``match_labels`` (ResourceNotServed without the CRD)."""
        return self.list_objects("NodeClaim", match_labels)

    def create_nodeclaim(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """Create a NodeClaim, translating the API server's refusals into typed errors."""
        return self.create_object(body)

    def delete_nodeclaim(self, name: str) -> None:
        """Delete a NodeClaim (already gone is fine)."""
        self.kube.delete("NodeClaim", "", name)

    def workspace_exists(self, namespace: str, name: str) -> bool:
        """Whether the Workspace exists (from the watch cache)."""
        return self.kube.get("Workspace", namespace, name) is not None

    def list_objects(self, kind: str, match_labels: Mapping[str, str]) -> list[dict[str, Any]]:
        """Cluster-scoped objects of ``kind`` (NodeClaim, NodePool) carrying ``match_labels``."""
        with _typed_errors(kind):
            return self.kube.find(kind, match_labels)

    def create_object(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """Create a cluster-scoped object, translating refusals into typed errors."""
        with _typed_errors(str(body["kind"]), body["metadata"]["name"]):
            return self.kube.create(dict(body))

    def patch_object(self, kind: str, name: str, merge_patch: Mapping[str, Any]) -> dict[str, Any]:
        """JSON-merge-patch a cluster-scoped object."""
        with _typed_errors(kind, name):
            return self.kube.merge_patch(kind, "", name, merge_patch)

    def delete_object(self, kind: str, name: str) -> None:
        """Delete a cluster-scoped object (already gone is fine)."""
        self.kube.delete(kind, "", name)
