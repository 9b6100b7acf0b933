"""Reads and writes of the operator's objects over the synchronous ``kubernetes`` client.

Reads come from the watch caches (:mod:`kaito_core.operator.cache`) once kopf has bound them,
so a steady-state reconcile makes no request at all. Every request goes through
:func:`request`: plain JSON dicts over the client's ApiClient (its auth, TLS and connection
pool), skipping the client's model (de)serialisation. Writes happen only when the applied-hash
annotation of the existing object differs from the desired one.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Mapping
from typing import Any

from kubernetes import client, config

from kaito_core.api.workspace import GROUP, PLURAL, STORAGE_VERSION
from kaito_core.errors import NotReadyError, ProvisioningError
from kaito_core.operator.cache import ObjectCache
from kaito_core.operator.manifests import ANNOTATION_APPLIED_HASH


def make_api_client(kubeconfig: str | None = None) -> client.ApiClient:
    """An ApiClient from in-cluster config when inside a pod, else from kubeconfig/$KUBECONFIG."""
    cfg = client.Configuration()
    try:
        config.load_incluster_config(client_configuration=cfg)  # type: ignore[no-untyped-call]
    except config.ConfigException:
        config.load_kube_config(config_file=kubeconfig, client_configuration=cfg)  # type: ignore[no-untyped-call]
    cfg.connection_pool_maxsize = 32
    return client.ApiClient(cfg)


def status_of(exc: BaseException) -> int | None:
    """HTTP status of a kubernetes ApiException, else None."""
    return exc.status if isinstance(exc, client.ApiException) else None


def request(
    api: client.ApiClient,
    method: str,
    path: str,
    *,
    body: Any = None,
    query: dict[str, str] | None = None,
    content_type: str = "application/json",
) -> dict[str, Any]:
    """One raw JSON request through ``api`` (its auth, TLS and connection pool).

    The generated typed methods of the client turn dict bodies into models (slow, and they
    drop fields the client version does not know); this sends the dict as it is.

    Raises:
        kubernetes.client.ApiException: a non-2xx answer (its ``status`` says which).
    """
    params = api.param_serialize(
        method=method,
        resource_path=path,
        query_params=list((query or {}).items()),
        header_params={"Accept": "application/json", "Content-Type": content_type},
        body=body,
        auth_settings=["BearerToken"],
    )
    resp = api.call_api(*params)
    raw: bytes = resp.read() or b""  # type: ignore[no-untyped-call]
    if not 200 <= resp.status <= 299:
        raise client.ApiException.from_response(http_resp=resp, body=raw.decode("utf-8", "replace"), data=None)
    data: dict[str, Any] = json.loads(raw) if raw else {}
    return data


_WS_PATH = f"/apis/{GROUP}/{STORAGE_VERSION}/namespaces/{{ns}}/{PLURAL}"
_PATHS = {
    "Deployment": "/apis/apps/v1/namespaces/{ns}/deployments",
    "StatefulSet": "/apis/apps/v1/namespaces/{ns}/statefulsets",
    "Service": "/api/v1/namespaces/{ns}/services",
    "Pod": "/api/v1/namespaces/{ns}/pods",
    "Secret": "/api/v1/namespaces/{ns}/secrets",
    "ConfigMap": "/api/v1/namespaces/{ns}/configmaps",
    "Job": "/apis/batch/v1/namespaces/{ns}/jobs",
    "Node": "/api/v1/nodes",
    "NodeClaim": "/apis/karpenter.sh/v1/nodeclaims",
    "Workspace": "/apis/kaito.sh/v1beta1/namespaces/{ns}/workspaces",
    "NodePool": "/apis/karpenter.sh/v1/nodepools",
}
Send = Callable[..., dict[str, Any]]
"""The transport: :func:`request`'s signature (tests pass an in-memory fake API server)."""


def _path(kind: str, namespace: str = "") -> str:
    return _PATHS[kind].format(ns=namespace)


