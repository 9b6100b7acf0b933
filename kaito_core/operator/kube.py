"""Reads and writes of the operator's child objects over the synchronous ``kubernetes`` client.

Every call goes through :func:`request`: plain JSON dicts over the client's ApiClient (its
auth, TLS and connection pool), skipping the client's model (de)serialisation. Writes happen
only when the applied-hash annotation of the existing object differs from the desired one, so a
steady-state reconcile writes nothing.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from kubernetes import client, config

from kaito_core.api.workspace import GROUP, PLURAL, STORAGE_VERSION
from kaito_core.errors import NotReadyError, ProvisioningError
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
}


class Kube:
    """The API calls the reconciler makes (all namespaced, all by name or label)."""

    def __init__(self, api: client.ApiClient, on_request: Callable[[str, str], None] | None = None) -> None:
        self.api = api
        self.on_request = on_request
        """Called with (HTTP method, path) before each request (the operator counts them)."""

    def _request(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        if self.on_request is not None:
            self.on_request(method, path)
        return request(self.api, method, path, **kwargs)

    # -- generic child objects -----------------------------------------------------------------

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        """The object, or None when it does not exist."""
        try:
            return self._request("GET", f"{_PATHS[kind].format(ns=namespace)}/{name}")
        except client.ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def apply(self, desired: dict[str, Any], owner_uid: str, existing: dict[str, Any] | None = None) -> tuple[dict[str, Any], bool]:
        """Create ``desired`` or bring the existing object to it; returns (object, written).

        Nothing is written when the existing object carries the same applied-hash.

        Raises:
            ProvisioningError: an object of that name exists but belongs to something else.
            NotReadyError: the object changed underneath (409); retry shortly.
        """
        kind, meta = desired["kind"], desired["metadata"]
        base = _PATHS[kind].format(ns=meta["namespace"])
        if existing is None:
            existing = self.get(kind, meta["namespace"], meta["name"])
        if existing is None:
            try:
                return self._request("POST", base, body=desired), True
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
            return self._request("PUT", f"{base}/{meta['name']}", body=body), True
        except client.ApiException as exc:
            if exc.status == 409:
                raise NotReadyError(f"{kind} {meta['name']} changed while being updated", delay=1.0, reason="Conflict") from exc
            raise

    def delete_if_owned(self, kind: str, namespace: str, name: str, owner_uid: str) -> bool:
        """Delete the object when it exists and is controlled by ``owner_uid``; True if deleted."""
        existing = self.get(kind, namespace, name)
        if existing is None:
            return False
        owners = [o.get("uid") for o in existing["metadata"].get("ownerReferences") or [] if o.get("controller")]
        if owner_uid not in owners:
            return False
        try:
            self._request("DELETE", f"{_PATHS[kind].format(ns=namespace)}/{name}", body={"propagationPolicy": "Background"})
        except client.ApiException as exc:
            if exc.status != 404:
                raise
        return True

    def list_pods(self, namespace: str, label_selector: str) -> list[dict[str, Any]]:
        """Pods matching ``label_selector`` in ``namespace``."""
        items: list[dict[str, Any]] = self._request(
            "GET", _PATHS["Pod"].format(ns=namespace), query={"labelSelector": label_selector}
        ).get("items") or []
        return items

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
