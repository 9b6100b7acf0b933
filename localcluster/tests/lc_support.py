"""Helpers shared by the kaito_localcluster tests (a module of its own, so that test files import
it by a unique name instead of ``conftest``, which several test trees in this repository have)."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

from kaito_localcluster.kubeapi import KubeApi, wait_for

REPO_ROOT = Path(__file__).resolve().parents[2]
NODECLAIM_CRD = REPO_ROOT / "charts" / "kaito" / "crds" / "karpenter.sh_nodeclaims.yaml"


def pods(api: KubeApi, namespace: str, selector: str) -> list[dict[str, Any]]:
    """Pods in ``namespace`` matching the label ``selector``."""
    items: list[dict[str, Any]] = api.get(f"/api/v1/namespaces/{namespace}/pods", labelSelector=selector)["items"]
    return items


def wait_pods_phase(api: KubeApi, namespace: str, selector: str, phase: str, count: int = 1, timeout: float = 60) -> list[dict[str, Any]]:
    """Wait until ``count`` pods matching ``selector`` are in ``phase``; return them."""

    def probe() -> list[dict[str, Any]] | None:
        found = [p for p in pods(api, namespace, selector) if p.get("status", {}).get("phase") == phase]
        return found if len(found) >= count else None

    def describe() -> str:
        return "pods now: " + "; ".join(
            f"{p['metadata']['name']} phase={p.get('status', {}).get('phase')} node={p['spec'].get('nodeName')} "
            f"conditions={p.get('status', {}).get('conditions')}"
            for p in pods(api, namespace, selector)
        )

    result: list[dict[str, Any]] = wait_for(probe, timeout=timeout, interval=0.25, what=f"{count} pod(s) {selector} {phase}", on_timeout=describe)
    return result


def processes_mentioning(text: str) -> list[str]:
    """``ps`` lines (pid + args) whose command line contains ``text`` (excluding ps itself)."""
    out = subprocess.run(["ps", "-ww", "-eo", "pid,stat,args"], capture_output=True, text=True, check=True).stdout
    return [
        line for line in out.splitlines()[1:]
        if text in line and " ps -eo" not in line and line.split()[1][0] != "Z"
    ]
