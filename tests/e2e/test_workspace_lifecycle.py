"""End to end on the local control plane: the user's examples applied with kubectl become
upstream-shaped NodeClaims, kwok nodes (through the gpu-provisioner test stand-in), Running
inference pods and Services; kubectl delete leaves nothing behind."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import pytest
from harness import FAILING_MESSAGE, FAILING_SKU, Stack, dump, load_manifest

from kaito_core.plugins import Registry
from kaito_localcluster.kubeapi import wait_for

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(300)]
ROOT = Path(__file__).resolve().parents[2]
#: The inference examples for node auto-provisioning (an instanceType), phi-3 first; the CPU Gemma
#: example is for bring-your-own nodes and runs on the real node (tests/realnode).
EXAMPLES = sorted(p for p in (ROOT / "examples" / "inference").glob("*.yaml") if load_manifest(p)["resource"].get("instanceType"))
WS = "/apis/kaito.sh/v1beta1/namespaces/{ns}/workspaces/{name}"


def owner_selector(ns: str, name: str) -> str:
    return f"kaito.sh/workspace={name},kaito.sh/workspacenamespace={ns}"


def nodeclaims(stack: Stack, ns: str, name: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = stack.cluster.api.get("/apis/karpenter.sh/v1/nodeclaims", labelSelector=owner_selector(ns, name))["items"]
    return items


def nodes(stack: Stack, ns: str, name: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = stack.cluster.api.get("/api/v1/nodes", labelSelector=owner_selector(ns, name))["items"]
    return items


def pods(stack: Stack, ns: str, name: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = stack.cluster.api.get(f"/api/v1/namespaces/{ns}/pods", labelSelector=f"kaito.sh/workspace={name}")["items"]
    return items


def columns(stack: Stack, ns: str, name: str) -> dict[str, str]:
    """`kubectl get workspace` as a person reads it: header -> value."""
    out = stack.kubectl("get", "workspace", name, "-n", ns).stdout.splitlines()
    return dict(zip(out[0].split(), out[1].split(), strict=False))


def wait_ready(stack: Stack, ns: str, name: str, timeout: float = 120) -> dict[str, str]:
    def ready() -> dict[str, str] | None:
        cols = columns(stack, ns, name)
        return cols if all(cols.get(c) == "True" for c in ("RESOURCEREADY", "INFERENCEREADY", "WORKSPACEREADY")) else None

    return wait_for(ready, timeout=timeout, interval=0.5, what=f"workspace {ns}/{name} ready", on_timeout=stack.diagnostics)


def wait_gone(stack: Stack, ns: str, name: str, timeout: float = 90) -> None:
    def gone() -> bool:
        children = [
            f"/apis/apps/v1/namespaces/{ns}/deployments/{name}",
            f"/apis/apps/v1/namespaces/{ns}/statefulsets/{name}",
            f"/api/v1/namespaces/{ns}/services/{name}",
            f"/api/v1/namespaces/{ns}/services/{name}-headless",
            WS.format(ns=ns, name=name),
        ]
        return not any(stack.cluster.api.exists(p) for p in children) and not (
            nodeclaims(stack, ns, name) or nodes(stack, ns, name) or pods(stack, ns, name)
        )

    wait_for(gone, timeout=timeout, interval=0.5, what=f"everything of workspace {ns}/{name} deleted", on_timeout=stack.diagnostics)


def assert_upstream_nodeclaim(claim: dict[str, Any], ws: dict[str, Any], ns: str, disk_gib: int) -> None:
    """kaito.md §4.2 / test-infra.md §4: name, labels, annotations, nodeClassRef, taint, requirements, storage."""
    name, sku = ws["metadata"]["name"], ws["resource"]["instanceType"]
    assert re.fullmatch(r"ws[0-9a-f]{9}", claim["metadata"]["name"])
    labels = claim["metadata"]["labels"]
    assert labels["karpenter.sh/nodepool"] == "kaito"
    assert labels["kaito.sh/workspace"] == name and labels["kaito.sh/workspacenamespace"] == ns
    for key, value in ws["resource"]["labelSelector"]["matchLabels"].items():
        assert labels[key] == value
    assert claim["metadata"]["annotations"]["karpenter.sh/do-not-disrupt"] == "true"
    assert claim["metadata"]["annotations"]["kaito.sh/node-image-family"] == "ubuntu"
    spec = claim["spec"]
    assert spec["nodeClassRef"] == {"group": "kaito.sh", "kind": "KaitoNodeClass", "name": "default"}
    assert spec["taints"] == [{"key": "sku", "value": "gpu", "effect": "NoSchedule"}]
    reqs = {r["key"]: (r["operator"], r["values"]) for r in spec["requirements"]}
    assert reqs == {
        "karpenter.sh/nodepool": ("In", ["kaito"]),
        "node.kubernetes.io/instance-type": ("In", [sku]),
        "kubernetes.io/os": ("In", ["linux"]),
        "karpenter.azure.com/sku-name": ("In", [sku]),
    }
    assert spec["resources"]["requests"]["storage"] == f"{disk_gib}Gi"


@pytest.mark.parametrize("example", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_from_apply_to_delete(stack: Stack, kube_namespace: str, example: Path) -> None:
    ns, ws = kube_namespace, load_manifest(example)
    name = ws["metadata"]["name"]
    preset = Registry.from_entry_points().preset(ws["inference"]["preset"]["name"])

    stack.kubectl("apply", "-n", ns, "-f", str(example))
    claims = wait_for(lambda: nodeclaims(stack, ns, name), timeout=30, what="NodeClaim created", on_timeout=stack.diagnostics)
    assert len(claims) == 1
    assert_upstream_nodeclaim(claims[0], ws, ns, preset.disk_gib)

    cols = wait_ready(stack, ns, name)
    assert cols["INSTANCE"] == ws["resource"]["instanceType"]

    node_names = {n["metadata"]["name"] for n in nodes(stack, ns, name)}
    claim = nodeclaims(stack, ns, name)[0]
    assert node_names == {claim["status"]["nodeName"]}
    running = wait_for(
        lambda: [p for p in pods(stack, ns, name) if p["status"].get("phase") == "Running"], timeout=30, what="inference pod Running"
    )
    assert {p["spec"]["nodeName"] for p in running} <= node_names
    pod_spec = running[0]["spec"]
    assert {"key": "sku", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"} in pod_spec["tolerations"]
    assert pod_spec["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert any(v.get("emptyDir", {}).get("medium") == "Memory" for v in pod_spec["volumes"])

    svc = stack.kubectl("get", "svc", name, "-n", ns).stdout
    assert "80/TCP,29500/TCP" in svc and "ClusterIP" in svc
    status = stack.get(WS.format(ns=ns, name=name))["status"]
    assert status["workerNodes"] == sorted(node_names) and status["targetNodeCount"] == 1
    assert status["state"] == "Ready" and status["observedGeneration"] == 1
    scraped = stack.metrics()
    assert scraped[("kaito_workspace_reconcile_total", (("result", "ok"),))] > 0
    assert scraped[("kaito_workspace_reconcile_total", (("result", "requeue"),))] > 0
    assert scraped[("kaito_workspaces", (("state", "Ready"),))] >= 1
    assert scraped[("kaito_admission_requests_total", (("result", "allowed"),))] > 0
    owned = stack.get(f"/apis/apps/v1/namespaces/{ns}/deployments/{name}")["metadata"]["ownerReferences"][0]
    assert owned["kind"] == "Workspace" and owned["name"] == name

    stack.kubectl("delete", "-n", ns, "-f", str(example), "--timeout=90s")
    wait_gone(stack, ns, name)


def test_several_nodes_get_a_statefulset_and_headless_service(stack: Stack, kube_namespace: str) -> None:
    ns = kube_namespace
    ws = load_manifest(EXAMPLES[0])
    ws["metadata"]["name"] = name = "phi-3-two-nodes"
    ws["resource"]["count"] = 2
    stack.kubectl("apply", "-n", ns, "-f", "-", input=dump(ws))
    wait_ready(stack, ns, name)
    assert len(nodeclaims(stack, ns, name)) == 2
    sts = stack.get(f"/apis/apps/v1/namespaces/{ns}/statefulsets/{name}")
    assert sts["spec"]["replicas"] == 2 and sts["spec"]["serviceName"] == f"{name}-headless"
    headless = stack.get(f"/api/v1/namespaces/{ns}/services/{name}-headless")
    assert headless["spec"]["clusterIP"] == "None"
    on_nodes = {p["spec"]["nodeName"] for p in pods(stack, ns, name)}
    assert on_nodes == {n["metadata"]["name"] for n in nodes(stack, ns, name)} and len(on_nodes) == 2
    stack.kubectl("delete", "workspace", name, "-n", ns, "--timeout=90s")
    wait_gone(stack, ns, name)


def test_provisioning_failure_names_the_nodeclaim_and_the_cloud_error(stack: Stack, kube_namespace: str) -> None:
    ns = kube_namespace
    ws = load_manifest(EXAMPLES[0])
    ws["metadata"]["name"] = name = "phi-3-no-quota"
    ws["resource"]["instanceType"] = FAILING_SKU
    stack.kubectl("apply", "-n", ns, "-f", "-", input=dump(ws))

    def failed() -> dict[str, Any] | None:
        conds = {c["type"]: c for c in (stack.get(WS.format(ns=ns, name=name)).get("status") or {}).get("conditions") or []}
        res = conds.get("ResourceReady")
        return res if res and "LaunchFailed" in res["message"] else None

    cond = wait_for(failed, timeout=60, interval=0.5, what="ResourceReady names the launch failure", on_timeout=stack.diagnostics)
    claim = nodeclaims(stack, ns, name)[0]["metadata"]["name"]
    assert cond["status"] == "False" and cond["reason"] == "NodeClaimNotReady"
    assert f"NodeClaim {claim} is not ready: Launched=False (LaunchFailed): {FAILING_MESSAGE}" in cond["message"]
    assert columns(stack, ns, name)["WORKSPACEREADY"] == "False"
    stack.kubectl("delete", "workspace", name, "-n", ns, "--timeout=90s")
    wait_gone(stack, ns, name)


def test_adapter_change_rolls_the_workload_and_bumps_the_revision(stack: Stack, kube_namespace: str) -> None:
    ns = kube_namespace
    example = next(p for p in EXAMPLES if "adapter" in p.name)
    ws = load_manifest(example)
    name = ws["metadata"]["name"]
    stack.kubectl("apply", "-n", ns, "-f", str(example))
    wait_ready(stack, ns, name)
    before = stack.get(f"/apis/apps/v1/namespaces/{ns}/deployments/{name}")
    assert stack.get(WS.format(ns=ns, name=name))["metadata"]["annotations"]["workspace.kaito.io/revision"] == "1"

    ws["inference"]["adapters"][0]["strength"] = "0.5"
    stack.kubectl("apply", "-n", ns, "-f", "-", input=dump(ws))

    def rolled() -> dict[str, Any] | None:
        dep = stack.get(f"/apis/apps/v1/namespaces/{ns}/deployments/{name}")
        return dep if dep["metadata"]["generation"] > before["metadata"]["generation"] else None

    after = wait_for(rolled, timeout=30, what="Deployment updated", on_timeout=stack.diagnostics)
    env = {e["name"]: e.get("value") for e in after["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["KAITO_ADAPTER_STRENGTHS"] == '{"phi-3-adapter": 0.5}'
    assert after["spec"]["template"]["metadata"]["annotations"]["workspace.kaito.io/revision"] == "2"
    assert stack.get(WS.format(ns=ns, name=name))["metadata"]["annotations"]["workspace.kaito.io/revision"] == "2"
    wait_ready(stack, ns, name)
    assert len(nodeclaims(stack, ns, name)) == 1  # an adapter change never touches the nodes
    stack.kubectl("delete", "workspace", name, "-n", ns, "--timeout=90s")
    wait_gone(stack, ns, name)


def test_steady_state_makes_no_writes(stack: Stack, kube_namespace: str) -> None:
    """The operator resyncs every 2 s in this suite; 5 resyncs later nothing it owns has changed,
    and it has not sent a single API request (its reads come from the watch caches)."""
    ns = kube_namespace
    ws = load_manifest(EXAMPLES[0])
    name = ws["metadata"]["name"]
    stack.kubectl("apply", "-n", ns, "-f", str(EXAMPLES[0]))
    wait_ready(stack, ns, name)
    time.sleep(3)  # let the last pod/status events settle

    def versions() -> dict[str, str]:
        paths = [
            WS.format(ns=ns, name=name),
            f"/apis/apps/v1/namespaces/{ns}/deployments/{name}",
            f"/api/v1/namespaces/{ns}/services/{name}",
        ]
        found = {p: stack.get(p)["metadata"]["resourceVersion"] for p in paths}
        found.update({c["metadata"]["name"]: c["metadata"]["resourceVersion"] for c in nodeclaims(stack, ns, name)})
        return found

    def requests() -> float:
        return sum(v for (metric, _), v in stack.metrics().items() if metric == "kaito_api_requests_total")

    first, sent = versions(), requests()
    resyncs = stack.metrics()[("kaito_workspace_reconcile_total", (("result", "ok"),))]
    time.sleep(10)
    assert versions() == first
    assert stack.metrics()[("kaito_workspace_reconcile_total", (("result", "ok"),))] > resyncs  # it did resync
    assert requests() == sent
    stack.kubectl("delete", "workspace", name, "-n", ns, "--timeout=90s")
    wait_gone(stack, ns, name)
