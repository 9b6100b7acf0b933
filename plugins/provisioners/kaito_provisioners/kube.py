"""Small helpers over the synchronous ``kubernetes`` client: raw JSON reads (no slow model
deserialisation) and typed errors."""

from __future__ import annotations

import json
from typing import Any

from kubernetes import client


def read_json(response: Any) -> dict[str, Any]:
    """Decode a ``_preload_content=False`` response."""
    data = response.data if hasattr(response, "data") else response.read()
    decoded: dict[str, Any] = json.loads(data)
    return decoded


def list_nodes(api: client.ApiClient, label_selector: str) -> list[dict[str, Any]]:
    """Nodes matching ``label_selector``, as wire dicts."""
    resp = client.CoreV1Api(api).list_node(label_selector=label_selector, _preload_content=False)
    items: list[dict[str, Any]] = read_json(resp).get("items") or []
    return items


def status_code(exc: BaseException) -> int | None:
    """The HTTP status of a kubernetes ApiException, else None."""
    return getattr(exc, "status", None) if isinstance(exc, client.ApiException) else None
