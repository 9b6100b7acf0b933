"""`helm install` for real: the chart with the operator image built by images/, on the local
cluster with its real node (one cluster start for the whole module, in this order):

1. two operator replicas Running from the built image as the chart's ServiceAccount (non-root,
   read-only root filesystem, probes), one of them holding the Lease;
2. the admission webhook (a pod behind the webhook Service) refuses an invalid Workspace at
   `kubectl apply`;
3. the user's phi-3 example reaches WORKSPACEREADY True on a kwok GPU node (the gpu-provisioner
   test stand-in runs on the host);
4. killing the leader's pod hands reconciliation to the other replica within 30 s, with no
   duplicate NodeClaim at any moment;
5. `helm upgrade` with a changed value rolls the operator and keeps the Workspace (same object,
   same NodeClaim, still ready);
5b. the example plugin (examples/preset-plugin) added through the chart's plugins values (its
   wheel served from the node bridge): the install-plugins init container installs it, the
   webhook admits a Workspace naming its preset (refused before) and it is reconciled to Ready;
   a package that cannot be installed leaves the new pod not Ready with the package named in the
   init container's termination message, while the old pods keep serving;
6. with nodeProvisioner.name=byo (another upgrade), the CPU Gemma example answers /chat through
   its ClusterIP on the real node;
7. every RBAC rule of the chart was used by the operator in this flow (the API server's audit
   log) or is justified in docs/rbac.md, and no request was forbidden;
8. `helm uninstall` leaves no cluster-scoped object behind but the CRDs.
"""

from __future__ import annotations

import datetime as dt
import functools
import http.server
import json
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from chartkit import CHART, ROOT, run_helm
from incluster import FULLNAME, NAMESPACE, RELEASE, InCluster, merged
from kaito_images.specs import ImageName
from kaito_localcluster.kubeapi import wait_for
from kaito_localcluster.nodeconfig import BRIDGE_IP
from kaito_localcluster.registry import credentials
from rbacreview import audited_permissions, chart_rules, forbidden_requests, unjustified_unused_rules

sys.path.insert(0, str(ROOT / "tests" / "e2e"))
import harness  # noqa: E402  (tests/e2e: the gpu-provisioner stand-in)

pytestmark = [pytest.mark.cluster, pytest.mark.slow, pytest.mark.real_node]

PHI3 = ROOT / "examples" / "inference" / "kaito_workspace_phi_3.yaml"
GEMMA = ROOT / "examples" / "inference" / "kaito_workspace_gemma_3_270m_cpu.yaml"
WORKSPACE_NS = "default"
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))
WRITES = {"create", "update", "patch", "delete", "deletecollection"}