def _selector(match_labels: Mapping[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(match_labels.items()))


class Kube:
    """The API calls the operator makes: reads from the watch caches when they are bound (else
    from the API server), writes to the API server (remembered in the caches), every request
    counted through ``on_request``."""

    def __init__(
        self,
        api: client.ApiClient | None,
        on_request: Callable[[str, str], None] | None = None,
        *,
        cache: ObjectCache | None = None,
        send: Send = request,
    ) -> None:
        self.api = api
        self.on_request = on_request
        """Called with (HTTP method, path) before each request (the operator counts them)."""
        self.cache = cache or ObjectCache()
        self._send = send

    def _request(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        if self.on_request is not None:
            self.on_request(method, path)
        return self._send(self.api, method, path, **kwargs)

    # -- reads ----------------------------------------------------------------------------------

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        """The object, or None when it does not exist."""
        if self.cache.serves(kind):
            return self.cache.get(kind, namespace, name)
        try:
            return self._request("GET", f"{_path(kind, namespace)}/{name}")
        except client.ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def secret_value(self, namespace: str, name: str, key: str) -> str | None:
        """The decoded value of ``key`` in Secret ``namespace/name`` (None when either is missing).

        Read straight from the API server (Secrets are never cached) and never logged."""
        secret = self.get("Secret", namespace, name)
        raw = ((secret or {}).get("data") or {}).get(key)
        if not isinstance(raw, str):
            return None
        try:
            return base64.b64decode(raw, validate=True).decode("utf-8").strip() or None
        except (ValueError, UnicodeDecodeError):
            return None

    def find(self, kind: str, match_labels: Mapping[str, str], namespace: str = "") -> list[dict[str, Any]]:
        """Objects of ``kind`` carrying ``match_labels`` (in ``namespace`` for namespaced kinds).

        Raises:
            kubernetes.client.ApiException: from the API server (404: the kind is not served).
        """
        if self.cache.serves(kind):
            return self.cache.find(kind, namespace=namespace or None, match_labels=match_labels)
        query = {"labelSelector": _selector(match_labels)} if match_labels else None
        items: list[dict[str, Any]] = self._request("GET", _path(kind, namespace), query=query).get("items") or []
        return items

    def crd_installed(self, name: str) -> bool:
        """Whether the CustomResourceDefinition ``name`` (e.g. nodeclaims.karpenter.sh) exists (one list call)."""
        found = self._request(
            "GET", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", query={"fieldSelector": f"metadata.name={name}"}
        )
        return bool(found.get("items"))

    def list_pods(self, namespace: str, match_labels: Mapping[str, str]) -> list[dict[str, Any]]:
        """Pods carrying ``match_labels`` in ``namespace``."""
        return self.find("Pod", match_labels, namespace)

    # -- writes ---------------------------------------------------------------------------------

    def create(self, desired: dict[str, Any]) -> dict[str, Any]:
        """Create ``desired`` and return it as stored.

        Raises:
            kubernetes.client.ApiException: from the API server (409: the name is taken).
        """
        kind, meta = desired["kind"], desired["metadata"]
        created = self._request("POST", _path(kind, meta.get("namespace") or ""), body=desired)
        self.cache.wrote(kind, created)
        return created

    def merge_patch(self, kind: str, namespace: str, name: str, patch: Mapping[str, Any]) -> dict[str, Any]:
        """JSON-merge-patch an object and return it as stored.

        Raises:
            kubernetes.client.ApiException: from the API server.
        """
        patched = self._request("PATCH", f"{_path(kind, namespace)}/{name}", body=dict(patch), content_type="application/merge-patch+json")
        self.cache.wrote(kind, patched)
        return patched

    def delete(self, kind: str, namespace: str, name: str, *, background: bool = False, foreground: bool = False) -> None:
        """Delete an object (already gone is fine); ``background``/``foreground`` set the
        propagationPolicy (foreground: the object stays, marked, until its dependents are gone)."""
        body = {"propagationPolicy": "Foreground"} if foreground else {"propagationPolicy": "Background"} if background else None
        try:
            answer = self._request("DELETE", f"{_path(kind, namespace)}/{name}", body=body)
        except client.ApiException as exc:
            if exc.status != 404:
                raise
            answer = None
        self.cache.deleted(kind, namespace, name, answer)

    def apply(self, desired: dict[str, Any], owner_uid: str, existing: dict[str, Any] | None = None) -> tuple[dict[str, Any], bool]:
        """Create ``desired`` or bring the existing object to it; returns (object, written).

        Nothing is written when the existing object carries the same applied-hash.

        Raises:
            ProvisioningError: an object of that name exists but belongs to something else.
            NotReadyError: the object changed underneath (409); retry shortly.
        """
        kind, meta = desired["kind"], desired["metadata"]
        base = _path(kind, meta["namespace"])
        if existing is None:
            existing = self.get(kind, meta["namespace"], meta["name"])
        if existing is None:
            try:
                return self.create(desired), True
            except client.ApiException as exc:
                if exc.status == 409:
                    raise NotReadyError(f"{kind} {meta['name']} appeared while being created", delay=1.0, reason="Conflict") from exc
                raise
        owners = [o.get("uid") for o in existing["metadata"].get("ownerReferences") or [] if o.get("controller")]
        if owner_uid not in owners:
            raise ProvisioningError(
                f"a {kind} named {meta['name']} already exists in namespace {meta['namespace']} and is not owned by "
                f"this workspace; delete or rename it",
                reason="ResourceConflict",
            )
        want = meta.get("annotations", {}).get(ANNOTATION_APPLIED_HASH)
        have = (existing["metadata"].get("annotations") or {}).get(ANNOTATION_APPLIED_HASH)
        if want == have:
            return existing, False
        body = json.loads(json.dumps(desired))
        body["metadata"]["resourceVersion"] = existing["metadata"]["resourceVersion"]
        if kind == "Service":  # keep the allocated IPs (immutable)
            for key in ("clusterIP", "clusterIPs", "ipFamilies", "ipFamilyPolicy"):
                if key in existing.get("spec", {}):
                    body["spec"].setdefault(key, existing["spec"][key])
        try:
            updated = self._request("PUT", f"{base}/{meta['name']}", body=body)
        except client.ApiException as exc:
            if exc.status == 409:
                raise NotReadyError(f"{kind} {meta['name']} changed while being updated", delay=1.0, reason="Conflict") from exc
            raise
        self.cache.wrote(kind, updated)
        return updated, True

    def delete_if_owned(self, kind: str, namespace: str, name: str, owner_uid: str, *, foreground: bool = False) -> bool:
        """Delete the object when it exists and is controlled by ``owner_uid`` (background
        propagation, or foreground); True if deleted."""
        existing = self.get(kind, namespace, name)
        if existing is None or (existing.get("metadata") or {}).get("deletionTimestamp"):
            return False
        owners = [o.get("uid") for o in existing["metadata"].get("ownerReferences") or [] if o.get("controller")]
        if owner_uid not in owners:
            return False
        self.delete(kind, namespace, name, background=not foreground, foreground=foreground)
        return True

    # -- the workspace itself ------------------------------------------------------------------

    def patch_workspace_annotations(self, namespace: str, name: str, annotations: dict[str, str | None]) -> None:
        """Merge-patch metadata.annotations of a workspace."""
        self._request(
            "PATCH", f"{_WS_PATH.format(ns=namespace)}/{name}",
            body={"metadata": {"annotations": annotations}}, content_type="application/merge-patch+json",
        )

    def patch_workspace_status(self, namespace: str, name: str, status: dict[str, Any], old: dict[str, Any]) -> None:
        """Merge-patch /status to ``status`` (keys present before but gone now are nulled)."""
        body: dict[str, Any] = dict(status)
        for key in old:
            if key not in body:
                body[key] = None
        try:
            self._request(
                "PATCH", f"{_WS_PATH.format(ns=namespace)}/{name}/status",
                body={"status": body}, content_type="application/merge-patch+json",
            )
        except client.ApiException as exc:
            if exc.status == 404:
                return  # deleted meanwhile
            raise
