"""Fine-tuning for real on the local cluster's real node, with the tuning image built here.

1. The runner in a pod as the operator runs it (a hand-written Job: non-root, read-only root file
   system, one guaranteed CPU, a memory limit): it downloads the dolly-shaped parquet from a
   server on the node bridge, trains a LoRA on Gemma 3 270M and writes the peft files and the
   GGUF LoRA; its log shows it used one thread (the CPU limit) and moved its caches off the
   read-only home.

2. The loop through the operator: a qlora and a lora tuning Workspace on Gemma 3 270M (URL input
   on the bridge, allowed by the operator's tuning.allowDataHosts) -> Job Complete, JOBSTARTED
   and WORKSPACEREADY True in ``kubectl get workspace`` -> the adapter artifact in the local
   registry (pushed with the Workspace's push secret, verified with the cluster CA) -> an
   inference Workspace with ``adapters: [{source: {image: <artifact>}, strength}]`` (llama.cpp
   with the GGUF LoRA from the artifact) whose greedy /chat answer to a training prompt differs
   between strength 0 and 1.
3. Run-time bad inputs, each a failed Workspace whose condition names the step, the cause and the
   fix, with no pod left running and no tag pushed: an unreachable URL, an HTML page instead of
   parquet, a parquet without ``messages``, an empty dataset, a wrong push secret. (The planner's
   refusals — loopback without the allowance, qlora without quantization, a missing secret — are
   tested on kwok in tests/e2e/test_tuning_lifecycle.py.)

Opt-in real node (module fixture); the images are built (cached) and pushed by the fixtures.
"""

from __future__ import annotations

import json
import os
import re
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from tuning_support import TRAINING_PROMPT, DataServer, data_server, training_config

from kaito_images.cli import LOCAL_TAG, push_all
from kaito_images.specs import ImageName
from kaito_localcluster import LocalCluster
from kaito_localcluster.kubeapi import wait_for
from kaito_localcluster.nodeconfig import BRIDGE_IP
from kaito_localcluster.registry import CA_CONFIGMAP, PULL_SECRET_NAME, Credentials, credentials

NS = "tuning-e2e"


@pytest.fixture(scope="module")
def stack(real_node_cluster: LocalCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """The tuning image in the registry, a namespace with the pull secret, the data server."""
    cluster = real_node_cluster
    assert cluster.registry is not None
    refs = push_all(cluster.registry, (ImageName.GEMMA_TUNING,))
    api = cluster.api
    api.create("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}})
    wait_for(lambda: api.exists(f"/api/v1/namespaces/{NS}/serviceaccounts/default"), timeout=30, what="default SA")
    api.create(f"/api/v1/namespaces/{NS}/secrets", credentials().pull_secret(NS))
    api.patch(f"/api/v1/namespaces/{NS}/serviceaccounts/default", {"imagePullSecrets": [{"name": PULL_SECRET_NAME}]})
    with data_server(tmp_path_factory.mktemp("tuning-data")) as server:
        try:
            yield {"refs": refs, "data": server}
        finally:
            api.delete(f"/api/v1/namespaces/{NS}")


def runner_job(name: str, image: str, data_url: str, results: Path) -> dict[str, Any]:
    """The runner as a Job the way the operator's pods run: uid 1000, read-only root, 1 guaranteed CPU."""
    resources = {"cpu": "1", "memory": "4Gi"}
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {
            "backoffLimit": 0,
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "nodeSelector": {"kaito.sh/real-node": "true"},
                    "terminationGracePeriodSeconds": 5,
                    "securityContext": {"runAsUser": 1000, "runAsGroup": 1000, "runAsNonRoot": True,
                                        "seccompProfile": {"type": "RuntimeDefault"}},
                    "containers": [{
                        "name": "tuner",
                        "image": image,
                        "env": [
                            {"name": "KAITO_TUNING_METHOD", "value": "lora"},
                            {"name": "KAITO_TUNING_PRESET", "value": "gemma-3-270m"},
                            {"name": "KAITO_TUNING_DATA_URLS", "value": data_url},
                            {"name": "KAITO_TUNING_ALLOW_HOSTS", "value": data_url.split("/")[2].split(":")[0]},
                        ],
                        "resources": {"requests": resources, "limits": resources},
                        "terminationMessagePolicy": "FallbackToLogsOnError",
                        "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                            "capabilities": {"drop": ["ALL"]}},
                        "volumeMounts": [{"name": "config", "mountPath": "/mnt/config"},
                                         {"name": "data", "mountPath": "/mnt/data"},
                                         {"name": "results", "mountPath": "/mnt/results"},
                                         {"name": "tmp", "mountPath": "/tmp"}],
                    }],
                    "volumes": [{"name": "config", "configMap": {"name": name}},
                                {"name": "data", "emptyDir": {}},
                                {"name": "results", "hostPath": {"path": str(results), "type": "Directory"}},
                                {"name": "tmp", "emptyDir": {}}],
                },
            },
        },
    }


