"""Integration tests against the session-scoped local cluster (real binaries)."""

from __future__ import annotations

import base64
import http.server
import json
import ssl
import threading
import uuid
from pathlib import Path
from typing import Any, Iterator

import pytest

from lc_support import NODECLAIM_CRD, pods, wait_pods_phase
from kaito_localcluster import ApiError, LocalCluster
from kaito_localcluster.build import Versions
from kaito_localcluster.kubeapi import wait_for


def test_cluster_is_ready_and_versions_match(local_cluster: LocalCluster) -> None:
    api = local_cluster.api
    assert api.request("GET", "/readyz") == "ok"
    assert api.get("/version")["gitVersion"] == Versions().kubernetes
    assert local_cluster.server.startswith("https://127.0.0.1:")
    out = local_cluster.kubectl("get", "namespace", "default", "-o", "jsonpath={.status.phase}").stdout
    assert out == "Active"
    who = json.loads(local_cluster.kubectl("auth", "whoami", "-o", "json").stdout)
    assert who["status"]["userInfo"]["username"] == "admin"
    assert "system:masters" in who["status"]["userInfo"]["groups"]
    # The KCM created the root CA configmap and the default service account.
    assert api.exists("/api/v1/namespaces/default/configmaps/kube-root-ca.crt")
    assert {p.name for p in local_cluster.processes} == {
        "etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok",
    }


def test_fake_gpu_node_becomes_ready(local_cluster: LocalCluster, gpu_node: dict[str, Any]) -> None:
    name = gpu_node["metadata"]["name"]
    node = local_cluster.api.get(f"/api/v1/nodes/{name}")
    conditions = {c["type"]: c["status"] for c in node["status"]["conditions"]}
    assert conditions["Ready"] == "True"
    assert node["status"]["capacity"]["nvidia.com/gpu"] == "1"
    assert node["status"]["allocatable"]["nvidia.com/gpu"] == "1"
    # The node-lifecycle controller removes node.kubernetes.io/not-ready a moment after Ready=True.
    expected = [{"key": "sku", "value": "gpu", "effect": "NoSchedule"}]
    wait_for(lambda: local_cluster.api.get(f"/api/v1/nodes/{name}")["spec"].get("taints") == expected,
             timeout=30, what="only the sku=gpu taint left on the node")
    assert node["spec"]["providerID"].startswith("azure:///subscriptions/")
    assert node["metadata"]["annotations"]["kwok.x-k8s.io/node"] == "fake"
    # kwok keeps a node lease for it.
    wait_for(lambda: local_cluster.api.exists(f"/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{name}"),
             timeout=20, what="node lease")


def _pod_template(app: str, node: str, gpu: bool) -> dict[str, Any]:
    resources = {"limits": {"nvidia.com/gpu": "1"}} if gpu else {"requests": {"cpu": "100m"}}
    return {
        "metadata": {"labels": {"app": app}},
        "spec": {
            "nodeSelector": {"pool": node},
            "tolerations": [{"key": "sku", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"}],
            "containers": [{"name": "main", "image": "registry.invalid/inference:1", "resources": resources}],
        },
    }


def test_deployment_pod_runs_on_gpu_node(local_cluster: LocalCluster, kube_namespace: str, gpu_node: dict[str, Any]) -> None:
    """Deployment -> ReplicaSet -> Pod (KCM), bound by the scheduler, Running via kwok."""
    api, ns, node = local_cluster.api, kube_namespace, gpu_node["metadata"]["name"]
    api.create(f"/apis/apps/v1/namespaces/{ns}/deployments", {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "infer"},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "infer"}}, "template": _pod_template("infer", node, gpu=True)},
    })
    [pod] = wait_pods_phase(api, ns, "app=infer", "Running", timeout=60)
    assert pod["spec"]["nodeName"] == node
    assert pod["status"]["podIP"].startswith("10.244.")
    wait_for(lambda: api.get(f"/apis/apps/v1/namespaces/{ns}/deployments/infer").get("status", {}).get("readyReplicas") == 1,
             timeout=30, what="deployment readyReplicas=1")

    # The node has a single GPU: a second GPU pod must stay Pending (scheduler honours capacity).
    api.patch(f"/apis/apps/v1/namespaces/{ns}/deployments/infer", {"spec": {"replicas": 2}})

    def unschedulable() -> bool:
        for p in pods(api, ns, "app=infer"):
            for c in p.get("status", {}).get("conditions", []):
                if c["type"] == "PodScheduled" and c["status"] == "False" and c.get("reason") == "Unschedulable":
                    return "nvidia.com/gpu" in c.get("message", "")
        return False

    wait_for(unschedulable, timeout=30, what="second GPU pod Unschedulable for nvidia.com/gpu")


