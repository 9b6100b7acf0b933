"""An in-memory stand-in for the API server at the operator's transport (``Kube(send=...)``):
objects by path, label-selector lists, create/update/patch/delete, 404/409 like the real one.
Unit tests of the reconciler use it; the e2e suite runs the real API server."""

from __future__ import annotations

import copy
import itertools
from typing import Any

from kubernetes import client

from kaito_core.operator.metrics import api_verb_and_resource


class FakeApiServer:
    """Answers :func:`kaito_core.operator.kube.request` calls from a dict of objects."""

    def __init__(self, *objects: dict[str, Any], ready_workloads: bool = True) -> None:
        self.objects: dict[str, dict[str, Any]] = {}
        self.calls: list[tuple[str, str]] = []
        self.created: list[dict[str, Any]] = []
        self.deletes: list[tuple[str, str | None]] = []
        """(path, propagationPolicy) of every DELETE."""
        self.ready_workloads = ready_workloads
        self._versions = itertools.count(1)
        for obj in objects:
            self.put(obj)

    @staticmethod
    def path_of(obj: dict[str, Any]) -> str:
        kind, meta = obj["kind"], obj["metadata"]
        plural = {"NodeClaim": "nodeclaims", "Node": "nodes", "Deployment": "deployments", "StatefulSet": "statefulsets",
                  "Service": "services", "Pod": "pods", "Workspace": "workspaces", "Secret": "secrets", "Job": "jobs",
                  "ConfigMap": "configmaps"}[kind]
        group = {"NodeClaim": "/apis/karpenter.sh/v1", "Deployment": "/apis/apps/v1", "StatefulSet": "/apis/apps/v1",
                 "Workspace": "/apis/kaito.sh/v1beta1", "Job": "/apis/batch/v1"}.get(kind, "/api/v1")
        ns = f"/namespaces/{meta['namespace']}" if meta.get("namespace") and kind not in ("NodeClaim", "Node") else ""
        return f"{group}{ns}/{plural}/{meta['name']}"

    def put(self, obj: dict[str, Any]) -> dict[str, Any]:
        stored = copy.deepcopy(obj)
        stored["metadata"]["resourceVersion"] = str(next(self._versions))
        self.objects[self.path_of(stored)] = stored
        return copy.deepcopy(stored)

    def __call__(self, api: Any, method: str, path: str, *, body: Any = None, query: dict[str, str] | None = None, **_: Any) -> dict[str, Any]:
        self.calls.append((method, path))
        if method == "DELETE":
            self.deletes.append((path, (body or {}).get("propagationPolicy")))
        verb, _resource = api_verb_and_resource(method, path)
        if verb == "list":
            selector = dict(p.split("=", 1) for p in (query or {}).get("labelSelector", "").split(",") if p)
            items = [
                copy.deepcopy(o) for p, o in sorted(self.objects.items())
                if p.rsplit("/", 1)[0] == path and all((o["metadata"].get("labels") or {}).get(k) == v for k, v in selector.items())
            ]
            return {"items": items}
        if verb == "get":
            if path not in self.objects:
                raise client.ApiException(status=404, reason="Not Found")
            return copy.deepcopy(self.objects[path])
        if method == "POST":
            obj = copy.deepcopy(body)
            if self.path_of(obj) in self.objects:
                raise client.ApiException(status=409, reason="AlreadyExists")
            self.created.append(copy.deepcopy(body))
            obj["metadata"]["generation"] = 1
            if self.ready_workloads and obj["kind"] in ("Deployment", "StatefulSet"):
                n = obj["spec"].get("replicas", 1)
                obj["status"] = {"observedGeneration": 1, "replicas": n, "readyReplicas": n, "updatedReplicas": n}
            return self.put(obj)
        if method == "PUT":
            return self.put(body)
        if method == "DELETE":
            if self.objects.pop(path, None) is None:
                raise client.ApiException(status=404, reason="Not Found")
            return {"kind": "Status", "status": "Success"}
        return copy.deepcopy(body) if isinstance(body, dict) else {}  # PATCH of the workspace and its status
