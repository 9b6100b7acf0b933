"""The watch caches: reads from kopf's indexes, the operator's own writes laid over them until the
watch catches up, and the Kube facade reading from memory once they are bound."""

from __future__ import annotations

from typing import Any

from fakeapi import FakeApiServer

from kaito_core.operator.cache import ALL, INDEX_IDS, ObjectCache
from kaito_core.operator.kube import Kube


def obj(kind: str, name: str, rv: int, namespace: str = "", **labels: str) -> dict[str, Any]:
    return {"kind": kind, "metadata": {"name": name, "namespace": namespace, "resourceVersion": str(rv), "labels": labels}}


def test_reads_come_from_the_indexes_and_own_writes_show_until_the_watch_catches_up() -> None:
    clock = [0.0]
    claims: dict[object, list[dict[str, Any]]] = {ALL: [obj("NodeClaim", "a", 1, ws="x")]}
    deployments: dict[object, list[dict[str, Any]]] = {}
    cache = ObjectCache(clock=lambda: clock[0])
    cache.bind({INDEX_IDS["NodeClaim"]: claims, INDEX_IDS["Deployment"]: deployments})
    assert cache.serves("NodeClaim") and not cache.serves("Pod")
    assert [c["metadata"]["name"] for c in cache.find("NodeClaim", match_labels={"ws": "x"})] == ["a"]
    assert cache.find("NodeClaim", match_labels={"ws": "y"}) == []

    cache.wrote("NodeClaim", obj("NodeClaim", "b", 5, ws="x"))  # created; no watch event yet
    assert [c["metadata"]["name"] for c in cache.find("NodeClaim", match_labels={"ws": "x"})] == ["a", "b"]
    claims[ALL].append(obj("NodeClaim", "b", 7, ws="x"))  # the watch delivers a newer version
    assert [c["metadata"]["resourceVersion"] for c in cache.find("NodeClaim")] == ["1", "7"]

    deployment = obj("Deployment", "ws", 3, "team")
    deployments[("team", "ws")] = [deployment]
    cache.wrote("Deployment", obj("Deployment", "ws", 4, "team"))
    assert cache.get("Deployment", "team", "ws")["metadata"]["resourceVersion"] == "4"  # type: ignore[index]
    clock[0] += 3600  # a write the watch never confirmed expires
    assert cache.get("Deployment", "team", "ws")["metadata"]["resourceVersion"] == "3"  # type: ignore[index]

    cache.deleted("Deployment", "team", "ws", {"kind": "Status"})  # gone at once: hidden until the watch says so
    assert cache.get("Deployment", "team", "ws") is None
    pending = obj("NodeClaim", "a", 9, ws="x")
    pending["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    cache.deleted("NodeClaim", "", "a", pending)  # finalizers pending: still there, marked
    assert cache.get("NodeClaim", "", "a")["metadata"]["deletionTimestamp"]  # type: ignore[index]


def test_kube_reads_from_memory_once_bound() -> None:
    api = FakeApiServer(obj("Node", "n1", 1, pool="a") | {"apiVersion": "v1"})
    kube = Kube(None, send=api)
    assert [n["metadata"]["name"] for n in kube.find("Node", {"pool": "a"})] == ["n1"]
    assert len(api.calls) == 1
    kube.cache.bind({INDEX_IDS["Node"]: {ALL: [obj("Node", "n1", 1, pool="a")]}})
    assert [n["metadata"]["name"] for n in kube.find("Node", {"pool": "a"})] == ["n1"]
    assert kube.get("Node", "", "n1") is not None and len(api.calls) == 1  # no request once bound


def test_a_read_of_one_object_leaves_the_pending_writes_of_others_alone() -> None:
    deployments: dict[object, list[dict[str, Any]]] = {("team", "a"): [obj("Deployment", "a", 1, "team")], ("team", "b"): [obj("Deployment", "b", 1, "team")]}
    cache = ObjectCache()
    cache.bind({INDEX_IDS["Deployment"]: deployments})
    cache.deleted("Deployment", "team", "b", None)
    assert cache.get("Deployment", "team", "a") is not None
    assert cache.get("Deployment", "team", "b") is None  # still hidden: reading "a" did not drop b's tombstone
    assert [d["metadata"]["name"] for d in cache.find("Deployment", namespace="team")] == ["a"]
    cache.wrote("Deployment", obj("Deployment", "c", 2, "other", app="x"))
    assert [d["metadata"]["name"] for d in cache.find("Deployment", match_labels={"app": "x"})] == ["c"]


def test_the_caches_keep_only_what_the_operator_reads() -> None:
    from kaito_core.operator.cache import slim
    from kaito_core.operator.plan import observe_workload

    deployment = {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "ws", "namespace": "team", "generation": 2, "resourceVersion": "7", "managedFields": [{"manager": "x"}],
                     "ownerReferences": [{"uid": "u", "controller": True}], "annotations": {"kaito.sh/applied-hash": "h"}},
        "spec": {"replicas": 1, "template": {"spec": {"containers": [{"name": "big"}]}}},
        "status": {"observedGeneration": 2, "replicas": 1, "readyReplicas": 1, "updatedReplicas": 1},
    }
    kept = slim("Deployment", deployment)
    assert "managedFields" not in kept["metadata"] and kept["spec"] == {"replicas": 1}
    assert observe_workload(kept, ()) == observe_workload(deployment, ())  # readiness reads the same
    node = {"kind": "Node", "metadata": {"name": "n"}, "spec": {"unschedulable": True, "podCIDR": "x"},
            "status": {"conditions": [], "capacity": {"nvidia.com/gpu": "1"}, "images": [{"names": ["a"]}], "nodeInfo": {}}}
    assert slim("Node", node)["status"] == {"conditions": [], "capacity": {"nvidia.com/gpu": "1"}}
    assert slim("Node", node)["spec"] == {"unschedulable": True}
    pod = {"kind": "Pod", "metadata": {"name": "p"}, "spec": {"containers": [{"name": "c"}]}, "status": {"phase": "Running", "podIP": "1.2.3.4"}}
    assert slim("Pod", pod)["spec"] == {} and slim("Pod", pod)["status"] == {"phase": "Running"}


def test_an_object_marked_for_deletion_by_us_vanishes_when_the_watch_drops_it() -> None:
    claims: dict[object, list[dict[str, Any]]] = {ALL: [obj("NodeClaim", "a", 1, ws="x")]}
    cache = ObjectCache()
    cache.bind({INDEX_IDS["NodeClaim"]: claims})
    pending = obj("NodeClaim", "a", 2, ws="x")
    pending["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    cache.deleted("NodeClaim", "", "a", pending)
    assert cache.find("NodeClaim")[0]["metadata"]["deletionTimestamp"]  # finalizers pending: shown as deleting
    claims[ALL] = []  # the watch reports it deleted
    assert cache.find("NodeClaim") == []  # at once, not after the pending entry expires