def test_pod_without_toleration_is_not_scheduled(local_cluster: LocalCluster, kube_namespace: str, gpu_node: dict[str, Any]) -> None:
    api, ns, node = local_cluster.api, kube_namespace, gpu_node["metadata"]["name"]
    api.create(f"/api/v1/namespaces/{ns}/pods", {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "no-toleration", "labels": {"app": "nt"}},
        "spec": {"nodeSelector": {"pool": node}, "containers": [{"name": "c", "image": "registry.invalid/x:1"}]},
    })

    def untolerated() -> bool:
        pod = api.get(f"/api/v1/namespaces/{ns}/pods/no-toleration")
        return any(
            c["type"] == "PodScheduled" and c["status"] == "False" and "untolerated taint" in c.get("message", "")
            for c in pod.get("status", {}).get("conditions", [])
        )

    wait_for(untolerated, timeout=30, what="pod Unschedulable because of the sku=gpu taint")


def test_statefulset_pods_run(local_cluster: LocalCluster, kube_namespace: str, gpu_node: dict[str, Any]) -> None:
    api, ns, node = local_cluster.api, kube_namespace, gpu_node["metadata"]["name"]
    api.create(f"/api/v1/namespaces/{ns}/services", {
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "sts-headless"},
        "spec": {"clusterIP": "None", "selector": {"app": "sts"}, "ports": [{"port": 80}]},
    })
    api.create(f"/apis/apps/v1/namespaces/{ns}/statefulsets", {
        "apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "sts"},
        "spec": {
            "replicas": 2, "serviceName": "sts-headless", "podManagementPolicy": "Parallel",
            "selector": {"matchLabels": {"app": "sts"}}, "template": _pod_template("sts", node, gpu=False),
        },
    })
    running = wait_pods_phase(api, ns, "app=sts", "Running", count=2, timeout=60)
    assert sorted(p["metadata"]["name"] for p in running) == ["sts-0", "sts-1"]
    wait_for(lambda: api.get(f"/apis/apps/v1/namespaces/{ns}/statefulsets/sts").get("status", {}).get("readyReplicas") == 2,
             timeout=30, what="statefulset readyReplicas=2")
    # The endpointslice controller (KCM) publishes the pods behind the headless service.
    wait_for(
        lambda: sum(len(s.get("endpoints") or []) for s in api.get(
            f"/apis/discovery.k8s.io/v1/namespaces/{ns}/endpointslices",
            labelSelector="kubernetes.io/service-name=sts-headless")["items"]) == 2,
        timeout=30, what="2 endpoints in the headless service's EndpointSlices",
    )


def test_job_completes(local_cluster: LocalCluster, kube_namespace: str, gpu_node: dict[str, Any]) -> None:
    """kwok's pod-complete stage moves Job pods from Running to Succeeded, so Jobs complete."""
    api, ns, node = local_cluster.api, kube_namespace, gpu_node["metadata"]["name"]
    template = _pod_template("job", node, gpu=False)
    template["spec"]["restartPolicy"] = "Never"
    api.create(f"/apis/batch/v1/namespaces/{ns}/jobs", {
        "apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "tune"},
        "spec": {"backoffLimit": 0, "template": template},
    })

    def complete() -> bool:
        conds = api.get(f"/apis/batch/v1/namespaces/{ns}/jobs/tune").get("status", {}).get("conditions", [])
        return any(c["type"] == "Complete" and c["status"] == "True" for c in conds)

    wait_for(complete, timeout=60, what="job Complete")
    job = api.get(f"/apis/batch/v1/namespaces/{ns}/jobs/tune")
    assert job["status"]["succeeded"] == 1


class _Webhook:
    """A tiny HTTPS admission webhook on 127.0.0.1 that rejects ConfigMaps with data.reject=yes."""

    def __init__(self, cert_pem: bytes, key_pem: bytes, tmp: Path) -> None:
        self.reviews: list[dict[str, Any]] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server API
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.reviews.append(body)
                request = body["request"]
                obj = request.get("object") or {}
                reject = (obj.get("data") or {}).get("reject") == "yes"
                response: dict[str, Any] = {"uid": request["uid"], "allowed": not reject}
                if reject:
                    response["status"] = {"code": 403, "message": "rejected by the kaito test webhook"}
                payload = json.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: Any) -> None:
                pass

        (tmp / "wh.crt").write_bytes(cert_pem)
        (tmp / "wh.key").write_bytes(key_pem)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(str(tmp / "wh.crt"), str(tmp / "wh.key"))
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def webhook(local_cluster: LocalCluster, tmp_path: Path) -> Iterator[_Webhook]:
    cert, key = local_cluster.issue_serving_cert(("localhost",), ("127.0.0.1",))
    server = _Webhook(cert, key, tmp_path)
    yield server
    server.close()


