"""Golden tests of the pure manifest builders: example Workspace -> Deployment/StatefulSet/Services."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from opgolden import READY, assert_golden, load_example, plan_for

from fakeapi import FakeApiServer

from kaito_core.errors import NotReadyError
from kaito_core.operator.kube import Kube
from kaito_core.operator.manifests import build_inference_objects
from kaito_core.operator.reconciler import Reconciler

from kaito_core import serving
from kaito_core.operator import checks, plan
from kaito_core.operator.manifests import ANNOTATION_APPLIED_HASH, object_hash, spec_hash
from kaito_core.operator.settings import OperatorSettings
from kaito_core.plugins import Registry
from kaito_core.provisioners import ProvisionResult

def objects_for(obj: dict[str, Any], registry: Registry, provisioner: str = "gpu-provisioner") -> list[dict[str, Any]]:
    """The objects the reconciler would apply for ``obj`` once its nodes are ready."""
    return list(plan_for(obj, registry, provisioner).objects)


def test_single_node_example_gives_deployment_and_service(registry: Registry) -> None:
    objects = objects_for(load_example("examples/inference/kaito_workspace_phi_3.yaml"), registry)
    assert [o["kind"] for o in objects] == ["Deployment", "Service"]
    assert_golden("phi3-deployment", objects)


def test_adapter_example_pulls_adapter_and_passes_strength(registry: Registry) -> None:
    objects = objects_for(load_example("examples/inference/kaito_workspace_phi_3_with_adapters.yaml"), registry)
    pod = objects[0]["spec"]["template"]["spec"]
    assert [c["name"] for c in pod["initContainers"]] == ["model-weights-downloader", "puller-phi-3-adapter"]
    assert {"name": "KAITO_ADAPTER_STRENGTHS", "value": '{"phi-3-adapter": 1.0}'} in pod["containers"][0]["env"]
    assert {"name": "adapter-volume", "mountPath": "/mnt/adapter"} in pod["containers"][0]["volumeMounts"]
    assert_golden("phi3-adapters-deployment", objects)


def test_several_nodes_give_statefulset_with_headless_service(registry: Registry) -> None:
    obj = load_example("examples/inference/kaito_workspace_phi_3.yaml")
    obj["resource"]["count"] = 2
    objects = objects_for(obj, registry)
    assert [o["kind"] for o in objects] == ["Service", "StatefulSet", "Service"]
    headless, sts, svc = objects
    assert headless["metadata"]["name"] == "workspace-phi-3-mini-headless" and headless["spec"]["clusterIP"] == "None"
    assert sts["spec"]["serviceName"] == "workspace-phi-3-mini-headless" and sts["spec"]["replicas"] == 2
    # transformers runs independent replicas (no model split): the Service balances over all pods
    assert svc["spec"]["selector"] == {"kaito.sh/workspace": "workspace-phi-3-mini"}
    ws = checks.check(obj, registry)
    preset = registry.preset("phi-3-mini-4k-instruct")
    backend = registry.backend(preset.default_backend)
    nodes = plan.plan_nodes(ws, preset, backend, OperatorSettings())
    inputs = plan.workload_inputs(ws, preset, backend, registry.provisioner("gpu-provisioner"), OperatorSettings(), nodes, "1")
    distributed = build_inference_objects(dataclasses.replace(inputs, distributed=True))
    leader_env = {e["name"]: e.get("value") for e in distributed[1]["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert leader_env["MASTER_ADDR"] == "workspace-phi-3-mini-0.workspace-phi-3-mini-headless.default.svc.cluster.local"
    assert leader_env["MASTER_PORT"] == "29500"
    assert distributed[2]["spec"]["selector"]["statefulset.kubernetes.io/pod-name"] == "workspace-phi-3-mini-0"
    assert_golden("phi3-statefulset", objects)


def test_byo_affinity_uses_the_label_selector(registry: Registry) -> None:
    obj = load_example("examples/inference/kaito_workspace_phi_3.yaml")
    del obj["resource"]["instanceType"]
    objects = objects_for(obj, registry, provisioner="byo")
    terms = objects[0]["spec"]["template"]["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    assert terms == [{"matchExpressions": [{"key": "apps", "operator": "In", "values": ["phi-3"]}]}]


@pytest.mark.parametrize("kind", ["Deployment", "Service"])
def test_every_child_is_owned_and_stamped(registry: Registry, kind: str) -> None:
    objects = {o["kind"]: o for o in objects_for(load_example("examples/inference/kaito_workspace_phi_3.yaml"), registry)}
    obj = objects[kind]
    owner = obj["metadata"]["ownerReferences"][0]
    assert owner["kind"] == "Workspace" and owner["controller"] is True and owner["uid"].startswith("0000")
    stamped = obj["metadata"]["annotations"].pop(ANNOTATION_APPLIED_HASH)
    if not obj["metadata"]["annotations"]:
        del obj["metadata"]["annotations"]
    assert stamped == object_hash(obj)


def test_spec_hash_changes_with_adapters_only(registry: Registry) -> None:
    base = load_example("examples/inference/kaito_workspace_phi_3_with_adapters.yaml")
    relabelled = {**base, "metadata": {**base["metadata"], "labels": {"x": "y"}}}
    assert spec_hash(base) == spec_hash(relabelled)
    changed = load_example("examples/inference/kaito_workspace_phi_3_with_adapters.yaml")
    changed["inference"]["adapters"][0]["strength"] = "0.5"
    assert spec_hash(base) != spec_hash(changed)
    before = objects_for(base, registry)[0]
    after = objects_for(changed, registry)[0]
    assert before["metadata"]["annotations"][ANNOTATION_APPLIED_HASH] != after["metadata"]["annotations"][ANNOTATION_APPLIED_HASH]


# -- the goldens pin what the reconciler really creates -----------------------------------------

READY_CLAIM = {
    "apiVersion": "karpenter.sh/v1", "kind": "NodeClaim",
    "metadata": {"name": "ws0123abcde", "labels": {"kaito.sh/workspace": "workspace-phi-3-mini", "kaito.sh/workspacenamespace": "default"}},
    "status": {"nodeName": "node-0", "conditions": [{"type": t, "status": "True"} for t in ("Launched", "Registered", "Initialized", "Ready")]},
}
READY_NODE = {
    "apiVersion": "v1", "kind": "Node",
    "metadata": {"name": "node-0", "labels": {"kaito.sh/workspace": "workspace-phi-3-mini", "kaito.sh/workspacenamespace": "default",
                                              "node.kubernetes.io/instance-type": "Standard_NC6s_v3"}},
    "status": {"conditions": [{"type": "Ready", "status": "True"}], "capacity": {"nvidia.com/gpu": "1"}},
}


def test_the_reconciler_creates_exactly_the_golden_objects(registry: Registry) -> None:
    api = FakeApiServer(READY_CLAIM, READY_NODE)
    reconciler = Reconciler(Kube(None, send=api), registry, OperatorSettings())
    obj = load_example("examples/inference/kaito_workspace_phi_3.yaml")
    with pytest.raises(NotReadyError, match="not ready"):  # the status is of the workload as read before creating it
        reconciler.reconcile(obj)
    assert reconciler.reconcile(obj).ready  # the next round reads the (ready) workload and writes nothing new
    # ``obj`` is stale on purpose (as a body whose watch event of our own writes has not arrived):
    # the reconciler knows its own last writes and does not repeat them.
    patches = [path for method, path in api.calls if method == "PATCH"]
    assert sum(p.endswith("/status") for p in patches) == 2 and sum(not p.endswith("/status") for p in patches) == 1
    assert reconciler.reconcile(obj).ready
    assert [path for method, path in api.calls if method in ("PATCH", "POST", "PUT")][len(patches) + 2:] == []
    # What went over the wire is the golden file, byte for byte; the revision annotation the
    # reconciler stamps is "1", as in the planner call of the golden tests.
    assert [o["kind"] for o in api.created] == ["Deployment", "Service"]
    assert_golden("phi3-deployment", api.created)
    assert api.created == objects_for(obj, registry)


def test_a_change_in_the_planner_output_changes_the_golden_file(registry: Registry, monkeypatch: pytest.MonkeyPatch) -> None:
    # Compare only, even under KAITO_UPDATE_GOLDEN=1 (it would write the perturbed plan).
    monkeypatch.delenv("KAITO_UPDATE_GOLDEN", raising=False)
    obj = load_example("examples/inference/kaito_workspace_phi_3.yaml")
    assert_golden("phi3-deployment", objects_for(obj, registry))
    perturbed = list(plan_for(obj, registry, images={"base": "kaito-servers:9.9.9"}).objects)
    with pytest.raises(AssertionError, match="phi3-deployment.yaml differs"):
        assert_golden("phi3-deployment", perturbed)
