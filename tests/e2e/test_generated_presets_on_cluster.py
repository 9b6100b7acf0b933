"""A Workspace naming a Hugging Face model id (``inference.preset.name: org/model``, as upstream
v0.12) on the local control plane: the operator generates the preset from the model's files in
its Hugging Face cache (``presets.hfCacheDir``; the hub is off) and the workspace becomes ready;
a gated model without a modelAccessSecret is refused saying how to provide one."""

from __future__ import annotations

from typing import Any

import pytest
from harness import Stack, dump
from test_workspace_lifecycle import WS, pods, wait_gone, wait_ready

from kaito_localcluster.kubeapi import wait_for
from tests.hfcache import GATED_ID, OPEN_ID

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(300)]


def workspace(name: str, model: str, **options: str) -> dict[str, Any]:
    preset: dict[str, Any] = {"name": model}
    if options:
        preset["presetOptions"] = options
    return {
        "apiVersion": "kaito.sh/v1beta1", "kind": "Workspace", "metadata": {"name": name},
        "resource": {"instanceType": "Standard_NV36ads_A10_v5", "labelSelector": {"matchLabels": {"apps": name}}},
        "inference": {"preset": preset},
    }


def test_a_model_id_from_the_operator_cache_becomes_ready(stack: Stack, kube_namespace: str) -> None:
    ns, name = kube_namespace, "open-llama"
    stack.kubectl("apply", "-n", ns, "-f", "-", input=dump(workspace(name, OPEN_ID)))
    wait_ready(stack, ns, name)
    running = wait_for(lambda: [p for p in pods(stack, ns, name) if p["status"].get("phase") == "Running"], timeout=30,
                       what="inference pod Running", on_timeout=stack.diagnostics)
    args = running[0]["spec"]["containers"][0]["args"]
    assert args[args.index("--preset") + 1] == OPEN_ID.lower()
    downloader = {e["name"]: e.get("value") for c in running[0]["spec"]["initContainers"] for e in c.get("env", [])}
    assert downloader["KAITO_MODEL_REPO"] == OPEN_ID
    assert stack.get(WS.format(ns=ns, name=name))["status"]["state"] == "Ready"
    stack.kubectl("delete", "workspace", name, "-n", ns, "--timeout=90s")
    wait_gone(stack, ns, name)


def test_a_gated_model_id_without_a_secret_is_refused_saying_how(stack: Stack, kube_namespace: str) -> None:
    result = stack.kubectl("apply", "-n", kube_namespace, "-f", "-", input=dump(workspace("gated-llama", GATED_ID)), check=False)
    assert result.returncode != 0
    assert "inference.preset.presetOptions.modelAccessSecret" in result.stderr
    assert "HF_TOKEN" in result.stderr
    # With the secret named it is admitted (the pods get the token through a secretKeyRef).
    stack.kubectl("apply", "-n", kube_namespace, "-f", "-", input=dump(workspace("gated-llama", GATED_ID, modelAccessSecret="hf-token")))
    stack.kubectl("delete", "workspace", "gated-llama", "-n", kube_namespace, "--timeout=90s")