@pytest.fixture(scope="module")
def stack(in_cluster: InCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """The gpu-provisioner stand-in on the host, and the chart installed with two replicas."""
    cluster = in_cluster.cluster
    work = tmp_path_factory.mktemp("in-cluster-stack")
    before = cluster_scoped_names(in_cluster)
    fake = harness.fake_gpu_provisioner(cluster.kubeconfig, work / "fake-gpu-provisioner.log")
    fake.start()
    try:
        started = time.monotonic()
        in_cluster.install({"operator": {"replicas": 2}})
        yield {"fake": fake, "cluster_scoped_before": before, "install_s": time.monotonic() - started}
    finally:
        fake.stop()


def cluster_scoped_names(state: InCluster) -> dict[str, set[str]]:
    """Names of the cluster-scoped objects a chart could create, by kind."""
    paths = {
        "ClusterRole": "/apis/rbac.authorization.k8s.io/v1/clusterroles",
        "ClusterRoleBinding": "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
        "ValidatingWebhookConfiguration": "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations",
        "MutatingWebhookConfiguration": "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations",
        "CustomResourceDefinition": "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
        "PriorityClass": "/apis/scheduling.k8s.io/v1/priorityclasses",
        "Namespace": "/api/v1/namespaces",
    }
    return {kind: {o["metadata"]["name"] for o in state.cluster.api.get(path)["items"]} for kind, path in paths.items()}


def conditions(state: InCluster, name: str) -> dict[str, dict[str, Any]]:
    ws = state.cluster.api.get(f"/apis/kaito.sh/v1beta1/namespaces/{WORKSPACE_NS}/workspaces/{name}")
    return {c["type"]: c for c in (ws.get("status") or {}).get("conditions") or []}


def nodeclaims(state: InCluster, workspace: str) -> list[str]:
    items = state.cluster.api.get("/apis/karpenter.sh/v1/nodeclaims", labelSelector=f"kaito.sh/workspace={workspace}")["items"]
    return sorted(i["metadata"]["name"] for i in items)


def wait_ready(state: InCluster, name: str, timeout: float) -> None:
    def ready() -> bool:
        return conditions(state, name).get("WorkspaceSucceeded", {}).get("status") == "True"

    wait_for(ready, timeout=timeout, interval=1, what=f"workspace {name} WORKSPACEREADY True",
             on_timeout=lambda: str(conditions(state, name)) + state.diagnostics())


def apply(state: InCluster, manifest: str, *, retry_s: float = 0) -> None:
    """kubectl apply (retried while the webhook has no answering endpoint, e.g. right after a pod died)."""
    deadline = time.monotonic() + retry_s
    while True:
        proc = state.cluster.kubectl("apply", "-n", WORKSPACE_NS, "-f", "-", input=manifest, check=False)
        if proc.returncode == 0:
            return
        if time.monotonic() > deadline or "failed calling webhook" not in proc.stderr:
            raise AssertionError(proc.stderr)
        time.sleep(0.5)


def test_operator_pods_run_the_built_image_as_the_charts_service_account(in_cluster: InCluster, stack: dict[str, Any]) -> None:
    pods = in_cluster.operator_pods()
    assert len(pods) == 2
    image = f"{in_cluster.values['global']['imageRegistry']}/kaito/operator:{in_cluster.operator_tag}"
    for pod in pods:
        spec, status = pod["spec"], pod["status"]
        assert status["phase"] == "Running" and spec["nodeName"] == "localhost"
        assert spec["serviceAccountName"] == FULLNAME
        container = spec["containers"][0]
        assert container["image"] == image
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert container["livenessProbe"] and container["readinessProbe"]
        assert all(c["ready"] for c in status["containerStatuses"]), status
        name = pod["metadata"]["name"]
        # Really uid 1000 on a read-only root filesystem.
        assert in_cluster.cluster.kubectl("exec", name, "-n", NAMESPACE, "--", "id", "-u").stdout.strip() == "1000"
        denied = in_cluster.cluster.kubectl("exec", name, "-n", NAMESPACE, "--", "touch", "/opt/kaito/x", check=False)
        assert denied.returncode != 0 and "Read-only file system" in denied.stderr
    holder = in_cluster.lease_holder()
    assert holder in {p["metadata"]["name"] for p in pods}, in_cluster.diagnostics()
    print(f"helm install --wait with 2 replicas: {stack['install_s']:.1f}s")


def test_the_webhook_refuses_an_invalid_workspace_at_apply(in_cluster: InCluster, stack: dict[str, Any]) -> None:
    bad = yaml.safe_load(PHI3.read_text())
    bad["metadata"]["name"] = "workspace-invalid"
    bad["inference"]["preset"]["name"] = "phi-3-mini-4k-instrct"
    proc = in_cluster.cluster.kubectl("apply", "-n", WORKSPACE_NS, "-f", "-", input=yaml.safe_dump(bad), check=False)
    if proc.returncode == 0:
        in_cluster.cluster.kubectl("delete", "workspace", "workspace-invalid", "-n", WORKSPACE_NS, "--wait=true", timeout=120)
    assert proc.returncode != 0
    assert 'admission webhook "validate-workspace.validation.workspace.kaito.sh" denied the request' in proc.stderr, proc.stderr
    assert "inference.preset.name" in proc.stderr and "phi-3-mini-4k-instruct" in proc.stderr, proc.stderr
    assert not in_cluster.cluster.api.exists(f"/apis/kaito.sh/v1beta1/namespaces/{WORKSPACE_NS}/workspaces/workspace-invalid")


def test_the_phi3_example_becomes_ready_on_a_kwok_gpu_node(in_cluster: InCluster, stack: dict[str, Any]) -> None:
    name = yaml.safe_load(PHI3.read_text())["metadata"]["name"]
    in_cluster.cluster.kubectl("apply", "-n", WORKSPACE_NS, "-f", str(PHI3))
    wait_ready(in_cluster, name, timeout=180)
    out = in_cluster.cluster.kubectl("get", "workspace", name, "-n", WORKSPACE_NS).stdout.splitlines()
    header, row = out[0].split(), out[1].split()
    assert row[header.index("WORKSPACEREADY")] == "True", out
    assert len(nodeclaims(in_cluster, name)) == 1


def test_killing_the_leader_hands_over_within_30s_without_duplicate_nodeclaims(in_cluster: InCluster, stack: dict[str, Any]) -> None:
    phi3 = yaml.safe_load(PHI3.read_text())
    claims_before = nodeclaims(in_cluster, phi3["metadata"]["name"])
    leader = in_cluster.lease_holder()
    assert leader is not None
    follower_pod = next(p for p in in_cluster.operator_pods() if p["metadata"]["name"] != leader)
    follower, follower_ip = follower_pod["metadata"]["name"], follower_pod["status"]["podIP"]

    killed, killed_at = time.monotonic(), dt.datetime.now(dt.timezone.utc)
    in_cluster.cluster.kubectl("delete", "pod", leader, "-n", NAMESPACE, "--grace-period=0", "--force", "--wait=false")
    # Reconciliation must move: a Workspace created now gets its NodeClaim only from the new leader.
    second = dict(phi3, metadata={"name": "workspace-phi-3-failover"})
    apply(in_cluster, yaml.safe_dump(second), retry_s=20)
    seen: dict[str, int] = {}

    def handed_over() -> bool:
        for ws in (phi3["metadata"]["name"], "workspace-phi-3-failover"):
            seen[ws] = max(seen.get(ws, 0), len(nodeclaims(in_cluster, ws)))
        return bool(nodeclaims(in_cluster, "workspace-phi-3-failover"))

    wait_for(handed_over, timeout=45, interval=0.25, what="the new leader creating the failover workspace's NodeClaim",
             on_timeout=in_cluster.diagnostics)
    elapsed = time.monotonic() - killed
    # The waiting follower usually wins the expired Lease, but the Deployment's replacement pod
    # races it for the same Lease and may win: either is a correct hand-over, the killed pod is not.
    new_leader = in_cluster.lease_holder()
    assert new_leader != leader and new_leader in {p["metadata"]["name"] for p in in_cluster.operator_pods()}
    assert elapsed < 30, f"reconciliation moved to {new_leader} only {elapsed:.1f}s after the leader was killed"
    wait_ready(in_cluster, "workspace-phi-3-failover", timeout=120)
    # No duplicate at any moment, and the first Workspace kept its NodeClaim.
    for _ in range(8):
        for ws in seen:
            seen[ws] = max(seen[ws], len(nodeclaims(in_cluster, ws)))
        time.sleep(0.5)
    assert seen == {phi3["metadata"]["name"]: 1, "workspace-phi-3-failover": 1}
    assert nodeclaims(in_cluster, phi3["metadata"]["name"]) == claims_before
    # Until it led, the follower wrote nothing but its Lease attempts (the audit log's source IPs,
    # which do name the pods: its Lease reads are there).
    events = in_cluster.audit_events()
    assert any(follower_ip in e.get("sourceIPs", []) and e.get("objectRef", {}).get("resource") == "leases" for e in events)
    early = [f"{e['verb']} {e['objectRef'].get('resource')}/{e['objectRef'].get('name', '')}" for e in events
             if follower_ip in e.get("sourceIPs", []) and e["verb"] in WRITES and e.get("objectRef", {}).get("resource") != "leases"
             and dt.datetime.fromisoformat(e["requestReceivedTimestamp"]) < killed_at]
    assert early == [], f"the follower {follower} wrote before it led"
    print(f"leader {leader} killed; {new_leader} reconciled a new Workspace to its NodeClaim after {elapsed:.1f}s")
    in_cluster.wait_rollout()  # the Deployment's replacement pod joins as a follower


def test_helm_upgrade_rolls_the_operator_and_keeps_the_workspace(in_cluster: InCluster, stack: dict[str, Any]) -> None:
    name = yaml.safe_load(PHI3.read_text())["metadata"]["name"]
    path = f"/apis/kaito.sh/v1beta1/namespaces/{WORKSPACE_NS}/workspaces/{name}"
    uid = in_cluster.cluster.api.get(path)["metadata"]["uid"]
    claims = nodeclaims(in_cluster, name)
    pods_before = {p["metadata"]["name"] for p in in_cluster.operator_pods()}
    in_cluster.upgrade({"concurrency": {"workers": 3}})
    pods_after = in_cluster.operator_pods()
    assert pods_before.isdisjoint(p["metadata"]["name"] for p in pods_after), "the operator was not rolled"
    for pod in pods_after:
        env = {e["name"]: e.get("value") for e in pod["spec"]["containers"][0]["env"]}
        assert env["KAITO_CONCURRENCY__WORKERS"] == "3"
    wait_for(lambda: in_cluster.lease_holder() in {p["metadata"]["name"] for p in pods_after}, timeout=30,
             what="a new pod holding the lease", on_timeout=in_cluster.diagnostics)
    assert in_cluster.cluster.api.get(path)["metadata"]["uid"] == uid
    wait_ready(in_cluster, name, timeout=60)
    assert nodeclaims(in_cluster, name) == claims


PLUGIN_EXAMPLE = ROOT / "examples" / "preset-plugin" / "kaito_workspace_smollm2.yaml"
NO_PLUGINS = {"plugins": {"packages": [], "findLinks": [], "noIndex": False, "trustedHosts": []}}


@pytest.fixture(scope="module")
def plugin_index(example_plugin_wheels: Path) -> Iterator[str]:
    """The example plugin's wheel served as a find-links directory on the node bridge, where pods reach the host."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(example_plugin_wheels))
    handler.log_message = lambda *a, **k: None  # type: ignore[method-assign]
    server = http.server.ThreadingHTTPServer((BRIDGE_IP, 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://{BRIDGE_IP}:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


def init_status(pod: dict[str, Any]) -> dict[str, Any]:
    """The install-plugins init container's status."""
    return next(s for s in pod["status"].get("initContainerStatuses") or [] if s["name"] == "install-plugins")


def test_a_plugin_added_through_the_chart_is_admitted_and_reconciled(in_cluster: InCluster, stack: dict[str, Any], plugin_index: str) -> None:
    text = PLUGIN_EXAMPLE.read_text()
    name = yaml.safe_load(text)["metadata"]["name"]
    refused = in_cluster.cluster.kubectl("apply", "-n", WORKSPACE_NS, "-f", "-", input=text, check=False)
    assert refused.returncode != 0 and "Unsupported inference preset name smollm2-135m-instruct" in refused.stderr, refused.stderr
    started = time.monotonic()
    in_cluster.upgrade({"plugins": {"packages": ["kaito-smollm2==0.1.0"], "findLinks": [plugin_index], "noIndex": True,
                                    "trustedHosts": [BRIDGE_IP]}})
    rolled_s = time.monotonic() - started
    for pod in in_cluster.operator_pods():
        done = init_status(pod)["state"]["terminated"]
        assert done["exitCode"] == 0 and "installed kaito-smollm2==0.1.0 into /opt/kaito/plugins" in in_cluster.cluster.kubectl(
            "logs", pod["metadata"]["name"], "-n", NAMESPACE, "-c", "install-plugins").stdout
    apply(in_cluster, text, retry_s=30)
    try:
        wait_ready(in_cluster, name, timeout=180)
        assert len(nodeclaims(in_cluster, name)) == 1
    finally:
        in_cluster.cluster.kubectl("delete", "workspace", name, "-n", WORKSPACE_NS, "--wait=true", timeout=120, check=False)
    print(f"helm upgrade adding a plugin package (init container pip install, rolling 2 replicas): {rolled_s:.1f}s")


def test_a_plugin_that_cannot_be_installed_leaves_the_new_pod_not_ready_naming_it(in_cluster: InCluster, stack: dict[str, Any],
                                                                                  plugin_index: str) -> None:
    before = {p["metadata"]["name"] for p in in_cluster.operator_pods()}
    broken = merged(in_cluster.values, {"plugins": {"packages": ["kaito-smollm2==0.1.0", "kaito-no-such-plugin==9.9"]}})
    run_helm(in_cluster.helm, "upgrade", RELEASE, str(CHART), "--namespace", NAMESPACE, values=broken, tmp=in_cluster.work, env=in_cluster.env)

    def failed_new_pod() -> tuple[dict[str, Any], str] | None:
        for pod in in_cluster.operator_pods():
            if pod["metadata"]["name"] in before:
                continue
            status = init_status(pod) if pod["status"].get("initContainerStatuses") else {}
            done = (status.get("state") or {}).get("terminated") or (status.get("lastState") or {}).get("terminated") or {}
            if done.get("exitCode"):
                return pod, done.get("message", "")
        return None

    pod, message = wait_for(failed_new_pod, timeout=180, interval=1, what="the new pod's install-plugins failing",
                            on_timeout=in_cluster.diagnostics)
    assert "kaito install-plugins: plugin package(s) kaito-smollm2==0.1.0, kaito-no-such-plugin==9.9 could not be installed" in message
    assert "kaito-no-such-plugin" in message.split("could not be installed", 1)[1], message
    conditions_ = {c["type"]: c["status"] for c in pod["status"]["conditions"]}
    assert conditions_["Ready"] == "False" and conditions_["Initialized"] == "False"
    # maxUnavailable 0: the old pods keep answering admission and reconciling.
    still = {p["metadata"]["name"]: p for p in in_cluster.operator_pods() if p["metadata"]["name"] in before}
    assert still and all(all(c["ready"] for c in p["status"]["containerStatuses"]) for p in still.values())
    in_cluster.upgrade(NO_PLUGINS)  # back to no plugins (also drops the stuck ReplicaSet's pod)
    assert all("initContainers" not in p["spec"] for p in in_cluster.operator_pods())


def test_the_cpu_gemma_example_answers_chat_through_its_cluster_ip(in_cluster: InCluster, stack: dict[str, Any]) -> None:
    cluster = in_cluster.cluster
    for ws in ("workspace-phi-3-mini", "workspace-phi-3-failover"):
        cluster.kubectl("delete", "workspace", ws, "-n", WORKSPACE_NS, "--wait=true", timeout=120)
    assert cluster.api.get("/apis/karpenter.sh/v1/nodeclaims")["items"] == []
    # The Gemma example runs on your own node (the real one): bring-your-own nodes. Helm shrinks the
    # ClusterRole (no NodeClaims for byo) before the rolling update replaces the gpu-provisioner
    # pods, whose NodeClaim watch may re-list meanwhile and be refused: remembered for the RBAC check.
    stack["replaced_by_byo"] = ({p["status"].get("podIP") for p in in_cluster.operator_pods()},
                                dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=1))
    in_cluster.upgrade({"nodeProvisioner": {"name": "byo"}})
    if not cluster.api.exists(f"/api/v1/namespaces/{WORKSPACE_NS}/secrets/kaito-local-registry"):
        cluster.api.create(f"/api/v1/namespaces/{WORKSPACE_NS}/secrets", credentials().pull_secret(WORKSPACE_NS))
    in_cluster.push(ImageName.GEMMA)  # the example names 127.0.0.1:5001/kaito/gemma-3-270m:local
    name = yaml.safe_load(GEMMA.read_text())["metadata"]["name"]

    def applied() -> bool:
        # Right after the rolling upgrade the webhook Service may still point at a pod that is
        # going away (kube-proxy catches up within seconds): only that refusal is retried.
        result = cluster.kubectl("apply", "-n", WORKSPACE_NS, "-f", str(GEMMA), check=False)
        if result.returncode != 0 and "failed calling webhook" not in result.stderr:
            raise AssertionError(result.stderr)
        return result.returncode == 0

    wait_for(applied, timeout=60, interval=2, what="the CPU Gemma Workspace admitted by the upgraded operator's webhook")
    try:
        wait_ready(in_cluster, name, timeout=300)
        ip = cluster.api.get(f"/api/v1/namespaces/{WORKSPACE_NS}/services/{name}")["spec"]["clusterIP"]
        body = {"prompt": "Kubernetes is", "return_full_text": False, "generate_kwargs": {"max_new_tokens": 8, "do_sample": False}}
        req = urllib.request.Request(f"http://{ip}/chat", data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
        with _NO_PROXY.open(req, timeout=120) as resp:
            assert json.loads(resp.read())["Result"].strip()
    finally:
        cluster.kubectl("delete", "workspace", name, "-n", WORKSPACE_NS, "--wait=true", timeout=120, check=False)


def test_every_rbac_rule_was_used_or_is_justified_and_none_was_missing(in_cluster: InCluster, stack: dict[str, Any]) -> None:
    events = in_cluster.audit_events()
    assert events, "the audit log has no request of the operator's ServiceAccount"
    old_ips, upgraded_at = stack.get("replaced_by_byo", (set(), None))

    def replaced_pod_after_rbac_shrank(event: dict[str, Any]) -> bool:
        """A NodeClaim request of a gpu-provisioner pod after the byo upgrade took that rule away."""
        return (upgraded_at is not None and (event.get("objectRef") or {}).get("resource") == "nodeclaims"
                and bool(old_ips & set(event.get("sourceIPs", [])))
                and dt.datetime.fromisoformat(event["requestReceivedTimestamp"]) >= upgraded_at)

    refused = forbidden_requests([e for e in events if not replaced_pod_after_rbac_shrank(e)])
    assert refused == [], "a rule is missing from the chart"
    rules = chart_rules(in_cluster.helm, in_cluster.work, [in_cluster.values, {**in_cluster.values, "nodeProvisioner": {"name": "gpu-provisioner"}}])
    used = audited_permissions(events)
    problems = unjustified_unused_rules(rules, used)
    assert problems == [], "\n".join(problems) + f"\nused: {sorted(used)}"


def test_uninstall_leaves_no_cluster_scoped_object_but_the_crds(in_cluster: InCluster, stack: dict[str, Any]) -> None:
    installed = cluster_scoped_names(in_cluster)
    in_cluster.uninstall()
    after = cluster_scoped_names(in_cluster)
    before = stack["cluster_scoped_before"]
    for kind in after:
        expected = before[kind] | ({NAMESPACE} if kind == "Namespace" else set())
        if kind == "CustomResourceDefinition":
            expected = installed[kind]  # Helm keeps CRDs on uninstall
            assert {"workspaces.kaito.sh", "nodeclaims.karpenter.sh"} <= after[kind]
        assert after[kind] == expected, f"{kind}: left behind {sorted(after[kind] - expected)}"
