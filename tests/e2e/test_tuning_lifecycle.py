"""Tuning Workspaces end to end on the local control plane: the user's phi-3 tuning example (its
placeholders filled in) becomes a NodeClaim, a kwok GPU node and a tuning Job whose pod kwok
completes, so the Workspace goes JobStarted -> WorkspaceSucceeded; a spec change runs a new Job;
deletion leaves nothing behind. Failures: a step that exits 2 (the test plays the kubelet of a
node kwok does not manage) fails the Job at once through its podFailurePolicy and the condition
names the step and the runner's message; a contradictory training config and the example's
placeholder secret are conditions before any Job exists."""

from __future__ import annotations

import base64
import datetime as dt
import json
import re
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from harness import ROOT, Process, Stack, dump, load_manifest
from test_provisioner_modes import conditions, swapped_operator
from test_workspace_lifecycle import nodeclaims, nodes, pods

from kaito_localcluster.kubeapi import wait_for

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(300)]
EXAMPLE = ROOT / "examples/fine-tuning/kaito_workspace_tuning_phi_3.yaml"
JOBS = "/apis/batch/v1/namespaces/{ns}/jobs"
DEFAULTS_NS = "kaito-system"
OUTPUT = "myregistry.azurecr.io/adapters/phi-3-dolly:0.0.1"
HTML_ERROR = ("tuning refused: https://example.com/dolly.parquet: the server sent an HTML page (text/html), not data. "
              "Fix: use the link to the raw file (not its web page), and make sure it needs no sign-in")


@pytest.fixture(scope="module", autouse=True)
def default_configs(stack: Stack) -> None:
    """The chart's default training ConfigMaps in the operator's namespace (what the chart creates)."""
    for method in ("lora", "qlora"):
        cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": f"{method}-params-template", "namespace": DEFAULTS_NS},
              "data": {"training_config.yaml": (ROOT / f"charts/kaito/files/tuning/{method}.yaml").read_text()}}
        stack.kubectl("apply", "-f", "-", input=dump(cm))


def push_secret(stack: Stack, ns: str, name: str = "acr-push") -> None:
    config = {"auths": {"myregistry.azurecr.io": {"auth": base64.b64encode(b"user:pass").decode()}}}
    secret = {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/dockerconfigjson", "metadata": {"name": name, "namespace": ns},
              "data": {".dockerconfigjson": base64.b64encode(json.dumps(config).encode()).decode()}}
    stack.kubectl("apply", "-f", "-", input=dump(secret))


def filled_example() -> dict[str, Any]:
    """The example as a user applies it: the output image and push secret placeholders filled in."""
    ws = load_manifest(EXAMPLE)
    ws["tuning"]["output"] = {"image": OUTPUT, "imagePushSecret": "acr-push"}
    return ws


def wide_columns(stack: Stack, ns: str, name: str) -> dict[str, str]:
    """`kubectl get workspace -o wide` as a person reads it, header -> value, cut at the headers'
    offsets (a tuning workspace leaves INSTANCE-less or INFERENCEREADY cells empty)."""
    header, row = stack.kubectl("get", "workspace", name, "-n", ns, "-o", "wide").stdout.splitlines()[:2]
    starts = [m.start() for m in re.finditer(r"\S+", header)]
    cells = [row[a:b].strip() for a, b in zip(starts, [*starts[1:], None])]
    return dict(zip(header.split(), cells, strict=True))


def wait_condition(stack: Stack, ns: str, name: str, type_: str, status: str, text: str = "", log: Process | None = None,
                   timeout: float = 90) -> dict[str, Any]:
    def found() -> dict[str, Any] | None:
        cond = conditions(stack, ns, name).get(type_)
        return cond if cond and cond["status"] == status and text in cond.get("message", "") else None

    return wait_for(found, timeout=timeout, interval=0.5, what=f"{type_}={status} saying {text!r}",
                    on_timeout=lambda: (log or stack.operator).tail(60))


def job_of(stack: Stack, ns: str, name: str) -> dict[str, Any] | None:
    path = f"{JOBS.format(ns=ns)}/{name}"
    return stack.get(path) if stack.cluster.api.exists(path) else None


def wait_tuning_gone(stack: Stack, ns: str, name: str) -> None:
    def gone() -> bool:
        return not (job_of(stack, ns, name) or pods(stack, ns, name) or nodeclaims(stack, ns, name) or nodes(stack, ns, name)
                    or stack.cluster.api.exists(f"/api/v1/namespaces/{ns}/configmaps/{name}-training-config"))

    wait_for(gone, timeout=90, interval=0.5, what=f"everything of tuning workspace {ns}/{name} deleted", on_timeout=stack.diagnostics)


