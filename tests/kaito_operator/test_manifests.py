"""Golden tests of the pure manifest builders: example Workspace -> Deployment/StatefulSet/Services."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from opgolden import assert_golden, load_example

from kaito_core.api.workspace import Workspace
from kaito_core.backends import AdapterRef, ServingContext
from kaito_core.operator import contracts
from kaito_core.operator.manifests import (
    ANNOTATION_APPLIED_HASH,
    WorkloadInputs,
    build_inference_objects,
    object_hash,
    spec_hash,
)
from kaito_core.operator.settings import OperatorSettings
from kaito_core.plugins import Registry
from kaito_core.provisioners import NodeRequest


def inputs_for(obj: dict[str, Any], registry: Registry, provisioner: str = "gpu-provisioner") -> WorkloadInputs:
    """What the reconciler would gather for ``obj`` (validation, plan, server spec, affinity)."""
    ws: Workspace = contracts.check(obj, registry, provisioner=provisioner)
    assert ws.inference and ws.inference.preset
    preset = registry.preset(ws.inference.preset.name)
    backend = registry.backend(preset.default_backend)
    plan = contracts.plan(ws, preset, backend)
    request = NodeRequest(
        workspace=ws.name, namespace=ws.namespace, instance_type=ws.resource.instance_type, count=plan.nodes,
        match_labels=ws.resource.label_selector.match_labels, disk_gib=preset.disk_gib,
    )
    settings = OperatorSettings()
    adapters = tuple(AdapterRef(name=a.source.name or "", strength=float(a.strength or "1.0")) for a in ws.inference.adapters)
    server = backend.server_spec(
        preset,
        ServingContext(workspace=ws.name, namespace=ws.namespace, gpus_per_node=plan.gpus_per_node, node_count=plan.nodes, adapters=adapters),
    )
    return WorkloadInputs(
        workspace=ws, preset=preset, server=server, nodes=plan.nodes, gpus_per_node=plan.gpus_per_node,
        affinity_terms=registry.provisioner(provisioner).node_affinity_terms(request), revision="1",
        image=settings.images.inference, backend_name=backend.name, adapter_puller_image=settings.images.adapter_puller,
    )


def test_single_node_example_gives_deployment_and_service(registry: Registry) -> None:
    objects = build_inference_objects(inputs_for(load_example("examples/inference/kaito_workspace_phi_3.yaml"), registry))
    assert [o["kind"] for o in objects] == ["Deployment", "Service"]
    assert_golden("phi3-deployment", objects)


def test_adapter_example_pulls_adapter_and_passes_strength(registry: Registry) -> None:
    objects = build_inference_objects(inputs_for(load_example("examples/inference/kaito_workspace_phi_3_with_adapters.yaml"), registry))
    pod = objects[0]["spec"]["template"]["spec"]
    assert [c["name"] for c in pod["initContainers"]] == ["model-weights-downloader", "puller-phi-3-adapter"]
    assert {"name": "KAITO_ADAPTER_STRENGTHS", "value": '{"phi-3-adapter": 1.0}'} in pod["containers"][0]["env"]
    assert {"name": "adapter-volume", "mountPath": "/mnt/adapter"} in pod["containers"][0]["volumeMounts"]
    assert_golden("phi3-adapters-deployment", objects)


def test_several_nodes_give_statefulset_with_headless_service(registry: Registry) -> None:
    obj = load_example("examples/inference/kaito_workspace_phi_3.yaml")
    obj["resource"]["count"] = 2
    objects = build_inference_objects(inputs_for(obj, registry))
    assert [o["kind"] for o in objects] == ["Service", "StatefulSet", "Service"]
    headless, sts, svc = objects
    assert headless["metadata"]["name"] == "workspace-phi-3-mini-headless" and headless["spec"]["clusterIP"] == "None"
    assert sts["spec"]["serviceName"] == "workspace-phi-3-mini-headless" and sts["spec"]["replicas"] == 2
    # transformers runs independent replicas (no model split): the Service balances over all pods
    assert svc["spec"]["selector"] == {"kaito.sh/workspace": "workspace-phi-3-mini"}
    distributed = build_inference_objects(dataclasses.replace(inputs_for(obj, registry), distributed=True))
    leader_env = {e["name"]: e.get("value") for e in distributed[1]["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert leader_env["MASTER_ADDR"] == "workspace-phi-3-mini-0.workspace-phi-3-mini-headless.default.svc.cluster.local"
    assert leader_env["MASTER_PORT"] == "29500"
    assert distributed[2]["spec"]["selector"]["statefulset.kubernetes.io/pod-name"] == "workspace-phi-3-mini-0"
    assert_golden("phi3-statefulset", objects)


def test_byo_affinity_uses_the_label_selector(registry: Registry) -> None:
    obj = load_example("examples/inference/kaito_workspace_phi_3.yaml")
    del obj["resource"]["instanceType"]
    objects = build_inference_objects(inputs_for(obj, registry, provisioner="byo"))
    terms = objects[0]["spec"]["template"]["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    assert terms == [{"matchExpressions": [{"key": "apps", "operator": "In", "values": ["phi-3"]}]}]


@pytest.mark.parametrize("kind", ["Deployment", "Service"])
def test_every_child_is_owned_and_stamped(registry: Registry, kind: str) -> None:
    objects = {o["kind"]: o for o in build_inference_objects(inputs_for(load_example("examples/inference/kaito_workspace_phi_3.yaml"), registry))}
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
    before = build_inference_objects(inputs_for(base, registry))[0]
    after = build_inference_objects(inputs_for(changed, registry))[0]
    assert before["metadata"]["annotations"][ANNOTATION_APPLIED_HASH] != after["metadata"]["annotations"][ANNOTATION_APPLIED_HASH]
