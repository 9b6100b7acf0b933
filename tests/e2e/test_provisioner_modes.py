"""The user's phi-3 example through the other node provisioners, end to end on the local control
plane: ``karpenter`` (Karpenter's real v1 NodePool/NodeClaim CRDs, the Karpenter test stand-in
turning NodePools into NodeClaims into kwok Nodes) and ``byo`` (labelled kwok nodes the user
owns). The session's gpu-provisioner operator is swapped for one with the provisioner under
test and put back afterwards. Failure modes are read back from the Workspace conditions."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import yaml
from harness import ROOT, Process, Stack, dump, load_manifest, wait_webhook_ready
from test_workspace_lifecycle import EXAMPLES, nodeclaims, nodes, wait_gone, wait_ready

from kaito_localcluster.kubeapi import wait_for
from kaito_provisioners.nodepool import nodepool_name

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(300)]
PHI3 = ROOT / "examples/inference/kaito_workspace_phi_3.yaml"
KARPENTER_EXAMPLE = ROOT / "examples/karpenter/kaito_workspace_phi_3_karpenter.yaml"
NODEPOOL_CRD = ROOT / "charts/kaito/crds/karpenter.sh_nodepools.yaml"
NODEPOOL_CRD_PATH = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/nodepools.karpenter.sh"
NODEPOOLS = "/apis/karpenter.sh/v1/nodepools"
NO_CAPACITY_SKU = "Standard_NC24ads_A100_v4"
NO_CAPACITY = "no Standard_NC24ads_A100_v4 capacity available in westus2; try another instance type or region"


def operator_with(stack: Stack, provisioner: str, log: str, extra_env: dict[str, str] | None = None) -> Process:
    """The session operator's command line, credentials and ports, with another provisioner (and ``extra_env``)."""
    env = dict(stack.operator.env, KAITO_NODE_PROVISIONER__NAME=provisioner, **(extra_env or {}))
    return Process(f"operator-{provisioner}", stack.operator.argv, env, stack.workdir / log)


@contextmanager
def swapped_operator(stack: Stack, provisioner: str, extra_env: dict[str, str] | None = None) -> Iterator[Process]:
    """Stop the session operator, run one with ``provisioner`` (and ``extra_env``), and put the session one back."""
    stack.operator.stop()
    other = operator_with(stack, provisioner, f"operator-{provisioner}.log", extra_env)
    other.start()
    try:
        wait_webhook_ready(stack.cluster, stack.webhook_port)
        yield other
    finally:
        other.stop()
        stack.operator.start()
        wait_webhook_ready(stack.cluster, stack.webhook_port)


def conditions(stack: Stack, ns: str, name: str) -> dict[str, dict[str, Any]]:
    """The Workspace's conditions as ``kubectl get workspace -o yaml`` shows them, by type."""
    ws = yaml.safe_load(stack.kubectl("get", "workspace", name, "-n", ns, "-o", "yaml").stdout)
    return {c["type"]: c for c in (ws.get("status") or {}).get("conditions") or []}


def wait_condition(stack: Stack, ns: str, name: str, type_: str, text: str, log: Process) -> dict[str, Any]:
    def found() -> dict[str, Any] | None:
        cond = conditions(stack, ns, name).get(type_)
        return cond if cond and cond["status"] == "False" and text in cond.get("message", "") else None

    return wait_for(found, timeout=60, interval=0.5, what=f"{type_} condition saying {text!r}", on_timeout=lambda: log.tail(60))


@pytest.fixture(scope="module")
def karpenter(stack: Stack) -> Iterator[Process]:
    """Karpenter stand-in + an operator with the karpenter provisioner (the session installed the CRDs)."""
    fake = Process(
        "fake-karpenter",
        [sys.executable, str(ROOT / "tests/e2e/fake_karpenter.py"), "--kubeconfig", str(stack.cluster.kubeconfig),
         "--fail-sku", f"{NO_CAPACITY_SKU}={NO_CAPACITY}"],
        {**stack.fake.env}, stack.workdir / "fake-karpenter.log",
    )
    fake.start()
    try:
        with swapped_operator(stack, "karpenter") as op:
            yield op
    finally:
        fake.stop()