def test_user_example_runs_to_workspace_succeeded_then_a_new_revision_then_deletion(stack: Stack, kube_namespace: str) -> None:
    ns, ws = kube_namespace, filled_example()
    name = ws["metadata"]["name"]
    push_secret(stack, ns)
    stack.kubectl("apply", "-n", ns, "-f", "-", input=dump(ws))

    started = wait_condition(stack, ns, name, "JobStarted", "True")
    assert started["reason"] == "WorkspaceTuningJobStatusStarted"
    job = job_of(stack, ns, name)
    assert job is not None
    assert job["metadata"]["ownerReferences"][0]["kind"] == "Workspace" and job["spec"]["backoffLimit"] == 1
    assert [c["name"] for c in job["spec"]["template"]["spec"]["initContainers"]] == ["data-fetch", "model-weights", "trainer"]
    copy = stack.get(f"/api/v1/namespaces/{ns}/configmaps/{name}-training-config")
    assert "load_in_4bit: true" in copy["data"]["training_config.yaml"]  # the qlora default, copied
    assert len(nodeclaims(stack, ns, name)) == 1

    # kwok completes the pod: the Job succeeds and so does the Workspace.
    done = wait_condition(stack, ns, name, "WorkspaceSucceeded", "True")
    assert done["message"] == f"the tuning Job has succeeded: the adapter is in {OUTPUT}"
    cols = wide_columns(stack, ns, name)
    assert cols["JOBSTARTED"] == "True" and cols["WORKSPACEREADY"] == "True" and cols["STATE"] == "Succeeded"
    first_hash = job["metadata"]["labels"]["workspace.kaito.io/hash"]

    # A spec change: the old Job goes, a new one runs for the new revision.
    ws["tuning"]["input"]["urls"] = ["https://huggingface.co/datasets/philschmid/dolly-15k-oai-style/resolve/main/data/other.parquet"]
    stack.kubectl("apply", "-n", ns, "-f", "-", input=dump(ws))

    def new_job() -> dict[str, Any] | None:
        found = job_of(stack, ns, name)
        return found if found and found["metadata"]["labels"]["workspace.kaito.io/hash"] != first_hash else None

    second = wait_for(new_job, timeout=60, interval=0.5, what="a Job of the new revision", on_timeout=stack.diagnostics)
    fetch_env = {e["name"]: e.get("value") for e in second["spec"]["template"]["spec"]["initContainers"][0]["env"]}
    assert fetch_env["KAITO_TUNING_DATA_URLS"].endswith("/other.parquet")
    assert second["metadata"]["annotations"]["workspace.kaito.io/revision"] == "2"
    wait_for(lambda: (stack.get(f"/apis/kaito.sh/v1beta1/namespaces/{ns}/workspaces/{name}").get("status") or {}).get("state") == "Succeeded"
             and job_of(stack, ns, name) is not None and (job_of(stack, ns, name) or {}).get("status", {}).get("succeeded") == 1,
             timeout=60, interval=0.5, what="the new revision succeeded", on_timeout=stack.diagnostics)

    stack.kubectl("delete", "workspace", name, "-n", ns, "--timeout=90s")
    wait_tuning_gone(stack, ns, name)


def test_the_unedited_example_names_its_placeholder_secret(stack: Stack, kube_namespace: str) -> None:
    ns = kube_namespace
    ws = load_manifest(EXAMPLE)
    ws["metadata"]["name"] = name = "tuning-placeholders"
    stack.kubectl("apply", "-n", ns, "-f", "-", input=dump(ws))
    cond = wait_condition(stack, ns, name, "WorkspaceSucceeded", "False", "is not a valid Secret name")
    assert cond["reason"] == "TuningSecretInvalid" and "tuning.output.imagePushSecret" in cond["message"]
    assert job_of(stack, ns, name) is None and nodeclaims(stack, ns, name) == []  # no node for a Job that cannot exist
    stack.kubectl("delete", "workspace", name, "-n", ns, "--timeout=90s")
    wait_tuning_gone(stack, ns, name)


