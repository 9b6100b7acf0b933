"""The user's phi-3 example on bring-your-own nodes, end to end on the local control plane: the
operator runs with the ``byo`` provisioner and the nodes are kwok nodes the "user" labelled (with
GPU Feature Discovery labels). They are never deleted or tainted by the operator."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from harness import ROOT, Process, Stack, dump, load_manifest
from test_provisioner_modes import PHI3, conditions, swapped_operator, wait_condition
from test_workspace_lifecycle import wait_gone

from kaito_localcluster.kubeapi import wait_for

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(300)]
BYO_EXAMPLE = ROOT / "examples/byo/kaito_workspace_phi_3_byo.yaml"
GFD = {"nvidia.com/gpu.product": "Tesla-V100-PCIE-16GB", "nvidia.com/gpu.count": "1", "nvidia.com/gpu.memory": "16384"}


def wait_ready(stack: Stack, ns: str, name: str, log: Process) -> None:
    """Until ResourceReady, InferenceReady and WorkspaceReady are True (read from the conditions:
    `kubectl get workspace` leaves the INSTANCE column empty for BYO, which shifts its columns)."""
    def ready() -> bool:
        conds = conditions(stack, ns, name)
        return all(conds.get(t, {}).get("status") == "True" for t in ("ResourceReady", "InferenceReady", "WorkspaceReady"))

    wait_for(ready, timeout=120, interval=0.5, what=f"workspace {ns}/{name} ready", on_timeout=lambda: log.tail(40))


@pytest.fixture(scope="module")
def byo(stack: Stack) -> Iterator[Process]:
    """An operator with the byo provisioner in place of the session's."""
    with swapped_operator(stack, "byo") as op:
        yield op


def test_phi3_on_labelled_user_nodes_and_the_nodes_stay(stack: Stack, byo: Process, kube_namespace: str) -> None:
    ns, ws = kube_namespace, load_manifest(PHI3)
    label = f"phi-3-{uuid.uuid4().hex[:6]}"
    ws["resource"]["labelSelector"]["matchLabels"]["apps"] = label
    del ws["resource"]["instanceType"]  # BYO: the nodes exist, so no instance type (validation's rule)
    name = ws["metadata"]["name"]
    node = f"user-{label}"
    stack.cluster.create_fake_node(node, labels={"apps": label, **GFD}, capacity={"nvidia.com/gpu": "1"})
    try:
        before = stack.get(f"/api/v1/nodes/{node}")
        stack.kubectl("apply", "-n", ns, "-f", "-", input=dump(ws))
        wait_ready(stack, ns, name, byo)
        pod = stack.get(f"/api/v1/namespaces/{ns}/pods?labelSelector=kaito.sh/workspace={name}")["items"][0]
        assert pod["spec"]["nodeName"] == node
        stack.kubectl("delete", "workspace", name, "-n", ns, "--timeout=90s")
        wait_gone(stack, ns, name)
        after = stack.get(f"/api/v1/nodes/{node}")  # still there, with the user's labels and no taint of ours
        labels = after["metadata"]["labels"]
        assert labels.items() >= before["metadata"]["labels"].items()
        assert not [k for k in labels if k.startswith(("kaito.sh/", "karpenter.sh/"))]
        # Only the node controller's own node.kubernetes.io/* taints may come and go.
        assert [t for t in after["spec"].get("taints") or [] if not t["key"].startswith("node.kubernetes.io/")] == []
    finally:
        stack.cluster.api.delete(f"/api/v1/nodes/{node}")


def test_the_byo_example_as_written_on_a_node_labelled_as_its_header_says(stack: Stack, byo: Process, kube_namespace: str) -> None:
    ns, ws = kube_namespace, load_manifest(BYO_EXAMPLE)
    name, label = ws["metadata"]["name"], ws["resource"]["labelSelector"]["matchLabels"]
    node = f"user-byo-example-{uuid.uuid4().hex[:6]}"
    stack.cluster.create_fake_node(node, labels={**label, **GFD}, capacity={"nvidia.com/gpu": "1"})  # kubectl label node ... apps=phi-3-byo
    try:
        stack.kubectl("apply", "-n", ns, "-f", str(BYO_EXAMPLE))
        wait_ready(stack, ns, name, byo)
        pod = stack.get(f"/api/v1/namespaces/{ns}/pods?labelSelector=kaito.sh/workspace={name}")["items"][0]
        assert pod["spec"]["nodeName"] == node
        stack.kubectl("delete", "-n", ns, "-f", str(BYO_EXAMPLE), "--timeout=90s")
        wait_gone(stack, ns, name)
        assert stack.cluster.api.exists(f"/api/v1/nodes/{node}")
    finally:
        stack.cluster.api.delete(f"/api/v1/nodes/{node}")


def test_not_enough_byo_nodes_says_how_many_to_label(stack: Stack, byo: Process, kube_namespace: str) -> None:
    ns, ws = kube_namespace, load_manifest(PHI3)
    label = f"phi-3-{uuid.uuid4().hex[:6]}"
    ws["metadata"]["name"] = name = "phi-3-too-few"
    ws["resource"]["labelSelector"]["matchLabels"]["apps"] = label
    del ws["resource"]["instanceType"]  # BYO: the nodes exist, so no instance type (validation's rule)
    ws["resource"]["count"] = 2
    node = f"user-{label}"
    stack.cluster.create_fake_node(node, labels={"apps": label, **GFD}, capacity={"nvidia.com/gpu": "1"})
    try:
        stack.kubectl("apply", "-n", ns, "-f", "-", input=dump(ws))
        cond = wait_condition(stack, ns, name, "ResourceReady", "not enough matching nodes", byo)
        assert f"1/2 nodes matching apps={label} are usable; label 1 more Ready GPU node(s) with apps={label}" in cond["message"]
        stack.kubectl("delete", "workspace", name, "-n", ns, "--timeout=90s")
        wait_gone(stack, ns, name)
        assert stack.cluster.api.exists(f"/api/v1/nodes/{node}")
    finally:
        stack.cluster.api.delete(f"/api/v1/nodes/{node}")
