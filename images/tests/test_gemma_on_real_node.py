"""The Gemma 3 270M preset image really serves on the real node: the pod runs the command line the
operator's llama.cpp backend produces, passes its readiness probe on /health, and the Service's
ClusterIP answers /chat and an OpenAI chat completion from the host and from a `kubectl run` curl
pod; `kubectl logs` shows the server's JSON logs.  (The operator itself is not involved here.)"""

from __future__ import annotations

import json
import urllib.request
from typing import Any, Iterator

import pytest

from kaito_core.backends import ServingContext
from kaito_gemma3.presets import GEMMA_3_270M
from kaito_images.cli import push_all
from kaito_images.specs import ImageName
from kaito_localcluster import LocalCluster
from kaito_localcluster.kubeapi import wait_for
from kaito_localcluster.registry import PULL_SECRET_NAME
from kaito_servers.backends import LlamaCppBackend

_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))
CPUS = 1


@pytest.fixture(scope="module")
def refs(real_node_cluster: LocalCluster) -> dict[str, str]:
    assert real_node_cluster.registry is not None
    return push_all(real_node_cluster.registry, (ImageName.GEMMA, ImageName.CURL))


def gemma_deployment(image: str) -> dict[str, Any]:
    spec = LlamaCppBackend().server_spec(GEMMA_3_270M, ServingContext(workspace="gemma", namespace="x"))
    resources = {"cpu": str(CPUS), "memory": "1Gi"}
    container = {
        "name": "server",
        "image": image,
        "command": list(spec.command),
        "args": list(spec.args),
        # llama.cpp's threads spin: exactly as many as the guaranteed CPUs.
        "env": [{"name": "KAITO_THREADS", "value": str(CPUS)}, *({"name": k, "value": v} for k, v in spec.env.items())],
        "ports": [{"name": "http", "containerPort": spec.port}],
        "readinessProbe": {"httpGet": {"path": spec.health_path, "port": "http"}, "periodSeconds": 2},
        "resources": {"requests": resources, "limits": resources},
        "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                            "capabilities": {"drop": ["ALL"]}, "runAsNonRoot": True},
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "gemma"},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "gemma"}},
            "template": {
                "metadata": {"labels": {"app": "gemma"}},
                "spec": {
                    "nodeSelector": {"kaito.sh/real-node": "true"},
                    "imagePullSecrets": [{"name": PULL_SECRET_NAME}],
                    "securityContext": {"runAsUser": 1000, "runAsGroup": 1000, "seccompProfile": {"type": "RuntimeDefault"}},
                    "terminationGracePeriodSeconds": 5,
                    "containers": [container],
                    "volumes": [{"name": "tmp", "emptyDir": {}}],
                },
            },
        },
    }


@pytest.fixture(scope="module")
def gemma(real_node_cluster: LocalCluster, refs: dict[str, str], request: pytest.FixtureRequest) -> Iterator[dict[str, str]]:
    api = real_node_cluster.api
    ns = "gemma-e2e"
    from kaito_localcluster.registry import credentials

    api.create("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
    wait_for(lambda: api.exists(f"/api/v1/namespaces/{ns}/serviceaccounts/default"), timeout=30, what="default SA")
    api.create(f"/api/v1/namespaces/{ns}/secrets", credentials().pull_secret(ns))
    api.patch(f"/api/v1/namespaces/{ns}/serviceaccounts/default", {"imagePullSecrets": [{"name": PULL_SECRET_NAME}]})
    api.create(f"/apis/apps/v1/namespaces/{ns}/deployments", gemma_deployment(refs[ImageName.GEMMA.value]))
    svc = api.create(f"/api/v1/namespaces/{ns}/services", {
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "gemma"},
        "spec": {"selector": {"app": "gemma"}, "ports": [{"name": "http", "port": 80, "targetPort": 5000}]},
    })

    def ready() -> bool:
        dep = api.get(f"/apis/apps/v1/namespaces/{ns}/deployments/gemma")
        return int(dep.get("status", {}).get("readyReplicas") or 0) == 1

    wait_for(ready, timeout=300, interval=1, what="gemma deployment ready (readiness probe on /health)",
             on_timeout=lambda: real_node_cluster.kubectl("describe", "pods", "-n", ns, check=False).stdout[-4000:])
    try:
        yield {"namespace": ns, "cluster_ip": svc["spec"]["clusterIP"], "curl": refs[ImageName.CURL.value]}
    finally:
        api.delete(f"/api/v1/namespaces/{ns}")


def post(url: str, body: dict[str, Any]) -> dict[str, Any]:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with _NO_PROXY.open(req, timeout=120) as resp:
        result: dict[str, Any] = json.loads(resp.read())
        return result


CHAT = {"messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 12, "temperature": 0}


def test_chat_and_openai_from_the_host(gemma: dict[str, str]) -> None:
    base = f"http://{gemma['cluster_ip']}"
    chat = post(f"{base}/chat", {"prompt": "Kubernetes is", "return_full_text": False,
                                 "generate_kwargs": {"max_new_tokens": 12, "do_sample": False}})
    assert chat["Result"].strip()  # the classic KAITO /chat contract
    completion = post(f"{base}/v1/chat/completions", {"model": GEMMA_3_270M.name, **CHAT})
    assert completion["choices"][0]["message"]["content"].strip()
    assert completion["usage"]["completion_tokens"] > 0


def test_chat_from_a_kubectl_run_curl_pod(real_node_cluster: LocalCluster, gemma: dict[str, str]) -> None:
    out = real_node_cluster.kubectl(
        "run", "curl", "-n", gemma["namespace"], f"--image={gemma['curl']}", "--restart=Never", "--rm", "-i", "--quiet",
        "--", "curl", "-sS", "--max-time", "120", "-X", "POST", f"http://{gemma['cluster_ip']}/v1/chat/completions",
        "-H", "Content-Type: application/json", "-d", json.dumps({"model": GEMMA_3_270M.name, **CHAT}),
        timeout=180,
    )
    assert json.loads(out.stdout)["choices"][0]["message"]["content"].strip()


def test_logs_are_json(real_node_cluster: LocalCluster, gemma: dict[str, str]) -> None:
    logs = real_node_cluster.kubectl("logs", "deployment/gemma", "-n", gemma["namespace"]).stdout
    records = [json.loads(line) for line in logs.splitlines() if line.startswith("{")]
    assert records, logs[-2000:]
