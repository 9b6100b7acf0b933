"""The real node: pods really run, pull from the local registry with a pull secret, get IPs on the
bridge; ClusterIP Services route from the host and from pods; logs, exec and port-forward work;
pods reach the apiserver through the `kubernetes` Service.  Opt-in: only these tests start it."""

from __future__ import annotations

import json
import re
import subprocess
import urllib.request
from typing import Any, Iterator

import pytest

from kaito_localcluster import LocalCluster
from kaito_localcluster.imagebuild import TOOLBOX_IMAGE, build_image
from kaito_localcluster.kubeapi import wait_for
from kaito_localcluster.nodeconfig import NODE_NAME, REAL_NODE_LABEL
from realnode_support import kubectl_run, service, web_pod

_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@pytest.fixture(scope="module")
def toolbox(real_node_cluster: LocalCluster) -> str:
    """The curl + busybox image, built once (cached by content) and pushed to the local registry."""
    return real_node_cluster.push_image(build_image(TOOLBOX_IMAGE))


@pytest.fixture
def web(real_node_cluster: LocalCluster, real_namespace: str, toolbox: str) -> Iterator[dict[str, Any]]:
    """A running web pod + ClusterIP Service in ``real_namespace``."""
    api = real_node_cluster.api
    api.create(f"/api/v1/namespaces/{real_namespace}/pods", web_pod("web", toolbox, "hello-from-the-real-node"))
    svc = api.create(f"/api/v1/namespaces/{real_namespace}/services", service("web"))
    pod = wait_pod_ready(real_node_cluster, real_namespace, "web")
    yield {"pod": pod, "cluster_ip": svc["spec"]["clusterIP"], "namespace": real_namespace}


def wait_pod_ready(cluster: LocalCluster, namespace: str, name: str, timeout: float = 120) -> dict[str, Any]:
    def ready() -> dict[str, Any] | None:
        pod: dict[str, Any] = cluster.api.get(f"/api/v1/namespaces/{namespace}/pods/{name}")
        conds = pod.get("status", {}).get("conditions") or []
        return pod if any(c["type"] == "Ready" and c["status"] == "True" for c in conds) else None

    def describe() -> str:
        return cluster.kubectl("describe", "pod", name, "-n", namespace, check=False).stdout[-3000:]

    result: dict[str, Any] = wait_for(ready, timeout=timeout, interval=0.5, what=f"pod {namespace}/{name} Ready", on_timeout=describe)
    return result


def http_get(url: str) -> str:
    with _NO_PROXY.open(url, timeout=10) as resp:
        return str(resp.read().decode())


def test_the_real_node_is_ready_and_labelled_next_to_kwok_nodes(real_node_cluster: LocalCluster) -> None:
    node = real_node_cluster.api.get(f"/api/v1/nodes/{NODE_NAME}")
    assert node["metadata"]["labels"][REAL_NODE_LABEL] == "true"
    assert node["status"]["nodeInfo"]["kubeletVersion"] == "v1.37.1"
    assert node["status"]["nodeInfo"]["containerRuntimeVersion"] == "containerd://2.4.2"
    fake = real_node_cluster.create_fake_node("gpu-fake", capacity={"nvidia.com/gpu": "1"})
    assert fake["metadata"]["name"] == "gpu-fake"
    real_node_cluster.api.delete("/api/v1/nodes/gpu-fake")


def test_pod_serves_through_a_cluster_ip_from_host_and_from_a_pod(real_node_cluster: LocalCluster, web: dict[str, Any], toolbox: str) -> None:
    pod_ip = web["pod"]["status"]["podIP"]
    assert pod_ip.startswith("10.88.0.")
    assert "hello-from-the-real-node" in http_get(f"http://{pod_ip}:8080/")
    # host -> ClusterIP -> pod (kube-proxy, nftables)
    assert "hello-from-the-real-node" in wait_for(lambda: http_get(f"http://{web['cluster_ip']}/"), timeout=30, what="ClusterIP from the host")
    # a `kubectl run` pod -> ClusterIP -> pod (the documented flow); the pull secret comes from the default SA
    out = kubectl_run(real_node_cluster, web["namespace"], "curl", toolbox,
                      "curl", "-sS", "--max-time", "10", f"http://{web['cluster_ip']}/")
    assert "hello-from-the-real-node" in out


def test_logs_exec_and_port_forward(real_node_cluster: LocalCluster, web: dict[str, Any]) -> None:
    ns = web["namespace"]
    assert "serving" in real_node_cluster.kubectl("logs", "web", "-n", ns).stdout
    assert real_node_cluster.kubectl("exec", "web", "-n", ns, "--", "id", "-u").stdout.strip() == "1000"
    cmd = [*_kubectl_base(real_node_cluster), "port-forward", "-n", ns, "pod/web", ":8080"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=real_node_cluster.env())
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        match = re.search(r"127\.0\.0\.1:(\d+)", line)
        assert match, line
        assert "hello-from-the-real-node" in http_get(f"http://127.0.0.1:{match.group(1)}/")
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _kubectl_base(cluster: LocalCluster) -> list[str]:
    from kaito_localcluster.cluster import find_kubectl

    return [find_kubectl(), f"--kubeconfig={cluster.kubeconfig}"]


def test_pods_reach_the_apiserver_through_the_kubernetes_service(real_node_cluster: LocalCluster, real_namespace: str, toolbox: str) -> None:
    sa = "/var/run/secrets/kubernetes.io/serviceaccount"
    out = kubectl_run(
        real_node_cluster, real_namespace, "api", toolbox,
        "sh", "-c", f'curl -sS --max-time 10 --cacert {sa}/ca.crt -H "Authorization: Bearer $(cat {sa}/token)" https://10.0.0.1/version',
    )
    assert json.loads(out)["gitVersion"] == "v1.37.1"


def test_an_image_without_the_pull_secret_is_refused(real_node_cluster: LocalCluster, real_namespace: str) -> None:
    api = real_node_cluster.api
    api.patch(f"/api/v1/namespaces/{real_namespace}/serviceaccounts/default", {"imagePullSecrets": None})
    # A tag containerd has not pulled yet, so the kubelet must ask the registry.
    ref = real_node_cluster.push_image(build_image(TOOLBOX_IMAGE), tag=f"nosecret-{real_namespace}")
    pod = web_pod("nosecret", ref, "x")
    api.create(f"/api/v1/namespaces/{real_namespace}/pods", pod)

    def reason() -> str | None:
        status = api.get(f"/api/v1/namespaces/{real_namespace}/pods/nosecret").get("status", {})
        waiting = ((status.get("containerStatuses") or [{}])[0].get("state") or {}).get("waiting") or {}
        return waiting.get("reason") if waiting.get("reason") in ("ErrImagePull", "ImagePullBackOff") else None

    assert wait_for(reason, timeout=60, what="pull refused without credentials") in ("ErrImagePull", "ImagePullBackOff")