def pools(stack: Stack, ns: str, name: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = stack.cluster.api.get(
        NODEPOOLS, labelSelector=f"kaito.sh/workspace={name},kaito.sh/workspacenamespace={ns}")["items"]
    return items


def test_the_karpenter_example_from_apply_to_delete(stack: Stack, karpenter: Process, kube_namespace: str) -> None:
    ns, ws = kube_namespace, load_manifest(KARPENTER_EXAMPLE)
    name = ws["metadata"]["name"]
    stack.kubectl("apply", "-n", ns, "-f", str(KARPENTER_EXAMPLE))
    wait_ready(stack, ns, name)
    [pool] = pools(stack, ns, name)
    assert pool["metadata"]["name"] == nodepool_name(name, ns) and pool["spec"]["replicas"] == 1
    assert pool["spec"]["disruption"]["budgets"] == [{"nodes": "0"}]
    [claim] = nodeclaims(stack, ns, name)
    assert claim["metadata"]["labels"]["karpenter.sh/nodepool"] == pool["metadata"]["name"]
    assert claim["metadata"]["annotations"]["karpenter.sh/do-not-disrupt"] == "true"
    [node] = nodes(stack, ns, name)
    assert node["metadata"]["labels"]["apps"] == "phi-3-karpenter" and {"key": "sku", "value": "gpu", "effect": "NoSchedule"} in node["spec"]["taints"]
    stack.kubectl("delete", "workspace", name, "-n", ns, "--timeout=90s")
    wait_gone(stack, ns, name)
    assert pools(stack, ns, name) == []


def test_karpenter_nodeclaim_failure_reaches_the_workspace(stack: Stack, karpenter: Process, kube_namespace: str) -> None:
    ns, ws = kube_namespace, load_manifest(PHI3)
    ws["metadata"]["name"] = name = "phi-3-no-capacity"
    ws["resource"]["instanceType"] = NO_CAPACITY_SKU
    stack.kubectl("apply", "-n", ns, "-f", "-", input=dump(ws))
    cond = wait_condition(stack, ns, name, "NodeClaimReady", "Launched=False (InsufficientCapacity)", karpenter)
    assert NO_CAPACITY in cond["message"]  # what to do: another instance type or region
    stack.kubectl("delete", "workspace", name, "-n", ns, "--timeout=90s")
    wait_gone(stack, ns, name)
    assert pools(stack, ns, name) == []


def test_karpenter_crd_removed_while_running_reaches_the_workspace(stack: Stack, karpenter: Process, kube_namespace: str) -> None:
    """Next to last in this module: it removes the NodePool CRD, the test after it puts it back."""
    stack.cluster.api.delete(NODEPOOL_CRD_PATH)
    wait_for(lambda: not stack.cluster.api.exists(NODEPOOL_CRD_PATH), timeout=30, what="NodePool CRD gone")
    ns, ws = kube_namespace, load_manifest(PHI3)
    ws["metadata"]["name"] = name = "phi-3-no-karpenter"
    stack.kubectl("apply", "-n", ns, "-f", "-", input=dump(ws))
    cond = wait_condition(stack, ns, name, "ResourceReady", "nodepools.karpenter.sh", karpenter)
    assert "install Karpenter (v1, StaticCapacity feature gate on)" in cond["message"]
    stack.kubectl("delete", "workspace", name, "-n", ns, "--timeout=90s")  # nothing of ours can exist
    wait_gone(stack, ns, name)


def test_karpenter_refuses_to_start_without_the_nodepool_crd(stack: Stack) -> None:
    """Last in this module: removing a CRD makes the garbage collector re-discover resources."""
    if stack.cluster.api.exists(NODEPOOL_CRD_PATH):  # when run alone
        stack.cluster.api.delete(NODEPOOL_CRD_PATH)
        wait_for(lambda: not stack.cluster.api.exists(NODEPOOL_CRD_PATH), timeout=30, what="NodePool CRD gone")
    lone = operator_with(stack, "karpenter", "operator-karpenter-no-crd.log")
    lone.start()  # beside the session operator: it must stop before it touches anything
    assert lone.proc is not None
    assert lone.proc.wait(60) == 2
    out = lone.log.read_text()
    assert "kaito operator: cannot start: node provisioner karpenter needs the CRD nodepools.karpenter.sh, which the cluster does not serve" in out
    assert "install Karpenter v1" in out and "KAITO_NODE_PROVISIONER__NAME" in out
    stack.cluster.install_crds([NODEPOOL_CRD])  # as the session set it up
