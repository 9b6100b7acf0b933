"""azure-agentpool end to end: the operator (a subprocess, least-privilege ServiceAccount) with the
real azure SDK and WorkloadIdentityCredential against the ARM + Entra emulator, whose agent pools
become kwok Nodes in a local control plane of its own (the e2e suite's operator watches the
shared one cluster-wide and would take these Workspaces too)."""

from __future__ import annotations

import json
import random
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from arm_emulator import IN_PROGRESS_MESSAGE, ArmEmulator, _Op

from kaito_core import sku
from kaito_localcluster.build import ensure_binaries
from kaito_localcluster.cluster import LocalCluster
from kaito_localcluster.kubeapi import wait_for
from kaito_provisioners.agentpool import pool_name

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT / "tests" / "e2e"))
import harness  # noqa: E402 - the e2e suite's process helpers

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(300)]
PHI3 = ROOT / "examples" / "inference" / "kaito_workspace_phi_3.yaml"
RG, CLUSTER, SUB = "rg-kaito", "aks-kaito", "00000000-0000-0000-0000-0000000000bb"
QUOTA_SKU, CAPACITY_SKU = "Standard_NC24ads_A100_v4", "Standard_NC40ads_H100_v5"


class Aks:
    """The cluster, the emulator and the operator."""

    def __init__(self, cluster: LocalCluster, emulator: ArmEmulator, operator: harness.Process, webhook_port: int) -> None:
        self.cluster, self.emulator, self.operator, self.webhook_port = cluster, emulator, operator, webhook_port

    def crash_operator(self) -> None:
        """SIGKILL the operator (no clean-up at all) and start it again."""
        self.operator.kill()
        self.operator.start()
        harness.wait_webhook_ready(self.cluster, self.webhook_port)

    def apply(self, ns: str, name: str, instance_type: str = "Standard_NC6s_v3") -> None:
        ws = yaml.safe_load(PHI3.read_text())
        ws["metadata"] = {"name": name, "namespace": ns}
        ws["resource"]["instanceType"] = instance_type
        self.cluster.kubectl("apply", "-f", "-", input=json.dumps(ws), timeout=60)

    def workspace(self, ns: str, name: str) -> dict[str, Any]:
        """`kubectl get workspace -o yaml`, as a person reads it."""
        out: dict[str, Any] = yaml.safe_load(self.cluster.kubectl("get", "workspace", name, "-n", ns, "-o", "yaml", timeout=60).stdout)
        return out

    def condition(self, ns: str, name: str, reason: str) -> dict[str, Any]:
        def found() -> dict[str, Any] | None:
            conds = (self.workspace(ns, name).get("status") or {}).get("conditions") or []
            return next((c for c in conds if c.get("reason") == reason and c.get("status") == "False"), None)

        result: dict[str, Any] = wait_for(found, timeout=60, interval=0.3, what=f"condition {reason} on {ns}/{name}", on_timeout=self.logs)
        return result

    def wait_ready(self, ns: str, name: str, timeout: float = 120) -> None:
        def ready() -> bool:
            conds = {c["type"]: c["status"] for c in (self.workspace(ns, name).get("status") or {}).get("conditions") or []}
            return conds.get("WorkspaceReady") == "True"

        wait_for(ready, timeout=timeout, interval=0.5, what=f"workspace {ns}/{name} ready", on_timeout=self.logs)

    def nodes(self, pool: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = self.cluster.api.get("/api/v1/nodes", labelSelector=f"kubernetes.azure.com/agentpool={pool}")["items"]
        return items

    def logs(self) -> str:
        return f"--- operator log:\n{self.operator.tail(60)}\n--- pools: {list(self.emulator.pools())}"

    # the emulator's callbacks: what AKS does with a pool's VMs
    def pool_ready(self, pool: dict[str, Any]) -> None:
        props, name = pool["properties"], pool["name"]
        found = sku.lookup(props["vmSize"], "azure")
        for i in range(props["count"]):
            node = f"aks-{name}-12345678-vmss{i:06d}"
            try:
                self.cluster.create_fake_node(
                    node, labels={**props.get("nodeLabels", {}), "agentpool": name, "kubernetes.azure.com/agentpool": name,
                                  "node.kubernetes.io/instance-type": props["vmSize"]},
                    taints=props.get("nodeTaints") or [], capacity={"nvidia.com/gpu": str(found.gpu_count if found else 1)},
                    provider_id=f"azure:///subscriptions/{SUB}/resourceGroups/mc_{RG}/providers/Microsoft.Compute/"
                                f"virtualMachineScaleSets/aks-{name}-12345678-vmss/virtualMachines/{i}",
                    wait_ready=False,
                )
            except Exception as exc:  # noqa: BLE001 - already there after an update
                if "AlreadyExists" not in str(exc) and "409" not in str(exc):
                    raise

    def pool_deleted(self, pool: dict[str, Any]) -> None:
        for node in self.nodes(pool["name"]):
            self.cluster.api.delete(f"/api/v1/nodes/{node['metadata']['name']}")


@pytest.fixture(scope="module")
def aks(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Aks]:
    workdir = tmp_path_factory.mktemp("aks")
    cluster = LocalCluster(binaries=ensure_binaries())
    cluster.start()
    emulator = ArmEmulator(workdir, op_seconds=0.3)
    try:
        cluster.install_crds([harness.CRDS[0]])
        token = workdir / "azure-identity-token"
        token.write_text("eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQ6a2FpdG8ifQ.c2ln")
        azure = {"SUBSCRIPTION_ID": SUB, "RESOURCE_GROUP": RG, "CLUSTER_NAME": CLUSTER, "LOCATION": "eastus", "GC_INTERVAL_S": "2",
                 "AUTHORITY_HOST": emulator.url, "RESOURCE_MANAGER_ENDPOINT": emulator.url, "CA_BUNDLE": str(emulator.cert)}
        env = {f"KAITO_NODE_PROVISIONER__AZURE__{k}": v for k, v in azure.items()}
        env |= {"KAITO_NODE_PROVISIONER__NAME": "azure-agentpool", "KAITO_REQUEUE__RESYNC_S": "2", "KAITO_REQUEUE__PROVISIONING_S": "2",
                # what the AKS workload-identity webhook injects into the operator pod
                "AZURE_CLIENT_ID": "kaito-client", "AZURE_TENANT_ID": "kaito-tenant", "AZURE_FEDERATED_TOKEN_FILE": str(token)}
        kubeconfig = harness.operator_kubeconfig(cluster, workdir / "operator.kubeconfig")
        port = harness.free_port()
        operator = harness.operator(kubeconfig, workdir / "operator.log", workdir / "certs", webhook_port=port, extra_env=env)
        stack = Aks(cluster, emulator, operator, port)
        emulator.on_ready, emulator.on_deleted = stack.pool_ready, stack.pool_deleted
        emulator.start()
        operator.start()
        harness.wait_webhook_ready(cluster, port)
        yield stack
        operator.stop()
    finally:
        emulator.stop()
        cluster.stop()


@pytest.fixture
def ns(aks: Aks) -> str:
    name = f"aks-{uuid.uuid4().hex[:6]}"
    aks.cluster.kubectl("create", "namespace", name, timeout=60)
    return name


def delete_and_wait_gone(aks: Aks, ns: str, names: list[str]) -> None:
    aks.cluster.kubectl("delete", "workspace", *names, "-n", ns, "--wait=false", "--ignore-not-found", timeout=60)
    pools = {pool_name(ns, n) for n in names}

    def gone() -> bool:
        left = aks.cluster.api.get(f"/apis/kaito.sh/v1beta1/namespaces/{ns}/workspaces")["items"]
        return not left and not (pools & set(aks.emulator.pools())) and not any(aks.nodes(p) for p in pools)

    wait_for(gone, timeout=120, interval=0.5, what="workspaces, pools and nodes gone", on_timeout=aks.logs)


def test_phi3_example_ready_through_aks_and_delete_leaves_nothing(aks: Aks, ns: str) -> None:
    aks.apply(ns, "workspace-phi-3-mini")
    aks.wait_ready(ns, "workspace-phi-3-mini")
    name = pool_name(ns, "workspace-phi-3-mini")
    pool = aks.emulator.pools()[name]["properties"]
    assert pool["vmSize"] == "Standard_NC6s_v3" and pool["count"] == 1 and pool["nodeTaints"] == ["sku=gpu:NoSchedule"]
    assert pool["osSKU"] == "Ubuntu" and pool["osDiskSizeGB"] > 0
    assert pool["nodeLabels"]["kaito.sh/workspace"] == "workspace-phi-3-mini" and pool["nodeLabels"]["apps"] == "phi-3"
    path = f"/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.ContainerService/managedClusters/{CLUSTER}/agentPools/{name}"
    assert [r.path for r in aks.emulator.arm_requests("PUT")].count(path) == 1
    assert all(r.authorized for r in aks.emulator.arm_requests())
    assert any(r.path == "/kaito-tenant/oauth2/v2.0/token" and r.body["client_id"] == "kaito-client" for r in aks.emulator.requests)
    assert [n["metadata"]["name"] for n in aks.nodes(name)] == [f"aks-{name}-12345678-vmss000000"]
    delete_and_wait_gone(aks, ns, ["workspace-phi-3-mini"])
    mine = [r for r in aks.emulator.arm_requests() if r.path == path]
    assert {r.method for r in mine} == {"GET", "PUT", "DELETE"} and mine[0].method == "GET"
    assert [r.method for r in mine].count("DELETE") == 1
    assert [r.body for r in mine if r.method == "PUT"][0]["properties"]["nodeLabels"]["kaito.sh/workspacenamespace"] == ns
    assert not any("/operations/" in r.path for r in aks.emulator.arm_requests())  # no worker ever waited on an operation


def test_the_aks_example_as_written_is_ready_on_its_own_pool(aks: Aks, ns: str) -> None:
    example = ROOT / "examples" / "aks" / "kaito_workspace_phi_3_aks.yaml"
    ws = yaml.safe_load(example.read_text())
    name = ws["metadata"]["name"]
    aks.cluster.kubectl("apply", "-n", ns, "-f", str(example), timeout=60)
    aks.wait_ready(ns, name)
    pool = aks.emulator.pools()[pool_name(ns, name)]["properties"]
    assert pool["vmSize"] == ws["resource"]["instanceType"] and pool["nodeLabels"]["apps"] == "phi-3-aks"
    delete_and_wait_gone(aks, ns, [name])


def test_each_failure_mode_is_a_condition_that_says_what_to_do(aks: Aks, ns: str) -> None:
    aks.emulator.put_errors[QUOTA_SKU] = (409, "QuotaExceeded", "exceeding approved standardNCADSA100v4Family Cores quota")
    aks.emulator.fail_ops[CAPACITY_SKU] = ("OverconstrainedAllocationRequest", "Allocation failed. VM(s) with the following constraints cannot be allocated")
    with aks.emulator._lock:  # a create begun elsewhere (e.g. az aks nodepool add) still running
        aks.emulator.state.ops["busy"] = _Op(id="busy", pool=pool_name(ns, "busy"), kind="create", done_at=time.monotonic() + 3600)
    try:
        aks.apply(ns, "quota", QUOTA_SKU)
        aks.apply(ns, "capacity", CAPACITY_SKU)
        aks.apply(ns, "busy")
        assert "Request a quota increase for this VM family in eastus" in aks.condition(ns, "quota", "QuotaExceeded")["message"]
        assert "Choose another resource.instanceType or region" in aks.condition(ns, "capacity", "CapacityUnavailable")["message"]
        busy = aks.condition(ns, "busy", "AgentPoolOperationInProgress")["message"]
        assert IN_PROGRESS_MESSAGE in busy and "az aks nodepool operation-abort" in busy
        aks.emulator.throttle(10_000, retry_after=1)
        aks.apply(ns, "throttled")
        assert "throttled" in aks.condition(ns, "throttled", "AzureThrottled")["message"]
        aks.emulator.throttle(0)
        tokens = set(aks.emulator.tokens)
        aks.emulator.tokens.clear()  # the identity's tokens are no longer accepted (e.g. role removed)
        aks.apply(ns, "noauth")
        assert "federated credential for the kaito-operator ServiceAccount" in aks.condition(ns, "noauth", "AzureAuthFailed")["message"]
        aks.emulator.tokens |= tokens
    finally:
        aks.emulator.throttle(0)
        aks.emulator.put_errors.clear()
        aks.emulator.fail_ops.clear()
        with aks.emulator._lock:
            aks.emulator.state.ops["busy"].status = "Canceled"
    aks.wait_ready(ns, "busy")  # each recovers once the cloud does
    delete_and_wait_gone(aks, ns, ["quota", "capacity", "busy", "throttled", "noauth"])


def test_sigkill_during_creates_converges_to_one_pool_per_workspace(aks: Aks, ns: str) -> None:
    rng = random.Random()
    names = [f"ws-{i}" for i in range(10)]
    aks.emulator.op_seconds = 1.0  # a create lasts long enough to be killed in the middle of
    # kill points spread over a create: before the PUT, while ARM runs it, after it succeeded
    delays = [i * 0.15 + rng.uniform(0.0, 0.15) for i in range(10)]
    rng.shuffle(delays)
    for name, delay in zip(names, delays, strict=True):
        aks.apply(ns, name)
        time.sleep(delay)
        aks.crash_operator()
    aks.emulator.op_seconds = 0.3
    for name in names:
        aks.wait_ready(ns, name)
    mine = {p for p in aks.emulator.pools() if p in {pool_name(ns, n) for n in names}}
    assert mine == {pool_name(ns, n) for n in names}
    assert all(len(aks.nodes(p)) == 1 for p in mine)
    aks.cluster.kubectl("delete", "workspace", "--all", "-n", ns, "--wait=false", timeout=60)
    time.sleep(rng.uniform(0.0, 1.0))
    aks.crash_operator()
    delete_and_wait_gone(aks, ns, names)
