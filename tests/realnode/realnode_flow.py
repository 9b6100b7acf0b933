"""What the real-node Workspace tests share: the CPU Gemma example, its namespace, reading a
Workspace's conditions, HTTP to a ClusterIP, and pushing an adapter artifact with oras."""

from __future__ import annotations

import json
import os
import urllib.request
from pathlib import Path
from typing import Any

from kaito_localcluster import LocalCluster
from kaito_localcluster.registry import credentials

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "inference" / "kaito_workspace_gemma_3_270m_cpu.yaml"
NS = "default"
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def conditions(cluster: LocalCluster, name: str) -> dict[str, dict[str, Any]]:
    ws = cluster.api.get(f"/apis/kaito.sh/v1alpha1/namespaces/{NS}/workspaces/{name}")
    return {c["type"]: c for c in (ws.get("status") or {}).get("conditions") or []}


def post(url: str, body: dict[str, Any]) -> dict[str, Any]:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with _NO_PROXY.open(req, timeout=120) as resp:
        result: dict[str, Any] = json.loads(resp.read())
        return result


def get(url: str) -> dict[str, Any]:
    with _NO_PROXY.open(url, timeout=30) as resp:
        result: dict[str, Any] = json.loads(resp.read())
        return result


def push_artifact(cluster: LocalCluster, ref: str, files: list[Path]) -> None:
    """``oras push <ref> <files>`` (files at the artifact root) with the registry's credentials."""
    import oras.provider

    creds = credentials()
    client = oras.provider.Registry(hostname=cluster.registry_address, tls_verify=str(cluster.ca_file), auth_backend="basic")
    client.auth.set_basic_auth(creds.username, creds.password)
    cwd = os.getcwd()
    os.chdir(files[0].parent)  # oras titles each layer with the path as given: push bare names
    try:
        client.push(target=ref, files=[f.name for f in files])
    finally:
        os.chdir(cwd)
