"""The karpenter provisioner against an in-memory NodeClient (NodePools and NodeClaims in dicts),
and the NodePool it builds, checked against a golden file and Karpenter's real v1 CRD schema."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from kaito_core.errors import ProvisioningError
from kaito_core.provisioners import ApiRefused, NodeClient, NodeRequest, ResourceNotServed
from kaito_provisioners import KarpenterProvisioner
from kaito_provisioners.nodepool import KarpenterSettings, NodeClassRef, build_nodepool, nodepool_name

GOLDEN = Path(__file__).parent / "golden" / "nodepool-phi3.yaml"
CRD = Path(__file__).resolve().parents[3] / "charts/kaito/crds/karpenter.sh_nodepools.yaml"
REQUEST = NodeRequest(workspace="ws", namespace="team", instance_type="Standard_NC6s_v3", count=2, match_labels={"apps": "ws"})
POOL = "kaito-team-ws"


def _match(obj: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    have = obj["metadata"].get("labels") or {}
    return all(have.get(k) == v for k, v in labels.items())


class KarpenterMemory(NodeClient):
    """NodePools, NodeClaims and Nodes in dicts; ``crd`` False plays a cluster without Karpenter."""

    def __init__(self, *, crd: bool = True, refuse: str = "") -> None:
        self.crd, self.refuse = crd, refuse
        self.pools: dict[str, dict[str, Any]] = {}
        self.claims: dict[str, dict[str, Any]] = {}
        self.nodes: dict[str, dict[str, Any]] = {}
        self.writes: list[str] = []

    def _served(self) -> None:
        if not self.crd:
            raise ResourceNotServed("no karpenter.sh")

    def list_nodes(self, match_labels: Mapping[str, str]) -> list[dict[str, Any]]:
        return [copy.deepcopy(n) for n in self.nodes.values() if _match(n, match_labels)]

    def list_nodeclaims(self, match_labels: Mapping[str, str]) -> list[dict[str, Any]]:
        self._served()
        return [copy.deepcopy(c) for c in self.claims.values() if _match(c, match_labels)]

    def create_nodeclaim(self, body: Mapping[str, Any]) -> dict[str, Any]:
        raise AssertionError("the karpenter provisioner never creates NodeClaims itself")

    def delete_nodeclaim(self, name: str) -> None:
        raise AssertionError("the karpenter provisioner never deletes NodeClaims itself")

    def list_objects(self, kind: str, match_labels: Mapping[str, str]) -> list[dict[str, Any]]:
        assert kind == "NodePool"
        self._served()
        return [copy.deepcopy(p) for p in self.pools.values() if _match(p, match_labels)]

    def create_object(self, body: Mapping[str, Any]) -> dict[str, Any]:
        self._served()
        if self.refuse:
            raise ApiRefused(self.refuse)
        self.writes.append(f"create {body['metadata']['name']}")
        self.pools[body["metadata"]["name"]] = copy.deepcopy(dict(body))
        return dict(body)

    def patch_object(self, kind: str, name: str, merge_patch: Mapping[str, Any]) -> dict[str, Any]:
        self.writes.append(f"patch {name}")
        pool = self.pools[name]
        pool["metadata"]["annotations"].update(merge_patch["metadata"]["annotations"])
        pool["spec"] = copy.deepcopy(merge_patch["spec"])
        return pool

    def delete_object(self, kind: str, name: str) -> None:
        self.writes.append(f"delete {name}")
        self.pools[name]["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"

    # -- what Karpenter and its cloud provider would do -------------------------------------------

    def karpenter_launches(self, pool: str, *, fail: tuple[str, str] | None = None) -> None:
        """Karpenter creates spec.replicas NodeClaims; each launches (or fails with ``fail``)."""
        spec = self.pools[pool]["spec"]
        labels = {**spec["template"]["metadata"]["labels"], "karpenter.sh/nodepool": pool}
        for i in range(spec["replicas"]):
            name = f"{pool}-{i}"
            if fail:
                conds = [{"type": "Launched", "status": "False", "reason": fail[0], "message": fail[1]}]
                self.claims[name] = {"metadata": {"name": name, "labels": labels}, "status": {"conditions": conds}}
                continue
            conds = [{"type": t, "status": "True"} for t in ("Launched", "Registered", "Initialized", "Ready")]
            self.claims[name] = {"metadata": {"name": name, "labels": labels}, "status": {"nodeName": f"node-{name}", "conditions": conds}}
            self.nodes[f"node-{name}"] = {"metadata": {"name": f"node-{name}", "labels": labels},
                                          "status": {"conditions": [{"type": "Ready", "status": "True"}], "capacity": {"nvidia.com/gpu": "1"}}}


def test_nodepool_matches_golden_and_the_node_class_comes_from_settings() -> None:
    pool = build_nodepool(REQUEST, NodeClassRef())
    assert pool == yaml.safe_load(GOLDEN.read_text())
    aws = KarpenterSettings(node_class=NodeClassRef(group="karpenter.k8s.aws", kind="EC2NodeClass", name="gpu"))
    assert build_nodepool(REQUEST, aws.node_class)["spec"]["template"]["spec"]["nodeClassRef"] == {
        "group": "karpenter.k8s.aws", "kind": "EC2NodeClass", "name": "gpu"}


def test_node_class_is_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAITO_KARPENTER__NODE_CLASS__KIND", "EC2NodeClass")
    monkeypatch.setenv("KAITO_KARPENTER__NODE_CLASS__GROUP", "karpenter.k8s.aws")
    assert KarpenterProvisioner().settings.node_class == NodeClassRef(group="karpenter.k8s.aws", kind="EC2NodeClass", name="default")


def test_nodepool_uses_only_fields_of_the_real_crd_schema() -> None:
    crd = next(d for d in yaml.safe_load_all(CRD.read_text()) if d)
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]

    def check(value: Any, node: dict[str, Any], path: str) -> None:
        if isinstance(value, dict) and "properties" in node:
            for key, sub in value.items():
                assert key in node["properties"], f"{path}.{key} is not in the NodePool v1 schema"
                check(sub, node["properties"][key], f"{path}.{key}")
        elif isinstance(value, list) and "items" in node:
            for item in value:
                check(item, node["items"], f"{path}[]")

    check({"spec": build_nodepool(REQUEST, NodeClassRef())["spec"]}, schema, "")


def test_nodepool_name_is_stable_and_fits_a_label_value() -> None:
    assert nodepool_name("ws", "team") == POOL
    long = nodepool_name("w" * 63, "n" * 63)
    assert len(long) <= 50 and long == nodepool_name("w" * 63, "n" * 63) and long != nodepool_name("w" * 62, "n" * 63)


def test_creates_one_nodepool_then_reports_ready_nodes_without_touching_it_again() -> None:
    kube = KarpenterMemory()
    first = KarpenterProvisioner().ensure_nodes(kube, REQUEST)
    assert not first.ready and first.reason == "NodeClaimNotReady" and kube.writes == [f"create {POOL}"]
    assert f"NodePool {POOL} has 0/2 NodeClaims" in first.message
    KarpenterProvisioner().ensure_nodes(kube, REQUEST)
    assert kube.writes == [f"create {POOL}"]  # found again by labels, unchanged: not re-sent
    kube.karpenter_launches(POOL)
    done = KarpenterProvisioner().ensure_nodes(kube, REQUEST)
    assert done.ready and done.ready_nodes == (f"node-{POOL}-0", f"node-{POOL}-1") and done.conditions[0].status == "True"
    assert KarpenterProvisioner().node_affinity_terms(REQUEST) == [{"key": "karpenter.sh/nodepool", "operator": "In", "values": [POOL]}]


def test_a_changed_count_patches_the_nodepool() -> None:
    kube = KarpenterMemory()
    KarpenterProvisioner().ensure_nodes(kube, REQUEST)
    KarpenterProvisioner().ensure_nodes(kube, REQUEST.model_copy(update={"count": 3}))
    assert kube.writes == [f"create {POOL}", f"patch {POOL}"] and kube.pools[POOL]["spec"]["replicas"] == 3
    assert kube.pools[POOL]["spec"]["limits"] == {"nodes": "3"}


def test_the_first_failing_nodeclaim_condition_reaches_the_status() -> None:
    kube = KarpenterMemory()
    KarpenterProvisioner().ensure_nodes(kube, REQUEST)
    kube.karpenter_launches(POOL, fail=("InsufficientCapacity", "no Standard_NC6s_v3 capacity in westus2"))
    result = KarpenterProvisioner().ensure_nodes(kube, REQUEST)
    assert not result.ready and result.reason == "NodeClaimNotReady"
    assert f"NodeClaim {POOL}-0 is not ready: Launched=False (InsufficientCapacity): no Standard_NC6s_v3 capacity in westus2" in result.message
    assert result.conditions[0].status == "False" and "InsufficientCapacity" in result.conditions[0].message


def test_missing_crds_and_refusals_become_provisioning_errors_that_say_what_to_do() -> None:
    with pytest.raises(ProvisioningError, match="install Karpenter") as missing:
        KarpenterProvisioner().ensure_nodes(KarpenterMemory(crd=False), REQUEST)
    assert missing.value.reason == "KarpenterCRDMissing"
    with pytest.raises(ProvisioningError, match="refused NodePool kaito-team-ws: bad nodeClassRef.*NODE_CLASS") as refused:
        KarpenterProvisioner().ensure_nodes(KarpenterMemory(refuse="bad nodeClassRef"), REQUEST)
    assert refused.value.reason == "NodePoolInvalid" and not refused.value.retryable


def test_delete_removes_the_nodepool_and_waits_for_its_nodeclaims_and_nodes() -> None:
    kube = KarpenterMemory()
    KarpenterProvisioner().ensure_nodes(kube, REQUEST)
    kube.karpenter_launches(POOL)
    assert KarpenterProvisioner().delete_nodes(kube, workspace="ws", namespace="team") is False
    assert kube.writes[-1] == f"delete {POOL}"
    assert KarpenterProvisioner().delete_nodes(kube, workspace="ws", namespace="team") is False
    assert kube.writes.count(f"delete {POOL}") == 1  # already deleting: not sent again
    kube.pools.clear()
    kube.claims.clear()
    assert KarpenterProvisioner().delete_nodes(kube, workspace="ws", namespace="team") is False  # nodes still there
    kube.nodes.clear()
    assert KarpenterProvisioner().delete_nodes(kube, workspace="ws", namespace="team") is True
    assert KarpenterProvisioner().delete_nodes(KarpenterMemory(crd=False), workspace="ws", namespace="team") is True


def test_prerequisites_name_each_missing_crd_and_what_to_install() -> None:
    provisioner = KarpenterProvisioner()
    assert provisioner.needs() == ["CRD nodepools.karpenter.sh", "CRD nodeclaims.karpenter.sh"]
    missing = provisioner.missing_prerequisites(lambda crd: crd == "nodeclaims.karpenter.sh")
    assert missing == [
        "node provisioner karpenter needs the CRD nodepools.karpenter.sh, which the cluster does not serve: install "
        "Karpenter v1 (with the StaticCapacity feature gate) and its cloud provider, or its CRDs from charts/kaito/crds"
    ]
    assert provisioner.missing_prerequisites(lambda crd: True) == []
