"""The provisioners against an in-memory NodeClient: the same interface the operator hands them,
so no module function is patched and every call they make is visible."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import pytest

from kaito_core.errors import ProvisioningError
from kaito_core.provisioners import ApiConflict, ApiRefused, NodeClient, NodeRequest, ResourceNotServed
from kaito_provisioners import ByoProvisioner, GpuProvisioner


class MemoryNodeClient(NodeClient):
    """Nodes and NodeClaims in dicts; ``crd`` False plays a cluster without the NodeClaim CRD."""

    def __init__(self, nodes: list[dict[str, Any]] = (), *, crd: bool = True, refuse: str = "", taken: int = 0) -> None:  # type: ignore[assignment]
        self.nodes = {n["metadata"]["name"]: n for n in nodes}
        self.claims: dict[str, dict[str, Any]] = {}
        self.crd, self.refuse, self.taken = crd, refuse, taken
        self.deleted: list[str] = []

    @staticmethod
    def _match(obj: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
        have = obj["metadata"].get("labels") or {}
        return all(have.get(k) == v for k, v in labels.items())

    def list_nodes(self, match_labels: Mapping[str, str]) -> list[dict[str, Any]]:
        return [copy.deepcopy(n) for n in self.nodes.values() if self._match(n, match_labels)]

    def list_nodeclaims(self, match_labels: Mapping[str, str]) -> list[dict[str, Any]]:
        if not self.crd:
            raise ResourceNotServed("no nodeclaims")
        return [copy.deepcopy(c) for c in self.claims.values() if self._match(c, match_labels)]

    def create_nodeclaim(self, body: Mapping[str, Any]) -> dict[str, Any]:
        if not self.crd:
            raise ResourceNotServed("no nodeclaims")
        if self.refuse:
            raise ApiRefused(self.refuse)
        if self.taken:
            self.taken -= 1
            raise ApiConflict("taken")
        self.claims[body["metadata"]["name"]] = copy.deepcopy(dict(body))
        return dict(body)

    def delete_nodeclaim(self, name: str) -> None:
        self.deleted.append(name)
        self.claims.pop(name, None)


REQUEST = NodeRequest(workspace="ws", namespace="team", instance_type="Standard_NC6s_v3", count=2, match_labels={"apps": "ws"})


def ready(claim: dict[str, Any], node: str) -> dict[str, Any]:
    claim["status"] = {"nodeName": node, "conditions": [{"type": t, "status": "True"} for t in ("Launched", "Registered", "Initialized", "Ready")]}
    return claim


def gpu_node(name: str, labels: dict[str, str]) -> dict[str, Any]:
    return {"metadata": {"name": name, "labels": labels},
            "status": {"conditions": [{"type": "Ready", "status": "True"}], "capacity": {"nvidia.com/gpu": "1"}}}


def test_gpu_provisioner_creates_once_then_reports_ready_nodes() -> None:
    nodes = MemoryNodeClient()
    first = GpuProvisioner().ensure_nodes(nodes, REQUEST)
    assert not first.ready and len(nodes.claims) == 2 and first.retry_after_s == 2.0
    again = GpuProvisioner().ensure_nodes(nodes, REQUEST)
    assert len(nodes.claims) == 2 and again.reason == "NodeClaimNotReady"
    owner = {"kaito.sh/workspace": "ws", "kaito.sh/workspacenamespace": "team"}
    for i, claim in enumerate(nodes.claims.values()):
        ready(claim, f"n{i}")
        nodes.nodes[f"n{i}"] = gpu_node(f"n{i}", {**owner, "node.kubernetes.io/instance-type": "Standard_NC6s_v3"})
    done = GpuProvisioner().ensure_nodes(nodes, REQUEST)
    assert done.ready and done.ready_nodes == ("n0", "n1") and done.conditions[0].status == "True"
    assert GpuProvisioner().delete_nodes(nodes, workspace="ws", namespace="team") is False
    assert GpuProvisioner().delete_nodes(nodes, workspace="ws", namespace="team") is True and len(nodes.deleted) == 2


def test_gpu_provisioner_turns_client_errors_into_provisioning_errors() -> None:
    with pytest.raises(ProvisioningError, match="NodeClaim CRD") as missing:
        GpuProvisioner().ensure_nodes(MemoryNodeClient(crd=False), REQUEST)
    assert missing.value.reason == "NodeClaimCRDMissing"
    with pytest.raises(ProvisioningError, match="refused NodeClaim .*: spec.requirements: bad") as refused:
        GpuProvisioner().ensure_nodes(MemoryNodeClient(refuse="spec.requirements: bad"), REQUEST)
    assert refused.value.retryable is False
    collided = MemoryNodeClient(taken=1)  # a name collision draws another name
    GpuProvisioner().ensure_nodes(collided, REQUEST)
    assert len(collided.claims) == 2
    assert GpuProvisioner().delete_nodes(MemoryNodeClient(crd=False), workspace="ws", namespace="team") is True


def test_byo_counts_matching_ready_gpu_nodes_and_declares_it_creates_none() -> None:
    byo = ByoProvisioner()
    assert byo.capabilities.creates_nodes is False and GpuProvisioner().capabilities.creates_nodes is True
    nodes = MemoryNodeClient([gpu_node("a", {"apps": "ws"}), gpu_node("b", {"apps": "other"})])
    half = byo.ensure_nodes(nodes, REQUEST)
    assert not half.ready and half.ready_nodes == ("a",) and "not enough matching nodes: 1/2 nodes matching apps=ws are usable; label 1 more Ready GPU node(s) with apps=ws" in half.message
    nodes.nodes["c"] = gpu_node("c", {"apps": "ws"})
    assert byo.ensure_nodes(nodes, REQUEST).ready_nodes == ("a", "c")


def gfd_node(name: str, product: str, memory_mib: int, preferred_label: str = "ws") -> dict[str, Any]:
    node = gpu_node(name, {"apps": preferred_label, "nvidia.com/gpu.product": product, "nvidia.com/gpu.count": "1",
                           "nvidia.com/gpu.memory": str(memory_mib)})
    return node


class ReadOnly(MemoryNodeClient):
    """Fails the test on any write: bring-your-own nodes belong to the user."""

    def create_nodeclaim(self, body: Mapping[str, Any]) -> dict[str, Any]:
        raise AssertionError("byo created something")

    def delete_nodeclaim(self, name: str) -> None:
        raise AssertionError("byo deleted something")


def test_byo_prefers_preferred_nodes_and_needs_uniform_gpus() -> None:
    byo = ByoProvisioner()
    nodes = ReadOnly([gfd_node("a", "Tesla-V100", 16384), gfd_node("b", "NVIDIA-A100-SXM4-80GB", 81920),
                      gfd_node("c", "NVIDIA-A100-SXM4-80GB", 81920)])
    picked = byo.ensure_nodes(nodes, REQUEST)
    assert picked.ready and picked.ready_nodes == ("b", "c")  # the only uniform pair
    one = REQUEST.model_copy(update={"count": 1, "preferred_nodes": ("c",)})
    assert byo.ensure_nodes(nodes, one).ready_nodes == ("c",)
    del nodes.nodes["c"]
    mixed = byo.ensure_nodes(nodes, REQUEST)
    assert not mixed.ready and mixed.reason == "NodesNotUniform"
    assert "the 2 usable nodes matching apps=ws are not uniform: 1 with 1x NVIDIA-A100-SXM4-80GB (80 GiB each) (b); " \
           "1 with 1x Tesla-V100 (16 GiB each) (a); the workload needs 2 nodes with the same GPUs" in mixed.message
    assert byo.delete_nodes(nodes, workspace="ws", namespace="team") is True and set(nodes.nodes) == {"a", "b"}


def test_byo_checks_the_gfd_gpu_memory_against_the_model() -> None:
    nodes = ReadOnly([gfd_node("a", "Tesla-T4", 16384)])
    request = REQUEST.model_copy(update={"count": 1, "gpu_memory_gib": 20.0})
    small = ByoProvisioner().ensure_nodes(nodes, request)
    assert not small.ready and small.reason == "NodesTooSmall"
    assert "the model needs 20 GiB of GPU memory but 1 node(s) with 1x Tesla-T4 (16 GiB each) have 16 GiB; " \
           "select nodes with larger GPUs or raise resource.count" in small.message
    assert ByoProvisioner().ensure_nodes(nodes, request.model_copy(update={"gpu_memory_gib": 16.0})).ready