def test_validating_webhook_with_url_client_config(local_cluster: LocalCluster, kube_namespace: str, webhook: _Webhook) -> None:
    """The apiserver calls a webhook at https://127.0.0.1:<port> (url clientConfig) and honours its verdict."""
    api, ns = local_cluster.api, kube_namespace
    name = f"kaito-test-{ns}"
    api.create("/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations", {
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": name},
        "webhooks": [{
            "name": "validate.kaito-test.local",
            "clientConfig": {
                "url": f"https://127.0.0.1:{webhook.port}/validate",
                "caBundle": base64.b64encode(local_cluster.ca_file.read_bytes()).decode(),
            },
            "rules": [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"],
                       "resources": ["configmaps"], "scope": "Namespaced"}],
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": ns}},
            "failurePolicy": "Fail", "sideEffects": "None", "admissionReviewVersions": ["v1"], "timeoutSeconds": 5,
        }],
    })
    try:
        # Webhook configurations take effect asynchronously: create probes until one is seen.
        counter = iter(range(1000))

        def seen() -> bool:
            api.create(f"/api/v1/namespaces/{ns}/configmaps",
                       {"metadata": {"name": f"probe-{next(counter)}"}, "data": {"reject": "no"}})
            return bool(webhook.reviews)

        wait_for(seen, timeout=30, interval=0.3, what="the apiserver to call the webhook")
        review = webhook.reviews[-1]
        assert review["kind"] == "AdmissionReview" and review["request"]["operation"] == "CREATE"
        assert review["request"]["namespace"] == ns

        with pytest.raises(ApiError) as err:
            api.create(f"/api/v1/namespaces/{ns}/configmaps", {"metadata": {"name": "bad"}, "data": {"reject": "yes"}})
        assert err.value.status == 403
        assert "rejected by the kaito test webhook" in str(err.value)
        assert not api.exists(f"/api/v1/namespaces/{ns}/configmaps/bad")
    finally:
        api.delete(f"/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations/{name}")


# ---------------------------------------------------------------------------- NodeClaim CRD

NODECLAIMS = "/apis/karpenter.sh/v1/nodeclaims"


@pytest.fixture(scope="module")
def nodeclaim_crd(local_cluster: LocalCluster) -> str:
    [name] = local_cluster.install_crds([NODECLAIM_CRD])
    return name


def _kaito_nodeclaim(name: str) -> dict[str, Any]:
    """A NodeClaim shaped like kaito's GenerateNodeClaimManifest (Azure)."""
    sku = "Standard_NC24ads_A100_v4"
    return {
        "apiVersion": "karpenter.sh/v1",
        "kind": "NodeClaim",
        "metadata": {
            "name": name,
            "namespace": "default",  # kaito sets it; ignored for a cluster-scoped kind
            "labels": {"karpenter.sh/nodepool": "kaito", "kaito.sh/workspace": "ws1", "kaito.sh/workspacenamespace": "default"},
            "annotations": {"karpenter.sh/do-not-disrupt": "true", "kaito.sh/node-image-family": "ubuntu"},
        },
        "spec": {
            "nodeClassRef": {"group": "kaito.sh", "kind": "KaitoNodeClass", "name": "default"},
            "taints": [{"key": "sku", "value": "gpu", "effect": "NoSchedule"}],
            "requirements": [
                {"key": "karpenter.sh/nodepool", "operator": "In", "values": ["kaito"]},
                {"key": "node.kubernetes.io/instance-type", "operator": "In", "values": [sku]},
                {"key": "kubernetes.io/os", "operator": "In", "values": ["linux"]},
                {"key": "karpenter.azure.com/sku-name", "operator": "In", "values": [sku]},
            ],
            "resources": {"requests": {"storage": "100Gi"}},
        },
    }


def _nc_name() -> str:
    return "ws" + uuid.uuid4().hex[:9]