def test_qlora_with_a_config_without_quantization_is_a_condition_and_no_job(stack: Stack, kube_namespace: str) -> None:
    ns, ws = kube_namespace, filled_example()
    ws["metadata"]["name"] = name = "tuning-bad-config"
    lora = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "my-config", "namespace": ns},
            "data": {"training_config.yaml": (ROOT / "charts/kaito/files/tuning/lora.yaml").read_text()}}
    stack.kubectl("apply", "-f", "-", input=dump(lora))
    ws["tuning"]["config"] = "my-config"
    push_secret(stack, ns)
    stack.kubectl("apply", "-n", ns, "-f", "-", input=dump(ws))
    cond = wait_condition(stack, ns, name, "WorkspaceSucceeded", "False", "for method qlora")
    assert cond["reason"] == "TuningConfigInvalid" and cond["message"].startswith(f"tuning.config: ConfigMap {ns}/my-config")
    assert "Fix: fix ConfigMap my-config" in cond["message"]
    assert job_of(stack, ns, name) is None
    assert wide_columns(stack, ns, name)["STATE"] == "Failed"
    stack.kubectl("delete", "workspace", name, "-n", ns, "--timeout=90s")
    wait_tuning_gone(stack, ns, name)


# -- a step that fails at run time ----------------------------------------------------------------------


@pytest.fixture()
def byo(stack: Stack) -> Iterator[Process]:
    with swapped_operator(stack, "byo") as op:
        yield op


def create_unmanaged_node(stack: Stack, name: str, labels: dict[str, str]) -> None:
    """A Ready node that kwok does not manage (no kwok annotation): the test is its kubelet."""
    api = stack.cluster.api
    api.create("/api/v1/nodes", {"apiVersion": "v1", "kind": "Node",
                                 "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux", **labels}}})
    now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    resources = {"cpu": "8", "memory": "32Gi", "pods": "110"}
    api.patch(f"/api/v1/nodes/{name}/status", {"status": {
        "capacity": resources, "allocatable": resources,
        "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "test kubelet",
                        "lastHeartbeatTime": now, "lastTransitionTime": now}],
    }})


def test_a_step_exiting_2_fails_the_job_at_once_and_names_the_step_and_the_fix(stack: Stack, byo: Process, kube_namespace: str) -> None:
    ns, label = kube_namespace, f"tune-{uuid.uuid4().hex[:6]}"
    node = f"user-{label}"
    name = "tuning-html-data"
    ws = {"apiVersion": "kaito.sh/v1beta1", "kind": "Workspace", "metadata": {"name": name},
          "resource": {"labelSelector": {"matchLabels": {"apps": label}}},
          "tuning": {"preset": {"name": "gemma-3-270m"}, "method": "lora", "input": {"urls": ["https://example.com/dolly.parquet"]},
                     "output": {"volumeSource": {"emptyDir": {}}}}}
    create_unmanaged_node(stack, node, {"apps": label})
    try:
        stack.kubectl("apply", "-n", ns, "-f", "-", input=dump(ws))
        scheduled = wait_for(lambda: [p for p in pods(stack, ns, name) if p["spec"].get("nodeName") == node], timeout=60, interval=0.5,
                             what="the tuning pod scheduled on the test's node", on_timeout=lambda: byo.tail(60))
        pod = scheduled[0]["metadata"]["name"]
        # What the kubelet reports when the data-fetch step finds an HTML page: exit 2, FallbackToLogsOnError message.
        stack.cluster.api.patch(f"/api/v1/namespaces/{ns}/pods/{pod}/status", {"status": {
            "phase": "Failed",
            "initContainerStatuses": [
                {"name": "data-fetch", "image": "x", "imageID": "", "ready": False, "restartCount": 0,
                 "state": {"terminated": {"exitCode": 2, "reason": "Error", "message": '{"level": "info"}\n' + HTML_ERROR}}},
                {"name": "model-weights", "image": "x", "imageID": "", "ready": False, "restartCount": 0,
                 "state": {"waiting": {"reason": "PodInitializing"}}},
            ],
            "containerStatuses": [{"name": "trainer", "image": "x", "imageID": "", "ready": False, "restartCount": 0,
                                   "state": {"waiting": {"reason": "PodInitializing"}}}],
        }})
        cond = wait_condition(stack, ns, name, "WorkspaceSucceeded", "False", "failed at step data-fetch", log=byo)
        assert cond["reason"] == "TuningJobFailed"
        assert "it exited with code 2" in cond["message"] and "Fix: use the link to the raw file" in cond["message"]
        job = job_of(stack, ns, name)
        assert job is not None
        failed = {c["type"]: c for c in job["status"]["conditions"]}
        assert failed["Failed"]["status"] == "True" and failed["Failed"]["reason"] == "PodFailurePolicy"
        assert not job["status"].get("active") and job["status"].get("failed") == 1  # no retry: exit 2 is final
        assert yaml.safe_load(stack.kubectl("get", "workspace", name, "-n", ns, "-o", "yaml").stdout)["status"]["state"] == "Failed"
        stack.kubectl("delete", "workspace", name, "-n", ns, "--timeout=90s")
        wait_tuning_gone(stack, ns, name)
    finally:
        stack.cluster.api.delete(f"/api/v1/nodes/{node}")