def job_finished(cluster: LocalCluster, name: str) -> str | None:
    job = cluster.api.get(f"/apis/batch/v1/namespaces/{NS}/jobs/{name}")
    for cond in (job.get("status") or {}).get("conditions") or []:
        if cond["type"] in ("Complete", "Failed") and cond["status"] == "True":
            return str(cond["type"])
    return None


def records(logs: str) -> list[dict[str, Any]]:
    out = []
    for line in logs.splitlines():
        if line.startswith("{"):
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                pass
    return out


def test_the_runner_trains_in_a_locked_down_pod(real_node_cluster: LocalCluster, stack: dict[str, Any],
                                                tmp_path: Path) -> None:
    cluster = real_node_cluster
    data: DataServer = stack["data"]
    results = tmp_path / "results"
    results.mkdir()
    os.chmod(results, 0o777)  # the pod writes as uid 1000
    name = "runner-lora"
    cluster.api.create(f"/api/v1/namespaces/{NS}/configmaps", {
        "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name},
        "data": {"training_config.yaml": training_config("lora")}})
    image = stack["refs"][ImageName.GEMMA_TUNING.value]
    cluster.api.create(f"/apis/batch/v1/namespaces/{NS}/jobs",
                       runner_job(name, image, data.url("dolly-15k-oai-style.parquet"), results))

    def diagnose() -> str:
        return (cluster.kubectl("describe", "pods", "-n", NS, check=False).stdout[-3000:]
                + cluster.kubectl("logs", f"job/{name}", "-n", NS, "--tail=30", check=False).stdout)

    state = wait_for(lambda: job_finished(cluster, name), timeout=900, interval=2, what=f"job {name} to finish",
                     on_timeout=diagnose)
    logs = cluster.kubectl("logs", f"job/{name}", "-n", NS).stdout
    assert state == "Complete", logs[-4000:]
    found = records(logs)
    messages = [r["message"] for r in found]
    threads = next(r for r in found if r["message"].startswith("using "))
    assert threads["threads"] == 1 and threads["cpu_limit"] == 1.0, threads  # the limit, not the node's cores
    assert any(m.startswith("HOME is not writable") for m in messages), messages
    assert "downloaded" in messages and "tuning done" in messages, messages[-10:]
    done = next(r for r in found if r["message"] == "tuning done")
    assert done["step"] == 4
    names = {p.name for p in results.iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors", "adapter.gguf", "fine_tuning_completed.txt"} <= names, names
    assert (results / "adapter.gguf").read_bytes()[:4] == b"GGUF"
    assert (results / "adapter_model.safetensors").stat().st_uid == 1000
    cluster.kubectl("delete", "job", name, "-n", NS, "--cascade=foreground", "--wait=true", timeout=120)


# -- 2. the loop through the operator ----------------------------------------------------------------

PUSH_SECRET = "adapter-push"
WRONG_SECRET = "adapter-push-wrong"
#: The training prompt as the adapter saw it (Gemma's chat template), completed greedily by /chat.
PROMPT = f"<start_of_turn>user\n{TRAINING_PROMPT}<end_of_turn>\n<start_of_turn>model\n"
CHAT = {"prompt": PROMPT, "return_full_text": False, "generate_kwargs": {"max_new_tokens": 16, "do_sample": False}}


@pytest.fixture(scope="module")
def operator(real_node_cluster: LocalCluster, stack: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """The tuning and preset images pushed, push secrets (right and wrong), CRDs + RBAC, and
    ``kaito operator`` with byo nodes, the tuning image of the local registry, the bridge allowed as
    a data host and the registry's CA (the cluster CA from kube-root-ca.crt) trusted by pullers and
    the tuning Job's registry steps."""
    import harness

    cluster = real_node_cluster
    assert cluster.registry is not None
    refs = push_all(cluster.registry, (ImageName.GEMMA_TUNING, ImageName.TUNING))  # one base layer upload (mounted)
    creds = credentials()
    cluster.api.create(f"/api/v1/namespaces/{NS}/secrets", creds.pull_secret(NS, name=PUSH_SECRET))
    wrong = Credentials(creds.username, creds.password + "-wrong")
    cluster.api.create(f"/api/v1/namespaces/{NS}/secrets", wrong.pull_secret(NS, name=WRONG_SECRET))
    for method in ("lora", "qlora"):
        cluster.api.create(f"/api/v1/namespaces/{NS}/configmaps", {
            "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": f"tune-{method}"},
            "data": {"training_config.yaml": training_config(method)}})
    cluster.install_crds(harness.CRDS)
    work = tmp_path_factory.mktemp("tuning-operator")
    port = harness.free_port()
    ca_config_map, ca_key = CA_CONFIGMAP
    registry, tuning_repo = cluster.registry_address, ImageName.TUNING.value
    op = harness.operator(
        harness.operator_kubeconfig(cluster, work / "operator.kubeconfig"), work / "operator.log", work / "certs",
        webhook_port=port,
        extra_env={"KAITO_NODE_PROVISIONER__NAME": "byo", "KAITO_CPU_INFERENCE__CPUS": "1",
                   "KAITO_IMAGES__REGISTRY": registry, "KAITO_IMAGES__TUNING": f"{tuning_repo}:{LOCAL_TAG}",
                   "KAITO_TUNING__ALLOW_DATA_HOSTS": json.dumps([BRIDGE_IP]), "KAITO_TUNING__BACKOFF_LIMIT": "0",
                   "KAITO_ADAPTER_PULL__CA_CONFIG_MAP": ca_config_map, "KAITO_ADAPTER_PULL__CA_CONFIG_MAP_KEY": ca_key,
                   "KAITO_REQUEUE__WORKLOAD_S": "2", "KAITO_METRICS__PORT": str(harness.free_port())},
    )
    op.start()
    try:
        harness.wait_webhook_ready(cluster, port)
        yield {"refs": refs, "operator": op, "registry": registry}
    finally:
        op.stop()


def tuning_workspace(name: str, method: str, url: str, output: str, push_secret: str = PUSH_SECRET) -> str:
    doc = {
        "apiVersion": "kaito.sh/v1alpha1", "kind": "Workspace", "metadata": {"name": name},
        "resource": {"labelSelector": {"matchLabels": {"kaito.sh/machine-type": "cpu"}}},
        "tuning": {
            "preset": {"name": "gemma-3-270m", "presetOptions": {
                "image": f"{BRIDGE_IP}:5001/{ImageName.GEMMA_TUNING.value}:{LOCAL_TAG}", "imagePullSecrets": [PULL_SECRET_NAME]}},
            "method": method,
            "config": f"tune-{method}",
            "input": {"urls": [url]},
            "output": {"image": output, "imagePushSecret": push_secret},
        },
    }
    return yaml.safe_dump(doc)


def conditions(cluster: LocalCluster, name: str) -> dict[str, dict[str, Any]]:
    ws = cluster.api.get(f"/apis/kaito.sh/v1alpha1/namespaces/{NS}/workspaces/{name}")
    return {c["type"]: c for c in (ws.get("status") or {}).get("conditions") or []}


def columns(cluster: LocalCluster, name: str) -> dict[str, str]:
    """``kubectl get workspace -o wide`` as a person reads it (JOBSTARTED is a wide column), cut at
    the headers' offsets: a tuning workspace leaves INSTANCE and INFERENCEREADY empty."""
    header, row = cluster.kubectl("get", "workspace", name, "-n", NS, "-o", "wide").stdout.splitlines()[:2]
    starts = [m.start() for m in re.finditer(r"\S+", header)]
    cells = [row[a:b].strip() for a, b in zip(starts, [*starts[1:], None])]
    return dict(zip(header.split(), cells, strict=True))


def tags(registry: LocalCluster, repo: str) -> list[str]:
    client = registry.registry
    assert client is not None
    resp = client.request("GET", f"/v2/{repo}/tags/list")
    body = resp.read()
    return list(json.loads(body).get("tags") or []) if resp.status == 200 else []


def artifact_files(cluster: LocalCluster, ref: str, dest: Path) -> list[str]:
    """Pull ``ref`` as the inference puller does (oras SDK, the registry's credentials and CA)."""
    from kaito_servers.adapter_pull import pull_artifact

    dest.parent.mkdir(parents=True, exist_ok=True)
    config = dest.parent / "dockerconfig.json"
    config.write_text(credentials().dockerconfigjson())
    return sorted(p.name for p in pull_artifact(ref, dest, docker_config=config, ca_file=cluster.ca_file))


def workspace_pods(cluster: LocalCluster, name: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = cluster.api.get(f"/api/v1/namespaces/{NS}/pods", labelSelector=f"kaito.sh/workspace={name}")["items"]
    return items


def diagnose(cluster: LocalCluster, op: Any, *names: str) -> str:
    out = [cluster.kubectl("describe", "workspace", n, "-n", NS, check=False).stdout[-2000:] for n in names]
    out.append(cluster.kubectl("get", "pods", "-n", NS, "-o", "wide", check=False).stdout)
    for n in names:
        out.append(cluster.kubectl("logs", f"job/{n}", "-n", NS, "--all-containers", "--tail=15", check=False).stdout)
    return "\n".join(out) + op.tail(30)


BAD_INPUTS = {
    # name: (file on the data server, or None for a port nobody listens on; push secret; words of the condition)
    "bad-unreachable": (None, PUSH_SECRET, ("download failed after", "Fix: check that the server is reachable")),
    "bad-html": ("sign-in.parquet", PUSH_SECRET, ("sent an HTML page", "Fix: use the link to the raw file")),
    "bad-columns": ("no-messages.parquet", PUSH_SECRET, ("no usable columns: expected 'messages'", "question, reply",
                                                          "Fix: rename the columns")),
    "bad-empty": ("empty.parquet", PUSH_SECRET, ("empty.parquet has no rows", "Fix: provide at least one")),
    "bad-secret": ("dolly-15k-oai-style.parquet", WRONG_SECRET, ("refuses the credentials of tuning.output.imagePushSecret",
                                                                  "Fix: put a username and password")),
}


def test_bad_inputs_fail_with_the_cause_and_no_job_left_running(
    real_node_cluster: LocalCluster, stack: dict[str, Any], operator: dict[str, Any]
) -> None:
    import socket

    cluster, data = real_node_cluster, stack["data"]
    with socket.socket() as closed:  # a port on the bridge nobody listens on
        closed.bind((BRIDGE_IP, 0))
        dead_url = f"http://{BRIDGE_IP}:{closed.getsockname()[1]}/dolly.parquet"
    outputs = {name: f"{operator['registry']}/kaito/adapters/{name}:1" for name in BAD_INPUTS}
    for name, (file, secret, _) in BAD_INPUTS.items():
        url = data.url(file) if file else dead_url
        cluster.kubectl("apply", "-n", NS, "-f", "-", input=tuning_workspace(name, "lora", url, outputs[name], secret))
    try:
        for name, (_, _, words) in BAD_INPUTS.items():
            def failed(name: str = name) -> dict[str, Any] | None:
                cond = conditions(cluster, name).get("WorkspaceSucceeded")
                return cond if cond and cond["status"] == "False" and cond["reason"] == "WorkspaceTuningJobFailed" else None

            cond = wait_for(failed, timeout=300, interval=1, what=f"{name} failed",
                            on_timeout=lambda name=name: diagnose(cluster, operator["operator"], name))
            message = cond["message"]
            assert "the tuning Job failed at step data-fetch" in message and "exited with code 2" in message, message
            assert all(w in message for w in words), (name, message)
            job = cluster.api.get(f"/apis/batch/v1/namespaces/{NS}/jobs/{name}")
            assert not (job.get("status") or {}).get("active"), job.get("status")
            assert not [p for p in workspace_pods(cluster, name) if p["status"].get("phase") in ("Pending", "Running")]
            assert tags(cluster, f"kaito/adapters/{name}") == []  # nothing pushed, not even half
            assert columns(cluster, name)["WORKSPACEREADY"] == "False"
    finally:
        for name in BAD_INPUTS:
            cluster.kubectl("delete", "workspace", name, "-n", NS, "--wait=false", check=False)


def test_tuned_adapters_are_pushed_and_served_with_a_strength(
    real_node_cluster: LocalCluster, stack: dict[str, Any], operator: dict[str, Any], tmp_path: Path
) -> None:
    cluster, data, op = real_node_cluster, stack["data"], operator["operator"]
    url = data.url("dolly-15k-oai-style.parquet")
    outputs = {m: f"{operator['registry']}/kaito/adapters/gemma-3-270m-{m}:1" for m in ("qlora", "lora")}
    names = {m: f"tune-gemma-{m}" for m in outputs}
    for method, name in names.items():
        cluster.kubectl("apply", "-n", NS, "-f", "-", input=tuning_workspace(name, method, url, outputs[method]))

    for method, name in names.items():
        def succeeded(name: str = name) -> bool:
            cond = conditions(cluster, name).get("WorkspaceSucceeded", {})
            assert cond.get("reason") != "WorkspaceTuningJobFailed", cond.get("message")
            return cond.get("status") == "True"

        wait_for(succeeded, timeout=1200, interval=2, what=f"{name} WORKSPACEREADY",
                 on_timeout=lambda name=name: diagnose(cluster, op, name))
        assert job_finished(cluster, name) == "Complete"
        shown = columns(cluster, name)
        assert shown["JOBSTARTED"] == "True" and shown["WORKSPACEREADY"] == "True", shown
        files = artifact_files(cluster, outputs[method], tmp_path / method / "adapter")
        assert files == ["adapter.gguf", "adapter_config.json", "adapter_model.safetensors"], files
        config = json.loads((tmp_path / method / "adapter" / "adapter_config.json").read_text())
        assert config["r"] == 8 and sorted(config["target_modules"]) == ["k_proj", "o_proj", "q_proj", "v_proj"]
        trainer = cluster.kubectl("logs", f"job/{name}", "-n", NS, "-c", "trainer").stdout
        assert any(r["message"] == "tuning done" and r["method"] == method for r in records(trainer)), trainer[-2000:]

    # The lora adapter, served by llama.cpp (its GGUF LoRA) at strength 0 and 1.
    assert cluster.registry is not None
    push_all(cluster.registry, (ImageName.GEMMA,))
    answers = {strength: serve_with_adapter(cluster, op, outputs["lora"], strength) for strength in ("0", "1")}
    assert answers["0"].strip(), answers
    assert answers["0"] != answers["1"], answers
    for name in names.values():
        cluster.kubectl("delete", "workspace", name, "-n", NS, "--wait=true", timeout=120)
    jobs = {j["metadata"]["name"] for j in cluster.api.get(f"/apis/batch/v1/namespaces/{NS}/jobs")["items"]}
    assert not jobs & set(names.values()), jobs  # deleting a tuning Workspace deletes its Job


SERVE_NAME = "gemma-3-270m-tuned"


def serve_with_adapter(cluster: LocalCluster, op: Any, adapter: str, strength: str) -> str:
    """Apply the CPU Gemma inference Workspace with the tuned adapter at ``strength``; once it is ready
    and the server reports that strength on /health, return the greedy /chat answer to PROMPT."""
    import urllib.error

    doc = {
        "apiVersion": "kaito.sh/v1alpha1", "kind": "Workspace", "metadata": {"name": SERVE_NAME},
        "resource": {"labelSelector": {"matchLabels": {"kaito.sh/machine-type": "cpu"}}},
        "inference": {
            "preset": {"name": "gemma-3-270m", "presetOptions": {
                "image": f"{BRIDGE_IP}:5001/{ImageName.GEMMA.value}:{LOCAL_TAG}", "imagePullSecrets": [PULL_SECRET_NAME]}},
            "adapters": [{"source": {"name": "tuned", "image": adapter, "imagePullSecrets": [PULL_SECRET_NAME]},
                          "strength": strength}],
        },
    }
    cluster.kubectl("apply", "-n", NS, "-f", "-", input=yaml.safe_dump(doc))
    want = [{"name": "tuned", "strength": float(strength)}]

    def serving() -> str | None:
        if conditions(cluster, SERVE_NAME).get("WorkspaceSucceeded", {}).get("status") != "True":
            return None
        ip = str(cluster.api.get(f"/api/v1/namespaces/{NS}/services/{SERVE_NAME}")["spec"]["clusterIP"])
        try:
            health = http_json(f"http://{ip}/health")
        except (OSError, urllib.error.URLError):
            return None
        return ip if health.get("adapters") == want and len(workspace_pods(cluster, SERVE_NAME)) == 1 else None

    ip = wait_for(serving, timeout=300, interval=1, what=f"{SERVE_NAME} serving the adapter at {strength}",
                  on_timeout=lambda: diagnose(cluster, op, SERVE_NAME))
    answer: str = http_json(f"http://{ip}/chat", CHAT)["Result"]
    return answer


_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def http_json(url: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with _NO_PROXY.open(req, timeout=120) as resp:
        result: dict[str, Any] = json.loads(resp.read())
        return result
