"""azure-agentpool with the real azure-mgmt-containerservice and azure-identity
(WorkloadIdentityCredential with a token file) against the local ARM + Entra emulator, over an
in-memory NodeClient: the exact requests, readiness, every failure mode's message, delete and GC."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from arm_emulator import IN_PROGRESS_MESSAGE, ArmEmulator, _Op

from kaito_core.errors import ProvisioningError
from kaito_core.operator.boundary import classify
from kaito_core.operator.settings import RequeueSettings
from kaito_core.provisioners import AzureSettings, NodeClient, NodeRequest
from kaito_provisioners.agentpool import POOL_NAME, build_agent_pool, pool_name
from kaito_provisioners.aks import AksProvisioner

RG, CLUSTER, SUB = "rg-kaito", "aks-kaito", "00000000-0000-0000-0000-0000000000aa"
A100 = "Standard_NC24ads_A100_v4"
REQUEST = NodeRequest(workspace="phi", namespace="team-a", instance_type=A100, count=2, match_labels={"apps": "phi"},
                      disk_gib=87, node_image_family="azurelinux")


class Nodes(NodeClient):
    """Nodes and Workspaces in memory (NodeClaims are not used by this provisioner)."""

    def __init__(self) -> None:
        self.nodes: dict[str, dict[str, Any]] = {}
        self.workspaces: set[tuple[str, str]] = {("team-a", "phi")}

    def list_nodes(self, match_labels: Mapping[str, str]) -> list[dict[str, Any]]:
        return [n for n in self.nodes.values() if all(n["metadata"]["labels"].get(k) == v for k, v in match_labels.items())]

    def list_nodeclaims(self, match_labels: Mapping[str, str]) -> list[dict[str, Any]]:
        raise AssertionError("azure-agentpool reads no NodeClaims")

    def create_nodeclaim(self, body: Mapping[str, Any]) -> dict[str, Any]:
        raise AssertionError("azure-agentpool creates no NodeClaims")

    def delete_nodeclaim(self, name: str) -> None:
        raise AssertionError("azure-agentpool deletes no NodeClaims")

    def workspace_exists(self, namespace: str, name: str) -> bool:
        return (namespace, name) in self.workspaces

    # what the emulator calls: a pool's nodes appear Ready with GPUs, and go with it
    def pool_ready(self, pool: dict[str, Any]) -> None:
        props = pool["properties"]
        for i in range(props["count"]):
            labels = {**props["nodeLabels"], "kubernetes.azure.com/agentpool": pool["name"], "agentpool": pool["name"]}
            self.nodes[f"aks-{pool['name']}-{i}"] = {
                "metadata": {"name": f"aks-{pool['name']}-{i}", "labels": {**labels, "node.kubernetes.io/instance-type": props["vmSize"]}},
                "status": {"conditions": [{"type": "Ready", "status": "True"}], "capacity": {"nvidia.com/gpu": "1"}},
            }

    def pool_deleted(self, pool: dict[str, Any]) -> None:
        for name in [n for n, v in self.nodes.items() if v["metadata"]["labels"].get("agentpool") == pool["name"]]:
            del self.nodes[name]


@pytest.fixture
def nodes() -> Nodes:
    return Nodes()


@pytest.fixture
def emulator(tmp_path: Path, nodes: Nodes) -> Iterator[ArmEmulator]:
    emu = ArmEmulator(tmp_path, op_seconds=0.2, on_ready=nodes.pool_ready, on_deleted=nodes.pool_deleted).start()
    yield emu
    emu.stop()


def azure_settings(emu: ArmEmulator, token_file: Path) -> AzureSettings:
    """Settings pointing the real SDK and the real WorkloadIdentityCredential at the emulator."""
    token_file.write_text("eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQifQ.c2ln")
    return AzureSettings(
        subscription_id=SUB, resource_group=RG, cluster_name=CLUSTER, location="eastus", tenant_id="tenant-1", client_id="client-1",
        credential="workload", federated_token_file=str(token_file), authority_host=emu.url, resource_manager_endpoint=emu.url,
        ca_bundle=str(emu.cert), request_timeout_s=5.0,
    )


@pytest.fixture
def aks(emulator: ArmEmulator, tmp_path: Path) -> AksProvisioner:
    provisioner = AksProvisioner()
    provisioner.configure(azure=azure_settings(emulator, tmp_path / "token"))
    return provisioner


def until(fn: Any, what: str, timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = fn()
        if value:
            return value
        time.sleep(0.05)
    raise TimeoutError(what)


def pool_path(name: str) -> str:
    return f"/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.ContainerService/managedClusters/{CLUSTER}/agentPools/{name}"


def test_pool_names_are_valid_for_aks_and_stable() -> None:
    names = {pool_name("team-a", f"ws-{i}") for i in range(200)}
    assert len(names) == 200 and all(POOL_NAME.match(n) for n in names)
    assert pool_name("team-a", "phi") == pool_name("team-a", "phi") != pool_name("team-b", "phi")
    assert pool_name("a", "b-c") != pool_name("a-b", "c")


def test_pool_body_from_the_request() -> None:
    assert build_agent_pool(REQUEST) == {
        "vm_size": A100, "count": 2, "mode": "User", "os_type": "Linux", "os_sku": "AzureLinux", "os_disk_size_gb": 87,
        "type_properties_type": "VirtualMachineScaleSets",
        "node_labels": {"apps": "phi", "kaito.sh/machine-type": "gpu", "kaito.sh/provisioner": "azure-agentpool",
                        "kaito.sh/workspace": "phi", "kaito.sh/workspacenamespace": "team-a"},
        "node_taints": ["sku=gpu:NoSchedule"],
    }
    assert build_agent_pool(REQUEST.model_copy(update={"node_image_family": "ubuntu"}))["os_sku"] == "Ubuntu"


def test_create_is_begun_not_waited_on_then_ready_with_the_pools_nodes(aks: AksProvisioner, emulator: ArmEmulator, nodes: Nodes) -> None:
    name = pool_name("team-a", "phi")
    first = aks.ensure_nodes(nodes, REQUEST)
    assert not first.ready and f"agent pool {name} (2 x {A100}) is being created" in first.message
    # the real WorkloadIdentityCredential exchanged the token file at the emulated Entra ID
    login = [r for r in emulator.requests if r.path == "/tenant-1/oauth2/v2.0/token"]
    assert login and login[0].method == "POST"
    assert {k: login[0].body[k] for k in ("client_id", "grant_type", "client_assertion_type")} == {
        "client_id": "client-1", "grant_type": "client_credentials",
        "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
    }
    assert login[0].body["scope"] == f"{emulator.url}/.default"
    gets, puts = emulator.arm_requests("GET"), emulator.arm_requests("PUT")
    assert [r.path for r in gets][-1] == pool_path(name) and all(r.authorized for r in emulator.arm_requests())
    assert len(puts) == 1 and puts[0].path == pool_path(name) and puts[0].query == {"api-version": "2026-08-01"}
    assert puts[0].body == {"properties": {
        "count": 2, "vmSize": A100, "osDiskSizeGB": 87, "osType": "Linux", "osSKU": "AzureLinux", "type": "VirtualMachineScaleSets",
        "mode": "User", "nodeLabels": {"apps": "phi", "kaito.sh/machine-type": "gpu", "kaito.sh/provisioner": "azure-agentpool",
                                       "kaito.sh/workspace": "phi", "kaito.sh/workspacenamespace": "team-a"},
        "nodeTaints": ["sku=gpu:NoSchedule"],
    }}
    assert not emulator.arm_requests("GET")[-1].path.endswith("operations")  # the operation is never polled
    done = until(lambda: (r := aks.ensure_nodes(nodes, REQUEST)).ready and r, "pool ready")
    assert done.ready_nodes == (f"aks-{name}-0", f"aks-{name}-1")
    assert len(emulator.arm_requests("PUT")) == 1  # found again by name: nothing created twice
    assert not any("/operations/" in r.path for r in emulator.arm_requests())


def test_a_new_provisioner_adopts_the_pool_and_delete_leaves_nothing(aks: AksProvisioner, emulator: ArmEmulator, nodes: Nodes, tmp_path: Path) -> None:
    aks.ensure_nodes(nodes, REQUEST)
    restarted = AksProvisioner()  # an operator restart mid-create: no memory, same name
    restarted.configure(azure=azure_settings(emulator, tmp_path / "token2"))
    until(lambda: restarted.ensure_nodes(nodes, REQUEST).ready, "adopted pool ready")
    assert len(emulator.arm_requests("PUT")) == 1 and list(emulator.pools()) == [pool_name("team-a", "phi")]
    assert restarted.delete_nodes(nodes, workspace="phi", namespace="team-a") is False
    until(lambda: restarted.delete_nodes(nodes, workspace="phi", namespace="team-a"), "deleted")
    assert emulator.pools() == {} and nodes.nodes == {}
    assert len(emulator.arm_requests("DELETE")) == 1


def _error(aks: AksProvisioner, nodes: Nodes, request: NodeRequest = REQUEST) -> ProvisioningError:
    with pytest.raises(ProvisioningError) as info:
        until(lambda: aks.ensure_nodes(nodes, request) and False, "an error", timeout=10)
    return info.value


def test_quota_refused_at_put_says_to_request_quota(aks: AksProvisioner, emulator: ArmEmulator, nodes: Nodes) -> None:
    emulator.put_errors[A100] = (409, "QuotaExceeded", "Operation could not be completed as it results in exceeding approved standardNCADSA100v4Family Cores quota")
    err = _error(aks, nodes)
    assert err.reason == "QuotaExceeded" and err.retryable
    assert "Request a quota increase for this VM family in eastus" in str(err) and "standardNCADSA100v4Family" in str(err)
    assert emulator.pools() == {}


def test_capacity_failure_of_the_operation_is_reported_and_the_failed_pool_removed(aks: AksProvisioner, emulator: ArmEmulator, nodes: Nodes) -> None:
    emulator.fail_ops[A100] = ("OverconstrainedAllocationRequest", "Allocation failed. VM(s) with the following constraints cannot be allocated")
    err = _error(aks, nodes)
    assert err.reason == "CapacityUnavailable" and "Choose another resource.instanceType or region" in str(err)
    assert "OverconstrainedAllocationRequest" in str(err)
    until(lambda: emulator.pools() == {}, "failed pool deleted")  # nothing half-created stays


def test_throttling_carries_retry_after_to_the_requeue(aks: AksProvisioner, emulator: ArmEmulator, nodes: Nodes) -> None:
    emulator.throttle(5, retry_after=7)
    err = _error(aks, nodes)
    assert err.reason == "AzureThrottled" and "retries after 7s" in str(err)
    verdict = classify(err, RequeueSettings())
    assert verdict.result == "requeue" and verdict.delay_s == 7.0 and verdict.facts and verdict.facts.blocked_reason == "AzureThrottled"


def test_entra_refusing_the_identity_says_what_to_check(emulator: ArmEmulator, nodes: Nodes, tmp_path: Path) -> None:
    emulator.token_error = "AADSTS700213: No matching federated identity record found for presented assertion subject"
    aks = AksProvisioner()
    aks.configure(azure=azure_settings(emulator, tmp_path / "token"))
    err = _error(aks, nodes)
    assert err.reason == "AzureAuthFailed" and "AADSTS700213" in str(err)
    assert "federated credential for the kaito-operator ServiceAccount" in str(err)
    assert emulator.arm_requests("PUT") == []


def test_a_create_in_progress_409_is_reported_then_adopted(aks: AksProvisioner, emulator: ArmEmulator, nodes: Nodes) -> None:
    name = pool_name("team-a", "phi")
    with emulator._lock:  # a create begun elsewhere whose pool ARM does not show yet
        emulator.state.ops["other"] = _Op(id="other", pool=name, kind="create", done_at=time.monotonic() + 3600)
    err = _error(aks, nodes)
    assert err.reason == "AgentPoolOperationInProgress" and IN_PROGRESS_MESSAGE in str(err) and "az aks nodepool" in str(err)
    with emulator._lock:
        emulator.state.ops["other"].status = "Canceled"
    until(lambda: aks.ensure_nodes(nodes, REQUEST).ready, "ready after the other operation")


def test_pools_whose_workspace_is_gone_are_collected(aks: AksProvisioner, emulator: ArmEmulator, nodes: Nodes, tmp_path: Path) -> None:
    aks.ensure_nodes(nodes, REQUEST)
    orphan = REQUEST.model_copy(update={"workspace": "gone"})
    aks.ensure_nodes(nodes, orphan)
    until(lambda: len([p for p in emulator.pools().values() if p["properties"]["provisioningState"] == "Succeeded"]) == 2, "both pools")
    collector = AksProvisioner()  # gc runs on a provisioner's first call, then every gcIntervalS
    collector.configure(azure=azure_settings(emulator, tmp_path / "token3"))
    collector.ensure_nodes(nodes, REQUEST)
    until(lambda: list(emulator.pools()) == [pool_name("team-a", "phi")], "orphan collected")


def test_a_count_change_scales_the_same_pool(aks: AksProvisioner, emulator: ArmEmulator, nodes: Nodes) -> None:
    until(lambda: aks.ensure_nodes(nodes, REQUEST).ready, "two nodes")
    bigger = REQUEST.model_copy(update={"count": 3})
    scaling = aks.ensure_nodes(nodes, bigger)
    assert not scaling.ready and "being scaled from 2 to 3 nodes" in scaling.message
    done = until(lambda: (r := aks.ensure_nodes(nodes, bigger)).ready and r, "three nodes")
    assert len(done.ready_nodes) == 3 and list(emulator.pools()) == [pool_name("team-a", "phi")]
    assert [r.body["properties"]["count"] for r in emulator.arm_requests("PUT")] == [2, 3]


def test_missing_settings_name_the_fields_to_set() -> None:
    with pytest.raises(ProvisioningError) as info:
        AksProvisioner().configure(azure=AzureSettings(subscription_id="s"))
    assert info.value.reason == "AzureNotConfigured" and not info.value.retryable
    assert "nodeProvisioner.azure.resourceGroup (KAITO_NODE_PROVISIONER__AZURE__RESOURCE_GROUP)" in str(info.value)
    assert "nodeProvisioner.azure.clusterName" in str(info.value)


def test_the_operator_refuses_to_start_without_the_azure_settings(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KAITO_", "KUBECONFIG"))}
    result = subprocess.run(
        [sys.executable, "-m", "kaito_core.operator", "--node-provisioner", "azure-agentpool", "--kubeconfig", str(tmp_path / "none")],
        capture_output=True, text=True, timeout=120, env=env,
    )
    assert result.returncode == 2, result.stderr
    assert "kaito operator: cannot start: the azure-agentpool provisioner needs nodeProvisioner.azure.subscriptionId" in result.stderr


def test_kaito_plugins_names_what_the_aks_provisioner_needs() -> None:
    needs = AksProvisioner().needs()
    assert "kaito-provisioners[azure]" in needs
    assert any("nodeProvisioner.azure.subscriptionId" in n and "nodeProvisioner.azure.clusterName" in n for n in needs)
