"""The end-to-end stack: the local control plane (kaito_localcluster's ``local_cluster``), the
Workspace and NodeClaim CRDs, the gpu-provisioner test stand-in, and the operator as a
subprocess running as the least-privilege ServiceAccount of config/rbac."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

import harness

FAILING_SKU = "Standard_NC24ads_A100_v4"
FAILING_MESSAGE = "OperationNotAllowed: Insufficient regional vcpu quota left for family NCADSA100v4; requested 24, available 0"


@dataclass
class Stack:
    """What the tests drive and inspect."""

    cluster: Any
    operator: harness.Process
    fake: harness.Process
    webhook_port: int
    workdir: Path

    def kubectl(self, *args: str, check: bool = True, input: str | None = None) -> subprocess.CompletedProcess[str]:
        """kubectl as the cluster admin (a person)."""
        result: subprocess.CompletedProcess[str] = self.cluster.kubectl(*args, check=check, input=input, timeout=90)
        return result

    def get(self, path: str) -> Any:
        """GET an API path as admin."""
        return self.cluster.api.get(path)

    def restart_operator(self, *, crash: bool) -> None:
        """Kill (SIGKILL, ``crash``) or stop the operator, then start it again."""
        if crash:
            self.operator.kill()
        else:
            self.operator.stop()
        self.operator.start()
        harness.wait_webhook_ready(self.cluster, self.webhook_port)

    def diagnostics(self) -> str:
        """Logs for a failure message."""
        return f"--- operator log:\n{self.operator.tail(80)}\n--- fake gpu-provisioner log:\n{self.fake.tail(30)}"


@pytest.fixture(scope="session")
def stack(local_cluster: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """CRDs + RBAC + test gpu-provisioner + operator, for the whole session."""
    workdir = tmp_path_factory.mktemp("kaito-e2e")
    local_cluster.install_crds(harness.CRDS)
    operator_config = harness.operator_kubeconfig(local_cluster, workdir / "operator.kubeconfig")
    fake = harness.fake_gpu_provisioner(local_cluster.kubeconfig, workdir / "fake-gpu-provisioner.log", fail_skus={FAILING_SKU: FAILING_MESSAGE})
    port = harness.free_port()
    operator = harness.operator(
        operator_config, workdir / "operator.log", workdir / "webhook-certs", webhook_port=port,
        extra_env={"KAITO_REQUEUE__RESYNC_S": "2"},
    )
    fake.start()
    operator.start()
    stack = Stack(local_cluster, operator, fake, port, workdir)
    try:
        harness.wait_webhook_ready(local_cluster, port)
        yield stack
    finally:
        operator.stop()
        fake.stop()


def load_manifest(path: Path | str, **changes: Any) -> dict[str, Any]:
    """A YAML manifest as a dict, with top-level ``changes`` merged in."""
    obj: dict[str, Any] = yaml.safe_load(Path(path).read_text())
    obj.update(changes)
    return obj


def dump(obj: dict[str, Any]) -> str:
    """JSON text for ``kubectl apply -f -``."""
    return json.dumps(obj)