def test_nodeclaim_crd_established(local_cluster: LocalCluster, nodeclaim_crd: str) -> None:
    crd = local_cluster.api.get(f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{nodeclaim_crd}")
    assert crd["spec"]["scope"] == "Cluster"
    assert crd["spec"]["versions"][0]["subresources"] == {"status": {}}
    # kubectl knows the kind (other tests on this shared cluster may have NodeClaims: select none of them).
    out = local_cluster.kubectl("get", "nodeclaims.karpenter.sh", "-l", "kaito.sh/test=no-such-claim").stderr
    assert "No resources found" in out


def test_nodeclaim_upstream_shape_create_status_and_immutable_spec(local_cluster: LocalCluster, nodeclaim_crd: str) -> None:
    api, name = local_cluster.api, _nc_name()
    created = api.create(NODECLAIMS, _kaito_nodeclaim(name))
    try:
        assert "namespace" not in created["metadata"]
        assert created["spec"]["expireAfter"] == "720h"  # CRD default
        generation = created["metadata"]["generation"]

        status = {"status": {
            "providerID": f"azure:///subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/virtualMachineScaleSets/aks-{name}-12345678-vmss/virtualMachines/0",
            "nodeName": f"aks-{name}-12345678-vmss000000",
            "capacity": {"nvidia.com/gpu": "1", "cpu": "24"},
            "conditions": [{"type": "Launched", "status": "True", "reason": "Launched", "message": "",
                            "lastTransitionTime": "2026-01-01T00:00:00Z", "observedGeneration": generation}],
        }}
        patched = api.patch(f"{NODECLAIMS}/{name}/status", status)
        assert patched["status"]["conditions"][0]["type"] == "Launched"
        assert patched["metadata"]["generation"] == generation
        # spec changes through the main resource are refused by the CEL rule.
        with pytest.raises(ApiError) as err:
            api.patch(f"{NODECLAIMS}/{name}", {"spec": {"taints": []}})
        assert err.value.status == 422 and "spec is immutable" in str(err.value)
        # ... and status cannot be written through the main resource (status subresource).
        api.patch(f"{NODECLAIMS}/{name}", {"status": {"nodeName": "other"}})
        assert api.get(f"{NODECLAIMS}/{name}")["status"]["nodeName"] == f"aks-{name}-12345678-vmss000000"
        header, row = local_cluster.kubectl("get", "nodeclaim", name, "-o", "wide").stdout.splitlines()[:2]
        assert header.split()[:2] == ["NAME", "TYPE"] and "NODEPOOL" in header and "NODECLASS" in header
        assert row.split()[0] == name and "kaito" in row.split() and "default" in row.split()
    finally:
        api.delete(f"{NODECLAIMS}/{name}")


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda s: s["requirements"].append({"key": "kubernetes.io/hostname", "operator": "In", "values": ["x"]}),
         'label "kubernetes.io/hostname" is restricted'),
        (lambda s: s["requirements"].append({"key": "karpenter.sh/foo", "operator": "Exists"}),
         'label domain "karpenter.sh" is restricted'),
        (lambda s: s["requirements"].append({"key": "example.com/x", "operator": "In", "values": []}),
         "requirements with operator 'In' must have a value defined"),
        (lambda s: s["requirements"].append({"key": "example.com/gpus", "operator": "Gt", "values": ["1", "2"]}),
         "requirements operator 'Gt' or 'Lt' must have a single positive integer value"),
        (lambda s: s.update(expireAfter="1d"), "spec.expireAfter"),
        (lambda s: s["nodeClassRef"].update(name=""), "name may not be empty"),
        (lambda s: s.pop("requirements"), "spec.requirements: Required value"),
    ],
)
def test_nodeclaim_validation(local_cluster: LocalCluster, nodeclaim_crd: str, mutate: Any, message: str) -> None:
    obj = _kaito_nodeclaim(_nc_name())
    mutate(obj["spec"])
    with pytest.raises(ApiError) as err:
        local_cluster.api.create(NODECLAIMS, obj)
    assert err.value.status == 422
    assert message in str(err.value)


def test_apply_file_and_kubectl_helpers(local_cluster: LocalCluster, kube_namespace: str, tmp_path: Path) -> None:
    manifest = tmp_path / "cm.yaml"
    manifest.write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n"
        f"  name: applied\n  namespace: {kube_namespace}\ndata:\n  model: phi-4\n"
    )
    result = local_cluster.apply_file(manifest)
    assert "configmap/applied created" in result.stdout
    got = local_cluster.kubectl("get", "configmap", "applied", "-n", kube_namespace, "-o", "jsonpath={.data.model}")
    assert got.stdout == "phi-4"
    failed = local_cluster.kubectl("get", "configmap", "missing", "-n", kube_namespace, check=False)
    assert failed.returncode != 0 and "NotFound" in failed.stderr
